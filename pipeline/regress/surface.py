"""Surface measurements for regression: metrics, point-to-surface distance, ICP, z-crops, files.

Distances are exact point-to-triangle distances (mm), from the mesh stage's
:class:`~pipeline.mesh.distance.SurfaceDistance` (certified k-d tree candidates), which keeps a
1.5-million-face skull tractable where an R-tree closest-point query over every face is not.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from pipeline.files import atomic_write
from pipeline.mesh.decimate import decimate
from pipeline.mesh.distance import SurfaceDistance

def mesh_metrics(mesh: trimesh.Trimesh) -> dict:
    """Volume (ml), area (cm^2), LPS bounding box (mm), shells, watertightness, face count.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Surface in LPS mm.

    Returns
    -------
    dict
        ``volume_ml``, ``area_cm2``, ``bbox_min_lps_mm``, ``bbox_max_lps_mm``, ``shells``,
        ``watertight``, ``faces``.
    """
    bounds = np.asarray(mesh.bounds, dtype=float)
    return {
        "volume_ml": float(mesh.volume) / 1000.0,
        "area_cm2": float(mesh.area) / 100.0,
        "bbox_min_lps_mm": bounds[0].tolist(),
        "bbox_max_lps_mm": bounds[1].tolist(),
        "shells": int(mesh.body_count),
        "watertight": bool(mesh.is_watertight),
        "faces": int(len(mesh.faces)),
    }


def sample_surface(mesh: trimesh.Trimesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points spread evenly by area over the surface, and their face normals.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Surface in LPS mm.
    count : int
        Number of points.
    seed : int
        Seed of the sampling (the same seed gives the same points).

    Returns
    -------
    points : (count, 3) ndarray
        Points on the surface, LPS mm.
    normals : (count, 3) ndarray
        Unit normal of the face each point lies on.
    """
    points, faces = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points), np.asarray(mesh.face_normals[faces])


