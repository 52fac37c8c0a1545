"""Loaded geometry against the DICOM definition itself, on the real phantom scans.

A raw voxel at column i, row j of a slice lies at ImagePositionPatient + i * PixelSpacing[1] *
(row cosines) + j * PixelSpacing[0] * (column cosines), whatever the gantry tilt. We sample raw
voxels inside the head, place them so, and read the loaded volume there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.geometry import read_volume
from pipeline.load import PROVENANCE_KEYS, load_series

SAMPLES = 4000


def raw_slices(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.name != "DIRFILE"]


def sample_raw_voxels(folder: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random voxels above -500 HU (inside the head): their LPS positions (mm) and stored HU."""
    rng = np.random.default_rng(seed)
    slices = raw_slices(folder)
    points, values = [], []
    for ds in slices:
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        rows, columns = np.nonzero(hu > -500)
        if rows.size == 0:
            continue
        pick = rng.choice(rows.size, size=min(SAMPLES // len(slices) + 1, rows.size), replace=False)
        j, i = rows[pick], columns[pick]
        position = np.asarray(ds.ImagePositionPatient, dtype=float)
        cosines = np.asarray(ds.ImageOrientationPatient, dtype=float)
        row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
        lps = position + np.outer(i * column_spacing, cosines[:3]) + np.outer(j * row_spacing, cosines[3:])
        points.append(lps)
        values.append(hu[j, i])
    return np.concatenate(points), np.concatenate(values)


def sampling_errors(volume, folder: Path) -> np.ndarray:
    points, values = sample_raw_voxels(folder)
    return np.abs(volume.hu_at_lps(points).astype(float) - values)


@pytest.mark.parametrize(
    ("folder", "tilt", "median_max", "within_100_min"),
    [
        ("Philips/S21610/S2010", -18.5, 5, 0.90),
        ("Philips/S21610/S3010", 16.5, 5, 0.90),
        ("GE", 18.5, 10, 0.85),
    ],
)
def test_tilted_series_match_the_dicom_geometry(phantoms_dir, folder, tilt, median_max, within_100_min):
    source = phantoms_dir / "dcm_qa_ct" / "series" / folder
    volume, report = load_series(source)
    errors = sampling_errors(volume, source)
    assert np.median(errors) <= median_max
    assert np.mean(errors <= 100) >= within_100_min
    assert report.tilt_corrected and report.gantry_tilt_header_deg == tilt
    assert abs(report.gantry_tilt_geometry_deg) == pytest.approx(abs(tilt), abs=0.05)
    # the largest in-plane shift is the stack's span along the normal times tan(tilt)
    span = report.coverage_mm
    assert report.tilt_max_shift_mm == pytest.approx(span * np.tan(np.radians(abs(tilt))), rel=0.02)
    assert f"up to {report.tilt_max_shift_mm:.1f} mm" in report.tilt_correction
    assert volume.array.dtype == np.int16
    direction = volume.geometry.direction_matrix
    assert np.allclose(direction.T @ direction, np.eye(3), atol=1e-6)


def test_uneven_ge_series_resampled_to_uniform_spacing(phantoms_dir):
    source = phantoms_dir / "dcm_qa_ct" / "series" / "GE"
    volume, report = load_series(source)
    assert report.uneven_spacing
    assert report.spacing_between_slices_min_mm == pytest.approx(1.08, abs=0.01)
    assert report.spacing_between_slices_max_mm == pytest.approx(6.99, abs=0.01)
    assert "linear interpolation" in report.resampling
    # The uniform grid spans the slices' extent along the normal.
    slices = raw_slices(source)
    normal = volume.geometry.slice_normal
    along = sorted(float(np.dot(ds.ImagePositionPatient, normal)) for ds in slices)
    extent = (volume.geometry.shape[0] - 1) * volume.geometry.spacing[0]
    assert along[-1] - along[0] - volume.geometry.spacing[0] < extent <= along[-1] - along[0] + 1e-6
    # the report's figures: the smallest step between the slices as written, at least half the median
    steps = np.diff(along)
    steps = steps[steps > 1e-3]
    assert report.resampled_spacing_mm == pytest.approx(max(steps.min(), 0.5 * np.median(steps)), abs=1e-3)
    assert report.resampled_slices == volume.geometry.shape[0]


def test_our_sampler_agrees_with_dcm2niix_where_it_is_right(phantoms_dir):
    """The check itself is sound: dcm2niix's correct -18.5 degree volume passes it too."""
    reference = read_volume(phantoms_dir / "dcm_qa_ct" / "reference_dcm2niix" / "Philips_S21610_S2010_Tilt_1.nii.gz")
    errors = sampling_errors(reference, phantoms_dir / "dcm_qa_ct" / "series" / "Philips" / "S21610" / "S2010")
    assert np.median(errors) <= 5


def test_untilted_1mm_series_is_exactly_the_stored_hu(philips_dir):
    source = philips_dir / "S21570" / "S2020"
    volume, report = load_series(philips_dir, "auto")
    slices = raw_slices(source)
    normal = np.cross(*np.reshape(np.asarray(slices[0].ImageOrientationPatient, dtype=float), (2, 3)))
    slices.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
    assert volume.array.shape == (len(slices), 512, 512)
    for k, ds in enumerate(slices):
        stored = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert np.array_equal(volume.array[k], stored), f"slice {k}"
        assert np.allclose(volume.geometry.index_to_lps([k, 0, 0]), ds.ImagePositionPatient, atol=1e-4)
    assert volume.geometry.spacing == pytest.approx((1.0, 0.451171875, 0.451171875))
    assert not report.tilt_corrected and not report.uneven_spacing and report.resampling is None


def test_provenance(philips_dir):
    volume, report = load_series(philips_dir)
    provenance = volume.provenance
    assert set(PROVENANCE_KEYS) <= set(provenance)
    first = pydicom.dcmread(philips_dir / "S21570" / "S2020" / "I10", stop_before_pixels=True)
    assert provenance["series_instance_uid"] == first.SeriesInstanceUID
    assert provenance["study_instance_uid"] == first.StudyInstanceUID
    assert provenance["frame_of_reference_uid"] == first.FrameOfReferenceUID
    assert provenance["patient_name"] == str(first.PatientName)
    assert provenance["manufacturer"] == "Philips" and provenance["kvp"] == 120.0
    assert provenance["convolution_kernel"] == "UB" and provenance["number_of_slices"] == 140
    assert provenance["slice_thickness_mm"] == 1.0 and provenance["series_number"] == 202
    assert provenance["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    assert len(provenance["source_instances"]) == 140
    assert provenance["source_instances"][0]["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
    # SHA-256 over the source files' bytes in sorted path order, computed independently.
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((philips_dir / "S21570" / "S2020").glob("I*"), key=str):
        digest.update(path.read_bytes())
    assert provenance["source_sha256"] == digest.hexdigest() == report.source_sha256
    # The report is JSON and free of patient data.
    text = report.to_json()
    assert first.PatientID not in text and str(first.PatientName) not in text


def test_synthetic_phantom_round_trip(tmp_path):
    """The lead's CTA phantom, written as DICOM (files named out of order), loads back exactly."""
    from example_data.cta_phantom import make_phantom, series_identifiers, write_dicom_series

    phantom = make_phantom(shape_scale=0.3)
    write_dicom_series(phantom, tmp_path)
    volume, report = load_series(tmp_path)
    assert np.array_equal(volume.array, phantom.hu)
    assert volume.geometry.same_grid(phantom.geometry)
    for key, expected in series_identifiers(phantom).items():
        value = volume.provenance[key]
        if isinstance(expected, float):
            assert value == pytest.approx(expected, abs=1e-3), key
        elif isinstance(expected, list):
            assert value == pytest.approx(expected, abs=1e-3), key
        else:
            assert value == expected, key
    assert "contrast/angio" in report.selection
