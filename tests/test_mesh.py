"""Mesh stage against analytic truth: shapes of known volume and surface, placement, edge cases.

Every mask is built here from a signed distance function (negative inside) evaluated at the
voxel centres through the grid's own ``index_to_lps``; the true surface is that function's zero
set, so distances and volumes are checked against formulas, not against the code under test.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pymeshfix
import pytest
import trimesh
from scipy.spatial import cKDTree

from pipeline.errors import MeshError
from pipeline.geometry import Geometry, Mask
from pipeline.mesh import MeshOptions, mesh_mask


# -- analytic shapes (LPS mm; sdf < 0 inside) ---------------------------------------------------
def sphere_sdf(radius):
    return lambda p: np.linalg.norm(p, axis=-1) - radius


def torus_sdf(major, minor):
    def sdf(p):
        return np.hypot(np.hypot(p[..., 0], p[..., 1]) - major, p[..., 2]) - minor
    return sdf


def tube_sdf(radius, length, frame=None):
    """Closed cylinder along ``frame``'s third column (LPS z by default), flat ends at +-length/2."""
    frame = np.eye(3) if frame is None else frame

    def sdf(p):
        p = p @ frame
        q = np.stack([np.hypot(p[..., 0], p[..., 1]) - radius, np.abs(p[..., 2]) - length / 2], axis=-1)
        return np.minimum(q.max(axis=-1), 0.0) + np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    return sdf


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


SHAPES = {
    # name: (sdf, exact volume mm3, half extent mm)
    "sphere": (sphere_sdf(12.0), 4.0 / 3.0 * np.pi * 12.0**3, 12.0),
    "torus": (torus_sdf(20.0, 7.0), 2.0 * np.pi**2 * 20.0 * 7.0**2, 27.0),
    # oblique to the grid like a vessel (an axis-aligned circle's voxel count is off by up to ~1 %)
    "tube": (tube_sdf(6.0, 40.0, rotation((1.0, 2.0, 0.0), 23.0)), np.pi * 6.0**2 * 40.0, 22.0),
}


def voxelise(sdf, half_extent, spacing, direction=None, centre=(0.3, -0.2, 0.0), margin=3.0):
    """Mask of ``sdf < 0`` at the voxel centres of a grid centred on ``centre`` (LPS mm).

    """
    spacing = np.broadcast_to(np.asarray(spacing, float), (3,))
    shape = 2 * np.ceil((half_extent + margin) / spacing).astype(int)
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    origin = np.asarray(centre) - direction @ ((shape - 1) / 2 * spacing)
    geometry = Geometry(tuple(shape), tuple(spacing), tuple(origin), tuple(map(tuple, direction)))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return Mask((sdf(geometry.index_to_lps(index)) < 0).astype(np.uint8), geometry, {1: "shape"})


def staircase_distance(mask: Mask, points_lps: np.ndarray) -> np.ndarray:
    """Upper bound of each point's distance, in voxels, to the mask boundary.

    The boundary is the set of voxel faces between a labelled voxel and an unlabelled one (or the
    grid's outside), taken in index space; each face is sampled on a 5 x 5 grid, so the true
    distance is at most the returned one.
    """
    padded = np.pad(mask.array > 0, 1)
    samples = []
    offsets = np.linspace(-0.5, 0.5, 5)
    du, dv = np.meshgrid(offsets, offsets, indexing="ij")
    for axis in range(3):
        low = np.take(padded, np.arange(padded.shape[axis] - 1), axis=axis)
        high = np.take(padded, np.arange(1, padded.shape[axis]), axis=axis)
        faces = np.argwhere(low != high).astype(float) - 1.0  # index of the lower voxel, unpadded
        faces[:, axis] += 0.5
        others = [a for a in range(3) if a != axis]
        grid = np.zeros((du.size, 3))
        grid[:, others[0]], grid[:, others[1]] = du.ravel(), dv.ravel()
        samples.append((faces[:, None, :] + grid[None]).reshape(-1, 3))
    tree = cKDTree(np.concatenate(samples))
    distance, _ = tree.query(mask.geometry.lps_to_index(points_lps))
    return distance


