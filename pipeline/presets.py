"""Structure presets: what to segment and how, as validated YAML (``configs/presets/*.yaml``).

A preset names the HU window of a structure and the reason for it, how to keep bone out, how
to stop the region leaking into neighbours that share its HU range, and how to clean the
result up. :func:`load_preset` finds a preset by name (or path) and validates it; a bad value
is refused as a :class:`~pipeline.errors.ConfigError` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import StrictModel, load_config, validate

#: HU values a CT image can hold (12-bit data with the usual -1024 intercept, and extended scales).
HU_LIMITS = (-1024.0, 31743.0)


class ThresholdSettings(StrictModel):
    """The HU window of the structure.

    * ``fixed`` keeps voxels with ``lower_hu <= HU <= upper_hu``.
    * ``adaptive`` measures the mean and standard deviation of the HU within
      ``adaptive_radius_mm`` of the seeds and keeps ``mean +- adaptive_k * sd``, clipped to the
      fixed window (as confidence-connected growing does).
    * ``half_maximum`` measures the median HU of the structure around the seeds (voxels within
      ``adaptive_radius_mm`` and at least ``lower_hu``) and puts the lower bound half-way between
      it and the surrounding tissue (``background_hu``): a blurred edge crosses that level where
      the true edge is, whatever the contrast level of the scan. ``lower_hu`` is the floor. The
      upper bound rises to ``median + upper_margin_hu`` when that is above ``upper_hu`` (dense
      contrast of low-kV scans), and the bone barrier's threshold rises with it.
    """

    mode: Literal["fixed", "adaptive", "half_maximum"] = "fixed"
    lower_hu: float = Field(ge=HU_LIMITS[0], le=HU_LIMITS[1])
    upper_hu: float = Field(ge=HU_LIMITS[0], le=HU_LIMITS[1])
    adaptive_k: float = Field(2.5, gt=0, le=10)
    adaptive_radius_mm: float = Field(4.0, gt=0, le=50)
    background_hu: float = Field(40.0, ge=HU_LIMITS[0], le=HU_LIMITS[1])
    upper_margin_hu: float = Field(150.0, ge=0, le=2000)
    min_contrast_hu: float | None = Field(
        None, ge=HU_LIMITS[0], le=HU_LIMITS[1],
        description="a contrast study: the HU at an include seed must reach this (else the scan is refused)")
    reason: str = Field(min_length=1, description="why this window: the HU of the structure and its neighbours")

    @model_validator(mode="after")
    def _ordered(self) -> "ThresholdSettings":
        if self.lower_hu > self.upper_hu:
            raise ValueError(f"lower_hu ({self.lower_hu:g}) must not exceed upper_hu ({self.upper_hu:g})")
        return self


class BoneSeparation(StrictModel):
    """Keep bone out of a contrast-filled structure.

    Voxels above ``cortical_hu`` (cortical bone and calcium, brighter than contrast) are a
    barrier; it is filled slice by slice (so cancellous bone inside a cortical ring, at contrast
    HU, is barrier too) and grown by ``margin_mm`` (partial-volume rim of the cortex).
    """

    enabled: bool = False
    cortical_hu: float = Field(700.0, ge=HU_LIMITS[0], le=HU_LIMITS[1])
    margin_mm: float = Field(1.0, ge=0, le=10)
    fill_interiors: bool = True
    reason: str = ""


class LeakControl(StrictModel):
    """Cut the grown region back at constrictions (aortic annulus, contacts between vessels).

    The region's distance map (radius of the largest ball inside, mm) is split into basins, one
    per local widening; neighbouring basins are joined when the neck between them is at least
    ``neck_ratio`` of the narrower side's radius (less half an analysis block for quantisation),
    so branches and fusiform aneurysms stay while chambers joined by a valve ring or structures
    touching over a small contact are cut off; the sides' widths are taken within
    ``neighbourhood_mm`` of the neck, so a long narrow vessel leading to a widening (an
    abdominal aneurysm) is not cut (see :mod:`pipeline.segment.leak`). ``mode``: ``always``
    applies the cut; ``auto`` only when the region exceeds ``max_volume_ml`` or
    ``max_extent_mm``; ``off`` never.

    A narrowing of the structure itself (isthmus, coarctation, the compressed true lumen of a
    dissection) is told from a leak by shape: the piece beyond a neck is kept when it continues
    the kept tube (the line between the two sides' centroids near the neck runs within
    ``continuation_angle_deg`` of the kept tube's axis there) and is not a blob (a piece that
    stays inside the scan and is shorter than ``blob_elongation`` times its widest radius).
    ``leak``: what a leak is for this structure, in words (it goes into the report).
    """

    mode: Literal["off", "auto", "always"] = "always"
    neck_ratio: float = Field(0.8, gt=0, le=1)
    continuation_angle_deg: float | None = Field(None, gt=0, le=90)
    blob_elongation: float = Field(4.0, gt=0, le=50)
    leak: str = ""
    neighbourhood_mm: float = Field(30.0, gt=0, le=200)
    analysis_spacing_mm: float = Field(1.5, gt=0, le=5)
    max_volume_ml: float | None = Field(None, gt=0)
    max_extent_mm: float | None = Field(None, gt=0)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted ``off`` as false.
        return "off" if value is False else value


class Plausibility(StrictModel):
    """What the structure looks like; a result that does not is held for a person.

    ``shape``: ``tube`` (one continuous tube that leaves the scan at its ends or ends at a
    removed blob such as a heart chamber behind a valve), ``blob`` or ``any`` (no check).
    ``radius_mm``: the range of the tube's widest radius. ``min_end_radius_mm``: a tube end
    narrower than this (a small branch's stump) is not checked.
    """

    shape: Literal["tube", "blob", "any"] = "any"
    radius_mm: tuple[float, float] | None = None
    min_end_radius_mm: float = Field(4.0, ge=0, le=50)
    reason: str = ""


class OuterWall(StrictModel):
    """Grow from the lumen into the wall and thrombus, bounded by fat (see :mod:`pipeline.segment.wall`)."""

    lower_hu: float = Field(ge=HU_LIMITS[0], le=HU_LIMITS[1])
    upper_hu: float = Field(ge=HU_LIMITS[0], le=HU_LIMITS[1])
    max_thickness_mm: float = Field(30.0, gt=0, le=100)
    smoothing_mm: float = Field(0.7, ge=0, le=5)
    opening_mm: float = Field(3.0, ge=0, le=20)
    wall_mm: float = Field(2.5, ge=0, le=10)
    reason: str = Field(min_length=1, description="the HU of wall, thrombus and their neighbours, with sources")


class Shell(StrictModel):
    """Hollow model: a wall of ``thickness_mm`` inside or outside the segmented surface."""

    thickness_mm: float = Field(gt=0, le=20)
    side: Literal["inside", "outside"] = "outside"


class Cleanup(StrictModel):
    """Morphological clean-up, radii in mm (anisotropic voxels are handled).

    ``keep``: ``seeded`` the components holding the include seeds (the largest without seeds);
    ``largest`` the largest component when no seed is given; ``all`` every component of the
    window, less islands under ``min_island_ml`` (only where neither leak control nor bone
    separation runs: those always grow from the seeds).
    """

    fill_holes: bool = True
    max_hole_ml: float | None = Field(None, gt=0, description="leave cavities larger than this open (ml)")
    closing_mm: float = Field(0.0, ge=0, le=20)
    opening_mm: float = Field(0.0, ge=0, le=20)
    keep: Literal["seeded", "largest", "all"] = "seeded"
    min_island_ml: float = Field(0.0, ge=0)
    shell: Shell | None = None


class Preset(StrictModel):
    """A structure preset (one YAML file)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    structure: str = Field(min_length=1, description="label name given to the segmented structure")
    description: str = ""
    threshold: ThresholdSettings
    seeds_required: bool = True
    bone_separation: BoneSeparation = BoneSeparation()
    leak_control: LeakControl = LeakControl(mode="off")
    plausibility: Plausibility = Plausibility()
    outer_wall: OuterWall | None = None
    cleanup: Cleanup = Cleanup()
    expected_volume_ml: tuple[float, float] | None = None
    coverage_mm: float | None = Field(
        None, gt=0, le=2000, description="the shortest extent along the slice axis (mm) a series needs to hold "
                                         "the structure; a shorter series is refused before any work")
    coverage_reason: str = Field("", description="why the structure needs that extent")
    partial_volume_estimate: bool = Field(
        False, description="also report a volume that counts surface voxels by the fraction filled "
                           "(agrees across slice thicknesses; see pipeline.segment.measure)")

    @model_validator(mode="after")
    def _consistent(self) -> "Preset":
        if self.expected_volume_ml is not None and self.expected_volume_ml[0] > self.expected_volume_ml[1]:
            raise ValueError("expected_volume_ml must be [minimum, maximum]")
        if self.coverage_mm is not None and not self.coverage_reason.strip():
            raise ValueError("coverage_mm needs coverage_reason: why the structure needs that extent")
        bone = self.bone_separation
        if bone.enabled and bone.cortical_hu <= self.threshold.lower_hu:
            raise ValueError(
                f"bone_separation.cortical_hu ({bone.cortical_hu:g}) must lie above threshold.lower_hu "
                f"({self.threshold.lower_hu:g}), or the structure itself would be taken for bone"
            )
        return self


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` (nested dicts, dotted keys allowed) into a copy of ``base``."""
    merged = dict(base)
    for key, value in overrides.items():
        if "." in key:
            head, rest = key.split(".", 1)
            value, key = {rest: value}, head
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_preset(name_or_path: str | Path) -> Preset:
    """Load and validate a preset by name (``aorta_cta``) or as a path to a YAML file.

    Parameters
    ----------
    name_or_path : str or Path
        A preset name under ``configs/presets/`` (or ``$ANATOMODEL_CONFIG_PATH``), or the path
        of a ``.yaml`` file.

    Returns
    -------
    Preset
        The validated preset (HU thresholds, mm and ml figures as the file gives them).

    Raises
    ------
    ConfigError
        Unknown preset, unreadable file, or a field that fails validation (named in the
        message). Exit code 4.
    """
    return load_config("presets", str(name_or_path), Preset)


def apply_overrides(preset: Preset, overrides: dict[str, Any] | None) -> Preset:
    """A copy of ``preset`` with ``overrides`` applied (e.g. ``{"threshold.lower_hu": 150}``), validated.

    Parameters
    ----------
    preset : Preset
        The preset to start from (not changed).
    overrides : dict or None
        Field values by name, nested dicts or dotted keys (``threshold.lower_hu``), in the
        preset's units; None or empty returns ``preset`` itself.

    Returns
    -------
    Preset
        The merged preset, validated again.

    Raises
    ------
    ConfigError
        An override names an unknown field or gives a value the preset refuses. Exit code 4.
    """
    if not overrides:
        return preset
    data = _merge(preset.model_dump(mode="python"), overrides)
    return validate(Preset, data, f"preset {preset.name} with overrides")


def check_coverage(preset: Preset, coverage_mm: float, slices: int, source: str = "the series") -> None:
    """Refuse a series shorter along the slice axis than ``preset.coverage_mm``.

    Parameters
    ----------
    preset : Preset
    coverage_mm : float
        The series' extent along the slice axis (mm): first to last slice centre plus one step.
    slices : int
        Its number of slices (for the message).
    source : str
        What to name in the message.

    Raises
    ------
    CoverageError
        ``coverage_mm`` is below the preset's figure (exit 21).
    """
    from pipeline.errors import CoverageError

    if preset.coverage_mm is not None and coverage_mm < preset.coverage_mm:
        raise CoverageError(
            f"{source} covers {coverage_mm:.1f} mm in {slices} slice(s) along the slice axis; preset {preset.name} "
            f"needs at least {preset.coverage_mm:g} mm to hold the {preset.structure}",
            hint="load a series that covers the structure (a longer scan range), or use a preset for a shorter one")


def series_extent_mm(geometry: Any) -> float:
    """A grid's extent along the slice axis, mm: slices x slice step (each slice images one step).

    Parameters
    ----------
    geometry : Geometry
        The grid: ``shape`` and ``spacing`` in ``(k, j, i)`` order, spacing in mm (k the slice
        axis).

    Returns
    -------
    float
        ``shape[0] * spacing[0]``, mm.
    """
    return float(geometry.shape[0]) * float(geometry.spacing[0])