def distance_to_surface(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """Exact unsigned distance (mm) from each point to the closest point on ``mesh``'s triangles.

    Parameters
    ----------
    points : (n, 3) array_like
        Query points, mm.
    mesh : trimesh.Trimesh
        Target surface, mm.

    Returns
    -------
    (n,) ndarray of float
        Distances, mm (see :class:`pipeline.mesh.distance.SurfaceDistance`).
    """
    return SurfaceDistance(np.asarray(mesh.vertices), np.asarray(mesh.faces))(points)


def symmetric_mean_distance(a: trimesh.Trimesh, b: trimesh.Trimesh, count: int = 20000,
                            keep=None, with_distances: bool = False) -> dict:
    """Mean and 95th-percentile surface distance between two meshes, both ways (mm).

    ``count`` points are sampled on each mesh. ``keep``, if given, takes an ``(n, 3)`` point
    array and returns a boolean mask of the points to count (e.g. those inside a common z
    range). ``with_distances`` adds every point's distance (``"distances"``, an array).

    Parameters
    ----------
    a, b : trimesh.Trimesh
        The two surfaces, LPS mm.
    count : int
        Points sampled on each surface.
    keep : callable, optional
        ``keep(points) -> (n,) bool``: the sampled points to count.
    with_distances : bool
        Also return every counted point's distance.

    Returns
    -------
    dict
        ``mean_mm``, ``p95_mm``, ``max_mm`` over both directions, ``mean_a_to_b_mm``,
        ``mean_b_to_a_mm``, ``points``, and ``distances`` (mm) if asked for.
    """
    points_a, _ = sample_surface(a, count, seed=1)
    points_b, _ = sample_surface(b, count, seed=2)
    if keep is not None:
        points_a, points_b = points_a[keep(points_a)], points_b[keep(points_b)]
    a_to_b = distance_to_surface(points_a, b)
    b_to_a = distance_to_surface(points_b, a)
    both = np.concatenate([a_to_b, b_to_a])
    summary = {
        "mean_mm": float(both.mean()),
        "p95_mm": float(np.percentile(both, 95)),
        "max_mm": float(both.max()),
        "mean_a_to_b_mm": float(a_to_b.mean()),
        "mean_b_to_a_mm": float(b_to_a.mean()),
        "points": int(len(both)),
    }
    if with_distances:
        summary["distances"] = both
    return summary


def rigid_icp(moving: np.ndarray, fixed: np.ndarray, fixed_normals: np.ndarray, *,
              iterations: int = 40, reject_mm: float = 5.0) -> tuple[np.ndarray, dict]:
    """Point-to-plane ICP from ``moving`` points onto ``fixed`` points with normals.

    Starts from the identity (the series share a frame of reference). Pairs further apart than
    ``reject_mm`` are ignored, so structures present in one set only do not pull.

    Parameters
    ----------
    moving : (n, 3) ndarray
        Points to register, LPS mm.
    fixed : (m, 3) ndarray
        Target points, LPS mm.
    fixed_normals : (m, 3) ndarray
        Unit normals at the target points.
    iterations : int
        Most linearised steps taken.
    reject_mm : float
        Pairs further apart than this are left out, mm.

    Returns
    -------
    transform : (4, 4) ndarray
        Maps moving points onto fixed points (LPS mm).
    summary : dict
        Iterations, rotation (degrees) and translation (mm) of the transform, inlier fraction.
    """
    tree = cKDTree(fixed)
    transform = np.eye(4)
    current = np.asarray(moving, dtype=float).copy()
    inliers = np.ones(len(current), bool)
    done = 0
    for done in range(1, iterations + 1):
        distance, index = tree.query(current)
        inliers = distance < reject_mm
        p, q, n = current[inliers], fixed[index[inliers]], fixed_normals[index[inliers]]
        # Linearised point-to-plane step: minimise sum(((R p + t) - q) . n)^2 for small R.
        a = np.hstack([np.cross(p, n), n])
        b = np.einsum("ij,ij->i", q - p, n)
        step, *_ = np.linalg.lstsq(a, b, rcond=None)
        rotation = _rotation_from_angles(step[:3])
        update = np.eye(4)
        update[:3, :3], update[:3, 3] = rotation, step[3:]
        current = current @ rotation.T + step[3:]
        transform = update @ transform
        if np.linalg.norm(step[:3]) < 1e-7 and np.linalg.norm(step[3:]) < 1e-5:
            break
    angle = np.degrees(np.arccos(np.clip((np.trace(transform[:3, :3]) - 1) / 2, -1.0, 1.0)))
    return transform, {
        "iterations": done,
        "rotation_deg": float(angle),
        "translation_mm": transform[:3, 3].tolist(),
        "inlier_fraction": float(inliers.mean()),
    }


def _rotation_from_angles(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix for small angles (rad) about x, y, z, orthonormalised."""
    return trimesh.transformations.euler_matrix(*angles, axes="sxyz")[:3, :3]


def crop_planes(mesh: trimesh.Trimesh, planes: list[tuple[np.ndarray, float]]) -> trimesh.Trimesh:
    """The closed solid of ``mesh`` on the inner side of every plane, cut and capped.

    Each plane is ``(normal, offset)`` and keeps the points ``p`` with ``normal . p >= offset``
    (LPS mm). Uses manifold3d, so the result is closed whenever the input is.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Closed surface, LPS mm.
    planes : list of (normal, offset)
        Unit normal (3,) and offset (mm) of each plane.

    Returns
    -------
    trimesh.Trimesh
        The cut and capped solid.
    """
    import manifold3d

    solid = manifold3d.Manifold(manifold3d.Mesh(np.asarray(mesh.vertices, np.float32),
                                                np.asarray(mesh.faces, np.uint32)))
    for normal, offset in planes:
        solid = solid.trim_by_plane(tuple(float(v) for v in normal), float(offset))
    cut = solid.to_mesh()
    return trimesh.Trimesh(np.asarray(cut.vert_properties)[:, :3], np.asarray(cut.tri_verts), process=False)


def crop_z(mesh: trimesh.Trimesh, z_low: float, z_high: float) -> trimesh.Trimesh:
    """The closed solid of ``mesh`` between two axial planes, cut and capped.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Closed surface, LPS mm.
    z_low, z_high : float
        LPS z of the lower and upper plane, mm.

    Returns
    -------
    trimesh.Trimesh
        The solid with ``z_low <= z <= z_high``.
    """
    return crop_planes(mesh, [(np.array([0.0, 0.0, 1.0]), z_low), (np.array([0.0, 0.0, -1.0]), -z_high)])


def inside_planes(points: np.ndarray, planes: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """True for the points on the inner side of every plane (see :func:`crop_planes`).

    Parameters
    ----------
    points : (n, 3) ndarray
        Points, LPS mm.
    planes : list of (normal, offset)
        Unit normal (3,) and offset (mm) of each plane.

    Returns
    -------
    (n,) ndarray of bool
    """
    keep = np.ones(len(points), bool)
    for normal, offset in planes:
        keep &= points @ np.asarray(normal, float) >= offset
    return keep


def write_golden_mesh(mesh: trimesh.Trimesh, path: Path) -> Path:
    """Write a (decimated) golden mesh as gzip-compressed binary PLY, atomically.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        The golden surface, LPS mm.
    path : Path
        Destination (``.ply.gz``).

    Returns
    -------
    Path
        The file written.
    """
    return atomic_write(path, gzip.compress(trimesh.exchange.ply.export_ply(mesh, encoding="binary"), mtime=0))


def read_golden_mesh(path: Path) -> trimesh.Trimesh:
    """Read a golden mesh written by :func:`write_golden_mesh`.

    Parameters
    ----------
    path : Path
        A ``.ply.gz`` file.

    Returns
    -------
    trimesh.Trimesh
        The surface, LPS mm, unprocessed.
    """
    with gzip.open(path, "rb") as handle:
        return trimesh.load(io.BytesIO(handle.read()), file_type="ply", process=False)


def decimate_mesh(mesh: trimesh.Trimesh, faces: int) -> trimesh.Trimesh:
    """Quadric decimation to at most ``faces`` triangles (the mesh stage's :func:`~pipeline.mesh.decimate.decimate`).

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Surface to decimate.
    faces : int
        Face budget.

    Returns
    -------
    trimesh.Trimesh
        ``mesh`` itself if already within budget, else the decimated surface.
    """
    if len(mesh.faces) <= faces:
        return mesh
    vertices, triangles = decimate(np.asarray(mesh.vertices), np.asarray(mesh.faces), faces)
    return trimesh.Trimesh(vertices, triangles, process=True)
