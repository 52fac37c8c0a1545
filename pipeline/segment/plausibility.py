"""Plausibility: does the result look like the preset's structure? Findings become holds.

The checks run on the analysis grid (blocks of about 1.5 mm), or on the voxel grid where the
structure was grown at full resolution, on the kept region and the pieces leak control or an
exclude seed removed:

* a **blob** where the preset expects a tube (a seed in the left ventricle with ``aorta_cta``,
  or in a vertebral body): the result stays inside the scan and is shorter than
  ``blob_elongation`` times its widest radius;
* a **tube that ends inside the scan**: the ends of the tube are the local maxima of the
  geodesic distance from the seeds (minimal paths through the region, ``skimage.graph.MCP``); an
  end is expected at the scan's edge, or where a blob (a heart chamber behind the valve) was
  removed; one next to a removed tube, or next to nothing, is not;
* a **removed tubular piece that continues the kept tube** (lies along its axis, not a blob);
* a widest radius outside the preset's range.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage.graph import MCP_Geometric

from pipeline.geometry import bounding_box
from pipeline.holds import Hold
from pipeline.presets import Preset
from pipeline.segment.leak import continues_tube, is_blob

Point = Callable[[np.ndarray], str]  # block index -> "LPS (x, y, z) mm"


def _ends(kept: np.ndarray, seeds: list[tuple[int, int, int]], spacing: tuple[float, ...],
          window_mm: float) -> list[np.ndarray]:
    """Block indices of the tube's ends: local maxima of the geodesic distance from the seeds."""
    box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in bounding_box(kept))
    local = kept[box]
    cost = np.where(local, 1.0, np.inf)
    starts = [tuple(v - b.start for v, b in zip(s, box)) for s in seeds if kept[s]]
    if not starts:
        return []
    geodesic, _ = MCP_Geometric(cost, sampling=spacing).find_costs(starts)
    geodesic = np.where(local & np.isfinite(geodesic), geodesic, 0.0)
    size = [max(3, int(2 * round(window_mm / s)) + 1) for s in spacing]
    peaks = local & (geodesic >= ndi.maximum_filter(geodesic, size=size)) & (geodesic > window_mm)
    labels, count = ndi.label(peaks, np.ones((3, 3, 3), bool))
    ends = []
    for number, where in enumerate(ndi.find_objects(labels), start=1):
        members = np.argwhere(labels[where] == number) + [w.start for w in where]
        ends.append(members[np.argmax(geodesic[tuple(members.T)])] + [b.start for b in box])
    return ends


