"""The model lifecycle: a charge is billable only when its model is delivered and no hold is open."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from pipeline.errors import CodingError, LedgerError
from pipeline.holds import Hold
from pipeline.ledger import Ledger
from pipeline.ledger.lifecycle import Person, REGISTRY_CATEGORIES, UNRELEASABLE
from postgres_server import new_ledger, postgres_server  # noqa: F401  (fixtures)
from test_ledger import cli, publish  # noqa: F401  (cli is a fixture)
from test_ledger_protocol import DATE, PATIENT, REVIEWER, TECH, billable, walk, write_packet

PRINT = {"printer": "formlabs_form3b", "serial": "F3B-0042", "material": "Clear V4", "lot": "L-7781",
         "layer_height_mm": 0.1, "job_start": "2026-01-16T08:00:00+00:00", "job_end": "2026-01-16T13:30:00+00:00"}


@pytest.fixture
def ledger(new_ledger):
    """A new ledger, on SQLite and on PostgreSQL."""
    with Ledger(new_ledger()) as opened:
        yield opened


def _lines(ledger, case_id="CASE-1"):
    billing = ledger.case_billing(case_id)
    return ([(e.model_id, e.line.cpt) for e in billing.billable],
            [(e.model_id, e.state, e.waiting_for) for e in billing.pending])


def _revisions(ledger, case_id, model_id):
    """The model's charge history: (revision, status, cpt, reason) of each revision, oldest first."""
    return [(r["revision"], r["status"], r["cpt"], r["reason"]) for r in ledger.show(case_id)["charge_revisions"]
            if r["model_id"] == model_id]


def _assert_written_once(ledger):
    """Every charge and charge revision entered the hash chain once: none was ever edited."""
    for table in ("charges", "charge_revisions"):
        rows = ledger._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        entries = ledger._db.execute("SELECT COUNT(*), COUNT(DISTINCT row_id) FROM chain WHERE tbl = ?",
                                     (table,)).fetchone()
        assert tuple(entries) == (rows, rows), table


