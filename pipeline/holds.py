"""Holds: findings that make a charge wrong until a named person releases it.

Any stage or rule that finds something that could make a claim wrong (a segmentation that does
not look like the structure asked for, a mesh that failed QA, a model that fits the printer in no
orientation, a non-billable ICD-10 code, a payer rule, a patient mismatch overridden with a
reason) reports a :class:`Hold` instead of a warning. The ledger keeps every hold of a model's
charge; the line is not billable while any hold is unreleased. Warnings inform; holds block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.report import Report


@dataclass(frozen=True)
class Hold(Report):
    """One reason a charge line must wait for a person.

    Parameters
    ----------
    code : str
        Stable machine identifier, ``<source>.<what>`` in snake case, for example
        ``segment.tube_ends_inside_scan`` or ``coding.icd10_not_billable``. Software keys on it.
    reason : str
        One or two sentences a technician, radiologist or coder acts on: what was found, where
        (LPS mm, slice, field), and what would fix it.
    source : str
        The stage or rule that raised it: ``segment``, ``mesh``, ``prepare``, ``coding``,
        ``payer:<name>``, ``identity``, ``lifecycle``.
    model_id : str or None
        The model it belongs to; ``None`` for a hold on the whole encounter.
    """

    code: str
    reason: str
    source: str
    model_id: str | None = None

    def for_model(self, model_id: str) -> "Hold":
        """The same hold, attached to ``model_id``.

        Parameters
        ----------
        model_id : str
            The model the hold is for.

        Returns
        -------
        Hold
            A new hold with the same code, reason and source.
        """
        return Hold(self.code, self.reason, self.source, model_id)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Hold":
        """Inverse of ``to_dict`` (for the ledger and ``packet.json``).

        Parameters
        ----------
        data : dict
            ``code``, ``reason``, ``source`` (required, converted to text) and optionally
            ``model_id``.

        Returns
        -------
        Hold
            The hold.

        Raises
        ------
        KeyError
            ``code``, ``reason`` or ``source`` is missing.
        """
        return cls(str(data["code"]), str(data["reason"]), str(data["source"]), data.get("model_id"))


__all__ = ["Hold"]
