"""DICOMweb client over dicomweb-client: QIDO-RS (find), WADO-RS (retrieve) and STOW-RS (store).

The same three operations as :class:`pipeline.pacs.dimse.DimseClient`, with the same errors:
a :class:`~pipeline.errors.PacsError` naming the node's URL (never its credentials).
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword

from pipeline.errors import PacsError
from pipeline.files import write_staged
from pipeline.pacs.multipart import MultipartError, boundary_of, multipart_parts
from pipeline.pacs.nodes import Node
from pipeline.pacs.query import QUERY_KEYS, StoreOutcome, instance_file_name

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


#: Every instance of a retrieve as stored at the node (no transcoding), as Part 10 files.
_RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Bytes asked of the socket at a time while a retrieve streams in.
_CHUNK = 1 << 18
#: Writer threads, and parts read ahead of them at most (about 0.5 MiB each for a CT slice).
_WRITERS, _AHEAD = 4, 16


def _tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


#: A UID's characters (PS3.5 9.1), and the VRs whose length field has 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_UID = re.compile(rb"[0-9]+(\.[0-9]+)*")
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"))


def instance_uid_of(content: bytes) -> str | None:
    """The Media Storage SOP Instance UID in a Part 10 file's File Meta Information.

    Read by hand: the File Meta group is always explicit VR little endian after the 128-byte
    preamble and ``DICM`` (PS3.10 7.1). Measured against pydicom for a 500-slice series:
    ``read_partial(..., stop_when=group > 2)`` takes 0.11 s of CPU per 500 files (while the whole
    transfer takes about 0.3 s), this 0.7 ms, for the same UIDs (tests/test_pacs_multipart.py
    checks them against pydicom's).

    Parameters
    ----------
    content : bytes
        The file's bytes (at least its File Meta Information).

    Returns
    -------
    str or None
        The UID, or None if ``content`` is not a Part 10 file or its File Meta names no instance.
    """
    if content[128:132] != b"DICM":
        return None
    at = 132
    while at + 12 <= len(content):
        group, element = struct.unpack_from("<HH", content, at)
        if group != 2:
            return None
        if bytes(content[at + 4:at + 6]) in _LONG_VRS:
            (length,), at = struct.unpack_from("<I", content, at + 8), at + 12
        else:
            (length,), at = struct.unpack_from("<H", content, at + 6), at + 8
        if element == 3:
            uid = bytes(content[at:at + length]).rstrip(b"\0 ") if at + length <= len(content) else b""
            return uid.decode("ascii") if _UID.fullmatch(uid) else None
        at += length
    return None


def write_parts(parts: Iterable[tuple[str, bytes]], folder: Path, *, what: str) -> list[str]:
    """Write each multipart part, a Part 10 file, into ``folder`` named by its SOP Instance UID.

    The parts are read in this thread and written by a small pool (the writes overlap the
    download); at most a few parts wait in memory for a writer. Nothing is flushed to disk
    (:func:`pipeline.files.write_staged` says why).

    Parameters
    ----------
    parts : iterable of (str, bytes)
        (header block, content) pairs, as :func:`pipeline.pacs.multipart.multipart_parts` yields them.
    folder : Path
        An existing folder; each file is written whole by :func:`pipeline.files.write_staged`.
    what : str
        Where the parts come from, for messages (e.g. ``"node URL, series UID"``).

    Returns
    -------
    list of str
        The SOP Instance UIDs of the parts, in order.

    Raises
    ------
    PacsError
        A part is not a DICOM Part 10 file, or the body is not a complete multipart body. Every
        write started has ended when this is raised (nothing is written afterwards).
    """
    slots = threading.BoundedSemaphore(_AHEAD)

    def write(index: int, content: bytes) -> str:
        """Write one part under its final name (in a writer thread).

        Parameters
        ----------
        index : int
            The part's position in the answer, from 0 (for the message).
        content : bytes
            The part's content.

        Returns
        -------
        str
            Its SOP Instance UID.

        Raises
        ------
        PacsError
            The part is not a DICOM Part 10 file.
        """
        try:
            uid = instance_uid_of(content)
            if uid is None:
                raise PacsError(f"{what}: part {index + 1} of the answer is not a DICOM Part 10 file",
                                 hint="the node must send the instances as application/dicom")
            write_staged(folder / instance_file_name(uid), content)
            return uid
        finally:
            slots.release()

    received: list[str] = []
    with ThreadPoolExecutor(_WRITERS, thread_name_prefix="wado-write") as pool:
        pending: deque = deque()
        try:
            for index, (_, content) in enumerate(parts):
                slots.acquire()
                pending.append(pool.submit(write, index, content))
                while pending and pending[0].done():  # a writer's error stops the download early
                    received.append(pending.popleft().result())
        except BaseException as error:
            for future in pending:  # those not started yet; the running ones end before the pool does
                future.cancel()
            if isinstance(error, MultipartError):
                raise PacsError(f"{what}: the answer broke off after {len(received) + len(pending)} part(s) "
                                f"({error})", hint="pull again; if it persists, check the node") from error
            raise
        received += [future.result() for future in pending]
    return received


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and every error it wraps (causes, contexts, and urllib3's ``reason``), each once."""
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]


