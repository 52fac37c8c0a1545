"""FHIR ChargeItem bundles: one Bundle per encounter, validated by the fhir.resources models.

The Bundle (type ``collection``) holds the Patient, the Encounter, a Practitioner per NPI and a
ChargeItem per billable claim line. It is built with ``fhir.resources.R4B`` (FHIR 4.3.0, the
technical correction of R4 4.0.1; Bundle, Patient, Encounter, Practitioner and ChargeItem are
the same on the wire), so every element is validated as it is made.

Each ChargeItem carries: ``code`` (CPT, with the descriptor), ``quantity`` (units),
``occurrenceDateTime`` (date of service), ``subject``/``context`` (Patient/Encounter),
``performer`` (rendering provider, function PRF; ordering provider, function OP), ``reason``
(the diagnoses its pointers name, ICD-10-CM with their titles, in pointer order) and the CPT/HCPCS
modifiers in the :data:`MODIFIER_EXTENSION` extension (R4 ChargeItem has no modifier element).
Resource ids and ``urn:uuid`` full URLs are derived from the encounter id, so the same lines give
the same Bundle.
"""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.coding import ClaimLine
from pipeline.exports import (
    CPT_SYSTEM,
    ICD10CM_SYSTEM,
    NPI_SYSTEM,
    EncounterFacts,
    is_cpt_modifier,
    one_encounter,
    pointed_diagnoses,
)
from pipeline.icd10 import icd10_description

#: Extension carrying one CPT/HCPCS modifier of a ChargeItem (valueCoding).
MODIFIER_EXTENSION = "https://anatomodel.org/fhir/StructureDefinition/chargeitem-procedure-modifier"
HCPCS_SYSTEM = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
#: Performer functions: v3 ParticipationType PRF (performer) and v2 table 0443 OP (ordering provider).
PERFORMER_FUNCTION = ("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PRF", "performer")
ORDERING_FUNCTION = ("http://terminology.hl7.org/CodeSystem/v2-0443", "OP", "Ordering Provider")
_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown"}
_NAMESPACE = uuid.UUID("5b0f8a52-3a70-4a43-9c6e-0c4f2c1e6a11")


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(parts)))


def modifier_system(modifier: str) -> str:
    """CPT for the two-digit modifiers, HCPCS Level II for the others (GA, GZ, XS, ...).

    Parameters
    ----------
    modifier : str
        A claim line's modifier code, such as ``"26"`` or ``"GA"``.

    Returns
    -------
    str
        The coding system URI: :data:`pipeline.exports.CPT_SYSTEM` for a CPT modifier
        (:func:`pipeline.exports.is_cpt_modifier`), else :data:`HCPCS_SYSTEM`.
    """
    return CPT_SYSTEM if is_cpt_modifier(modifier) else HCPCS_SYSTEM


