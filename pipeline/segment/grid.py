"""Block grids for analysis at a coarser resolution, and mm-sized structuring elements.

The expensive parts of segmentation (distance maps, watersheds, hole filling of bone) run on a
grid of blocks of ``factors`` voxels, about ``analysis_spacing_mm`` wide, so a 512x512x500 CTA is
analysed as some 2 million blocks; the result is mapped back onto the full-resolution voxels.
"""

from __future__ import annotations

import numpy as np


def block_factors(spacing: tuple[float, float, float], target_mm: float) -> tuple[int, int, int]:
    """Integer block size per axis so that a block is about ``target_mm`` wide (at least 1 voxel)."""
    return tuple(max(1, int(round(target_mm / s))) for s in spacing)  # type: ignore[return-value]


def _blocks(array: np.ndarray, factors: tuple[int, int, int], fill: float) -> np.ndarray:
    """View (or padded copy) of ``array`` as ``(nk, fk, nj, fj, ni, fi)`` blocks."""
    pad = [(0, (-n) % f) for n, f in zip(array.shape, factors)]
    if any(after for _, after in pad):
        array = np.pad(array, pad, mode="constant", constant_values=fill)
    shape = []
    for n, f in zip(array.shape, factors):
        shape += [n // f, f]
    return array.reshape(shape)


def block_mean(array: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Mean of each block as float32 (partial blocks at the far edges are padded with edge values)."""
    pad = [(0, (-n) % f) for n, f in zip(array.shape, factors)]
    if any(after for _, after in pad):
        array = np.pad(array, pad, mode="edge")
    blocks = _blocks(array, factors, 0)
    total = blocks.sum(axis=(1, 3, 5), dtype=np.int64 if array.dtype.kind == "f" else np.int32)
    return (total / np.float32(np.prod(factors))).astype(np.float32)


def block_max(array: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Maximum of each block (padding never wins)."""
    low = np.iinfo(array.dtype).min if array.dtype.kind in "iu" else -np.inf
    return _blocks(array, factors, low).max(axis=(1, 3, 5))


def upsample(coarse: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, int, int],
             offset: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Full-resolution array of ``shape`` whose voxel ``offset + (k, j, i)`` takes its block's value.

    ``offset`` is the full-resolution index of the first voxel wanted (a crop's start), so only
    the crop is ever expanded.
    """
    index = [(o + np.arange(n)) // f for f, o, n in zip(factors, offset, shape)]
    return coarse[np.ix_(*index)]


def ball(radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Boolean ellipsoidal structuring element of ``radius_mm`` on a grid of ``spacing`` (mm)."""
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    axes = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    distance2 = sum((a * s) ** 2 for a, s in zip(axes, spacing))
    return distance2 <= radius_mm**2 + 1e-9


def box_to_coarse(box: tuple[slice, ...], factors: tuple[int, ...]) -> tuple[slice, ...]:
    """Block slices covering a full-resolution box."""
    return tuple(slice(b.start // f, -(-b.stop // f)) for b, f in zip(box, factors))


def coarse_to_box(box: tuple[slice, ...], factors: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Full-resolution box covered by a box of blocks, clipped to ``shape``."""
    return tuple(slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(box, factors, shape))
