"""The prepare stage on shapes whose best orientation and support volume are known analytically."""

from __future__ import annotations

import itertools
import json
import zipfile

import numpy as np
import pytest
import trimesh

from pipeline.errors import ConfigError, PrintPlanError
from pipeline.model import Model
from pipeline.prepare import (PlanAlternative, oriented_mesh, plan_print, plan_support_faces, read_plan,
                              write_print_files)
from pipeline.prepare.arrays import MeshArrays
from pipeline.prepare.evaluate import Context, evaluate_pose, usable_volume
from pipeline.prepare.plan import _split_suggestion
from pipeline.prepare.search import convex_hull
from pipeline.printers import load_printer

TUBE_LENGTH, TUBE_OUTER, TUBE_INNER = 60.0, 10.0, 8.0


def make_hemisphere(radius: float = 20.0) -> trimesh.Trimesh:
    """Lower half of a sphere: flat face on top (outward normal +z), dome below."""
    sphere = trimesh.creation.icosphere(5, radius=radius)
    lower = trimesh.creation.box([3 * radius] * 2 + [1.5 * radius]).apply_translation([0, 0, -0.75 * radius])
    return sphere.intersection(lower)


def make_l_bracket() -> trimesh.Trimesh:
    """An L profile (legs 60 x 10 and 10 x 40 mm) extruded 30 mm along z."""
    long_leg = trimesh.creation.box([60, 10, 30]).apply_translation([30, 5, 15])
    short_leg = trimesh.creation.box([10, 40, 30]).apply_translation([5, 20, 15])
    return long_leg.union(short_leg)


def make_tube(outer: float = TUBE_OUTER, inner: float = TUBE_INNER, length: float = TUBE_LENGTH,
              sections: int = 128) -> trimesh.Trimesh:
    """An open tube along z."""
    solid = trimesh.creation.cylinder(radius=outer, height=length, sections=sections)
    bore = trimesh.creation.cylinder(radius=inner, height=length + 2, sections=sections)
    return solid.difference(bore)


def make_pocket_block() -> trimesh.Trimesh:
    """A 30 x 30 x 20 mm block with a 20 x 20 x 15 mm pocket open at +z (a cup)."""
    block = trimesh.creation.box([30, 30, 20]).apply_translation([0, 0, 10])
    pocket = trimesh.creation.box([20, 20, 16]).apply_translation([0, 0, 5 + 8])
    return block.difference(pocket)


@pytest.fixture(scope="session")
def hemisphere():
    return make_hemisphere()


@pytest.fixture(scope="session")
def tube():
    return make_tube()


def _pose(mesh: trimesh.Trimesh, printer: str, down, cell_mm: float, with_cups: bool = False):
    arrays = MeshArrays.from_arrays(mesh.vertices, mesh.faces)
    ctx = Context(profile=load_printer(printer), scale_mm=float(np.sqrt(arrays.areas.sum() / (4 * np.pi))))
    return evaluate_pose(arrays, convex_hull(arrays).points, np.asarray(down, float), ctx, cell_mm, with_cups)


# --- known best orientations --------------------------------------------------------------
@pytest.mark.parametrize("printer", ["formlabs_form3b", "prusa_mk4"])
def test_hemisphere_rests_on_its_flat_face(hemisphere, printer):
    plan, _ = plan_print(Model(hemisphere), printer)
    assert np.dot(plan.down_direction_lps, [0, 0, 1]) > 0.999
    assert plan.overhang_area_mm2 == 0
    assert plan.support_volume_mm3 == 0
    assert plan.height_mm == pytest.approx(20.0, abs=0.01)


def test_l_bracket_stands_on_its_profile():
    plan, _ = plan_print(Model(make_l_bracket()), "prusa_mk4")
    # Every pose resting on a flat face needs no support; standing on the L profile is the
    # lowest of them (30 mm against 40 and 60), so the fastest.
    assert abs(plan.down_direction_lps[2]) > 0.999
    assert plan.overhang_area_mm2 == 0 and plan.support_volume_mm3 == 0
    assert plan.height_mm == pytest.approx(30.0, abs=1e-6)
    assert plan.footprint_mm == pytest.approx([60.0, 40.0], abs=1e-6)


