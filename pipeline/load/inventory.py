"""Inventory a study folder: which series it holds, which can be a CT volume, and which ``auto`` picks.

PACS exports mix localizers, dose summaries, several reconstructions of one acquisition, index
files (DICOMDIR, Philips DIRFILE) and files that are not DICOM at all. :func:`inventory` reads
every header once, groups image planes into series, says for each whether it can be loaded as a
volume (and if not, why), and chooses one for ``auto`` with the reason.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from pipeline.errors import DicomError, GeometryError, SeriesSelectionError
from pipeline.load.headers import (
    MEDIA_DIRECTORY,
    Plane,
    contrast_agent,
    convolution_kernel,
    planes_from_header,
    read_header,
    to_float,
    to_int,
    transfer_syntax_name,
)
from pipeline.load.stack import StackLayout, analyse
from pipeline.report import Report

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
#: A slice normal within this angle of the patient's z axis is axial (tilted gantries included).
AXIAL_MAX_ANGLE_DEG = 45.0
#: Slices at most this thick are "thin" for the automatic choice, mm.
THIN_SLICE_MM = 1.5
#: Two candidates whose coverage differs by less than this fraction cover "the same" range.
SAME_COVERAGE = 0.1

#: Sharp (bone/lung) kernels: GE names, Siemens B/H/I/J/Q/T + number >= 50 (Br64, H70h), Canon
#: FC30+ (except the FC4x soft series), Philips D/E/L/YA-YD.
BONE_KERNEL = re.compile(
    r"BONE|SHARP|LUNG|EDGE|DETAIL|HIGH|^[BHIJQTY]\w?(5\d|[6-9]\d)|^FC(3\d|[5-9]\d)|^(D|E|L|Y[A-D])$", re.I
)
ANGIO_HINT = re.compile(r"\bCTA\b|ANGIO|ARTERIAL|AORT|\bC\+|CONTRAST|\bRUN ?OFF|CORONARY|\bTAVI|\bTAVR", re.I)


@dataclass
class SeriesInfo:
    """One series of a study folder as the inventory sees it (no patient data)."""

    series_instance_uid: str
    series_number: int | None
    series_description: str | None
    study_instance_uid: str | None
    modality: str | None
    sop_class: str
    image_type: list[str]
    folders: list[str]
    instances: int
    slices: int
    matrix: list[int] | None
    pixel_spacing_mm: list[float] | None
    slice_thickness_mm: float | None
    spacing_between_slices_min_mm: float | None
    spacing_between_slices_max_mm: float | None
    coverage_mm: float | None
    gantry_tilt_deg: float | None
    tilt_from_geometry_deg: float | None
    transfer_syntaxes: list[str]
    contrast_agent: str | None
    convolution_kernel: str | None
    kernel_class: str | None
    angio_hint: bool
    usable: bool
    reasons: list[str] = field(default_factory=list)
    #: What makes it unusable: "not a volume", "file" (damaged), "geometry" or "duplicates".
    problem: str | None = None
    auto_candidate: bool = False
    not_auto_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def label(self) -> str:
        """Short human label: number, description, folder.

        Returns
        -------
        str
            ``series <number or ?> '<description>' in <folder>``; the description and folder are left
            out when unknown (the folder also when the series sits in the root).
        """
        number = "?" if self.series_number is None else str(self.series_number)
        description = f" '{self.series_description}'" if self.series_description else ""
        folder = f" in {self.folders[0]}" if self.folders and self.folders != ["."] else ""
        return f"series {number}{description}{folder}"


@dataclass
class Inventory(Report):
    """What a study folder holds.

    Attributes
    ----------
    root : str
        The folder inventoried.
    series : list of SeriesInfo
        Every series found, in folder order.
    skipped_non_dicom : int
        Files that are not DICOM (text, images, anything without the DICM prefix).
    skipped_index_files : int
        DICOMDIR / DIRFILE index files (DICOM, but not images).
    unreadable : list of dict
        DICOM files that could not be parsed or lack a series, with the reason.
    chosen : str or None
        SeriesInstanceUID that ``auto`` picks, None if none qualifies.
    chosen_reason : str
        Why it was chosen, or why nothing was.
    ambiguous : bool
        True when two candidates tie on every criterion: ``auto`` then refuses to guess.
    notes : list of str
        Ambiguities and other remarks (several studies in one folder, ties).
    """

    root: str
    series: list[SeriesInfo]
    skipped_non_dicom: int
    skipped_index_files: int
    unreadable: list[dict[str, str]]
    chosen: str | None
    chosen_reason: str
    ambiguous: bool = False
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._planes: dict[str, list[Plane]] = {}

    def planes(self, series_instance_uid: str) -> list[Plane]:
        """Header planes of one series (in folder order).

        Parameters
        ----------
        series_instance_uid : str
            A SeriesInstanceUID of :attr:`series`.

        Returns
        -------
        list of Plane
            The series' header planes (one per frame), in folder order.

        Raises
        ------
        KeyError
            If the inventory holds no such series.
        """
        return self._planes[series_instance_uid]

    def get(self, series_instance_uid: str) -> SeriesInfo:
        """The series with a SeriesInstanceUID.

        Parameters
        ----------
        series_instance_uid : str
            The SeriesInstanceUID, exactly as in :attr:`series`.

        Returns
        -------
        SeriesInfo
            The first series with that UID.

        Raises
        ------
        KeyError
            If the inventory holds no such series.
        """
        for info in self.series:
            if info.series_instance_uid == series_instance_uid:
                return info
        raise KeyError(series_instance_uid)

    def select(self, series: str | int = "auto") -> tuple[SeriesInfo, str]:
        """The series to load for ``series`` ("auto", a SeriesInstanceUID or a series number).

        Returns the series and how it was selected. Raises :class:`SeriesSelectionError` when
        nothing matches, the match is ambiguous or cannot be a volume.

        Parameters
        ----------
        series : str or int
            ``auto`` (any case), a series number (digits) or a SeriesInstanceUID; surrounding spaces
            are ignored.

        Returns
        -------
        tuple of (SeriesInfo, str)
            The series, and how it was selected (``auto: <reason>`` or ``requested by ...``).

        Raises
        ------
        SeriesSelectionError
            If nothing matches, ``auto`` has no or an ambiguous choice, a number matches several series,
            or the series cannot be a CT volume (exit code 6).
        GeometryError
            If the series (or, for ``auto``, the only would-be volumes) has geometry problems or
            duplicate positions (exit code 7); a series requested with duplicates is returned.
        DicomError
            If it cannot be loaded because of damaged files (exit code 5).
        """
        text = str(series).strip()
        if text.lower() == "auto":
            if self.chosen is None and not self.ambiguous:
                damaged = [s for s in self.series if s.problem in ("file", "geometry", "duplicates")]
                _raise_damaged(damaged, self.root, self.unreadable)
            if self.chosen is None:
                raise SeriesSelectionError(
                    f"{self.root}: {self.chosen_reason}",
                    hint="run 'anatomodel inspect' on the folder and pass --series UID or number",
                )
            return self.get(self.chosen), f"auto: {self.chosen_reason}"
        if text.isdigit():
            matches = [s for s in self.series if s.series_number == int(text)]
            how = f"series number {text}"
        else:
            matches = [s for s in self.series if s.series_instance_uid == text]
            how = f"SeriesInstanceUID {text}"
        if not matches:
            known = ", ".join(s.label() for s in self.series) or "no series"
            raise SeriesSelectionError(f"{self.root}: no series with {how}; the folder holds {known}")
        if len(matches) > 1:
            listed = "; ".join(f"{s.label()} UID {s.series_instance_uid}" for s in matches)
            raise SeriesSelectionError(
                f"{self.root}: {how} matches {len(matches)} series ({listed})",
                hint="pass the SeriesInstanceUID instead",
            )
        chosen = matches[0]
        if chosen.problem == "duplicates":
            return chosen, f"requested by {how} (duplicate positions: kept only if identical)"
        if chosen.problem in ("file", "geometry"):
            _raise_damaged([chosen], self.root, self.unreadable)
        if not chosen.usable:
            raise SeriesSelectionError(
                f"{self.root}: {chosen.label()} cannot be loaded as a CT volume: {'; '.join(chosen.reasons)}"
            )
        return chosen, f"requested by {how}"


def _raise_damaged(damaged: list[SeriesInfo], root: str, unreadable: list[dict[str, str]]) -> None:
    """Raise the error of CT series that would be volumes but for their files or geometry."""
    if not damaged:
        return
    message = f"{root}: " + "; ".join(f"{s.label()} cannot be loaded: {'; '.join(s.reasons)}" for s in damaged)
    if unreadable:  # often the missing slices themselves
        shown = ", ".join(f"{u['file']} ({u['reason']})" for u in unreadable[:3])
        message += f"; unreadable DICOM file(s): {shown}{' ...' if len(unreadable) > 3 else ''}"
    if any(s.problem in ("geometry", "duplicates") for s in damaged):
        raise GeometryError(
            message,
            hint="re-export the complete series, pick another with --series, accept wider gaps with --max-gap-mm, "
                 "or fill them by interpolation with --resample-gaps",
        )
    raise DicomError(message)


def _files(folder: Path) -> list[Path]:
    """Every regular file under ``folder``, recursively, in a stable (sorted) order."""
    found = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        found.extend(Path(directory) / name for name in sorted(names))
    return found


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value).strip() or None if value is not None else None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def kernel_class(kernel: str | None) -> str | None:
    """'bone' for sharp (bone, lung, edge) reconstruction kernels, 'soft' otherwise.

    Parameters
    ----------
    kernel : str or None
        The ConvolutionKernel text (e.g. ``B70f``, ``BONE``, ``Br40``), matched by :data:`BONE_KERNEL`.

    Returns
    -------
    {"bone", "soft"} or None
        None when the kernel is unknown.
    """
    if kernel is None:
        return None
    return "bone" if BONE_KERNEL.search(kernel) else "soft"


def _describe(uid: str, planes: list[Plane], root: Path, layout: StackLayout | None) -> SeriesInfo:
    """Summarise one series and decide whether it can be a volume, and a candidate for auto."""
    ds = planes[0].header
    image_type = [str(v) for v in (ds.get("ImageType") or [])]
    sop_class = planes[0].sop_class_uid
    modality = _text(ds, "Modality")
    reasons: list[str] = []
    notes: list[str] = []
    if "PixelData" not in ds:
        reasons.append("no image data (not an image object)")
    if modality != "CT":
        reasons.append(f"modality {modality or 'missing'}, not CT")
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        reasons.append(
            "secondary capture (a screenshot or report page such as an exam/dose summary), not CT image data"
        )
    elif sop_class not in CT_IMAGE_STORAGE:
        reasons.append(f"not a CT image object (SOP class {sop_class})")
    if any(v.upper() == "LOCALIZER" for v in image_type):
        reasons.append("localizer (scout): a projection image, not cross-sections")
    if any((p.samples_per_pixel or 1) != 1 for p in planes):
        reasons.append("colour images, not CT numbers")
    problem = "not a volume" if reasons else None
    truncated = sorted({_relative(p.path, root) for p in planes if p.truncated})
    if truncated and not reasons:
        shown = ", ".join(truncated[:3]) + (" ..." if len(truncated) > 3 else "")
        reasons.append(f"{len(truncated)} truncated file(s) ({shown}): re-export the series")
        problem = "file"
    if layout is None and not reasons:
        reasons.append("no image position/orientation: cannot place the slices")
        problem = "geometry"
    if layout is not None and not reasons:
        reasons.extend(layout.problems)
        if layout.duplicates:
            reasons.append(
                f"{len(layout.duplicates)} slice position(s) hold more than one different image "
                "(repeated acquisitions or phases in one series)"
            )
        problem = "geometry" if reasons else None
        if layout.duplicates and not layout.problems:
            problem = "duplicates"  # loadable if the images at each position are identical
        if layout.problems and len(layout.order) < 2:
            problem = "not a volume"
        if layout.dropped_copies:
            notes.append(f"{layout.dropped_copies} duplicate copies of the same instance ignored")

    spacing_min = spacing_max = coverage = tilt_geometry = None
    if layout is not None and len(layout.order) > 1:
        steps = layout.spacings_mm
        spacing_min, spacing_max = float(steps.min()), float(steps.max())
        coverage = float(layout.positions_mm[-1])
        tilt_geometry = round(layout.tilt_deg, 2) if layout.sheared else 0.0
    first = planes[0]
    kernel = convolution_kernel(ds)
    agent = contrast_agent(ds)
    descriptions = " ".join(filter(None, [_text(ds, "SeriesDescription"), _text(ds, "StudyDescription"),
                                          _text(ds, "ProtocolName")]))
    info = SeriesInfo(
        series_instance_uid=uid,
        series_number=to_int(ds.get("SeriesNumber")),
        series_description=_text(ds, "SeriesDescription"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        modality=modality,
        sop_class=CT_IMAGE_STORAGE.get(sop_class, UID(sop_class).name),
        image_type=image_type,
        folders=sorted({_relative(p.path.parent, root) for p in planes}),
        instances=len({p.path for p in planes}),
        slices=len(planes),
        matrix=[first.rows, first.columns] if first.rows else None,
        pixel_spacing_mm=list(first.pixel_spacing) if first.pixel_spacing else None,
        slice_thickness_mm=first.slice_thickness,
        spacing_between_slices_min_mm=spacing_min,
        spacing_between_slices_max_mm=spacing_max,
        coverage_mm=coverage,
        gantry_tilt_deg=to_float(ds.get("GantryDetectorTilt")),
        tilt_from_geometry_deg=tilt_geometry,
        transfer_syntaxes=sorted({transfer_syntax_name(p.transfer_syntax_uid) for p in planes}),
        contrast_agent=agent,
        convolution_kernel=kernel,
        kernel_class=kernel_class(kernel),
        angio_hint=bool(agent) or bool(ANGIO_HINT.search(descriptions)),
        usable=not reasons,
        reasons=reasons,
        problem=problem,
        notes=notes,
    )
    if info.usable:
        original = [v.upper() for v in image_type[:2]] == ["ORIGINAL", "PRIMARY"]
        normal_z = abs(float(layout.normal[2]))
        axial = normal_z >= np.cos(np.radians(AXIAL_MAX_ANGLE_DEG))
        if not original:
            info.not_auto_reason = "not ORIGINAL/PRIMARY (derived or secondary images)"
        elif not axial:
            info.not_auto_reason = "not axial (a reformat)"
        else:
            info.auto_candidate = True
    else:
        info.not_auto_reason = "cannot be a volume"
    return info


def rank_key(info: SeriesInfo, prefer_bone: bool = False) -> tuple:
    """Sort key for ``auto``: smaller is better.

    In order: contrast/angio hints (a CTA is what we model); thin slices (<= 1.5 mm) before
    thick ones; the wanted kernel class (soft tissue unless ``prefer_bone``); thinner slices;
    more coverage; more slices.

    Parameters
    ----------
    info : SeriesInfo
        A candidate series.
    prefer_bone : bool
        Rank bone (sharp) kernels before soft-tissue ones.

    Returns
    -------
    tuple
        ``(not angio, thicker than THIN_SLICE_MM, not the wanted kernel, thickness in mm rounded to
        0.01, -coverage in mm, -slices)``; a missing thickness counts as 99 mm.
    """
    thickness = info.slice_thickness_mm or info.spacing_between_slices_min_mm or 99.0
    wanted = "bone" if prefer_bone else "soft"
    return (
        not info.angio_hint,
        thickness > THIN_SLICE_MM,
        info.kernel_class not in (wanted, None),
        round(thickness, 2),
        -(info.coverage_mm or 0.0),
        -info.slices,
    )


def _tied(a: SeriesInfo, b: SeriesInfo, prefer_bone: bool) -> bool:
    """Two candidates no criterion separates (coverage within ``SAME_COVERAGE``)."""
    if rank_key(a, prefer_bone)[:4] != rank_key(b, prefer_bone)[:4]:
        return False
    coverage_a, coverage_b = a.coverage_mm or 0.0, b.coverage_mm or 0.0
    return abs(coverage_a - coverage_b) <= SAME_COVERAGE * max(coverage_a, coverage_b, 1e-9)


def choose(series: list[SeriesInfo], prefer_bone: bool = False) -> tuple[str | None, str, bool, list[str]]:
    """Pick the series for ``auto``: (uid or None, reason, ambiguous, notes).

    Parameters
    ----------
    series : list of SeriesInfo
        Every series of the folder; only those with ``auto_candidate`` compete.
    prefer_bone : bool
        Rank bone (sharp) kernels before soft-tissue ones (:func:`rank_key`).

    Returns
    -------
    tuple of (str or None, str, bool, list of str)
        The chosen SeriesInstanceUID (None when nothing qualifies or the best ties), the reason in
        words, whether the choice was ambiguous, and notes (several studies, ties).
    """
    notes: list[str] = []
    candidates = sorted((s for s in series if s.auto_candidate), key=lambda s: rank_key(s, prefer_bone))
    if not candidates:
        if not series:
            return None, "no DICOM image series found", False, notes
        why = "; ".join(f"{s.label()}: {'; '.join(s.reasons) or s.not_auto_reason}" for s in series)
        return None, f"no ORIGINAL/PRIMARY axial CT volume to choose ({why})", False, notes
    best = candidates[0]
    studies = {s.study_instance_uid for s in candidates}
    if len(studies) > 1:
        notes.append(f"the folder holds {len(studies)} studies; the choice was made across all of them")
    ties = [s for s in candidates[1:] if _tied(best, s, prefer_bone)]
    if ties:
        listed = "; ".join(f"{s.label()} (UID {s.series_instance_uid})" for s in [best, *ties])
        notes.append(f"ambiguous: nothing separates {listed}")
        return None, f"ambiguous automatic choice between {listed}: pass --series", True, notes
    parts = [f"thinnest ORIGINAL/PRIMARY axial CT ({best.slice_thickness_mm} mm slices)"]
    if best.angio_hint:
        parts.insert(0, "contrast/angio series")
    if best.kernel_class:
        parts.append(f"{best.kernel_class} kernel {best.convolution_kernel}")
    if best.coverage_mm is not None:
        parts.append(f"{best.coverage_mm:.0f} mm coverage in {best.slices} slices")
    others = len(candidates) - 1
    parts.append(f"{others} other candidate(s)" if others else "the only candidate")
    return best.series_instance_uid, f"{best.label()}: " + ", ".join(parts), False, notes


def inventory(folder: str | Path, *, prefer_bone: bool = False, max_gap_mm: float | None = None,
              allow_gaps: bool = False) -> Inventory:
    """Walk a study folder (recursively) and describe every series in it.

    Parameters
    ----------
    folder : str or Path
        A folder of DICOM files in any layout, or a single DICOM file (e.g. an enhanced
        multi-frame CT).
    prefer_bone : bool
        Let ``auto`` prefer bone (sharp) kernels over soft-tissue ones.
    max_gap_mm : float, optional
        Largest allowed step between slices, mm (see :func:`pipeline.load.stack.analyse`).
    allow_gaps : bool
        A series with gaps is usable (the loader will resample across them).

    Returns
    -------
    Inventory

    Raises
    ------
    DicomError
        If ``folder`` does not exist, or is a single file that is not DICOM (exit code 5).
    SeriesSelectionError
        If the folder holds no DICOM image and no unreadable DICOM file (exit code 6).
    """
    root = Path(folder)
    if not root.exists():
        raise DicomError(f"{root}: no such file or folder")
    files = [root] if root.is_file() else _files(root)
    base = root.parent if root.is_file() else root
    non_dicom = index_files = 0
    unreadable: list[dict[str, str]] = []
    grouped: dict[str, list[Plane]] = {}
    for path in files:
        try:
            ds = read_header(path)
        except Exception as error:  # pydicom raises many types on damaged headers
            reason = f"damaged DICOM header ({type(error).__name__})"
            unreadable.append({"file": _relative(path, base), "reason": reason})
            continue
        if ds is None:
            if root.is_file():
                raise DicomError(f"{root}: not a DICOM file (no DICM prefix) nor a NIfTI/NRRD/MHA image",
                                 hint="give a DICOM folder, a DICOM file or an image file")
            non_dicom += 1
            continue
        meta = getattr(ds, "file_meta", Dataset())
        if str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY or "DirectoryRecordSequence" in ds:
            index_files += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "")).strip()
        if not uid:
            reason = "no SeriesInstanceUID (incomplete or truncated header)"
            unreadable.append({"file": _relative(path, base), "reason": reason})
            continue
        grouped.setdefault(uid, []).extend(planes_from_header(path, ds, path.stat().st_size))
    series = []
    for uid, planes in grouped.items():
        layout = analyse(planes, max_gap_mm, allow_gaps=allow_gaps) if "PixelData" in planes[0].header else None
        series.append(_describe(uid, planes, base, layout))
    if not grouped and not unreadable:
        raise SeriesSelectionError(
            f"{root}: no DICOM images found ({non_dicom} non-DICOM and {index_files} index file(s) skipped)",
            hint="point at the folder that holds the exported DICOM series",
        )
    chosen, reason, ambiguous, notes = choose(series, prefer_bone)
    if unreadable:
        notes.append(f"{len(unreadable)} DICOM file(s) could not be read")
    result = Inventory(
        root=str(root),
        series=series,
        skipped_non_dicom=non_dicom,
        skipped_index_files=index_files,
        unreadable=unreadable,
        chosen=chosen,
        chosen_reason=reason,
        ambiguous=ambiguous,
        notes=notes,
    )
    result._planes = grouped
    logger.debug("inventory: %d series, %d non-DICOM, %d index files", len(series), non_dicom, index_files)
    return result
