"""The bad-input battery: every bad input is one clear line and the exit code of its kind.

Each case runs the real command line (``pipeline.cli.main``, in process) on a real file: a case
file, a manifest, a preset, a DICOM folder, an image, an output path. Every one must end with
exactly one ``error:`` line on stderr, no traceback and no "internal error", the exit code of
its :mod:`pipeline.errors` class, nothing reserved or left running in the ledger and no half
written folder under the output. Faults of the machine (disk full, read-only folders) use real
file systems: a tmpfs mounted for the test (root only, else skipped) and RLIMIT_FSIZE.
"""

from __future__ import annotations

import copy
import logging
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pydicom
import pytest
import yaml

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG, DICOM, GEOMETRY, SELECTION, SEGMENT, ENVIRONMENT, USAGE, MESH = 4, 5, 7, 6, 8, 15, 2, 9


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cta(tmp_path_factory) -> Path:
    """A small synthetic CTA as DICOM (4 mm voxels): enough for every check before the work."""
    folder = tmp_path_factory.mktemp("battery") / "cta"
    write_dicom_series(make_phantom(shape_scale=0.25), folder, with_truth=False)
    return folder


@pytest.fixture(scope="module")
def base_case(cta) -> dict:
    case = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case["imaging"]["dicom"] = str(cta)
    return case


