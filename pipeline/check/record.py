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
from pipeline.files import folder_sha256, sha256_file, sums_text
from pipeline.ledger import lifecycle


def scan_sha256(scan: str | os.PathLike) -> str:
    """SHA-256 of a scan file; of a folder (a DICOM series), of its ``SHA-256  relative/path`` lines.

    Parameters
    ----------
    scan : str or os.PathLike
        The scan of the print: a file (STL, PLY...) or a folder of files (a DICOM series).

    Returns
    -------
    str
        64 lowercase hex digits: of the file's bytes, or of the folder's sorted
        ``<sha256>  <relative POSIX path>`` lines (UTF-8), so renaming or changing a file changes it.
    """
    path = Path(scan)
    if path.is_file():
        return sha256_file(path)
    return hashlib.sha256(sums_text(folder_sha256(path)).encode()).hexdigest()


def ledger_model(book: Any, model_dir: str | os.PathLike) -> tuple[str, str] | None:
    """``(case_id, model_id)`` when ``model_dir`` is the published folder of a ledger case's model.

    Parameters
    ----------
    book : pipeline.ledger.Ledger
        The open ledger.
    model_dir : str or os.PathLike
        The model folder given to ``anatomodel check``.

    Returns
    -------
    tuple of (str, str) or None
        ``(case_id, model_id)`` of the current version published there; None when the folder is not
        a ledger model's (the check is then not recorded).

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
    """The ``checked`` event's detail: verdict, policy, scan checksum, figures and failed criteria.

    Parameters
    ----------
    report : CheckReport
        The print check's report.
    policy : QAPolicy
        The QA policy it was judged by.
    policy_sha256 : str
        Hex SHA-256 of the policy file.
    scan_sha : str
        Hex SHA-256 of the scan (:func:`scan_sha256`).

    Returns
    -------
    dict
        ``passed``, ``policy``, ``policy_version``, ``policy_sha256``, ``scan_sha256``, ``scan_kind``,
        ``reference``, ``figures`` (mm, as :func:`pipeline.check.checked_event` gives them) and
        ``failed`` (names of the failed criteria).
    """
    event = checked_event(report)
    return {"passed": report.passed, "policy": policy.name, "policy_version": policy.version,
            "policy_sha256": policy_sha256, "scan_sha256": scan_sha, "scan_kind": report.scan_kind,
            "reference": report.reference, "figures": event["figures"],
            "failed": [criterion.name for criterion in report.criteria if not criterion.passed]}


def record_check(book: Any, case_id: str, model_id: str, report: CheckReport, person: Any, *, policy: QAPolicy,
                 policy_sha256: str, scan_sha: str, at: Any = None, minutes: float | None = None) -> dict[str, Any]:
    """Record the check as the ``checked`` step of the model's current version; return its state.

    Parameters
    ----------
    book : pipeline.ledger.Ledger
        The open ledger.
    case_id : str
        The case.
    model_id : str
        The model's id in the case.
    report : CheckReport
        The print check's report; a failed check raises one hold per failed criterion.
    person : pipeline.ledger.lifecycle.Person
        Who checked it.
    policy : QAPolicy
        The QA policy it was judged by.
    policy_sha256 : str
        Hex SHA-256 of the policy file.
    scan_sha : str
        Hex SHA-256 of the scan.
    at : str or datetime.datetime, optional
        When the check was done (ISO text; default now).
    minutes : float, optional
        Effort entered for the check, minutes.

    Returns
    -------
    dict
        The model's new state (:meth:`pipeline.ledger.Ledger.model_state`).

    Raises
    ------
    LedgerError
        If the step is refused (see :meth:`pipeline.ledger.Ledger.record_step`) (exit code 13).
    """
    return book.record_step(case_id, model_id, "checked", person, at=at, minutes=minutes,
                            detail=checked_detail(report, policy, policy_sha256, scan_sha),
                            holds=checked_event(report)["holds"])