def test_tube_stands_upright(tube):
    plan, _ = plan_print(Model(tube), "prusa_mk4")
    assert abs(plan.down_direction_lps[2]) > 0.999
    assert plan.support_volume_mm3 == 0
    assert plan.height_mm == pytest.approx(TUBE_LENGTH, abs=1e-6)
    # Every runner-up is the other end down, or costs more (it needs support, is taller, or
    # balances on an edge with no flat base for an extruded first layer).
    for other in plan.alternatives:
        flipped = abs(other.down_direction_lps[2]) > 0.999
        assert flipped or other.cost_total > plan.cost_total
        assert flipped or other.overhang_area_mm2 > 0 or other.cost["small_base"] > 0


def test_lying_tube_support_volume_is_shadow_aware(tube):
    """Lying along x: supports fill the lumen under its roof down to its floor (not the plate)
    and the thin sliver under the outer wall. With the 45 degree rule, a = r / sqrt(2):
    lumen L * 2 * int_-a^a sqrt(r^2 - x^2) dx = L r^2 (1 + pi / 2), outer L R^2 (sqrt 2 - 1/2 - pi / 4).
    """
    pose = _pose(tube, "prusa_mk4", down=[1, 0, 0], cell_mm=0.1)
    lumen = TUBE_LENGTH * TUBE_INNER**2 * (1 + np.pi / 2)
    outer = TUBE_LENGTH * TUBE_OUTER**2 * (np.sqrt(2) - 0.5 - np.pi / 4)
    assert pose.support_volume_mm3 == pytest.approx(lumen + outer, rel=0.02)
    # Overhang: a quarter of each circumference (normals within 45 degrees of down), less the
    # strip of the outer wall that lies within the plate tolerance (it rests on the plate).
    resting = 2 * np.arccos(1 - load_printer("prusa_mk4").layer_height_mm / 2 / TUBE_OUTER)
    area = TUBE_LENGTH * ((TUBE_INNER + TUBE_OUTER) * np.pi / 2 - TUBE_OUTER * resting)
    assert pose.overhang_area_mm2 == pytest.approx(area, rel=0.02)
    # Supports inside the lumen stand on its floor: that floor is landing area.
    floor = 2 * TUBE_INNER / np.sqrt(2) * TUBE_LENGTH
    assert pose.landing_area_mm2 > 0.9 * floor


def test_cup_found_when_the_opening_faces_the_tank():
    block = make_pocket_block()
    # Print frame: plate at z = 0, the newest layer (against the tank film) on top.
    opening_up = _pose(block, "formlabs_form3b", down=[0, 0, -1], cell_mm=0.5, with_cups=True)
    assert opening_up.cups.count == 1
    assert opening_up.cups.volume_mm3 == pytest.approx(20 * 20 * 15, rel=0.15)
    opening_down = _pose(block, "formlabs_form3b", down=[0, 0, 1], cell_mm=0.5, with_cups=True)
    assert opening_down.cups.count == 0
    plan, _ = plan_print(Model(block), "formlabs_form3b")
    assert plan.cup_volume_mm3 == 0


# --- fit, split, walls --------------------------------------------------------------------
def test_model_larger_than_the_build_volume_gets_a_split_not_a_scale(tmp_path):
    bar = trimesh.creation.box([400, 30, 30])
    model = Model(bar, name="bar")
    plan, _ = plan_print(model, "formlabs_form3b")
    profile = load_printer("formlabs_form3b")
    usable = usable_volume(profile)
    assert not plan.fits
    assert plan.split is not None
    # 400 mm in at most max(135, 178) mm: three pieces, two planes across the bar.
    assert plan.split["pieces"] == 3
    assert len(plan.split["planes"]) == 2
    for plane in plan.split["planes"]:
        assert abs(plane["normal_lps"][0]) == pytest.approx(1.0, abs=1e-6)
    cuts = sorted(p["point_lps"][0] for p in plan.split["planes"])
    assert np.diff([-200, *cuts, 200]) == pytest.approx([400 / 3] * 3, abs=0.01)
    assert any("does not fit" in w and "Split into 3" in w for w in plan.warnings)
    # The suggested scale makes it fit in the box it names, and is no worse than the bar upright
    # (tilted across the build volume it fits larger); nothing was scaled.
    scale = plan.split["scale_to_fit"]
    assert np.all(scale * np.asarray(plan.split["scale_size_mm"]) <= usable)
    assert np.floor(100 * max(usable) / 400) / 100 <= scale < 1
    paths = write_print_files(plan, model, tmp_path)
    printed = trimesh.load(paths["stl"])
    assert printed.volume == pytest.approx(bar.volume, rel=1e-6)


