"""End to end: ``anatomodel run`` on the example case writes the documented layout.

Runs the installed console script in a subprocess (in CI, the wheel built from this checkout),
on the synthetic CTA phantom written as DICOM, exactly as the README's first command does.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
import yaml

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.geometry import read_mask

REPO = Path(__file__).resolve().parents[1]
#: the face budget the example run's second model gets from its case file
CASE_FILE_FACES = 20_000
MODEL_FILES = {"mask.nii.gz", "model.stl", "print.stl", "plan.json", "packet.pdf", "packet.json", "model.dcm",
               "SHA256SUMS"}


def anatomodel_script() -> str:
    """The installed console script (in CI, the wheel built from this checkout)."""
    script = Path(sys.executable).parent / "anatomodel"
    return str(script) if script.exists() else "anatomodel"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    phantom = make_phantom()
    write_dicom_series(phantom, root / "cta_phantom")
    case = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case["imaging"]["dicom"] = "cta_phantom"
    # The example as shipped holds nothing (CI runs it as the README's first command); here its
    # second model is made a trainee's, so the run also shows a hold that holds.
    case["models"][1]["purpose"] = "trainee_education"
    # ... and its mesh is made to a face budget set in the case file (the mesh report must show it)
    case["models"][1]["mesh"] = {"target_faces": CASE_FILE_FACES}
    case_file = root / "case.yaml"
    case_file.write_text(yaml.safe_dump(case, sort_keys=False))
    env = {**os.environ, "ANATOMODEL_LEDGER": str(root / "ledger.sqlite3")}
    result = subprocess.run([anatomodel_script(), "run", str(case_file), "--out", str(root / "out")],
                            capture_output=True, text=True, env=env, timeout=900)
    # Done, but held: the ventricle model is for trainee education (likely not medically necessary).
    assert result.returncode == 19, result.stderr[-3000:]
    assert "ventricle-or coding.education_only" in " ".join(result.stderr.split())
    return root / "out" / case["case_id"], case, phantom


def test_case_file_mesh_option_reaches_the_mesh_report(example_run):
    case_dir, case, _ = example_run
    budgeted, default = (json.loads((case_dir / model["id"] / "packet.json").read_text())["mesh_qa"]
                         for model in (case["models"][1], case["models"][0]))
    assert budgeted["options"]["target_faces"] == CASE_FILE_FACES
    assert default["options"]["target_faces"] == 500_000  # MeshOptions' default where the case sets none
    # the budget was applied: the surface has at most that many faces, the STL too
    assert 0 < budgeted["faces_final"] <= CASE_FILE_FACES < budgeted["faces_raw"]
    stl = trimesh.load(case_dir / case["models"][1]["id"] / "model.stl")
    assert len(stl.faces) == budgeted["faces_final"]


def test_ledger_lists_for_each_model_the_libraries_its_mesh_report_records(example_run):
    import platform
    from importlib import metadata

    from pipeline.ledger import Ledger

    case_dir, case, _ = example_run
    with Ledger(case_dir.parent.parent / "ledger.sqlite3") as ledger:
        recorded = {m["model_id"]: m["software"] for m in ledger.show(case["case_id"])["models"]}
    libraries = {model["id"]: json.loads((case_dir / model["id"] / "packet.json").read_text())["mesh_qa"]["libraries"]
                 for model in case["models"]}
    assert set(recorded) == set(libraries)
    for model_id, software in recorded.items():
        assert software == {"python": platform.python_version(), "anatomodel": metadata.version("anatomodel"),
                            **{name: metadata.version(name) for name in libraries[model_id]}}
        assert {name: software[name] for name in libraries[model_id]} == libraries[model_id]
    # the budgeted model was decimated, the other was not: each list is its own model's
    budgeted, default = case["models"][1]["id"], case["models"][0]["id"]
    assert "fast-simplification" in recorded[budgeted] and "fast-simplification" not in libraries[default]
    assert "fast-simplification" not in recorded[default]


def test_layout(example_run):
    case_dir, case, _ = example_run
    for model in case["models"]:
        folder = case_dir / model["id"]
        assert MODEL_FILES <= {p.name for p in folder.iterdir()}, sorted(p.name for p in folder.iterdir())
    encounter = next((case_dir.parent / "encounters").iterdir())  # one claim per encounter, not per case
    assert (encounter / "charges.csv").is_file() and (encounter / "charges.json").is_file()
    assert not list(case_dir.glob("charges*"))
    # No staging or set-aside folders are left behind.
    assert not [p for p in case_dir.iterdir() if p.name.startswith(".")]


def test_checksums_cover_every_file(example_run):
    case_dir, case, _ = example_run
    for model in case["models"]:
        folder = case_dir / model["id"]
        listed = {}
        for line in (folder / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            listed[name.lstrip("*")] = digest
        assert set(listed) == {p.name for p in folder.iterdir() if p.name != "SHA256SUMS"}
        for name, digest in listed.items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_models_are_closed_and_overlay_the_images(example_run):
    case_dir, case, phantom = example_run
    for model in case["models"]:
        folder = case_dir / model["id"]
        mask = read_mask(folder / "mask.nii.gz")
        assert mask.geometry.same_grid(phantom.geometry)
        assert mask.voxel_count() > 0
        mesh = trimesh.load(folder / "model.stl")
        assert mesh.is_watertight and mesh.is_winding_consistent
        # The patient-space STL overlays the mask: its volume matches the mask's within 5%.
        assert mesh.volume == pytest.approx(mask.voxel_count() * mask.geometry.voxel_volume_mm3, rel=0.05)
        # And lies where the mask is: vertices map into the mask's bounding box.
        index = mask.geometry.lps_to_index(mesh.vertices)
        occupied = np.argwhere(mask.array > 0)
        assert np.all(index >= occupied.min(axis=0) - 1.5) and np.all(index <= occupied.max(axis=0) + 1.5)


def test_aorta_model_is_the_aorta(example_run):
    case_dir, _, phantom = example_run
    mask = read_mask(case_dir / "aorta-surgeon" / "mask.nii.gz").array > 0
    truth = phantom.labels == 1
    dice = 2 * np.count_nonzero(mask & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth))
    assert dice >= 0.9


def test_charges_first_then_additional(example_run):
    case_dir, case, _ = example_run
    encounter = next((case_dir.parent / "encounters").iterdir())
    with open(encounter / "charges.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == []  # nothing is billable before delivery
    env = {**os.environ, "ANATOMODEL_LEDGER": str(case_dir.parent.parent / "ledger.sqlite3")}
    tech = ["--by", "TECH^LAB", "--role", "technologist"]
    # The aorta's print is checked: its scan is print.stl moved by a rigid motion (a perfect print).
    scan = trimesh.load(case_dir / "aorta-surgeon" / "print.stl", force="mesh")
    motion = trimesh.transformations.rotation_matrix(0.7, [0.3, -0.5, 0.8])
    motion[:3, 3] = [31.0, -12.0, 55.0]
    scan.apply_transform(motion)
    scan.export(case_dir.parent.parent / "aorta-print-scan.stl")
    for model in ("ventricle-or", "aorta-surgeon"):  # delivered in this order
        check = (["check", *tech, str(case_dir.parent.parent / "aorta-print-scan.stl")] if model == "aorta-surgeon"
                 else None)
        for step in (["approve", "--by", "RADIOLOGIST^RENDERING", "--role", "radiologist", "--npi", "1987654328"],
                     ["printed", *tech, "--printer", "formlabs_form3b", "--serial", "F3B-1", "--material",
                      "Clear V4", "--lot", "L1", "--layer-height-mm", "0.1", "--job-start", "2026-01-16T08:00",
                      "--job-end", "2026-01-16T12:00"],
                     ["post-processed", *tech, "--step", "cleaning", "--step", "curing"],
                     *([check] if check else []),
                     # The ventricle is delivered unchecked, as under a policy that does not require a check.
                     ["delivered", *tech, "--to", "Cardiac surgery", "--purpose", "planning",
                      *([] if check else ["--qa-policy", "optional"])]):
            target = [str(case_dir / model)] if step[0] == "check" else [case["case_id"], model]
            arguments = [*target, step[-1], *step[1:-1]] if step[0] == "check" else [*target, *step[1:]]
            result = subprocess.run([anatomodel_script(), step[0], *arguments], env=env,
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == (19 if model == "ventricle-or" else 0), result.stderr
    import pypdf

    checked = next((case_dir / "aorta-surgeon.packets").glob("v1-*-checked/*/aorta-surgeon/packet.pdf"))
    first_page = " ".join(pypdf.PdfReader(checked).pages[0].extract_text().split())
    assert "print checked, not yet delivered" in first_page and "Print check (default v1)" in first_page
    assert "PASS: mean |dev|" in first_page
    facts = json.loads((checked.parent / "packet.json").read_text())
    assert facts["lifecycle"]["state"] == "checked" and facts["lifecycle"]["print_qa"]["passed"] is True
    release = [anatomodel_script(), "release", case["case_id"], "ventricle-or", "coding.education_only"]
    reason = ["--reason", "payer covers trainee models for this indication"]
    result = subprocess.run([*release, *tech, *reason], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 13 and "needs a coder" in " ".join(result.stderr.split())  # a coding hold
    result = subprocess.run([*release, "--by", "CODER^CHIEF", "--role", "coder", *reason], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = json.loads((encounter / "charges.json").read_text())
    text = json.dumps(lines)
    assert "0559T" in text and "0560T" in text
    with open(encounter / "charges.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    codes = {}
    for row in rows:
        cpt = next(v for k, v in row.items() if k and k.lower() in {"cpt", "code", "cpt_code"})
        units_key = next(k for k in row if k and "unit" in k.lower())
        codes[cpt] = codes.get(cpt, 0) + int(float(row[units_key]))
    assert codes == {"0559T": 1, "0560T": 1}
    # Numbering follows delivery: the aorta, delivered while the ventricle was held, is the first model.
    assert {row["cpt"]: row["model_ids"] for row in rows} == {"0559T": "aorta-surgeon", "0560T": "ventricle-or"}


def test_outputs_carry_no_patient_name_in_file_names_or_stl_headers(example_run):
    case_dir, case, _ = example_run
    identifiers = [case["patient"]["name"], case["patient"]["id"], "PHANTOM", "AORTA^"]
    for path in case_dir.rglob("*"):
        assert not any(token.lower() in path.name.lower() for token in identifiers[:3]), path
        if path.suffix == ".stl":
            header = path.read_bytes()[:80].decode("latin-1")
            assert not any(token in header for token in identifiers), header


def test_every_packet_page_one_gives_the_coder_the_charge(example_run):
    """CPT, units, each diagnosis with its description and the state on page 1; nothing cut or
    dropped anywhere; stage warnings in the one list, and no wall-thickness contradiction."""
    import pypdf

    case_dir, case, _ = example_run
    for model in case["models"]:
        folder = case_dir / model["id"]
        facts = json.loads((folder / "packet.json").read_text())
        pages = [page.extract_text() for page in pypdf.PdfReader(folder / "packet.pdf").pages]
        first = " ".join(pages[0].split())
        charge = facts["charge"]
        state = "held:" if (facts.get("lifecycle") or {}).get("holds") else "pending:"  # the trainee's is held
        assert f"{charge['cpt']} {charge['units']} " in first and state in first
        for pointer, code, title in zip(charge["icd10_pointers"], charge["icd10"], facts["indication"]["descriptions"]):
            assert f"{pointer}: {code} {title}" in first
        assert "prepared, not yet approved" in first
        text = "\n".join(pages)
        assert "..." not in text and "more rows" not in text and "?" not in first
        for entry in facts["files"]:
            assert entry["sha256"] in text.split()
        for stage, key in (("segmentation", "segmentation"), ("mesh QA", "mesh_qa"), ("print plan", "print_plan")):
            for warning in (facts[key] or {}).get("warnings") or []:
                assert f"{stage}: {warning}" in facts["warnings"]
        assert not any("thinnest 0.00 mm" in w for w in facts["warnings"])
        thinnest = facts["mesh_qa"]["min_wall_thickness_mm"]
        if thinnest is not None:
            assert f"Thinnest wall ✓ pass {thinnest:.2f} mm measured" in first
