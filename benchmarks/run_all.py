"""The benchmark suite: every stage and the whole run on a clinical-size CTA, against baselines.

Run by hand (the table in ``benchmarks/README.md`` was made so)::

    /work/venv/bin/python benchmarks/run_all.py [--slices 500] [--runs 3] [--printer formlabs_form3b]

The input is the synthetic CTA phantom (``example_data.cta_phantom``) written as a DICOM series
of ``--slices`` files of 512 x 512 (500 by default: 0.4 x 0.35 x 0.35 mm; ``--slices 800`` for a
larger study), made once and kept in ``--dir``. Each measurement runs in a fresh process:

* ``anatomodel``: load (``load_series``), segment (``aorta_cta`` from one seed in the ascending
  aorta), mesh (``mesh_mask``, defaults), prepare (``plan_print``) and writing the patient-space
  STL, in one process as ``anatomodel run`` chains them. Each stage's time is wall-clock, and
  its peak memory is the process's peak resident set during that stage (``VmHWM``, reset
  through ``/proc/self/clear_refs`` when the stage starts), so it includes what earlier stages
  still hold (the volume, the mask).
* baselines, measured in the same run on the same data, reusing the stage benchmarks' own
  baseline code: SimpleITK's ``ImageSeriesReader`` (``bench_load.run_once``; the faster of its
  int32 and int16 variants), the 3D Slicer-like VTK chain (``bench_mesh.worker("vtk", ...)``:
  discrete flying edges, windowed sinc, quadric decimation, STL writer) on the mask anatomodel
  made, and Tweaker-3's cost function (``bench_prepare.tweaker_choice``) on the mesh anatomodel
  made. Baseline peaks are those processes' peak resident sets during the timed call.

Runs alternate between methods so machine noise hits all alike; the table gives medians and
the ratio anatomodel / baseline (below 1: anatomodel is faster or leaner).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(__file__).resolve().parent
sys.path[:0] = [str(REPO), str(BENCHMARKS)]

from children import child  # noqa: E402
import bench_load  # noqa: E402  (the stage benchmarks: their series maker and baselines)

STAGES = ("load", "segment", "mesh", "prepare", "write")

PIPELINE_CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import trimesh
from example_data.cta_phantom import landmarks
from pipeline.load import load_series
from pipeline.segment import segment_volume
from pipeline.mesh import mesh_mask, write_model
from pipeline.prepare import plan_print

folder, printer, keep = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def reset_peak():
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")

def peak_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

times, peaks = {}, {}
whole = time.perf_counter()
def stage(name, function):
    reset_peak()
    start = time.perf_counter()
    value = function()
    times[name] = time.perf_counter() - start
    peaks[name] = peak_bytes()
    return value

volume, _ = stage("load", lambda: load_series(folder))
mask, _ = stage("segment", lambda: segment_volume(volume, "aorta_cta", [landmarks()["ascending_aorta"]]))
model, _ = stage("mesh", lambda: mesh_mask(mask))
plan, _ = stage("prepare", lambda: plan_print(model, printer))
out = Path(keep)
stage("write", lambda: write_model(model, out / "model.stl"))
times["whole run"] = time.perf_counter() - whole
peaks["whole run"] = max(peaks.values())
np.save(out / "mask.npy", mask.array)
model.mesh.export(out / "model.ply")
print(json.dumps({"seconds": times, "peak_bytes": peaks, "faces": int(len(model.mesh.faces)),
                  "shape": list(volume.array.shape), "volume_bytes": int(volume.array.nbytes)}))
"""

VTK_CHILD = r"""
import json, sys
from pathlib import Path
import bench_mesh
result = bench_mesh.worker("vtk", Path(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"seconds": result["seconds"], "peak_bytes": result["peak_rss_mb"] * 2**20, "faces": result["faces"]}))
"""

TWEAKER_CHILD = r"""
import json, sys, time
import trimesh
import bench_prepare
from pipeline.prepare.arrays import MeshArrays
from pipeline.printers import load_printer

def peak_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

mesh = trimesh.load(sys.argv[1], process=False)
profile = load_printer(sys.argv[2])
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
start = time.perf_counter()
arrays = MeshArrays.from_arrays(mesh.vertices, mesh.faces)
bench_prepare.tweaker_choice(arrays, profile)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_bytes": peak_bytes(), "faces": int(len(mesh.faces))}))
"""


