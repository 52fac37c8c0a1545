"""Load one CT series (or a NIfTI/NRRD/MHA file) as a :class:`~pipeline.geometry.Volume`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from pipeline.errors import GeometryError
from pipeline.files import sha256_file
from pipeline.geometry import Geometry, Volume, is_image_file, read_volume
from pipeline.load.compression import LossyCompression, lossy_compression
from pipeline.load.decode import read_hu
from pipeline.load.headers import Plane, contrast_agent, convolution_kernel
from pipeline.load.inventory import Inventory, inventory
from pipeline.load.resample import (
    FILL_HU,
    deshear,
    in_plane_grid,
    resample_along_normal,
    uniform_positions,
)
from pipeline.load.stack import GAP_FACTOR, MIN_SLICES, SPARSE_FACTOR, StackLayout, analyse, format_mm
from pipeline.report import Report

logger = logging.getLogger(__name__)

#: Keys every Volume.provenance carries (None when the source lacks them).
PROVENANCE_KEYS = (
    "patient_name", "patient_id", "patient_birth_date", "patient_sex", "study_instance_uid",
    "series_instance_uid", "frame_of_reference_uid", "accession_number", "study_date", "study_time",
    "study_description", "series_description", "series_number", "modality", "manufacturer",
    "manufacturer_model_name", "kvp", "convolution_kernel", "contrast_bolus_agent", "slice_thickness_mm",
    "number_of_slices", "pixel_spacing_mm", "gantry_tilt_deg", "transfer_syntax_uid", "source_instances",
    "source_sha256",
)


@dataclass
class LoadReport(Report):
    """What :func:`load_series` did, in words and numbers (no patient data).

    Every figure a sentence field (``duplicates``, ``rescale``, ``pixel_reading``,
    ``tilt_correction``, ``resampling``) quotes is also a field of its own: counts, mm, degrees,
    ``rescale_pairs`` as ``[slope, intercept]`` (HU = stored x slope + intercept).

    Its repr shows figures only: the source path (folder names often carry the patient's
    name), the series UID and description are left out of it (they stay in :meth:`to_dict`).
    """

    source: str = field(repr=False)
    source_format: str
    selection: str = field(repr=False)
    series_instance_uid: str | None = field(default=None, repr=False)
    series_number: int | None = None
    series_description: str | None = field(default=None, repr=False)
    slices_found: int | None = None
    slices_used: int | None = None
    slice_ordering: str | None = None
    duplicates: str | None = None
    rescale: str | None = None
    transfer_syntaxes: list[str] = field(default_factory=list)
    #: Whether the source was lossy compressed and the header evidence; None for an image file (not known).
    lossy_compression: LossyCompression | None = None
    pixel_reading: str | None = None
    gantry_tilt_header_deg: float | None = None
    gantry_tilt_geometry_deg: float | None = None
    tilt_corrected: bool = False
    tilt_correction: str | None = None
    uneven_spacing: bool = False
    spacing_between_slices_min_mm: float | None = None
    spacing_between_slices_max_mm: float | None = None
    resampling: str | None = None
    slice_thickness_median_mm: float | None = None
    slice_step_median_mm: float | None = None
    imaged_fraction: float | None = None
    coverage_mm: float | None = None
    #: The coverage each preset of the run needs (preset name: mm), checked against the series' extent.
    coverage_needed_mm: dict[str, float] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    gaps_resampled: bool = False
    volume_check: str | None = None
    fill_hu: int | None = None
    output_shape: list[int] = field(default_factory=list)
    output_spacing_mm: list[float] = field(default_factory=list)
    source_sha256: str | None = None
    #: the figures behind the sentences above, as numbers
    duplicate_positions: int = 0
    repeated_copies_ignored: int = 0
    rescale_pairs: list[list[float]] = field(default_factory=list)
    clipped_voxels: int = 0
    planes_read_directly: int | None = None
    planes_decoded: int | None = None
    tilt_max_shift_mm: float | None = None
    tilt_grid_rows_columns: list[int] | None = None
    resampled_spacing_mm: float | None = None
    resampled_slices: int | None = None
    warnings: list[str] = field(default_factory=list, repr=False)


def _value(ds: Dataset, keyword: str) -> Any:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(ds: Dataset, keyword: str) -> float | None:
    try:
        return float(ds.get(keyword))
    except (TypeError, ValueError):
        return None


def provenance_from_dicom(planes: list[Plane], sha256: str) -> dict[str, Any]:
    """The provenance dictionary of a DICOM series (contains PHI: never log it or use it in paths).

    Parameters
    ----------
    planes : list of Plane
        The planes used, in stack order; the patient, study and series fields come from the
        first one's header, the instance list from all (each SOP instance once, in order).
    sha256 : str
        SHA-256 (hex) of the source files, as :func:`pipeline.load.decode.read_hu` reports it.

    Returns
    -------
    dict
        Exactly the :data:`PROVENANCE_KEYS`: texts as stripped strings (None when absent or
        empty), ``kvp`` in kV, ``slice_thickness_mm`` and ``pixel_spacing_mm`` (DICOM's row,
        column spacing) in mm, ``gantry_tilt_deg`` in degrees, ``series_number`` as int, the
        transfer syntaxes joined by a backslash when several.
    """
    ds = planes[0].header
    instances, seen = [], set()
    for plane in planes:
        if plane.sop_instance_uid not in seen:
            seen.add(plane.sop_instance_uid)
            instances.append({"sop_class_uid": plane.sop_class_uid, "sop_instance_uid": plane.sop_instance_uid})
    frame_of_reference = _value(ds, "FrameOfReferenceUID")
    syntaxes = sorted({p.transfer_syntax_uid for p in planes})
    series_number = ds.get("SeriesNumber")
    return {
        "patient_name": _value(ds, "PatientName"),
        "patient_id": _value(ds, "PatientID"),
        "patient_birth_date": _value(ds, "PatientBirthDate"),
        "patient_sex": _value(ds, "PatientSex"),
        "study_instance_uid": _value(ds, "StudyInstanceUID"),
        "series_instance_uid": _value(ds, "SeriesInstanceUID"),
        "frame_of_reference_uid": frame_of_reference,
        "accession_number": _value(ds, "AccessionNumber"),
        "study_date": _value(ds, "StudyDate"),
        "study_time": _value(ds, "StudyTime"),
        "study_description": _value(ds, "StudyDescription"),
        "series_description": _value(ds, "SeriesDescription"),
        "series_number": int(series_number) if series_number not in (None, "") else None,
        "modality": _value(ds, "Modality"),
        "manufacturer": _value(ds, "Manufacturer"),
        "manufacturer_model_name": _value(ds, "ManufacturerModelName"),
        "kvp": _number(ds, "KVP"),
        "convolution_kernel": convolution_kernel(ds),
        "contrast_bolus_agent": contrast_agent(ds),
        "slice_thickness_mm": planes[0].slice_thickness,
        "number_of_slices": len(planes),
        "pixel_spacing_mm": list(planes[0].pixel_spacing) if planes[0].pixel_spacing else None,
        "gantry_tilt_deg": _number(ds, "GantryDetectorTilt"),
        "transfer_syntax_uid": syntaxes[0] if len(syntaxes) == 1 else "\\".join(syntaxes),
        "source_instances": instances,
        "source_sha256": sha256,
    }


def _load_image_file(path: Path) -> tuple[Volume, LoadReport]:
    volume = read_volume(path)
    sha256 = sha256_file(path)
    provenance = dict.fromkeys(PROVENANCE_KEYS)
    provenance.update(volume.provenance)
    provenance.update(
        source_sha256=sha256,
        number_of_slices=volume.geometry.shape[0],
        pixel_spacing_mm=list(volume.geometry.spacing[1:]),
        source_instances=[],
    )
    volume.provenance = provenance
    report = LoadReport(
        source=str(path),
        source_format="image file (NIfTI/NRRD/MHA)",
        selection="the file's only image",
        slices_used=volume.geometry.shape[0],
        output_shape=list(volume.geometry.shape),
        output_spacing_mm=list(volume.geometry.spacing),
        source_sha256=sha256,
        rescale="values as stored, rounded to int16",
    )
    return volume, report


def uniform_spacing(steps_mm: np.ndarray) -> float:
    """Step for resampling uneven slices: the smallest step, but at least half the median.

    The smallest step keeps the finest detail any part of the stack has; the floor stops one
    near-duplicate pair of slices from multiplying the volume's size.

    Parameters
    ----------
    steps_mm : ndarray of float
        Distances between consecutive slices along the normal, mm (at least one, all positive).

    Returns
    -------
    float
        The uniform slice step to resample to, mm.
    """
    return float(max(steps_mm.min(), 0.5 * np.median(steps_mm)))


def _resolve_duplicates(layout: StackLayout, planes: list[Plane], root: Path) -> str:
    """Keep identical duplicate images (dropping the copies); refuse differing ones."""
    differing = []
    for kept, other in layout.duplicates:
        pair, _ = read_hu([planes[kept], planes[other]], root)
        if not np.array_equal(pair[0], pair[1]):
            x, y, z = planes[other].position
            differing.append(f"LPS ({x:.2f}, {y:.2f}, {z:.2f}) mm")
    if differing:
        shown = ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")
        raise GeometryError(
            f"{len(differing)} slice position(s) hold two different images ({shown}): the series mixes "
            "acquisitions or phases",
            hint="split the series by acquisition before loading, or pick another series",
        )
    return f"{len(layout.duplicates)} duplicate position(s) held identical images; one of each kept"


def _record_volume_check(report: LoadReport, layout: StackLayout) -> None:
    """Put the figures behind "this series is a volume" and the decision in the report."""
    def known(value: float) -> float | None:
        """A figure for the report, or None where the stack does not give it.

        Parameters
        ----------
        value : float
            A measured figure (mm or a fraction); NaN when unknown.

        Returns
        -------
        float or None
            ``value`` rounded to 4 decimals, or None when it is not finite.
        """
        return round(value, 4) if np.isfinite(value) else None

    report.slice_thickness_median_mm = known(layout.median_thickness_mm)
    report.slice_step_median_mm = known(layout.median_step_mm)
    report.imaged_fraction = known(layout.imaged_fraction)
    report.coverage_mm = known(float(layout.positions_mm[-1]))
    report.gaps = list(layout.gaps)
    thickness = (f"{format_mm(layout.median_thickness_mm)} mm thick" if np.isfinite(layout.median_thickness_mm)
                 else "of unknown thickness (no SliceThickness)")
    imaged = (f", imaging {100 * layout.imaged_fraction:.0f}% of the span" if np.isfinite(layout.imaged_fraction)
              else "")
    decision = (f"{len(layout.gaps)} gap(s) resampled as requested" if layout.gaps
                else f"no gap over {GAP_FACTOR:g} x the usual step")
    compared = (f"step at most {SPARSE_FACTOR:g} x the thickness" if np.isfinite(layout.median_thickness_mm)
                else "step not compared with a thickness (none given)")
    report.volume_check = (
        f"a volume: {len(layout.order)} slices {thickness} every {format_mm(layout.median_step_mm)} mm over "
        f"{format_mm(float(layout.positions_mm[-1]))} mm{imaged}; {compared}, at least {MIN_SLICES} slices, "
        f"{decision}")


def load_series(
    source: str | Path,
    series: str | int = "auto",
    *,
    prefer_bone: bool = False,
    max_gap_mm: float | None = None,
    resample_gaps: bool = False,
    found: Inventory | None = None,
) -> tuple[Volume, LoadReport]:
    """Load a CT series as an int16 HU :class:`Volume` on an orthogonal grid.

    Parameters
    ----------
    source : str or Path
        A DICOM folder (searched recursively; non-DICOM and index files are skipped), a single
        (e.g. enhanced multi-frame) DICOM file, or a NIfTI/NRRD/MHA file.
    series : str or int
        "auto" (see :func:`pipeline.load.inventory.choose`), a SeriesInstanceUID, or a series
        number (int or digit string).
    prefer_bone : bool
        Let ``auto`` prefer bone kernels.
    max_gap_mm : float, optional
        Refuse steps between slices wider than this, mm; by default a step over 1.5 x the usual
        one that the slice thicknesses do not cover is refused.
    resample_gaps : bool
        Load a series with gaps anyway, filling each gap by linear interpolation between the
        slices on either side; the report says so (``gaps``, ``gaps_resampled``, a warning).
        A sparse series (usual step over ``SPARSE_FACTOR`` thicknesses) or one of fewer than
        ``MIN_SLICES`` slices is refused either way.
    found : Inventory, optional
        The source's inventory when the caller has read it already, with the same
        ``prefer_bone``, ``max_gap_mm`` and ``resample_gaps`` (``run_case`` reads the headers
        once for its identity check and the load).

    Returns
    -------
    volume : Volume
        HU int16 array ``[k, j, i]``; axis 0 runs along the slice normal (row x column), axis 1
        down the image rows, axis 2 along them. Provenance keys: :data:`PROVENANCE_KEYS`.
    report : LoadReport
        What was done (ordering, rescale, duplicates, tilt correction, resampling, decoding), and
        whether the source was lossy compressed (``lossy_compression``, with a warning when so).

    Raises
    ------
    DicomError, SeriesSelectionError, GeometryError
        With a message saying what is wrong, where, and what to do.
    """
    source = Path(source)
    if source.is_file() and is_image_file(source):
        return _load_image_file(source)
    if found is None:
        found = inventory(source, prefer_bone=prefer_bone, max_gap_mm=max_gap_mm, allow_gaps=resample_gaps)
    info, how = found.select(series)
    planes = found.planes(info.series_instance_uid)
    layout = analyse(planes, max_gap_mm, allow_gaps=resample_gaps)
    root = source if source.is_dir() else source.parent
    report = LoadReport(
        source=str(source),
        source_format="DICOM",
        selection=how,
        series_instance_uid=info.series_instance_uid,
        series_number=info.series_number,
        series_description=info.series_description,
        slices_found=len(planes),
        gantry_tilt_header_deg=info.gantry_tilt_deg,
        warnings=list(found.notes),
    )
    if layout.duplicates:
        report.duplicates = _resolve_duplicates(layout, planes, root)
        report.duplicate_positions = len(layout.duplicates)
    elif layout.dropped_copies:
        report.duplicates = f"{layout.dropped_copies} repeated copies of the same instance ignored"
        report.repeated_copies_ignored = int(layout.dropped_copies)
    ordered = [planes[i] for i in layout.order]
    report.slices_used = len(ordered)
    report.slice_ordering = (
        f"{len(ordered)} slices sorted by ImagePositionPatient projected on the slice normal "
        f"(row x column cosines), from {format_mm(0.0)} to {format_mm(layout.positions_mm[-1])} mm"
    )
    array, decoded = read_hu(ordered, root)
    pairs = decoded.rescale_pairs
    report.rescale_pairs = [[float(slope), float(intercept)] for slope, intercept in pairs]
    report.rescale = (
        f"HU = stored x RescaleSlope + RescaleIntercept per slice "
        f"({'; '.join(f'slope {s:g}, intercept {i:g}' for s, i in pairs[:4])}"
        f"{' ...' if len(pairs) > 4 else ''})"
    )
    report.clipped_voxels = int(decoded.clipped_voxels)
    if decoded.clipped_voxels:
        report.warnings.append(f"{decoded.clipped_voxels} voxels outside the int16 range were clipped")
    report.transfer_syntaxes = decoded.transfer_syntaxes
    report.lossy_compression = lossy_compression(ordered)
    if lossy_warning := report.lossy_compression.warning():
        report.warnings.append(lossy_warning)
    report.planes_read_directly, report.planes_decoded = decoded.read_directly, decoded.decoded_by_pydicom
    report.pixel_reading = (
        f"{decoded.read_directly} plane(s) read directly (uncompressed little endian), "
        f"{decoded.decoded_by_pydicom} decoded by pydicom's pixel decoders"
    )
    report.source_sha256 = decoded.sha256

    pixel_spacing = layout.pixel_spacing_mm  # (along j, along i)
    origin = np.asarray(ordered[0].position, dtype=float)
    report.gantry_tilt_geometry_deg = round(layout.tilt_deg, 3) if layout.sheared else 0.0
    if layout.sheared:
        offsets_px = layout.offsets_mm / pixel_spacing
        grid = in_plane_grid(offsets_px, array.shape[1], array.shape[2])
        array = deshear(array, offsets_px, grid)
        origin = origin + grid.start_j * pixel_spacing[0] * layout.column + grid.start_i * pixel_spacing[1] * layout.row
        report.tilt_corrected = True
        report.fill_hu = FILL_HU
        report.tilt_max_shift_mm = round(float(np.abs(layout.offsets_mm).max()), 3)
        report.tilt_grid_rows_columns = [int(grid.rows), int(grid.columns)]
        report.tilt_correction = (
            f"stack sheared by {abs(layout.tilt_deg):.2f} degrees (from the slice positions); each slice "
            f"shifted in its own plane by its offset (bilinear, up to "
            f"{np.abs(layout.offsets_mm).max():.1f} mm) onto an orthogonal grid aligned with the slices; "
            f"grid grown to {grid.rows}x{grid.columns} to keep every slice, uncovered voxels set to {FILL_HU} HU"
        )
    steps = layout.spacings_mm
    report.spacing_between_slices_min_mm = float(steps.min())
    report.spacing_between_slices_max_mm = float(steps.max())
    _record_volume_check(report, layout)
    if layout.uneven:
        spacing = uniform_spacing(steps)
        targets = uniform_positions(layout.positions_mm, spacing)
        array = resample_along_normal(array, layout.positions_mm, targets)
        report.uneven_spacing = True
        report.resampled_spacing_mm, report.resampled_slices = round(spacing, 4), int(targets.size)
        report.resampling = (
            f"uneven steps {steps.min():.2f}-{steps.max():.2f} mm resampled to a uniform {spacing:.3f} mm "
            f"({targets.size} slices; smallest step, at least half the median) by linear interpolation "
            "along the slice normal between the two nearest slices"
        )
        if layout.gaps:
            report.gaps_resampled = True
            report.resampling += f"; {len(layout.gaps)} gap(s) filled by interpolation as requested (resample_gaps)"
            report.warnings.append(
                f"{len(layout.gaps)} gap(s) in the series were filled by interpolation as requested: "
                + "; ".join(layout.gaps))
    else:
        spacing = float(layout.positions_mm[-1] / (len(ordered) - 1))
    geometry = Geometry(
        shape=array.shape,
        spacing=(spacing, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=tuple(origin),
        direction=tuple(tuple(row) for row in np.stack([layout.normal, layout.column, layout.row], axis=1)),
    )
    report.output_shape = list(geometry.shape)
    report.output_spacing_mm = list(geometry.spacing)
    provenance = provenance_from_dicom(ordered, decoded.sha256)
    provenance["source_format"] = "DICOM"
    volume = Volume(array, geometry, provenance)
    logger.info(
        "loaded series %s: %d slices -> %s voxels%s%s", info.series_number, len(ordered),
        "x".join(map(str, array.shape)), ", tilt corrected" if report.tilt_corrected else "",
        ", resampled" if report.uneven_spacing else "",
    )
    return volume, report

