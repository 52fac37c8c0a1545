"""Coding rules for 3D-printed anatomic models: CPT 0559T/0560T (models), 0561T/0562T (guides).

Within one encounter (one patient, one date of service) the first model is reported with the
primary code (0559T, one unit) and every additional, individually prepared and processed model
with the add-on code (0560T, units = number of additional models). Anatomic guides follow the
same pattern with 0561T/0562T. An add-on code is never billed without its primary code on the
same encounter.

The rules (code descriptors, allowed modifiers with their conditions, refused modifiers with
their reasons, the seed document's diagnosis table judged row by row) live in
``configs/coding/<name>.yaml`` and are validated by :class:`CodingRules`. Diagnosis codes are
checked against the ICD-10-CM code set by :mod:`pipeline.icd10`: a code outside it is refused, a
header (not billable on the date of service) puts a :class:`~pipeline.holds.Hold` on the line.
Payer rules are applied to the claim lines by :mod:`pipeline.payers`.

:func:`next_charge` is pure and deterministic: given the lines already on the encounter, it
returns the line of one more model. The ledger calls it inside one transaction per encounter, so
concurrent runs can never number the same encounter twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import ClosedModel, load_config
from pipeline.errors import CodingError
from pipeline.holds import Hold
from pipeline.icd10 import icd10_description, icd10_holds, release_note, validate_icd10
from pipeline.report import Report

#: Name of the coding rules shipped with anatomodel (``configs/coding/default.yaml``).
DEFAULT_RULES = "default"

#: Diagnosis pointers of the claim form (CMS-1500 box 21 / 24E): twelve codes, four per line.
POINTER_LETTERS = "ABCDEFGHIJKL"
MAX_POINTERS_PER_LINE = 4

#: Flag prefixes other modules can test for.
FLAG_DUPLICATE_MESH = "duplicate-mesh"
FLAG_RERUN = "re-run"


# -- the rules file ------------------------------------------------------------------------------

class CptCode(ClosedModel):
    """One CPT code the rules know."""

    code: str = Field(pattern=r"^[0-9]{4}[0-9T]$")
    descriptor: str = Field(min_length=10)
    kind: Literal["model", "guide"]
    role: Literal["primary", "add_on"]
    add_on_to: str | None = None

    @model_validator(mode="after")
    def _add_on_names_its_primary(self) -> "CptCode":
        if (self.role == "add_on") != (self.add_on_to is not None):
            raise ValueError("an add_on code names its primary code in add_on_to; a primary code does not")
        return self


class AllowedModifier(ClosedModel):
    """A modifier that may be appended, with the condition it needs."""

    code: str = Field(pattern=r"^[0-9A-Z]{2}$")
    description: str
    requires: Literal["justification", "reason"] | None = None
    rule: str
    excludes: list[str] = Field(default_factory=list)


class RefusedModifier(ClosedModel):
    """A modifier that cannot apply to a model-printing service, with the reason."""

    code: str = Field(pattern=r"^[0-9A-Z]{2}$")
    description: str
    reason: str = Field(min_length=10)


class SeedDiagnosis(ClosedModel):
    """One row of the seed document's diagnosis table, judged against the ICD-10-CM code set."""

    code: str
    seed_description: str
    billable: bool
    description: str
    use_instead: list[str] = Field(default_factory=list)
    verdict: str = Field(min_length=10)
    source: str = Field(min_length=10)


