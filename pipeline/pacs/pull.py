"""Pull a CT series from a DICOM node by accession number into a folder ``load_series`` reads.

Find the study (C-FIND / QIDO-RS), list its series, choose one (``auto`` chooses as ``inspect``
does, from the retrieved headers), list its instances, retrieve them (C-GET, C-MOVE or WADO-RS)
into a temporary sibling of the output folder, and rename it into place only if every listed
instance arrived: a partial retrieve is refused, naming how many and which instance numbers are
missing, so a volume with holes is never loaded.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError, DicomError, PacsError, SeriesSelectionError
from pipeline.pacs.nodes import Node
from pipeline.pacs.query import InstanceMatch, SeriesMatch, StudyMatch, exact_keys, exactly, instance_file_name
from pipeline.report import Report

log = logging.getLogger(__name__)


def client_for(node: Node):
    """The client that speaks the node's protocol: DICOMweb or DIMSE.

    Parameters
    ----------
    node : Node
        The node to talk to.

    Returns
    -------
    WebClient or DimseClient
        :class:`pipeline.pacs.web.WebClient` for a URL, else :class:`pipeline.pacs.dimse.DimseClient`.
    """
    if node.is_dicomweb:
        from pipeline.pacs.web import WebClient

        return WebClient(node)
    from pipeline.pacs.dimse import DimseClient

    return DimseClient(node)


@dataclass
class PullReport(Report):
    """What a pull found and retrieved (no patient data, no accession number)."""

    node: str
    method: str
    study_instance_uid: str
    series_instance_uid: str
    series: list[SeriesMatch]
    instances_listed: int
    instances_received: int
    folder: Path
    seconds: float
    reused: bool = False
    notes: list[str] = field(default_factory=list)


def find_study(client, accession: str | None, study_uid: str | None = None) -> StudyMatch:
    """The one study of an accession number (or a Study Instance UID) at the client's node.

    Parameters
    ----------
    client : WebClient or DimseClient
        The node's client (:func:`client_for`).
    accession : str or None
        The Accession Number.
    study_uid : str, optional
        The Study Instance UID, to pick one of several studies (or instead of ``accession``).

    Returns
    -------
    StudyMatch
        The study as the node lists it.

    Raises
    ------
    ConfigError
        Neither an accession number nor a Study Instance UID is given, or one is not an exact
        value (blank, a wildcard, a backslash; a UID that is not one): refused before any query.
    PacsError
        No study matches exactly, or several do and no ``study_uid`` picks one (they are listed).
        An answer whose Accession Number or Study Instance UID is not exactly the one asked for
        is ignored (its count is logged, never its values).
    """
    keys = exact_keys(accession, study_uid)
    accession, study_uid = keys.get("AccessionNumber"), keys.get("StudyInstanceUID")
    label = client.node.label
    found = client.find("STUDY", keys)
    studies = [StudyMatch.from_dataset(ds) for ds in exactly(found, keys, required=True)]
    ignored = len(found) - len(studies)
    if ignored:
        log.warning("%s: ignored %d of %d study answer(s) whose accession number or Study Instance UID is not "
                    "exactly the one asked for", label, ignored, len(found))
    log.info("%s: %d study(ies) match", label, len(studies))
    if not studies:
        what = "the accession number given" if accession else "the Study Instance UID given"
        what += f" (study {study_uid})" if accession and study_uid else ""
        what += f"; it answered with {ignored} other study(ies), ignored" if ignored else ""
        raise PacsError(f"node {label} has no study for {what}",
                        hint="check the accession number and that the study was sent to this node")
    if len(studies) > 1:
        listed = "; ".join(study.label() for study in studies)
        raise PacsError(f"node {label} has {len(studies)} studies for the accession number given: {listed}",
                        hint="choose one with --study UID (imaging.study in a case file)")
    return studies[0]


def list_series(client, study: StudyMatch) -> list[SeriesMatch]:
    """The series of a study as the node lists them, by series number.

    Parameters
    ----------
    client : WebClient or DimseClient
        The node's client (:func:`client_for`).
    study : StudyMatch
        The study (:func:`find_study`).

    Returns
    -------
    list of SeriesMatch
        Sorted by series number (series without one last), then UID.
    """
    keys = {"StudyInstanceUID": study.study_instance_uid}
    found = [SeriesMatch.from_dataset(ds) for ds in _only(client, "SERIES", keys)]
    return sorted(found, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid))


def list_instances(client, study_uid: str, series_uid: str) -> list[InstanceMatch]:
    """The instances of one series as the node lists them (an IMAGE-level query).

    Parameters
    ----------
    client : WebClient or DimseClient
        The node's client (:func:`client_for`).
    study_uid : str
        The Study Instance UID.
    series_uid : str
        The Series Instance UID.

    Returns
    -------
    list of InstanceMatch
        In the node's order.
    """
    keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
    return [InstanceMatch.from_dataset(ds) for ds in _only(client, "IMAGE", keys)]


def _only(client, level: str, keys: dict[str, str]) -> list:
    """A query's answers that belong to the study (and series) asked for; others are ignored and counted."""
    found = client.find(level, keys)
    kept = exactly(found, keys, required=False)
    if len(kept) < len(found):
        log.warning("%s: ignored %d of %d %s answer(s) of another study or series", client.node.label,
                    len(found) - len(kept), len(found), level.lower())
    return kept