@pytest.fixture()
def ledger(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "ledger.sqlite3"
    monkeypatch.setenv("ANATOMODEL_LEDGER", str(path))
    return path


@pytest.fixture(autouse=True)
def _fresh_console_handlers():
    """The CLI adds a stderr log handler on first use; drop it so each test's capture is its own."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_anatomodel_console", False)]:
        root.removeHandler(handler)


def _run(capsys, args: list[str]) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def _assert_clear_error(code: int, err: str, expected: int, *, contains: str | None = None) -> None:
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert not [line for line in err.splitlines()[err.splitlines().index(errors[0]) + 1:] if line.strip()], err
    assert code == expected, f"exit {code}, expected {expected}: {err}"
    if contains is not None:
        assert contains.lower() in errors[0].lower(), errors[0]


def _assert_nothing_left(out: Path, ledger: Path) -> None:
    """No staging folder or model folder under ``out``; nothing reserved or running in the ledger."""
    if out.is_dir():
        leftovers = [p for p in out.rglob("*") if p.is_dir() and (p.name.startswith(".") or (p / "model.stl").exists())]
        assert leftovers == []
    if ledger.exists():
        with sqlite3.connect(ledger) as db:
            charges = db.execute("SELECT cpt, status FROM charges").fetchall()
            running = db.execute("SELECT id FROM runs WHERE status = 'running'").fetchall()
        assert charges == [] and running == []


# -- case files ------------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 9)}]\n" for n in range(8))
WIDE = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 10)}]\n" for n in range(5))

#: Case files that are not YAML text, or are YAML a reader must refuse: (id, bytes or text).
RAW_CASES: list[tuple[str, bytes | str, str | None]] = [
    ("alias-bomb", BOMB, "alias"),
    ("alias-expansion", WIDE, "alias"),
    ("binary-random", bytes(range(256)) * 8, "binary"),
    ("binary-nul", b"case_id: A\x00B\n", "binary"),
    ("gzip", b"\x1f\x8b\x08\x00" + bytes(100), "binary"),
    ("latin-1", "patient: {name: 'M\xfcller'}\n".encode("latin-1"), "utf-8"),
    ("utf-16", "case_id: X\n".encode("utf-16"), None),
    ("empty", b"", "mapping"),
    ("only-comment", b"# nothing\n", "mapping"),
    ("a-list", b"- a\n- b\n", "mapping"),
    ("a-scalar", b"just text\n", "mapping"),
    ("unclosed-bracket", b"models: [a, b\n", "not valid yaml"),
    ("tab-indent", b"patient:\n\tname: X\n", "not valid yaml"),
    ("bad-indent", b"a:\n  b: 1\n c: 2\n", "not valid yaml"),
    ("duplicate-key", b"case_id: A\ncase_id: B\n", "twice"),
    ("python-tag", b"case_id: !!python/object/apply:os.system [echo hi]\n", "not valid yaml"),
    ("deep-nesting", b"[" * 3000 + b"]" * 3000, "nested"),
    ("unknown-tag", b"case_id: !secret x\n", "not valid yaml"),
    ("huge-file", b"# " + b"x" * (1 << 20) + b"\n", "larger than"),
    ("nul-escape", b'case_id: "A\\0B"\n', "control character"),
]


def _parent(case: dict, path: str) -> tuple[dict | list, str | int]:
    """The container holding the dotted ``path`` of a case, and the last key (an index in lists)."""
    *keys, last = path.split(".")
    target: dict | list = case
    for key in keys:
        target = target[int(key)] if isinstance(target, list) else target[key]
    return target, int(last) if isinstance(target, list) else last


def _set(path: str, value) -> Callable[[dict], None]:
    def change(case: dict) -> None:
        target, key = _parent(case, path)
        target[key] = value  # type: ignore[index]
    return change


def _drop(path: str) -> Callable[[dict], None]:
    def change(case: dict) -> None:
        target, key = _parent(case, path)
        del target[key]  # type: ignore[arg-type]
    return change


LONG = "x" * 5000
#: Valid YAML with a bad value: (id, change, text the message must contain).
FIELD_CASES: list[tuple[str, Callable[[dict], None], str]] = [
    ("nul-in-name", _set("patient.name", "DOE\x00^JANE"), "control character"),
    ("ansi-in-operator", _set("operator", "\x1b[31mTECH\x1b[0m"), "control character"),
    ("ansi-in-manual-operator", _set("models.0.manual_steps.0.operator", "\x1b]0;pwned\x07"), "control character"),
    ("bell-in-recipient", _set("models.0.recipient", "surgeon\x07"), "control character"),
    ("backspace-in-summary", _set("indication.summary", "aneurysm\x08\x08"), "control character"),
    ("c1-control-in-facility", _set("encounter.facility", "Hospital\x85"), "control character"),
    ("del-in-payer", _set("encounter.payer", "medi\x7fcare"), "control character"),
    ("escape-in-note", _set("models.0.manual_steps.0.note", "\x1b[2J"), "control character"),
    ("nul-in-provider", _set("encounter.ordering_provider.name", "A\x00B"), "control character"),
    ("escape-in-series", _set("imaging.series", "\x1b[1mauto"), "control character"),
    ("long-name", _set("patient.name", LONG), "longer than"),
    ("long-summary", _set("indication.summary", LONG * 20), "longer than"),
    ("long-operator", _set("operator", LONG), "longer than"),
    ("long-recipient", _set("models.0.recipient", LONG), "longer than"),
    ("long-facility", _set("encounter.facility", LONG), "longer than"),
    ("long-note", _set("models.0.manual_steps.0.note", LONG), "longer than"),
    ("seed-1e308", _set("models.0.seeds_lps_mm", [[1e308, 0.0, 0.0]]), "out of range"),
    ("seed-minus-1e300", _set("models.0.seeds_lps_mm", [[0.0, -1e300, 0.0]]), "out of range"),
    ("seed-inf", _set("models.0.seeds_lps_mm", [[float("inf"), 0.0, 0.0]]), "not a finite"),
    ("seed-nan", _set("models.0.seeds_lps_mm", [[0.0, float("nan"), 0.0]]), "not a finite"),
    ("seed-401-digits", _set("models.0.seeds_lps_mm", [[10 ** 400, 0, 0]]), "401 digits"),
    ("seed-text", _set("models.0.seeds_lps_mm", [["left", 0, 0]]), "seeds_lps_mm"),
    ("seed-two-numbers", _set("models.0.seeds_lps_mm", [[1.0, 2.0]]), "seeds_lps_mm"),
    ("seed-four-numbers", _set("models.0.seeds_lps_mm", [[1.0, 2.0, 3.0, 4.0]]), "seeds_lps_mm"),
    ("seed-not-a-list", _set("models.0.seeds_lps_mm", "here"), "seeds_lps_mm"),
    ("no-seed", _set("models.0.seeds_lps_mm", []), "seed"),
    ("exclude-seed-inf", _set("models.0.exclude_seeds_lps_mm", [[float("-inf"), 0, 0]]), "not a finite"),
    ("seed-index-fraction", _set("models.0.seeds_index", [[1.5, 2, 3]]), "seeds_index"),
    ("minutes-negative", _set("models.0.manual_steps.0.minutes", -5), "minutes"),
    ("minutes-1e308", _set("models.0.manual_steps.0.minutes", 1e308), "out of range"),
    ("minutes-text", _set("models.0.manual_steps.0.minutes", "twenty"), "minutes"),
    ("step-unknown", _set("models.0.manual_steps.0.step", "coffee"), "step"),
    ("birth-date-month-13", _set("patient.birth_date", "1964-13-45"), "birth_date"),
    ("birth-date-feb-30", _set("patient.birth_date", "1964-02-30"), "birth_date"),
    ("birth-date-text", _set("patient.birth_date", "long ago"), "birth_date"),
    ("date-of-service-text", _set("encounter.date_of_service", "yesterday"), "date_of_service"),
    ("date-of-service-day-0", _set("encounter.date_of_service", "2026-01-00"), "date_of_service"),
    ("date-of-service-list", _set("encounter.date_of_service", [2026, 1, 15]), "date_of_service"),
    ("sex-x", _set("patient.sex", "X"), "sex"),
    ("sex-number", _set("patient.sex", 1), "sex"),
    ("empty-name", _set("patient.name", ""), "patient.name"),
    ("empty-patient-id", _set("patient.id", ""), "patient.id"),
    ("npi-short", _set("encounter.ordering_provider.npi", "12345"), "npi"),
    ("npi-letters", _set("encounter.rendering_provider.npi", "ABCDEFGHIJ"), "npi"),
    ("npi-number-too-long", _set("encounter.rendering_provider.npi", "123456789012"), "npi"),
    ("case-id-slash", _set("case_id", "../escape"), "case_id"),
    ("case-id-space", _set("case_id", "CASE 1"), "case_id"),
    ("case-id-empty", _set("case_id", ""), "case_id"),
    ("case-id-dot", _set("case_id", ".hidden"), "case_id"),
    ("case-id-65-chars", _set("case_id", "C" * 65), "case_id"),
    ("case-id-with-mrn", _set("case_id", "PH0001-aorta"), "case_id"),
    ("case-id-with-name", _set("case_id", "PHANTOM-1"), "case_id"),
    ("model-id-traversal", _set("models.0.id", "../../etc"), "model id"),
    ("model-id-empty", _set("models.0.id", ""), "model id"),
    ("model-id-duplicate", _set("models.1.id", "aorta-surgeon"), "unique"),
    ("models-empty", _set("models", []), "models"),
    ("models-missing", _drop("models"), "models"),
    ("models-a-mapping", _set("models", {"id": "x"}), "models"),
    ("patient-missing", _drop("patient"), "patient"),
    ("encounter-missing", _drop("encounter"), "encounter"),
    ("indication-missing", _drop("indication"), "indication"),
    ("icd10-empty", _set("indication.icd10", []), "icd10"),
    ("imaging-missing", _drop("imaging"), "imaging"),
    ("imaging-dicom-missing", _drop("imaging.dicom"), "give either dicom"),
    ("unknown-top-field", _set("patinet", {"name": "x"}), "patinet"),
    ("unknown-patient-field", _set("patient.ssn", "123-45-6789"), "ssn"),
    ("unknown-model-field", _set("models.0.seed_lps_mm", [[0, 0, 0]]), "seed_lps_mm"),
    ("unknown-preset", _set("models.0.preset", "no_such_preset"), "preset"),
    ("preset-traversal", _set("models.0.preset", "../../etc/passwd"), "preset"),
    ("unknown-printer", _set("printer", "no_such_printer"), "printer"),
    ("model-printer-unknown", _set("models.0.printer", "laser_cutter"), "printer"),
    ("purpose-unknown", _set("models.0.purpose", "fun"), "purpose"),
    ("kind-unknown", _set("models.0.kind", "statue"), "kind"),
    ("modifiers-text", _set("models.0.modifiers", "KX"), "modifiers"),
    ("payer-empty", _set("encounter.payer", ""), "payer"),
    ("facility-number-list", _set("encounter.facility", [1, 2]), "facility"),
]


def _write_case(tmp_path: Path, content: bytes | str | dict) -> Path:
    path = tmp_path / "case.yaml"
    if isinstance(content, dict):
        content = yaml.safe_dump(content, sort_keys=False, allow_unicode=False)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize("content, contains", [(c, m) for _, c, m in RAW_CASES], ids=[i for i, _, _ in RAW_CASES])
def test_unreadable_case_files(tmp_path, capsys, ledger, content, contains):
    started = time.perf_counter()
    code, err = _run(capsys, ["run", _write_case(tmp_path, content), "--out", tmp_path / "out"])
    _assert_clear_error(code, err, CONFIG, contains=contains)
    assert time.perf_counter() - started < 5.0
    _assert_nothing_left(tmp_path / "out", ledger)


@pytest.mark.parametrize("change, contains", [(c, m) for _, c, m in FIELD_CASES], ids=[i for i, _, _ in FIELD_CASES])
def test_bad_case_fields(tmp_path, capsys, ledger, base_case, change, contains):
    case = copy.deepcopy(base_case)
    change(case)
    code, err = _run(capsys, ["run", _write_case(tmp_path, case), "--out", tmp_path / "out"])
    _assert_clear_error(code, err, CONFIG, contains=contains)
    assert len(err) < 2000  # a 1e308 seed or a 100 000-character summary is not printed back
    assert "\x1b" not in err and "\x00" not in err
    _assert_nothing_left(tmp_path / "out", ledger)


@pytest.mark.parametrize("good, bad", [
    ("birth_date: 1964-03-01", "birth_date: 1964-13-45"),
    ("birth_date: 1964-03-01", "birth_date: 1963-02-29"),
    ("date_of_service: 2026-01-15", "date_of_service: 2026-02-30"),
    ("date_of_service: 2026-01-15", "date_of_service: 2026-01-15T25:00:00"),
], ids=["month-13", "not-a-leap-year", "february-30", "hour-25"])
def test_impossible_unquoted_dates_name_their_field(tmp_path, capsys, ledger, base_case, good, bad):
    """YAML reads an unquoted date itself: an impossible one must reach validation, not crash the reader."""
    text = yaml.safe_dump(base_case, sort_keys=False)
    assert good in text
    code, err = _run(capsys, ["run", _write_case(tmp_path, text.replace(good, bad)), "--out", tmp_path / "out"])
    _assert_clear_error(code, err, CONFIG, contains=bad.split(":")[0])
    _assert_nothing_left(tmp_path / "out", ledger)


def test_alias_bomb_is_refused_in_under_a_second(tmp_path):
    from pipeline.config import read_yaml
    from pipeline.errors import ConfigError

    for text in (BOMB, WIDE):
        path = _write_case(tmp_path, text)
        started = time.perf_counter()
        with pytest.raises(ConfigError, match="alias bomb"):
            read_yaml(path)
        assert time.perf_counter() - started < 1.0


def test_a_folder_given_as_the_yaml_says_it_is_a_folder(tmp_path):
    from pipeline.config import read_yaml
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="is a folder, not a file"):
        read_yaml(tmp_path, "case file")


@pytest.mark.parametrize("text, contains", [
    (BOMB, "alias"), ("\x00\x01", "binary"), ("cases: [a.yaml\n", "not valid yaml"), ("a: 1\na: 2\n", "twice"),
], ids=["alias-bomb", "binary", "syntax", "duplicate-key"])
def test_bad_batch_manifests(tmp_path, capsys, ledger, text, contains):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    code, err = _run(capsys, ["batch", manifest, "--out", tmp_path / "out"])
    _assert_clear_error(code, err, CONFIG, contains=contains)


@pytest.mark.parametrize("content, contains", [
    (bytes(range(256)) * 4, "binary"), ("case\nM\xfcller.yaml\n".encode("latin-1"), "utf-8"),
    (b"case\n\x1b[31mx.yaml\n", "control character"), (b"case\n" + b"a" * (2 << 20), "larger than"),
], ids=["binary", "latin-1", "ansi", "huge"])
def test_bad_csv_manifests(tmp_path, capsys, ledger, content, contains):
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(content)
    code, err = _run(capsys, ["batch", manifest, "--out", tmp_path / "out"])
    _assert_clear_error(code, err, CONFIG, contains=contains)


@pytest.mark.parametrize("text, contains", [
    (BOMB, "alias"), ("name: x\nthreshold: {reason: \"a\\e[31m\"}\n", "control character"),
    ("name: [unclosed\n", "not valid yaml"),
], ids=["alias-bomb", "ansi", "syntax"])
def test_bad_preset_files(tmp_path, capsys, cta, text, contains):
    preset = tmp_path / "bad_preset.yaml"
    preset.write_text(text)
    code, err = _run(capsys, ["segment", cta, "--preset", preset, "--seed", "-8", "-22", "25",
                              "--out", tmp_path / "mask.nii.gz"])
    _assert_clear_error(code, err, CONFIG, contains=contains)
    assert not (tmp_path / "mask.nii.gz").exists()


# -- images and series -----------------------------------------------------------------------------

def _keep_slices(cta: Path, tmp_path: Path, keep: Callable[[int], bool]) -> Path:
    paths = sorted(cta.glob("IM*"), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True)
                                                         .ImagePositionPatient[2]))
    folder = tmp_path / "series"
    folder.mkdir()
    for index, path in enumerate(paths):
        if keep(index):
            shutil.copy(path, folder / path.name)
    return folder


def _edit_slices(cta: Path, tmp_path: Path, edit: Callable[[pydicom.Dataset, int], None]) -> Path:
    folder = tmp_path / "edited"
    folder.mkdir()
    for index, path in enumerate(sorted(cta.glob("IM*"))):
        ds = pydicom.dcmread(path)
        edit(ds, index)
        ds.save_as(folder / path.name)
    return folder


def _truncate_one(cta: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "truncated"
    shutil.copytree(cta, folder)
    victim = sorted(folder.glob("IM*"))[3]
    victim.write_bytes(victim.read_bytes()[:2000])
    return folder


def _set_attr(keyword: str, value) -> Callable[[pydicom.Dataset, int], None]:
    return lambda ds, index: setattr(ds, keyword, value)


SERIES_CASES: list[tuple[str, Callable[[Path, Path], Path], int, str]] = [
    ("every-4th-slice", lambda c, t: _keep_slices(c, t, lambda i: i % 4 == 0), GEOMETRY, "not a volume"),
    ("two-slices-far-apart", lambda c, t: _keep_slices(c, t, lambda i: i in (5, 20)), GEOMETRY, "only 2 slices"),
    ("one-slice-missing", lambda c, t: _keep_slices(c, t, lambda i: i != 20), GEOMETRY, "gap of"),
    ("three-slices-missing", lambda c, t: _keep_slices(c, t, lambda i: not 20 <= i < 23), GEOMETRY, "gap of"),
    ("single-slice", lambda c, t: _keep_slices(c, t, lambda i: i == 10), SELECTION, "single slice"),
    ("truncated-file", _truncate_one, DICOM, "truncated"),
    ("not-ct", lambda c, t: _edit_slices(c, t, _set_attr("Modality", "MR")), SELECTION, "not ct"),
    ("mixed-sizes", lambda c, t: _edit_slices(c, t, lambda ds, i: setattr(ds, "PixelSpacing", ["4", "4"] if i % 2
                                                                           else ["5", "5"])), GEOMETRY, "spacing"),
    ("mixed-orientations", lambda c, t: _edit_slices(c, t, lambda ds, i: setattr(
        ds, "ImageOrientationPatient", ["1", "0", "0", "0", "1", "0"] if i % 2 else ["0", "1", "0", "0", "0", "1"])),
     SELECTION, "orientation"),
    ("duplicate-positions-differ", lambda c, t: _edit_slices(c, t, lambda ds, i: setattr(
        ds, "ImagePositionPatient", [0, 0, i // 2])), GEOMETRY, "position"),
    ("localizer", lambda c, t: _edit_slices(c, t, _set_attr("ImageType", ["ORIGINAL", "PRIMARY", "LOCALIZER"])),
     SELECTION, "localizer"),
    ("no-position", lambda c, t: _edit_slices(c, t, lambda ds, i: delattr(ds, "ImagePositionPatient")),
     GEOMETRY, "position"),
]


@pytest.mark.parametrize("make, expected, contains", [(m, e, c) for _, m, e, c in SERIES_CASES],
                         ids=[i for i, _, _, _ in SERIES_CASES])
def test_series_that_are_not_volumes(tmp_path, capsys, cta, make, expected, contains):
    folder = make(cta, tmp_path)
    code, err = _run(capsys, ["convert", folder, tmp_path / "volume.nii.gz"])
    _assert_clear_error(code, err, expected, contains=contains)
    assert not (tmp_path / "volume.nii.gz").exists()


def test_a_sparse_series_is_never_modelled_or_billed(tmp_path, capsys, ledger, base_case, cta):
    case = copy.deepcopy(base_case)
    case["imaging"]["dicom"] = str(_keep_slices(cta, tmp_path, lambda i: i % 4 == 0))
    out = tmp_path / "out"
    code, err = _run(capsys, ["run", _write_case(tmp_path, case), "--out", out])
    _assert_clear_error(code, err, GEOMETRY, contains="not a volume")
    _assert_nothing_left(out, ledger)
    log = (out / case["case_id"] / "run.log").read_text().splitlines()
    assert "failed:" in log[-1] and "not a volume" in log[-1]  # the log ends with why


COVERAGE = 21


def _preset_coverage(name: str) -> float:
    return float(yaml.safe_load((REPO / "configs" / "presets" / f"{name}.yaml").read_text())["coverage_mm"])


def test_a_series_too_short_for_the_preset_is_refused_before_any_work(tmp_path, capsys, ledger, base_case, cta):
    step = float(pydicom.dcmread(next(cta.glob("IM*")), stop_before_pixels=True).SliceThickness)
    needed = _preset_coverage(base_case["models"][0]["preset"])
    slices = int(needed // step) - 1  # contiguous slices around the middle, shorter than the preset needs
    assert slices * step < needed
    middle = len(list(cta.glob("IM*"))) // 2
    case = copy.deepcopy(base_case)
    case["imaging"]["dicom"] = str(_keep_slices(cta, tmp_path, lambda i: middle <= i < middle + slices))
    out = tmp_path / "out"
    code, err = _run(capsys, ["run", _write_case(tmp_path, case), "--out", out])
    _assert_clear_error(code, err, COVERAGE, contains=f"covers {slices * step:.1f} mm in {slices} slice(s)")
    assert f"needs at least {needed:g} mm" in err
    _assert_nothing_left(out, ledger)
    assert "failed:" in (out / case["case_id"] / "run.log").read_text().splitlines()[-1]
    seed = [str(v) for v in base_case["models"][0]["seeds_lps_mm"][0]]
    code, err = _run(capsys, ["segment", case["imaging"]["dicom"], "--preset", "aorta_cta", "--seed", *seed,
                              "--out", tmp_path / "mask.nii.gz"])
    _assert_clear_error(code, err, COVERAGE, contains="needs at least")
    assert not (tmp_path / "mask.nii.gz").exists()


def test_the_coverage_check_of_a_case_takes_its_preset_overrides(tmp_path, base_case, cta):
    """A model whose case file lowers ``coverage_mm`` is checked against that figure, as
    ``anatomodel segment --set coverage_mm=...`` is."""
    from pipeline.case import check_case_coverage, load_case
    from pipeline.errors import CoverageError
    from pipeline.load import load_series

    step = float(pydicom.dcmread(next(cta.glob("IM*")), stop_before_pixels=True).SliceThickness)
    needed = _preset_coverage(base_case["models"][0]["preset"])
    slices = int(needed // step) - 1
    volume, report = load_series(_keep_slices(cta, tmp_path, lambda i: 5 <= i < 5 + slices))
    case = copy.deepcopy(base_case)
    case["models"] = case["models"][:1]
    with pytest.raises(CoverageError):
        check_case_coverage(load_case(_write_case(tmp_path, case)), volume, report)
    case["models"][0]["segment"] = {"overrides": {"coverage_mm": slices * step * 0.9}}
    check_case_coverage(load_case(_write_case(tmp_path, case)), volume, report)
    assert report.coverage_needed_mm[case["models"][0]["preset"]] == pytest.approx(slices * step * 0.9)


SEGMENTATION = 8


@pytest.mark.parametrize("change, contains", [
    (lambda model, extent: model.update(seeds_lps_mm=[[0.0, 0.0, extent + 50.0]]), "lies outside the volume"),
    (lambda model, extent: model.update(exclude_seeds_lps_mm=[[0.0, 0.0, -extent - 50.0]]), "lies outside the volume"),
    (lambda model, extent: model.update(exclude_seeds_lps_mm=list(model["seeds_lps_mm"])), "apart"),
])
def test_a_bad_seed_of_the_last_model_stops_the_run_before_the_first_model(tmp_path, capsys, ledger, base_case, cta,
                                                                            change, contains):
    """Seeds are checked for every model once the series is loaded, not when its turn comes: a
    wrong seed of the second model must not leave the first one made, published and charged."""
    positions = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in cta.glob("IM*")]
    extent = max(abs(min(positions)), abs(max(positions)))  # beyond it along z: outside the volume
    case = copy.deepcopy(base_case)
    assert len(case["models"]) > 1
    change(case["models"][-1], extent)
    out = tmp_path / "out"
    code, err = _run(capsys, ["run", _write_case(tmp_path, case), "--out", out])
    _assert_clear_error(code, err, SEGMENTATION, contains=contains)
    assert f"model {case['models'][-1]['id']}:" in err
    assert not (out / case["case_id"] / case["models"][0]["id"]).exists()
    _assert_nothing_left(out, ledger)
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'model.published'").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM models WHERE status = 'current'").fetchone() == (0,)


def test_a_series_just_long_enough_passes_the_coverage_check(cta, tmp_path):
    """The figure is a floor, not a wish: the same cropped stack one slab longer is accepted."""
    from pipeline.load import load_series
    from pipeline.presets import check_coverage, load_preset, series_extent_mm

    step = float(pydicom.dcmread(next(cta.glob("IM*")), stop_before_pixels=True).SliceThickness)
    preset = load_preset("aorta_cta")
    slices = int(-(-preset.coverage_mm // step))  # the fewest slices that cover it
    volume, _ = load_series(_keep_slices(cta, tmp_path, lambda i: 10 <= i < 10 + slices))
    assert series_extent_mm(volume.geometry) == pytest.approx(slices * step)
    check_coverage(preset, series_extent_mm(volume.geometry), volume.geometry.shape[0])


def test_presets_state_their_coverage_with_a_reason():
    from pipeline.presets import load_preset

    for path in sorted((REPO / "configs" / "presets").glob("*.yaml")):
        preset = load_preset(path.stem)
        assert preset.coverage_mm is not None and len(preset.coverage_reason) > 40, path.name


@pytest.mark.parametrize("phantom, args, expected, contains", [
    ("dicom2nifti_failing/sliceincrement/001", ["--series", "2"], GEOMETRY, "gap of 10.00 mm"),
    ("dicom2nifti_failing/sliceincrement/002", [], GEOMETRY, "gap of 1.50 mm"),
    ("dicom2nifti_failing/notavolume/001", [], SELECTION, "not a volume"),
], ids=["gap", "tilt-and-gap", "same-position"])
def test_public_failing_series(tmp_path, capsys, phantoms_dir, phantom, args, expected, contains):
    code, err = _run(capsys, ["convert", phantoms_dir / phantom, tmp_path / "v.nii.gz", *args])
    _assert_clear_error(code, err, expected, contains=contains)


IMAGE_CASES: list[tuple[str, list[str], int, str]] = [
    ("missing-source", ["convert", "{tmp}/nowhere", "{tmp}/v.nii.gz"], DICOM, "no such file"),
    ("empty-folder", ["convert", "{tmp}/empty", "{tmp}/v.nii.gz"], SELECTION, "no dicom"),
    ("text-files-only", ["convert", "{tmp}/text", "{tmp}/v.nii.gz"], SELECTION, "no dicom"),
    ("garbage-nifti", ["convert", "{tmp}/garbage.nii.gz", "{tmp}/v.nii.gz"], DICOM, "cannot be read"),
    ("series-not-there", ["convert", "{cta}", "{tmp}/v.nii.gz", "--series", "999"], SELECTION, "999"),
    ("series-uid-not-there", ["convert", "{cta}", "{tmp}/v.nii.gz", "--series", "1.2.3.4"], SELECTION, "1.2.3.4"),
    ("output-suffix", ["convert", "{cta}", "{tmp}/v.txt"], USAGE, None),
    ("segment-garbage", ["segment", "{tmp}/garbage.nii.gz", "--preset", "aorta_cta", "--seed", "0", "0", "0",
                         "--out", "{tmp}/m.nii.gz"], DICOM, "cannot be read"),
    ("seed-outside", ["segment", "{cta}", "--preset", "aorta_cta", "--seed", "500", "0", "0",
                      "--out", "{tmp}/m.nii.gz"], SEGMENT, "outside the volume"),
    ("seed-1e308-cli", ["segment", "{cta}", "--preset", "aorta_cta", "--seed", "1e308", "0", "0",
                        "--out", "{tmp}/m.nii.gz"], SEGMENT, "1e+308"),
    ("seed-nan-cli", ["segment", "{cta}", "--preset", "aorta_cta", "--seed", "nan", "0", "0",
                      "--out", "{tmp}/m.nii.gz"], SEGMENT, "finite"),
    ("unknown-preset-cli", ["segment", "{cta}", "--preset", "nope", "--seed", "0", "0", "0",
                            "--out", "{tmp}/m.nii.gz"], CONFIG, "unknown preset"),
    ("mesh-garbage", ["mesh", "{tmp}/garbage.nii.gz", "--out", "{tmp}/m.stl"], DICOM, "cannot be read"),
    ("prepare-garbage-stl", ["prepare", "{tmp}/garbage.stl", "--printer", "formlabs_form3b", "--out", "{tmp}/p"],
     MESH, "no triangles"),
    ("inspect-missing", ["inspect", "{tmp}/nowhere"], DICOM, "no such file"),
    ("batch-folder", ["batch", "{tmp}/empty"], CONFIG, None),
    ("run-missing-case", ["run", "{tmp}/nowhere.yaml", "--out", "{tmp}/out"], CONFIG, "not found"),
]


@pytest.fixture()
def junk(tmp_path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not an image\n")
    (tmp_path / "garbage.nii.gz").write_bytes(os.urandom(4000))
    (tmp_path / "garbage.stl").write_bytes(os.urandom(4000))
    return tmp_path


@pytest.mark.parametrize("args, expected, contains", [(a, e, c) for _, a, e, c in IMAGE_CASES],
                         ids=[i for i, _, _, _ in IMAGE_CASES])
def test_bad_images_and_arguments(junk, capsys, cta, ledger, args, expected, contains):
    argv = [a.format(tmp=junk, cta=cta) for a in args]
    code, err = _run(capsys, argv)
    if expected == USAGE:
        assert code == USAGE and "Traceback" not in err
        return
    _assert_clear_error(code, err, expected, contains=contains)
    assert not (junk / "m.nii.gz").exists() and not (junk / "m.stl").exists() and not (junk / "v.nii.gz").exists()


# -- the environment -------------------------------------------------------------------------------

def test_out_naming_a_file(tmp_path, capsys, ledger, base_case):
    (tmp_path / "out").write_text("a file")
    code, err = _run(capsys, ["run", _write_case(tmp_path, base_case), "--out", tmp_path / "out"])
    _assert_clear_error(code, err, ENVIRONMENT, contains=str(tmp_path / "out"))
    _assert_nothing_left(tmp_path / "nothing", ledger)
    assert (tmp_path / "out").read_text() == "a file"


def test_out_below_a_file(tmp_path, capsys, ledger, base_case):
    (tmp_path / "file").write_text("a file")
    code, err = _run(capsys, ["run", _write_case(tmp_path, base_case), "--out", tmp_path / "file" / "out"])
    _assert_clear_error(code, err, ENVIRONMENT, contains="is a file")
    _assert_nothing_left(tmp_path / "nothing", ledger)


@pytest.mark.parametrize("where", ["folder", "file-below-a-file"])
def test_log_file_that_cannot_be_written(tmp_path, capsys, cta, where):
    (tmp_path / "file").write_text("x")
    log = tmp_path if where == "folder" else tmp_path / "file" / "run.log"
    code, err = _run(capsys, ["--log-file", log, "inspect", cta])
    _assert_clear_error(code, err, ENVIRONMENT, contains="cannot")


def test_read_only_output_folder(tmp_path, capsys, ledger, base_case, tmpfs):
    out = tmpfs("ro,size=1m")
    code, err = _run(capsys, ["run", _write_case(tmp_path, base_case), "--out", out])
    _assert_clear_error(code, err, ENVIRONMENT, contains="read-only")
    _assert_nothing_left(out, ledger)


def test_read_only_log_file(tmp_path, capsys, cta, tmpfs):
    folder = tmpfs("ro,size=1m")
    code, err = _run(capsys, ["--log-file", folder / "run.log", "inspect", cta])
    _assert_clear_error(code, err, ENVIRONMENT, contains="read-only")


@pytest.mark.parametrize("command", ["segment", "convert", "mesh"])
def test_outputs_to_a_read_only_folder_fail_before_the_work(tmp_path, capsys, cta, tmpfs, command):
    folder = tmpfs("ro,size=1m")
    args = {"segment": ["segment", cta, "--preset", "aorta_cta", "--seed", "-8", "-22", "25",
                        "--out", folder / "m.nii.gz"],
            "convert": ["convert", cta, folder / "v.nii.gz"],
            "mesh": ["mesh", tmp_path / "never-read.nii.gz", "--out", folder / "m.stl"]}[command]
    started = time.perf_counter()
    code, err = _run(capsys, args)
    _assert_clear_error(code, err, ENVIRONMENT, contains="read-only")
    assert "loaded series" not in err  # refused before loading anything
    assert time.perf_counter() - started < 5.0


def test_a_disk_too_full_for_the_run_is_refused_before_the_first_model(tmp_path, capsys, ledger, base_case, tmpfs):
    out = tmpfs("size=48k")  # the pre-flight estimate (mask, model, packet per model) does not fit
    code, err = _run(capsys, ["run", _write_case(tmp_path, base_case), "--out", out])
    _assert_clear_error(code, err, ENVIRONMENT, contains="MB free, the run needs about")
    _assert_nothing_left(out, ledger)
    with sqlite3.connect(ledger) as db:
        assert [r[0] for r in db.execute("SELECT status FROM runs")] == ["failed"]


def test_file_size_limit_during_convert(tmp_path, cta):
    """RLIMIT_FSIZE (no root needed): the write fails with EFBIG, reported as exit 15 on one line."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "pipeline", "convert", str(cta), str(tmp_path / "v.nii")],
                            capture_output=True, text=True, preexec_fn=limit, env=env, timeout=300)
    _assert_clear_error(result.returncode, result.stderr, ENVIRONMENT, contains="incomplete")
    assert not list(tmp_path.iterdir())  # neither the image nor its partial file is left


