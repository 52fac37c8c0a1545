"""``Model``: a printable triangle mesh in patient LPS millimetres, the mesh stage's output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh


@dataclass
class Model:
    """A closed triangle mesh of one structure, in patient LPS mm.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Vertices in LPS mm, faces wound so that normals point outward.
    name : str
        Structure name (e.g. ``"aorta"``); never patient data.
    important_faces : ndarray of bool, optional
        Per face: True where supports should be avoided (e.g. the lumen of a hollow vessel).
    provenance : dict
        Which mask and source volume the mesh came from.
    """

    mesh: trimesh.Trimesh
    name: str = "model"
    important_faces: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
