"""Payer rules as data: coverage, units per date of service, codes that clash or replace ours.

Each payer is ``configs/payers/<name>.yaml``, validated by :class:`PayerRules` (a bad file is a
:class:`~pipeline.errors.ConfigError` naming the file, the field and the reason). The case file's
``encounter.payer`` names it.

:func:`check_claim` is pure: given an encounter's claim lines (:class:`pipeline.coding.ClaimLine`)
and a few facts the lines do not carry (other codes billed that day, models delivered as a mesh
only, the setting), it returns the lines as the payer takes them (a line over a units limit may be
split) and a :class:`~pipeline.holds.Hold` (source ``payer:<name>``) for every model whose charge
breaks a rule, with the rule's source in the reason. It also lists every rule that applied, for the
coder's view.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from pipeline.coding import ClaimLine
from pipeline.config import ClosedModel, available, load_config
from pipeline.errors import ConfigError
from pipeline.holds import Hold
from pipeline.report import Report

#: CPT (five digits, or four and a Category II/III letter) or HCPCS Level II (a letter, four digits).
PROCEDURE_CODE = r"^(?:[0-9]{4}[0-9FTU]|[A-V][0-9]{4})$"

#: Hold codes (``payer.<what>``).
HOLD_NOT_COVERED = "payer.not_covered"
HOLD_ABN = "payer.abn_modifier_missing"
HOLD_UNITS = "payer.units_over_limit"
HOLD_SAME_CLAIM = "payer.code_not_allowed_on_same_claim"
HOLD_REPLACED = "payer.code_replaced"
HOLD_MODIFIER = "payer.modifier_not_allowed"


def _check_codes(codes: list[str]) -> list[str]:
    bad = [c for c in codes if not re.match(PROCEDURE_CODE, str(c))]
    if bad:
        raise ValueError(f"{bad} are not CPT or HCPCS codes (e.g. 0560T, 76377, C8001)")
    if len(set(codes)) != len(codes):
        raise ValueError(f"a code is listed twice in {codes}")
    return codes


#: A list of distinct CPT or HCPCS codes, at least one (every rule's codes are this).
Codes = Annotated[list[str], Field(min_length=1), AfterValidator(_check_codes)]


class _Rule(ClosedModel):
    source: str = Field(min_length=10, description="where the rule is published (title, id, date)")


class CoverageRule(_Rule):
    """The payer's stance on some codes, with the policy that states it."""

    codes: Codes
    stance: Literal["covered", "contractor_priced", "not_covered", "experimental"]
    policy: str = Field(min_length=3, description="policy id or name")
    policy_date: dt.date | None = Field(None, description="date the policy was issued or last modified")


class AbnRule(_Rule):
    """Medicare's Advance Beneficiary Notice: expected for these codes, reported with GA or GZ."""

    codes: Codes
    signed_modifier: str = Field("GA", pattern=r"^[0-9A-Z]{2}$")
    not_signed_modifier: str = Field("GZ", pattern=r"^[0-9A-Z]{2}$")
    signed_means: str = Field(min_length=10)
    not_signed_means: str = Field(min_length=10)


class UnitsRule(_Rule):
    """At most ``max_units`` of ``code`` per patient and date of service (a medically unlikely edit)."""

    code: str = Field(pattern=PROCEDURE_CODE)
    max_units: int = Field(ge=1)
    effective: dt.date
    until: dt.date | None = None
    over_limit: Literal["split", "hold"] = Field(
        description="split: bill up to the limit and hold the rest; hold: hold the whole line")

    @model_validator(mode="after")
    def _dates_in_order(self) -> UnitsRule:
        if self.until is not None and self.until < self.effective:
            raise ValueError(f"until {self.until} is before effective {self.effective}")
        return self

    def applies(self, day: dt.date) -> bool:
        """Whether the limit is in force on a date of service.

        Parameters
        ----------
        day : datetime.date
            The date of service.

        Returns
        -------
        bool
            True when ``effective <= day`` and, with an ``until``, ``day <= until``.
        """
        return self.effective <= day and (self.until is None or day <= self.until)


class SameClaimRule(_Rule):
    """Codes that must not be billed on the same date of service as ``with_codes``."""

    codes: Codes = Field(description="the other codes, e.g. 76376, 76377")
    with_codes: Codes = Field(description="our codes they clash with")
    reason: str = Field(min_length=10)


class ReplacementRule(_Rule):
    """``code`` is billed instead of ``replaces`` when only a mesh is delivered, in ``settings``."""

    code: str = Field(pattern=PROCEDURE_CODE)
    replaces: Codes
    when: Literal["mesh_only"]
    settings: list[Literal["hospital_outpatient", "physician_office", "inpatient", "asc"]] = Field(min_length=1)
    effective: dt.date
    descriptor: str = Field(min_length=10)


