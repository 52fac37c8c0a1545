"""DIMSE (DICOM upper layer) client over pynetdicom: C-FIND, C-GET, C-MOVE and C-STORE.

Every failure to talk is a :class:`~pipeline.errors.PacsError` naming the node (``AET@HOST:PORT``):
nothing listening, a peer that does not speak DICOM, no answer within the node's timeout, a
connection lost (after how many instances), an association rejected (with the AE titles), a
failure status. Identifiers and datasets are never logged: pynetdicom's own logger is kept at
WARNING (its debug output dumps datasets, which hold the patient's name), and its warnings and
errors, tracebacks included, become DEBUG lines of this module (shown with ``--verbose`` or
``--debug`` only): the PacsError says what went wrong.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from pipeline.errors import PacsError
from pipeline.files import write_staged
from pipeline.pacs.nodes import Node
from pipeline.pacs.query import QUERY_KEYS, StoreOutcome, instance_file_name

log = logging.getLogger(__name__)


class _LibraryLog(logging.Handler):
    """pynetdicom's records as DEBUG records of this module: no library traceback on the console."""

    def emit(self, record: logging.LogRecord) -> None:
        """Log one pynetdicom record again, at DEBUG, under this module's name.

        Parameters
        ----------
        record : logging.LogRecord
            A pynetdicom warning or error (with its traceback, if any).
        """
        log.debug("pynetdicom: %s", record.getMessage(), exc_info=record.exc_info)


_library = logging.getLogger("pynetdicom")
_library.setLevel(logging.WARNING)
_library.propagate = False
_library.addHandler(_LibraryLog())

_PENDING = (0xFF00, 0xFF01)
#: Storage classes asked for with C-GET when the node's C-FIND does not name the series' classes.
CT_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")
_TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.70",
                      "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"]


def _tls(node: Node) -> tuple[ssl.SSLContext, str] | None:
    if node.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(node.tls.ca_file) if node.tls.ca_file else None)
    if not node.tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if node.tls.cert_file:
        context.load_cert_chain(str(node.tls.cert_file), str(node.tls.key_file))
    return context, str(node.host)


#: The first byte of each DICOM upper layer PDU (PS3.8 9.3), and of a TLS record (alert, handshake).
_PDU_TYPES, _TLS_RECORDS = range(0x01, 0x08), (0x15, 0x16)


def _association_request(node: Node) -> bytes:
    """A minimal A-ASSOCIATE-RQ PDU (no presentation context): any DICOM peer answers it with a PDU."""
    context = b"1.2.840.10008.3.1.1.1"  # the DICOM application context name
    body = struct.pack(">HH", 1, 0) + str(node.ae_title).encode().ljust(16) + \
        node.calling_ae_title.encode().ljust(16) + bytes(32) + b"\x10\x00" + struct.pack(">H", len(context)) + context
    return b"\x01\x00" + struct.pack(">I", len(body)) + body


def _why_not(node: Node) -> str:
    """Why no association came up: a plain TCP connection to the node, and (without TLS) what it
    answers to an association request (a few seconds at most)."""
    where = f"{node.host}:{node.port}"
    no_answer = f"{where} accepted the connection but gave no association answer within {node.timeout_s:g} s"
    try:
        with socket.create_connection((node.host, node.port), timeout=node.timeout_s) as probe:
            if node.tls:
                return no_answer + " (a TLS handshake failed: check the tls options)"
            probe.settimeout(min(node.timeout_s, 5.0))
            try:
                probe.sendall(_association_request(node))
                answer = probe.recv(8)
            except socket.timeout:
                return no_answer + " (if the node speaks TLS, give tls options)"
            except OSError:
                answer = b""
    except socket.timeout:
        return f"no answer from {node.host}:{node.port} within {node.timeout_s:g} s (timeout)"
    except OSError as error:
        return f"cannot connect to {where} ({error.strerror or error})"
    if not answer:
        return f"{where} closed the connection without an association answer"
    if answer[0] in _TLS_RECORDS:
        return f"the peer at {where} answered with TLS (give the node tls options)"
    if answer[0] not in _PDU_TYPES:
        shown = answer.decode("ascii", "replace") if all(32 <= b < 127 for b in answer) else answer[:4].hex(" ")
        return f"the peer at {where} does not speak DICOM (its answer starts with {shown!r}: another service " \
               "on this port?)"
    return f"{where} answered but the association did not come up (it aborted or refused the request)"


