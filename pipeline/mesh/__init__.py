"""Mesh stage: a label map to a watertight, smoothed, decimated, checked surface in LPS mm.

Modules: :mod:`~pipeline.mesh.surface` (marching cubes), :mod:`~pipeline.mesh.smoothing`
(Taubin, volume correction), :mod:`~pipeline.mesh.decimate`, :mod:`~pipeline.mesh.repair`,
:mod:`~pipeline.mesh.qa` (with :mod:`~pipeline.mesh.topology`, :mod:`~pipeline.mesh.thickness`,
:mod:`~pipeline.mesh.intersections`, :mod:`~pipeline.mesh.distance`),
:mod:`~pipeline.mesh.export` and :mod:`~pipeline.mesh.build` (:func:`mesh_mask`).

Names are imported on first use: reading :class:`MeshOptions` (the case file's ``mesh:``) does
not import VTK and trimesh.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "mesh_mask": "pipeline.mesh.build",
    "FORMATS": "pipeline.mesh.export",
    "read_model": "pipeline.mesh.export",
    "write_model": "pipeline.mesh.export",
    "MeshOptions": "pipeline.mesh.options",
    "MeshReport": "pipeline.mesh.report",
    "ThinRegion": "pipeline.mesh.report",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
