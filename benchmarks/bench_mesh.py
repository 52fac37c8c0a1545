"""Benchmark of the mesh stage against the pipeline 3D Slicer runs, on a clinical-size aorta.

The mask is the aorta of the synthetic CTA phantom (``example_data.cta_phantom``: root,
ascending, arch with three branches, descending with an aneurysm) on a 500 x 512 x 512 grid
(0.40 x 0.35 x 0.35 mm, about 3.6 million voxels), cut by the top and bottom of the volume:

* ``--source analytic`` (default): the analytic aorta voxelised (voxel centres inside);
* ``--source segmented``: what ``segment_volume(volume, "aorta_cta", [ascending-aorta seed])`` makes
  of the phantom's CT (noise, partial volume, blur): a rougher surface with more triangles,
  as from a real scan.

Each run happens in a fresh process so its peak memory is its own:

* ``ours``: :func:`pipeline.mesh.mesh_mask` (flying edges, windowed sinc, volume correction,
  decimation to 500 000 faces, repair check, full QA with wall thickness; two threads where
  the GIL allows) and a binary STL;
* ``vtk``: the 3D Slicer closed-surface chain: vtkDiscreteFlyingEdges3D, vtkWindowedSincPolyDataFilter
  (20 iterations, pass band 0.01: Slicer's smoothing factor 0.5), vtkQuadricDecimation to the
  same face budget, vtkPolyDataNormals and vtkSTLWriter, on the same bounding-box crop, with
  VTK's thread back end (Slicer's VTK uses TBB; the wheels' default is sequential).

Both start from the full mask in memory and end with an STL on disk. Accuracy is the distance
from the STL's vertices to the analytic aorta surface (its signed distance function), away from
the flat caps where the scan cuts the aorta (for the segmented mask it includes the
segmentation's own error, the same for both). Run::

    /work/venv/bin/python benchmarks/bench_mesh.py [--repeats 3] [--source segmented]

and a markdown table of medians is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPE = (500, 512, 512)
FACE_BUDGET = 500_000


def make_aorta_mask(shape=SHAPE, slab: int = 20):
    """The phantom's analytic aorta voxelised on ``shape`` (voxel centres with sdf < 0)."""
    from example_data.cta_phantom import aorta_sdf, phantom_geometry
    from pipeline.geometry import Mask

    geometry = phantom_geometry(shape=shape)
    nk, nj, ni = geometry.shape
    sk, sj, si = geometry.spacing
    x = (geometry.origin[0] + si * np.arange(ni, dtype=np.float32))[None, None, :]
    y = (geometry.origin[1] + sj * np.arange(nj, dtype=np.float32))[None, :, None]
    z = geometry.origin[2] + sk * np.arange(nk, dtype=np.float32)
    array = np.zeros(geometry.shape, dtype=np.uint8)
    for start in range(0, nk, slab):
        array[start:start + slab] = aorta_sdf(x, y, z[start:start + slab, None, None]) < 0
    return Mask(array, geometry, {1: "aorta"})


def make_segmented_mask(shape=SHAPE):
    """The phantom CT's aorta as the ``aorta_cta`` preset segments it from one seed."""
    from example_data.cta_phantom import make_phantom
    from pipeline.geometry import Mask
    from pipeline.segment import segment_volume

    phantom = make_phantom(shape=shape)
    mask, _ = segment_volume(phantom.volume(), "aorta_cta", [phantom.landmarks["ascending_aorta"]])
    return Mask((mask.array > 0).astype(np.uint8), mask.geometry, {1: "aorta"})


def run_ours(mask, out: Path) -> dict:
    from pipeline.mesh import mesh_mask, write_model

    model, report = mesh_mask(mask, label=1, min_wall_mm=1.0)
    write_model(model, out)
    return {"faces": report.faces_final, "watertight": report.watertight and report.manifold,
            "self_intersections": report.self_intersecting_faces, "volume_mm3": report.volume_mm3,
            "steps": report.timings_s}


