"""Benchmark of print-QA registration: a 500k-face scan against a 300k-face model in under 10 s.

Run by hand::

    /work/venv/bin/python benchmarks/bench_check.py [--repeats 5]

The model is an asymmetric solid (an ellipsoid with two knobs) meshed by the mesh stage to 300k
faces; the scan is the same solid meshed on another grid to 500k faces (another triangulation),
shrunk by 1 %, one region pushed out 0.8 mm, 0.05 mm noise, 10 % of its surface removed, moved
by a random rigid transform. Times :func:`pipeline.check.register` (coarse search, trimmed ICP,
exact refinement, convergence figures) and, once, the whole :func:`pipeline.check.check_print`.
Prints a markdown table with the median time and the registration error against the known
transform (scale error in percent, rotation error in degrees).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.check import check_print, register  # noqa: E402
from pipeline.check.scan import Scan  # noqa: E402
from pipeline.geometry import Geometry, Mask  # noqa: E402
from pipeline.mesh import MeshOptions, mesh_mask, write_model  # noqa: E402
from pipeline.model import Model  # noqa: E402

BUMP_CENTRE = np.array([25.0, 0.0, 0.0])
HOLE_CENTRE = np.array([-10.0, -14.0, 2.0])


def solid(spacing: float, faces: int) -> trimesh.Trimesh:
    """The benchmark solid meshed on a grid of ``spacing`` mm to ``faces`` triangles."""
    shape = (int(70 / spacing), int(60 / spacing), int(80 / spacing))
    geometry = Geometry(shape=shape, spacing=(spacing,) * 3, origin=(-35.0, -30.0, -40.0))
    x, y, z = np.meshgrid(*[-35.0 + spacing * np.arange(shape[0]), -30.0 + spacing * np.arange(shape[1]),
                            -40.0 + spacing * np.arange(shape[2])], indexing="ij", sparse=True)
    inside = (x / 25) ** 2 + (y / 15) ** 2 + (z / 10) ** 2 <= 1
    inside = inside | ((x - 12) ** 2 + (y - 5) ** 2 + (z - 9) ** 2 <= 64)
    inside = inside | ((x + 15) ** 2 + (y + 8) ** 2 + (z + 4) ** 2 <= 36)
    model, _ = mesh_mask(Mask(inside.astype(np.uint8), geometry), options=MeshOptions(target_faces=faces))
    return model.mesh


def scan_of(mesh: trimesh.Trimesh, seed: int = 1) -> tuple[trimesh.Trimesh, np.ndarray]:
    rng = np.random.default_rng(seed)
    distance = np.linalg.norm(mesh.vertices - BUMP_CENTRE, axis=1)
    weight = np.clip((6 - distance) / 2, 0, 1)
    vertices = mesh.vertices + 0.8 * weight[:, None] * mesh.vertex_normals
    vertices = vertices + rng.normal(0, 0.05, vertices.shape)
    gap = np.linalg.norm(mesh.triangles_center - HOLE_CENTRE, axis=1)
    order = np.argsort(gap)
    keep = np.ones(len(mesh.faces), bool)
    keep[order[np.cumsum(mesh.area_faces[order]) / mesh.area <= 0.10]] = False
    scan = trimesh.Trimesh(vertices, mesh.faces[keep])
    transform = trimesh.transformations.random_rotation_matrix(rng.random(3))
    transform[:3, :3] *= 0.99
    transform[:3, 3] = rng.uniform(-100, 100, 3)
    scan.apply_transform(transform)
    return scan, transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = solid(0.17, 300_000)
    scan, transform = scan_of(solid(0.13, 560_000))
    times, errors = [], []
    for repeat in range(args.repeats):
        started = time.perf_counter()
        result = register(scan, model, seed=repeat)
        times.append(time.perf_counter() - started)
        residual = np.asarray(result.matrix) @ transform
        rotation = residual[:3, :3] / np.cbrt(np.linalg.det(residual[:3, :3]))
        angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
        errors.append((abs(result.scale / 0.99 - 1) * 100, angle))
    with tempfile.TemporaryDirectory() as folder:
        write_model(Model(model, "solid"), Path(folder) / "model.stl")
        started = time.perf_counter()
        report = check_print(folder, Scan(scan, "surface", "scan", 0))
        whole = time.perf_counter() - started
    print(f"model {len(model.faces)} faces, scan {len(scan.faces)} faces; {args.repeats} repeats\n")
    print("| step | median (s) | min (s) | max (s) | scale error (%) | rotation error (deg) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| register | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} | "
          f"{max(e[0] for e in errors):.4f} | {max(e[1] for e in errors):.4f} |")
    print(f"| whole check (once) | {whole:.2f} | | | | |")
    print(f"\n{report.summary()}")


if __name__ == "__main__":
    main()
