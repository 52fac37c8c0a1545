"""Point-to-surface distances, exact: nearby candidates first, then a ball that provably holds the nearest.

A k-d tree over triangle centroids gives each point its ``k`` nearest candidate triangles, and
the exact point-triangle distance over them (trimesh's kernel) an upper bound ``d``. Any triangle
not examined lies at least ``c_k - r`` away, where ``c_k`` is the k-th nearest centroid's distance
and ``r`` the largest centroid-to-corner reach of any triangle; where that bound is not below
``d`` the answer is proven exact. The few triangles of outlying reach (above the 99.9th
percentile, e.g. a cap left as two big triangles) are examined for every point instead, so one
long triangle does not weaken the bound of all. Where the bound is not met, every triangle
nearer than ``d`` has its centroid within ``d + r``: one ball query of that radius gives the
complete candidate set (a point whose ball holds more than ``MAX_BALL`` triangles goes to
trimesh's R-tree search instead). On marching-cubes surfaces the reach exceeds the centroid
spacing, so most points need the ball; it holds about a dozen triangles there. With candidates
only, 98% of the points of a mesh of mixed triangle sizes were off by up to 2.8 mm; on the
benchmark aorta's raw surface (565 k faces) 10 000 points take 0.1 s this way against 0.75 s with
4x/16x widened candidate lists and several seconds with the R-tree for the uncertain points.
"""

from __future__ import annotations

import itertools

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from pipeline.threads import thread_budget

#: Triangles whose reach is above this quantile of all are examined for every point.
OUTLIER_REACH_QUANTILE = 0.999
#: Outlying triangles examined for every point at most (more: they stay in the bound).
MAX_OUTLIERS = 64
#: Triangles in a point's certified ball at most; points with more go to trimesh's R-tree search.
MAX_BALL = 2_000
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
        Points so far whose ball held too many triangles, answered by the R-tree search (for
        tests and profiles).
    widened : int
        Points so far that the first ``candidates`` triangles did not certify (a ball query).
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, candidates: int = 6):
        self._vertices = np.asarray(vertices, dtype=np.float64)
        self._faces = np.asarray(faces)
        centroids, reach = _centroids_and_reach(self._vertices, self._faces)
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
        """Distances of one chunk of points: candidates, a certified ball where uncertain, R-tree."""
        distance, floor = self._nearest(points, self._candidates)
        if self._outliers.size:
            distance = np.minimum(distance, self._to_faces(np.repeat(points, self._outliers.size, axis=0),
                                                           np.tile(self._outliers, len(points)), int(self._outliers.size)))
        uncertain = np.flatnonzero(distance > floor)
        if uncertain.size == 0:
            return distance
        self.widened += int(uncertain.size)
        # a triangle nearer than d has its centroid within d + reach: the ball holds all of them
        # (the relative slack covers the rounding of d)
        radius = (distance[uncertain] + self._reach) * (1.0 + 1e-9)
        balls = self._tree.query_ball_point(points[uncertain], radius,
                                            return_sorted=False, workers=thread_budget())
        counts = np.fromiter(map(len, balls), dtype=np.int64, count=len(balls))
        small = counts <= MAX_BALL
        if small.any():
            owners = uncertain[small]
            faces = np.fromiter(itertools.chain.from_iterable(balls[small]), dtype=np.int64,
                                count=int(counts[small].sum()))
            pairs = self._to_faces(np.repeat(points[owners], counts[small], axis=0), faces, counts[small])
            distance[owners] = np.minimum(distance[owners], pairs)
        if not small.all():  # a ball over much of the mesh: trimesh's R-tree is the cheaper search
            if self._mesh is None:
                self._mesh = trimesh.Trimesh(self._vertices, self._faces, process=False)
            wide = uncertain[~small]
            _, exact, _ = trimesh.proximity.closest_point(self._mesh, points[wide])
            distance[wide] = np.minimum(distance[wide], exact)
            self.searched += int(wide.size)
        return distance

    def _nearest(self, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Least distance over the ``k`` nearest-centroid triangles, and the floor of all others.

        The floor is what any triangle not examined is at least away; where the distance is not
        above it, it is exact. With every triangle examined the floor is infinite.
        """
        k = min(k, len(self._faces))
        centroid_distance, nearest = self._tree.query(points, k=k, workers=thread_budget())
        centroid_distance = centroid_distance.reshape(len(points), -1)
        distance = self._to_faces(np.repeat(points, k, axis=0), nearest.reshape(-1), k)
        if k == len(self._faces):
            return distance, np.full(len(points), np.inf)
        return distance, centroid_distance[:, -1] - self._reach

    def _to_faces(self, repeated: np.ndarray, faces: np.ndarray, counts: int | np.ndarray) -> np.ndarray:
        """Per point, the least exact distance to its triangles.

        ``repeated[i]`` meets triangle ``faces[i]``; the pairs come grouped by point, ``counts``
        pairs per point (at least one each), or the same number for every point if an int.
        """
        triangles = np.take(self._vertices, self._faces[faces], axis=0)
        closest = trimesh.triangles.closest_point(triangles, repeated)
        pair_distance = np.linalg.norm(repeated - closest, axis=1)
        if isinstance(counts, int):
            return pair_distance.reshape(-1, counts).min(axis=1)
        return np.minimum.reduceat(pair_distance, np.cumsum(counts) - counts)


def _centroids_and_reach(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each triangle's centroid and the distance from it to the farthest corner.

    Built from one contiguous (m, 3) array per corner, in place: on the benchmark aorta's raw
    surface (565 k faces) 0.02 s of CPU against 0.11 s for ``take(...).mean(axis=1)`` and
    reductions over the (m, 3, 3) corner array (the short axes make NumPy's reductions slow).
    """
    corners = [np.take(vertices, faces[:, corner], axis=0) for corner in range(3)]
    centroids = corners[0] + corners[1]
    centroids += corners[2]
    centroids /= 3.0
    reach = np.zeros(len(faces))
    for corner in corners:
        corner -= centroids
        np.maximum(reach, np.einsum("ij,ij->i", corner, corner), out=reach)
    return centroids, np.sqrt(reach, out=reach)
