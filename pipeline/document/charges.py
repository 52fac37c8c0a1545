"""An encounter's charges: ``charges.csv`` (billable lines), ``charges_pending.csv`` (lines that
wait for a step or a hold release), ``charges.json`` and ``case_summary.pdf``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

from pipeline.coding import POINTER_LETTERS, ChargeLine, claim_lines
from pipeline.document import deidentify as deid
from pipeline.document.pdf import case_summary_pdf
from pipeline.files import atomic_write
from pipeline.report import anatomodel_version, to_jsonable

CHARGES_SCHEMA_VERSION = "1.0.0"

CSV_COLUMNS = (
    "case_id", "patient", "date_of_service", "cpt", "modifiers", "units", "icd10_pointers", "diagnoses",
    "descriptor", "ordering_provider", "ordering_npi", "rendering_provider", "rendering_npi", "payer",
    "model_ids", "held_for_review",
)
PENDING_COLUMNS = ("case_id", "model_id", "version", "state", "waiting_for", "provisional_cpt", "holds")


def _cell(value: object) -> object:
    """A CSV cell that a spreadsheet will not run as a formula (``=``, ``+``, ``-``, ``@``)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def write_case_charges(
    lines: list[ChargeLine],
    case_dir: Path,
    case: Any,
    *,
    deidentify: bool = False,
    software_version: str | None = None,
    created: dt.datetime | None = None,
    pending: list[Any] | None = None,
) -> list[Path]:
    """Write an encounter's charges (one row per billable CPT line), pending lines and summary.

    The files of :func:`case_charges`, each written atomically into ``case_dir``.

    Parameters
    ----------
    lines : list of ChargeLine
        The billable model lines (from the ledger), in the order they were charged.
    case_dir : Path
        ``OUT/<case_id>``; created if needed.
    case : CaseFile or dict
        As for :func:`case_charges`.
    deidentify : bool
        Write the vendor copy (see :func:`case_charges`).
    software_version : str, optional
        The anatomodel version written into the files (default: the installed version).
    created : datetime.datetime, optional
        When the files are generated (default: now, UTC, whole seconds).
    pending : list of pipeline.ledger.lifecycle.BillingLine, optional
        Lines not billable yet (``charges_pending.csv`` is written when given, even empty).

    Returns
    -------
    list of Path
        ``charges.csv``, ``charges_pending.csv`` (with ``pending``), ``charges.json``, ``case_summary.pdf``.

    Raises
    ------
    CodingError
        From :func:`pipeline.coding.claim_lines` (e.g. an add-on code without its primary code).
        Exit code 11; nothing is written.
    """
    files = case_charges(lines, case, deidentify=deidentify, software_version=software_version, created=created,
                         pending=pending)
    return [atomic_write(Path(case_dir) / name, data) for name, data in files.items()]


