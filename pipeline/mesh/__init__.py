"""Mesh stage: a label map to a watertight, smoothed, decimated, checked surface in LPS mm.

Modules: :mod:`~pipeline.mesh.surface` (marching cubes), :mod:`~pipeline.mesh.smoothing`
(Taubin, volume correction), :mod:`~pipeline.mesh.decimate`, :mod:`~pipeline.mesh.repair`,
:mod:`~pipeline.mesh.qa` (with :mod:`~pipeline.mesh.topology`, :mod:`~pipeline.mesh.thickness`,
:mod:`~pipeline.mesh.intersections`, :mod:`~pipeline.mesh.distance`),
:mod:`~pipeline.mesh.export` and :mod:`~pipeline.mesh.build` (:func:`mesh_mask`).
"""

from pipeline.mesh.build import mesh_mask
from pipeline.mesh.export import FORMATS, read_model, write_model
from pipeline.mesh.options import MeshOptions
from pipeline.mesh.report import MeshReport, ThinRegion

__all__ = ["FORMATS", "MeshOptions", "MeshReport", "ThinRegion", "mesh_mask", "read_model", "write_model"]
