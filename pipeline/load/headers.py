"""Read DICOM headers into one :class:`Plane` per image plane (a file, or a frame of a multi-frame file).

Only headers are parsed here (large values are deferred, never read), so walking a study folder
of thousands of files stays fast. The pixel data's byte offset is kept for uncompressed files so
that :mod:`pipeline.load.decode` can read the pixels straight into the output array.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

logger = logging.getLogger(__name__)

#: Transfer syntaxes whose pixel data are raw little-endian samples at a fixed offset in the file.
NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
#: Media Storage SOP Class of DICOMDIR / Philips DIRFILE index files.
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
PIXEL_DATA = 0x7FE00010
#: Large values (private blobs, pixel data) are not read during the header pass.
DEFER_SIZE = 4096


@dataclass
class Plane:
    """One image plane of a CT series, as its header describes it.

    Positions and orientations are DICOM LPS in mm; ``pixel_spacing`` is DICOM's
    (row spacing, column spacing), i.e. (between rows along the column direction, between
    columns along the row direction), mm.
    """

    path: Path
    frame: int | None  # frame index in a multi-frame file, None for a single-frame file
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    rows: int | None
    columns: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    rescale_slope: float
    rescale_intercept: float
    instance_number: int | None
    acquisition_number: int | None
    bits_allocated: int | None
    bits_stored: int | None
    pixel_representation: int | None
    samples_per_pixel: int | None
    number_of_frames: int
    #: (offset, length) of the raw pixel data in the file when it can be read directly.
    native_pixels: tuple[int, int] | None = None
    #: The file ends before its pixel data does.
    truncated: bool = False
    header: Dataset | None = field(default=None, repr=False)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def _item(ds: Dataset, keyword: str) -> Dataset | None:
    """First item of a sequence attribute, or None."""
    sequence = ds.get(keyword)
    return sequence[0] if sequence else None


def _functional(ds: Dataset, frame_group: Dataset | None, macro: str, attribute: str) -> Any:
    """An attribute of a functional group macro: per-frame value first, then the shared one."""
    for groups in (frame_group, _item(ds, "SharedFunctionalGroupsSequence")):
        if groups is None:
            continue
        item = _item(groups, macro)
        if item is not None and attribute in item:
            return item.get(attribute)
    return None


def read_header(path: Path) -> Dataset | None:
    """Parse a file's DICOM header (large values deferred); None if it is not DICOM."""
    try:
        return pydicom.dcmread(path, defer_size=DEFER_SIZE)
    except InvalidDicomError:
        return None


def planes_from_header(path: Path, ds: Dataset, file_size: int) -> list[Plane]:
    """The image planes one file holds: one for a single-frame image, one per frame otherwise."""
    meta = getattr(ds, "file_meta", Dataset())
    syntax = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    native, truncated = None, False
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
    if raw is not None:
        offset = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        defined = length is not None and length != 0xFFFFFFFF
        if offset is not None and defined and offset + length > file_size:
            truncated = True
        elif offset is not None and defined and syntax in NATIVE_LITTLE_ENDIAN:
            native = (int(offset), int(length))
    frames = _int(ds.get("NumberOfFrames")) or 1
    common = dict(
        path=path,
        sop_class_uid=str(ds.get("SOPClassUID", meta.get("MediaStorageSOPClassUID", ""))),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        transfer_syntax_uid=syntax,
        rows=_int(ds.get("Rows")),
        columns=_int(ds.get("Columns")),
        instance_number=_int(ds.get("InstanceNumber")),
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        bits_allocated=_int(ds.get("BitsAllocated")),
        bits_stored=_int(ds.get("BitsStored")),
        pixel_representation=_int(ds.get("PixelRepresentation")),
        samples_per_pixel=_int(ds.get("SamplesPerPixel")),
        number_of_frames=frames,
        native_pixels=native,
        truncated=truncated,
        header=ds,
    )
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return [
            Plane(
                frame=None,
                position=_floats(ds.get("ImagePositionPatient"), 3),
                orientation=_floats(ds.get("ImageOrientationPatient"), 6),
                pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
                slice_thickness=_float(ds.get("SliceThickness")),
                rescale_slope=_float(ds.get("RescaleSlope")) or 1.0,
                rescale_intercept=_float(ds.get("RescaleIntercept")) or 0.0,
                **common,
            )
        ]
    # Enhanced (multi-frame) image: geometry and rescale live in functional group macros.
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    planes = []
    for index in range(frames):
        group = per_frame[index] if index < len(per_frame) else None
        slope = _float(_functional(ds, group, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _float(_functional(ds, group, "PixelValueTransformationSequence", "RescaleIntercept"))
        planes.append(
            Plane(
                frame=index,
                position=_floats(_functional(ds, group, "PlanePositionSequence", "ImagePositionPatient"), 3),
                orientation=_floats(
                    _functional(ds, group, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
                ),
                pixel_spacing=_floats(_functional(ds, group, "PixelMeasuresSequence", "PixelSpacing"), 2),
                slice_thickness=_float(_functional(ds, group, "PixelMeasuresSequence", "SliceThickness")),
                rescale_slope=1.0 if slope is None else slope,
                rescale_intercept=0.0 if intercept is None else intercept,
                **common,
            )
        )
    return planes


def transfer_syntax_name(uid: str) -> str:
    """Human name of a transfer syntax UID (the UID itself when unknown)."""
    name = UID(uid).name
    return name if name and name != uid else uid


def convolution_kernel(ds: Dataset) -> str | None:
    """Reconstruction kernel of a classic or enhanced CT header, as text."""
    kernel = ds.get("ConvolutionKernel")
    if kernel is None:
        for groups in (_item(ds, "SharedFunctionalGroupsSequence"),):
            item = _item(groups, "CTReconstructionSequence") if groups is not None else None
            if item is not None:
                kernel = item.get("ConvolutionKernel")
    if kernel is None or kernel == "":
        return None
    if isinstance(kernel, (list, tuple)) or hasattr(kernel, "__iter__") and not isinstance(kernel, str):
        return "\\".join(str(k) for k in kernel)
    return str(kernel)


def contrast_agent(ds: Dataset) -> str | None:
    """Contrast/bolus agent of a classic or enhanced header, or None."""
    agent = ds.get("ContrastBolusAgent")
    if not agent:
        item = _item(ds, "ContrastBolusAgentSequence")
        if item is not None:
            agent = item.get("CodeMeaning")
    return str(agent).strip() or None if agent else None
