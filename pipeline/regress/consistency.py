"""Consistency across acquisitions: the same skull from differently acquired series agrees.

Each tilted series' skull is rigidly registered to the untilted 1 mm skull (point-to-plane ICP
from the identity: the series share the frame of reference, so the registration should find
almost nothing to do) and compared with it. The series cover different lengths of the head along
z, and a mesh is capped flat where its scan ends, so both are compared only over the common
coverage, inset by a margin: surface points outside the slab are not counted, and the volumes
are those of both solids cut to the slab.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trimesh

from pipeline.geometry import Geometry
from pipeline.regress.surface import crop_z, rigid_icp, sample_surface, symmetric_mean_distance

#: Bounds the issue sets: tilt correction must reproduce the untilted skull to these.
MAX_MEAN_DISTANCE_MM = 1.0
MAX_VOLUME_DIFFERENCE = 0.03
#: Points sampled per mesh for the registration.
ICP_SAMPLES = 20_000


def common_slab(reference: Geometry, other: Geometry) -> tuple[float, float, float]:
    """The z range (LPS mm) both scans cover, inset by a margin; and the margin.

    The margin is one slice of the thicker series plus 1 mm: the end slices are where a mesh is
    capped and where a tilted series' resampled slices are incomplete.
    """
    low = max(reference.bounds_lps()[0][2], other.bounds_lps()[0][2])
    high = min(reference.bounds_lps()[1][2], other.bounds_lps()[1][2])
    margin = max(reference.spacing[0], other.spacing[0]) + 1.0
    return low + margin, high - margin, margin


def compare_acquisitions(reference: trimesh.Trimesh, reference_grid: Geometry, other: trimesh.Trimesh,
                         other_grid: Geometry, *, checked: bool = True) -> dict[str, Any]:
    """Register ``other`` to ``reference`` and measure their agreement over the common slab.

    Returns
    -------
    dict
        Slab (mm), ICP summary, mean/p95 surface distance before and after registration (mm),
        both slab volumes (ml) and their relative difference, the bounds and whether they hold;
        ``distances_after`` holds every sampled point's distance after registration (an array).
    """
    z_low, z_high, margin = common_slab(reference_grid, other_grid)

    def in_slab(points: np.ndarray) -> np.ndarray:
        return (points[:, 2] >= z_low) & (points[:, 2] <= z_high)

    fixed, fixed_normals = sample_surface(reference, ICP_SAMPLES, seed=3)
    moving, _ = sample_surface(other, ICP_SAMPLES, seed=4)
    keep_fixed, keep_moving = in_slab(fixed), in_slab(moving)
    transform, icp = rigid_icp(moving[keep_moving], fixed[keep_fixed], fixed_normals[keep_fixed])
    before = symmetric_mean_distance(other, reference, keep=in_slab)
    registered = other.copy()
    registered.apply_transform(transform)
    after = symmetric_mean_distance(registered, reference, keep=in_slab, with_distances=True)
    reference_ml = crop_z(reference, z_low, z_high).volume / 1000.0
    other_ml = crop_z(registered, z_low, z_high).volume / 1000.0
    difference = other_ml / reference_ml - 1.0
    result = {
        "common_z_lps_mm": [round(z_low, 2), round(z_high, 2)],
        "margin_mm": round(margin, 2),
        "icp": icp,
        "distance_before_registration": before,
        "distance": after,
        "distances_after": after.pop("distances"),
        "reference_volume_ml": reference_ml,
        "volume_ml": other_ml,
        "volume_difference": difference,
        "bounds": {"mean_distance_mm": MAX_MEAN_DISTANCE_MM, "volume_difference": MAX_VOLUME_DIFFERENCE},
        "checked": checked,
    }
    result["ok"] = bool(after["mean_mm"] <= MAX_MEAN_DISTANCE_MM and abs(difference) <= MAX_VOLUME_DIFFERENCE)
    return result
