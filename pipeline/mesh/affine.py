"""Applying a grid's affine to many points without BLAS.

``points @ matrix.T`` on an ``(n, 3)`` array goes through BLAS, whose thread pool makes it several
times slower than a plain ``einsum`` on a busy machine; the matrices themselves always come from
:class:`pipeline.geometry.Geometry` (``affine``), which owns the index-to-LPS mapping.
"""

from __future__ import annotations

import numpy as np


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``affine`` (4 x 4) applied to points ``(n, 3)``."""
    return np.einsum("ij,nj->ni", affine[:3, :3], points) + affine[:3, 3]


def apply_linear(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``matrix`` (3 x 3) applied to vectors ``(n, 3)``."""
    return np.einsum("ij,nj->ni", matrix, vectors)