def _stalled(error: BaseException) -> bool:
    """Whether a requests error is, deep down, a read that timed out."""
    return any(isinstance(cause, TimeoutError) for cause in _causes(error))


class WebClient:
    """Query, retrieve and store against one DICOMweb service."""

    #: A WADO-RS retrieve needs no storage classes (see :func:`pipeline.pacs.pull.retrieve_complete`).
    needs_sop_classes = False

    def __init__(self, node: Node):
        self.node = node
        session = requests.Session()
        if node.tls is not None:
            session.verify = str(node.tls.ca_file) if node.tls.verify and node.tls.ca_file else node.tls.verify
            if node.tls.cert_file:
                session.cert = (str(node.tls.cert_file), str(node.tls.key_file))
        self.session = session
        self.client = DICOMwebClient(node.url, session=session, timeout=node.timeout_s)
        self.client.set_http_retry_params(retry=False)

    @contextmanager
    def _talking(self, what: str, progress: Callable[[], str] = str) -> Iterator[None]:
        """Requests' errors as PacsErrors naming the node; ``progress()`` says how far a transfer got."""
        try:
            yield
        except requests.exceptions.Timeout as error:
            raise PacsError(f"node {self.node.label} gave no {what} answer within {self.node.timeout_s:g} s "
                            f"(timeout){progress()}") from error
        except requests.exceptions.ConnectionError as error:
            if _stalled(error):  # a read that times out within a streamed body comes wrapped as a ConnectionError
                raise PacsError(f"node {self.node.label} gave no {what} answer within {self.node.timeout_s:g} s "
                                f"(timeout){progress()}",
                                hint=f"the {what} stalled: no data for {self.node.timeout_s:g} s; try again, and "
                                     "if it persists check the node") from error
            if any(isinstance(cause, socket.gaierror) for cause in _causes(error)):
                raise PacsError(f"node {self.node.label} unreachable: cannot resolve host "
                                f"{urllib.parse.urlsplit(self.node.url).hostname}",
                                hint="check the host name and the DNS of this machine") from error
            raise PacsError(f"node {self.node.label} unreachable: cannot connect ({type(error).__name__})",
                            hint="check the URL and that the service is running") from error
        except requests.exceptions.HTTPError as error:
            code = error.response.status_code if error.response is not None else "?"
            if code in (401, 403):
                raise PacsError(f"node {self.node.label} refused us (HTTP {code})",
                                hint="check the credentials and TLS client certificate") from error
            raise PacsError(f"node {self.node.label} answered the {what} with HTTP {code}") from error
        except requests.exceptions.RequestException as error:  # e.g. a chunked answer broken off
            raise PacsError(f"node {self.node.label} broke off the {what} ({type(error).__name__})",
                            hint="try again; if it persists, check the node") from error

    def find(self, level: str, keys: dict[str, str]) -> list[Dataset]:
        """QIDO-RS at ``level`` with ``keys`` as matching keys.

        Parameters
        ----------
        level : str
            ``STUDY``, ``SERIES`` or ``IMAGE``.
        keys : dict of str to str
            DICOM keyword -> value to match; ``StudyInstanceUID`` and ``SeriesInstanceUID`` go into
            the URL, the rest become search filters.

        Returns
        -------
        list of Dataset
            The results with the return keys of :data:`pipeline.pacs.query.QUERY_KEYS` (every page).
        """
        filters = {k: v for k, v in keys.items() if k not in ("StudyInstanceUID", "SeriesInstanceUID")}
        fields = [_tag(k) for k in QUERY_KEYS[level]]
        study, series = keys.get("StudyInstanceUID"), keys.get("SeriesInstanceUID")
        with self._talking(f"{level.lower()} query"):
            if level == "STUDY":
                found = self.client.search_for_studies(search_filters={**filters, **({"StudyInstanceUID": study}
                                                                                    if study else {})},
                                                       fields=fields, get_remaining=True)
            elif level == "SERIES":
                found = self.client.search_for_series(study_instance_uid=study, search_filters=filters or None,
                                                      fields=fields, get_remaining=True)
            else:
                found = self.client.search_for_instances(study_instance_uid=study, series_instance_uid=series,
                                                         search_filters=filters or None, fields=fields,
                                                         get_remaining=True)
        return [Dataset.from_json(item) for item in found]

    def retrieve_series(self, study_uid: str, series_uid: str, sop_classes: Sequence[str], folder: Path, *,
                        expected: int | None = None) -> list[str]:
        """WADO-RS the whole series into ``folder``, one Part 10 file per instance.

        One multipart request for the series, asking for the instances as stored
        (``transfer-syntax=*``, so the node transcodes nothing). The response is split into parts
        while it arrives and each part's bytes go, as they are, to a pool of writer threads, each
        file written whole under its final name (the SOP Instance UID of the part's File Meta
        Information): no decode and re-encode, no second pass over the files.

        Parameters
        ----------
        study_uid : str
            The Study Instance UID.
        series_uid : str
            The Series Instance UID.
        sop_classes : sequence of str
            Unused (WADO-RS needs no storage classes); the signature of
            :meth:`pipeline.pacs.dimse.DimseClient.retrieve_series`.
        folder : Path
            Where the files are written (created).
        expected : int, optional
            How many instances the node counts in the series (for messages).

        Returns
        -------
        list of str
            The SOP Instance UIDs received, in the order of the response.

        Raises
        ------
        PacsError
            The node cannot be reached or answers with an error, its answer is not a multipart
            response of DICOM files, the stream ends early, or it stalls for the node's timeout
            (naming how many instances had arrived). Files already written stay in
            ``folder`` (the caller's staging folder, removed on failure).
        """
        folder.mkdir(parents=True, exist_ok=True)
        url = f"{self.node.url.rstrip('/')}/studies/{study_uid}/series/{series_uid}"
        arrived = [0]

        def counted(parts: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
            """The parts, each counted as it has arrived whole.

            Parameters
            ----------
            parts : iterable of (str, bytes)
                The multipart parts.

            Yields
            ------
            tuple of (str, bytes)
                Each part, unchanged.
            """
            for part in parts:
                arrived[0] += 1
                yield part

        def progress() -> str:
            """How far the retrieve got, for a message.

            Returns
            -------
            str
                `` after K of M instance(s) of series UID``.
            """
            return f" after {arrived[0]} of {expected if expected is not None else '?'} instance(s) of series " \
                   f"{series_uid}"

        with self._talking("retrieve", progress), self.session.get(url, headers={"Accept": _RETRIEVE_ACCEPT}, stream=True,
                                                         timeout=self.node.timeout_s) as response:
            response.raise_for_status()
            boundary = boundary_of(response.headers.get("Content-Type", ""))
            if boundary is None:
                raise PacsError(f"node {self.node.label} answered the retrieve of series {series_uid} with "
                                f"{response.headers.get('Content-Type') or 'no Content-Type'}, not a multipart "
                                "response of DICOM files")
            parts = counted(multipart_parts(response.iter_content(_CHUNK), boundary))
            received = write_parts(parts, folder, what=f"node {self.node.label}, series {series_uid}")
        log.info("received %d instance(s) from %s", len(received), self.node.label)
        return received

    def series_headers(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """The series' instances as headers, from WADO-RS series metadata (no pixel data is sent).

        Parameters
        ----------
        study_uid : str
            The Study Instance UID.
        series_uid : str
            The Series Instance UID.

        Returns
        -------
        list of Dataset
            One per instance, without Pixel Data; numbers as the JSON gives them.
        """
        with self._talking("metadata"):
            found = self.client.retrieve_series_metadata(study_uid, series_uid)
        pixels = _tag("PixelData")
        return [Dataset.from_json({k: v for k, v in item.items() if k != pixels}) for item in found]

    def store(self, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
        """STOW-RS each dataset (one request each, so each has its own outcome).

        Parameters
        ----------
        datasets : sequence of Dataset
            The instances to store.

        Returns
        -------
        list of StoreOutcome
            One per dataset, in order.

        Raises
        ------
        PacsError
            The node became unreachable (stores that failed, or got no answer within the
            timeout, are outcomes, not errors).
        """
        outcomes = []
        for ds in datasets:
            uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
            try:
                with self._talking("store"):
                    answer = self.client.store_instances([ds], study_instance_uid=str(ds.StudyInstanceUID))
            except PacsError as error:
                cause = error.__cause__
                if isinstance(cause, requests.exceptions.ConnectionError) and not (
                        isinstance(cause, requests.exceptions.Timeout) or _stalled(cause)):
                    raise  # unreachable: the next stores would fail alike
                outcomes.append(StoreOutcome(uid, sop_class, False, str(error)))
                continue
            failed = answer.get("FailedSOPSequence") or []
            ok = not failed and any(str(item.get("ReferencedSOPInstanceUID", "")) == uid
                                    for item in answer.get("ReferencedSOPSequence") or [])
            reason = "" if ok else f"failure reason {failed[0].get('FailureReason', '?')}" if failed else "not listed"
            outcomes.append(StoreOutcome(uid, sop_class, ok, reason))
        return outcomes
