"""Benchmark: a whole case (``run_case``) on a clinical-size CTA vs the bare scripted chain.

Run by hand::

    /work/venv/bin/python benchmarks/bench_case.py [--runs 3] [--dir DIR]
    /work/venv/bin/python benchmarks/bench_case.py --profile      # cProfile of one run_case

The series is the synthetic CTA phantom (``example_data.cta_phantom``) on a 500 x 525 x 492 grid
of 0.5 x 0.36 x 0.36 mm voxels (a clinical CTA's size), written once as 500 DICOM files in
``--dir``. Each run happens in a fresh process (imports excluded from the time), runs alternate:

* ``anatomodel``: :func:`pipeline.case.run_case` on the example case with one model (the aorta,
  ``aorta_cta``, one seed in the ascending aorta and an exclude seed in the left ventricle):
  load with series selection and checks, segment with leak control, mesh with smoothing,
  decimation, repair and QA, print preparation, packet (PDF, pictures, DICOM model), ledger and
  charges, review page;
* ``bare chain``: what a lab would script with the same libraries: SimpleITK's
  ``ImageSeriesReader`` (int16), ``ConnectedThreshold`` (200..700 HU) from the same seed,
  scikit-image's ``marching_cubes`` on the mask and a binary STL, and nothing else.

Peak memory is each process's peak resident set (``VmHWM``) at the end of the call. Prints a
markdown table of medians and the ratio anatomodel / bare chain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from children import child

REPO = Path(__file__).resolve().parents[1]
SHAPE = (500, 525, 492)
SPACING = (0.5, 0.36, 0.36)

CASE_CHILD = r"""
import json, sys, time
from pathlib import Path
import yaml
from pipeline.case import run_case
import pipeline.mesh, pipeline.segment, pipeline.load, pipeline.prepare, pipeline.document  # imports not timed
import pipeline.document.review, pipeline.ledger

case_file, out = Path(sys.argv[1]), Path(sys.argv[2])

def peak_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

# Per-step wall times: the stages and writers run_case calls, wrapped where it looks them up.
import importlib
steps, cpu_steps = {}, {}
def timed(module, name, label):
    target = importlib.import_module(module)
    original = getattr(target, name)
    def wrapper(*args, **kwargs):
        clock, cpu = time.perf_counter(), time.process_time()  # CPU: the whole process, threads included
        try:
            return original(*args, **kwargs)
        finally:
            steps[label] = steps.get(label, 0.0) + time.perf_counter() - clock
            cpu_steps[label] = cpu_steps.get(label, 0.0) + time.process_time() - cpu
    setattr(target, name, wrapper)
for module, name, label in [
        ("pipeline.case", "load_case", "case file checks (ICD-10, configs)"),
        ("pipeline.checks", "case_inventory", "series inventory (every header, read once)"),
        ("pipeline.checks", "identity_mismatches", "identity check (on those headers)"),
        ("pipeline.load", "load_series", "load"),
        ("pipeline.segment", "segment_volume", "segment"),
        ("pipeline.mesh", "mesh_mask", "mesh (with QA)"),
        ("pipeline.prepare", "plan_print", "print preparation"),
        ("pipeline.geometry", "write_mask", "mask.nii.gz (a thread in the new tree)"),
        ("pipeline.mesh", "write_model", "model.stl"),
        ("pipeline.prepare", "write_print_files", "print.stl, print.3mf, plan.json"),
        ("pipeline.document", "write_packet", "packet (pictures, PDF, DICOM, sums)"),
        ("pipeline.case", "_review_entry", "review entry (crop, mesh)"),
        ("pipeline.document.review", "write_review_entries", "review page"),
        ("pipeline.case", "write_encounter_charges", "encounter charges (PDF, CSV)")]:
    try:
        timed(module, name, label)
    except AttributeError:
        pass
start, cpu = time.perf_counter(), time.process_time()
if len(sys.argv) > 3:
    import cProfile, pstats
    profiler = cProfile.Profile()
    profiler.enable()
result = run_case(case_file, out, ledger=out / "ledger.sqlite3")
seconds = time.perf_counter() - start
cpu = time.process_time() - cpu
if len(sys.argv) > 3:
    profiler.disable()
    profiler.dump_stats(sys.argv[3])
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_bytes": peak_bytes(), "held": result.held,
                  "faces": None, "steps": steps, "cpu_steps": cpu_steps}))
"""

BARE_CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import SimpleITK as sitk
import trimesh
from skimage.measure import marching_cubes

folder, seed, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])

def peak_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

start, cpu = time.perf_counter(), time.process_time()
reader = sitk.ImageSeriesReader()
reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder))
reader.SetOutputPixelType(sitk.sitkInt16)
image = reader.Execute()
index = image.TransformPhysicalPointToIndex(seed)
grown = sitk.ConnectedThreshold(image, [index], 200, 700)
mask = sitk.GetArrayFromImage(grown)
verts, faces, _, _ = marching_cubes(mask, 0.5, spacing=tuple(reversed(image.GetSpacing())))
origin = np.asarray(image.GetOrigin())
mesh = trimesh.Trimesh(verts[:, ::-1] + origin, faces, process=False)
mesh.export(out)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "peak_bytes": peak_bytes(),
                  "faces": int(len(faces))}))
"""


