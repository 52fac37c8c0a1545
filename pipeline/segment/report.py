"""``SegmentReport``: what :func:`pipeline.segment.segment_volume` did, every number a typed field.

Each part of the report is a dataclass; :meth:`~pipeline.report.Report.to_dict` gives the
same JSON keys the packet has always carried (a part that did not run is ``null``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pipeline.holds import Hold
from pipeline.presets import Preset, Shell
from pipeline.report import Report


@dataclass
class SeedRecord:
    """One seed as given and as placed.

    Attributes
    ----------
    kind : str
        ``include`` or ``exclude``.
    index_kji : list of int
        Voxel index on the volume's grid (k, j, i).
    lps_mm : list of float
        Patient LPS position, mm.
    given_as : str
        ``lps_mm`` or ``index``.
    hu : float
        Median HU of the 3x3x3 voxels around the seed.
    effect : str, optional
        ``in the result`` for an include seed; for an exclude seed what it did.
    """

    kind: str
    index_kji: list[int]
    lps_mm: list[float]
    given_as: str
    hu: float
    effect: str | None = None


@dataclass
class WindowRecord:
    """The HU window the structure was grown in, HU.

    ``seed_mean_hu`` is set by the adaptive mode, ``seed_median_hu`` by the half-maximum mode;
    ``local_lower_hu_range`` is the range of the local half-maximum floors, when used.
    """

    mode: str
    lower_hu: float
    upper_hu: float
    seed_mean_hu: float | None = None
    seed_median_hu: float | None = None
    seed_sd_hu: float | None = None
    structure_median_hu: float | None = None
    local_lower_hu_range: list[float] | None = None


@dataclass
class HUStatistics:
    """HU of the voxels in the (solid) result: mean, SD and nearest-rank percentiles, HU."""

    mean: float
    sd: float
    min: int
    p1: float
    p5: float
    median: float
    p95: float
    p99: float
    max: int


@dataclass
class BoneSeparationResult:
    """The bone barrier on the analysis grid: its threshold (HU), margin (mm) and parts, ml."""

    cortical_hu: float
    margin_mm: float
    cortex_ml: float
    filled_interior_ml: float
    margin_ml: float
    barrier_ml: float


@dataclass
class LeakCut:
    """A piece leak control removed: its size, widest ball and neck, positions in LPS mm.

    ``piece`` numbers it as in :meth:`SegmentReport.removed_pieces`; ``tubular`` is False for a
    blob (a chamber, a vertebral body); ``held_exclude_seed`` says an exclude seed lay in it.
    """

    piece: int
    voxels: int
    volume_ml: float
    neck_radius_mm: float | None
    widest_radius_mm: float
    held_exclude_seed: bool
    tubular: bool
    centroid_lps_mm: list[float]
    neck_lps_mm: list[float]
    inside_lps_mm: list[float]


@dataclass
class LeakControlResult:
    """Leak control: whether it was applied, what grew (ml, mm) and what was cut off (ml).

    The figures after ``applied`` are None when growth ran without the analysis grid.
    """

    mode: str
    applied: bool
    neck_ratio: float | None = None
    grown_ml: float | None = None
    grown_extent_mm: list[float] | None = None
    expectation_exceeded: list[str] = field(default_factory=list)
    exclude_seeds_in_region: int = 0
    competitive_split: bool = False
    basins: int | None = None
    removed_ml: float = 0.0
    rejoined_after_local_check: int | None = None
    rejoined_as_continuation: int | None = None
    cuts: list[LeakCut] = field(default_factory=list)
    leak_definition: str | None = None


@dataclass
class OuterWallResult:
    """The outer wall grown around the lumen: its HU window, reach (mm) and voxel counts."""

    window_hu: list[float]
    max_thickness_mm: float
    thrombus_voxels: int
    voxels_added_to_lumen: int
    holes_filled_voxels: int


@dataclass
class CleanupResult:
    """Clean-up settings applied (ml, mm) and what they changed (voxels, pieces)."""

    fill_holes: bool
    max_hole_ml: float | None
    closing_mm: float
    opening_mm: float
    keep: str
    holes_filled_voxels: int | None = None
    islands_removed: int | None = None
    outer_wall: OuterWallResult | None = None
    shell: Shell | None = None


@dataclass
class AnalysisGrid:
    """The block grid leak control and bone separation ran on: voxels and mm per block (k, j, i)."""

    block_voxels_kji: list[int]
    block_mm_kji: list[float]


@dataclass
class GridRecord:
    """The volume's grid (voxels, mm), the crop worked in (index box) and the analysis grid."""

    shape_kji: list[int]
    spacing_kji_mm: list[float]
    crop_index_box: list[list[int]]
    analysis_grid: AnalysisGrid | None = None


@dataclass
class PlausibilityResult:
    """What the plausibility checks measured: shape rule, widest radius and length (mm), ends."""

    shape: str
    widest_radius_mm: float | None = None
    length_mm: float | None = None
    blob: bool | None = None
    ends_inside_scan: int | None = None


@dataclass
class SegmentParameters:
    """The preset as applied (after ``overrides``) and the overrides given."""

    preset: Preset
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class SegmentReport(Report):
    """What :func:`~pipeline.segment.segment_volume` did, with which parameters, and what came out.

    Volumes in ml, lengths in mm, HU in Hounsfield units, times in seconds.
    """

    preset: str
    structure: str
    label: int
    method: str
    parameters: SegmentParameters
    window: WindowRecord
    seeds: list[SeedRecord]
    voxels: int
    volume_ml: float
    volume_ml_partial_volume: float | None
    components: int
    hu_statistics: HUStatistics | None
    bone_separation: BoneSeparationResult | None
    leak_control: LeakControlResult
    cleanup: CleanupResult
    roi_index_box: list[list[int]] | None
    grid: GridRecord
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    #: findings that hold the model's charge until a person releases them (source "segment")
    holds: list[Hold] = field(default_factory=list)
    plausibility: PlausibilityResult | None = None

    #: Not serialised: the removed pieces, ``(index box on the volume's grid, uint8 piece numbers)``.
    _removed: ClassVar[tuple | None] = None

    def removed_pieces(self, shape: tuple[int, int, int] | None = None) -> np.ndarray | None:
        """The voxels leak control removed, numbered as ``leak_control.cuts`` (``piece``).

        Parameters
        ----------
        shape : tuple of int, optional
            Grid shape (k, j, i) of the result, voxels; the report's grid by default.

        Returns
        -------
        numpy.ndarray or None
            uint8 on the volume's grid, the piece number on voxels in the HU window in the
            removed blocks; None when nothing was removed.
        """
        if self._removed is None:
            return None
        box, pieces = self._removed
        out = np.zeros(tuple(shape or self.grid.shape_kji), np.uint8)
        out[box] = pieces
        return out