def _usable_by_hand(printer: str) -> np.ndarray:
    """Usable x, y, z of a profile from its numbers: clearance off both sides of the plate, the
    support base off the height, mm."""
    profile = load_printer(printer)
    volume, clearance = profile.build_volume_mm, profile.clearance_mm
    return np.array([volume.x - 2 * clearance, volume.y - 2 * clearance, volume.z - profile.support_base_mm])


def _box_advice_by_hand(extents, usable) -> tuple[float, int]:
    """The largest scale (down to 0.01) and the fewest pieces over every way of laying an
    axis-aligned box's edges along the printer's x, y and z."""
    lays = [np.asarray(extents, float)[list(order)] for order in itertools.permutations(range(3))]
    scale = max(float(np.min(usable / lay)) for lay in lays)
    pieces = min(int(np.prod(np.ceil(lay / usable))) for lay in lays)
    return np.floor(100 * scale) / 100, pieces


# Boxes too large at full size: a Form 3B box (square across, its 199 mm edge upright), one on
# the Form 3BL whose longest edge must lie along the plate (usable 325 mm) rather than up (293 mm),
# and one on the support-free Fuse 1.
TOO_LARGE = [("formlabs_form3b", (179.0, 179.0, 199.0)), ("formlabs_form3bl", (150.0, 400.0, 300.0)),
             ("formlabs_fuse1", (320.0, 160.0, 200.0))]


@pytest.mark.parametrize("printer, extents", TOO_LARGE)
def test_box_too_large_gets_the_scale_and_split_of_its_best_orientation(printer, extents):
    box = trimesh.creation.box(extents)
    plan, _ = plan_print(Model(box, name="box"), printer)
    usable = _usable_by_hand(printer)
    scale, pieces = _box_advice_by_hand(extents, usable)
    assert not plan.fits
    assert plan.split["scale_to_fit"] == pytest.approx(scale, abs=1e-9)
    assert plan.split["pieces"] == pieces
    assert f"or scale to {scale:.2f} (not applied)" in plan.split["message"]
    assert plan.split["message"] in plan.warnings
    # The advice names the orientation: the box's own axes along the printer's x, y and z, its
    # edges there within the usable extents once scaled.
    for key in ("scale", "split"):
        axes = np.abs(np.asarray(plan.split[f"{key}_axes_lps"]))
        assert np.sort(axes, axis=1) == pytest.approx(np.array([[0, 0, 1]] * 3), abs=1e-6)
        assert np.asarray(plan.split[f"{key}_size_mm"]) == pytest.approx(axes @ np.asarray(extents), abs=0.01)
    assert np.all(scale * np.asarray(plan.split["scale_size_mm"]) <= usable)
    pieces_along = np.ceil(np.asarray(plan.split["split_size_mm"]) / usable)
    assert np.prod(pieces_along) == pieces and len(plan.split["planes"]) == np.sum(pieces_along - 1)
    # Scaled as advised, it fits (in a pose the search finds on its own).
    again, _ = plan_print(Model(box.copy().apply_scale(scale), name="box"), printer)
    assert again.fits


def test_box_advice_does_not_get_worse_when_the_box_is_turned():
    extents = (179.0, 179.0, 199.0)
    square, _ = plan_print(Model(trimesh.creation.box(extents), name="box"), "formlabs_form3b")
    turn = trimesh.transformations.random_rotation_matrix(np.random.default_rng(7).random(3))
    turned, _ = plan_print(Model(trimesh.creation.box(extents).apply_transform(turn), name="box"),
                           "formlabs_form3b")
    assert not turned.fits
    assert turned.split["scale_to_fit"] >= square.split["scale_to_fit"]
    assert turned.split["pieces"] <= square.split["pieces"]
    # The orientation advised is the turned box's own axes.
    axes = np.abs(np.asarray(turned.split["scale_axes_lps"]) @ turn[:3, :3])
    assert np.sort(axes, axis=1) == pytest.approx(np.array([[0, 0, 1]] * 3), abs=1e-6)


