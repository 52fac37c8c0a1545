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
    path.write_text(_key_without_date_collision() + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def _key_without_date_collision() -> str:
    """A random key whose date shift for the test patients is at most 200 days.

    A vendor copy shifts the lab's own times (today) by the patient's shift too. When today
    minus the shift falls on a real date of the source (the test scans' 2026-01-15), the copy's
    shifted creation date is byte for byte a real date. The package knows that coincidence is no
    leak (``vendor_copy_identifiers`` leaves such a date out of its scan; tested in
    ``test_deidentify.py`` with a key made to collide), but the tests' own scanner is blunt on
    purpose and would report it: shifts of at most 200 days keep that day out of every run of
    these tests; the scanner still sees a fresh key every session."""
    import secrets

    from pipeline.document import deidentify

    while True:
        key = secrets.token_hex(32)
        os.environ[deidentify.KEY_VARIABLE] = key
        try:
            if all(deidentify.date_shift_days(patient) <= 200 for patient in ("PH0001", "MRN778899")):
                return key
        finally:
            os.environ.pop(deidentify.KEY_VARIABLE, None)


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
