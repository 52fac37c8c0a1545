"""Image grids in patient space: the one place that maps voxel indices to LPS millimetres.

Conventions (used by every other module, never re-derived elsewhere):

* Arrays are indexed in **array order** ``array[k, j, i]``: ``k`` the slice, ``j`` the image row,
  ``i`` the image column, as a stack of DICOM slices reads naturally and as
  ``SimpleITK.GetArrayFromImage`` returns it.
* Every index, spacing and shape in this package is given in that same array order.
* Patient coordinates are DICOM LPS (x to the patient's left, y posterior, z superior), in mm.
* ``Geometry.affine`` is the 4x4 matrix taking ``(k, j, i, 1)`` to ``(x, y, z, 1)`` in LPS mm.
  Its 3x3 part is ``direction @ diag(spacing)``, where column ``a`` of ``direction`` is the unit
  LPS vector along array axis ``a``.

Conversion to ITK's (i, j, k) order happens only in :func:`Geometry.to_sitk` and
:func:`Geometry.from_sitk`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DicomError, EnvironmentFault, GeometryError
from pipeline.files import atomic_write

#: Geometries whose origins, spacings or directions differ by less than this are the same grid.
GRID_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Geometry:
    """A regular grid in patient LPS space.

    Parameters
    ----------
    shape : tuple of int
        Array shape ``(nk, nj, ni)``.
    spacing : tuple of float
        Voxel spacing along the array axes ``(sk, sj, si)``, mm. All positive.
    origin : tuple of float
        LPS position (mm) of the centre of voxel ``[0, 0, 0]``.
    direction : (3, 3) array_like
        Column ``a`` is the unit LPS direction of array axis ``a``. Must be orthonormal
        (gantry-tilted acquisitions are resampled onto such a grid by the loader).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = np.asarray(self.direction, dtype=float)
        if len(shape) != 3 or any(n < 1 for n in shape):
            raise GeometryError(f"grid shape must be three positive sizes, got {self.shape}")
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or any(s <= 0 for s in spacing):
            raise GeometryError(f"voxel spacing must be three positive numbers (mm), got {self.spacing}")
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise GeometryError(f"grid origin must be three finite numbers (mm), got {self.origin}")
        if direction.shape != (3, 3) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise GeometryError(
                "grid direction must be an orthonormal 3x3 matrix; an oblique (sheared) grid such as a "
                "gantry-tilted series must be resampled first"
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in direction))

    # -- the mapping ------------------------------------------------------------------------
    @property
    def direction_matrix(self) -> np.ndarray:
        """(3, 3) array: column ``a`` is the LPS unit vector of array axis ``a``."""
        return np.asarray(self.direction, dtype=float)

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from array index ``(k, j, i, 1)`` to LPS ``(x, y, z, 1)`` in mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        affine[:3, 3] = self.origin
        return affine

    def index_to_lps(self, index: Any) -> np.ndarray:
        """Map array indices ``(..., 3)`` in ``(k, j, i)`` order (fractional allowed) to LPS mm."""
        affine = self.affine
        # einsum, not matmul: BLAS thread start-up makes (n, 3) @ (3, 3) several times slower.
        return np.einsum("ij,...j->...i", affine[:3, :3], np.asarray(index, dtype=float)) + affine[:3, 3]

    def lps_to_index(self, lps: Any) -> np.ndarray:
        """Map LPS points ``(..., 3)`` in mm to fractional array indices ``(k, j, i)``."""
        affine = self.affine
        inverse = np.linalg.inv(affine[:3, :3])
        return np.einsum("ij,...j->...i", inverse, np.asarray(lps, dtype=float) - affine[:3, 3])

    def lps_direction_to_index(self, directions: Any) -> np.ndarray:
        """Index-space displacement ``(..., 3)`` per mm travelled along LPS directions."""
        inverse = np.linalg.inv(self.affine[:3, :3])
        return np.einsum("ij,...j->...i", inverse, np.asarray(directions, dtype=float))

    def contains_index(self, index: Any) -> np.ndarray:
        """True where a (fractional) array index lies within the grid's voxel centres +- 0.5."""
        index = np.asarray(index, dtype=float)
        upper = np.asarray(self.shape, dtype=float) - 0.5
        return np.all((index >= -0.5) & (index <= upper), axis=-1)

    # -- derived ---------------------------------------------------------------------------
    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel, mm^3."""
        return float(np.prod(self.spacing))

    @property
    def slice_normal(self) -> np.ndarray:
        """LPS unit vector along array axis 0 (the slice stacking direction)."""
        return self.direction_matrix[:, 0]

    def bounds_lps(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned LPS box (min, max) enclosing all voxel centres, mm."""
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij")).reshape(3, -1).T
        points = self.index_to_lps(corners)
        return points.min(axis=0), points.max(axis=0)

    def same_grid(self, other: "Geometry", tolerance_mm: float = GRID_TOLERANCE_MM) -> bool:
        """True if ``other`` describes the same voxels (shape, spacing, origin, direction)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance_mm)
            and np.allclose(self.origin, other.origin, atol=tolerance_mm)
            and np.allclose(self.direction_matrix, other.direction_matrix, atol=1e-5)
        )

    def crop(self, box: tuple[slice, slice, slice]) -> "Geometry":
        """Geometry of the sub-grid ``array[box]`` (slices with unit step only)."""
        starts, shape = [], []
        for axis, item in enumerate(box):
            start, stop, step = item.indices(self.shape[axis])
            if step != 1 or stop <= start:
                raise GeometryError(f"crop box {box} is empty or strided along axis {axis}")
            starts.append(start)
            shape.append(stop - start)
        origin = self.index_to_lps(np.asarray(starts, dtype=float))
        return dataclasses.replace(self, shape=tuple(shape), origin=tuple(origin))

    @classmethod
    def from_dicom(
        cls,
        image_orientation: Any,
        first_position: Any,
        pixel_spacing: Any,
        slice_spacing: float,
        shape: tuple[int, int, int],
    ) -> "Geometry":
        """Grid of a stack of parallel, evenly spaced DICOM slices.

        Parameters
        ----------
        image_orientation : sequence of 6 float
            ImageOrientationPatient: direction cosines of a row (towards increasing column
            index i) then of a column (towards increasing row index j).
        first_position : sequence of 3 float
            ImagePositionPatient of the first slice (the one with the lowest position along
            the slice normal ``row x column``), mm.
        pixel_spacing : sequence of 2 float
            PixelSpacing: distance between rows (along j), then between columns (along i), mm.
        slice_spacing : float
            Distance between consecutive slices along the normal, mm (positive).
        shape : tuple of int
            ``(slices, rows, columns)``.
        """
        orientation = np.asarray(image_orientation, dtype=float)
        if orientation.shape != (6,):
            raise GeometryError(f"ImageOrientationPatient must hold 6 numbers, got {list(orientation)}")
        row_direction = orientation[:3] / np.linalg.norm(orientation[:3])
        column_direction = orientation[3:] / np.linalg.norm(orientation[3:])
        if abs(row_direction @ column_direction) > 1e-3:
            raise GeometryError(f"ImageOrientationPatient {list(orientation)} is not orthogonal")
        normal = np.cross(row_direction, column_direction)
        direction = np.column_stack([normal, column_direction, row_direction])
        spacing = (float(slice_spacing), float(pixel_spacing[0]), float(pixel_spacing[1]))
        return cls(tuple(shape), spacing, tuple(float(v) for v in first_position),
                   tuple(tuple(row) for row in direction))

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "shape_kji": list(self.shape),
            "spacing_kji_mm": list(self.spacing),
            "origin_lps_mm": list(self.origin),
            "direction_columns_kji": [list(row) for row in self.direction],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        return cls(
            shape=tuple(data["shape_kji"]),
            spacing=tuple(data["spacing_kji_mm"]),
            origin=tuple(data["origin_lps_mm"]),
            direction=tuple(tuple(row) for row in data["direction_columns_kji"]),
        )

    def to_sitk(self, image: Any) -> Any:
        """Stamp this geometry on a SimpleITK image made from an array of ``self.shape``."""
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(self.origin)
        # ITK's direction is row-major with columns in (i, j, k) order.
        image.SetDirection(tuple(self.direction_matrix[:, ::-1].ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: Any) -> "Geometry":
        """Geometry of a SimpleITK image (3-D)."""
        size = image.GetSize()
        if len(size) != 3:
            raise GeometryError(f"expected a 3-D image, got {len(size)}-D of size {size}")
        direction_ijk = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        return cls(
            shape=tuple(reversed(size)),
            spacing=tuple(reversed(image.GetSpacing())),
            origin=tuple(image.GetOrigin()),
            direction=tuple(tuple(row) for row in direction_ijk[:, ::-1]),
        )


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice] | None:
    """Smallest box of array slices holding every nonzero voxel, grown by ``margin`` voxels.

    Returns ``None`` for an empty mask. The box is clipped to the array.
    """
    if mask.ndim != 3:
        raise ValueError(f"bounding_box needs a 3-D array, got {mask.ndim}-D")
    # One pass over the whole array finds the slices; the other two axes are read in that slab only.
    present = np.flatnonzero(np.any(mask, axis=(1, 2)))
    if present.size == 0:
        return None
    slab = mask[present[0]:present[-1] + 1]
    ranges = [(int(present[0]), int(present[-1]))]
    for axis, other in ((1, (0, 2)), (2, (0, 1))):
        present = np.flatnonzero(np.any(slab, axis=other))
        ranges.append((int(present[0]), int(present[-1])))
    return tuple(slice(max(first - margin, 0), min(last + 1 + margin, size))  # type: ignore[return-value]
                 for (first, last), size in zip(ranges, mask.shape))


def format_lps(point: Any) -> str:
    """An LPS point for messages, ``LPS (x, y, z) mm``: 0.1 mm, or 3 digits when huge (1e+308)."""
    def mm(value: float) -> str:
        return f"{value:.1f}" if abs(value) < 1e6 else f"{value:.3g}"
    x, y, z = (float(v) for v in np.asarray(point, dtype=float).reshape(3))
    return f"LPS ({mm(x)}, {mm(y)}, {mm(z)}) mm"


def _describe_grid(array: np.ndarray, geometry: Geometry) -> str:
    """``shape, dtype, spacing, origin``: what a repr of an image may show (no PHI)."""
    spacing = ", ".join(f"{s:g}" for s in geometry.spacing)
    origin = ", ".join(f"{o:.2f}" for o in geometry.origin)
    return (f"shape={'x'.join(map(str, geometry.shape))}, dtype={array.dtype}, spacing_mm=({spacing}), "
            f"origin_lps_mm=({origin})")


@dataclass
class Volume:
    """A CT volume: int16 Hounsfield units on a patient-space grid, with its provenance.

    Parameters
    ----------
    array : (nk, nj, ni) ndarray of int16
        Hounsfield units.
    geometry : Geometry
        The grid.
    provenance : dict
        Source identifiers (patient, study, series, UIDs, scanner, SHA-256 of the sources) and
        what the loader did (tilt correction, resampling). Contains PHI: never put it in a path.
    """

    array: np.ndarray
    geometry: Geometry
    provenance: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Sizes and geometry only: the provenance holds names, ids, dates and UIDs (PHI).
        return f"Volume({_describe_grid(self.array, self.geometry)})"

    def __post_init__(self) -> None:
        if self.array.dtype != np.int16:
            raise GeometryError(f"a Volume holds int16 HU, got {self.array.dtype}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise GeometryError(f"array shape {self.array.shape} does not match grid {self.geometry.shape}")

    def crop(self, box: tuple[slice, slice, slice]) -> "Volume":
        """The sub-volume ``array[box]`` with its own geometry (a view, not a copy)."""
        return Volume(self.array[box], self.geometry.crop(box), dict(self.provenance))

    def hu_at_lps(self, lps: Any) -> np.ndarray:
        """HU at the voxels nearest to LPS points ``(..., 3)``; raises if any lies outside."""
        index = self.geometry.lps_to_index(lps)
        inside = self.geometry.contains_index(index)
        if not np.all(inside):
            raise GeometryError(f"point(s) {np.asarray(lps)[~inside].tolist()} lie outside the volume")
        nearest = np.clip(np.rint(index).astype(int), 0, np.asarray(self.geometry.shape) - 1)
        return self.array[nearest[..., 0], nearest[..., 1], nearest[..., 2]]


@dataclass
class Mask:
    """A label map on a Volume's grid: 0 is background, each positive value one structure.

    Parameters
    ----------
    array : (nk, nj, ni) ndarray of uint8 or bool
        Labels.
    geometry : Geometry
        The grid (the source Volume's, so the mask overlays the images exactly).
    labels : dict of int to str
        Structure name of each label value.
    provenance : dict
        Where the mask came from (segmentation report summary or imported file).
    """

    array: np.ndarray
    geometry: Geometry
    labels: dict[int, str] = field(default_factory=lambda: {1: "structure"})
    provenance: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Sizes, geometry and label names only; the provenance may name the source series.
        return f"Mask({_describe_grid(self.array, self.geometry)}, labels={self.labels!r})"

    def __post_init__(self) -> None:
        if self.array.dtype == bool:
            self.array = self.array.view(np.uint8)
        if self.array.dtype != np.uint8:
            raise GeometryError(f"a Mask holds uint8 labels, got {self.array.dtype}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise GeometryError(f"mask shape {self.array.shape} does not match grid {self.geometry.shape}")

    def binary(self, label: int | None = None) -> np.ndarray:
        """Boolean array of one label, or of every nonzero label when ``label`` is None."""
        return self.array > 0 if label is None else self.array == label

    def voxel_count(self, label: int | None = None) -> int:
        return int(np.count_nonzero(self.binary(label)))

    def volume_ml(self, label: int | None = None) -> float:
        """Volume of one label (or all), millilitres."""
        return self.voxel_count(label) * self.geometry.voxel_volume_mm3 / 1000.0

    def crop(self, box: tuple[slice, slice, slice]) -> "Mask":
        return Mask(self.array[box], self.geometry.crop(box), dict(self.labels), dict(self.provenance))


# -- files ----------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: Path) -> bool:
    """True for the single-file image formats read by :func:`read_image` (by name)."""
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in IMAGE_SUFFIXES)


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI, NRRD or MetaImage file into an array (array order) and its LPS geometry.

    NIfTI's RAS convention is converted to LPS by SimpleITK. A 4-D or 2-D file is refused.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise DicomError(f"{path}: cannot be read as a NIfTI/NRRD/MHA image ({first_line})") from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomError(
            f"{path}: expected a 3-D single-channel image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    geometry = Geometry.from_sitk(image)
    return sitk.GetArrayFromImage(image), geometry


def write_image(array: np.ndarray, geometry: Geometry, path: str | Path) -> Path:
    """Write an array on its geometry as NIfTI (``.nii``/``.nii.gz``), NRRD or MHA, by suffix.

    The file is written to a temporary name beside the target, read back, and renamed, so a
    crash or a full disk never leaves a half-written image.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not is_image_file(path):
        raise ValueError(f"{path}: unsupported image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    if tuple(array.shape) != geometry.shape:
        raise GeometryError(f"array shape {array.shape} does not match grid {geometry.shape}")
    image = geometry.to_sitk(sitk.GetImageFromArray(np.ascontiguousarray(array)))

    def write_and_verify(temporary: Path) -> None:
        sitk.WriteImage(image, str(temporary), useCompression=True)
        _verify_written(temporary, array, path)

    return atomic_write(path, write_and_verify)


#: NIfTI-1 single file: a 348-byte header and a 4-byte extension flag before the voxels.
_NIFTI_VOXEL_OFFSET = 352


def _gzip_nifti_complete(temporary: Path, array: np.ndarray) -> bool:
    """Whether a ``.nii.gz`` holds the header of ``array``'s grid and ends with the gzip trailer
    of all its voxels: the header is decompressed, the rest is not (reading the file back cost
    1 s for a clinical mask). A cut file ends inside the deflate stream, so its last four bytes
    are not the trailer's length of header plus voxels."""
    import gzip
    import struct

    expected = (_NIFTI_VOXEL_OFFSET + array.nbytes) % 2**32
    try:
        with open(temporary, "rb") as stream:
            stream.seek(-4, 2)
            (length,) = struct.unpack("<I", stream.read(4))
        with gzip.open(temporary, "rb") as stream:
            header = stream.read(_NIFTI_VOXEL_OFFSET)
    except (OSError, EOFError, struct.error):
        return False
    if len(header) < _NIFTI_VOXEL_OFFSET or struct.unpack("<i", header[:4])[0] != 348:
        return False
    dims = struct.unpack("<8h", header[40:56])
    offset = struct.unpack("<f", header[108:112])[0]
    bits = struct.unpack("<h", header[72:74])[0]
    return (length == expected and dims[0] == array.ndim and tuple(dims[1:1 + array.ndim]) == array.shape[::-1]
            and offset == _NIFTI_VOXEL_OFFSET and bits == 8 * array.itemsize)


def _verify_written(temporary: Path, array: np.ndarray, path: Path) -> None:
    """Check the written file: ITK reports a short write (disk full, file size limit) on stderr
    only and returns as if it had succeeded, so a truncated file is caught here, not by a user.
    A ``.nii.gz`` is checked from its header and gzip trailer, any other file is read back."""
    import SimpleITK as sitk

    if path.name.lower().endswith(".nii.gz"):
        ok = _gzip_nifti_complete(temporary, array)
    else:
        try:
            written = sitk.ReadImage(str(temporary))  # kept alive while its array view is compared
            ok = np.array_equal(sitk.GetArrayViewFromImage(written), array)
        except RuntimeError:
            ok = False
    if not ok:
        temporary.unlink(missing_ok=True)
        raise EnvironmentFault(f"cannot write {path}: the file came out incomplete (the disk is full or a file "
                               "size limit was reached)", hint="free space there or choose another output folder")


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI/NRRD/MHA CT volume as int16 HU (values are rounded and clipped to int16)."""
    array, geometry = read_image(path)
    if array.dtype != np.int16:
        array = np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    return Volume(array, geometry, {"source_file": Path(path).name, "source_format": "image-file"})


def read_mask(path: str | Path, labels: dict[int, str] | None = None) -> Mask:
    """Read a label map from NIfTI/NRRD/MHA. Non-integer or negative labels are refused."""
    array, geometry = read_image(path)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.allclose(array, np.rint(array)):
            raise GeometryError(f"{path}: a label map must hold whole numbers, found fractional values")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise GeometryError(f"{path}: labels must lie in 0..255, found {array.min()}..{array.max()}")
    array = array.astype(np.uint8)
    present = sorted(int(v) for v in np.unique(array) if v > 0)
    names = {value: (labels or {}).get(value, f"label_{value}") for value in present}
    return Mask(array, geometry, names, {"source_file": Path(path).name})


def write_volume(volume: Volume, path: str | Path) -> Path:
    return write_image(volume.array, volume.geometry, path)


def write_mask(mask: Mask, path: str | Path) -> Path:
    return write_image(mask.array, mask.geometry, path)
