"""The case ledger: schema, append-only audit log, charge rules, void/discontinue, verify, CLI."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sqlite3
from pathlib import Path

import pytest

from pipeline.errors import LedgerError
from pipeline.ledger import Ledger, chain, default_ledger_path, resolve_ledger_path
from pipeline.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from postgres_server import new_ledger, postgres_server  # noqa: F401  (fixtures: both back ends)
from test_ledger_protocol import DATE, PATIENT, billable, deliver_all, write_packet


def publish(ledger: Ledger, out: Path, case_id: str, models: list[str], patient: str = PATIENT):
    with ledger.start_run(case_id=case_id, patient_id=patient, date_of_service=DATE) as run:
        published = []
        for model_id in models:
            reservation = run.reserve(model_id, billable(case_id, model_id, patient), out / case_id / model_id)
            write_packet(reservation.staging, model_id, 4096)
            published.append(run.publish(reservation))
    return published


@pytest.fixture
def cli(capsys):
    """Run ``anatomodel ARGS`` in this process; return (exit code, stdout, stderr)."""
    from pipeline.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, " ".join(captured.err.split())  # unwrap rich's line breaks

    return run


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as opened:
        yield opened


def test_new_ledger_is_wal_with_current_schema_and_tables(ledger):
    db = sqlite3.connect(ledger.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"cases", "encounters", "models", "runs", "charges", "audit_log"} <= tables
    assert ledger._db.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_migrations_apply_in_order_and_keep_the_records(tmp_path, monkeypatch):
    from pipeline.ledger import schema

    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    later = "ALTER TABLE cases ADD COLUMN note TEXT NOT NULL DEFAULT 'migrated';"
    monkeypatch.setattr(schema, "MIGRATIONS", (*MIGRATIONS, later))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Ledger(path) as ledger:
        assert ledger._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert [tuple(r) for r in ledger._db.execute("SELECT case_id, note FROM cases")] == [("CASE-1", "migrated")]
        assert ledger.verify().ok


def test_ledger_from_a_newer_anatomodel_is_refused(tmp_path):
    path = tmp_path / "future.sqlite3"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LedgerError, match="newer"):
        Ledger(path)


def test_not_a_database_gives_a_clear_error(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(LedgerError, match="not a usable ledger"):
        Ledger(path)


def test_location_is_option_then_environment_then_per_user(tmp_path, monkeypatch):
    monkeypatch.setenv("ANATOMODEL_LEDGER", str(tmp_path / "env.sqlite3"))
    assert resolve_ledger_path(tmp_path / "given.sqlite3") == tmp_path / "given.sqlite3"
    assert resolve_ledger_path() == tmp_path / "env.sqlite3"
    monkeypatch.delenv("ANATOMODEL_LEDGER")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_ledger_path() == default_ledger_path() == tmp_path / "xdg" / "anatomodel" / "ledger.sqlite3"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_ledger_path() == Path.home() / ".local" / "share" / "anatomodel" / "ledger.sqlite3"


def test_audit_log_refuses_update_and_delete(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    db = sqlite3.connect(ledger.path)
    with pytest.raises(sqlite3.OperationalError, match="no such function: chain_digest"):
        db.execute("UPDATE audit_log SET action = 'nothing happened'")  # outside anatomodel: refused
    chain.register(db)
    count = db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    assert count >= 4  # run started, charge reserved, charge committed, model published, run ok
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit_log SET action = 'nothing happened'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit_log")
    assert db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == count


def test_rerun_makes_a_new_version_never_a_new_charge(ledger, tmp_path):
    first = publish(ledger, tmp_path / "out", "CASE-1", ["aorta", "ventricle"])
    again = publish(ledger, tmp_path / "out", "CASE-1", ["aorta", "ventricle"])
    assert [(m.charge_line.cpt, m.version) for m in first] == [("0559T", 1), ("0560T", 1)]
    assert [(m.charge_line.cpt, m.version) for m in again] == [("0559T", 2), ("0560T", 2)]
    charges = ledger.export()["charges"]
    assert [(c["model_id"], c["cpt"], c["status"]) for c in charges] == [
        ("aorta", "0559T", "committed"), ("ventricle", "0560T", "committed")]
    statuses = sorted((m["model_id"], m["version"], m["status"]) for m in ledger.show("CASE-1")["models"])
    assert statuses == [("aorta", 1, "superseded"), ("aorta", 2, "current"),
                        ("ventricle", 1, "superseded"), ("ventricle", 2, "current")]
    runs = ledger.show("CASE-1")["runs"]
    assert [r["status"] for r in runs] == ["ok", "ok"] and runs[0]["pid"] == os.getpid()
    assert runs[0]["software"]["anatomodel"] and runs[0]["software"]["python"]


def _ball_mesh_reports():
    """Mesh reports of a real 8 mm ball meshed twice: as it comes, and decimated to a quarter."""
    import numpy as np

    from pipeline.geometry import Geometry, Mask
    from pipeline.mesh import MeshOptions, mesh_mask

    geometry = Geometry((24, 24, 24), (1.0, 1.0, 1.0), (-11.5, -11.5, -11.5))
    centres = geometry.index_to_lps(np.stack(np.meshgrid(*[np.arange(24)] * 3, indexing="ij"), axis=-1))
    mask = Mask((np.linalg.norm(centres, axis=-1) < 8.0).astype(np.uint8), geometry, {1: "ball"})
    plain = mesh_mask(mask, options=MeshOptions(target_faces=None))[1]
    decimated = mesh_mask(mask, options=MeshOptions(target_faces=plain.faces_raw // 4))[1]
    return plain, decimated


def test_each_model_records_the_software_its_own_mesh_report_lists(new_ledger, tmp_path):
    import platform
    from importlib import metadata

    plain, decimated = _ball_mesh_reports()
    assert "fast-simplification" in decimated.libraries and "fast-simplification" not in plain.libraries
    with Ledger(new_ledger()) as ledger:
        with ledger.start_run(case_id="CASE-SW", patient_id=PATIENT, date_of_service=DATE) as run:
            published = {}
            for model_id, report in (("plain", plain), ("decimated", decimated)):
                reservation = run.reserve(model_id, billable("CASE-SW", model_id), tmp_path / "out" / model_id)
                write_packet(reservation.staging, model_id, 4096)
                published[model_id] = run.publish(reservation, libraries=report.libraries)
        shown = {m["model_id"]: m["software"] for m in ledger.show("CASE-SW")["models"]}
    for model_id, report in (("plain", plain), ("decimated", decimated)):
        expected = {"python": platform.python_version(), "anatomodel": metadata.version("anatomodel"),
                    **{name: metadata.version(name) for name in report.libraries}}
        assert shown[model_id] == expected == published[model_id].software
        assert {k: v for k, v in shown[model_id].items() if k in report.libraries} == report.libraries
    assert "fast-simplification" not in shown["plain"]  # not the run's whole environment


def test_a_model_published_without_a_mesh_report_records_only_python_and_anatomodel(ledger, tmp_path):
    (model,) = publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    assert set(model.software) == {"python", "anatomodel"}
    assert ledger.show("CASE-1")["models"][0]["software"] == model.software


def test_encounter_spans_cases_and_a_second_patient_is_its_own(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    publish(ledger, tmp_path / "out", "CASE-2", ["ventricle", "spine"])
    publish(ledger, tmp_path / "out", "CASE-3", ["aorta"], patient="PT-OTHER")
    deliver_all(ledger)
    claims = {c["patient_id"]: [(line["cpt"], line["units"]) for line in c["lines"]]
              for c in ledger.export()["claims"]}
    assert claims == {PATIENT: [("0559T", 1), ("0560T", 2)], "PT-OTHER": [("0559T", 1)]}


def test_a_case_cannot_change_encounter_and_model_ids_are_unique_per_encounter(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta"])
    with pytest.raises(LedgerError, match="another patient or date"):
        publish(ledger, tmp_path / "out", "CASE-1", ["aorta"], patient="PT-OTHER")
    with pytest.raises(LedgerError, match="already used by case 'CASE-1'"):
        publish(ledger, tmp_path / "out", "CASE-2", ["aorta"])
    assert not list((tmp_path / "out" / "CASE-2").iterdir())  # the refused attempt left nothing


def test_incomplete_packet_is_neither_published_nor_billed(ledger, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(LedgerError, match="incomplete"):
        with ledger.start_run(case_id="CASE-1", patient_id=PATIENT, date_of_service=DATE) as run:
            reservation = run.reserve("aorta", billable("CASE-1", "aorta"), out / "CASE-1" / "aorta")
            write_packet(reservation.staging, "aorta", 4096)
            (reservation.staging / "late-file.txt").write_text("not in SHA256SUMS")
            run.publish(reservation)
    assert list((out / "CASE-1").iterdir()) == []
    detail = ledger.show("CASE-1")
    assert [(c["cpt"], c["status"]) for c in detail["charges"]] == [("0559T", "reserved")]
    assert [m["status"] for m in detail["models"]] == ["abandoned"]
    assert detail["runs"][0]["status"] == "failed" and "incomplete" in detail["runs"][0]["error"]
    # Repeating the run (with the indication corrected) completes the reserved line: one 0559T.
    with ledger.start_run(case_id="CASE-1", patient_id=PATIENT, date_of_service=DATE) as run:
        corrected = dataclasses.replace(billable("CASE-1", "aorta"), icd10=("I71.23",))
        reservation = run.reserve("aorta", corrected, out / "CASE-1" / "aorta")
        write_packet(reservation.staging, "aorta", 4096)
        assert run.publish(reservation).charge_line.icd10 == ["I71.23"]
    assert [(c["cpt"], c["status"]) for c in ledger.export()["charges"]] == [("0559T", "committed")]


def test_void_and_discontinue_need_a_reason_and_are_audited(ledger, tmp_path):
    publish(ledger, tmp_path / "out", "CASE-1", ["aorta", "ventricle", "spine"])
    deliver_all(ledger)
    with pytest.raises(LedgerError, match="needs a reason"):
        ledger.void("CASE-1", "spine", reason="  ")
    line = ledger.void("CASE-1", "ventricle", reason="print aborted: resin tank leak at layer 212",
                       discontinued=True)
    assert line.modifiers == ["53"] and "resin" in line.modifier_reasons["53"]
    ledger.void("CASE-1", "spine", reason="ordered twice by mistake")
    with pytest.raises(LedgerError, match="already void"):
        ledger.void("CASE-1", "spine", reason="again")
    claim = ledger.export()["claims"][0]["lines"]
    assert [(c["cpt"], c["units"], c["modifiers"], c["model_ids"]) for c in claim] == [
        ("0559T", 1, [], ["aorta"]), ("0560T", 1, ["53"], ["ventricle"])]
    actions = [(e["action"], e["model_id"], e["detail"].get("reason")) for e in ledger.show("CASE-1")["audit"]]
    assert ("charge.discontinued", "ventricle", "print aborted: resin tank leak at layer 212") in actions
    assert ("charge.void", "spine", "ordered twice by mistake") in actions
    assert ledger.verify().ok  # a voided line keeps its packet; the numbering stays valid


def test_verify_reports_missing_and_changed_files(ledger, tmp_path):
    out = tmp_path / "out"
    publish(ledger, out, "CASE-1", ["aorta", "ventricle", "spine"])
    assert ledger.verify().ok
    (out / "CASE-1" / "aorta" / "model.stl").write_bytes(b"solid tampered\nendsolid\n")
    (out / "CASE-1" / "ventricle" / "sub" / "plan.json").unlink()
    (out / "CASE-1" / "spine" / "extra.txt").write_text("added later")
    problems = ledger.verify().problems
    assert len(problems) == 3
    assert "CASE-1/aorta v1" in problems[0] and "model.stl: changed" in problems[0]
    assert "CASE-1/spine v1" in problems[1] and "extra.txt: not listed" in problems[1]
    assert "CASE-1/ventricle v1" in problems[2] and "plan.json: missing" in problems[2]
    sums = out / "CASE-1" / "spine" / "SHA256SUMS"
    (out / "CASE-1" / "spine" / "extra.txt").unlink()
    sums.write_text(sums.read_text() + "\n")  # same entries, different file: still a change
    assert any("SHA256SUMS: changed since it was recorded" in p for p in ledger.verify().problems)


def test_cli_verify_list_show_export_void(tmp_path, cli):
    path, out = tmp_path / "ledger.sqlite3", tmp_path / "out"
    with Ledger(path) as ledger:
        publish(ledger, out, "CASE-1", ["aorta", "ventricle"])
    with Ledger(path) as ledger:
        deliver_all(ledger)
    code, _, err = cli("ledger", "verify", "--ledger", str(path))
    assert code == 0 and "all intact" in err
    listing = json.loads(cli("ledger", "list", "--json", "--ledger", str(path))[1])
    assert listing[0]["case_id"] == "CASE-1" and listing[0]["models"] == 2
    shown = json.loads(cli("ledger", "show", "CASE-1", "--json", "--ledger", str(path))[1])
    assert [c["cpt"] for c in shown["charges"]] == ["0559T", "0560T"]
    assert cli("ledger", "show", "CASE-1", "--ledger", str(path))[0] == 0
    assert cli("ledger", "show", "NO-SUCH-CASE", "--ledger", str(path))[0] == LedgerError.exit_code
    rows = list(csv.DictReader(io.StringIO(cli("ledger", "export", "--format", "csv", "--preview", "--ledger",
                                                   str(path))[1])))
    assert [(r["model_id"], r["cpt"], r["units"], r["version"]) for r in rows] == [
        ("aorta", "0559T", "1", "1"), ("ventricle", "0560T", "1", "1")]
    code, _, err = cli("ledger", "void", "CASE-1", "ventricle", "--reason", "", "--ledger", str(path))
    assert code == LedgerError.exit_code and "needs a reason" in err
    assert cli("ledger", "void", "CASE-1", "ventricle", "--discontinued", "--reason", "print failed",
               "--ledger", str(path))[0] == 0
    exported = json.loads(cli("ledger", "export", "--ledger", str(path))[1])
    assert exported["claims"][0]["lines"][1]["modifiers"] == ["53"]

    (out / "CASE-1" / "ventricle" / "packet.json").unlink()
    code, printed, err = cli("ledger", "verify", "--ledger", str(path))
    assert code == LedgerError.exit_code
    assert "packet.json: missing" in printed and "1 problem(s)" in err


def test_a_version_1_ledger_is_migrated_and_its_rows_enter_the_chain(tmp_path, monkeypatch):
    from pipeline.ledger import schema

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in schema._statements(MIGRATIONS[0]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO encounters (patient_id, date_of_service, created_at) VALUES ('PT-OLD', '2025-05-01', 'x')")
    db.execute("INSERT INTO cases (case_id, encounter_id, created_at) VALUES ('OLD-1', 1, 'x')")
    db.execute("INSERT INTO audit_log (at, operator, host, pid, action) VALUES ('x', 'tech', 'h', 1, 'run.started')")
    db.close()
    with Ledger(path) as ledger:
        assert ledger._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert ledger._db.execute("SELECT COUNT(*) FROM chain").fetchone()[0] == 3
        assert ledger.verify().ok
    db = sqlite3.connect(path)
    chain.register(db)
    db.execute("DROP TRIGGER chain_encounters_update")
    db.execute("UPDATE encounters SET patient_id = 'PT-NEW'")
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        assert any("encounters row 1 differs" in p for p in ledger.verify().problems)


def test_a_version_2_ledger_gets_each_charge_as_its_first_revision(tmp_path):
    """A ledger written before charge revisions (its charges edited in place, as then) is migrated:
    each charge's state becomes revision 1, the old rows stay under the chain, and from then on the
    charge changes only by new revisions."""
    from pipeline.ledger import schema

    path = tmp_path / "v2.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    chain.register(db)
    for migration in MIGRATIONS[:2]:
        for statement in schema._statements(migration):
            db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO encounters (patient_id, date_of_service, created_at) VALUES ('PT-OLD', '2025-05-01', 'x')")
    db.execute("INSERT INTO cases (case_id, encounter_id, created_at) VALUES ('OLD-1', 1, 'x')")
    from pipeline.report import to_jsonable

    line = json.dumps(to_jsonable(ledger_line := _old_line()), sort_keys=True)
    for seq, (model_id, status) in enumerate([("aorta", "reserved"), ("spine", "void")], start=1):
        db.execute("INSERT INTO charges (encounter_id, case_ref, model_id, seq, cpt, line, billable, status, reason, "
                   "reserved_at) VALUES (1, 1, ?, ?, ?, ?, '{}', 'reserved', NULL, '2025-05-01T10:00')",
                   (model_id, seq, ledger_line.cpt, line))
        if status == "void":  # the old code voided in place, with its audit entry
            db.execute("UPDATE charges SET status = 'void', reason = 'entered in error' WHERE model_id = ?", (model_id,))
            db.execute("INSERT INTO audit_log (at, operator, host, pid, action, case_id, model_id) "
                       "VALUES ('x', 'tech', 'h', 1, 'charge.void', 'OLD-1', ?)", (model_id,))
    db.close()
    with Ledger(path) as ledger:
        assert ledger._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        history = [(r["model_id"], r["revision"], r["status"], r["reason"], r["operator"])
                   for r in ledger.show("OLD-1")["charge_revisions"]]
        assert history == [("aorta", 1, "reserved", "as recorded before charge revisions", "migration"),
                           ("spine", 1, "void", "entered in error", "migration")]
        assert ledger.verify().ok, ledger.verify().problems
        ledger.unvoid("OLD-1", "spine", reason="the spine model was ordered after all")
        assert [c["status"] for c in ledger.show("OLD-1")["charges"]] == ["reserved", "reserved"]
        assert ledger.verify().ok, ledger.verify().problems
        with pytest.raises(sqlite3.IntegrityError, match="never edited"):
            ledger._db.execute("UPDATE charges SET status = 'void'")


def _old_line():
    from pipeline import coding

    return coding.next_charge([], billable("OLD-1", "aorta", "PT-OLD"))


def test_control_characters_are_refused_through_the_library_too(ledger, tmp_path):
    """The command line refuses them in its arguments; a script calling the library directly
    must meet the same rule before anything is written (an ESC would reach ``ledger show``)."""
    from pipeline.ledger.lifecycle import Person

    publish(ledger, tmp_path / "out", "CASE-CC", ["aorta"])
    audit_rows = ledger._db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    with pytest.raises(LedgerError, match="U\\+001B"):
        ledger.void("CASE-CC", "aorta", reason="typo \x1b[31mred\x1b[0m")
    with pytest.raises(LedgerError, match="operator .*U\\+0000"):
        ledger.void("CASE-CC", "aorta", reason="a plain reason", operator="Tech\x00")
    assert ledger._db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == audit_rows
    assert ledger.show("CASE-CC")["charges"][0]["status"] != "void"
    with pytest.raises(LedgerError, match="name of the person .*U\\+001B"):
        Person("\x1b]0;owned\x07Dr Who", "radiologist")
    ledger.void("CASE-CC", "aorta", reason="duplicate order\nsecond line allowed")  # LF is text
    assert ledger.verify().ok
