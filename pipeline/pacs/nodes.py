"""DICOM nodes: where a study is pulled from and models are pushed to.

A node is a DIMSE peer (AE title, host, port) or a DICOMweb service (a base URL), with TLS
options. Nodes are declared per user in a YAML file (``$ANATOMODEL_NODES``, else
``~/.config/anatomodel/nodes.yaml``)::

    calling_ae_title: ANATOMODEL        # our AE title (optional; this is the default)
    nodes:
      pacs:
        ae_title: PACS
        host: pacs.hospital.org
        port: 11112
        retrieve: get                   # or move (the node must know our AE title and move_port)
        move_port: 11113
        timeout_s: 30
        tls: {ca_file: /etc/ssl/hospital-ca.pem, cert_file: me.pem, key_file: me.key}
      web:
        url: https://pacs.hospital.org/dicom-web
        tls: {ca_file: /etc/ssl/hospital-ca.pem}

or given inline on the command line as ``AET@HOST:PORT`` (DIMSE) or an ``http(s)://`` URL.
"""

from __future__ import annotations

import os
import re
import ssl
import urllib.parse
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import FrozenModel, read_yaml, validate
from pipeline.errors import ConfigError

NODES_VARIABLE = "ANATOMODEL_NODES"
DEFAULT_CALLING_AE = "ANATOMODEL"
_AE_TITLE = re.compile(r"[ -\[\]-~]+")  # printable ASCII characters, no backslash
_INLINE = re.compile(r"^(?P<aet>[^@\\]+)@(?P<host>[^:@/]+):(?P<port>\d+)$")


def _ae_title(value: str | None) -> str | None:
    """An AE title as DICOM allows it (PS3.5 6.2, AE): 1 to 16 printable ASCII characters."""
    if value is None:
        return value
    if not value.strip():
        raise ValueError("an AE title is not blank")
    if len(value) > 16:
        raise ValueError(f"an AE title has at most 16 characters; this one has {len(value)}")
    if not _AE_TITLE.fullmatch(value):
        raise ValueError("an AE title is printable ASCII characters without a backslash")
    return value


_Strict = FrozenModel  # the one strict, frozen base of configuration schemas (pipeline.config)


class Tls(_Strict):
    """TLS for a node: the CA bundle that verifies it, and our client certificate if it asks."""

    ca_file: Path | None = Field(None, description="PEM bundle of the CAs that sign the node's certificate")
    cert_file: Path | None = Field(None, description="our client certificate (PEM)")
    key_file: Path | None = Field(None, description="the private key of cert_file (PEM)")
    verify: bool = Field(True, description="verify the node's certificate and host name")

    @model_validator(mode="after")
    def _pairs(self) -> "Tls":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().is_file():
                raise ValueError(f"{name} {path} is not a file")
        problem = _pem_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def _pem_problem(tls: Tls) -> str | None:
    """Why the TLS files cannot be used (read now, before any connection), or None.

    The CA bundle and our certificate must be PEM certificates, the key an unencrypted PEM
    private key (no password is asked for) that belongs to the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for name in ("ca_file", "cert_file"):
        path = getattr(tls, name)
        if path is None:
            continue
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(Path(path).expanduser()))
        except (ssl.SSLError, OSError, UnicodeDecodeError) as error:
            return f"{name} {path} is not a PEM certificate/key file ({getattr(error, 'reason', None) or error})"
    if tls.cert_file is None:
        return None
    key = Path(tls.key_file).expanduser()
    try:
        text = key.read_bytes()
    except OSError as error:
        return f"key_file {tls.key_file} cannot be read ({error.strerror or error})"
    if b"-----BEGIN" not in text or b"PRIVATE KEY-----" not in text:
        return f"key_file {tls.key_file} is not a PEM certificate/key file (no PEM private key in it)"
    if b"ENCRYPTED" in text:
        return f"key_file {tls.key_file} is encrypted: give an unencrypted PEM key (no password is asked for)"
    try:
        context.load_cert_chain(str(Path(tls.cert_file).expanduser()), str(key), password=b"")
    except ssl.SSLError as error:
        return f"key_file {tls.key_file} does not match cert_file {tls.cert_file} " \
               f"({getattr(error, 'reason', None) or error})"
    return None


class Node(_Strict):
    """One DICOM node (DIMSE or DICOMweb)."""

    name: str = Field("", description="the name it has in the nodes file (or its inline form)")
    ae_title: str | None = Field(None, description="the node's AE title (DIMSE), 1-16 characters")
    host: str | None = Field(None, min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    url: str | None = Field(None, description="DICOMweb base URL, http:// or https://")
    calling_ae_title: str = Field(DEFAULT_CALLING_AE, description="our AE title, 1-16 characters")
    retrieve: Literal["get", "move"] = Field("get", description="C-GET, or C-MOVE to our storage SCP")
    move_port: int | None = Field(None, ge=1, le=65535, description="port of our storage SCP for C-MOVE")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="connection, association and reply timeout")
    tls: Tls | None = None

    _titles = field_validator("ae_title", "calling_ae_title")(_ae_title)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("a DICOMweb url starts with http:// or https:// and names a host")
        if value is not None:
            try:
                port = urllib.parse.urlsplit(value).port
            except ValueError:
                port = 0
            if port == 0:
                raise ValueError("the url's port is not a number from 1 to 65535")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _one_kind(self) -> "Node":
        dimse = [self.ae_title, self.host, self.port]
        if self.url is not None:
            if any(value is not None for value in dimse):
                raise ValueError("give either url (DICOMweb) or ae_title, host and port (DIMSE), not both")
        elif any(value is None for value in dimse):
            raise ValueError("a DIMSE node needs ae_title, host and port (or give a DICOMweb url)")
        if self.retrieve == "move" and self.url is None and self.move_port is None:
            raise ValueError("retrieve: move needs move_port, the port of our storage SCP the node sends to")
        return self

    @property
    def is_dicomweb(self) -> bool:
        """Whether the node is a DICOMweb service.

        Returns
        -------
        bool
            True for a node given by URL, False for a DIMSE peer.
        """
        return self.url is not None

    @property
    def label(self) -> str:
        """How logs and messages name the node.

        Returns
        -------
        str
            ``AET@HOST:PORT``, or the URL without any ``user:password@``.
        """
        if self.url is not None:
            return re.sub(r"//[^/@]*@", "//", self.url)
        return f"{self.ae_title}@{self.host}:{self.port}"


class NodesFile(_Strict):
    calling_ae_title: str = Field(DEFAULT_CALLING_AE)

    _title = field_validator("calling_ae_title")(_ae_title)
    nodes: dict[str, dict] = Field(default_factory=dict)


#: The ``user:password@`` of a URL, which no message may repeat.
_CREDENTIALS = re.compile(r"(https?://)[^/@\s'\"]*@", re.IGNORECASE)


def _validated(fields: dict, source: str) -> "Node":
    """:func:`pipeline.config.validate` of a node, its message without a URL's credentials."""
    try:
        return validate(Node, fields, source)
    except ConfigError as error:
        raise ConfigError(_CREDENTIALS.sub(r"\1***@", error.args[0]), hint=error.hint) from None