@pytest.mark.parametrize("stop, code, said", [
    (signal.SIGTERM, 128 + signal.SIGTERM, "stopped by SIGTERM"), (signal.SIGINT, 130, "KeyboardInterrupt"),
], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_run_marks_itself_failed_and_removes_its_staging(tmp_path, base_case, cta, stop, code, said):
    case = copy.deepcopy(base_case)
    case["models"] = case["models"][:1]
    write_dicom_series(make_phantom(shape_scale=0.5), tmp_path / "cta", with_truth=False)
    case["imaging"]["dicom"] = str(tmp_path / "cta")
    out, ledger = tmp_path / "out", tmp_path / "ledger.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ANATOMODEL_LEDGER": str(ledger)}
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(_write_case(tmp_path, case)),
                                "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob(f"{case['case_id']}/.*staging*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "Traceback" not in err and (stop != signal.SIGTERM or said in err)
    assert not [p for p in (out / case["case_id"]).iterdir() if p.name.startswith(".")]
    with sqlite3.connect(ledger) as db:
        assert [r[0] for r in db.execute("SELECT status FROM runs")] == ["failed"]
        assert db.execute("SELECT COUNT(*) FROM models WHERE status = 'pending'").fetchone()[0] == 0
    log = (out / case["case_id"] / "run.log").read_text().splitlines()
    assert f"failed: {said}" in log[-1]


