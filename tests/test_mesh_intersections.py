"""The self-intersection shortcut of mesh QA against the exhaustive search, above its threshold.

Above ``EXHAUSTIVE_INTERSECTION_FACES`` faces, QA tests only the faces near a thin wall, a narrow
gap or a fold (a dense surface kept near its marching-cubes surface can cross itself only
there). Here a mesh of that size comes from the mesh stage itself: two balls one voxel apart,
the gap a collapsing wall or a narrowing between vessels would leave. Clean, QA's count must
equal the exhaustive search's (none); with one vertex pushed across the gap into the other
ball, the exhaustive search finds the crossing and QA must find exactly the same faces.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.geometry import Geometry, Mask
from pipeline.mesh import MeshOptions, mesh_mask
from pipeline.mesh.distance import SurfaceDistance
from pipeline.mesh.intersections import intersecting_faces
from pipeline.mesh.qa import EXHAUSTIVE_INTERSECTION_FACES, measure
from pipeline.mesh.surface import structure_array
from pipeline.mesh.thickness import MaskField

SPACING_MM, RADIUS_MM = 0.25, 12.0


@pytest.fixture(scope="module")
def two_balls():
    """The mask of two balls one voxel apart along L (x), and the mesh stage's model of it."""
    gap = SPACING_MM  # one voxel of background between the two
    centres = np.array([[-(RADIUS_MM + gap / 2), 0.0, 0.0], [RADIUS_MM + gap / 2, 0.0, 0.0]])
    across = int(np.ceil(2 * (RADIUS_MM + 1) / SPACING_MM))
    shape = (int(np.ceil((4 * RADIUS_MM + gap + 2) / SPACING_MM)), across, across)  # array axis k runs along L
    geometry = Geometry(shape, (SPACING_MM,) * 3, tuple(-(np.array(shape) - 1) / 2 * SPACING_MM))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    points = geometry.index_to_lps(index)
    inside = np.zeros(shape, dtype=bool)
    for centre in centres:
        inside |= np.linalg.norm(points - centre, axis=-1) < RADIUS_MM
    mask = Mask(inside.astype(np.uint8), geometry, {1: "two balls"})
    model, report = mesh_mask(mask, options=MeshOptions(target_faces=None))
    return mask, model, report, centres


def _exhaustive(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    return intersecting_faces(vertices, faces, np.arange(len(faces)))


def test_clean_mesh_above_the_threshold_agrees_with_the_exhaustive_search(two_balls):
    _, model, report, _ = two_balls
    vertices, faces = np.asarray(model.mesh.vertices), np.asarray(model.mesh.faces)
    assert len(faces) > EXHAUSTIVE_INTERSECTION_FACES  # the shortcut is what ran
    assert report.shells == 2 and report.watertight and not report.repaired
    assert report.self_intersecting_faces == len(_exhaustive(vertices, faces)) == 0


def test_a_crossing_planted_in_the_gap_is_found_as_the_exhaustive_search_finds_it(two_balls):
    mask, model, _, centres = two_balls
    vertices, faces = np.array(model.mesh.vertices), np.asarray(model.mesh.faces)
    # the vertex of the right ball nearest the left one, pushed 1 mm into the left ball
    right = np.flatnonzero(vertices[:, 0] < 0)
    moved = right[np.argmax(vertices[right, 0])]
    vertices[moved, 0] = centres[1, 0] - RADIUS_MM + 1.0
    expected = _exhaustive(vertices, faces)
    fan = (faces[expected] == moved).any(axis=1)
    assert fan.any() and (vertices[faces[expected[~fan]], 0] > 0).all() and (~fan).any()  # the spike and the ball it pierces

    binary, box = structure_array(mask, None)
    field = MaskField(np.pad(binary.view(np.uint8), 1), [s.start - 1 for s in box], mask.geometry)
    quality = measure(vertices, faces, field=field, raw=SurfaceDistance(np.asarray(model.mesh.vertices), faces),
                      min_wall_mm=None, probe_mm=2.0, sample=500)
    assert quality.self_intersecting_faces == expected.size


def test_cross_rows_is_numpy_s_cross_to_the_bit():
    """The row-wise cross product the ray tests use gives np.cross's very bits (views, float32,
    and the right-hand rule: x cross y is z)."""
    from pipeline.mesh.topology import cross_rows

    rng = np.random.default_rng(7)
    corners = rng.normal(scale=80.0, size=(20_000, 3, 3))
    u, w = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    assert np.array_equal(cross_rows(u, w), np.cross(u, w))
    assert np.array_equal(cross_rows(corners[:, 0], corners[:, 2]), np.cross(corners[:, 0], corners[:, 2]))
    single = corners[:, 0].astype(np.float32), corners[:, 1].astype(np.float32)
    assert cross_rows(*single).dtype == np.float32
    assert np.array_equal(cross_rows(*single), np.cross(*single))
    np.testing.assert_array_equal(cross_rows(np.eye(3)[[0]], np.eye(3)[[1]]), [[0.0, 0.0, 1.0]])
