"""Read DICOM headers into one :class:`Plane` per image plane (a file, or a frame of a multi-frame file).

Only headers are parsed here (large values are deferred, never read), so walking a study folder
of thousands of files stays fast. The pixel data's byte offset is kept for uncompressed files so
that :mod:`pipeline.load.decode` can read the pixels straight into the output array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

#: Transfer syntaxes whose pixel data are raw little-endian samples at a fixed offset in the file.
NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
DEFLATED = "1.2.840.10008.1.2.1.99"
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


def to_float(value: Any) -> float | None:
    """A number from a DICOM value, or None when absent or malformed.

    Parameters
    ----------
    value : Any
        A DICOM value (DS text, number, None...).

    Returns
    -------
    float or None
        The value as a float; None when it cannot be converted.
    """
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def to_int(value: Any) -> int | None:
    """A whole number from a DICOM value, or None when absent or malformed.

    Parameters
    ----------
    value : Any
        A DICOM value (IS text, number, None...); ``"12.0"`` counts as 12.

    Returns
    -------
    int or None
        The value as an int; None when absent, malformed or not a whole number.
    """
    try:
        return int(value)
    except (TypeError, ValueError):
        number = to_float(value)  # IS values written as "12.0" by some exporters
        return int(number) if number is not None and number.is_integer() else None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if isinstance(value, str):
        value = [value]
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def _raw_text(ds: Dataset, keyword: str) -> str | list[str] | None:
    """A string-valued attribute (UI, CS, DS, IS) without building pydicom's value objects.

    The header pass reads thousands of files; converting DS/IS values through pydicom costs as
    much as parsing the file, so still-raw values are decoded here directly. Multiple values
    come back as a list.
    """
    tag = tag_for_keyword(keyword)
    if tag not in ds:
        return None
    value = ds.get_item(tag, keep_deferred=True).value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip(" \x00")
        return value.split("\\") if "\\" in value else value or None
    if value is None or isinstance(value, str):
        return value or None
    if hasattr(value, "__len__"):  # a converted multi-valued element
        return [str(v) for v in value]
    return str(value)


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
    """Parse a file's DICOM header (large values deferred); None if it is not DICOM.

    Parameters
    ----------
    path : Path
        The file to read; values over :data:`DEFER_SIZE` bytes (pixel data) are read only when used.

    Returns
    -------
    pydicom.Dataset or None
        The dataset, or None when the file has no DICM prefix (:class:`InvalidDicomError`).

    Raises
    ------
    Exception
        Whatever pydicom raises on a damaged DICOM header (the caller records the file as unreadable);
        ``OSError`` if the file cannot be read.
    """
    try:
        return pydicom.dcmread(path, defer_size=DEFER_SIZE)
    except InvalidDicomError:
        return None


def planes_from_header(path: Path, ds: Dataset, file_size: int) -> list[Plane]:
    """The image planes one file holds: one for a single-frame image, one per frame otherwise.

    Parameters
    ----------
    path : Path
        The file the header came from.
    ds : pydicom.Dataset
        Its header (:func:`read_header`).
    file_size : int
        The file's size in bytes, to tell a truncated file (pixel data running past the end).

    Returns
    -------
    list of Plane
        One plane (``frame`` None) for a classic image, else one per frame (``NumberOfFrames``)
        with geometry and rescale from the functional groups; positions and orientations in LPS
        mm, missing values None, rescale slope 1 and intercept 0 by default.
    """
    meta = getattr(ds, "file_meta", Dataset())
    syntax = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    native, truncated = None, False
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
    if raw is not None:
        offset = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        defined = length is not None and length != 0xFFFFFFFF
        # A deflated file's offsets count inflated bytes: its size says nothing about truncation.
        if offset is not None and defined and syntax != DEFLATED and offset + length > file_size:
            truncated = True
        elif offset is not None and defined and syntax in NATIVE_LITTLE_ENDIAN:
            native = (int(offset), int(length))
    frames = to_int(_raw_text(ds, "NumberOfFrames")) or 1
    common = dict(
        path=path,
        sop_class_uid=_raw_text(ds, "SOPClassUID") or str(meta.get("MediaStorageSOPClassUID", "")),
        sop_instance_uid=_raw_text(ds, "SOPInstanceUID") or "",
        series_instance_uid=_raw_text(ds, "SeriesInstanceUID") or "",
        transfer_syntax_uid=syntax,
        rows=to_int(ds.get("Rows")),
        columns=to_int(ds.get("Columns")),
        instance_number=to_int(_raw_text(ds, "InstanceNumber")),
        acquisition_number=to_int(_raw_text(ds, "AcquisitionNumber")),
        bits_allocated=to_int(ds.get("BitsAllocated")),
        bits_stored=to_int(ds.get("BitsStored")),
        pixel_representation=to_int(ds.get("PixelRepresentation")),
        samples_per_pixel=to_int(ds.get("SamplesPerPixel")),
        number_of_frames=frames,
        native_pixels=native,
        truncated=truncated,
        header=ds,
    )
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return [
            Plane(
                frame=None,
                position=_floats(_raw_text(ds, "ImagePositionPatient"), 3),
                orientation=_floats(_raw_text(ds, "ImageOrientationPatient"), 6),
                pixel_spacing=_floats(_raw_text(ds, "PixelSpacing"), 2),
                slice_thickness=to_float(_raw_text(ds, "SliceThickness")),
                rescale_slope=to_float(_raw_text(ds, "RescaleSlope")) or 1.0,
                rescale_intercept=to_float(_raw_text(ds, "RescaleIntercept")) or 0.0,
                **common,
            )
        ]
    # Enhanced (multi-frame) image: geometry and rescale live in functional group macros.
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    planes = []
    for index in range(frames):
        group = per_frame[index] if index < len(per_frame) else None
        slope = to_float(_functional(ds, group, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = to_float(_functional(ds, group, "PixelValueTransformationSequence", "RescaleIntercept"))
        planes.append(
            Plane(
                frame=index,
                position=_floats(_functional(ds, group, "PlanePositionSequence", "ImagePositionPatient"), 3),
                orientation=_floats(
                    _functional(ds, group, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
                ),
                pixel_spacing=_floats(_functional(ds, group, "PixelMeasuresSequence", "PixelSpacing"), 2),
                slice_thickness=to_float(_functional(ds, group, "PixelMeasuresSequence", "SliceThickness")),
                rescale_slope=1.0 if slope is None else slope,
                rescale_intercept=0.0 if intercept is None else intercept,
                **common,
            )
        )
    return planes


@dataclass(frozen=True)
class LossyMarks:
    """What one header says about lossy compression (DICOM PS3.3 C.7.6.1.1.5).

    ``flag`` is LossyImageCompression (0028,2110): ``"01"`` when the image has been lossy
    compressed at any point of its history (it may be stored uncompressed now), ``"00"`` when
    not, None when absent. ``ratios`` are LossyImageCompressionRatio (0028,2112), one per
    successive lossy compression (uncompressed size / compressed size, dimensionless), and
    ``methods`` LossyImageCompressionMethod (0028,2114), defined terms such as ``ISO_15444_1``,
    in the same order; empty when absent.
    """

    flag: str | None = None
    ratios: tuple[float, ...] = ()
    methods: tuple[str, ...] = ()


def _texts(ds: Dataset, keyword: str) -> tuple[str, ...]:
    """Every non-empty value of a string-valued attribute (see :func:`_raw_text`)."""
    value = _raw_text(ds, keyword)
    values = [value] if isinstance(value, str) else value or []
    return tuple(text.strip() for text in values if text and text.strip())


def lossy_marks(ds: Dataset) -> LossyMarks:
    """The lossy compression attributes of a header (three look-ups; no pixel data is read).

    Parameters
    ----------
    ds : pydicom.Dataset
        A header (:func:`read_header`); for an enhanced multi-frame image the attributes are
        at the top level, for all its frames.

    Returns
    -------
    LossyMarks
        LossyImageCompression, its ratios (malformed ones left out) and methods.
    """
    flags = _texts(ds, "LossyImageCompression")
    ratios = (to_float(text) for text in _texts(ds, "LossyImageCompressionRatio"))
    return LossyMarks(
        flag=flags[0] if flags else None,
        ratios=tuple(ratio for ratio in ratios if ratio is not None),
        methods=_texts(ds, "LossyImageCompressionMethod"),
    )


def transfer_syntax_name(uid: str) -> str:
    """Human name of a transfer syntax UID (the UID itself when unknown).

    Parameters
    ----------
    uid : str
        A transfer syntax UID, e.g. ``1.2.840.10008.1.2.1``.

    Returns
    -------
    str
        pydicom's name for it (``Explicit VR Little Endian``), or the UID when pydicom has none.
    """
    name = UID(uid).name
    return name if name and name != uid else uid


def convolution_kernel(ds: Dataset) -> str | None:
    """Reconstruction kernel of a classic or enhanced CT header, as text.

    Parameters
    ----------
    ds : pydicom.Dataset
        A CT header: ConvolutionKernel at the top level, else in the shared functional groups'
        CT Reconstruction Sequence.

    Returns
    -------
    str or None
        The kernel (several values joined by ``\\``), or None when absent or empty.
    """
    kernel = ds.get("ConvolutionKernel")
    if kernel is None:
        shared = _item(ds, "SharedFunctionalGroupsSequence")
        reconstruction = _item(shared, "CTReconstructionSequence") if shared is not None else None
        kernel = reconstruction.get("ConvolutionKernel") if reconstruction is not None else None
    if kernel is None or kernel == "":
        return None
    if not isinstance(kernel, str) and hasattr(kernel, "__len__"):
        return "\\".join(str(k) for k in kernel)
    return str(kernel)


def contrast_agent(ds: Dataset) -> str | None:
    """Contrast/bolus agent of a classic or enhanced header, or None.

    Parameters
    ----------
    ds : pydicom.Dataset
        A header: ContrastBolusAgent, else the CodeMeaning of ContrastBolusAgentSequence.

    Returns
    -------
    str or None
        The agent's text, stripped; None when absent or blank.
    """
    agent = ds.get("ContrastBolusAgent")
    if not agent:
        item = _item(ds, "ContrastBolusAgentSequence")
        if item is not None:
            agent = item.get("CodeMeaning")
    return str(agent).strip() or None if agent else None
