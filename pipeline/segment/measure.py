"""Measurements of a segmented structure: HU statistics and a partial-volume-aware volume."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def hu_statistics(hu: np.ndarray, mask: np.ndarray) -> dict:
    """Mean, SD and percentiles (HU) of the voxels inside ``mask``."""
    values = hu[mask]
    if values.size == 0:
        return {}
    p = np.percentile(values, [1, 5, 50, 95, 99])
    return {"mean": round(float(values.mean(dtype=np.float64)), 1), "sd": round(float(values.std(dtype=np.float64)), 1),
            "min": int(values.min()), "p1": float(p[0]), "p5": float(p[1]), "median": float(p[2]),
            "p95": float(p[3]), "p99": float(p[4]), "max": int(values.max())}


def partial_volume_ml(hu: np.ndarray, mask: np.ndarray, voxel_mm3: float) -> tuple[float, dict]:
    """Volume counting each voxel on the surface by the fraction of it the structure fills, ml.

    A voxel on an edge holds a mixture: its HU lies between the structure's own HU and its
    neighbour's. Thick slices (5 mm) average thin bone with air or tissue and push many such
    voxels below any threshold, so a voxel count falls with slice thickness while this estimate
    does not. Each voxel of the mask and of a one-voxel rim around it counts
    ``clip((HU - background) / (material - background), 0, 1)``, with ``material`` the median HU
    of the mask's interior (voxels whose 6 neighbours are all in the mask) and ``background``
    the lowest HU among the voxel's 26 neighbours (the other material of the mixture).

    ``hu`` and ``mask`` must have a margin of at least two voxels around the structure.
    """
    interior = ndi.binary_erosion(mask)
    material = float(np.median(hu[interior])) if interior.any() else float(np.percentile(hu[mask], 99))
    rim = ndi.binary_dilation(mask, np.ones((3, 3, 3), bool))
    background = ndi.minimum_filter(hu, size=3)[rim].astype(np.float32)
    background = np.minimum(background, material - 1.0)
    fraction = np.clip((hu[rim].astype(np.float32) - background) / (material - background), 0.0, 1.0)
    return float(fraction.sum(dtype=np.float64)) * voxel_mm3 / 1000.0, {"material_hu": material}
