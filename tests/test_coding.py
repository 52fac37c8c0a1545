"""Coding rules: 0559T/0560T numbering per encounter, guides, modifiers, ICD-10-CM form, reprints."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from pipeline.coding import (
    FLAG_DUPLICATE_MESH,
    FLAG_RERUN,
    BillableModel,
    ChargeLine,
    CodingRules,
    claim_lines,
    load_rules,
    next_charge,
    npi_is_valid,
    validate_icd10,
    validate_modifiers,
)
from pipeline.config import validate
from pipeline.errors import CodingError, ConfigError

DOS = dt.date(2026, 1, 15)


def billable(model_id: str, **changes) -> BillableModel:
    values = dict(
        model_id=model_id, patient_id="PH0001", date_of_service=DOS, icd10=("I71.23",), case_id="EXAMPLE-001",
        structure="aorta", indication_summary="Descending thoracic aortic aneurysm 5.8 cm, repair planned",
        purpose="surgical_planning", recipient="cardiothoracic surgery",
        ordering_provider={"name": "Dr. Order", "npi": "1234567893"},
        rendering_provider={"name": "Dr. Render", "npi": "1234567893"}, payer="medicare",
        mesh_sha256=f"sha-{model_id}",
    )
    values.update(changes)
    return BillableModel(**values)


def charge_all(models: list[BillableModel]) -> list[ChargeLine]:
    lines: list[ChargeLine] = []
    for model in models:
        lines.append(next_charge(lines, model))
    return lines


def billed(lines: list[ChargeLine]) -> list[tuple[str, int]]:
    return [(claim.cpt, claim.units) for claim in claim_lines(lines)]


# -- numbering ------------------------------------------------------------------------------------

@pytest.mark.parametrize("count, expected", [
    (1, [("0559T", 1)]),
    (2, [("0559T", 1), ("0560T", 1)]),
    (3, [("0559T", 1), ("0560T", 2)]),
])
def test_models_on_one_encounter(count, expected):
    lines = charge_all([billable(f"model-{n}") for n in range(count)])
    assert [line.cpt for line in lines] == ["0559T"] + ["0560T"] * (count - 1)
    assert [line.sequence for line in lines] == list(range(1, count + 1))
    assert billed(lines) == expected
    claims = claim_lines(lines)
    assert claims[-1].model_ids == [f"model-{n}" for n in range(count)][-claims[-1].units:]


def test_guides_are_numbered_apart_from_models():
    lines = charge_all([billable("model-a"), billable("guide-a", kind="guide"), billable("guide-b", kind="guide"),
                        billable("model-b")])
    assert [line.cpt for line in lines] == ["0559T", "0561T", "0562T", "0560T"]
    assert sorted(billed(lines)) == [("0559T", 1), ("0560T", 1), ("0561T", 1), ("0562T", 1)]


def test_encounters_are_numbered_separately():
    lines = charge_all([billable("a"), billable("b", date_of_service=DOS + dt.timedelta(days=1)),
                        billable("c", patient_id="PH0002"), billable("d")])
    assert [line.cpt for line in lines] == ["0559T", "0559T", "0559T", "0560T"]
    assert sorted(billed(lines)) == [("0559T", 1), ("0559T", 1), ("0559T", 1), ("0560T", 1)]


def test_next_charge_is_pure_and_deterministic():
    existing = charge_all([billable("a")])
    before = [line.to_dict() for line in existing]
    first = next_charge(existing, billable("b"))
    second = next_charge(existing, billable("b"))
    assert first == second
    assert [line.to_dict() for line in existing] == before


def test_rerun_of_a_model_keeps_its_code():
    lines = charge_all([billable("a"), billable("b")])
    again = next_charge(lines, billable("a"))
    assert again.cpt == "0559T" and again.sequence == 1
    assert any(flag.startswith(FLAG_RERUN) for flag in again.flags)


def test_rerun_lines_are_billed_once():
    lines = charge_all([billable("a"), billable("b")])
    lines.append(next_charge(lines, billable("b")))
    assert billed(lines) == [("0559T", 1), ("0560T", 1)]


def test_charge_line_round_trips_through_a_dict():
    line = charge_all([billable("a")])[0]
    assert ChargeLine.from_dict(line.to_dict()) == line


# -- add-on rules and reprints ----------------------------------------------------------------------

def test_add_on_without_primary_is_refused():
    lines = charge_all([billable("a"), billable("b")])
    with pytest.raises(CodingError, match="0560T is an add-on code.*no 0559T"):
        claim_lines(lines[1:])


def test_two_primary_codes_on_one_encounter_are_refused():
    first = charge_all([billable("a")])[0]
    other = dataclasses.replace(first, model_id="b")
    with pytest.raises(CodingError, match="0559T is billed once per encounter"):
        claim_lines([first, other])


def test_byte_identical_mesh_is_flagged_and_held():
    lines = charge_all([billable("a"), billable("b", mesh_sha256="same"), billable("c", mesh_sha256="same")])
    assert not lines[1].is_duplicate
    assert lines[2].is_duplicate
    flag = next(f for f in lines[2].flags if f.startswith(FLAG_DUPLICATE_MESH))
    assert "model b" in flag and "not a reprint" in flag
    claims = claim_lines(lines)
    assert [(c.cpt, c.units) for c in claims] == [("0559T", 1), ("0560T", 1)]
    assert list(claims[-1].held) == ["c"]


def _billed_and_held(claims) -> tuple[set[str], set[str]]:
    """Models a claim bills (in a line's units, not held) and models it holds."""
    return ({m for c in claims for m in c.model_ids if m not in c.held}, {m for c in claims for m in c.held})


def test_a_reprint_stays_held_when_its_original_is_run_again():
    lines = charge_all([billable("a", mesh_sha256="same"), billable("b", mesh_sha256="same")])
    lines.append(next_charge(lines, billable("a", mesh_sha256="same")))   # the original, re-run
    assert lines[1].is_duplicate and not lines[2].is_duplicate          # a is not a reprint of b
    claims = claim_lines(lines)
    assert _billed_and_held(claims) == ({"a"}, {"b"})
    assert [(c.cpt, c.units, c.model_ids) for c in claims] == [("0559T", 1, ["a"])]


def test_a_guide_printed_from_a_models_mesh_is_held_not_left_out():
    from pipeline.exports import billable_lines

    lines = charge_all([billable("a", mesh_sha256="same"), billable("g", kind="guide", mesh_sha256="same"),
                        billable("h", kind="guide", mesh_sha256="same")])
    assert [(line.cpt, line.is_duplicate) for line in lines] == [("0559T", False), ("0561T", True), ("0562T", True)]
    claims = claim_lines(lines)
    assert _billed_and_held(claims) == ({"a"}, {"g", "h"})              # every line billed or held
    assert [(c.cpt, c.units, c.model_ids, list(c.held)) for c in claims] == [
        ("0559T", 1, ["a"], []), ("0561T", 1, ["g"], ["g"]), ("0562T", 1, ["h"], ["h"])]
    assert [(c.cpt, c.model_ids) for c in billable_lines(claims)] == [("0559T", ["a"])]


def test_code_for_an_unknown_kind_or_role_is_a_coding_error():
    rules = load_rules()
    assert rules.code_for("guide", "add_on").code == "0562T"
    for kind, role in (("implant", "primary"), ("model", "secondary")):
        with pytest.raises(CodingError, match=f"no CPT code for kind {kind!r} in role {role!r}"):
            rules.code_for(kind, role)


def test_modifiers_split_claim_lines_and_carry_reasons():
    lines = charge_all([billable("a"), billable("b"),
                        billable("c", modifiers=("52",), modifier_reasons={"52": "no branch vessels, on request"})])
    claims = claim_lines(lines)
    assert [(c.cpt, c.units, c.modifiers) for c in claims] == [
        ("0559T", 1, []), ("0560T", 1, []), ("0560T", 1, ["52"])]
    assert claims[-1].notes == ["52: no branch vessels, on request"]


def test_diagnosis_pointers_refer_to_the_encounter_list():
    lines = charge_all([billable("a", icd10=("I71.23", "Q25.1")), billable("b", icd10=("Q25.1",))])
    claims = claim_lines(lines)
    assert claims[0].diagnoses == ["I71.23", "Q25.1"]
    assert claims[0].icd10_pointers == ["A", "B"]
    assert claims[1].icd10_pointers == ["B"]


# -- modifiers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("modifier, words", [
    ("23", "anesthesia"), ("QK", "anesthesia"), ("QX", "anesthesia"), ("QY", "anesthesia"),
    ("54", "global-surgery"), ("55", "global-surgery"), ("56", "global-surgery"), ("62", "co-surgeon"),
    ("AS", "assistant-at-surgery"), ("CQ", "therapy-assistant"),
])
def test_refused_modifiers_say_why(modifier, words):
    with pytest.raises(CodingError, match=f"modifier {modifier} .*is refused: .*{words}"):
        validate_modifiers([modifier])
    with pytest.raises(CodingError, match="refused"):
        next_charge([], billable("a", modifiers=(modifier,)))


