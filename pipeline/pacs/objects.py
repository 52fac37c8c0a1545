"""The DICOM objects pushed back into the source study besides ``model.dcm``.

- :func:`build_segmentation`: the model's mask as a DICOM SEG (highdicom) on the source CT series,
  one frame per source slice, so any viewer outlines the structure on the CT images.
- :func:`build_encapsulated_pdf`: the packet as Encapsulated PDF (PS3.3 A.45.1).

Both take the patient, study and Frame of Reference from ``model.dcm`` (the model's own
Encapsulated STL, written by :mod:`pipeline.document.dicom`) and derive their SOP Instance and
Series Instance UIDs from its SOP Instance UID, so building them again for the same model version
gives the same UIDs (a repeated push replaces, never duplicates) and their dates are the model's.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import format_number_as_ds

from pipeline.errors import GeometryError
from pipeline.geometry import Mask
from pipeline.part10 import set_file_meta

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
#: SNOMED CT property type of the structures our presets segment (else "Anatomical Structure").
STRUCTURE_CODES = {"aorta": codes.SCT.Aorta, "bone": codes.SCT.Bone, "skull": codes.SCT.Bone,
                   "heart": codes.SCT.Heart, "left ventricle": codes.SCT.Heart}
_PATIENT_STUDY = ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                  "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
                  "StudyID")


def derived_uid(model_dcm: Dataset, what: str) -> str:
    """A UID for ``what`` of this model version: the same on every call.

    Parameters
    ----------
    model_dcm : Dataset
        The model's Encapsulated STL (its SOP Instance UID seeds the UID).
    what : str
        What the UID is for, e.g. ``"seg-instance"``.

    Returns
    -------
    str
        A UID under pydicom's root, derived from the two.
    """
    return generate_uid(entropy_srcs=["anatomodel", what, str(model_dcm.SOPInstanceUID)])


def _slice_frames(mask: Mask, source: list[Dataset]) -> np.ndarray:
    """The mask's plane at each source image, or GeometryError if the mask is not on their grid.

    Each image's first pixel must be a voxel centre of the mask, and its row and column steps one
    voxel along the mask's in-plane axes (i, j), within 1 % of a voxel.
    """
    geometry = mask.geometry
    frames = np.zeros((len(source), geometry.shape[1], geometry.shape[2]), dtype=np.uint8)
    for index, ds in enumerate(source):
        origin = np.asarray(ds.ImagePositionPatient, dtype=float)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        rows_mm, columns_mm = (float(v) for v in ds.PixelSpacing)
        corners = np.array([origin, origin + orientation[:3] * columns_mm, origin + orientation[3:] * rows_mm])
        kji = geometry.lps_to_index(corners)
        k = int(round(kji[0, 0]))
        wanted = np.array([[k, 0, 0], [k, 0, 1], [k, 1, 0]], dtype=float)
        if (int(ds.Rows), int(ds.Columns)) != geometry.shape[1:] or not np.allclose(kji, wanted, atol=0.01) \
                or not 0 <= k < geometry.shape[0]:
            raise GeometryError(
                f"mask.nii.gz is not on the grid of the source series (image {ds.get('InstanceNumber', index)} "
                "is not one of its planes): a SEG must outline the source slices themselves",
                hint="segment the source series as loaded without resampling, then push again")
        frames[index] = mask.array[k]
    return frames


def build_segmentation(mask: Mask, source: list[Dataset], model_dcm: Dataset, *, structure: str,
                       software_version: str) -> Dataset:
    """The mask as a binary DICOM SEG referencing the source CT images.

    Parameters
    ----------
    mask : Mask
        ``mask.nii.gz`` of the model, on the source series' grid (every nonzero label is the structure).
    source : list of Dataset
        The source series' instances (headers suffice), in any order.
    model_dcm : Dataset
        The model's Encapsulated STL: its study, Frame of Reference and SOP Instance UID (from which
        the SEG's UIDs are derived).
    structure : str
        The structure's name (packet.json ``model.structure``), for the segment label and code.
    software_version : str
        anatomodel's version.

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG instance (a pydicom Dataset), one frame per source image, its DS numbers written
        shortest.

    Raises
    ------
    GeometryError
        No source images, images of another study or Frame of Reference, or a mask off their grid.
    """
    import highdicom as hd

    if not source:
        raise GeometryError("no source images to put the segmentation on")
    frame_of_reference = str(model_dcm.FrameOfReferenceUID)
    foreign = {str(ds.get("FrameOfReferenceUID", "")) for ds in source} - {frame_of_reference}
    if foreign or {str(ds.StudyInstanceUID) for ds in source} != {str(model_dcm.StudyInstanceUID)}:
        raise GeometryError("the source images are not the model's study and Frame of Reference",
                            hint="give the series the model was made from")
    source = sorted(source, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float),
                                                        np.cross(np.asarray(ds.ImageOrientationPatient[:3], float),
                                                                 np.asarray(ds.ImageOrientationPatient[3:], float)))))
    frames = _slice_frames(mask, source)
    label = structure or "structure"
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=STRUCTURE_CODES.get(label.lower(), codes.SCT.AnatomicalStructure),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            # seeded region growing, then morphological clean-up (pipeline.segment)
            name="anatomodel", version=str(software_version), family=codes.cid7162.NeighborhoodAnalysis),
    )
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=frames > 0,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=derived_uid(model_dcm, "seg-series"),
        series_number=int(model_dcm.SeriesNumber) + 1,
        sop_instance_uid=derived_uid(model_dcm, "seg-instance"),
        instance_number=1,
        manufacturer=str(model_dcm.Manufacturer),
        manufacturer_model_name=str(model_dcm.ManufacturerModelName),
        software_versions=str(software_version),
        device_serial_number=str(model_dcm.DeviceSerialNumber),
        series_description=f"Segmentation {label}"[:64],
        content_label="MODEL",
        content_description=f"{label} of the 3D model"[:64],
        omit_empty_frames=False,
    )
    # highdicom stamps a random dimension organisation UID and the build time: make them the model's.
    organisation = derived_uid(model_dcm, "seg-dimension-organization")
    for item in [*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence]:
        item.DimensionOrganizationUID = organisation
    made = f"{model_dcm.ContentDate}{model_dcm.ContentTime}"
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = made
    seg.ContentDate = str(model_dcm.ContentDate)
    seg.ContentTime = str(model_dcm.ContentTime)
    for keyword in ("InstanceCreationDate", "InstanceCreationTime", "TimezoneOffsetFromUTC"):
        if keyword in model_dcm:
            setattr(seg, keyword, model_dcm.get(keyword))
    _shortest_decimals(seg)
    return seg


def _ds_text(value: float) -> str:
    """The shortest decimal string (DS) that reads back as ``value``: ``1`` for 1.0, ``0.48828125``."""
    text = repr(float(value)).removesuffix(".0")
    return text if len(text) <= 16 else format_number_as_ds(float(value))


def _shortest_decimals(ds: Dataset) -> None:
    """Write every DS value of ``ds`` (nested too) as its shortest text, in place.

    The source headers' numbers are the same whether read from the files (``"1"``) or from
    WADO-RS metadata (JSON numbers, ``"1.0"``); highdicom copies their text, so without this the
    SEG's bytes (and its SHA-256 in the ledger) would depend on where the headers came from.
    """
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _shortest_decimals(item)
        elif element.VR == "DS" and element.value is not None and element.value != "":
            values = element.value if element.VM > 1 else [element.value]
            texts = [_ds_text(v) for v in values]
            element.value = texts if element.VM > 1 else texts[0]


def build_encapsulated_pdf(pdf_bytes: bytes, model_dcm: Dataset, *, title: str, software_version: str) -> Dataset:
    """The packet as an Encapsulated PDF instance in the model's study (with file meta).

    Modules (PS3.3 A.45.1): Patient, General Study, Encapsulated Document Series, General
    Equipment, SC Equipment, Encapsulated Document, SOP Common; the PDF's source is the model.

    Parameters
    ----------
    pdf_bytes : bytes
        ``packet.pdf``.
    model_dcm : Dataset
        The model's Encapsulated STL: patient, study, series number and the UID seed.
    title : str
        The Document Title (cut to 1024 characters).
    software_version : str
        anatomodel's version.

    Returns
    -------
    Dataset
        The Encapsulated PDF instance.

    Raises
    ------
    GeometryError
        ``pdf_bytes`` is not a PDF file.
    """
    if not pdf_bytes.startswith(b"%PDF-"):
        raise GeometryError("packet.pdf is not a PDF file", hint="re-run the document stage")
    ds = Dataset()
    for keyword in _PATIENT_STUDY:
        if keyword in model_dcm:
            setattr(ds, keyword, model_dcm.get(keyword))
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = derived_uid(model_dcm, "pdf-instance")
    # Encapsulated Document Series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = derived_uid(model_dcm, "pdf-series")
    ds.SeriesNumber = int(model_dcm.SeriesNumber) + 2
    ds.SeriesDescription = "3D model documentation packet"
    # General Equipment, SC Equipment
    ds.Manufacturer = str(model_dcm.Manufacturer)
    ds.ConversionType = "WSD"
    ds.SoftwareVersions = str(software_version)
    # Encapsulated Document
    ds.InstanceNumber = 1
    ds.ContentDate = str(model_dcm.get("ContentDate", ""))
    ds.ContentTime = str(model_dcm.get("ContentTime", ""))
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"  # the packet names the patient
    ds.DocumentTitle = title[:1024]
    ds.ConceptNameCodeSequence = Sequence()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    source = Dataset()
    source.ReferencedSOPClassUID = str(model_dcm.SOPClassUID)
    source.ReferencedSOPInstanceUID = str(model_dcm.SOPInstanceUID)
    ds.SourceInstanceSequence = Sequence([source])
    ds.EncapsulatedDocument = pdf_bytes + (b"\0" if len(pdf_bytes) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf_bytes)
    return set_file_meta(ds)