def independent_checks(mesh: trimesh.Trimesh) -> None:
    """Closedness, orientation and self-intersection by trimesh and MeshFix, not by our code."""
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    fixer = pymeshfix.PyTMesh()
    fixer.set_quiet(True)
    fixer.load_array(np.ascontiguousarray(mesh.vertices, dtype=np.float64),
                     np.ascontiguousarray(mesh.faces, dtype=np.int32))
    assert len(fixer.select_intersecting_triangles()) == 0


@pytest.fixture(scope="module")
def meshed_shapes():
    """Every analytic shape at 1 mm and 0.5 mm, meshed with the default options."""
    results = {}
    for name, (sdf, volume, half_extent) in SHAPES.items():
        for spacing in (1.0, 0.5):
            mask = voxelise(sdf, half_extent, spacing)
            results[name, spacing] = (mask, *mesh_mask(mask))
    return results


@pytest.mark.parametrize("spacing", [1.0, 0.5])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_analytic_shape_volume_and_surface(meshed_shapes, name, spacing):
    sdf, exact_volume, _ = SHAPES[name]
    mask, model, report = meshed_shapes[name, spacing]
    mesh = model.mesh
    assert abs(mesh.volume - exact_volume) / exact_volume < 0.01
    distance = np.abs(sdf(mesh.vertices))
    assert distance.mean() <= 0.25 * spacing
    assert report.watertight and report.manifold and report.winding_consistent and report.outward_normals
    assert report.shells == 1 and report.self_intersecting_faces == 0 and not report.repaired
    independent_checks(mesh)
    # the report's figures are the mesh's
    assert report.volume_mm3 == pytest.approx(mesh.volume, rel=1e-9)
    assert report.area_mm2 == pytest.approx(mesh.area, rel=1e-9)
    assert report.faces_final == len(mesh.faces)
    assert report.mask_volume_mm3 == pytest.approx(mask.voxel_count() * spacing**3)
    np.testing.assert_allclose(report.bounding_box_min_lps_mm, mesh.bounds[0])
    assert abs(report.smoothing_volume_change_percent) < 1.0
    assert report.distance_to_raw_p95_mm < spacing
    assert not report.touches_volume_edge


def test_torus_genus_is_kept(meshed_shapes):
    mesh = meshed_shapes["torus", 1.0][1].mesh
    assert mesh.euler_number == 0  # a torus: V - E + F = 0


@pytest.mark.parametrize("backend", ["vtk", "skimage"])
def test_surface_backends_agree(backend):
    sdf, exact_volume, half_extent = SHAPES["sphere"]
    mask = voxelise(sdf, half_extent, 1.0)
    model, report = mesh_mask(mask, options=MeshOptions(surface=backend))
    assert abs(model.mesh.volume - exact_volume) / exact_volume < 0.01
    assert np.abs(sdf(model.mesh.vertices)).mean() <= 0.25
    assert report.faces_raw == mesh_mask(mask, options=MeshOptions(surface="skimage"))[1].faces_raw
    independent_checks(model.mesh)
    # the record names the implementation that ran and the version of its library, not "auto"
    library = {"vtk": "vtk", "skimage": "scikit-image"}[backend]
    assert report.algorithms["surface"].startswith({"vtk": "vtkFlyingEdges3D", "skimage": "skimage."}[backend])
    assert report.libraries[library] == metadata.version(library)
    assert ({"vtk", "scikit-image"} - {library}).isdisjoint(report.libraries)


@pytest.mark.parametrize("smoothing", ["taubin", "none"])
def test_other_smoothing_methods_stay_closed_and_placed(smoothing):
    sdf, exact_volume, half_extent = SHAPES["torus"]
    mask = voxelise(sdf, half_extent, 1.0)
    passband = 0.1 if smoothing == "taubin" else 0.01
    model, report = mesh_mask(mask, options=MeshOptions(smoothing=smoothing, smoothing_passband=passband))
    assert abs(model.mesh.volume - exact_volume) / exact_volume < 0.01
    assert report.watertight and report.manifold
    assert staircase_distance(mask, model.mesh.vertices).max() <= 1.0


# -- placement in patient space -----------------------------------------------------------------
OBLIQUE = {
    "axial": (np.eye(3), (1.0, 1.0, 1.0)),
    "oblique-anisotropic": (rotation((1.0, 2.0, 3.0), 37.0), (1.2, 0.7, 0.9)),
    "oblique-left-handed": (rotation((-2.0, 1.0, 0.5), 61.0) @ np.diag([1.0, -1.0, 1.0]), (0.8, 1.1, 0.6)),
}


