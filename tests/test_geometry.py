"""Index <-> LPS mapping against the DICOM definition itself, and NIfTI round trips."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.errors import DicomError, GeometryError
from pipeline.geometry import (Geometry, Mask, Volume, bounding_box, read_mask, read_volume, write_mask,
                               write_volume)


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


# Hand-made DICOM slice stacks: (ImageOrientationPatient, first ImagePositionPatient,
# PixelSpacing [between rows, between columns], slice spacing).
AXIAL = ([1, 0, 0, 0, 1, 0], [-120.3, -98.7, -401.5], [0.7, 0.8], 1.25)
SAGITTAL = ([0, 1, 0, 0, 0, -1], [12.0, -100.0, 80.0], [0.9, 0.6], 2.0)
_oblique = _rotation([1, 2, 3], 27.0)
OBLIQUE = (list(_oblique[:, 0]) + list(_oblique[:, 1]), [33.3, -12.1, 55.5], [0.55, 0.45], 1.7)


def _dicom_position(orientation, first_position, pixel_spacing, slice_spacing, k, j, i):
    """Where DICOM PS3.3 C.7.6.2.1.1 puts column i, row j of slice k (slices along row x column)."""
    row = np.asarray(orientation[:3], float)
    column = np.asarray(orientation[3:], float)
    normal = np.cross(row, column)
    slice_position = np.asarray(first_position, float) + k * slice_spacing * normal
    return slice_position + i * pixel_spacing[1] * row + j * pixel_spacing[0] * column


@pytest.mark.parametrize("stack", [AXIAL, SAGITTAL, OBLIQUE], ids=["axial", "sagittal", "oblique"])
def test_index_to_lps_matches_dicom_definition(stack):
    shape = (7, 11, 13)
    geometry = Geometry.from_dicom(*stack, shape=shape)
    rng = np.random.default_rng(3)
    indices = np.column_stack([rng.integers(0, n, 50) for n in shape])
    expected = np.array([_dicom_position(*stack, *index) for index in indices])
    np.testing.assert_allclose(geometry.index_to_lps(indices), expected, atol=1e-9)
    np.testing.assert_allclose(geometry.lps_to_index(expected), indices, atol=1e-9)
    # The 4x4 affine says the same thing.
    homogeneous = np.column_stack([indices, np.ones(len(indices))])
    np.testing.assert_allclose((geometry.affine @ homogeneous.T).T[:, :3], expected, atol=1e-9)


@pytest.mark.parametrize("stack", [AXIAL, OBLIQUE], ids=["axial", "oblique"])
def test_nifti_round_trip_keeps_geometry_and_values(tmp_path, stack):
    shape = (5, 6, 7)
    geometry = Geometry.from_dicom(*stack, shape=shape)
    array = np.arange(np.prod(shape), dtype=np.int16).reshape(shape) - 100
    volume = Volume(array, geometry)
    path = write_volume(volume, tmp_path / "v.nii.gz")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, array)
    assert back.geometry.same_grid(geometry, tolerance_mm=1e-4)
    # Independently: SimpleITK's own index->physical mapping agrees with ours (ITK index is i, j, k).
    image = sitk.ReadImage(str(path))
    for k, j, i in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((i, j, k)),
                                   geometry.index_to_lps([k, j, i]), atol=1e-3)


def test_crop_keeps_patient_positions():
    geometry = Geometry.from_dicom(*OBLIQUE, shape=(10, 12, 14))
    box = (slice(2, 8), slice(3, 12), slice(0, 5))
    cropped = geometry.crop(box)
    assert cropped.shape == (6, 9, 5)
    np.testing.assert_allclose(cropped.index_to_lps([1, 2, 3]), geometry.index_to_lps([3, 5, 3]), atol=1e-9)


def test_bounding_box_and_empty():
    mask = np.zeros((6, 7, 8), bool)
    assert bounding_box(mask) is None
    mask[2:4, 1, 5:7] = True
    assert bounding_box(mask) == (slice(2, 4), slice(1, 2), slice(5, 7))
    assert bounding_box(mask, margin=2) == (slice(0, 6), slice(0, 4), slice(3, 8))


def test_bad_grids_are_refused():
    with pytest.raises(GeometryError, match="spacing"):
        Geometry((2, 2, 2), (1, 0, 1), (0, 0, 0))
    with pytest.raises(GeometryError, match="orthonormal"):
        Geometry((2, 2, 2), (1, 1, 1), (0, 0, 0), ((1, 0, 0), (0.5, 1, 0), (0, 0, 1)))
    with pytest.raises(GeometryError, match="not orthogonal"):
        Geometry.from_dicom([1, 0, 0, 0.2, 1, 0], [0, 0, 0], [1, 1], 1, (2, 2, 2))
    with pytest.raises(GeometryError, match="int16"):
        Volume(np.zeros((2, 2, 2), np.float64), Geometry((2, 2, 2), (1, 1, 1), (0, 0, 0)))


def test_mask_round_trip_and_volume(tmp_path):
    geometry = Geometry((4, 5, 6), (2.0, 0.5, 0.5), (1, 2, 3))
    array = np.zeros(geometry.shape, np.uint8)
    array[1:3, 1:4, 2:5] = 1
    array[0, 0, 0] = 2
    mask = Mask(array, geometry, {1: "aorta", 2: "other"})
    assert mask.volume_ml(1) == pytest.approx(2 * 3 * 3 * 0.5 / 1000)
    back = read_mask(write_mask(mask, tmp_path / "m.nii.gz"), labels={1: "aorta"})
    np.testing.assert_array_equal(back.array, array)
    assert back.labels == {1: "aorta", 2: "label_2"}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])  # ITK's NIfTI reader itself turns NaN into 0
def test_a_float_image_with_no_hu_at_some_voxels_is_refused(tmp_path, bad, suffix):
    array = np.full((4, 5, 6), -1024.0, dtype=np.float32)
    array[1, 2, 3] = 40.4  # rounds to 40 HU
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    assert read_volume(path).array[1, 2, 3] == 40
    array[2, 2, 2] = bad
    array[3, 0, 0] = bad
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(DicomError, match="2 voxel"):
        read_volume(path)


def _random_mask(shape=(40, 48, 56), seed=4) -> Mask:
    array = (np.random.default_rng(seed).random(shape) > 0.5).astype(np.uint8)  # hardly compressible
    return Mask(array, Geometry(shape, (0.5, 0.36, 0.36), (1.0, -2.0, 3.0)), {1: "structure"})


def test_written_mask_is_checked_from_its_header_and_gzip_trailer(tmp_path):
    """A complete .nii.gz passes; the same file cut anywhere, or one of another grid, does not."""
    from pipeline.geometry import _gzip_nifti_complete

    mask = _random_mask()
    path = write_mask(mask, tmp_path / "m.nii.gz")
    assert _gzip_nifti_complete(path, mask.array)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), mask.array)  # ITK agrees
    data = path.read_bytes()
    for cut in (10, 300, len(data) // 2, len(data) - 5, len(data) - 1):
        short = tmp_path / f"cut{cut}.nii.gz"
        short.write_bytes(data[:cut])
        assert not _gzip_nifti_complete(short, mask.array), cut
    assert not _gzip_nifti_complete(path, mask.array[:, :, :-1])  # another grid: other dims and length


def test_file_size_limit_while_writing_a_mask_is_refused(tmp_path):
    """RLIMIT_FSIZE cuts the .nii.gz (ITK says so on stderr only): refused, nothing left behind."""
    import os
    import resource
    import subprocess
    import sys
    from pathlib import Path

    child = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from tests.test_geometry import _random_mask\n"
        "from pipeline.geometry import write_mask\n"
        "from pipeline.errors import EnvironmentFault\n"
        "try:\n"
        "    write_mask(_random_mask((80, 96, 112)), sys.argv[1])\n"
        "except EnvironmentFault as error:\n"
        "    print('refused:', error)\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    repo = str(Path(__file__).resolve().parents[1])
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path / "m.nii.gz"), repo], capture_output=True,
                            text=True, preexec_fn=limit, env={**os.environ, "PYTHONPATH": repo}, timeout=300)
    assert "refused:" in result.stdout and "incomplete" in result.stdout, (result.stdout, result.stderr)
    assert not list(tmp_path.iterdir())
