"""``anatomodel regress``: passes on the committed golden results, fails (exit 14) on drift.

The quick tests run a subset of the cases (``--only``); the full set, with the cross-acquisition
consistency of the tilted series, runs once in ``test_full_regress`` (slow, still run in CI).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import EnvironmentFault, RegressionDrift
from pipeline.regress import case_names, write_report

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "regress" / "golden"
SUBSET = "synthetic_aorta"
PHI = ("PHANTOM^AORTA", "PH0001", "ACC20260115001", "19640301")


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def subset_run(phantoms_dir, tmp_path_factory):
    report = tmp_path_factory.mktemp("regress") / "report.json"
    code = main(["regress", "--phantoms", str(phantoms_dir), "--only", SUBSET, "--report", str(report)])
    return code, json.loads(report.read_text()), report


def test_committed_golden_records_state_their_tolerances_with_reasons():
    assert RegressionDrift.exit_code == 14
    for name in SUBSET.split(","):
        record = json.loads((GOLDEN / f"{name}.json").read_text())
        assert (GOLDEN / record["golden_mesh"]["file"]).is_file()
        for tolerance in record["tolerances"].values():
            assert len(tolerance["reason"]) > 20
    size = sum(path.stat().st_size for path in GOLDEN.glob("*.ply.gz"))
    assert size < 2_000_000, "golden meshes must stay small"


@pytest.mark.slow
def test_subset_passes_against_the_committed_goldens(subset_run):
    code, report, path = subset_run
    assert code == 0, report["failures"]
    assert [case["case"] for case in report["cases"]] == SUBSET.split(",")
    assert report["ok"] and all(check["ok"] for case in report["cases"] for check in case["checks"])
    html = path.with_suffix(".html").read_text()
    assert html.count("data:image/png;base64,") == len(report["cases"])


@pytest.mark.slow
def test_synthetic_aorta_model_matches_the_analytic_truth(subset_run):
    _, report, _ = subset_run
    aorta = next(case for case in report["cases"] if case["case"] == "synthetic_aorta")
    # Independent truth: the phantom's analytic aorta label (voxel count at 1 mm).
    assert aorta["truth"]["dice_vs_analytic_aorta"] > 0.95
    assert aorta["metrics"]["volume_ml"] == pytest.approx(aorta["truth"]["truth_aorta_ml"], rel=0.05)
    assert aorta["metrics"]["watertight"] and aorta["metrics"]["shells"] == 1


def test_every_case_has_a_committed_golden_record():
    assert all((GOLDEN / f"{name}.json").is_file() for name in case_names())


def test_skull_seed_is_found_in_bone_and_recorded(philips_dir):
    from pipeline.load import load_series
    from pipeline.regress.seeds import bone_seed

    volume, _ = load_series(philips_dir / "S21570" / "S2010")
    index, seed = bone_seed(volume, 200)
    assert seed["method"].startswith("automatic")
    assert volume.array[index] > 400
    assert seed["seed_mean_hu_3x3x3"] > 400  # cortical bone, not the ~300 HU head holder
    chosen = [c for c in seed["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["median_hu"] == max(c["median_hu"] for c in seed["candidates"])


@pytest.mark.slow
def test_update_golden_then_a_perturbed_golden_value_is_drift(phantoms_dir, tmp_path, capsys):
    golden = tmp_path / "golden"
    log = tmp_path / "regress.log"
    code, _, _ = _run(["regress", "--only", "synthetic_aorta", "--golden", str(golden), "--update-golden"], capsys)
    assert code == 0
    record_file = golden / "synthetic_aorta.json"
    record = json.loads(record_file.read_text())
    committed = json.loads((GOLDEN / "synthetic_aorta.json").read_text())
    # The fresh golden reproduces the committed one within its own tolerance.
    assert record["measured"]["volume_ml"] == pytest.approx(committed["measured"]["volume_ml"], rel=0.01)

    record["measured"]["volume_ml"] *= 1.05  # a 5% volume change: over the 1% tolerance
    record_file.write_text(json.dumps(record))
    code, out, err = _run(["--log-file", str(log), "regress", "--only", "synthetic_aorta", "--golden", str(golden),
                           "--json"], capsys)
    assert code == RegressionDrift.exit_code
    result = json.loads(out)
    assert not result["ok"]
    failed = [check["quantity"] for case in result["cases"] for check in case["checks"] if not check["ok"]]
    assert failed == ["volume_ml"]
    assert "volume_ml" in err and "--update-golden" in err
    text = log.read_text()
    assert "synthetic_aorta: segment" in text
    assert not any(item in text for item in PHI)


def test_unknown_case_and_missing_golden_folder_are_refused(tmp_path, capsys):
    code, _, err = _run(["regress", "--only", "no_such_case"], capsys)
    assert code == 4 and "no_such_case" in err
    code, _, err = _run(["regress", "--only", "synthetic_aorta", "--golden", str(tmp_path / "none")], capsys)
    assert code == 4 and "golden folder" in err


@pytest.mark.slow
def test_full_regress_and_cross_acquisition_consistency(phantoms_dir, tmp_path, capsys):
    report = tmp_path / "full.json"
    code, out, err = _run(["regress", "--phantoms", str(phantoms_dir), "--report", str(report)], capsys)
    data = json.loads(report.read_text())
    assert code == 0, data["failures"]
    assert [case["case"] for case in data["cases"]] == case_names()
    for name in ("skull_tilt_minus18", "skull_tilt_plus16"):
        item = data["consistency"][name]
        assert item["checked"] and item["ok"]
        assert item["distance"]["mean_mm"] <= 1.0
        assert abs(item["volume_difference"]) <= 0.03  # against the thickness-matched 1 mm skull
        # The series share a frame of reference: the registration should find almost nothing to do.
        assert item["icp"]["rotation_deg"] < 1.0
    assert "Same skull, different acquisitions" in out
    assert "regress passed" in err


class _Result:
    """The smallest thing write_report takes: a to_dict() of the documented fields."""

    def to_dict(self) -> dict:
        return {"ok": True, "cases": [], "consistency": {}, "seconds": 0.5, "anatomodel_version": "test",
                "started": "2026-12-03T08:00:00Z", "phantoms": "phantoms", "golden": "golden", "failures": []}


@pytest.mark.parametrize("given, json_name", [("r.json", "r.json"), ("r.html", "r.json"), ("r", "r")])
def test_a_report_named_html_keeps_its_json_beside_the_page(tmp_path, given, json_name):
    json_path, page = write_report(_Result(), tmp_path / given, {})
    assert json_path == tmp_path / json_name and page == tmp_path / "r.html" and json_path != page
    assert json.loads(json_path.read_text())["ok"] is True  # not overwritten by the page
    assert page.read_text().lstrip().lower().startswith("<!doctype html")


def test_an_unwritable_report_is_refused_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    # A missing phantom folder would be the run's own error: the report is refused before it.
    code, _, err = _run(["regress", "--only", "skull_1mm", "--phantoms", str(tmp_path / "none"),
                         "--report", str(blocker / "r.json")], capsys)
    assert code == EnvironmentFault.exit_code and "cannot" in err.lower()
    assert blocker.read_text() == "not a folder"
