"""Print QA as a step of the model's life: ``anatomodel check`` records ``checked`` in the ledger.

A real model (the mesh stage's blob) is published into a real ledger (SQLite and PostgreSQL),
approved, printed and post-processed; its "scans" are the model moved by a rigid motion (a
perfect print: zero deviation by construction) and the model with a region pushed out by 2 mm
(beyond the default policy's 1 mm maximum, so the verdict must be FAIL). The assertions are
on the ledger's events, holds and billing lines.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest
import trimesh

from pipeline.config import builtin_config_dir
from pipeline.errors import HeldForReview, LedgerError
from pipeline.ledger import Ledger
from pipeline.ledger.lifecycle import Person
from pipeline.mesh import write_model
from pipeline.model import Model
from postgres_server import new_ledger, postgres_server  # noqa: F401  (fixtures)
from test_check import BUMP_CENTRE, _blob
from test_ledger import cli  # noqa: F401  (a fixture)
from test_ledger_protocol import DATE, PATIENT, TECH, billable, walk

PUSH_MM = 2.0
CHECKER = ["--by", "TECH^QA", "--role", "technologist"]
PRINT = {"printer": "formlabs_form3b", "serial": "F3B-0042", "material": "Clear V4", "lot": "L-7782",
         "layer_height_mm": 0.1, "job_start": "2026-01-17T08:00:00+00:00", "job_end": "2026-01-17T13:30:00+00:00"}


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """The model, a scan of a perfect print (rigidly moved) and one with a region pushed out."""
    folder = tmp_path_factory.mktemp("scans")
    model = _blob()
    motion = trimesh.transformations.random_rotation_matrix(np.random.default_rng(3).random(3))
    motion[:3, 3] = [40.0, -25.0, 12.0]
    good = model.copy()
    good.apply_transform(motion)
    good.export(folder / "pass.stl")
    distance = np.linalg.norm(model.vertices - BUMP_CENTRE, axis=1)
    weight = np.where(distance < 5, 1.0, np.where(distance < 8, np.cos((distance - 5) / 3 * np.pi / 2) ** 2, 0.0))
    bad = trimesh.Trimesh(model.vertices + PUSH_MM * weight[:, None] * model.vertex_normals, model.faces)
    bad.apply_transform(motion)
    bad.export(folder / "fail.stl")
    return model, folder / "pass.stl", folder / "fail.stl"


def _publish(book, out, case_id, model_id, mesh):
    """Publish a model folder holding a real ``model.stl`` (and its SHA256SUMS)."""
    with book.start_run(case_id=case_id, patient_id=PATIENT, date_of_service=DATE) as run:
        reservation = run.reserve(model_id, billable(case_id, model_id), out / case_id / model_id)
        write_model(Model(mesh, model_id), reservation.staging / "model.stl")
        digest = hashlib.sha256((reservation.staging / "model.stl").read_bytes()).hexdigest()
        (reservation.staging / "SHA256SUMS").write_text(f"{digest}  model.stl\n")
        run.publish(reservation)
    return out / case_id / model_id


def _lines(book, case_id="CASE-QA"):
    billing = book.case_billing(case_id)
    return ([(e.model_id, e.line.cpt) for e in billing.billable],
            [(e.model_id, e.state, e.waiting_for) for e in billing.pending])


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


DELIVER = {"recipient": "Cardiac surgery", "purpose": "surgical planning"}


def test_a_passing_check_is_recorded_and_the_delivered_model_is_billable(new_ledger, tmp_path, scans, cli):
    model, good, _ = scans
    location = new_ledger()
    with Ledger(location) as book:
        folder = _publish(book, tmp_path / "out", "CASE-QA", "aorta", model)
        walk(book, "CASE-QA", "aorta", until="post_processed")
        assert _lines(book) == ([], [("aorta", "post_processed", "print QA")])
        with pytest.raises(LedgerError, match="needs its print check before delivery"):
            book.record_step("CASE-QA", "aorta", "delivered", Person(*TECH), detail=DELIVER)
    code, printed, err = cli("check", str(folder), str(good), "--ledger", str(location), *CHECKER, "--json")
    assert code == 0, err
    assert json.loads(printed)["recorded"] == {"case_id": "CASE-QA", "model_id": "aorta", "version": 1,
                                               "state": "checked"}
    assert (tmp_path / "out" / "CASE-QA" / "print-qa" / "aorta" / "check.json").is_file()
    with Ledger(location) as book:
        state = book.model_state("CASE-QA", "aorta")
        event = state["events"][-1]
        assert (state["state"], event["step"], event["person"], event["role"]) == (
            "checked", "checked", "TECH^QA", "technologist")
        detail = event["detail"]
        # The policy and the scan are identified by checksums computed here from the files.
        assert (detail["passed"], detail["policy"], detail["policy_version"], detail["failed"]) == (
            True, "default", "1", [])
        assert detail["policy_sha256"] == _sha(builtin_config_dir() / "qa" / "default.yaml")
        assert detail["scan_sha256"] == _sha(good)
        figures = detail["figures"]
        # A rigid copy of the model deviates by nothing (up to the STL's float32 rounding).
        assert abs(figures["mean_mm"]) < 0.01 and figures["max_abs_mm"] < 0.05 and figures["sd_mm"] < 0.01
        assert figures["share_beyond_tolerance"] == 0 and abs(figures["scale"] - 1) < 1e-3
        assert {"p95_abs_mm", "coverage", "tolerance_mm"} <= set(figures)
        assert state["holds"] == [] and _lines(book) == ([], [("aorta", "checked", "delivery")])
        with pytest.raises(LedgerError, match="passed its print check: deliver it"):
            book.record_step("CASE-QA", "aorta", "printed", Person(*TECH), detail=PRINT)
        book.record_step("CASE-QA", "aorta", "delivered", Person(*TECH), detail=DELIVER)
        assert _lines(book) == ([("aorta", "0559T")], [])
        assert "model.checked" in [e["action"] for e in book.show("CASE-QA")["audit"]]
        assert book.verify().ok


def test_a_failed_check_holds_the_charge_until_a_reprint_passes_with_no_extra_code(new_ledger, tmp_path, scans,
                                                                                      cli):
    model, good, bad = scans
    location = new_ledger()
    tech = Person(*TECH)
    with Ledger(location) as book:
        _publish(book, tmp_path / "out", "CASE-QA", "ventricle", model)
        walk(book, "CASE-QA", "ventricle")  # delivered unchecked under the optional policy: 0559T
        folder = _publish(book, tmp_path / "out", "CASE-QA", "aorta", model)
        walk(book, "CASE-QA", "aorta", until="post_processed")
    code, _, err = cli("check", str(folder), str(bad), "--ledger", str(location), *CHECKER)
    assert code == HeldForReview.exit_code == 19, err
    with Ledger(location) as book:
        state = book.model_state("CASE-QA", "aorta")
        detail = state["events"][-1]["detail"]
        assert detail["passed"] is False and "max_abs_deviation" in detail["failed"]
        # The pushed region is 2 mm out: the largest deviation measured is close to it.
        assert detail["figures"]["max_abs_mm"] == pytest.approx(PUSH_MM, abs=0.15)
        held = [h for h in state["holds"] if h["released_by"] is None]
        assert held and {h["source"] for h in held} == {"print_qa"}
        assert "print_qa.max_abs_deviation" in {h["code"] for h in held}
        billable_lines, pending = _lines(book)
        assert billable_lines == [("ventricle", "0559T")]
        assert pending[0][:2] == ("aorta", "checked") and pending[0][2].endswith("or a reprint")
        with pytest.raises(LedgerError, match="failed its print check"):
            book.record_step("CASE-QA", "aorta", "delivered", tech, detail=DELIVER)
        # The reprint: a new print of the same version, which releases the failed check's holds.
        state = book.record_step("CASE-QA", "aorta", "printed", tech, detail=PRINT)
        assert (state["version"], state["state"]) == (1, "printed")
        assert all(h["released_by"] == "TECH^LAB" and h["release_reason"].startswith("reprinted")
                   for h in state["holds"])
        book.record_step("CASE-QA", "aorta", "post_processed", tech, detail={"steps": ["cleaning", "curing"]})
        with pytest.raises(LedgerError, match="reprinted after a failed print check"):
            book.record_step("CASE-QA", "aorta", "delivered", tech,
                             detail={**DELIVER, "qa_policy": "optional", "qa_required": False})
    assert cli("check", str(folder), str(good), "--ledger", str(location), *CHECKER)[0] == 0
    with Ledger(location) as book:
        book.record_step("CASE-QA", "aorta", "delivered", tech, detail=DELIVER)
        billing = book.case_billing("CASE-QA")
        assert [(e.model_id, e.line.cpt) for e in billing.billable] == [("ventricle", "0559T"), ("aorta", "0560T")]
        # One 0560T of one unit: the reprint is no new charge.
        assert [(c.cpt, c.units) for c in billing.claim()] == [("0559T", 1), ("0560T", 1)]
        assert [c["model_id"] for c in book.show("CASE-QA")["charges"]].count("aorta") == 1
        assert [e["step"] for e in book.model_state("CASE-QA", "aorta")["events"]] == [
            "prepared", "approved", "printed", "post_processed", "checked", "printed", "post_processed", "checked",
            "delivered"]
        assert book.verify().ok


def test_a_failed_check_released_by_a_named_person_is_delivered_and_billed(new_ledger, tmp_path, scans):
    from pipeline.check import check_print, load_policy
    from pipeline.check.policy import policy_sha256
    from pipeline.check.record import record_check, scan_sha256

    model, _, bad = scans
    with Ledger(new_ledger()) as book:
        folder = _publish(book, tmp_path / "out", "CASE-QA", "aorta", model)
        walk(book, "CASE-QA", "aorta", until="post_processed")
        report = check_print(folder, bad)
        assert not report.passed
        state = record_check(book, "CASE-QA", "aorta", report, Person(*TECH), policy=load_policy("default"),
                             policy_sha256=policy_sha256("default"), scan_sha=scan_sha256(bad))
        codes = [h["code"] for h in state["holds"]]
        assert codes == [h.code for h in report.holds]
        engineer = Person("ENGINEER^LEAD", "engineer")
        for code in codes:
            assert _lines(book)[0] == []
            book.release("CASE-QA", "aorta", code, engineer, reason="bump is at the cut end, away from the repair")
        book.record_step("CASE-QA", "aorta", "delivered", Person(*TECH), detail=DELIVER)
        assert _lines(book) == ([("aorta", "0559T")], [])
        released = [e for e in book.show("CASE-QA")["audit"] if e["action"] == "hold.released"]
        assert {e["operator"] for e in released} == {"ENGINEER^LEAD"} and len(released) == len(codes)


def test_a_passing_rescan_after_a_failed_check_says_the_holds_need_a_release(new_ledger, tmp_path, scans):
    """A rescan of the same print that passes leaves the failed check's holds open and a reprint
    refused: the delivery refusal says so (it used to ask for a reprint), and a release ends it."""
    from pipeline.check import check_print, load_policy
    from pipeline.check.policy import policy_sha256
    from pipeline.check.record import record_check, scan_sha256

    model, good, bad = scans
    with Ledger(new_ledger()) as book:
        folder = _publish(book, tmp_path / "out", "CASE-QA", "aorta", model)
        walk(book, "CASE-QA", "aorta", until="post_processed")
        for scan in (bad, good):
            state = record_check(book, "CASE-QA", "aorta", check_print(folder, scan), Person(*TECH),
                                 policy=load_policy("default"), policy_sha256=policy_sha256("default"),
                                 scan_sha=scan_sha256(scan))
        assert [e["detail"]["passed"] for e in state["events"] if e["step"] == "checked"] == [False, True]
        with pytest.raises(LedgerError, match="passed its print check: deliver it"):
            book.record_step("CASE-QA", "aorta", "printed", Person(*TECH), detail=PRINT)
        with pytest.raises(LedgerError, match="passed its last print check, but an earlier failed check's holds"):
            book.record_step("CASE-QA", "aorta", "delivered", Person(*TECH), detail=DELIVER)
        for code in {h["code"] for h in state["holds"] if h["released_by"] is None}:
            book.release("CASE-QA", "aorta", code, Person("ENGINEER^LEAD", "engineer"), reason="the first scan was bad")
        book.record_step("CASE-QA", "aorta", "delivered", Person(*TECH), detail=DELIVER)
        assert _lines(book) == ([("aorta", "0559T")], [])


def test_check_refuses_a_model_out_of_order_before_any_work(tmp_path, scans, cli):
    model, good, bad = scans
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as book:
        folder = _publish(book, tmp_path / "out", "CASE-QA", "aorta", model)
        walk(book, "CASE-QA", "aorta", until="printed")
        with pytest.raises(LedgerError, match="failed print check needs its holds"):
            book.record_step("CASE-QA", "aorta", "checked", Person(*TECH),
                             detail={"passed": False, "policy": "default", "policy_version": "1",
                                     "scan_sha256": "ab", "figures": {}})
    code, _, err = cli("check", str(folder), str(good), "--ledger", str(path), *CHECKER)
    assert code == LedgerError.exit_code and "is printed: a print check follows post-processing" in err
    assert not (tmp_path / "out" / "CASE-QA" / "print-qa").exists()  # refused before the check
    with Ledger(path) as book:
        book.record_step("CASE-QA", "aorta", "post_processed", Person(*TECH), detail={"steps": ["cleaning"]})
    code, _, err = cli("check", str(folder), str(good), "--ledger", str(path))
    assert code == LedgerError.exit_code and "give --by NAME --role ROLE" in err
    # Not recorded: a failed check is still held for review (19), a pass exits 0; the ledger is untouched.
    assert cli("check", str(folder), str(bad), "--ledger", str(path), "--no-record")[0] == 19
    assert cli("check", str(folder), str(good), "--ledger", str(tmp_path / "none.sqlite3"))[0] == 0
    assert not (tmp_path / "none.sqlite3").exists()
    with Ledger(path) as book:
        assert book.model_state("CASE-QA", "aorta")["state"] == "post_processed"


def test_a_version_3_ledger_is_migrated_to_admit_checked_and_keeps_its_chain(new_ledger, tmp_path, scans,
                                                                             monkeypatch):
    from pipeline.ledger import chain, pg, schema

    model = scans[0]
    location = new_ledger()
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(pg, "MIGRATIONS", schema.MIGRATIONS[:3])
    with Ledger(location) as book:
        _publish(book, tmp_path / "out", "CASE-QA", "aorta", model)
        walk(book, "CASE-QA", "aorta", until="post_processed")
        if not pg.is_url(location):
            db = sqlite3.connect(location)
            chain.register(db)
            with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint"):  # version 3 refuses the step
                db.execute("INSERT INTO events (case_ref, model_id, version, step, person, role, at, recorded_at) "
                           "VALUES (1, 'aorta', 1, 'checked', 'x', 'y', 'z', 'z')")
            db.close()
        with pytest.raises(Exception, match="(?i)check"):  # the version 3 table refuses the step (either back end)
            book.record_step("CASE-QA", "aorta", "checked", Person(*TECH), holds=[],
                             detail={"passed": True, "policy": "default", "policy_version": "1", "scan_sha256": "ab",
                                     "figures": {"mean_abs_mm": 0.0}})
    monkeypatch.undo()
    with Ledger(location) as book:
        version = "SELECT version FROM ledger_schema" if pg.is_url(location) else "PRAGMA user_version"
        assert book._db.execute(version).fetchone()[0] == len(schema.MIGRATIONS) == 4
        assert book.verify().ok  # the rows the chain covers are unchanged
        assert [e["step"] for e in book.model_state("CASE-QA", "aorta")["events"]] == [
            "prepared", "approved", "printed", "post_processed"]
        book.record_step("CASE-QA", "aorta", "checked", Person(*TECH), holds=[],
                         detail={"passed": True, "policy": "default", "policy_version": "1", "scan_sha256": "ab",
                                 "figures": {"mean_abs_mm": 0.0}})
        assert book.model_state("CASE-QA", "aorta")["state"] == "checked" and book.verify().ok