class ModifierRule(_Rule):
    """Whether the payer pays a line of ``codes`` with a reduced (52) or discontinued (53) modifier."""

    modifier: Literal["52", "53"]
    codes: Codes
    allowed: bool
    note: str = Field(default="", description="what the payer says, in a few words")



class PayerRules(ClosedModel):
    """``configs/payers/<name>.yaml``."""

    payer: str = Field(pattern=r"^[a-z0-9_]+$", description="the name the case file's encounter.payer gives")
    name: str = Field(min_length=3)
    reviewed: dt.date = Field(description="when a coder last checked these rules against the sources")
    coverage: list[CoverageRule] = Field(default_factory=list)
    abn: AbnRule | None = None
    units: list[UnitsRule] = Field(default_factory=list)
    same_claim: list[SameClaimRule] = Field(default_factory=list)
    replacements: list[ReplacementRule] = Field(default_factory=list)
    modifiers: list[ModifierRule] = Field(default_factory=list, description="52/53: paid or not (default: paid)")

    @model_validator(mode="after")
    def _one_stance_per_code(self) -> PayerRules:
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.coverage):
            for code in rule.codes:
                if code in seen:
                    raise ValueError(f"coverage.{index}: {code} already has a stance in coverage.{seen[code]}")
                seen[code] = index
        for index, rule in enumerate(self.units):
            for other in self.units[:index]:
                if other.code == rule.code and (other.until is None or other.until >= rule.effective) \
                        and (rule.until is None or rule.until >= other.effective):
                    raise ValueError(f"units.{index}: two limits for {rule.code} overlap in time")
        return self

    def stance(self, code: str) -> CoverageRule | None:
        """The payer's coverage rule for one code.

        Parameters
        ----------
        code : str
            A CPT or HCPCS code (``0559T``).

        Returns
        -------
        CoverageRule or None
            The rule listing ``code`` (validation allows at most one), or None.
        """
        return next((rule for rule in self.coverage if code in rule.codes), None)

    def refuses(self, modifier: str, code: str) -> ModifierRule | None:
        """The rule by which the payer does not pay ``code`` with ``modifier`` (52/53), or None.

        Parameters
        ----------
        modifier : str
            The modifier (``52`` reduced or ``53`` discontinued).
        code : str
            The CPT code of the line.

        Returns
        -------
        ModifierRule or None
            The first rule for that modifier listing ``code`` with ``allowed`` False, or None
            (the payer pays it).
        """
        return next((rule for rule in self.modifiers if rule.modifier == modifier and code in rule.codes
                     and not rule.allowed), None)


def modifier_hold(payer: str, modifier: str, code: str, model_id: str) -> Hold | None:
    """A hold when the payer ``payer`` (its rules file) does not pay ``code`` with ``modifier``.

    A discontinued (53) or reduced (52) model of such a payer is not billable until a named
    person releases the hold (e.g. after the payer confirmed it case by case).

    Parameters
    ----------
    payer : str
        The payer's name (``encounter.payer``); empty means no payer and no hold.
    modifier : str
        The modifier (``52`` or ``53``).
    code : str
        The CPT code of the model's line.
    model_id : str
        The model the hold is for.

    Returns
    -------
    Hold or None
        A ``payer.modifier_not_allowed`` hold citing the rule's source, or None when the payer
        pays the line.

    Raises
    ------
    ConfigError
        From :func:`load_payer`: unknown payer or bad rules file. Exit code 4.
    """
    if not payer:
        return None
    rules = load_payer(payer)
    rule = rules.refuses(modifier, code)
    if rule is None:
        return None
    what = "discontinued" if modifier == "53" else "reduced"
    return Hold(HOLD_MODIFIER, f"{rules.name} does not pay a {what} model ({code}-{modifier})"
                + (f": {rule.note}" if rule.note else "") + f" (source: {rule.source})", "payer", model_id)


@lru_cache(maxsize=16)
def load_payer(name: str) -> PayerRules:
    """The rules ``configs/payers/<name>.yaml`` (validated; cached per name).

    Parameters
    ----------
    name : str
        The payer's name, or the path of a ``.yaml`` rules file.

    Returns
    -------
    PayerRules
        The validated rules (the same object for the same name: do not modify it).

    Raises
    ------
    ConfigError
        Unknown payer (the message lists the known ones), a bad file (file, field, reason), or a
        named file whose ``payer`` field is not its name. Exit code 4.
    """
    rules = load_config("payers", name, PayerRules)
    if not name.endswith((".yaml", ".yml")) and rules.payer != name:
        raise ConfigError(f"payers/{name}.yaml: field 'payer' is {rules.payer!r}; it must be the file's name {name!r}")
    return rules


