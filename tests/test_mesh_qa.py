"""Quality checks of the mesh stage on meshes whose defects are built in on purpose."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pymeshfix
import pytest
import trimesh
from scipy.spatial import cKDTree

from pipeline.geometry import Geometry, Mask
from pipeline.mesh import MeshOptions, mesh_mask
from pipeline.mesh import distance as distance_module
from pipeline.mesh.distance import SurfaceDistance
from pipeline.mesh.intersections import intersecting_faces, segments_cross_triangles, triangles_intersect
from pipeline.mesh.qa import measure
from pipeline.mesh.repair import remove_back_to_back_faces
from pipeline.mesh.smoothing import PARALLEL_VERTICES, taubin, windowed_sinc
from pipeline.mesh.surface import structure_array
from pipeline.mesh.thickness import MaskField
from pipeline.mesh.topology import measures, opposite_half_edges, topology, vertex_components


def test_closed_box_is_watertight_manifold_and_consistent():
    box = trimesh.creation.box(extents=(2.0, 3.0, 4.0))
    summary, _ = topology(box.vertices, box.faces)
    assert summary.watertight and summary.manifold and summary.winding_consistent
    measured = measures(box.vertices, box.faces)
    assert measured.volume == pytest.approx(24.0)
    assert measured.area == pytest.approx(2 * (6 + 8 + 12))


def test_open_flipped_and_pinched_meshes_are_caught():
    box = trimesh.creation.box()
    open_box, _ = topology(box.vertices, box.faces[1:])
    assert open_box.boundary_edges == 3 and not open_box.watertight
    flipped = box.faces.copy()
    flipped[0] = flipped[0, ::-1]
    wound, _ = topology(box.vertices, flipped)
    assert not wound.winding_consistent and not wound.watertight
    # two tetrahedra sharing one vertex: closed and edge-manifold, but pinched at that vertex
    first = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert first.is_watertight and first.volume > 0
    vertices = np.vstack([first.vertices, -first.vertices[1:]])  # point reflection through vertex 0
    second = np.where(first.faces == 0, 0, first.faces + 3)[:, ::-1]  # a reflection flips winding
    faces = np.vstack([first.faces, second])
    pinched, _ = topology(vertices, faces)
    assert pinched.watertight and pinched.nonmanifold_vertices == 1 and not pinched.manifold
    assert measures(vertices, faces).volume == pytest.approx(2 * first.volume)
    assert vertex_components(faces, len(vertices))[0] == 1


def test_self_intersections_found_as_meshfix_finds_them():
    first = trimesh.creation.icosphere(subdivisions=3, radius=5.0)
    second = first.copy()
    second.apply_translation([6.0, 0.5, 0.2])
    both = trimesh.util.concatenate([first, second])
    found = intersecting_faces(both.vertices, both.faces, np.arange(len(both.faces)))
    fixer = pymeshfix.PyTMesh()
    fixer.set_quiet(True)
    fixer.load_array(np.ascontiguousarray(both.vertices), np.ascontiguousarray(both.faces, dtype=np.int32))
    reference = fixer.select_intersecting_triangles()
    assert len(reference) > 0
    assert abs(len(found) - len(reference)) <= 0.1 * len(reference)
    # the crossing lies on the plane where the spheres meet: every flagged face is near it
    centres = both.triangles_center[found]
    assert np.all(np.abs(np.linalg.norm(centres, axis=1) - 5.0) < 0.5)
    assert len(intersecting_faces(first.vertices, first.faces, np.arange(len(first.faces)))) == 0
    assert edges_through_faces(both) > 0 and edges_through_faces(first) == 0


def test_surface_distance_matches_trimesh_proximity():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    points = np.random.default_rng(1).normal(size=(300, 3)) * 8.0
    ours = SurfaceDistance(sphere.vertices, sphere.faces)(points)
    _, reference, _ = trimesh.proximity.closest_point(sphere, points)
    np.testing.assert_allclose(ours, reference, atol=1e-9)


@pytest.mark.parametrize("outliers", [True, False])
def test_surface_distance_is_exact_on_a_mesh_of_mixed_triangle_sizes(outliers, monkeypatch):
    # A 40 mm box whose +z face stays two big triangles while the others are finely subdivided:
    # above the big face the nearest centroids are the small triangles' on the side walls.
    if not outliers:  # the big triangles stay in the bound: the widening and R-tree paths answer
        monkeypatch.setattr(distance_module, "MAX_OUTLIERS", 0)
    box = trimesh.creation.box(extents=(40.0, 40.0, 40.0))
    vertices, faces = box.vertices, box.faces
    for _ in range(5):
        top = trimesh.Trimesh(vertices, faces, process=False).face_normals[:, 2] > 0.9
        vertices, faces = trimesh.remesh.subdivide(vertices, faces, face_index=np.flatnonzero(~top))
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    rng = np.random.default_rng(4)
    points = np.column_stack([rng.uniform(-19, 19, 2000), rng.uniform(-19, 19, 2000), rng.uniform(20.5, 23, 2000)])
    distance = SurfaceDistance(mesh.vertices, mesh.faces)
    ours = distance(points)
    _, reference, _ = trimesh.proximity.closest_point(mesh, points)
    np.testing.assert_allclose(ours, reference, atol=1e-9)
    # the six nearest centroids alone are wrong here: the test can fail
    _, nearest = cKDTree(mesh.triangles_center).query(points, k=6)
    candidates_only = np.linalg.norm(
        trimesh.triangles.closest_point(mesh.triangles[nearest.ravel()], np.repeat(points, 6, axis=0))
        - np.repeat(points, 6, axis=0), axis=1).reshape(-1, 6).min(axis=1)
    assert np.mean(candidates_only > reference + 1e-6) > 0.5
    assert (distance.widened > 0) != outliers  # the certificate caught what the candidates missed


@pytest.mark.parametrize("method", ["taubin", "windowed_sinc"])
def test_smoothing_removes_noise_without_shrinking(method):
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    noisy = sphere.vertices + np.random.default_rng(2).normal(scale=0.3, size=sphere.vertices.shape)
    if method == "taubin":
        smoothed = taubin(noisy, sphere.faces, iterations=30, lamb=0.5, mu=1 / (2 - 0.1))
    else:
        smoothed = windowed_sinc(noisy, sphere.faces, iterations=30, passband=0.05)
    before = np.abs(np.linalg.norm(noisy, axis=1) - 10.0).mean()
    after = np.abs(np.linalg.norm(smoothed, axis=1) - 10.0).mean()
    assert after < 0.5 * before
    volume = measures(smoothed, sphere.faces).volume
    assert abs(volume - sphere.volume) / sphere.volume < 0.01  # plain Laplacian loses several %


def hollow_tube_mask(wall_mm: float, spacing: float = 0.5) -> Mask:
    """A straight pipe (outer radius 6 mm, given wall) along array axis 0, closed at both ends."""
    shape = (80, 40, 40)
    geometry = Geometry(shape, (spacing,) * 3, (0.0, 0.0, 0.0))
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    radius = np.hypot((j - 19.7) * spacing, (i - 20.2) * spacing)
    array = ((radius < 6.0) & (radius >= 6.0 - wall_mm) & (k > 5) & (k < 74)).astype(np.uint8)
    array[(k > 5) & (k <= 5 + round(2.0 / spacing)) & (radius < 6.0)] = 1  # 2 mm end plates
    array[(k < 74) & (k >= 74 - round(2.0 / spacing)) & (radius < 6.0)] = 1
    return Mask(array, geometry, {1: "pipe"})


def test_wall_thickness_of_a_pipe():
    mask = hollow_tube_mask(wall_mm=1.5)
    thin_printer, report = mesh_mask(mask, min_wall_mm=2.1)  # 1.5 mm + one voxel < 2.1 mm
    assert report.thin_regions and report.thin_area_fraction > 0.5 and not report.printable
    assert abs(report.min_wall_thickness_mm - 1.5) <= 0.5 + 1e-9
    centre = np.asarray(report.thin_regions[0].centre_lps_mm)
    assert np.all(centre >= thin_printer.mesh.bounds[0]) and np.all(centre <= thin_printer.mesh.bounds[1])
    assert any("thinner than the minimum wall" in warning for warning in report.warnings)
    _, relaxed = mesh_mask(mask, min_wall_mm=0.9)  # 1.5 mm - one voxel > 0.9 mm
    assert relaxed.thin_regions == [] and relaxed.thin_area_fraction == 0.0
    assert relaxed.watertight and relaxed.manifold and relaxed.self_intersecting_faces == 0


@pytest.mark.parametrize("wall_mm, target_faces, defect", [
    # decimated far past what the wall bears (fast-simplification 0.2 no longer folds a 1 mm wall
    # at 200 faces; a 0.6 mm one it still does). Which defect the fold leaves depends on the
    # library versions (in a fresh install of 2026-12-02 the folded faces lie back to back),
    # so either finding counts; what must hold is that one was found and the result is clean.
    (0.6, 200, ("self-intersecting", "back-to-back")),
    (0.6, 2000, ("non-manifold",)),  # a wall of about one voxel
])
def test_defects_from_decimation_are_found_and_repaired(wall_mm, target_faces, defect):
    model, report = mesh_mask(hollow_tube_mask(wall_mm=wall_mm), options=MeshOptions(target_faces=target_faces))
    assert report.repaired and any(kind in action for action in report.repair_actions for kind in defect)
    assert report.watertight and report.manifold and report.self_intersecting_faces == 0
    mesh = model.mesh
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert edges_through_faces(mesh) == 0


def edges_through_faces(mesh: trimesh.Trimesh) -> int:
    """Edges that pass through a face they do not touch, by trimesh's ray casting (small meshes).

    Independent of MeshFix, whose ``select_intersecting_triangles`` returned index triples that
    are not faces of such repaired meshes.
    """
    edges = mesh.edges_unique
    origin = mesh.vertices[edges[:, 0]]
    along = mesh.vertices[edges[:, 1]] - origin
    length = np.linalg.norm(along, axis=1)
    hits, ray, face = trimesh.ray.ray_triangle.RayMeshIntersector(mesh).intersects_location(
        origin, along / length[:, None], multiple_hits=True)
    distance = np.einsum("ij,ij->i", hits - origin[ray], along[ray] / length[ray][:, None])
    inside = (distance > 1e-6 * length[ray]) & (distance < (1 - 1e-6) * length[ray])
    touches = (mesh.faces[face][:, :, None] == edges[ray][:, None, :]).any(axis=(1, 2))
    return int(np.count_nonzero(inside & ~touches))


def test_close_pairs_matches_brute_force_with_mixed_sizes():
    """A few long triangles among many small ones must not widen everyone's search (skull meshes)."""
    from pipeline.mesh.intersections import close_pairs

    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 100, (2000, 3))
    radii = rng.lognormal(0, 1, 2000)
    found = {tuple(sorted(pair)) for pair in close_pairs(centres, radii).tolist()}
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    overlap = np.triu(distance <= radii[:, None] + radii[None], 1)
    assert found == {tuple(pair) for pair in np.argwhere(overlap).tolist()}


