"""The embedded case ledger (SQLite): cases, encounters, model versions, runs, charges, audit.

See :mod:`pipeline.ledger.core` for the publishing protocol that keeps the ledger and the model
folders on disk consistent across concurrent processes and crashes.
"""

from pipeline.ledger.core import (
    LEDGER_VARIABLE,
    Encounter,
    Ledger,
    PublishedModel,
    Reservation,
    Run,
    VerifyReport,
    default_ledger_path,
    open_ledger,
    resolve_ledger_path,
    software_versions,
)
from pipeline.ledger.folders import folder_problems, read_sums, sha256_file

__all__ = [
    "LEDGER_VARIABLE",
    "Encounter",
    "Ledger",
    "PublishedModel",
    "Reservation",
    "Run",
    "VerifyReport",
    "default_ledger_path",
    "folder_problems",
    "open_ledger",
    "read_sums",
    "resolve_ledger_path",
    "sha256_file",
    "software_versions",
]