def check_payer(name: str, source: str, field: str = "encounter.payer") -> PayerRules:
    """Load a case file's payer before any stage runs (ConfigError naming the file and field).

    Parameters
    ----------
    name : str
        The payer's name as the case file gives it.
    source : str
        The case file's path, for the message.
    field : str
        The field's dotted name, for the message.

    Returns
    -------
    PayerRules
        The payer's rules, as :func:`load_payer`.

    Raises
    ------
    ConfigError
        An unknown payer, with the case file and field prepended to the message; other
        refusals of :func:`load_payer` unchanged. Exit code 4.
    """
    try:
        return load_payer(name)
    except ConfigError as error:
        message = str(error)
        if message.startswith("unknown payer"):
            raise ConfigError(f"{source}: field '{field}': {message}") from None
        raise


def known_payers() -> list[str]:
    """The payer names with a rules file.

    Returns
    -------
    list of str
        Sorted names of the ``payers/*.yaml`` files along the configuration path.
    """
    return available("payers")


# -- the check ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimFacts:
    """What a payer rule needs that the claim lines do not carry.

    Parameters
    ----------
    other_codes : tuple of str
        Other CPT/HCPCS codes billed for the patient on the same date of service (for example a
        radiologist's 76377 for the same study), from the hospital's charge capture.
    mesh_only_models : tuple of str
        Models delivered as a mesh only (no printed model).
    setting : str
        Where the service is billed: ``hospital_outpatient``, ``physician_office``, ``inpatient``, ``asc``.
    """

    other_codes: tuple[str, ...] = ()
    mesh_only_models: tuple[str, ...] = ()
    setting: str = "hospital_outpatient"


@dataclass
class RuleApplied(Report):
    """One rule that applied to one claim line, and what it did."""

    rule: str
    cpt: str
    outcome: Literal["ok", "note", "held", "split"]
    detail: str
    source: str
    model_ids: list[str] = field(default_factory=list)


@dataclass
class PayerCheck(Report):
    """The claim lines as the payer takes them, the holds, and the rules that applied."""

    payer: str
    lines: list[ClaimLine]
    holds: list[Hold]
    applied: list[RuleApplied]


def _policy(rule: CoverageRule) -> str:
    dated = f", {rule.policy_date.isoformat()}" if rule.policy_date else ""
    return f"{rule.policy}{dated}; source: {rule.source}"


def check_claim(claims: list[ClaimLine], payer: PayerRules, facts: ClaimFacts | None = None) -> PayerCheck:
    """Apply the payer's rules to the claim lines of one encounter.

    Parameters
    ----------
    claims : list of ClaimLine
        From :func:`pipeline.coding.claim_lines`, one encounter (one date of service).
    payer : PayerRules
    facts : ClaimFacts, optional
        Other codes that day, mesh-only models, the setting (default: none, hospital outpatient).

    Returns
    -------
    PayerCheck
        A hold per model and broken rule (``source="payer:<name>"``, the rule's source in the
        reason); a line over a ``split`` units limit becomes two lines, the second held.
    """
    facts = facts or ClaimFacts()
    source = f"payer:{payer.payer}"
    holds: list[Hold] = []
    applied: list[RuleApplied] = []

    def hold(code: str, reason: str, line: ClaimLine, models: list[str] | None = None) -> None:
        """Record one hold per model.

        Parameters
        ----------
        code : str
            The hold code (``payer.<what>``).
        reason : str
            Why, with the rule's source.
        line : ClaimLine
            The claim line whose models are held when ``models`` is None.
        models : list of str, optional
            The models to hold.
        """
        for model_id in models if models is not None else line.model_ids:
            holds.append(Hold(code, reason, source, model_id))

    lines = _apply_units(claims, payer, holds, applied, source)
    others = {code.strip().upper() for code in facts.other_codes}
    for line in lines:
        models = [m for m in line.model_ids if m not in line.held]
        if not models:  # a units split's excess line: already held
            continue
        stance = payer.stance(line.cpt)
        if stance is not None:
            rule = f"coverage {line.cpt}"
            if stance.stance in ("not_covered", "experimental"):
                word = "experimental and investigational" if stance.stance == "experimental" else "not covered"
                reason = f"{payer.name} considers {line.cpt} {word} ({_policy(stance)}); bill only with a signed waiver or written coverage"
                hold(HOLD_NOT_COVERED, reason, line, models)
                applied.append(RuleApplied(rule, line.cpt, "held", reason, stance.source, models))
            else:
                note = "covered" if stance.stance == "covered" else "no national policy: priced by the contractor"
                applied.append(RuleApplied(rule, line.cpt, "note", f"{note} ({_policy(stance)})", stance.source, models))
        abn = payer.abn
        if abn is not None and line.cpt in abn.codes:
            rule = f"ABN {line.cpt}"
            if abn.signed_modifier in line.modifiers:
                applied.append(RuleApplied(rule, line.cpt, "ok", f"{abn.signed_modifier}: {abn.signed_means}", abn.source, models))
            elif abn.not_signed_modifier in line.modifiers:
                applied.append(RuleApplied(rule, line.cpt, "note", f"{abn.not_signed_modifier}: {abn.not_signed_means}",
                                           abn.source, models))
            else:
                reason = (f"{payer.name} expects an Advance Beneficiary Notice for {line.cpt}: append "
                          f"{abn.signed_modifier} ({abn.signed_means}) or {abn.not_signed_modifier} "
                          f"({abn.not_signed_means}); source: {abn.source}")
                hold(HOLD_ABN, reason, line, models)
                applied.append(RuleApplied(rule, line.cpt, "held", reason, abn.source, models))
        for index, clash in enumerate(payer.same_claim):
            found = sorted(others & set(clash.codes))
            if line.cpt in clash.with_codes and found:
                reason = (f"{', '.join(found)} is billed on the same date of service ({line.date_of_service}) as "
                          f"{line.cpt}: {clash.reason}; source: {clash.source}")
                hold(HOLD_SAME_CLAIM, reason, line, models)
                applied.append(RuleApplied(f"same_claim.{index}", line.cpt, "held", reason, clash.source, models))
        for swap in payer.replacements:
            mesh_only = [m for m in models if m in facts.mesh_only_models]
            if (line.cpt in swap.replaces and mesh_only and facts.setting in swap.settings
                    and line.date_of_service >= swap.effective):
                reason = (f"model(s) {', '.join(mesh_only)} were delivered as a mesh only, not printed: "
                          f"{line.cpt} is for a printed model; in the {facts.setting.replace('_', ' ')} setting "
                          f"report {swap.code} ({swap.descriptor}) instead; source: {swap.source}")
                hold(HOLD_REPLACED, reason, line, mesh_only)
                applied.append(RuleApplied(f"replacement {swap.code}", line.cpt, "held", reason, swap.source, mesh_only))
    return PayerCheck(payer=payer.payer, lines=lines, holds=holds, applied=applied)


