"""The command line's plumbing: --version, --json error objects, no hard wrap off a terminal,
library log lines silenced, "did you mean" for presets and printers. Run as a real process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), ANATOMODEL_LEDGER=str(tmp_path / "ledger.sqlite3"))
    env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_version_is_the_installed_distribution(tmp_path):
    done = _run("--version", tmp_path=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"anatomodel {version('anatomodel')}"


def test_json_failure_is_one_error_object_with_the_exit_code(tmp_path):
    missing = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-" * 2) / "aorta-surgeon" / "model.stl"
    missing.parent.mkdir(parents=True)
    done = _run("document", str(missing.parent), "--case", str(REPO / "configs" / "cases" / "example_aorta.yaml"),
                "--json", tmp_path=tmp_path)
    assert done.returncode not in (0, 1)
    document = json.loads(done.stdout)                       # exactly one JSON document: loads refuses more
    assert document["error"]["exit_code"] == done.returncode
    assert str(missing) in document["error"]["message"]
    # stderr is not a terminal here: the one-line error is not hard-wrapped at 80 columns
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0] and len(lines[0]) > 80


@pytest.mark.parametrize("kind, typo, meant", [("printers", "formlabs_form3", "formlabs_form3b"),
                                               ("presets", "aorta_ct", "aorta_cta")])
def test_unknown_config_name_suggests_the_closest(kind, typo, meant):
    from pipeline.config import available, find_config
    from pipeline.errors import ConfigError

    assert meant in available(kind)
    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        find_config(kind, typo)


def test_printer_typo_on_the_command_line(tmp_path):
    import trimesh

    stl = tmp_path / "box.stl"
    trimesh.creation.box((10, 10, 10)).export(stl)
    done = _run("prepare", str(stl), "--printer", "formlabs_form3", "--out", str(tmp_path / "out"), tmp_path=tmp_path)
    assert done.returncode not in (0, 1)
    assert "did you mean 'formlabs_form3b'" in done.stderr


def test_library_loggers_quiet_unless_debug():
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    runner.invoke(app, ["--verbose", "ledger", "--help"])
    assert logging.getLogger("matplotlib").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("PIL").getEffectiveLevel() == logging.WARNING
    runner.invoke(app, ["--debug", "ledger", "--help"])
    assert logging.getLogger("matplotlib").getEffectiveLevel() == logging.DEBUG


def test_timed_steps_prints_each_step_and_its_time(capsys):
    import time

    from pipeline.cli.app import timed_steps

    started = time.perf_counter()
    with timed_steps("demo", announce=True) as step:
        step("first step")
        time.sleep(0.3)
        step("second step")
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert "first step" in err and "second step" in err and "step times" in err
    times = {line.split(" s  ")[1]: float(line.split(" s  ")[0]) for line in err.splitlines() if " s  " in line}
    assert times["first step"] >= 0.3 - 0.01 and times["second step"] >= 0.1 - 0.01
    assert sum(times.values()) <= elapsed + 0.02


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["charges", "list", "--help"]])
def test_help_shows_no_type_on_flags(command, tmp_path):
    done = _run(*command, tmp_path=tmp_path)
    assert done.returncode == 0
    assert "--help" in done.stdout and "<bool>" not in done.stdout


def test_unknown_case_file_field_suggests_the_closest(tmp_path):
    import yaml

    from pipeline.case import load_case
    from pipeline.errors import ConfigError

    case = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case["imaging"]["dicom"] = str(tmp_path)
    case["models"][0]["seed_lps_mm"] = case["models"][0].pop("seeds_lps_mm")
    case["printr"] = case.pop("printer")
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(case, sort_keys=False))
    with pytest.raises(ConfigError) as raised:
        load_case(path)
    message = str(raised.value)
    assert "field 'models.0.seed_lps_mm'" in message and "did you mean 'seeds_lps_mm'?" in message
    assert "field 'printr'" in message and "did you mean 'printer'?" in message
