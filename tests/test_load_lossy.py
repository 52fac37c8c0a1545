"""A lossy compressed source is said so: in the load report, its warnings and on the command line.

The NEMA WG04 CT samples are real: one GE (``CT1``) and one Toshiba (``CT2``) slice stored
uncompressed (``UNC``), losslessly (``J2KR``, ``JLSL``, ``JPLL``, ``RLE``) and lossily (``J2KI``
JPEG 2000 irreversible, ``JLSN`` JPEG-LS near-lossless). Each is made into a three-slice series
here (the slice copied 5 mm apart along its normal), so it loads like a study (by series number:
some of the slices are DERIVED or SECONDARY, which ``auto`` does not choose).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    AllTransferSyntaxes,
    ExplicitVRLittleEndian,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGLSNearLossless,
    generate_uid,
)

from pipeline.cli import main
from pipeline.load import load_series
from pipeline.load.compression import LOSSLESS_SYNTAXES, is_lossy_syntax

SLICES = 3
STEP_MM = 5.0
LOSSY = ["J2KI", "JLSN"]
LOSSLESS = ["J2KR", "JLSL", "JPLL", "RLE", "UNC"]
SCANNERS = ["CT1", "CT2"]


def nema_file(phantoms_dir: Path, scanner: str, kind: str) -> Path:
    """The NEMA WG04 file of ``scanner`` (CT1, CT2) stored as ``kind`` (UNC, J2KI...)."""
    name = f"{scanner}_UNC.dcm" if kind == "UNC" else f"{scanner}_{scanner}_{kind}.dcm"
    return phantoms_dir / "nema_wg04_ct" / name


def nema_series(source: Path, folder: Path, edit=None) -> Path:
    """A series of :data:`SLICES` copies of ``source``, :data:`STEP_MM` mm apart along its normal.

    ``edit(ds, k)``, when given, changes copy ``k`` before it is saved (same transfer syntax).
    """
    folder.mkdir(parents=True)
    series = generate_uid()
    for k in range(SLICES):
        ds = pydicom.dcmread(source)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        position = np.asarray(ds.ImagePositionPatient, dtype=float) + STEP_MM * k * normal
        ds.ImagePositionPatient = [f"{value:.4f}" for value in position]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.InstanceNumber = series, k + 1
        if edit is not None:
            edit(ds, k)
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    return folder


def values(header: pydicom.Dataset, keyword: str) -> list:
    """An attribute's values as a list (empty when absent), whether it holds one value or several."""
    value = header.get(keyword)
    if value is None or value == "":
        return []
    return [value] if isinstance(value, (str, float)) else list(value)


@pytest.fixture(scope="module")
def references(phantoms_dir, tmp_path_factory) -> dict[str, np.ndarray]:
    """The uncompressed series' HU, by scanner."""
    return {scanner: load_series(nema_series(nema_file(phantoms_dir, scanner, "UNC"),
                                             tmp_path_factory.mktemp(scanner) / "unc"), 1)[0].array
            for scanner in SCANNERS}


@pytest.mark.parametrize("scanner", SCANNERS)
@pytest.mark.parametrize("kind", LOSSY)
def test_lossy_nema_series_is_flagged_with_what_the_files_carry(phantoms_dir, references, tmp_path, scanner, kind):
    path = nema_file(phantoms_dir, scanner, kind)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.LossyImageCompression == "01"
    [ratio] = [float(value) for value in values(header, "LossyImageCompressionRatio")]
    methods = sorted(set(values(header, "LossyImageCompressionMethod")))
    volume, report = load_series(nema_series(path, tmp_path / kind), 1)

    found = report.lossy_compression
    assert found.lossy is True
    assert (found.instances, found.flagged_instances, found.lossy_syntax_instances) == (SLICES, SLICES, SLICES)
    assert found.lossy_syntaxes == [header.file_meta.TransferSyntaxUID.name]
    assert found.ratios == [ratio] and found.ratio_instances == SLICES
    assert found.methods == methods and found.method_instances == (SLICES if methods else 0)
    assert f"LossyImageCompressionRatio (0028,2112) {ratio:g} in {SLICES} of {SLICES} instance(s)" in found.evidence
    [warning] = [w for w in report.warnings if "lossy compressed" in w]
    assert warning.startswith(f"the source was lossy compressed ({header.file_meta.TransferSyntaxUID.name}; "
                              f"ratio {ratio:g}:1; LossyImageCompression 01 in {SLICES} of {SLICES} instance(s))")
    assert "tens of HU" in warning and "radiologist" in warning
    assert str(header.PatientName) not in warning + found.evidence  # no PHI, no UID in what is said
    assert header.SOPInstanceUID not in warning and header.StudyInstanceUID not in warning
    assert report.to_dict()["lossy_compression"]["lossy"] is True
    # close to the uncompressed reference, not equal to it
    difference = np.abs(volume.array.astype(np.int32) - references[scanner])
    assert 0 < difference.mean() < 50