def _apply_units(claims: list[ClaimLine], payer: PayerRules, holds: list[Hold], applied: list[RuleApplied],
                 source: str) -> list[ClaimLine]:
    """The lines after the units-per-day limits: split or held as each rule says."""
    lines = [dataclasses.replace(line, held=dict(line.held), model_ids=list(line.model_ids)) for line in claims]
    for rule in payer.units:
        on_code = [line for line in lines if line.cpt == rule.code and rule.applies(line.date_of_service)]
        total = sum(line.units for line in on_code)
        if total <= rule.max_units:
            if on_code:
                applied.append(RuleApplied(f"units {rule.code}", rule.code, "ok",
                                           f"{total} of at most {rule.max_units} unit(s) per date of service",
                                           rule.source, [m for line in on_code for m in line.model_ids]))
            continue
        reason = (f"{total} units of {rule.code} on {on_code[0].date_of_service}; {payer.name} allows at most "
                  f"{rule.max_units} per date of service from {rule.effective} (source: {rule.source})")
        if rule.over_limit == "hold":
            models = [m for line in on_code for m in line.model_ids]
            holds.extend(Hold(HOLD_UNITS, reason, source, m) for m in models)
            applied.append(RuleApplied(f"units {rule.code}", rule.code, "held", reason, rule.source, models))
            continue
        room = rule.max_units
        for line in on_code:
            keep = min(line.units, room)
            room -= keep
            if keep == line.units:
                continue
            excess = line.model_ids[keep:]
            note = f"{len(excess)} unit(s) over the limit of {rule.max_units} per date of service: held"
            if keep == 0:  # the limit is used up by earlier lines: hold this one whole
                line.held.update({m: reason for m in excess})
                line.notes.append(note)
            else:
                lines.insert(lines.index(line) + 1, dataclasses.replace(
                    line, units=line.units - keep, model_ids=excess, held={m: reason for m in excess},
                    notes=[*line.notes, note]))
                line.units, line.model_ids = keep, line.model_ids[:keep]
            holds.extend(Hold(HOLD_UNITS, reason, source, m) for m in excess)
            applied.append(RuleApplied(f"units {rule.code}", rule.code, "split",
                                       f"{keep} unit(s) billed, {len(excess)} held: {reason}", rule.source, excess))
    return lines


__all__ = ["ClaimFacts", "PayerCheck", "PayerRules", "RuleApplied", "check_claim", "check_payer", "known_payers",
           "load_payer"]
