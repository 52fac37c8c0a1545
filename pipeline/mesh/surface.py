"""Marching cubes on the cropped, padded mask: a closed triangle surface in voxel-index space.

The mask is cropped to its bounding box and padded with one layer of background on every side,
so a structure cut by the edge of the scanned volume gets a flat cap exactly on the volume's
edge (half a voxel beyond the last voxel centre) instead of an open rim.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from skimage.measure import marching_cubes

from pipeline.errors import MeshError
from pipeline.geometry import Geometry, Mask, bounding_box

#: Names of the six faces of the grid, as (axis, side) in array order (k, j, i).
EDGE_NAMES = {(0, 0): "first slice (k=0)", (0, 1): "last slice", (1, 0): "first row (j=0)",
              (1, 1): "last row", (2, 0): "first column (i=0)", (2, 1): "last column"}


@dataclass
class RawSurface:
    """Marching-cubes output before smoothing.

    Attributes
    ----------
    vertices_index : (n, 3) float64
        Vertex positions as fractional array indices ``(k, j, i)`` of the full mask grid.
    faces : (m, 3) int64
        Triangles, wound so normals point outward in patient (LPS) space.
    cap_planes : list of (axis, index)
        Edges of the volume the mask touches: vertices with ``vertices_index[:, axis] == index``
        lie on the flat cap there.
    box : tuple of slice
        The crop box in the full grid.
    voxel_count : int
        Voxels of the meshed structure.
    algorithm : str
        The marching-cubes implementation that made it (``"vtkFlyingEdges3D"`` or
        ``"skimage.measure.marching_cubes (Lewiner)"``): the record says which one ran, not "auto".
    """

    vertices_index: np.ndarray
    faces: np.ndarray
    cap_planes: list[tuple[int, float]]
    box: tuple[slice, slice, slice]
    voxel_count: int
    algorithm: str = ""

    def cap_vertices(self, tolerance: float = 1e-6) -> list[tuple[int, float, np.ndarray]]:
        """The vertices on each flat cap.

        Parameters
        ----------
        tolerance : float
            Largest index-space distance from the cap plane, voxels.

        Returns
        -------
        list of (axis, index, (v,) ndarray of int)
            For each cap plane, its axis, its fractional index and the vertices on it.
        """
        return [(axis, value, np.flatnonzero(np.abs(self.vertices_index[:, axis] - value) < tolerance))
                for axis, value in self.cap_planes]

    def touched_edges(self) -> list[str]:
        """Human-readable names of the volume edges the structure is cut by.

        Returns
        -------
        list of str
            One name per cap plane (e.g. ``"first slice (k=0)"``).
        """
        names = []
        for axis, value in self.cap_planes:
            names.append(EDGE_NAMES[(axis, 0 if value < 0 else 1)])
        return names


def structure_array(mask: Mask, label: int | None) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Boolean array of the structure cropped to its bounding box, and that box.

    The box is found on the (cheap) nonzero test first so that the label comparison runs on the
    crop only, never on a full clinical grid.

    Parameters
    ----------
    mask : Mask
        Label map.
    label : int or None
        The label to take; None takes every nonzero label.

    Returns
    -------
    binary : ndarray of bool
        The structure cropped to its bounding box.
    box : tuple of slice
        The box in the full grid (k, j, i).

    Raises
    ------
    MeshError
        The label is not in the mask, the mask is empty, or the label has no voxels.
    """
    if label is not None and label not in mask.labels and not np.any(mask.array == label):
        known = ", ".join(f"{value} ({name})" for value, name in sorted(mask.labels.items())) or "none"
        raise MeshError(f"label {label} is not in the mask", hint=f"labels present: {known}")
    box = _nonzero_box(mask.array)
    if box is None:
        raise MeshError("the mask is empty: no voxel is labelled, so there is no surface to mesh",
                        hint="check the segmentation (threshold, seeds) before meshing")
    crop = mask.array[box]
    binary = crop > 0 if label is None else crop == label
    inner = bounding_box(binary)
    if inner is None:
        raise MeshError(f"label {label} has no voxels in the mask",
                        hint="choose a label that was segmented, or mesh all labels")
    box = tuple(slice(outer.start + part.start, outer.start + part.stop) for outer, part in zip(box, inner))
    return binary[inner], box  # type: ignore[return-value]


