"""Before the work: output places checked for real; no PHI in the reprs of images and reports."""

from __future__ import annotations

import errno
import shutil

import pydicom
import pytest

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.errors import EnvironmentFault
from pipeline.preflight import (
    OUTPUT_BYTES_FIXED,
    OUTPUT_BYTES_PER_MODEL,
    environment_fault,
    estimate_output_bytes,
    find_environment_error,
    free_space,
    output_folder,
    writable_file,
)


def test_output_folder_is_made_and_proved_writable(tmp_path):
    folder = output_folder(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []  # the probe is gone


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EnvironmentFault, match=f"{tmp_path / 'file'} is a file") as caught:
        output_folder(tmp_path / "file" / "sub")
    assert caught.value.exit_code == 15


def test_a_read_only_file_system_is_refused(tmpfs):
    point = tmpfs("ro,size=1m")
    with pytest.raises(EnvironmentFault, match="read-only"):
        output_folder(point / "out")
    with pytest.raises(EnvironmentFault, match="read-only"):
        writable_file(point / "run.log")


def test_free_space_is_measured_on_the_real_file_system(tmpfs):
    point = tmpfs("size=1m")
    free = shutil.disk_usage(point).free
    assert free_space(point, free // 2) == free
    with pytest.raises(EnvironmentFault, match=r"MB free, the run needs about"):
        free_space(point, free + 1)


def test_estimate_grows_with_voxels_and_models():
    assert estimate_output_bytes(0, 1) == OUTPUT_BYTES_FIXED + OUTPUT_BYTES_PER_MODEL
    assert estimate_output_bytes(10**6, 2) - estimate_output_bytes(0, 2) == 2 * 10**6


def test_os_errors_become_one_line_with_the_path_and_what_to_do(tmp_path):
    fault = environment_fault(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x")))
    assert str(fault) == f"cannot write {tmp_path / 'x'}: the disk is full (free space there or choose another output folder)"
    wrapped = RuntimeError("pydicom could not write\nthe file")
    wrapped.__cause__ = OSError(errno.EROFS, "Read-only file system")
    assert find_environment_error(wrapped).errno == errno.EROFS
    assert find_environment_error(ValueError("no")) is None


def test_reprs_show_sizes_and_geometry_never_identifiers(tmp_path):
    from pipeline.geometry import Mask
    from pipeline.load import load_series

    write_dicom_series(make_phantom(shape_scale=0.25), tmp_path / "DOE_JANE", with_truth=False)
    first = pydicom.dcmread(next((tmp_path / "DOE_JANE").glob("IM*")))
    volume, report = load_series(tmp_path / "DOE_JANE")
    mask = Mask((volume.array > 200).astype("uint8"), volume.geometry, {1: "aorta"}, dict(volume.provenance))
    identifiers = [str(first.PatientName), str(first.PatientID), str(first.PatientBirthDate),
                   str(first.AccessionNumber), str(first.StudyInstanceUID), str(first.SeriesInstanceUID),
                   str(first.SOPInstanceUID), "DOE_JANE"]
    for shown in (repr(volume), repr(mask), repr(report), str(volume)):
        assert not [i for i in identifiers if i in shown], shown
    assert "x".join(map(str, volume.geometry.shape)) in repr(volume) and "spacing_mm" in repr(volume)
    assert len(repr(volume)) < 300
