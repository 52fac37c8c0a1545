"""Self-intersection test: exact triangle-triangle tests on candidate pairs.

A smoothed or decimated marching-cubes surface can only pass through itself where two pieces of
it were close to begin with (thin walls, narrow gaps) or where a triangle folded over. The caller
names those candidate faces; here every pair of them close enough to touch is tested exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from pipeline.mesh.topology import cross_rows

_EPSILON = 1e-12


def ray_triangle_parameters(origins: np.ndarray, directions: np.ndarray, a: np.ndarray, b: np.ndarray,
                            c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Moller-Trumbore, row-wise: barycentric ``u, v``, ray parameter ``t`` and where the ray is not parallel.

    The point ``origins + t * directions`` equals ``a + u (b - a) + v (c - a)``; rows nearly
    parallel to their triangle's plane (relative to the lengths involved) are not ``usable``.

    Parameters
    ----------
    origins, directions : (n, 3) ndarray
        Ray origins and (not necessarily unit) directions.
    a, b, c : (n, 3) ndarray
        Triangle corners, one triangle per ray.

    Returns
    -------
    u, v : (n,) ndarray
        Barycentric coordinates of the hit point (0 where not usable).
    t : (n,) ndarray
        Ray parameter of the hit point, in units of ``directions``.
    usable : (n,) ndarray of bool
        Rows not parallel to their triangle's plane.
    """
    edge1, edge2 = b - a, c - a
    pvec = cross_rows(directions, edge2)
    determinant = np.einsum("ij,ij->i", edge1, pvec)
    usable = np.abs(determinant) > _EPSILON * (np.linalg.norm(edge1, axis=1) * np.linalg.norm(edge2, axis=1)
                                               * np.linalg.norm(directions, axis=1) + 1e-300)
    inverse = np.where(usable, 1.0 / np.where(usable, determinant, 1.0), 0.0)
    tvec = origins - a
    u = np.einsum("ij,ij->i", tvec, pvec) * inverse
    qvec = cross_rows(tvec, edge1)
    v = np.einsum("ij,ij->i", directions, qvec) * inverse
    t = np.einsum("ij,ij->i", edge2, qvec) * inverse
    return u, v, t, usable


def segments_cross_triangles(p0: np.ndarray, p1: np.ndarray, a: np.ndarray, b: np.ndarray,
                             c: np.ndarray) -> np.ndarray:
    """True where segment ``p0 -> p1`` passes through the interior of triangle ``(a, b, c)``.

    Touching at an end point or grazing an edge does not count.

    Parameters
    ----------
    p0, p1 : (n, 3) ndarray
        Segment end points.
    a, b, c : (n, 3) ndarray
        Triangle corners, one triangle per segment.

    Returns
    -------
    (n,) ndarray of bool
    """
    u, v, t, usable = ray_triangle_parameters(p0, p1 - p0, a, b, c)
    tolerance = 1e-9
    return usable & (u > tolerance) & (v > tolerance) & (u + v < 1 - tolerance) & (t > tolerance) & (t < 1 - tolerance)


