"""The ledger on PostgreSQL (several workstations): a connection that speaks the SQLite dialect
the ledger is written in, the schema in PostgreSQL's terms, and its hash-chain triggers.

Selected by a connection URL (``postgresql://user@host:port/database``) wherever a ledger path
is accepted. Statements are translated on the way: ``?`` placeholders, ``BEGIN IMMEDIATE``
(a transaction holding one advisory lock, so writers queue exactly as on SQLite), ``INSERT OR
IGNORE``, ``lastrowid`` (``RETURNING id``) and ``GROUP_CONCAT``; ``PRAGMA`` statements are
answered locally. The chain's content of a row is ``json_build_array(columns)::text`` here,
computed the same way by the triggers and by ``ledger verify``.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.ledger.schema import CHAINED, CHAINED_SINCE, GENESIS, MIGRATIONS, V3_BACKFILL, PG_V4, _statements

#: The advisory lock every write transaction takes (one writer at a time, as on SQLite).
WRITE_LOCK = 0x616E61746F  # "anato"
_INSERT = re.compile(r"^\s*INSERT\s", re.I)


def redacted(url: str) -> str:
    """The URL without its password (for messages and reports).

    Parameters
    ----------
    url : str
        A connection URL, e.g. ``postgresql://user:secret@host:5432/db``.

    Returns
    -------
    str
        The URL with the password replaced by ``***`` (``postgresql://user:***@host:5432/db``);
        a URL without a password is returned unchanged.
    """
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def database_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of a damaged or unreachable database, on either back end.

    Returns
    -------
    tuple of type
        ``sqlite3.DatabaseError`` and, when psycopg is installed, ``psycopg.Error``; for ``except``.
    """
    import sqlite3

    try:
        import psycopg
    except ImportError:
        return (sqlite3.DatabaseError,)
    return (sqlite3.DatabaseError, psycopg.Error)


def is_url(location: object) -> bool:
    """Whether a ledger location is a PostgreSQL connection URL (also as a ``Path`` made of one,
    whose ``//`` became ``/``).

    Parameters
    ----------
    location : object
        A ledger location: str, ``Path`` or anything whose ``str`` is the location.

    Returns
    -------
    bool
        True when it starts with ``postgresql:/`` or ``postgres:/``.
    """
    return str(location).startswith(("postgresql:/", "postgres:/"))


def normalised(location: object) -> str:
    """The URL with the ``//`` a ``Path`` conversion (a ``--ledger`` option) collapsed put back.

    Parameters
    ----------
    location : object
        A PostgreSQL URL, possibly as a ``Path`` (``postgresql:/user@host/db``).

    Returns
    -------
    str
        The URL as text with ``://`` after the scheme; anything else as ``str(location)``.
    """
    return re.sub(r"^(postgres(?:ql)?):/(?!/)", r"\1://", str(location))


class Row(tuple):
    """A result row readable by position and by column name, like ``sqlite3.Row``."""

    _names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, like ``sqlite3.Row.keys``.

        Returns
        -------
        list of str
            The result's column names in order.
        """
        return list(self._names)


class _Cursor:
    def __init__(self, rows: list[Row], rowcount: int, lastrowid: int | None):
        self._rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    def fetchone(self) -> Row | None:
        """The first row of the result.

        Returns
        -------
        Row or None
            The first row, or None when the statement returned none.
        """
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Row]:
        """Every row of the result.

        Returns
        -------
        list of Row
            The rows (a copy), empty when the statement returned none.
        """
        return list(self._rows)

    def __iter__(self):
        return iter(self._rows)


def translate(sql: str) -> str:
    """A ledger statement in PostgreSQL's dialect.

    Parameters
    ----------
    sql : str
        A statement in the SQLite dialect the ledger uses (``?`` placeholders, ``INSERT OR IGNORE``,
        ``GROUP_CONCAT``, ``json_array``).

    Returns
    -------
    str
        The statement for psycopg: ``%s`` placeholders (a literal ``%`` doubled), ``ON CONFLICT DO
        NOTHING``, ``string_agg`` and ``json_build_array``.
    """
    text = sql.replace("%", "%%").replace("?", "%s")
    text = re.sub(r"INSERT OR IGNORE INTO (\w+) \(([^)]*)\) VALUES \(([^)]*)\)",
                  r"INSERT INTO \1 (\2) VALUES (\3) ON CONFLICT DO NOTHING", text)
    text = re.sub(r"GROUP_CONCAT\(", "string_agg(", text)
    text = text.replace("json_array(", "json_build_array(")
    return text


class PgConnection:
    """A psycopg connection (autocommit; explicit transactions) with the ledger's SQLite dialect."""

    backend = "postgresql"

    def __init__(self, url: str, timeout: float):
        import psycopg

        self.url = url
        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
        self._conn.execute(f"SET lock_timeout = {int(timeout * 1000)}")

    def execute(self, sql: str, params: tuple | list = ()) -> _Cursor:
        """Run one ledger statement written in the SQLite dialect.

        ``PRAGMA`` is answered locally (``ok``); ``BEGIN IMMEDIATE`` opens a transaction holding
        :data:`WRITE_LOCK`; an ``INSERT ... VALUES`` gets ``RETURNING id`` for ``lastrowid``.

        Parameters
        ----------
        sql : str
            The statement (see :func:`translate`).
        params : tuple or list
            The values of its ``?`` placeholders, in order.

        Returns
        -------
        _Cursor
            The rows (none for an insert), ``rowcount`` and ``lastrowid`` (the new row's id after
            an insert, None after ``INSERT OR IGNORE`` or any other statement).
        """
        head = sql.lstrip().upper()
        if head.startswith("PRAGMA"):
            return _Cursor([_row(("ok",), ("result",))], 0, None)
        if head.startswith("BEGIN IMMEDIATE"):
            self._conn.execute("BEGIN")
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return _Cursor([], 0, None)
        text = translate(sql)
        inserting = bool(_INSERT.match(sql)) and "RETURNING" not in head and "SELECT" not in head.split("VALUES")[0][6:]
        if inserting and "ON CONFLICT" not in text:
            text += " RETURNING id"
        cursor = self._conn.execute(text, tuple(params))
        rows: list[Row] = []
        if cursor.description is not None:
            names = tuple(column.name for column in cursor.description)
            rows = [_row(values, names) for values in cursor.fetchall()]
        lastrowid = rows[0][0] if inserting and rows else None
        return _Cursor([] if inserting else rows, cursor.rowcount, lastrowid)

    def close(self) -> None:
        self._conn.close()


def _row(values: tuple, names: tuple[str, ...]) -> Row:
    row = Row(values)
    row._names = names
    return row


# -- schema ------------------------------------------------------------------------------------
_SQLITE_TRIGGER = re.compile(r"CREATE TRIGGER.*?END;", re.S)


def _ddl(script: str) -> list[str]:
    """The SQLite migration's tables and indexes in PostgreSQL's types (its triggers are replaced)."""
    text = _SQLITE_TRIGGER.sub("", script)
    text = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", text)
    text = re.sub(r"\bINTEGER\b", "BIGINT", text)
    text = re.sub(r"\bREAL\b", "DOUBLE PRECISION", text)
    return [s for s in _statements(text) if s.strip()]


def _guards(table: str, message: str) -> list[str]:
    return [
        f"CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{message}'; END $$",
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
    ]


def chain_functions(tables: tuple[str, ...]) -> list[str]:
    """The chain's trigger function per chained table of ``tables`` and its insert and update triggers.

    Parameters
    ----------
    tables : tuple of str
        Chained table names (keys of :data:`pipeline.ledger.schema.CHAINED`).

    Returns
    -------
    list of str
        Per table, the ``CREATE OR REPLACE FUNCTION chain_<table>()`` statement (hex SHA-256 of the
        row's content chained to the previous hash) and its ``AFTER INSERT`` and ``AFTER UPDATE``
        triggers, in that order.
    """
    statements = []
    for table in tables:
        columns = CHAINED[table]
        content = "json_build_array(" + ", ".join(f"NEW.{c}" for c in columns) + ")::text"
        statements.append(
            f"CREATE OR REPLACE FUNCTION chain_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"DECLARE d text; p text; BEGIN "
            f"d := encode(sha256(convert_to({content}, 'UTF8')), 'hex'); "
            f"SELECT hash INTO p FROM chain ORDER BY id DESC LIMIT 1; p := COALESCE(p, '{GENESIS}'); "
            f"INSERT INTO chain (tbl, row_id, content, prev, hash) VALUES ('{table}', NEW.id, d, p, "
            f"encode(sha256(convert_to(p || chr(10) || '{table}' || chr(10) || NEW.id::text || chr(10) || d, "
            f"'UTF8')), 'hex')); RETURN NULL; END $$")
        for event in ("insert", "update"):
            statements.append(f"CREATE TRIGGER chain_{table}_{event} AFTER {event.upper()} ON {table} "
                              f"FOR EACH ROW EXECUTE FUNCTION chain_{table}()")
    return statements


#: Per migration, what PostgreSQL needs beyond its tables: guards, chain triggers, backfills.
_EXTRA = {
    1: lambda: _guards("audit_log", "audit_log is append-only"),
    2: lambda: _guards("chain", "the hash chain is append-only") + chain_functions(CHAINED_SINCE[2]),
    3: lambda: (_guards("charges", "charges are corrected by new revisions, never edited")
                + _guards("charge_revisions", "charge revisions are append-only")
                + chain_functions(CHAINED_SINCE[3]) + [V3_BACKFILL]),
    4: lambda: [],
}


def migrate(connection: PgConnection) -> int:
    """Create or upgrade the ledger's schema on PostgreSQL; returns the schema version.

    Parameters
    ----------
    connection : PgConnection
        An open connection to the ledger's database; the migration runs in one transaction under
        the write lock, rolled back on any error.

    Returns
    -------
    int
        The schema version the database is at (the number of migrations).

    Raises
    ------
    LedgerError
        If the database's schema is newer than this anatomodel knows (exit code 13).
    psycopg.Error
        If a statement fails (the caller reports it as an unusable ledger).
    """
    from pipeline.errors import LedgerError

    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS ledger_schema (version BIGINT NOT NULL)")
        row = connection.execute("SELECT version FROM ledger_schema").fetchone()
        version = row[0] if row else 0
        if version > len(MIGRATIONS):
            raise LedgerError(f"the ledger has schema version {version}, newer than this anatomodel "
                              f"understands ({len(MIGRATIONS)})", hint="upgrade anatomodel before using this ledger")
        for number in range(version + 1, len(MIGRATIONS) + 1):
            # Version 4 alters a constraint in place (SQLite rebuilds the table instead).
            for statement in PG_V4 if number == 4 else _ddl(MIGRATIONS[number - 1]):
                connection._conn.execute(statement)
            for statement in _EXTRA[number]():
                connection._conn.execute(statement)
        if version == 0:
            connection._conn.execute("INSERT INTO ledger_schema (version) VALUES (%s)", (len(MIGRATIONS),))
        elif version < len(MIGRATIONS):
            connection._conn.execute("UPDATE ledger_schema SET version = %s", (len(MIGRATIONS),))
        connection._conn.execute("COMMIT")
    except BaseException:
        connection._conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def trigger_names(connection: PgConnection) -> set[str]:
    """The names of the user triggers of the ledger's database.

    Parameters
    ----------
    connection : PgConnection
        An open connection to the ledger's database.

    Returns
    -------
    set of str
        The names of every non-internal trigger (``pg_trigger``) of the database.
    """
    return {row[0] for row in connection.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
