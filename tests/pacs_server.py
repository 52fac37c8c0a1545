"""Test helpers for the PACS tests: a real Orthanc server and two deliberately broken DICOM peers.

:class:`Orthanc` runs the Debian package's ``Orthanc`` binary on free localhost ports with its own
storage folder and a generated JSON configuration (DICOMweb plugin loaded, our AE title registered
as a modality so C-MOVE can reach us), waits until its REST API answers, and stops it afterwards.

:class:`ShortGetServer` is a pynetdicom archive that answers C-FIND truthfully from a folder but
leaves out one instance from every C-GET (a partial retrieve); :class:`ShortWadoServer` is its
DICOMweb twin, whose WADO-RS answer is short, broken off, not DICOM or not multipart;
:class:`SilentServer` accepts TCP connections and never speaks (a node that times out).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dicomweb_plugin() -> Path:
    """The DICOMweb plugin shared library of the Debian package ``orthanc-dicomweb``."""
    for folder in DICOMWEB_PLUGIN_DIRS:
        for path in sorted(Path(folder).glob("libOrthancDicomWeb.so*")):
            return path
    raise FileNotFoundError("libOrthancDicomWeb.so not found: apt-get install orthanc-dicomweb")


class Orthanc:
    """One Orthanc process on localhost.

    Parameters
    ----------
    folder : path
        Its storage, index and configuration folder.
    aet : str
        Its AE title.
    modalities : dict
        AE title -> (host, port) of peers Orthanc may C-MOVE to (our storage SCP).
    lua : str, optional
        A Lua script (e.g. a ``ReceivedInstanceFilter`` refusing some stores).
    tls : dict, optional
        :func:`make_certificates`' files: DICOM TLS on, client certificates signed by ``ca`` required.
    """

    def __init__(self, folder: Path, *, aet: str = "ORTHANC", modalities: dict[str, tuple[str, int]] | None = None,
                 lua: str | None = None, tls: dict[str, Path] | None = None):
        self.folder = Path(folder)
        self.tls = tls
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.lua = lua
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen | None = None
        # DCMTK (inside Orthanc) keeps Nagle's algorithm on unless TCP_NODELAY is set: each C-GET
        # sub-operation then waits for our delayed ACK (~50 ms an instance instead of ~7 ms).
        self.env = {**os.environ, "TCP_NODELAY": "1"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def inline(self) -> str:
        """The node written as ``AET@HOST:PORT``."""
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def _config(self) -> dict:
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "anatomodel-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {name: [name, host, port] for name, (host, port) in self.modalities.items()},
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "HttpServerEnabled": True,
            "StableAge": 1,
            "SaveJobs": False,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "StorageCompression": False,
            "OverwriteInstances": True,
            "DicomScpTimeout": 30,
            "SyncStorageArea": False,
            "MaximumPduLength": 131072,  # the largest Orthanc allows (default 16 KiB)
        }
        if self.tls:
            config.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(self.tls["server_cert"]),
                           "DicomTlsPrivateKey": str(self.tls["server_key"]),
                           "DicomTlsTrustedCertificates": str(self.tls["ca"]),
                           "DicomTlsRemoteCertificateRequired": True})
        if self.lua:
            script = self.folder / "filter.lua"
            script.write_text(self.lua)
            config["LuaScripts"] = [str(script)]
        return config

    def start(self, timeout: float = 60.0) -> "Orthanc":
        """Start the server and wait until its REST API answers."""
        if not Path(ORTHANC).is_file():
            raise RuntimeError("Orthanc not found: apt-get install orthanc orthanc-dicomweb (.ci/run does)")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self._config(), indent=2))
        log = open(self.folder / "orthanc.log", "ab")
        self.process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: "
                                   f"{(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.rest("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, *, lua: str | None = None) -> "Orthanc":
        """Stop and start again on the same ports and storage (with another Lua script)."""
        self.stop()
        self.lua = lua
        return self.start()

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def rest(self, path: str, data: bytes | None = None, method: str | None = None) -> object:
        """Call the REST API; JSON answers are decoded."""
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
        try:
            return json.loads(body)
        except ValueError:
            return body

    def instances(self) -> list[dict]:
        """Every stored instance's main DICOM tags (REST ``/instances?expand``)."""
        return self.rest("/instances?expand")

    def store(self, files: list[Path]) -> int:
        """C-STORE files into the server with pynetdicom (the way a modality sends them)."""
        ae = AE(ae_title="MODALITY")
        ae.requested_contexts = StoragePresentationContexts
        assoc = ae.associate("127.0.0.1", self.dicom_port, ae_title=self.aet)
        assert assoc.is_established, "Orthanc refused the test's store association"
        stored = 0
        try:
            for path in files:
                status = assoc.send_c_store(pydicom.dcmread(path))
                assert status and status.Status == 0, f"C-STORE of {path.name} failed: {status}"
                stored += 1
        finally:
            assoc.release()
        return stored