def _nonzero_box(array: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of the nonzero voxels, in two contiguous passes over a full grid."""
    slices = np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1))
    if slices.size == 0:
        return None
    first, last = int(slices[0]), int(slices[-1]) + 1
    footprint = array[first:last].any(axis=0)
    rows = np.flatnonzero(footprint.any(axis=1))
    columns = np.flatnonzero(footprint.any(axis=0))
    return (slice(first, last), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1))


def extract_surface(padded: np.ndarray, box: tuple[slice, slice, slice], geometry: Geometry,
                    backend: str = "auto") -> RawSurface:
    """Marching cubes (Lewiner, level 0.5) on a cropped 0/1 structure padded with background.

    Parameters
    ----------
    padded : (a + 2, b + 2, c + 2) ndarray of uint8
        The structure cropped to ``box``, with one layer of zeros on every side.
    box : tuple of slice
        Position of the crop in the full grid.
    geometry : Geometry
        The full grid (only its shape and orientation are used here).
    backend : {"auto", "vtk", "skimage"}
        "vtk": ``vtkFlyingEdges3D``; "skimage": ``skimage.measure.marching_cubes``; "auto": VTK
        if installed. Both place vertices at the 0.5 crossing of grid edges.

    Returns
    -------
    RawSurface
        Vertices in fractional full-grid indices, outward-wound faces, caps, the backend used.

    Raises
    ------
    MeshError
        Marching cubes found no surface.
    """
    if backend == "auto":
        backend = "vtk" if _have_vtk() else "skimage"
    if backend == "vtk":
        vertices, faces = _flying_edges(padded)
        algorithm = "vtkFlyingEdges3D"
    else:
        algorithm = "skimage.measure.marching_cubes (Lewiner)"
        vertices, faces, _, _ = marching_cubes(padded.astype(np.float32), level=0.5, allow_degenerate=False)
    if len(faces) == 0:
        raise MeshError("marching cubes found no surface in the mask")
    offset = np.array([s.start for s in box], dtype=np.float64) - 1.0
    vertices = vertices.astype(np.float64) + offset
    faces = faces.astype(np.int64)
    # Orientation: outward normals in patient space. The index-to-LPS map flips handedness
    # when its determinant is negative.
    if _points_outward(vertices, faces) != (np.linalg.det(geometry.affine[:3, :3]) > 0):
        faces = faces[:, ::-1].copy()
    caps = []
    for axis, part in enumerate(box):
        if part.start == 0:
            caps.append((axis, -0.5))
        if part.stop == geometry.shape[axis]:
            caps.append((axis, geometry.shape[axis] - 0.5))
    return RawSurface(vertices, faces, caps, box, int(np.count_nonzero(padded)), algorithm)


def _have_vtk() -> bool:
    try:
        import vtkmodules.vtkFiltersCore  # noqa: F401
    except ImportError:
        return False
    return True


def _flying_edges(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VTK flying edges at level 0.5 on a uint8 array; vertices in array index order (k, j, i)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonCore import VTK_UNSIGNED_CHAR
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    use_threaded_vtk()
    image = vtkImageData()
    image.SetDimensions(padded.shape[2], padded.shape[1], padded.shape[0])  # VTK's x is the fastest axis
    scalars = numpy_to_vtk(np.ascontiguousarray(padded).ravel(), deep=False, array_type=VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    surface = vtkFlyingEdges3D()
    surface.SetInputData(image)
    surface.SetValue(0, 0.5)
    surface.ComputeNormalsOff()
    surface.ComputeGradientsOff()
    surface.ComputeScalarsOff()
    surface.Update()
    output = surface.GetOutput()
    if output.GetNumberOfPolys() == 0:
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.int64)
    vertices = vtk_to_numpy(output.GetPoints().GetData())[:, ::-1].astype(np.float64)
    faces = vtk_to_numpy(output.GetPolys().GetConnectivityArray()).reshape(-1, 3).astype(np.int64)
    return vertices, faces


def use_threaded_vtk() -> None:
    """Run VTK's parallel filters on all cores, as 3D Slicer's VTK (TBB) does.

    The VTK wheels start with the sequential SMP back end; their thread back end is switched on
    unless the user chose one (environment variable ``VTK_SMP_BACKEND_IN_USE``).
    """
    from vtkmodules.vtkCommonCore import vtkSMPTools

    if "VTK_SMP_BACKEND_IN_USE" not in os.environ and vtkSMPTools.GetBackend() == "Sequential":
        vtkSMPTools.SetBackend("STDThread")


def _points_outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """True if the faces around the topmost vertex (largest first index) face up, i.e. outward.

    At the surface's extreme point along an axis the outward normal is that axis; the summed
    (area-weighted) normal of the faces around that vertex shares its sign. This avoids a full
    volume integral on a million triangles.
    """
    top = int(np.argmax(vertices[:, 0]))
    around = faces[np.any(faces == top, axis=1)]
    a, b, c = vertices[around[:, 0]], vertices[around[:, 1]], vertices[around[:, 2]]
    return float(np.cross(b - a, c - a)[:, 0].sum()) > 0