class CodingRules(ClosedModel):
    """``configs/coding/<name>.yaml``."""

    rules_version: str
    codes: list[CptCode]
    allowed_modifiers: list[AllowedModifier]
    refused_modifiers: list[RefusedModifier]
    medical_necessity_template: str
    seed_diagnoses: list[SeedDiagnosis] = Field(default_factory=list)

    @field_validator("codes")
    @classmethod
    def _one_primary_and_add_on_per_kind(cls, codes: list[CptCode]) -> list[CptCode]:
        for kind in ("model", "guide"):
            roles = sorted(c.role for c in codes if c.kind == kind)
            if roles != ["add_on", "primary"]:
                raise ValueError(f"need exactly one primary and one add_on code for kind {kind!r}, got {roles}")
        return codes

    @model_validator(mode="after")
    def _modifier_lists_are_disjoint(self) -> "CodingRules":
        allowed = {m.code for m in self.allowed_modifiers}
        both = allowed & {m.code for m in self.refused_modifiers}
        if both:
            raise ValueError(f"modifier(s) {sorted(both)} are both allowed and refused")
        unknown = {x for m in self.allowed_modifiers for x in m.excludes} - allowed
        if unknown:
            raise ValueError(f"excludes names modifier(s) {sorted(unknown)} that are not allowed")
        return self

    def code_for(self, kind: str, role: str) -> CptCode:
        """The code billed for one kind of service in one role.

        Parameters
        ----------
        kind : {"model", "guide"}
            Anatomic model or anatomic guide.
        role : {"primary", "add_on"}
            The first of its kind on the encounter, or each additional one.

        Returns
        -------
        CptCode
            The one code the rules give (validation guarantees exactly one per kind and role).

        Raises
        ------
        CodingError
            ``kind`` or ``role`` is none of the above. Exit code 11.
        """
        for code in self.codes:
            if code.kind == kind and code.role == role:
                return code
        raise CodingError(f"no CPT code for kind {kind!r} in role {role!r}: kinds are "
                          f"{', '.join(sorted({c.kind for c in self.codes}))}, roles primary and add_on")

    def code(self, cpt: str) -> CptCode:
        """The rules' entry of one CPT code.

        Parameters
        ----------
        cpt : str
            The five-character CPT code (``0559T``).

        Returns
        -------
        CptCode
            Its descriptor, kind and role.

        Raises
        ------
        CodingError
            The rules do not bill ``cpt``. Exit code 11.
        """
        for code in self.codes:
            if code.code == cpt:
                return code
        raise CodingError(f"CPT {cpt} is not one of the codes these rules bill ({', '.join(c.code for c in self.codes)})")


@lru_cache(maxsize=8)
def _load_rules(name: str) -> CodingRules:
    return load_config("coding", name, CodingRules)


def load_rules(name: str = DEFAULT_RULES) -> CodingRules:
    """The coding rules ``configs/coding/<name>.yaml`` (validated; cached per name).

    Parameters
    ----------
    name : str
        A rules name found by :func:`pipeline.config.find_config` under ``coding/``, or the
        path of a ``.yaml`` file.

    Returns
    -------
    CodingRules
        The validated rules (the same object for the same name: do not modify it).

    Raises
    ------
    ConfigError
        The rules are not found or invalid. Exit code 4.
    """
    return _load_rules(name)


# -- validators -----------------------------------------------------------------------------------

def validate_modifiers(
    modifiers: list[str] | tuple[str, ...],
    reasons: dict[str, str] | None = None,
    rules: CodingRules | None = None,
) -> list[str]:
    """Check modifiers against the rules; return them upper-cased, in the order given.

    Parameters
    ----------
    modifiers : list of str
        Two-character CPT/HCPCS modifiers.
    reasons : dict of str to str, optional
        Written justification or reason per modifier, where its rule requires one.
    rules : CodingRules, optional
        Defaults to :func:`load_rules`.

    Returns
    -------
    list of str
        The modifiers stripped and upper-cased, in the order given (at most four).

    Raises
    ------
    CodingError
        A refused modifier (with the reason it cannot apply), an unknown one, a repeated one,
        two that exclude each other, more than four, a missing justification or reason, or a
        reason given for a modifier not among ``modifiers``. Exit code 11.
    """
    rules = rules or load_rules()
    reasons = {str(k).upper(): v for k, v in (reasons or {}).items()}
    allowed = {m.code: m for m in rules.allowed_modifiers}
    refused = {m.code: m for m in rules.refused_modifiers}
    result: list[str] = []
    for raw in modifiers:
        code = str(raw).strip().upper()
        if code in refused:
            entry = refused[code]
            raise CodingError(f"modifier {code} ({entry.description}) is refused: {entry.reason}")
        if code not in allowed:
            raise CodingError(
                f"modifier {code!r} is not in the coding rules; allowed: {', '.join(sorted(allowed))}"
            )
        if code in result:
            raise CodingError(f"modifier {code} is given twice")
        entry = allowed[code]
        if entry.requires and not str(reasons.get(code) or "").strip():
            raise CodingError(
                f"modifier {code} ({entry.description}) needs a written {entry.requires}: {entry.rule} "
                f"Give it in the case file as modifier_reasons: {{'{code}': '...'}}"
            )
        result.append(code)
    for code in result:
        clash = sorted(set(allowed[code].excludes) & set(result))
        if clash:
            raise CodingError(f"modifier {code} cannot be reported together with {', '.join(clash)}")
    if len(result) > 4:
        raise CodingError(f"at most four modifiers fit on a claim line, got {len(result)}: {result}")
    unused = sorted(set(reasons) - set(result))
    if unused:
        raise CodingError(f"modifier_reasons given for {unused}, which are not among the modifiers {result}")
    return result


