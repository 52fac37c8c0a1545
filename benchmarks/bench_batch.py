"""Benchmark: ``run_batch`` on a Dask LocalCluster, 1 vs 2 single-threaded workers.

Run by hand::

    /work/venv/bin/python benchmarks/bench_batch.py [--cases 8] [--repeats 2] [--scale 1.0]

Eight cases (``--cases``), each the example case's aorta model on its own patient's copy of the
synthetic CTA phantom (``example_data.cta_phantom`` at ``--scale``: 1.0 is 200 x 180 x 180
voxels of 1 mm), run by :func:`pipeline.batch.run_batch` on a ``LocalCluster`` of 1 and then 2
worker processes of one thread each (``memory_limit`` 3 GiB per worker), alternating, each
batch with a fresh output folder and SQLite ledger: the path ``anatomodel batch`` takes without
``--scheduler``. The time is the batch's wall clock (cluster start excluded); throughput is cases
per minute; per case the report's wall and CPU seconds and the worker's peak resident memory
during the case (``VmHWM``, reset at the case's start). Prints a markdown table of medians (peak:
the largest) and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_cases(folder: Path, count: int, scale: float) -> Path:
    """``count`` case files, one patient (and series copy) each, and their manifest."""
    import pydicom

    from example_data.cta_phantom import make_phantom, write_dicom_series

    series = folder / "cta"
    write_dicom_series(make_phantom(scale), series, with_truth=False)
    template = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    names = []
    for number in range(1, count + 1):
        copy = folder / f"cta-PT{number:04d}"
        copy.mkdir()
        for path in series.glob("IM*"):
            ds = pydicom.dcmread(path)
            ds.PatientID, ds.PatientName = f"PT{number:04d}", f"PHANTOM^NUMBER{number}"
            ds.save_as(copy / path.name)
        case = dict(template, case_id=f"BENCH-{number:03d}", models=template["models"][:1])
        case["patient"] = dict(template["patient"], id=f"PT{number:04d}", name=f"PHANTOM^NUMBER{number}")
        case["imaging"] = dict(template["imaging"], dicom=str(copy))
        names.append(f"case{number}.yaml")
        (folder / names[-1]).write_text(yaml.safe_dump(case, sort_keys=False))
    manifest = folder / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"cases": names}))
    return manifest


def one_batch(manifest: Path, workers: int, out: Path) -> dict:
    """One batch through ``run_batch``'s default path: a LocalCluster it starts and stops."""
    from pipeline.batch import run_batch

    report = run_batch(manifest, out / "out", workers=workers, memory_limit="3GiB", ledger=out / "ledger.sqlite3",
                       progress=False)
    if report.failed:
        raise SystemExit(f"a case failed: {report.failed[0].error}")
    return {"seconds": report.seconds, "case_seconds": [o.wall_seconds for o in report.outcomes],
            "cpu_seconds": [o.cpu_seconds for o in report.outcomes],
            "queued_seconds": [o.queued_seconds for o in report.outcomes],
            "peak_mib": max(o.peak_rss_mib for o in report.outcomes), "dashboard": report.dashboard,
            "startup": report.startup_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="anatomodel_bench_batch_") as scratch:
        scratch = Path(scratch)
        manifest = make_cases(scratch, args.cases, args.scale)
        for repeat in range(args.repeats):
            for workers in (1, 2):
                result = one_batch(manifest, workers, scratch / f"run{repeat}-{workers}")
                runs[workers].append(result)
                print(f"repeat {repeat + 1}, {workers} worker(s): {result['seconds']:.1f} s (cluster start "
                      f"{result['startup']:.1f} s), per case wall "
                      + ", ".join(f"{s:.1f}" for s in result["case_seconds"]) + " s, CPU "
                      + ", ".join(f"{s:.1f}" for s in result["cpu_seconds"])
                      + f" s; worker peak {result['peak_mib']:.0f} MiB; dashboard {result['dashboard']}; "
                      f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    base = statistics.median(r["seconds"] for r in runs[1])
    print(f"\n{args.cases} cases (phantom scale {args.scale}, one aorta model each), {args.repeats} interleaved "
          f"repeats, medians; load average at the end {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores\n")
    print("| workers (1 thread each) | batch (s) | cases / min | throughput vs 1 worker | median case wall (s) "
          "| median case CPU (s) | median queued (s) | worker peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for workers, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        case = statistics.median(s for r in results for s in r["case_seconds"])
        cpu = statistics.median(s for r in results for s in r["cpu_seconds"])
        queued = statistics.median(s for r in results for s in r["queued_seconds"])
        peak = max(r["peak_mib"] for r in results)
        print(f"| {workers} | {seconds:.1f} | {60 * args.cases / seconds:.1f} | {base / seconds:.2f} | {case:.1f} "
              f"| {cpu:.1f} | {queued:.1f} | {peak:.0f} |")
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs[1], runs[2])]
    print("\nper-repeat throughput ratio (2 workers / 1): " + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"\ncommand: python benchmarks/bench_batch.py --cases {args.cases} --repeats {args.repeats} "
          f"--scale {args.scale}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
