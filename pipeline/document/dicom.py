"""``model.dcm``: the model as a DICOM Encapsulated STL instance in the source study.

Encapsulated STL IOD (PS3.3 A.85.1), SOP Class 1.2.840.10008.5.1.4.1.1.104.3. Modules written:

==================================  =====  ==========================================================
Module (PS3.3)                      Usage  What we put
==================================  =====  ==========================================================
Patient (C.7.1.1)                   M      the source's patient (or the pseudonym)
General Study (C.7.2.1)             M      the source's study UID, date, time, accession
Encapsulated Document Series        M      modality M3D, a new series UID and number
(C.24.1)
Frame of Reference (C.7.4.1)        M      the source's Frame of Reference UID: the STL is in
                                           the same patient LPS mm space as the images
General Equipment (C.7.5.1)         M      manufacturer ``anatomodel``
Enhanced General Equipment          M      manufacturer, model name, device serial number,
(C.7.5.2)                                  software version
Encapsulated Document (C.24.2)      M      ``model/stl``, the STL bytes, the Source Instance
                                           Sequence naming the CT images the model was made from
Manufacturing 3D Model (C.8.X)      M      measurement units: UCUM ``mm``
SOP Common (C.12.1)                 M      SOP class and instance UIDs, character set
Common Instance Reference (C.12.2)  C      the source series and its instances (the model
                                           references instances of another series)
==================================  =====  ==========================================================
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from pipeline.document import deidentify as deid
from pipeline.errors import DocumentError
from pipeline.files import atomic_write
from pipeline.part10 import set_file_meta

ENCAPSULATED_STL_STORAGE = "1.2.840.10008.5.1.4.1.1.104.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MANUFACTURER = "anatomodel"


@dataclass
class DicomSummary:
    """What was written into ``model.dcm`` (for packet.json and the PDF)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: int
    frame_of_reference_uid: str
    source_series_instance_uid: str
    source_instances: int
    encapsulated_bytes: int
    notes: list[str] = field(default_factory=list)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _dicom_date(value: Any) -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime("%Y%m%d")
    text = str(value).replace("-", "")
    return text[:8] if text[:8].isdigit() else ""


def device_serial_number() -> str:
    """A stable serial number for this installation (a hash of the host name; no PHI).

    Returns
    -------
    str
        The first 16 hex digits, upper case, of the SHA-256 of ``platform.node()``.
    """
    return hashlib.sha256(platform.node().encode()).hexdigest()[:16].upper()


