"""``anatomodel charges list | export`` on a real ledger with published packets."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from pathlib import Path

import pytest
import yaml

from pipeline.case import load_case
from pipeline.cli import main
from pipeline.coding import BillableModel
from pipeline.exports.fhir import parse_bundle
from pipeline.exports.hl7 import parse_dft
from pipeline.ledger import Ledger
from test_ledger_protocol import walk

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "cases" / "example_aorta.yaml"


def make_case(tmp_path: Path, *, payer: str = "medicare", modifiers=("GA",), icd10=("I71.23",)) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["encounter"].update(payer=payer, date_of_service=dt.date(2026, 5, 4))
    data["indication"]["icd10"] = list(icd10)
    data["imaging"]["dicom"] = str(tmp_path)
    for model in data["models"]:
        model["modifiers"] = list(modifiers)
        model["modifier_reasons"] = {"GA": "ABN signed 2026-05-01"} if "GA" in modifiers else {}
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def publish(case_path: Path, ledger_path: Path, out: Path, deliver: list[str] | None = None) -> None:
    """Reserve and publish every model of the case with a small real packet; deliver the models
    of ``deliver`` in that order (default: every model, in case-file order)."""
    case = load_case(case_path)
    with Ledger(ledger_path) as book, book.start_run(case_id=case.case_id, patient_id=case.patient.id,
                                                     date_of_service=case.encounter.date_of_service) as run:
        for spec in case.models:
            reservation = run.reserve(spec.id, BillableModel.from_case(case, spec), out / case.case_id / spec.id)
            (reservation.staging / "model.stl").write_bytes(spec.id.encode() * 100)
            digest = hashlib.sha256((reservation.staging / "model.stl").read_bytes()).hexdigest()
            (reservation.staging / "SHA256SUMS").write_text(f"{digest}  model.stl\n")
            run.publish(reservation, mesh_sha256=digest)
    with Ledger(ledger_path) as book:  # approved, printed, post-processed, delivered: billable unless held
        for model_id in [spec.id for spec in case.models] if deliver is None else deliver:
            walk(book, case.case_id, model_id)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_state_diagnoses_and_payer_rules(tmp_path, capsys):
    case, ledger = make_case(tmp_path), tmp_path / "ledger.sqlite3"
    publish(case, ledger, tmp_path / "out")
    code, out, err = run_cli(capsys, "charges", "list", str(case), "--ledger", str(ledger), "--json")
    assert code == 0, err
    lines = json.loads(out)["lines"]
    assert [(l["model_id"], l["cpt"], l["modifiers"], l["state"]) for l in lines] == [
        ("aorta-surgeon", "0559T", ["GA"], "billable"), ("ventricle-or", "0560T", ["GA"], "billable")]
    assert lines[0]["diagnoses"] == ["I71.23 Aneurysm of the descending thoracic aorta, without rupture"]
    assert any(rule.startswith("ABN 0559T: ok") for rule in lines[0]["rules"])
    code, out, err = run_cli(capsys, "charges", "list", str(case), "--ledger", str(ledger), "--other-code", "76377")
    assert code == 0 and "held" in out and "76377" in out


def test_list_shows_holds_with_reasons(tmp_path, capsys):
    case, ledger = make_case(tmp_path, payer="aetna", modifiers=(), icd10=("I71.2",)), tmp_path / "ledger.sqlite3"
    publish(case, ledger, tmp_path / "out")
    code, out, err = run_cli(capsys, "charges", "list", str(case), "--ledger", str(ledger), "--json")
    assert code == 0, err
    for line in json.loads(out)["lines"]:
        assert line["state"] == "held"
        assert any("I71.20, I71.21, I71.22, I71.23" in r for r in line["reasons"])      # coding hold
        assert any("Aetna Clinical Policy Bulletin 0613" in r for r in line["reasons"])  # payer hold
    code, out, err = run_cli(capsys, "charges", "export", str(case), "--ledger", str(ledger), "--format", "hl7")
    assert code == 11 and "no billable charge line" in err


def test_export_hl7_and_fhir_from_the_ledger(tmp_path, capsys):
    case, ledger = make_case(tmp_path), tmp_path / "ledger.sqlite3"
    publish(case, ledger, tmp_path / "out")
    target = tmp_path / "dft.hl7"
    code, _, err = run_cli(capsys, "charges", "export", str(case), "--ledger", str(ledger), "--format", "hl7",
                           "--out", str(target))
    assert code == 0, err
    message = parse_dft(target.read_text())
    assert [(g.ft1.ft1_7.ce_1.value, g.ft1.ft1_10.value) for g in message.dft_p03_financial] == [
        ("0559T", "1"), ("0560T", "1")]
    assert message.dft_p03_financial[0].ft1.ft1_21.xcn_1.value == "1234567893"     # ordering NPI of the case
    assert message.dft_p03_financial[0].ft1.ft1_20.xcn_1.value == "1987654328"     # rendering NPI
    code, out, err = run_cli(capsys, "charges", "export", str(case), "--ledger", str(ledger), "--format", "fhir")
    assert code == 0, err
    bundle = parse_bundle(out)
    items = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "ChargeItem"]
    assert [i.code.coding[0].code for i in items] == ["0559T", "0560T"]


def test_a_billable_line_exports_while_another_is_pending(tmp_path, capsys):
    """One model delivered, the other pending (provisionally the add-on): the delivered one is
    the encounter's claim and exports; the pending one is listed as pending, not an error."""
    case, ledger = make_case(tmp_path), tmp_path / "ledger.sqlite3"
    delivered = ["aorta-surgeon"]
    publish(case, ledger, tmp_path / "out", deliver=delivered)
    code, out, err = run_cli(capsys, "charges", "list", str(case), "--ledger", str(ledger), "--json")
    assert code == 0, err
    listing = json.loads(out)
    states = {line["model_id"]: line["state"] for line in listing["lines"]}
    assert states == {"aorta-surgeon": "billable", "ventricle-or": "pending: waits for approval"}
    assert listing["notes"] == []
    pending = next(line for line in listing["lines"] if line["model_id"] == "ventricle-or")
    assert any(rule.startswith(f"ABN {pending['cpt']}: ok") for rule in pending["rules"])  # its payer rules shown
    code, out, err = run_cli(capsys, "charges", "export", str(case), "--ledger", str(ledger), "--format", "fhir")
    assert code == 0, err
    items = [e.resource for e in parse_bundle(out).entry if e.resource.get_resource_type() == "ChargeItem"]
    assert [i.code.coding[0].code for i in items] == ["0559T"]  # the only billable line is the first
    code, out, err = run_cli(capsys, "charges", "export", str(case), "--ledger", str(ledger), "--format", "csv")
    assert code == 0, err
    assert [row["model_ids"] for row in csv.DictReader(io.StringIO(out))] == delivered


@pytest.mark.parametrize("change, words", [
    (lambda d: d["indication"].update(icd10=["441.01"]), "field 'indication.icd10.0'.*ICD-9-CM"),
    (lambda d: d["indication"].update(icd10=["I71.23", "0559T"]), "field 'indication.icd10.1'.*CPT"),
    (lambda d: d["encounter"].update(payer="bluecross"), "field 'encounter.payer'.*unknown payer"),
])
def test_bad_case_input_is_refused_before_the_ledger_is_read(tmp_path, capsys, change, words):
    path = make_case(tmp_path)
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = run_cli(capsys, "charges", "list", str(path), "--ledger", str(tmp_path / "none.sqlite3"))
    assert code == 4
    assert "case.yaml" in err
    import re
    assert re.search(words, err.replace("\n", " ")), err


@pytest.mark.parametrize("option, value, words", [("--other-code", "7637", "not CPT or HCPCS"),
                                                  ("--mesh-only", "no-such-model", "not models of case")])
def test_bad_options_are_usage_errors(tmp_path, capsys, option, value, words):
    code, _, err = run_cli(capsys, "charges", "list", str(make_case(tmp_path)), "--ledger",
                           str(tmp_path / "none.sqlite3"), option, value)
    assert code == 2 and words in err
