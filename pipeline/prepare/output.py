"""Write the oriented model (``print.stl``, ``print.3mf``) and ``plan.json``, each atomically."""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import trimesh

from pipeline.model import Model
from pipeline.prepare.arrays import MeshArrays
from pipeline.prepare.plan import PrintPlan

#: Fixed STL header: nothing from the patient or the case goes into the file.
STL_HEADER = b"anatomodel print.stl, units mm, oriented on the build plate".ljust(80, b" ")


def oriented_mesh(plan: PrintPlan, model: Model) -> trimesh.Trimesh:
    """The model moved onto the build plate as the plan says (printer coordinates, mm)."""
    mesh = model.mesh.copy()
    mesh.apply_transform(np.asarray(plan.transform))
    return mesh


def plan_support_faces(plan: PrintPlan, model: Model) -> np.ndarray:
    """Per face of ``model.mesh``: True where the plan puts supports (overhangs off the plate)."""
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

    Each file is written to a temporary file in the same folder and renamed, so a crash never
    leaves a partial file under the final name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mesh = oriented_mesh(plan, model)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    written = {
        "stl": _atomic(out / "print.stl", stl_bytes(vertices, faces)),
        "3mf": _atomic(out / "print.3mf", threemf_bytes(vertices, faces)),
        "plan": _atomic(out / "plan.json", (plan.to_json() + "\n").encode("utf-8")),
    }
    return written


def stl_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """Binary STL with the fixed anonymous header."""
    arrays = MeshArrays.from_arrays(vertices, faces)
    records = np.zeros(len(faces), dtype=[("normal", "<f4", 3), ("corners", "<f4", (3, 3)),
                                          ("attribute", "<u2")])
    records["normal"] = arrays.normals
    records["corners"] = arrays.triangles
    return STL_HEADER + struct.pack("<I", len(faces)) + records.tobytes()


_CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="model" ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>
</Types>
"""
_RELS = """<?xml version="1.0" encoding="UTF-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Target="/3D/3dmodel.model" Id="rel0" Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/>
</Relationships>
"""


def threemf_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """A 3MF package (core specification) holding one mesh object, unit millimetre."""
    vertex_lines = "\n".join(f'<vertex x="{x:.6f}" y="{y:.6f}" z="{z:.6f}"/>' for x, y, z in vertices)
    face_lines = "\n".join(f'<triangle v1="{a}" v2="{b}" v3="{c}"/>' for a, b, c in faces)
    model = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<model unit="millimeter" xml:lang="en-US" '
        'xmlns="http://schemas.microsoft.com/3dmanufacturing/core/2015/02">\n'
        '<metadata name="Application">anatomodel</metadata>\n'
        '<resources>\n<object id="1" type="model">\n<mesh>\n<vertices>\n'
        f"{vertex_lines}\n</vertices>\n<triangles>\n{face_lines}\n</triangles>\n"
        "</mesh>\n</object>\n</resources>\n"
        '<build>\n<item objectid="1"/>\n</build>\n</model>\n'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr("3D/3dmodel.model", model)
    return buffer.getvalue()


def _atomic(path: Path, data: bytes) -> Path:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes owner-only files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
