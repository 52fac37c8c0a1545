"""Print QA against analytic truth: a model, and a print of it moved, shrunk, pushed out and scanned.

The "print" is the model with one region pushed out by 0.8 mm along its normals, shrunk by 1 %,
moved by a random rigid transform; the "scan" adds 0.05 mm scanner noise and removes 10 % of
the surface. The truth figures are computed with the known transform (never with the
registration under test); the CT variant voxelises the print at 0.3 mm with exact partial
volumes, blurs it and adds noise.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy import ndimage

from pipeline.check import QAPolicy, check_print, checked_event, ct_scan, load_policy, read_scan, register
from pipeline.check.deviation import model_to_scan
from pipeline.cli import main
from pipeline.errors import ConfigError, RegistrationError, ScanError
from pipeline.geometry import Geometry, Mask, Volume, write_volume
from pipeline.mesh import MeshOptions, mesh_mask, write_model
from pipeline.model import Model

BUMP_CENTRE = np.array([25.0, 0.0, 0.0])   # tip of the blob towards the patient's left (LPS +x)
HOLE_CENTRE = np.array([-10.0, -14.0, 2.0])
PUSH_MM, SCALE, NOISE_MM, MISSING = 0.8, 0.99, 0.05, 0.10
SAMPLES = 10_000


def _blob(spacing: float = 0.5) -> trimesh.Trimesh:
    """An asymmetric solid (an ellipsoid with two knobs) meshed by the mesh stage, LPS mm."""
    shape = (int(70 / spacing), int(60 / spacing), int(80 / spacing))
    geometry = Geometry(shape=shape, spacing=(spacing,) * 3, origin=(-35.0, -30.0, -40.0))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    x, y, z = geometry.index_to_lps(index).reshape(shape + (3,)).transpose(3, 0, 1, 2)
    inside = (x / 25) ** 2 + (y / 15) ** 2 + (z / 10) ** 2 <= 1
    inside |= (x - 12) ** 2 + (y - 5) ** 2 + (z - 9) ** 2 <= 8 ** 2
    inside |= (x + 15) ** 2 + (y + 8) ** 2 + (z + 4) ** 2 <= 6 ** 2
    model, _ = mesh_mask(Mask(inside.astype(np.uint8), geometry, {1: "blob"}), options=MeshOptions(target_faces=12_000))
    return model.mesh


def _printed(model: trimesh.Trimesh, seed: int = 5):
    """The print in the model's frame (pushed out), its scan in the scanner's frame, the transform."""
    rng = np.random.default_rng(seed)
    vertices, faces = trimesh.remesh.subdivide(model.vertices, model.faces)  # another triangulation
    fine = trimesh.Trimesh(vertices, faces)
    distance = np.linalg.norm(fine.vertices - BUMP_CENTRE, axis=1)
    weight = np.where(distance < 4, 1.0, np.where(distance < 6, np.cos((distance - 4) / 2 * np.pi / 2) ** 2, 0.0))
    printed = trimesh.Trimesh(fine.vertices + PUSH_MM * weight[:, None] * fine.vertex_normals, faces)
    gap = np.linalg.norm(printed.triangles_center - HOLE_CENTRE, axis=1)
    order = np.argsort(gap)
    missing = order[np.cumsum(printed.area_faces[order]) / printed.area <= MISSING]
    keep = np.ones(len(faces), bool)
    keep[missing] = False
    noisy = printed.vertices + rng.normal(0, NOISE_MM, printed.vertices.shape)
    scan = trimesh.Trimesh(noisy, faces[keep])
    transform = trimesh.transformations.random_rotation_matrix(rng.random(3))
    transform[:3, :3] *= SCALE
    transform[:3, 3] = rng.uniform(-100, 100, 3)
    scan.apply_transform(transform)
    return printed, scan, transform


@pytest.fixture(scope="module")
def model():
    return _blob()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("checked") / "blob-model"
    write_model(Model(model, "blob"), folder / "model.stl")
    return folder


@pytest.fixture(scope="module")
def print_scan(model):
    return _printed(model)


def _truth(model, scan, transform, tolerance):
    """Deviation figures with the true transform: the scan moved back without registration."""
    back = scan.copy()
    back.apply_transform(np.linalg.inv(transform))
    seen = model_to_scan(model, back, count=SAMPLES, seed=0)
    signed = seen.signed_mm[seen.measured]
    return dict(mean=signed.mean(), mean_abs=np.abs(signed).mean(), sd=signed.std(),
                beyond=np.mean(np.abs(signed) > tolerance), coverage=seen.covered.mean(), max=np.abs(signed).max())


def _expected_verdict(truth, limits, scale):
    return (truth["mean_abs"] <= limits.max_mean_abs_mm and truth["max"] <= limits.max_abs_mm
            and truth["beyond"] <= limits.max_area_share_beyond and truth["coverage"] >= limits.min_coverage
            and abs(scale - 1) * 100 <= limits.max_scale_error_percent)


def test_surface_scan_against_analytic_truth(model, model_dir, print_scan, tmp_path):
    printed, scan, transform = print_scan
    scan_file = tmp_path / "scan.ply"
    scan.export(scan_file)
    report = check_print(model_dir, scan_file, out_dir=tmp_path / "check", samples=SAMPLES)
    # the scan is 0.99 of the model, so the (scan -> model) fit undoes it with 1/0.99
    truth_back = np.linalg.inv(transform)
    truth = _truth(model, scan, transform, report.model_to_scan.tolerance_mm)

    assert abs(report.scale - SCALE) <= 0.001 * SCALE
    assert np.allclose(np.asarray(report.registration.matrix)[:3, :3] * SCALE, truth_back[:3, :3] * SCALE, atol=2e-3)
    assert abs(report.model_to_scan.mean_mm - truth["mean"]) <= 0.02
    assert abs(report.model_to_scan.mean_abs_mm - truth["mean_abs"]) <= 0.02
    assert abs(report.model_to_scan.sd_mm - truth["sd"]) <= 0.02
    assert abs(report.coverage - truth["coverage"]) <= 0.02
    assert abs(report.coverage - (1 - MISSING)) <= 0.03          # holes allowed, counted as unseen
    assert report.scan_open_edges > 0

    worst = report.regions[0]
    assert np.linalg.norm(np.asarray(worst.centre_mm) - BUMP_CENTRE) < 2.0
    assert worst.where.split(", ")[0] == "left"
    assert abs(worst.peak_mm - PUSH_MM) < 0.15
    # the plateau (r < 4 mm) and part of the flank on the blob's tip
    assert np.pi * 4 ** 2 * 0.9 < worst.area_mm2 < np.pi * 6 ** 2

    limits = load_policy("default").limits
    assert report.passed == _expected_verdict(truth, limits, SCALE)
    assert report.passed == all(c.passed for c in report.criteria)
    assert report.supports == "unknown" and report.warnings

    saved = json.loads((tmp_path / "check" / "check.json").read_text())
    assert saved["model_to_scan"]["mean_abs_mm"] == pytest.approx(report.model_to_scan.mean_abs_mm)
    assert saved["registration"]["scale"] == pytest.approx(report.scale)
    assert set(saved) >= {"scan_to_model", "model_to_scan", "regions", "criteria", "holds", "passed", "coverage"}
    with Image.open(tmp_path / "check" / "deviation_views.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 2 * picture.size[1]


def test_strict_policy_fails_and_holds_the_charge(model, model_dir, print_scan):
    printed, scan, transform = print_scan
    strict = load_policy("default").model_copy(update={"name": "strict"})
    strict = QAPolicy.model_validate({**strict.model_dump(), "limits": {
        **strict.limits.model_dump(), "tolerance_mm": 0.3, "max_area_share_beyond": 0.01, "max_abs_mm": 0.6}})
    report = check_print(model_dir, read_scan_mesh(scan), policy=strict, samples=SAMPLES)
    truth = _truth(model, scan, transform, 0.3)
    assert truth["beyond"] > 0.01 and truth["max"] > 0.6       # the bump fails both
    assert not report.passed
    failed = {c.name for c in report.criteria if not c.passed}
    assert {"area_share_beyond_tolerance", "max_abs_deviation"} <= failed
    assert {h.code for h in report.holds} == {f"print_qa.{name}" for name in failed}
    assert all(h.source == "print_qa" and h.model_id == "blob-model" for h in report.holds)
    assert "left" in report.holds[0].reason
    event = checked_event(report)
    assert event["event"] == "checked" and event["passed"] is False
    assert event["figures"]["scale"] == report.scale and len(event["holds"]) == len(report.holds)


def read_scan_mesh(mesh: trimesh.Trimesh):
    from pipeline.check.scan import Scan, _open_edges

    return Scan(mesh=mesh, kind="surface", source="scan", open_edges=_open_edges(mesh))


def _ct_of(mesh: trimesh.Trimesh, spacing: float = 0.3, blur_mm: float = 0.3, noise_hu: float = 20.0,
           seed: int = 3) -> Volume:
    """A CT of a solid in air (-1000 HU background, +150 HU resin), blurred, with noise.

    Voxels near the surface get the partial volume of the surface's tangent plane through
    them (signed distance to the plane of the nearest of dense surface samples); the others
    are inside (filled shell) or outside.
    """
    from scipy.spatial import cKDTree

    lo, hi = mesh.bounds[0] - 3, mesh.bounds[1] + 3
    shape = tuple(int(np.ceil(n)) for n in (hi - lo) / spacing)
    geometry = Geometry(shape=shape, spacing=(spacing,) * 3, origin=tuple(lo))
    count = int(mesh.area / (spacing / 4) ** 2)
    points, faces = trimesh.sample.sample_surface(mesh, count, seed=np.random.default_rng(seed))
    normals = mesh.face_normals[faces]
    shell = np.zeros(shape, bool)
    shell[tuple(np.rint(geometry.lps_to_index(points)).astype(int).T)] = True
    inside = ndimage.binary_fill_holes(shell)
    band = ndimage.binary_dilation(shell, iterations=2)
    centres = geometry.index_to_lps(np.argwhere(band))
    _, nearest = cKDTree(points).query(centres)
    signed = np.einsum("ij,ij->i", centres - points[nearest], normals[nearest])
    fraction = inside.astype(np.float32)
    fraction[band] = np.clip(0.5 - signed / spacing, 0, 1)
    hu = -1000 + 1150 * ndimage.gaussian_filter(fraction, blur_mm / spacing)
    hu += np.random.default_rng(seed).normal(0, noise_hu, shape)
    return Volume(np.rint(hu).astype(np.int16), geometry)


def test_ct_of_the_print_against_analytic_truth(model, model_dir, print_scan, tmp_path):
    printed, _, transform = print_scan
    moved = printed.copy()
    moved.apply_transform(transform)         # the print as it lies in the CT scanner
    volume = _ct_of(moved)
    scan = ct_scan(volume, source="ct")
    write_volume(volume, tmp_path / "print_ct.nii.gz")              # the same CT as a file
    assert read_scan(tmp_path / "print_ct.nii.gz").ct.threshold == scan.ct.threshold
    assert scan.kind == "ct" and scan.open_edges == 0
    assert -1000 - 30 < scan.ct.background_level < -1000 + 30 and 1150 - 1000 - 30 < scan.ct.object_level < 150 + 30
    assert abs(scan.ct.threshold - (-425)) < 30
    report = check_print(model_dir, scan, samples=SAMPLES)
    assert abs(report.scale - SCALE) <= 0.001 * SCALE
    # truth: signed distance from the model's samples to the print, in the model's frame
    points, faces = trimesh.sample.sample_surface(model, SAMPLES, seed=np.random.default_rng(0))
    closest, distance, _ = trimesh.proximity.closest_point(printed, points)
    signed = np.sign(np.einsum("ij,ij->i", closest - points, model.face_normals[faces])) * distance
    assert abs(report.model_to_scan.mean_mm - signed.mean()) <= 0.02
    assert abs(report.model_to_scan.mean_abs_mm - np.abs(signed).mean()) <= 0.02
    assert report.coverage == 1.0
    worst = report.regions[0]
    assert np.linalg.norm(np.asarray(worst.centre_mm) - BUMP_CENTRE) < 2.0 and worst.where.startswith("left")


@pytest.mark.parametrize("factor, unit", [(1 / 25.4, "inches"), (0.001, "metres")])
def test_scan_in_other_units_is_refused(model, factor, unit):
    with pytest.raises(ScanError, match=unit):
        register(model.copy().apply_scale(factor), model)


def test_rigid_registration_fits_no_scale(model):
    shrunk = model.copy().apply_scale(SCALE)
    rigid = register(shrunk, model, estimate_scale=False)
    assert rigid.scale == pytest.approx(1.0, abs=1e-9)
    assert rigid.residual_rms_mm > 0.05           # the 1 % shows as distance (about 0.1 mm here)
    assert register(shrunk, model).scale == pytest.approx(SCALE, rel=1e-4)


def test_ct_without_a_printed_object_is_refused():
    noise = np.random.default_rng(0).normal(-1000, 20, (40, 50, 60))
    volume = Volume(np.rint(noise).astype(np.int16), Geometry((40, 50, 60), (0.5,) * 3, (0, 0, 0)))
    with pytest.raises(ScanError, match="no printed object"):
        ct_scan(volume)
    body = noise.copy()
    body[:, 10:40, 10:50] = 40   # soft tissue running through every slice: a patient, not a print
    with pytest.raises(ScanError, match="cut by the scan's edge"):
        ct_scan(Volume(np.rint(body).astype(np.int16), volume.geometry))


def test_cli_refuses_an_empty_scan_and_another_object(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.stl"
    empty.write_bytes(b"")
    assert main(["check", str(model_dir), str(empty)]) == ScanError.exit_code == 17
    assert "empty" in capsys.readouterr().err
    other = tmp_path / "box.stl"
    trimesh.creation.box((50, 30, 20)).export(other)   # about the blob's size, another shape
    assert main(["check", str(model_dir), str(other)]) == RegistrationError.exit_code == 18
    message = " ".join(capsys.readouterr().err.split())
    assert re.search(r"\d+% of the scan lies within 2 mm", message) and "another object" in message


def test_policy_is_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlimits: {tolerance_mm: 0.5, max_mean_abs_mm: 0.5, max_abs_mm: 0.2,"
                   " max_area_share_beyond: 0.05, max_scale_error_percent: 1, min_coverage: 1.5}\n")
    with pytest.raises(ConfigError, match="min_coverage"):
        load_policy(str(bad))
    policy = load_policy("default")
    assert policy.limits_for("prusa_mk4").max_abs_mm == 1.5
    assert policy.limits_for("formlabs_form3b") == policy.limits
    assert load_policy("leng2017").limits.max_mean_abs_mm < policy.limits.max_mean_abs_mm
    with pytest.raises(ConfigError, match=r"^unknown QA policy 'nope'; available: .*default"):
        load_policy("nope")
    with pytest.raises(ConfigError, match=r"^QA policy name '\.\./x' is not a valid name"):
        load_policy("../x")


@pytest.fixture(scope="module")
def planned_dir(model, tmp_path_factory):
    """A model folder that went through the prepare stage: model.stl, print.stl, plan.json."""
    from pipeline.prepare import plan_print, write_print_files

    folder = tmp_path_factory.mktemp("planned") / "blob-planned"
    blob = Model(model, "blob")
    write_model(blob, folder / "model.stl")
    plan, _ = plan_print(blob, "formlabs_form3b")
    write_print_files(plan, blob, folder)
    return folder, plan


def _with_struts(mesh: trimesh.Trimesh, faces: np.ndarray, down: np.ndarray, count: int = 12) -> trimesh.Trimesh:
    """The mesh with support struts (0.8 mm thick, 5 mm long) hanging from ``count`` of ``faces``."""
    chosen = np.flatnonzero(faces)[np.linspace(0, faces.sum() - 1, count).astype(int)]
    struts = []
    for centre in mesh.triangles_center[chosen]:
        strut = trimesh.creation.cylinder(radius=0.4, segment=[centre, centre + 5.0 * down])
        struts.append(strut)
    return trimesh.util.concatenate([mesh, *struts])


def test_supports_left_on_are_found_and_left_out(model, planned_dir):
    from pipeline.prepare import plan_support_faces

    folder, plan = planned_dir
    faces = plan_support_faces(plan, Model(model))
    down = np.asarray(plan.transform)[:3, :3].T @ np.array([0.0, 0.0, -1.0])   # print -z in LPS
    rng = np.random.default_rng(11)
    transform = trimesh.transformations.random_rotation_matrix(rng.random(3))
    with_struts = _with_struts(model, faces, down)
    with_struts.apply_transform(transform)
    report = check_print(folder, read_scan_mesh(with_struts), samples=SAMPLES)
    assert report.supports == "present" and report.supports_excluded
    assert (report.printer, report.material) == (plan.printer, plan.material)   # read from plan.json
    assert report.support_contact_share == pytest.approx(model.area_faces[faces].sum() / model.area)
    assert report.scan_to_model.max_abs_mm < 0.5        # the 5 mm struts are left out of the verdict
    assert report.passed
    assert report.regions == [] or all(r.centre_print_mm is not None for r in report.regions)

    # a folder with only the print frame's mesh: the same contacts, named in print words
    print_only = folder.parent / "print-only"
    print_only.mkdir()
    for name in ("print.stl", "plan.json"):
        (print_only / name).write_bytes((folder / name).read_bytes())
    bare = model.copy()
    bare.apply_transform(transform)
    plain = check_print(print_only, read_scan_mesh(bare), samples=SAMPLES)
    assert plain.reference == "print.stl" and plain.frame == "print"
    assert plain.supports == "removed" and plain.passed
    assert plain.support_contact_share == pytest.approx(report.support_contact_share, rel=1e-3)


def test_a_patient_ct_is_not_a_print(model_dir, phantoms_dir, capsys):
    """A real DICOM series of a head phantom: the object runs out of the scanned slices."""
    series = phantoms_dir / "dcm_qa_ct" / "series" / "Philips" / "S21570" / "S2020"
    assert main(["check", str(model_dir), str(series)]) == ScanError.exit_code
    message = " ".join(capsys.readouterr().err.split())
    assert "cut by the scan's edge (first/last slice)" in message and "S2020" in message