def sitk_read(folder: Path) -> dict:
    """SimpleITK's series reader: the faster of its default (int32) and int16 variants."""
    runs = [bench_load.run_once(method, folder) for method in ("SimpleITK", "SimpleITK int16")]
    best = min(runs, key=lambda run: run["seconds"])
    # bench_load reports the call's extra peak; add the interpreter's own to compare with ours.
    return {"seconds": best["seconds"], "peak_bytes": best["peak_extra_bytes"] + interpreter_bytes(),
            "extra_bytes": best["peak_extra_bytes"]}


def interpreter_bytes() -> int:
    """Resident size of a fresh interpreter with numpy and SimpleITK imported (bench_load's baseline)."""
    code = ("import numpy, SimpleITK\nfor line in open('/proc/self/status'):\n"
            "    line.startswith('VmHWM:') and print(int(line.split()[1]) * 1024)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def median(runs: list[dict], key: str, stage: str | None = None) -> float:
    return statistics.median(run[key][stage] if stage else run[key] for run in runs)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    memory = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return (f"{os.cpu_count()} cores ({cpu}), {memory / 2**20:.0f} GiB RAM, Python {platform.python_version()}, "
            f"load average at the end {open('/proc/loadavg').read().split()[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=500, help="slices of 512 x 512 (500; 800 for a larger study)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--printer", default="formlabs_form3b")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "anatomodel_bench_load")
    args = parser.parse_args(argv)
    folder = args.dir / f"series_{args.slices}"
    print(f"making (or reusing) the {args.slices} x 512 x 512 series in {folder} ...", file=sys.stderr)
    bench_load.make_series(folder, args.slices)

    ours, reader, vtk, tweaker = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="anatomodel_bench_") as scratch:
        keep = Path(scratch)
        for run in range(1, args.runs + 1):
            print(f"run {run}/{args.runs}: anatomodel", file=sys.stderr)
            ours.append(child(PIPELINE_CHILD, str(folder), args.printer, str(keep)))
            print(f"run {run}/{args.runs}: SimpleITK, VTK, Tweaker-3", file=sys.stderr)
            reader.append(sitk_read(folder))
            vtk.append(child(VTK_CHILD, str(keep / "mask.npy"), str(keep / "vtk.stl")))
            tweaker.append(child(TWEAKER_CHILD, str(keep / "model.ply"), args.printer))

    mib = 2**20
    shape = "x".join(map(str, ours[0]["shape"]))
    print(f"\nanatomodel on the synthetic CTA, {shape} int16 ({ours[0]['volume_bytes'] / mib:.0f} MiB), "
          f"{args.runs} runs each, medians; model {ours[0]['faces']} faces; printer {args.printer}\n")
    print("| stage | anatomodel (s) | peak RSS (MiB) | baseline | baseline (s) | baseline peak (MiB) "
          "| time ratio | memory ratio |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    baselines = {"load": ("SimpleITK ImageSeriesReader", reader), "mesh": ("VTK flying edges + windowed sinc + "
                 "quadric decimation + STL (Slicer-like)", vtk), "prepare": ("Tweaker-3 cost function", tweaker)}
    for stage in (*STAGES, "whole run"):
        seconds, peak = median(ours, "seconds", stage), median(ours, "peak_bytes", stage)
        row = f"| {stage} | {seconds:.2f} | {peak / mib:.0f} |"
        if stage in baselines:
            name, runs = baselines[stage]
            base_seconds, base_peak = median(runs, "seconds"), median(runs, "peak_bytes")
            row += (f" {name} | {base_seconds:.2f} | {base_peak / mib:.0f} | {seconds / base_seconds:.2f} "
                    f"| {peak / base_peak:.2f} |")
        else:
            row += " - | - | - | - | - |"
        print(row)
    print(f"\nmachine: {machine()}")
    print(f"command: python benchmarks/run_all.py --slices {args.slices} --runs {args.runs} --printer {args.printer}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
