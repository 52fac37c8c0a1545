"""The ledger's hash chain: every row written to a chained table, checked by ``ledger verify``.

Each insert or update of a row in a table of :data:`pipeline.ledger.schema.CHAINED` appends an
entry to ``chain`` (by trigger): the SHA-256 of the row's content, the previous entry's hash,
and the SHA-256 over both. :func:`problems` re-derives the chain and compares every row with
its latest entry, so an edited, deleted or forged row (also one changed after dropping a
trigger, or through a connection that bypasses anatomodel) is found.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from pipeline.errors import LedgerError
from pipeline.ledger.schema import CHAINED, CHAINED_SINCE, GENESIS, chain_trigger_names, content_sql, guard_trigger_names


#: Chained tables whose rows are written once: a second chain entry for a row is an edit.
_INSERT_ONLY = ("audit_log", "charge_revisions")


def digest(content: str) -> str:
    """SHA-256 (hex) of a row's canonical content.

    Parameters
    ----------
    content : str
        The row's content as the chain writes it (``json_array(columns)`` text), encoded as UTF-8.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def link(prev: str, table: str, row_id: int, content_digest: str) -> str:
    """The hash of one chain entry: SHA-256 over the previous hash, the row's table, id and content.

    Parameters
    ----------
    prev : str
        The previous entry's hash (hex), or :data:`pipeline.ledger.schema.GENESIS` for the first.
    table : str
        The chained table's name.
    row_id : int
        The row's id in that table.
    content_digest : str
        :func:`digest` of the row's content (hex).

    Returns
    -------
    str
        SHA-256 (64 lowercase hex digits) of ``prev``, ``table``, ``row_id`` and ``content_digest``
        joined by newlines, UTF-8.
    """
    return hashlib.sha256(f"{prev}\n{table}\n{row_id}\n{content_digest}".encode("utf-8")).hexdigest()


def register(connection: sqlite3.Connection) -> None:
    """Give a connection the functions the chain triggers call.

    Parameters
    ----------
    connection : sqlite3.Connection
        A SQLite connection to the ledger; gets ``chain_digest(text)`` (:func:`digest`) and
        ``chain_hash(prev, table, id, digest)`` (:func:`link`).
    """
    connection.create_function("chain_digest", 1, digest, deterministic=True)
    connection.create_function("chain_hash", 4, link, deterministic=True)


def backfill(connection: sqlite3.Connection) -> None:
    """Enter every existing row of the chained tables into an empty chain (migration to v2).

    Parameters
    ----------
    connection : sqlite3.Connection
        A SQLite connection inside the migration's transaction, with :func:`register` done; the
        rows of :data:`pipeline.ledger.schema.CHAINED_SINCE` ``[2]`` are chained table by table in
        id order, starting from :data:`pipeline.ledger.schema.GENESIS`.
    """
    prev = GENESIS
    for table in CHAINED_SINCE[2]:
        for row_id, content in connection.execute(f"SELECT id, {content_sql(table)} FROM {table} ORDER BY id"):
            entry = digest(content)
            prev_hash, prev = prev, link(prev, table, row_id, entry)
            connection.execute("INSERT INTO chain (tbl, row_id, content, prev, hash) VALUES (?, ?, ?, ?, ?)",
                               (table, row_id, entry, prev_hash, prev))


