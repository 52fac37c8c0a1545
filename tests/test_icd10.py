"""ICD-10-CM from the code set: billable or not, descriptions, the seed document's table, history."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.coding import load_rules
from pipeline.errors import CodingError, ConfigError
from pipeline.icd10 import (
    HOLD_NOT_BILLABLE,
    HOLD_NOT_IN_EFFECT,
    RELEASE_ENV,
    icd10_description,
    icd10_holds,
    load_history,
    lookup_icd10,
    release,
    release_note,
    reload_codeset,
    validate_icd10,
)

# Every code of the seed document's "Related Diagnoses" table (../shared/seed/), with what the CMS
# ICD-10-CM FY2026 tabular list says of it: (code, billable, tabular title, seed's description).
SEED_DIAGNOSES = [
    ("I71.2", False, "Thoracic aortic aneurysm, without rupture", "Thoracic aortic aneurysm, without rupture"),
    ("I71.4", False, "Abdominal aortic aneurysm, without rupture", "Abdominal aortic aneurysm, without rupture"),
    ("Q25.4", False, "Other congenital malformations of aorta", "Coarctation of aorta"),
    ("I38", True, "Endocarditis, valve unspecified", "Endocarditis, valve unspecified"),
    ("Z98.890", True, "Other specified postprocedural states", "Other specified postprocedural states"),
]


@pytest.mark.parametrize("code, billable, title, seed", SEED_DIAGNOSES)
def test_seed_diagnosis_table_against_the_code_set(code, billable, title, seed):
    found = lookup_icd10(code)
    assert (found.billable, found.description) == (billable, title)
    assert bool(found.billable_children) == (not billable)
    row = next(r for r in load_rules().seed_diagnoses if r.code == code)
    assert (row.billable, row.description, row.seed_description) == (billable, title, seed)
    for replacement in row.use_instead:  # every suggested code is a billable leaf
        assert lookup_icd10(replacement).billable


def test_the_rules_judge_every_seed_row():
    assert [r.code for r in load_rules().seed_diagnoses] == [row[0] for row in SEED_DIAGNOSES]


def test_coarctation_is_q25_1_not_q25_4():
    assert icd10_description("Q25.1") == "Coarctation of aorta"
    assert lookup_icd10("Q25.1").billable
    row = next(r for r in load_rules().seed_diagnoses if r.code == "Q25.4")
    assert row.use_instead == ["Q25.1"]
    assert lookup_icd10("Q25.4").billable_children == [f"Q25.4{n}" for n in range(10)]


@pytest.mark.parametrize("code, children", [
    ("I71.2", ["I71.20", "I71.21", "I71.22", "I71.23"]),
    ("I71.4", ["I71.40", "I71.41", "I71.42", "I71.43"]),
    ("I71.0", ["I71.00", "I71.010", "I71.011", "I71.012", "I71.019", "I71.02", "I71.03"]),
])
def test_a_header_suggests_its_billable_codes(code, children):
    found = lookup_icd10(code)
    assert not found.billable and found.billable_children == children


def test_history_rows_match_the_code_set_children():
    """Each expansion lists the header's children as today's tabular list has them."""
    import simple_icd_10_cm as cm

    for row in load_history().expansions:
        assert cm.get_children(row.header) == row.children, row.header
        assert not lookup_icd10(row.header).billable
        assert len(row.source) > 10


def test_i71_0_was_expanded_in_fy2018():
    """I71.00-I71.03 are in the FY2018 release (effective 2017-10-01), not 2018-10-01."""
    row = next(r for r in load_history().expansions if r.header == "I71.0")
    assert row.effective == dt.date(2017, 10, 1) and "FY2018" in row.source
    assert lookup_icd10("I71.0", dt.date(2017, 9, 30)).billable
    assert not lookup_icd10("I71.0", dt.date(2017, 10, 1)).billable


def test_billability_follows_the_date_of_service():
    before, after = dt.date(2022, 9, 30), dt.date(2022, 10, 1)
    assert lookup_icd10("I71.2", before).billable and not lookup_icd10("I71.2", after).billable
    assert [h.code for h in icd10_holds(["I71.23"], before, "m")] == [HOLD_NOT_IN_EFFECT]
    assert icd10_holds(["I71.23"], after, "m") == []
    held = icd10_holds(["I71.2"], after, "m")
    assert [(h.code, h.source, h.model_id) for h in held] == [(HOLD_NOT_BILLABLE, "coding", "m")]
    assert "FY2023" in held[0].reason and "I71.23" in held[0].reason


@pytest.mark.parametrize("code, normal", [("i7123", "I71.23"), ("Q251", "Q25.1"), (" S72.001A ", "S72.001A")])
def test_validate_returns_the_dotted_code(code, normal):
    assert validate_icd10(code) == normal


@pytest.mark.parametrize("code, words", [
    ("441.01", "is an ICD-9-CM code"),
    ("E849.0", "is an ICD-9-CM code"),
    ("0559T", "is a CPT code"),
    ("76377", "is a CPT code"),
    ("C8001", "looks like a HCPCS Level II code"),
    ("I71.24", r"not in the ICD-10-CM code set .*I71\.2 \(Thoracic aortic aneurysm.*I71\.20, I71\.21"),
    ("Q25.99", "not in the ICD-10-CM code set"),
    ("I7", "malformed"),
])
def test_codes_that_are_not_icd10cm_are_refused(code, words):
    with pytest.raises(CodingError, match=words):
        validate_icd10(code)


# -- the release -----------------------------------------------------------------------------------

def test_bundled_release_is_fy2026():
    assert release().fiscal_year == 2026 and release().in_effect == (dt.date(2025, 10, 1), dt.date(2026, 9, 30))
    assert release_note(dt.date(2026, 1, 15)) is None
    note = release_note(dt.date(2026, 10, 1))                     # FY2027 starts
    assert note and "FY2026" in note and "ANATOMODEL_ICD10CM_RELEASE" in note


def test_a_date_of_service_outside_the_release_is_flagged_on_the_line():
    from pipeline.coding import BillableModel, next_charge

    model = BillableModel(model_id="a", patient_id="P", date_of_service=dt.date(2026, 11, 2), icd10=("I71.23",))
    assert any("outside it" in flag for flag in next_charge([], model).flags)


@pytest.fixture
def other_release(tmp_path, monkeypatch):
    """A release folder in the CDC's layout: the bundled files with Q25.1 taken out of both."""
    import xml.etree.ElementTree as ET

    import simple_icd_10_cm

    data = Path(simple_icd_10_cm.__file__).parent / "data"
    tree = ET.parse(next(data.glob("*tabular*.xml")))
    parent, node = next((p, c) for p in tree.iter() for c in p if c.tag == "diag" and c.findtext("name") == "Q25.1")
    parent.remove(node)
    tree.write(tmp_path / "icd10cm-tabular-2026.xml", encoding="utf-8", xml_declaration=True)
    codes = [line for line in next(data.glob("code-list*.txt")).read_text().splitlines() if line.split(" ")[0] != "Q251"]
    (tmp_path / "icd10cm-codes-2026.txt").write_text("\n".join(codes) + "\n")
    monkeypatch.setenv(RELEASE_ENV, str(tmp_path))
    reload_codeset()
    yield tmp_path
    monkeypatch.delenv(RELEASE_ENV)
    reload_codeset()
    lookup_icd10("Q25.1")                                         # the bundled release is back


