"""The PACS edge: pull a study's CT series from a DICOM node, push the model, its SEG and its packet back.

Outside the stages (nothing in a stage imports this package). DIMSE with pynetdicom, DICOMweb
with dicomweb-client; nodes from a validated YAML file or written inline.
"""

from pipeline.pacs.nodes import Node, Tls, default_nodes_path, load_nodes, resolve_node
from pipeline.pacs.pull import PullReport, client_for, find_study, list_series, pull

__all__ = ["Node", "PullReport", "Tls", "client_for", "default_nodes_path", "find_study", "list_series",
           "load_nodes", "pull", "resolve_node"]
