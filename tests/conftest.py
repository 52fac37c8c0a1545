"""Shared fixtures: the public phantom folder, the synthetic CTA phantom, temporary output."""

from __future__ import annotations

import os
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

