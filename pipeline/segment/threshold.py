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
    """HU of the voxels within ``radius_mm`` of each seed (int16, concatenated)."""
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
    """The window of ``settings.mode`` (see :class:`~pipeline.presets.ThresholdSettings`)."""
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
