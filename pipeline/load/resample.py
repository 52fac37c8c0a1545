"""Put a sheared or unevenly spaced stack of slices onto a regular orthogonal grid.

A gantry-tilted series is a stack of parallel planes whose in-plane origins drift with their
position along the normal. The output grid keeps the planes' own orientation (row, column,
normal: orthonormal) and shifts each plane in-plane by its own offset, so every plane is
resampled only within itself (bilinear, sub-pixel) and no voxel mixes two slices. The in-plane
extent grows to hold every shifted plane; voxels no plane covers get ``FILL_HU``.

Uneven spacing along the normal is then resampled to a uniform step by linear interpolation
between the two nearest planes. Work is done one plane at a time in float32; the volume stays
int16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: HU given to voxels outside every source plane (air).
FILL_HU = -1024
#: Offsets within this fraction of a pixel of a whole number are whole (no interpolation).
WHOLE_PIXEL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class InPlaneGrid:
    """The output's in-plane grid relative to the first plane's pixel grid (pixels)."""

    start_j: int
    start_i: int
    rows: int
    columns: int


def in_plane_grid(offsets_px: np.ndarray, rows: int, columns: int) -> InPlaneGrid:
    """Smallest pixel-aligned grid holding every plane shifted by its offset (in pixels, (j, i)).

    Parameters
    ----------
    offsets_px : (n, 2) ndarray of float
        Offset of each plane's pixel (0, 0) from the first plane's, in pixels along ``(j, i)``
        (rows, columns); fractional allowed. Offsets within ``WHOLE_PIXEL_TOLERANCE`` of a whole
        pixel count as whole.
    rows : int
        Rows of each source plane (pixels along j).
    columns : int
        Columns of each source plane (pixels along i).

    Returns
    -------
    InPlaneGrid
        Start ``(start_j, start_i)`` relative to the first plane's pixel (0, 0), pixels (may be
        negative), and the grown ``rows`` and ``columns``.
    """
    low = np.floor(offsets_px.min(axis=0) + WHOLE_PIXEL_TOLERANCE).astype(int)
    high = np.ceil(offsets_px.max(axis=0) - WHOLE_PIXEL_TOLERANCE).astype(int)
    return InPlaneGrid(int(low[0]), int(low[1]), rows + int(high[0] - low[0]), columns + int(high[1] - low[1]))


def _to_int16(values: np.ndarray, out: np.ndarray) -> None:
    np.rint(values, out=values)
    np.clip(values, -32768, 32767, out=values)
    out[...] = values


def deshear(stack: np.ndarray, offsets_px: np.ndarray, grid: InPlaneGrid) -> np.ndarray:
    """Shift each plane of ``stack`` by its in-plane offset onto ``grid`` (bilinear).

    Parameters
    ----------
    stack : (n, rows, columns) ndarray of int16
        Planes in order along the normal.
    offsets_px : (n, 2) ndarray
        Offset of each plane's pixel (0, 0) from the first plane's, in pixels along (j, i).
    grid : InPlaneGrid

    Returns
    -------
    (n, grid.rows, grid.columns) ndarray of int16
    """
    out = np.full((stack.shape[0], grid.rows, grid.columns), FILL_HU, dtype=np.int16)
    for k, plane in enumerate(stack):
        # Output pixel (v, u) samples the source plane at (v + start - offset).
        shift = np.array([grid.start_j, grid.start_i], dtype=float) - offsets_px[k]
        whole = np.rint(shift)
        if np.all(np.abs(shift - whole) < WHOLE_PIXEL_TOLERANCE):
            _paste(plane, out[k], -whole.astype(int))
            continue
        resampled = ndimage.affine_transform(
            plane.astype(np.float32),
            np.ones(2),
            offset=shift,
            output_shape=(grid.rows, grid.columns),
            order=1,
            mode="constant",
            cval=np.nan,
            output=np.float32,
            prefilter=False,
        )
        outside = np.isnan(resampled)
        resampled[outside] = FILL_HU
        _to_int16(resampled, out[k])
    return out


def _paste(plane: np.ndarray, target: np.ndarray, at: np.ndarray) -> None:
    """Copy ``plane`` into ``target`` with its pixel (0, 0) at ``at`` (clipped to the target)."""
    j0, i0 = int(at[0]), int(at[1])
    src_j, src_i = max(0, -j0), max(0, -i0)
    dst_j, dst_i = max(0, j0), max(0, i0)
    nj = min(plane.shape[0] - src_j, target.shape[0] - dst_j)
    ni = min(plane.shape[1] - src_i, target.shape[1] - dst_i)
    if nj > 0 and ni > 0:
        target[dst_j : dst_j + nj, dst_i : dst_i + ni] = plane[src_j : src_j + nj, src_i : src_i + ni]


def uniform_positions(positions_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Positions from the first plane to (at most) the last at a uniform step, mm.

    Parameters
    ----------
    positions_mm : 1-D ndarray of float
        Plane positions along the normal, mm, increasing and measured from the first plane
        (``positions_mm[0] == 0``); only the last is used.
    spacing_mm : float
        The uniform step, mm (positive).

    Returns
    -------
    1-D ndarray of float
        ``0, spacing_mm, 2 * spacing_mm, ...`` up to the last position (1e-6 steps of slack), mm.
    """
    count = int(np.floor(positions_mm[-1] / spacing_mm + 1e-6)) + 1
    return np.arange(count) * spacing_mm


def resample_along_normal(stack: np.ndarray, positions_mm: np.ndarray, targets_mm: np.ndarray) -> np.ndarray:
    """Linear interpolation between the two planes nearest each target position.

    Parameters
    ----------
    stack : (n, rows, columns) ndarray of int16
        Planes at increasing ``positions_mm`` along the normal.
    positions_mm, targets_mm : 1-D ndarray
        Plane positions and wanted positions, mm, measured from the first plane.

    Returns
    -------
    (targets_mm.size, rows, columns) ndarray of int16
        One plane per target, HU rounded to the nearest integer; a target within 1e-6 of a plane's
        weight takes that plane unchanged, and one outside the stack takes the nearest end plane.
    """
    out = np.empty((targets_mm.size, *stack.shape[1:]), dtype=np.int16)
    upper = np.clip(np.searchsorted(positions_mm, targets_mm, side="right"), 1, positions_mm.size - 1)
    for m, (target, k1) in enumerate(zip(targets_mm, upper)):
        k0 = k1 - 1
        weight = (target - positions_mm[k0]) / (positions_mm[k1] - positions_mm[k0])
        if weight < 1e-6:
            out[m] = stack[k0]
        elif weight > 1 - 1e-6:
            out[m] = stack[k1]
        else:
            mixed = stack[k0].astype(np.float32) * np.float32(1 - weight)
            mixed += stack[k1].astype(np.float32) * np.float32(weight)
            _to_int16(mixed, out[m])
    return out
