"""Imaging named by node and accession in a case file: pull it once into the case folder.

``run_case`` calls :func:`resolve_imaging` when ``imaging.node`` is set and loads the folder it
returns; a later run of the same case finds the complete series already there and reuses it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipeline.pacs.nodes import resolve_node
from pipeline.pacs.pull import pull


def imaging_folder(case_dir: str | os.PathLike, node: str, accession: str | None, study: str | None,
                   series: str) -> Path:
    """Where the pulled series of a case lives: ``<case_dir>/imaging/<hash>`` (no identifier in the name).

    Parameters
    ----------
    case_dir : path
        The case's output folder (``OUT/<case_id>``).
    node : str
        The node as the case file names it.
    accession : str or None
        The Accession Number.
    study : str or None
        The Study Instance UID, if the case file gives one.
    series : str
        ``auto``, a Series Instance UID or a series number.

    Returns
    -------
    Path
        ``<case_dir>/imaging/`` and 16 hexadecimal digits of a hash of the four.
    """
    key = "\\".join([node, accession or "", study or "", series])
    return Path(case_dir) / "imaging" / hashlib.sha256(key.encode()).hexdigest()[:16]


def resolve_imaging(imaging, case_dir: str | os.PathLike, *, nodes_file: str | os.PathLike | None = None) -> Path:
    """The local folder of a case's imaging: pulled from ``imaging.node`` by accession if not there yet.

    Parameters
    ----------
    imaging : pipeline.case.Imaging
        The case file's imaging block with ``node`` and ``accession`` (or ``study``).
    case_dir : path
        The case's output folder (``OUT/<case_id>``).
    nodes_file : path, optional
        The nodes file (default :func:`pipeline.pacs.default_nodes_path`).

    Returns
    -------
    Path
        A folder holding exactly the chosen series, for :func:`pipeline.load_series`.
    """
    folder = imaging_folder(case_dir, imaging.node, imaging.accession, imaging.study, imaging.series)
    pull(resolve_node(imaging.node, nodes_file), folder, accession=imaging.accession, study_uid=imaging.study,
         series=imaging.series)
    return folder
