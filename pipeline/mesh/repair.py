"""Repair: drop small pieces, and fix holes, pinches and self-intersections with MeshFix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.mesh.topology import compact, measures, vertex_components


@dataclass
class ShellFilter:
    """Outcome of :func:`remove_small_shells` (volumes mm^3)."""

    kept: int
    removed: int
    removed_volume_mm3: float
    kept_volume_mm3: float
    cavities: int


def remove_small_shells(vertices_lps: np.ndarray, faces: np.ndarray, min_volume_mm3: float,
                        adjacency=None, face_volumes: np.ndarray | None = None) -> tuple[np.ndarray, ShellFilter]:
    """Keep the closed pieces whose enclosed volume is at least ``min_volume_mm3``.

    A piece with negative volume is a cavity (an inward-facing shell inside the solid); it is
    judged by its absolute volume like any other piece.

    ``adjacency`` (see :func:`pipeline.mesh.topology.vertex_adjacency`) and ``face_volumes``
    (:attr:`pipeline.mesh.topology.Measures.face_volumes`, mm^3) are reused if given.

    Returns
    -------
    keep_faces : (m,) ndarray of bool
        Faces of the kept pieces.
    ShellFilter
    """
    count, piece_of_vertex = vertex_components(faces, len(vertices_lps), adjacency)
    piece_of_face = piece_of_vertex[faces[:, 0]]
    if face_volumes is None:
        face_volumes = measures(vertices_lps, faces, normals=False).face_volumes
    volume = np.bincount(piece_of_face, weights=face_volumes, minlength=count)
    keep_piece = np.abs(volume) >= min_volume_mm3
    removed = ~keep_piece
    summary = ShellFilter(
        kept=int(keep_piece.sum()), removed=int(removed.sum()),
        removed_volume_mm3=float(volume[removed].sum()), kept_volume_mm3=float(volume[keep_piece].sum()),
        cavities=int(np.count_nonzero(keep_piece & (volume < 0))),
    )
    return keep_piece[piece_of_face], summary


def meshfix(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close holes, remove degenerate and self-intersecting triangles (MeshFix, M. Attene 2010).

    Every piece is kept (a label map may hold several structures); the result is a closed,
    oriented manifold whenever MeshFix succeeds.
    """
    import pymeshfix

    fixer = pymeshfix.MeshFix(np.ascontiguousarray(vertices, dtype=np.float64),
                              np.ascontiguousarray(faces, dtype=np.int32))
    fixer.repair(joincomp=False, remove_smallest_components=False)
    new_vertices, new_faces, _ = compact(np.asarray(fixer.points, dtype=np.float64),
                                         np.asarray(fixer.faces, dtype=np.int64))
    return new_vertices, new_faces
