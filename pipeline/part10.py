"""The File Meta Information (PS3.10 7.1) of the DICOM Part 10 objects the package writes itself.

One block for ``model.dcm`` (:mod:`pipeline.document.dicom`) and the Encapsulated PDF pushed
back to the study (:mod:`pipeline.pacs.objects`); the DICOM SEG gets its own from highdicom.
"""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID


def set_file_meta(ds: Dataset, software_version: str | None = None) -> Dataset:
    """Give ``ds`` its File Meta Information: its own SOP class and instance, Explicit VR Little Endian.

    Parameters
    ----------
    ds : pydicom.Dataset
        The instance; its ``SOPClassUID`` and ``SOPInstanceUID`` are already set.
    software_version : str, optional
        anatomodel's version, written as Implementation Version Name (``ANATOMODEL_<version>``, cut
        to the 16 characters the VR allows); None leaves it to pydicom, which writes its own
        (``PYDICOM <version>``) when it saves the file.

    Returns
    -------
    pydicom.Dataset
        ``ds``, its ``file_meta`` replaced.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if software_version is not None:
        meta.ImplementationVersionName = f"ANATOMODEL_{software_version}"[:16]
    ds.file_meta = meta
    return ds


__all__ = ["set_file_meta"]