@pytest.mark.parametrize("scanner", SCANNERS)
@pytest.mark.parametrize("kind", LOSSLESS)
def test_lossless_and_uncompressed_nema_series_are_not_flagged(phantoms_dir, references, tmp_path, scanner, kind):
    volume, report = load_series(nema_series(nema_file(phantoms_dir, scanner, kind), tmp_path / kind), 1)
    found = report.lossy_compression
    assert found.lossy is False and found.instances == SLICES
    assert (found.flagged_instances, found.lossy_syntax_instances, found.lossy_syntaxes) == (0, 0, [])
    assert found.warning() is None
    assert not any("lossy" in warning for warning in report.warnings)
    assert np.array_equal(volume.array, references[scanner])


def test_flag_on_an_uncompressed_copy_is_flagged(phantoms_dir, tmp_path):
    """An image once lossy compressed, then stored uncompressed, keeps LossyImageCompression 01."""
    def once_lossy(ds: pydicom.Dataset, k: int) -> None:
        if k == 1:  # one instance of three says so
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionRatio = ["8.5", "2"]
            ds.LossyImageCompressionMethod = ["ISO_10918_1", "ISO_15444_1"]

    folder = nema_series(nema_file(phantoms_dir, "CT1", "UNC"), tmp_path / "resaved", once_lossy)
    assert pydicom.dcmread(folder / "1.dcm").file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    _, report = load_series(folder, 1)
    found = report.lossy_compression
    assert found.lossy is True
    assert (found.flagged_instances, found.lossy_syntax_instances, found.lossy_syntaxes) == (1, 0, [])
    assert (found.ratios, found.ratio_instances) == ([2.0, 8.5], 1)
    assert (found.methods, found.method_instances) == (["ISO_10918_1", "ISO_15444_1"], 1)
    assert report.planes_read_directly == SLICES  # header evidence only: nothing decoded for it
    assert found.warning() in report.warnings
    assert found.warning().startswith("the source was lossy compressed (JPEG, JPEG 2000; ratio 2:1, 8.5:1; "
                                      f"LossyImageCompression 01 in 1 of {SLICES} instance(s))")


def test_lossy_syntaxes_from_pydicom():
    assert LOSSLESS_SYNTAXES <= set(AllTransferSyntaxes)
    assert not any(is_lossy_syntax(uid) for uid in LOSSLESS_SYNTAXES)
    assert all(is_lossy_syntax(uid) for uid in (JPEG2000, JPEGLSNearLossless, JPEGBaseline8Bit))
    assert not any(is_lossy_syntax(uid) for uid in (ExplicitVRLittleEndian, "1.2.840.10008.1.2.1.99", "1.2.3"))


def test_convert_prints_the_lossy_warning(phantoms_dir, tmp_path, capsys):
    path = nema_file(phantoms_dir, "CT1", "J2KI")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    [ratio] = [float(value) for value in values(header, "LossyImageCompressionRatio")]
    code = main(["convert", str(nema_series(path, tmp_path / "nema")), str(tmp_path / "x.nii.gz"), "--series", "1"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 0, err
    assert (f"warning: the source was lossy compressed ({header.file_meta.TransferSyntaxUID.name}; "
            f"ratio {ratio:g}:1;") in err