def _named(series: list[SeriesMatch], wanted: str) -> SeriesMatch:
    for match in series:
        if match.series_instance_uid == wanted or (wanted.isdigit() and match.series_number == int(wanted)):
            return match
    listed = "; ".join(s.label() for s in series) or "none"
    raise SeriesSelectionError(f"the study has no series {wanted!r}; it has: {listed}",
                               hint="give --series auto, a Series Instance UID or a series number")


def _missing_message(client, series: SeriesMatch, listed: list[InstanceMatch], received: set[str]) -> str | None:
    """Why a retrieve is partial (how many and which instance numbers are missing), or None if whole."""
    missing = [i for i in listed if i.sop_instance_uid not in received]
    if not missing:
        return None
    numbers = sorted(i.instance_number for i in missing if i.instance_number is not None)
    where = f"instance number(s) {', '.join(map(str, numbers[:20]))}{' ...' if len(numbers) > 20 else ''}" \
        if numbers else "instances without numbers"
    return (f"partial retrieve from node {client.node.label}: {len(listed) - len(missing)} of {len(listed)} listed "
            f"instances of series {series.series_instance_uid} arrived; missing {len(missing)}: {where}. "
            "Refused: a volume with holes is never loaded")


def retrieve_complete(client, study_uid: str, series: SeriesMatch, folder: Path,
                      listed: list[InstanceMatch] | None = None) -> tuple[int, int]:
    """Retrieve a whole series into ``folder``, refusing a partial retrieve.

    Whole means: as many distinct instances as the node counts in the series
    (``NumberOfSeriesRelatedInstances`` of the series query), or every instance of its listing.
    The instance-level query (about a second for a 500-slice series at a local Orthanc, longer
    than the WADO-RS retrieve itself) is made only when the count is unknown, when the client
    needs the series' storage classes (DIMSE), or to name what is missing after a mismatch.

    Parameters
    ----------
    client : WebClient or DimseClient
        The node's client (:func:`client_for`).
    study_uid : str
        The Study Instance UID.
    series : SeriesMatch
        The series as the node lists it (its ``instances`` count is used when known).
    folder : Path
        Where the files are written (created; not flushed: :func:`pipeline.files.write_staged`).
    listed : list of InstanceMatch, optional
        The node's instance listing of the series, if the caller already has it.

    Returns
    -------
    tuple of (int, int)
        The instances the node counts in the series, and the instances received.

    Raises
    ------
    PacsError
        The node lists no instance, or fewer arrived than it counts (the message names how many
        and which instance numbers are missing).
    """
    uid = series.series_instance_uid
    if listed is None and (series.instances is None or client.needs_sop_classes):
        listed = list_instances(client, study_uid, uid)
    expected = len(listed) if listed is not None else series.instances
    if not expected:
        raise PacsError(f"node {client.node.label} lists no instances in series {uid}")
    classes = sorted({i.sop_class_uid for i in listed or [] if i.sop_class_uid})
    received = set(client.retrieve_series(study_uid, uid, classes, folder, expected=expected))
    if listed is None and len(received) != expected:  # the count disagrees: list them to say what is missing
        listed = list_instances(client, study_uid, uid)
    why = _missing_message(client, series, listed, received) if listed is not None else None
    if why:
        raise PacsError(why, hint="pull again; if it persists, the archive cannot serve the whole series")
    return expected, len(received)


