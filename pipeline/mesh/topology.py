"""Fast topology and measure primitives on (vertices, faces) arrays.

Written on sorted half-edge keys and sparse graphs so that a 500 000-triangle model is checked
in a fraction of a second (trimesh's cached equivalents build full adjacency structures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


@dataclass
class Topology:
    """Closedness and manifoldness of a triangle mesh.

    Attributes
    ----------
    boundary_edges : int
        Half-edges with no opposite half-edge (holes).
    duplicate_half_edges : int
        Half-edges used twice in the same direction: two faces wound against each other, or an
        edge shared by more than two faces.
    nonmanifold_vertices : int
        Vertices whose surrounding faces form more than one fan (pinch points).
    degenerate_faces : int
        Faces with a repeated vertex index.
    """

    boundary_edges: int
    duplicate_half_edges: int
    nonmanifold_vertices: int
    degenerate_faces: int

    @property
    def watertight(self) -> bool:
        return self.boundary_edges == 0 and self.duplicate_half_edges == 0

    @property
    def winding_consistent(self) -> bool:
        return self.duplicate_half_edges == 0

    @property
    def manifold(self) -> bool:
        return self.watertight and self.nonmanifold_vertices == 0 and self.degenerate_faces == 0


def half_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges ``(3m,)`` start and end vertex of each face corner, face-major order."""
    return faces.ravel(), faces[:, [1, 2, 0]].ravel()


