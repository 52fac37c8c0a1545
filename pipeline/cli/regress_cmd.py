"""``anatomodel regress``: the pipeline on public phantom scans, checked against golden results."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.app import app, cli_log, options, progress_bar, say, stdout
from pipeline.errors import RegressionDrift


@app.command("regress")
def regress(
    phantoms: Path = typer.Option(None, "--phantoms", help="Folder of the public phantom scans (holding dcm_qa_ct/). "
                                  "Default: $ANATOMODEL_PHANTOMS, else ../shared/phantoms."),
    golden: Path = typer.Option(None, "--golden", help="Folder of the golden records (default: regress/golden of the source tree)."),
    update_golden: bool = typer.Option(False, "--update-golden", help="Rewrite the golden records from this run (after an intended change)."),
    report: Path = typer.Option(None, "--report", help="Write the report as JSON here, and an HTML page with pictures beside it (same name, .html; "
                        "given a .html name, the JSON goes beside it as .json)."),
    only: str = typer.Option("", "--only", help="Comma-separated case names to run (default: all). "
                             "Cases: skull_1mm, skull_5mm, skull_tilt_minus18, skull_tilt_plus16, ge_head_bone, synthetic_aorta."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Run load, segment and mesh on the phantom scans and compare each model with its golden result.

    Checks volume, area, bounding box, shells, watertightness and the distance to the golden mesh within the tolerances written in each golden file, and that the skull from each gantry-tilted series, rigidly registered to the untilted 1 mm skull, lies within 1 mm mean surface distance and 3% volume of it over the z range both cover. Exits 14 on drift.

    Examples:

      anatomodel regress

      anatomodel regress --report out/regress.json      (also writes out/regress.html)

      anatomodel regress --only skull_1mm,synthetic_aorta --json

      anatomodel regress --update-golden                 (after an intended change; review the diff)
    """
    from pipeline.preflight import writable_file
    from pipeline.regress import run_regress, write_report
    from pipeline.regress.cases import select_cases
    from pipeline.regress.report import report_paths

    if report is not None:  # an unwritable report fails now, not after the whole run
        for path in report_paths(report):
            writable_file(path)

    steps = len(select_cases(only or None))
    with progress_bar("regress", total=steps) as advance:
        def tell(message: str) -> None:
            """Show one progress message of the regression run.

            Parameters
            ----------
            message : str
                The run's message; ``[n/N] ...`` lines after the first move the bar by one
                case, others only replace the activity shown. Printed with ``--verbose``,
                else only logged (for ``--log-file``).
            """
            if message.startswith("[") or message.startswith("consistency"):
                advance(message, step=message.startswith("[") and not message.startswith("[1/"))
            else:
                advance(message, step=False)
            if options.verbose:
                say(message)
            else:
                cli_log.info(message)  # for --log-file

        result, pictures = run_regress(phantoms, golden, only=only or None, update_golden=update_golden,
                                       pictures=report is not None, progress=tell)
        advance("done", step=True)
    if report is not None:
        json_path, html_path = write_report(result, report, pictures)
        say(f"report: {json_path} and {html_path}")
    if as_json:
        stdout.print_json(json.dumps(result.to_dict()))
    elif not options.quiet:
        _print_tables(result)
    if update_golden:
        say(f"golden records rewritten in {result.golden}: review the diff before committing")
    if as_json and not result.ok:  # the result above is the one JSON document: no error object after it
        try:
            result.raise_for_drift()
        except RegressionDrift as drift:
            say(f"[bold red]error:[/] {escape(str(drift))}")
            raise typer.Exit(drift.exit_code) from None
    result.raise_for_drift()
    say(f"[green]regress passed[/]: {len(result.cases)} model(s), {sum(len(c['checks']) for c in result.cases)} "
        f"checks, {len(result.consistency)} cross-acquisition comparison(s), {result.seconds:.0f} s")


def _print_tables(result) -> None:
    table = Table(title="Models against their golden results", title_justify="left")
    for column in ("case", "quantity", "golden", "measured", "tolerance", ""):
        table.add_column(column)
    for case in result.cases:
        for number, check in enumerate(case["checks"]):
            table.add_row(case["case"] if number == 0 else "", check["quantity"], str(check["golden"]),
                          str(check["measured"]), check["tolerance"],
                          "[green]ok[/]" if check["ok"] else "[bold red]DRIFT[/]")
        table.add_section()
    stdout.print(table)
    if not result.consistency:
        return
    table = Table(title="Same skull, different acquisitions (registered to skull_1mm, over the common z range)",
                  title_justify="left")
    for column in ("series", "common z (mm)", "ICP rot (deg) / shift (mm)", "mean dist before -> after (mm)",
                   "volume (ml)", "1 mm: native / at its thickness (ml)", "difference to native / matched",
                   "bounds", ""):
        table.add_column(column)
    for name, item in result.consistency.items():
        shift = sum(v * v for v in item["icp"]["translation_mm"]) ** 0.5
        verdict = ("[green]ok[/]" if item["ok"] else "[bold red]OUT[/]") if item["checked"] else "information"
        matched = item["volume_ml_thickness_matched_reference"]
        table.add_row(
            name, "{:.1f}..{:.1f}".format(*item["common_z_lps_mm"]),
            f"{item['icp']['rotation_deg']:.3f} / {shift:.3f}",
            f"{item['distance_before_registration']['mean_mm']:.3f} -> {item['distance']['mean_mm']:.3f}",
            f"{item['volume_ml']:.1f}", f"{item['reference_volume_ml']:.1f} / " + (f"{matched:.1f}" if matched else "-"),
            f"{item['volume_difference_to_reference']:+.2%} / " + (f"{item['volume_difference']:+.2%}" if matched else "-"),
            f"<= {item['bounds']['mean_distance_mm']} mm, ±{item['bounds']['volume_difference']:.0%}", verdict)
    stdout.print(table)