def _choose_auto(client, study: StudyMatch, series: list[SeriesMatch], staging: Path) -> tuple[SeriesMatch, list[str]]:
    """``auto``: retrieve the CT series and let the inventory choose, as ``inspect`` does."""
    from pipeline.load import inventory

    candidates = [s for s in series if s.modality == "CT"]
    if not candidates:
        raise SeriesSelectionError(f"the study has no CT series at node {client.node.label}; it has: "
                                   f"{'; '.join(s.label() for s in series) or 'none'}")
    if len(candidates) == 1:
        return candidates[0], []
    for match in candidates:
        retrieve_complete(client, study.study_instance_uid, match, staging / _staged(match))
    found = inventory(staging)
    if not found.chosen:
        raise SeriesSelectionError(f"auto chooses no series of the study: {found.chosen_reason}",
                                   hint="give --series with a Series Instance UID or number")
    chosen = next(s for s in candidates if s.series_instance_uid == found.chosen)
    return chosen, [f"auto chose {chosen.label()}: {found.chosen_reason}"]


def _staged(series: SeriesMatch) -> str:
    """The staging subfolder of a series retrieved for ``auto`` (a hash: no UID in a file name)."""
    return "s" + instance_file_name(series.series_instance_uid).removesuffix(".dcm")


def pull(node: Node, out_dir: str | Path, *, accession: str | None = None, study_uid: str | None = None,
         series: str = "auto") -> PullReport:
    """Pull one series of a study from a node into ``out_dir`` (created; must be new or hold that series).

    Parameters
    ----------
    node : Node
        Where to pull from (:func:`pipeline.pacs.resolve_node`).
    out_dir : path
        The folder to write the series' files into (named by a hash of each SOP Instance UID).
    accession : str, optional
        The study's Accession Number.
    study_uid : str, optional
        The Study Instance UID, to choose among several studies of one accession (or instead of it).
    series : str
        ``auto``, a Series Instance UID or a series number.

    Returns
    -------
    PullReport
        What was found and retrieved, with the time it took (s).

    Raises
    ------
    ConfigError
        ``out_dir`` exists and does not hold exactly that series, or the accession number or
        Study Instance UID is not one exact value (:func:`find_study`).
    DicomError
        ``out_dir`` holds the series' files by name but one is damaged (not DICOM, another
        instance, truncated): it is not reused.
    """
    clock = time.perf_counter()
    out_dir = Path(out_dir)
    client = client_for(node)
    method = "WADO-RS" if node.is_dicomweb else "C-MOVE" if node.retrieve == "move" else "C-GET"
    study = find_study(client, accession, study_uid)
    all_series = list_series(client, study)
    log.info("%s: study %s has %d series", node.label, study.study_instance_uid, len(all_series))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.pull-", dir=out_dir.parent))
    try:
        if series == "auto":
            chosen, notes = _choose_auto(client, study, all_series, staging)
        else:
            chosen, notes = _named(all_series, series), []
        if out_dir.exists():
            listed = list_instances(client, study.study_instance_uid, chosen.series_instance_uid)
            if _holds(out_dir, listed):
                _refuse_damaged(out_dir, listed)
                return PullReport(node.label, method, study.study_instance_uid, chosen.series_instance_uid,
                                  all_series, len(listed), 0, out_dir, round(time.perf_counter() - clock, 3),
                                  reused=True, notes=notes + ["the folder already held every instance"])
            raise ConfigError(f"{out_dir} already exists and is not this series",
                              hint="give a new --out folder or remove it")
        target = staging / "chosen"
        if notes:  # auto retrieved every CT series to choose: the chosen one is complete already
            (staging / _staged(chosen)).rename(target)
            listed_count = received = len(list(target.iterdir()))
        else:
            listed_count, received = retrieve_complete(client, study.study_instance_uid, chosen, target)
        target.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = round(time.perf_counter() - clock, 3)
    log.info("pulled %d instance(s) of series %s from %s in %.1f s", received, chosen.series_instance_uid,
             node.label, seconds)
    return PullReport(node.label, method, study.study_instance_uid, chosen.series_instance_uid, all_series,
                      listed_count, received, out_dir, seconds, notes=notes)


