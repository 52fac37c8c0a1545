"""The case ledger (SQLite file or PostgreSQL server): cases, encounters, model versions, runs,
charges, the model lifecycle, holds, exports and an audit log, under one hash chain.

See :mod:`pipeline.ledger.core` for the publishing protocol that keeps the ledger and the model
folders on disk consistent across concurrent processes and crashes, and
:mod:`pipeline.ledger.lifecycle` for when a charge becomes billable.
"""

from pipeline.ledger.core import (
    LEDGER_VARIABLE,
    LedgerEncounter,
    Ledger,
    PublishedModel,
    Reservation,
    Run,
    VerifyReport,
    default_ledger_path,
    open_ledger,
    resolve_ledger_path,
)
from pipeline.ledger.folders import folder_problems
from pipeline.ledger.lifecycle import Billing, BillingLine, Person

__all__ = [
    "Billing",
    "BillingLine",
    "Person",
    "LEDGER_VARIABLE",
    "LedgerEncounter",
    "Ledger",
    "PublishedModel",
    "Reservation",
    "Run",
    "VerifyReport",
    "default_ledger_path",
    "folder_problems",
    "open_ledger",
    "resolve_ledger_path",
]