def build_encapsulated_stl(
    stl_bytes: bytes,
    provenance: dict[str, Any],
    patient: dict[str, Any],
    *,
    model_id: str,
    series_number: int,
    software_version: str,
    alias: str | None = None,
    created: dt.datetime | None = None,
) -> tuple[Dataset, DicomSummary]:
    """Build the Encapsulated STL dataset (with file meta) for one model.

    Parameters
    ----------
    stl_bytes : bytes
        The content of ``model.stl`` (binary or ASCII STL, patient LPS mm).
    provenance : dict
        ``Volume.provenance`` of the source CT (patient, study, series, frame-of-reference UIDs,
        ``source_instances``). Missing UIDs get new ones, noted in the summary.
    patient : dict
        The case file's patient block, used where the DICOM provenance has no value.
    model_id : str
        The model's id, in the Series Description (64 characters at most) and the Document
        Title.
    series_number : int
        Series Number of the new series.
    software_version : str
        The anatomodel version, for Software Versions and the file meta's Implementation
        Version Name (cut to 16 characters).
    alias : str, optional
        A pseudonym: when given, the instance is de-identified with the choices of
        :mod:`pipeline.document.deidentify` and the pseudonym is its patient name and id.
    created : datetime.datetime, optional
        When the instance is made (default: now); written as local date and time with the UTC
        offset (shifted, time left out, when de-identifying).

    Returns
    -------
    dataset : pydicom.Dataset
        The instance with its file meta (Explicit VR Little Endian), new SOP instance and
        series UIDs.
    summary : DicomSummary
        Its UIDs (replaced ones when de-identifying), the number of source instances
        referenced, the encapsulated size (bytes) and notes on what had to be made up.

    Raises
    ------
    DocumentError
        ``stl_bytes`` is shorter than 84 bytes (no STL header and triangle count). Exit code 12.
    """
    if len(stl_bytes) < 84:
        raise DocumentError(f"model.stl holds {len(stl_bytes)} bytes, too few for an STL; re-run the mesh stage")
    # DICOM dates and times are local; the offset is recorded with them.
    created = (created or dt.datetime.now(dt.timezone.utc)).astimezone()
    deidentify = alias is not None
    notes: list[str] = []
    study_uid = provenance.get("study_instance_uid") or ""
    frame_uid = provenance.get("frame_of_reference_uid") or ""
    source_series = provenance.get("series_instance_uid") or ""
    instances = [i for i in provenance.get("source_instances") or [] if i.get("sop_instance_uid")]
    if not study_uid:
        study_uid = generate_uid(entropy_srcs=["study", str(provenance.get("source_sha256", model_id))])
        notes.append("the source has no Study Instance UID (not DICOM): a new study UID was made")
    if not frame_uid:
        frame_uid = generate_uid(entropy_srcs=["frame", study_uid])
        notes.append("the source has no Frame of Reference UID: a new one was made")
    if not instances:
        notes.append("the source images are not DICOM instances: no Source Instance Sequence")

    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_STL_STORAGE
    ds.SOPInstanceUID = generate_uid()
    # Patient
    name = provenance.get("patient_name") or patient.get("name") or ""
    patient_id = provenance.get("patient_id") or patient.get("id") or ""
    if deidentify:
        ds.PatientName = alias
        ds.PatientID = alias
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = deid.METHOD_TEXT
        ds.DeidentificationMethodCodeSequence = Sequence([_code(*code) for code in deid.METHOD_CODES])
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.PatientName = str(name)
        ds.PatientID = str(patient_id)
        ds.PatientBirthDate = _dicom_date(provenance.get("patient_birth_date") or patient.get("birth_date"))
        ds.PatientSex = str(provenance.get("patient_sex") or patient.get("sex") or "")
    # General Study
    ds.StudyInstanceUID = deid.replace_uid(study_uid) if deidentify else study_uid
    patient_key = deid.patient_key(patient, provenance)
    ds.StudyDate = (deid.shift_dicom_date(provenance.get("study_date"), patient_key) if deidentify
                    else _dicom_date(provenance.get("study_date")))
    ds.StudyTime = "" if deidentify else str(provenance.get("study_time") or "")
    ds.AccessionNumber = "" if deidentify else str(provenance.get("accession_number") or "")
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    # Encapsulated Document Series
    ds.Modality = "M3D"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = f"3D model {model_id}"[:64]
    # Frame of Reference
    ds.FrameOfReferenceUID = deid.replace_uid(frame_uid) if deidentify else frame_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment + Enhanced General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER
    ds.DeviceSerialNumber = device_serial_number()
    ds.SoftwareVersions = str(software_version)
    # Encapsulated Document
    ds.InstanceNumber = 1
    ds.ContentDate = deid.shift_dicom_date(created, patient_key) if deidentify else created.strftime("%Y%m%d")
    ds.ContentTime = "" if deidentify else created.strftime("%H%M%S")
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "NO"
    ds.ConceptNameCodeSequence = Sequence()
    ds.DocumentTitle = f"Anatomic model {model_id}"[:1024]
    ds.MIMETypeOfEncapsulatedDocument = "model/stl"
    if instances:
        items = []
        for instance in instances:
            item = Dataset()
            item.ReferencedSOPClassUID = instance.get("sop_class_uid") or CT_IMAGE_STORAGE
            uid = str(instance["sop_instance_uid"])
            item.ReferencedSOPInstanceUID = deid.replace_uid(uid) if deidentify else uid
            items.append(item)
        ds.SourceInstanceSequence = Sequence(items)
    ds.EncapsulatedDocument = stl_bytes
    ds.EncapsulatedDocumentLength = len(stl_bytes)
    # Manufacturing 3D Model
    ds.MeasurementUnitsCodeSequence = Sequence([_code("mm", "UCUM", "mm")])
    ds.ModelModification = "NO"
    ds.ModelMirroring = "NO"
    # Common Instance Reference: the source images are another series of the same study.
    if instances and source_series:
        series_item = Dataset()
        series_item.SeriesInstanceUID = deid.replace_uid(source_series) if deidentify else source_series
        series_item.ReferencedInstanceSequence = Sequence([Dataset(item) for item in ds.SourceInstanceSequence])
        ds.ReferencedSeriesSequence = Sequence([series_item])
    if not deidentify:
        ds.InstanceCreationDate = created.strftime("%Y%m%d")
        ds.InstanceCreationTime = created.strftime("%H%M%S")
        ds.TimezoneOffsetFromUTC = created.strftime("%z")

    set_file_meta(ds, software_version)

    summary = DicomSummary(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        series_number=int(series_number),
        frame_of_reference_uid=ds.FrameOfReferenceUID,
        source_series_instance_uid=(deid.replace_uid(source_series) if deidentify and source_series else source_series),
        source_instances=len(instances),
        encapsulated_bytes=len(stl_bytes),
        notes=notes,
    )
    return ds, summary


def write_encapsulated_stl(dataset: Dataset, path: Path) -> Path:
    """Write the dataset as a DICOM Part 10 file (preamble, file meta, explicit VR LE).

    Parameters
    ----------
    dataset : pydicom.Dataset
        The instance from :func:`build_encapsulated_stl` (it must carry its file meta).
    path : Path
        The file to write (``model.dcm``), replaced if it exists.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        The file cannot be written.
    """
    return atomic_write(path, lambda temporary: dataset.save_as(temporary, enforce_file_format=True))