def test_a_box_frame_that_fits_unscaled_is_advised_as_such():
    """The search measures fit with room for the decimation error; the advice measures the exact
    hull, and may find a box frame that fits as it is."""
    cube = trimesh.creation.box([100.0, 100.0, 100.0])
    turned = trimesh.transformations.rotation_matrix(np.pi / 4, [0, 0, 1])[:3, :3]  # 141 mm across
    frames = np.array([turned, np.eye(3)])
    split = _split_suggestion(frames, cube.vertices, np.array([141.4, 141.4, 100.0]),
                              load_printer("formlabs_form3b"))
    assert split["pieces"] == 1 and split["planes"] == [] and split["scale_to_fit"] == 1.0
    axes = np.abs(np.asarray(split["scale_axes_lps"]))
    assert np.sort(axes, axis=1) == pytest.approx(np.array([[0, 0, 1]] * 3), abs=1e-9)  # the cube's own
    assert "fits unscaled as a 100.0 x 100.0 x 100.0 mm box" in split["message"]


def test_thin_walls_are_reported_with_where():
    thin = make_tube(outer=10.0, inner=9.7, length=40.0)
    plan, report = plan_print(Model(thin), "formlabs_form3b")
    assert report.thinnest_wall_mm == pytest.approx(0.3, abs=0.01)  # 10.0 - 9.7 mm, as made
    assert report.wall_limit_mm == 0.4 and 0 < report.thin_wall_points <= report.wall_points_sampled
    warning = next(w for w in plan.warnings if w.startswith("walls thinner than the 0.4 mm"))
    assert "near (" in warning and "LPS mm" in warning
    thick, _ = plan_print(Model(make_tube(outer=10.0, inner=8.0, length=40.0)), "formlabs_form3b")
    assert not any(w.startswith("walls thinner") for w in thick.warnings)


# --- outputs ------------------------------------------------------------------------------
def test_print_files_are_on_the_plate_and_anonymous(tmp_path, tube):
    model = Model(tube.copy(), name="PHANTOM^AORTA")
    plan, _ = plan_print(model, "ultimaker_s5")
    paths = write_print_files(plan, model, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"print.stl", "print.3mf", "plan.json"}
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind

    raw = paths["stl"].read_bytes()
    assert b"PHANTOM" not in raw[:80] and len(raw) == 84 + 50 * len(tube.faces)
    printed = trimesh.load(paths["stl"], process=False)
    assert printed.volume == pytest.approx(tube.volume, rel=1e-5)
    bounds = printed.bounds
    assert bounds[0, 2] == pytest.approx(0.0, abs=1e-4)
    volume = load_printer("ultimaker_s5").build_volume_mm
    assert np.all(bounds[0] >= -1e-4) and np.all(bounds[1] <= [volume.x, volume.y, volume.z])
    np.testing.assert_allclose(printed.triangles, oriented_mesh(plan, model).triangles, atol=1e-4)

    with zipfile.ZipFile(paths["3mf"]) as archive:
        document = archive.read("3D/3dmodel.model").decode()
    assert 'unit="millimeter"' in document
    assert document.count("<triangle ") == len(tube.faces)

    saved = json.loads(paths["plan"].read_text())
    assert saved["printer"] == "ultimaker_s5"
    assert np.allclose(saved["transform"], plan.transform)
    assert len(saved["alternatives"]) == 3
    # read back, the plan is the one written, and drives the same support faces
    again = read_plan(paths["plan"])
    assert again == plan and isinstance(again.alternatives[0], PlanAlternative)
    assert np.array_equal(plan_support_faces(again, model), plan_support_faces(plan, model))
    (tmp_path / "broken.json").write_text(json.dumps({**saved, "printer": None, "unknown": 1}))
    with pytest.raises(PrintPlanError, match="not a print plan"):
        read_plan(tmp_path / "broken.json")