def run_vtk(mask, out: Path) -> dict:
    import vtk
    from vtkmodules.util.numpy_support import numpy_to_vtk

    from pipeline.geometry import bounding_box

    geometry = mask.geometry
    # The phantom grid's (i, j, k) axes are LPS x, y, z, so vtkImageData needs no direction.
    assert np.allclose(geometry.direction_matrix[:, ::-1], np.eye(3))
    box = bounding_box(mask.array, margin=1)
    crop = np.ascontiguousarray(mask.array[box] == 1, dtype=np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(crop.shape[2], crop.shape[1], crop.shape[0])
    image.SetSpacing(*reversed(geometry.spacing))
    image.SetOrigin(*geometry.index_to_lps([s.start for s in box]))
    image.GetPointData().SetScalars(numpy_to_vtk(crop.ravel(), deep=False, array_type=vtk.VTK_UNSIGNED_CHAR))
    pad = vtk.vtkImageConstantPad()  # Slicer pads by one voxel so edge-touching masks close
    pad.SetInputData(image)
    e = image.GetExtent()
    pad.SetOutputWholeExtent(e[0] - 1, e[1] + 1, e[2] - 1, e[3] + 1, e[4] - 1, e[5] + 1)
    surface = vtk.vtkDiscreteFlyingEdges3D()
    surface.SetInputConnection(pad.GetOutputPort())
    surface.SetValue(0, 1)
    surface.ComputeNormalsOff()
    surface.ComputeGradientsOff()
    smoother = vtk.vtkWindowedSincPolyDataFilter()
    smoother.SetInputConnection(surface.GetOutputPort())
    smoother.SetNumberOfIterations(20)
    smoother.SetPassBand(10 ** (-4.0 * 0.5))
    smoother.BoundarySmoothingOff()
    smoother.FeatureEdgeSmoothingOff()
    smoother.NonManifoldSmoothingOn()
    smoother.NormalizeCoordinatesOn()
    smoother.Update()
    faces = smoother.GetOutput().GetNumberOfCells()
    decimator = vtk.vtkQuadricDecimation()
    decimator.SetInputConnection(smoother.GetOutputPort())
    decimator.SetTargetReduction(max(0.0, 1.0 - FACE_BUDGET / faces))
    decimator.VolumePreservationOn()
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(decimator.GetOutputPort())
    normals.ConsistencyOn()
    normals.SplittingOff()
    writer = vtk.vtkSTLWriter()
    writer.SetInputConnection(normals.GetOutputPort())
    writer.SetFileName(str(out))
    writer.SetFileTypeToBinary()
    writer.Write()
    return {"faces": normals.GetOutput().GetNumberOfCells()}


def worker(method: str, mask_file: Path, out: Path) -> dict:
    """One timed run in this process: load the mask, mesh it, write the STL."""
    from example_data.cta_phantom import phantom_geometry
    from pipeline.geometry import Mask

    array = np.load(mask_file)
    mask = Mask(array, phantom_geometry(shape=array.shape), {1: "aorta"})
    # imports are not part of the timing: ``pipeline.mesh`` is a lazy package, so its functions
    # are resolved here (the first attribute access imports trimesh, SciPy's graphs, VTK's filters)
    import vtk  # noqa: F401
    from vtkmodules.util.numpy_support import numpy_to_vtk  # noqa: F401

    from pipeline.mesh import mesh_mask, write_model  # noqa: F401
    from pipeline.mesh.surface import use_threaded_vtk

    use_threaded_vtk()  # both chains: Slicer's VTK runs its parallel filters on TBB threads

    before = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = (run_ours if method == "ours" else run_vtk)(mask, out)
    result["seconds"] = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    # CPU of every thread (user + system): less at the mercy of a shared machine than the wall
    result["cpu_s"] = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_before_mb"] = before
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB.

    ``getrusage``'s ru_maxrss survives ``exec`` and would report the (larger) parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def accuracy(stl: Path) -> dict:
    """Distance (mm) from the STL's vertices to the analytic aorta, and its closedness.

    Vertices within 1 mm of the grid's top and bottom faces are left out: the flat caps that
    close the aorta where the scan cuts it are not part of the analytic surface.
    """
    import trimesh

    from example_data.cta_phantom import aorta_sdf, phantom_geometry

    mesh = trimesh.load(stl, force="mesh")
    mesh.merge_vertices()
    low, high = phantom_geometry(shape=SHAPE).bounds_lps()
    x, y, z = mesh.vertices.T
    inside = (z > low[2] + 1.0) & (z < high[2] - 1.0)
    distance = np.abs(aorta_sdf(x[inside], y[inside], z[inside]))
    return {"truth_mean_mm": float(distance.mean()), "truth_p95_mm": float(np.percentile(distance, 95)),
            "stl_watertight": bool(mesh.is_watertight), "stl_volume_mm3": float(mesh.volume)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", choices=["analytic", "segmented"], default="analytic",
                        help="the analytic aorta voxelised, or the phantom CT's aorta as segmented")
    parser.add_argument("--worker", choices=["ours", "vtk"])
    parser.add_argument("--mask", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.mask, args.out)))
        return

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        mask = make_aorta_mask() if args.source == "analytic" else make_segmented_mask()
        mask_file = folder / "aorta.npy"
        np.save(mask_file, mask.array)
        voxels, mask_volume = mask.voxel_count(1), mask.volume_ml(1) * 1000
        print(f"{args.source} mask: {mask.geometry.shape} grid, spacing {tuple(round(s, 4) for s in mask.geometry.spacing)} mm, "
              f"{voxels} voxels, {mask_volume:.0f} mm3", file=sys.stderr)
        runs: dict[str, list[dict]] = {"ours": [], "vtk": []}
        for repeat in range(args.repeats):
            for method in ("ours", "vtk"):
                out = folder / f"{method}.stl"
                completed = subprocess.run(
                    [sys.executable, __file__, "--worker", method, "--mask", str(mask_file), "--out", str(out)],
                    check=True, capture_output=True, text=True)
                result = json.loads(completed.stdout.strip().splitlines()[-1])
                result.update(accuracy(out))
                runs[method].append(result)
                print(f"run {repeat + 1} {method}: {result['seconds']:.2f} s, peak {result['peak_rss_mb']:.0f} MB, "
                      f"truth mean {result['truth_mean_mm']:.4f} mm", file=sys.stderr)
        print_table(runs, mask_volume)


