"""Checks of a case before the first stage runs, and the holds the stages' findings raise.

:func:`identity_mismatches` compares the case file's patient with the series' patient (DICOM
headers only, no pixel data); :func:`case_holds` turns what can make a claim wrong in the case
file (a non-billable ICD-10 code, an NPI failing its check digit, impossible dates, an
education-only purpose) into :class:`pipeline.holds.Hold` and refuses what is plainly malformed
(ICD-10 form, modifiers) with :class:`pipeline.errors.CodingError`; :func:`stage_holds` collects
the holds of the segment, mesh and prepare stages' reports.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pipeline import coding
from pipeline.holds import Hold
from pipeline.icd10 import icd10_holds
from pipeline.payers import check_claim, load_payer

#: Purposes that serve teaching rather than the patient's care: likely not medically necessary.
EDUCATION_ONLY = ("patient_education", "trainee_education")


def _person_name(text: str) -> tuple[str, ...]:
    """A DICOM person name as comparable parts: upper case, empty trailing parts dropped."""
    parts = [part.strip().upper() for part in str(text or "").replace(" ", "^").split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return tuple(parts)


def case_inventory(case: Any, source: Path | None = None) -> Any:
    """The series of a case's DICOM source, read with the case's settings (its headers only).

    Made once per run: the identity check and the loader (``load_series(found=...)``) both use
    it, so each header is read once.

    Parameters
    ----------
    case : CaseFile
        The case: bone presets (``prefer_bone``) and its gap settings (``imaging.max_gap_mm``,
        ``imaging.resample_gaps``) pick the series as the loader does.
    source : Path, optional
        The DICOM folder or image file (default: the case's ``imaging.dicom``).

    Returns
    -------
    pipeline.load.inventory.Inventory or None
        None for an image file (NIfTI, NRRD, MHA), which has no headers to read.

    Raises
    ------
    DicomError, SeriesSelectionError
        From :func:`pipeline.load.inventory.inventory`: no such folder, no DICOM image in it.
    """
    from pipeline.load.inventory import inventory

    source = Path(source if source is not None else case.dicom_path)
    if source.is_file() and source.suffix.lower() in (".nii", ".gz", ".nrrd", ".mha", ".mhd"):
        return None
    return inventory(source, prefer_bone=any("bone" in m.preset for m in case.models),
                     max_gap_mm=case.imaging.max_gap_mm, allow_gaps=case.imaging.resample_gaps)


def identity_mismatches(case: Any, source: Path | None = None, *, found: Any = None) -> list[str]:
    """How the case file's patient differs from the patient in the chosen series' headers.

    Parameters
    ----------
    case : CaseFile
    source : Path, optional
        The DICOM folder or image file (default: the case's ``imaging.dicom``; give the pulled
        folder for a case whose imaging is named by a DICOM node).
    found : Inventory, optional
        The source's :func:`case_inventory`, when the caller has read it already.

    Returns
    -------
    list of str
        Sentences naming the field only (never the values: they are PHI). Empty when they
        match, or when the source is an image file without patient data (NIfTI, NRRD, MHA).
    """
    found = case_inventory(case, source) if found is None else found
    if found is None:
        return []
    info, _how = found.select(case.imaging.series)
    header = found.planes(info.series_instance_uid)[0].header
    problems = []
    if str(header.get("PatientID", "") or "").strip() != case.patient.id:
        problems.append("the patient ID differs")
    if _person_name(str(header.get("PatientName", "") or "")) != _person_name(case.patient.name):
        problems.append("the patient name differs")
    birth = str(header.get("PatientBirthDate", "") or "").strip()
    if birth and birth != case.patient.birth_date.strftime("%Y%m%d"):
        problems.append("the birth date differs")
    return problems


def case_holds(case: Any, *, today: dt.date | None = None) -> list[Hold]:
    """The holds the case file's coding raises (``model_id`` None: every model of the case).

    Parameters
    ----------
    case : CaseFile
        The validated case file (indication, encounter with providers and payer, patient birth
        date, models with purposes and modifiers).
    today : datetime.date, optional
        The date a date of service may not be after (default: today, local).

    Returns
    -------
    list of Hold
        ICD-10 holds (headers, codes not yet in effect on the date of service), NPI check-digit
        holds, impossible-date holds, education-only holds (with the model id) and the payer
        rules' holds (:func:`payer_holds`), in that order.

    Raises
    ------
    CodingError
        A malformed ICD-10 code, or modifiers the coding rules refuse (before any work). Exit
        code 11.
    ConfigError
        The coding rules or the payer's rules cannot be loaded. Exit code 4.
    """
    today = today or dt.date.today()
    rules = coding.load_rules()
    holds = []
    encounter = case.encounter
    codes = [coding.validate_icd10(code) for code in case.indication.icd10]  # refuses what is not ICD-10-CM
    holds += icd10_holds(codes, encounter.date_of_service)  # headers, codes not yet in effect
    for role, provider in (("ordering", encounter.ordering_provider), ("rendering", encounter.rendering_provider)):
        if not coding.npi_is_valid(provider.npi):
            holds.append(Hold(f"coding.{role}_npi_check_digit",
                              f"the {role} provider's NPI fails the NPI check digit: correct it in the case file",
                              "coding"))
    service, birth = encounter.date_of_service, case.patient.birth_date
    if service > today:
        holds.append(Hold("coding.date_of_service_in_future",
                          f"the date of service {service.isoformat()} is after today", "coding"))
    if birth > service:
        holds.append(Hold("coding.date_of_service_before_birth",
                          "the date of service is before the patient's birth date", "coding"))
    for spec in case.models:
        coding.validate_modifiers(list(spec.modifiers), dict(spec.modifier_reasons), rules)
        if spec.purpose in EDUCATION_ONLY:
            holds.append(Hold("coding.education_only",
                              f"the purpose is {spec.purpose.replace('_', ' ')}: likely not medically necessary "
                              "for the patient's payer; release only with the payer's policy in hand",
                              "coding", spec.id))
    holds += payer_holds(case, codes, rules)
    return holds


def payer_holds(case: Any, codes: list[str], rules: Any) -> list[Hold]:
    """The payer rules' holds on the case's lines (coverage stance, ABN, units per day).

    The lines are provisional here (first model of each kind of this case primary, the others
    add-on, one unit each): the ledger numbers the encounter's lines only at delivery, but the
    coverage and ABN rules hold every one of these codes alike, and the units limit is checked
    against what this case alone asks for.

    Parameters
    ----------
    case : CaseFile
        The validated case file (its ``encounter.payer`` names the rules).
    codes : list of str
        The case's ICD-10-CM codes, validated.
    rules : CodingRules
        The coding rules that give each line its CPT code.

    Returns
    -------
    list of Hold
        The holds of :func:`pipeline.payers.check_claim` on the provisional lines (source
        ``payer:<name>``).

    Raises
    ------
    ConfigError
        The payer is unknown or its rules file is invalid. Exit code 4.
    """
    payer = load_payer(case.encounter.payer)
    encounter = case.encounter
    seen: set[str] = set()
    lines = []
    for spec in case.models:
        kind = "guide" if spec.kind == "guide" else "model"
        cpt = rules.code_for(kind, "add_on" if kind in seen else "primary")
        seen.add(kind)
        lines.append(coding.ClaimLine(
            cpt=cpt.code, units=1, modifiers=list(spec.modifiers), icd10_pointers=[], diagnoses=codes,
            date_of_service=encounter.date_of_service,
            encounter_key=coding.encounter_key(case.patient.id, encounter.date_of_service),
            ordering_provider=encounter.ordering_provider.model_dump(),
            rendering_provider=encounter.rendering_provider.model_dump(), payer=encounter.payer,
            descriptor=cpt.descriptor, model_ids=[spec.id]))
    return check_claim(lines, payer).holds


def stage_holds(segment_report: Any, mesh_report: Any, plan: Any) -> list[Hold]:
    """Holds of one model from its stage reports: their own ``holds``, mesh QA and printer fit.

    Parameters
    ----------
    segment_report : SegmentReport or None
        The segment stage's report (its ``holds`` are carried).
    mesh_report : MeshReport or None
        The mesh stage's report: not watertight, inconsistent winding or self-intersecting
        faces add ``mesh.qa_failed``. None (or a missing attribute) counts as passing.
    plan : PrintPlan or None
        The prepare stage's plan: ``fits`` False adds ``prepare.no_printer_fit`` (with the
        split advice when there is one).

    Returns
    -------
    list of Hold
        The reports' own holds, then those added here.
    """
    holds = [hold for report in (segment_report, mesh_report, plan) for hold in getattr(report, "holds", [])]
    failures = []
    if not getattr(mesh_report, "watertight", True):
        failures.append("not watertight")
    if not getattr(mesh_report, "winding_consistent", True):
        failures.append("inconsistent winding")
    if getattr(mesh_report, "self_intersecting_faces", 0):
        failures.append(f"{mesh_report.self_intersecting_faces} self-intersecting faces")
    if failures:
        holds.append(Hold("mesh.qa_failed", "the mesh failed QA: " + ", ".join(failures), "mesh"))
    if getattr(plan, "fits", True) is False:
        holds.append(Hold("prepare.no_printer_fit",
                          f"the model fits the printer in no orientation tried: {plan.split['message']}"
                          if getattr(plan, "split", None) else "the model fits the printer in no orientation tried",
                          "prepare"))
    return holds
