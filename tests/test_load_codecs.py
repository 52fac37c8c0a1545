"""Compressed transfer syntaxes and enhanced multi-frame CT load to the same HU as the originals.

Phantom slices are transcoded here, inside the test, with the encoders installed alongside
pydicom (RLE, JPEG-LS via pyjpegls, JPEG 2000 via pylibjpeg-openjpeg), GDCM inside SimpleITK
(JPEG lossless, process 14 SV1), pydicom's deflate writer, and highdicom (Legacy Converted
Enhanced CT, one multi-frame file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pipeline.load import load_series

SLICES = 10


@pytest.fixture(scope="module")
def originals(philips_dir, tmp_path_factory) -> Path:
    """Ten consecutive 1 mm slices of the Philips head phantom, uncompressed."""
    folder = tmp_path_factory.mktemp("plain")
    files = sorted((philips_dir / "S21570" / "S2020").glob("I*"), key=lambda p: int(p.name[1:]))
    for path in files[:SLICES]:  # I10, I20, ... I100: instances 1-10, adjacent slices
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def reference(originals):
    volume, report = load_series(originals)
    assert report.pixel_reading.startswith(f"{SLICES} plane(s) read directly")
    assert (report.planes_read_directly, report.planes_decoded) == (SLICES, 0)
    return volume


def _jpeg_lossless_pixel_data(ds: pydicom.Dataset, folder: Path) -> bytes:
    """Encapsulated JPEG lossless (SV1) pixel data of ``ds``'s image, encoded by GDCM."""
    image = sitk.GetImageFromArray(ds.pixel_array.astype(np.uint16))
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(folder / "gdcm_jpeg.dcm"))
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")
    writer.Execute(image)
    encoded = pydicom.dcmread(folder / "gdcm_jpeg.dcm")
    assert encoded.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    (folder / "gdcm_jpeg.dcm").unlink()
    return encoded.PixelData


def transcode(originals: Path, target: Path, syntax: str) -> Path:
    target.mkdir()
    scratch = target.parent
    for path in sorted(originals.iterdir()):
        ds = pydicom.dcmread(path)
        if syntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        elif syntax == JPEGLosslessSV1:
            ds.PixelData = _jpeg_lossless_pixel_data(ds, scratch)
            ds["PixelData"].VR = "OB"
            ds.BitsStored, ds.HighBit = 16, 15  # GDCM encodes at 16-bit precision
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax, generate_instance_uid=False)
        ds.save_as(target / path.name, enforce_file_format=True)
    return target


@pytest.mark.parametrize(
    "syntax",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, DeflatedExplicitVRLittleEndian],
    ids=["RLE", "JPEG-LS", "JPEG2000", "JPEG-lossless", "deflate"],
)
def test_compressed_copies_load_to_identical_hu(originals, reference, tmp_path, syntax):
    folder = transcode(originals, tmp_path / "encoded", syntax)
    assert pydicom.dcmread(next(folder.iterdir())).file_meta.TransferSyntaxUID == syntax
    volume, report = load_series(folder)
    assert report.transfer_syntaxes == [syntax.name]
    assert report.pixel_reading.endswith(f"{SLICES} decoded by pydicom's pixel decoders")
    assert np.array_equal(volume.array, reference.array)
    assert volume.geometry.same_grid(reference.geometry)


def test_mixed_syntaxes_in_one_series(originals, reference, tmp_path):
    folder = transcode(originals, tmp_path / "mixed", JPEGLSLossless)
    for path in sorted(originals.iterdir())[::2]:  # half the slices back to uncompressed
        shutil.copy(path, folder / path.name)
    volume, report = load_series(folder)
    assert len(report.transfer_syntaxes) == 2
    assert np.array_equal(volume.array, reference.array)


@pytest.mark.filterwarnings("ignore:The string")  # highdicom on the phantom's one-word patient name
@pytest.mark.parametrize("syntax", [None, RLELossless], ids=["uncompressed", "RLE"])
def test_enhanced_multiframe_ct(originals, reference, tmp_path, syntax):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    legacy = [pydicom.dcmread(p) for p in sorted(originals.iterdir())]
    # Frames in reverse order: the loader must order them by position, not by frame number.
    legacy.reverse()
    enhanced = LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy,
        series_instance_uid=generate_uid(),
        series_number=9,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        transfer_syntax_uid=syntax,
    )
    path = tmp_path / "enhanced.dcm"
    enhanced.save_as(path)
    assert int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames) == SLICES
    for source in (path, tmp_path):  # the file itself, or a folder holding it
        volume, report = load_series(source)
        assert report.slices_used == SLICES
        assert report.pixel_reading.endswith(f"{0 if syntax is None else SLICES} decoded by pydicom's pixel decoders")
        assert np.array_equal(volume.array, reference.array)
        assert volume.geometry.same_grid(reference.geometry)
        assert volume.provenance["source_instances"] == [
            {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2.2", "sop_instance_uid": enhanced.SOPInstanceUID}
        ]
