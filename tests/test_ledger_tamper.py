"""``ledger verify`` catches every tampering: edits, deletions and forgeries of charges, encounters,
model versions, lifecycle events, releases and audit rows (also after dropping and re-creating
the triggers that guard them), edited charges files, and a damaged database file."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from pipeline.errors import LedgerError
from pipeline.ledger import Ledger
from test_ledger import cli, publish  # noqa: F401  (cli is a fixture)
from test_ledger_protocol import walk

def _tamper(path: Path, sql: str, then=None) -> None:
    """Edit the ledger as someone with the sqlite3 shell would: drop every trigger, change the rows
    (and call ``then(db)`` for more), then put the triggers back as they were, so that the schema
    looks untouched."""
    db = sqlite3.connect(path, isolation_level=None)
    triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for name, _ in triggers:
        db.execute(f"DROP TRIGGER {name}")
    db.executescript(sql)
    if then is not None:
        then(db)
    for _, definition in triggers:
        db.execute(definition)
    db.close()


def _set_json(column: str, key: str, value: str) -> str:
    return f"UPDATE charges SET {column} = json_set({column}, '$.{key}', json('{value}')) WHERE model_id = 'aorta';"


#: (name, SQL) of each tampering of the database.
TAMPERINGS = [
    ("cpt 0559T to 0560T", "UPDATE charges SET cpt = '0560T' WHERE cpt = '0559T';"),
    ("charge row deleted", "DELETE FROM charges WHERE model_id = 'ventricle';"),
    ("units edited", _set_json("line", "units", "3")),
    ("icd10 edited", _set_json("line", "icd10", '["I71.9"]')),
    ("modifiers edited", _set_json("line", "modifiers", '["22"]')),
    ("void without audit", "UPDATE charges SET status = 'void', reason = 'x' WHERE model_id = 'ventricle';"),
    ("patient changed", "UPDATE encounters SET patient_id = 'PT-SOMEONE-ELSE';"),
    ("date changed", "UPDATE encounters SET date_of_service = '2026-02-01';"),
    ("audit rewritten", "UPDATE audit_log SET operator = 'nobody', detail = '{}' WHERE action = 'model.approved';"),
    ("audit rows deleted", "DELETE FROM audit_log WHERE action LIKE 'charge.%';"),
    ("model version edited", "UPDATE models SET mesh_sha256 = 'ff' WHERE status = 'current' AND model_id = 'aorta';"),
    ("lifecycle event forged", "INSERT INTO events (case_ref, model_id, version, step, person, role, at, recorded_at) "
                               "SELECT case_ref, 'ventricle', 1, 'approved', 'FORGED', 'radiologist', at, at "
                               "FROM events LIMIT 1;"),
    ("delivery deleted", "DELETE FROM events WHERE step = 'delivered';"),
    ("hold deleted", "DELETE FROM holds;"),
    ("release forged", "INSERT INTO releases (hold_id, person, role, reason, at) SELECT id, 'X', 'coder', 'x', "
                       "raised_at FROM holds WHERE code = 'coding.education_only';"),
    ("charge forged", "INSERT INTO charges (encounter_id, case_ref, model_id, seq, cpt, line, billable, status, "
                      "reserved_at) SELECT encounter_id, case_ref, 'ghost', 99, cpt, line, billable, 'committed', "
                      "reserved_at FROM charges LIMIT 1;"),
    ("export edited", "UPDATE exports SET cpt = '0560T';"),
    ("chain entry deleted", "DELETE FROM chain WHERE id = 5;"),
    ("chain entry edited", "UPDATE chain SET content = 'x' WHERE id = 7;"),
    ("case moved", "UPDATE cases SET encounter_id = encounter_id + 1;"),
    ("revision cpt edited", "UPDATE charge_revisions SET cpt = '0560T' WHERE cpt = '0559T';"),
    ("revision made void", "UPDATE charge_revisions SET status = 'void' WHERE status = 'committed' AND charge_id = "
                           "(SELECT id FROM charges WHERE model_id = 'ventricle');"),
    ("latest revision deleted", "DELETE FROM charge_revisions WHERE revision > 1 AND charge_id = "
                                "(SELECT id FROM charges WHERE model_id = 'aorta');"),
    ("revision forged", "INSERT INTO charge_revisions (charge_id, revision, supersedes, encounter_id, seq, cpt, line, "
                        "billable, status, reason, operator, at) SELECT charge_id, revision + 1, id, encounter_id, seq, "
                        "cpt, line, billable, 'void', 'x', 'x', at FROM charge_revisions WHERE charge_id = "
                        "(SELECT id FROM charges WHERE model_id = 'ventricle') ORDER BY revision DESC LIMIT 1;"),
]


@pytest.fixture
def recorded(tmp_path):
    """A ledger with two delivered models (one exported) and one held model, verified intact."""
    path = tmp_path / "ledger.sqlite3"
    _record(path, tmp_path / "out")
    return path


def _record(location, out) -> None:
    """Two delivered models (one exported) and one held model in the ledger at ``location``."""
    from pipeline.holds import Hold
    from test_ledger_protocol import DATE, PATIENT, billable, write_packet

    with Ledger(location) as ledger:
        publish(ledger, out, "CASE-1", ["aorta", "ventricle"])
        walk(ledger, "CASE-1", "aorta")
        ledger.export(record=True)
        walk(ledger, "CASE-1", "ventricle")
        with ledger.start_run(case_id="CASE-2", patient_id=PATIENT, date_of_service=DATE) as run:
            reservation = run.reserve("spine", billable("CASE-2", "spine"), out / "CASE-2" / "spine")
            write_packet(reservation.staging, "spine", 4096)
            run.publish(reservation, holds=[Hold("coding.education_only", "patient education", "coding")])
        assert ledger.verify().ok, ledger.verify().problems


@pytest.mark.parametrize("name, sql", TAMPERINGS, ids=[name for name, _ in TAMPERINGS])
def test_verify_catches_each_tampering(recorded, cli, name, sql):
    _tamper(recorded, sql)
    code, printed, err = cli("ledger", "verify", "--ledger", str(recorded))
    assert code == LedgerError.exit_code, (name, printed, err)
    assert "problem:" in printed


def test_a_connection_outside_anatomodel_cannot_write_chained_rows(recorded):
    db = sqlite3.connect(recorded)
    with pytest.raises(sqlite3.OperationalError, match="no such function: chain_digest"):
        db.execute("UPDATE charges SET cpt = '0560T'")


@pytest.mark.parametrize("trigger", ["chain_charges_update", "charges_no_update"])  # a chain trigger, a guard
def test_a_dropped_trigger_alone_is_reported(recorded, cli, trigger):
    db = sqlite3.connect(recorded)
    db.execute(f"DROP TRIGGER {trigger}")
    db.close()
    code, printed, _ = cli("ledger", "verify", "--ledger", str(recorded))
    assert code == LedgerError.exit_code and f"{trigger} is missing" in printed


def test_a_revision_edited_through_the_chain_after_dropping_its_guard_is_caught(recorded, cli):
    """Someone with anatomodel's chain functions drops the revision table's guard, edits a revision
    (the chain trigger records the edit as a consistent entry) and puts the guard back."""
    from pipeline.ledger import chain

    db = sqlite3.connect(recorded, isolation_level=None)
    chain.register(db)
    guard = db.execute("SELECT sql FROM sqlite_master WHERE name = 'charge_revisions_no_update'").fetchone()[0]
    db.execute("DROP TRIGGER charge_revisions_no_update")
    assert db.execute("UPDATE charge_revisions SET cpt = '0560T' WHERE cpt = '0559T'").rowcount >= 1
    db.execute(guard)
    db.close()
    code, printed, _ = cli("ledger", "verify", "--ledger", str(recorded))
    assert code == LedgerError.exit_code and "was changed after it was written" in printed, printed


def test_charges_and_their_revisions_refuse_edits(recorded):
    from pipeline.ledger import chain

    db = sqlite3.connect(recorded)
    chain.register(db)
    for sql in ("UPDATE charges SET cpt = '0560T'", "DELETE FROM charges", "UPDATE charge_revisions SET cpt = '0560T'",
                "DELETE FROM charge_revisions"):
        with pytest.raises(sqlite3.IntegrityError, match="never|append-only"):
            db.execute(sql)


def _rewrite_whole_chain(path: Path, sql: str) -> None:
    """A consistent forgery: edit rows, then recompute the whole hash chain from the rows as they
    are (with anatomodel's own hash functions), so that the chain alone shows nothing."""
    from pipeline.ledger import chain
    from pipeline.ledger.schema import CHAINED, GENESIS, content_sql

    def rechain(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM chain")
        prev = GENESIS
        for table in CHAINED:
            for row_id, content in db.execute(f"SELECT id, {content_sql(table)} FROM {table} ORDER BY id").fetchall():
                entry = chain.digest(content)
                db.execute("INSERT INTO chain (tbl, row_id, content, prev, hash) VALUES (?, ?, ?, ?, ?)",
                           (table, row_id, entry, prev, prev := chain.link(prev, table, row_id, entry)))

    _tamper(path, sql, then=rechain)


def test_a_rewrite_of_the_whole_chain_is_caught_by_the_anchor_kept_elsewhere(recorded, cli, tmp_path):
    kept = tmp_path / "elsewhere" / "anchor.json"
    kept.parent.mkdir()
    assert cli("ledger", "anchor", "--out", str(kept), "--ledger", str(recorded))[0] == 0
    assert cli("ledger", "verify", "--anchor", str(kept), "--ledger", str(recorded))[0] == 0
    with Ledger(recorded) as ledger:  # the ledger goes on: the chain still extends the anchor
        ledger.void("CASE-2", "spine", reason="entered in error")
    assert cli("ledger", "verify", "--anchor", str(kept), "--ledger", str(recorded))[0] == 0
    _rewrite_whole_chain(recorded, "UPDATE charge_revisions SET cpt = '0560T' WHERE cpt = '0559T';")
    code, printed, _ = cli("ledger", "verify", "--ledger", str(recorded))
    assert code == 0, printed  # a consistent rewrite: the chain alone cannot tell
    code, printed, _ = cli("ledger", "verify", "--anchor", str(kept), "--ledger", str(recorded))
    assert code == LedgerError.exit_code, printed
    assert "no longer extends the anchor" in printed or "shorter than the anchor" in printed, printed


def test_a_file_that_is_not_an_anchor_is_refused(recorded, cli, tmp_path):
    (tmp_path / "a.json").write_text('{"head": 3}')
    code, _, err = cli("ledger", "verify", "--anchor", str(tmp_path / "a.json"), "--ledger", str(recorded))
    assert code == LedgerError.exit_code and "is not a ledger anchor" in err


#: Anchors that are not what ``ledger anchor`` writes, and the words the refusal must say.
MALFORMED_ANCHORS = [
    ("missing at", lambda a: {k: v for k, v in a.items() if k != "at"} | {"head": "0" * 64}, "its at is None"),
    ("entries text", lambda a: a | {"entries": "12"}, "its entries is '12', not a count"),
    ("entries null", lambda a: a | {"entries": None}, "its entries is None, not a count"),
    ("entries negative", lambda a: a | {"entries": -3}, "its entries is -3, not a count"),
    ("entries true", lambda a: a | {"entries": True}, "its entries is True, not a count"),
    ("head not a hash", lambda a: a | {"head": "0" * 63 + "g"}, "its head is '" + "0" * 36 + "..., not a chain hash"),
    ("a list", lambda a: [a], "it holds a JSON list, not an object"),
    ("other format", lambda a: a | {"format": "something-else"}, "its format is 'something-else'"),
]


@pytest.mark.parametrize("change, words", [(c, w) for _, c, w in MALFORMED_ANCHORS],
                         ids=[name for name, _, _ in MALFORMED_ANCHORS])
def test_a_malformed_anchor_is_refused_naming_the_file_and_the_fault(recorded, cli, tmp_path, change, words):
    import json

    with Ledger(recorded) as ledger:
        kept = ledger.anchor()
        assert ledger.verify(kept).ok
        with pytest.raises(LedgerError, match=f"the anchor is not a ledger anchor: {re.escape(words)}"):
            ledger.verify(change(kept))
    path = tmp_path / "anchor.json"
    path.write_text(json.dumps(change(kept)), encoding="utf-8")
    code, printed, err = cli("ledger", "verify", "--anchor", str(path), "--ledger", str(recorded))
    assert code == LedgerError.exit_code, err
    assert f"{path} is not a ledger anchor: {words}" in err and "internal error" not in err
    assert "checked" not in err                                # refused before any work


def test_the_anchor_on_postgresql(pg, tmp_path):
    url = pg.new_database()
    _record(url, tmp_path / "out")
    with Ledger(url) as ledger:
        kept = ledger.anchor()
        assert ledger.verify(kept).ok
        forged = {**kept, "head": "0" * 64}
        assert any("no longer extends the anchor" in p for p in ledger.verify(forged).problems)
        longer = {**kept, "entries": kept["entries"] + 1000}
        assert any("shorter than the anchor" in p for p in ledger.verify(longer).problems)


@pytest.mark.parametrize("damage", ["middle", "truncated", "header"])
def test_a_damaged_database_exits_13(recorded, cli, damage):
    data = bytearray(recorded.read_bytes())
    if damage == "middle":
        data[len(data) // 2:len(data) // 2 + 4096] = b"\x5a" * 4096
    elif damage == "truncated":
        data = data[: len(data) // 3]
    else:
        data[:100] = b"\x00" * 100
    recorded.write_bytes(bytes(data))
    code, printed, err = cli("ledger", "verify", "--ledger", str(recorded))
    assert code == LedgerError.exit_code, (printed, err)


def _pg_sql(sql: str) -> str:
    """A tampering of :data:`TAMPERINGS` in PostgreSQL's dialect (JSON edits as text edits)."""
    replacements = {
        _set_json("line", "units", "3"): "UPDATE charges SET line = replace(line, '\"units\": 1', '\"units\": 3') "
                                         "WHERE model_id = 'aorta';",
        _set_json("line", "icd10", '["I71.9"]'): "UPDATE charges SET line = replace(line, 'I71.21', 'I71.9') "
                                                 "WHERE model_id = 'aorta';",
        _set_json("line", "modifiers", '["22"]'): "UPDATE charges SET line = replace(line, '\"modifiers\": []', "
                                                  "'\"modifiers\": [\"22\"]') WHERE model_id = 'aorta';",
    }
    return replacements.get(sql, sql)


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    from postgres_server import Server

    server = Server()
    yield server
    server.stop()


@pytest.mark.parametrize("name, sql", TAMPERINGS, ids=[name for name, _ in TAMPERINGS])
def test_verify_catches_each_tampering_on_postgresql(pg, tmp_path, cli, name, sql):
    """The same tamperings by a PostgreSQL superuser who disables every trigger around the edit."""
    import psycopg

    from pipeline.ledger.schema import CHAINED

    url = pg.new_database()
    _record(url, tmp_path / "out")
    with psycopg.connect(url, autocommit=True) as db:
        for table in (*CHAINED, "chain"):
            db.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        changed = db.execute(_pg_sql(sql)).rowcount
        for table in (*CHAINED, "chain"):
            db.execute(f"ALTER TABLE {table} ENABLE TRIGGER ALL")
    assert changed >= 1, name  # the tampering touched a row
    code, printed, err = cli("ledger", "verify", "--ledger", url)
    assert code == LedgerError.exit_code, (name, printed, err)
    assert "problem:" in printed


def test_a_revision_edited_through_the_chain_on_postgresql_is_caught(pg, tmp_path, cli):
    """A superuser disables only the revision table's guard: the chain trigger records the edit."""
    import psycopg

    url = pg.new_database()
    _record(url, tmp_path / "out")
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("ALTER TABLE charge_revisions DISABLE TRIGGER charge_revisions_no_update")
        assert db.execute("UPDATE charge_revisions SET cpt = '0560T' WHERE cpt = '0559T'").rowcount >= 1
        db.execute("ALTER TABLE charge_revisions ENABLE TRIGGER charge_revisions_no_update")
        with pytest.raises(psycopg.Error, match="append-only"):
            db.execute("DELETE FROM charge_revisions")
    code, printed, _ = cli("ledger", "verify", "--ledger", url)
    assert code == LedgerError.exit_code and "was changed after it was written" in printed, printed


def test_an_unreachable_server_is_a_ledger_error(cli):
    code, _, err = cli("ledger", "verify", "--ledger", f"postgresql://postgres:secret@127.0.0.1:{_free_port()}/x")
    assert code == LedgerError.exit_code and "cannot connect to the ledger" in err and "secret" not in err


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
