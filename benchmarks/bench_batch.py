"""Benchmark: ``run_batch`` on a Dask LocalCluster, 1 vs 2 single-threaded workers.

Run by hand::

    /work/venv/bin/python benchmarks/bench_batch.py [--cases 8] [--repeats 2] [--scale 1.0]

Eight cases (``--cases``), each the example case's aorta model on its own patient's copy of the
synthetic CTA phantom (``example_data.cta_phantom`` at ``--scale``: 1.0 is 200 x 180 x 180
voxels of 1 mm), run by :func:`pipeline.batch.run_batch` on a ``LocalCluster`` of 1 and then 2
worker processes of one thread each (``memory_limit`` 3 GiB per worker), alternating, each
batch with a fresh output folder and SQLite ledger. The time is the batch's wall clock (cluster
start excluded); throughput is cases per minute; each worker's peak resident memory is read from
``/proc/self/status`` (``VmHWM``) on the worker at the end. Prints a markdown table of medians.
"""

from __future__ import annotations

import argparse
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


def _peak_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_batch(manifest: Path, workers: int, out: Path) -> dict:
    from distributed import Client, LocalCluster

    from pipeline.batch import run_batch

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      memory_limit="3GiB", dashboard_address="127.0.0.1:0") as cluster:
        report = run_batch(manifest, out / "out", scheduler=cluster.scheduler_address,
                           ledger=out / "ledger.sqlite3", progress=False)
        with Client(cluster.scheduler_address) as client:
            peaks = list(client.run(_peak_mib).values())
    if report.failed:
        raise SystemExit(f"a case failed: {report.failed[0].error}")
    return {"seconds": report.seconds, "case_seconds": [o.seconds for o in report.outcomes],
            "peak_mib": max(peaks), "dashboard": report.dashboard}


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
                print(f"repeat {repeat + 1}, {workers} worker(s): {result['seconds']:.1f} s, per case "
                      + ", ".join(f"{s:.1f}" for s in result["case_seconds"])
                      + f" s; worker peak {result['peak_mib']:.0f} MiB; dashboard {result['dashboard']}",
                      file=sys.stderr)
    base = statistics.median(r["seconds"] for r in runs[1])
    print(f"\n{args.cases} cases (phantom scale {args.scale}, one aorta model each), {args.repeats} interleaved "
          "repeats, medians\n")
    print("| workers (1 thread each) | batch (s) | cases / min | throughput vs 1 worker | median case (s) "
          "| worker peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for workers, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        case = statistics.median(s for r in results for s in r["case_seconds"])
        peak = statistics.median(r["peak_mib"] for r in results)
        print(f"| {workers} | {seconds:.1f} | {60 * args.cases / seconds:.1f} | {base / seconds:.2f} | {case:.1f} "
              f"| {peak:.0f} |")
    print(f"\ncommand: python benchmarks/bench_batch.py --cases {args.cases} --repeats {args.repeats} "
          f"--scale {args.scale}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
