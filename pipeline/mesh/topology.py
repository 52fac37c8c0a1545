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
        """Closed and consistently wound.

        Returns
        -------
        bool
            No boundary edge and no duplicated half-edge.
        """
        return self.boundary_edges == 0 and self.duplicate_half_edges == 0

    @property
    def winding_consistent(self) -> bool:
        """Every edge traversed once each way (no duplicated half-edge).

        Returns
        -------
        bool
        """
        return self.duplicate_half_edges == 0

    @property
    def manifold(self) -> bool:
        """Watertight, with no pinched vertex and no degenerate face.

        Returns
        -------
        bool
        """
        return self.watertight and self.nonmanifold_vertices == 0 and self.degenerate_faces == 0


def cross_rows(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Cross products of paired 3-vectors, row by row: ``np.cross(u, w)`` to the bit.

    The same products and differences in the same order as ``np.cross``, without its axis
    shuffling and temporaries: 0.012 s instead of 0.35 s for 500 000 rows (measured).

    Parameters
    ----------
    u, w : (n, 3) ndarray
        Vectors (any unit, e.g. mm), one pair per row; views of larger arrays are fine.

    Returns
    -------
    (n, 3) ndarray
        ``u x w`` per row, in the product of the inputs' units (e.g. mm2), the dtype of
        ``u * w``.
    """
    out = np.empty(np.broadcast_shapes(u.shape, w.shape), dtype=np.result_type(u, w))
    for axis, (p, q) in enumerate(((1, 2), (2, 0), (0, 1))):
        np.subtract(u[..., p] * w[..., q], u[..., q] * w[..., p], out=out[..., axis])
    return out


def half_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges: start and end vertex of each face corner, face-major order.

    Parameters
    ----------
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.

    Returns
    -------
    start, end : (3m,) ndarray of int
        Half-edge ``3 f + s`` runs from ``faces[f, s]`` to ``faces[f, (s + 1) % 3]``.
    """
    end = np.empty_like(faces)  # faces[:, [1, 2, 0]] without fancy indexing (twice as fast)
    end[:, :2], end[:, 2] = faces[:, 1:], faces[:, 0]
    return faces.ravel(), end.ravel()


def opposite_half_edges(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Index of each half-edge's opposite (-1 if none), and a flag for duplicated half-edges.

    One sort of keys ``2 * undirected edge + direction``: a half-edge and its opposite share the
    undirected edge and differ in the last bit, so their groups of equal keys are neighbours in
    sorted order (no second search). Where a key is repeated the first of its group is taken.

    Parameters
    ----------
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.
    n_vertices : int
        Number of vertices (bounds the edge keys).

    Returns
    -------
    opposite : (3m,) ndarray of int64
        Index of the half-edge running the other way along the same edge, -1 if none.
    duplicate : (3m,) ndarray of bool
        Half-edges that share their direction with another (inconsistent winding, or an edge
        of more than two faces).
    """
    start, end = half_edges(faces)
    low = np.minimum(start, end).astype(np.int64)
    key = (low * n_vertices + np.maximum(start, end)) * 2 + (start > end)
    order = np.argsort(key, kind="stable")  # faster than quicksort on the half-sorted keys of a mesh
    sorted_key = key[order]
    if key.size % 2 == 0:
        # The usual case, a closed oriented manifold: sorted keys come in pairs (2e, 2e + 1), one
        # half-edge each way along every undirected edge e.
        first, second = sorted_key[0::2], sorted_key[1::2]
        if not np.any(first & 1) and np.array_equal(first + 1, second):
            opposite = np.empty(key.size, dtype=np.int64)
            opposite[order[0::2]], opposite[order[1::2]] = order[1::2], order[0::2]
            return opposite, np.zeros(key.size, dtype=bool)
    new_group = np.empty(key.size, dtype=bool)
    new_group[:1] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=new_group[1:])
    group_start = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    repeated = ~new_group
    repeated[:-1] |= ~new_group[1:]
    duplicate = np.empty(key.size, dtype=bool)
    duplicate[order] = repeated
    # the opposite key (last bit flipped) can only be the group just after (bit 0) or before (bit 1);
    # a degenerate half-edge v -> v is its own opposite
    loop = (start == end)[order]
    other = np.where(loop, group, np.where(sorted_key & 1, group - 1, group + 1))
    other = np.clip(other, 0, group_start.size - 1)
    found = sorted_key[group_start[other]] == np.where(loop, sorted_key, sorted_key ^ 1)
    opposite = np.empty(key.size, dtype=np.int64)
    opposite[order] = np.where(found, order[group_start[other]], -1)
    return opposite, duplicate


def topology(vertices: np.ndarray, faces: np.ndarray) -> tuple[Topology, np.ndarray]:
    """Closedness, orientation and manifoldness of a mesh (see :class:`Topology`).

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex coordinates (only their number is used).
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.

    Returns
    -------
    summary : Topology
        Counts of open edges, duplicated half-edges, pinched vertices and degenerate faces.
    opposite : (3m,) ndarray of int64
        Each half-edge's opposite (see :func:`opposite_half_edges`), for reuse.
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
    that also sits at v (the opposite half-edge's end). On a closed mesh this "next corner" map
    is a permutation whose cycles are the fans; walking it from one corner of every vertex (all
    vertices at once, a handful of steps for typical valences) gives the size of that corner's
    fan, and a vertex is pinched when its fan holds fewer than all of its corners.
    """
    start, _ = half_edges(faces)
    # The opposite half-edge o runs v_end -> v, so the corner at v in its face is o's successor.
    successor = opposite - opposite % 3 + (opposite % 3 + 1) % 3
    corners_at = np.bincount(start, minlength=n_vertices)
    origin_of = np.empty(n_vertices, dtype=np.int64)
    origin_of[start] = np.arange(start.size)  # any one corner of each vertex
    vertex = np.flatnonzero(corners_at)
    origin = origin_of[vertex]
    current = successor[origin]
    fan_size = np.zeros(n_vertices, dtype=np.int64)
    for length in range(1, int(corners_at.max()) + 1):
        closed = current == origin
        fan_size[vertex[closed]] = length
        open_ = ~closed
        vertex, origin, current = vertex[open_], origin[open_], successor[current[open_]]
        if vertex.size == 0:
            break
    return int(np.count_nonzero(fan_size < corners_at))


def vertex_components(faces: np.ndarray, n_vertices: int,
                      adjacency: sparse.csr_matrix | None = None) -> tuple[int, np.ndarray]:
    """Connected pieces: their number and the piece of each vertex.

    Parameters
    ----------
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.
    n_vertices : int
        Number of vertices.
    adjacency : scipy.sparse matrix, optional
        A vertex adjacency already built (e.g. :func:`vertex_adjacency`); else the half-edges.

    Returns
    -------
    count : int
        Number of pieces (unreferenced vertices are pieces of their own).
    labels : (n,) ndarray of int
        Piece of each vertex.
    """
    if adjacency is None:  # the directed half-edges suffice: components ignore direction
        start, end = half_edges(faces)
        adjacency = sparse.coo_matrix((np.ones(start.size, dtype=np.int8), (start, end)), shape=(n_vertices, n_vertices))
    return connected_components(adjacency, directed=False)


@dataclass
class Measures:
    """Per-face and per-vertex measures of a mesh, from one pass over its triangles.

    Attributes
    ----------
    face_volumes : (m,) ndarray
        Signed volume of the tetrahedron (``origin``, face); their sum is the enclosed volume.
    face_areas : (m,) ndarray
    vertex_normals : (n, 3) ndarray
        Area-weighted unit vertex normals (outward for a correctly wound closed mesh); empty if
        not asked for.
    vertex_normal_lengths : (n,) ndarray
        Length of each vertex's summed face cross products before normalising (twice the
        area-weighted normal); on a closed mesh a sixth of it is the enclosed volume's gradient
        at the vertex. Empty if normals were not asked for.
    face_cross : tuple of three (m,) ndarray
        Components of ``(b - a) x (c - a)`` per face (twice the area times the unit normal).
    origin : (3,) ndarray
        The common apex of the face tetrahedra: the first vertex (a point on the mesh keeps the
        volume sum accurate), or zero for a mesh without vertices.
    """

    face_volumes: np.ndarray
    face_areas: np.ndarray
    vertex_normals: np.ndarray
    vertex_normal_lengths: np.ndarray
    face_cross: tuple[np.ndarray, np.ndarray, np.ndarray]
    origin: np.ndarray

    @property
    def volume(self) -> float:
        """Enclosed volume (coordinate unit cubed; positive for outward normals).

        Returns
        -------
        float
        """
        return float(self.face_volumes.sum())

    @property
    def area(self) -> float:
        """Surface area (coordinate unit squared).

        Returns
        -------
        float
        """
        return float(self.face_areas.sum())


def measures(vertices: np.ndarray, faces: np.ndarray, normals: bool = True) -> Measures:
    """Volumes, areas and normals (see :class:`Measures`); ``normals=False`` skips the normals.

    Coordinates are handled as separate columns (one contiguous array each) and combined in
    place: on a million triangles that halves the time of row-wise cross products, and fewer
    temporaries mean fewer fresh pages for the kernel to map.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex coordinates (mm in the pipeline).
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.
    normals : bool
        Also sum the area-weighted vertex normals.

    Returns
    -------
    Measures
        Face volumes and areas, vertex normals, face cross products.
    """
    centre = vertices[0] if len(vertices) else np.zeros(3)  # an origin on the mesh keeps the volume sum accurate
    columns = [vertices[:, axis] - centre[axis] for axis in range(3)]
    corners = [np.ascontiguousarray(faces[:, corner]) for corner in range(3)]
    first = [column[corners[0]] for column in columns]
    edge_b = [column[corners[1]] for column in columns]  # b - a, below
    edge_c = [column[corners[2]] for column in columns]  # c - a
    for axis in range(3):
        edge_b[axis] -= first[axis]
        edge_c[axis] -= first[axis]
    scratch = np.empty(len(faces))
    cross = []
    for p, q in ((1, 2), (2, 0), (0, 1)):
        component = edge_b[p] * edge_c[q]
        component -= np.multiply(edge_b[q], edge_c[p], out=scratch)
        cross.append(component)
    del edge_b, edge_c
    # a . ((b - a) x (c - a)) == a . (b x c): six times the signed tetrahedron volume
    volumes = first[0] * cross[0]
    areas = cross[0] * cross[0]
    for axis in (1, 2):
        volumes += np.multiply(first[axis], cross[axis], out=scratch)
        areas += np.multiply(cross[axis], cross[axis], out=scratch)
    volumes /= 6.0
    np.sqrt(areas, out=areas)
    areas *= 0.5
    vertex_normals, length = np.empty((0, 3)), np.empty(0)
    if normals:
        n = len(vertices)
        summed = []
        for part in cross:
            total = np.bincount(corners[0], part, n)
            total += np.bincount(corners[1], part, n)
            total += np.bincount(corners[2], part, n)
            summed.append(total)
        length = np.sqrt(summed[0] * summed[0] + summed[1] * summed[1] + summed[2] * summed[2])
        vertex_normals = np.stack(summed, axis=1)
        vertex_normals /= np.maximum(length, 1e-300)[:, None]
    return Measures(volumes, areas, vertex_normals, length, tuple(cross), np.array(centre, dtype=float))


def vertex_adjacency(faces: np.ndarray, n_vertices: int, dtype=np.float64) -> sparse.csr_matrix:
    """Symmetric vertex adjacency; each entry counts the half-edges between two vertices.

    Parameters
    ----------
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.
    n_vertices : int
        Number of vertices.
    dtype : numpy dtype
        Type of the stored counts.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n, n)``, sorted indices, no duplicates (2 per edge of a closed manifold).
    """
    index = np.int32 if n_vertices < 2**31 else np.int64  # scipy's own index type: no conversion copies
    start, end = half_edges(np.asarray(faces, dtype=index))
    rows, columns = np.concatenate([start, end]), np.concatenate([end, start])
    return sparse.csr_matrix((np.ones(rows.size, dtype=dtype), (rows, columns)), shape=(n_vertices, n_vertices))


def uniform_laplacian(faces: np.ndarray, n_vertices: int,
                      adjacency: sparse.csr_matrix | None = None) -> sparse.csr_matrix:
    """Row-normalised vertex adjacency: ``L @ v`` is the mean of each vertex's neighbours.

    Parameters
    ----------
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.
    n_vertices : int
        Number of vertices.
    adjacency : scipy.sparse.csr_matrix, optional
        :func:`vertex_adjacency` already built (its index arrays are shared, not copied).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n, n)``, each row's weights summing to 1 (0 for an isolated vertex).
    """
    graph = vertex_adjacency(faces, n_vertices, np.int8) if adjacency is None else adjacency
    degree = np.diff(graph.indptr)
    weights = 1.0 / np.repeat(np.maximum(degree, 1), degree)  # an edge seen twice counts once
    # the adjacency's index arrays are shared, not copied: only the weights are new
    return sparse.csr_matrix((weights, graph.indices, graph.indptr), shape=graph.shape, copy=False)


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop unreferenced vertices.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex coordinates.
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.

    Returns
    -------
    vertices : (k, 3) ndarray
        The referenced vertices, in their old order.
    faces : (m, 3) ndarray of int64
        The triangles renumbered.
    kept : (k,) ndarray of int
        Old index of each kept vertex.
    """
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    kept = np.flatnonzero(used)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[kept] = np.arange(kept.size)
    return vertices[kept], remap[faces], kept
