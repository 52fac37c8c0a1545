"""Nodes: the YAML file and the inline forms, validated with a message naming the field."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.pacs import load_nodes, resolve_node


def test_inline_dimse_and_dicomweb():
    node = resolve_node("PACS@pacs.example.org:11112")
    assert (node.ae_title, node.host, node.port, node.is_dicomweb) == ("PACS", "pacs.example.org", 11112, False)
    assert node.calling_ae_title == "ANATOMODEL" and node.label == "PACS@pacs.example.org:11112"
    web = resolve_node("https://user:secret@pacs.example.org/dicom-web/", calling_ae_title="LAB3D")
    assert web.is_dicomweb and web.url == "https://user:secret@pacs.example.org/dicom-web"
    assert web.label == "https://pacs.example.org/dicom-web"  # never the credentials


def test_nodes_file(tmp_path):
    (tmp_path / "ca.pem").write_text("-")
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
