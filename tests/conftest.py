"""Shared fixtures: the public phantom folder, the synthetic CTA phantom, temporary output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def deidentification_key_file(tmp_path_factory) -> Path:
    """Vendor copies need the installation's secret key: tests use one of their own, made on
    first use in a temporary folder (never the user's ~/.config), and inherited by subprocesses."""
    path = tmp_path_factory.mktemp("deid") / "deid.key"
    os.environ.pop("ANATOMODEL_DEID_KEY", None)
    os.environ["ANATOMODEL_DEID_KEY_FILE"] = str(path)
    return path


@pytest.fixture(scope="session")
def phantoms_dir() -> Path:
    """``$ANATOMODEL_PHANTOMS`` or ``../shared/phantoms``; a missing folder fails (CI has it)."""
    folder = Path(os.environ.get("ANATOMODEL_PHANTOMS", REPO.parent / "shared" / "phantoms"))
    if not (folder / "dcm_qa_ct").is_dir():
        pytest.fail(f"public phantoms not found at {folder}; set ANATOMODEL_PHANTOMS")
    return folder


@pytest.fixture(scope="session")
def philips_dir(phantoms_dir: Path) -> Path:
    return phantoms_dir / "dcm_qa_ct" / "series" / "Philips"



@pytest.fixture()
def tmpfs(tmp_path):
    """``tmpfs(options)`` mounts a tmpfs (e.g. ``"ro,size=1m"`` or ``"size=48k"``) under ``tmp_path``
    for the test and unmounts it afterwards: real read-only and full file systems. Needs root
    (CI runs as root); skipped where mounting is not allowed."""
    points: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"tmpfs{len(points)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", "-l", str(point)], check=False)
