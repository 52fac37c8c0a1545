"""Reading the scan of a printed model: a surface mesh, or a CT of the print meshed by our mesh stage.

A surface scan (structured light, photogrammetry) is read as it is: holes are expected and
allowed. A CT of the print (DICOM folder or file, NIfTI/NRRD/MHA) is thresholded at the half-way
level between air and resin, both found automatically (Otsu's split of the histogram, then the
median of each class), and meshed with :func:`pipeline.mesh.mesh_mask` on the CT's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from pipeline.errors import MeshError, ScanError
from pipeline.geometry import Mask, Volume, is_image_file
from pipeline.report import Report

MESH_SUFFIXES = (".stl", ".obj", ".ply", ".3mf")
#: Air and resin must differ by this many pooled standard deviations for a print to be present.
MIN_SEPARATION = 6.0
#: The histogram is estimated on at most this many voxels (a fixed-stride sample).
HISTOGRAM_SAMPLE = 2_000_000


@dataclass
class CtThreshold(Report):
    """How a CT of the print was turned into a surface.

    Attributes
    ----------
    otsu_level : float
        Otsu's split of the intensity histogram (HU or scanner units).
    background_level, object_level : float
        Median intensity of the voxels below and above the split.
    threshold : float
        The surface level used: half-way between the two (the ISO-50 edge of a blurred step).
    separation : float
        Distance of the two class means in pooled standard deviations.
    voxel_spacing_mm : list of float
        The CT grid the surface was meshed on, mm (array order).
    object_volume_mm3 : float
        Volume of the kept object, mm3.
    other_pieces : int
        Other pieces above the threshold (holders, debris) left out.
    """

    otsu_level: float
    background_level: float
    object_level: float
    threshold: float
    separation: float
    voxel_spacing_mm: list[float]
    object_volume_mm3: float
    other_pieces: int


@dataclass
class Scan:
    """A scan ready for registration.

    Attributes
    ----------
    mesh : trimesh.Trimesh
        Surface in the scanner's frame, in the file's units (mm expected).
    kind : {"surface", "ct"}
    source : str
        What was read, e.g. "stl file", "DICOM folder", "nii.gz file": never the file name,
        which may carry patient data.
    open_edges : int
        Edges used by one face only (holes of a surface scan; 0 for a closed surface).
    ct : CtThreshold or None
    """

    mesh: trimesh.Trimesh
    kind: str
    source: str
    open_edges: int
    ct: CtThreshold | None = None


def read_scan(path: str | Path, *, series: str | int = "auto") -> Scan:
    """Read a scan of a printed model.

    Parameters
    ----------
    path : str or Path
        An STL, OBJ, PLY or 3MF surface; or a CT of the print: a DICOM folder or file, or a
        NIfTI/NRRD/MHA volume.
    series : str or int
        Which series of a DICOM folder (see :func:`pipeline.load.load_series`).

    Returns
    -------
    Scan
        The scan's surface (mm, the scanner's or the CT's LPS frame), its kind and source.

    Raises
    ------
    ScanError
        Missing or empty file, no triangles, or a CT with no printed object in it.
    pipeline.errors.DicomError
        A CT that cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise ScanError(f"{path}: no such scan file or folder")
    if path.is_file() and path.suffix.lower() in MESH_SUFFIXES:
        return _surface(path)
    from pipeline.load import load_series  # a CT: the load stage reads it

    if path.is_file() and not is_image_file(path) and path.stat().st_size == 0:
        raise ScanError(f"{path.name}: the scan file is empty", hint="export the scan again")
    volume, _ = load_series(path, series)
    kind = "DICOM folder" if path.is_dir() else f"{_suffix(path)} file"
    try:
        return ct_scan(volume, source=kind)
    except ScanError as error:
        raise ScanError(f"{path.name}: {error}") from None


