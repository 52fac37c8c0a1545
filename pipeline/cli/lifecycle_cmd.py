"""``anatomodel approve | printed | post-processed | delivered | discontinue | reduce | release``.

(``checked``, the print QA step, is recorded by ``anatomodel check``: :mod:`pipeline.cli.check_cmd`.)

Each records one audited lifecycle step of a model's current version in the ledger
(:meth:`pipeline.ledger.Ledger.record_step`), rewrites the encounter's charges files under
``OUT/encounters/``, re-issues the model's packet as a new revision
(:func:`pipeline.case.reissue_packet`), and says whether the model is billable.
A model with an open hold exits 19 (done, but held for review).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import LEDGER_OPTION as LEDGER, app, say
from pipeline.errors import HeldForReview

CASE = typer.Argument(..., help="The case id.")
MODEL = typer.Argument(..., help="The model id within the case.")
BY = typer.Option(..., "--by", help="Who did the step (name).")
ROLE = typer.Option(..., "--role", help="Their role, e.g. radiologist, surgeon, technologist.")
NPI = typer.Option(None, "--npi", help="The clinician's NPI (required to approve).")
AT = typer.Option(None, "--at", help="When it happened, ISO date-time (default: now, UTC).")
MINUTES = typer.Option(None, "--minutes", help="Effort of the step in minutes (registry category of the step).")


def _step(case_id: str, model_id: str, step: str, by: str, role: str, npi: str | None, at: str | None,
          minutes: float | None, ledger: Path | None, **detail: object) -> None:
    from pipeline.ledger import Ledger
    from pipeline.ledger.lifecycle import Person

    from pipeline.case import packet_case

    person = Person(by, role, npi)
    with Ledger(ledger, create=False) as book:
        packet_case(book, case_id, model_id)  # the packet can be re-issued: checked before the step is recorded
        state = book.record_step(case_id, model_id, step, person, at=at, minutes=minutes,
                                 detail={k: v for k, v in detail.items() if v is not None})
        report_state(book, case_id, model_id, state)


def report_state(book, case_id: str, model_id: str, state: dict) -> None:
    """Rewrite the encounter's charges files, say where the model stands; exit 19 when held.

    Parameters
    ----------
    book : pipeline.ledger.Ledger
        The open ledger the step was recorded in.
    case_id : str
        The case id.
    model_id : str
        The model id within the case.
    state : dict
        The model's state after the step (``version``, ``state``), from the ledger.

    Raises
    ------
    HeldForReview
        The model's charge has open holds (the message lists them): the step is recorded, but
        the command exits 19.
    """
    from pipeline.case import reissue_packet, rewrite_encounter_charges

    rewrite_encounter_charges(book, case_id)
    packet = reissue_packet(book, case_id, model_id)
    say(f"packet re-issued: {escape(str(packet))}" if packet else
        "the run read no case file (a script's case object): packet not re-issued")
    billing = book.case_billing(case_id)
    entry = next(e for e in billing.billable + billing.pending if e.case_id == case_id and e.model_id == model_id)
    say(f"{escape(case_id)}/{escape(model_id)} v{state['version']}: {state['state']}; "
        + (f"billable as {entry.line.cpt}" if entry.billable else f"pending: waits for {escape(entry.waiting_for)}"))
    if entry.holds:
        raise HeldForReview(f"{case_id}/{model_id}: " + "; ".join(f"{h.code}: {h.reason}" for h in entry.holds),
                            hint=f"a named person releases each with `anatomodel release {case_id} {model_id} CODE`")


@app.command("approve")
def approve(case_id: str = CASE, model_id: str = MODEL, by: str = BY, role: str = ROLE, npi: str = NPI,
            at: str = AT, minutes: float = MINUTES, note: str = typer.Option(None, "--note", help="A note kept with the sign-off."),
            ledger: Path = LEDGER) -> None:
    """A clinician (with NPI) signs off the segmentation and the model of the current version."""
    _step(case_id, model_id, "approved", by, role, npi, at, minutes, ledger, note=note)


@app.command("printed")
def printed(case_id: str = CASE, model_id: str = MODEL, by: str = BY, role: str = ROLE, npi: str = NPI,
            at: str = AT, minutes: float = MINUTES,
            printer: str = typer.Option(..., "--printer", help="Printer profile."),
            serial: str = typer.Option(..., "--serial", help="Printer serial number."),
            material: str = typer.Option(..., "--material", help="Material id of the printer profile."), lot: str = typer.Option(..., "--lot", help="Material lot number."),
            layer_height_mm: float = typer.Option(..., "--layer-height-mm", help="Layer height printed with, mm."),
            job_start: str = typer.Option(..., "--job-start", help="ISO date-time."),
            job_end: str = typer.Option(..., "--job-end", help="ISO date-time."),
            ledger: Path = LEDGER) -> None:
    """The model was printed: printer, serial, material and lot, layer height, job start and end."""
    _step(case_id, model_id, "printed", by, role, npi, at, minutes, ledger, printer=printer, serial=serial,
          material=material, lot=lot, layer_height_mm=layer_height_mm, job_start=job_start, job_end=job_end)


@app.command("post-processed")
def post_processed(case_id: str = CASE, model_id: str = MODEL, by: str = BY, role: str = ROLE, npi: str = NPI,
                   at: str = AT, minutes: float = MINUTES,
                   step: list[str] = typer.Option(..., "--step",
                                                  help="cleaning, curing, support_removal or labelling (repeat)."),
                   ledger: Path = LEDGER) -> None:
    """The print was post-processed (cleaning, curing, support removal, labelling)."""
    _step(case_id, model_id, "post_processed", by, role, npi, at, minutes, ledger, steps=list(step))


@app.command("delivered")
def delivered(case_id: str = CASE, model_id: str = MODEL, by: str = BY, role: str = ROLE, npi: str = NPI,
              at: str = AT, minutes: float = MINUTES,
              recipient: str = typer.Option(..., "--to", help="To whom."),
              purpose: str = typer.Option(..., "--purpose", help="For which purpose."),
              qa_policy: str = typer.Option(None, "--qa-policy",
                                            help="Deliver a post-processed model without a print check: a QA "
                                                 "policy (configs/qa/) that says required: false."),
              ledger: Path = LEDGER) -> None:
    """The model was handed over: to whom, when, for which purpose. Its charge becomes billable.

    A model is delivered after its print check (`anatomodel check`); a failed check's holds are
    released first, or the model reprinted and checked again. Only a lab whose QA policy says
    `required: false` delivers a post-processed model unchecked, with --qa-policy (recorded).
    """
    waiver = {}
    if qa_policy is not None:
        from pipeline.check.policy import load_policy, policy_sha256
        from pipeline.errors import ConfigError

        policy = load_policy(qa_policy)
        if policy.required:
            raise ConfigError(f"QA policy {policy.name!r} requires a print check before delivery",
                              hint="anatomodel check MODEL_DIR SCAN --by NAME --role ROLE")
        waiver = {"qa_policy": policy.name, "qa_policy_version": policy.version,
                  "qa_policy_sha256": policy_sha256(qa_policy), "qa_required": False}
    _step(case_id, model_id, "delivered", by, role, npi, at, minutes, ledger, recipient=recipient, purpose=purpose,
          **waiver)


@app.command("discontinue")
def discontinue(case_id: str = CASE, model_id: str = MODEL, by: str = BY, role: str = ROLE, npi: str = NPI,
                at: str = AT, minutes: float = MINUTES, reason: str = typer.Option(..., "--reason", help="Why it was discontinued (kept with modifier 53)."),
                ledger: Path = LEDGER) -> None:
    """The model was started but discontinued: billable with modifier 53 (with the reason)."""
    _step(case_id, model_id, "discontinued", by, role, npi, at, minutes, ledger, reason=reason)


@app.command("reduce")
def reduce(case_id: str = CASE, model_id: str = MODEL, by: str = BY, role: str = ROLE, npi: str = NPI,
           at: str = AT, minutes: float = MINUTES, reason: str = typer.Option(..., "--reason", help="Why it was reduced (kept with modifier 52)."),
           ledger: Path = LEDGER) -> None:
    """The service was reduced: billable with modifier 52 (with the reason)."""
    _step(case_id, model_id, "reduced", by, role, npi, at, minutes, ledger, reason=reason)


@app.command("release")
def release(case_id: str = CASE, model_id: str = MODEL,
            code: str = typer.Argument(..., help="The hold's code, e.g. coding.education_only."),
            by: str = BY, role: str = ROLE, npi: str = NPI,
            reason: str = typer.Option(..., "--reason", help="Why the hold is released (audited)."),
            ledger: Path = LEDGER) -> None:
    """Release a hold on a model's charge (a named person, with a reason; audited).

    A coding hold (coding.*) is released by a coder (--role coder or billing) or a clinician
    (--npi). A hold on a value the claim would carry and a payer denies -- a diagnosis code not
    billable or not in effect on the date of service (coding.icd10_not_billable,
    coding.icd10_not_in_effect), an NPI failing its check digit (coding.ordering_npi_check_digit,
    coding.rendering_npi_check_digit), a date of service before birth -- is never released: a
    claim with it is denied. Correct the case file and run the case again; the new version's
    line carries the corrected value (it needs approval again).
    """
    from pipeline.case import packet_case
    from pipeline.ledger import Ledger
    from pipeline.ledger.lifecycle import Person

    with Ledger(ledger, create=False) as book:
        packet_case(book, case_id, model_id)  # before the release is recorded, as for a step
        state = book.release(case_id, model_id, code, Person(by, role, npi), reason=reason)
        report_state(book, case_id, model_id, state)