@pytest.mark.parametrize("modifier, needs", [("22", "justification"), ("52", "reason"), ("53", "reason"),
                                             ("59", "reason"), ("XS", "reason")])
def test_modifiers_that_need_a_written_reason(modifier, needs):
    with pytest.raises(CodingError, match=f"modifier {modifier} .*needs a written {needs}"):
        validate_modifiers([modifier])
    assert validate_modifiers([modifier.lower()], {modifier: "documented"}) == [modifier]


@pytest.mark.parametrize("pair", [("22", "52"), ("52", "53"), ("59", "XS"), ("GA", "GZ")])
def test_modifiers_that_exclude_each_other(pair):
    with pytest.raises(CodingError, match="cannot be reported together"):
        validate_modifiers(list(pair), {m: "documented" for m in pair})


def test_unknown_and_repeated_modifiers():
    with pytest.raises(CodingError, match="not in the coding rules"):
        validate_modifiers(["ZZ"])
    with pytest.raises(CodingError, match="given twice"):
        validate_modifiers(["GZ", "GZ"])
    with pytest.raises(CodingError, match="not among the modifiers"):
        validate_modifiers([], {"22": "stray"})


def test_every_seed_modifier_is_judged():
    """Each row of the seed's modifier table is either allowed with a rule or refused with a reason."""
    rules = load_rules()
    judged = {m.code for m in rules.allowed_modifiers} | {m.code for m in rules.refused_modifiers}
    seed_rows = {"22", "23", "52", "53", "54", "55", "56", "62", "AS", "CQ", "QK", "QX", "QY"}
    assert seed_rows <= judged
    assert {"23", "QK", "QX", "QY", "54", "55", "56", "62"} <= {m.code for m in rules.refused_modifiers}


