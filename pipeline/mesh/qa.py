"""Quality figures of a finished surface: topology, measures, walls, self-intersections, drift."""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from pipeline.mesh.distance import SurfaceDistance
from pipeline.mesh.intersections import intersecting_faces
from pipeline.mesh.report import ThinRegion
from pipeline.mesh.thickness import MaskField, march
from pipeline.mesh.topology import Topology, half_edges, measures, topology, vertex_components

#: Thin-wall patches listed in the report (the thinnest first).
MAX_THIN_REGIONS = 20
#: Meshes up to this many faces get the exact self-intersection test on every face.
EXHAUSTIVE_INTERSECTION_FACES = 50_000


@dataclass
class Quality:
    """Everything measured on one surface (lengths mm, volumes mm^3)."""

    topology: Topology
    volume_mm3: float
    area_mm2: float
    shells: int
    cavities: int
    bounds: tuple[np.ndarray, np.ndarray]
    self_intersecting_faces: int
    min_wall_thickness_mm: float | None
    thin_regions: list[ThinRegion]
    thin_area_fraction: float
    distance_to_raw: tuple[float, float, float]


def measure(vertices: np.ndarray, faces: np.ndarray, *, field: MaskField, raw: SurfaceDistance,
            min_wall_mm: float | None, probe_mm: float, sample: int,
            background: Executor | None = None,
            known_topology: tuple[Topology, np.ndarray] | None = None) -> Quality:
    """Measure a closed LPS surface against its mask (``field``) and its raw surface (``raw``).

    ``background``, if given, marches the wall and gap rays and measures the drift from the raw
    surface on another thread while this one checks the topology (both spend most of their time
    in NumPy and SciPy code that releases the GIL).

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex coordinates, LPS mm.
    faces : (m, 3) ndarray of int
        Triangles as vertex indices.
    field : MaskField
        The padded mask crop the surface was made from (walls and gaps are marched in it).
    raw : SurfaceDistance
        Distances to the raw marching-cubes surface (the drift figures).
    min_wall_mm : float or None
        The printer's minimum wall, mm: thinner patches are listed; None lists none.
    probe_mm : float
        Longest wall measured along the inward normals, mm (at least 1.5 x ``min_wall_mm``).
    sample : int
        Vertices sampled for the drift figures.
    background : Executor, optional
        Runs the ray marching and the drift while this thread checks the topology.
    known_topology : (Topology, ndarray), optional
        :func:`~pipeline.mesh.topology.topology` of this very mesh, if already computed.

    Returns
    -------
    Quality
        Topology, volume (mm^3), area (mm^2), shells, cavities, bounds (mm),
        self-intersecting faces, wall figures (mm) and drift (mean, p95, max, mm).
    """
    measured = measures(vertices, faces)
    normals = measured.vertex_normals
    spacing = np.asarray(field.geometry.spacing)
    step_mm = 0.5 * float(spacing.min())
    if min_wall_mm is not None:
        probe_mm = max(probe_mm, 1.5 * min_wall_mm)
    band_mm = 2.0 * float(spacing.max())
    walls = _run(background, _walls_and_gaps, field, vertices, normals, probe_mm, band_mm, step_mm)
    drift = _run(background, _distance_statistics, vertices, raw, sample)
    shape, opposite = topology(vertices, faces) if known_topology is None else known_topology
    count, piece_of_vertex = vertex_components(faces, len(vertices))
    piece_volume = np.bincount(piece_of_vertex[faces[:, 0]], weights=measured.face_volumes, minlength=count)
    face_areas = measured.face_areas
    thickness, gap = walls.result()
    if len(faces) <= EXHAUSTIVE_INTERSECTION_FACES:
        candidates = np.arange(len(faces))
    else:
        candidates = _intersection_candidates(faces, opposite, measured.face_cross, measured.face_areas,
                                              ~((thickness >= band_mm) & (gap >= band_mm)))  # nan: no reading
    crossing = intersecting_faces(vertices, faces, candidates)
    thin_regions, thin_fraction = [], 0.0
    if min_wall_mm is not None:
        vertex_area = np.zeros(len(vertices))
        for corner in range(3):
            vertex_area += np.bincount(faces[:, corner], weights=face_areas / 3.0, minlength=len(vertices))
        thin = thickness < min_wall_mm
        thin_regions = _thin_regions(vertices, faces, thin, thickness)
        thin_fraction = float(vertex_area[thin].sum() / max(vertex_area.sum(), 1e-300))
    finite = thickness[np.isfinite(thickness)]
    return Quality(
        topology=shape,
        volume_mm3=measured.volume,
        area_mm2=measured.area,
        shells=int(np.count_nonzero(piece_volume > 0)),
        cavities=int(np.count_nonzero(piece_volume < 0)),
        bounds=(vertices.min(axis=0), vertices.max(axis=0)),
        self_intersecting_faces=int(crossing.size),
        min_wall_thickness_mm=float(finite.min()) if finite.size else None,
        thin_regions=thin_regions,
        thin_area_fraction=thin_fraction,
        distance_to_raw=drift.result(),
    )


