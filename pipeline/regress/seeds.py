"""Automatic seeds for bone in the phantom scans, chosen from the data and recorded."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pipeline.errors import SegmentationError
from pipeline.geometry import Volume, bounding_box

#: A component counts as "large" when it holds at least this fraction of the largest one's voxels.
LARGE_FRACTION = 0.1


def bone_seed(volume: Volume, threshold_hu: float) -> tuple[tuple[int, int, int], dict]:
    """A seed inside the brightest large connected structure above ``threshold_hu``.

    Head holders, tables and pads reach the bone threshold too, but as foam or plastic they lie
    near 300 HU where the skull's cortex lies at 600-2000 HU. So: label the voxels at or above
    the threshold (6-connectivity), keep the components holding at least
    :data:`LARGE_FRACTION` of the largest one's voxels, pick the one with the highest median HU,
    and seed it at its voxel with the highest 3x3x3 mean HU (so the segmenter's 3x3x3 median
    check at the seed sees bone, not a partial-volume edge).

    Parameters
    ----------
    volume : Volume
        CT volume, int16 HU.
    threshold_hu : float
        The bone preset's lower threshold, HU.

    Returns
    -------
    seed_index : tuple of int
        ``(k, j, i)`` in array order.
    how : dict
        The rule, the candidates (voxels, median HU) and the chosen one, for the report.

    Raises
    ------
    SegmentationError
        No voxel reaches the threshold.
    """
    above = volume.array >= threshold_hu
    pieces, count = ndi.label(above)
    if count == 0:
        raise SegmentationError(f"no voxel reaches the bone threshold of {threshold_hu:g} HU")
    sizes = np.bincount(pieces.ravel())[1:]
    large = np.flatnonzero(sizes >= LARGE_FRACTION * sizes.max()) + 1
    medians = {int(label): float(np.median(volume.array[pieces == label])) for label in large}
    chosen = max(medians, key=medians.get)
    inside = pieces == chosen
    del pieces
    box = bounding_box(inside, margin=1)
    hu = volume.array[box].astype(np.float32)
    mean = ndi.uniform_filter(hu, size=3, mode="nearest")
    mean[~inside[box]] = -np.inf
    local = np.unravel_index(int(np.argmax(mean)), mean.shape)
    index = tuple(int(v + b.start) for v, b in zip(local, box))
    voxel_ml = volume.geometry.voxel_volume_mm3 / 1000.0
    how = {
        "method": (f"automatic: components at >= {threshold_hu:g} HU (6-connected) holding >= "
                   f"{LARGE_FRACTION:.0%} of the largest; the one with the highest median HU; its voxel "
                   "with the highest 3x3x3 mean HU"),
        "candidates": [{"volume_ml": round(float(sizes[label - 1]) * voxel_ml, 1),
                        "median_hu": round(medians[label], 1), "chosen": label == chosen}
                       for label in sorted(medians, key=lambda label: -sizes[label - 1])],
        "seed_index_kji": list(index),
        "seed_lps_mm": [round(float(v), 2) for v in volume.geometry.index_to_lps(index)],
        "seed_mean_hu_3x3x3": round(float(mean[local]), 1),
    }
    return index, how