def test_opposite_half_edges_run_the_other_way_on_closed_and_open_meshes():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    for faces in (sphere.faces, sphere.faces[5:]):  # closed (the fast path), then with a hole
        start, end = faces.ravel(), faces[:, [1, 2, 0]].ravel()
        opposite, duplicate = opposite_half_edges(faces, len(sphere.vertices))
        found = opposite >= 0
        assert not duplicate.any()
        assert np.array_equal(start[opposite[found]], end[found]) and np.array_equal(end[opposite[found]], start[found])
        assert np.array_equal(opposite[opposite[found]], np.flatnonzero(found))
        directed = set(zip(start.tolist(), end.tolist()))
        assert int((~found).sum()) == sum((b, a) not in directed for a, b in directed)


def tetrahedron(a: int, b: int, c: int, d: int) -> list[list[int]]:
    return [[a, c, b], [a, b, d], [a, d, c], [b, c, d]]


def test_pinched_vertices_are_counted_once_however_many_fans_meet():
    # three tetrahedra meeting only at vertex 0 (three fans there), and a fourth meeting the
    # third only at vertex 9 (two fans there): two pinched vertices, every edge still manifold
    vertices = np.random.default_rng(4).normal(size=(13, 3))
    faces = np.array(tetrahedron(0, 1, 2, 3) + tetrahedron(0, 4, 5, 6) + tetrahedron(0, 7, 8, 9)
                     + tetrahedron(9, 10, 11, 12))
    summary, _ = topology(vertices, faces)
    assert summary.watertight and summary.nonmanifold_vertices == 2 and not summary.manifold
    single, _ = topology(vertices[:4], faces[:4])
    assert single.manifold and single.nonmanifold_vertices == 0