def _run(executor: Executor | None, function, *args) -> Future:
    """``function(*args)`` on ``executor``, or here and now when there is none."""
    if executor is not None:
        return executor.submit(function, *args)
    done: Future = Future()
    done.set_result(function(*args))
    return done


def _walls_and_gaps(field: MaskField, vertices: np.ndarray, normals: np.ndarray, probe_mm: float,
                    band_mm: float, step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Wall thickness along the inward normals and gap width along the outward ones, mm."""
    thickness = march(field, vertices, -normals, length_mm=probe_mm, step_mm=step_mm, inside=True)
    gap = march(field, vertices, normals, length_mm=band_mm, step_mm=step_mm, inside=False)
    return thickness, gap


def _intersection_candidates(faces: np.ndarray, opposite: np.ndarray, face_cross: tuple[np.ndarray, ...],
                             face_areas: np.ndarray, near_vertex: np.ndarray) -> np.ndarray:
    """Faces that could cross another: near another part of the surface, or folded.

    Away from thin walls and narrow gaps (``near_vertex``) a dense surface that stays close to
    the embedded marching-cubes surface cannot pass through itself, except where a triangle
    folded over its neighbour (normals more than 120 degrees apart). (Coarse meshes, whose long
    triangles could reach across, are tested exhaustively instead.)
    """
    paired = np.flatnonzero(opposite > np.arange(opposite.size))  # each pair once
    this_face = paired // 3
    other_face = opposite[paired] // 3
    # cos(angle) < -1/2 with unnormalised normals |cross| = 2 area
    dot = sum(part[this_face] * part[other_face] for part in face_cross)
    folded = dot < -2.0 * face_areas[this_face] * face_areas[other_face]
    near_vertex = near_vertex.copy()
    near_vertex[faces[this_face[folded]].ravel()] = True
    near_vertex[faces[other_face[folded]].ravel()] = True
    # grow by one ring so both sides of a crossing are included
    start, end = half_edges(faces)
    grown = near_vertex.copy()
    grown[end[near_vertex[start]]] = True
    return np.flatnonzero(grown[faces].any(axis=1))


def _thin_regions(vertices: np.ndarray, faces: np.ndarray, thin: np.ndarray,
                  thickness: np.ndarray) -> list[ThinRegion]:
    if not thin.any():
        return []
    start, end = half_edges(faces)
    both = thin[start] & thin[end]
    graph = sparse.coo_matrix((np.ones(both.sum(), dtype=np.int8), (start[both], end[both])),
                              shape=(len(vertices), len(vertices)))
    _, labels = connected_components(graph, directed=False)
    regions = []
    for label in np.unique(labels[thin]):
        members = np.flatnonzero(thin & (labels == label))
        regions.append(ThinRegion(
            centre_lps_mm=[round(float(v), 2) for v in vertices[members].mean(axis=0)],
            min_thickness_mm=round(float(thickness[members].min()), 3), vertices=int(members.size)))
    regions.sort(key=lambda region: region.min_thickness_mm)
    return regions[:MAX_THIN_REGIONS]


def _distance_statistics(vertices: np.ndarray, raw: SurfaceDistance, sample: int) -> tuple[float, float, float]:
    """Mean, 95th percentile and maximum distance (mm) of (sampled) vertices to the raw surface."""
    if len(vertices) > sample:
        chosen = np.random.default_rng(0).choice(len(vertices), size=sample, replace=False)
        vertices = vertices[chosen]
    distance = raw(vertices)
    return float(distance.mean()), float(np.percentile(distance, 95)), float(distance.max())