# -- text given on the command line, and stored text printed back ----------------------------------

ESC_RED, BELL, TITLE = "\x1b[31m", "\x07", "\x1b]0;owned\x07"


@pytest.mark.parametrize("args", [
    ["ledger", "void", "CASE-1", "m", "--reason", f"typo{ESC_RED}"],
    ["ledger", "void", "CASE-1", "m", "--reason", "ok", "--operator", f"{ESC_RED}EVE"],
    ["ledger", "unvoid", "CASE-1", "m", "--reason", f"{TITLE}"],
    ["approve", "CASE-1", "m", "--by", f"DR{BELL}", "--role", "radiologist", "--npi", "1234567893"],
    ["approve", "CASE-1", "m", "--by", "DR", "--role", f"radio{ESC_RED}logist", "--npi", "1234567893"],
    ["approve", "CASE-1", "m", "--by", "DR", "--role", "radiologist", "--npi", "1234567893", "--note", "\x1b[2J"],
    ["release", "CASE-1", "m", "identity.override", "--by", "DR", "--role", "r", "--reason", f"x{BELL}"],
    ["discontinue", "CASE-1", "m", "--by", "\x1b[1mA", "--role", "r", "--reason", "stopped"],
    ["run", "case.yaml", "--operator", f"OP{ESC_RED}"],
    ["run", "case.yaml", "--identity-override", f"same{BELL} patient"],
], ids=["void-reason", "void-operator", "unvoid-reason", "approve-by", "approve-role", "approve-note",
        "release-reason", "discontinue-by", "run-operator", "run-override"])
