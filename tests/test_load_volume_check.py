"""A series must be a volume: slice step against slice thickness, gaps, too few slices.

Degenerate series are made from the synthetic CTA (1 mm slices, 1 mm thick) by deleting files:
every 20th slice kept (95% of the anatomy unimaged), two slices 58 mm apart, one slice missing.
The real-world cases are the dicom2nifti failures in ``$ANATOMODEL_PHANTOMS``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.errors import GeometryError
from pipeline.load import load_series
from pipeline.load.stack import SPARSE_FACTOR


@pytest.fixture(scope="module")
def cta(tmp_path_factory) -> tuple[Path, list[Path]]:
    """The synthetic CTA written as DICOM; the file paths sorted by position along z."""
    folder = tmp_path_factory.mktemp("cta") / "full"
    paths = write_dicom_series(make_phantom(), folder, with_truth=False)
    paths.sort(key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    return folder, paths


def _subset(cta, keep: list[int], tmp_path: Path) -> Path:
    _, paths = cta
    folder = tmp_path / "subset"
    folder.mkdir()
    for index in keep:
        shutil.copy(paths[index], folder / paths[index].name)
    return folder


def _thickness_and_step(paths: list[Path]) -> tuple[float, float]:
    first, second = (pydicom.dcmread(p, stop_before_pixels=True) for p in paths[:2])
    return float(first.SliceThickness), float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])


def test_full_series_is_a_volume_and_the_report_says_why(cta):
    folder, paths = cta
    thickness, step = _thickness_and_step(paths)
    _, report = load_series(folder)
    assert report.slice_thickness_median_mm == pytest.approx(thickness)
    assert report.slice_step_median_mm == pytest.approx(step)
    assert report.imaged_fraction == pytest.approx(min(1.0, thickness / step))
    assert report.coverage_mm == pytest.approx(step * (len(paths) - 1))
    assert report.gaps == [] and not report.gaps_resampled
    assert report.volume_check.startswith(f"a volume: {len(paths)} slices")


def test_every_20th_slice_is_refused_before_any_model(cta, tmp_path):
    _, paths = cta
    thickness, step = _thickness_and_step(paths)
    keep = list(range(0, len(paths), 20))
    with pytest.raises(GeometryError) as caught:
        load_series(_subset(cta, keep, tmp_path))
    message = str(caught.value)
    imaged = 100 * thickness / (20 * step)
    assert f"every {20 * step:.2f} mm" in message and f"only {imaged:.0f}%" in message
    assert "\n" not in message


def test_resampling_does_not_rescue_a_sparse_series(cta, tmp_path):
    keep = list(range(0, len(cta[1]), 20))
    with pytest.raises(GeometryError, match="not a volume"):
        load_series(_subset(cta, keep, tmp_path), resample_gaps=True)


def test_two_slices_58_mm_apart_are_refused(cta, tmp_path):
    with pytest.raises(GeometryError) as caught:
        load_series(_subset(cta, [60, 118], tmp_path), resample_gaps=True)
    assert "only 2 slices (58.00 mm apart)" in str(caught.value)


def test_the_sparse_limit_is_the_stated_factor(cta, tmp_path):
    """A step of exactly SPARSE_FACTOR thicknesses loads; one more slice skipped does not."""
    _, paths = cta
    thickness, step = _thickness_and_step(paths)
    every = int(round(SPARSE_FACTOR * thickness / step))
    _, report = load_series(_subset(cta, list(range(0, 60, every)), tmp_path))
    assert report.imaged_fraction == pytest.approx(thickness / (every * step))
    (tmp_path / "more").mkdir()
    with pytest.raises(GeometryError, match="not a volume"):
        load_series(_subset(cta, list(range(0, 60, every + 1)), tmp_path / "more"))


def test_a_missing_slice_is_refused_unless_resampling_is_asked_for(cta, tmp_path):
    _, paths = cta
    _, step = _thickness_and_step(paths)
    keep = [k for k in range(40) if k != 20]
    folder = _subset(cta, keep, tmp_path)
    with pytest.raises(GeometryError, match=f"gap of {2 * step:.2f} mm"):
        load_series(folder)
    volume, report = load_series(folder, resample_gaps=True)
    assert report.gaps_resampled and len(report.gaps) == 1
    assert any("filled by interpolation as requested" in w for w in report.warnings)
    # Resampled onto the original grid: 40 planes, the missing one interpolated between its neighbours.
    assert volume.geometry.shape[0] == 40
    assert volume.geometry.spacing[0] == pytest.approx(step, abs=1e-3)
    (tmp_path / "complete").mkdir()
    full, _ = load_series(_subset(cta, list(range(40)), tmp_path / "complete"))
    expected = (full.array[19].astype(np.int32) + full.array[21]) / 2
    assert np.abs(volume.array[20] - expected).max() <= 1
    assert np.array_equal(volume.array[19], full.array[19]) and np.array_equal(volume.array[21], full.array[21])


@pytest.mark.parametrize("case, keep_gap, expected", [
    ("sliceincrement/001", True, 5),    # 4 slices at 5 mm, one missing: resampled to 5 planes
    ("sliceincrement/001", False, None),
])
def test_dicom2nifti_slice_increment(phantoms_dir, case, keep_gap, expected):
    folder = phantoms_dir / "dicom2nifti_failing" / case
    if not keep_gap:
        with pytest.raises(GeometryError, match="gap of 10.00 mm"):
            load_series(folder, series="2")
        return
    volume, report = load_series(folder, series="2", resample_gaps=True)
    assert volume.geometry.shape[0] == expected and report.gaps_resampled


def test_dicom2nifti_tilt_and_gap_together(phantoms_dir):
    folder = phantoms_dir / "dicom2nifti_failing" / "sliceincrement" / "002"
    with pytest.raises(GeometryError, match="gap of 1.50 mm"):
        load_series(folder)
    volume, report = load_series(folder, resample_gaps=True)
    assert report.tilt_corrected and report.gaps_resampled
    assert volume.geometry.shape[0] == 5  # 4 slices, one missing: 5 planes
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]
    assert not any("SliceThickness" in h for h in headers)  # so the step is not compared with one
    assert report.slice_thickness_median_mm is None and "none given" in report.volume_check


def test_dicom2nifti_not_a_volume(phantoms_dir):
    from pipeline.errors import AnatomodelError

    with pytest.raises(AnatomodelError, match="not a volume"):
        load_series(phantoms_dir / "dicom2nifti_failing" / "notavolume" / "001")