def print_table(runs: dict[str, list[dict]], mask_volume: float) -> None:
    def median(method: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[method])

    ours, theirs = median("ours", "seconds"), median("vtk", "seconds")
    print("| pipeline | time (s) | peak RSS (MB) | faces | distance to analytic surface mean / p95 (mm) "
          "| STL volume vs mask | watertight STL |")
    print("|---|---|---|---|---|---|---|")
    for method, label in (("ours", "anatomodel mesh_mask + STL"), ("vtk", "Slicer-like VTK chain + STL")):
        print(f"| {label} | {median(method, 'seconds'):.2f} | {median(method, 'peak_rss_mb'):.0f} | "
              f"{median(method, 'faces'):.0f} | {median(method, 'truth_mean_mm'):.4f} / "
              f"{median(method, 'truth_p95_mm'):.4f} | "
              f"{100 * (median(method, 'stl_volume_mm3') - mask_volume) / mask_volume:+.3f} % | "
              f"{all(run['stl_watertight'] for run in runs[method])} |")
    print(f"\nspeed-up (VTK time / ours): {theirs / ours:.2f}x over {len(runs['ours'])} repeats (medians)")
    ratios = [mine["seconds"] / vtk["seconds"] for mine, vtk in zip(runs["ours"], runs["vtk"])]
    print("ours / VTK per repeat (wall): " + ", ".join(f"{ratio:.2f}" for ratio in ratios)
          + f"; CPU (user + system) medians: ours {median('ours', 'cpu_s'):.2f} s, VTK {median('vtk', 'cpu_s'):.2f} s")
    without_qa = statistics.median(run["seconds"] - run["steps"]["quality"] for run in runs["ours"])
    print(f"ours without its QA step (which the VTK chain does not do): {without_qa:.2f} s, "
          f"speed-up {theirs / without_qa:.2f}x")
    steps = runs["ours"][len(runs["ours"]) // 2]["steps"]
    print("ours, step times of the median-order run (s): "
          + ", ".join(f"{name} {seconds:.2f}" for name, seconds in steps.items()))


if __name__ == "__main__":
    main()
