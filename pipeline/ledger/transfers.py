"""What was sent to which DICOM node, and when: the ledger's ``transfers`` table.

The table lives in the case ledger, on its back end (SQLite file or PostgreSQL server,
:class:`pipeline.ledger.Ledger`): it is created by its own idempotent statement under the
ledger's write lock (the numbered migrations do not know it, so it works beside any schema
version), and every row recorded is also entered in the audit log, under the hash chain. One
row per instance a node confirmed storing; an instance the node refused is never recorded, so
a repeated push sends exactly what is missing. No patient data: nodes, UIDs, digests, times.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from pipeline.ledger import pg
from pipeline.ledger.core import Ledger
from pipeline.report import Report

CREATE = """
CREATE TABLE IF NOT EXISTS transfers (
    id                  INTEGER PRIMARY KEY,
    sent_at             TEXT NOT NULL,            -- ISO time, UTC
    node                TEXT NOT NULL,            -- AET@HOST:PORT or DICOMweb URL
    kind                TEXT NOT NULL,            -- model (STL), segmentation, packet
    case_id             TEXT,
    model_id            TEXT,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    sha256              TEXT NOT NULL,            -- of the instance as sent (Part 10 bytes)
    UNIQUE (node, sop_instance_uid, sha256)
);
"""


@dataclass
class Transfer(Report):
    """One instance a node confirmed storing."""

    sent_at: str
    node: str
    kind: str
    case_id: str | None
    model_id: str | None
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    sha256: str


class Transfers:
    """The ``transfers`` table of a ledger.

    Parameters
    ----------
    path : path or str or Ledger, optional
        The ledger: a file, a PostgreSQL URL or an open :class:`~pipeline.ledger.Ledger`
        (default :func:`pipeline.ledger.resolve_ledger_path`).
    """

    def __init__(self, path: str | os.PathLike | Ledger | None = None):
        self._own = not isinstance(path, Ledger)
        self.ledger = Ledger(path) if self._own else path
        self.path = self.ledger.path
        statements = pg._ddl(CREATE) if self.ledger.backend == "postgresql" else [CREATE]
        with self.ledger._write() as db:
            for statement in statements:
                db.execute(statement)

    def close(self) -> None:
        if self._own:
            self.ledger.close()

    def __enter__(self) -> "Transfers":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def was_sent(self, node: str, sop_instance_uid: str, sha256: str) -> bool:
        """True if ``node`` confirmed storing this instance with these exact bytes.

        Parameters
        ----------
        node : str
            The node as recorded (``AET@HOST:PORT`` or a DICOMweb URL).
        sop_instance_uid : str
            The instance's SOP Instance UID.
        sha256 : str
            Hex SHA-256 of the instance's Part 10 bytes as sent.

        Returns
        -------
        bool
            True when a transfer with all three was recorded.
        """
        row = self.ledger._db.execute("SELECT 1 FROM transfers WHERE node = ? AND sop_instance_uid = ? AND sha256 = ?",
                                      (node, sop_instance_uid, sha256)).fetchone()
        return row is not None

    def record(self, transfer: Transfer) -> None:
        """Record one confirmed store, with its audit entry (a repeat of the same instance and bytes is kept once).

        Parameters
        ----------
        transfer : Transfer
            The instance the node confirmed storing.

        Raises
        ------
        LedgerError
            If the ledger stays locked (exit code 13).
        """
        with self.ledger._write() as db:
            if db.execute("SELECT 1 FROM transfers WHERE node = ? AND sop_instance_uid = ? AND sha256 = ?",
                          (transfer.node, transfer.sop_instance_uid, transfer.sha256)).fetchone():
                return
            db.execute(
                "INSERT INTO transfers (sent_at, node, kind, case_id, model_id, study_instance_uid, "
                "series_instance_uid, sop_class_uid, sop_instance_uid, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (transfer.sent_at, transfer.node, transfer.kind, transfer.case_id, transfer.model_id,
                 transfer.study_instance_uid, transfer.series_instance_uid, transfer.sop_class_uid,
                 transfer.sop_instance_uid, transfer.sha256))
            self.ledger._audit("pacs.sent", transfer.case_id, transfer.model_id, node=transfer.node,
                               kind=transfer.kind, study_instance_uid=transfer.study_instance_uid,
                               sop_instance_uid=transfer.sop_instance_uid, sha256=transfer.sha256)

    def list(self, *, node: str | None = None, study_instance_uid: str | None = None) -> list[Transfer]:
        """Every recorded transfer, oldest first, optionally of one node or study.

        Parameters
        ----------
        node : str, optional
            Only transfers to this node (exact match); None or empty for every node.
        study_instance_uid : str, optional
            Only transfers of this study; None or empty for every study.

        Returns
        -------
        list of Transfer
            The matching transfers, in the order they were recorded.
        """
        sql, args = "SELECT sent_at, node, kind, case_id, model_id, study_instance_uid, series_instance_uid, " \
                    "sop_class_uid, sop_instance_uid, sha256 FROM transfers WHERE 1 = 1", []
        if node:
            sql, args = sql + " AND node = ?", args + [node]
        if study_instance_uid:
            sql, args = sql + " AND study_instance_uid = ?", args + [study_instance_uid]
        return [Transfer(*row) for row in self.ledger._db.execute(sql + " ORDER BY id", args).fetchall()]


def now() -> str:
    """The current UTC time as recorded in ``sent_at``.

    Returns
    -------
    str
        ISO 8601 UTC time to the second, e.g. ``2026-01-16T14:30:00+00:00``.
    """
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