def charge_bundle(lines: list[ClaimLine], facts: EncounterFacts) -> Any:
    """The FHIR Bundle of one encounter's billable claim lines.

    Parameters
    ----------
    lines : list of ClaimLine
        Billable lines of one encounter (see :func:`pipeline.exports.billable_lines`).
    facts : EncounterFacts

    Returns
    -------
    fhir.resources.R4B.bundle.Bundle
        Validated; ``.model_dump_json()`` gives the JSON to send.

    Raises
    ------
    CodingError
        No lines, lines of several encounters, or a pointer naming no diagnosis.
    pydantic.ValidationError
        Never for lines from :mod:`pipeline.coding` (a bug if it happens).
    """
    from fhir.resources.R4B.bundle import Bundle

    first = one_encounter(lines)
    key = facts.encounter_id
    patient_id, encounter_id = _uuid(key, "patient"), _uuid(key, "encounter")
    family, given = facts.family_given
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": patient_id,
         "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                              "code": "MR"}]}, "value": facts.patient_id}],
         "name": [{"family": family, "given": given}] if family else [],
         "birthDate": facts.birth_date.isoformat(), "gender": _GENDER[facts.sex]},
        {"resourceType": "Encounter", "id": encounter_id, "status": "finished",
         "identifier": [{"value": facts.encounter_id}],
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                   "display": "ambulatory"},
         "subject": {"reference": f"urn:uuid:{patient_id}"},
         "period": {"start": first.date_of_service.isoformat(), "end": first.date_of_service.isoformat()},
         "serviceProvider": {"display": facts.facility}},
    ]
    practitioners: dict[str, str] = {}
    for line in lines:
        for provider in (line.rendering_provider, line.ordering_provider):
            npi = str(provider.get("npi", ""))
            if npi and npi not in practitioners:
                practitioners[npi] = _uuid(key, "practitioner", npi)
                resources.append({"resourceType": "Practitioner", "id": practitioners[npi],
                                  "identifier": [{"system": NPI_SYSTEM, "value": npi}],
                                  "name": [{"text": str(provider.get("name", ""))}]})
    for index, line in enumerate(lines, start=1):
        resources.append(_charge_item(line, index, key, patient_id, encounter_id, practitioners))
    resources = [_without_empty(resource) for resource in resources]
    bundle = {"resourceType": "Bundle", "id": _uuid(key, "bundle"), "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]}
    return Bundle.model_validate(bundle)


def _charge_item(line: ClaimLine, index: int, key: str, patient_id: str, encounter_id: str,
                 practitioners: dict[str, str]) -> dict[str, Any]:
    performers = []
    for (system, code, display), provider in ((PERFORMER_FUNCTION, line.rendering_provider),
                                              (ORDERING_FUNCTION, line.ordering_provider)):
        npi = str(provider.get("npi", ""))
        if npi:
            performers.append({"function": {"coding": [{"system": system, "code": code, "display": display}]},
                               "actor": {"reference": f"urn:uuid:{practitioners[npi]}"}})
    item_id = _uuid(key, "charge", str(index), line.cpt)
    return {
        "resourceType": "ChargeItem", "id": item_id, "status": "billable",
        "identifier": [{"system": "urn:anatomodel:charge-line", "value": f"{key}-{index}"}],
        "code": {"coding": [{"system": CPT_SYSTEM, "code": line.cpt, "display": line.descriptor}]},
        "subject": {"reference": f"urn:uuid:{patient_id}"},
        "context": {"reference": f"urn:uuid:{encounter_id}"},
        "occurrenceDateTime": line.date_of_service.isoformat(),
        "quantity": {"value": line.units},
        "performer": performers,
        "reason": [{"coding": [{"system": ICD10CM_SYSTEM, "code": code, "display": icd10_description(code)}]}
                   for code in pointed_diagnoses(line)],
        "extension": [{"url": MODIFIER_EXTENSION, "valueCoding": {"system": modifier_system(m), "code": m}}
                      for m in line.modifiers],
        "note": [{"text": note} for note in line.notes],
    }


def _without_empty(value: Any) -> Any:
    """FHIR forbids empty arrays and objects, also as list items (``"name": [{}]``): drop them."""
    if isinstance(value, dict):
        kept = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ([], {}, "", None)}
    if isinstance(value, list):
        kept = [_without_empty(v) for v in value]
        return [v for v in kept if v not in ([], {}, "", None)]
    return value


def parse_bundle(text: str) -> Any:
    """Parse and validate a Bundle's JSON (raises pydantic.ValidationError if invalid).

    Parameters
    ----------
    text : str or bytes
        The Bundle's JSON, as :func:`charge_bundle` gives it with ``.model_dump_json()``.

    Returns
    -------
    fhir.resources.R4B.bundle.Bundle
        The Bundle with every resource validated (R4B models).
    """
    from fhir.resources.R4B.bundle import Bundle

    return Bundle.model_validate_json(text)


__all__ = ["MODIFIER_EXTENSION", "charge_bundle", "parse_bundle"]
