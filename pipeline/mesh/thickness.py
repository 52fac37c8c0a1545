"""Wall thickness and gap width by ray marching through the voxel mask.

From every surface vertex a ray goes along the inward normal (wall thickness) or the outward
normal (gap to the next piece of surface) through the 0/1 mask; the distance to where it leaves
the solid (or the gap) on the far side is the local thickness (the ray-based "shape
diameter"). The march reads the nearest voxel at half-voxel steps; each exit is then placed at
the 0.5 crossing of the trilinearly interpolated mask, the level the surface was extracted at.
Distances are in mm in patient space.
"""

from __future__ import annotations

import numpy as np


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
    background. Rays that have not entered after four steps meet a sub-voxel wall and get
    ``step_mm``; rays still going after ``length_mm`` get ``inf``.

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
        Distance to the exit along each ray, mm (``inf`` beyond ``length_mm``).
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
        result[active[finished & ~left]] = step_mm
        keep = ~finished
        active, entered = active[keep], entered[keep]
        position = [column[keep] for column in position]
        velocity = [move[keep] for move in velocity]
    return result
