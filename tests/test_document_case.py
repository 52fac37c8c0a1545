"""End to end through ``run_case`` on the synthetic CTA phantom: charges and packets of a case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import pydicom
import pypdf
import pytest
import yaml

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.case import run_case
from pipeline.cli import main
from pipeline.document.deidentify import readable_bytes

REPO = Path(__file__).resolve().parents[1]
# The phantom series' own patient: a case for anyone else is refused by the identity check.
PATIENT = {"name": "PHANTOM^AORTA", "id": "PH0001", "birth_date": "1964-03-01", "sex": "M"}
IDENTIFYING = ["PHANTOM^AORTA", "PHANTOM AORTA", "PH0001", "1964-03-01", "19640301"]


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("doc_case")
    phantom = make_phantom()
    write_dicom_series(phantom, root / "dicom", with_truth=False)
    landmarks = phantom.landmarks
    abn = {"modifiers": ["GA"], "modifier_reasons": {"GA": "ABN (CMS-R-131) signed, on file"}}  # Medicare
    models = [
        {**abn, "id": "aorta-surgeon", "preset": "aorta_cta", "seeds_lps_mm": [list(landmarks["ascending_aorta"])],
         "purpose": "surgical_planning", "recipient": "Cardiac surgery",
         "manual_steps": [{"step": "post_processing", "operator": "TECH^LAB", "minutes": 40}]},
        {**abn, "id": "ventricle-or", "preset": "heart_bloodpool_cta", "seeds_lps_mm": [list(landmarks["left_ventricle"])],
         "exclude_seeds_lps_mm": [list(landmarks["ascending_aorta"])], "purpose": "trainee_education",
         "recipient": "Trainee"},
        {**abn, "id": "spine-education", "preset": "bone_ct", "seeds_lps_mm": [list(landmarks["vertebra"])],
         "purpose": "patient_education", "recipient": "Patient"},
    ]
    case = {
        "case_id": "DOC-E2E-1", "patient": PATIENT,
        "encounter": {"date_of_service": "2026-01-15", "facility": "Test Hospital 3D Lab",
                      "ordering_provider": {"name": "SURGEON^ORDERING", "npi": "1234567893"},
                      "rendering_provider": {"name": "RADIOLOGIST^RENDERING", "npi": "1234567893"},
                      "payer": "medicare"},
        "indication": {"icd10": ["I71.23"], "summary": "Descending thoracic aortic aneurysm; repair planned."},
        "imaging": {"dicom": str(root / "dicom"), "series": "auto"},
        "printer": "formlabs_form3b", "operator": "TECH^LAB", "models": models,
    }
    (root / "case3.yaml").write_text(yaml.safe_dump(case))
    (root / "case1.yaml").write_text(yaml.safe_dump({**case, "case_id": "DOC-E2E-VENDOR", "models": models[:1]}))
    return {"root": root}


@pytest.fixture(scope="module")
def three_models(phantom_case):
    root = phantom_case["root"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANATOMODEL_LEDGER", str(root / "ledger.sqlite"))
        return run_case(root / "case3.yaml", root / "out")


@pytest.mark.slow
def test_three_models_give_0559t_and_0560t_x2(phantom_case, three_models):
    root, result = phantom_case["root"], three_models
    assert [m.cpt for m in result.models] == ["0559T", "0560T", "0560T"]
    case_dir = root / "out" / "DOC-E2E-1"
    # Nothing is billable before delivery; the two education models are held (likely not medically necessary).
    encounter = next((root / "out" / "encounters").iterdir())
    assert list(csv.DictReader((encounter / "charges.csv").open())) == []
    pending = list(csv.DictReader((encounter / "charges_pending.csv").open()))
    assert [(r["provisional_cpt"], r["waiting_for"]) for r in pending] == [("0559T", "approval"),
                                                                          ("0560T", "approval"), ("0560T", "approval")]
    assert [m.model_id for m in result.models if m.holds] == ["ventricle-or", "spine-education"]
    schema = json.loads((REPO / "pipeline" / "schemas" / "packet.schema.json").read_text())
    source = pydicom.dcmread(next((root / "dicom").glob("IM*")), stop_before_pixels=True)
    for model in result.models:
        folder = case_dir / model.model_id
        facts = json.loads((folder / "packet.json").read_text())
        jsonschema.validate(facts, schema, cls=jsonschema.Draft202012Validator)
        assert facts["charge"]["cpt"] == model.cpt
        ds = pydicom.dcmread(folder / "model.dcm")
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == (folder / "model.stl").read_bytes()
        reader = pypdf.PdfReader(folder / "packet.pdf")
        assert sum(len(page.images) for page in reader.pages) == 3
        assert model.cpt in reader.pages[-1].extract_text() or model.cpt in reader.pages[0].extract_text()


@pytest.mark.slow
def test_deidentified_run_has_no_identifier_in_any_byte(phantom_case, monkeypatch):
    root = phantom_case["root"]
    monkeypatch.setenv("ANATOMODEL_LEDGER", str(root / "ledger-vendor.sqlite"))
    run_case(root / "case1.yaml", root / "vendor", deidentify=True)
    source = pydicom.dcmread(next((root / "dicom").glob("IM*")), stop_before_pixels=True)
    needles = IDENTIFYING + [str(source.PatientName), source.PatientID, source.AccessionNumber, source.PatientBirthDate]
    needles = [n for n in needles if len(n) >= 3]
    files = [p for p in (root / "vendor").rglob("*") if p.is_file()]
    assert {"packet.pdf", "packet.json", "model.dcm", "model.stl"} <= {p.name for p in files}
    assert not [p for p in files if p.name.startswith("charges")]  # a vendor copy bills nothing
    for path in files:
        content = readable_bytes(path).lower()
        text = ""
        if path.suffix == ".pdf":
            reader = pypdf.PdfReader(path)
            text = "\n".join(page.extract_text() for page in reader.pages) + str(reader.metadata)
        for needle in needles:
            assert needle.lower().encode() not in content, f"{needle} in {path.name}"
            assert needle.lower() not in text.lower(), f"{needle} in the text of {path.name}"
            assert needle.lower() not in str(path).lower()


@pytest.mark.slow
def test_document_command_writes_a_copy_and_a_vendor_copy(phantom_case, three_models, tmp_path):
    root = phantom_case["root"]
    folder = root / "out" / "DOC-E2E-1" / "ventricle-or"
    base = ["document", str(folder), "--case", str(root / "case3.yaml"), "--ledger", str(root / "ledger.sqlite")]
    assert main(base) == 12  # in place would break the ledger's checksums of the published packet
    assert main([*base, "--deidentify"]) == 12  # a vendor copy never goes over the original
    assert main([*base, "--no-images", "--out", str(tmp_path / "copy")]) == 0
    facts = json.loads((tmp_path / "copy" / "DOC-E2E-1" / "ventricle-or" / "packet.json").read_text())
    assert facts["charge"]["cpt"] == "0560T" and facts["charge"]["sequence"] == 2
    assert "no source volume given: CT slices not shown" in facts["warnings"]
    assert main([*base, "--no-images", "--deidentify", "--out", str(tmp_path / "vendor")]) == 0
    copy = tmp_path / "vendor" / "DOC-E2E-1" / "ventricle-or"
    assert {"packet.pdf", "packet.json", "model.dcm", "model.stl", "mask.nii.gz", "SHA256SUMS"} <= {
        p.name for p in copy.iterdir()}
    for path in copy.iterdir():
        content = readable_bytes(path).lower()
        assert not any(needle.lower().encode() in content for needle in IDENTIFYING), path.name