def _holds(folder: Path, listed: list[InstanceMatch]) -> bool:
    return {p.name for p in folder.iterdir()} == {instance_file_name(i.sop_instance_uid) for i in listed}


def _refuse_damaged(folder: Path, listed: list[InstanceMatch]) -> None:
    """Refuse to reuse a folder any of whose files is damaged (see :func:`file_damage`)."""
    problems = [f"{name}: {why}" for name, why in
                ((instance_file_name(i.sop_instance_uid), file_damage(folder / instance_file_name(i.sop_instance_uid),
                                                                      i.sop_instance_uid)) for i in listed) if why]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DicomError(f"{folder} holds every file of the series by name, but {len(problems)} of its {len(listed)} "
                         f"files are damaged: {problems[0]}{more}; it is not reused",
                         hint=f"remove the folder {folder} and pull again")


def file_damage(path: Path, sop_instance_uid: str) -> str | None:
    """What is wrong with a pulled file, or None if it is whole: read cheaply, pixel data unread.

    The dataset is parsed with its large values deferred (0.34 s for 500 CT slices of 512 x 512
    from the page cache, where a full read takes 0.6 s): the file must be DICOM, be the instance
    its name stands for (File Meta and dataset), and hold all of its pixel data.

    Parameters
    ----------
    path : Path
        The file.
    sop_instance_uid : str
        The SOP Instance UID its name stands for.

    Returns
    -------
    str or None
        Why the file cannot be used (one phrase, no patient data), or None.
    """
    import pydicom
    from pydicom.uid import UID

    try:
        size = path.stat().st_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of a truncated encapsulated value; judged below
            ds = pydicom.dcmread(path, defer_size=1024)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as error:
        return f"not a readable DICOM file ({type(error).__name__})"
    meta_uid = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "")).rstrip("\0 ")
    if meta_uid != sop_instance_uid or str(ds.get("SOPInstanceUID", "")).rstrip("\0 ") != sop_instance_uid:
        return "holds another instance than its name stands for"
    pixels = ds.get_item(0x7FE00010, keep_deferred=True)  # the raw element: its value is not read
    sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if pixels is None:
        return "truncated: its pixel data is missing" if "Image Storage" in UID(sop_class).name else None
    if pixels.length == 0xFFFFFFFF:  # encapsulated: pydicom found the end of its fragments, or dropped it
        return None
    if pixels.value_tell + pixels.length > size:
        return f"truncated: {pixels.value_tell + pixels.length - size} byte(s) of its pixel data missing"
    needed = (int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * int(ds.get("SamplesPerPixel", 1) or 1)
              * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("BitsAllocated", 0) or 0) + 7) // 8
    if pixels.length < needed:
        return f"its pixel data holds {pixels.length} of the {needed} bytes its image size needs"
    return None
