"""Block grids for analysis at a coarser resolution, and mm-sized structuring elements.

The expensive parts of segmentation (distance maps, watersheds, hole filling of bone) run on a
grid of blocks of ``factors`` voxels, about ``analysis_spacing_mm`` wide, so a 512x512x500 CTA is
analysed as some 2 million blocks; the result is mapped back onto the full-resolution voxels.
"""

from __future__ import annotations

import numpy as np


def block_factors(spacing: tuple[float, float, float], target_mm: float) -> tuple[int, int, int]:
    """Integer block size per axis so that a block is about ``target_mm`` wide (at least 1 voxel).

    Parameters
    ----------
    spacing : tuple of float
        Voxel size in mm per axis ``(k, j, i)``.
    target_mm : float
        The wanted block width in mm.

    Returns
    -------
    tuple of int
        Voxels per block along ``(k, j, i)``: ``round(target_mm / spacing)``, at least 1.
    """
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

    Parameters
    ----------
    array : numpy.ndarray
        3-D array indexed ``(k, j, i)``, integer (HU as int16, what segmentation passes), boolean
        or floating; sums are accumulated in int32 for integers up to 16 bits and booleans, float64
        for floats (the promotion of the input's type with int32).
    factors : tuple of int
        Voxels per block along ``(k, j, i)`` (:func:`block_factors`).

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        Per block (shape ``ceil(shape / factors)``), the mean as float32 and the maximum in the
        input's dtype, in the input's unit (HU).
    """
    fk, fj, fi = factors
    nk, nj, ni = array.shape
    shape = (-(-nk // fk), -(-nj // fj), -(-ni // fi))
    means = np.empty(shape, np.float32)
    maxima = np.empty(shape, array.dtype)
    scale = np.float32(1.0 / (fk * fj * fi))
    total = np.empty((shape[1] * fj, shape[2] * fi), np.promote_types(array.dtype, np.int32))
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

    Parameters
    ----------
    coarse : numpy.ndarray
        The block grid's values, indexed ``(k, j, i)`` of blocks.
    factors : tuple of int
        Voxels per block along ``(k, j, i)``.
    shape : tuple of int
        Shape of the full-resolution output (the crop), in voxels.
    offset : tuple of int
        Full-resolution index ``(k, j, i)`` of the output's first voxel.

    Returns
    -------
    numpy.ndarray
        Array of ``shape`` and ``coarse``'s dtype (a view of a repeated copy).
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
    """Boolean ellipsoidal structuring element of ``radius_mm`` on a grid of ``spacing`` (mm).

    Parameters
    ----------
    radius_mm : float
        The ball's radius in mm.
    spacing : tuple of float
        Voxel size in mm per axis (an anisotropic grid gives an ellipsoid in voxels).

    Returns
    -------
    numpy.ndarray of bool
        Odd-sized array, ``2 * floor(radius_mm / spacing) + 1`` voxels per axis, True where the
        voxel centre is within ``radius_mm`` of the centre.
    """
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    axes = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    distance2 = sum((a * s) ** 2 for a, s in zip(axes, spacing))
    return distance2 <= radius_mm**2 + 1e-9


def coarse_to_box(box: tuple[slice, ...], factors: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Full-resolution box covered by a box of blocks, clipped to ``shape``.

    Parameters
    ----------
    box : tuple of slice
        A box on the block grid (slices with ``start`` and ``stop`` set, in blocks).
    factors : tuple of int
        Voxels per block along each axis.
    shape : tuple of int
        The full-resolution array's shape, in voxels.

    Returns
    -------
    tuple of slice
        The box in full-resolution voxel indices.
    """
    return tuple(slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(box, factors, shape))


def extreme_3x3x3(array: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    """Minimum or maximum over each voxel's 3x3x3 neighbourhood (``ufunc`` ``np.minimum`` or
    ``np.maximum``; ``np.logical_and`` / ``np.logical_or`` erode / dilate a boolean mask).

    Separable passes over shifted views: several times faster than ``ndimage``'s filters and
    binary morphology on these arrays. Voxels outside the array are ignored (no border effect).

    Parameters
    ----------
    array : numpy.ndarray
        The array (any number of dimensions; 3-D ``(k, j, i)`` here).
    ufunc : numpy.ufunc
        The binary ufunc to combine neighbours with (see above).

    Returns
    -------
    numpy.ndarray
        A new array of the input's shape and dtype.
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
