"""The ledger's SQLite schema and its ordered migrations.

The schema version lives in ``PRAGMA user_version``. Each migration moves the database from
version ``n - 1`` to ``n`` inside one ``BEGIN IMMEDIATE`` transaction, so two processes opening
a new ledger at the same moment cannot both apply it. Migrations are only ever appended.
"""

from __future__ import annotations

import sqlite3

from pipeline.errors import LedgerError

_V1 = """
CREATE TABLE encounters (
    id              INTEGER PRIMARY KEY,
    patient_id      TEXT NOT NULL,
    date_of_service TEXT NOT NULL,            -- ISO date
    created_at      TEXT NOT NULL,
    UNIQUE (patient_id, date_of_service)
);

CREATE TABLE cases (
    id           INTEGER PRIMARY KEY,
    case_id      TEXT NOT NULL UNIQUE,
    encounter_id INTEGER NOT NULL REFERENCES encounters (id),
    created_at   TEXT NOT NULL
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    case_ref    INTEGER NOT NULL REFERENCES cases (id),
    status      TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    parameters  TEXT NOT NULL,                -- JSON
    software    TEXT NOT NULL,                -- JSON: package -> version
    timings     TEXT NOT NULL DEFAULT '{}',   -- JSON: step -> seconds
    operator    TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    pid_start   INTEGER NOT NULL,             -- process start time (clock ticks since boot)
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    error       TEXT
);

-- One row per attempt to publish a model folder. ``version`` is given when the attempt is
-- committed, so abandoned attempts leave no gaps in the version numbers.
CREATE TABLE models (
    id           INTEGER PRIMARY KEY,
    case_ref     INTEGER NOT NULL REFERENCES cases (id),
    model_id     TEXT NOT NULL,
    version      INTEGER,
    status       TEXT NOT NULL
                 CHECK (status IN ('pending', 'current', 'superseded', 'abandoned')),
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    folder       TEXT NOT NULL,               -- absolute path of OUT/<case_id>/<model_id>
    staging      TEXT NOT NULL,               -- absolute path of the staging sibling
    mesh_sha256  TEXT,
    sums_sha256  TEXT,                        -- SHA-256 of the folder's SHA256SUMS file
    created_at   TEXT NOT NULL,
    committed_at TEXT,
    UNIQUE (case_ref, model_id, version)
);
CREATE INDEX models_by_case ON models (case_ref, model_id);
CREATE INDEX models_pending ON models (status) WHERE status = 'pending';

-- One charge per model of a case (re-running a model never adds one). ``seq`` orders the
-- lines of an encounter as they were decided.
CREATE TABLE charges (
    id           INTEGER PRIMARY KEY,
    encounter_id INTEGER NOT NULL REFERENCES encounters (id),
    case_ref     INTEGER NOT NULL REFERENCES cases (id),
    model_id     TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    cpt          TEXT NOT NULL,
    line         TEXT NOT NULL,               -- JSON of the coding ChargeLine
    billable     TEXT NOT NULL,               -- JSON of the coding BillableModel it was decided for
    status       TEXT NOT NULL
                 CHECK (status IN ('reserved', 'committed', 'void', 'discontinued')),
    reason       TEXT,
    reserved_at  TEXT NOT NULL,
    committed_at TEXT,
    UNIQUE (case_ref, model_id),
    UNIQUE (encounter_id, seq)
);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    operator  TEXT NOT NULL,
    host      TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    action    TEXT NOT NULL,
    case_id   TEXT,
    model_id  TEXT,
    detail    TEXT NOT NULL DEFAULT '{}'      -- JSON
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"""

#: Ordered migrations; entry ``n - 1`` takes the schema from version ``n - 1`` to ``n``.
MIGRATIONS: tuple[str, ...] = (_V1,)

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(connection: sqlite3.Connection) -> int:
    """The schema version recorded in the database file."""
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Apply every migration the database lacks; return the resulting schema version.

    ``connection`` must be in autocommit mode (``isolation_level=None``).
    """
    if schema_version(connection) == SCHEMA_VERSION:
        return SCHEMA_VERSION
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(connection)  # re-read under the write lock
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger has schema version {version}, newer than this anatomodel "
                f"understands ({SCHEMA_VERSION})",
                hint="upgrade anatomodel before using this ledger",
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _statements(MIGRATIONS[number - 1]):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit our transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in migration: {current!r}")
    return statements
