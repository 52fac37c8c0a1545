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
        """(3, 3) array: column ``a`` is the LPS unit vector of array axis ``a``.

        Returns
        -------
        (3, 3) ndarray of float
            A new array each call; for a DICOM stack, column 0 is the slice normal (axis k),
            column 1 the image column direction (axis j, down the rows), column 2 the row
            direction (axis i).
        """
        return np.asarray(self.direction, dtype=float)

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from array index ``(k, j, i, 1)`` to LPS ``(x, y, z, 1)`` in mm.

        Returns
        -------
        (4, 4) ndarray of float
            ``[[direction @ diag(spacing), origin], [0, 0, 0, 1]]``: the 3x3 part in mm per voxel
            step, the last column the LPS origin in mm.
        """
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        affine[:3, 3] = self.origin
        return affine

    def index_to_lps(self, index: Any) -> np.ndarray:
        """Map array indices ``(..., 3)`` in ``(k, j, i)`` order (fractional allowed) to LPS mm.

        Parameters
        ----------
        index : array_like, shape (..., 3)
            Array indices ``(k, j, i)``, voxel units; integer indices are voxel centres. Points
            outside the grid are mapped too (no bounds check).

        Returns
        -------
        ndarray of float, shape (..., 3)
            LPS positions ``(x, y, z)``, mm.
        """
        affine = self.affine
        # einsum, not matmul: BLAS thread start-up makes (n, 3) @ (3, 3) several times slower.
        return np.einsum("ij,...j->...i", affine[:3, :3], np.asarray(index, dtype=float)) + affine[:3, 3]

    def lps_to_index(self, lps: Any) -> np.ndarray:
        """Map LPS points ``(..., 3)`` in mm to fractional array indices ``(k, j, i)``.

        Parameters
        ----------
        lps : array_like, shape (..., 3)
            LPS positions ``(x, y, z)``, mm.

        Returns
        -------
        ndarray of float, shape (..., 3)
            Fractional array indices ``(k, j, i)``, voxel units; may lie outside the grid (see
            :meth:`contains_index`).
        """
        affine = self.affine
        inverse = np.linalg.inv(affine[:3, :3])
        return np.einsum("ij,...j->...i", inverse, np.asarray(lps, dtype=float) - affine[:3, 3])

    def lps_direction_to_index(self, directions: Any) -> np.ndarray:
        """Index-space displacement ``(..., 3)`` per mm travelled along LPS directions.

        Parameters
        ----------
        directions : array_like, shape (..., 3)
            LPS displacement vectors ``(x, y, z)``, mm (a unit vector gives the step per mm).
            Not translated by the origin.

        Returns
        -------
        ndarray of float, shape (..., 3)
            The same displacements in array index units ``(k, j, i)``, voxels.
        """
        inverse = np.linalg.inv(self.affine[:3, :3])
        return np.einsum("ij,...j->...i", inverse, np.asarray(directions, dtype=float))

    def contains_index(self, index: Any) -> np.ndarray:
        """True where a (fractional) array index lies within the grid's voxel centres +- 0.5.

        Parameters
        ----------
        index : array_like, shape (..., 3)
            Fractional array indices ``(k, j, i)``, voxel units (as from :meth:`lps_to_index`).

        Returns
        -------
        ndarray of bool, shape (...)
            True where every component lies in ``[-0.5, n - 0.5]`` (bounds included); NaN is
            outside.
        """
        index = np.asarray(index, dtype=float)
        upper = np.asarray(self.shape, dtype=float) - 0.5
        return np.all((index >= -0.5) & (index <= upper), axis=-1)

    # -- derived ---------------------------------------------------------------------------
    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel, mm^3.

        Returns
        -------
        float
            ``sk * sj * si``, mm^3.
        """
        return float(np.prod(self.spacing))

    @property
    def slice_normal(self) -> np.ndarray:
        """LPS unit vector along array axis 0 (the slice stacking direction).

        Returns
        -------
        (3,) ndarray of float
            Column 0 of :attr:`direction_matrix`, unitless, pointing towards increasing ``k``.
        """
        return self.direction_matrix[:, 0]

    def bounds_lps(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned LPS box (min, max) enclosing all voxel centres, mm.

        Returns
        -------
        tuple of two (3,) ndarray of float
            ``(lower, upper)`` LPS corners ``(x, y, z)``, mm. The box runs through the corner voxel
            centres, so it is half a voxel smaller on each side than the voxels' extent.
        """
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij")).reshape(3, -1).T
        points = self.index_to_lps(corners)
        return points.min(axis=0), points.max(axis=0)

    def same_grid(self, other: "Geometry", tolerance_mm: float = GRID_TOLERANCE_MM) -> bool:
        """True if ``other`` describes the same voxels (shape, spacing, origin, direction).

        Parameters
        ----------
        other : Geometry
            The grid to compare with.
        tolerance_mm : float
            Largest difference of a spacing or origin component still counted as equal, mm
            (default :data:`GRID_TOLERANCE_MM`). Directions are compared to 1e-5 whatever it is.

        Returns
        -------
        bool
            True when the shapes are equal and spacing, origin and direction agree within tolerance.
        """
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance_mm)
            and np.allclose(self.origin, other.origin, atol=tolerance_mm)
            and np.allclose(self.direction_matrix, other.direction_matrix, atol=1e-5)
        )

    def crop(self, box: tuple[slice, slice, slice]) -> "Geometry":
        """Geometry of the sub-grid ``array[box]`` (slices with unit step only).

        Parameters
        ----------
        box : tuple of 3 slice
            Array slices ``(k, j, i)`` in voxel indices, as from :func:`bounding_box`; ``None``
            bounds and negative indices are allowed (Python slice rules), the step must be 1.

        Returns
        -------
        Geometry
            The same spacing and direction, the cropped shape, and the origin moved to the LPS
            position (mm) of the box's first voxel.

        Raises
        ------
        GeometryError
            If a slice is empty or strided, or ``box`` holds fewer than three slices (exit code 7).
        """
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

        Returns
        -------
        Geometry
            The grid with array axes (slice, row, column): spacing ``(slice_spacing, row spacing,
            column spacing)`` mm, origin ``first_position`` mm, direction columns ``(row x column,
            column, row)`` (so ``k`` grows along the normal).

        Raises
        ------
        GeometryError
            If ImageOrientationPatient does not hold 6 numbers or its two vectors are not
            orthogonal (cosine above 1e-3), or the spacings or shape are not positive (exit code 7).
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
        """The geometry as JSON-ready lists, named with their order and unit.

        Returns
        -------
        dict
            ``shape_kji`` (voxels), ``spacing_kji_mm`` (mm), ``origin_lps_mm`` (mm) and
            ``direction_columns_kji`` (rows of the direction matrix, whose columns are the axes'
            LPS unit vectors); :meth:`from_dict` reads it back.
        """
        return {
            "shape_kji": list(self.shape),
            "spacing_kji_mm": list(self.spacing),
            "origin_lps_mm": list(self.origin),
            "direction_columns_kji": [list(row) for row in self.direction],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        """The geometry written by :meth:`to_dict` (a report or a golden file).

        Parameters
        ----------
        data : dict
            A mapping with ``shape_kji``, ``spacing_kji_mm``, ``origin_lps_mm`` and
            ``direction_columns_kji``; other keys are ignored.

        Returns
        -------
        Geometry
            The grid; a missing key raises ``KeyError``, an invalid value ``GeometryError``
            (exit code 7) from the constructor.
        """
        return cls(
            shape=tuple(data["shape_kji"]),
            spacing=tuple(data["spacing_kji_mm"]),
            origin=tuple(data["origin_lps_mm"]),
            direction=tuple(tuple(row) for row in data["direction_columns_kji"]),
        )

    def to_sitk(self, image: Any) -> Any:
        """Stamp this geometry on a SimpleITK image made from an array of ``self.shape``.

        Parameters
        ----------
        image : SimpleITK.Image
            A 3-D image of size ``reversed(self.shape)`` (as ``GetImageFromArray`` makes it from an
            array in ``(k, j, i)`` order); the size is not checked. Modified in place.

        Returns
        -------
        SimpleITK.Image
            ``image``, with spacing (mm) and direction columns in ITK's ``(i, j, k)`` order and
            the LPS origin (mm).
        """
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(self.origin)
        # ITK's direction is row-major with columns in (i, j, k) order.
        image.SetDirection(tuple(self.direction_matrix[:, ::-1].ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: Any) -> "Geometry":
        """Geometry of a SimpleITK image (3-D).

        Parameters
        ----------
        image : SimpleITK.Image
            A 3-D image; its spacing (mm), origin and direction are in ITK's ``(i, j, k)`` order
            and LPS, as SimpleITK reads every format.

        Returns
        -------
        Geometry
            The grid in array order ``(k, j, i)``.

        Raises
        ------
        GeometryError
            If the image is not 3-D (exit code 7), or its direction is not orthonormal (from
            the constructor).
        """
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

    Parameters
    ----------
    mask : (nk, nj, ni) ndarray
        Any 3-D array in array order ``(k, j, i)``; nonzero (True) voxels count.
    margin : int
        Voxels added on each side along every axis (default 0), before clipping.

    Returns
    -------
    tuple of 3 slice, or None
        Array slices ``(k, j, i)`` with unit step, stop exclusive, usable as ``mask[box]`` and
        by :meth:`Geometry.crop`; ``None`` when no voxel is nonzero.

    Raises
    ------
    ValueError
        If ``mask`` is not 3-D (a programming error, not user input).
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
    """An LPS point for messages, ``LPS (x, y, z) mm``: 0.1 mm, or 3 digits when huge (1e+308).

    Parameters
    ----------
    point : array_like
        Three numbers ``(x, y, z)``, LPS mm (any shape holding exactly three values).

    Returns
    -------
    str
        Such as ``LPS (12.0, -30.5, 88.1) mm``.
    """
    def mm(value: float) -> str:
        """One coordinate for :func:`format_lps`.

        Parameters
        ----------
        value : float
            A coordinate, mm.

        Returns
        -------
        str
            One decimal below 1e6 mm, otherwise three significant digits.
        """
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
        """The sub-volume ``array[box]`` with its own geometry (a view, not a copy).

        Parameters
        ----------
        box : tuple of 3 slice
            Unit-step array slices ``(k, j, i)`` in voxel indices, as from :func:`bounding_box`.

        Returns
        -------
        Volume
            The HU view on the cropped grid (see :meth:`Geometry.crop`), with a shallow copy of
            the provenance; an empty or strided box raises ``GeometryError`` (exit code 7).
        """
        return Volume(self.array[box], self.geometry.crop(box), dict(self.provenance))

    def hu_at_lps(self, lps: Any) -> np.ndarray:
        """HU at the voxels nearest to LPS points ``(..., 3)``; raises if any lies outside.

        Parameters
        ----------
        lps : array_like, shape (..., 3)
            LPS positions ``(x, y, z)``, mm.

        Returns
        -------
        ndarray of int16, shape (...)
            Hounsfield units of the nearest voxel centre to each point (no interpolation).

        Raises
        ------
        GeometryError
            If any point lies outside the grid's voxels (exit code 7).
        """
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
        """Boolean array of one label, or of every nonzero label when ``label`` is None.

        Parameters
        ----------
        label : int or None
            The label value (1..255), or None for every structure.

        Returns
        -------
        (nk, nj, ni) ndarray of bool
            A new array in array order ``(k, j, i)``; all False for a label that is absent.
        """
        return self.array > 0 if label is None else self.array == label

    def voxel_count(self, label: int | None = None) -> int:
        """Number of voxels of one label, or of every nonzero label.

        Parameters
        ----------
        label : int or None
            The label value (1..255), or None for every structure.

        Returns
        -------
        int
            Voxel count (0 for an absent label).
        """
        return int(np.count_nonzero(self.binary(label)))

    def volume_ml(self, label: int | None = None) -> float:
        """Volume of one label (or all), millilitres.

        Parameters
        ----------
        label : int or None
            The label value (1..255), or None for every structure.

        Returns
        -------
        float
            Voxel count times the voxel volume, mL (1 mL = 1000 mm^3).
        """
        return self.voxel_count(label) * self.geometry.voxel_volume_mm3 / 1000.0

    def crop(self, box: tuple[slice, slice, slice]) -> "Mask":
        """The sub-mask ``array[box]`` with its own geometry (a view, not a copy).

        Parameters
        ----------
        box : tuple of 3 slice
            Unit-step array slices ``(k, j, i)`` in voxel indices, as from :func:`bounding_box`.

        Returns
        -------
        Mask
            The label view on the cropped grid (see :meth:`Geometry.crop`), with copies of the
            labels and provenance; an empty or strided box raises ``GeometryError`` (exit code 7).
        """
        return Mask(self.array[box], self.geometry.crop(box), dict(self.labels), dict(self.provenance))


# -- files ----------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: Path) -> bool:
    """True for the single-file image formats read by :func:`read_image` (by name).

    Parameters
    ----------
    path : Path
        A file name; only its name is looked at (case-insensitive), the file need not exist.

    Returns
    -------
    bool
        True when the name ends with one of :data:`IMAGE_SUFFIXES`.
    """
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in IMAGE_SUFFIXES)


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI, NRRD or MetaImage file into an array (array order) and its LPS geometry.

    NIfTI's RAS convention is converted to LPS by SimpleITK. A 4-D or 2-D file is refused.

    Parameters
    ----------
    path : str or Path
        The image file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, or any
        other format SimpleITK reads).

    Returns
    -------
    tuple of (ndarray, Geometry)
        The voxel values in the file's own pixel type, indexed ``(k, j, i)``, and their grid
        (LPS, mm).

    Raises
    ------
    DicomError
        If the file is missing or unreadable, or is not a 3-D single-channel image (exit code 5).
    GeometryError
        If the file's direction is not orthonormal (from :meth:`Geometry.from_sitk`, exit code 7).
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

    Parameters
    ----------
    array : (nk, nj, ni) ndarray
        Voxel values in array order ``(k, j, i)``, written in their own pixel type.
    geometry : Geometry
        The grid of ``array`` (LPS, mm); NIfTI files get it converted to RAS by SimpleITK.
    path : str or Path
        Target file; its suffix (one of :data:`IMAGE_SUFFIXES`) picks the format. Its folder
        is created if missing; an existing file is replaced.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the suffix is not an image format (the command line checks it before any work).
    GeometryError
        If the array's shape is not the grid's (exit code 7).
    EnvironmentFault
        If the file came out incomplete (full disk, file size limit; exit code 15).
    OSError
        If the folder cannot be written (from :func:`pipeline.files.atomic_write`).
    """
    import SimpleITK as sitk

    path = Path(path)
    if not is_image_file(path):
        raise ValueError(f"{path}: unsupported image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    if tuple(array.shape) != geometry.shape:
        raise GeometryError(f"array shape {array.shape} does not match grid {geometry.shape}")
    image = geometry.to_sitk(sitk.GetImageFromArray(np.ascontiguousarray(array)))

    def write_and_verify(temporary: Path) -> None:
        """Write the image to ``temporary`` and read it back.

        Parameters
        ----------
        temporary : Path
            The temporary sibling of ``path`` given by :func:`pipeline.files.atomic_write`.
        """
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
    """Read a NIfTI/NRRD/MHA CT volume as int16 HU (values are rounded and clipped to int16).

    Parameters
    ----------
    path : str or Path
        The image file; its values are taken as HU (no rescale slope or intercept applied).

    Returns
    -------
    Volume
        int16 HU on the file's grid (LPS, mm); the provenance names the file (its name only)
        and ``source_format: image-file``.

    Raises
    ------
    DicomError
        From :func:`read_image`: missing, unreadable or not 3-D single-channel; or a
        floating-point image holding NaN or infinite values, which have no HU (exit code 5).
    GeometryError
        From :func:`read_image`: the file's direction is not orthonormal (exit code 7).
    """
    array, geometry = read_image(path)
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:  # rounding would turn them into 0 HU (water) without a word
            raise DicomError(f"{Path(path).name}: {bad} voxel(s) are NaN or infinite, which is no HU value",
                             hint="fill them in the source (e.g. with -1024 HU for air) and export again")
    if array.dtype != np.int16:
        array = np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    return Volume(array, geometry, {"source_file": Path(path).name, "source_format": "image-file"})


def read_mask(path: str | Path, labels: dict[int, str] | None = None) -> Mask:
    """Read a label map from NIfTI/NRRD/MHA. Non-integer or negative labels are refused.

    Parameters
    ----------
    path : str or Path
        The image file holding label values 0..255 (0 background), any pixel type.
    labels : dict of int to str, optional
        Names of the label values; a value present in the file but not named here is called
        ``label_<value>``. Names of absent values are dropped.

    Returns
    -------
    Mask
        uint8 labels on the file's grid (LPS, mm), ``labels`` naming every value present; the
        provenance names the file (its name only).

    Raises
    ------
    GeometryError
        If the values are fractional or non-finite, or outside 0..255 (exit code 7).
    DicomError
        From :func:`read_image`: missing, unreadable or not 3-D single-channel (exit code 5).
    """
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
    """Write a CT volume (int16 HU) as NIfTI, NRRD or MHA, atomically; see :func:`write_image`.

    Parameters
    ----------
    volume : Volume
        The volume; its provenance is not written (it holds PHI).
    path : str or Path
        Target file; its suffix picks the format.

    Returns
    -------
    Path
        ``path``; errors as :func:`write_image` (``ValueError`` for a bad suffix,
        ``EnvironmentFault`` exit code 15 for an incomplete file).
    """
    return write_image(volume.array, volume.geometry, path)


def write_mask(mask: Mask, path: str | Path) -> Path:
    """Write a label map (uint8) as NIfTI, NRRD or MHA, atomically; see :func:`write_image`.

    Parameters
    ----------
    mask : Mask
        The label map; its label names and provenance are not written.
    path : str or Path
        Target file; its suffix picks the format.

    Returns
    -------
    Path
        ``path``; errors as :func:`write_image` (``ValueError`` for a bad suffix,
        ``EnvironmentFault`` exit code 15 for an incomplete file).
    """
    return write_image(mask.array, mask.geometry, path)
