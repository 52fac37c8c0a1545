"""Block grids: block means/maxima and their expansion back to voxels, against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.segment.grid import ball, block_factors, block_mean_max, upsample


@pytest.mark.parametrize("shape, factors", [((13, 17, 19), (2, 3, 4)), ((8, 8, 8), (1, 1, 1)), ((9, 10, 11), (4, 4, 4))])
def test_block_mean_max_match_reshaped_reductions(shape, factors):
    array = np.random.default_rng(0).integers(-1024, 3000, shape).astype(np.int16)
    means, maxima = block_mean_max(array, factors)
    padded = np.pad(array, [(0, (-n) % f) for n, f in zip(shape, factors)], mode="edge").astype(np.float64)
    blocks = padded.reshape([v for n, f in zip(padded.shape, factors) for v in (n // f, f)])
    np.testing.assert_allclose(means, blocks.mean(axis=(1, 3, 5)), atol=1e-3)
    np.testing.assert_array_equal(maxima, blocks.max(axis=(1, 3, 5)))
    assert maxima.dtype == np.int16 and means.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_mean_max_of_a_float_array_match_reshaped_reductions(dtype):
    shape, factors = (11, 14, 9), (3, 4, 2)
    array = np.random.default_rng(1).normal(40.0, 300.0, shape).astype(dtype)  # HU-like, fractional
    means, maxima = block_mean_max(array, factors)
    padded = np.pad(array, [(0, (-n) % f) for n, f in zip(shape, factors)], mode="edge").astype(np.float64)
    blocks = padded.reshape([v for n, f in zip(padded.shape, factors) for v in (n // f, f)])
    np.testing.assert_allclose(means, blocks.mean(axis=(1, 3, 5)), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(maxima, blocks.max(axis=(1, 3, 5)).astype(dtype))
    assert maxima.dtype == dtype and means.dtype == np.float32


def test_upsample_gives_each_voxel_its_block():
    coarse = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    factors, offset, shape = (2, 3, 2), (1, 2, 3), (4, 7, 5)
    out = upsample(coarse, factors, shape, offset)
    k, j, i = np.indices(shape)
    expected = coarse[(k + offset[0]) // 2, (j + offset[1]) // 3, (i + offset[2]) // 2]
    np.testing.assert_array_equal(out, expected)


def test_block_factors_and_ball_respect_spacing():
    assert block_factors((0.4, 0.35, 0.35), 1.5) == (4, 4, 4)
    assert block_factors((5.0, 0.45, 0.45), 1.5) == (1, 3, 3)
    footprint = ball(2.0, (1.0, 0.5, 0.5))
    assert footprint.shape == (5, 9, 9)
    assert footprint[2, 4, 8] and not footprint[0, 4, 8]
