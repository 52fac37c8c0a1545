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

#: Purposes that serve teaching rather than the patient's care: likely not medically necessary.
EDUCATION_ONLY = ("patient_education", "trainee_education")


def _person_name(text: str) -> tuple[str, ...]:
    """A DICOM person name as comparable parts: upper case, empty trailing parts dropped."""
    parts = [part.strip().upper() for part in str(text or "").replace(" ", "^").split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return tuple(parts)


def identity_mismatches(case: Any) -> list[str]:
    """How the case file's patient differs from the patient in the chosen series' headers.

    Returns sentences naming the field only (never the values: they are PHI). Empty when they
    match, or when the source is an image file without patient data (NIfTI, NRRD, MHA).
    """
    from pipeline.load.inventory import inventory

    source = Path(case.dicom_path)
    if source.is_file() and source.suffix.lower() in (".nii", ".gz", ".nrrd", ".mha", ".mhd"):
        return []
    found = inventory(source, prefer_bone=any("bone" in m.preset for m in case.models))
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

    Raises
    ------
    CodingError
        A malformed ICD-10 code, or modifiers the coding rules refuse (before any work).
    """
    today = today or dt.date.today()
    rules = coding.load_rules()
    holds = []
    for code in case.indication.icd10:
        code = coding.validate_icd10(code)
        if code in rules.expanded_categories:
            holds.append(Hold("coding.icd10_not_billable",
                              f"ICD-10-CM {code} is not billable: {rules.expanded_categories[code]}", "coding"))
    encounter = case.encounter
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
    return holds


def stage_holds(segment_report: Any, mesh_report: Any, plan: Any) -> list[Hold]:
    """Holds of one model from its stage reports: their own ``holds``, mesh QA and printer fit."""
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
