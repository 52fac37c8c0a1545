"""Payer rules as data: one test per rule, each showing the hold and its reason."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from pipeline.coding import BillableModel, ChargeLine, claim_lines, next_charge
from pipeline.errors import ConfigError
from pipeline.payers import (
    HOLD_ABN,
    HOLD_NOT_COVERED,
    HOLD_REPLACED,
    HOLD_SAME_CLAIM,
    HOLD_UNITS,
    ClaimFacts,
    PayerRules,
    check_claim,
    known_payers,
    load_payer,
)

AFTER_MUE = dt.date(2026, 5, 4)  # the Medicare MUE of 5 x 0560T / 2 x 0562T applies from 2026-04-01
ABN = {"GA": "ABN signed 2026-05-01"}


def encounter(count: int, *, kind: str = "model", day: dt.date = AFTER_MUE, modifiers=("GA",),
              payer: str = "medicare") -> list:
    lines: list[ChargeLine] = []
    for n in range(count):
        model = BillableModel(
            model_id=f"m{n + 1}", patient_id="PH0001", date_of_service=day, icd10=("I71.23",), kind=kind,
            modifiers=tuple(modifiers), modifier_reasons={m: r for m, r in ABN.items() if m in modifiers},
            ordering_provider={"name": "Dr. Order", "npi": "1234567893"},
            rendering_provider={"name": "Dr. Render", "npi": "1234567893"}, payer=payer, mesh_sha256=f"sha-{n}")
        lines.append(next_charge(lines, model))
    return claim_lines(lines)


def test_shipped_payers_load():
    assert known_payers() == ["aetna", "cigna", "medicare"]
    for name in known_payers():
        assert load_payer(name).payer == name


# -- units per date of service ---------------------------------------------------------------------

def test_medicare_0560t_over_five_units_is_split_and_the_rest_held():
    claims = encounter(7)                                   # 0559T x1, 0560T x6
    assert [(c.cpt, c.units) for c in claims] == [("0559T", 1), ("0560T", 6)]
    check = check_claim(claims, load_payer("medicare"))
    assert [(c.cpt, c.units, list(c.held)) for c in check.lines] == [
        ("0559T", 1, []), ("0560T", 5, []), ("0560T", 1, ["m7"])]
    units = [h for h in check.holds if h.code == HOLD_UNITS]
    assert [(h.model_id, h.source) for h in units] == [("m7", "payer:medicare")]
    assert "6 units of 0560T" in units[0].reason and "at most 5" in units[0].reason
    assert "ACR report, March 2026" in units[0].reason


def test_medicare_0562t_over_two_units_is_split():
    claims = encounter(4, kind="guide")                     # 0561T x1, 0562T x3
    check = check_claim(claims, load_payer("medicare"))
    assert [(c.cpt, c.units) for c in check.lines] == [("0561T", 1), ("0562T", 2), ("0562T", 1)]
    assert [h.model_id for h in check.holds if h.code == HOLD_UNITS] == ["m4"]


def test_units_limit_starts_on_its_effective_date():
    claims = encounter(7, day=dt.date(2026, 3, 31))
    check = check_claim(claims, load_payer("medicare"))
    assert [h for h in check.holds if h.code == HOLD_UNITS] == []
    assert [(c.cpt, c.units) for c in check.lines] == [("0559T", 1), ("0560T", 6)]


def test_units_limit_within_bounds_is_recorded_as_applied():
    check = check_claim(encounter(6), load_payer("medicare"))   # 0560T x5: at the limit
    assert check.holds == []
    assert any(a.rule == "units 0560T" and a.outcome == "ok" for a in check.applied)


def test_a_payer_that_holds_the_whole_line_over_its_limit():
    data = load_payer("medicare").model_dump()
    data["units"][0]["over_limit"] = "hold"
    payer = PayerRules.model_validate(data)
    check = check_claim(encounter(7), payer)
    assert [(c.cpt, c.units) for c in check.lines] == [("0559T", 1), ("0560T", 6)]
    assert sorted(h.model_id for h in check.holds if h.code == HOLD_UNITS) == [f"m{n}" for n in range(2, 8)]


# -- codes on the same claim, and replacements ---------------------------------------------------

@pytest.mark.parametrize("payer", ["medicare", "aetna", "cigna"])
def test_76377_on_the_same_date_holds_every_model_line(payer):
    check = check_claim(encounter(2), load_payer(payer), ClaimFacts(other_codes=("76377",)))
    same = [h for h in check.holds if h.code == HOLD_SAME_CLAIM]
    assert sorted(h.model_id for h in same) == ["m1", "m2"]
    assert all(h.source == f"payer:{payer}" for h in same)
    assert "76377 is billed on the same date of service (2026-05-04)" in same[0].reason
    assert "76376/76377 (3D rendering)" in same[0].reason          # the rule's source


def test_other_codes_that_do_not_clash_raise_nothing():
    check = check_claim(encounter(2), load_payer("medicare"), ClaimFacts(other_codes=("71275",)))
    assert check.holds == []


def test_mesh_only_model_is_replaced_by_c8001_in_hospital_outpatient():
    facts = ClaimFacts(mesh_only_models=("m2",), setting="hospital_outpatient")
    check = check_claim(encounter(2), load_payer("medicare"), facts)
    replaced = [h for h in check.holds if h.code == HOLD_REPLACED]
    assert [h.model_id for h in replaced] == ["m2"]
    assert "report C8001" in replaced[0].reason and "CY2025 OPPS" in replaced[0].reason
    office = check_claim(encounter(2), load_payer("medicare"), ClaimFacts(mesh_only_models=("m2",),
                                                                         setting="physician_office"))
    assert [h for h in office.holds if h.code == HOLD_REPLACED] == []


# -- coverage and the ABN ------------------------------------------------------------------------

def test_aetna_holds_every_line_as_experimental():
    check = check_claim(encounter(2, modifiers=()), load_payer("aetna"))
    held = [h for h in check.holds if h.code == HOLD_NOT_COVERED]
    assert sorted(h.model_id for h in held) == ["m1", "m2"]
    assert "experimental and investigational" in held[0].reason
    assert "Aetna Clinical Policy Bulletin 0613, 2025-12-05" in held[0].reason


def test_cigna_holds_category_iii_codes():
    check = check_claim(encounter(1, modifiers=()), load_payer("cigna"))
    assert [(h.code, h.model_id, h.source) for h in check.holds] == [(HOLD_NOT_COVERED, "m1", "payer:cigna")]
    assert "not covered" in check.holds[0].reason and "Category III" in check.holds[0].reason


def test_medicare_without_ga_or_gz_is_held_for_the_abn():
    check = check_claim(encounter(2, modifiers=()), load_payer("medicare"))
    abn = [h for h in check.holds if h.code == HOLD_ABN]
    assert sorted(h.model_id for h in abn) == ["m1", "m2"]
    assert "append GA" in abn[0].reason and "or GZ" in abn[0].reason and "Pub. 100-04" in abn[0].reason
    coverage = next(a for a in check.applied if a.rule == "coverage 0559T")
    assert coverage.outcome == "note" and "contractor" in coverage.detail


@pytest.mark.parametrize("modifier, outcome", [("GA", "ok"), ("GZ", "note")])
def test_medicare_with_ga_or_gz_is_not_held(modifier, outcome):
    check = check_claim(encounter(1, modifiers=(modifier,)), load_payer("medicare"))
    assert check.holds == []
    assert next(a for a in check.applied if a.rule == "ABN 0559T").outcome == outcome


# -- bad payer files -------------------------------------------------------------------------------

def _write(tmp_path, change) -> str:
    data = load_payer("medicare").model_dump(mode="json")
    change(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("change, words", [
    (lambda d: d["units"][0].update(max_units=0), r"units\.0\.max_units"),
    (lambda d: d["units"][0].update(over_limit="bill"), r"units\.0\.over_limit"),
    (lambda d: d["coverage"][0].update(stance="maybe"), r"coverage\.0\.stance"),
    (lambda d: d["same_claim"][0].update(codes=["7637"]), r"same_claim\.0\.codes.*not CPT or HCPCS"),
    (lambda d: d["coverage"][0].pop("source"), r"coverage\.0\.source"),
    (lambda d: d.update(colour="red"), r"colour"),
])
def test_bad_payer_file_names_file_field_and_reason(tmp_path, change, words):
    with pytest.raises(ConfigError, match=rf"broken\.yaml.*{words}"):
        load_payer(_write(tmp_path, change))


def test_unknown_payer_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown payer 'bluecross'; available: aetna, cigna, medicare"):
        load_payer("bluecross")
