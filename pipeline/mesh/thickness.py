"""Wall thickness and gap width by ray marching through the voxel mask.

From every surface vertex a ray goes along the inward normal (wall thickness) or the outward
normal (gap to the next piece of surface) through the 0/1 mask; the distance to where it leaves
the solid (or the gap) on the far side is the local thickness (the ray-based "shape
diameter"). The march reads the nearest voxel at half-voxel steps; each exit is then placed at
the 0.5 crossing of the trilinearly interpolated mask, the level the surface was extracted at.
Distances are in mm in patient space.

The mesh as it will be printed is measured by :func:`sample_wall_thickness` (used by the prepare
stage, which may have only the STL): rays from a sample of face centres to the far surface. The
two agree on an analytic shell (tests/test_walls.py); where smoothing has moved the surface off
the mask (a one-voxel fin thinned to 0.08 mm) only the mesh's own rays see the printed wall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from pipeline.mesh.intersections import ray_triangle_parameters

#: Ray-triangle pairs tested at once by :func:`sample_wall_thickness` (bounds its memory).
_CHUNK_PAIRS = 2_000_000


class MaskField:
    """The padded 0/1 mask crop, sampled trilinearly at LPS points.

    Parameters
    ----------
    padded : (a, b, c) ndarray of uint8 or bool
        The structure crop with one background layer on every side.
    index_offset : (3,) array_like
        Full-grid index of ``padded[0, 0, 0]``.
    geometry : Geometry
        The full grid, which maps indices to LPS.
    """

    def __init__(self, padded: np.ndarray, index_offset, geometry):
        self.values = np.ascontiguousarray(padded, dtype=np.uint8).ravel()
        self._shape = np.asarray(padded.shape)
        self._strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
        self._offset = np.asarray(index_offset, dtype=np.float64)
        self.geometry = geometry

    @property
    def index_dtype(self) -> type:
        """The narrowest integer type that holds every flat voxel index of the crop.

        Returns
        -------
        type
            ``np.int32`` or ``np.int64``.
        """
        return np.int32 if self.values.size < 2**31 else np.int64

    def to_local_index(self, lps: np.ndarray) -> np.ndarray:
        """Fractional index into the crop of LPS points.

        Parameters
        ----------
        lps : (n, 3) ndarray
            Points, LPS mm.

        Returns
        -------
        (n, 3) ndarray
            ``(k, j, i)`` relative to ``padded[0, 0, 0]``, voxels.
        """
        return self.geometry.lps_to_index(lps) - self._offset

    def direction_to_index(self, directions_lps: np.ndarray) -> np.ndarray:
        """Index-space displacement per mm travelled along each LPS direction.

        Parameters
        ----------
        directions_lps : (n, 3) ndarray
            Unit directions in LPS.

        Returns
        -------
        (n, 3) ndarray
            ``(k, j, i)`` change per mm, voxels/mm.
        """
        return self.geometry.lps_direction_to_index(directions_lps)

    def nearest_flat_index(self, shifted: list[np.ndarray], out: np.ndarray, scratch: np.ndarray,
                           integer: np.ndarray) -> np.ndarray:
        """Flat index into the crop of the voxel nearest to each point, clamped to the crop.

        ``shifted`` holds the k, j and i columns of the local index plus one half (float32), so
        that truncation rounds; ``out`` receives the result, ``scratch`` (float32) and
        ``integer`` (:attr:`index_dtype`) are work arrays, all of the points' length. Points beyond the crop
        land in its one-voxel background border, which reads as background.

        Parameters
        ----------
        shifted : list of three (p,) ndarray of float32
            k, j and i of the local index plus one half.
        out : (p,) ndarray
            Receives the flat indices (of :attr:`index_dtype`).
        scratch : (p,) ndarray of float32
            Work array.
        integer : (p,) ndarray
            Work array of :attr:`index_dtype`.

        Returns
        -------
        (p,) ndarray
            ``out``, filled.
        """
        for axis, column in enumerate(shifted):
            np.clip(column, 0.0, float(self._shape[axis] - 1), out=scratch)
            target = out if axis == 0 else integer
            np.copyto(target, scratch, casting="unsafe")  # truncation: the columns are >= 0 here
            if self._strides[axis] != 1:
                target *= self._strides[axis]
            if axis:
                out += integer
        return out

    def sample(self, local_index: np.ndarray) -> np.ndarray:
        """Trilinear value of the mask at local indices; 0 outside the crop.

        Parameters
        ----------
        local_index : (n, 3) ndarray
            Fractional ``(k, j, i)`` in the crop, voxels.

        Returns
        -------
        (n,) ndarray of float
            Interpolated mask, 0..1.
        """
        position = np.clip(local_index, 0.0, self._shape - 1.0)
        base = np.minimum(position.astype(np.int64), self._shape - 2)  # floor: position >= 0
        fraction = position - base
        flat = base @ self._strides
        sk, sj, _ = self._strides
        fk, fj, fi = fraction[:, 0], fraction[:, 1], fraction[:, 2]
        values = self.values

        def along_i(offset: int) -> np.ndarray:
            """Values interpolated along i on the grid row ``offset`` voxels from the base corner.

            Parameters
            ----------
            offset : int
                Flat offset of the row's first voxel from the base corner.

            Returns
            -------
            (n,) ndarray of float
            """
            low = values[flat + offset].astype(np.float64)
            return low + fi * (values[flat + offset + 1] - low)

        row00, row01, row10, row11 = along_i(0), along_i(sj), along_i(sk), along_i(sk + sj)
        plane0 = row00 + fj * (row01 - row00)
        plane1 = row10 + fj * (row11 - row10)
        return plane0 + fk * (plane1 - plane0)


def march(field: MaskField, origins_lps: np.ndarray, directions_lps: np.ndarray, *, length_mm: float,
          step_mm: float, inside: bool) -> np.ndarray:
    """Distance (mm) along each ray to where it leaves the solid (``inside``) or the gap.

    Rays start on the surface. An inward ray (``inside=True``) must first enter the solid and
    then leave it; its exit distance is the wall thickness. An outward ray does the same with the
    background. Rays that have not entered after four steps are no reading and get ``nan`` (the
    surface there has moved off the mask, e.g. a one-voxel fin thinned by smoothing: the mesh's
    own wall is measured by the prepare stage); rays still going after ``length_mm`` get ``inf``.

    Parameters
    ----------
    field : MaskField
        The mask crop the rays march through.
    origins_lps : (n, 3) ndarray
        Ray origins on the surface, LPS mm.
    directions_lps : (n, 3) ndarray
        Unit ray directions, LPS.
    length_mm : float
        Longest distance marched, mm.
    step_mm : float
        Step of the march, mm.
    inside : bool
        March through the solid (wall thickness) rather than the background (gap width).

    Returns
    -------
    (n,) ndarray of float
        Distance to the exit along each ray, mm (``inf`` beyond ``length_mm``, ``nan`` where the
        ray never entered).
    """
    count = len(origins_lps)
    start = field.to_local_index(origins_lps)
    step = field.direction_to_index(directions_lps) * step_mm
    # one contiguous float32 column per axis (sub-voxel precision is plenty): a third of the
    # memory traffic of (n, 3) float64 rows, and each step is a few in-place passes
    position = [np.ascontiguousarray(start[:, axis] + 0.5, dtype=np.float32) for axis in range(3)]
    velocity = [np.ascontiguousarray(step[:, axis], dtype=np.float32) for axis in range(3)]
    del start, step
    result = np.full(count, np.inf)
    active = np.arange(count)  # rays still marching, compacted only when some finish
    entered = np.zeros(count, dtype=bool)
    wanted = 1 if inside else 0
    index = field.index_dtype
    flat, scratch, integer = np.empty(count, index), np.empty(count, np.float32), np.empty(count, index)
    for number in range(1, int(np.ceil(length_mm / step_mm)) + 1):
        if active.size == 0:
            break
        for column, move in zip(position, velocity):
            column += move
        size = active.size
        value = field.values[field.nearest_flat_index(position, flat[:size], scratch[:size], integer[:size])]
        hit = value == wanted
        entered |= hit
        left = entered & ~hit
        finished = (left | ~entered) if number >= 4 else left
        if not finished.any():
            continue
        rays = np.flatnonzero(left)
        if rays.size:
            here = np.stack([column[rays] for column in position], axis=1).astype(np.float64) - 0.5
            back = here - np.stack([move[rays] for move in velocity], axis=1)
            before, after = field.sample(back), field.sample(here)
            if not inside:
                before, after = 1.0 - before, 1.0 - after
            # the exit at the 0.5 crossing of the interpolated mask between the last two samples
            drop = before - after
            fraction = np.where(drop > 0, (before - 0.5) / np.where(drop > 0, drop, 1.0), 0.0)
            result[active[rays]] = (number - 1 + np.clip(fraction, 0.0, 1.0)) * step_mm
        result[active[finished & ~left]] = np.nan
        keep = ~finished
        active, entered = active[keep], entered[keep]
        position = [column[keep] for column in position]
        velocity = [move[keep] for move in velocity]
    return result


@dataclass
class WallSample:
    """Wall thickness at sampled faces.

    Attributes
    ----------
    thickness_mm : ndarray
        Thickness at each sampled face (``inf`` where thicker than ``max_mm``), mm.
    points : ndarray (n, 3)
        Face centres the rays start from, in the mesh's coordinates (mm).
    faces : ndarray of int
        Index of each sampled face.
    """

    thickness_mm: np.ndarray
    points: np.ndarray
    faces: np.ndarray


def sample_wall_thickness(mesh: Any, max_mm: float, samples: int = 3000,
                          seed: int = 0) -> WallSample:
    """Estimate the wall thickness at up to ``samples`` faces, chosen by area.

    From the centre of each sampled face a ray goes along the inward normal; the distance to the
    first surface it leaves the solid through, facing the other way, is the local wall thickness.
    Triangles that share a vertex with the ray's own face are not walls: a ray meets one of them
    only through a fold of the surface (a sliver folded over its neighbour, found at 0.001 mm on
    the example's ventricle), which is a crease of the mesh, not material. Only thicknesses up to
    ``max_mm`` matter (thin walls), so each ray is a short segment and is tested only against
    triangles near it (a k-d tree on triangle centres), with a vectorised Moller-Trumbore
    intersection.

    Parameters
    ----------
    mesh : MeshArrays
        Closed mesh with outward normals, mm: any object with the per-face arrays ``faces``,
        ``triangles``, ``normals`` (unit), ``areas`` and ``centres`` of
        :class:`pipeline.prepare.arrays.MeshArrays`.
    max_mm : float
        Longest thickness looked for, mm; thicker walls are reported as ``inf``.
    samples : int
        Number of faces sampled (area-weighted, deterministic with ``seed``).
    seed : int
        Seed of the random sampling (numpy ``default_rng``).

    Returns
    -------
    WallSample
        Thickness (mm, ``inf`` beyond ``max_mm``) at each distinct sampled face, in face-index
        order; faces drawn twice count once, so there may be fewer than ``samples``.
    """
    areas = mesh.areas
    rng = np.random.default_rng(seed)
    count = min(samples, len(mesh.faces))
    faces = np.unique(rng.choice(len(mesh.faces), size=count, p=areas / areas.sum()))
    triangles = mesh.triangles
    origins = mesh.centres[faces]
    directions = -mesh.normals[faces]

    # Triangles near each ray, from k-d trees on triangle centres, one per size class (a
    # triangle can reach a ray only if its centre is within its own size of the segment).
    centres = mesh.centres
    reach = np.sqrt(np.maximum.reduce([_squared_length(triangles[:, k] - centres) for k in range(3)]))
    level = np.floor(np.log2(np.maximum(reach, 1e-9) / max(np.median(reach), max_mm / 4)))
    level = np.maximum(level, 0).astype(int)
    midpoints = origins + directions * (max_mm / 2)
    rays, tris = [], []
    for value in np.unique(level):
        members = np.flatnonzero(level == value)
        # An unbalanced tree (split at the midpoint, not the median) is built in half the time
        # (0.08 against 0.13 s on 490k centres) and finds the same neighbours.
        tree = cKDTree(centres[members], balanced_tree=False)
        near = tree.query_ball_point(midpoints, r=max_mm / 2 + reach[members].max(), return_sorted=True)
        lengths = np.fromiter((len(n) for n in near), dtype=np.int64, count=len(near))
        if lengths.sum():
            rays.append(np.repeat(np.arange(len(faces)), lengths))
            tris.append(members[np.concatenate([np.asarray(n, dtype=np.int64) for n in near])])
    ray = np.concatenate(rays) if rays else np.zeros(0, dtype=np.int64)
    tri = np.concatenate(tris) if tris else np.zeros(0, dtype=np.int64)

    thickness = np.full(len(faces), np.inf)
    for start in range(0, len(ray), _CHUNK_PAIRS):
        r, t = ray[start:start + _CHUNK_PAIRS], tri[start:start + _CHUNK_PAIRS]
        own = mesh.faces[faces[r]]
        keep = ~(mesh.faces[t][:, :, None] == own[:, None, :]).any(axis=(1, 2))  # own face, neighbours
        r, t = r[keep], t[keep]
        distance = _ray_triangle(origins[r], directions[r], triangles[t])
        # Count only exits across the wall (the far side faces along the ray, within 60
        # degrees), not glancing hits on a neighbouring surface in a concave crease.
        across = np.einsum("ij,ij->i", mesh.normals[t], directions[r]) > 0.5
        hit = (distance > 1e-6) & (distance <= max_mm) & across
        np.minimum.at(thickness, r[hit], distance[hit])
    return WallSample(thickness_mm=thickness, points=origins, faces=faces)


def _squared_length(vectors: np.ndarray) -> np.ndarray:
    """``(vectors ** 2).sum(axis=1)`` of (n, 3) rows, summed in the same order, 2.5x faster."""
    vectors = vectors * vectors
    return vectors[:, 0] + vectors[:, 1] + vectors[:, 2]


def _ray_triangle(origins: np.ndarray, directions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Distance along each ray to its triangle, ``inf`` where it misses."""
    u, v, t, usable = ray_triangle_parameters(origins, directions, triangles[:, 0], triangles[:, 1], triangles[:, 2])
    inside = usable & (u >= 0) & (v >= 0) & (u + v <= 1)
    return np.where(inside, t, np.inf)