def problems(connection: Any, backend: str = "sqlite") -> list[str]:
    """Every break of the chain and every row that does not match its latest entry.

    ``backend`` is ``sqlite`` or ``postgresql`` (:mod:`pipeline.ledger.pg`): where the triggers
    are listed, and how a row's content is written (``json_array`` or ``json_build_array``).

    Parameters
    ----------
    connection : sqlite3.Connection or pipeline.ledger.pg.PgConnection
        An open connection to the ledger.
    backend : {"sqlite", "postgresql"}
        The connection's back end.

    Returns
    -------
    list of str
        One message per problem (missing chain or guard trigger, broken or edited entry, a row of an
        append-only table changed, a row missing from the chain, differing from it, or deleted);
        empty when the chain holds.
    """
    found: list[str] = []
    if backend == "postgresql":
        from pipeline.ledger import pg

        present = pg.trigger_names(connection)
    else:
        present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    for name in sorted(chain_trigger_names() - present):
        found.append(f"trigger {name} is missing: rows of its table may have been written outside the chain")
    for name in sorted(guard_trigger_names() - present):
        found.append(f"trigger {name} is missing: rows of an append-only table may have been changed")
    latest: dict[tuple[str, int], str] = {}
    prev = GENESIS
    revisions_since = None  # the first entry of a charge revision: charges are insert-only from then on
    for entry_id, table, row_id, content, entry_prev, entry_hash in connection.execute(
            "SELECT id, tbl, row_id, content, prev, hash FROM chain ORDER BY id"):
        if entry_prev != prev:
            found.append(f"hash chain broken at entry {entry_id}: its previous hash is not entry {entry_id - 1}'s "
                         "(entries removed or inserted)")
        if link(entry_prev, table, row_id, content) != entry_hash:
            found.append(f"hash chain entry {entry_id} ({table} row {row_id}) does not match its hash (edited)")
        if table == "charge_revisions" and revisions_since is None:
            revisions_since = entry_id
        if (table, row_id) in latest and (table in _INSERT_ONLY or (table == "charges" and revisions_since)):
            found.append(f"{table} row {row_id} was changed after it was written (chain entry {entry_id}); "
                         "its table is append-only")
        prev = entry_hash
        latest[(table, row_id)] = content
    for table in CHAINED:
        content = content_sql(table) + ("::text" if backend == "postgresql" else "")
        rows: dict[int, Any] = {row_id: text for row_id, text in connection.execute(
            f"SELECT id, {content} FROM {table}")}
        for row_id, content in sorted(rows.items()):
            recorded = latest.get((table, row_id))
            if recorded is None:
                found.append(f"{table} row {row_id} is not in the hash chain (written outside anatomodel)")
            elif digest(content) != recorded:
                found.append(f"{table} row {row_id} differs from its last recorded content (edited outside "
                             "anatomodel)")
        for (chained_table, row_id) in sorted(latest):
            if chained_table == table and row_id not in rows:
                found.append(f"{table} row {row_id} was deleted")
    return found


#: The ``format`` of an anchor file (:func:`anchor`).
ANCHOR_FORMAT = "anatomodel-ledger-anchor-v1"
_ANCHOR_HINT = "give the file `ledger anchor` wrote"


def anchor(connection: Any, at: str) -> dict[str, Any]:
    """The chain's head as of now: its last hash and number of entries, to keep outside the ledger.

    A later chain must extend it (:func:`anchor_problems`): a rewrite of the whole chain, which
    the chain alone cannot reveal, changes the hash at that position.

    Parameters
    ----------
    connection : sqlite3.Connection or pipeline.ledger.pg.PgConnection
        An open connection to the ledger (best inside a read transaction).
    at : str
        When the anchor is taken (ISO UTC text), stored as it is.

    Returns
    -------
    dict
        ``{"format": ANCHOR_FORMAT, "entries": int, "head": str, "at": str}``; ``head`` is the last
        entry's hash (hex), :data:`pipeline.ledger.schema.GENESIS` for an empty chain.
    """
    entries, = connection.execute("SELECT COUNT(*) FROM chain").fetchone()
    head = connection.execute("SELECT hash FROM chain ORDER BY id DESC LIMIT 1").fetchone()
    return {"format": ANCHOR_FORMAT, "entries": int(entries), "head": head[0] if head else GENESIS, "at": at}


