"""Decimation to a face budget by quadric edge collapse (fast-simplification)."""

from __future__ import annotations

import fast_simplification
import numpy as np


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Collapse edges (Garland-Heckbert quadrics) until at most ``target_faces`` triangles remain.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Positions, mm (the quadric error is measured in these units).
    faces : (m, 3) ndarray of int
    target_faces : int
        Face budget.

    Returns
    -------
    vertices, faces : ndarray
        The decimated mesh; unchanged when it is already within budget.
    """
    if len(faces) <= target_faces:
        return vertices, faces
    new_vertices, new_faces = fast_simplification.simplify(
        np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces, dtype=np.int32),
        target_count=int(target_faces),
    )
    return np.asarray(new_vertices, dtype=np.float64), np.asarray(new_faces, dtype=np.int64)
