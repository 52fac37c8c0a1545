"""The packet's facts: one JSON-able dict, validated against ``packet.schema.json``.

The PDF is drawn from the same dict, so ``packet.json`` and ``packet.pdf`` cannot disagree.
Stage reports are carried as given (never re-derived); de-identification happens here, once.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from pipeline.document import deidentify as deid
from pipeline.document.inputs import PacketInputs
from pipeline.errors import DocumentError
from pipeline.report import to_jsonable

SCHEMA_VERSION = "1.0.0"
#: ``pipeline/schemas/packet.schema.json`` (package data).
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "packet.schema.json"

#: Source-imaging fields shown, in this order, from ``Volume.provenance``.
SOURCE_FIELDS = (
    "modality", "manufacturer", "manufacturer_model_name", "study_date", "study_time", "accession_number",
    "study_description", "series_description", "series_number", "number_of_slices", "slice_thickness_mm",
    "pixel_spacing_mm", "convolution_kernel", "kvp", "contrast_bolus_agent", "gantry_tilt_deg",
    "transfer_syntax_uid", "study_instance_uid", "series_instance_uid", "frame_of_reference_uid", "source_sha256",
)
#: Removed from a de-identified packet (the accession and time identify the study; the study
#: date is shifted with every other date, see :mod:`pipeline.document.deidentify`).
DEIDENTIFIED_SOURCE_FIELDS = frozenset({"study_time", "accession_number", "study_description"})
_UID_FIELDS = ("study_instance_uid", "series_instance_uid", "frame_of_reference_uid")


@lru_cache(maxsize=1)
def packet_schema() -> dict[str, Any]:
    """The JSON Schema of ``packet.json``."""
    return json.loads(SCHEMA_PATH.read_text("utf-8"))


def validate_packet(facts: dict[str, Any]) -> None:
    """Raise DocumentError naming the first field of ``facts`` the schema refuses."""
    validator = jsonschema.Draft202012Validator(packet_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(facts), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise DocumentError(f"packet.json does not match its schema at {where}: {errors[0].message}")


def _date_text(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()[:10]
    return str(value or "")


def _provider(value: Any) -> dict[str, Any]:
    value = value or {}
    if isinstance(value, str):
        return {"name": value, "npi": None}
    npi = value.get("npi")
    return {"name": str(value.get("name") or ""), "npi": None if npi in (None, "") else str(npi)}


def _timestamp(value: Any) -> str | None:
    value = to_jsonable(value)
    return str(value) if value not in (None, "") else None


def _minutes(step: dict[str, Any]) -> float | None:
    """Minutes as recorded (``minutes``, else ``seconds``, else end - start)."""
    if step.get("minutes") is not None:
        return round(float(step["minutes"]), 2)
    if step.get("seconds") is not None:
        return round(float(step["seconds"]) / 60.0, 2)
    start, end = _timestamp(step.get("start") or step.get("started")), _timestamp(step.get("end") or step.get("finished"))
    if start and end:
        seconds = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
        return round(seconds / 60.0, 2)
    return None


def workflow_steps(inputs: PacketInputs) -> list[dict[str, Any]]:
    """The run's steps (``pipeline.case.StepRecord`` dicts or ``{step, start, end, operator,
    minutes}``) then any manual steps of the model spec, as recorded."""
    steps = []
    for default_kind, entries in (("automated", inputs.workflow),
                                  ("manual", inputs.model_spec.get("manual_steps") or [])):
        for entry in entries:
            entry = to_jsonable(entry)
            if "automatic" in entry:
                kind = "automated" if entry["automatic"] else "manual"
            else:
                kind = str(entry.get("kind") or default_kind)
            steps.append({
                "step": str(entry.get("step") or entry.get("name") or "step"),
                "kind": kind,
                "start": _timestamp(entry.get("start") or entry.get("started")),
                "end": _timestamp(entry.get("end") or entry.get("finished")),
                "operator": None if entry.get("operator") in (None, "") else str(entry["operator"]),
                "minutes": _minutes(entry),
                "note": str(entry.get("note") or ""),
            })
    return steps


def source_imaging(provenance: dict[str, Any], deidentify: bool) -> dict[str, Any]:
    """The source series facts (accession and time removed and UIDs replaced when
    de-identifying; the study date is shifted by :func:`~pipeline.document.deidentify.scrub`)."""
    shown: dict[str, Any] = {}
    for key in SOURCE_FIELDS:
        if key not in provenance or (deidentify and key in DEIDENTIFIED_SOURCE_FIELDS):
            continue
        value = to_jsonable(provenance[key])
        if deidentify and key in _UID_FIELDS and value:  # the same replacement as model.dcm's references
            value = deid.replace_uid(str(value))
        shown[key] = value
    shown["number_of_source_instances"] = len(provenance.get("source_instances") or [])
    if isinstance(shown.get("number_of_slices"), float):
        shown["number_of_slices"] = int(shown["number_of_slices"])
    return shown


def _icd10_titles(charge: Any) -> list[str]:
    """The ICD-10-CM titles of the charge's codes (lines recorded before they carried them: looked up)."""
    from pipeline.icd10 import icd10_description

    return list(charge.icd10_descriptions) or [icd10_description(code) for code in charge.icd10]


