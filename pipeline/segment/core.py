"""``segment_volume``: one structure from a CT volume, a preset and seeds, with its report."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import flood, watershed

from pipeline.errors import SegmentationError
from pipeline.geometry import Geometry, Mask, Volume, bounding_box
from pipeline.presets import Preset, apply_overrides, load_preset
from pipeline.report import StageClock
from pipeline.segment import cleanup, plausibility
from pipeline.segment.bone import bone_barrier
from pipeline.segment.grid import block_factors, block_mean_max, coarse_to_box, extreme_3x3x3, upsample
from pipeline.segment.leak import split_at_constrictions, split_between_seeds
from pipeline.segment.measure import hu_statistics, partial_volume_ml
from pipeline.segment.report import (
    AnalysisGrid, BoneSeparationResult, CleanupResult, GridRecord, HUStatistics, LeakControlResult, LeakCut,
    OuterWallResult, PlausibilityResult, SeedRecord, SegmentParameters, SegmentReport, WindowRecord,
)
from pipeline.segment.seeds import check_apart, check_contrast, check_in_window, resolve_seeds, snap_into
from pipeline.segment.wall import outer_wall
from pipeline.segment.threshold import Window, hu_window, refine_window


def _resolve_preset(preset: str | Preset, overrides: dict | None) -> Preset:
    if not isinstance(preset, Preset):
        preset = load_preset(preset)
    return apply_overrides(preset, overrides)


def _roi_box(geometry: Geometry, roi_lps_mm: Any) -> tuple[slice, slice, slice] | None:
    """Array box of the voxels inside an LPS box ``((x0, y0, z0), (x1, y1, z1))``, mm."""
    if roi_lps_mm is None:
        return None
    corners = np.asarray(roi_lps_mm, dtype=float)
    if corners.shape != (2, 3) or not np.all(np.isfinite(corners)):
        raise SegmentationError("the region of interest must be two LPS corners ((x0, y0, z0), (x1, y1, z1)), mm")
    low, high = corners.min(axis=0), corners.max(axis=0)
    box_corners = np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1).T
    index = geometry.lps_to_index(box_corners)
    start = np.maximum(np.ceil(index.min(axis=0) - 1e-6).astype(int), 0)
    stop = np.minimum(np.floor(index.max(axis=0) + 1e-6).astype(int) + 1, geometry.shape)
    if np.any(stop <= start):
        raise SegmentationError(f"the region of interest {corners.tolist()} mm does not overlap the volume")
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))  # type: ignore[return-value]


def _shift(index: tuple[int, ...], box: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(int(v - b.start) for v, b in zip(index, box))


#: What a block contributes at full resolution: nothing, its voxels in the window, all its
#: voxels, none (a piece cut off), or its voxels on the kept side of a cut (see settle_cuts).
NOTHING, FRINGE, INSIDE, REJECTED, CUT = 0, 1, 2, 3, 4


def settle_cuts(in_window: np.ndarray, code: np.ndarray, cut_blocks: np.ndarray, factors: tuple[int, int, int],
                offset: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxels of the blocks on either side of a cut that belong to the kept side.

    Leak control cuts between blocks, which would leave a staircase at the neck. Around each
    cut, a watershed on the full-resolution distance map, flooded from the kept blocks and
    from the cut-off ones, moves the cut onto the narrowest section of the neck.

    ``in_window`` and ``code`` cover a full-resolution box starting ``offset`` voxels into the
    first block of ``cut_blocks`` (the block grid cropped to that box).

    Parameters
    ----------
    in_window : (nk, nj, ni) ndarray of bool
        Full-resolution voxels of the box whose HU lie in the window, indexed ``(k, j, i)``.
    code : (nk, nj, ni) ndarray of uint8
        Per voxel, what its block contributes (``NOTHING``, ``FRINGE``, ``INSIDE``,
        ``REJECTED`` or ``CUT``), same shape as ``in_window``.
    cut_blocks : (bk, bj, bi) ndarray of bool
        Blocks on either side of a cut, on the block grid cropped to the box.
    factors : tuple of 3 int
        Voxels per block along ``(k, j, i)``.
    offset : tuple of 3 int
        Voxels between the start of the first block and the start of the box, along ``(k, j, i)``
        (each in ``0 .. factor - 1``).
    spacing : tuple of 3 float
        Full-resolution voxel spacing ``(k, j, i)``, mm (for the distance map).

    Returns
    -------
    (nk, nj, ni) ndarray of bool
        The ``CUT`` voxels in the window that the watershed gives to the kept side; where a cut
        has no rejected block near it, all of its ``CUT`` voxels in the window.
    """
    kept_side = np.zeros(code.shape, bool)
    pieces, _ = ndi.label(cut_blocks, np.ones((3, 3, 3), bool))
    for where in ndi.find_objects(pieces):
        # the cut's blocks and two blocks on every side, at full resolution
        local = tuple(slice(max((w.start - 2) * f - o, 0), max((w.stop + 2) * f - o, 0))
                      for w, f, o in zip(where, factors, offset))
        allowed = in_window[local] & (code[local] != NOTHING)
        markers = np.zeros(allowed.shape, np.int32)
        markers[allowed & ((code[local] == FRINGE) | (code[local] == INSIDE))] = 1
        markers[allowed & (code[local] == REJECTED)] = 2
        deciding = allowed & (code[local] == CUT)
        if not (markers == 2).any():
            kept_side[local] |= deciding
            continue
        distance = ndi.distance_transform_edt(allowed, sampling=spacing).astype(np.float32)
        flooded = watershed(-distance, markers, mask=allowed)
        kept_side[local] |= deciding & (flooded == 1)
    return kept_side


