"""``plan_print``: choose how to print a model on a printer, and say what it will take."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import ConvexHull, cKDTree

from pipeline.errors import PrintPlanError
from pipeline.mesh.decimate import decimate
from pipeline.model import Model
from pipeline.prepare.arrays import MeshArrays
from pipeline.prepare.evaluate import (
    Context, PoseMetrics, cost_terms, evaluate_pose, fits_build_volume, overhang_faces, pose_rotation,
    usable_volume,
)
from pipeline.prepare.frames import principal_frame
from pipeline.prepare.search import Hull, candidate_directions, convex_hull, search
from pipeline.prepare.report import PrepareReport
from pipeline.mesh.thickness import sample_wall_thickness
from pipeline.printers import PrinterProfile, load_printer
from pipeline.report import Report

log = logging.getLogger(__name__)

#: The search runs on a copy decimated to this many faces; its best few are ranked again on a
#: copy of up to RERANK_FACES, and the chosen pose is measured on the full mesh.
SEARCH_FACES = 20_000
RERANK_FACES = 100_000
RERANKED = 6
RERANK_CELLS = 100
SEARCH_CELLS = 64      # vertical rays across the model's diameter while searching
FINAL_CELLS = 200      # ... and when measuring the chosen pose on the full mesh
MAX_LISTED = 5         # places listed per warning
#: The six ways to lay a box's three axes along the printer's x, y and z (rows: which box axis).
AXIS_ORDERS = np.array(list(itertools.permutations(range(3))))


@dataclass
class PlanAlternative(Report):
    """A runner-up pose, measured on the copy of up to ``RERANK_FACES`` faces."""

    transform: list[list[float]]
    down_direction_lps: list[float]
    overhang_area_mm2: float
    support_volume_mm3: float
    support_contact_area_mm2: float
    height_mm: float
    fits: bool
    cost_total: float
    cost: dict[str, float]


@dataclass
class PrintPlan(Report):
    """How to print one model on one printer, with what it will take.

    All lengths in mm, areas in mm2, volumes in mm3 or ml, masses in g, times in hours.
    ``transform`` maps model (patient LPS) coordinates to the printer's build coordinates
    (origin at a corner of the plate, z up); apply it to get ``print.stl``.
    """

    printer: str
    technology: str
    material: str
    model_name: str
    transform: list[list[float]]
    down_direction_lps: list[float]
    overhang_area_mm2: float
    support_contact_area_mm2: float
    important_contact_area_mm2: float
    support_volume_mm3: float
    height_mm: float
    layer_height_mm: float
    layers: int
    footprint_mm: list[float]
    material_part_ml: float
    material_part_g: float
    material_supports_ml: float
    material_supports_g: float
    material_cost: float
    currency: str
    estimated_time_h: float
    fits: bool
    build_volume_mm: list[float]
    margins_mm: dict[str, float]
    cup_volume_mm3: float
    cup_count: int
    critical_overhang_deg: float
    needs_supports: bool
    plate_tolerance_mm: float
    cost_total: float
    cost: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    split: dict | None = None
    alternatives: list[PlanAlternative] = field(default_factory=list)


def plan_print(model: Model, printer: str | PrinterProfile, *, alternatives: int = 3,
               material: str | None = None) -> tuple[PrintPlan, PrepareReport]:
    """Choose the print orientation and placement of ``model`` on ``printer``.

    Parameters
    ----------
    model : Model
        Closed mesh in patient LPS mm; ``important_faces`` marks surfaces to keep free of
        support contact.
    printer : str or PrinterProfile
        Profile name (``configs/printers/<name>.yaml``), YAML path, or a loaded profile.
    alternatives : int
        How many runner-up poses to report besides the chosen one.
    material : str, optional
        Material of the profile; its default when not given.

    Returns
    -------
    plan : PrintPlan
        The chosen pose, its supports, material, time and fit, and the runners-up.
    report : PrepareReport
        How it was found: the meshes searched, the walls and islands measured, the time taken.

    Raises
    ------
    pipeline.errors.ConfigError
        Unknown or invalid printer profile.
    pipeline.errors.PrintPlanError
        Unknown material, empty or inside-out mesh, negative ``alternatives``.
    """
    started = time.perf_counter()
    profile = printer if isinstance(printer, PrinterProfile) else load_printer(printer)
    material = material or profile.default_material
    if material not in profile.materials:
        raise PrintPlanError(
            f"material {material!r} is not available on {profile.name}",
            hint=f"choose one of: {', '.join(profile.materials)}",
        )
    if alternatives < 0:
        raise PrintPlanError(f"alternatives must be 0 or more, got {alternatives}")
    full = _mesh_arrays(model)
    important = _important(model, len(full.faces))
    medium, medium_important = _decimate(full, important, RERANK_FACES)
    search_mesh, search_important = _decimate(medium, medium_important, SEARCH_FACES)

    scale = float(np.sqrt(full.areas.sum() / (4 * np.pi)))
    full_reach = _reach(full)
    hull = convex_hull(search_mesh)
    diameter = float(np.ptp(hull.points, axis=0).max())
    # Decimation moves the surface a little: the search allows for it (fit, plate contact).
    ctx = Context(profile=profile, scale_mm=scale, important=search_important,
                  decimation_error_mm=_decimation_error(full, full_reach, search_mesh))
    found = search(search_mesh, hull, ctx, diameter / SEARCH_CELLS, max(alternatives + 1, RERANKED),
                   profile.drain_cups)

    # A heavily decimated copy can misjudge thin, complex anatomy: the best few are ranked again
    # on a finer copy, and the chosen pose is measured on the full mesh with finer rays.
    medium_ctx = Context(profile=profile, scale_mm=scale, important=medium_important,
                         decimation_error_mm=_decimation_error(full, full_reach, medium))
    reranked = []
    for pose in found:
        again = evaluate_pose(medium, hull.points, pose.down, medium_ctx, diameter / RERANK_CELLS)
        again.cups = pose.cups
        again.cost = cost_terms(again, medium_ctx)
        reranked.append(again)
    reranked.sort(key=lambda m: m.total_cost)
    final_ctx = Context(profile=profile, scale_mm=scale, important=important)
    best = evaluate_pose(full, hull.points, reranked[0].down, final_ctx, diameter / FINAL_CELLS)
    best.cups = reranked[0].cups
    best.cost = cost_terms(best, final_ctx)

    plan = _plan_from_pose(best, full, model, profile, material, final_ctx)
    plan.alternatives = [_alternative(p, profile) for p in reranked[1:alternatives + 1]]
    report = PrepareReport(printer=profile.name, material=material, mesh_faces=len(full.faces),
                           rerank_faces=len(medium.faces), search_faces=len(search_mesh.faces),
                           poses_searched=len(found), poses_reranked=len(reranked),
                           wall_limit_mm=profile.min_wall_mm)
    plan.warnings += _wall_warnings(full, profile, report)
    plan.warnings += _island_warnings(full, best, final_ctx, report)
    if best.cups is not None and best.cups.count and profile.drain_cups:
        places = _to_model(best.cups.centres[:MAX_LISTED], best)
        plan.warnings.append(
            f"{best.cups.count} cup(s) ({best.cups.volume_mm3:.0f} mm3) would seal against the "
            f"resin tank in this orientation: add drain holes near {_points(places)} (LPS mm)")
    if not plan.fits:
        frames = _box_frames(search_mesh, hull, [best, *found])
        plan.split = _split_suggestion(frames, full.vertices[ConvexHull(full.vertices).vertices],
                                       best.size_mm, profile)
        plan.warnings.append(plan.split["message"])
    report.seconds = round(time.perf_counter() - started, 3)
    return plan, report


def _mesh_arrays(model: Model) -> MeshArrays:
    mesh = model.mesh
    if mesh is None or len(mesh.faces) == 0:
        raise PrintPlanError(f"model {model.name!r} has no faces: nothing to print")
    arrays = MeshArrays.from_arrays(mesh.vertices, mesh.faces)
    volume = arrays.volume
    if volume <= 0:
        raise PrintPlanError(
            f"model {model.name!r} encloses no volume ({volume:.1f} mm3): its faces are wound "
            "inside out or it is not closed", hint="re-run the mesh stage or repair the STL")
    return arrays


def _important(model: Model, count: int) -> np.ndarray | None:
    if model.important_faces is None:
        return None
    flags = np.asarray(model.important_faces, dtype=bool)
    if flags.shape != (count,):
        raise PrintPlanError(
            f"model {model.name!r}: important_faces has {flags.size} entries for {count} faces")
    return flags


def _decimate(mesh: MeshArrays, important: np.ndarray | None, target: int):
    if len(mesh.faces) <= target:
        return mesh, important
    vertices, faces = decimate(mesh.vertices, mesh.faces, target)
    if len(faces) > 2 * target:
        log.warning("decimation stopped at %d faces (target %d): the mesh may not be manifold",
                    len(faces), target)
    small = MeshArrays.from_arrays(vertices, faces)
    keep = small.areas > 0
    small = MeshArrays.from_arrays(vertices, faces[keep])
    if important is None:
        return small, None
    # Carry the flags over: a decimated face is important if the nearest full face is.
    _, nearest = cKDTree(mesh.centres).query(small.centres)
    return small, important[nearest]


_DIRECTIONS_26 = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                          if (i, j, k) != (0, 0, 0)], dtype=float)
_DIRECTIONS_26 /= np.linalg.norm(_DIRECTIONS_26, axis=1, keepdims=True)


def _reach(mesh: MeshArrays) -> np.ndarray:
    """Furthest extent of a mesh along 26 directions, mm."""
    # (26, 3) @ (3, V), reduced along rows: 7x faster than (V, 3) @ (3, 26) on 250k vertices,
    # the same dot products (measured 0.016 s against 0.111 s, equal to the bit).
    return (_DIRECTIONS_26 @ mesh.vertices.T).max(axis=1)


def _decimation_error(full: MeshArrays, full_reach: np.ndarray, small: MeshArrays) -> float:
    """How far a decimated copy's extremes fall inside the model's (plus 0.1 mm), mm."""
    if small is full:
        return 0.0
    return float(max(np.max(full_reach - _reach(small)), 0.0)) + 0.1


def _placement(pose: PoseMetrics, profile: PrinterProfile) -> np.ndarray:
    """4x4 model-to-printer transform: rotate, rest on the plate, centre on it."""
    volume = profile.build_volume_mm
    centre = np.array([volume.x / 2, volume.y / 2])
    rotation = pose.rotation
    size = pose.size_mm
    if volume.x < volume.y:  # longer footprint side along the plate's longer side
        turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        rotation = turn @ rotation
        size = size[[1, 0, 2]]
    minimum = (pose.minimum if volume.x >= volume.y else
               np.array([-pose.minimum[1] - pose.size_mm[1], pose.minimum[0], pose.minimum[2]]))
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:2, 3] = centre - size[:2] / 2 - minimum[:2]
    matrix[2, 3] = -minimum[2]
    return matrix


def _plan_from_pose(pose: PoseMetrics, mesh: MeshArrays, model: Model, profile: PrinterProfile,
                    material: str, ctx: Context) -> PrintPlan:
    fits, margins = fits_build_volume(pose.size_mm, profile)
    layer = profile.layer_height_mm
    layers = int(np.ceil((pose.height_mm + profile.support_base_mm) / layer))
    part_mm3 = mesh.volume
    support_mm3 = pose.support_volume_mm3 * profile.support_fill_fraction
    spec = profile.materials[material]
    rates = profile.time
    seconds = (rates.fixed_minutes * 60 + layers * rates.seconds_per_layer
               + (part_mm3 + support_mm3) / rates.mm3_per_second)
    transform = _placement(pose, profile)
    volume = profile.build_volume_mm
    return PrintPlan(
        printer=profile.name, technology=profile.technology, material=material,
        model_name=model.name,
        transform=np.round(transform, 9).tolist(),
        down_direction_lps=np.round(pose.down, 9).tolist(),
        overhang_area_mm2=round(pose.overhang_area_mm2, 2),
        support_contact_area_mm2=round(pose.support_contact_area_mm2, 2),
        important_contact_area_mm2=round(pose.important_contact_mm2, 2),
        support_volume_mm3=round(pose.support_volume_mm3, 1),
        height_mm=round(pose.height_mm, 3), layer_height_mm=layer, layers=layers,
        footprint_mm=np.round(pose.size_mm[:2], 3).tolist(),
        material_part_ml=round(part_mm3 / 1000, 3),
        material_part_g=round(part_mm3 / 1000 * spec.density_g_per_ml, 2),
        material_supports_ml=round(support_mm3 / 1000, 3),
        material_supports_g=round(support_mm3 / 1000 * spec.density_g_per_ml, 2),
        material_cost=round((part_mm3 + support_mm3) / 1e6 * spec.cost_per_liter, 2),
        currency=spec.currency,
        estimated_time_h=round(seconds / 3600, 2),
        fits=fits, build_volume_mm=[volume.x, volume.y, volume.z],
        margins_mm={axis: round(float(m), 2) for axis, m in zip("xyz", margins)},
        cup_volume_mm3=round(pose.cups.volume_mm3, 1) if pose.cups else 0.0,
        cup_count=pose.cups.count if pose.cups else 0,
        critical_overhang_deg=profile.critical_overhang_deg,
        needs_supports=profile.needs_supports,
        plate_tolerance_mm=ctx.plate_tolerance_mm,
        cost_total=round(pose.total_cost, 6),
        cost={k: round(v, 6) for k, v in pose.cost.items()},
    )


def _alternative(pose: PoseMetrics, profile: PrinterProfile) -> PlanAlternative:
    return PlanAlternative(
        transform=np.round(_placement(pose, profile), 9).tolist(),
        down_direction_lps=np.round(pose.down, 9).tolist(),
        overhang_area_mm2=round(pose.overhang_area_mm2, 2),
        support_volume_mm3=round(pose.support_volume_mm3, 1),
        support_contact_area_mm2=round(pose.support_contact_area_mm2, 2),
        height_mm=round(pose.height_mm, 3), fits=pose.fits,
        cost_total=round(pose.total_cost, 6),
        cost={k: round(v, 6) for k, v in pose.cost.items()},
    )


def _to_model(points: np.ndarray, pose: PoseMetrics) -> np.ndarray:
    """Print-frame points of ``evaluate_pose`` (before placement) back to model LPS mm."""
    return (np.asarray(points) + pose.minimum) @ pose.rotation


def _points(points: np.ndarray) -> str:
    return ", ".join("(" + ", ".join(f"{c:.1f}" for c in p) + ")" for p in points)


def _wall_warnings(mesh: MeshArrays, profile: PrinterProfile, report: PrepareReport) -> list[str]:
    limit = profile.min_wall_mm
    sample = sample_wall_thickness(mesh, max_mm=2 * limit)
    finite = sample.thickness_mm[np.isfinite(sample.thickness_mm)]
    report.thinnest_wall_mm = round(float(finite.min()), 3) if len(finite) else None
    thin = np.flatnonzero(sample.thickness_mm < limit)
    report.wall_points_sampled, report.thin_wall_points = len(sample.faces), len(thin)
    if len(thin) == 0:
        return []
    worst = thin[np.argsort(sample.thickness_mm[thin])][:MAX_LISTED]
    share = 100 * len(thin) / len(sample.faces)
    return [f"walls thinner than the {limit} mm {profile.name} allows at {len(thin)} of "
            f"{len(sample.faces)} sampled points ({share:.1f} %), thinnest "
            f"{sample.thickness_mm[worst[0]]:.2f} mm; near {_points(sample.points[worst])} (LPS mm): "
            "thicken or check the segmentation there"]


def _island_warnings(mesh: MeshArrays, pose: PoseMetrics, ctx: Context, report: PrepareReport) -> list[str]:
    """Local lowest points off the plate that no overhang support reaches: each starts an
    island that needs its own support."""
    if not ctx.profile.needs_supports:
        return []
    z = (mesh.vertices @ pose.rotation[2]) - pose.minimum[2]
    faces = mesh.faces
    lowest_neighbour = np.full(len(z), np.inf)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        np.minimum.at(lowest_neighbour, faces[:, a], z[faces[:, b]])
        np.minimum.at(lowest_neighbour, faces[:, b], z[faces[:, a]])
    normal_z = mesh.normals @ pose.rotation[2]
    corner_z = np.take(z, faces)  # the lowest corner: 4x faster than z[faces].min(axis=1), same values
    supported = overhang_faces(normal_z, np.minimum(np.minimum(corner_z[:, 0], corner_z[:, 1]), corner_z[:, 2]), ctx)
    covered = np.zeros(len(z), dtype=bool)
    covered[faces[supported].ravel()] = True
    # A dimple in a steep wall is not an island: the point must stand out by a layer.
    islands = np.flatnonzero((lowest_neighbour - z > ctx.profile.layer_height_mm)
                             & (z > ctx.plate_tolerance_mm) & ~covered)
    report.unsupported_islands = len(islands)
    if len(islands) == 0:
        return []
    return [f"{len(islands)} unsupported island start(s) (lowest points off the plate that the "
            f"overhang supports miss) near {_points(mesh.vertices[islands[:MAX_LISTED]])} (LPS mm): "
            "add supports there"]


def _box_frames(mesh: MeshArrays, hull: Hull, poses: list[PoseMetrics]) -> np.ndarray:
    """Axes of the boxes around the model that the fit advice weighs, the measured poses first.

    Parameters
    ----------
    mesh : MeshArrays
        The copy the search ran on, model coordinates in mm.
    hull : Hull
        Its convex hull (:func:`~pipeline.prepare.search.convex_hull`).
    poses : list of PoseMetrics
        The poses measured (the chosen one first).

    Returns
    -------
    ndarray (K, 3, 3)
        Rotations from model coordinates to a box frame (rows: the box's axes as unit LPS
        directions): each pose's, the principal frame, and for each principal axis and each
        candidate down direction of the search (hull facets: boxes flush with one are the
        usual approximation of the minimum-volume box; stable poses; the sphere) the frame
        with that direction vertical, turned about it to the footprint's minimum-area
        rectangle. Any of a frame's axes may go along any of the printer's:
        :func:`_split_suggestion` tries all six orders.
    """
    directions, _ = candidate_directions(mesh, hull)
    principal = principal_frame(mesh.centres, mesh.areas)
    turned = [pose_rotation(d, hull.points)[0] for d in np.concatenate([principal, directions])]
    return np.array([pose.rotation for pose in poses] + [principal] + turned)


def _split_suggestion(frames: np.ndarray, points: np.ndarray, chosen_size: np.ndarray,
                      profile: PrinterProfile) -> dict:
    """The largest scale at which the model fits whole, and planes (in model LPS mm) cutting it
    into the fewest pieces that fit, each in the box orientation best for it. Never applied: the
    lab decides.

    A box's three axes may be laid along the printer's x, y and z in any order (the model can be
    turned any way; only the usable extents differ: x and y less the clearance on both sides, z
    less the support base).

    Parameters
    ----------
    frames : ndarray (K, 3, 3)
        Box frames to weigh (:func:`_box_frames`). The scale is the largest over them and the
        pieces the fewest; ties (the scale to 0.01) go to the smallest box, then to the most
        room, then to the first frame.
    points : ndarray (N, 3)
        The model's convex hull vertices, model coordinates in mm (its extents along any
        direction).
    chosen_size : ndarray (3,)
        Extent of the chosen pose (footprint longer and shorter side, height), mm.
    profile : PrinterProfile
        The printer (build volume, clearance, support base).

    Returns
    -------
    dict
        ``pieces`` (int), ``planes`` (``point_lps`` in mm and unit ``normal_lps`` of each cut),
        ``split_axes_lps`` and ``split_size_mm`` (the box the cuts are laid out in: the unit
        LPS directions along the printer's x, y and z as rows, and its extents along them,
        mm), ``scale_to_fit`` (dimensionless, rounded down to 0.01; 1.0 when a box fits
        unscaled), ``scale_axes_lps`` and ``scale_size_mm`` (the box it fits in, at full size)
        and ``message``.
    """
    usable = usable_volume(profile)
    laid = np.array([np.ptp(points @ frame.T, axis=0) for frame in frames])[:, AXIS_ORDERS]
    room = np.min(usable / laid, axis=2)  # (K, 6): the largest scale at which each lay fits
    steps = np.floor(100 * room)          # ... rounded down to 0.01, in hundredths
    counts = np.prod(np.maximum(np.ceil(laid / usable - 1e-9), 1), axis=2)
    volume = np.prod(laid, axis=2)        # mm3: a tilted box can win a little room, cuts square to
    # the model's own axes read better; ties go to the tightest box, then to the most room.
    fitting = np.unravel_index(np.lexsort((-room.ravel(), volume.ravel(), -steps.ravel()))[0], room.shape)
    fewest = np.unravel_index(np.lexsort((-room.ravel(), volume.ravel(), counts.ravel()))[0], room.shape)
    scale_axes, split_axes = (_laid_axes(frames[k], AXIS_ORDERS[o]) for k, o in (fitting, fewest))
    scale_size, split_size = laid[fitting], laid[fewest]
    pieces = np.maximum(np.ceil(split_size / usable - 1e-9), 1).astype(int)
    corner = (points @ split_axes.T).min(axis=0)
    planes = []
    for axis in np.flatnonzero(pieces > 1):
        for k in range(1, pieces[axis]):
            point = corner.copy()
            point[axis] += split_size[axis] * k / pieces[axis]
            planes.append({"point_lps": np.round(point @ split_axes, 2).tolist(),
                           "normal_lps": np.round(split_axes[axis], 6).tolist()})
    scale = min(float(steps[fitting]) / 100, 1.0)
    count = int(np.prod(pieces))
    head = (f"does not fit {profile.name} in any orientation tried: the chosen pose is "
            f"{_box(chosen_size)} (footprint, height), usable {usable[0]:.0f} x {usable[1]:.0f} x "
            f"{usable[2]:.0f} mm (x, y, z)")
    if count == 1:
        message = (f"{head}. It fits unscaled as a {_box(scale_size)} box (x, y, z) with "
                   f"{_laid(scale_axes)}: an orientation the search missed, place it so by hand")
    else:
        where = "; ".join(f"plane through {p['point_lps']} normal {p['normal_lps']}" for p in planes)
        message = (f"{head}. Split into {count} pieces ({where}, LPS mm) with {_laid(split_axes)}, "
                   f"or scale to {scale:.2f} (not applied): a {_box(scale_size)} box (x, y, z) at "
                   f"full size, with {_laid(scale_axes)}")
    return {"pieces": count, "planes": planes,
            "split_axes_lps": np.round(split_axes, 6).tolist(),
            "split_size_mm": np.round(split_size, 2).tolist(),
            "scale_to_fit": scale,
            "scale_axes_lps": np.round(scale_axes, 6).tolist(),
            "scale_size_mm": np.round(scale_size, 2).tolist(),
            "message": message}


def _laid_axes(frame: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The rows of ``frame`` in ``order``, the first negated where that would mirror the model: a
    rotation from model coordinates to the printer's x, y and z."""
    axes = frame[order].copy()
    if np.linalg.det(axes) < 0:
        axes[0] *= -1
    return axes


def _laid(axes: np.ndarray) -> str:
    """Words for a box orientation: the LPS directions going up and along the printer's x."""
    return f"LPS {_direction(axes[2])} up and {_direction(axes[0])} along the printer's x"


def _direction(vector: np.ndarray) -> str:
    return "(" + ", ".join(f"{round(c, 2) + 0.0:.2f}" for c in vector) + ")"  # + 0.0: no "-0.00"


def _box(size: np.ndarray) -> str:
    return f"{size[0]:.1f} x {size[1]:.1f} x {size[2]:.1f} mm"
