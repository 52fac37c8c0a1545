"""Cheap wall-thickness estimate: cast rays inwards from a sample of faces.

From the centre of each sampled face a ray goes along the inward normal; the distance to the
first surface it leaves the solid through, facing the other way, is the local wall thickness.
Triangles that share a vertex with the ray's own face are not walls: a ray meets one of them only
through a fold of the surface (a sliver folded over its neighbour, found at 0.001 mm on the
example's ventricle where the mask-based measurement of the mesh stage gives 0.5 mm), which is
a crease of the mesh, not material. Only thicknesses up to ``max_mm`` matter
(thin walls), so each ray is a short segment and is tested only against triangles near it
(a k-d tree on triangle centres), with a vectorised Moller-Trumbore intersection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from pipeline.mesh.intersections import ray_triangle_parameters
from pipeline.prepare.arrays import MeshArrays

_CHUNK_PAIRS = 2_000_000


@dataclass
class WallSample:
    """Wall thickness at sampled faces.

    Attributes
    ----------
    thickness_mm : ndarray
        Thickness at each sampled face (``inf`` where thicker than ``max_mm``), mm.
    points : ndarray (n, 3)
        Face centres the rays start from, in the mesh's coordinates (mm).
    faces : ndarray of int
        Index of each sampled face.
    """

    thickness_mm: np.ndarray
    points: np.ndarray
    faces: np.ndarray


def sample_wall_thickness(mesh: MeshArrays, max_mm: float, samples: int = 3000,
                          seed: int = 0) -> WallSample:
    """Estimate the wall thickness at up to ``samples`` faces, chosen by area.

    Parameters
    ----------
    mesh : MeshArrays
        Closed mesh with outward normals, mm.
    max_mm : float
        Longest thickness looked for, mm; thicker walls are reported as ``inf``.
    samples : int
        Number of faces sampled (area-weighted, deterministic with ``seed``).
    seed : int
        Seed of the random sampling (numpy ``default_rng``).

    Returns
    -------
    WallSample
        Thickness (mm, ``inf`` beyond ``max_mm``) at each distinct sampled face, in face-index
        order; faces drawn twice count once, so there may be fewer than ``samples``.
    """
    areas = mesh.areas
    rng = np.random.default_rng(seed)
    count = min(samples, len(mesh.faces))
    faces = np.unique(rng.choice(len(mesh.faces), size=count, p=areas / areas.sum()))
    triangles = mesh.triangles
    origins = mesh.centres[faces]
    directions = -mesh.normals[faces]

    # Triangles near each ray, from k-d trees on triangle centres, one per size class (a
    # triangle can reach a ray only if its centre is within its own size of the segment).
    centres = mesh.centres
    reach = np.sqrt(np.max([((triangles[:, k] - centres) ** 2).sum(axis=1) for k in range(3)], axis=0))
    level = np.floor(np.log2(np.maximum(reach, 1e-9) / max(np.median(reach), max_mm / 4)))
    level = np.maximum(level, 0).astype(int)
    midpoints = origins + directions * (max_mm / 2)
    rays, tris = [], []
    for value in np.unique(level):
        members = np.flatnonzero(level == value)
        near = cKDTree(centres[members]).query_ball_point(midpoints, r=max_mm / 2 + reach[members].max())
        lengths = np.fromiter((len(n) for n in near), dtype=np.int64, count=len(near))
        if lengths.sum():
            rays.append(np.repeat(np.arange(len(faces)), lengths))
            tris.append(members[np.concatenate([np.asarray(n, dtype=np.int64) for n in near])])
    ray = np.concatenate(rays) if rays else np.zeros(0, dtype=np.int64)
    tri = np.concatenate(tris) if tris else np.zeros(0, dtype=np.int64)

    thickness = np.full(len(faces), np.inf)
    for start in range(0, len(ray), _CHUNK_PAIRS):
        r, t = ray[start:start + _CHUNK_PAIRS], tri[start:start + _CHUNK_PAIRS]
        own = mesh.faces[faces[r]]
        keep = ~(mesh.faces[t][:, :, None] == own[:, None, :]).any(axis=(1, 2))  # own face, neighbours
        r, t = r[keep], t[keep]
        distance = _ray_triangle(origins[r], directions[r], triangles[t])
        # Count only exits across the wall (the far side faces along the ray, within 60
        # degrees), not glancing hits on a neighbouring surface in a concave crease.
        across = np.einsum("ij,ij->i", mesh.normals[t], directions[r]) > 0.5
        hit = (distance > 1e-6) & (distance <= max_mm) & across
        np.minimum.at(thickness, r[hit], distance[hit])
    return WallSample(thickness_mm=thickness, points=origins, faces=faces)


def _ray_triangle(origins: np.ndarray, directions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Distance along each ray to its triangle, ``inf`` where it misses."""
    u, v, t, usable = ray_triangle_parameters(origins, directions, triangles[:, 0], triangles[:, 1], triangles[:, 2])
    inside = usable & (u >= 0) & (v >= 0) & (u + v <= 1)
    return np.where(inside, t, np.inf)
