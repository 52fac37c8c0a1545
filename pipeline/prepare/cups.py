"""Cups: hollows that seal against the resin tank in inverted (bottom-up) SLA.

In the print frame (plate at z = 0, each new layer at the top), a layer that contains an
enclosed hole seals that hole against the tank film. If the hollow below the hole cannot vent
downwards (towards the plate, where the part hangs on supports in open resin), peeling creates
suction: a cup. Closed voids count too: they trap uncured resin. Both need drain holes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.prepare.columns import Columns

_SLICE_ONLY = np.zeros((3, 3, 3), dtype=bool)
_SLICE_ONLY[:, :, 1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


@dataclass
class Cups:
    """Cups found on a voxel grid of the oriented model.

    Attributes
    ----------
    volume_mm3 : float
        Total volume of all cups, mm3.
    count : int
        Number of separate cups.
    centres : ndarray (count, 3)
        Centre of each cup in the print frame, mm.
    """

    volume_mm3: float
    count: int
    centres: np.ndarray


def solid_voxels(columns: Columns, entering: np.ndarray, height: float) -> np.ndarray:
    """Occupancy grid (nx, ny, nz) of cubes of side ``columns.cell_mm`` from the ray crossings.

    ``entering`` marks crossings into the solid (downward-facing triangles).

    Parameters
    ----------
    columns : Columns
        The ray crossings of the oriented model (:func:`~pipeline.prepare.columns.cast_columns`).
    entering : ndarray of bool
        Per crossing: True where the ray enters the solid.
    height : float
        The model's height above the plate, mm (sets nz).

    Returns
    -------
    ndarray of bool (nx, ny, nz)
        True for cubes inside the solid; cube ``k`` spans heights around ``k * cell_mm``.
    """
    cell = columns.cell_mm
    nx, ny = columns.shape
    nz = int(np.ceil(height / cell)) + 1
    level = np.clip(np.round(columns.z / cell).astype(np.int64), 0, nz - 1)
    steps = np.zeros(nx * ny * (nz + 1), dtype=np.int32)
    np.add.at(steps, columns.cell * (nz + 1) + level, np.where(entering, 1, -1))
    return np.cumsum(steps.reshape(nx, ny, nz + 1), axis=2)[:, :, :nz] > 0


def find_cups(solid: np.ndarray, cell_mm: float, origin: np.ndarray) -> Cups:
    """Hollows enclosed within their layer and closed towards the plate.

    Parameters
    ----------
    solid : ndarray of bool (nx, ny, nz)
        Occupancy in the print frame, z = 0 at the plate.
    cell_mm : float
        Voxel side, mm.
    origin : ndarray (2,)
        XY of the grid corner, mm.

    Returns
    -------
    Cups
        The pockets of empty voxels enclosed within their layer that do not vent towards the
        plate: total volume (mm3), count and centres (print frame, mm). Zero cups when there
        are none.
    """
    padded = np.pad(solid, ((1, 1), (1, 1), (0, 0)))
    empty = ~padded
    # Empty regions of each layer; those touching the layer's border are open to the vat.
    labels, _ = ndimage.label(empty, structure=_SLICE_ONLY)
    border = np.unique(np.concatenate([labels[0].ravel(), labels[-1].ravel(),
                                       labels[:, 0].ravel(), labels[:, -1].ravel()]))
    hole = empty & ~np.isin(labels, border)
    if not hole.any():
        return Cups(0.0, 0, np.zeros((0, 3)))
    pockets, count = ndimage.label(hole)
    # A pocket vents if any voxel of it sits on open (non-hole) space or on the bottom layer.
    open_below = np.zeros_like(hole)
    open_below[:, :, 1:] = hole[:, :, 1:] & empty[:, :, :-1] & ~hole[:, :, :-1]
    open_below[:, :, 0] = hole[:, :, 0]
    vented = np.unique(pockets[open_below])
    ids = np.setdiff1d(np.arange(1, count + 1), vented)
    if len(ids) == 0:
        return Cups(0.0, 0, np.zeros((0, 3)))
    sizes = ndimage.sum_labels(hole, pockets, ids)
    centres = np.array(ndimage.center_of_mass(hole, pockets, ids)).reshape(-1, 3)
    centres[:, :2] = (centres[:, :2] - 0.5) * cell_mm + origin  # undo the padding
    centres[:, 2] *= cell_mm
    return Cups(float(sizes.sum() * cell_mm**3), int(len(ids)), centres)