def npi_is_valid(npi: str) -> bool:
    """True for a 10-digit NPI whose check digit is right (Luhn over ``80840`` + NPI).

    Parameters
    ----------
    npi : str
        The National Provider Identifier as text (None or anything else is accepted and gives
        False).

    Returns
    -------
    bool
        True when ``npi`` is ten digits starting with 1 or 2 and its Luhn check digit is right.
    """
    if not re.fullmatch(r"[12][0-9]{9}", str(npi or "")):
        return False
    total = 0
    for position, char in enumerate(reversed("80840" + str(npi))):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def encounter_key(patient_id: str, date_of_service: dt.date) -> str:
    """The key of an encounter: patient id and date of service (contains PHI: never a path).

    Parameters
    ----------
    patient_id : str
        The patient's medical record number.
    date_of_service : datetime.date
        The date of service.

    Returns
    -------
    str
        ``"<patient_id>|<YYYY-MM-DD>"``.
    """
    return f"{patient_id}|{date_of_service.isoformat()}"


# -- the lines ------------------------------------------------------------------------------------

def _preset_structure(preset: str) -> str:
    """The structure a segmentation preset names (``aorta`` for ``aorta_cta``), else the preset."""
    try:
        from pipeline.presets import load_preset

        return load_preset(preset).structure
    except Exception:  # a missing or broken preset is reported by the segment stage, not here
        return preset


