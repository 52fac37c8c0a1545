"""Write the oriented model (``print.stl``, ``print.3mf``) and ``plan.json``, each atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import trimesh

from pipeline.errors import PrintPlanError
from pipeline.files import atomic_write
from pipeline.mesh.export import write_model
from pipeline.model import Model
from pipeline.prepare.arrays import MeshArrays
from pipeline.prepare.plan import PlanAlternative, PrintPlan


def oriented_mesh(plan: PrintPlan, model: Model) -> trimesh.Trimesh:
    """The model moved onto the build plate as the plan says (printer coordinates, mm).

    Parameters
    ----------
    plan : PrintPlan
        The plan; its ``transform`` (4 x 4, rigid) takes patient LPS mm to the print frame.
    model : Model
        The model in patient space (LPS mm); left unchanged.

    Returns
    -------
    trimesh.Trimesh
        A moved copy of ``model.mesh``.
    """
    mesh = model.mesh.copy()
    mesh.apply_transform(np.asarray(plan.transform))
    return mesh


def plan_support_faces(plan: PrintPlan, model: Model) -> np.ndarray:
    """Per face of ``model.mesh``: True where the plan puts supports (overhangs off the plate).

    Parameters
    ----------
    plan : PrintPlan
        The plan: its transform, whether the printer needs supports, its critical overhang
        angle (degrees) and plate tolerance (mm).
    model : Model
        The model in patient space (LPS mm).

    Returns
    -------
    ndarray (F,) of bool
        True for faces that, once placed, face down more steeply than the critical angle and
        lie wholly above the plate tolerance; all False when the printer needs no supports.
    """
    arrays = MeshArrays.from_arrays(model.mesh.vertices, model.mesh.faces)
    transform = np.asarray(plan.transform)
    if not plan.needs_supports:
        return np.zeros(len(arrays.faces), dtype=bool)
    normal_z = arrays.normals @ transform[2, :3]
    z = arrays.triangles @ transform[2, :3] + transform[2, 3]
    cos_critical = np.cos(np.radians(plan.critical_overhang_deg))
    return (-normal_z > cos_critical) & (z.min(axis=1) > plan.plate_tolerance_mm)


def write_print_files(plan: PrintPlan, model: Model, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``print.stl`` (binary), ``print.3mf`` (mm) and ``plan.json`` into ``out_dir``.

    The oriented model goes through the package's one model writer (:func:`pipeline.mesh.write_model`:
    an anonymous header, trimesh's 3MF exporter) and every file through the one atomic writer, so a
    crash never leaves a partial file under the final name.

    Parameters
    ----------
    plan : PrintPlan
        The plan whose rigid transform puts the model on the build plate (mm).
    model : Model
        The model in patient space (LPS mm).
    out_dir : path-like
        Folder to write into (created if missing).

    Returns
    -------
    dict of str to Path
        ``"stl"``, ``"3mf"`` and ``"plan"`` to the written files.
    """
    out = Path(out_dir)
    # named "print" alone: the header stays fixed whatever the model is called
    oriented = Model(mesh=oriented_mesh(plan, model), name="print", provenance={})
    return {
        "stl": write_model(oriented, out / "print.stl"),
        "3mf": write_model(oriented, out / "print.3mf"),
        "plan": atomic_write(out / "plan.json", plan.to_json() + "\n"),
    }


def read_plan(path: str | os.PathLike) -> PrintPlan:
    """The :class:`PrintPlan` a ``plan.json`` holds (as :func:`write_print_files` wrote it).

    Parameters
    ----------
    path : path-like
        The ``plan.json`` of a model folder.

    Returns
    -------
    PrintPlan
        The plan, its alternatives as :class:`~pipeline.prepare.plan.PlanAlternative`.

    Raises
    ------
    PrintPlanError
        The file cannot be read, is not JSON, or does not hold a plan's fields (exit 10).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        alternatives = [PlanAlternative(**entry) for entry in data.pop("alternatives", [])]
        return PrintPlan(**data, alternatives=alternatives)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise PrintPlanError(f"{path}: not a print plan ({error})",
                             hint="re-run anatomodel prepare for this model") from None
