"""Point-to-surface distances, exact: nearby candidates first, certified, widened where not.

A k-d tree over triangle centroids gives each point its ``k`` nearest candidate triangles, and
the exact point-triangle distance over them (trimesh's kernel) an upper bound ``d``. Any triangle
not examined lies at least ``c_k - r`` away, where ``c_k`` is the k-th nearest centroid's distance
and ``r`` the largest centroid-to-corner reach of any triangle; where that bound is not below
``d`` the answer is proven exact. The few triangles of outlying reach (above the 99.9th
percentile, e.g. a cap left as two big triangles) are examined for every point instead, so one
long triangle does not weaken the bound of all. Points left uncertain get 4x the candidates,
then 16x, then trimesh's exact R-tree search. On marching-cubes surfaces almost every point is
certified at the first ``k``: this keeps the speed of the candidate search (about 10x trimesh's
search alone on a 94k-face sphere, measured) without its error: with candidates only, 98% of the
points of a mesh of mixed triangle sizes were off by up to 2.8 mm.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

#: Triangles whose reach is above this quantile of all are examined for every point.
OUTLIER_REACH_QUANTILE = 0.999
#: Outlying triangles examined for every point at most (more: they stay in the bound).
MAX_OUTLIERS = 64
#: Candidate counts tried in turn (as multiples of the first) before the R-tree search.
WIDENING = (4, 16)
#: Points per vectorised pass (bounds the memory of point-triangle pairs).
CHUNK = 65_536


class SurfaceDistance:
    """Exact unsigned distances from points to a triangle surface.

    The search structures are built once; calling the object answers any number of queries.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex coordinates (any length unit; distances come back in it).
    faces : (m, 3) ndarray of int
        Triangles as vertex indices (degenerate triangles are fine).
    candidates : int
        Triangles examined per point before the certificate is checked.

    Attributes
    ----------
    searched : int
        Points so far that the widened candidates could not certify, answered by the R-tree
        search (for tests and profiles).
    widened : int
        Points so far that needed more than ``candidates`` triangles.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, candidates: int = 6):
        self._vertices = np.asarray(vertices, dtype=np.float64)
        self._faces = np.asarray(faces)
        corners = np.take(self._vertices, self._faces, axis=0)
        centroids = corners.mean(axis=1)
        reach = np.sqrt(((corners - centroids[:, None, :]) ** 2).sum(axis=2)).max(axis=1)
        self._outliers = np.zeros(0, dtype=np.int64)
        self._reach = 0.0
        if len(faces):
            limit = float(np.quantile(reach, OUTLIER_REACH_QUANTILE))
            outliers = np.flatnonzero(reach > limit)
            if 0 < outliers.size <= MAX_OUTLIERS:
                self._outliers = outliers
                self._reach = limit
            else:
                self._reach = float(reach.max())
        self._tree = cKDTree(centroids, balanced_tree=False, compact_nodes=False)
        self._candidates = max(min(int(candidates), len(self._faces)), 1)
        self._mesh: trimesh.Trimesh | None = None  # built only if a point needs the R-tree search
        self.searched = 0
        self.widened = 0

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Unsigned distance of each point to the surface.

        Parameters
        ----------
        points : (p, 3) array_like
            Query points, in the vertices' unit.

        Returns
        -------
        (p,) ndarray of float
            Distance of each point to its closest point on any triangle, in the vertices' unit
            (exact to rounding).
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if len(self._faces) == 0:
            return np.full(len(points), np.inf)
        distance = np.empty(len(points))
        for begin in range(0, len(points), CHUNK):
            distance[begin:begin + CHUNK] = self._exact(points[begin:begin + CHUNK])
        return distance

    def _exact(self, points: np.ndarray) -> np.ndarray:
        """Distances of one chunk of points: candidates, widened where uncertain, then R-tree."""
        distance, floor = self._nearest(points, self._candidates)
        if self._outliers.size:
            distance = np.minimum(distance, self._to_faces(np.repeat(points, self._outliers.size, axis=0),
                                                           np.tile(self._outliers, len(points)), len(points)))
        uncertain = np.flatnonzero(distance > floor)
        if uncertain.size:
            self.widened += int(uncertain.size)
        for factor in WIDENING:
            if uncertain.size == 0:
                return distance
            wider, floor = self._nearest(points[uncertain], self._candidates * factor)
            distance[uncertain] = np.minimum(distance[uncertain], wider)
            uncertain = uncertain[distance[uncertain] > floor]
        if uncertain.size:
            if self._mesh is None:
                self._mesh = trimesh.Trimesh(self._vertices, self._faces, process=False)
            _, exact, _ = trimesh.proximity.closest_point(self._mesh, points[uncertain])
            distance[uncertain] = np.minimum(distance[uncertain], exact)
            self.searched += int(uncertain.size)
        return distance

    def _nearest(self, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Least distance over the ``k`` nearest-centroid triangles, and the floor of all others.

        The floor is what any triangle not examined is at least away; where the distance is not
        above it, it is exact. With every triangle examined the floor is infinite.
        """
        k = min(k, len(self._faces))
        centroid_distance, nearest = self._tree.query(points, k=k, workers=-1)
        centroid_distance = centroid_distance.reshape(len(points), -1)
        distance = self._to_faces(np.repeat(points, k, axis=0), nearest.reshape(-1), len(points))
        if k == len(self._faces):
            return distance, np.full(len(points), np.inf)
        return distance, centroid_distance[:, -1] - self._reach

    def _to_faces(self, repeated: np.ndarray, faces: np.ndarray, count: int) -> np.ndarray:
        """Per point, the least exact distance to its triangles (``repeated[i]`` meets ``faces[i]``,
        the same number of triangles for each of the ``count`` points, in order)."""
        triangles = np.take(self._vertices, self._faces[faces], axis=0)
        closest = trimesh.triangles.closest_point(triangles, repeated)
        return np.linalg.norm(repeated - closest, axis=1).reshape(count, -1).min(axis=1)