def case_charges(
    lines: list[ChargeLine],
    case: Any,
    *,
    deidentify: bool = False,
    software_version: str | None = None,
    created: dt.datetime | None = None,
    pending: list[Any] | None = None,
) -> dict[str, bytes]:
    """An encounter's charges files (one row per billable CPT line), pending lines and summary, in memory.

    Nothing is written: the ledger builds these outside its write lock (the PDF takes most of
    the time) and writes them under it (:meth:`pipeline.ledger.Ledger.write_documents`).

    Parameters
    ----------
    lines : list of ChargeLine
        The billable model lines (from the ledger), in the order they were charged.
    pending : list of pipeline.ledger.lifecycle.BillingLine, optional
        Lines not billable yet, each with the step it waits for and its open holds: written to
        ``charges_pending.csv`` (when given, even empty) and the JSON, never to ``charges.csv``.
    case : CaseFile or dict
        ``case_id``, ``patient`` (``name``, ``id``, ``birth_date``), ``encounter`` (``facility``,
        ``payer``...), optionally ``provenance`` (the source DICOM's) for de-identification.
    deidentify : bool
        Leave out the patient's name, id and birth date (the patient column holds the pseudonym),
        the facility and the providers' names; every date (service, generated) is moved back by
        the patient's :func:`~pipeline.document.deidentify.date_shift_days`, as in the packet.
    software_version : str, optional
        The anatomodel version written into ``charges.json`` and the summary (default: the
        installed version).
    created : datetime.datetime, optional
        When the files are generated (default: now, UTC, whole seconds); shifted like every
        other date when de-identifying.

    Returns
    -------
    dict of str to bytes
        File name to content, in writing order: ``charges.csv``, ``charges_pending.csv`` (with
        ``pending``), ``charges.json``, ``case_summary.pdf``.

    Raises
    ------
    CodingError
        From :func:`pipeline.coding.claim_lines` (e.g. an add-on code without its primary code).
        Exit code 11.
    """
    if hasattr(case, "model_dump"):  # a pipeline.case.CaseFile
        case = case.model_dump(mode="python")
    created = created or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    version = software_version or anatomodel_version()
    claims = claim_lines(lines)
    patient = dict(case.get("patient") or {})
    provenance = dict(case.get("provenance") or {})
    encounter = dict(case.get("encounter") or {})
    case_id = str(case.get("case_id") or (lines[0].case_id if lines else ""))
    patient_id = str(patient.get("id") or provenance.get("patient_id") or "")
    alias = deid.pseudonym(patient_id) if deidentify else None
    patient_label = alias if deidentify else f"{patient.get('name', '')} ({patient_id})".strip()
    key = deid.patient_key(patient, provenance)
    # A vendor copy: every date moved back by the patient's shift, staff and facility removed, as
    # the packet's method line says (PS3.15 Annex E, Modified Dates and Clean Descriptors).
    identifiers = deid.identifying_strings(patient, provenance) + (
        deid.staff_strings(encounter, ()) + [str(line.ordering_provider.get("name") or "") for line in lines]
        + [str(line.rendering_provider.get("name") or "") for line in lines] if deidentify else [])

    def day(value: Any) -> str:
        """A date as ISO text, shifted when de-identifying.

        Parameters
        ----------
        value : datetime.date or str
            A date, or text starting with ``YYYY-MM-DD``.

        Returns
        -------
        str
            ``YYYY-MM-DD``.
        """
        value = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
        return (deid.shift_date(value, key) if deidentify else value).isoformat()

    def person(value: Any) -> str:
        """A person's or facility's name as written, or ``[removed]`` when de-identifying.

        Parameters
        ----------
        value : object
            The name (None or empty gives ``""``).

        Returns
        -------
        str
            The name, ``[removed]``, or ``""``.
        """
        return deid.REMOVED if deidentify and value else str(value or "")

    if deidentify:
        created = created - dt.timedelta(days=deid.date_shift_days(key))

    rows = []
    for claim in claims:
        rows.append({
            "case_id": case_id,
            "patient": alias if deidentify else patient_id,
            "date_of_service": day(claim.date_of_service),
            "cpt": claim.cpt,
            "modifiers": ";".join(claim.modifiers),
            "units": claim.units,
            "icd10_pointers": "".join(claim.icd10_pointers),
            "diagnoses": ";".join(f"{POINTER_LETTERS[i]}={code}" for i, code in enumerate(claim.diagnoses)),
            "descriptor": claim.descriptor,
            "ordering_provider": person(claim.ordering_provider.get("name")),
            "ordering_npi": claim.ordering_provider.get("npi", ""),
            "rendering_provider": person(claim.rendering_provider.get("name")),
            "rendering_npi": claim.rendering_provider.get("npi", ""),
            "payer": claim.payer,
            "model_ids": ";".join(claim.model_ids),
            "held_for_review": ";".join(claim.held),
        })
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)
    with_pending, pending = pending is not None, list(pending or [])
    waiting = io.StringIO()
    writer = csv.DictWriter(waiting, fieldnames=PENDING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for entry in pending:
        writer.writerow({key: _cell(value) for key, value in {
            "case_id": entry.case_id, "model_id": entry.model_id, "version": entry.version, "state": entry.state,
            "waiting_for": entry.waiting_for, "provisional_cpt": entry.line.cpt,
            "holds": ";".join(f"{h.code}: {h.reason}" for h in entry.holds)}.items()})

    def public(value: Any) -> Any:
        """A line or hold for ``charges.json``: JSON-able, without the patient id and encounter
        key, scrubbed when de-identifying.

        Parameters
        ----------
        value : object
            A :class:`~pipeline.coding.ChargeLine`, :class:`~pipeline.coding.ClaimLine` or hold.

        Returns
        -------
        object
            Its JSON-able form.
        """
        value = to_jsonable(value)
        if isinstance(value, dict):
            value.pop("patient_id", None)
            value.pop("encounter_key", None)
        return deid.scrub(value, identifiers, patient_id=key) if deidentify else value

    document = {
        "schema_version": CHARGES_SCHEMA_VERSION,
        "generated": {"software": "anatomodel", "version": version, "created": created.isoformat()},
        "case_id": case_id,
        "deidentified": deidentify,
        "patient": ({"pseudonym": alias} if deidentify else
                    {"name": patient.get("name"), "id": patient_id,
                     "birth_date": to_jsonable(patient.get("birth_date"))}),
        "claim_lines": [public(c) for c in claims],
        "model_lines": [public(line) for line in lines],
        "pending": [{"case_id": e.case_id, "model_id": e.model_id, "version": e.version, "state": e.state,
                     "waiting_for": e.waiting_for, "provisional_cpt": e.line.cpt,
                     "holds": [public(h) for h in e.holds]} for e in pending],
    }

    def provider(value: Any) -> str:
        """A provider as the summary writes it.

        Parameters
        ----------
        value : dict or None
            ``{name, npi}``.

        Returns
        -------
        str
            ``"<name> (NPI <npi or 'not given'>)"``, or ``""`` when there is no provider.
        """
        value = value or {}
        return f"{person(value.get('name'))} (NPI {value.get('npi') or 'not given'})" if value else ""

    service = encounter.get("date_of_service") or (lines[0].date_of_service if lines else None)
    header = [("Patient", patient_label),
              ("Date of service", day(service) if service else ""),
              ("Facility", person(encounter.get("facility"))), ("Payer", encounter.get("payer", "")),
              ("Ordering provider", provider(encounter.get("ordering_provider"))),
              ("Rendering provider", provider(encounter.get("rendering_provider"))),
              ("Models", len(lines)), ("Generated", f"{created.isoformat()} by anatomodel {version}")]
    diagnoses = list(claims[0].diagnoses) if claims else []
    summary = {
        "case_id": case_id,
        "created": created.isoformat(),
        "header": header,
        "models": [{"model_id": l.model_id, "cpt": l.cpt, "modifiers": l.modifiers, "icd10": l.icd10,
                    "flags": [f.split(":", 1)[0] for f in l.flags]} for l in lines],
        "claims": [{"date_of_service": day(c.date_of_service), "cpt": c.cpt, "units": c.units,
                    "modifiers": c.modifiers, "icd10_pointers": c.icd10_pointers, "model_ids": c.model_ids}
                   for c in claims],
        "diagnoses": [(POINTER_LETTERS[i], code) for i, code in enumerate(diagnoses)],
        "held": [f"model {m}: {reason}" for c in claims for m, reason in c.held.items()]
                + [f"model {e.model_id} waits for {e.waiting_for}" for e in pending],
    }
    files = {"charges.csv": buffer.getvalue().encode("utf-8")}
    if with_pending:
        files["charges_pending.csv"] = waiting.getvalue().encode("utf-8")
    files["charges.json"] = json.dumps(document, indent=2).encode("utf-8")
    files["case_summary.pdf"] = case_summary_pdf(summary)
    return files
