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

#: Version 2: the model lifecycle (events), holds and their releases, exports, the encounter
#: documents written (charges files, with their checksums) and the hash chain.
_V2 = """
ALTER TABLE models ADD COLUMN outcome TEXT NOT NULL DEFAULT '{}';  -- JSON: the run's holds and effort

-- One row per lifecycle step of a model version: who (name, role, NPI of a clinician), when,
-- what, and the effort by ACR-RSNA registry category (measured from the run or the event's
-- times, or entered with the event).
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    case_ref    INTEGER NOT NULL REFERENCES cases (id),
    model_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    step        TEXT NOT NULL CHECK (step IN ('prepared', 'approved', 'printed', 'post_processed',
                                              'delivered', 'discontinued', 'reduced')),
    person      TEXT NOT NULL,
    role        TEXT NOT NULL,
    npi         TEXT,
    at          TEXT NOT NULL,                -- when it happened (ISO, UTC)
    effort      TEXT NOT NULL DEFAULT '[]',   -- JSON: [{category, clinician, minutes, source}]
    detail      TEXT NOT NULL DEFAULT '{}',   -- JSON: what (printer, material, recipient...)
    recorded_at TEXT NOT NULL
);
CREATE INDEX events_by_model ON events (case_ref, model_id, version);

-- A hold keeps a model's charge from being billed until a named person releases it.
CREATE TABLE holds (
    id        INTEGER PRIMARY KEY,
    case_ref  INTEGER NOT NULL REFERENCES cases (id),
    model_id  TEXT NOT NULL,
    version   INTEGER NOT NULL,
    code      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    source    TEXT NOT NULL,
    raised_at TEXT NOT NULL
);
CREATE TABLE releases (
    id        INTEGER PRIMARY KEY,
    hold_id   INTEGER NOT NULL UNIQUE REFERENCES holds (id),
    person    TEXT NOT NULL,
    role      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at        TEXT NOT NULL
);

-- A billable line as it was exported for billing: its code is frozen from then on.
CREATE TABLE exports (
    id          INTEGER PRIMARY KEY,
    charge_id   INTEGER NOT NULL REFERENCES charges (id),
    cpt         TEXT NOT NULL,
    line        TEXT NOT NULL,                -- JSON of the ChargeLine as exported
    operator    TEXT NOT NULL,
    exported_at TEXT NOT NULL
);

-- Files written from the ledger (an encounter's charges), with their checksum for verify.
CREATE TABLE documents (
    id           INTEGER PRIMARY KEY,
    encounter_id INTEGER NOT NULL REFERENCES encounters (id),
    path         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    written_at   TEXT NOT NULL
);

-- The hash chain: one entry per row written to a chained table (insert or update), each
-- hash covering the row's content and the previous entry's hash.
CREATE TABLE chain (
    id      INTEGER PRIMARY KEY,
    tbl     TEXT NOT NULL,
    row_id  INTEGER NOT NULL,
    content TEXT NOT NULL,                    -- SHA-256 of the row's canonical JSON
    prev    TEXT NOT NULL,
    hash    TEXT NOT NULL
);
CREATE INDEX chain_by_row ON chain (tbl, row_id);
CREATE TRIGGER chain_no_update BEFORE UPDATE ON chain
BEGIN SELECT RAISE(ABORT, 'the hash chain is append-only'); END;
CREATE TRIGGER chain_no_delete BEFORE DELETE ON chain
BEGIN SELECT RAISE(ABORT, 'the hash chain is append-only'); END;
"""

#: Version 3: the charge record is append-only. ``charges`` keeps a charge's identity (the
#: model of a case) and where it was first reserved, and is never changed again; every state of
#: the charge (reserved, committed, void, discontinued; its code, line, encounter and place in
#: it) is a row of ``charge_revisions``, each superseding the one before with a reason. The
#: newest revision is the charge as it stands (view ``current_charges``).
_V3 = """
CREATE TABLE charge_revisions (
    id           INTEGER PRIMARY KEY,
    charge_id    INTEGER NOT NULL REFERENCES charges (id),
    revision     INTEGER NOT NULL,            -- 1, 2, ... per charge
    supersedes   INTEGER UNIQUE REFERENCES charge_revisions (id),  -- the previous revision
    encounter_id INTEGER NOT NULL REFERENCES encounters (id),
    seq          INTEGER NOT NULL,
    cpt          TEXT NOT NULL,
    line         TEXT NOT NULL,               -- JSON of the coding ChargeLine
    billable     TEXT NOT NULL,               -- JSON of the coding BillableModel
    status       TEXT NOT NULL
                 CHECK (status IN ('reserved', 'committed', 'void', 'discontinued')),
    reason       TEXT NOT NULL,               -- why this revision was made
    operator     TEXT NOT NULL,
    at           TEXT NOT NULL,
    UNIQUE (charge_id, revision),
    CHECK ((revision = 1) = (supersedes IS NULL))
);
CREATE INDEX charge_revisions_by_encounter ON charge_revisions (encounter_id, seq);

CREATE VIEW current_charges AS
SELECT ch.id, ch.case_ref, ch.model_id, ch.reserved_at, r.encounter_id, r.seq, r.cpt, r.line, r.billable,
       r.status, r.reason, r.revision, r.id AS revision_id, r.operator AS revised_by, r.at AS revised_at,
       COALESCE(ch.committed_at, (SELECT MIN(c.at) FROM charge_revisions c
                                  WHERE c.charge_id = ch.id AND c.status = 'committed')) AS committed_at
FROM charges ch JOIN charge_revisions r ON r.charge_id = ch.id
WHERE r.revision = (SELECT MAX(x.revision) FROM charge_revisions x WHERE x.charge_id = ch.id);

CREATE TRIGGER charges_no_update BEFORE UPDATE ON charges
BEGIN SELECT RAISE(ABORT, 'charges are corrected by new revisions, never edited'); END;
CREATE TRIGGER charges_no_delete BEFORE DELETE ON charges
BEGIN SELECT RAISE(ABORT, 'charges are corrected by new revisions, never deleted'); END;
CREATE TRIGGER charge_revisions_no_update BEFORE UPDATE ON charge_revisions
BEGIN SELECT RAISE(ABORT, 'charge revisions are append-only'); END;
CREATE TRIGGER charge_revisions_no_delete BEFORE DELETE ON charge_revisions
BEGIN SELECT RAISE(ABORT, 'charge revisions are append-only'); END;
"""

