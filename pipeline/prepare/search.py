"""Orientation search: candidate directions, a cheap screen, shadow-aware ranking, refinement.

Candidates (model directions that could face the plate):

* the normals of the convex hull's facets (flat resting faces), largest first;
* the stable poses: hull facets on which the model stands without tipping (its centre of mass
  projects inside the facet); computed here directly because ``trimesh.poses`` takes seconds
  per model;
* a Fibonacci sphere of directions laid out in the model's principal frame, so the set turns
  with the model and the result does not depend on the input rotation.

All candidates are screened at once with an upper bound of the support volume (overhangs
supported from the plate, ignoring the part below); the best are ranked with shadow-aware ray
casting (and cups), then refined by a shrinking pattern search on the sphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

from pipeline.prepare.arrays import MeshArrays
from pipeline.prepare.evaluate import Context, PoseMetrics, cost_terms, evaluate_pose, usable_volume
from pipeline.prepare.frames import fibonacci_sphere, principal_frame, unit

SPHERE_DIRECTIONS = 240
HULL_DIRECTIONS = 80
SCREENED = 16
SCREEN_SEPARATION_DEG = 12.0
ALWAYS_RANKED = 4
REFINED = 3
REFINE_STEPS_DEG = (6.0, 2.0)
REFINE_MOVES = 1


@dataclass
class Hull:
    """Convex hull of the model: its vertices and its flat facets (normal, area, stable)."""

    points: np.ndarray
    facet_normals: np.ndarray
    facet_areas: np.ndarray
    stable: np.ndarray


def convex_hull(mesh: MeshArrays) -> Hull:
    """Hull vertices and facets (coplanar hull triangles merged), with the stable ones marked.

    Parameters
    ----------
    mesh : MeshArrays
        The model, model coordinates in mm.

    Returns
    -------
    Hull
        Hull vertices (H, 3) in mm; per facet (planes equal to 1e-6): outward unit normal,
        area (mm2) and whether the model stands on it (its centre of mass projects inside).

    Raises
    ------
    scipy.spatial.QhullError
        The vertices span no volume (a flat or degenerate model).
    """
    hull = ConvexHull(mesh.vertices)
    points = mesh.vertices[hull.vertices]
    # Qhull merges coplanar triangles into one facet: equal plane equations.
    planes = np.round(hull.equations, 6)
    keys, facet_of = np.unique(planes, axis=0, return_inverse=True)
    facet_of = facet_of.ravel()
    tri = mesh.vertices[hull.simplices]
    areas = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2
    facet_areas = np.bincount(facet_of, weights=areas)
    normals = unit(keys[:, :3])
    stable = _stable_facets(mesh.centre_of_mass, tri, normals[facet_of], facet_of, len(keys))
    return Hull(points, normals, facet_areas, stable)


def _stable_facets(point: np.ndarray, triangles: np.ndarray, normals: np.ndarray,
                   facet_of: np.ndarray, count: int) -> np.ndarray:
    """Facets on which the model stands: ``point`` (the centre of mass) projected along the
    facet normal falls inside one of the facet's triangles."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    offset = np.einsum("ij,ij->i", point - a, normals)
    p = point - offset[:, None] * normals
    signs = np.stack([np.einsum("ij,ij->i", np.cross(q - p, r - p), normals)
                      for q, r in ((a, b), (b, c), (c, a))])
    inside = np.all(signs >= -1e-9, axis=0) | np.all(signs <= 1e-9, axis=0)
    stable = np.zeros(count, dtype=bool)
    stable[facet_of[inside]] = True
    return stable