@dataclass(frozen=True)
class BillableModel:
    """What the coding rules need to know about one model of a case.

    Parameters
    ----------
    model_id : str
        The model's id in the case file.
    patient_id : str
        Medical record number (the encounter is patient + date of service).
    date_of_service : datetime.date
    icd10 : tuple of str
        Indication diagnosis codes, most specific first. Required.
    kind : {"model", "guide"}
        ``"guide"`` for an anatomic guide (0561T/0562T).
    modifiers, modifier_reasons
        Requested modifiers and the written reason for those that need one.
    mesh_sha256 : str, optional
        SHA-256 of the model's STL bytes, to flag reprints.
    """

    model_id: str
    patient_id: str
    date_of_service: dt.date
    icd10: tuple[str, ...]
    kind: Literal["model", "guide"] = "model"
    modifiers: tuple[str, ...] = ()
    modifier_reasons: dict[str, str] = field(default_factory=dict)
    case_id: str = ""
    structure: str = ""
    indication_summary: str = ""
    purpose: str = ""
    recipient: str = ""
    modality: str = "CT"
    ordering_provider: dict[str, str] = field(default_factory=dict)
    rendering_provider: dict[str, str] = field(default_factory=dict)
    payer: str = ""
    mesh_sha256: str | None = None

    @classmethod
    def from_case(cls, case: Any, spec: Any, stl_path: Any = None) -> "BillableModel":
        """The billable model of one model entry of a case file (``pipeline.case.CaseFile``).

        ``stl_path`` (the model's ``model.stl``) gives the mesh SHA-256 that flags reprints.

        Parameters
        ----------
        case : pipeline.case.CaseFile
            The validated case file (patient, encounter, indication).
        spec : pipeline.case model entry
            The case file's model entry (``id``, ``kind``, ``preset``, ``modifiers``,
            ``modifier_reasons``, ``purpose``, ``recipient``).
        stl_path : str or Path, optional
            The model's STL; when it is not an existing file, no SHA-256 is recorded.

        Returns
        -------
        BillableModel
            The model as the coding rules see it.
        """
        from pathlib import Path

        from pipeline.files import sha256_file

        digest = None
        if stl_path is not None and Path(stl_path).is_file():
            digest = sha256_file(stl_path)
        encounter = case.encounter
        return cls(
            model_id=spec.id,
            patient_id=case.patient.id,
            date_of_service=encounter.date_of_service,
            icd10=tuple(case.indication.icd10),
            kind="guide" if spec.kind == "guide" else "model",
            modifiers=tuple(spec.modifiers),
            modifier_reasons=dict(spec.modifier_reasons),
            case_id=case.case_id,
            structure=_preset_structure(str(spec.preset)),
            indication_summary=case.indication.summary,
            purpose=spec.purpose,
            recipient=spec.recipient,
            ordering_provider=encounter.ordering_provider.model_dump(),
            rendering_provider=encounter.rendering_provider.model_dump(),
            payer=encounter.payer,
            mesh_sha256=digest,
        )


@dataclass
class ChargeLine(Report):
    """One model's line on an encounter (before aggregation into claim lines)."""

    model_id: str
    case_id: str
    cpt: str
    units: int
    modifiers: list[str]
    modifier_reasons: dict[str, str]
    icd10: list[str]
    icd10_pointers: list[str]
    date_of_service: dt.date
    encounter_key: str
    patient_id: str
    ordering_provider: dict[str, str]
    rendering_provider: dict[str, str]
    payer: str
    descriptor: str
    kind: str
    sequence: int
    medical_necessity: str
    mesh_sha256: str | None = None
    rules_version: str = ""
    flags: list[str] = field(default_factory=list)
    icd10_descriptions: list[str] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)

    @property
    def is_duplicate(self) -> bool:
        """Whether the line is flagged ``duplicate-mesh`` (a reprint, held from the claim).

        Returns
        -------
        bool
            True when a flag starts with :data:`FLAG_DUPLICATE_MESH`.
        """
        return any(flag.startswith(FLAG_DUPLICATE_MESH) for flag in self.flags)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChargeLine":
        """Inverse of ``to_dict`` (for the ledger).

        Parameters
        ----------
        data : dict
            A line as ``to_dict`` writes it (``date_of_service`` as ISO text or a date, holds as
            dicts or :class:`~pipeline.holds.Hold`); unknown keys are ignored.

        Returns
        -------
        ChargeLine
            The line.
        """
        values = dict(data)
        if isinstance(values.get("date_of_service"), str):
            values["date_of_service"] = dt.date.fromisoformat(values["date_of_service"])
        values["holds"] = [h if isinstance(h, Hold) else Hold.from_dict(h) for h in values.get("holds") or []]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class ClaimLine(Report):
    """What is billed: one CPT with units and modifiers on one encounter."""

    cpt: str
    units: int
    modifiers: list[str]
    icd10_pointers: list[str]
    diagnoses: list[str]
    date_of_service: dt.date
    encounter_key: str
    ordering_provider: dict[str, str]
    rendering_provider: dict[str, str]
    payer: str
    descriptor: str
    model_ids: list[str]
    held: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _fill(template: str, **values: str) -> str:
    return " ".join(template.format(**values).split())


def _code_role(code: CptCode) -> str:
    """How the medical necessity statement names a code's role (``first anatomic model``)."""
    kind_noun = "anatomic model" if code.kind == "model" else "anatomic guide"
    return f"{'first' if code.role == 'primary' else 'each additional'} {kind_noun}"


