"""``anatomodel batch MANIFEST``: run many cases on a local Dask cluster, or on a given one."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.markup import escape

from pipeline.batch import DEFAULT_MEMORY_LIMIT, run_batch
from pipeline.cli.app import app, console, options, stdout
from pipeline.errors import HeldForReview


@app.command("batch")
def batch(
    manifest: Path = typer.Argument(..., help="CSV or YAML file listing case files (paths relative to it)."),
    workers: int = typer.Option(
        2, "--workers", "-w", min=1, help="Worker processes of the local cluster, one thread each "
        "(one per core uses every core; ignored with --scheduler)."),
    scheduler: str = typer.Option(
        None, "--scheduler", help="Dask scheduler address (tcp://HOST:PORT): run the cases on that cluster "
        "instead of a local one."),
    memory_limit: str = typer.Option(
        DEFAULT_MEMORY_LIMIT, "--memory-limit", help="Memory limit of each local worker (3GiB, 4000MB; at "
        "least 1GiB); Dask restarts a worker above 95 % of it: its case fails (exit 22), once, and the others run on."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output folder; each case writes OUT/<case_id>/."),
    ledger: Path = typer.Option(
        None, "--ledger", help="Ledger file or postgresql:// URL (default: $ANATOMODEL_LEDGER, else the per-user ledger)."),
    as_json: bool = typer.Option(False, "--json", help="Print the batch report as JSON on stdout."),
) -> None:
    """Run every case of a manifest on a Dask cluster; a failing case does not stop the others.

    Without --scheduler a local cluster of --workers single-threaded processes starts on 127.0.0.1 and stops afterwards.

    The dashboard address is printed; the report gives per case its wall, CPU and queued seconds, peak resident MiB and worker.

    Examples:

      anatomodel batch cases.csv --out out --workers 2

      anatomodel batch cases.csv --workers $(nproc) --memory-limit 4GiB --json

      anatomodel batch cases.yaml --scheduler tcp://10.0.0.5:8786 --json
    """
    import distributed  # noqa: F401  (sets its loggers to INFO on import: quiet them like the other libraries)

    if scheduler is not None and not scheduler.strip():
        raise typer.BadParameter("is empty: give tcp://HOST:PORT, or leave it out for a local cluster",
                                 param_hint="--scheduler")
    logging.getLogger("distributed").setLevel(logging.DEBUG if options.debug else logging.WARNING)
    report = run_batch(manifest, out, workers=workers, scheduler=scheduler, memory_limit=memory_limit,
                       ledger=ledger, console=console, progress=not options.quiet)
    if as_json:
        stdout.print_json(report.to_json())
    else:
        stdout.print(report.table())
    if report.failed:
        first = report.failed[0]
        console.print(f"[bold red]error:[/] {len(report.failed)} of {len(report.outcomes)} case(s) failed; "
                      f"first: {escape(Path(first.case_file).name)}: {escape(first.error or '')}")
        raise typer.Exit(report.exit_code)
    if report.held:
        raise HeldForReview(f"{len(report.held)} of {len(report.outcomes)} case(s) held for review: "
                            + "; ".join(f"{o.case_id}: {', '.join(o.holds)}" for o in report.held),
                            hint="each held line stays unbillable until released: anatomodel release CASE MODEL "
                                 "CODE --by NAME --role ROLE --reason ...")