def test_another_release_is_loaded_from_its_folder(other_release):
    assert release().name == "ICD-10-CM FY2026 (icd10cm-tabular-2026.xml)"
    with pytest.raises(CodingError, match=r"'Q25.1' is not in the ICD-10-CM code set \(ICD-10-CM FY2026 \(icd10cm"):
        lookup_icd10("Q25.1")
    assert lookup_icd10("I71.23").billable


def test_a_bad_release_folder_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv(RELEASE_ENV, str(tmp_path))
    reload_codeset()
    try:
        with pytest.raises(ConfigError, match="ANATOMODEL_ICD10CM_RELEASE=.*expected a folder with one CDC code list"):
            lookup_icd10("I71.23")
    finally:
        monkeypatch.delenv(RELEASE_ENV)
        reload_codeset()


_LOOKUP_CHILD = """
import json, sys
from pipeline.icd10 import lookup_icd10
import datetime as dt
found = [lookup_icd10(c, dt.date(2022, 6, 1)).to_dict() for c in ("I71.23", "I71.2", "Q25.4", "I38")]
print(json.dumps({"found": found, "parsed": "simple_icd_10_cm" in sys.modules}))
"""


def _lookup_in_child(cache: Path) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "ANATOMODEL_CACHE_DIR": str(cache)}
    env.pop(RELEASE_ENV, None)
    done = subprocess.run([sys.executable, "-c", _LOOKUP_CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_looked_up_codes_are_answered_later_without_parsing_the_code_set(tmp_path):
    """The first run parses the code set and keeps what it found; the next one reads it back
    (same answers, dates of service and expansion history included) and never imports the package."""
    first = _lookup_in_child(tmp_path)
    assert first["parsed"]
    second = _lookup_in_child(tmp_path)
    assert not second["parsed"]
    assert second["found"] == first["found"]
    assert [f["billable"] for f in second["found"]] == [False, True, False, True]  # before the 2022-10-01 expansion
    assert second["found"][0]["existed"] is False
    # a damaged file is parsed again and rewritten, not trusted
    (cache_file,) = tmp_path.rglob("*.json")
    cache_file.write_text('{"I71.23": {"description": 1}', encoding="utf-8")
    third = _lookup_in_child(tmp_path)
    assert third["parsed"] and third["found"] == first["found"]
    assert _lookup_in_child(tmp_path)["found"] == first["found"]
