"""The one File Meta Information block: what pydicom reads back from a file written with it."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from pipeline.pacs.web import instance_uid_of
from pipeline.part10 import set_file_meta


def _instance() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.3"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "M3D"
    return ds


@pytest.mark.parametrize("version, name", [("1.2.3", "ANATOMODEL_1.2.3"), ("10.20.30.dev4+g1234", "ANATOMODEL_10.20"),
                                           (None, f"PYDICOM {pydicom.__version__}")])
def test_written_file_meta_names_the_instance_and_our_implementation(tmp_path, version, name):
    ds = set_file_meta(_instance(), version)
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    meta = read_file_meta_info(path)
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == PYDICOM_IMPLEMENTATION_UID
    assert meta.ImplementationVersionName == name
    # the pull's own File Meta reader finds the same instance in the bytes
    assert instance_uid_of(path.read_bytes()) == str(ds.SOPInstanceUID)
    assert pydicom.dcmread(path).Modality == "M3D"