def candidate_directions(mesh: MeshArrays, hull: Hull) -> tuple[np.ndarray, np.ndarray]:
    """Candidate down directions (unit rows: hull facets, stable poses, sphere) and the hull
    facet of each of the first rows.

    Parameters
    ----------
    mesh : MeshArrays
        The model, model coordinates in mm.
    hull : Hull
        Its convex hull (:func:`convex_hull`).

    Returns
    -------
    directions : ndarray (D, 3)
        Unit model directions: the :data:`HULL_DIRECTIONS` largest facets' normals and every
        stable facet's (sorted by facet index), then :data:`SPHERE_DIRECTIONS` Fibonacci
        directions in the model's principal frame.
    facets : ndarray (K,) of int
        The hull facet of each of the first K rows of ``directions``.
    """
    by_area = np.argsort(-hull.facet_areas)
    chosen = by_area[:HULL_DIRECTIONS]
    stable = np.flatnonzero(hull.stable)
    facets = np.unique(np.concatenate([chosen, stable]))
    frame = principal_frame(mesh.centres, mesh.areas)
    sphere = fibonacci_sphere(SPHERE_DIRECTIONS) @ frame
    return unit(np.concatenate([hull.facet_normals[facets], sphere])), facets


def screen(mesh: MeshArrays, hull: Hull, directions: np.ndarray, ctx: Context) -> np.ndarray:
    """Cheap cost of every direction at once: overhang area, the support volume if every
    overhang were supported from the plate (an upper bound of the shadow-aware volume), height
    and a rough fit check.

    Parameters
    ----------
    mesh : MeshArrays
        The model (or a decimated copy), model coordinates in mm.
    hull : Hull
        Its convex hull, for the fit check.
    directions : ndarray (D, 3)
        Unit model directions to face the plate.
    ctx : Context
        The printer, the model's scale, the weights and the plate tolerance.

    Returns
    -------
    ndarray (D,)
        The screened cost per direction (dimensionless, the terms of
        :func:`~pipeline.prepare.evaluate.cost_terms` for support volume, overhang area, height
        and fit), float32 arithmetic.
    """
    d = directions.astype(np.float32).T
    areas = mesh.areas.astype(np.float32)
    cos_down = mesh.normals.astype(np.float32) @ d                     # (F, D)
    depth = mesh.vertices.astype(np.float32) @ d                        # along down
    plate = depth.max(axis=0)
    height = plate - mesh.centres.astype(np.float32) @ d
    needs = (cos_down > ctx.cos_critical) & (height > ctx.plate_tolerance_mm)
    if not ctx.profile.needs_supports:
        needs[:] = False
    overhang = areas @ needs.astype(np.float32)
    cos_down *= height
    volume = areas @ np.where(needs, cos_down, np.float32(0))
    span = plate - depth.min(axis=0)
    w, s = ctx.weights, ctx.scale_mm
    fits = _fits_roughly(hull.points, directions, span, ctx)
    return (w["support_volume"] * volume / s**3 + w["overhang_area"] * overhang / s**2
            + w["height"] * span / s + np.where(fits, 0.0, w["no_fit"]))


def _fits_roughly(points: np.ndarray, directions: np.ndarray, height: np.ndarray,
                  ctx: Context) -> np.ndarray:
    """Whether each direction could fit the build volume: its height, and its footprint turned
    in steps of 15 degrees about the vertical (a cheap stand-in for the minimum-area rectangle)."""
    usable = usable_volume(ctx.profile) - 2 * ctx.decimation_error_mm
    plate = np.sort(usable[:2])[::-1]
    helper = np.eye(3)[np.argmin(np.abs(directions), axis=1)]
    u = unit(np.cross(directions, helper))
    v = np.cross(directions, u)
    fits = np.zeros(len(directions), dtype=bool)
    for angle in np.radians(np.arange(0, 90, 15.0)):
        a = np.cos(angle) * u + np.sin(angle) * v
        b = np.cos(angle) * v - np.sin(angle) * u
        width, depth = np.ptp(points @ a.T, axis=0), np.ptp(points @ b.T, axis=0)
        long, short = np.maximum(width, depth), np.minimum(width, depth)
        fits |= (long <= plate[0]) & (short <= plate[1])
    return fits & (height <= usable[2])