def test_support_faces_match_the_plan_overhang():
    bar = trimesh.creation.box([40, 10, 10])
    arch = bar.union(trimesh.creation.box([10, 10, 30]).apply_translation([-15, 0, -10])).union(
        trimesh.creation.box([10, 10, 30]).apply_translation([15, 0, -10]))
    model = Model(arch)
    plan, _ = plan_print(model, "formlabs_form3b")
    flags = plan_support_faces(plan, model)
    assert flags.shape == (len(arch.faces),)
    assert arch.area_faces[flags].sum() == pytest.approx(plan.overhang_area_mm2, abs=0.01)


def test_important_faces_steer_supports_away(tube):
    """Mark the lumen important: contact there is penalised, so the plan avoids it."""
    radius = np.linalg.norm(tube.triangles_center[:, :2], axis=1)
    lumen = radius < (TUBE_INNER + TUBE_OUTER) / 2
    model = Model(tube, important_faces=lumen)
    plan, _ = plan_print(model, "formlabs_form3b")
    assert plan.important_contact_area_mm2 == 0


# --- errors -------------------------------------------------------------------------------
def test_bad_requests_raise_print_plan_errors(hemisphere):
    with pytest.raises(ConfigError, match="unknown printer"):
        plan_print(Model(hemisphere), "no_such_printer")
    with pytest.raises(PrintPlanError, match="material 'gold'"):
        plan_print(Model(hemisphere), "formlabs_form3b", material="gold")
    inside_out = hemisphere.copy()
    inside_out.invert()
    with pytest.raises(PrintPlanError, match="inside out"):
        plan_print(Model(inside_out), "formlabs_form3b")
    with pytest.raises(PrintPlanError, match="important_faces"):
        plan_print(Model(hemisphere, important_faces=np.zeros(3, bool)), "formlabs_form3b")


def test_a_fold_of_the_surface_is_not_a_wall():
    """A sliver folded over its neighbour (as on the example's ventricle) must not read as a
    0.00 mm wall; the real wall below it, 0.3 mm away, still counts."""
    from pipeline.prepare.arrays import MeshArrays
    from pipeline.mesh.thickness import _ray_triangle, sample_wall_thickness

    vertices = np.array([[0, 0, 0], [1, 0, 0], [0.5, 0.1, 0],          # A: faces +z
                         [0.5, 0.5, -0.01],                              # B = (1, 0, 3): folded under A
                         [0.3, -0.2, -0.3], [0.3, 0.3, -0.3], [0.8, -0.2, -0.3]], dtype=float)  # C: the far wall
    faces = np.array([[0, 1, 2], [1, 0, 3], [4, 5, 6]])
    mesh = MeshArrays.from_arrays(vertices, faces)
    origin, direction = mesh.centres[[0]], -mesh.normals[[0]]
    fold = _ray_triangle(origin, direction, mesh.triangles[[1]])[0]
    wall = _ray_triangle(origin, direction, mesh.triangles[[2]])[0]
    assert 0 < fold < 0.001 and wall == pytest.approx(0.3)               # the fold is there, right under A
    sampled = next(s for s in (sample_wall_thickness(mesh, max_mm=0.8, seed=seed) for seed in range(50))
                   if 0 in s.faces)
    assert sampled.thickness_mm[list(sampled.faces).index(0)] == pytest.approx(0.3)


def test_mesh_arrays_measures_are_trimeshs():
    """Areas, normals, volume and centre of mass of the prepare stage's arrays against trimesh's
    own, on a closed mesh far from the origin (where a sum of tetrahedra from the origin loses digits)."""
    mesh = make_l_bracket().apply_translation([250.0, -400.0, 900.0])
    arrays = MeshArrays.from_arrays(mesh.vertices, mesh.faces)
    assert np.allclose(arrays.areas, mesh.area_faces, rtol=1e-12, atol=0)
    assert np.allclose(arrays.normals, mesh.face_normals, atol=1e-12)
    assert np.allclose(arrays.centres, mesh.triangles_center, atol=1e-12)
    assert arrays.volume == pytest.approx(60 * 10 * 30 + 10 * 30 * 30, rel=1e-12)
    assert arrays.volume == pytest.approx(mesh.volume, rel=1e-12)
    assert np.allclose(arrays.centre_of_mass, mesh.center_mass, atol=1e-9)
