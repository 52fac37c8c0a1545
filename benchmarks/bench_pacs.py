"""Benchmark: pull a 500-slice CTA from a local Orthanc vs copying the same files from disk.

Run by hand (needs the Debian packages orthanc and orthanc-dicomweb)::

    /work/venv/bin/python benchmarks/bench_pacs.py [--dir DIR] [--runs 3] [--slices 500]

The series is the synthetic CTA phantom written as ``--slices`` DICOM files of 512 x 512 (made once
in ``--dir``, shared with ``bench_load.py``) and stored once into an Orthanc started on free
localhost ports (the tests' :class:`pacs_server.Orthanc`). Each run times, interleaved:

- ``copy``: ``shutil.copytree`` of the series folder (the baseline: a user's manual export; it
  returns with the files in the page cache, not yet on disk);
- ``copy + fsync``: the same copy, then every file and the folder flushed to disk (a pull flushed
  every received file until 2026-12-04; it no longer does: :func:`pipeline.files.write_staged`);
- ``server alone``: ``curl`` fetching the series' WADO-RS answer into ``/dev/null``: what Orthanc
  needs to serve the series, a floor for any client of this server (one request per instance is
  no way round it: about 11 s for 500, Orthanc's per-request cost);
- ``pull C-GET`` and ``pull WADO-RS``: :func:`pipeline.pacs.pull` by accession number (C-FIND of
  study, series and instances, the retrieve, the completeness check, the rename into place).

Orthanc's DICOM layer (DCMTK) keeps Nagle's algorithm on unless its environment sets
``TCP_NODELAY=1``; then every C-GET sub-operation waits for a delayed ACK. ``--nagle`` also times
C-GET against a second Orthanc started without that variable. Target: pull within 1.5 x copy.
Each timing starts after ``sync``, so the write-back of one method's files is not charged to the
next; each run prints its own times and its pulls' ratio to that run's copy.

``--cold`` (root only) also drops the page cache before each timing (``/proc/sys/vm/drop_caches``),
so the copy reads the series from the disk and Orthanc reads its storage from the disk: the files
"copied from disk" as a user would copy an export, not from memory. Without it the copy's source
is whatever the page cache still holds (this machine's kernel pages idle files out after about a
minute; see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

import pydicom  # noqa: E402
from bench_load import make_series  # noqa: E402
from pacs_server import Orthanc, dicom_files  # noqa: E402

from pipeline.pacs import pull, resolve_node  # noqa: E402


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def copy_flushed(source: Path, out: Path) -> None:
    """Copy the series folder, then flush each file and the folder's entries to disk."""
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(".complete", "truth"))
    for path in [*out.iterdir(), out]:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def serve_only(url: str) -> None:
    """Fetch a WADO-RS answer with curl into /dev/null (the server's own time)."""
    subprocess.run(["curl", "-sf", "-o", os.devnull, "-H", 'Accept: multipart/related; type="application/dicom"',
                    url], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "anatomodel_bench_load")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--nagle", action="store_true", help="also time C-GET from an Orthanc with Nagle on")
    parser.add_argument("--no-cget", action="store_true", help="time copy and WADO-RS only (C-GET takes ~5 s a run)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before each timing: every method reads from the disk (root only)")
    args = parser.parse_args(argv)
    if args.cold and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        parser.error("--cold drops the page cache through /proc/sys/vm/drop_caches: run it as root")
    folder = args.dir / f"series_{args.slices}"
    make_series(folder, args.slices)
    files = dicom_files(folder)
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    accession = str(header.AccessionNumber)
    size = sum(p.stat().st_size for p in files)
    scratch = Path(tempfile.mkdtemp(prefix="bench_pacs_"))
    servers = {"": Orthanc(scratch / "orthanc")}
    if args.nagle:
        servers["nagle"] = Orthanc(scratch / "orthanc-nagle")
        servers["nagle"].env.pop("TCP_NODELAY")
    try:
        for server in servers.values():
            server.start()
            clock = time.perf_counter()
            server.store(files)
            print(f"stored {len(files)} files ({size / 2**20:.0f} MiB) in {time.perf_counter() - clock:.1f} s",
                  file=sys.stderr)
        methods = {
            "copy": lambda out: shutil.copytree(folder, out, ignore=shutil.ignore_patterns(".complete", "truth")),
            "copy + fsync": lambda out: copy_flushed(folder, out),
            "server alone": lambda out: serve_only(f"{servers[''].dicomweb_url}/studies/{header.StudyInstanceUID}"
                                                   f"/series/{header.SeriesInstanceUID}"),
            "pull C-GET": lambda out: pull(resolve_node(servers[""].inline), out, accession=accession),
            "pull WADO-RS": lambda out: pull(resolve_node(servers[""].dicomweb_url), out, accession=accession),
        }
        if args.no_cget:
            del methods["pull C-GET"]
        if args.nagle:
            methods["pull C-GET, Orthanc with Nagle"] = lambda out: pull(resolve_node(servers["nagle"].inline), out,
                                                                         accession=accession)
        times: dict[str, list[float]] = {name: [] for name in methods}
        loads: list[float] = []
        for run in range(args.runs + 1):  # the first round warms caches and imports, untimed
            for name, method in methods.items():
                out = scratch / f"out-{run}-{len(times[name])}-{name.replace(' ', '_')}"
                os.sync()  # the last method's dirty pages are written back now, not in this one's time
                if args.cold:
                    Path("/proc/sys/vm/drop_caches").write_text("3\n")
                seconds = _timed(lambda: method(out))
                if name != "server alone":
                    assert len(list(out.iterdir())) == len(files), f"{name} wrote {len(list(out.iterdir()))} files"
                    shutil.rmtree(out)
                if run:
                    times[name].append(seconds)
            if run:
                loads.append(os.getloadavg()[0])
                print(f"run {run}: " + ", ".join(f"{name} {times[name][-1]:.2f} s"
                                                 + (f" ({times[name][-1] / times['copy'][-1]:.2f} x copy)"
                                                    if name != "copy" else "") for name in methods)
                      + f"; load {loads[-1]:.1f}", file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    base = statistics.median(times["copy"])
    print(f"Pull {len(files)} CT files of 512 x 512 ({size / 2**20:.0f} MiB) from a local Orthanc vs copying them, "
          f"{args.runs} runs each, medians; load average {os.getloadavg()[0]:.1f}"
          + ("; page cache dropped before each timing (every method reads from the disk)" if args.cold else "")
          + "\n")
    print("| method | time (s) | time / copy | MiB/s |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f} | {size / 2**20 / seconds:.0f} |")
    pulls = [name for name in ("server alone", "pull C-GET", "pull WADO-RS") if name in times]
    ratios = {name: statistics.median(times[name]) / base for name in pulls}
    print("\nper run, time / copy of the same run: " + "; ".join(
        f"{name} {', '.join(f'{t / c:.2f}' for t, c in zip(times[name], times['copy']))}" for name in pulls)
          + f"; load average {min(loads):.1f}-{max(loads):.1f}")
    fastest = min(ratios[name] for name in pulls if name != "server alone")
    print(f"target: pull <= 1.5 x copy: {', '.join(f'{name} {ratio:.2f}' for name, ratio in ratios.items())} "
          f"({'met' if fastest <= 1.5 else 'MISSED'} by the faster pull)")
    durable = statistics.median(times["copy + fsync"])
    print("against a copy flushed to disk: " + ", ".join(
        f"{name} {statistics.median(times[name]) / durable:.2f}" for name in pulls if name != "server alone"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
