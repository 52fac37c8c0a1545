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
        self._flat = np.ascontiguousarray(padded, dtype=np.uint8).ravel()
        self._shape = np.asarray(padded.shape)
        self._strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
        self._offset = np.asarray(index_offset, dtype=np.float64)
        self.geometry = geometry

    def to_local_index(self, lps: np.ndarray) -> np.ndarray:
        return self.geometry.lps_to_index(lps) - self._offset

    def direction_to_index(self, directions_lps: np.ndarray) -> np.ndarray:
        """Index-space displacement per mm travelled along each LPS direction."""
        return self.geometry.lps_direction_to_index(directions_lps)

    def nearest(self, local_index: np.ndarray) -> np.ndarray:
        """Value (0 or 1) of the voxel nearest to each local index; 0 outside the crop."""
        voxel = np.clip(np.rint(local_index).astype(np.int64), 0, self._shape - 1)
        return self._flat[voxel @ self._strides]

    def sample(self, local_index: np.ndarray) -> np.ndarray:
        """Trilinear value (0..1) at local indices ``(n, 3)``; 0 outside the crop."""
        position = np.clip(local_index, 0.0, self._shape - 1.0)
        base = np.minimum(position.astype(np.int64), self._shape - 2)  # floor: position >= 0
        fraction = position - base
        flat = base @ self._strides
        sk, sj, _ = self._strides
        fk, fj, fi = fraction[:, 0], fraction[:, 1], fraction[:, 2]
        values = self._flat

        def along_i(offset: int) -> np.ndarray:
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
    """
    start = field.to_local_index(origins_lps).astype(np.float32)  # sub-voxel precision is plenty
    velocity = field.direction_to_index(directions_lps).astype(np.float32)
    result = np.full(len(start), np.inf)
    # the rays still marching, compacted only when some finish (most go the whole length)
    active = np.arange(len(start))
    entered = np.zeros(len(start), dtype=bool)
    wanted = 1 if inside else 0
    for number in range(1, int(np.ceil(length_mm / step_mm)) + 1):
        if active.size == 0:
            break
        distance = number * step_mm
        value = field.nearest(start + np.float32(distance) * velocity)
        entered |= value == wanted
        left = entered & (value != wanted)
        never = ~entered & (number >= 4)
        if left.any():
            rays = np.flatnonzero(left)
            before = field.sample(start[rays] + (distance - step_mm) * velocity[rays])
            after = field.sample(start[rays] + distance * velocity[rays])
            if not inside:
                before, after = 1.0 - before, 1.0 - after
            drop = before - after
            fraction = np.where(drop > 0, (before - 0.5) / np.where(drop > 0, drop, 1.0), 0.0)
            result[active[rays]] = distance - step_mm + np.clip(fraction, 0.0, 1.0) * step_mm
        result[active[never]] = step_mm
        finished = left | never
        if finished.any():
            keep = ~finished
            active, start, velocity, entered = active[keep], start[keep], velocity[keep], entered[keep]
    return result
