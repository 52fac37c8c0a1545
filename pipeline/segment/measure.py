"""Measurements of a segmented structure: HU statistics and a partial-volume-aware volume."""

from __future__ import annotations

import numpy as np

from pipeline.segment.grid import extreme_3x3x3


def hu_statistics(hu: np.ndarray, mask: np.ndarray) -> dict:
    """Mean, SD and percentiles (HU) of the voxels inside ``mask``.

    From the histogram of the integer HU values (nearest-rank percentiles), much cheaper than
    sorting millions of voxels.

    Parameters
    ----------
    hu : numpy.ndarray of int
        The CT array in HU (integer values), indexed ``(k, j, i)``.
    mask : numpy.ndarray of bool
        The structure, on the same grid.

    Returns
    -------
    dict
        ``mean`` and ``sd`` (HU, to 0.1), ``min``, ``p1``, ``p5``, ``median``, ``p95``, ``p99`` and
        ``max`` (HU); empty when the mask is empty.
    """
    values = hu[mask]
    if values.size == 0:
        return {}
    low = int(values.min())
    counts = np.bincount((values.astype(np.int64) - low))
    levels = np.arange(low, low + counts.size, dtype=np.float64)
    total = counts.sum()
    mean = float((counts * levels).sum() / total)
    sd = float(np.sqrt((counts * (levels - mean) ** 2).sum() / total))
    cumulative = np.cumsum(counts)

    def percentile(q: float) -> float:
        """One percentile from the histogram.

        Parameters
        ----------
        q : float
            The percentile, 0..100.

        Returns
        -------
        float
            The nearest-rank HU value at ``q``.
        """
        return float(levels[np.searchsorted(cumulative, q / 100 * total)])

    return {"mean": round(mean, 1), "sd": round(sd, 1), "min": low, "p1": percentile(1), "p5": percentile(5),
            "median": percentile(50), "p95": percentile(95), "p99": percentile(99), "max": int(values.max())}


def partial_volume_ml(hu: np.ndarray, mask: np.ndarray, voxel_mm3: float) -> tuple[float, dict]:
    """Volume counting each voxel on the surface by the fraction of it the structure fills, ml.

    A voxel on an edge holds a mixture: its HU lies between the structure's own HU and its
    neighbour's. Thick slices (5 mm) average thin bone with air or tissue and push many such
    voxels below any threshold, so a voxel count falls with slice thickness while this estimate
    does not. Each voxel of the mask and of a one-voxel rim around it counts
    ``clip((HU - background) / (material - background), 0, 1)``, with ``material`` the median HU
    of the mask's interior (voxels whose 26 neighbours are all in the mask) and ``background``
    the lowest HU among the voxel's 26 neighbours (the other material of the mixture).

    ``hu`` and ``mask`` must have a margin of at least two voxels around the structure.

    Parameters
    ----------
    hu : numpy.ndarray
        The CT array in HU, indexed ``(k, j, i)``.
    mask : numpy.ndarray of bool
        The structure (not empty), on the same grid.
    voxel_mm3 : float
        Volume of one voxel, mm³.

    Returns
    -------
    tuple of (float, dict)
        The volume in mL, and ``{"material_hu": float}``: the material HU used (the interior's
        median, or the mask's 99th percentile when it has no interior voxel).
    """
    interior = extreme_3x3x3(mask, np.logical_and)
    material = float(np.median(hu[interior])) if interior.any() else float(np.percentile(hu[mask], 99))
    rim = extreme_3x3x3(mask, np.logical_or)
    background = extreme_3x3x3(hu, np.minimum)[rim].astype(np.float32)
    background = np.minimum(background, material - 1.0)
    fraction = np.clip((hu[rim].astype(np.float32) - background) / (material - background), 0.0, 1.0)
    return float(fraction.sum(dtype=np.float64)) * voxel_mm3 / 1000.0, {"material_hu": material}
