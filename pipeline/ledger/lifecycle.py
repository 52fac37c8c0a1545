"""A model's life after its packet: approved, printed, post-processed, checked, delivered -- then billed.

Every step is an audited ledger event of one model version, with who (name, role, and the NPI
of a clinician), when and what. The steps go in order::

    prepared -> approved -> printed -> post_processed -> checked -> delivered
                        \\-> discontinued (modifier 53, from approved, printed, post_processed or checked)
                                        \\-> reduced (modifier 52, from printed, post_processed or checked)

``prepared`` is recorded when a run publishes a version; a new version needs approval again.
``checked`` is the print QA (``anatomodel check``): its figures and verdict, and a hold per
failed criterion (source ``print_qa``). After it:

* a passing check is delivered;
* a failed check is delivered only once its holds are released by a named person
  (``anatomodel release``); or the model is *reprinted*: a new ``printed`` event of the same
  version (same charge, never a new 0560T), which releases the failed check's holds and needs
  post-processing and a new check before delivery;
* a check may be repeated on the same print (a rescan; ``checked`` follows ``checked``): holds
  of an earlier failed check stay open until released or reprinted.

``delivered`` follows ``post_processed`` directly only when the lab's QA policy says
``required: false`` (recorded in the event: ``qa_policy``, ``qa_required``), and never for a
version that was checked once. A charge is billable only when its model is delivered (or
reduced, or discontinued with modifier 53) and no hold on the version is unreleased. CPT
numbering follows the billable lines of the encounter in the order they became billable (the
first of a kind gets the primary code), except that a line once exported keeps the code it was
exported with.

Effort is recorded per ACR-RSNA 3D printing registry category (:data:`REGISTRY_CATEGORIES`),
for clinicians and non-clinicians: measured from the run (segmentation, CAD/design) and from the
print job's start and end, or entered with the event (``minutes``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from pipeline import coding
from pipeline.config import text_problem
from pipeline.errors import LedgerError
from pipeline.holds import Hold
from pipeline.icd10 import HOLD_NOT_BILLABLE, HOLD_NOT_IN_EFFECT
from pipeline.report import Report

#: The steps of a model's life in order, then the end states.
STEPS = ("prepared", "approved", "printed", "post_processed", "checked", "delivered")
END_STATES = ("delivered", "discontinued", "reduced")
#: Which state each step may follow (``printed`` after ``checked``: a reprint, only after a failed
#: check; ``delivered`` after ``post_processed``: only when the QA policy does not require a check).
FOLLOWS: dict[str, tuple[str, ...]] = {
    "approved": ("prepared",),
    "printed": ("approved", "checked"),
    "post_processed": ("printed",),
    "checked": ("post_processed", "checked"),
    "delivered": ("checked", "post_processed"),
    "discontinued": ("approved", "printed", "post_processed", "checked"),
    "reduced": ("printed", "post_processed", "checked"),
}
#: What a model in each state waits for before it can be billed.
WAITS_FOR = {"prepared": "approval", "approved": "printing", "printed": "post-processing",
             "post_processed": "print QA", "checked": "delivery"}
#: The source of the holds a failed print check raises (:mod:`pipeline.check`).
PRINT_QA_SOURCE = "print_qa"
#: The hold on a model whose mesh is byte-identical to an earlier charged model's (a reprint);
#: once a named person releases it, the line is billed like any other (see ``billing``).
HOLD_DUPLICATE_MESH = "ledger.duplicate_mesh"
#: Holds whose cause is a value the claim would carry and a payer denies (a diagnosis code not
#: billable or not in effect on the date of service, an NPI failing its check digit, a date of
#: service before birth): never released, since the claim would still carry that value; the case
#: file is corrected and the case run again (the new version's line carries the corrected value).
UNRELEASABLE = {
    HOLD_NOT_BILLABLE: "indication.icd10 (a billable code of the header)",
    HOLD_NOT_IN_EFFECT: "indication.icd10 (a code in effect on the date of service)",
    "coding.ordering_npi_check_digit": "encounter.ordering_provider.npi",
    "coding.rendering_npi_check_digit": "encounter.rendering_provider.npi",
    "coding.date_of_service_before_birth": "encounter.date_of_service or patient.birth_date",
}
#: The source of the coding rules' holds; releasing one needs a coder (a role of
#: :data:`CODING_ROLES`) or a clinician (:attr:`Person.clinician`).
CODING_SOURCE = "coding"
CODING_ROLES = ("coder", "billing")
#: The registry's effort categories (each for clinicians and for non-clinicians).
REGISTRY_CATEGORIES = ("consultation", "segmentation", "cad_design", "preparation_post_processing")
#: The category a step's entered minutes count in.
STEP_CATEGORY = {"approved": "segmentation", "printed": "preparation_post_processing",
                 "post_processed": "preparation_post_processing", "checked": "preparation_post_processing",
                 "delivered": "consultation",
                 "discontinued": "preparation_post_processing", "reduced": "preparation_post_processing"}
#: Run timing keys (``<model>.<step>``) and the registry category their seconds count in.
RUN_CATEGORY = {"segmentation": "segmentation", "processing": "cad_design", "print_preparation": "cad_design"}
#: The numbering rule, said wherever a line's CPT code is shown (``ledger list | show | export``).
CODE_RULE = ("CPT codes follow the order in which the encounter's lines became billable (delivered, reduced or "
             "discontinued, with no open hold): the first gets the primary code (0559T; 0561T for a guide), each "
             "further one the add-on code (0560T; 0562T), whatever order the models were run in; an exported line "
             "keeps the code it was exported with; a pending line's code is provisional until it becomes billable")
#: What a shown code is (:attr:`BillingLine.code_basis`), and what that means for the coder.
CODE_BASIS = {"exported": "exported: the code the line was exported with, kept",
              "billed": "billed: numbered in the order the encounter's lines became billable",
              "provisional": "provisional: numbered when the line becomes billable",
              "void": "void: not billed"}


@dataclasses.dataclass(frozen=True)
class Person(Report):
    """Who did a step: name, role, and the NPI of a clinician (checked by its check digit).

    Parameters
    ----------
    name : str
    role : str
        For example ``radiologist``, ``surgeon``, ``technologist``, ``engineer``.
    npi : str, optional
        The clinician's National Provider Identifier; given, it must pass the check digit.
    """

    name: str
    role: str
    npi: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise LedgerError("a lifecycle step needs the name of the person who did it", hint="give --by NAME")
        if not self.role or not self.role.strip():
            raise LedgerError(f"give the role of {self.name} (e.g. radiologist, technologist)", hint="give --role")
        for field, text in (("name", self.name), ("role", self.role)):
            problem = text_problem(text, 200)
            if problem:
                raise LedgerError(f"the {field} of the person who did the step {problem}", hint="give plain text")
        if self.npi is not None and not coding.npi_is_valid(self.npi):
            raise LedgerError(f"NPI {self.npi!r} of {self.name} fails the NPI check digit",
                              hint="give the clinician's 10-digit NPI as registered in NPPES")

    @property
    def clinician(self) -> bool:
        """A clinician is someone who gave an NPI.

        Returns
        -------
        bool
            True when an NPI was given.
        """
        return bool(self.npi)


def effort(category: str, minutes: float, clinician: bool, source: str) -> dict[str, Any]:
    """One effort entry: ``minutes`` (>= 0) of a registry category, measured or entered.

    Parameters
    ----------
    category : str
        One of :data:`REGISTRY_CATEGORIES`.
    minutes : float
        Time spent, in minutes; zero or more (NaN is refused). Stored rounded to 0.01 min.
    clinician : bool
        Whether a clinician spent it (the registry counts clinicians and non-clinicians apart).
    source : {"measured", "entered"}
        Whether it was measured (run timings, print job times) or entered with a step.

    Returns
    -------
    dict
        ``{"category": str, "clinician": bool, "minutes": float, "source": str}``.

    Raises
    ------
    LedgerError
        If the category is unknown or the minutes are negative, NaN or infinite (exit code 13).
    """
    if category not in REGISTRY_CATEGORIES:
        raise LedgerError(f"effort category {category!r} is not one of {', '.join(REGISTRY_CATEGORIES)}")
    if not 0 <= minutes < float("inf"):  # NaN and infinity fail too (JSON would store them as null)
        raise LedgerError(f"effort minutes must be a finite number, zero or more, got {minutes}")
    return {"category": category, "clinician": clinician, "minutes": round(float(minutes), 2), "source": source}


def run_effort(timings: dict[str, float], model_id: str) -> list[dict[str, Any]]:
    """The measured effort of a run for one model (non-clinician, from its step timings in s).

    Parameters
    ----------
    timings : dict of str to float
        The run's step timings in seconds, keyed ``<model_id>.<step>`` (steps of :data:`RUN_CATEGORY`).
    model_id : str
        The model whose timings count.

    Returns
    -------
    list of dict
        One :func:`effort` entry (``source`` ``measured``, non-clinician) per category with a timing;
        empty when the run timed none of the model's steps.
    """
    minutes: dict[str, float] = {}
    for step, category in RUN_CATEGORY.items():
        seconds = timings.get(f"{model_id}.{step}")
        if seconds is not None:
            minutes[category] = minutes.get(category, 0.0) + seconds / 60.0
    return [effort(category, value, False, "measured") for category, value in minutes.items()]


def effort_summary(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Minutes per registry category, for clinicians and non-clinicians, over a version's events.

    Parameters
    ----------
    events : list of dict
        The version's events as :func:`event_row` gives them (each with its decoded ``effort`` list).

    Returns
    -------
    dict of str to dict of str to float
        ``{category: {"clinician": minutes, "non_clinician": minutes}}`` for every category of
        :data:`REGISTRY_CATEGORIES` (0.0 when none), in minutes rounded to 0.01.
    """
    summary = {category: {"clinician": 0.0, "non_clinician": 0.0} for category in REGISTRY_CATEGORIES}
    for event in events:
        for entry in event["effort"]:
            who = "clinician" if entry["clinician"] else "non_clinician"
            summary[entry["category"]][who] = round(summary[entry["category"]][who] + entry["minutes"], 2)
    return summary