class _Watch:
    """When the node last sent anything, to tell a timeout from a connection lost.

    pynetdicom reports both alike (no status); if the node was silent for (about) its timeout,
    it timed out, else the association was aborted or the connection closed.
    """

    def __init__(self) -> None:
        self.last = time.monotonic()

    def seen(self, *_: object) -> None:
        """Note that the node sent something now (an ``EVT_DATA_RECV`` handler).

        Parameters
        ----------
        *_ : object
            The event, unused.
        """
        self.last = time.monotonic()

    def lost(self, node: Node, what: str, progress: str) -> PacsError:
        """The error of an exchange that ended without an answer.

        Parameters
        ----------
        node : Node
            The node.
        what : str
            The exchange (``C-GET``, ``study query``...).
        progress : str
            How far it got (`` after K of M instance(s)``, or empty).

        Returns
        -------
        PacsError
            A timeout if the node was silent for its timeout, else the connection lost.
        """
        if time.monotonic() - self.last >= 0.9 * node.timeout_s:
            return PacsError(f"node {node.label} gave no {what} answer within {node.timeout_s:g} s (timeout){progress}",
                             hint="try again; if it persists, check the node or raise its timeout_s")
        return PacsError(f"node {node.label}: the connection was lost{progress or f' during the {what}'} "
                         "(the association was aborted or the connection closed)",
                         hint="try again; if it persists, check the node")


@contextmanager
def associate(node: Node, ae: AE, watch: _Watch | None = None, **options) -> Iterator[Association]:
    """An established association with ``node``, released when the ``with`` block ends.

    Parameters
    ----------
    node : Node
        The DIMSE peer (its timeouts, in s, become the AE's).
    ae : pynetdicom.AE
        Our application entity, with its requested presentation contexts.
    watch : _Watch, optional
        Told each time the node sends something.
    **options
        Passed to :meth:`pynetdicom.AE.associate` (``ext_neg``, ``evt_handlers``).

    Yields
    ------
    pynetdicom.association.Association
        The established association.

    Raises
    ------
    PacsError
        The node rejected the association (naming both AE titles) or is unreachable (saying why:
        a host name that does not resolve, nothing listening, a peer that does not speak DICOM,
        a timeout, no association answer).
    """
    if watch is not None:
        options["evt_handlers"] = [*options.get("evt_handlers", []), (evt.EVT_DATA_RECV, watch.seen)]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout_s
    ae.connection_timeout = node.timeout_s
    ae.maximum_pdu_size = 0  # let the node send (a retrieve's images) in PDUs as large as it likes
    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=_tls(node), **options)
    except socket.gaierror as error:  # the host name is looked up before any connection
        raise PacsError(f"node {node.label} unreachable: cannot resolve host {node.host}",
                        hint="check the host name and the DNS of this machine") from error
    if assoc.is_rejected:
        raise PacsError(f"node {node.label} rejected the association (called AE title {node.ae_title!r}, calling "
                        f"AE title {node.calling_ae_title!r})",
                        hint="check the node's AE title and that it knows ours")
    if not assoc.is_established:
        raise PacsError(f"node {node.label} unreachable: {_why_not(node)}",
                        hint="check the host, port and that the node is running")
    log.info("association with %s established", node.label)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _check(status: Dataset | None, node: Node, what: str, watch: _Watch, progress: str = "") -> int:
    if status is None or "Status" not in status:
        raise watch.lost(node, what, progress)
    return int(status.Status)