def test_control_characters_in_any_text_argument_are_refused(tmp_path, capsys, ledger, args):
    code, err = _run(capsys, [*args, "--ledger", str(ledger)] if args[0] != "run" else args)
    _assert_clear_error(code, err, CONFIG, contains="control character")
    assert not ledger.exists()  # refused before the ledger is opened


def test_a_control_character_in_the_operator_variable_is_refused(monkeypatch):
    from pipeline.errors import ConfigError
    from pipeline.ledger.process import operator_name

    monkeypatch.setenv("ANATOMODEL_OPERATOR", f"{ESC_RED}EVE")
    with pytest.raises(ConfigError, match="ANATOMODEL_OPERATOR contains the control character U[+]001B"):
        operator_name()
    monkeypatch.setenv("ANATOMODEL_OPERATOR", "EVE^ADAMS")
    assert operator_name() == "EVE^ADAMS"


def test_ledger_show_prints_stored_control_characters_escaped(tmp_path, capsys, ledger, monkeypatch):
    """A ledger written by another program (or an older version) may hold escapes: shown visibly."""
    import datetime as dt

    from pipeline.ledger import Ledger, core

    monkeypatch.setattr(core, "_refuse_control_text", lambda **texts: None)  # as an older version wrote
    with Ledger(ledger) as book:
        with book.start_run(case_id="ESC-1", patient_id="P1", operator=f"{ESC_RED}EVE{BELL}",
                            date_of_service=dt.date(2026, 1, 15), parameters={}) as run:
            run.audit("note", reason=f"see {TITLE}")
    for command in (["ledger", "show", "ESC-1"], ["ledger", "list"]):
        assert main([*command, "--ledger", str(ledger)]) == 0
        out = capsys.readouterr().out
        assert not [c for c in out if ord(c) < 0x20 and c not in "\n"], repr(out)
    assert main(["ledger", "show", "ESC-1", "--ledger", str(ledger)]) == 0
    out = capsys.readouterr().out
    assert "\\x1b[31mEVE\\x07" in out and "\\x1b]0;owned\\x07" in out.replace("\\u001b", "\\x1b").replace("\\u0007", "\\x07")
