"""Push a model folder into its source study: the Encapsulated STL, a DICOM SEG and the packet PDF.

``model.dcm`` is sent as the document stage wrote it; the SEG (on the source CT series) and the
Encapsulated PDF are built from it (:mod:`pipeline.pacs.objects`) with UIDs derived from its SOP
Instance UID, so a repeat sends the same instances. The ledger's ``transfers`` table records each
instance the node confirmed; a repeat sends only what is not recorded for that node with the
same bytes (what failed or is new), unless ``again`` asks for everything.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from pipeline.errors import DicomError, PacsError
from pipeline.ledger.folders import folder_problems
from pipeline.ledger.transfers import Transfer, Transfers, now
from pipeline.pacs.nodes import Node
from pipeline.pacs.objects import build_encapsulated_pdf, build_segmentation
from pipeline.pacs.pull import client_for, retrieve_complete
from pipeline.pacs.query import SeriesMatch
from pipeline.report import Report

log = logging.getLogger(__name__)


@dataclass
class SentObject(Report):
    """One instance of a push and what became of it."""

    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    sha256: str
    bytes: int
    status: str  # sent, already sent, failed
    reason: str = ""


@dataclass
class PushReport(Report):
    """What a push sent where (no patient data)."""

    node: str
    study_instance_uid: str
    frame_of_reference_uid: str
    objects: list[SentObject]
    sent: int
    already_sent: int
    failed: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _read_model_folder(model_dir: Path) -> tuple[Dataset, dict]:
    for name in ("model.dcm", "mask.nii.gz", "packet.pdf", "packet.json"):
        if not (model_dir / name).is_file():
            raise DicomError(f"{model_dir} has no {name}: not a model folder written by 'anatomodel run'",
                             hint="give the folder OUT/<case_id>/<model_id>")
    problems = folder_problems(model_dir)
    if problems:
        raise DicomError(f"{model_dir} does not match its SHA256SUMS: {problems[0]}",
                         hint="re-run the case; a changed packet is never pushed")
    model = pydicom.dcmread(model_dir / "model.dcm")
    facts = json.loads((model_dir / "packet.json").read_text())
    if str(model.get("PatientIdentityRemoved", "")) == "YES" or (facts.get("deidentification") or {}).get("applied"):
        raise PacsError(f"{model_dir} is a de-identified copy: its UIDs are not the source study's",
                        hint="push the identified model folder")
    return model, facts


def _headers_in(folder: Path, series_uid: str, wanted: set[str]) -> list[Dataset]:
    """The headers (no pixels) of the files of ``folder`` that are ``wanted`` instances of the series."""
    headers = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        if str(ds.get("SeriesInstanceUID", "")) == series_uid and str(ds.get("SOPInstanceUID", "")) in wanted:
            headers.append(ds)
    return headers


def _source_headers(model: Dataset, model_dir: Path, node: Node, client, source: Path | None,
                    scratch: Path) -> tuple[list[Dataset], str]:
    """The source series' instance headers, and where they came from.

    In order: ``source`` if given; the series a case pulled by node into ``<case_dir>/imaging/``
    (the model folder's sibling), if it holds every source image; the node's WADO-RS series
    metadata (one request, no pixel data) for a DICOMweb node; a C-GET/C-MOVE of the series
    otherwise (DIMSE has no header-only retrieve).
    """
    series_uid = str(model.ReferencedSeriesSequence[0].SeriesInstanceUID) if "ReferencedSeriesSequence" in model \
        else ""
    wanted = {str(item.ReferencedSOPInstanceUID) for item in model.get("SourceInstanceSequence", [])}
    if not series_uid or not wanted:
        raise PacsError("model.dcm names no source DICOM series (the model was made from a NIfTI/NRRD file)",
                        hint="a SEG needs the source CT series: run the case on the DICOM series")
    if source is not None:
        headers, origin = _headers_in(source, series_uid, wanted), f"the folder {source}"
    else:
        pulled = model_dir.parent / "imaging"
        for folder in sorted(p for p in pulled.iterdir() if p.is_dir()) if pulled.is_dir() else []:
            headers = _headers_in(folder, series_uid, wanted)
            if {str(ds.SOPInstanceUID) for ds in headers} == wanted:
                return headers, "the series the case pulled"
        if hasattr(client, "series_headers"):
            headers = [ds for ds in client.series_headers(str(model.StudyInstanceUID), series_uid)
                       if str(ds.SOPInstanceUID) in wanted]
            origin = f"the series metadata of {node.label}"
        else:
            match = SeriesMatch(series_uid, None, "", "CT", None)
            retrieve_complete(client, str(model.StudyInstanceUID), match, scratch)
            headers, origin = _headers_in(scratch, series_uid, wanted), f"the series retrieved from {node.label}"
    found = {str(ds.SOPInstanceUID) for ds in headers}
    if found != wanted:
        raise DicomError(f"{len(wanted - found)} of the {len(wanted)} source images of the model are not in {origin}",
                         hint="give --source the series the model was made from")
    return headers, origin


def build_push_objects(model_dir: str | os.PathLike, source_headers: list[Dataset]) -> list[tuple[str, Dataset]]:
    """The three instances of a push: model (STL), segmentation, packet (PDF).

    Parameters
    ----------
    model_dir : path
        ``OUT/<case_id>/<model_id>`` as ``anatomodel run`` wrote it (checked against SHA256SUMS).
    source_headers : list of Dataset
        The source CT series' instance headers (for the SEG's references and planes).

    Returns
    -------
    list of (str, Dataset)
        ``("model", ...)``, ``("segmentation", ...)``, ``("packet", ...)``.
    """
    model_dir = Path(model_dir)
    model, facts = _read_model_folder(model_dir)
    return _build(model_dir, model, facts, source_headers)


def _build(model_dir: Path, model: Dataset, facts: dict, source_headers: list[Dataset]) -> list[tuple[str, Dataset]]:
    from pipeline.geometry import read_mask

    version = str(model.get("SoftwareVersions", "") or "")
    structure = str((facts.get("model") or {}).get("structure") or (facts.get("model") or {}).get("id") or "")
    seg = build_segmentation(read_mask(model_dir / "mask.nii.gz"), source_headers, model, structure=structure,
                             software_version=version)
    model_id = str((facts.get("model") or {}).get("id") or "")
    pdf = build_encapsulated_pdf((model_dir / "packet.pdf").read_bytes(), model,
                                 title=f"Documentation packet, anatomic model {model_id}", software_version=version)
    return [("model", model), ("segmentation", seg), ("packet", pdf)]


def _listed(client, study_uid: str, items: list[SentObject]) -> set[str]:
    """SOP Instance UIDs the node lists in the series of ``items``: a store is confirmed only if listed.

    An archive may answer a C-STORE or STOW-RS with success and still drop the instance (a filter,
    a routing rule); only what a query finds afterwards counts as sent.
    """
    found: set[str] = set()
    for series_uid in sorted({item.series_instance_uid for item in items}):
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        found |= {str(ds.get("SOPInstanceUID", "")) for ds in client.find("IMAGE", keys)}
    return found


def push(model_dir: str | os.PathLike, node: Node, *, source: str | os.PathLike | None = None,
         ledger: str | os.PathLike | None = None, again: bool = False) -> PushReport:
    """Send a model folder's STL, SEG and packet PDF to ``node``, into the source study.

    Parameters
    ----------
    model_dir : path
        ``OUT/<case_id>/<model_id>`` as ``anatomodel run`` wrote it (checked against SHA256SUMS).
    node : Node
        Where to send (:func:`pipeline.pacs.resolve_node`).
    source : path, optional
        A folder holding the source CT series (for the SEG's references); default: the series
        the case pulled (``<case_dir>/imaging/``), else the node's WADO-RS series metadata
        (DICOMweb), else the series retrieved from ``node`` (DIMSE).
    ledger : path, optional
        The ledger file whose ``transfers`` table records what was sent.
    again : bool
        Send every instance, even those the ledger records as sent to this node.

    Returns
    -------
    PushReport
        What was sent, already sent or refused, and where the SEG's source headers came from.

    Raises
    ------
    DicomError
        ``source`` is not an existing folder, or the model folder is not one (checked before any
        network work).
    PacsError
        The node is unreachable or refused one or more instances (those are not recorded;
        pushing again sends them).
    """
    clock = time.perf_counter()
    model_dir = Path(model_dir)
    if source is not None and not Path(source).is_dir():
        raise DicomError(f"the source folder {source} {'is not a folder' if Path(source).exists() else 'does not exist'}",
                         hint="give --source the folder of the CT series the model was made from")
    model, facts = _read_model_folder(model_dir)
    client = client_for(node)
    scratch = Path(tempfile.mkdtemp(prefix=".push-source-"))
    try:
        headers, origin = _source_headers(model, model_dir, node, client, Path(source) if source else None,
                                          scratch / "source")
        objects = _build(model_dir, model, facts, headers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    encoded = [(kind, ds, _part10(ds)) for kind, ds in objects]
    report_objects = []
    with Transfers(ledger) as book:
        pending = []
        for kind, ds, data in encoded:
            digest = hashlib.sha256(data).hexdigest()
            sent_before = not again and book.was_sent(node.label, str(ds.SOPInstanceUID), digest)
            item = SentObject(kind, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), digest,
                              len(data), "already sent" if sent_before else "failed")
            report_objects.append(item)
            if not sent_before:
                pending.append((item, ds))
        outcomes = client.store([ds for _, ds in pending]) if pending else []
        listed = _listed(client, str(model.StudyInstanceUID), [item for (item, _), o in zip(pending, outcomes) if o.ok])
        for (item, _), outcome in zip(pending, outcomes):
            if outcome.ok and item.sop_instance_uid not in listed:
                outcome.ok, outcome.reason = False, "answered success but the node does not list it (filtered out?)"
            if outcome.ok:
                item.status = "sent"
                book.record(Transfer(now(), node.label, item.kind, (facts.get("case") or {}).get("case_id"),
                                     (facts.get("model") or {}).get("id"), str(model.StudyInstanceUID),
                                     item.series_instance_uid, item.sop_class_uid, item.sop_instance_uid,
                                     item.sha256))
            else:
                item.reason = outcome.reason
    counts = {status: sum(o.status == status for o in report_objects) for status in ("sent", "already sent", "failed")}
    report = PushReport(node.label, str(model.StudyInstanceUID), str(model.FrameOfReferenceUID), report_objects,
                        counts["sent"], counts["already sent"], counts["failed"], round(time.perf_counter() - clock, 3),
                        notes=[f"the segmentation's source image headers came from {origin}"])
    log.info("push to %s: %d sent, %d already sent, %d failed", node.label, report.sent, report.already_sent,
             report.failed)
    if report.failed:
        failed = "; ".join(f"{o.kind} {o.sop_instance_uid} ({o.reason})"
                           for o in report_objects if o.status == "failed")
        raise PacsError(f"node {node.label} stored {report.sent + report.already_sent} of {len(report_objects)} "
                        f"instances; refused {report.failed}: {failed}. Nothing refused is recorded as sent",
                        hint="fix the node (or its filter) and push again: only what is missing is sent")
    return report
