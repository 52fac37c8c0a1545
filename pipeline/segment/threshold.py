"""The HU window: fixed from the preset, or adaptive around the seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.geometry import Volume
from pipeline.presets import ThresholdSettings
from pipeline.segment.grid import ball
from pipeline.segment.seeds import Seed


@dataclass
class Window:
    lower_hu: float
    upper_hu: float
    mode: str
    seed_level_hu: float | None = None  # mean (adaptive) or median (half_maximum) around the seeds
    seed_sd_hu: float | None = None
    structure_median_hu: float | None = None  # half_maximum: the grown structure's core, when it moved the window


def neighbourhood_hu(volume: Volume, seeds: list[Seed], radius_mm: float) -> np.ndarray:
    """HU of the voxels within ``radius_mm`` of each seed (int16, concatenated).

    Parameters
    ----------
    volume : Volume
        The CT volume (int16 HU, indexed ``(k, j, i)``).
    seeds : list of Seed
        The include seeds (their voxel ``index``).
    radius_mm : float
        Radius of the ball around each seed, mm (an ellipsoid in voxels on an anisotropic grid),
        clipped at the array's faces.

    Returns
    -------
    numpy.ndarray of int16
        The HU values, seed after seed (a voxel near two seeds counts twice); empty without seeds.
    """
    footprint = ball(radius_mm, volume.geometry.spacing)
    half = np.asarray(footprint.shape) // 2
    values = []
    for seed in seeds:
        low = np.asarray(seed.index) - half
        box = tuple(slice(max(lo, 0), min(lo + n, size))
                    for lo, n, size in zip(low, footprint.shape, volume.geometry.shape))
        fbox = tuple(slice(b.start - lo, b.stop - lo) for b, lo in zip(box, low))
        values.append(volume.array[box][footprint[fbox]])
    return np.concatenate(values) if values else np.empty(0, np.int16)


def hu_window(volume: Volume, settings: ThresholdSettings, seeds: list[Seed]) -> Window:
    """The window of ``settings.mode`` (see :class:`~pipeline.presets.ThresholdSettings`).

    Parameters
    ----------
    volume : Volume
        The CT volume (int16 HU).
    settings : ThresholdSettings
        The preset's threshold settings: ``mode`` (``fixed``, ``adaptive`` or ``half_maximum``),
        bounds ``lower_hu``/``upper_hu``, and the adaptive radius (mm), ``adaptive_k`` (SDs),
        ``background_hu`` and ``upper_margin_hu``.
    seeds : list of Seed
        The include seeds; without any the window is the fixed one.

    Returns
    -------
    Window
        The window in HU, its mode and the level (mean or median, HU) and SD (HU) measured around
        the seeds. An adaptive window stays inside the preset's bounds (falling back to them when
        the seeds lie outside altogether); a half-maximum one may raise the upper bound.
    """
    if settings.mode == "fixed" or not seeds:
        return Window(settings.lower_hu, settings.upper_hu, "fixed")
    values = neighbourhood_hu(volume, seeds, settings.adaptive_radius_mm).astype(np.float32)
    if settings.mode == "half_maximum":
        inside = values[values >= settings.lower_hu]
        if inside.size == 0:  # the seeds' surroundings lie below the floor: the seed check will say so
            return Window(settings.lower_hu, settings.upper_hu, "half_maximum")
        median = float(np.median(inside))
        lower = max(settings.lower_hu, 0.5 * (median + settings.background_hu))
        upper = max(settings.upper_hu, median + settings.upper_margin_hu)
        return Window(lower, upper, "half_maximum", round(median, 1), round(float(inside.std()), 1))
    mean, sd = float(values.mean()), float(values.std())
    lower = max(settings.lower_hu, mean - settings.adaptive_k * sd)
    upper = min(settings.upper_hu, mean + settings.adaptive_k * sd)
    if lower > upper:  # the seeds' HU lies outside the allowed bounds altogether
        lower, upper = settings.lower_hu, settings.upper_hu
    return Window(lower, upper, "adaptive", round(mean, 1), round(sd, 1))


def refine_window(window: Window, settings: ThresholdSettings, structure_median_hu: float,
                  tolerance_hu: float = 10.0) -> bool:
    """Move a half-maximum window to the level of the structure grown from it (in place).

    The seed may sit in a dimmer part of the structure (a dissection's false lumen, the far end
    of a bolus): the level measured in the grown structure's core (its median HU, blocks two
    blocks inside) is the one whose half maximum marks the structure's edge. Returns True when
    the window moved by more than ``tolerance_hu``.

    Parameters
    ----------
    window : Window
        The window :func:`hu_window` made; changed in place when it moves.
    settings : ThresholdSettings
        The preset's threshold settings (bounds, ``background_hu``, ``upper_margin_hu``).
    structure_median_hu : float
        Median HU of the grown structure's core.
    tolerance_hu : float
        Least move of either bound that counts, HU.

    Returns
    -------
    bool
        True when the window moved (always False for a window not in ``half_maximum`` mode).
    """
    if window.mode != "half_maximum":
        return False
    lower = max(settings.lower_hu, 0.5 * (structure_median_hu + settings.background_hu))
    upper = max(settings.upper_hu, structure_median_hu + settings.upper_margin_hu)
    if abs(lower - window.lower_hu) <= tolerance_hu and abs(upper - window.upper_hu) <= tolerance_hu:
        return False
    window.lower_hu, window.upper_hu = lower, upper
    window.structure_median_hu = round(structure_median_hu, 1)
    return True
