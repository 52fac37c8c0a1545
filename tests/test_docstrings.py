"""numpydoc sections on every public function of the package.

A public function (or method) that takes arguments documents each of them by name under
``Parameters``; one that returns something says what under ``Returns``; one whose own body
raises an exception names it under ``Raises``. A typer command is documented for the command
line instead: it needs a docstring (its ``--help`` text) and a ``help=`` on every argument and
option. Modules still in ``PENDING`` are not yet brought up to the rule; the list only shrinks,
and a module that passes must leave it (the last test says so).

``python tests/test_docstrings.py [--root TREE] [MODULE ...]`` prints what is lacking and the
counts, for planning and for a closing note.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Modules not yet brought up to the rule (paths from the repository root). Only removals.
PENDING: list[str] = []


def _is_typer_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether a function is registered as a command (``@app.command(...)`` or alike)."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "callback"):
            return True
    return False


def _typer_lacking(node: ast.FunctionDef | ast.AsyncFunctionDef, where: str) -> list[str]:
    """What a typer command lacks: its docstring and a ``help=`` on each argument and option."""
    missing = [] if ast.get_docstring(node) else [f"{where}: command without a docstring"]
    defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
    for default in defaults:
        if not isinstance(default, ast.Call):
            continue
        func = default.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("Option", "Argument") and not any(k.arg == "help" for k in default.keywords):
            missing.append(f"{where}: a typer.{name} without help= (line {default.lineno})")
    return missing


def _raises_own(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Exception names that the function's own body raises (not nested functions', not re-raises)."""
    names: list[str] = []
    stack = list(node.body)
    while stack:
        child = stack.pop()
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(child, ast.Raise) and child.exc is not None:
            exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            if isinstance(exc, ast.Name) and exc.id[:1].isupper():
                names.append(exc.id)
            elif isinstance(exc, ast.Attribute):
                names.append(exc.attr)
        stack.extend(ast.iter_child_nodes(child))
    return names


def _section(doc: str, title: str) -> str | None:
    """The text of a numpydoc section, or None when the docstring has none."""
    marker = f"{title}\n{'-' * len(title)}"
    if marker not in doc:
        return None
    body = doc.split(marker, 1)[1]
    lines = []
    for line in body.splitlines()[1:]:
        stripped = line.strip()
        if stripped and set(stripped) == {"-"} and lines and lines[-1].strip():
            lines.pop()  # the title of the next section
            break
        lines.append(line)
    return "\n".join(lines)


def lacking(path: Path) -> list[str]:
    """What the public functions of one module lack.

    Parameters
    ----------
    path : Path
        The module's source file.

    Returns
    -------
    list of str
        One line per gap, ``file:line name: what is missing``; empty when the module passes.
    """
    missing = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        where = f"{path.name}:{node.lineno} {node.name}"
        if _is_typer_command(node):
            missing += _typer_lacking(node, where)
            continue
        doc = ast.get_docstring(node) or ""
        arguments = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                     if a.arg not in ("self", "cls")]
        if node.args.vararg:
            arguments.append(node.args.vararg.arg)
        if node.args.kwarg:
            arguments.append(node.args.kwarg.arg)
        parameters = _section(doc, "Parameters")
        if arguments and parameters is None:
            missing.append(f"{where}: no Parameters section")
        elif arguments:
            # numpydoc: a parameter's line starts at the section's indentation, "name : type"
            heads = [line.split(" : ")[0] for line in parameters.splitlines()
                     if line.strip() and not line[0].isspace()]
            named = {part.strip().lstrip("*") for head in heads for part in head.split(",")}
            for argument in arguments:
                if argument not in named:
                    missing.append(f"{where}: Parameters does not name {argument!r}")
        returns = node.returns is not None and not (
            isinstance(node.returns, ast.Constant) and node.returns.value is None)
        is_generator = any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in ast.walk(node))
        if returns and not is_generator and _section(doc, "Returns") is None and _section(doc, "Yields") is None:
            missing.append(f"{where}: no Returns section")
        raised = _raises_own(node)
        if raised and _section(doc, "Raises") is None:
            missing.append(f"{where}: raises {', '.join(sorted(set(raised)))} but has no Raises section")
    return missing


def modules(root: Path = REPO) -> list[str]:
    """Every module of the package, as paths from the repository root.

    Parameters
    ----------
    root : Path
        The repository root.

    Returns
    -------
    list of str
        Sorted POSIX paths such as ``pipeline/report.py``.
    """
    return sorted(p.relative_to(root).as_posix() for p in (root / "pipeline").rglob("*.py"))


COVERED = [m for m in modules() if m not in PENDING]


@pytest.mark.parametrize("module", COVERED)
def test_public_functions_document_parameters_returns_and_raises(module):
    assert lacking(REPO / module) == []


def test_pending_lists_only_modules_that_still_lack_sections():
    passing = [m for m in PENDING if (REPO / m).exists() and not lacking(REPO / m)]
    gone = [m for m in PENDING if not (REPO / m).exists()]
    assert passing == [] and gone == [], "remove these from PENDING"


def test_the_checker_sees_a_missing_parameter_and_a_missing_raises(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        'def scale(values, factor):\n'
        '    """Scale.\n\n    Parameters\n    ----------\n    values : list\n        The values.\n\n'
        '    Returns\n    -------\n    list\n        Scaled.\n    """\n'
        '    if factor <= 0:\n        raise ValueError("factor")\n    return values\n'
        'def scale2(values) -> list:\n    """Scale."""\n    return values\n')
    gaps = lacking(source)
    assert any("does not name 'factor'" in gap for gap in gaps)
    assert any("raises ValueError" in gap for gap in gaps)
    assert any("scale2" in gap and "no Parameters" in gap for gap in gaps)
    assert any("scale2" in gap and "no Returns" in gap for gap in gaps)
    assert not any("'values'" in gap for gap in gaps)


def main(argv: list[str]) -> int:
    """Print what is lacking and the counts; ``--root TREE`` checks another checkout.

    Parameters
    ----------
    argv : list of str
        The command-line arguments after the script name.

    Returns
    -------
    int
        0 always (this is a report, the tests are the gate).
    """
    root = REPO
    if argv[:1] == ["--root"]:
        root, argv = Path(argv[1]).resolve(), argv[2:]
    chosen = argv or modules(root)
    total_gaps = 0
    functions = 0
    for module in chosen:
        gaps = lacking(root / module)
        functions += len({gap.split(":")[1].split()[1] for gap in gaps})
        total_gaps += len(gaps)
        for gap in gaps:
            print(f"{module}: {gap.split(' ', 1)[1] if ' ' in gap else gap}")
    lacking_modules = sum(1 for m in chosen if lacking(root / m))
    print(f"{total_gaps} gaps in {functions} functions of {lacking_modules} of {len(chosen)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