def _surface(path: Path) -> Scan:
    from pipeline.mesh import read_model

    if path.stat().st_size == 0:
        raise ScanError(f"{path.name}: the scan file is empty (0 bytes)", hint="export the scan again")
    try:
        mesh = read_model(path).mesh
    except MeshError as error:
        raise ScanError(f"scan {error}", hint="export the scan as a triangle mesh (STL, OBJ, PLY or 3MF)") from None
    mesh.remove_unreferenced_vertices()
    if not np.all(np.isfinite(mesh.vertices)):
        raise ScanError(f"{path.name}: the scan has vertices that are not finite numbers", hint="export it again")
    if mesh.area <= 0:
        raise ScanError(f"{path.name}: the scan's triangles enclose no area (all degenerate)")
    return Scan(mesh=mesh, kind="surface", source=f"{_suffix(path)} file", open_edges=_open_edges(mesh))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return "nii.gz" if name.endswith(".nii.gz") else (path.suffix.lstrip(".") or "DICOM")


def _open_edges(mesh: trimesh.Trimesh) -> int:
    return int(len(trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)))


def ct_scan(volume: Volume, source: str = "CT volume") -> Scan:
    """Mesh a CT of a printed model at the CT's resolution.

    The threshold is chosen from the histogram: Otsu's split separates air from resin, the
    surface level is half-way between their medians. The largest connected piece above it is
    the print; it must lie wholly inside the scanned volume.

    Parameters
    ----------
    volume : Volume
        The CT of the print (its values, indexed ``(k, j, i)``, on an LPS mm grid).
    source : str
        What was read, for the report (never a file name: it may carry patient data).

    Returns
    -------
    Scan
        The print's closed surface (kind ``ct``) in LPS mm.

    Raises
    ------
    ScanError
        Air and resin do not separate (no object), or the object is cut by the volume's edge.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from pipeline.mesh import MeshOptions, mesh_mask

    array = volume.array
    stride = max(1, array.size // HISTOGRAM_SAMPLE)
    sample = array.reshape(-1)[::stride].astype(np.float32)
    if sample.min() == sample.max():
        raise ScanError(f"the CT is uniform ({sample.min():g} everywhere): no printed object in it")
    otsu = float(threshold_otsu(sample))
    low, high = sample[sample <= otsu], sample[sample > otsu]
    pooled = float(np.sqrt((low.var() * low.size + high.var() * high.size) / sample.size))
    separation = float((high.mean() - low.mean()) / max(pooled, 1e-6))
    if separation < MIN_SEPARATION or high.size < 0.00001 * sample.size:
        raise ScanError(
            f"no printed object in the CT (the histogram has one population; background and "
            f"brightest class are {separation:.1f} standard deviations apart, a print is over {MIN_SEPARATION:g})",
            hint="check that the series is the CT of the printed model")
    background, bright = float(np.median(low)), float(np.median(high))
    threshold = 0.5 * (background + bright)
    labels, count = ndimage.label(array > threshold)
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)[1:]
    keep = int(np.argmax(sizes)) + 1
    binary = labels == keep
    del labels
    edges = [name for axis, name in enumerate(("first/last slice", "top/bottom row", "left/right column"))
             if binary.take(0, axis).any() or binary.take(-1, axis).any()]
    if edges:
        raise ScanError(
            f"the object above {threshold:.0f} is cut by the scan's edge ({', '.join(edges)}): "
            "this is not a whole printed model in air",
            hint="scan the print with the whole model inside the field of view, on a low-density support")
    mask = Mask(binary.view(np.uint8), volume.geometry, {1: "print"})
    spacing = volume.geometry.spacing
    try:
        model, _ = mesh_mask(mask, options=MeshOptions(target_faces=None, min_shell_volume_mm3=0.0))
    except MeshError as error:
        raise ScanError(f"the printed object in the CT cannot be meshed ({error})") from None
    info = CtThreshold(
        otsu_level=otsu, background_level=background, object_level=bright, threshold=threshold,
        separation=separation, voxel_spacing_mm=[float(s) for s in spacing],
        object_volume_mm3=float(sizes[keep - 1] * volume.geometry.voxel_volume_mm3), other_pieces=int(count - 1))
    return Scan(mesh=model.mesh, kind="ct", source=source, open_edges=_open_edges(model.mesh), ct=info)
