"""Model files: every export reads back, with numpy-stl and trimesh, as the same triangles."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import trimesh
from stl import mesh as numpy_stl

from pipeline.errors import MeshError
from pipeline.geometry import Geometry, Mask
from pipeline.mesh import mesh_mask, read_model, write_model
from pipeline.model import Model


@pytest.fixture(scope="module")
def model() -> Model:
    """A meshed ellipsoid far from the origin, as a real patient-space model would be."""
    geometry = Geometry((30, 36, 40), (0.8, 0.7, 0.6), (-120.5, 33.0, 1450.25))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), axis=-1)
    centre = geometry.index_to_lps([15, 18, 20])
    scaled = (geometry.index_to_lps(index) - centre) / [9.0, 8.0, 7.0]
    mask = Mask((np.linalg.norm(scaled, axis=-1) < 1).astype(np.uint8), geometry, {1: "left atrium"})
    return mesh_mask(mask)[0]


def sorted_triangles(triangles: np.ndarray) -> np.ndarray:
    """Triangles as rows of 9 numbers, each rotated to start at its smallest corner, then sorted.

    Rotating (not sorting) the corners keeps the winding, so a flipped face would not match.
    """
    triangles = np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3)
    keys = triangles[:, :, 0] * 1e6 + triangles[:, :, 1] * 1e3 + triangles[:, :, 2]
    start = np.argmin(keys, axis=1)
    rolled = np.stack([triangles[np.arange(len(triangles)), (start + n) % 3] for n in range(3)], axis=1)
    flat = rolled.reshape(len(rolled), 9)
    return flat[np.lexsort(flat.T[::-1])]


def expected_triangles(model: Model, single_precision: bool) -> np.ndarray:
    triangles = model.mesh.triangles
    return sorted_triangles(triangles.astype(np.float32) if single_precision else triangles)


@pytest.mark.parametrize("format, suffix", [("stl", ".stl"), ("stl-ascii", ".stl")])
def test_stl_reads_back_with_numpy_stl_and_trimesh(tmp_path, model, format, suffix):
    path = write_model(model, tmp_path / f"model{suffix}", format=format)
    expected = expected_triangles(model, single_precision=True)  # STL stores float32
    rtol = 0 if format == "stl" else 1e-7  # ASCII: 9 significant digits, float32's round trip
    from_numpy_stl = numpy_stl.Mesh.from_file(str(path))
    np.testing.assert_allclose(sorted_triangles(from_numpy_stl.vectors), expected, rtol=rtol, atol=0)
    loaded = trimesh.load(path, force="mesh")
    np.testing.assert_allclose(sorted_triangles(loaded.triangles), expected, rtol=rtol, atol=0)
    # stored normals point the way the winding says (outward)
    stored = from_numpy_stl.normals / np.linalg.norm(from_numpy_stl.normals, axis=1)[:, None]
    np.testing.assert_allclose(stored, numpy_stl.Mesh.from_file(str(path)).get_unit_normals(), atol=1e-4)


def test_binary_stl_header_names_the_structure_and_units_only(tmp_path, model):
    path = write_model(model, tmp_path / "model.stl")
    header = path.read_bytes()[:80]
    assert header.rstrip(b" ") == b"anatomodel left_atrium units=mm"
    assert int.from_bytes(path.read_bytes()[80:84], "little") == len(model.mesh.faces)
    assert path.stat().st_size == 84 + 50 * len(model.mesh.faces)


def test_header_never_carries_what_the_name_smuggles(tmp_path, model):
    hostile = Model(model.mesh, name="DOE^JOHN 1964-03-01/../../etc")
    header = write_model(hostile, tmp_path / "x.stl").read_bytes()[:80]
    assert b"/" not in header and b"^" not in header and b".." not in header


@pytest.mark.parametrize("format, suffix", [("3mf", ".3mf"), ("obj", ".obj")])
def test_3mf_and_obj_read_back_with_trimesh(tmp_path, model, format, suffix):
    path = write_model(model, tmp_path / f"model{suffix}")
    loaded = trimesh.load(path, force="mesh", process=False)
    expected = expected_triangles(model, single_precision=False)
    np.testing.assert_allclose(sorted_triangles(loaded.triangles), expected, rtol=0, atol=1e-5)
    assert loaded.is_watertight and loaded.volume > 0
    if format == "3mf":
        with zipfile.ZipFile(path) as archive:
            model_xml = next(archive.read(name) for name in archive.namelist() if name.endswith(".model"))
        assert b'unit="millimeter"' in model_xml


@pytest.mark.parametrize("suffix", [".stl", ".3mf", ".obj", ".ply"])
def test_read_model_round_trip(tmp_path, model, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".ply":
        model.mesh.export(path)
    else:
        write_model(model, path)
    loaded = read_model(path)
    assert loaded.mesh.is_watertight and loaded.name == "model"
    assert len(loaded.mesh.faces) == len(model.mesh.faces)
    assert loaded.mesh.volume == pytest.approx(model.mesh.volume, rel=1e-5)
    np.testing.assert_allclose(loaded.mesh.bounds, model.mesh.bounds, atol=1e-4)


def test_writes_are_atomic_and_bad_requests_leave_nothing(tmp_path, model):
    with pytest.raises(MeshError, match="format"):
        write_model(model, tmp_path / "model.xyz")
    assert list(tmp_path.iterdir()) == []
    write_model(model, tmp_path / "out" / "model.obj")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model.obj"]


def test_read_model_errors_are_clear(tmp_path):
    with pytest.raises(MeshError, match="no such model file"):
        read_model(tmp_path / "missing.stl")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MeshError, match="unsupported"):
        read_model(tmp_path / "notes.txt")
    (tmp_path / "broken.stl").write_bytes(b"solid x\nfacet normal oops\n")
    with pytest.raises(MeshError, match="broken.stl"):
        read_model(tmp_path / "broken.stl")


def test_3mf_package_is_trimesh_s_own_but_for_the_uuids(tmp_path, model):
    """Every entry of our 3MF equals trimesh's ``export_3MF`` of the same mesh (random UUIDs
    aside), extreme coordinates included; trimesh reads it back exactly."""
    import re

    vertices = np.asarray(model.mesh.vertices, dtype=np.float64).copy()
    vertices[:4] = [[1e-7, -0.0, 3.0], [123456789.123, 1e16, -1e-5], [0.1 + 0.2, 2.5e-4, 7.0], [1e22, 5e-324, 1.0]]
    odd = Model(trimesh.Trimesh(vertices, model.mesh.faces, process=False), name="print")
    path = write_model(odd, tmp_path / "odd.3mf")
    plain = trimesh.Trimesh(vertices, np.asarray(model.mesh.faces), process=False)
    theirs = tmp_path / "theirs.3mf"
    theirs.write_bytes(trimesh.exchange.threemf.export_3MF(plain, batch_size=1000))

    def entries(file):
        with zipfile.ZipFile(file) as archive:
            return {info.filename: (info.compress_type, re.sub(rb'UUID="[0-9a-f-]{36}"', b"UUID", archive.read(info)))
                    for info in archive.infolist()}

    assert entries(path) == entries(theirs)
    loaded = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_array_equal(loaded.vertices, vertices)
    np.testing.assert_array_equal(loaded.faces, model.mesh.faces)
