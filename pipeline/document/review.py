"""``review.html``: one self-contained page per case to review every model and sign it off from.

For each model: the segmentation as an outline on scrollable axial, coronal and sagittal slices
of the CT (removed pieces in another colour), the model turning in 3D (drawn on a canvas from a
decimated copy of the mesh), the page-1 verdicts, holds and warnings of its packet, and the
command that approves it. Everything is inline (data as base64 in the page, script and style in
the template ``review.html``): the page opens from the file system, with no server and no network.
No patient name, id or birth date is put in the page.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from pipeline.document.facts import packet_summary
from pipeline.errors import DocumentError
from pipeline.files import atomic_write
from pipeline.geometry import Mask, Volume, bounding_box
from pipeline.mesh.decimate import decimate

TEMPLATE = Path(__file__).with_name("review.html")
#: Longest side of the slice crop shown, voxels (the crop is strided down to it).
MAX_SIDE = 192
#: Margin around the segmentation in the crop, mm.
MARGIN_MM = 15.0
#: Faces of the mesh drawn in the 3D view.
VIEW_FACES = 6000
#: CT display window, HU (a CTA soft-tissue and contrast window).
WINDOW_HU = (-160.0, 640.0)
#: What the reviewer runs to approve a model; ``{case_id}`` and ``{model_id}`` are filled in.
APPROVE_COMMAND = ("anatomodel approve {case_id} {model_id} --by 'FAMILY^GIVEN' --role radiologist "
                   "--npi NPI")


@dataclass
class ReviewModel:
    """One model of the review page.

    Parameters
    ----------
    model_id : str
    mask : Mask
        The segmentation on the volume's grid (any positive label is the structure).
    mesh : trimesh.Trimesh
        The model in patient LPS mm.
    facts : dict
        The model's ``packet.json`` (its verdicts, holds and warnings are shown).
    removed : Mask, optional
        Pieces the segmentation removed (leak cuts, dropped islands), drawn in another colour.
    """

    model_id: str
    mask: Mask
    mesh: trimesh.Trimesh
    facts: dict[str, Any]
    removed: Mask | None = None
    approve_command: str | None = None


@dataclass
class ReviewReport:
    """What :func:`write_review_page` wrote: the page, its size (bytes) and the slice crops
    (voxels, k j i) of each model."""

    path: Path
    bytes: int
    crops: dict[str, list[int]] = field(default_factory=dict)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def slice_data(volume: Volume, mask: Mask, removed: Mask | None) -> dict[str, Any]:
    """The CT crop around the segmentation as 0..255 grey and 0/1/2 labels (1 structure, 2
    removed), strided to at most :data:`MAX_SIDE` voxels a side, with the voxel size in mm.

    The crop holds the structure and the removed pieces with :data:`MARGIN_MM` around them;
    grey maps :data:`WINDOW_HU` linearly onto 0..255.

    Parameters
    ----------
    volume : Volume
        The source CT, HU.
    mask : Mask
        The segmentation on the volume's grid.
    removed : Mask or None
        Pieces the segmentation removed, on the same grid.

    Returns
    -------
    dict
        ``shape`` (crop size, voxels, k j i), ``spacing_mm`` (strided voxel size, mm, k j i),
        ``grey`` (base64 uint8) and ``labels`` (base64 uint8: 0 none, 1 structure, 2 removed).

    Raises
    ------
    DocumentError
        The mask is not on the volume's grid, or both the mask and the removed pieces are
        empty. Exit code 12.
    """
    if mask.geometry.shape != volume.geometry.shape:
        raise DocumentError("the mask is not on the volume's grid: the review page overlays them voxel for voxel")
    structure = np.asarray(mask.array)
    gone = None if removed is None else np.asarray(removed.array)
    boxes = [box for box in (bounding_box(structure), None if gone is None else bounding_box(gone)) if box]
    if not boxes:
        raise DocumentError("the segmentation is empty: there is nothing to review")
    spacing = np.asarray(volume.geometry.spacing, dtype=float)
    margin = np.ceil(MARGIN_MM / spacing).astype(int)
    low = np.maximum(np.min([[s.start for s in box] for box in boxes], axis=0) - margin, 0)
    high = np.minimum(np.max([[s.stop for s in box] for box in boxes], axis=0) + margin, volume.geometry.shape)
    stride = max(1, int(np.ceil((high - low).max() / MAX_SIDE)))
    box = tuple(slice(a, b, stride) for a, b in zip(low, high))
    lower, upper = WINDOW_HU
    grey = np.clip((np.asarray(volume.array)[box].astype(np.float32) - lower) / (upper - lower) * 255, 0, 255)
    crop = (structure[box] > 0).astype(np.uint8)  # labels in the crop only, not on the whole grid
    if gone is not None:
        crop[(gone[box] > 0) & (crop == 0)] = 2
    return {"shape": list(crop.shape), "spacing_mm": (spacing * stride).round(4).tolist(),
            "grey": _b64(grey.astype(np.uint8)), "labels": _b64(crop)}


def mesh_data(mesh: trimesh.Trimesh) -> dict[str, Any]:
    """A decimated copy of the mesh (LPS mm, centred) as base64 float32 vertices and uint32 faces.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        The model, patient LPS mm.

    Returns
    -------
    dict
        ``vertices`` (base64 float32, N x 3, mm, centred on the bounding box's centre),
        ``faces`` (base64 uint32, F x 3), ``count`` (F, at most about :data:`VIEW_FACES`) and
        ``radius_mm`` (largest vertex distance from the centre, mm).
    """
    vertices, faces = decimate(np.asarray(mesh.vertices), np.asarray(mesh.faces), VIEW_FACES)
    vertices = np.asarray(vertices, dtype=np.float64)
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    return {"vertices": _b64((vertices - centre).astype(np.float32)), "faces": _b64(np.asarray(faces, np.uint32)),
            "count": int(len(faces)), "radius_mm": float(np.linalg.norm(vertices - centre, axis=1).max())}


def review_entry(volume: Volume, case_id: str, model: ReviewModel) -> dict[str, Any]:
    """One model's part of the page (its slice crop, mesh and facts), made while its mask is at
    hand so that a case's masks need not all be kept for the page.

    Parameters
    ----------
    volume : Volume
        The source CT the mask lies on.
    case_id : str
        The case id, for the approve command.
    model : ReviewModel
        The model.

    Returns
    -------
    dict
        The model's id, structure, CPT, state, billing, verdicts, holds, warnings, approve
        command, slices (:func:`slice_data`) and mesh (:func:`mesh_data`).

    Raises
    ------
    DocumentError
        From :func:`slice_data`: a mask off the grid or an empty segmentation. Exit code 12.
    """
    return _model_entry(volume, case_id, model)


def _model_entry(volume: Volume, case_id: str, model: ReviewModel) -> dict[str, Any]:
    summary = packet_summary(model.facts)
    return {
        "id": model.model_id,
        "structure": summary.structure,
        "cpt": summary.cpt,
        "state": summary.state,
        "billing": f"{summary.billing}: {summary.billing_reason}",
        "verdicts": [{"name": v.name, "passed": v.passed, "text": v.text} for v in summary.verdicts],
        "holds": [{"code": h.code, "source": h.source, "reason": h.reason} for h in summary.holds],
        "warnings": summary.warnings,
        "approve": model.approve_command or APPROVE_COMMAND.format(case_id=case_id, model_id=model.model_id),
        "slices": slice_data(volume, model.mask, model.removed),
        "mesh": mesh_data(model.mesh),
    }


def write_review_page(volume: Volume, models: list[ReviewModel], path: str | Path, *, case_id: str) -> ReviewReport:
    """Write ``review.html`` for the models of one case.

    Parameters
    ----------
    volume : Volume
        The source CT the masks lie on.
    models : list of ReviewModel
    path : path
        The page to write (``OUT/<case_id>/review.html``).
    case_id : str

    Returns
    -------
    ReviewReport
        The page's path, its size (bytes) and each model's crop shape (voxels, k j i).

    Raises
    ------
    DocumentError
        No model, a mask off the volume's grid, or an empty segmentation. Exit code 12.
    """
    # no model: write_review_entries refuses the empty list before anything is written
    return write_review_entries([_model_entry(volume, case_id, m) for m in models], path, case_id=case_id)


def write_review_entries(entries: list[dict[str, Any]], path: str | Path, *, case_id: str) -> ReviewReport:
    """Write ``review.html`` from :func:`review_entry` parts (see :func:`write_review_page`).

    Parameters
    ----------
    entries : list of dict
        One :func:`review_entry` per model.
    path : str or Path
        The page to write (atomically).
    case_id : str
        The case id, for the title and the page's data.

    Returns
    -------
    ReviewReport
        The page's path, its size (bytes) and each model's crop shape (voxels, k j i).

    Raises
    ------
    DocumentError
        ``entries`` is empty. Exit code 12.
    """
    if not entries:
        raise DocumentError("no model to review: run the case first")
    data = json.dumps({"case_id": case_id, "models": entries}).replace("</", "<\\/")
    page = (TEMPLATE.read_text(encoding="utf-8")
            .replace("{{TITLE}}", html.escape(f"Review - case {case_id}"))
            .replace("{{DATA}}", data))
    path = Path(path)
    atomic_write(path, page)
    return ReviewReport(path=path, bytes=path.stat().st_size,
                        crops={e["id"]: e["slices"]["shape"] for e in entries})
