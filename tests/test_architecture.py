"""The package's shape holds: import layers (import-linter) and a clean lint (ruff).

The contract and the rule set live in ``pyproject.toml`` (``[tool.importlinter]``,
``[tool.ruff.lint]``); docs/architecture.md explains the layers.
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