def test_two_thread_windowed_sinc_equals_the_one_thread_filter():
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=10.0)  # 40962 vertices
    assert len(sphere.vertices) >= PARALLEL_VERTICES
    noisy = sphere.vertices + np.random.default_rng(3).normal(scale=0.2, size=sphere.vertices.shape)
    alone = windowed_sinc(noisy, sphere.faces, iterations=20, passband=0.05)
    with ThreadPoolExecutor(1) as executor:
        shared = windowed_sinc(noisy, sphere.faces, iterations=20, passband=0.05, executor=executor)
    assert np.array_equal(alone, shared)


def test_quality_figures_are_the_same_with_a_second_thread():
    mask = hollow_tube_mask(wall_mm=1.5)
    model, _ = mesh_mask(mask)
    vertices, faces = np.asarray(model.mesh.vertices), np.asarray(model.mesh.faces)
    binary, box = structure_array(mask, None)
    field = MaskField(np.pad(binary.view(np.uint8), 1), [s.start - 1 for s in box], mask.geometry)
    raw = SurfaceDistance(vertices, faces)
    settings = dict(field=field, raw=raw, min_wall_mm=2.1, probe_mm=2.0, sample=500)
    alone = measure(vertices, faces, **settings)
    with ThreadPoolExecutor(1) as executor:
        shared = measure(vertices, faces, background=executor, **settings)
    assert alone.thin_regions and alone.thin_regions == shared.thin_regions
    for name in ("topology", "volume_mm3", "area_mm2", "shells", "self_intersecting_faces",
                 "min_wall_thickness_mm", "thin_area_fraction", "distance_to_raw"):
        assert getattr(alone, name) == getattr(shared, name), name


