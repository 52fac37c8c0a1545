"""Clean-up of a binary mask with sizes in mm: holes, islands, closing/opening, hollow shell."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import flood



def fill_holes(mask: np.ndarray, max_voxels: int | None = None) -> tuple[np.ndarray, int]:
    """Fill cavities (background not connected to the array's faces) up to ``max_voxels`` each.

    Returns the filled mask and the number of voxels added.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The 3-D binary mask, indexed ``(k, j, i)`` (slice, row, column).
    max_voxels : int, optional
        Largest cavity filled, in voxels; None fills every cavity. Cavities are face-connected.

    Returns
    -------
    tuple of (numpy.ndarray of bool, int)
        The filled mask (the input itself when nothing was added) and the number of voxels added.
    """
    # Kept over skimage.morphology.remove_small_holes: that also fills small background touching
    # the array's faces (identical only on a padded copy), returns no count, and took 0.17-0.20 s
    # against 0.15 s here (200x256x256 mask, median of 5, 2026-12-03).
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
    """The face-connected components of ``mask`` holding the seeds, and how many there are.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The 3-D binary mask, indexed ``(k, j, i)`` (slice, row, column).
    seeds : list of tuple of int
        Seed voxels as ``(k, j, i)`` indices inside the array; a seed outside the mask is skipped.

    Returns
    -------
    tuple of (numpy.ndarray of bool, int)
        The union of the components that hold a seed, and how many distinct components that is.
    """
    kept = np.zeros_like(mask)
    components = 0
    for seed in seeds:
        if mask[seed] and not kept[seed]:
            kept |= flood(mask, seed, connectivity=1)
            components += 1
    return kept, components


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component (empty in, empty out).

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The 3-D binary mask, indexed ``(k, j, i)`` (slice, row, column).

    Returns
    -------
    numpy.ndarray of bool
        The largest face-connected component (the input itself when it has at most one; the first
        in label order on a tie).
    """
    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def drop_islands(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """Remove components smaller than ``min_voxels``; returns the mask and the number removed.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The 3-D binary mask, indexed ``(k, j, i)`` (slice, row, column).
    min_voxels : int
        Smallest component kept, in voxels (components are face-connected); 1 or less keeps all.

    Returns
    -------
    tuple of (numpy.ndarray of bool, int)
        The mask without the small components, and the number of components removed.
    """
    # skimage.morphology.remove_small_objects(max_size=min_voxels - 1) gives the same mask in the
    # same time (0.14 s, 200x256x256, 2026-12-03) but no count, which would take a second labelling.
    labels, count = ndi.label(mask)
    if count == 0 or min_voxels <= 1:
        return mask, 0
    sizes = np.bincount(labels.ravel())
    small = sizes < min_voxels
    small[0] = False
    return mask & ~small[labels], int(small.sum())


def dilate(mask: np.ndarray, radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Voxels within ``radius_mm`` of the mask (a Euclidean ball, any voxel size).

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The 3-D binary mask, indexed ``(k, j, i)`` (slice, row, column).
    radius_mm : float
        The ball's radius in mm (voxel centre to voxel centre).
    spacing : tuple of float
        Voxel size in mm per array axis, in the mask's index order ``(k, j, i)``.

    Returns
    -------
    numpy.ndarray of bool
        The dilated mask (the input itself when it is empty).
    """
    if not mask.any():
        return mask
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def erode(mask: np.ndarray, radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Voxels farther than ``radius_mm`` from everything outside the mask.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The 3-D binary mask, indexed ``(k, j, i)`` (slice, row, column).
    radius_mm : float
        The ball's radius in mm (voxel centre to voxel centre).
    spacing : tuple of float
        Voxel size in mm per array axis, in the mask's index order ``(k, j, i)``.

    Returns
    -------
    numpy.ndarray of bool
        The eroded mask.

    Raises
    ------
    ValueError
        If the mask fills the whole array (there is no background to measure from).
    """
    if mask.all():
        raise ValueError("erode needs a margin of background around the mask")
    return ndi.distance_transform_edt(mask, sampling=spacing) > radius_mm


def close_open(mask: np.ndarray, spacing: tuple[float, ...], closing_mm: float, opening_mm: float) -> np.ndarray:
    """Morphological closing then opening with balls of the given radii (mm).

    Distance maps make the cost independent of the radius. The array needs a margin of the
    closing radius around the mask.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The 3-D binary mask, indexed ``(k, j, i)`` (slice, row, column).
    spacing : tuple of float
        Voxel size in mm per array axis, in the mask's index order ``(k, j, i)``.
    closing_mm : float
        Radius of the closing ball in mm; 0 or less skips the closing.
    opening_mm : float
        Radius of the opening ball in mm; 0 or less skips the opening.

    Returns
    -------
    numpy.ndarray of bool
        The mask after closing (never losing a voxel of the input) then opening (never adding one).

    Raises
    ------
    ValueError
        If an erosion finds no background (the mask, or its dilation, fills the array).
    """
    if closing_mm > 0:
        mask = erode(dilate(mask, closing_mm, spacing), closing_mm, spacing) | mask
    if opening_mm > 0:
        mask = dilate(erode(mask, opening_mm, spacing), opening_mm, spacing) & mask
    return mask


def hollow_shell(mask: np.ndarray, spacing: tuple[float, ...], thickness_mm: float, side: str) -> np.ndarray:
    """A wall of ``thickness_mm`` inside the mask's surface, or outside it around the lumen.

    The array must have room for an outside wall (a margin of the thickness on every side).
    Distances run between voxel centres, while the surface lies beyond the mask's outermost
    centres: the nearest of them sits on average about a quarter voxel inside it, which is
    added to the thickness.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The 3-D binary mask, indexed ``(k, j, i)`` (slice, row, column).
    spacing : tuple of float
        Voxel size in mm per array axis, in the mask's index order ``(k, j, i)``.
    thickness_mm : float
        Wall thickness in mm.
    side : {"inside", "outside"}
        ``inside``: the wall is the outer layer of the mask; any other value: a layer of background
        around the mask (a wall around a lumen).

    Returns
    -------
    numpy.ndarray of bool
        The wall voxels only (a subset of the mask for ``inside``, disjoint from it otherwise).
    """
    to_surface = 0.25 * float(np.mean(spacing))
    if side == "inside":
        depth = ndi.distance_transform_edt(mask, sampling=spacing)
        return mask & (depth <= thickness_mm + to_surface)
    reach = ndi.distance_transform_edt(~mask, sampling=spacing)
    return ~mask & (reach <= thickness_mm + to_surface)
