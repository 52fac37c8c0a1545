"""The coder's view of one encounter: each model's line, its state, diagnoses and payer rules.

:func:`review_lines` is pure: it takes the encounter's lines from the ledger's lifecycle
(``Ledger.case_billing``: billable lines numbered in delivery order, pending lines with the step
they wait for and their open holds) and the payer rules, and says for every line whether it is
``pending`` (with the step it waits for), ``held`` (with every hold's reason), ``billable`` or
``exported``, with the diagnosis titles and the payer rules that applied. The billable claim
lines it returns are what the exporters take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.coding import ClaimLine, claim_lines
from pipeline.errors import CodingError
from pipeline.exports import billable_lines
from pipeline.holds import Hold
from pipeline.icd10 import icd10_description
from pipeline.ledger.lifecycle import numbered_next
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
        """The claim lines no hold keeps from the claim (empty while the claim cannot be formed).

        Returns
        -------
        list of pipeline.coding.ClaimLine
            The kept lines, in claim order (:func:`pipeline.exports.billable_lines`).
        """
        return billable_lines(self.claims, self.holds)


def review_lines(billing: Any, payer: PayerRules, facts: ClaimFacts | None = None) -> EncounterReview:
    """The coder's view of an encounter (see the module docstring).

    Parameters
    ----------
    billing : pipeline.ledger.lifecycle.Billing
        The encounter's lines from the ledger (``Ledger.case_billing``): billable ones with
        their numbered codes, pending ones with the step they wait for and their open holds.
    payer : PayerRules
    facts : ClaimFacts, optional
        Other codes that day, mesh-only models, the setting.

    Returns
    -------
    EncounterReview
        Every line with its state (``billable``, ``exported``, ``held``, ``pending: waits for
        ...``), reasons, diagnosis titles and the payer rules that applied; the claim lines of
        the billable lines as the payer takes them.
    """
    facts = facts or ClaimFacts()
    notes: list[str] = []
    entries = sorted([*billing.billable, *billing.pending], key=lambda entry: entry.line.sequence)
    holds: list[Hold] = [hold for entry in entries for hold in [*entry.holds, *entry.line.holds]]
    billed = [entry.line for entry in billing.billable]
    check = provisional = None
    try:
        check = check_claim(claim_lines(billed), payer, facts) if billed else None
    except CodingError as error:
        notes.append(f"the billable lines do not form a claim: {error}")
    waiting = {entry.model_id for entry in billing.pending}
    if waiting:
        # The payer's view of the pending lines, so a coder sees their rules before delivery: on the
        # claim they would join (after the billable lines, numbered as if they became billable next).
        upcoming = numbered_next(billed, [entry.line for entry in billing.pending])
        try:
            provisional = check_claim(claim_lines([*billed, *upcoming]), payer, facts)
        except CodingError as error:
            notes.append(f"the payer's rules cannot be checked for the pending lines yet: {error}")
    claims = check.lines if check else []
    applied = [*(check.applied if check else []),
               *(a for a in (provisional.applied if provisional else []) if waiting & set(a.model_ids))]
    holds += [*(check.holds if check else []),
              *(h for h in (provisional.holds if provisional else []) if h.model_id in waiting)]
    held_apart = {model: reason for claim in claims for model, reason in claim.held.items()}
    views = []
    for entry in entries:
        line = entry.line
        reasons = list(dict.fromkeys(hold.reason for hold in holds if hold.model_id == line.model_id))
        if line.model_id in held_apart and held_apart[line.model_id] not in reasons:
            reasons.append(held_apart[line.model_id])
        if reasons:
            state = "held"
        elif entry.exported:
            state = "exported"
        elif entry.billable:
            state = "billable"
        else:
            state = f"pending: waits for {entry.waiting_for}"
        seen = check if entry.billable else provisional  # a pending line: the rules of the claim it would join
        rules = [f"{a.rule}: {a.outcome} ({a.source})" for a in (seen.applied if seen else [])
                 if line.model_id in a.model_ids]
        views.append(LineView(
            model_id=line.model_id, seq=int(line.sequence), cpt=line.cpt, modifiers=list(line.modifiers),
            state=state, reasons=reasons, diagnoses=[f"{code} {icd10_description(code)}" for code in line.icd10],
            rules=rules))
    return EncounterReview(payer=payer.payer, lines=views, claims=claims, holds=holds, applied=applied, notes=notes)


__all__ = ["EncounterReview", "LineView", "review_lines"]
