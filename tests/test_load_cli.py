"""``anatomodel inspect`` / ``convert`` and bad input: clear one-line errors, exit codes, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.cli import main
from pipeline.errors import DicomError, GeometryError, SeriesSelectionError
from pipeline.geometry import read_volume, write_volume
from pipeline.load import load_series

SLICES = 10


def _instance_order(folder: Path) -> list[Path]:
    return sorted(folder.glob("I*"), key=lambda p: int(p.name[1:]))


@pytest.fixture()
def ten_slices(philips_dir, tmp_path) -> Path:
    """Ten adjacent 1 mm Philips slices (instances 1-10) in a fresh folder."""
    folder = tmp_path / "series"
    folder.mkdir()
    for path in _instance_order(philips_dir / "S21570" / "S2020")[:SLICES]:
        shutil.copy(path, folder / path.name)
    return folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def assert_clean_error(code: int, err: str, error_class: type, *phrases: str) -> None:
    assert code == error_class.exit_code, err
    assert "Traceback" not in err and err.startswith("error:")
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"


def test_inspect_prints_series_and_choice(philips_dir, capsys):
    code, out, _ = run(capsys, "inspect", philips_dir)
    assert code == 0
    text = " ".join(out.split())
    assert "auto chooses: series 202 'STD BRAIN 1MM, iDose' in S21570/S2020" in text
    assert text.count("volume: NO, localizer") == 2 and text.count("volume: NO, secondary capture") == 2
    assert "11 index file(s)" in text
    code, out, _ = run(capsys, "inspect", philips_dir, "--json")
    assert code == 0 and json.loads(out)["skipped_index_files"] == 11


def test_convert_writes_the_corrected_volume(phantoms_dir, tmp_path, capsys):
    source = phantoms_dir / "dcm_qa_ct" / "series" / "Philips" / "S21610" / "S3010"
    output, report = tmp_path / "tilted.nii.gz", tmp_path / "load.json"
    code, _, err = run(capsys, "convert", source, output, "--report", report)
    assert code == 0, err
    written = read_volume(output)
    loaded, _ = load_series(source)
    assert np.array_equal(written.array, loaded.array)
    assert written.geometry.same_grid(loaded.geometry)
    assert json.loads(report.read_text())["tilt_corrected"] is True
    # NIfTI, NRRD and MetaImage files are sources too.
    part = loaded.crop((slice(20, 26), slice(None), slice(None)))
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        image = write_volume(part, tmp_path / f"part{suffix}")
        again, again_report = load_series(image)
        assert np.array_equal(again.array, part.array) and again_report.source_format.startswith("image file")
        assert again.geometry.same_grid(part.geometry)
        assert again.provenance["source_sha256"] is not None and again.provenance["patient_name"] is None


def test_truncated_file(ten_slices, tmp_path, capsys):
    victim = ten_slices / "I50"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 100_000])
    code, _, err = run(capsys, "convert", ten_slices, tmp_path / "out.nii.gz")
    assert_clean_error(code, err, DicomError, "I50", "truncated", "re-export")
    assert not (tmp_path / "out.nii.gz").exists()
    # Cut inside its header instead: the slice is missing, and the message says which file.
    victim.write_bytes(data[:700])
    code, _, err = run(capsys, "convert", ten_slices, tmp_path / "out.nii.gz")
    assert_clean_error(code, err, GeometryError, "gap of 2.00 mm", "unreadable DICOM file(s): I50",
                       "incomplete or truncated header")


def test_non_dicom_file(ten_slices, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("scanned on the new CT\n")
    code, _, err = run(capsys, "convert", notes, tmp_path / "out.nii.gz")
    assert_clean_error(code, err, DicomError, "notes.txt", "not a DICOM file")
    # Inside a study folder the same file is skipped and counted.
    shutil.copy(notes, ten_slices / "notes.txt")
    code, out, _ = run(capsys, "inspect", ten_slices, "--json")
    assert code == 0 and json.loads(out)["skipped_non_dicom"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(notes, empty / "notes.txt")
    code, _, err = run(capsys, "inspect", empty)
    assert_clean_error(code, err, SeriesSelectionError, "no DICOM images found", "1 non-DICOM")


def test_folder_without_ct(philips_dir, tmp_path, capsys):
    for folder in ("S1000", "S4010"):
        shutil.copytree(philips_dir / "S21570" / folder, tmp_path / "study" / folder)
    code, _, err = run(capsys, "convert", tmp_path / "study", tmp_path / "out.nii.gz")
    assert_clean_error(code, err, SeriesSelectionError, "no ORIGINAL/PRIMARY axial CT volume", "localizer",
                       "secondary capture")


def test_missing_middle_slice(ten_slices, tmp_path, capsys):
    missing = pydicom.dcmread(ten_slices / "I50", stop_before_pixels=True)
    (ten_slices / "I50").unlink()
    code, _, err = run(capsys, "convert", ten_slices, tmp_path / "out.nii.gz")
    z_below, z_above = missing.ImagePositionPatient[2] - 1, missing.ImagePositionPatient[2] + 1
    assert_clean_error(code, err, GeometryError, "gap of 2.00 mm", f"{z_below:.2f}) mm (instance 4)",
                       f"{z_above:.2f}) mm (instance 6)")
    # An explicit limit names the same positions; a generous one lets the series load.
    with pytest.raises(GeometryError, match="limit of 1.50 mm"):
        load_series(ten_slices, max_gap_mm=1.5)
    volume, report = load_series(ten_slices, max_gap_mm=2.5)
    assert report.uneven_spacing and volume.geometry.shape[0] == SLICES


def test_two_matrix_sizes_in_one_series(ten_slices, tmp_path, capsys):
    ds = pydicom.dcmread(ten_slices / "I50")
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[::2, ::2]).tobytes()
    ds.Rows, ds.Columns = 256, 256
    ds.save_as(ten_slices / "I50")
    code, _, err = run(capsys, "convert", ten_slices, tmp_path / "out.nii.gz")
    assert_clean_error(code, err, GeometryError, "mixed matrix sizes (256x256, 512x512)")


def test_duplicate_positions(ten_slices):
    """A re-sent identical image is dropped; a different image at the same place is refused."""
    ds = pydicom.dcmread(ten_slices / "I50")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(ten_slices / "copy_of_I50")
    volume, report = load_series(ten_slices, "202")
    assert volume.geometry.shape[0] == SLICES and "identical" in report.duplicates
    assert report.duplicate_positions == 1 and report.slices_found == SLICES + 1  # the one copy written
    ds.PixelData = (ds.pixel_array + 1).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(ten_slices / "copy_of_I50")
    with pytest.raises(GeometryError, match="two different images"):
        load_series(ten_slices, "202")
    with pytest.raises(GeometryError, match="more than one different image"):
        load_series(ten_slices)  # auto will not pick it either


def test_per_slice_rescale_and_order_by_position(ten_slices, tmp_path):
    """HU come from each slice's own rescale; order comes from positions, not names or numbers."""
    reference, _ = load_series(ten_slices)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    names = np.random.default_rng(3).permutation(SLICES)
    for index, path in enumerate(_instance_order(ten_slices)):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = int(names[index]) + 1  # scrambled instance numbers
        if index == 4:  # same HU, stored 100 higher with a matching intercept
            ds.PixelData = (ds.pixel_array + 100).astype(np.uint16).tobytes()
            ds.RescaleIntercept = -1124
        if index == 5:  # same HU, stored signed as HU with intercept 0
            hu = ds.pixel_array.astype(np.int16) - 1024
            ds.PixelData, ds.PixelRepresentation, ds.BitsStored, ds.HighBit = hu.tobytes(), 1, 16, 15
            ds.RescaleIntercept = 0
        if index == 6:  # same HU, slope 2 on halved even values
            even = ds.pixel_array - ds.pixel_array % 2
            reference.array[6] = even.astype(np.int16) - 1024
            ds.PixelData, ds.RescaleSlope = (even // 2).astype(np.uint16).tobytes(), 2
        ds.save_as(shuffled / f"slice_{names[index]:02d}.dcm")
    volume, report = load_series(shuffled)
    assert np.array_equal(volume.array, reference.array)
    assert volume.geometry.same_grid(reference.geometry)
    assert "slope 2, intercept -1024" in report.rescale and "intercept -1124" in report.rescale
    # the pairs written above, and the original slices' (slope 1, intercept -1024), as numbers
    assert sorted(map(tuple, report.rescale_pairs)) == [(1.0, -1124.0), (1.0, -1024.0), (1.0, 0.0), (2.0, -1024.0)]
    assert report.clipped_voxels == 0