def renumbered(line: ChargeLine, code: CptCode, sequence: int, rules: CodingRules | None = None) -> ChargeLine:
    """The line billed as ``code``: its CPT, descriptor and sequence, and its statement saying so.

    The medical necessity statement names the code it is reported as (the template's ``{cpt}
    ({code_role})``); a line numbered again keeps the rest of its statement word for word.

    Parameters
    ----------
    line : ChargeLine
        The line as decided before (its provisional code).
    code : CptCode
        The code it is billed as.
    sequence : int
        Its place among the billed lines of its kind on the encounter (1 for the first).
    rules : CodingRules, optional
        The rules that know the line's previous code; defaults to :func:`load_rules`.

    Returns
    -------
    ChargeLine
        A new line; ``line`` is unchanged.
    """
    rules = rules or load_rules()
    previous = f"{line.cpt} ({_code_role(rules.code(line.cpt))})"
    statement = line.medical_necessity.replace(previous, f"{code.code} ({_code_role(code)})")
    return dataclasses.replace(line, cpt=code.code, descriptor=code.descriptor, sequence=sequence,
                               medical_necessity=statement)


def next_charge(
    existing: list[ChargeLine], model: BillableModel, rules: CodingRules | None = None
) -> ChargeLine:
    """The charge line of ``model`` given the lines already on its encounter.

    Pure and deterministic. Lines of other encounters in ``existing`` are ignored. The first
    model of its kind on the encounter gets the primary code (0559T or 0561T), every other one
    the add-on code (0560T or 0562T). A model id already on the encounter (a re-run) gets its
    existing code back, flagged ``re-run``: the caller records a new version, not a new charge.
    A model whose mesh SHA-256 equals another model's on the encounter is flagged
    ``duplicate-mesh``: an add-on code is for an individually prepared model, not a reprint.

    Parameters
    ----------
    existing : list of ChargeLine
        The lines already recorded (any encounters).
    model : BillableModel
        The model to charge.
    rules : CodingRules, optional
        Defaults to :func:`load_rules`.

    Returns
    -------
    ChargeLine
        One unit of the primary or add-on code with its sequence on the encounter (1 for the
        first of its kind), validated diagnoses (at most four pointers), modifiers, the medical
        necessity statement, flags and holds.

    Raises
    ------
    CodingError
        Missing indication, an ICD-10-CM code that is malformed, of another code set or not in
        the code set, refused or incomplete modifiers, or a kind other than ``model`` and
        ``guide``. Exit code 11. A header code (not billable) is not refused: the line carries
        a ``coding.icd10_not_billable`` hold in ``holds``.
    """
    rules = rules or load_rules()
    if not model.icd10:
        raise CodingError(
            f"model {model.model_id!r} has no indication: give at least one ICD-10-CM code in the "
            "case file (indication: {icd10: [...], summary: ...}); a model cannot be billed without one"
        )
    icd10 = list(dict.fromkeys(validate_icd10(code) for code in model.icd10))
    modifiers = validate_modifiers(list(model.modifiers), dict(model.modifier_reasons), rules)
    if model.kind not in ("model", "guide"):
        raise CodingError(f"model {model.model_id!r}: kind must be 'model' or 'guide', got {model.kind!r}")

    key = encounter_key(model.patient_id, model.date_of_service)
    on_encounter = [line for line in existing if line.encounter_key == key]
    same_kind = [line for line in on_encounter if line.kind == model.kind]
    flags: list[str] = []
    previous = next((line for line in on_encounter if line.model_id == model.model_id), None)
    if previous is not None:
        code = rules.code(previous.cpt)
        sequence = previous.sequence
        flags.append(f"{FLAG_RERUN}: model {model.model_id} is already on this encounter as {code.code}; "
                     "record a new version, not a new charge")
    else:
        code = rules.code_for(model.kind, "add_on" if same_kind else "primary")
        sequence = len(same_kind) + 1
    if model.mesh_sha256:
        # Only a line placed before the model's own is what it could be a reprint of: a re-run of
        # the original never becomes a duplicate of its own reprint.
        place = next((n for n, line in enumerate(on_encounter) if line.model_id == model.model_id), None)
        for line in on_encounter[:place]:
            if line.model_id != model.model_id and line.mesh_sha256 == model.mesh_sha256:
                flags.append(
                    f"{FLAG_DUPLICATE_MESH}: the mesh is byte-identical to model {line.model_id}'s; "
                    f"{code.code} is for an individually prepared and processed model, not a reprint "
                    "(held from the claim for review)"
                )
                break
    holds = icd10_holds(icd10, model.date_of_service, model.model_id)
    note = release_note(model.date_of_service)
    if note:
        flags.append(note)
    for role, provider in (("ordering", model.ordering_provider), ("rendering", model.rendering_provider)):
        if provider and provider.get("npi") and not npi_is_valid(str(provider["npi"])):
            flags.append(f"{role} provider NPI {provider['npi']} fails the NPI check digit")

    kind_noun = "anatomic model" if model.kind == "model" else "anatomic guide"
    statement = _fill(
        rules.medical_necessity_template,
        kind_noun=kind_noun,
        structure=model.structure or model.model_id,
        modality=model.modality or "imaging",
        purpose=(model.purpose or "procedure planning").replace("_", " "),
        ordering_provider=model.ordering_provider.get("name", "the ordering provider"),
        recipient=model.recipient or "the care team",
        indication_summary=(model.indication_summary or "see indication").rstrip("."),
        icd10=", ".join(icd10),
        cpt=code.code,
        code_role=_code_role(code),
    )
    return ChargeLine(
        model_id=model.model_id,
        case_id=model.case_id,
        cpt=code.code,
        units=1,
        modifiers=modifiers,
        modifier_reasons={k.upper(): v for k, v in model.modifier_reasons.items()},
        icd10=icd10,
        icd10_descriptions=[icd10_description(code) for code in icd10],
        icd10_pointers=list(POINTER_LETTERS[: min(len(icd10), MAX_POINTERS_PER_LINE)]),
        date_of_service=model.date_of_service,
        encounter_key=key,
        patient_id=model.patient_id,
        ordering_provider=dict(model.ordering_provider),
        rendering_provider=dict(model.rendering_provider),
        payer=model.payer,
        descriptor=code.descriptor,
        kind=model.kind,
        sequence=sequence,
        medical_necessity=statement,
        mesh_sha256=model.mesh_sha256,
        rules_version=rules.rules_version,
        flags=flags,
        holds=holds,
    )


