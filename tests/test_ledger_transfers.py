"""The ledger's transfers table on both back ends (SQLite file, PostgreSQL server): what a push
records, kept once per instance and bytes, entered in the audit log and so under the hash chain."""

from __future__ import annotations

import json

from postgres_server import new_ledger, postgres_server  # noqa: F401  (fixtures: both back ends)

from pipeline.ledger import Ledger
from pipeline.ledger.transfers import Transfer, Transfers


def _transfer(uid: str, digest: str = "ab" * 32) -> Transfer:
    return Transfer("2026-12-02T18:00:00+00:00", "ORTHANC@127.0.0.1:4242", "segmentation", "CASE-1", "aorta",
                    "1.2.3", "1.2.3.4", "1.2.840.10008.5.1.4.1.1.66.4", uid, digest)


def test_transfers_are_recorded_once_audited_and_chained(new_ledger):
    location = new_ledger()
    with Transfers(location) as book:
        assert not book.was_sent("ORTHANC@127.0.0.1:4242", "1.2.3.4.5", "ab" * 32)
        book.record(_transfer("1.2.3.4.5"))
        book.record(_transfer("1.2.3.4.5"))  # a repeat of the same instance and bytes
        book.record(_transfer("1.2.3.4.5", "cd" * 32))  # the same instance, other bytes
    with Transfers(location) as book:  # a second opening finds the table, does not recreate it
        rows = book.list(node="ORTHANC@127.0.0.1:4242")
        assert book.was_sent("ORTHANC@127.0.0.1:4242", "1.2.3.4.5", "cd" * 32)
        assert not book.was_sent("OTHER@127.0.0.1:104", "1.2.3.4.5", "ab" * 32)
    assert [(r.sop_instance_uid, r.sha256) for r in rows] == [("1.2.3.4.5", "ab" * 32), ("1.2.3.4.5", "cd" * 32)]
    assert rows[0] == _transfer("1.2.3.4.5")
    with Ledger(location) as ledger:
        audited = [json.loads(r["detail"]) for r in ledger._db.execute(
            "SELECT detail FROM audit_log WHERE action = 'pacs.sent' ORDER BY id")]
        report = ledger.verify()
    assert [(a["sop_instance_uid"], a["sha256"]) for a in audited] == [(r.sop_instance_uid, r.sha256) for r in rows]
    assert report.problems == []
