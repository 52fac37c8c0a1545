"""The packet pictures' rigid fit: the print mesh recognised as the model moved onto the plate."""

from __future__ import annotations

import numpy as np
import trimesh

from pipeline.document.pictures import rigid_transform


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
