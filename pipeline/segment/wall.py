"""The aorta's outer wall: the lumen plus the thrombus and the wall around it, bounded by fat.

A surgeon sizes a stent graft on the outer wall, not on the lumen: an aneurysm's mural thrombus
and a dissection's thrombosed false lumen carry no contrast, so the lumen model misses them.
Around the aorta lies periaortic fat (-70 to -120 HU), lung or bone; between it and the lumen
lie the wall and thrombus (20-60 HU, unenhanced). From the segmented lumen, the outer wall takes
every voxel in the wall window connected to it within ``max_thickness_mm``, after a light
Gaussian (``smoothing_mm``) so noise neither breaks the thrombus nor joins the enhancing
myocardium (90-150 HU) above the window's top; the lumen's blurred edge (above the window,
within ``wall_mm`` of the lumen) joins them; cavities are filled (a calcified plaque inside
the wall is part of it).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import flood

from pipeline.presets import OuterWall
from pipeline.segment import cleanup


def outer_wall(hu: np.ndarray, lumen: np.ndarray, spacing: tuple[float, ...], settings: OuterWall) -> tuple[np.ndarray, dict]:
    """The outer-wall region around ``lumen`` (bool, same box as ``hu``), and what was measured.

    ``hu`` must reach ``settings.max_thickness_mm`` beyond the lumen on every side (the caller
    crops with that margin).

    Parameters
    ----------
    hu : numpy.ndarray
        The CT crop in HU, indexed ``(k, j, i)``.
    lumen : numpy.ndarray of bool
        The lumen on the same box (not empty).
    spacing : tuple of float
        Voxel size in mm per axis ``(k, j, i)``.
    settings : OuterWall
        The preset's outer-wall settings: HU range (``lower_hu``, ``upper_hu``), and in mm
        ``smoothing_mm``, ``max_thickness_mm``, ``opening_mm`` and ``wall_mm``.

    Returns
    -------
    tuple of (numpy.ndarray of bool, dict)
        The lumen with its wall (and thrombus), and ``window_hu``, ``max_thickness_mm``,
        ``thrombus_voxels``, ``voxels_added_to_lumen`` and ``holes_filled_voxels``.
    """
    smooth = ndi.gaussian_filter(hu.astype(np.float32), [settings.smoothing_mm / s for s in spacing])
    to_lumen = ndi.distance_transform_edt(~lumen, sampling=spacing)
    near = to_lumen <= settings.max_thickness_mm
    in_range = (smooth >= settings.lower_hu) & (smooth <= settings.upper_hu)
    # Partial-volume voxels on the edge of fat (fat beside a disc, a rib, the myocardium) read
    # like wall and would join the growth to tissue beyond the fat: grow through voxels one
    # voxel clear of fat and lung, then add the one-voxel rim next to them back.
    fat = ndi.binary_dilation(smooth < settings.lower_hu)
    # The lumen's blurred edge reads between the lumen's floor and the window's top (70-195 HU
    # for a 350 HU lumen): a voxel or more thick at 1.25 mm voxels and finer, it would cut the
    # thrombus off the lumen. Within the wall's thickness of the lumen it is wall or thrombus.
    edge = (to_lumen <= settings.wall_mm) & (smooth > settings.upper_hu)
    candidate = lumen | edge | (near & in_range & ~fat)
    seed = tuple(int(v) for v in np.argwhere(lumen)[0])
    added = flood(candidate, seed, connectivity=1) & ~lumen
    # Thrombus is thick; what joins the wall to tissue beyond it (a partial-volume shell where
    # the myocardium meets fat, a contact with the oesophagus) is thin. Keep the added parts
    # that survive an opening of ``opening_mm`` and touch the lumen, then the wall itself:
    # voxels in range within ``wall_mm`` of lumen or thrombus (a distance, so it cannot spread).
    thick = cleanup.close_open(added, spacing, 0.0, settings.opening_mm) if added.any() else added
    labels, _ = ndi.label(thick)
    touching = np.unique(labels[ndi.binary_dilation(lumen) & thick])
    core = lumen | np.isin(labels, touching[touching > 0])
    wall = core | ((ndi.distance_transform_edt(~core, sampling=spacing) <= settings.wall_mm) & near & in_range)
    wall, filled = cleanup.fill_holes(wall)
    added = int(np.count_nonzero(wall & ~lumen))
    return wall, {"window_hu": [settings.lower_hu, settings.upper_hu], "max_thickness_mm": settings.max_thickness_mm,
                  "thrombus_voxels": int(np.count_nonzero(core & ~lumen)),
                  "voxels_added_to_lumen": added, "holes_filled_voxels": filled}