def default_nodes_path() -> Path:
    """Where the user's nodes file is looked for.

    Returns
    -------
    Path
        ``$ANATOMODEL_NODES``, else ``$XDG_CONFIG_HOME/anatomodel/nodes.yaml`` (``~/.config``).
    """
    if os.environ.get(NODES_VARIABLE):
        return Path(os.environ[NODES_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "anatomodel" / "nodes.yaml"


def load_nodes(path: str | os.PathLike | None = None) -> dict[str, Node]:
    """Read and validate a nodes file; a missing default file means no named nodes.

    Parameters
    ----------
    path : path, optional
        The nodes file (default :func:`default_nodes_path`).

    Returns
    -------
    dict of str to Node
        The declared nodes by name (empty if the default file does not exist).

    Raises
    ------
    ConfigError
        The file (when named explicitly) is missing, or a node is invalid (naming its field).
    """
    explicit = path is not None
    path = Path(path).expanduser() if explicit else default_nodes_path()
    if not path.is_file():
        if explicit or os.environ.get(NODES_VARIABLE):
            raise ConfigError(f"nodes file {path} not found", hint="give the YAML file that declares your nodes")
        return {}
    data = read_yaml(path)
    document = validate(NodesFile, data if data is not None else {}, str(path))
    nodes = {}
    for name, fields in document.nodes.items():
        fields = {"calling_ae_title": document.calling_ae_title, **(fields or {}), "name": name}
        nodes[name] = _validated(fields, f"{path}: node '{name}'")
    return nodes


def resolve_node(text: str, nodes_file: str | os.PathLike | None = None, *,
                 calling_ae_title: str | None = None) -> Node:
    """The node a command line or case file names: a nodes-file name, ``AET@HOST:PORT`` or a URL.

    Parameters
    ----------
    text : str
        The node as written.
    nodes_file : path, optional
        The nodes file (default: :func:`default_nodes_path`).
    calling_ae_title : str, optional
        Our AE title for an inline node (default ``ANATOMODEL``).

    Returns
    -------
    Node
        The validated node.

    Raises
    ------
    ConfigError
        The text is none of the three forms, or the node it names is invalid.
    """
    text = (text or "").strip()
    overrides = {"calling_ae_title": calling_ae_title} if calling_ae_title else {}
    if re.match(r"^https?://", text):
        return _validated({"name": text, "url": text, **overrides}, f"node {text!r}")
    inline = _INLINE.match(text)
    if inline:
        fields = {"name": text, "ae_title": inline["aet"], "host": inline["host"], "port": int(inline["port"])}
        return validate(Node, {**fields, **overrides}, f"node {text!r}")
    nodes = load_nodes(nodes_file)
    if text in nodes:
        node = nodes[text]
        return node.model_copy(update=overrides) if overrides else node
    known = ", ".join(sorted(nodes)) or "none declared"
    raise ConfigError(f"node {text!r} is neither AET@HOST:PORT, an http(s):// URL nor a node of the nodes file "
                      f"({known})", hint=f"declare it in {Path(nodes_file) if nodes_file else default_nodes_path()}")
