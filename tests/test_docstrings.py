"""numpydoc sections on the public functions of the modules brought up to the rule.

A public function (or method) that takes arguments documents them under ``Parameters``; one
that returns something says what under ``Returns``. The list grows as modules are covered;
a new function in a covered module that lacks its sections fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COVERED = ["pipeline/report.py", "pipeline/lazy.py", "pipeline/stage_settings.py", "pipeline/prepare/report.py",
           "pipeline/segment/report.py"]


def _lacking(path: Path) -> list[str]:
    missing = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node) or ""
        arguments = [a.arg for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
        if arguments and "Parameters\n----------" not in doc:
            missing.append(f"{path.name}:{node.lineno} {node.name}: no Parameters section")
        returns = node.returns is not None and not (isinstance(node.returns, ast.Constant) and node.returns.value is None)
        if returns and "Returns\n-------" not in doc:
            missing.append(f"{path.name}:{node.lineno} {node.name}: no Returns section")
    return missing


@pytest.mark.parametrize("module", COVERED)
def test_public_functions_document_parameters_and_returns(module):
    assert _lacking(REPO / module) == []
