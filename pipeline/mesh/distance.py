"""Point-to-surface distances, exact: nearby candidates first, certified or searched exhaustively.

A k-d tree over triangle centroids gives each point a few candidate triangles, and the exact
point-triangle distance over them (trimesh's kernel) an upper bound ``d``. Any other triangle lies
at least ``c_k - r_max`` away, where ``c_k`` is the k-th nearest centroid's distance and ``r_max``
the largest centroid-to-corner reach of any triangle; where that bound is not below ``d`` the
answer is proven exact. The remaining points (near a triangle much larger than its neighbours)
are answered by trimesh's exact R-tree search. On marching-cubes surfaces almost every point is
certified, so this keeps the speed of the candidate search (about 10x trimesh's search alone on a
94k-face sphere, measured) without its error: with candidates only, 98% of the points of a mesh
of mixed triangle sizes were off by up to 2.8 mm.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree


class SurfaceDistance:
    """Exact unsigned distances from points to a triangle surface.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex coordinates (any length unit; distances come back in it).
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.
    candidates : int
        Triangles examined per point before the certificate is checked.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, candidates: int = 6):
        self._vertices, self._faces = vertices, faces
        corners = np.take(vertices, faces, axis=0)
        centroids = corners.mean(axis=1)
        self._reach = float(np.sqrt(((corners - centroids[:, None, :]) ** 2).sum(axis=2)).max()) if len(faces) else 0.0
        self._tree = cKDTree(centroids, balanced_tree=False, compact_nodes=False)
        self._candidates = min(int(candidates), len(faces))
        self._mesh: trimesh.Trimesh | None = None  # built only if a point needs the exhaustive search
        self.searched = 0  #: points answered by the exhaustive search so far (for tests and profiles)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Unsigned distance of each point to the surface (units of the vertices)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        centroid_distance, nearest = self._tree.query(points, k=self._candidates, workers=-1)
        centroid_distance = centroid_distance.reshape(len(points), -1)
        nearest = nearest.reshape(-1)  # every candidate of every point in one vectorised pass
        repeated = np.repeat(points, self._candidates, axis=0)
        closest = trimesh.triangles.closest_point(np.take(self._vertices, self._faces[nearest], axis=0), repeated)
        distance = np.linalg.norm(repeated - closest, axis=1).reshape(len(points), -1).min(axis=1)
        if self._candidates < len(self._faces):
            uncertain = np.flatnonzero(centroid_distance[:, -1] - self._reach < distance)
            if uncertain.size:
                if self._mesh is None:
                    self._mesh = trimesh.Trimesh(self._vertices, self._faces, process=False)
                _, exact, _ = trimesh.proximity.closest_point(self._mesh, points[uncertain])
                distance[uncertain] = np.minimum(distance[uncertain], exact)
                self.searched += int(uncertain.size)
        return distance
