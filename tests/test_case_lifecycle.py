"""``anatomodel run`` validates first, holds what can make a claim wrong, and bills one claim per
encounter only after delivery -- end to end on a small synthetic CTA written as real DICOM."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
from pathlib import Path

import pydicom
import pytest
import yaml

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.errors import CodingError, IdentityError
from pipeline.ledger import Ledger
from test_ledger_protocol import walk
from test_run_case import anatomodel_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle_case")
    write_dicom_series(make_phantom(shape_scale=0.3), root / "dicom", with_truth=False)
    case = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case["imaging"]["dicom"] = str(root / "dicom")
    case["models"] = case["models"][:1]  # the aorta, for surgical planning
    return root, case


def _run(root: Path, case: dict, name: str, *extra: str, ledger: str = "ledger.sqlite3", out: str = "out"):
    folder = root / name
    folder.mkdir(exist_ok=True)
    (folder / "case.yaml").write_text(yaml.safe_dump(case, sort_keys=False))
    env = {**os.environ, "ANATOMODEL_LEDGER": str(root / ledger)}
    result = subprocess.run([anatomodel_script(), "run", str(folder / "case.yaml"), "--out", str(root / out), *extra],
                            capture_output=True, text=True, env=env, timeout=600)
    return result.returncode, " ".join(result.stderr.split())


def _holds(root: Path, case_id: str, model_id: str = "aorta-surgeon", ledger: str = "ledger.sqlite3"):
    with Ledger(root / ledger) as book:
        return sorted(h["code"] for h in book.model_state(case_id, model_id)["holds"] if h["released_by"] is None)


def test_wrong_patient_is_refused_before_any_work_then_overridden_with_a_reason(study):
    root, case = study
    wrong = copy.deepcopy(case)
    wrong.update(case_id="ID-CHECK-1", patient={**case["patient"], "id": "MRN999999"})
    code, err = _run(root, wrong, "wrong", ledger="identity.sqlite3")
    assert code == IdentityError.exit_code, err
    assert "not the patient of the series: the patient ID differs" in err and "MRN999999" not in err
    assert not (root / "out" / "ID-CHECK-1" / "aorta-surgeon").exists()  # only run.log, with the refusal
    with Ledger(root / "identity.sqlite3") as book:
        assert book.list_cases() == []  # refused before the ledger recorded a run
    code, err = _run(root, wrong, "wrong", "--identity-override", "MRN merged: PH0001 is the old number",
                     ledger="identity.sqlite3")
    assert code == 19 and "identity.override" in err, err
    assert _holds(root, "ID-CHECK-1", ledger="identity.sqlite3") == ["identity.override"]
    with Ledger(root / "identity.sqlite3") as book:
        audit = {e["action"]: e["detail"] for e in book.show("ID-CHECK-1")["audit"]}
    assert audit["identity.overridden"]["reason"] == "MRN merged: PH0001 is the old number"


def test_malformed_coding_is_refused_before_the_first_stage(study):
    root, case = study
    bad = copy.deepcopy(case)
    bad["case_id"] = "CODING-BAD-1"
    bad["models"][0]["modifiers"] = ["22"]  # needs a written justification
    code, err = _run(root, bad, "bad-modifier", ledger="refused.sqlite3")
    assert code == CodingError.exit_code and "modifier 22" in err, err
    assert "loading" not in err and not (root / "out" / "CODING-BAD-1" / "aorta-surgeon").exists()


def test_coding_holds_hold_until_released(study):
    root, case = study
    held = copy.deepcopy(case)
    held["case_id"] = "HOLDS-1"
    held["indication"]["icd10"] = ["I71.2"]  # a header code since FY2023: not billable
    held["encounter"]["ordering_provider"]["npi"] = "1234567890"  # fails the check digit
    held["encounter"]["date_of_service"] = "2099-01-15"
    held["patient"]["birth_date"] = "2099-06-01"  # after the date of service
    held["models"][0]["purpose"] = "patient_education"
    profile = yaml.safe_load((REPO / "configs" / "printers" / "formlabs_form3b.yaml").read_text())
    profile.update(name="tiny_test_printer", build_volume_mm={"x": 20, "y": 20, "z": 20})
    (root / "tiny_test_printer.yaml").write_text(yaml.safe_dump(profile))
    held["printer"] = str(root / "tiny_test_printer.yaml")
    # The birth date no longer matches the series: this case also needs the identity override.
    code, err = _run(root, held, "held", "--identity-override", "test of every hold", ledger="holds.sqlite3")
    assert code == 19, err
    expected = ["coding.date_of_service_before_birth", "coding.date_of_service_in_future", "coding.education_only",
                "coding.icd10_not_billable", "coding.ordering_npi_check_digit", "identity.override",
                "prepare.no_printer_fit"]
    assert _holds(root, "HOLDS-1", ledger="holds.sqlite3") == expected
    with Ledger(root / "holds.sqlite3") as book:
        walk(book, "HOLDS-1", "aorta-surgeon")
        billing = book.case_billing("HOLDS-1")
        assert billing.billable == [] and billing.pending[0].waiting_for.startswith("release of ")
        from pipeline.ledger.lifecycle import Person

        from pipeline.errors import LedgerError
        from pipeline.ledger.lifecycle import UNRELEASABLE

        coder = Person("CODER^CHIEF", "coder")
        for number, code_name in enumerate(expected):
            assert book.case_billing("HOLDS-1").billable == []  # every hold still open keeps it unbillable
            if code_name in UNRELEASABLE:  # I71.2, the NPI 1234567890, a service before birth: never released
                with pytest.raises(LedgerError, match="cannot be released"):
                    book.release("HOLDS-1", "aorta-surgeon", code_name, coder, reason=f"reviewed {number}")
            else:
                book.release("HOLDS-1", "aorta-surgeon", code_name, coder, reason=f"reviewed {number}")
        billing = book.case_billing("HOLDS-1")
        assert billing.billable == [] and book.export(record=True)["claims"][0]["lines"] == []
        assert billing.pending[0].waiting_for == ("a corrected case file and a re-run (coding.icd10_not_billable, "
                                                  "coding.ordering_npi_check_digit, coding.date_of_service_before_birth)")


def test_one_claim_per_encounter_reprint_held_and_corrections_applied(study):
    root, case = study
    first = copy.deepcopy(case)
    first["case_id"] = "ENC-A"
    assert _run(root, first, "enc-a", out="enc")[0] == 0
    second = copy.deepcopy(case)
    second["case_id"] = "ENC-B"
    second["models"][0]["id"] = "aorta-copy"
    code, err = _run(root, second, "enc-b", out="enc")
    assert code == 19 and "ledger.duplicate_mesh" in err, err  # same geometry, another model id
    # One claim, under the encounter: no charges files in the case folders.
    assert not list((root / "enc" / "ENC-A").glob("charges*")) and not list((root / "enc" / "ENC-B").glob("charges*"))
    encounters = list((root / "enc" / "encounters").iterdir())
    assert len(encounters) == 1 and case["patient"]["id"] not in encounters[0].name
    # A corrected ICD-10 code and an added modifier 22 reach the unexported charge on re-run.
    first["indication"]["icd10"] = ["I71.21"]
    first["models"][0]["modifiers"] = ["22", "GA"]  # GA: the example's ABN stays on file
    first["models"][0]["modifier_reasons"] = {"22": "segmentation took twice the usual time",
                                              "GA": "ABN (CMS-R-131) signed, on file"}
    assert _run(root, first, "enc-a", out="enc")[0] == 0
    with Ledger(root / "ledger.sqlite3") as book:
        line = book.show("ENC-A")["charges"][0]["line"]
        assert (line["icd10"], line["modifiers"]) == (["I71.21"], ["22", "GA"])
        walk(book, "ENC-A", "aorta-surgeon")
    files = {p.name: p for p in encounters[0].iterdir()}
    # The CLI rewrites the encounter's files at each step; here the library stepped, so write them.
    from pipeline.case import write_encounter_charges

    with Ledger(root / "ledger.sqlite3") as book:
        write_encounter_charges(book, book.case_billing("ENC-A").encounter_id, root / "enc")
        assert book.verify().ok
    rows = list(csv.DictReader(files["charges.csv"].open()))
    assert [(r["cpt"], r["units"], r["modifiers"], r["model_ids"]) for r in rows] == [("0559T", "1", "22;GA",
                                                                                        "aorta-surgeon")]
    pending = list(csv.DictReader(files["charges_pending.csv"].open()))
    assert [(r["case_id"], r["model_id"], r["waiting_for"]) for r in pending] == [("ENC-B", "aorta-copy", "approval")]
    facts = json.loads((root / "enc" / "ENC-A" / "aorta-surgeon" / "packet.json").read_text())
    assert facts["lifecycle"]["state"] == "prepared" and facts["lifecycle"]["billable"] is False
    source = pydicom.dcmread(next((root / "dicom").glob("IM*")), stop_before_pixels=True)
    assert source.PatientID == case["patient"]["id"]  # the identity check compared these


def test_a_rerun_after_export_is_refused_before_any_work(study):
    root, case = study
    exported = copy.deepcopy(case)
    exported["case_id"] = "EXPORTED-1"
    assert _run(root, exported, "exported", ledger="exported.sqlite3", out="exported-out")[0] == 0
    with Ledger(root / "exported.sqlite3") as book:
        walk(book, "EXPORTED-1", "aorta-surgeon")
        book.export(record=True)  # submitted for billing
        from pipeline.case import write_encounter_charges

        write_encounter_charges(book, book.case_billing("EXPORTED-1").encounter_id, root / "exported-out")
    encounter = next((root / "exported-out" / "encounters").iterdir())
    before = (encounter / "charges.csv").read_bytes()
    code, err = _run(root, exported, "exported", ledger="exported.sqlite3", out="exported-out")
    assert code == 13, err
    assert "EXPORTED-1/aorta-surgeon was exported for billing" in err and "with the payer" in err
    assert "loading" not in err  # refused before any stage ran
    with Ledger(root / "exported.sqlite3") as book:
        assert book.model_state("EXPORTED-1", "aorta-surgeon")["version"] == 1
        assert [e.model_id for e in book.case_billing("EXPORTED-1").billable] == ["aorta-surgeon"]
    assert (encounter / "charges.csv").read_bytes() == before  # the submitted line is still listed


def test_each_step_reissues_the_packet_with_its_state_on_page_one(study):
    import pypdf

    root, case = study
    reissue = copy.deepcopy(case)
    reissue["case_id"] = "REISSUE-1"
    assert _run(root, reissue, "reissue", ledger="reissue.sqlite3", out="reissue-out")[0] == 0
    env = {**os.environ, "ANATOMODEL_LEDGER": str(root / "reissue.sqlite3")}
    result = subprocess.run([anatomodel_script(), "approve", "REISSUE-1", "aorta-surgeon", "--by", "RADIOLOGIST^RENDERING",
                             "--role", "radiologist", "--npi", "1987654328"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    packet = root / "reissue-out" / "REISSUE-1" / "aorta-surgeon.packets" / "v1-02-approved" / "REISSUE-1" / "aorta-surgeon"
    facts = json.loads((packet / "packet.json").read_text())
    assert facts["lifecycle"]["state"] == "approved" and facts["lifecycle"]["waiting_for"] == "printing"
    assert facts["lifecycle"]["sign_offs"][0]["person"] == "RADIOLOGIST^RENDERING"
    first_page = " ".join(pypdf.PdfReader(packet / "packet.pdf").pages[0].extract_text().split())
    assert "approved, not yet printed" in first_page and "pending: waits for printing" in first_page
    assert "approved (radiologist) Rendering Radiologist, NPI 1987654328" in first_page  # as a person writes it
    # the re-issued packet keeps the run's stage reports: its verdicts and warnings are the run's
    published = json.loads((root / "reissue-out" / "REISSUE-1" / "aorta-surgeon" / "packet.json").read_text())
    for key in ("load", "segmentation", "mesh_qa", "print_preparation"):
        assert facts[key] == published[key] and facts[key] is not None, key
    assert facts["warnings"] == published["warnings"]
    assert "no mesh QA report" not in first_page and "not measured" not in first_page
    # The published model folder is untouched; the revision's files are checked by verify.
    assert subprocess.run([anatomodel_script(), "ledger", "verify"], env=env, capture_output=True).returncode == 0
    (packet / "packet.pdf").write_bytes(b"%PDF-1.4 replaced")
    assert subprocess.run([anatomodel_script(), "ledger", "verify"], env=env, capture_output=True).returncode == 13


def test_a_step_is_refused_when_the_packet_cannot_be_re_issued_from_the_run_s_case_file(study):
    """A step re-issues the packet from the run's case file: an edit of its patient, or the file
    gone, refuses the step before anything is recorded (a packet of another patient, or none)."""
    root, case = study
    edited = copy.deepcopy(case)
    edited["case_id"] = "REISSUE-2"
    edited["models"][0]["purpose"] = "trainee_education"  # a hold, released below
    assert _run(root, edited, "reissue2", ledger="reissue2.sqlite3", out="reissue2-out")[0] == 19
    case_file = root / "reissue2" / "case.yaml"
    original = case_file.read_text()
    env = {**os.environ, "ANATOMODEL_LEDGER": str(root / "reissue2.sqlite3")}
    approve = [anatomodel_script(), "approve", "REISSUE-2", "aorta-surgeon", "--by", "RADIOLOGIST^RENDERING",
               "--role", "radiologist", "--npi", "1987654328"]

    def events() -> list[str]:
        with Ledger(root / "reissue2.sqlite3") as book:
            return [e["step"] for e in book.model_state("REISSUE-2", "aorta-surgeon")["events"]]

    case_file.write_text(original.replace(case["patient"]["name"], "SOMEONE^ELSE"))
    result = subprocess.run(approve, env=env, capture_output=True, text=True, timeout=300)
    message = " ".join(result.stderr.split())
    assert result.returncode == 4 and "was edited after run" in message and "SOMEONE" not in message, message
    case_file.rename(case_file.with_suffix(".moved"))
    result = subprocess.run(approve, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 4 and "is no longer there" in " ".join(result.stderr.split()), result.stderr
    assert events() == ["prepared"]
    case_file.write_text(original)
    result = subprocess.run(approve, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 19 and "coding.education_only" in result.stderr, result.stderr  # recorded, held
    assert events() == ["prepared", "approved"]
    # a release re-issues the packet into a folder of its own: the approval's revision stays as it was
    packets = root / "reissue2-out" / "REISSUE-2" / "aorta-surgeon.packets"
    approved = (packets / "v1-02-approved" / "REISSUE-2" / "aorta-surgeon" / "packet.pdf").read_bytes()
    result = subprocess.run([anatomodel_script(), "release", "REISSUE-2", "aorta-surgeon", "coding.education_only",
                             "--by", "CODER^CHIEF", "--role", "coder", "--reason", "the trainee's model is billed"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (packets / "v1-02-approved" / "REISSUE-2" / "aorta-surgeon" / "packet.pdf").read_bytes() == approved
    released = json.loads((packets / "v1-02-approved-r1" / "REISSUE-2" / "aorta-surgeon" / "packet.json").read_text())
    assert [s["step"] for s in released["lifecycle"]["sign_offs"]] == ["approved", "release of coding.education_only"]
    assert released["lifecycle"]["sign_offs"][1]["reason"] == "the trainee's model is billed"