def test_one_case_through_every_state_with_the_charges_at_each(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta", "ventricle"])
    assert _lines(ledger) == ([], [("aorta", "prepared", "approval"), ("ventricle", "prepared", "approval")])
    reviewer, tech = Person(*REVIEWER), Person(*TECH)
    expected = [("approved", reviewer, {}, "printing"), ("printed", tech, PRINT, "post-processing"),
                ("post_processed", tech, {"steps": ["cleaning", "curing"]}, "print QA")]
    for step, person, detail, waits in expected:
        state = ledger.record_step("CASE-1", "ventricle", step, person, detail=detail)
        assert state["state"] == step
        assert _lines(ledger) == ([], [("aorta", "prepared", "approval"), ("ventricle", step, waits)])
    ledger.record_step("CASE-1", "ventricle", "delivered", tech, detail={"recipient": "Trainee", "purpose": "planning",
                                                                        "qa_policy": "optional", "qa_required": False})
    # The first model delivered is the first of the encounter: 0559T, though it was reserved second.
    assert _lines(ledger) == ([("ventricle", "0559T")], [("aorta", "prepared", "approval")])
    walk(ledger, "CASE-1", "aorta", until="post_processed")
    ledger.record_step("CASE-1", "aorta", "discontinued", tech, detail={"reason": "resin tank leak at layer 212"})
    billable_lines, pending = _lines(ledger)
    assert billable_lines == [("ventricle", "0559T"), ("aorta", "0560T")] and pending == []
    claim = ledger.case_billing("CASE-1").claim()
    assert [(c.cpt, c.units, c.modifiers) for c in claim] == [("0559T", 1, []), ("0560T", 1, ["53"])]
    with pytest.raises(LedgerError, match="reached its end state"):
        ledger.record_step("CASE-1", "aorta", "delivered", tech, detail={"recipient": "x", "purpose": "y"})
    audit = [e["action"] for e in ledger.show("CASE-1")["audit"]]
    for step in ("approved", "printed", "post_processed", "delivered", "discontinued"):
        assert f"model.{step}" in audit
    # Each change of a charge is a new revision; delivery changes no charge row, only the billing.
    assert [r[:2] for r in _revisions(ledger, "CASE-1", "ventricle")] == [(1, "reserved"), (2, "committed")]
    assert [r[:2] for r in _revisions(ledger, "CASE-1", "aorta")] == [(1, "reserved"), (2, "committed"),
                                                                       (3, "discontinued")]
    assert _revisions(ledger, "CASE-1", "aorta")[2][3] == "discontinued: resin tank leak at layer 212"
    _assert_written_once(ledger)
    assert ledger.verify().ok


def test_steps_in_order_with_who_and_what(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    tech = Person(*TECH)
    with pytest.raises(LedgerError, match="is prepared: it cannot be printed now \\(next step: approved\\)"):
        ledger.record_step("CASE-1", "aorta", "printed", tech, detail=PRINT)
    with pytest.raises(LedgerError, match="needs a clinician"):
        ledger.record_step("CASE-1", "aorta", "approved", tech)
    with pytest.raises(LedgerError, match="fails the NPI check digit"):
        Person("DR^WRONG", "radiologist", "1234567890")
    ledger.record_step("CASE-1", "aorta", "approved", Person(*REVIEWER), minutes=25)
    with pytest.raises(LedgerError, match="needs lot"):
        ledger.record_step("CASE-1", "aorta", "printed", tech, detail={**PRINT, "lot": ""})
    with pytest.raises(LedgerError, match="needs serial, lot"):
        ledger.record_step("CASE-1", "aorta", "printed", tech, detail={**PRINT, "serial": " ", "lot": "\t"})
    for height in (float("inf"), float("nan"), -0.1):
        with pytest.raises(LedgerError, match="layer height must be a finite number"):
            ledger.record_step("CASE-1", "aorta", "printed", tech, detail={**PRINT, "layer_height_mm": height})
    for minutes in (float("inf"), float("nan"), -1.0):
        with pytest.raises(LedgerError, match="effort minutes must be a finite number"):
            ledger.record_step("CASE-1", "aorta", "printed", tech, detail=PRINT, minutes=minutes)
    now = dt.datetime.now(dt.timezone.utc)  # a job ending in 3 min (inside the clock-skew allowance), recorded now
    running = {**PRINT, "job_start": (now - dt.timedelta(hours=1)).isoformat(),
               "job_end": (now + dt.timedelta(minutes=3)).isoformat()}
    with pytest.raises(LedgerError, match="ends .* after the printed step"):
        ledger.record_step("CASE-1", "aorta", "printed", tech, detail=running)
    with pytest.raises(LedgerError, match="ends .* before it starts"):
        ledger.record_step("CASE-1", "aorta", "printed", tech, detail={**PRINT, "job_end": "2026-01-16T07:00:00"})
    with pytest.raises(LedgerError, match="in the future"):
        ledger.record_step("CASE-1", "aorta", "printed", tech, detail=PRINT, at="2099-01-01T00:00:00")
    state = ledger.record_step("CASE-1", "aorta", "printed", tech, detail=PRINT)
    printed = state["events"][-1]
    assert (printed["person"], printed["role"], printed["npi"]) == ("TECH^LAB", "technologist", None)
    assert printed["detail"]["serial"] == "F3B-0042" and printed["detail"]["lot"] == "L-7781"
    # Effort: the print job's 5.5 h measured from its times; the approval's 25 min entered, by a clinician.
    assert printed["effort"] == [{"category": "preparation_post_processing", "clinician": False,
                                  "minutes": 330.0, "source": "measured"}]
    approved = state["events"][-2]
    assert approved["effort"] == [{"category": "segmentation", "clinician": True, "minutes": 25.0,
                                   "source": "entered"}]
    assert {e["category"] for ev in state["events"] for e in ev["effort"]} <= set(REGISTRY_CATEGORIES)


def test_a_new_version_after_approval_needs_approval_again(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    walk(ledger, "CASE-1", "aorta", until="printed")
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])  # a re-run: version 2
    state = ledger.model_state("CASE-1", "aorta")
    assert (state["version"], state["state"]) == (2, "prepared")
    assert _lines(ledger) == ([], [("aorta", "prepared", "approval")])
    with pytest.raises(LedgerError, match="v2 is prepared"):
        ledger.record_step("CASE-1", "aorta", "post_processed", Person(*TECH), detail={"steps": ["cleaning"]})


def _publish_with_holds(ledger, out, case_id, model_id, holds, mesh=None):
    with ledger.start_run(case_id=case_id, patient_id=PATIENT, date_of_service=DATE) as run:
        reservation = run.reserve(model_id, billable(case_id, model_id), out / case_id / model_id)
        write_packet(reservation.staging, model_id, 4096)
        return run.publish(reservation, holds=holds, mesh_sha256=mesh)


HOLDS = [Hold("coding.icd10_not_billable", "ICD-10-CM I71.2 is not billable", "coding"),
         Hold("coding.ordering_npi_check_digit", "the ordering NPI fails its check digit", "coding"),
         Hold("coding.date_of_service_in_future", "the date of service 2099-01-01 is after today", "coding"),
         Hold("coding.date_of_service_before_birth", "the date of service is before the birth date", "coding"),
         Hold("prepare.no_printer_fit", "fits the printer in no orientation", "prepare"),
         Hold("mesh.qa_failed", "the mesh failed QA: not watertight", "mesh"),
         Hold("segment.tube_ends_inside_scan", "the vessel ends inside the scan", "segment"),
         Hold("coding.education_only", "purpose trainee education", "coding"),
         Hold("identity.override", "patient differs, overridden", "identity")]


RELEASABLE = [h for h in HOLDS if h.code not in UNRELEASABLE]


@pytest.mark.parametrize("hold", RELEASABLE, ids=[h.code for h in RELEASABLE])
def test_a_hold_keeps_a_delivered_line_unbillable_until_released(ledger, tmp_path, hold):
    published = _publish_with_holds(ledger, tmp_path / "out", "CASE-1", "aorta", [hold])
    assert [h.code for h in published.holds] == [hold.code]
    walk(ledger, "CASE-1", "aorta")
    assert _lines(ledger) == ([], [("aorta", "delivered", f"release of {hold.code}")])
    assert ledger.export(record=True)["claims"][0]["lines"] == []
    with pytest.raises(LedgerError, match="needs a reason"):
        ledger.release("CASE-1", "aorta", hold.code, Person("CODER^CHIEF", "coder"), reason=" ")
    ledger.release("CASE-1", "aorta", hold.code, Person("CODER^CHIEF", "coder"), reason="checked against the chart")
    assert _lines(ledger) == ([("aorta", "0559T")], [])
    entry = next(e for e in ledger.show("CASE-1")["audit"] if e["action"] == "hold.released")
    assert (entry["operator"], entry["detail"]["reason"]) == ("CODER^CHIEF", "checked against the chart")


INVALID = [h for h in HOLDS if h.code in ("coding.icd10_not_billable", "coding.ordering_npi_check_digit")]


@pytest.mark.parametrize("hold", INVALID, ids=[h.code for h in INVALID])
def test_a_hold_on_a_value_the_claim_would_carry_is_never_released(ledger, tmp_path, hold):
    """A non-billable ICD-10 code or an NPI failing its check digit would be on the claim: no one
    releases the hold (the case is corrected and re-run), and a release recorded before this rule
    does not make the line billable either."""
    _publish_with_holds(ledger, tmp_path / "out", "CASE-1", "aorta", [hold])
    walk(ledger, "CASE-1", "aorta")
    for person in (Person("CODER^CHIEF", "coder"), Person(*REVIEWER)):
        with pytest.raises(LedgerError, match="cannot be released.*a payer denies") as refused:
            ledger.release("CASE-1", "aorta", hold.code, person, reason="looked fine")
        assert "in the case file and run the case again" in refused.value.hint
    assert _lines(ledger) == ([], [("aorta", "delivered", f"a corrected case file and a re-run ({hold.code})")])
    assert not [e for e in ledger.show("CASE-1")["audit"] if e["action"] == "hold.released"]
    stored = ledger._db.execute("SELECT id FROM holds WHERE code = ?", (hold.code,)).fetchone()["id"]
    with ledger._write():  # as a release recorded by an older anatomodel
        ledger._db.execute("INSERT INTO releases (hold_id, person, role, reason, at) VALUES (?, ?, ?, ?, ?)",
                           (stored, "TECH^LAB", "technologist", "old release", "2026-01-17T00:00:00+00:00"))
    assert _lines(ledger) == ([], [("aorta", "delivered", f"a corrected case file and a re-run ({hold.code})")])
    assert ledger.export(record=True)["claims"][0]["lines"] == []


def test_a_coding_hold_is_released_by_a_coder_or_a_clinician(ledger, tmp_path):
    education = next(h for h in HOLDS if h.code == "coding.education_only")
    _publish_with_holds(ledger, tmp_path / "out", "CASE-1", "aorta", [education])
    _publish_with_holds(ledger, tmp_path / "out", "CASE-1", "ventricle", [education])
    with pytest.raises(LedgerError, match="needs a coder .* or a clinician"):
        ledger.release("CASE-1", "aorta", education.code, Person(*TECH), reason="the payer covers it")
    assert [h["released_by"] for h in ledger.model_state("CASE-1", "aorta")["holds"]] == [None]
    ledger.release("CASE-1", "aorta", education.code, Person("CODER^CHIEF", "coder"), reason="payer policy read")
    ledger.release("CASE-1", "ventricle", education.code, Person(*REVIEWER), reason="needed for the patient")
    released = {h["released_role"] for m in ("aorta", "ventricle") for h in ledger.model_state("CASE-1", m)["holds"]}
    assert released == {"coder", REVIEWER[1]}
    # Holds of other sources are released by the person who checked them, as before.
    mesh = next(h for h in HOLDS if h.code == "mesh.qa_failed")
    _publish_with_holds(ledger, tmp_path / "out", "CASE-1", "guide", [mesh])
    ledger.release("CASE-1", "guide", mesh.code, Person(*TECH), reason="repaired and checked by hand")


def test_a_reprint_of_an_already_charged_mesh_is_held(ledger, tmp_path):
    geometry = "ab" * 32
    _publish_with_holds(ledger, tmp_path / "out", "CASE-1", "aorta", [], mesh=geometry)
    reprint = _publish_with_holds(ledger, tmp_path / "out", "CASE-2", "aorta-copy", [], mesh=geometry)
    assert [h.code for h in reprint.holds] == ["ledger.duplicate_mesh"]
    assert "model aorta of case CASE-1" in reprint.holds[0].reason
    # The original's own re-run (same geometry) is not a duplicate of itself.
    assert _publish_with_holds(ledger, tmp_path / "out", "CASE-1", "aorta", [], mesh=geometry).holds == []


def test_a_released_reprint_is_billed_as_its_release_says(ledger, tmp_path):
    """Two models of one encounter with the same geometry, as a run records them: the second's
    line is flagged duplicate-mesh and held; once a named person releases the hold (a separately
    prepared model), the claim bills it, as the ledger's billable list already says."""
    import dataclasses

    geometry = "cd" * 32
    for case_id, model_id in (("CASE-1", "aorta"), ("CASE-2", "aorta-copy")):
        with ledger.start_run(case_id=case_id, patient_id=PATIENT, date_of_service=DATE) as run:
            reservation = run.reserve(model_id, dataclasses.replace(billable(case_id, model_id), mesh_sha256=geometry),
                                      tmp_path / "out" / case_id / model_id)
            write_packet(reservation.staging, model_id, 4096)
            published = run.publish(reservation, mesh_sha256=geometry)
        walk(ledger, case_id, model_id)
    assert published.charge_line.is_duplicate and [h.code for h in published.holds] == ["ledger.duplicate_mesh"]
    assert _lines(ledger, "CASE-2") == ([("aorta", "0559T")],
                                        [("aorta-copy", "delivered", "release of ledger.duplicate_mesh")])
    assert [(c["cpt"], c["model_ids"]) for c in ledger.export()["claims"][0]["lines"]] == [("0559T", ["aorta"])]
    ledger.release("CASE-2", "aorta-copy", "ledger.duplicate_mesh", Person("CODER^CHIEF", "coder"),
                   reason="a separately prepared model of the same anatomy")
    assert _lines(ledger, "CASE-2") == ([("aorta", "0559T"), ("aorta-copy", "0560T")], [])
    lines = ledger.export(record=True)["claims"][0]["lines"]
    assert [(c["cpt"], c["units"], c["model_ids"], c["held"]) for c in lines] == [
        ("0559T", 1, ["aorta"], {}), ("0560T", 1, ["aorta-copy"], {})]


def test_cli_walks_a_model_and_exits_19_while_held(tmp_path, cli):
    path, out = tmp_path / "ledger.sqlite3", tmp_path / "out"
    with Ledger(path) as ledger:
        _publish_with_holds(ledger, out, "CASE-1", "aorta", [HOLDS[7]])
    base = ["--ledger", str(path), "--by", "TECH^LAB", "--role", "technologist"]
    code, _, err = cli("approve", "CASE-1", "aorta", *base)
    assert code == LedgerError.exit_code and "needs a clinician" in err
    mistyped = tmp_path / "typo" / "ledger.sqlite3"
    code, _, err = cli("approve", "CASE-1", "aorta", "--ledger", str(mistyped), "--by", REVIEWER[0], "--role",
                       REVIEWER[1], "--npi", REVIEWER[2])
    assert code == LedgerError.exit_code and "there is no ledger at" in err
    assert not (tmp_path / "typo").exists()  # a mistyped path makes no folder and no empty ledger
    code, _, err = cli("approve", "CASE-1", "aorta", "--ledger", str(path), "--by", REVIEWER[0], "--role",
                       REVIEWER[1], "--npi", REVIEWER[2])
    assert code == 19 and "pending: waits for printing" in err and "held for review" in err
    code, _, err = cli("printed", "CASE-1", "aorta", *base, "--printer", "formlabs_form3b", "--serial", "S1",
                       "--material", "Clear V4", "--lot", "L1", "--layer-height-mm", "0.1",
                       "--job-start", "2026-01-16T08:00", "--job-end", "2026-01-16T09:00")
    assert code == 19
    assert cli("post-processed", "CASE-1", "aorta", *base, "--step", "cleaning", "--step", "curing")[0] == 19
    code, _, err = cli("delivered", "CASE-1", "aorta", *base, "--to", "Cardiac surgery", "--purpose", "planning")
    assert code == LedgerError.exit_code and "needs its print check before delivery" in err
    code, _, err = cli("delivered", "CASE-1", "aorta", *base, "--to", "Cardiac surgery", "--purpose", "planning",
                       "--qa-policy", "default")
    assert code == 4 and "requires a print check" in err  # ConfigError: the default policy requires one
    code, _, err = cli("delivered", "CASE-1", "aorta", *base, "--to", "Cardiac surgery", "--purpose", "planning",
                       "--qa-policy", "optional")
    assert code == 19 and "waits for release of coding.education_only" in err
    code, _, err = cli("release", "CASE-1", "aorta", "coding.education_only", *base, "--reason", "covered")
    assert code == LedgerError.exit_code and "needs a coder" in err  # a technologist does not release coding holds
    code, _, err = cli("release", "CASE-1", "aorta", "coding.education_only", "--ledger", str(path), "--by",
                       "CODER^CHIEF", "--role", "coder", "--reason", "the payer's policy covers it")
    assert code == 0 and "billable as 0559T" in err
    encounter = next((out / "encounters").iterdir())
    rows = list(csv.DictReader((encounter / "charges.csv").open()))
    assert [(r["cpt"], r["units"], r["model_ids"]) for r in rows] == [("0559T", "1", "aorta")]
    assert list(csv.DictReader((encounter / "charges_pending.csv").open())) == []


def test_charges_files_list_billable_and_pending_apart_and_edits_are_caught(tmp_path, cli):
    path, out = tmp_path / "ledger.sqlite3", tmp_path / "out"
    with Ledger(path) as ledger:
        publish(ledger, out, "CASE-1", ["aorta", "ventricle"])
        walk(ledger, "CASE-1", "aorta")
        from pipeline.case import write_encounter_charges

        files = write_encounter_charges(ledger, ledger.case_billing("CASE-1").encounter_id, out)
        assert ledger.verify().ok
    csv_path = next(p for p in files if p.name == "charges.csv")
    assert [(r["cpt"], r["model_ids"]) for r in csv.DictReader(csv_path.open())] == [("0559T", "aorta")]
    pending = list(csv.DictReader(next(p for p in files if p.name == "charges_pending.csv").open()))
    assert [(r["model_id"], r["state"], r["waiting_for"]) for r in pending] == [("ventricle", "prepared", "approval")]
    csv_path.write_text(csv_path.read_text().replace("0559T", "0560T"))
    code, printed, err = cli("ledger", "verify", "--ledger", str(path))
    assert code == LedgerError.exit_code and "charges.csv: changed since the ledger wrote it" in printed


def test_export_freezes_the_code_and_refuses_later_changes(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta", "ventricle"])
    walk(ledger, "CASE-1", "ventricle")
    exported = ledger.export(record=True)
    assert [(c["cpt"], c["model_ids"]) for c in exported["claims"][0]["lines"]] == [("0559T", ["ventricle"])]
    assert exported["claims"][0]["pending"][0]["model_id"] == "aorta"
    with pytest.raises(LedgerError, match="was exported for billing"):
        ledger.void("CASE-1", "ventricle", reason="entered in error")
    # A re-run of the exported model with another ICD-10 code is refused; the unexported one is corrected.
    with ledger.start_run(case_id="CASE-1", patient_id=PATIENT, date_of_service=DATE) as run:
        corrected = billable("CASE-1", "aorta")
        corrected = type(corrected)(**{**corrected.__dict__, "icd10": ("I71.23",), "modifiers": ("22",),
                                       "modifier_reasons": {"22": "twice the usual segmentation time"}})
        reservation = run.reserve("aorta", corrected, tmp_path / "out" / "CASE-1" / "aorta")
        assert reservation.charge_line.icd10 == ["I71.23"] and reservation.charge_line.modifiers == ["22"]
        run.abandon(reservation)
        with pytest.raises(LedgerError, match="exported for billing; its icd10"):
            run.reserve("ventricle", type(corrected)(**{**corrected.__dict__, "model_id": "ventricle"}),
                        tmp_path / "out" / "CASE-1" / "ventricle")
    corrections = [e for e in ledger.show("CASE-1")["audit"] if e["action"] == "charge.corrected"]
    assert corrections[0]["detail"]["changed"]["icd10"] == {"from": ["I71.21"], "to": ["I71.23"]}
    history = _revisions(ledger, "CASE-1", "aorta")
    assert [r[:2] for r in history] == [(1, "reserved"), (2, "committed"), (3, "committed")]
    assert "icd10" in history[2][3] and "modifiers" in history[2][3]
    assert [r[:2] for r in _revisions(ledger, "CASE-1", "ventricle")] == [(1, "reserved"), (2, "committed")]
    walk(ledger, "CASE-1", "aorta")
    lines = ledger.export(record=True)["claims"][0]["lines"]
    assert [(c["cpt"], c["modifiers"], c["model_ids"]) for c in lines] == [
        ("0559T", [], ["ventricle"]), ("0560T", ["22"], ["aorta"])]


def test_every_view_and_export_shows_the_code_billed_in_delivery_order(new_ledger, tmp_path, cli):
    """Run order aorta, ventricle; delivery order ventricle, aorta: the line delivered first is the
    encounter's 0559T in the claim, the charge rows, the CSV, ``ledger list`` and ``ledger show``."""
    location = new_ledger()
    with Ledger(location) as ledger:
        publish(ledger, tmp_path / "out", "CASE-1", ["aorta", "ventricle"])
        delivered = ["ventricle", "aorta"]
        for model_id in delivered:
            walk(ledger, "CASE-1", model_id)
    expected = {delivered[0]: "0559T", delivered[1]: "0560T"}  # first billable primary, the next add-on
    where = ("--ledger", str(location))
    exported = json.loads(cli("ledger", "export", "--preview", *where)[1])
    assert {m: c["cpt"] for c in exported["claims"][0]["lines"] for m in c["model_ids"]} == expected
    assert {c["model_id"]: c["cpt"] for c in exported["charges"]} == expected
    assert {c["model_id"]: (c["line"]["cpt"], c["cpt_basis"]) for c in exported["charges"]} == {
        model: (cpt, "billed") for model, cpt in expected.items()}
    assert "order in which the encounter's lines became billable" in exported["code_rule"]
    code, text, err = cli("ledger", "export", "--format", "csv", "--preview", *where)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["model_id"]: r["cpt"] for r in rows} == expected
    assert all(r["cpt_basis"].startswith("billed: numbered in the order") for r in rows)
    shown = json.loads(cli("ledger", "show", "CASE-1", "--json", *where)[1])
    assert {c["model_id"]: c["cpt"] for c in shown["charges"]} == expected
    # the statement a coder reads names the code the line is billed as
    statements = {c["model_id"]: c["line"]["medical_necessity"] for c in shown["charges"]}
    assert "reported as 0559T (first anatomic model)" in statements[delivered[0]]
    assert "reported as 0560T (each additional anatomic model)" in statements[delivered[1]]
    listed = json.loads(cli("ledger", "list", "--json", *where)[1])[0]["charges"]
    assert listed == "; ".join(f"{m} {expected[m]} (billed)" for m in ("aorta", "ventricle"))  # in line order
    for command in (("ledger", "list"), ("ledger", "show", "CASE-1")):
        code, text, _ = cli(*command, *where)
        assert code == 0 and "became billable" in " ".join(text.split())
    # Recorded: the same codes, now exported and kept.
    rows = list(csv.DictReader(io.StringIO(cli("ledger", "export", "--format", "csv", *where)[1])))
    assert {r["model_id"]: (r["cpt"], r["cpt_basis"].split(":")[0]) for r in rows} == {
        model: (cpt, "exported") for model, cpt in expected.items()}
    rows = list(csv.DictReader(io.StringIO(cli("ledger", "export", "--format", "csv", "--preview", *where)[1])))
    assert {r["model_id"]: (r["cpt"], r["cpt_basis"].split(":")[0]) for r in rows} == {
        model: (cpt, "exported") for model, cpt in expected.items()}


def test_a_rerun_after_export_is_refused_and_the_submitted_line_stays(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta", "ventricle"])
    walk(ledger, "CASE-1", "aorta")
    submitted = ledger.export(record=True)["claims"][0]["lines"]
    assert [c["model_ids"] for c in submitted] == [["aorta"]]
    with pytest.raises(LedgerError, match="CASE-1/aorta was exported for billing; a re-run would") as refused:
        ledger.check_rerun("CASE-1", ["aorta", "ventricle"])
    assert "correct or void it with the payer" in refused.value.hint
    ledger.check_rerun("CASE-1", ["ventricle"])  # not exported: may run again
    ledger.check_rerun("CASE-NEW", ["aorta"])  # not in the ledger yet
    with pytest.raises(LedgerError, match="was exported for billing"):  # the run itself refuses it too
        publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    assert ledger.model_state("CASE-1", "aorta")["version"] == 1
    assert ledger.model_state("CASE-1", "aorta")["state"] == "delivered"
    assert ledger.export(record=False)["claims"][0]["lines"] == submitted  # still on the claim, as submitted


def test_void_undo_and_a_case_id_moved_to_a_corrected_patient(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    ledger.void("CASE-1", "aorta", reason="MRN typed wrong")
    for step, person, detail in [("approved", Person(*REVIEWER), {}), ("discontinued", Person(*TECH), {"reason": "x"})]:
        with pytest.raises(LedgerError, match="is void: no lifecycle step"):  # a void charge is not revived by a step
            ledger.record_step("CASE-1", "aorta", step, person, detail=detail)
    ledger.unvoid("CASE-1", "aorta", reason="the MRN was right after all")
    assert ledger.show("CASE-1")["charges"][0]["status"] == "committed"
    with pytest.raises(LedgerError, match="is not void"):
        ledger.unvoid("CASE-1", "aorta", reason="again")
    with pytest.raises(LedgerError, match="another patient or date"):
        publish(ledger, tmp_path / "out", "CASE-1", ["aorta"], patient="PT-CORRECTED")
    ledger.void("CASE-1", "aorta", reason="MRN typed wrong")
    with ledger.start_run(case_id="CASE-1", patient_id="PT-CORRECTED", date_of_service=DATE,
                          correction="MRN corrected from the order") as run:
        reservation = run.reserve("aorta", billable("CASE-1", "aorta", "PT-CORRECTED"),
                                  tmp_path / "out" / "CASE-1" / "aorta")
        write_packet(reservation.staging, "aorta", 4096)
        run.publish(reservation)
    walk(ledger, "CASE-1", "aorta")
    billing = ledger.case_billing("CASE-1")
    assert billing.patient_id == "PT-CORRECTED" and [e.line.cpt for e in billing.billable] == ["0559T"]
    assert any(e["action"] == "case.encounter_corrected" for e in ledger.show("CASE-1")["audit"])
    # void -> undo -> void -> moved to the corrected encounter -> re-decided for the corrected
    # patient -> committed there: eight revisions, each with its reason; the first five on the
    # first encounter, the last three on the corrected one.
    history = _revisions(ledger, "CASE-1", "aorta")
    assert [(n, status) for n, status, _, _ in history] == [
        (1, "reserved"), (2, "committed"), (3, "void"), (4, "committed"), (5, "void"), (6, "reserved"),
        (7, "reserved"), (8, "committed")]
    assert [reason for *_, reason in history][2:6] == [
        "MRN typed wrong", "the MRN was right after all", "MRN typed wrong",
        "case moved to another encounter: MRN corrected from the order"]
    assert history[6][3].startswith("re-decided by run")
    encounters = [r["encounter_id"] for r in ledger.show("CASE-1")["charge_revisions"]]
    assert len(set(encounters[:5])) == 1 and set(encounters[5:]) == {billing.encounter_id} != {encounters[0]}
    _assert_written_once(ledger)
    assert ledger.verify().ok


def test_removed_model_is_voided_on_the_next_run(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta", "ventricle"])
    with ledger.start_run(case_id="CASE-1", patient_id=PATIENT, date_of_service=DATE) as run:
        assert run.void_removed(["aorta"]) == ["ventricle"]
    statuses = {c["model_id"]: c["status"] for c in ledger.show("CASE-1")["charges"]}
    assert statuses == {"aorta": "committed", "ventricle": "void"}


def test_discontinue_needs_modifier_53_allowed_by_the_rules(ledger, tmp_path, monkeypatch):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    walk(ledger, "CASE-1", "aorta", until="approved")
    from pipeline import coding

    real = coding.validate_modifiers

    def refuse_53(modifiers, reasons=None, rules=None):
        if "53" in modifiers:
            raise CodingError("modifier 53 is refused by this payer")
        return real(modifiers, reasons, rules)

    monkeypatch.setattr(coding, "validate_modifiers", refuse_53)
    with pytest.raises(CodingError, match="53 is refused"):
        ledger.record_step("CASE-1", "aorta", "discontinued", Person(*TECH), detail={"reason": "cracked"})
    assert ledger.model_state("CASE-1", "aorta")["state"] == "approved"


def test_show_json_has_the_lifecycle(tmp_path, cli):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
        walk(ledger, "CASE-1", "aorta", until="approved")
    shown = json.loads(cli("ledger", "show", "CASE-1", "--json", "--ledger", str(path))[1])
    assert [e["action"] for e in shown["audit"]][-1] == "model.approved"
    rows = list(csv.DictReader(io.StringIO(cli("ledger", "export", "--format", "csv", "--preview", "--ledger",
                                               str(path))[1])))
    assert [(r["model_id"], r["status"]) for r in rows] == [("aorta", "committed")]


def test_effort_per_registry_category_from_the_events(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    walk(ledger, "CASE-1", "aorta")  # 10 min entered at each step, the print job measured (5.5 h)
    effort = ledger.model_state("CASE-1", "aorta")["effort_minutes"]
    assert effort["segmentation"] == {"clinician": 10.0, "non_clinician": 0.0}  # the radiologist's approval
    assert effort["preparation_post_processing"] == {"clinician": 0.0, "non_clinician": 330.0 + 10.0 + 10.0}
    assert effort["consultation"] == {"clinician": 0.0, "non_clinician": 10.0}  # the delivery


def test_a_dead_runs_reservation_is_voidable_and_blocks_nothing(ledger, tmp_path):
    with ledger.start_run(case_id="CASE-D", patient_id=PATIENT, date_of_service=DATE) as run:
        run.reserve("first", billable("CASE-D", "first"), tmp_path / "out" / "CASE-D" / "first")
    publish(ledger, tmp_path / "out", "CASE-E", ["second"])
    walk(ledger, "CASE-E", "second")
    assert [e.line.cpt for e in ledger.case_billing("CASE-E").billable] == ["0559T"]
    ledger.void("CASE-D", "first", reason="the run died; the model was made again as CASE-E")
    assert ledger.case_billing("CASE-E").pending == [] and ledger.verify().ok


def test_cli_ledger_charges_rewrites_the_encounter_files(tmp_path, cli):
    path, out = tmp_path / "ledger.sqlite3", tmp_path / "out"
    with Ledger(path) as ledger:
        publish(ledger, out, "CASE-1", ["aorta"])
        walk(ledger, "CASE-1", "aorta")
    assert cli("ledger", "charges", "CASE-1", "--ledger", str(path))[0] == 0
    rows = list(csv.DictReader(next((out / "encounters").iterdir()).joinpath("charges.csv").open()))
    assert [(r["cpt"], r["model_ids"]) for r in rows] == [("0559T", "aorta")]
    assert cli("ledger", "verify", "--ledger", str(path))[0] == 0


def test_stage_findings_become_holds():
    from pipeline.checks import stage_holds
    from pipeline.mesh.report import MeshReport

    good = MeshReport("aorta", 1, 1000, [1.0, 1.0, 1.0], 1000.0, [[0, 0, 0], [9, 9, 9]], [], watertight=True,
                      winding_consistent=True)
    bad = MeshReport("aorta", 1, 1000, [1.0, 1.0, 1.0], 1000.0, [[0, 0, 0], [9, 9, 9]], [], watertight=False,
                     winding_consistent=True, self_intersecting_faces=12)
    segment = type("SegmentReport", (), {"holds": [Hold("segment.tube_ends_inside_scan", "ends inside", "segment")]})()
    assert stage_holds(None, good, None) == []
    codes = [h.code for h in stage_holds(segment, bad, None)]
    assert codes == ["segment.tube_ends_inside_scan", "mesh.qa_failed"]
    assert "not watertight, 12 self-intersecting faces" in stage_holds(None, bad, None)[0].reason


_STRICT_PAYER = """payer: strict_payer
name: Strict Health Plan
reviewed: 2026-12-01
modifiers:
  - modifier: "53"
    codes: ["0559T", "0560T"]
    allowed: false
    note: "a discontinued model is not paid"
    source: "Strict Health Plan provider manual, section 9 (test fixture)"
"""


def test_a_discontinued_model_of_a_payer_that_refuses_53_stays_pending_with_why(ledger, tmp_path, monkeypatch):
    """The payer's rules file says it does not pay modifier 53: the discontinued line is held
    (listed apart, with the payer's reason) until released; a reduced (52) line it allows is billed."""
    import dataclasses

    from pipeline import payers

    (tmp_path / "site" / "payers").mkdir(parents=True)
    (tmp_path / "site" / "payers" / "strict_payer.yaml").write_text(_STRICT_PAYER)
    monkeypatch.setenv("ANATOMODEL_CONFIG_PATH", str(tmp_path / "site"))
    payers.load_payer.cache_clear()
    with ledger.start_run(case_id="CASE-P", patient_id=PATIENT, date_of_service=DATE) as run:
        for model_id in ("aorta", "ventricle"):
            model = dataclasses.replace(billable("CASE-P", model_id), payer="strict_payer")
            reservation = run.reserve(model_id, model, tmp_path / "out" / "CASE-P" / model_id)
            write_packet(reservation.staging, model_id, 4096)
            run.publish(reservation)
    tech = Person(*TECH)
    walk(ledger, "CASE-P", "aorta", until="printed")
    ledger.record_step("CASE-P", "aorta", "discontinued", tech, detail={"reason": "support failure at layer 80"})
    walk(ledger, "CASE-P", "ventricle", until="printed")
    ledger.record_step("CASE-P", "ventricle", "reduced", tech, detail={"reason": "one chamber printed"})
    billable_lines, pending = _lines(ledger, "CASE-P")
    assert billable_lines == [("ventricle", "0559T")]
    assert pending == [("aorta", "discontinued", f"release of {payers.HOLD_MODIFIER}")]
    reason = ledger.case_billing("CASE-P").pending[0].holds[0].reason
    assert "Strict Health Plan does not pay a discontinued model" in reason and "section 9" in reason
    ledger.release("CASE-P", "aorta", payers.HOLD_MODIFIER, Person("CODER^CHIEF", "coder"),
                   reason="the plan agreed in writing to pay this one")
    assert [(m, c) for m, c in _lines(ledger, "CASE-P")[0]] == [("ventricle", "0559T"), ("aorta", "0560T")]
    payers.load_payer.cache_clear()