def make_certificates(folder: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.pem" for name in ("ca", "ca_key", "server_cert", "server_key",
                                                        "client_cert", "client_key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=anatomodel test CA",
            "-keyout", str(paths["ca_key"]), "-out", str(paths["ca"]))
    for who, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=ANATOMODEL")):
        request = folder / f"{who}.csr"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(paths[f"{who}_key"]),
                "-out", str(request))
        extensions = folder / f"{who}.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1\n" if who == "server" else "basicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", str(request), "-CA", str(paths["ca"]), "-CAkey", str(paths["ca_key"]),
                "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(paths[f"{who}_cert"]))
    return paths


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files of a phantom folder (not its truth/ files)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and "truth" not in p.relative_to(folder).parts)


class _Peer:
    """A pynetdicom server on a free localhost port, run while the ``with`` block lasts."""

    def __init__(self, aet: str):
        self.aet = aet
        self.port = free_port()
        self.ae = AE(ae_title=aet)
        self.server = None

    @property
    def inline(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def handlers(self) -> list:
        raise NotImplementedError

    def __enter__(self):
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=self.handlers())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()


class ShortGetServer(_Peer):
    """A pynetdicom Query/Retrieve SCP over one folder whose C-GET leaves out one instance.

    C-FIND answers at STUDY, SERIES and IMAGE level from the files' headers (so the counts it
    reports are right); C-GET sends every matching instance but the middle one and reports
    success, as a faulty archive would.
    """

    def __init__(self, folder: Path, aet: str = "SHORTGET"):
        super().__init__(aet)
        self.datasets = [pydicom.dcmread(p) for p in dicom_files(folder)]
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        for context in StoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, scu_role=True, scp_role=True)

    def _matches(self, query) -> list:
        found = []
        for ds in self.datasets:
            ok = True
            for keyword in ("AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                wanted = str(query.get(keyword, "") or "")
                if wanted and str(ds.get(keyword, "")) != wanted:
                    ok = False
            if ok:
                found.append(ds)
        return found

    def _on_find(self, event):
        query = event.identifier
        level = query.QueryRetrieveLevel
        matches = self._matches(query)
        key = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID"}.get(level, "SOPInstanceUID")
        seen = {}
        for ds in matches:
            seen.setdefault(str(ds.get(key)), []).append(ds)
        for group in seen.values():
            answer = pydicom.Dataset()
            answer.QueryRetrieveLevel = level
            for keyword in query.dir():
                if keyword in group[0]:
                    setattr(answer, keyword, group[0].get(keyword))
                elif keyword != "QueryRetrieveLevel":
                    setattr(answer, keyword, "")
            if "NumberOfSeriesRelatedInstances" in query:
                answer.NumberOfSeriesRelatedInstances = len(group)
            if "NumberOfStudyRelatedInstances" in query:
                answer.NumberOfStudyRelatedInstances = len(group)
            yield 0xFF00, answer

    def _on_get(self, event):
        matches = self._matches(event.identifier)
        sent = [ds for index, ds in enumerate(matches) if index != len(matches) // 2]
        yield len(sent)
        for ds in sent:
            yield 0xFF00, ds

    def handlers(self) -> list:
        return [(evt.EVT_C_FIND, self._on_find), (evt.EVT_C_GET, self._on_get)]


class ShortWadoServer:
    """A DICOMweb service over one folder (one study, one series) whose WADO-RS answer is faulty.

    QIDO-RS answers truthfully (study by AccessionNumber, its series with
    NumberOfSeriesRelatedInstances, the series' instances). The series retrieve is a
    ``multipart/related`` stream of the files as stored, faulty as ``mode`` says:

    - ``"short"``: the middle instance is left out, the stream otherwise well formed;
    - ``"truncated"``: the connection closes in the middle of the middle instance's part;
    - ``"not-dicom"``: the middle part is a text, not a Part 10 file;
    - ``"not-multipart"``: the answer is an HTML page with status 200.

    Parameters
    ----------
    folder : path
        The series' files.
    mode : str
        One of the four above.
    """

    BOUNDARY = "short-wado-boundary"

    def __init__(self, folder: Path, mode: str):
        assert mode in ("short", "truncated", "not-dicom", "not-multipart"), mode
        self.mode = mode
        self.files = [p.read_bytes() for p in dicom_files(folder)]
        self.headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_files(folder)]
        first = self.headers[0]
        self.study, self.series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def _json(self, level: str) -> list[dict]:
        keys = {"study": ("StudyInstanceUID", "AccessionNumber", "StudyDate", "ModalitiesInStudy"),
                "series": ("StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "Modality"),
                "instances": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                              "InstanceNumber")}[level]
        answers = []
        for ds in self.headers if level == "instances" else self.headers[:1]:
            answer = pydicom.Dataset()
            for keyword in keys:
                if keyword in ds:
                    setattr(answer, keyword, ds.get(keyword))
            if level == "study":
                answer.ModalitiesInStudy = str(ds.Modality)
            if level == "series":
                answer.NumberOfSeriesRelatedInstances = len(self.files)
            answers.append(answer.to_json_dict())
        return answers

    def _body(self) -> bytes:
        middle = len(self.files) // 2
        parts = list(self.files)
        if self.mode == "short":
            del parts[middle]
        elif self.mode == "not-dicom":
            parts[middle] = b"this part is a text, not a DICOM file\r\n" * 8
        head, close = b"--%s\r\nContent-Type: application/dicom\r\n\r\n" % self.BOUNDARY.encode(), b"--%s--\r\n" % \
            self.BOUNDARY.encode()
        if self.mode == "truncated":  # up to the middle of the middle part
            return b"".join(head + part + b"\r\n" for part in parts[:middle]) + head + parts[middle][:len(parts[middle]) // 2]
        return b"".join(head + part + b"\r\n" for part in parts) + close

    def _handler(self):
        wado = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the connection closes after each answer: no length needed

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = urllib.parse.urlparse(self.path).path.removeprefix("/dicom-web").rstrip("/")
                study, series = f"/studies/{wado.study}", f"/series/{wado.series}"
                listings = {"/studies": "study", f"{study}/series": "series",
                            f"{study}{series}/instances": "instances"}
                if path in listings:  # dicomweb-client pages with offset until an empty answer
                    offset = int(urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("offset", ["0"])[0])
                    answers = wado._json(listings[path])[offset:]
                    self._send(json.dumps(answers).encode(), "application/dicom+json")
                elif path == study + series and wado.mode == "not-multipart":
                    self._send(b"<html><body>Please log in</body></html>", "text/html")
                elif path == study + series:
                    self._send(wado._body(), f'multipart/related; type="application/dicom"; '
                                             f'boundary={wado.BOUNDARY}')
                else:
                    self.send_error(404)

        return Handler

    def __enter__(self) -> "ShortWadoServer":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class RefusingStoreServer(_Peer):
    """A pynetdicom storage SCP that answers C-STORE of Encapsulated PDF with a failure status
    (0xA700, out of resources) and stores the rest in memory; its IMAGE-level C-FIND lists them."""

    REFUSED = "1.2.840.10008.5.1.4.1.1.104.1"

    def __init__(self, aet: str = "REFUSER"):
        super().__init__(aet)
        self.stored: dict[str, pydicom.Dataset] = {}
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        classes = [c.abstract_syntax for c in StoragePresentationContexts][:120]
        for uid in classes + ["1.2.840.10008.5.1.4.1.1.104.3", self.REFUSED]:  # Encapsulated STL and PDF
            self.ae.add_supported_context(uid)

    def _on_store(self, event):
        if str(event.request.AffectedSOPClassUID) == self.REFUSED:
            return 0xA700
        ds = event.dataset
        self.stored[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    def _on_find(self, event):
        series = str(event.identifier.get("SeriesInstanceUID", ""))
        for uid, ds in self.stored.items():
            if not series or str(ds.SeriesInstanceUID) == series:
                answer = pydicom.Dataset()
                answer.QueryRetrieveLevel = "IMAGE"
                answer.SOPInstanceUID, answer.SeriesInstanceUID = uid, ds.SeriesInstanceUID
                yield 0xFF00, answer

    def handlers(self) -> list:
        return [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find)]


class SilentServer:
    """A TCP listener that accepts connections and never answers (an association times out)."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.port = self.socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self._held.append(connection)

    def __enter__(self) -> "SilentServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.socket.close()
        for connection in self._held:
            connection.close()


__all__ = ["Orthanc", "RefusingStoreServer", "ShortGetServer", "ShortWadoServer", "SilentServer", "dicom_files",
           "free_port", "make_certificates"]
