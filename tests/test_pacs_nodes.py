"""Nodes: the YAML file and the inline forms, validated with a message naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pacs_server import free_port, make_certificates

from pipeline.errors import ConfigError
from pipeline.pacs import load_nodes, resolve_node


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("pki"))


def test_inline_dimse_and_dicomweb():
    node = resolve_node("PACS@pacs.example.org:11112")
    assert (node.ae_title, node.host, node.port, node.is_dicomweb) == ("PACS", "pacs.example.org", 11112, False)
    assert node.calling_ae_title == "ANATOMODEL" and node.label == "PACS@pacs.example.org:11112"
    web = resolve_node("https://user:secret@pacs.example.org/dicom-web/", calling_ae_title="LAB3D")
    assert web.is_dicomweb and web.url == "https://user:secret@pacs.example.org/dicom-web"
    assert web.label == "https://pacs.example.org/dicom-web"  # never the credentials


def test_nodes_file(tmp_path, pki):
    (tmp_path / "ca.pem").write_bytes(pki["ca"].read_bytes())
    path = tmp_path / "nodes.yaml"
    path.write_text(f"""
calling_ae_title: LAB3D
nodes:
  pacs: {{ae_title: PACS, host: 10.0.0.5, port: 104, retrieve: move, move_port: 11113, timeout_s: 5}}
  web: {{url: "https://pacs/dicom-web", tls: {{ca_file: {tmp_path / 'ca.pem'}}}}}
""")
    nodes = load_nodes(path)
    assert nodes["pacs"].calling_ae_title == "LAB3D" and nodes["pacs"].retrieve == "move"
    assert nodes["pacs"].timeout_s == 5 and nodes["web"].tls.ca_file == tmp_path / "ca.pem"
    assert resolve_node("pacs", path).port == 104


@pytest.mark.parametrize("fields, message", [
    ("{ae_title: PACS, host: h, port: 70000}", "port"),
    ("{ae_title: PACS, host: h}", "needs ae_title, host and port"),
    ("{ae_title: PACS, host: h, port: 104, url: 'http://x'}", "not both"),
    ("{ae_title: PACS, host: h, port: 104, retrieve: move}", "move_port"),
    ("{url: 'ftp://x'}", "http:// or https://"),
    ("{ae_title: THIS-TITLE-IS-TOO-LONG, host: h, port: 104}", "ae_title"),
    ("{url: 'http://127.0.0.1:99999/dicom-web'}", "field 'url': Value error, the url's port is not a number from 1 "
                                                  "to 65535"),
    ("{url: 'http://x', tls: {cert_file: /etc/hostname}}", "cert_file and key_file together"),
    ("{ae_title: PACS, host: h, port: 104, colour: blue}", "colour"),
])
def test_bad_node_is_refused_naming_the_field(tmp_path, fields, message):
    path = tmp_path / "nodes.yaml"
    path.write_text(f"nodes:\n  bad: {fields}\n")
    with pytest.raises(ConfigError) as caught:
        load_nodes(path)
    assert "node 'bad'" in str(caught.value) and message in str(caught.value)


def test_unknown_node_names_the_known_ones(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text("nodes:\n  pacs: {ae_title: PACS, host: h, port: 104}\n")
    with pytest.raises(ConfigError, match=r"node 'archive' is neither .* \(pacs\)"):
        resolve_node("archive", path)
    with pytest.raises(ConfigError, match="not found"):
        resolve_node("pacs", tmp_path / "missing.yaml")


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
@pytest.mark.parametrize("files, message", [
    ({"ca_file": "/etc/hostname"}, "ca_file /etc/hostname is not a PEM certificate/key file"),
    ({"cert_file": "client_key", "key_file": "client_key"}, "cert_file .*client_key.pem is not a PEM certificate"),
    ({"cert_file": "client_cert", "key_file": "client_cert"}, "key_file .*client_cert.pem is not a PEM certificate/key"),
    ({"cert_file": "client_cert", "key_file": "server_key"}, "key_file .*server_key.pem does not match cert_file "
                                                             ".*client_cert.pem"),
])
def test_tls_files_that_are_not_pem_are_refused_when_the_node_is_read(tmp_path, pki, kind, files, message):
    """Checked when the node is resolved, before any connection (the node listens nowhere)."""
    tls = {field: str(pki.get(value, value)) for field, value in files.items()}
    where = f"ae_title: PACS, host: 127.0.0.1, port: {free_port()}" if kind == "dimse" else \
        f"url: 'http://127.0.0.1:{free_port()}/dicom-web'"
    path = tmp_path / "nodes.yaml"
    path.write_text(f"nodes:\n  secure: {{{where}, tls: {{{', '.join(f'{k}: {v}' for k, v in tls.items())}}}}}\n")
    with pytest.raises(ConfigError, match=rf"node 'secure': field 'tls': .*{message}") as caught:
        resolve_node("secure", path)
    assert caught.value.exit_code == 4
    if files == {"ca_file": "/etc/hostname"}:  # the command: exit 4, one line, no internal error
        script = Path(sys.executable).parent / "anatomodel"
        result = subprocess.run([str(script), "pull", "--from", "secure", "--nodes", str(path), "--accession", "A1",
                                 "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "COLUMNS": "1000"})
        assert result.returncode == 4, result.stderr
        assert "node 'secure'" in result.stderr and "not a PEM certificate/key" in result.stderr


@pytest.mark.parametrize("text, message", [
    ("http://127.0.0.1:99999/dicom-web", "field 'url': Value error, the url's port is not a number from 1 to 65535"),
    ("https://pacs:0/dicom-web", "the url's port is not a number from 1 to 65535"),
    ("THIS-TITLE-IS-TOO-LONG@127.0.0.1:104", "field 'ae_title': Value error, an AE title has at most 16 characters; "
                                             "this one has 22"),
    ("PACS@127.0.0.1:99999", "field 'port'"),
])
def test_inline_nodes_with_a_bad_port_or_ae_title_say_so(text, message):
    with pytest.raises(ConfigError, match=f"node {text!r}: .*") as caught:
        resolve_node(text)
    assert message in str(caught.value) and caught.value.exit_code == 4
    with pytest.raises(ConfigError, match="field 'calling_ae_title': Value error, an AE title has at most 16"):
        resolve_node("PACS@127.0.0.1:104", calling_ae_title="OUR-TITLE-IS-TOO-LONG")


def test_a_url_s_credentials_are_never_repeated_in_a_message(tmp_path):
    """A DICOMweb URL may carry ``user:password@``; a refusal names the node without them."""
    secret = "s3cret-Pa55"
    with pytest.raises(ConfigError) as inline:
        resolve_node(f"http://lab:{secret}@127.0.0.1:99999/dicom-web")
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(f'nodes:\n  web: {{url: "https://lab:{secret}@pacs.example:99999/dicom-web", timeout_s: -1}}\n')
    with pytest.raises(ConfigError) as declared:
        load_nodes(nodes)
    for error in (inline.value, declared.value):
        assert secret not in str(error) and "lab:" not in str(error) and "***@" in str(error), str(error)
    assert "port" in str(inline.value) and "timeout_s" in str(declared.value)  # still says what is wrong
