"""Consistency across acquisitions: the same skull from differently acquired series agrees.

Each tilted series' skull is rigidly registered to the untilted 1 mm skull (point-to-plane ICP
from the identity: the series share the frame of reference, so the registration should find
little to do; it absorbs a small repositioning of the phantom between visits) and compared
with it. The series cover different parts of the head, and a tilted series covers a slab that
is itself tilted (its slices stay perpendicular to the tilted gantry's axis after the loader's
correction); a mesh is capped flat where its scan ends. So both are compared only over the
region both scans cover, inset by a margin: the intersection of the two grids' boxes (the
tilted one moved by the registration). Surface points outside it are not counted, and the
volumes are those of both solids cut to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trimesh

from pipeline.geometry import Geometry
from pipeline.regress.surface import crop_planes, inside_planes, rigid_icp, sample_surface, symmetric_mean_distance

#: Bounds the issue sets: tilt correction must reproduce the untilted skull to these.
MAX_MEAN_DISTANCE_MM = 1.0
MAX_VOLUME_DIFFERENCE = 0.03
#: Points sampled per mesh for the registration, and for each distance measurement.
ICP_SAMPLES = 20_000
DISTANCE_SAMPLES = 5_000
#: Inset of the common region in-plane (mm); along the slices it is one slice plus this.
INSET_MM = 1.0


def coverage_planes(grid: Geometry, transform: np.ndarray | None = None) -> list[tuple[np.ndarray, float]]:
    """The six planes bounding the voxel centres of ``grid``, inset, optionally moved by ``transform``.

    Along the slice axis the inset is one slice plus :data:`INSET_MM` (the end slices are where a
    mesh is capped and where a tilted series' resampled slices are incomplete); in-plane it is
    :data:`INSET_MM`. Each plane is ``(normal, offset)`` keeping ``normal . p >= offset``.

    Parameters
    ----------
    grid : Geometry
        The series' grid (LPS, mm).
    transform : (4, 4) ndarray, optional
        Rigid transform of LPS points (mm) to apply to the planes, such as the registration of
        this series onto the reference; None keeps them where the grid is.

    Returns
    -------
    list of (ndarray, float)
        Six ``(normal, offset)`` pairs, two per array axis ``(k, j, i)``: unit LPS normal and
        offset in mm, the inside being ``normal . p >= offset`` for LPS points ``p`` in mm.
    """
    rotation, shift = (np.eye(3), np.zeros(3)) if transform is None else (transform[:3, :3], transform[:3, 3])
    origin = np.asarray(grid.origin)
    planes = []
    for axis in range(3):
        normal = grid.direction_matrix[:, axis]
        inset = INSET_MM + (grid.spacing[0] if axis == 0 else 0.0)
        low = normal @ origin + inset
        high = normal @ origin + (grid.shape[axis] - 1) * grid.spacing[axis] - inset
        moved = rotation @ normal
        planes += [(moved, low + moved @ shift), (-moved, -high - moved @ shift)]
    return planes


def compare_acquisitions(reference: trimesh.Trimesh, reference_grid: Geometry, other: trimesh.Trimesh,
                         other_grid: Geometry, *, volume_reference: trimesh.Trimesh | None = None,
                         checked: bool = True) -> dict[str, Any]:
    """Register ``other`` to ``reference`` and measure their agreement over the common region.

    ``volume_reference``, if given, is the reference acquisition reconstructed at ``other``'s
    slice thickness (on ``reference_grid``): the volume is then checked against it, so that the
    check isolates the tilt correction from the partial-volume loss of thin bone that thicker
    slices cause at a fixed threshold (the difference to ``reference`` is still reported).

    Parameters
    ----------
    reference : trimesh.Trimesh
        The reference skull (the untilted 1 mm series), closed, LPS mm.
    reference_grid : Geometry
        The grid ``reference`` was made from; it bounds the common region.
    other : trimesh.Trimesh
        The skull of the series compared, closed, LPS mm; registered onto ``reference``.
    other_grid : Geometry
        The grid ``other`` was made from.
    volume_reference : trimesh.Trimesh, optional
        The reference acquisition at ``other``'s slice thickness (LPS mm), to check the volume
        against; None checks it against ``reference``.
    checked : bool
        Whether the bounds are enforced for this series (False: reported for information);
        copied into the result, ``ok`` is computed either way.

    Returns
    -------
    dict
        ICP summary, z extent of the common region (mm), mean/p95 surface distance before and
        after registration (mm), both volumes in the common region (ml) and their relative
        difference, the bounds and whether they hold; ``distances_after`` holds every sampled
        point's distance after registration (an array).
    """
    common = coverage_planes(reference_grid) + coverage_planes(other_grid)
    fixed, fixed_normals = sample_surface(reference, ICP_SAMPLES, seed=3)
    moving, _ = sample_surface(other, ICP_SAMPLES, seed=4)
    keep_fixed, keep_moving = inside_planes(fixed, common), inside_planes(moving, common)
    transform, icp = rigid_icp(moving[keep_moving], fixed[keep_fixed], fixed_normals[keep_fixed])
    before = symmetric_mean_distance(other, reference, DISTANCE_SAMPLES, keep=lambda p: inside_planes(p, common))
    registered = other.copy()
    registered.apply_transform(transform)
    common = coverage_planes(reference_grid) + coverage_planes(other_grid, transform)
    after = symmetric_mean_distance(registered, reference, DISTANCE_SAMPLES,
                                    keep=lambda p: inside_planes(p, common), with_distances=True)
    reference_part, other_part = crop_planes(reference, common), crop_planes(registered, common)
    reference_ml, other_ml = reference_part.volume / 1000.0, other_part.volume / 1000.0
    compared_ml = crop_planes(volume_reference, common).volume / 1000.0 if volume_reference is not None else reference_ml
    difference = other_ml / compared_ml - 1.0
    result = {
        "common_z_lps_mm": [round(float(reference_part.bounds[0, 2]), 2), round(float(reference_part.bounds[1, 2]), 2)],
        "icp": icp,
        "distance_before_registration": before,
        "distance": after,
        "distances_after": after.pop("distances"),
        "reference_volume_ml": reference_ml,
        "volume_ml": other_ml,
        "volume_ml_thickness_matched_reference": compared_ml if volume_reference is not None else None,
        "volume_difference": difference,
        "volume_difference_to_reference": other_ml / reference_ml - 1.0,
        "bounds": {"mean_distance_mm": MAX_MEAN_DISTANCE_MM, "volume_difference": MAX_VOLUME_DIFFERENCE},
        "checked": checked,
    }
    result["ok"] = bool(after["mean_mm"] <= MAX_MEAN_DISTANCE_MM and abs(difference) <= MAX_VOLUME_DIFFERENCE)
    return result