class DimseClient:
    """Query, retrieve and store against one DIMSE node."""

    #: C-GET and C-MOVE propose one presentation context per storage class of the series.
    needs_sop_classes = True

    def __init__(self, node: Node):
        self.node = node

    def find(self, level: str, keys: dict[str, str]) -> list[Dataset]:
        """C-FIND at ``level`` with ``keys`` as matching keys.

        The return keys of :data:`pipeline.pacs.query.QUERY_KEYS` for the level are asked for.

        Parameters
        ----------
        level : str
            ``STUDY``, ``SERIES`` or ``IMAGE``.
        keys : dict of str to str
            DICOM keyword -> value to match (``AccessionNumber``, ``StudyInstanceUID``, ...).

        Returns
        -------
        list of Dataset
            The identifiers the node answered with.

        Raises
        ------
        PacsError
            The node refused the query (a failure status), gave no answer within its timeout, or
            the connection was lost.
        """
        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword in QUERY_KEYS[level]:
            setattr(query, keyword, "")
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        ae = AE(ae_title=self.node.calling_ae_title)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        found, watch = [], _Watch()
        with associate(self.node, ae, watch) as assoc:
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                code = _check(status, self.node, f"{level.lower()} query", watch)
                if code in _PENDING and identifier is not None:
                    found.append(identifier)
                elif code != 0:
                    raise PacsError(f"node {self.node.label} refused the {level.lower()} query (status 0x{code:04X})")
        return found

    def retrieve_series(self, study_uid: str, series_uid: str, sop_classes: Sequence[str], folder: Path, *,
                        expected: int | None = None) -> list[str]:
        """Retrieve every instance of a series into ``folder``, one file each.

        C-GET on the same association, or C-MOVE to a storage SCP we run on ``node.move_port``.

        Parameters
        ----------
        study_uid : str
            The Study Instance UID.
        series_uid : str
            The Series Instance UID.
        sop_classes : sequence of str
            The series' storage SOP classes (one presentation context each; CT if empty).
        folder : Path
            Where the files are written (created), named by :func:`instance_file_name`, each whole
            (:func:`pipeline.files.write_staged`, not flushed).
        expected : int, optional
            How many instances the node counts in the series (for messages).

        Returns
        -------
        list of str
            The SOP Instance UIDs received, in arrival order.
        """
        folder.mkdir(parents=True, exist_ok=True)
        received: list[str] = []
        lock = threading.Lock()
        watch = _Watch()

        def on_store(event: evt.Event) -> int:
            """Write one received instance as it came (its Part 10 bytes).

            Parameters
            ----------
            event : pynetdicom.events.Event
                The C-STORE request of a sub-operation.

            Returns
            -------
            int
                0x0000 (success).
            """
            uid = str(event.request.AffectedSOPInstanceUID)
            write_staged(folder / instance_file_name(uid), event.encoded_dataset())
            with lock:
                received.append(uid)
            watch.seen()
            return 0x0000

        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = series_uid
        classes = list(dict.fromkeys(list(sop_classes) or list(CT_CLASSES)))
        if self.node.retrieve == "move":
            status = self._move(query, classes, on_store, watch)
        else:
            status = self._get(query, classes, on_store, watch)
        code = _check(status, self.node, "C-GET" if self.node.retrieve == "get" else "C-MOVE", watch,
                      f" after {len(received)} of {expected if expected is not None else '?'} instance(s)")
        failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
        if code not in (0x0000, 0xB000) or failed:
            log.warning("retrieve from %s ended with status 0x%04X, %d failed sub-operation(s)",
                        self.node.label, code, failed)
        log.info("received %d instance(s) from %s", len(received), self.node.label)
        return received

    def _get(self, query: Dataset, classes: list[str], on_store, watch: _Watch) -> Dataset | None:
        ae = AE(ae_title=self.node.calling_ae_title)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles = []
        for uid in classes[:120]:
            ae.add_requested_context(uid, _TRANSFER_SYNTAXES)
            roles.append(build_role(uid, scp_role=True))
        final = None
        with associate(self.node, ae, watch, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
            for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                final = status
                if status is None or "Status" not in status or int(status.Status) not in _PENDING:
                    break
        return final

    def _move(self, query: Dataset, classes: list[str], on_store, watch: _Watch) -> Dataset | None:
        scp = AE(ae_title=self.node.calling_ae_title)
        for uid in classes:
            scp.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        scp.network_timeout = scp.dimse_timeout = self.node.timeout_s
        scp.maximum_pdu_size = 0
        try:
            server = scp.start_server(("", int(self.node.move_port)), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])
        except OSError as error:
            raise PacsError(f"cannot listen on port {self.node.move_port} for C-MOVE from {self.node.label} "
                            f"({error.strerror or error})", hint="free the port or set another move_port") from error
        try:
            ae = AE(ae_title=self.node.calling_ae_title)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            final = None
            with associate(self.node, ae, watch) as assoc:
                for status, _ in assoc.send_c_move(query, self.node.calling_ae_title,
                                                   StudyRootQueryRetrieveInformationModelMove):
                    final = status
                    if status is None or "Status" not in status or int(status.Status) not in _PENDING:
                        break
            if final is not None and int(final.get("Status", 0)) == 0xA801:
                raise PacsError(f"node {self.node.label} does not know the move destination "
                                f"{self.node.calling_ae_title!r}",
                                hint=f"register {self.node.calling_ae_title} with our host and port "
                                     f"{self.node.move_port} at the node")
            return final
        finally:
            server.shutdown()

    def store(self, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
        """C-STORE each dataset on one association.

        Parameters
        ----------
        datasets : sequence of Dataset
            The instances to store.

        Returns
        -------
        list of StoreOutcome
            One per dataset, in order (those left when the association was lost failed).
        """
        ae = AE(ae_title=self.node.calling_ae_title)
        for uid in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
            ae.add_requested_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        outcomes, watch = [], _Watch()
        with associate(self.node, ae, watch) as assoc:
            for ds in datasets:
                uid = str(ds.SOPInstanceUID)
                try:
                    status = assoc.send_c_store(ds)
                except ValueError as error:  # no accepted presentation context for its class
                    outcomes.append(StoreOutcome(uid, str(ds.SOPClassUID), False, f"not accepted: {error}"))
                    continue
                if status is None or "Status" not in status:
                    outcomes.append(StoreOutcome(uid, str(ds.SOPClassUID), False,
                                                 str(watch.lost(self.node, "C-STORE", ""))))
                    if not assoc.is_established:
                        break
                    continue
                code = int(status.Status)
                ok = code == 0x0000 or (0xB000 <= code <= 0xBFFF)  # success, or warning (stored with coercion)
                outcomes.append(StoreOutcome(uid, str(ds.SOPClassUID), ok, "" if ok else f"status 0x{code:04X}"))
        remaining = datasets[len(outcomes):]
        outcomes += [StoreOutcome(str(ds.SOPInstanceUID), str(ds.SOPClassUID), False, "association lost")
                     for ds in remaining]
        return outcomes