def make_series(folder: Path) -> None:
    """Write the phantom as 500 DICOM files of 525 x 492 (skipped when already there)."""
    marker = folder / ".complete"
    if marker.exists():
        return
    from example_data.cta_phantom import FIELD_OF_VIEW_MM, make_phantom, write_dicom_series

    # The phantom's field of view, centred, widened or narrowed to SHAPE * SPACING.
    fov = [((low + high) / 2 - n * s / 2, (low + high) / 2 + n * s / 2)
           for (low, high), n, s in zip(FIELD_OF_VIEW_MM, SHAPE, SPACING)]
    phantom = make_phantom(shape=SHAPE, field_of_view_mm=fov)
    write_dicom_series(phantom, folder, with_truth=False)
    marker.write_text("ok\n")


def write_case(folder: Path, series: Path) -> Path:
    """The example case with its aorta model only (an exclude seed in the left ventricle)."""
    import yaml

    from example_data.cta_phantom import landmarks

    case = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case["imaging"]["dicom"] = str(series)
    aorta = case["models"][0]
    aorta["seeds_lps_mm"] = [list(landmarks()["ascending_aorta"])]
    aorta["exclude_seeds_lps_mm"] = [list(landmarks()["left_ventricle"])]
    case["models"] = [aorta]
    path = folder / "case.yaml"
    path.write_text(yaml.safe_dump(case, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    import json

    from example_data.cta_phantom import landmarks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "anatomodel_bench_case")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, nargs="?", const=Path("case.prof"),
                        help="profile one run_case into this cProfile file (default case.prof) and stop")
    args = parser.parse_args(argv)
    series = args.dir / "series"
    print(f"making (or reusing) the series in {series} ...", file=sys.stderr)
    make_series(series)
    case_file = write_case(args.dir, series)
    seed = json.dumps(list(landmarks()["ascending_aorta"]))
    with tempfile.TemporaryDirectory(prefix="anatomodel_bench_case_") as scratch:
        scratch = Path(scratch)
        if args.profile:
            result = child(CASE_CHILD, str(case_file), str(scratch / "profiled"), str(args.profile.absolute()))
            print(f"run_case {result['seconds']:.2f} s, peak {result['peak_bytes'] / 2**20:.0f} MiB; "
                  f"profile in {args.profile}", file=sys.stderr)
            return 0
        runs: dict[str, list[dict]] = {"anatomodel": [], "bare": []}
        child(BARE_CHILD, str(series), seed, str(scratch / "warm.stl"))  # page cache, untimed
        for run in range(1, args.runs + 1):
            runs["anatomodel"].append(child(CASE_CHILD, str(case_file), str(scratch / f"out{run}")))
            runs["bare"].append(child(BARE_CHILD, str(series), seed, str(scratch / "bare.stl")))
            print(f"run {run}: anatomodel {runs['anatomodel'][-1]['seconds']:.2f} s, "
                  f"bare {runs['bare'][-1]['seconds']:.2f} s", file=sys.stderr)
    mib = 2**20
    keys = ("seconds", "cpu_seconds", "peak_bytes")
    ours = {key: statistics.median(r[key] for r in runs["anatomodel"]) for key in keys}
    bare = {key: statistics.median(r[key] for r in runs["bare"]) for key in keys}
    print(f"\nwhole case on a {'x'.join(map(str, SHAPE))} CTA ({' x '.join(map(str, SPACING))} mm), "
          f"{args.runs} interleaved runs each, medians\n")
    print("| chain | time (s) | CPU (s) | peak RSS (MiB) | time ratio | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| anatomodel run_case (one aorta model, packet, ledger) | {ours['seconds']:.2f} | "
          f"{ours['cpu_seconds']:.2f} | {ours['peak_bytes'] / mib:.0f} | {ours['seconds'] / bare['seconds']:.2f} | "
          f"{ours['peak_bytes'] / bare['peak_bytes']:.2f} |")
    print(f"| bare chain (SimpleITK read + ConnectedThreshold, skimage marching cubes, STL) | "
          f"{bare['seconds']:.2f} | {bare['cpu_seconds']:.2f} | {bare['peak_bytes'] / mib:.0f} | 1.00 | 1.00 |")
    print("\nrun_case's steps (each call's wall and process CPU s, medians):\n")
    print("| step | wall (s) | CPU (s) |")
    print("|---|---:|---:|")
    for step in runs["anatomodel"][0]["steps"]:
        wall = statistics.median(r["steps"].get(step, 0.0) for r in runs["anatomodel"])
        used = statistics.median(r.get("cpu_steps", {}).get(step, 0.0) for r in runs["anatomodel"])
        print(f"| {step} | {wall:.2f} | {used:.2f} |")
    print("\nper run: " + json.dumps(runs))
    print(f"\ncommand: python benchmarks/bench_case.py --runs {args.runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