def _place(to_lps: Callable[[np.ndarray], np.ndarray], factors: tuple[int, int, int]) -> Callable[[np.ndarray], str]:
    """``where(block)`` for messages: the LPS position of a block's centre.

    Parameters
    ----------
    to_lps : callable
        Maps voxel indices ``(k, j, i)`` of the grown array to LPS mm.
    factors : tuple of 3 int
        Voxels per block along ``(k, j, i)``; ``(1, 1, 1)`` for the voxel grid.

    Returns
    -------
    callable
        ``where(block)``, block index ``(k, j, i)`` -> ``LPS (x, y, z) mm`` to 0.1 mm.
    """
    def where(block: np.ndarray) -> str:
        """A block for messages, as the LPS position of its centre.

        Parameters
        ----------
        block : array_like of 3 int
            Block index ``(k, j, i)``.

        Returns
        -------
        str
            ``LPS (x, y, z) mm``, to 0.1 mm.
        """
        x, y, z = to_lps((np.asarray(block, float) + 0.5) * np.asarray(factors) - 0.5)
        return f"LPS ({x:.1f}, {y:.1f}, {z:.1f}) mm"

    return where


def _grow_with_analysis(hu: np.ndarray, spacing: tuple[float, float, float], window: Window, preset: Preset,
                        include: list[tuple[int, int, int]], exclude: list[tuple[int, int, int]],
                        details: dict, names: list[str], to_lps: Callable[[np.ndarray], np.ndarray]
                        ) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Grow in the HU window on a block grid with bone barrier and leak control, then refine.

    Returns the full-resolution box (relative to ``hu``) and the region inside it, or None when
    the structure at the seeds is too thin for the analysis grid (the caller grows directly).
    ``names`` describe the include and then the exclude seeds; ``to_lps`` maps indices of
    ``hu`` (k, j, i) to LPS mm. Plausibility holds go to ``details["holds"]``.
    """
    settings = preset.leak_control
    factors = block_factors(spacing, settings.analysis_spacing_mm)
    block_spacing = tuple(s * f for s, f in zip(spacing, factors))
    details["analysis_grid"] = {"block_voxels_kji": list(factors), "block_mm_kji": [round(s, 2) for s in block_spacing]}
    mean, highest = block_mean_max(hu, factors)
    blocks_of = [tuple(v // f for v, f in zip(seed, factors)) for seed in include]

    def grow() -> tuple | None:
        """Threshold the block means in the window, bar bone, and keep the seeds' pieces.

        Returns
        -------
        tuple or None
            ``(in_window, septum, barrier, snapped, region)`` on the block grid: the blocks in the
            window (bone barred), the blocks half-way to the background HU, the bone barrier, the
            seeds' blocks snapped into the window, and the connected pieces holding them; None
            when a seed's block has no block in the window among its 26 neighbours.

        Raises
        ------
        SegmentationError
            If an include seed lies in the bone barrier and out of the window (exit code 8).
        """
        in_window = (mean >= window.lower_hu) & (mean <= window.upper_hu)
        # Blocks half-way between the tissue around the lumen and the window's floor: a thin
        # septum between two lumina (a dissection's flap) or a partial-volume rim.
        septum = (mean >= 0.5 * (window.lower_hu + preset.threshold.background_hu)) & (mean <= window.upper_hu)
        if preset.bone_separation.enabled:
            # Bone must read brighter than the structure: a window raised for dense contrast raises it.
            bone = preset.bone_separation
            if window.upper_hu > bone.cortical_hu:
                bone = bone.model_copy(update={"cortical_hu": window.upper_hu})
            barrier, details["bone_separation"] = bone_barrier(highest, block_spacing, bone, blocks_of)
            for name, block in zip(names, blocks_of):
                if barrier[block] and not in_window[block]:
                    raise SegmentationError(f"{name} lies in bone or a calcification: inside a shell above "
                                            f"{bone.cortical_hu:.0f} HU", hint=f"place the seed in the {preset.structure}")
            in_window &= ~barrier
        else:
            barrier = np.zeros_like(in_window)
        snapped = [snap_into(in_window, b) for b in blocks_of]
        if any(s is None for s in snapped):
            return None
        pieces, _ = ndi.label(in_window)
        region = np.isin(pieces, [pieces[s] for s in snapped])
        return in_window, septum, barrier, snapped, region

    grown = grow()
    if grown is not None and preset.threshold.mode == "half_maximum":
        # The window's level is the structure's, not the seed's surroundings': a seed in a dimmer
        # part (a dissection's false lumen, the far end of a falling bolus) gives the same window.
        core = extreme_3x3x3(extreme_3x3x3(grown[4], np.logical_and), np.logical_and)
        if np.count_nonzero(core) >= 27:
            if refine_window(window, preset.threshold, float(np.median(mean[core]))):
                grown = grow() or grown
    if grown is None:
        details["warnings"].append(
            "the structure at a seed is narrower than the analysis grid "
            f"({settings.analysis_spacing_mm} mm); grown without leak control or bone separation")
        return None
    in_window, septum, barrier, snapped, region = grown
    del grown
    block_ml = float(np.prod(block_spacing)) / 1000.0
    grown_ml = float(region.sum()) * block_ml
    extent = [(b.stop - b.start) * s for b, s in zip(bounding_box(region), block_spacing)]
    exceeded = []
    if settings.max_volume_ml is not None and grown_ml > settings.max_volume_ml:
        exceeded.append(f"volume {grown_ml:.0f} ml > {settings.max_volume_ml:g} ml")
    if settings.max_extent_mm is not None and max(extent) > settings.max_extent_mm:
        exceeded.append(f"extent {max(extent):.0f} mm > {settings.max_extent_mm:g} mm")
    cut = settings.mode == "always" or (settings.mode == "auto" and bool(exceeded))
    exclude_snapped = [snap_into(region, tuple(v // f for v, f in zip(s, factors))) for s in exclude]
    exclude_blocks = [b for b in exclude_snapped if b is not None]
    leak = {"mode": settings.mode, "neck_ratio": settings.neck_ratio, "grown_ml": round(grown_ml, 1),
            "grown_extent_mm": [round(e, 1) for e in extent], "expectation_exceeded": exceeded,
            "applied": cut, "exclude_seeds_in_region": len(exclude_blocks),
            "competitive_split": bool(exclude_blocks)}
    if cut or exclude_blocks:
        # A septum of one block between two parts of the region (a dissection's intimal flap) is
        # no neck: close it for the analysis; the region itself keeps its voxels.
        closed = region | (ndi.binary_closing(region, np.ones((3, 3, 3), bool)) & septum & ~barrier)
        split = split_at_constrictions(closed, block_spacing, snapped, exclude_blocks,
                                       settings.neck_ratio if cut else None, settings.neighbourhood_mm,
                                       continuation_angle_deg=settings.continuation_angle_deg,
                                       blob_elongation=settings.blob_elongation)
        kept = split.keep & region
        pieces, removed = split.pieces, split.removed
        pieces[~region] = 0
        leak.update({"basins": split.basins, "removed_ml": round(split.removed_voxels * block_ml, 1),
                     "rejoined_after_local_check": split.rejoined, "rejoined_as_continuation": split.continued,
                     "cuts": split.removed})
    else:
        kept = region
        pieces, removed = np.zeros(region.shape, np.int32), []
        leak.update({"removed_ml": 0.0, "cuts": []})
    details["leak_control"] = leak
    details["removed_blocks"] = (pieces, factors)
    details["exclude_effects"] = [
        "outside the grown region: no effect" if b is None else
        ("removed with the piece it lies in" if pieces[b] else "kept: it lies in the structure and could not be cut off")
        for b in exclude_snapped]

    where = _place(to_lps, factors)

    details["holds"], details["plausibility"] = plausibility.check(
        kept, pieces, removed, snapped, names[:len(include)], block_spacing, preset, where)
    rejected = region & ~kept
    del region
    # Blocks on the edge of the kept region that hold no contrast on average still hold its
    # partial-volume rim: they may contribute voxels, rejected pieces and bone may not.
    fringe = extreme_3x3x3(kept, np.logical_or) & ~rejected & ~barrier
    # Cavities are left to the clean-up at full resolution (cleanup.fill_holes, max_hole_ml).
    interior = extreme_3x3x3(kept, np.logical_and)
    coarse_box = bounding_box(extreme_3x3x3(fringe, np.logical_or))
    box = coarse_to_box(coarse_box, factors, hu.shape)
    start = tuple(b.start for b in box)
    shape = tuple(b.stop - b.start for b in box)
    crop = hu[box]
    # One expansion to full resolution of what each block may contribute (NOTHING ... CUT).
    code = np.zeros(kept.shape, np.uint8)
    code[fringe] = FRINGE
    code[interior] = INSIDE
    code[rejected] = REJECTED
    cut_blocks = (kept & extreme_3x3x3(rejected, np.logical_or)) | (rejected & extreme_3x3x3(kept, np.logical_or))
    code[cut_blocks] = CUT
    offset = tuple(s % f for s, f in zip(start, factors))
    code = upsample(code[coarse_box], factors, shape, offset)
    lower = window.lower_hu
    if preset.threshold.mode == "half_maximum" and interior[coarse_box].any():
        # The half maximum of the lumen where it is: a bolus fading along the aorta (430 HU in
        # the root, 280 HU low down) has its edge at a different HU in each place. Each block
        # takes the level of the nearest interior block (smoothed over 5 blocks).
        inner = interior[coarse_box]
        nearest = ndi.distance_transform_edt(~inner, sampling=block_spacing, return_distances=False,
                                             return_indices=True)
        level = ndi.uniform_filter(np.where(inner, mean[coarse_box], 0).astype(np.float32), 5)
        weight = ndi.uniform_filter(inner.astype(np.float32), 5)
        level = (level / np.maximum(weight, 1e-6))[tuple(nearest)]
        del nearest
        local_lower = np.maximum(preset.threshold.lower_hu, 0.5 * (level + preset.threshold.background_hu))
        lower = upsample(np.rint(local_lower).astype(np.int16), factors, shape, offset)
        details["local_half_maximum_hu"] = [round(float(local_lower[inner].min()), 1),
                                            round(float(local_lower[inner].max()), 1)]
    mean = None  # the block means are done with (grow() ran above): free them
    in_window = (crop >= lower) & (crop <= window.upper_hu)
    del lower
    fine = (in_window & (code == FRINGE)) | (code == INSIDE)
    if cut_blocks.any():
        fine |= settle_cuts(in_window, code, cut_blocks[coarse_box], factors, offset, spacing)
    del code, in_window
    local = [snap_into(fine, _shift(s, box)) for s in include]
    fine, details["components"] = cleanup.seeded_components(fine, [s for s in local if s is not None])
    return box, fine


def _grow_directly(hu: np.ndarray, spacing: tuple[float, float, float], window: Window, preset: Preset,
                   include: list[tuple[int, int, int]], exclude: list[tuple[int, int, int]],
                   details: dict, names: list[str], to_lps: Callable[[np.ndarray], np.ndarray]
                   ) -> tuple[tuple[slice, ...], np.ndarray]:
    """Grow in the HU window at full resolution (no bone barrier, no leak control).

    An exclude seed in what would be kept removes the part of it the seed lies in, as on the
    analysis grid: a component holding an include seed too is split from it at the narrowest
    connection (competitive growth on the voxel grid, :func:`~pipeline.segment.leak.split_between_seeds`),
    one without is removed whole. The result is checked for plausibility as on the analysis
    grid, on the voxel grid.

    Parameters
    ----------
    hu : (nk, nj, ni) ndarray of int16
        The CT array (the region of interest), HU.
    spacing : tuple of 3 float
        Voxel size ``(k, j, i)``, mm.
    window : Window
        The HU window grown in.
    preset : Preset
        The preset (``cleanup.keep`` picks the components kept; leak-control settings shape the split).
    include, exclude : list of tuple of 3 int
        Include and exclude seeds, indices into ``hu``.
    details : dict
        Filled with ``components``, ``exclude_effects`` (one text per exclude seed), ``holds``
        and ``plausibility`` and, when something was removed, ``removed_blocks`` (the pieces'
        numbers on the voxel grid, with ``(1, 1, 1)`` voxels per block) and the
        ``leak_control`` figures of the split.
    names : list of str
        The include and then the exclude seeds, for messages.
    to_lps : callable
        Maps indices of ``hu`` ``(k, j, i)`` to LPS mm.

    Returns
    -------
    tuple of (tuple of slice, ndarray of bool)
        The result's box in ``hu`` and the result inside it.
    """
    fine = (hu >= window.lower_hu) & (hu <= window.upper_hu)
    keep = preset.cleanup.keep
    seeds = [s for s in (snap_into(fine, s) for s in include) if s is not None]

    def select(candidate: np.ndarray) -> tuple[np.ndarray, int | None]:
        """The components of ``candidate`` that ``cleanup.keep`` keeps.

        Parameters
        ----------
        candidate : (nk, nj, ni) ndarray of bool
            Voxels in the window, less anything removed.

        Returns
        -------
        tuple of (ndarray of bool, int or None)
            The kept voxels and how many components they are (None for ``keep: all``, counted later).
        """
        if include and keep != "all":
            return cleanup.seeded_components(candidate, seeds)
        if keep == "largest" or (keep == "seeded" and not include):
            largest = cleanup.largest_component(candidate)
            return largest, 1 if largest.any() else 0
        return candidate, None

    result, components = select(fine)
    excluded = [snap_into(fine, s) for s in exclude]
    details["exclude_effects"] = ["outside the grown region: no effect" if s is None or not result[s] else
                                  "removed with the piece it lies in" for s in excluded]
    pieces = np.zeros(fine.shape, np.int32)
    cuts: list[dict] = []
    pending = [s for s in excluded if s is not None and result[s]]
    while pending:
        # Each pass removes the seeds' components' parts; with keep: largest the next largest
        # component may hold another exclude seed, hence the loop (at most one pass a seed).
        region = np.zeros(fine.shape, bool)
        for s in pending:
            if not region[s]:
                region |= flood(result, s, connectivity=1)
        split = split_between_seeds(region, spacing, [s for s in seeds if region[s]], pending,
                                    preset.leak_control.blob_elongation)
        for cut in split.removed:
            cut["piece"] += len(cuts)
        pieces[split.pieces > 0] = split.pieces[split.pieces > 0] + len(cuts)
        cuts += split.removed
        result, components = select(fine & (pieces == 0))
        pending = [s for s in excluded if s is not None and result[s]]
    if components is not None:
        details["components"] = components
    if cuts:
        details["removed_blocks"] = (pieces, (1, 1, 1))
        voxel_ml = float(np.prod(spacing)) / 1000.0
        details["leak_control"].update({
            "exclude_seeds_in_region": sum(e.startswith("removed") for e in details["exclude_effects"]),
            "competitive_split": True, "removed_ml": round(int(np.count_nonzero(pieces)) * voxel_ml, 1),
            "cuts": cuts})
    details["holds"], details["plausibility"] = plausibility.check(
        result, pieces, cuts, seeds, names[:len(include)], spacing, preset, _place(to_lps, (1, 1, 1)))
    box = bounding_box(result)
    if box is None:
        return tuple(slice(0, 1) for _ in hu.shape), result[:1, :1, :1]
    return box, result[box]


def check_segment_inputs(volume: Volume, preset: str | Preset, seeds_lps_mm: Iterable = (),
                         exclude_seeds_lps_mm: Iterable = (), *, seeds_index: Iterable = (),
                         exclude_seeds_index: Iterable = (), roi_lps_mm: Any = None,
                         overrides: dict | None = None) -> None:
    """Check what :func:`segment_volume` would be asked, without segmenting (milliseconds).

    The preset and its overrides, every seed (inside the volume and the region of interest,
    include and exclude seeds apart, include seeds inside the HU window and with contrast):
    a case checks all its models with this before it segments the first, so a bad seed of the
    last model stops the run before any model is made.

    Parameters
    ----------
    volume : Volume
        CT volume, int16 HU.
    preset : str or Preset
        Preset name, path to a preset YAML file, or a loaded :class:`Preset`.
    seeds_lps_mm, exclude_seeds_lps_mm : iterable of (x, y, z)
        Include / exclude seeds in patient LPS mm.
    seeds_index, exclude_seeds_index : iterable of (k, j, i)
        The same as voxel indices in array order.
    roi_lps_mm : ((x0, y0, z0), (x1, y1, z1)), optional
        The region of interest, LPS mm.
    overrides : dict, optional
        Preset fields to change, nested or dotted.

    Raises
    ------
    SegmentationError
        As :func:`segment_volume` would for these inputs, before any work.
    ConfigError
        An unknown or invalid preset or override.
    """
    _checked_inputs(volume, preset, seeds_lps_mm, exclude_seeds_lps_mm, seeds_index, exclude_seeds_index,
                    roi_lps_mm, overrides)


def _checked_inputs(volume: Volume, preset: str | Preset, seeds_lps_mm: Iterable, exclude_seeds_lps_mm: Iterable,
                    seeds_index: Iterable, exclude_seeds_index: Iterable, roi_lps_mm: Any,
                    overrides: dict | None) -> tuple[Preset, list, list, tuple[slice, ...] | None, Window]:
    """The preset, include and exclude seeds, the region of interest's array box (None: the
    whole grid) and the HU window, each checked (the body of :func:`check_segment_inputs`)."""
    preset = _resolve_preset(preset, overrides)
    geometry = volume.geometry
    include = resolve_seeds(volume, "include", seeds_lps_mm, seeds_index)
    exclude = resolve_seeds(volume, "exclude", exclude_seeds_lps_mm, exclude_seeds_index)
    if not include and preset.seeds_required:
        raise SegmentationError(f"preset {preset.name} needs at least one include seed inside the {preset.structure}",
                                hint="give --seed X Y Z (LPS mm) or --seed-index K J I")
    roi = _roi_box(geometry, roi_lps_mm)
    full_box = roi or tuple(slice(0, n) for n in geometry.shape)
    for seed in include + exclude:
        if not all(b.start <= v < b.stop for v, b in zip(seed.index, full_box)):
            raise SegmentationError(f"{seed.kind} seed at LPS {tuple(round(v, 1) for v in seed.lps_mm)} mm lies "
                                    "outside the region of interest")
    check_apart(include, exclude, geometry.spacing,
                max(preset.leak_control.analysis_spacing_mm, max(geometry.spacing)) * 2)
    window = hu_window(volume, preset.threshold, include)
    check_contrast(include, preset.threshold.min_contrast_hu, preset.structure)
    check_in_window(include, window.lower_hu, window.upper_hu, preset.name)
    return preset, include, exclude, roi, window


def segment_volume(
    volume: Volume,
    preset: str | Preset,
    seeds_lps_mm: Iterable = (),
    exclude_seeds_lps_mm: Iterable = (),
    *,
    seeds_index: Iterable = (),
    exclude_seeds_index: Iterable = (),
    label: int = 1,
    label_name: str | None = None,
    roi_lps_mm: Any = None,
    overrides: dict | None = None,
) -> tuple[Mask, SegmentReport]:
    """Segment one structure: threshold, seeded growth, bone separation, leak control, clean-up.

    Parameters
    ----------
    volume : Volume
        CT volume, int16 HU.
    preset : str or Preset
        Preset name (``aorta_cta``), path to a preset YAML file, or a loaded :class:`Preset`.
    seeds_lps_mm, exclude_seeds_lps_mm : iterable of (x, y, z)
        Include / exclude seeds in patient LPS mm.
    seeds_index, exclude_seeds_index : iterable of (k, j, i)
        The same as voxel indices in array order.
    label : int
        Value (1-255) of the structure in the returned mask.
    label_name : str, optional
        Name of the structure; the preset's ``structure`` by default.
    roi_lps_mm : ((x0, y0, z0), (x1, y1, z1)), optional
        Only voxels inside this LPS box (mm) may be segmented.
    overrides : dict, optional
        Preset fields to change, nested or dotted (``{"threshold.lower_hu": 150}``).

    Returns
    -------
    mask : Mask
        uint8 on ``volume.geometry`` (the full grid), ``label`` inside the structure.
    report : SegmentReport

    Raises
    ------
    SegmentationError
        A seed outside the volume, or whose HU lies outside the window; no seed where the
        preset needs one; an empty result.
    ConfigError
        An unknown or invalid preset or override.
    """
    clock = StageClock()
    if not 1 <= int(label) <= 255:
        raise SegmentationError(f"label {label} must lie in 1..255")
    preset, include, exclude, roi, window = _checked_inputs(
        volume, preset, seeds_lps_mm, exclude_seeds_lps_mm, seeds_index, exclude_seeds_index, roi_lps_mm, overrides)
    geometry = volume.geometry
    full_box = roi or tuple(slice(0, n) for n in geometry.shape)
    clock.lap("seeds_and_window")

    hu = volume.array[full_box]
    include_local = [_shift(s.index, full_box) for s in include]
    exclude_local = [_shift(s.index, full_box) for s in exclude]
    details: dict[str, Any] = {"warnings": [], "bone_separation": None, "components": 0,
                               "leak_control": {"mode": preset.leak_control.mode, "applied": False}}
    analysed = preset.leak_control.mode != "off" or preset.bone_separation.enabled or bool(exclude)
    grown = None
    names = [seed.describe() for seed in include + exclude]
    offset = np.array([b.start for b in full_box], float)

    def to_lps(index: np.ndarray) -> np.ndarray:
        """LPS mm of indices ``(k, j, i)`` into the region of interest.

        Parameters
        ----------
        index : array_like of float
            One index or an ``(n, 3)`` array of them.

        Returns
        -------
        numpy.ndarray
            LPS coordinates, mm.
        """
        return geometry.index_to_lps(np.asarray(index) + offset)

    if analysed and include:
        grown = _grow_with_analysis(hu, geometry.spacing, window, preset, include_local, exclude_local, details,
                                    names, to_lps)
        method = "block-grid growth in the HU window with bone barrier, constriction-based leak control and full-resolution refinement"
    if grown is None:
        grown = _grow_directly(hu, geometry.spacing, window, preset, include_local, exclude_local, details, names,
                               to_lps)
        method = "connected threshold growth at full resolution"
    box, region = grown
    clock.lap("grow")

    # Clean-up in the crop, with a margin for closing and an outside shell.
    clean = preset.cleanup
    spacing = geometry.spacing
    reach_mm = max(clean.closing_mm, clean.shell.thickness_mm if clean.shell else 0.0) + max(spacing)
    margin = [int(np.ceil(reach_mm / s)) + 2 for s in spacing]
    outer = tuple(slice(max(b.start - m, 0), min(b.stop + m, n)) for b, m, n in zip(box, margin, hu.shape))
    work = np.zeros(tuple(o.stop - o.start for o in outer), bool)
    work[tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer))] = region
    del region
    cleaned: dict[str, Any] = {"fill_holes": clean.fill_holes, "max_hole_ml": clean.max_hole_ml,
                               "closing_mm": clean.closing_mm, "opening_mm": clean.opening_mm, "keep": clean.keep}
    if clean.closing_mm or clean.opening_mm:
        work = cleanup.close_open(work, spacing, clean.closing_mm, clean.opening_mm)
    if clean.fill_holes:
        largest = None if clean.max_hole_ml is None else int(clean.max_hole_ml * 1000 / geometry.voxel_volume_mm3)
        work, cleaned["holes_filled_voxels"] = cleanup.fill_holes(work, largest)
    if clean.keep == "all":
        if clean.min_island_ml > 0:
            work, cleaned["islands_removed"] = cleanup.drop_islands(
                work, int(np.ceil(clean.min_island_ml * 1000 / geometry.voxel_volume_mm3)))
        details["components"] = ndi.label(work)[1]
    if preset.outer_wall is not None and work.any():
        # the outer wall around the lumen: a crop reaching the largest wall thickness beyond it
        reach = [int(np.ceil((preset.outer_wall.max_thickness_mm + 3 * preset.outer_wall.smoothing_mm) / s)) + 2
                 for s in spacing]
        inner = tuple(slice(o.start + b.start, o.start + b.stop) for o, b in zip(outer, bounding_box(work)))
        wider = tuple(slice(max(b.start - m, 0), min(b.stop + m, n)) for b, m, n in zip(inner, reach, hu.shape))
        lumen = np.zeros(tuple(w.stop - w.start for w in wider), bool)
        lumen[tuple(slice(o.start - w.start, o.stop - w.start) for o, w in zip(outer, wider))] = work
        work, cleaned["outer_wall"] = outer_wall(hu[wider], lumen, spacing, preset.outer_wall)
        outer = wider
        del lumen
    solid = work
    if clean.shell is not None:
        work = cleanup.hollow_shell(work, spacing, clean.shell.thickness_mm, clean.shell.side)
        cleaned["shell"] = clean.shell
    clock.lap("cleanup")

    voxels = int(np.count_nonzero(work))
    if voxels == 0:
        raise SegmentationError(
            f"the {preset.structure} came out empty (window {window.lower_hu:.0f}..{window.upper_hu:.0f} HU)",
            hint="check the seeds and the preset, or relax the leak control")
    outer_abs = tuple(slice(o.start + f.start, o.stop + f.start) for o, f in zip(outer, full_box))
    hu_outer = volume.array[outer_abs]
    stats = hu_statistics(hu_outer, solid)
    pv_ml = None
    if preset.partial_volume_estimate:
        pv_ml = round(partial_volume_ml(hu_outer, solid, geometry.voxel_volume_mm3)[0], 2)
    array = np.zeros(geometry.shape, np.uint8)
    np.multiply(work, np.uint8(label), out=array[outer_abs])
    volume_ml = voxels * geometry.voxel_volume_mm3 / 1000.0
    if preset.expected_volume_ml and not preset.expected_volume_ml[0] <= volume_ml <= preset.expected_volume_ml[1]:
        details["warnings"].append(
            f"volume {volume_ml:.1f} ml lies outside what {preset.name} expects "
            f"({preset.expected_volume_ml[0]:g}-{preset.expected_volume_ml[1]:g} ml): check the result")
    seeds = [s.to_dict() for s in include + exclude]
    for seed, index in zip(seeds[:len(include)], include_local):
        # every include seed is in the result, or the command fails saying which and why
        local = tuple(v - o.start for v, o in zip(index, outer))
        if not all(0 <= v < n for v, n in zip(local, work.shape)) or snap_into(solid, local) is None:
            raise SegmentationError(
                f"include seed at LPS {tuple(seed['lps_mm'])} mm ({seed['hu']:.0f} HU) is not in the result: its "
                "structure was cut off or is narrower than the analysis grid",
                hint="move the seed into the lumen's centre, or give an exclude seed only in what is to go")
        seed["effect"] = "in the result"
    for seed, effect in zip(seeds[len(include):], details.get("exclude_effects", [])):
        seed["effect"] = effect
        if effect.startswith("outside") or effect.startswith("kept"):
            details["warnings"].append(f"exclude seed at LPS {tuple(seed['lps_mm'])} mm had no effect: {effect}")
    leak = details["leak_control"]
    leak["leak_definition"] = preset.leak_control.leak
    # the pieces on the grid they were cut on: blocks of the analysis grid, or voxels
    removed_blocks, factors = details.get("removed_blocks", (None, None))
    for cut in leak.get("cuts", []):
        for name in ("centroid", "neck", "inside"):
            centre = [(c + 0.5) * f - 0.5 + b.start for c, f, b in zip(cut.pop(f"{name}_index"), factors, full_box)]
            cut[f"{name}_lps_mm"] = [round(float(v), 1) for v in geometry.index_to_lps(centre)]
    clock.lap("measure")

    name = label_name or preset.structure
    window_record = WindowRecord(
        mode=window.mode, lower_hu=round(window.lower_hu, 1), upper_hu=round(window.upper_hu, 1),
        seed_median_hu=window.seed_level_hu if window.mode == "half_maximum" else None,
        seed_mean_hu=window.seed_level_hu if window.mode != "half_maximum" else None,
        seed_sd_hu=window.seed_sd_hu, structure_median_hu=window.structure_median_hu,
        local_lower_hu_range=details.get("local_half_maximum_hu"))
    cuts = [LeakCut(**cut) for cut in leak.pop("cuts", [])]
    outer_wall_record = cleaned.pop("outer_wall", None)
    analysis_grid = details.get("analysis_grid")
    report = SegmentReport(
        preset=preset.name, structure=name, label=int(label), method=method,
        parameters=SegmentParameters(preset, overrides or {}), window=window_record,
        seeds=[SeedRecord(**seed) for seed in seeds],
        voxels=voxels, volume_ml=round(volume_ml, 3), volume_ml_partial_volume=pv_ml,
        components=int(details["components"]), hu_statistics=HUStatistics(**stats) if stats else None,
        bone_separation=BoneSeparationResult(**details["bone_separation"]) if details["bone_separation"] else None,
        leak_control=LeakControlResult(**leak, cuts=cuts),
        cleanup=CleanupResult(**cleaned, outer_wall=OuterWallResult(**outer_wall_record) if outer_wall_record else None),
        roi_index_box=[[b.start, b.stop] for b in roi] if roi else None,
        grid=GridRecord(shape_kji=list(geometry.shape), spacing_kji_mm=list(geometry.spacing),
                        crop_index_box=[[b.start, b.stop] for b in outer_abs],
                        analysis_grid=AnalysisGrid(**analysis_grid) if analysis_grid else None),
        warnings=details["warnings"], timings_s=clock.laps,
        holds=details.get("holds", []),
        plausibility=PlausibilityResult(**details["plausibility"]) if details.get("plausibility") else None,
    )
    if removed_blocks is not None and removed_blocks.any():
        coarse = bounding_box(removed_blocks > 0)
        local_box = coarse_to_box(coarse, factors, hu.shape)
        pieces = upsample(removed_blocks[coarse].astype(np.uint8), factors,
                          tuple(b.stop - b.start for b in local_box), tuple(b.start % f for b, f in zip(local_box, factors)))
        crop = hu[local_box]
        pieces = np.where((crop >= window.lower_hu) & (crop <= window.upper_hu), pieces, 0).astype(np.uint8)
        pieces[array[tuple(slice(b.start + f.start, b.stop + f.start) for b, f in zip(local_box, full_box))] > 0] = 0
        report._removed = (tuple(slice(b.start + f.start, b.stop + f.start) for b, f in zip(local_box, full_box)), pieces)
    mask = Mask(array, geometry, {int(label): name},
                {"method": method, "preset": preset.name, "volume_ml": round(volume_ml, 3)})
    return mask, report
