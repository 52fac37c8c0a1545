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


#: Words that follow "anatomodel" in prose ("anatomodel turns a CT ..."), not commands.
PROSE = {"turns", "and"}


def _documented_commands(text: str) -> set[tuple[str, ...]]:
    """Every ``anatomodel CMD [SUB]`` written in a page: the command and, for a group, its subcommand."""
    found = set()
    global_options = r"(?:[ \t]+(?:--debug|--quiet|-q|--verbose|-v|--log-file[ \t]+\S+))*"
    for match in re.finditer(r"\banatomodel" + global_options + r"[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?", text):
        found.add((match.group(1), match.group(2) or ""))
    return found


def test_every_command_the_docs_name_exists():
    """The pages in docs/ and the README name only commands (and subcommands) the CLI has."""
    import typer.main

    from pipeline.cli.app import app

    root = typer.main.get_command(app)
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    unknown = []
    for page in pages:
        for name, sub in _documented_commands(page.read_text()):
            command = root.commands.get(name)  # type: ignore[attr-defined]
            if command is None and name not in PROSE:
                unknown.append(f"{page.name}: anatomodel {name}")
            elif hasattr(command, "commands") and sub and sub not in command.commands:
                unknown.append(f"{page.name}: anatomodel {name} {sub}")
    assert unknown == []
