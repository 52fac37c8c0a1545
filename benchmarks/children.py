"""Running a benchmark step in a fresh interpreter, so its time and peak memory are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(__file__).resolve().parent


def child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter (repository and benchmarks importable); its last JSON line."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(BENCHMARKS)]))
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=environment, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
