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
from pipeline.prepare.evaluate import Context, PoseMetrics, evaluate_pose
from pipeline.prepare.frames import fibonacci_sphere, principal_frame, unit

SPHERE_DIRECTIONS = 240
HULL_DIRECTIONS = 120
SCREENED = 32
REFINED = 6
REFINE_STEPS_DEG = (8.0, 4.0, 2.0, 1.0)


@dataclass
class Hull:
    """Convex hull of the model: its vertices and its flat facets (normal, area, stable)."""

    points: np.ndarray
    facet_normals: np.ndarray
    facet_areas: np.ndarray
    stable: np.ndarray


def convex_hull(mesh: MeshArrays) -> Hull:
    """Hull vertices and facets (coplanar hull triangles merged), with the stable ones marked."""
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
    centre = mesh.centre_of_mass
    stable = np.zeros(len(keys), dtype=bool)
    for index in np.argsort(-facet_areas)[: 4 * HULL_DIRECTIONS]:
        stable[index] = _projects_inside(centre, normals[index], tri[facet_of == index])
    return Hull(points, normals, facet_areas, stable)


def _projects_inside(point: np.ndarray, normal: np.ndarray, triangles: np.ndarray) -> bool:
    """Whether ``point`` projected along ``normal`` falls inside one of the (coplanar) triangles."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    p = point - np.outer((point - a[0]) @ normal, normal)[0]
    signs = [np.einsum("ij,j->i", np.cross(q - p, r - p), normal) for q, r in ((a, b), (b, c), (c, a))]
    inside = np.all(np.stack(signs) >= -1e-9, axis=0) | np.all(np.stack(signs) <= 1e-9, axis=0)
    return bool(inside.any())


def candidate_directions(mesh: MeshArrays, hull: Hull) -> tuple[np.ndarray, list[str]]:
    """Candidate down directions (unit rows) and where each came from."""
    by_area = np.argsort(-hull.facet_areas)
    chosen = by_area[:HULL_DIRECTIONS]
    stable = np.flatnonzero(hull.stable)
    facets = np.unique(np.concatenate([chosen, stable]))
    frame = principal_frame(mesh.centres, mesh.areas)
    sphere = fibonacci_sphere(SPHERE_DIRECTIONS) @ frame
    directions = np.concatenate([hull.facet_normals[facets], sphere])
    origin = ["stable pose" if hull.stable[f] else "hull facet" for f in facets]
    origin += ["sphere"] * len(sphere)
    return unit(directions), origin


def screen(mesh: MeshArrays, directions: np.ndarray, ctx: Context) -> np.ndarray:
    """Cheap cost of every direction at once: overhang area plus the support volume if every
    overhang were supported from the plate (an upper bound of the shadow-aware volume)."""
    cos_down = (mesh.normals @ directions.T).astype(np.float32)        # (F, D)
    depth = (mesh.vertices @ directions.T).astype(np.float32)           # along down
    plate = depth.max(axis=0)
    height = plate[None, :] - (mesh.centres @ directions.T).astype(np.float32)
    needs = (cos_down > ctx.cos_critical) & (height > ctx.plate_tolerance_mm)
    if not ctx.profile.needs_supports:
        needs[:] = False
    weighted = np.where(needs, mesh.areas[:, None].astype(np.float32), 0)
    overhang = weighted.sum(axis=0)
    volume = (weighted * cos_down * height).sum(axis=0)
    span = plate - depth.min(axis=0)
    w, s = ctx.weights, ctx.scale_mm
    return (w["support_volume"] * volume / s**3 + w["overhang_area"] * overhang / s**2
            + w["height"] * span / s)


def refine(mesh: MeshArrays, hull: Hull, start: PoseMetrics, ctx: Context,
           cell_mm: float, with_cups: bool) -> PoseMetrics:
    """Pattern search on the sphere: try six tilts of shrinking size, keep any improvement."""
    best = start
    for step in np.radians(REFINE_STEPS_DEG):
        improved = True
        while improved:
            improved = False
            d = best.down
            helper = np.eye(3)[np.argmin(np.abs(d))]
            u = unit(np.cross(d, helper))
            v = np.cross(d, u)
            for angle in np.arange(6) * np.pi / 3:
                trial = unit(np.cos(step) * d + np.sin(step) * (np.cos(angle) * u + np.sin(angle) * v))
                metrics = evaluate_pose(mesh, hull.points, trial, ctx, cell_mm, with_cups)
                if metrics.total_cost < best.total_cost - 1e-9:
                    best, improved = metrics, True
    return best


def search(mesh: MeshArrays, hull: Hull, ctx: Context, cell_mm: float, keep: int,
           with_cups: bool) -> list[PoseMetrics]:
    """The ``keep`` best distinct poses (at least 15 degrees apart), best first."""
    directions, _ = candidate_directions(mesh, hull)
    cheap = screen(mesh, directions, ctx)
    order = np.argsort(cheap, kind="stable")[:SCREENED]
    ranked = sorted((evaluate_pose(mesh, hull.points, directions[i], ctx, cell_mm, with_cups)
                     for i in order), key=lambda m: m.total_cost)
    refined = [refine(mesh, hull, m, ctx, cell_mm, with_cups) for m in _distinct(ranked, REFINED)]
    refined += ranked
    refined.sort(key=lambda m: m.total_cost)
    return _distinct(refined, keep)


def _distinct(poses: list[PoseMetrics], count: int, min_angle_deg: float = 15.0) -> list[PoseMetrics]:
    cos_limit = np.cos(np.radians(min_angle_deg))
    chosen: list[PoseMetrics] = []
    for pose in poses:
        if all(float(pose.down @ other.down) < cos_limit for other in chosen):
            chosen.append(pose)
        if len(chosen) == count:
            break
    return chosen