@pytest.mark.parametrize("orientation", sorted(OBLIQUE))
def test_vertices_lie_within_one_voxel_of_the_mask_boundary(orientation):
    direction, spacing = OBLIQUE[orientation]
    sdf, _, half_extent = SHAPES["torus"]
    centre = np.array([-31.0, 12.5, 140.0])

    def shifted(p):
        return sdf(p - centre)

    mask = voxelise(shifted, half_extent, spacing, direction=direction, centre=centre)
    model, report = mesh_mask(mask)
    vertices = model.mesh.vertices
    assert staircase_distance(mask, vertices).max() <= 1.0
    # in the right place and the right way out: near the analytic surface, normals along its gradient
    assert np.abs(shifted(vertices)).mean() <= 0.25 * max(spacing)
    step = 1e-3
    gradient = np.stack([(shifted(vertices + step * e) - shifted(vertices - step * e)) / (2 * step)
                         for e in np.eye(3)], axis=1)
    agreement = np.einsum("ij,ij->i", model.mesh.vertex_normals, gradient / np.linalg.norm(gradient, axis=1)[:, None])
    assert np.median(agreement) > 0.95
    assert model.mesh.volume > 0 and report.outward_normals
    independent_checks(model.mesh)


# -- edge cases ---------------------------------------------------------------------------------
def test_empty_mask_is_refused():
    geometry = Geometry((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(MeshError, match="empty"):
        mesh_mask(Mask(np.zeros(geometry.shape, np.uint8), geometry))


def test_missing_label_is_refused():
    geometry = Geometry((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    array = np.zeros(geometry.shape, np.uint8)
    array[3:6, 3:6, 3:6] = 1
    with pytest.raises(MeshError, match="label 2"):
        mesh_mask(Mask(array, geometry, {1: "aorta"}), label=2)


def test_one_voxel_mask_gives_a_clear_result():
    geometry = Geometry((9, 9, 9), (0.5, 0.5, 0.5), (10.0, 20.0, 30.0))
    array = np.zeros(geometry.shape, np.uint8)
    array[4, 4, 4] = 1
    mask = Mask(array, geometry, {1: "speck"})
    with pytest.raises(MeshError, match="minimum piece volume"):
        mesh_mask(mask)  # 0.125 mm3 is below the default 10 mm3: said so, not an empty file
    model, report = mesh_mask(mask, options=MeshOptions(min_shell_volume_mm3=0.0))
    independent_checks(model.mesh)
    assert report.watertight and report.manifold
    assert any("only 1 voxel" in warning for warning in report.warnings)
    centre = geometry.index_to_lps([4, 4, 4])
    assert np.linalg.norm(model.mesh.vertices - centre, axis=1).max() <= 0.5 * np.sqrt(3) * 0.5 + 0.25
    assert model.mesh.volume == pytest.approx(0.125, rel=0.05)  # the voxel's volume, restored


@pytest.mark.parametrize("axis", [0, 2])
def test_mask_cut_by_the_volume_edge_is_capped_flat_at_the_edge(axis):
    """A tube running out of both ends of the grid closes with flat caps on the grid's faces."""
    spacing = (0.8, 0.6, 0.7)
    shape = [40, 40, 40]
    geometry = Geometry(tuple(shape), spacing, (5.0, -3.0, 12.0))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    across = [a for a in range(3) if a != axis]
    radius_mm = 7.0
    offset_mm = (index[..., across] - 19.3) * np.asarray(spacing)[across]
    array = (np.linalg.norm(offset_mm, axis=-1) < radius_mm).astype(np.uint8)
    mask = Mask(array, geometry, {1: "vessel"})
    model, report = mesh_mask(mask)
    assert len(report.touches_volume_edge) == 2
    assert any("edge of the scanned volume" in warning for warning in report.warnings)
    independent_checks(model.mesh)
    index_of_vertices = geometry.lps_to_index(model.mesh.vertices)
    np.testing.assert_allclose(index_of_vertices[:, axis].min(), -0.5, atol=1e-6)
    np.testing.assert_allclose(index_of_vertices[:, axis].max(), shape[axis] - 0.5, atol=1e-6)
    # the capped solid spans the whole grid length: its volume is the voxels' within 1 %
    exact = np.pi * radius_mm**2 * shape[axis] * spacing[axis]
    assert abs(model.mesh.volume - exact) / exact < 0.01
    assert staircase_distance(mask, model.mesh.vertices).max() <= 1.0


def test_labels_select_structures_and_none_means_all():
    geometry = Geometry((40, 40, 60), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    centres = geometry.index_to_lps(np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape],
                                                         indexing="ij"), axis=-1))
    array = np.zeros(geometry.shape, np.uint8)
    array[np.linalg.norm(centres - [20.3, 19.6, 15.2], axis=-1) < 9.2] = 1
    array[np.linalg.norm(centres - [19.8, 20.1, 44.3], axis=-1) < 7.3] = 2
    mask = Mask(array, geometry, {1: "left", 2: "right"})
    one, report_one = mesh_mask(mask, label=2)
    both, report_both = mesh_mask(mask)
    assert report_one.structure == "right" and report_both.structure == "left+right"
    assert report_one.shells == 1 and report_both.shells == 2
    assert one.mesh.volume == pytest.approx(mask.voxel_count(2), rel=0.005)
    assert both.mesh.volume == pytest.approx(mask.voxel_count(), rel=0.005)
    assert abs(one.mesh.volume - 4 / 3 * np.pi * 7.3**3) / (4 / 3 * np.pi * 7.3**3) < 0.01


def test_small_pieces_and_cavities_are_removed_above_the_threshold():
    geometry = Geometry((50, 50, 50), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    array = np.zeros(geometry.shape, np.uint8)
    array[5:40, 5:40, 5:40] = 1
    array[20:22, 20:22, 20:22] = 0  # an 8 mm3 cavity
    array[44:46, 44:46, 44:46] = 1  # an 8 mm3 speck
    model, report = mesh_mask(Mask(array, geometry), options=MeshOptions(min_shell_volume_mm3=10.0))
    assert report.shells_removed == 2 and report.shells == 1 and report.cavities == 0
    _, kept_report = mesh_mask(Mask(array, geometry), options=MeshOptions(min_shell_volume_mm3=1.0))
    assert kept_report.shells == 2 and kept_report.cavities == 1
    independent_checks(model.mesh)


def test_face_budget_is_met_and_error_bound_respected():
    sdf, exact_volume, half_extent = SHAPES["torus"]
    mask = voxelise(sdf, half_extent, 0.5)
    model, report = mesh_mask(mask, options=MeshOptions(target_faces=8000))
    assert report.faces_raw > 8000 and report.faces_final <= 8000
    assert abs(model.mesh.volume - exact_volume) / exact_volume < 0.01
    independent_checks(model.mesh)
    _, bounded_report = mesh_mask(mask, options=MeshOptions(target_faces=2000, max_decimation_error_mm=0.05))
    assert bounded_report.faces_final > 2000  # backed off to honour the 0.05 mm bound
    assert bounded_report.distance_to_raw_p95_mm < report.distance_to_raw_p95_mm + 0.05


def test_model_provenance_and_report_serialise():
    sdf, _, half_extent = SHAPES["sphere"]
    mask = voxelise(sdf, half_extent, 1.0)
    model, report = mesh_mask(mask, min_wall_mm=1.0)
    data = report.to_dict()
    assert data["structure"] == "shape" and data["watertight"] is True
    assert set(data["timings_s"]) >= {"marching_cubes", "smoothing", "quality", "total"}
    assert model.provenance["grid"] == mask.geometry.to_dict()
    assert report.min_wall_thickness_mm is None  # a 24 mm ball has no wall under the probe
    assert report.thin_regions == [] and report.printable
    decimated = mesh_mask(mask, options=MeshOptions(target_faces=report.faces_raw // 4))[1]
    assert "fast-simplification" in decimated.libraries and "decimation" in decimated.algorithms
    assert "fast-simplification" not in report.libraries or report.faces_final < report.faces_raw
    assert set(decimated.algorithms) >= {"surface", "shells", "smoothing", "volume_correction", "decimation"}
