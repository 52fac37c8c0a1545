"""Repair: drop small pieces, and fix holes, pinches and self-intersections with MeshFix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.mesh.topology import compact, measures, opposite_half_edges, vertex_components


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

    Parameters
    ----------
    vertices_lps : (n, 3) ndarray
        Vertex coordinates, LPS mm.
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.
    min_volume_mm3 : float
        Smallest absolute enclosed volume of a piece that is kept, mm^3.
    adjacency : scipy.sparse matrix, optional
        :func:`pipeline.mesh.topology.vertex_adjacency` of the mesh, reused if given.
    face_volumes : (m,) ndarray, optional
        :attr:`pipeline.mesh.topology.Measures.face_volumes` (mm^3), reused if given.

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


def remove_back_to_back_faces(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop pairs of faces on the same three vertices with opposite winding.

    Quadric edge collapse (which does not test the link condition) sometimes folds a thin spot
    into such a pair: a zero-volume, two-sided triangle whose three edges then carry four faces
    each. Removing both faces leaves those edges to the two faces around them, as before the
    fold, and leaves the enclosed volume unchanged. Only faces on duplicated half-edges are
    examined, so a clean mesh costs one half-edge pass.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex coordinates.
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.

    Returns
    -------
    vertices, faces : ndarray
        The mesh without the pairs (unused vertices dropped); the input arrays when none is found.
    pairs : int
        Pairs removed.
    """
    _, duplicate = opposite_half_edges(faces, len(vertices))
    suspects = np.unique(np.flatnonzero(duplicate) // 3)
    if suspects.size < 2:
        return vertices, faces, 0
    corners = faces[suspects]
    order = np.argsort(corners, axis=1)
    # the winding of a face relative to its sorted vertices: an even or an odd permutation
    odd = (order[:, 0] > order[:, 1]) ^ (order[:, 1] > order[:, 2]) ^ (order[:, 0] > order[:, 2])
    triples = np.take_along_axis(corners, order, axis=1)
    _, group, count = np.unique(triples, axis=0, return_inverse=True, return_counts=True)
    group = group.ravel()
    flip_sum = np.bincount(group, weights=odd.astype(float), minlength=count.size)
    paired = (count == 2) & (flip_sum == 1)  # exactly two faces, wound against each other
    drop = suspects[paired[group]]
    if drop.size == 0:
        return vertices, faces, 0
    keep = np.ones(len(faces), dtype=bool)
    keep[drop] = False
    new_vertices, new_faces, _ = compact(vertices, faces[keep])
    return new_vertices, new_faces, int(drop.size // 2)


def meshfix(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close holes, remove degenerate and self-intersecting triangles (MeshFix, M. Attene 2010).

    Every piece is kept (a label map may hold several structures); the result is a closed,
    oriented manifold whenever MeshFix succeeds.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex coordinates, mm.
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.

    Returns
    -------
    vertices, faces : ndarray
        The repaired mesh (unused vertices dropped); no faces if MeshFix removed every one.
    """
    import pymeshfix

    fixer = pymeshfix.MeshFix(np.ascontiguousarray(vertices, dtype=np.float64),
                              np.ascontiguousarray(faces, dtype=np.int32))
    fixer.repair(joincomp=False, remove_smallest_components=False)
    new_vertices, new_faces, _ = compact(np.asarray(fixer.points, dtype=np.float64),
                                         np.asarray(fixer.faces, dtype=np.int64))
    return new_vertices, new_faces
