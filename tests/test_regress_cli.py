"""Command-line conventions: exit codes as documented, log files, shell completion, --json."""

from __future__ import annotations

import json

import inspect
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import errors
from pipeline.cli import main
from pipeline.cli.app import log_to_file, say

REPO = Path(__file__).resolve().parents[1]


def _readme_exit_codes() -> dict[int, str]:
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Exit codes"):]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+?) \|$", table, re.M)}


def test_readme_exit_code_table_matches_the_error_classes():
    documented = _readme_exit_codes()
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.AnatomodelError)]
    codes = {c.exit_code for c in classes}
    assert codes <= set(documented), f"undocumented exit codes {codes - set(documented)}"
    assert set(documented) == codes | {0, 1, 2}
    assert "regression drift" in documented[errors.RegressionDrift.exit_code]


def test_usage_error_is_exit_2_and_bad_input_its_documented_code(tmp_path, capsys):
    assert main(["regress", "--no-such-option"]) == 2
    assert main(["inspect", str(tmp_path / "missing")]) in set(_readme_exit_codes()) - {0, 1, 2}


def test_log_file_gets_status_lines_with_times_and_stops_after_the_block(tmp_path):
    path = tmp_path / "case" / "run.log"
    with log_to_file(path):
        say("[bold]mesh[/]: 1234 faces")
        logging.getLogger("pipeline.test").info("a library step")
    say("after the block")
    lines = path.read_text().splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO anatomodel.cli: mesh: 1234 faces$", lines[0])
    assert lines[1].endswith("pipeline.test: a library step")
    assert len(lines) == 2


def test_shell_completion_completes_subcommands_and_options(tmp_path):
    environment = dict(os.environ, _ANATOMODEL_COMPLETE="complete_bash", COMP_WORDS="anatomodel regress --on",
                       COMP_CWORD="2")
    code = "from pipeline.cli import main; raise SystemExit(main())"
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, cwd=REPO)
    assert done.stdout.split() == ["--only"]
    environment.update(COMP_WORDS="anatomodel reg", COMP_CWORD="1")
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, cwd=REPO)
    assert done.stdout.split() == ["regress"]


def test_install_completion_writes_a_bash_completion_script(tmp_path):
    environment = dict(os.environ, HOME=str(tmp_path), SHELL="/bin/bash")
    code = "from pipeline.cli import main; raise SystemExit(main())"
    # Typer finds the shell among the process's ancestors, so run under bash whoever runs the
    # tests (a detached test run has no shell above it); "; exit" keeps bash from exec-ing python.
    done = subprocess.run(["bash", "-c", '"$0" -c "$1" --install-completion; exit $?', sys.executable, code],
                          env=environment, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    script = tmp_path / ".bash_completions" / "anatomodel.sh"
    assert "_ANATOMODEL_COMPLETE=complete_bash" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()


def test_json_error_is_the_one_document_on_stdout(tmp_path, capsys):
    # Messages go to stderr; a successful run's JSON on stdout is checked in test_regress.py.
    code = main(["regress", "--only", "synthetic_aorta", "--golden", str(tmp_path / "none"), "--json"])
    captured = capsys.readouterr()
    assert code == errors.ConfigError.exit_code
    assert json.loads(captured.out) == {"error": {"kind": "ConfigError", "exit_code": code,
                                                  "message": json.loads(captured.out)["error"]["message"]}}
    assert "golden folder" in json.loads(captured.out)["error"]["message"] and "golden folder" in captured.err


@pytest.mark.parametrize("command", ["batch", "convert", "document", "inspect", "ledger", "mesh", "phantom",
                                     "prepare", "regress", "run", "segment"])
def test_every_subcommand_help_has_examples(command, capsys):
    assert main([command, "--help"]) == 0
    assert "Example" in capsys.readouterr().out