def check_anchor(kept: Any, source: str = "the anchor") -> dict[str, Any]:
    """``kept`` if it is an anchor as :func:`anchor` writes it; else a clear refusal.

    Parameters
    ----------
    kept : object
        The anchor as read (a JSON document).
    source : str
        Where it comes from (its file), for the message.

    Returns
    -------
    dict
        ``kept``, unchanged.

    Raises
    ------
    LedgerError
        ``kept`` is not a JSON object, has another ``format``, its ``entries`` is not a count of
        entries, its ``head`` not a chain hash or its ``at`` not a time; the message names
        ``source`` and the first of these. Exit code 13.
    """
    entries = kept.get("entries") if isinstance(kept, dict) else None
    head = kept.get("head") if isinstance(kept, dict) else None
    if not isinstance(kept, dict):
        wrong = f"it holds a JSON {type(kept).__name__}, not an object"
    elif kept.get("format") != ANCHOR_FORMAT:
        wrong = f"its format is {_brief(kept.get('format'))}, not {ANCHOR_FORMAT!r}"
    elif isinstance(entries, bool) or not isinstance(entries, int) or entries < 0:
        wrong = f"its entries is {_brief(entries)}, not a count of chain entries (an integer, 0 or more)"
    elif not isinstance(head, str) or not (head == GENESIS or re.fullmatch(r"[0-9a-f]{64}", head)):
        wrong = f"its head is {_brief(head)}, not a chain hash (64 lowercase hex digits, or {GENESIS!r})"
    elif not isinstance(kept.get("at"), str) or not kept["at"].strip():
        wrong = f"its at is {_brief(kept.get('at'))}, not the time the anchor was taken"
    else:
        return kept
    raise LedgerError(f"{source} is not a ledger anchor: {wrong}", hint=_ANCHOR_HINT)


def _brief(value: Any) -> str:
    """A value as a message shows it: its repr, cut at 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_anchor(path: str | Path) -> dict[str, Any]:
    """An anchor file written from :func:`anchor` (``ledger anchor --out``), checked.

    Parameters
    ----------
    path : str or Path
        The anchor file (JSON).

    Returns
    -------
    dict
        The anchor, as :func:`anchor` gave it.

    Raises
    ------
    LedgerError
        The file cannot be read, is not JSON, or is not an anchor (:func:`check_anchor`); the
        message names the file and what is wrong. Exit code 13.
    """
    try:
        kept = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LedgerError(f"cannot read the anchor {path}: {error}", hint=_ANCHOR_HINT) from None
    return check_anchor(kept, str(path))


def anchor_problems(connection: Any, kept: dict[str, Any], source: str = "the anchor") -> list[str]:
    """Why the chain does not extend the anchor ``kept`` (empty when it does).

    Parameters
    ----------
    connection : sqlite3.Connection or pipeline.ledger.pg.PgConnection
        An open connection to the ledger.
    kept : dict
        An anchor from :func:`anchor` or :func:`read_anchor`.
    source : str
        Where ``kept`` comes from (its file), for the message of a malformed anchor.

    Returns
    -------
    list of str
        One message when the chain is shorter than the anchor, has another hash at its position, or
        the anchor is malformed (no entry but a hash); empty when the chain extends it.

    Raises
    ------
    LedgerError
        ``kept`` is not an anchor (:func:`check_anchor`), before the ledger is read; the
        message names ``source`` and what is wrong. Exit code 13.
    """
    entries = check_anchor(kept, source)["entries"]
    if entries == 0:
        return [] if kept["head"] == GENESIS else ["the anchor names no entry but a hash (not an anchor)"]
    row = connection.execute("SELECT hash FROM chain ORDER BY id LIMIT 1 OFFSET ?", (entries - 1,)).fetchone()
    if row is None:
        return [f"the hash chain is shorter than the anchor of {kept['at']} ({entries} entries): entries were removed"]
    if row[0] != kept["head"]:
        return [f"the hash chain no longer extends the anchor of {kept['at']}: entry {entries} has another hash "
                "(the chain was rewritten)"]
    return []
