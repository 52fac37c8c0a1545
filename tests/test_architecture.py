"""The package's shape holds: import layers (import-linter) and a clean lint (ruff).

The contract and the rule set live in ``pyproject.toml`` (``[tool.importlinter]``,
``[tool.ruff.lint]``); docs/architecture.md explains the layers and lists them as the contract does
(checked here, with every top-level module in one layer).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    script = Path(sys.executable).parent / name
    return str(script) if script.exists() else name


def test_no_module_imports_a_layer_above_its_own():
    done = subprocess.run([_tool("lint-imports")], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "pipeline", "tests", "benchmarks", "example_data"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]


def test_importing_a_stage_submodule_leaves_its_package_a_plain_module():
    # A fresh interpreter: the test suite's own imports must not decide the outcome.
    probe = ("import types, pipeline, pipeline.segment.core\n"
             "assert type(pipeline.segment) is types.ModuleType, type(pipeline.segment)\n"
             "assert not callable(pipeline.segment)\n"
             "assert pipeline.segment_volume is pipeline.segment.core.segment_volume\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_architecture_page_lists_the_layers_the_contract_checks():
    import re
    import tomllib

    contract = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    page = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"## Import layers.*?```\n(.*?)```", page, re.S)
    assert block, "docs/architecture.md has no code block under '## Import layers'"
    assert block.group(1).splitlines() == contract["layers"]
    # every module and package of pipeline/ stands in the layers or inside a listed package
    listed = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    for path in sorted((REPO / "pipeline").iterdir()):
        if path.name.startswith("_") or not (path.suffix == ".py" or (path / "__init__.py").exists()):
            continue
        assert f"pipeline.{path.stem}" in listed, f"pipeline.{path.stem} is in no import layer"
