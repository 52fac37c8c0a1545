"""Golden results: the stored measurements of each regression model, with tolerances and reasons.

One JSON file per case in the golden folder (``regress/golden/<case>.json``) and beside it the
model decimated to :data:`GOLDEN_MESH_FACES` faces (``<case>.ply.gz``) for the surface distance.
Every tolerance is written in the file with the reason for its size; ``--update-golden``
rewrites the measured values and the mesh but keeps tolerances already there.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from pipeline.errors import ConfigError
from pipeline.report import anatomodel_version
from pipeline.files import atomic_write
from pipeline.regress.surface import decimate_mesh, read_golden_mesh, symmetric_mean_distance, write_golden_mesh

#: The repository holding this package (when run from a checkout or an editable install).
SOURCE_TREE = Path(__file__).resolve().parents[2]
#: Faces of a stored golden mesh: keeps the six of them near 1 MB in the repository.
GOLDEN_MESH_FACES = 10_000
#: Surface points sampled on each mesh, each way, for the distance to the golden mesh.
DISTANCE_SAMPLES = 5_000


def default_tolerances(spacing_mm: list[float]) -> dict[str, Any]:
    """Tolerances for a new golden file (an existing file's own tolerances are kept).

    Parameters
    ----------
    spacing_mm : list of float
        The scan's voxel spacing in mm (any axis order); the largest sets the bounding-box tolerance.

    Returns
    -------
    dict
        Per quantity (``volume_ml``, ``area_cm2``, ``bbox_lps_mm``, ``shells``, ``watertight``,
        ``mean_distance_mm``) its tolerance (``relative`` fraction, ``absolute`` mm, ``exact`` or
        ``above_golden`` mm) and the ``reason`` for its size.
    """
    voxel = round(float(max(spacing_mm)), 3)
    return {
        "volume_ml": {"relative": 0.01, "reason": (
            "the pipeline is deterministic; 1% admits floating-point and library-version differences "
            "in smoothing and decimation, while moving the bone or lumen threshold by 10 HU, or losing "
            "or gaining a voxel layer, changes the volume by more")},
        "area_cm2": {"relative": 0.02, "reason": (
            "area reacts more than volume to smoothing and decimation noise (staircase, sliver "
            "triangles): 2%")},
        "bbox_lps_mm": {"absolute": voxel, "reason": (
            f"one voxel ({voxel} mm, the largest spacing of this scan): a face of the box moves by a "
            "voxel when the structure gains or loses one layer there")},
        "shells": {"exact": True, "reason": "a piece appearing or vanishing is a change of the model"},
        "watertight": {"exact": True, "reason": "a printable model is closed"},
        "mean_distance_mm": {"above_golden": 0.2, "reason": (
            "symmetric mean distance to the stored, decimated golden mesh; the decimation alone "
            "accounts for the distance measured when the golden was written (at_golden); 0.2 mm "
            "more, under half a pixel of these scans, means the surface moved")},
    }


def default_golden_dir(for_writing: bool = False) -> Path:
    """``regress/golden`` of the source tree (or of the current folder).

    When ``for_writing``, a missing folder in the source tree is returned to be created.

    Parameters
    ----------
    for_writing : bool
        Return the source tree's ``regress/golden`` even when it does not exist yet (when the
        source tree has a ``pyproject.toml``), for ``--update-golden`` to create.

    Returns
    -------
    Path
        The golden folder: the source tree's, else ``./regress/golden``.

    Raises
    ------
    ConfigError
        If neither folder exists (and it is not for writing into a source tree) (exit code 4).
    """
    candidates = [SOURCE_TREE / "regress" / "golden", Path.cwd() / "regress" / "golden"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    if for_writing and (SOURCE_TREE / "pyproject.toml").is_file():
        return candidates[0]
    raise ConfigError("no golden folder found (regress/golden in the source tree)",
                      hint="run from the repository or give --golden DIR")


def golden_path(folder: Path, case: str) -> Path:
    """The golden record file of a case.

    Parameters
    ----------
    folder : Path
        The golden folder.
    case : str
        The regression case's name.

    Returns
    -------
    Path
        ``folder/<case>.json`` (whether or not it exists).
    """
    return folder / f"{case}.json"


def read_golden(folder: Path, case: str) -> dict[str, Any] | None:
    """The golden record of ``case``, or None if there is none yet.

    Parameters
    ----------
    folder : Path
        The golden folder.
    case : str
        The regression case's name.

    Returns
    -------
    dict or None
        The parsed ``<case>.json``, or None when the file does not exist.

    Raises
    ------
    ConfigError
        If the file is not valid JSON (exit code 4).
    """
    path = golden_path(folder, case)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from error


def write_golden(folder: Path, case: str, description: str, source: str | None, preset: str,
                 metrics: dict[str, Any], mesh: trimesh.Trimesh, spacing_mm: list[float],
                 seed: dict[str, Any]) -> dict[str, Any]:
    """Write (or rewrite) the golden record and mesh of one case; return the record.

    Parameters
    ----------
    folder : Path
        The golden folder (created if missing).
    case : str
        The regression case's name (the file names ``<case>.json`` and ``<case>.ply.gz``).
    description : str
        What the case models, stored in the record.
    source : str or None
        Where the scan comes from; None records the synthetic phantom.
    preset : str
        The segmentation preset's name.
    metrics : dict
        The model's measurements: ``volume_ml`` (mL), ``area_cm2`` (cm²), ``bbox_min_lps_mm`` and
        ``bbox_max_lps_mm`` (LPS, mm), ``shells``, ``watertight``, ``faces``.
    mesh : trimesh.Trimesh
        The model's mesh (LPS, mm); stored decimated to :data:`GOLDEN_MESH_FACES` faces.
    spacing_mm : list of float
        Voxel spacing in mm, for the default tolerances of a new record.
    seed : dict
        The seed used; its ``method``, ``seed_index_kji`` and ``seed_lps_mm`` are stored.

    Returns
    -------
    dict
        The record written (measured values, golden mesh with ``at_golden_mm``: its own distance
        after decimation in mm, tolerances kept from an earlier record, version and date).

    Raises
    ------
    ConfigError
        If an existing record is not valid JSON (exit code 4).
    """
    folder.mkdir(parents=True, exist_ok=True)
    previous = read_golden(folder, case) or {}
    small = decimate_mesh(mesh, GOLDEN_MESH_FACES)
    mesh_name = f"{case}.ply.gz"
    write_golden_mesh(small, folder / mesh_name)
    # Read it back, so at_golden is measured against exactly what is stored.
    floor = symmetric_mean_distance(mesh, read_golden_mesh(folder / mesh_name), DISTANCE_SAMPLES)["mean_mm"]
    record = {
        "case": case,
        "description": description,
        "source": source or "synthetic (example_data.cta_phantom.make_phantom(), seed 0)",
        "preset": preset,
        "seed": {key: seed[key] for key in ("method", "seed_index_kji", "seed_lps_mm") if key in seed},
        "measured": {key: metrics[key] for key in
                     ("volume_ml", "area_cm2", "bbox_min_lps_mm", "bbox_max_lps_mm", "shells", "watertight", "faces")},
        "golden_mesh": {"file": mesh_name, "faces": int(len(small.faces)), "at_golden_mm": round(floor, 4)},
        "tolerances": previous.get("tolerances") or default_tolerances(spacing_mm),
        "written": {"anatomodel": anatomodel_version(), "date": dt.date.today().isoformat()},
    }
    atomic_write(golden_path(folder, case), json.dumps(record, indent=2) + "\n")
    return record


def compare(golden: dict[str, Any], metrics: dict[str, Any], mesh: trimesh.Trimesh,
            folder: Path) -> list[dict[str, Any]]:
    """Check one model's measurements against its golden record.

    Parameters
    ----------
    golden : dict
        The case's record (:func:`read_golden`), with ``measured``, ``tolerances`` and ``golden_mesh``.
    metrics : dict
        The model's measurements now, with the keys of ``golden["measured"]`` (mL, cm², LPS mm).
    mesh : trimesh.Trimesh
        The model's mesh (LPS, mm), compared with the stored golden mesh.
    folder : Path
        The golden folder holding the golden mesh.

    Returns
    -------
    list of dict
        One check per quantity: ``quantity``, ``golden``, ``measured``, ``tolerance`` (in words),
        ``ok``.

    Raises
    ------
    ConfigError
        If the golden mesh file is missing (exit code 4).
    KeyError
        If the record or ``metrics`` lacks a quantity.
    """
    want, tolerances = golden["measured"], golden["tolerances"]
    checks = []

    def check(quantity: str, expected: Any, measured: Any, allowed: str, ok: bool) -> None:
        """Append one check to the result.

        Parameters
        ----------
        quantity : str
            The quantity's name.
        expected : Any
            Its golden value.
        measured : Any
            Its value now.
        allowed : str
            The tolerance in words (e.g. ``±1.0%``, ``≤ 0.5 mm``).
        ok : bool
            Whether the measured value is within the tolerance.
        """
        checks.append({"quantity": quantity, "golden": expected, "measured": measured, "tolerance": allowed,
                       "ok": bool(ok)})

    for key in ("volume_ml", "area_cm2"):
        relative = float(tolerances[key]["relative"])
        change = metrics[key] / want[key] - 1.0 if want[key] else np.inf
        check(key, round(want[key], 3), round(metrics[key], 3), f"±{relative:.1%}", abs(change) <= relative)
    allowed = float(tolerances["bbox_lps_mm"]["absolute"])
    golden_box = np.concatenate([want["bbox_min_lps_mm"], want["bbox_max_lps_mm"]])
    box = np.concatenate([metrics["bbox_min_lps_mm"], metrics["bbox_max_lps_mm"]])
    shift = float(np.abs(box - golden_box).max())
    check("bbox_lps_mm (largest face shift)", 0.0, round(shift, 3), f"≤ {allowed:g} mm", shift <= allowed)
    check("shells", want["shells"], metrics["shells"], "exact", metrics["shells"] == want["shells"])
    check("watertight", want["watertight"], metrics["watertight"], "exact", metrics["watertight"] == want["watertight"])
    stored = golden["golden_mesh"]
    mesh_file = folder / stored["file"]
    if not mesh_file.is_file():
        raise ConfigError(f"golden mesh {mesh_file} is missing", hint="run anatomodel regress --update-golden")
    distance = symmetric_mean_distance(mesh, read_golden_mesh(mesh_file), DISTANCE_SAMPLES)
    limit = float(stored["at_golden_mm"]) + float(tolerances["mean_distance_mm"]["above_golden"])
    check("mean_distance_to_golden_mm", round(float(stored["at_golden_mm"]), 3), round(distance["mean_mm"], 3),
          f"≤ {limit:.3f} mm", distance["mean_mm"] <= limit)
    return checks
