"""The packet's facts: one JSON-able dict, validated against ``packet.schema.json``.

The PDF is drawn from the same dict, so ``packet.json`` and ``packet.pdf`` cannot disagree.
Stage reports are carried as given (never re-derived); de-identification happens here, once.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from pipeline.document import deidentify as deid
from pipeline.document.inputs import PacketInputs
from pipeline.errors import DocumentError
from pipeline.holds import Hold
from pipeline.report import Report, to_jsonable

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
    """The JSON Schema of ``packet.json``.

    Returns
    -------
    dict
        The parsed :data:`SCHEMA_PATH` (read once, cached: do not modify it).
    """
    return json.loads(SCHEMA_PATH.read_text("utf-8"))


def validate_packet(facts: dict[str, Any]) -> None:
    """Raise DocumentError naming the first field of ``facts`` the schema refuses.

    Parameters
    ----------
    facts : dict
        The packet's facts (JSON-able), as :func:`build_facts` makes them.

    Raises
    ------
    DocumentError
        ``facts`` does not satisfy :func:`packet_schema` (JSON Schema draft 2020-12, formats
        checked); the message names the first failing path. Exit code 12.
    """
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
    minutes}``) then any manual steps of the model spec, as recorded.

    Parameters
    ----------
    inputs : PacketInputs
        The packet's inputs (``workflow`` and ``model_spec["manual_steps"]`` are read).

    Returns
    -------
    list of dict
        One dict per step: ``step``, ``kind`` (``automated`` or ``manual``), ``start`` and
        ``end`` (ISO text or None), ``operator`` (or None), ``minutes`` (min, 2 decimals, from
        ``minutes``, ``seconds`` or end - start; None when none is recorded) and ``note``.
    """
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
    de-identifying; the study date is shifted by :func:`~pipeline.document.deidentify.scrub`).

    Parameters
    ----------
    provenance : dict
        ``Volume.provenance`` of the source series.
    deidentify : bool
        Leave out :data:`DEIDENTIFIED_SOURCE_FIELDS` and replace the study, series and frame of
        reference UIDs.

    Returns
    -------
    dict
        The :data:`SOURCE_FIELDS` present in ``provenance``, in that order (units as recorded:
        ``slice_thickness_mm`` and ``pixel_spacing_mm`` in mm, ``gantry_tilt_deg`` in degrees,
        ``kvp`` in kV), plus ``number_of_source_instances`` (a count).
    """
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
    """The structure modelled: from the preset, else the model or mask name.

    Parameters
    ----------
    inputs : PacketInputs
        The packet's inputs (``model_spec["preset"]``, ``model``, ``mask`` are read).

    Returns
    -------
    str
        The preset's structure, else the mesh's name, else the mask's labels joined by
        ``", "``, else the preset or model id; ``""`` when there is none.
    """
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
    """The packet's facts as a JSON-able dict (validated against the schema).

    ``warnings`` (the document stage's own) are joined by every stage report's ``warnings``, each
    prefixed with its stage, into the one top-level list of the model.

    Parameters
    ----------
    inputs : PacketInputs
        Everything the packet is made from.
    alias : str or None
        The pseudonym of a de-identified (vendor) copy; None makes the identified packet.
    identifiers : list of str
        Identifying strings to scrub from a de-identified copy (see
        :func:`~pipeline.document.deidentify.vendor_copy_identifiers`); unused when ``alias``
        is None.
    dicom : dict
        The description of ``model.dcm`` (carried as given).
    files : list of dict
        The packet's file entries (path, size, checksum), carried as given.
    pictures : list of dict of str to str
        The pictures of the model, carried as given.
    warnings : list of str
        The document stage's own warnings.

    Returns
    -------
    dict
        The facts, JSON-able and valid against :func:`packet_schema`.

    Raises
    ------
    DocumentError
        From :func:`validate_packet`, when the facts do not match the schema. Exit code 12.
    """
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
        **({"print_preparation": report("prepare")} if report("prepare") is not None else {}),
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
        "warnings": gather_warnings(reports, warnings),
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
    """The model's lifecycle block: state, billable or pending (and why), sign-offs, holds.

    Parameters
    ----------
    lifecycle : dict or None
        The model's lifecycle from the ledger; None gives a model prepared and waiting for
        approval.
    identifiers : list of str or None
        Identifying strings to scrub (de-identified copy), or None to keep the text as it is.

    Returns
    -------
    dict
        ``state``, ``billable``, ``waiting_for``, ``sign_offs``, ``holds`` and whatever else
        the lifecycle holds, JSON-able.
    """
    value = {"state": "prepared", "billable": False, "waiting_for": "approval", "sign_offs": [], "holds": [],
             **to_jsonable(lifecycle or {})}
    if not value["billable"] and value["holds"] and value["waiting_for"] == "approval":
        value["waiting_for"] = "approval, then release of " + ", ".join(h["code"] for h in value["holds"])
    return deid.scrub(value, identifiers) if identifiers is not None else value


#: Stage report keys of ``PacketInputs.reports``, with the name a warning is prefixed with.
STAGE_NAMES = {"load": "load", "segment": "segmentation", "mesh": "mesh QA", "plan": "print plan"}


def gather_warnings(reports: dict[str, Any], own: list[str]) -> list[str]:
    """One list of the model's warnings: every stage report's, prefixed with its stage, then ``own``
    (the document stage's); each text once.

    Parameters
    ----------
    reports : dict
        Stage reports as dicts, keyed as :data:`STAGE_NAMES` (other keys are not read).
    own : list of str
        The document stage's warnings.

    Returns
    -------
    list of str
        ``"<stage>: <text>"`` per stage warning, then ``own``; first occurrence kept.
    """
    gathered: list[str] = []
    for key, stage in STAGE_NAMES.items():
        for text in (reports.get(key) or {}).get("warnings") or []:
            gathered.append(f"{stage}: {text}")
    gathered += [str(text) for text in own]
    return list(dict.fromkeys(gathered))


def person_name(value: Any) -> str:
    """A DICOM person name (``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX``) as a person writes it
    (``Prefix Given Middle Family, Suffix``); other text unchanged.

    Parameters
    ----------
    value : object
        The name (text, pydicom ``PersonName`` or None).

    Returns
    -------
    str
        The written name (all-capital parts capitalised), the text unchanged when it has no
        ``^``, or ``""`` for None.
    """
    text = "" if value is None else str(value)
    if "^" not in text:
        return text
    from pydicom.valuerep import PersonName

    name = PersonName(text)
    written = " ".join(p for p in (name.name_prefix, name.given_name, name.middle_name, name.family_name) if p)
    written = " ".join(part.capitalize() if part.isupper() else part for part in written.split())
    return f"{written}, {name.name_suffix}" if name.name_suffix else written


@dataclass
class Verdict(Report):
    """One check a reader of page 1 needs: ``passed`` None when it was not measured."""

    name: str
    passed: bool | None
    text: str


@dataclass
class SignOff(Report):
    """A person's sign-off of the model (filled from the model's lifecycle)."""

    role: str
    name: str
    signed_at: str


#: A lifecycle state as page 1 says it: where the model is and what comes next.
STATE_TEXT = {"prepared": "prepared, not yet approved", "approved": "approved, not yet printed",
              "printed": "printed, not yet post-processed", "post_processed": "post-processed, not yet checked",
              "checked": "print checked, not yet delivered",
              "delivered": "delivered", "discontinued": "discontinued (modifier 53)", "reduced": "reduced (modifier 52)"}


@dataclass
class PacketSummary(Report):
    """What page 1 of ``packet.pdf`` shows: who, the charge line and its state, the verdicts,
    the sign-offs and the holds, and the model's warnings.

    ``state``, ``billing``, ``billing_reason``, ``signoffs`` and ``holds`` default to a model
    prepared and not yet approved; the model's lifecycle (approval, printing, delivery, holds
    from the ledger) replaces them. ``units`` is a count; dates are ISO text.
    """

    case_id: str
    model_id: str
    structure: str
    deidentified: bool
    patient: list[tuple[str, str]]
    encounter: list[tuple[str, str]]
    cpt: str
    units: int
    modifiers: list[str]
    diagnoses: list[tuple[str, str, str]]
    descriptor: str
    verdicts: list[Verdict]
    warnings: list[str]
    state: str = "prepared, not yet approved"
    billing: str = "pending"
    billing_reason: str = "the model is not yet approved"
    signoffs: list[SignOff] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    effort: list[str] = field(default_factory=list)


def printer_title(name: str | None) -> str:
    """A printer profile's real name (``Formlabs Form 3B``), else the id as given.

    Parameters
    ----------
    name : str or None
        The printer profile's name.

    Returns
    -------
    str
        ``"<vendor> <model>"`` of the profile, or ``name`` (``""`` for None) when no profile
        loads.
    """
    profile = _profile(name)
    return f"{profile.vendor} {profile.model}".strip() if profile is not None else str(name or "")


def material_title(printer: str | None, material: str | None) -> str:
    """A material's real name from the printer profile (its ``label``), else the id as given.

    Parameters
    ----------
    printer : str or None
        The printer profile's name.
    material : str or None
        The material's id in that profile.

    Returns
    -------
    str
        The material's label, or ``material`` (``""`` for None) when the profile, the material
        or its label is missing.
    """
    profile = _profile(printer)
    found = profile.materials.get(str(material)) if profile is not None else None
    return (found.label if found is not None and found.label else None) or str(material or "")


def printer_limit_mm(printer: str | None) -> float | None:
    """The thinnest wall the printer profile allows, mm.

    Parameters
    ----------
    printer : str or None
        The printer profile's name.

    Returns
    -------
    float or None
        The profile's ``min_wall_mm``, mm; None when no profile loads.
    """
    profile = _profile(printer)
    return None if profile is None else float(profile.min_wall_mm)


def _profile(name: str | None):
    if not name:
        return None
    from pipeline.errors import ConfigError
    from pipeline.printers import load_printer

    try:
        return load_printer(str(name))
    except ConfigError:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def verdicts(facts: dict[str, Any]) -> list[Verdict]:
    """The checks of page 1, from the mesh QA and print plan reports as given.

    Parameters
    ----------
    facts : dict
        The packet's facts (``mesh_qa``, ``print_plan``, ``segmentation`` and
        ``lifecycle.print_qa`` are read).

    Returns
    -------
    list of Verdict
        Closed and printable; thinnest wall (mm, against the printer's limit); fits the build
        volume (room left, mm); volume change (percent against the segmentation, passed within
        2 %); segmentation plausibility; and, when the print was checked, the print check.
        ``passed`` is None for what was not measured.
    """
    mesh, plan, segment = facts.get("mesh_qa") or {}, facts.get("print_plan") or {}, facts.get("segmentation") or {}
    found: list[Verdict] = []
    closed = [mesh.get(k) for k in ("watertight", "manifold", "winding_consistent", "outward_normals")]
    if any(v is not None for v in closed):
        crossings = mesh.get("self_intersecting_faces") or 0
        ok = all(v is True for v in closed) and not crossings
        found.append(Verdict("Closed and printable", ok,
                             "watertight, manifold, outward normals, no self-intersection" if ok else
                             f"watertight {mesh.get('watertight')}, manifold {mesh.get('manifold')}, "
                             f"outward normals {mesh.get('outward_normals')}, {crossings} self-intersecting faces"))
    else:
        found.append(Verdict("Closed and printable", None, "no mesh QA report"))
    thinnest = _number(mesh.get("min_wall_thickness_mm"))
    limit = printer_limit_mm(plan.get("printer")) or _number(mesh.get("min_wall_mm"))
    probe = _number(mesh.get("wall_probe_mm"))
    if thinnest is not None and limit is not None:
        found.append(Verdict("Thinnest wall", thinnest >= limit,
                             f"{thinnest:.2f} mm measured; the printer needs {limit:g} mm"))
    elif mesh.get("min_wall_thickness_mm", 0) is None and probe is not None and limit is not None:
        found.append(Verdict("Thinnest wall", probe >= limit,
                             f"every wall is thicker than the {probe:g} mm probed; the printer needs {limit:g} mm"))
    else:
        found.append(Verdict("Thinnest wall", None, "not measured"))
    if plan.get("fits") is not None:
        margins = plan.get("margins_mm") or {}
        room = ", ".join(f"{axis} {float(v):.0f} mm" for axis, v in margins.items() if _number(v) is not None)
        found.append(Verdict("Fits the build volume", bool(plan["fits"]),
                             f"{printer_title(plan.get('printer'))}; room left {room}" if plan["fits"] and room
                             else printer_title(plan.get("printer")) or "see the print plan"))
    else:
        found.append(Verdict("Fits the build volume", None, "no print plan"))
    smoothing, total = _number(mesh.get("smoothing_volume_change_percent")), _number(mesh.get("volume_vs_mask_percent"))
    if total is not None:
        parts = [f"{total:+.2f} % against the segmentation"]
        if smoothing is not None:
            parts.append(f"smoothing {smoothing:+.2f} % before volume correction")
        found.append(Verdict("Volume change (smoothing, decimation)", abs(total) <= 2.0, "; ".join(parts)))
    else:
        found.append(Verdict("Volume change (smoothing, decimation)", None, "not measured"))
    plausibility = [str(w) for w in segment.get("warnings") or []]
    held = [h for h in report_holds(facts) if h.source == "segment"]
    found.append(Verdict("Segmentation plausibility", not (plausibility or held) if segment else None,
                         "; ".join([h.reason for h in held] + plausibility) or
                         ("within what the preset expects" if segment else "no segmentation report")))
    qa = (facts.get("lifecycle") or {}).get("print_qa")
    if qa:  # the print check of the current print (lifecycle step ``checked``)
        f = qa["figures"]
        failed = f"; failed: {', '.join(c.replace('_', ' ') for c in qa['failed'])}" if qa.get("failed") else ""
        found.append(Verdict(f"Print check ({qa['policy']} v{qa.get('policy_version') or '-'})", bool(qa["passed"]),
                             f"{'PASS' if qa['passed'] else 'FAIL'}: mean |dev| {f['mean_abs_mm']:.2f} mm, "
                             f"SD {f['sd_mm']:.2f}, p95 {f['p95_abs_mm']:.2f}, max {f['max_abs_mm']:.2f} mm, "
                             f"{f['share_beyond_tolerance']:.1%} beyond {f['tolerance_mm']:g} mm, "
                             f"scale {f['scale']:.4f}{failed}"))
    return found


def report_holds(facts: dict[str, Any]) -> list[Hold]:
    """Holds carried in the stage reports and on the charge line (``holds`` lists of ``Hold``
    dicts), each once.

    Parameters
    ----------
    facts : dict
        The packet's facts (``load``, ``segmentation``, ``mesh_qa``, ``print_plan``,
        ``charge``).

    Returns
    -------
    list of Hold
        The holds in that order of sources, duplicates dropped.
    """
    holds = []
    for key in ("load", "segmentation", "mesh_qa", "print_plan", "charge"):
        for item in (facts.get(key) or {}).get("holds") or []:
            holds.append(Hold.from_dict(item) if isinstance(item, dict) else item)
    return _each_once(holds)


def _each_once(holds: list[Hold]) -> list[Hold]:
    """``holds`` in order, each (code, reason) once: a stage's report names no model, the
    ledger's copy of the same hold does, and page 1 is one model's."""
    first: dict[tuple[str, str], Hold] = {}
    for hold in holds:
        first.setdefault((hold.code, hold.reason), hold)
    return list(first.values())


def packet_summary(facts: dict[str, Any]) -> PacketSummary:
    """Page 1 of the packet from its facts (a model prepared, not yet approved; holds from the
    stage reports).

    Parameters
    ----------
    facts : dict
        The packet's facts, as :func:`build_facts` makes them.

    Returns
    -------
    PacketSummary
        The page-1 summary; its state, billing and sign-offs come from ``facts["lifecycle"]``
        when present, and a de-identified copy is always "not billed".
    """
    patient, encounter, charge = facts["patient"], facts["encounter"], facts["charge"]
    if facts["case"]["deidentified"]:
        patient_rows = [("Patient (pseudonym)", str(patient["pseudonym"])),
                        ("De-identified", "; ".join(name for _code, _scheme, name in deid.METHOD_CODES)
                         + " (DICOM PS3.15 Annex E)")]
    else:
        patient_rows = [("Patient", person_name(patient["name"])), ("Patient id (MRN)", str(patient["id"])),
                        ("Birth date", str(patient["birth_date"] or "")), ("Sex", str(patient["sex"] or ""))]

    def provider(p: dict[str, Any]) -> str:
        """A provider as page 1 writes it.

        Parameters
        ----------
        p : dict
            ``{name, npi}`` of the encounter.

        Returns
        -------
        str
            ``"<written name> (NPI <npi or 'not given'>)"``.
        """
        return f"{person_name(p['name'])} (NPI {p['npi'] or 'not given'})"

    encounter_rows = [("Date of service", encounter["date_of_service"]), ("Facility", encounter["facility"]),
                      ("Ordering provider", provider(encounter["ordering_provider"])),
                      ("Rendering provider", provider(encounter["rendering_provider"])),
                      ("Payer", encounter["payer"])]
    titles = facts["indication"].get("descriptions") or [""] * len(charge["icd10"])
    by_code = dict(zip(facts["indication"]["icd10"], titles))
    diagnoses = [(p, c, by_code.get(c, "")) for p, c in zip(charge["icd10_pointers"], charge["icd10"])]
    holds = report_holds(facts)
    summary = PacketSummary(
        case_id=facts["case"]["case_id"], model_id=facts["model"]["id"], structure=facts["model"]["structure"],
        deidentified=facts["case"]["deidentified"], patient=patient_rows, encounter=encounter_rows,
        cpt=charge["cpt"], units=int(charge["units"]), modifiers=list(charge["modifiers"]), diagnoses=diagnoses,
        descriptor=charge["descriptor"], verdicts=verdicts(facts), warnings=list(facts["warnings"]), holds=holds,
    )
    life = facts.get("lifecycle")
    if life:  # where the model stands in the ledger: state, sign-offs, open holds, effort
        summary.state = STATE_TEXT.get(str(life["state"]), str(life["state"]).replace("_", "-"))
        summary.signoffs = [SignOff(f"{s['step'].replace('_', '-')} ({s['role']})"
                                    + (f": {s['reason']}" if s.get("reason") else ""),
                                    person_name(s["person"]) + (f", NPI {s['npi']}" if s.get("npi") else ""),
                                    str(s["at"])) for s in life.get("sign_offs") or []]
        ledger_holds = [Hold(str(h["code"]), str(h["reason"]), str(h.get("source") or "ledger"), summary.model_id)
                        for h in life.get("holds") or []]
        holds = summary.holds = _each_once([*holds, *ledger_holds])
        summary.effort = [f"{category.replace('_', ' ')}, {who.replace('_', '-')}: {minutes:.0f} min"
                          for category, split in (life.get("effort_minutes") or {}).items()
                          for who, minutes in split.items() if minutes]
        waiting = str(life.get("waiting_for") or "")
        if life.get("billable") and not holds:
            summary.billing, summary.billing_reason = "billable", f"delivered: billable as {summary.cpt}"
        elif holds:
            summary.billing, summary.billing_reason = "held", "; ".join(h.reason for h in holds)
        else:
            summary.billing = "pending"
            summary.billing_reason = ("the model is not yet approved" if waiting.startswith("approval")
                                      else f"waits for {waiting or 'the next step'}")
    elif holds:
        summary.billing = "held"
        summary.billing_reason = "; ".join(h.reason for h in holds)
    if summary.deidentified:  # a vendor copy is never billed (pipeline.case: not in the ledger)
        summary.billing, summary.billing_reason = "not billed", "a de-identified copy; the identified packet is billed"
    return summary
