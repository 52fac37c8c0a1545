"""Charge exports: FHIR ChargeItem bundles and HL7 v2.5 DFT^P03, parsed back and compared with the lines."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from hl7apy.exceptions import ValidationError as HL7ValidationError
from pydantic import ValidationError

from pipeline.coding import BillableModel, ChargeLine, claim_lines, next_charge
from pipeline.errors import CodingError
from pipeline.exports import CPT_SYSTEM, EncounterFacts, billable_lines, pointed_diagnoses
from pipeline.exports.csvfile import COLUMNS, charges_csv
from pipeline.exports.fhir import HCPCS_SYSTEM, MODIFIER_EXTENSION, charge_bundle, parse_bundle
from pipeline.exports.hl7 import dft_message, parse_dft, pointer_of
from pipeline.icd10 import icd10_description
from pipeline.payers import ClaimFacts, check_claim, load_payer

DOS = dt.date(2026, 5, 4)
ORDER = {"name": "Dr. Ann Order", "npi": "1234567893"}
RENDER = {"name": "Dr. Rex Render", "npi": "1497758544"}
FACTS = EncounterFacts(encounter_id="V000123", patient_id="PH0001", patient_name="PHANTOM^AORTA",
                       birth_date=dt.date(1964, 3, 1), sex="M", facility="Example Hospital 3D Lab")


def claims() -> list:
    """0559T (GA) for I71.23 + Q25.1; 0560T x2 (GA) for Q25.1; 0560T (52, GA) for I71.23."""
    specs = [("a", ("I71.23", "Q25.1"), ("GA",)), ("b", ("Q25.1",), ("GA",)), ("c", ("Q25.1",), ("GA",)),
             ("d", ("I71.23",), ("52", "GA"))]
    lines: list[ChargeLine] = []
    for model_id, codes, modifiers in specs:
        reasons = {"GA": "ABN signed 2026-05-01", "52": "no branch vessels"}
        lines.append(next_charge(lines, BillableModel(
            model_id=model_id, patient_id="PH0001", date_of_service=DOS, icd10=codes, modifiers=modifiers,
            modifier_reasons={m: reasons[m] for m in modifiers}, ordering_provider=ORDER,
            rendering_provider=RENDER, payer="medicare", mesh_sha256=model_id)))
    return claim_lines(lines)


def test_the_lines_under_test():
    lines = claims()
    assert [(l.cpt, l.units, l.modifiers, l.icd10_pointers) for l in lines] == [
        ("0559T", 1, ["GA"], ["A", "B"]), ("0560T", 2, ["GA"], ["B"]), ("0560T", 1, ["52", "GA"], ["A"])]


# -- FHIR ---------------------------------------------------------------------------------------

def test_fhir_bundle_round_trips_and_matches_the_lines():
    lines = claims()
    text = charge_bundle(lines, FACTS).model_dump_json()
    bundle = parse_bundle(text)                                  # validates every resource again
    resources = {}
    for entry in bundle.entry:
        resources.setdefault(entry.resource.get_resource_type(), []).append(entry)
    assert sorted(resources) == ["ChargeItem", "Encounter", "Patient", "Practitioner"]
    patient = resources["Patient"][0]
    encounter = resources["Encounter"][0]
    assert patient.resource.identifier[0].value == "PH0001"
    assert (patient.resource.name[0].family, patient.resource.name[0].given) == ("PHANTOM", ["AORTA"])
    assert str(patient.resource.birthDate) == "1964-03-01" and patient.resource.gender == "male"
    assert encounter.resource.subject.reference == patient.fullUrl
    assert encounter.resource.identifier[0].value == "V000123"
    npis = {entry.fullUrl: entry.resource.identifier[0].value for entry in resources["Practitioner"]}
    assert sorted(npis.values()) == ["1234567893", "1497758544"]
    items = [entry.resource for entry in resources["ChargeItem"]]
    assert len(items) == len(lines)
    for item, line in zip(items, lines):
        assert item.status == "billable"
        assert (item.code.coding[0].system, item.code.coding[0].code) == ("http://www.ama-assn.org/go/cpt", line.cpt)
        assert item.code.coding[0].display == line.descriptor
        assert float(item.quantity.value) == line.units
        assert str(item.occurrenceDateTime) == line.date_of_service.isoformat()
        assert item.subject.reference == patient.fullUrl and item.context.reference == encounter.fullUrl
        functions = {p.function.coding[0].code: npis[p.actor.reference] for p in item.performer}
        assert functions == {"PRF": line.rendering_provider["npi"], "OP": line.ordering_provider["npi"]}
        assert [r.coding[0].code for r in item.reason] == pointed_diagnoses(line)
        assert [r.coding[0].display for r in item.reason] == [icd10_description(c) for c in pointed_diagnoses(line)]
        assert [e.valueCoding.code for e in item.extension if e.url == MODIFIER_EXTENSION] == line.modifiers


def test_fhir_bundle_is_reproducible_and_json():
    first = charge_bundle(claims(), FACTS).model_dump_json()
    assert first == charge_bundle(claims(), FACTS).model_dump_json()
    assert json.loads(first)["type"] == "collection"


def test_fhir_parser_rejects_an_invalid_charge_item():
    data = json.loads(charge_bundle(claims(), FACTS).model_dump_json())
    item = next(e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "ChargeItem")
    del item["subject"]                                          # ChargeItem.subject is required (1..1)
    with pytest.raises(ValidationError, match="subject"):
        parse_bundle(json.dumps(data))
    item["subject"] = {"reference": "Patient/x"}
    item["occurrenceDateTime"] = "2026-13-45"                    # not a date
    with pytest.raises(ValidationError, match="occurrenceDateTime"):
        parse_bundle(json.dumps(data))


# -- HL7 v2 --------------------------------------------------------------------------------------

def test_hl7_dft_round_trips_and_matches_the_lines():
    lines = claims()
    sent = dt.datetime(2026, 5, 4, 17, 30, tzinfo=dt.UTC)
    text = dft_message(lines, FACTS, sent=sent).to_er7()
    message = parse_dft(text)                                    # strict validation of the structure
    assert message.msh.msh_9.to_er7() == "DFT^P03^DFT_P03" and message.msh.msh_12.to_er7() == "2.5"
    assert message.msh.msh_7.to_er7() == "20260504173000"
    assert message.pid.pid_3.cx_1.value == "PH0001" and message.pid.pid_5.to_er7() == "PHANTOM^AORTA"
    assert message.pid.pid_7.to_er7() == "19640301" and message.pv1.pv1_19.cx_1.value == "V000123"
    diagnoses = {dg1.dg1_3.ce_1.value: pointer_of(dg1.dg1_1.value) for dg1 in message.dg1}
    assert diagnoses == {"I71.23": "A", "Q25.1": "B"}
    groups = message.dft_p03_financial
    assert len(groups) == len(lines)
    for group, line in zip(groups, lines):
        ft1 = group.ft1
        assert ft1.ft1_6.value == "CG"
        assert (ft1.ft1_7.ce_1.value, ft1.ft1_7.ce_3.value) == (line.cpt, "C4")
        assert ft1.ft1_25.ce_1.value == line.cpt
        assert int(ft1.ft1_10.value) == line.units
        assert ft1.ft1_4.to_er7() == line.date_of_service.strftime("%Y%m%d")
        assert [diagnoses[f.ce_1.value] for f in ft1.ft1_19] == line.icd10_pointers
        assert [f.ce_1.value for f in ft1.ft1_26] == line.modifiers
        assert (ft1.ft1_20.xcn_1.value, ft1.ft1_20.xcn_13.value) == (line.rendering_provider["npi"], "NPI")
        assert ft1.ft1_21.xcn_1.value == line.ordering_provider["npi"]


def test_hl7_text_with_delimiters_is_escaped():
    facts = EncounterFacts(encounter_id="V1", patient_id="PH|01", patient_name="O'NEIL^ANN", birth_date=FACTS.birth_date,
                           sex="F", facility="Lab & Co ^ 3D")
    message = parse_dft(dft_message(claims(), facts, sending_facility="LAB&CO^3D").to_er7())
    assert message.pid.pid_3.cx_1.value == r"PH\F\01"
    assert message.pid.pid_5.xpn_1.fn_1.to_er7() == "O'NEIL"
    assert message.msh.msh_4.hd_1.value == r"LAB\T\CO\S\3D"


def test_hl7_parser_rejects_a_message_without_a_required_field():
    text = dft_message(claims(), FACTS).to_er7()
    broken = text.replace("|CG|", "||", 1)                       # FT1-6 transaction type is required
    with pytest.raises(HL7ValidationError, match="FT1_6"):
        parse_dft(broken)


# -- what is exported -----------------------------------------------------------------------------

def test_only_billable_lines_are_exported():
    lines = claims()
    check = check_claim(lines, load_payer("medicare"), ClaimFacts(mesh_only_models=("c",)))
    assert [h.model_id for h in check.holds] == ["c"]
    billable = billable_lines(check.lines, check.holds)
    assert [(l.cpt, l.model_ids) for l in billable] == [("0559T", ["a"]), ("0560T", ["d"])]
    message = parse_dft(dft_message(billable, FACTS).to_er7())
    assert [g.ft1.ft1_7.ce_1.value for g in message.dft_p03_financial] == ["0559T", "0560T"]


def test_a_split_excess_line_is_not_exported():
    lines = []
    for n in range(7):
        lines.append(next_charge(lines, BillableModel(
            model_id=f"m{n}", patient_id="PH0001", date_of_service=DOS, icd10=("I71.23",), modifiers=("GZ",),
            ordering_provider=ORDER, rendering_provider=RENDER, payer="medicare", mesh_sha256=str(n))))
    check = check_claim(claim_lines(lines), load_payer("medicare"))
    billable = billable_lines(check.lines, check.holds)
    assert [(l.cpt, l.units) for l in billable] == [("0559T", 1), ("0560T", 5)]


def test_csv_rows_match_the_lines():
    lines = claims()
    rows = list(csv.DictReader(io.StringIO(charges_csv([(FACTS, lines)]))))
    assert tuple(rows[0]) == COLUMNS
    assert [(r["cpt"], int(r["units"]), r["modifiers"].split(), r["icd10"].split("; ")) for r in rows] == [
        (l.cpt, l.units, l.modifiers, pointed_diagnoses(l)) for l in lines]
    assert rows[0]["icd10_descriptions"] == "Aneurysm of the descending thoracic aorta, without rupture; Coarctation of aorta"


def test_an_empty_or_mixed_export_is_refused():
    with pytest.raises(CodingError, match="no billable charge lines"):
        dft_message([], FACTS)


def _empties(value, where="$"):
    """The JSON paths of every empty object, array or string in ``value``."""
    if value in ({}, [], ""):
        return [where]
    if isinstance(value, dict):
        return [path for key, item in value.items() for path in _empties(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [path for index, item in enumerate(value) for path in _empties(item, f"{where}[{index}]")]
    return []


def test_a_provider_without_a_name_leaves_no_empty_element_in_the_bundle():
    nameless = {"npi": RENDER["npi"]}
    line = next_charge([], BillableModel(
        model_id="a", patient_id="PH0001", date_of_service=DOS, icd10=("I71.23",), modifiers=(),
        modifier_reasons={}, ordering_provider=ORDER, rendering_provider=nameless, payer="medicare",
        mesh_sha256="a"))
    text = charge_bundle(claim_lines([line]), FACTS).model_dump_json(exclude_none=True)
    assert _empties(json.loads(text)) == []  # FHIR: elements are never empty (the spec's ele-1 rule)
    bundle = parse_bundle(text)
    practitioners = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "Practitioner"]
    assert sorted(p.identifier[0].value for p in practitioners) == sorted([ORDER["npi"], RENDER["npi"]])
    assert [p.name for p in practitioners if p.identifier[0].value == RENDER["npi"]] == [None]


def test_a_diagnosis_pointer_outside_1_to_12_is_refused_not_wrapped():
    assert [pointer_of(str(n)) for n in (1, 12)] == ["A", "L"]
    for bad in ("0", "-1", "13"):
        with pytest.raises(ValueError, match="not 1..12"):
            pointer_of(bad)


def test_both_exports_name_a_modifier_system_by_the_same_rule():
    # CPT modifiers are two digits (52: reduced services); GA is HCPCS Level II (an ABN on file).
    lines = claims()
    bundle = json.loads(charge_bundle(lines, FACTS).model_dump_json(exclude_none=True))
    fhir = {ext["valueCoding"]["code"]: ext["valueCoding"]["system"]
            for entry in bundle["entry"] for ext in entry["resource"].get("extension", [])
            if ext["url"] == MODIFIER_EXTENSION}
    message = parse_dft(dft_message(lines, FACTS).to_er7())
    hl7 = {field.ce_1.value: field.ce_3.value for group in message.dft_p03_financial for field in group.ft1.ft1_26}
    assert fhir == {"52": CPT_SYSTEM, "GA": HCPCS_SYSTEM}
    assert hl7 == {"52": "C4", "GA": "HCPCS"}
