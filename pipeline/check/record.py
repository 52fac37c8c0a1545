"""The print check as a lifecycle step: find the model's case in the ledger, record ``checked``.

A model folder published by a run belongs to a ledger case (the ledger keeps each version's
folder). Its check is recorded as the ``checked`` event of the current version
(:meth:`pipeline.ledger.Ledger.record_step`): the figures, the verdict, the policy (name, version,
SHA-256 of its file) and the SHA-256 of the scan, with one hold (source ``print_qa``) per failed
criterion.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pipeline.check.policy import QAPolicy
from pipeline.check.report import CheckReport, checked_event
from pipeline.errors import LedgerError
from pipeline.ledger import lifecycle
from pipeline.ledger.folders import sha256_file


def scan_sha256(scan: str | os.PathLike) -> str:
    """SHA-256 of a scan file; of a folder (a DICOM series), of its ``SHA-256  relative/path`` lines."""
    path = Path(scan)
    if path.is_file():
        return sha256_file(path)
    lines = "".join(f"{sha256_file(file)}  {file.relative_to(path).as_posix()}\n"
                    for file in sorted(p for p in path.rglob("*") if p.is_file()))
    return hashlib.sha256(lines.encode()).hexdigest()


def ledger_model(book: Any, model_dir: str | os.PathLike) -> tuple[str, str] | None:
    """``(case_id, model_id)`` when ``model_dir`` is the published folder of a ledger case's model.

    Raises
    ------
    LedgerError
        The model is not in a state a check follows (it must be post-processed, or checked: a rescan).
    """
    found = book.model_at_folder(model_dir)
    if found is None:
        return None
    state = book.model_state(*found)
    if state["state"] not in lifecycle.FOLLOWS["checked"]:
        raise LedgerError(f"{found[0]}/{found[1]} v{state['version']} is {state['state']}: a print check "
                          "follows post-processing", hint="record `anatomodel post-processed` first")
    return found


def checked_detail(report: CheckReport, policy: QAPolicy, policy_sha256: str, scan_sha: str) -> dict[str, Any]:
    """The ``checked`` event's detail: verdict, policy, scan checksum, figures and failed criteria."""
    event = checked_event(report)
    return {"passed": report.passed, "policy": policy.name, "policy_version": policy.version,
            "policy_sha256": policy_sha256, "scan_sha256": scan_sha, "scan_kind": report.scan_kind,
            "reference": report.reference, "figures": event["figures"],
            "failed": [criterion.name for criterion in report.criteria if not criterion.passed]}


def record_check(book: Any, case_id: str, model_id: str, report: CheckReport, person: Any, *, policy: QAPolicy,
                 policy_sha256: str, scan_sha: str, at: Any = None, minutes: float | None = None) -> dict[str, Any]:
    """Record the check as the ``checked`` step of the model's current version; return its state."""
    return book.record_step(case_id, model_id, "checked", person, at=at, minutes=minutes,
                            detail=checked_detail(report, policy, policy_sha256, scan_sha),
                            holds=checked_event(report)["holds"])
