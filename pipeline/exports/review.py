"""The coder's view of one encounter: each model's line, its state, diagnoses and payer rules.

:func:`review_lines` is pure: it takes the ledger's charge rows of a case (``Ledger.show``'s
``charges``: model id, seq, cpt, status, reason, line), the encounter's billed lines and the payer
rules, and says for every line whether it is ``pending`` (reserved, no packet yet), ``held``
(with every hold's reason), ``billable``, ``void`` or ``discontinued``-and-billable, with the
diagnosis titles and the payer rules that applied. The billable claim lines it returns are what
the exporters take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.coding import ChargeLine, ClaimLine, claim_lines
from pipeline.errors import CodingError
from pipeline.exports import billable_lines
from pipeline.holds import Hold
from pipeline.icd10 import icd10_description
from pipeline.payers import ClaimFacts, PayerRules, RuleApplied, check_claim


@dataclass
class LineView:
    """One model's charge as a coder reads it."""

    model_id: str
    seq: int
    cpt: str
    modifiers: list[str]
    state: str
    reasons: list[str]
    diagnoses: list[str]
    rules: list[str]


@dataclass
class EncounterReview:
    """The lines of a case's encounter, the claim lines as the payer takes them, and the holds."""

    payer: str
    lines: list[LineView]
    claims: list[ClaimLine]
    holds: list[Hold]
    applied: list[RuleApplied]
    notes: list[str] = field(default_factory=list)

    @property
    def billable(self) -> list[ClaimLine]:
        """The claim lines no hold keeps from the claim (empty while the claim cannot be formed)."""
        return billable_lines(self.claims, self.holds)


def review_lines(rows: list[dict[str, Any]], billed: list[ChargeLine], payer: PayerRules,
                 facts: ClaimFacts | None = None) -> EncounterReview:
    """The coder's view of a case (see the module docstring).

    Parameters
    ----------
    rows : list of dict
        The case's charge rows (``model_id``, ``seq``, ``cpt``, ``status``, ``reason``, ``line``).
    billed : list of ChargeLine
        The encounter's billed lines (``Ledger.encounter_lines``).
    payer : PayerRules
    facts : ClaimFacts, optional
    """
    facts = facts or ClaimFacts()
    notes: list[str] = []
    holds: list[Hold] = [hold for line in billed for hold in line.holds]
    try:
        check = check_claim(claim_lines(billed), payer, facts) if billed else None
    except CodingError as error:  # e.g. the 0559T is still reserved: no claim yet
        check = None
        notes.append(f"no claim can be formed yet: {error}")
    claims = check.lines if check else []
    applied = check.applied if check else []
    holds += check.holds if check else []
    held_apart = {model: reason for claim in claims for model, reason in claim.held.items()}
    views = []
    for row in rows:
        line = ChargeLine.from_dict(row["line"]) if isinstance(row["line"], dict) else row["line"]
        reasons = [hold.reason for hold in holds if hold.model_id == line.model_id]
        if line.model_id in held_apart and held_apart[line.model_id] not in reasons:
            reasons.append(held_apart[line.model_id])
        status = row["status"]
        if status == "reserved":
            state = "pending"
        elif status == "void":
            state = "void"
        elif reasons:
            state = "held"
        else:
            state = "billable" if status == "committed" else "billable (discontinued, modifier 53)"
        if status == "void" and row.get("reason"):
            reasons = [str(row["reason"])]
        rules = [f"{a.rule}: {a.outcome} ({a.source})" for a in applied if line.model_id in a.model_ids]
        views.append(LineView(
            model_id=line.model_id, seq=int(row.get("seq") or line.sequence), cpt=line.cpt,
            modifiers=list(line.modifiers), state=state, reasons=reasons,
            diagnoses=[f"{code} {icd10_description(code)}" for code in line.icd10], rules=rules))
    return EncounterReview(payer=payer.payer, lines=views, claims=claims, holds=holds, applied=applied, notes=notes)


__all__ = ["EncounterReview", "LineView", "review_lines"]
