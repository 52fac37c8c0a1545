"""``anatomodel mesh``: a mask file in, a model file and a report out; bad input, clear exit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from pipeline.cli import main
from pipeline.errors import MeshError
from pipeline.geometry import Geometry, Mask, write_mask


@pytest.fixture(scope="module")
def mask_file(tmp_path_factory):
    """A 10 mm ball (label 1) and a 6 mm ball (label 2) on an oblique, anisotropic grid."""
    direction = np.array([[0.0, 0.6, 0.8], [0.0, 0.8, -0.6], [1.0, 0.0, 0.0]])
    geometry = Geometry((40, 44, 48), (0.9, 0.8, 0.7), (-20.0, 30.0, 100.0), tuple(map(tuple, direction)))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), axis=-1)
    points = geometry.index_to_lps(index)
    array = np.zeros(geometry.shape, np.uint8)
    array[np.linalg.norm(points - geometry.index_to_lps([18, 14, 16]), axis=-1) < 10] = 1
    array[np.linalg.norm(points - geometry.index_to_lps([18, 32, 36]), axis=-1) < 6] = 2
    path = tmp_path_factory.mktemp("cli") / "mask.nii.gz"
    write_mask(Mask(array, geometry, {1: "ball", 2: "small ball"}), path)
    return path


def test_mesh_command_writes_model_and_report(tmp_path, mask_file, capsys):
    out, report_file = tmp_path / "ball.stl", tmp_path / "mesh.json"
    code = main(["mesh", str(mask_file), "--label", "1", "--out", str(out), "--min-wall", "1.0",
                 "--report", str(report_file)])
    assert code == 0
    mesh = trimesh.load(out, force="mesh")
    assert mesh.is_watertight and mesh.volume == pytest.approx(4 / 3 * np.pi * 1000, rel=0.01)
    report = json.loads(report_file.read_text())
    assert report["label"] == 1 and report["watertight"] and report["faces_final"] == len(mesh.faces)
    assert "closed manifold" in capsys.readouterr().err


@pytest.mark.parametrize("format, suffix", [("3mf", ".3mf"), ("stl-ascii", ".stl"), ("obj", ".obj")])
def test_mesh_command_formats(tmp_path, mask_file, format, suffix):
    out = tmp_path / f"model{suffix}"
    assert main(["mesh", str(mask_file), "--label", "2", "--out", str(out), "--format", format]) == 0
    assert trimesh.load(out, force="mesh").is_watertight


def test_mesh_command_json_goes_to_stdout(tmp_path, mask_file, capsys):
    assert main(["--quiet", "mesh", str(mask_file), "--out", str(tmp_path / "all.obj"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shells"] == 2 and report["structure"] == "label_1+label_2"  # NIfTI keeps no names


def test_mesh_command_errors(tmp_path, mask_file, capsys):
    assert main(["mesh", str(mask_file), "--label", "7", "--out", str(tmp_path / "x.stl")]) == MeshError.exit_code
    assert "label 7" in capsys.readouterr().err
    assert not (tmp_path / "x.stl").exists()
    assert main(["mesh", str(mask_file), "--out", str(tmp_path / "x.vrml")]) == 2
    assert main(["mesh", str(mask_file), "--out", str(tmp_path / "x.stl"), "--smoothing", "magic"]) == 2
    capsys.readouterr()
    for option, value in [("--min-wall", "0"), ("--min-wall", "-1"), ("--min-wall", "nan"), ("--min-wall", "inf"),
                          ("--min-piece", "nan"), ("--min-piece", "-1")]:
        assert main(["mesh", str(mask_file), "--out", str(tmp_path / "x.stl"), option, value]) == 2, (option, value)
        err = capsys.readouterr().err
        assert "internal error" not in err and "Invalid value" in err, err
    assert not (tmp_path / "x.stl").exists()
    empty = Geometry((8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    write_mask(Mask(np.zeros(empty.shape, np.uint8), empty), tmp_path / "empty.nii.gz")
    assert main(["mesh", str(tmp_path / "empty.nii.gz"), "--out", str(tmp_path / "e.stl")]) == MeshError.exit_code
    assert "empty" in capsys.readouterr().err
