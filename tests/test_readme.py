"""The README's two commands are the ones CI and newcomers run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "the README must start with a bash block of the two commands"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_two_commands():
    text = (REPO / "README.md").read_text()
    assert text.index("```bash") < 40
    commands = _readme_commands()
    assert len(commands) == 2
    assert "anatomodel run configs/cases/example_aorta.yaml" in commands[0]
    assert (REPO / "configs" / "cases" / "example_aorta.yaml").is_file()


def test_ci_runs_both_readme_commands_verbatim():
    ci = (REPO / ".ci" / "run").read_text()
    first, second = _readme_commands()
    assert first in ci, "CI must run the README's first command as written (a plain pip install .)"
    assert second in ci
