"""The case file contract: valid example, and bad files refused with the field named."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.case import load_case, safe_path_component
from pipeline.cli import main
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "cases" / "example_aorta.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_case_is_valid_and_resolves_paths():
    case = load_case(EXAMPLE)
    assert case.case_id == "EXAMPLE-001"
    assert case.dicom_path == (REPO / "example_data" / "cta_phantom").resolve()
    assert [m.id for m in case.models] == ["aorta-surgeon", "ventricle-or"]
    assert case.models[0].seeds_lps_mm == [(-8.0, -22.0, 25.0)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("indication"), "indication"),
        (lambda d: d["encounter"].pop("date_of_service"), "encounter.date_of_service"),
        (lambda d: d["encounter"].__setitem__("date_of_service", "yesterday"), "encounter.date_of_service"),
        (lambda d: d["models"][0].__setitem__("seeds_lps_mm", [["a", 1, 2]]), "models.0.seeds_lps_mm.0.0"),
        (lambda d: d["models"][0].__setitem__("preset", "no_such_preset"), "models.0.preset"),
        (lambda d: d.__setitem__("printer", "no_such_printer"), "printer"),
        (lambda d: d["encounter"]["ordering_provider"].__setitem__("npi", "12345"), "encounter.ordering_provider.npi"),
        (lambda d: d["models"][0].__setitem__("id", "../escape"), "models.0.id"),
        (lambda d: d.__setitem__("case_id", "PH0001-aorta"), "case_id must not contain"),
        (lambda d: d["models"][0].__setitem__("sed_lps_mm", [[0, 0, 0]]), "models.0.sed_lps_mm"),
        (lambda d: d["models"][0].__setitem__("mesh", {"smoothing_lambda": 1.5}), "smoothing_lambda must lie in (0, 1)"),
        (lambda d: d["models"][0].__setitem__("mesh", {"smoothing": "gaussian"}), "models.0.mesh.smoothing"),
        (lambda d: d["models"][0].__setitem__("prepare", {"alternatives": -1}), "models.0.prepare.alternatives"),
        (lambda d: d["imaging"].__setitem__("max_gap_mm", 0), "imaging.max_gap_mm"),
    ],
    ids=["missing-indication", "missing-date", "bad-date", "bad-seed-type", "unknown-preset", "unknown-printer",
         "bad-npi", "unsafe-model-id", "phi-in-case-id", "typo-field", "mesh-option-range", "mesh-option-choice",
         "prepare-option-range", "load-option-range"],
)
def test_bad_case_files_name_the_field(tmp_path, example, change, field):
    data = copy.deepcopy(example)
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        load_case(path)
    assert field in str(error.value)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("section", "value", "field", "suggestion"),
    [
        ("mesh", {"target_face": 1000}, "models.0.mesh.target_face", "did you mean 'target_faces'?"),
        ("prepare", {"materal": "clear_v4"}, "models.0.prepare.materal", "did you mean 'material'?"),
        ("prepare", {"material": "clear_v5"}, "models.0.prepare.material", "did you mean 'clear_v4'?"),
        ("segment", {"roi_lps": [[0, 0, 0], [1, 1, 1]]}, "models.0.segment.roi_lps", "did you mean 'roi_lps_mm'?"),
        ("segment", {"overrides": {"threshold.lowr_hu": 150}}, "models.0.segment.overrides",
         "did you mean 'lower_hu'?"),
    ],
)
def test_stage_options_misspelt_name_the_closest(tmp_path, example, section, value, field, suggestion):
    data = copy.deepcopy(example)
    data["models"][0][section] = value
    with pytest.raises(ConfigError) as error:
        load_case(_write(tmp_path, data))
    assert field in str(error.value) and suggestion in str(error.value)


def test_stage_options_are_read(tmp_path, example):
    from pipeline.mesh import MeshOptions

    data = copy.deepcopy(example)
    data["models"][0].update(mesh={"target_faces": 20_000, "smoothing": "taubin", "smoothing_passband": 0.1},
                             segment={"overrides": {"threshold.lower_hu": 160}},
                             prepare={"material": "clear_v4", "alternatives": 1})
    case = load_case(_write(tmp_path, data))
    spec = case.models[0]
    assert spec.mesh.to_options() == MeshOptions(target_faces=20_000, smoothing="taubin", smoothing_passband=0.1)
    assert case.models[1].mesh.to_options() == MeshOptions()  # not set: the defaults
    assert spec.segment.overrides == {"threshold.lower_hu": 160}
    assert (spec.prepare.material, spec.prepare.alternatives) == ("clear_v4", 1)


def test_cli_reports_bad_case_without_traceback(tmp_path, example, capsys):
    data = copy.deepcopy(example)
    data["models"][0]["preset"] = "no_such_preset"
    code = main(["run", str(_write(tmp_path, data)), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == ConfigError.exit_code
    assert "models.0.preset" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.stl"))


def test_installed_command_exits_non_zero_on_bad_yaml(tmp_path):
    path = tmp_path / "case.yaml"
    path.write_text("case_id: [unclosed\n")
    result = subprocess.run([sys.executable, "-m", "pipeline", "run", str(path)], capture_output=True, text=True)
    assert result.returncode == ConfigError.exit_code
    assert "not valid YAML" in result.stderr and "Traceback" not in result.stderr


def test_safe_path_component():
    assert safe_path_component("EXAMPLE-001") == "EXAMPLE-001"
    for bad in ["", ".hidden", "a/b", "..", "x" * 65, "name with space"]:
        with pytest.raises(ConfigError):
            safe_path_component(bad)


def test_the_run_operator_is_the_option_then_the_case_then_the_ledger_s_variable(tmp_path, example, monkeypatch):
    import getpass

    from pipeline.case import run_operator

    anonymous = copy.deepcopy(example)
    anonymous.pop("operator", None)
    (tmp_path / "b").mkdir()
    named, unnamed = load_case(_write(tmp_path, example)), load_case(_write(tmp_path / "b", anonymous))
    monkeypatch.setenv("ANATOMODEL_OPERATOR", "EVE^ADAMS")
    assert run_operator("OP^GIVEN", named) == "OP^GIVEN"
    assert run_operator(None, named) == example["operator"]
    assert run_operator(None, unnamed) == "EVE^ADAMS"  # it was the login before
    monkeypatch.delenv("ANATOMODEL_OPERATOR")
    assert run_operator(None, unnamed) == getpass.getuser()
    monkeypatch.setenv("ANATOMODEL_OPERATOR", "EVE\x1b[31m")
    with pytest.raises(ConfigError, match="ANATOMODEL_OPERATOR contains the control character"):
        run_operator(None, unnamed)