def triangles_intersect(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """True where triangle ``first[n]`` (3, 3) and ``second[n]`` cross (non-coplanar cases).

    Pairs where one triangle lies wholly on one side of the other's plane cannot cross and are
    set aside first (Moller's plane rejection): the six edge tests then run on the few left.

    Parameters
    ----------
    first, second : (n, 3, 3) ndarray
        Corners of the paired triangles.

    Returns
    -------
    (n,) ndarray of bool
        True where an edge of one passes through the other.
    """
    hit = np.zeros(len(first), dtype=bool)
    maybe = np.flatnonzero(_meets_plane(first, second) & _meets_plane(second, first))
    first, second = first[maybe], second[maybe]
    for one, other in ((first, second), (second, first)):
        for start, end in ((0, 1), (1, 2), (2, 0)):
            hit[maybe] |= segments_cross_triangles(one[:, start], one[:, end], other[:, 0], other[:, 1], other[:, 2])
    return hit


def _meets_plane(one: np.ndarray, other: np.ndarray) -> np.ndarray:
    """False where all three corners of ``other`` lie strictly on one side of ``one``'s plane."""
    normal = cross_rows(one[:, 1] - one[:, 0], one[:, 2] - one[:, 0])
    side = np.einsum("ijk,ik->ij", other - one[:, None, 0], normal)
    return ~(np.all(side > 0, axis=1) | np.all(side < 0, axis=1))


def close_pairs(centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Index pairs ``(i, j)`` of spheres (centre, radius) that overlap.

    Spheres are grouped by radius in powers of two above the median, so a few long triangles
    (thick slices, decimation) do not widen the search for all the others: within a group the
    search radius is twice the group's largest radius; across groups, each larger sphere is
    looked up with its own radius plus the smaller group's largest.

    Parameters
    ----------
    centres : (n, 3) ndarray
        Sphere centres.
    radii : (n,) ndarray
        Sphere radii, in the unit of ``centres``.

    Returns
    -------
    (p, 2) ndarray of int
        Each overlapping pair once.
    """
    base = max(float(np.median(radii)), 1e-9)
    level = np.ceil(np.log2(np.maximum(radii / base, 1.0))).astype(int)
    groups = [np.flatnonzero(level == value) for value in np.unique(level)]
    trees = [cKDTree(centres[group]) for group in groups]
    largest = [float(radii[group].max()) for group in groups]
    pairs = []
    for a, (group, tree) in enumerate(zip(groups, trees)):
        pairs.append(group[tree.query_pairs(2.0 * largest[a], output_type="ndarray")])
        for bigger in groups[a + 1:]:
            found = tree.query_ball_point(centres[bigger], r=radii[bigger] + largest[a])
            counts = np.fromiter((len(n) for n in found), dtype=np.int64, count=len(found))
            if counts.sum():
                neighbours = np.concatenate([np.asarray(n, dtype=np.int64) for n in found if n])
                pairs.append(np.column_stack([np.repeat(bigger, counts), group[neighbours]]))
    pairs = np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)
    gap = np.linalg.norm(centres[pairs[:, 0]] - centres[pairs[:, 1]], axis=1)
    return pairs[gap <= radii[pairs[:, 0]] + radii[pairs[:, 1]]]


def intersecting_faces(vertices: np.ndarray, faces: np.ndarray, candidates: np.ndarray,
                       chunk: int = 200_000) -> np.ndarray:
    """Indices of candidate faces that cross another candidate face not sharing a vertex with it.

    Parameters
    ----------
    vertices : (n, 3) ndarray
    faces : (m, 3) ndarray of int
    candidates : (k,) ndarray of int
        Faces to test against each other.
    chunk : int
        Face pairs tested at a time (bounds the memory).

    Returns
    -------
    ndarray of int
        Sorted face indices involved in at least one crossing.
    """
    candidates = np.unique(candidates)
    if candidates.size < 2:
        return np.empty(0, dtype=np.int64)
    triangles = np.take(vertices, faces[candidates], axis=0)  # take: much faster than fancy row indexing
    centroids = triangles.mean(axis=1)
    reach = np.linalg.norm(triangles - centroids[:, None, :], axis=2).max(axis=1)
    pairs = close_pairs(centroids, reach)
    if pairs.size == 0:
        return np.empty(0, dtype=np.int64)
    corners = faces[candidates]
    shares = np.zeros(len(pairs), dtype=bool)
    for s in range(3):
        for t in range(3):
            shares |= corners[pairs[:, 0], s] == corners[pairs[:, 1], t]
    pairs = pairs[~shares]
    crossing = []
    for begin in range(0, len(pairs), chunk):
        part = pairs[begin:begin + chunk]
        hit = triangles_intersect(triangles[part[:, 0]], triangles[part[:, 1]])
        crossing.append(part[hit].ravel())
    involved = np.concatenate(crossing) if crossing else np.empty(0, dtype=np.int64)
    return np.unique(candidates[involved])
