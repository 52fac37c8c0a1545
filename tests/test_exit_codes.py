"""Exit codes: every statement of one (docstrings, the README's table and prose, docs/*.md, the
command line's help) is checked against the error classes of :mod:`pipeline.errors`."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pipeline
from pipeline import errors

REPO = Path(__file__).resolve().parents[1]
#: Codes no class has: reserved (0-2), interrupted (130), stopped by SIGTERM (143).
OTHER_CODES = {0, 1, 2, 130, 143}


@cache
def _classes() -> dict[str, int]:
    """Every error class of the package, found by importing every module (not from exit_codes)."""
    for module in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, todo = {}, [errors.AnatomodelError]
    while todo:
        error = todo.pop()
        found[error.__name__] = error.exit_code
        todo += error.__subclasses__()
    return found


def test_each_class_has_its_own_code_and_lives_in_pipeline_errors():
    classes = dict(_classes())
    codes = {name: error.exit_code for name, error in inspect.getmembers(errors, inspect.isclass)
             if issubclass(error, errors.AnatomodelError)}
    assert classes == codes                               # no error class is defined elsewhere
    assert len(set(codes.values())) == len(codes)         # one class per code
    assert not set(codes.values()) & OTHER_CODES
    assert {code: error.__name__ for code, error in errors.exit_codes().items()} == {c: n for n, c in codes.items()}
    assert list(errors.exit_codes()) == sorted(codes.values())


def _readme_table() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_readme_table_names_each_class_with_its_code():
    rows = _readme_table()
    table = {int(code): cls.strip("`") for code, cls, _meaning in rows}
    assert len(table) == len(rows)
    expected = {code: "" for code in errors.RESERVED_EXIT_CODES} | {c: n for n, c in _classes().items()}
    assert table == expected


def _mentions(text: str) -> list[int]:
    """Codes a text says a command exits with (``exit 4``, ``exits 19``, ``exit code 13``; not
    ``exit 128 + N``)."""
    return [int(code) for code in re.findall(r"\bexit(?:s|ing)?(?: with)?(?: code)? (\d+)\b(?!\s*\+)", text, re.I)]


def test_readme_and_docs_name_only_codes_that_exist():
    known = set(_classes().values()) | OTHER_CODES
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        unknown = set(_mentions(path.read_text(encoding="utf-8"))) - known
        assert not unknown, f"{path.name} names exit code(s) {sorted(unknown)} that no class has"


def test_readme_prose_gives_each_print_qa_refusal_its_class_code():
    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    # ScanError: "empty, unreadable, in the wrong units"; RegistrationError: "another object"
    assert f"a scan of another object exits {errors.RegistrationError.exit_code}" in text
    assert re.search(rf"a scan in inches or metres exits {errors.ScanError.exit_code}\b", text)


def _docstrings():
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield f"{path.relative_to(REPO)}:{getattr(node, 'name', '<module>')}", doc


def _raises_entries(doc: str):
    """``(names, text)`` per entry of a numpydoc Raises section."""
    section = re.search(r"^Raises\n-+\n(.*?)(?=^\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    if section is None:
        return
    for entry in re.split(r"\n(?=\S)", section.group(1).strip()):
        head, _, text = entry.partition("\n")
        yield [name.strip().rsplit(".", 1)[-1] for name in re.split(r",| or ", head)], text


def test_every_exit_code_a_docstring_states_is_its_class_code():
    classes = _classes()
    wrong = []
    for where, doc in _docstrings():
        for names, text in _raises_entries(doc):
            for code in _mentions(text):
                if not any(classes.get(name) == code for name in names):
                    wrong.append(f"{where}: {' or '.join(names)} said to exit {code}")
        flat = " ".join(doc.split())
        pairs = re.findall(r"[Cc]ode (\d+) \(:class:`~?(?:[\w.]*\.)?(\w+)`\)", flat)
        pairs += [(code, name) for name, code in
                  re.findall(r":class:`~?(?:[\w.]*\.)?(\w+)` \(exit(?: code)? (\d+)\)", flat)]
        wrong += [f"{where}: {name} said to be code {code}" for code, name in pairs
                  if name in classes and classes[name] != int(code)]
        wrong += [f"{where}: exit {code} is no class's code" for code in _mentions(flat)
                  if code not in set(classes.values()) | OTHER_CODES]
    assert not wrong, "\n".join(wrong)


def test_help_lists_every_exit_code_with_its_class():
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0
    epilog = done.stdout.split("Exit codes", 1)[1]
    listed = {int(code): name for code, name in re.findall(r"^\s*(\d+) (\S+)", epilog, re.M)}
    expected = {code: name.split()[0] for code, name in errors.RESERVED_EXIT_CODES.items()}
    expected |= {code: name for name, code in _classes().items()} | {130: "interrupted"}
    assert listed == expected