def parse_time(value: str | dt.datetime | None, what: str) -> dt.datetime:
    """An aware UTC time from ISO text or a datetime (naive means UTC); now when None.

    Parameters
    ----------
    value : str or datetime.datetime or None
        ISO 8601 text (``2026-01-16T14:30``, with or without an offset) or a datetime; None for now.
    what : str
        What the time is, for the error message (e.g. ``job start``).

    Returns
    -------
    datetime.datetime
        The time in UTC (timezone-aware). Up to five minutes ahead of the clock is accepted (clock skew).

    Raises
    ------
    LedgerError
        Unparseable text, or a time more than five minutes in the future.
    """
    now = dt.datetime.now(dt.timezone.utc)
    if value is None:
        return now
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise LedgerError(f"{what} {value!r} is not an ISO date-time such as 2026-01-16T14:30") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    if value - now > dt.timedelta(minutes=5):
        raise LedgerError(f"{what} {value.isoformat()} is in the future", hint="give the time the step happened")
    return value.astimezone(dt.timezone.utc)


def step_details(step: str, detail: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """Check the required details of a step; return them and the minutes measured from them.

    ``printed`` needs ``printer``, ``serial``, ``material``, ``lot``, ``layer_height_mm`` (> 0),
    ``job_start`` and ``job_end`` (after the start: their difference is the measured time);
    ``post_processed`` needs ``steps`` (of cleaning, curing, support_removal, labelling);
    ``checked`` needs ``passed`` (bool), ``policy``, ``policy_version``, ``scan_sha256`` and
    ``figures`` (the print check's, :func:`pipeline.check.checked_event`);
    ``delivered`` needs ``recipient`` and ``purpose``; ``discontinued`` and ``reduced`` need
    ``reason``.

    Parameters
    ----------
    step : str
        The lifecycle step (a key of :data:`FOLLOWS`); steps with no required details pass as given.
    detail : dict
        The details given with the step. ``job_start`` and ``job_end`` are ISO text or datetimes;
        ``layer_height_mm`` is in mm.

    Returns
    -------
    tuple of (dict, float or None)
        The details (for ``printed``: times normalised to ISO UTC text and ``layer_height_mm`` a
        float) and the minutes measured from them (the print job's duration, in minutes), or None
        for a step that measures none.

    Raises
    ------
    LedgerError
        If a required detail is missing or blank, the layer height is not a finite figure above 0 mm, a job time is
        unparseable or in the future, the job ends before it starts, ``passed`` is not a bool,
        ``figures`` is not a mapping, or a post-processing step is unknown (exit code 13).
    """
    required = {"printed": ("printer", "serial", "material", "lot", "layer_height_mm", "job_start", "job_end"),
                "post_processed": ("steps",), "delivered": ("recipient", "purpose"),
                "checked": ("passed", "policy", "policy_version", "scan_sha256", "figures"),
                "discontinued": ("reason",), "reduced": ("reason",)}.get(step, ())
    missing = [name for name in required
               if detail.get(name) in (None, [], ()) or (isinstance(detail.get(name), str) and not detail[name].strip())]
    if missing:
        raise LedgerError(f"the {step.replace('_', '-')} step needs {', '.join(missing)}",
                          hint=f"give --{missing[0].replace('_', '-')}")
    measured = None
    if step == "printed":
        if not 0 < float(detail["layer_height_mm"]) < float("inf"):
            raise LedgerError(f"layer height must be a finite number of mm above 0, got {detail['layer_height_mm']}")
        start = parse_time(detail["job_start"], "job start")
        end = parse_time(detail["job_end"], "job end")
        if end <= start:
            raise LedgerError(f"the print job ends ({end.isoformat()}) before it starts ({start.isoformat()})")
        detail = {**detail, "job_start": start.isoformat(), "job_end": end.isoformat(),
                  "layer_height_mm": float(detail["layer_height_mm"])}
        measured = (end - start).total_seconds() / 60.0
    if step == "checked":
        if not isinstance(detail["passed"], bool):
            raise LedgerError(f"a check's verdict 'passed' must be true or false, got {detail['passed']!r}")
        if not isinstance(detail["figures"], dict):
            raise LedgerError("a check's figures must be a mapping of name to value")
    if step == "post_processed":
        known = {"cleaning", "curing", "support_removal", "labelling"}
        unknown = sorted(set(detail["steps"]) - known)
        if unknown:
            raise LedgerError(f"post-processing steps {unknown} are not among {sorted(known)}")
    return detail, measured


@dataclasses.dataclass
class BillingLine(Report):
    """One model's line of an encounter: billable, or pending with what it waits for."""

    case_id: str
    model_id: str
    version: int | None
    state: str
    billable: bool
    waiting_for: str | None
    exported: bool
    holds: list[Hold]
    line: Any  # pipeline.coding.ChargeLine: the billed code when billable, else the provisional one

    @property
    def code_basis(self) -> str:
        """What the line's CPT code is: ``exported``, ``billed`` or ``provisional`` (:data:`CODE_BASIS`).

        Returns
        -------
        str
            ``exported`` once the line was exported (its code is kept), else ``billed`` when it is
            billable (numbered by :func:`number_lines`), else ``provisional``.
        """
        return "exported" if self.exported else "billed" if self.billable else "provisional"


@dataclasses.dataclass
class Billing(Report):
    """An encounter's lines split into billable and pending (with the step each waits for)."""

    encounter_id: int
    patient_id: str
    date_of_service: str
    billable: list[BillingLine]
    pending: list[BillingLine]

    def claim(self) -> list[Any]:
        """The claim lines of the billable lines (:func:`pipeline.coding.claim_lines`).

        Returns
        -------
        list of pipeline.coding.ClaimLine
            The claim lines, empty when nothing is billable.
        """
        return coding.claim_lines([entry.line for entry in self.billable]) if self.billable else []

    def by_model(self) -> dict[tuple[str, str], BillingLine]:
        """Every line not void, by ``(case_id, model_id)``: what each view shows of a charge.

        Returns
        -------
        dict of tuple of (str, str) to BillingLine
            The billable and pending lines; each line's code is the billed one, the exported one
            or the provisional one (:attr:`BillingLine.code_basis`).
        """
        return {(entry.case_id, entry.model_id): entry for entry in [*self.billable, *self.pending]}

    @property
    def held(self) -> list[BillingLine]:
        """The pending lines that wait for a hold to be released.

        Returns
        -------
        list of BillingLine
            The pending lines with at least one open hold, in their order.
        """
        return [entry for entry in self.pending if entry.holds]


def number_lines(entries: list[dict[str, Any]]) -> None:
    """Give the ready, unexported lines their codes in the order they became ready (in place).

    ``entries`` hold ``line`` (ChargeLine), ``ready_at`` (ISO text or None) and ``exported``
    (the line as exported, or None). Exported lines keep their code; the first of a kind on the
    encounter gets the primary code, the others the add-on code.

    Parameters
    ----------
    entries : list of dict
        The encounter's lines, changed in place: each ready, unexported entry's ``line`` is
        replaced by one with its CPT code, descriptor, sequence number and the medical necessity
        statement naming that code (:func:`pipeline.coding.renumbered`).
    """
    rules = coding.load_rules()
    taken = {entry["exported"].kind for entry in entries if entry["exported"] is not None
             and entry["exported"].cpt == rules.code_for(entry["exported"].kind, "primary").code}
    ready = sorted((e for e in entries if e["ready_at"] and e["exported"] is None),
                   key=lambda e: (e["ready_at"], e["line"].sequence))
    counts = {kind: sum(1 for e in entries if e["exported"] is not None and e["exported"].kind == kind)
              for kind in ("model", "guide")}
    for entry in ready:
        line = entry["line"]
        role = "add_on" if line.kind in taken else "primary"
        taken.add(line.kind)
        counts[line.kind] = counts.get(line.kind, 0) + 1
        entry["line"] = coding.renumbered(line, rules.code_for(line.kind, role), counts[line.kind], rules)


def numbered_next(billed: list[Any], pending: list[Any]) -> list[Any]:
    """The pending lines numbered as if they became billable next, after the billed ones, in their order.

    Parameters
    ----------
    billed : list of pipeline.coding.ChargeLine
        The encounter's billable lines, with their codes (kept).
    pending : list of pipeline.coding.ChargeLine
        Its pending lines, in the order they would become billable.

    Returns
    -------
    list of pipeline.coding.ChargeLine
        The pending lines, each with the code :func:`number_lines` would give it then (for the
        payer's view of them before delivery; nothing is stored).
    """
    entries = [{"line": line, "exported": line, "ready_at": None} for line in billed]
    entries += [{"line": line, "exported": None, "ready_at": f"{place:09d}"} for place, line in enumerate(pending)]
    number_lines(entries)
    return [entry["line"] for entry in entries[len(billed):]]


def event_row(row: Any) -> dict[str, Any]:
    """A stored event as a dict with its JSON decoded.

    Parameters
    ----------
    row : sqlite3.Row or mapping
        A row of the ``events`` table (``effort`` and ``detail`` are JSON text).

    Returns
    -------
    dict
        The row's columns, with ``effort`` (a list of :func:`effort` entries) and ``detail`` decoded.
    """
    return {**dict(row), "effort": json.loads(row["effort"]), "detail": json.loads(row["detail"])}
