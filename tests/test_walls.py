"""The two wall-thickness measurements (``pipeline.mesh.thickness``) against a hollow sphere.

A ball of radius 10 mm with a concentric 9 mm cavity has a 1.0 mm wall everywhere. The prepare
stage measures it on the mesh (rays from face centres to the far surface); the mesh stage on
the voxel mask (a march through the 0/1 grid, exits placed at the interpolated 0.5 level). Each
is held to the accuracy it can have: the surface rays to the faceting of the mesh (the distance
between the two polyhedra's face planes differs from 1 mm by R - r times 1 - cos of the facet's
half-angle), the march to one voxel.
"""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from pipeline.geometry import Geometry, Mask
from pipeline.mesh import mesh_mask
from pipeline.mesh.thickness import MaskField, march, sample_wall_thickness
from pipeline.prepare.arrays import MeshArrays

OUTER_MM, INNER_MM = 10.0, 9.0
WALL_MM = OUTER_MM - INNER_MM


def _hollow_sphere_mesh(subdivisions: int = 5) -> trimesh.Trimesh:
    """Outer icosphere, and the inner one turned inside out (its normals face the cavity)."""
    outer = trimesh.creation.icosphere(subdivisions=subdivisions, radius=OUTER_MM)
    inner = trimesh.creation.icosphere(subdivisions=subdivisions, radius=INNER_MM)
    inner.invert()
    return trimesh.util.concatenate([outer, inner])


def _hollow_sphere_mask(voxel_mm: float) -> Mask:
    """Mask of the shell at the voxel centres of a grid with ``voxel_mm`` spacing, off-centre."""
    count = int(np.ceil(2 * (OUTER_MM + 2.0) / voxel_mm))
    origin = np.full(3, -(count - 1) / 2 * voxel_mm) + (0.13, -0.07, 0.05)  # not on a voxel centre
    geometry = Geometry((count,) * 3, (voxel_mm,) * 3, tuple(origin))
    index = np.stack(np.meshgrid(*[np.arange(count)] * 3, indexing="ij"), axis=-1)
    radius = np.linalg.norm(geometry.index_to_lps(index), axis=-1)
    return Mask(((radius < OUTER_MM) & (radius > INNER_MM)).astype(np.uint8), geometry, {1: "shell"})


def test_surface_rays_measure_the_wall_to_the_faceting_of_the_mesh():
    mesh = _hollow_sphere_mesh()
    assert mesh.is_watertight and mesh.volume == pytest.approx(4 / 3 * np.pi * (OUTER_MM**3 - INNER_MM**3), rel=2e-3)
    sample = sample_wall_thickness(MeshArrays.from_arrays(mesh.vertices, mesh.faces), max_mm=2 * WALL_MM)
    assert len(sample.faces) > 2000
    assert np.isfinite(sample.thickness_mm).all()  # every ray, from either surface, meets the other
    # The inner sphere is the outer one scaled: each inner face is parallel to its outer face, the
    # two planes (R - r) cos(a) apart, a the angle between a face's normal and its corners' radii
    # (under 1.4 degrees on a 5-times subdivided icosphere): 1 mm to within 3e-4 mm.
    assert np.abs(sample.thickness_mm - WALL_MM).max() < 0.01


def test_the_mask_march_measures_the_wall_within_one_voxel():
    voxel_mm = 0.25
    mask = _hollow_sphere_mask(voxel_mm)
    padded = np.pad(mask.array, 1)
    field = MaskField(padded, (-1, -1, -1), mask.geometry)
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(4000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for radius, inward in ((OUTER_MM, -directions), (INNER_MM, directions)):  # both faces of the wall
        thickness = march(field, radius * directions, inward, length_mm=3 * WALL_MM, step_mm=voxel_mm / 2,
                          inside=True)
        assert np.isfinite(thickness).all()
        assert np.abs(thickness - WALL_MM).max() <= voxel_mm
        assert abs(np.median(thickness) - WALL_MM) <= voxel_mm / 4


def test_mesh_qa_reports_the_wall_of_the_meshed_shell_within_one_voxel():
    voxel_mm = 0.25
    _, report = mesh_mask(_hollow_sphere_mask(voxel_mm), min_wall_mm=1.5)
    assert report.cavities == 1 and report.watertight
    assert report.min_wall_thickness_mm == pytest.approx(WALL_MM, abs=voxel_mm)
    # the whole shell is thinner than 1.5 mm: thin regions cover (nearly) all of it
    assert report.thin_area_fraction > 0.95
    assert all(abs(region.min_thickness_mm - WALL_MM) <= voxel_mm for region in report.thin_regions)


def test_a_ray_that_never_enters_the_solid_is_no_reading():
    voxel_mm = 0.5
    mask = _hollow_sphere_mask(voxel_mm)
    field = MaskField(np.pad(mask.array, 1), (-1, -1, -1), mask.geometry)
    # from the outer surface outwards (inside=True): the ray only ever meets background
    origins = OUTER_MM * np.eye(3)
    thickness = march(field, origins + 0.3 * np.eye(3), np.eye(3), length_mm=4.0, step_mm=voxel_mm / 2, inside=True)
    assert np.isnan(thickness).all()  # not a wall of one step's length