def structure_name(inputs: PacketInputs) -> str:
    """The structure modelled: from the preset, else the model or mask name."""
    preset = inputs.model_spec.get("preset")
    if preset:
        from pipeline.coding import _preset_structure

        structure = _preset_structure(str(preset))
        if structure != preset:
            return structure
    if inputs.model is not None and inputs.model.name:
        return inputs.model.name
    if inputs.mask is not None and inputs.mask.labels:
        return ", ".join(inputs.mask.labels.values())
    return str(preset or inputs.model_spec.get("id") or "")


def build_facts(
    inputs: PacketInputs,
    *,
    alias: str | None,
    identifiers: list[str],
    dicom: dict[str, Any],
    files: list[dict[str, Any]],
    pictures: list[dict[str, str]],
    warnings: list[str],
) -> dict[str, Any]:
    """The packet's facts as a JSON-able dict (validated against the schema)."""
    deidentify = alias is not None
    provenance = inputs.volume.provenance if inputs.volume is not None else {}
    spec = inputs.model_spec
    patient = inputs.patient or {}
    patient_key = deid.patient_key(patient, provenance)
    if deidentify:
        patient_facts = {"name": None, "id": None, "birth_date": None, "sex": None, "pseudonym": alias}
    else:
        patient_facts = {
            "name": str(patient.get("name") or provenance.get("patient_name") or ""),
            "id": str(patient.get("id") or provenance.get("patient_id") or ""),
            "birth_date": _date_text(patient.get("birth_date") or provenance.get("patient_birth_date")) or None,
            "sex": str(patient.get("sex") or provenance.get("patient_sex") or "") or None,
            "pseudonym": None,
        }
    charge = inputs.charge.to_dict()
    for key in ("patient_id", "encounter_key"):
        charge.pop(key, None)
    steps = workflow_steps(inputs)
    reports = {name: to_jsonable(report) for name, report in (inputs.reports or {}).items()}

    report = reports.get  # de-identified below with the rest of the packet, once (UIDs are replaced once)

    facts = {
        "schema_version": SCHEMA_VERSION,
        "generated": {"software": "anatomodel", "version": inputs.software_version,
                      "created": inputs.created.isoformat()},
        "case": {"case_id": inputs.case_id, "deidentified": deidentify},
        "patient": patient_facts,
        "encounter": {
            "date_of_service": _date_text(inputs.encounter.get("date_of_service")),
            "facility": str(inputs.encounter.get("facility") or ""),
            "ordering_provider": _provider(inputs.encounter.get("ordering_provider")),
            "rendering_provider": _provider(inputs.encounter.get("rendering_provider")),
            "payer": str(inputs.encounter.get("payer") or ""),
        },
        "indication": {"icd10": list(inputs.charge.icd10),
                       "descriptions": _icd10_titles(inputs.charge),
                       "summary": str((inputs.indication or {}).get("summary") or "")},
        "model": {
            "id": str(spec.get("id") or inputs.charge.model_id),
            "kind": str(spec.get("kind") or inputs.charge.kind),
            "structure": structure_name(inputs),
            "preset": spec.get("preset"),
            "purpose": spec.get("purpose"),
            "recipient": spec.get("recipient"),
            "modifiers": list(inputs.charge.modifiers),
            "modifier_reasons": dict(inputs.charge.modifier_reasons),
        },
        "source_imaging": source_imaging(provenance, deidentify),
        "workflow": {"steps": steps, "total_minutes": round(sum(s["minutes"] or 0.0 for s in steps), 2)},
        "load": report("load"),
        "segmentation": report("segment"),
        "mesh_qa": report("mesh"),
        "print_plan": report("plan"),
        "charge": charge,
        "lifecycle": lifecycle_facts(inputs.lifecycle, identifiers if deidentify else None),
        "dicom": dicom,
        "files": files,
        "pictures": pictures,
        "deidentification": (
            {"applied": True, "method": deid.METHOD_TEXT, "choices": list(deid.METHOD_CHOICES),
             "codes": [{"code": code, "scheme": scheme, "meaning": meaning}
                       for code, scheme, meaning in deid.METHOD_CODES],
             "date_shift": "every date moved back by the same undisclosed number of days (1-365)"}
            if deidentify else {"applied": False}
        ),
        "warnings": list(warnings),
    }
    facts = to_jsonable(facts)
    if deidentify:
        # Basic Profile: institution and physician names go (the NPIs identify providers, not the patient).
        facts["encounter"]["facility"] = deid.REMOVED
        for role in ("ordering_provider", "rendering_provider"):
            facts["encounter"][role]["name"] = deid.REMOVED
        # Clean Descriptors, new UIDs, Modified Dates: over every string of the packet.
        # "dicom" describes model.dcm, built de-identified; "source_imaging" has its UIDs replaced above.
        kept = {"patient", "deidentification", "dicom", "files"}
        facts = {k: (v if k in kept else deid.scrub(v, identifiers, patient_id=patient_key,
                                                     uids=k != "source_imaging"))
                 for k, v in facts.items()}
    validate_packet(facts)
    return facts


def lifecycle_facts(lifecycle: dict[str, Any] | None, identifiers: Any = None) -> dict[str, Any]:
    """The model's lifecycle block: state, billable or pending (and why), sign-offs, holds."""
    value = {"state": "prepared", "billable": False, "waiting_for": "approval", "sign_offs": [], "holds": [],
             **to_jsonable(lifecycle or {})}
    if not value["billable"] and value["holds"] and value["waiting_for"] == "approval":
        value["waiting_for"] = "approval, then release of " + ", ".join(h["code"] for h in value["holds"])
    return deid.scrub(value, identifiers) if identifiers is not None else value
