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


def _fold(array: np.ndarray, factor: int, axis: int, ufunc: np.ufunc) -> np.ndarray:
    """Combine each run of ``factor`` entries along ``axis`` (strided views, in place)."""
    if factor == 1:
        return array
    step = [slice(None)] * array.ndim
    step[axis] = slice(0, None, factor)
    out = array[tuple(step)].copy()
    for offset in range(1, factor):
        step[axis] = slice(offset, None, factor)
        ufunc(out, array[tuple(step)], out=out)
    return out


def block_mean_max(array: np.ndarray, factors: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean (float32) and maximum (input dtype) of each block of ``factors`` voxels.

    Works one slab of ``factors[0]`` slices at a time with element-wise operations on strided
    views (several times faster than reductions over reshaped axes), so no full-size temporary
    is made. Blocks cut by the array's far edges are completed with copies of the edge voxels.
    """
    fk, fj, fi = factors
    nk, nj, ni = array.shape
    shape = (-(-nk // fk), -(-nj // fj), -(-ni // fi))
    means = np.empty(shape, np.float32)
    maxima = np.empty(shape, array.dtype)
    scale = np.float32(1.0 / (fk * fj * fi))
    total = np.empty((shape[1] * fj, shape[2] * fi), np.int32)
    highest = np.empty(total.shape, array.dtype)
    for block_k in range(shape[0]):
        slab = array[block_k * fk:(block_k + 1) * fk]
        np.copyto(total[:nj, :ni], slab[0])
        np.copyto(highest[:nj, :ni], slab[0])
        for offset in range(1, fk):
            plane = slab[min(offset, slab.shape[0] - 1)]
            np.add(total[:nj, :ni], plane, out=total[:nj, :ni])
            np.maximum(highest[:nj, :ni], plane, out=highest[:nj, :ni])
        for buffer in (total, highest):
            buffer[nj:, :ni] = buffer[nj - 1, :ni]
            buffer[:, ni:] = buffer[:, ni - 1:ni]
        means[block_k] = _fold(_fold(total, fj, 0, np.add), fi, 1, np.add) * scale
        maxima[block_k] = _fold(_fold(highest, fj, 0, np.maximum), fi, 1, np.maximum)
    return means, maxima


def upsample(coarse: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, int, int],
             offset: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Full-resolution array of ``shape`` whose voxel ``offset + (k, j, i)`` takes its block's value.

    ``offset`` is the full-resolution index of the first voxel wanted (a crop's start), so only
    the crop is ever expanded.
    """
    first = [o // f for f, o in zip(factors, offset)]
    last = [(o + n - 1) // f + 1 for f, o, n in zip(factors, offset, shape)]
    out = coarse[tuple(slice(a, b) for a, b in zip(first, last))]
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    skip = [o - a * f for o, a, f in zip(offset, first, factors)]
    return out[tuple(slice(s, s + n) for s, n in zip(skip, shape))]


def ball(radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Boolean ellipsoidal structuring element of ``radius_mm`` on a grid of ``spacing`` (mm)."""
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    axes = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    distance2 = sum((a * s) ** 2 for a, s in zip(axes, spacing))
    return distance2 <= radius_mm**2 + 1e-9


def coarse_to_box(box: tuple[slice, ...], factors: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Full-resolution box covered by a box of blocks, clipped to ``shape``."""
    return tuple(slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(box, factors, shape))


def extreme_3x3x3(array: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    """Minimum or maximum over each voxel's 3x3x3 neighbourhood (``ufunc`` ``np.minimum`` or
    ``np.maximum``; ``np.logical_and`` / ``np.logical_or`` erode / dilate a boolean mask).

    Separable passes over shifted views: several times faster than ``ndimage``'s filters and
    binary morphology on these arrays. Voxels outside the array are ignored (no border effect).
    """
    out = array.copy()
    for axis in range(array.ndim):
        source = out.copy()
        head = [slice(None)] * array.ndim
        tail = [slice(None)] * array.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        ufunc(out[tuple(head)], source[tuple(tail)], out=out[tuple(head)])
        ufunc(out[tuple(tail)], source[tuple(head)], out=out[tuple(tail)])
    return out