#: Run after the v3 tables and their chain triggers exist: each charge of an older ledger gets
#: its state as revision 1 (its rows stay as they were, under the chain).
V3_BACKFILL = (
    "INSERT INTO charge_revisions (charge_id, revision, supersedes, encounter_id, seq, cpt, line, billable, "
    "status, reason, operator, at) SELECT id, 1, NULL, encounter_id, seq, cpt, line, billable, status, "
    "COALESCE(reason, 'as recorded before charge revisions'), 'migration', COALESCE(committed_at, reserved_at) "
    "FROM charges ORDER BY id")

#: Tables whose rows are never changed or deleted (guarded by triggers), and the guard names.
APPEND_ONLY = ("audit_log", "chain", "charges", "charge_revisions")


def guard_trigger_names() -> set[str]:
    """The names of the triggers that keep the :data:`APPEND_ONLY` tables append-only.

    Returns
    -------
    set of str
        ``<table>_no_update`` and ``<table>_no_delete`` for each table of :data:`APPEND_ONLY`.
    """
    return {f"{table}_no_{event}" for table in APPEND_ONLY for event in ("update", "delete")}

#: Version 4: the ``checked`` step (print QA, between ``post_processed`` and ``delivered``). SQLite
#: cannot change a CHECK constraint, so the events table is rebuilt with its rows (same ids, so
#: the hash chain still covers them) and its index and chain triggers made again.
_V4_EVENT_STEPS = ("'prepared', 'approved', 'printed', 'post_processed', 'checked', 'delivered', "
                   "'discontinued', 'reduced'")
_EVENT_COLUMNS = "id, case_ref, model_id, version, step, person, role, npi, at, effort, detail, recorded_at"
_V4 = f"""
CREATE TABLE events_v4 (
    id          INTEGER PRIMARY KEY,
    case_ref    INTEGER NOT NULL REFERENCES cases (id),
    model_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    step        TEXT NOT NULL CHECK (step IN ({_V4_EVENT_STEPS})),
    person      TEXT NOT NULL,
    role        TEXT NOT NULL,
    npi         TEXT,
    at          TEXT NOT NULL,
    effort      TEXT NOT NULL DEFAULT '[]',
    detail      TEXT NOT NULL DEFAULT '{{}}',
    recorded_at TEXT NOT NULL
);
INSERT INTO events_v4 ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_by_model ON events (case_ref, model_id, version);
"""
#: The same change on PostgreSQL, which alters the constraint in place.
PG_V4 = ("ALTER TABLE events DROP CONSTRAINT events_step_check",
         f"ALTER TABLE events ADD CONSTRAINT events_step_check CHECK (step IN ({_V4_EVENT_STEPS}))")


