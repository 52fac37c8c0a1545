"""The packet pictures: the rigid fit (the print mesh recognised as the model moved onto the plate),
the print picture drawn from the model and the plan's transform, and the CT slices' centre (the
mask voxel nearest the centroid)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh
from PIL import Image

from pipeline.document.pictures import display_mesh, mask_centroid_index, print_views_png, rigid_transform
from pipeline.geometry import Geometry, Mask


def test_rigid_transform_recovers_a_random_motion_and_refuses_anything_else():
    model = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    model.apply_scale([1.0, 2.0, 3.0])  # no symmetry a rotation could hide in
    motion = trimesh.transformations.random_rotation_matrix(np.random.default_rng(5).random(3))
    motion[:3, 3] = [5.0, -3.0, 40.0]
    moved = model.copy()
    moved.apply_transform(motion)
    np.testing.assert_allclose(rigid_transform(model, moved), motion, atol=1e-9)
    scaled = model.copy()
    scaled.apply_scale(1.01)  # not rigid: 1% is up to 0.3 mm here
    assert rigid_transform(model, scaled) is None
    mirrored = model.copy()
    mirrored.apply_transform(np.diag([-1.0, 1.0, 1.0, 1.0]))
    assert rigid_transform(model, mirrored) is None
    assert rigid_transform(model, trimesh.creation.icosphere(subdivisions=2)) is None


@pytest.mark.parametrize("subdivisions", [3, 5])  # drawn whole (1280 faces), decimated for display (20480)
def test_print_picture_from_the_model_and_the_plan_transform_matches_the_placed_mesh(subdivisions):
    """The picture from the model in patient space and the plan's transform is, pixel for pixel,
    the picture of the mesh moved onto the plate first (the way it was drawn before), with the
    same faces in red: the support flags carried by nearest face centre do not change with a
    rigid motion, nor does the plate line."""
    model = trimesh.creation.icosphere(subdivisions=subdivisions, radius=12.0)
    model.apply_scale([1.0, 1.6, 2.2])
    motion = trimesh.transformations.random_rotation_matrix(np.random.default_rng(11).random(3))
    motion[:3, 3] = [3.0, -7.0, 0.0]
    lowest = model.copy().apply_transform(motion).bounds[0, 2]
    motion = trimesh.transformations.translation_matrix([0.0, 0.0, -lowest]) @ motion  # onto the plate
    placed = model.copy().apply_transform(motion)
    flags = placed.face_normals[:, 2] < -0.5  # downward faces: what needs support, in the print frame
    shown = display_mesh(model)
    assert (shown is model) == (subdivisions == 3)
    before = print_views_png(placed, flags, shown=None if shown is model else shown.copy().apply_transform(motion))
    after = print_views_png(model, flags, shown=shown, transform=motion)
    pixels = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int) for png in (before, after)]
    red = [np.count_nonzero((p[..., 0] > 150) & (p[..., 1] < 60)) for p in pixels]
    assert red[0] > 200  # supports are drawn
    assert red[0] == red[1]
    np.testing.assert_array_equal(pixels[0], pixels[1])


def _nearest_by_brute_force(array: np.ndarray, spacing: tuple[float, float, float]) -> tuple[int, ...]:
    points = np.argwhere(array)
    scaled = points * np.asarray(spacing)
    return tuple(int(v) for v in points[np.argmin(np.sum((scaled - scaled.mean(axis=0)) ** 2, axis=1))])


def test_centroid_voxel_is_the_nearest_mask_voxel_of_all():
    """Against every voxel's distance: an arch (centroid far outside it), a blob, scattered voxels."""
    spacing = (0.5, 0.36, 0.36)
    shape = (60, 90, 80)
    k, j, i = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    radius = np.hypot(j - 16.0, k - 2.0)
    arch = (np.abs(radius - 12.0) < 1.5) & (np.abs(i - 14.0) < 2.0) & (k > 2.0)  # a half ring: centroid off it
    blob = (k - 12.0) ** 2 + (j - 20.0) ** 2 / 4 + (i - 9.0) ** 2 < 30.0
    scattered = np.random.default_rng(3).random(shape) > 0.9995
    for array in (arch, blob, scattered, arch | scattered):
        mask = Mask(array.astype(np.uint8), Geometry(shape, spacing, (0.0, 0.0, 0.0)), {1: "structure"})
        expected = _nearest_by_brute_force(array, spacing)
        found = mask_centroid_index(mask)
        assert array[found]
        centroid = np.argwhere(array).mean(axis=0) * spacing
        # the same voxel, or one exactly as near (a tie broken by rounding of the centroid)
        assert found == expected or np.isclose(np.sum((np.multiply(found, spacing) - centroid) ** 2),
                                               np.sum((np.multiply(expected, spacing) - centroid) ** 2))
    arch_mask = Mask(arch.astype(np.uint8), Geometry(shape, spacing, (0.0, 0.0, 0.0)), {1: "structure"})
    assert mask_centroid_index(arch_mask) == _nearest_by_brute_force(arch, spacing)