def opposite_half_edges(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Index of each half-edge's opposite (-1 if none), and a flag for duplicated half-edges."""
    start, end = half_edges(faces)
    key = start.astype(np.int64) * n_vertices + end
    order = np.argsort(key)
    sorted_key = key[order]
    duplicate = np.zeros(key.size, dtype=bool)
    repeated = sorted_key[1:] == sorted_key[:-1]
    duplicate[order[1:][repeated]] = True
    duplicate[order[:-1][repeated]] = True
    reverse = end.astype(np.int64) * n_vertices + start
    position = np.searchsorted(sorted_key, reverse)
    position = np.minimum(position, sorted_key.size - 1)
    found = sorted_key[position] == reverse
    opposite = np.where(found, order[position], -1)
    return opposite, duplicate


def topology(vertices: np.ndarray, faces: np.ndarray) -> tuple[Topology, np.ndarray]:
    """Closedness, orientation and manifoldness of a mesh (see :class:`Topology`).

    Also returns each half-edge's opposite (see :func:`opposite_half_edges`) for reuse.
    """
    n_vertices = len(vertices)
    degenerate = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    opposite, duplicate = opposite_half_edges(faces, n_vertices)
    boundary = int(np.count_nonzero(opposite < 0))
    nonmanifold = 0
    if boundary == 0 and not duplicate.any() and not degenerate.any():
        nonmanifold = _count_pinched_vertices(faces, opposite, n_vertices)
    summary = Topology(boundary, int(np.count_nonzero(duplicate)), nonmanifold, int(np.count_nonzero(degenerate)))
    return summary, opposite


def _count_pinched_vertices(faces: np.ndarray, opposite: np.ndarray, n_vertices: int) -> int:
    """Vertices whose corners form more than one fan.

    Corner ``c`` (face f, slot s) sits at vertex ``v = faces[f, s]``; the half-edge leaving v in
    f is ``c`` itself, whose opposite lies in the next face around v, at the corner of that face
    that also sits at v (the opposite half-edge's end). Linking these corners and counting
    connected components per vertex gives the number of fans.
    """
    n_corners = faces.size
    start, _ = half_edges(faces)
    # The opposite half-edge o runs v_end -> v, so the corner at v in its face is o's successor.
    successor = (opposite // 3) * 3 + (opposite % 3 + 1) % 3
    graph = sparse.coo_matrix((np.ones(n_corners, dtype=np.int8), (np.arange(n_corners), successor)),
                              shape=(n_corners, n_corners))
    n_fans, labels = connected_components(graph, directed=False)
    fan_vertex = np.empty(n_fans, dtype=np.int64)
    fan_vertex[labels] = start  # every corner of a fan sits at the same vertex
    fans_per_vertex = np.bincount(fan_vertex, minlength=n_vertices)
    return int(np.count_nonzero(fans_per_vertex > 1))


def vertex_components(faces: np.ndarray, n_vertices: int,
                      adjacency: sparse.csr_matrix | None = None) -> tuple[int, np.ndarray]:
    """Connected pieces: their number and the piece of each vertex."""
    graph = vertex_adjacency(faces, n_vertices, np.int8) if adjacency is None else adjacency
    return connected_components(graph, directed=False)


@dataclass
class Measures:
    """Per-face and per-vertex measures of a mesh, from one pass over its triangles.

    Attributes
    ----------
    face_volumes : (m,) ndarray
        Signed volume of the tetrahedron (mesh centroid, face); their sum is the enclosed volume.
    face_areas : (m,) ndarray
    face_normals : (m, 3) ndarray
        Unit normals (outward for a correctly wound closed mesh).
    vertex_normals : (n, 3) ndarray
        Area-weighted unit vertex normals.
    """

    face_volumes: np.ndarray
    face_areas: np.ndarray
    face_normals: np.ndarray
    vertex_normals: np.ndarray

    @property
    def volume(self) -> float:
        return float(self.face_volumes.sum())

    @property
    def area(self) -> float:
        return float(self.face_areas.sum())


def measures(vertices: np.ndarray, faces: np.ndarray, normals: bool = True) -> Measures:
    """Volumes, areas and normals (see :class:`Measures`); ``normals=False`` skips vertex normals."""
    centred = vertices - vertices.mean(axis=0)  # a nearby origin keeps the volume sum accurate
    a = centred[faces[:, 0]]
    cross = np.cross(centred[faces[:, 1]] - a, centred[faces[:, 2]] - a)
    double_area = np.sqrt(np.einsum("ij,ij->i", cross, cross))
    # a . ((b - a) x (c - a)) == a . (b x c): six times the signed tetrahedron volume
    volumes = np.einsum("ij,ij->i", a, cross) / 6.0
    face_normals = cross / np.maximum(double_area, 1e-300)[:, None]
    if not normals:
        return Measures(volumes, double_area / 2.0, face_normals, np.empty((0, 3)))
    corners = faces.ravel()
    summed = np.stack([np.bincount(corners, weights=np.repeat(cross[:, axis], 3), minlength=len(vertices))
                       for axis in range(3)], axis=1)
    summed /= np.maximum(np.linalg.norm(summed, axis=1), 1e-300)[:, None]
    return Measures(volumes, double_area / 2.0, face_normals, summed)


def vertex_adjacency(faces: np.ndarray, n_vertices: int, dtype=np.float64) -> sparse.csr_matrix:
    """Symmetric vertex adjacency (CSR); each entry counts the half-edges between two vertices."""
    start, end = half_edges(faces)
    rows, columns = np.concatenate([start, end]), np.concatenate([end, start])
    return sparse.csr_matrix((np.ones(rows.size, dtype=dtype), (rows, columns)), shape=(n_vertices, n_vertices))


def uniform_laplacian(faces: np.ndarray, n_vertices: int,
                      adjacency: sparse.csr_matrix | None = None) -> sparse.csr_matrix:
    """Row-normalised vertex adjacency: ``L @ v`` is the mean of each vertex's neighbours."""
    laplacian = (vertex_adjacency(faces, n_vertices) if adjacency is None else adjacency).copy()
    degree = np.diff(laplacian.indptr)
    laplacian.data[:] = 1.0 / np.repeat(np.maximum(degree, 1), degree)  # an edge seen twice counts once
    return laplacian


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop unreferenced vertices; returns new vertices, faces and the kept old indices."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    kept = np.flatnonzero(used)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[kept] = np.arange(kept.size)
    return vertices[kept], remap[faces], kept