def check(kept: np.ndarray, pieces: np.ndarray, removed: list[dict], seeds: list[tuple[int, int, int]],
          seed_names: list[str], spacing: tuple[float, ...], preset: Preset, where: Point) -> tuple[list[Hold], dict]:
    """Holds for a result that does not look like the preset's structure, and what was measured.

    ``kept`` (bool) and ``pieces`` (0 or the removed piece's number, as in ``removed``) are on the
    grid of ``spacing`` mm (the analysis grid, or the voxels), covering the analysed volume;
    ``seeds`` are indices on that grid.

    Parameters
    ----------
    kept : numpy.ndarray of bool
        The kept structure on the analysis grid.
    pieces : numpy.ndarray of int
        The removed pieces' numbers on the same grid (0 elsewhere).
    removed : list of dict
        The removed pieces as :class:`pipeline.segment.leak.Split` lists them.
    seeds : list of tuple of int
        The include seeds as block indices ``(k, j, i)``.
    seed_names : list of str
        How each seed is named in messages.
    spacing : tuple of float
        The analysis grid's block size in mm per axis.
    preset : Preset
        The preset, with its plausibility rules and leak-control settings.
    where : callable
        ``where(block_index)``: the LPS position (mm) of a block index, as text for messages.

    Returns
    -------
    tuple of (list of Hold, dict)
        The holds (empty when the result is plausible or the rules' shape is ``any``) and the
        measurements (``shape``, ``widest_radius_mm``, ``length_mm``, ``blob``, ... in mm).
    """
    rules = preset.plausibility
    measured: dict = {"shape": rules.shape}
    if rules.shape == "any" or not kept.any():
        return [], measured
    settings = preset.leak_control
    holds: list[Hold] = []
    structure, name = preset.structure, preset.name
    box = bounding_box(kept)
    around = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
    distance = np.zeros(kept.shape, np.float32)
    distance[around] = ndi.distance_transform_edt(np.pad(kept[around], 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    widest = float(distance.max())
    length = max((b.stop - b.start) * s for b, s in zip(box, spacing))
    full = tuple(slice(0, n) for n in kept.shape)
    blob = is_blob(kept, widest, spacing, full, kept.shape, settings.blob_elongation)
    measured.update({"widest_radius_mm": round(widest, 1), "length_mm": round(length, 1), "blob": bool(blob)})
    seed_text = " and ".join(seed_names) or "the seed"
    tubes = [r for r in removed if r["tubular"]]
    fix = (f"; a seed in the tube removed at {where(np.asarray(max(tubes, key=lambda r: r['voxels'])['inside_index']))}"
           " would give it" if tubes else f"; place the seed in the {structure}")
    if rules.shape == "tube" and blob:
        holds.append(Hold("segment.result_is_a_blob",
                          f"the {name} result from {seed_text} is a closed blob ({length:.0f} mm long, widest radius "
                          f"{widest:.0f} mm), not the {structure}'s tube: the seed may lie in a heart chamber or a "
                          f"vertebral body{fix}", "segment"))
    if rules.radius_mm is not None and not rules.radius_mm[0] <= widest <= rules.radius_mm[1]:
        holds.append(Hold("segment.radius_out_of_range",
                          f"the {name} result's widest radius {widest:.1f} mm lies outside "
                          f"{rules.radius_mm[0]:g}-{rules.radius_mm[1]:g} mm expected of the {structure} "
                          f"(from {seed_text}){fix}", "segment"))
    cos = float(np.cos(np.radians(settings.continuation_angle_deg or 40.0)))
    for piece in removed:
        if not piece["tubular"]:
            continue
        member = pieces == piece["piece"]
        along, _ = continues_tube(kept, member, np.asarray(piece["neck_index"]), spacing,
                              max(2.5 * (piece["neck_radius_mm"] or 4.0), 10.0), cos)
        if along:
            holds.append(Hold("segment.removed_tube_continues",
                              f"a removed tubular piece ({piece['volume_ml']:.1f} ml, centroid "
                              f"{where(np.asarray(piece['centroid_index']))}) continues the kept {structure} at "
                              f"{where(np.asarray(piece['neck_index']))} (neck radius {piece['neck_radius_mm']} mm): "
                              "check it; an include seed in it keeps it", "segment"))
    if rules.shape == "tube" and not blob:
        edge_mm = 2.0 * max(spacing)
        ends = _ends(kept, seeds, spacing, max(20.0, widest))
        open_ends = []
        for end in ends:
            to_edge = min(min(e * s, (n - 1 - e) * s) for e, s, n in zip(end, spacing, kept.shape))
            lo = [max(e - int(np.ceil(15.0 / s)), 0) for e, s in zip(end, spacing)]
            near = tuple(slice(a, e + int(np.ceil(15.0 / s)) + 1) for a, e, s in zip(lo, end, spacing))
            radius = float(distance[near].max())
            if to_edge <= edge_mm + radius or radius < rules.min_end_radius_mm:
                continue
            nearby = set(np.unique(pieces[near])) - {0}
            if any(not removed[n - 1]["tubular"] for n in nearby):
                continue  # ends at a removed blob: the valve
            open_ends.append((end, radius))
        measured["ends_inside_scan"] = len(open_ends)
        for end, radius in open_ends:
            holds.append(Hold("segment.tube_ends_inside_scan",
                              f"the {structure} from {seed_text} ends at {where(end)} ({radius:.0f} mm radius), away "
                              f"from the scan's edge and from any removed chamber: the lumen may be cut by a narrowing "
                              f"or a thrombus there; check it, an include seed beyond it keeps the rest", "segment"))
    return holds, measured