def test_back_to_back_faces_left_by_decimation_are_removed_and_nothing_else():
    # a triangular bipyramid: its equator a, b, c is a cycle of edges but not a face
    vertices = np.array([[1, 0, 0], [-0.5, 0.87, 0], [-0.5, -0.87, 0], [0, 0, 1], [0, 0, -1]], dtype=float)
    a, b, c, top, bottom = range(5)
    closed = np.array([[top, a, b], [top, b, c], [top, c, a], [bottom, b, a], [bottom, c, b], [bottom, a, c]])
    assert topology(vertices, closed)[0].manifold
    # the folds: one triangle both ways round on three existing edges (each then in four faces),
    # and a fin on one existing edge out to a fifth vertex
    with_fin = np.vstack([vertices, [[0.3, 0.3, 0.2]]])
    for points, folded, pairs_expected in ((vertices, np.vstack([closed, [[a, b, c], [a, c, b]]]), 1),
                                           (with_fin, np.vstack([closed, [[a, b, 5], [b, a, 5]]]), 1)):
        summary, _ = topology(points, folded)
        assert summary.duplicate_half_edges > 0 and not summary.watertight
        fixed_vertices, fixed_faces, pairs = remove_back_to_back_faces(points, folded)
        assert pairs == pairs_expected and topology(fixed_vertices, fixed_faces)[0].manifold
        assert np.array_equal(fixed_vertices, vertices)  # the fin's tip is dropped with it
        assert {tuple(face) for face in fixed_faces.tolist()} == {tuple(face) for face in closed.tolist()}
        assert measures(fixed_vertices, fixed_faces).volume == pytest.approx(measures(vertices, closed).volume)
    # the same triangle twice with the same winding is not a fold: left to MeshFix
    doubled = np.vstack([closed, [[a, b, c], [a, b, c]]])
    assert remove_back_to_back_faces(vertices, doubled)[2] == 0
    assert remove_back_to_back_faces(vertices, closed)[2] == 0


def test_plane_rejection_keeps_every_crossing_of_the_edge_tests():
    rng = np.random.default_rng(5)
    first = rng.normal(size=(20_000, 3, 3))
    second = first[:, :1] + rng.normal(scale=0.7, size=(20_000, 3, 3))  # near each other: many cross
    every_edge = np.zeros(len(first), dtype=bool)
    for one, other in ((first, second), (second, first)):
        for start, end in ((0, 1), (1, 2), (2, 0)):
            every_edge |= segments_cross_triangles(one[:, start], one[:, end], other[:, 0], other[:, 1], other[:, 2])
    assert 0.05 < every_edge.mean() < 0.95
    assert np.array_equal(triangles_intersect(first, second), every_edge)
