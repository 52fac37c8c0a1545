"""Vertical ray casting on a regular grid: where each vertical line crosses the surface.

A vertical ray through every cell centre of an XY grid is intersected with every triangle at
once by rasterising the triangles' projections (vectorised, no per-ray loop). Along one ray the
crossings alternate between entering the solid (through a downward-facing triangle) and leaving
it (through an upward-facing one). The empty stretch below a downward-facing crossing ends at the
next crossing below it (the part itself) or at the plate, which is what makes the support volume
shadow-aware.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.mesh.topology import cross_rows

# Offset of the grid from the mesh's bounding box, in cells: an irrational-looking fraction so
# that axis-aligned edges and vertices of man-made meshes never fall exactly on a ray.
_GRID_OFFSET = 0.2371
_MAX_PAIRS = 40_000_000


@dataclass
class Columns:
    """Surface crossings of vertical rays, sorted by (cell, z).

    Attributes
    ----------
    cell_mm : float
        Grid spacing (mm); each ray stands for a ``cell_mm x cell_mm`` column.
    origin : ndarray (2,)
        XY of the corner of cell (0, 0), mm.
    shape : tuple of int
        Grid size (nx, ny).
    cell : ndarray of int64
        Flat cell index ``ix * ny + iy`` of each crossing.
    z : ndarray of float
        Height of each crossing, mm.
    face : ndarray of int64
        Triangle crossed.
    """

    cell_mm: float
    origin: np.ndarray
    shape: tuple[int, int]
    cell: np.ndarray
    z: np.ndarray
    face: np.ndarray

    def below(self) -> tuple[np.ndarray, np.ndarray]:
        """For each crossing: index of the crossing just below it on the same ray (or -1), and
        the height of what is below (that crossing, or the plate at z = 0).

        Returns
        -------
        below_index : ndarray of int64
            Per crossing, the index of the next lower crossing on its ray, or -1 for the lowest.
        below_z : ndarray of float
            Per crossing, the height of that crossing, or 0 (the plate), mm.
        """
        same = np.zeros(len(self.cell), dtype=bool)
        same[1:] = self.cell[1:] == self.cell[:-1]
        below_index = np.where(same, np.arange(len(self.cell)) - 1, -1)
        below_z = np.where(same, np.roll(self.z, 1), 0.0)
        return below_index, below_z


def cast_columns(triangles: np.ndarray, cell_mm: float) -> Columns:
    """Cross every triangle with a grid of vertical rays.

    Parameters
    ----------
    triangles : ndarray (F, 3, 3)
        Triangle corners in the print frame (z up, plate at z = 0), mm.
    cell_mm : float
        Grid spacing, mm.

    Returns
    -------
    Columns
        Crossings sorted by cell, then height. Triangles seen edge-on give no crossing.

    Raises
    ------
    ValueError
        ``cell_mm`` is not positive, or the grid would make more than 40 million ray-triangle
        pairs (too fine for the mesh).
    """
    if cell_mm <= 0:
        raise ValueError("cell_mm must be positive")
    xy = triangles[:, :, :2]
    a, b, c = xy[:, 0], xy[:, 1], xy[:, 2]
    # Corner-wise minimum/maximum: much faster than reducing over the corner axis.
    xy_min = np.minimum(np.minimum(a, b), c)
    xy_max = np.maximum(np.maximum(a, b), c)
    lo = xy_min.min(axis=0) - _GRID_OFFSET * cell_mm
    hi = xy_max.max(axis=0)
    nx, ny = (np.floor((hi - lo) / cell_mm).astype(int) + 1).tolist()

    # Plane of each triangle as z = z0 + gx * (x - x0) + gy * (y - y0); edge-on ones are skipped.
    # np.cross was 40 % of this function; cross_rows gives the same bits in a tenth of the time.
    normal = cross_rows(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    keep = np.abs(normal[:, 2]) > 1e-12 * np.einsum("ij,ij->i", normal, normal) ** 0.5
    gradient = -normal[:, :2] / np.where(keep, normal[:, 2], 1.0)[:, None]

    # Scanline rasterisation, step 1: the grid columns (x) each triangle spans.
    first_x = np.ceil((xy_min[:, 0] - lo[0]) / cell_mm - 0.5).astype(np.int64)
    last_x = np.floor((xy_max[:, 0] - lo[0]) / cell_mm - 0.5).astype(np.int64)
    count = np.where(keep, np.clip(last_x - first_x + 1, 0, None), 0)
    tri = np.repeat(np.arange(len(triangles)), count)
    ix = first_x[tri] + np.arange(len(tri)) - np.repeat(np.cumsum(count) - count, count)
    px = lo[0] + (ix + 0.5) * cell_mm

    # Step 2: where the line x = px enters and leaves the triangle (its crossings of the edges).
    y_low = np.full(len(tri), np.inf)
    y_high = np.full(len(tri), -np.inf)
    for p, q in ((a, b), (b, c), (c, a)):
        p_t, q_t = np.take(p, tri, axis=0), np.take(q, tri, axis=0)  # faster than p[tri]
        dx = q_t[:, 0] - p_t[:, 0]
        t = (px - p_t[:, 0]) / np.where(dx != 0, dx, 1.0)
        valid = (dx != 0) & (t >= 0) & (t <= 1)
        y = p_t[:, 1] + t * (q_t[:, 1] - p_t[:, 1])
        y_low = np.where(valid, np.minimum(y_low, y), y_low)
        y_high = np.where(valid, np.maximum(y_high, y), y_high)
    first_y = np.ceil((y_low - lo[1]) / cell_mm - 0.5)
    last_y = np.floor((y_high - lo[1]) / cell_mm - 0.5)
    ok = np.isfinite(first_y) & np.isfinite(last_y)
    count = np.where(ok, np.clip(last_y - first_y + 1, 0, None), 0).astype(np.int64)
    total = int(count.sum())
    if total > _MAX_PAIRS:
        raise ValueError(f"grid too fine for this mesh ({total} ray-triangle pairs)")
    pair = np.repeat(np.arange(len(tri)), count)
    iy = first_y[pair].astype(np.int64) + np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    tri, ix = tri[pair], ix[pair]
    x = lo[0] + (ix + 0.5) * cell_mm
    y = lo[1] + (iy + 0.5) * cell_mm
    origin = np.take(triangles[:, 0], tri, axis=0)
    z = origin[:, 2] + gradient[tri, 0] * (x - origin[:, 0]) + gradient[tri, 1] * (y - origin[:, 1])

    cell = ix * ny + iy
    order = np.lexsort((z, cell))
    return Columns(cell_mm=float(cell_mm), origin=lo, shape=(nx, ny), cell=cell[order],
                   z=z[order], face=tri[order])

