"""Clean-up of a binary mask with sizes in mm: holes, islands, closing/opening, hollow shell."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import flood

from pipeline.segment.grid import ball


def fill_holes(mask: np.ndarray, max_voxels: int | None = None) -> tuple[np.ndarray, int]:
    """Fill cavities (background not connected to the array's faces) up to ``max_voxels`` each.

    Returns the filled mask and the number of voxels added.
    """
    background, count = ndi.label(~mask)
    if count == 0:
        return mask, 0
    border = np.unique(np.concatenate([
        background[0].ravel(), background[-1].ravel(), background[:, 0].ravel(), background[:, -1].ravel(),
        background[:, :, 0].ravel(), background[:, :, -1].ravel()]))
    sizes = np.bincount(background.ravel(), minlength=count + 1)
    fillable = np.ones(count + 1, bool)
    fillable[0] = False
    fillable[border] = False
    if max_voxels is not None:
        fillable &= sizes <= max_voxels
    added = int(sizes[fillable].sum())
    return (mask | fillable[background]) if added else mask, added


def seeded_components(mask: np.ndarray, seeds: list[tuple[int, int, int]]) -> tuple[np.ndarray, int]:
    """The face-connected components of ``mask`` holding the seeds, and how many there are."""
    kept = np.zeros_like(mask)
    components = 0
    for seed in seeds:
        if mask[seed] and not kept[seed]:
            kept |= flood(mask, seed, connectivity=1)
            components += 1
    return kept, components


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component (empty in, empty out)."""
    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def drop_islands(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """Remove components smaller than ``min_voxels``; returns the mask and the number removed."""
    labels, count = ndi.label(mask)
    if count == 0 or min_voxels <= 1:
        return mask, 0
    sizes = np.bincount(labels.ravel())
    small = sizes < min_voxels
    small[0] = False
    return mask & ~small[labels], int(small.sum())


def close_open(mask: np.ndarray, spacing: tuple[float, ...], closing_mm: float, opening_mm: float) -> np.ndarray:
    """Morphological closing then opening with ellipsoids of the given radii (mm)."""
    if closing_mm > 0:
        footprint = ball(closing_mm, spacing)
        pad = [(h, h) for h in np.asarray(footprint.shape) // 2]
        padded = np.pad(mask, pad)
        closed = ndi.binary_closing(padded, footprint)
        mask = closed[tuple(slice(p, p + n) for (p, _), n in zip(pad, mask.shape))] | mask
    if opening_mm > 0:
        mask = ndi.binary_opening(mask, ball(opening_mm, spacing))
    return mask


def hollow_shell(mask: np.ndarray, spacing: tuple[float, ...], thickness_mm: float, side: str) -> np.ndarray:
    """A wall of ``thickness_mm`` inside the mask's surface, or outside it around the lumen.

    The array must have room for an outside wall (a margin of the thickness on every side).
    """
    if side == "inside":
        depth = ndi.distance_transform_edt(mask, sampling=spacing)
        return mask & (depth <= thickness_mm)
    reach = ndi.distance_transform_edt(~mask, sampling=spacing)
    return ~mask & (reach <= thickness_mm)