#: Tables under the hash chain and the columns their content covers (fixed: a later
#: ``ADD COLUMN`` does not change the content of the rows already chained).
CHAINED: dict[str, tuple[str, ...]] = {
    "encounters": ("id", "patient_id", "date_of_service", "created_at"),
    "cases": ("id", "case_id", "encounter_id", "created_at"),
    "models": ("id", "case_ref", "model_id", "version", "status", "run_id", "folder", "mesh_sha256",
               "sums_sha256", "outcome", "created_at", "committed_at"),
    "charges": ("id", "encounter_id", "case_ref", "model_id", "seq", "cpt", "line", "billable", "status",
                "reason", "reserved_at", "committed_at"),
    "audit_log": ("id", "at", "operator", "host", "pid", "action", "case_id", "model_id", "detail"),
    "events": ("id", "case_ref", "model_id", "version", "step", "person", "role", "npi", "at", "effort",
               "detail", "recorded_at"),
    "holds": ("id", "case_ref", "model_id", "version", "code", "reason", "source", "raised_at"),
    "releases": ("id", "hold_id", "person", "role", "reason", "at"),
    "exports": ("id", "charge_id", "cpt", "line", "operator", "exported_at"),
    "documents": ("id", "encounter_id", "path", "sha256", "written_at"),
    "charge_revisions": ("id", "charge_id", "revision", "supersedes", "encounter_id", "seq", "cpt", "line",
                         "billable", "status", "reason", "operator", "at"),
}
#: The chained tables each migration creates (its chain triggers are created with it).
CHAINED_SINCE = {2: tuple(t for t in CHAINED if t != "charge_revisions"), 3: ("charge_revisions",)}


#: The ``prev`` of the chain's first entry.
GENESIS = "anatomodel-ledger-chain-v1"


def content_sql(table: str, prefix: str = "") -> str:
    """The SQL expression of a row's canonical content (``json_array`` of its chained columns).

    Parameters
    ----------
    table : str
        A chained table (a key of :data:`CHAINED`).
    prefix : str
        Put before each column name, e.g. ``NEW.`` inside a trigger.

    Returns
    -------
    str
        ``json_array(<prefix>col, ...)`` over the table's chained columns, in their order.

    Raises
    ------
    KeyError
        If ``table`` is not chained.
    """
    return "json_array(" + ", ".join(f"{prefix}{column}" for column in CHAINED[table]) + ")"


def chain_triggers(tables: tuple[str, ...] | None = None) -> str:
    """The triggers that append a chain entry for every row inserted or updated in a chained table.

    They call ``chain_digest`` and ``chain_hash``, functions each ledger connection registers
    (:func:`pipeline.ledger.chain.register`): a connection without them cannot write to a
    chained table at all, and one that drops a trigger leaves rows the chain does not match.

    Parameters
    ----------
    tables : tuple of str, optional
        The chained tables to make triggers for; default every table of :data:`CHAINED`.

    Returns
    -------
    str
        SQLite ``CREATE TRIGGER chain_<table>_insert`` / ``_update`` statements, one per line,
        ending with a newline (to append to a migration script).
    """
    statements = []
    for table in CHAINED if tables is None else tables:
        for event in ("INSERT", "UPDATE"):
            statements.append(
                f"CREATE TRIGGER chain_{table}_{event.lower()} AFTER {event} ON {table}\n"
                f"BEGIN INSERT INTO chain (tbl, row_id, content, prev, hash) "
                f"SELECT '{table}', NEW.id, d, p, chain_hash(p, '{table}', NEW.id, d) FROM "
                f"(SELECT chain_digest({content_sql(table, 'NEW.')}) AS d, "
                f"COALESCE((SELECT hash FROM chain ORDER BY id DESC LIMIT 1), '{GENESIS}') AS p); END;")
    return "\n".join(statements) + "\n"


def chain_trigger_names() -> set[str]:
    """The names of the chain triggers :func:`chain_triggers` creates.

    Returns
    -------
    set of str
        ``chain_<table>_insert`` and ``chain_<table>_update`` for each table of :data:`CHAINED`.
    """
    return {f"chain_{table}_{event}" for table in CHAINED for event in ("insert", "update")}


#: Ordered migrations; entry ``n - 1`` takes the schema from version ``n - 1`` to ``n``.
MIGRATIONS: tuple[str, ...] = (_V1, _V2 + chain_triggers(CHAINED_SINCE[2]), _V3 + chain_triggers(CHAINED_SINCE[3]),
                              _V4 + chain_triggers(("events",)))

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(connection: sqlite3.Connection) -> int:
    """The schema version recorded in the database file.

    Parameters
    ----------
    connection : sqlite3.Connection
        An open connection to the ledger file.

    Returns
    -------
    int
        ``PRAGMA user_version``: 0 for a new file, :data:`SCHEMA_VERSION` for an up-to-date one.
    """
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Apply every migration the database lacks; return the resulting schema version.

    ``connection`` must be in autocommit mode (``isolation_level=None``).

    Parameters
    ----------
    connection : sqlite3.Connection
        An open connection to the ledger file, with the chain functions registered
        (:func:`pipeline.ledger.chain.register`). All missing migrations run in one
        ``BEGIN IMMEDIATE`` transaction, rolled back on any error.

    Returns
    -------
    int
        :data:`SCHEMA_VERSION`, the version the file is now at.

    Raises
    ------
    LedgerError
        If the file's schema is newer than this anatomodel knows (exit code 13).
    sqlite3.DatabaseError
        If the file is not a SQLite database or a statement fails (the caller reports it as an
        unusable ledger).
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
            if number == 2:  # rows written before the chain existed enter it in table order
                from pipeline.ledger.chain import backfill

                backfill(connection)
            if number == 3:
                connection.execute(V3_BACKFILL)
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