def claim_lines(lines: list[ChargeLine], rules: CodingRules | None = None) -> list[ClaimLine]:
    """Aggregate model lines into what is billed, per encounter.

    The primary code is billed once (one unit); add-on lines with the same modifiers merge into
    one claim line whose units are the number of additional models. Lines flagged as duplicate
    meshes are held (listed in ``held``), not billed: apart on their kind's last claim line, or,
    when no line of their kind is billed (a guide printed from a model's mesh), as a line of their
    own whose every model is held; a held line is never left out. A model id given twice (a re-run) counts
    once, with its latest line. The encounter's diagnoses are the union of
    the lines' codes in order of appearance (at most twelve); each claim line points to at most
    four of them.

    Parameters
    ----------
    lines : list of ChargeLine
        The model lines, of one or more encounters.
    rules : CodingRules, optional
        Defaults to :func:`load_rules`.

    Returns
    -------
    list of ClaimLine
        Per encounter in order of first appearance, per kind (models, then guides): the primary
        line, then the add-on lines grouped by modifiers. Units are counts of models.

    Raises
    ------
    CodingError
        An add-on code without its primary code on the encounter, a primary code twice, more
        than twelve diagnoses on one encounter, or a code the rules do not know. Exit code 11.
    """
    rules = rules or load_rules()
    claims: list[ClaimLine] = []
    encounters: dict[str, list[ChargeLine]] = {}
    for line in lines:
        encounters.setdefault(line.encounter_key, []).append(line)
    for key, on_encounter in encounters.items():
        # A model id given twice is a re-run: its latest line counts, once.
        on_encounter = list({line.model_id: line for line in on_encounter}.values())
        diagnoses = list(dict.fromkeys(code for line in on_encounter for code in line.icd10))
        if len(diagnoses) > len(POINTER_LETTERS):
            raise CodingError(f"encounter of {on_encounter[0].date_of_service}: more than twelve diagnoses {diagnoses}")
        billed = [line for line in on_encounter if not line.is_duplicate]
        for line in billed:
            rules.code(line.cpt)
        for kind in ("model", "guide"):
            primary = rules.code_for(kind, "primary").code
            add_on = rules.code_for(kind, "add_on").code
            firsts = [line for line in billed if line.cpt == primary]
            others = [line for line in billed if line.cpt == add_on]
            if others and not firsts:
                raise CodingError(
                    f"{add_on} is an add-on code: the encounter of {others[0].date_of_service} has "
                    f"{len(others)} {add_on} line(s) (models {', '.join(l.model_id for l in others)}) but no "
                    f"{primary}; bill the first model as {primary}"
                )
            if len(firsts) > 1:
                raise CodingError(
                    f"{primary} is billed once per encounter, found {len(firsts)} "
                    f"(models {', '.join(l.model_id for l in firsts)}); the others are {add_on}"
                )
            groups: dict[tuple[str, tuple[str, ...]], list[ChargeLine]] = {}
            for line in sorted(firsts + others, key=lambda l: (l.cpt != primary, l.sequence, l.model_id)):
                groups.setdefault((line.cpt, tuple(line.modifiers)), []).append(line)
            kind_claims = [_claim_line(group, cpt, modifiers, diagnoses, rules)
                           for (cpt, modifiers), group in groups.items()]
            # Reprints are held for review on the kind's last claim line (the add-on if any); the
            # reprints of another kind's model, with no line of their own kind billed, are lines of
            # their own (per code and modifiers) held whole, never left out of the claim.
            reprints = [line for line in on_encounter if line.is_duplicate and line.kind == kind]
            held = {line.model_id: next(f for f in line.flags if f.startswith(FLAG_DUPLICATE_MESH))
                    for line in reprints}
            if held and kind_claims:
                kind_claims[-1].held.update(held)
            elif held:
                apart: dict[tuple[str, tuple[str, ...]], list[ChargeLine]] = {}
                for line in reprints:
                    apart.setdefault((line.cpt, tuple(line.modifiers)), []).append(line)
                for (cpt, modifiers), group in apart.items():
                    whole = _claim_line(group, cpt, modifiers, diagnoses, rules)
                    whole.held.update({line.model_id: held[line.model_id] for line in group})
                    kind_claims.append(whole)
            claims.extend(kind_claims)
    return claims


def _claim_line(group: list[ChargeLine], cpt: str, modifiers: tuple[str, ...], diagnoses: list[str],
                rules: CodingRules) -> ClaimLine:
    """One claim line of ``group`` (lines of one encounter), its units the number of lines."""
    codes = list(dict.fromkeys(code for line in group for code in line.icd10))
    notes = [f"{m}: {r}" for line in group for m, r in line.modifier_reasons.items() if m in modifiers]
    first = group[0]
    return ClaimLine(
        cpt=cpt,
        units=len(group),
        modifiers=list(modifiers),
        icd10_pointers=[POINTER_LETTERS[diagnoses.index(c)] for c in codes][:MAX_POINTERS_PER_LINE],
        diagnoses=diagnoses,
        date_of_service=first.date_of_service,
        encounter_key=first.encounter_key,
        ordering_provider=dict(first.ordering_provider),
        rendering_provider=dict(first.rendering_provider),
        payer=first.payer,
        descriptor=rules.code(cpt).descriptor,
        model_ids=[line.model_id for line in group],
        notes=list(dict.fromkeys(notes)),
    )