def refine(mesh: MeshArrays, hull: Hull, start: PoseMetrics, ctx: Context,
           cell_mm: float) -> PoseMetrics:
    """Pattern search on the sphere: tilt by shrinking steps in six directions, move to the best
    improvement. Cups barely change over a few degrees: the start's are kept.

    Parameters
    ----------
    mesh : MeshArrays
        The model (or a decimated copy), model coordinates in mm.
    hull : Hull
        Its convex hull (its vertices set each trial's turn about the vertical).
    start : PoseMetrics
        The pose to start from.
    ctx : Context
        What poses are measured against.
    cell_mm : float
        Ray spacing of the support volume, mm.

    Returns
    -------
    PoseMetrics
        The best pose found: ``start`` itself when no tilt of :data:`REFINE_STEPS_DEG` degrees
        lowers the total cost.
    """
    best = start
    for step in np.radians(REFINE_STEPS_DEG):
        for _ in range(REFINE_MOVES):
            d = best.down
            helper = np.eye(3)[np.argmin(np.abs(d))]
            u = unit(np.cross(d, helper))
            v = np.cross(d, u)
            trials = []
            for angle in np.arange(6) * np.pi / 3:
                trial = unit(np.cos(step) * d + np.sin(step) * (np.cos(angle) * u + np.sin(angle) * v))
                metrics = evaluate_pose(mesh, hull.points, trial, ctx, cell_mm)
                metrics.cups = start.cups
                metrics.cost = cost_terms(metrics, ctx)
                trials.append(metrics)
            candidate = min(trials, key=lambda m: m.total_cost)
            if candidate.total_cost >= best.total_cost - 1e-9:
                break
            best = candidate
    return best


def search(mesh: MeshArrays, hull: Hull, ctx: Context, cell_mm: float, keep: int,
           with_cups: bool) -> list[PoseMetrics]:
    """The ``keep`` best distinct poses (at least 15 degrees apart), best first.

    Parameters
    ----------
    mesh : MeshArrays
        The model (or a decimated copy), model coordinates in mm.
    hull : Hull
        Its convex hull (:func:`convex_hull`).
    ctx : Context
        What poses are measured against.
    cell_mm : float
        Ray spacing of the support volume (and voxel size of the cup search), mm.
    keep : int
        Most poses returned.
    with_cups : bool
        Look for cups when ranking (SLA).

    Returns
    -------
    list of PoseMetrics
        At most ``keep`` poses, by increasing total cost, whose down directions are at least
        15 degrees apart.
    """
    directions, facets = candidate_directions(mesh, hull)
    cheap = screen(mesh, hull, directions, ctx)
    order = _spread(directions, np.argsort(cheap, kind="stable"), SCREENED, SCREEN_SEPARATION_DEG)
    # The largest stable resting faces are always ranked: the screen cannot see cups.
    stable_areas = np.where(hull.stable[facets], hull.facet_areas[facets], 0.0)
    resting = [int(i) for i in np.argsort(-stable_areas)[:ALWAYS_RANKED] if stable_areas[i] > 0]
    order += [i for i in resting if i not in order]
    ranked = sorted((evaluate_pose(mesh, hull.points, directions[i], ctx, cell_mm, with_cups)
                     for i in order), key=lambda m: m.total_cost)
    refined = [refine(mesh, hull, m, ctx, cell_mm) for m in _distinct(ranked, REFINED)]
    refined += ranked
    refined.sort(key=lambda m: m.total_cost)
    return _distinct(refined, keep)


def _spread(directions: np.ndarray, order: np.ndarray, count: int, separation_deg: float) -> list[int]:
    """The first ``count`` of ``order`` at least ``separation_deg`` apart: the screen's cost
    misses cups and shadows, so the ranking looks at different poses, not one pose's neighbours."""
    cos_limit = np.cos(np.radians(separation_deg))
    chosen: list[int] = []
    for index in order:
        if not chosen or np.max(directions[chosen] @ directions[index]) < cos_limit:
            chosen.append(int(index))
            if len(chosen) == count:
                break
    return chosen


def _distinct(poses: list[PoseMetrics], count: int, min_angle_deg: float = 15.0) -> list[PoseMetrics]:
    cos_limit = np.cos(np.radians(min_angle_deg))
    chosen: list[PoseMetrics] = []
    for pose in poses:
        if all(float(pose.down @ other.down) < cos_limit for other in chosen):
            chosen.append(pose)
        if len(chosen) == count:
            break
    return chosen
