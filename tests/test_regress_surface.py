"""The regression suite's measuring tools against independent truth (trimesh, analytic shapes)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from pipeline.errors import SegmentationError
from pipeline.geometry import Geometry, Volume
from pipeline.regress.seeds import bone_seed
from pipeline.regress.surface import (
    crop_z,
    decimate_mesh,
    distance_to_surface,
    mesh_metrics,
    read_golden_mesh,
    rigid_icp,
    sample_surface,
    write_golden_mesh,
)


@pytest.fixture(scope="module")
def ellipsoid() -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    mesh.apply_scale([30.0, 20.0, 12.0])
    return mesh


def test_distance_to_surface_agrees_with_trimesh_on_fine_and_coarse_meshes(ellipsoid):
    rng = np.random.default_rng(0)
    points = rng.uniform(-35, 35, size=(400, 3)) * [1.0, 0.8, 0.5]
    coarse = decimate_mesh(ellipsoid, 200)  # long triangles: the case a candidate search must not miss
    far_box = trimesh.creation.box(extents=[60.0, 4.0, 4.0])  # a few very long triangles beside fine ones
    far_box.apply_translation([0.0, 30.0, 0.0])
    for mesh in (ellipsoid, coarse, trimesh.util.concatenate([ellipsoid, far_box])):
        _, expected, _ = trimesh.proximity.closest_point(mesh, points)
        np.testing.assert_allclose(distance_to_surface(points, mesh), expected, atol=1e-9)


def test_rigid_icp_recovers_a_known_small_motion(ellipsoid):
    # An ellipsoid with a bump, so that no rotation maps it onto itself.
    bump = trimesh.creation.icosphere(subdivisions=3, radius=8.0)
    bump.apply_translation([28.0, 5.0, 4.0])
    target = trimesh.util.concatenate([ellipsoid, bump])
    fixed, normals = sample_surface(target, 30000, seed=0)
    motion = trimesh.transformations.rotation_matrix(np.radians(2.0), [0.3, 0.5, 0.8])
    motion[:3, 3] = [1.5, -0.8, 0.6]
    moved = target.copy()
    moved.apply_transform(motion)
    moving, _ = sample_surface(moved, 20000, seed=1)
    transform, summary = rigid_icp(moving, fixed, normals)
    np.testing.assert_allclose(transform @ motion, np.eye(4), atol=2e-3)
    assert summary["rotation_deg"] == pytest.approx(2.0, abs=0.05)


def test_crop_z_cuts_and_caps_to_the_analytic_volume():
    box = trimesh.creation.box(extents=[20.0, 10.0, 40.0])  # z from -20 to 20
    cut = crop_z(box, -5.0, 12.5)
    assert cut.is_watertight
    assert cut.volume == pytest.approx(20 * 10 * 17.5, rel=1e-6)
    assert cut.bounds[:, 2] == pytest.approx([-5.0, 12.5])


def test_golden_mesh_round_trip_and_metrics(tmp_path, ellipsoid):
    path = write_golden_mesh(ellipsoid, tmp_path / "e.ply.gz")
    back = read_golden_mesh(path)
    np.testing.assert_allclose(back.vertices, ellipsoid.vertices, atol=1e-5)
    metrics = mesh_metrics(back)
    # The volume of an inscribed polyhedron approaches 4/3 pi abc from below.
    assert metrics["volume_ml"] * 1000 == pytest.approx(4 / 3 * np.pi * 30 * 20 * 12, rel=2e-3)
    assert metrics["shells"] == 1 and metrics["watertight"]
    assert metrics["bbox_max_lps_mm"] == pytest.approx([30, 20, 12], abs=1e-6)


def test_bone_seed_prefers_the_brightest_large_structure_over_a_bigger_dim_one():
    hu = np.full((30, 40, 40), -1000, np.int16)
    hu[2:28, 2:20, 2:38] = 300     # a big head holder of plastic, just above 200 HU
    hu[8:20, 25:36, 10:30] = 1200  # a smaller but brighter "bone"
    hu[11:14, 29:32, 19:22] = 1500  # its brightest spot, centred on (12, 30, 20)
    hu[5, 38, 38] = 3000           # a tiny speck of metal: not large, never chosen
    volume = Volume(hu, Geometry(hu.shape, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    index, how = bone_seed(volume, 200)
    assert index == (12, 30, 20)
    assert [c["chosen"] for c in how["candidates"]] == [False, True]
    assert how["seed_lps_mm"] == pytest.approx([24.0, 30.0, 20.0])  # identity direction: k runs along x


def test_bone_seed_refuses_a_volume_without_bone():
    hu = np.zeros((4, 4, 4), np.int16)
    with pytest.raises(SegmentationError, match="bone threshold"):
        bone_seed(Volume(hu, Geometry(hu.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))), 200)


def test_consistency_registers_a_moved_copy_and_compares_over_the_common_tilted_region():
    from pipeline.regress.consistency import compare_acquisitions

    skull = trimesh.creation.icosphere(subdivisions=6, radius=1.0)
    skull.apply_scale([60.0, 70.0, 80.0])
    moved = skull.copy()  # the same object scanned again, slightly repositioned
    motion = trimesh.transformations.rotation_matrix(np.radians(0.8), [1.0, 0.2, 0.0])
    motion[:3, 3] = [0.8, -1.2, 0.5]
    moved.apply_transform(motion)
    untilted = Geometry((61, 200, 200), (1.0, 1.0, 1.0), (-100.0, -100.0, -30.0),
                        ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)))
    tilt = np.radians(18.5)  # slices perpendicular to a tilted axis, as the loader leaves them
    k_axis, j_axis = np.array([0.0, np.sin(tilt), np.cos(tilt)]), np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    tilted = Geometry((40, 240, 200), (2.4, 1.0, 1.0), tuple(-45.0 * k_axis - 120.0 * j_axis + [-100.0, 0, 0]),
                      tuple(zip(k_axis, j_axis, (1.0, 0.0, 0.0))))
    result = compare_acquisitions(skull, untilted, moved, tilted)
    assert result["icp"]["rotation_deg"] == pytest.approx(0.8, abs=0.05)
    assert result["distance"]["mean_mm"] < 0.05 < result["distance_before_registration"]["mean_mm"]
    assert result["volume_difference"] == pytest.approx(0.0, abs=0.002)
    # The common region is the untilted slab z in [-30, 30] inset by a slice + 1 mm.
    assert result["common_z_lps_mm"] == pytest.approx([-28.0, 28.0], abs=0.05)
    assert result["ok"]


def test_only_pulls_in_the_references_a_tilted_case_is_compared_with():
    from pipeline.regress.run import CONSISTENCY_CASES, REFERENCE_CASE, cases_with_references

    names = [case.name for case in cases_with_references("skull_tilt_minus18")]
    assert set(names) == {"skull_tilt_minus18", REFERENCE_CASE, CONSISTENCY_CASES["skull_tilt_minus18"][1]}
    assert [case.name for case in cases_with_references("synthetic_aorta")] == ["synthetic_aorta"]
    assert len(cases_with_references(None)) == len(cases_with_references(""))


def test_a_failed_consistency_check_says_which_bound_it_broke():
    from pipeline.regress.run import RegressResult

    result = RegressResult("0", "now", "p", "g", False)
    result.consistency["skull_tilt_plus16"] = {
        "checked": True, "ok": False, "distance": {"mean_mm": 0.4}, "volume_difference": -0.0442,
        "bounds": {"mean_distance_mm": 1.0, "volume_difference": 0.03}}
    (line,) = result.failures
    assert "volume -4.42% outside ±3%" in line and "mean distance 0.400 mm within 1.0 mm" in line