# -- ICD-10-CM and the indication ---------------------------------------------------------------------

@pytest.mark.parametrize("code, normal", [("I71.23", "I71.23"), ("i7123", "I71.23"), ("I38", "I38"),
                                          ("S72.001A", "S72.001A"), (" Q25.1 ", "Q25.1"), ("U07.1", "U07.1")])
def test_well_formed_icd10(code, normal):
    assert validate_icd10(code) == normal


@pytest.mark.parametrize("code", ["I7", "71.2", "I71.23456", "I71-2", "II1.2", "", "I71.", 712])
def test_malformed_icd10_is_refused(code):
    with pytest.raises(CodingError, match="malformed|must be text"):
        validate_icd10(code)


def test_malformed_icd10_on_a_model_is_refused():
    with pytest.raises(CodingError, match="'I7' is malformed"):
        next_charge([], billable("a", icd10=("I7",)))


def test_missing_indication_is_refused():
    with pytest.raises(CodingError, match="no indication"):
        next_charge([], billable("a", icd10=()))


def test_header_code_is_held_with_its_billable_codes():
    line = next_charge([], billable("a", icd10=("I71.2",)))
    assert [(h.code, h.source, h.model_id) for h in line.holds] == [("coding.icd10_not_billable", "coding", "a")]
    assert "I71.20, I71.21, I71.22, I71.23" in line.holds[0].reason and "2022-10-01" in line.holds[0].reason
    assert ChargeLine.from_dict(line.to_dict()) == line


def test_charge_line_carries_the_descriptions():
    line = next_charge([], billable("a", icd10=("I71.23", "Q25.1")))
    assert line.icd10_descriptions == ["Aneurysm of the descending thoracic aorta, without rupture",
                                       "Coarctation of aorta"]
    assert line.holds == []


@pytest.mark.parametrize("code, words", [("441.01", "ICD-9-CM"), ("0559T", "a CPT code"), ("76377", "a CPT code"),
                                         ("I71.24", "not in the ICD-10-CM code set.*I71.20, I71.21")])
def test_codes_outside_icd10cm_are_refused_on_a_model(code, words):
    with pytest.raises(CodingError, match=words):
        next_charge([], billable("a", icd10=(code,)))


def test_npi_check_digit():
    # 1234567893 is CMS's worked example of the NPI check digit (Luhn over 80840 + the number).
    assert npi_is_valid("1234567893")
    assert not npi_is_valid("1234567890")
    assert not npi_is_valid("123456789")
    line = next_charge([], billable("a", ordering_provider={"name": "X", "npi": "1234567890"}))
    assert any("NPI 1234567890 fails" in flag for flag in line.flags)


def test_medical_necessity_statement_names_the_facts():
    line = next_charge([], billable("a"))
    for expected in ("anatomic model", "surgical planning", "Dr. Order", "Descending thoracic aortic aneurysm",
                     "I71.23", "0559T"):
        assert expected in line.medical_necessity


# -- the rules file ---------------------------------------------------------------------------------

def test_shipped_rules_have_the_four_codes():
    rules = load_rules()
    assert {c.code: (c.kind, c.role) for c in rules.codes} == {
        "0559T": ("model", "primary"), "0560T": ("model", "add_on"),
        "0561T": ("guide", "primary"), "0562T": ("guide", "add_on")}
    assert "first individually prepared" in rules.code("0559T").descriptor
    assert "each additional" in rules.code("0560T").descriptor


def test_bad_rules_are_refused_with_the_field():
    data = load_rules().model_dump()
    data["allowed_modifiers"][0]["code"] = "23"
    with pytest.raises(ConfigError, match="both allowed and refused"):
        validate(CodingRules, data, "rules.yaml")
    data = load_rules().model_dump()
    data["codes"] = data["codes"][:1] + data["codes"][2:]
    with pytest.raises(ConfigError, match="field 'codes'"):
        validate(CodingRules, data, "rules.yaml")
