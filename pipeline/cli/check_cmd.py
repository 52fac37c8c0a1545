"""``anatomodel check MODEL_DIR SCAN``: measure a scan of the printed model against the model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import LEDGER_OPTION, app, say, stdout
from pipeline.errors import HeldForReview, LedgerError


@app.command("check")
def check_command(
    model_dir: Path = typer.Argument(..., help="Model folder (model.stl or print.stl, and plan.json if prepared)."),
    scan: Path = typer.Argument(..., help="Scan of the print: STL/OBJ/PLY/3MF surface, or a CT of it "
                                          "(DICOM folder or file, NIfTI/NRRD/MHA)."),
    policy: str = typer.Option("default", "--policy", help="QA policy: configs/qa/<name>.yaml or a YAML path."),
    printer: str = typer.Option(None, "--printer", help="Printer whose policy limits apply (default: plan.json's)."),
    material: str = typer.Option(None, "--material", help="Material whose policy limits apply (default: plan.json's)."),
    series: str = typer.Option("auto", "--series", help="Series of a DICOM folder (auto, UID or number)."),
    rigid: bool = typer.Option(False, "--rigid", help="Fit no scale: a shrunk print then shows as deviation."),
    out: Path = typer.Option(None, "--out", "-o", help="Write check.json and deviation_views.png here "
                                                      "(default CASE_DIR/print-qa/MODEL_ID: beside the published model "
                                                      "folder, whose SHA256SUMS it must not change)."),
    json_out: bool = typer.Option(False, "--json", help="Print the check report as JSON on stdout."),
    by: str = typer.Option(None, "--by", help="Who checked the print (name): needed when the model is a ledger case."),
    role: str = typer.Option(None, "--role", help="Their role, e.g. technologist, engineer."),
    npi: str = typer.Option(None, "--npi", help="The clinician's NPI, if a clinician checked it."),
    at: str = typer.Option(None, "--at", help="When the print was checked, ISO date-time (default: now, UTC)."),
    minutes: float = typer.Option(None, "--minutes", help="Effort of the check in minutes (preparation/post-processing)."),
    record: bool = typer.Option(True, "--record/--no-record",
                                help="Record the check in the ledger when the model folder is a ledger case's."),
    ledger: Path = LEDGER_OPTION,
) -> None:
    """Register the scan to the model (no landmarks), measure the signed deviation both ways and
    give the verdict of the QA policy.

    When MODEL_DIR is the published folder of a ledger case's model (post-processed, or checked
    before: a rescan), the check is recorded as its `checked` lifecycle step (--by and --role
    needed), the charges files are rewritten and the packet re-issued with the verdict on page 1.
    A failed check holds the charge (one hold per failed criterion) until a named person releases
    it (`anatomodel release`) or the model is reprinted (`anatomodel printed` again: same version,
    same charge) and checked again.

    Exit codes: 0 the print passes; 19 it fails (held for review; also when not recorded), or the
    model has other open holds; 18 the scan does not fit the model; 17 the scan is unusable.

    Examples:

      anatomodel check out/EXAMPLE-001/aorta-surgeon scans/aorta-print.stl --by "TECH^LAB" --role technologist

      anatomodel check out/EXAMPLE-001/aorta-surgeon ct_of_print/ --policy leng2017 --json --no-record
    """
    from pipeline.check import check_print, load_policy, read_scan
    from pipeline.check.policy import policy_sha256
    from pipeline.ledger import Ledger, resolve_ledger_path

    chosen = load_policy(policy)
    location = resolve_ledger_path(ledger)
    book = Ledger(location) if record and (isinstance(location, str) or location.is_file()) else None
    try:
        case = _ledger_case(book, model_dir, by, role, npi) if book is not None else None
        if case is not None:
            from pipeline.case import packet_case

            packet_case(book, *case[:2])  # the packet can be re-issued with the check: before measuring
        scanned = read_scan(scan, series=series)
        report = check_print(model_dir, scanned, policy=chosen, printer=printer, material=material,
                             estimate_scale=not rigid, out_dir=out or model_dir.parent / "print-qa" / model_dir.name)
        state = None
        if case is not None:
            from pipeline.check.record import record_check, scan_sha256

            state = record_check(book, *case[:2], report, case[2], policy=chosen, policy_sha256=policy_sha256(policy),
                                 scan_sha=scan_sha256(scan), at=at, minutes=minutes)
        if json_out:
            recorded = {"case_id": case[0], "model_id": case[1], "version": state["version"],
                        "state": state["state"]} if state else None
            stdout.print(json.dumps({**report.to_dict(), "recorded": recorded}, indent=2), markup=False,
                         highlight=False)
        _say(report)
        if case is not None:
            from pipeline.cli.lifecycle_cmd import report_state

            report_state(book, case[0], case[1], state)  # raises HeldForReview when held
        else:
            say("not recorded: " + ("--no-record" if not record else "the model folder is no ledger case's"))
            if not report.passed:
                raise HeldForReview(f"{model_dir.name}: the print check failed: "
                                    + "; ".join(h.code for h in report.holds),
                                    hint="review the deviation views; reprint, or accept with a reason")
    finally:
        if book is not None:
            book.close()


def _ledger_case(book, model_dir: Path, by: str | None, role: str | None, npi: str | None):
    """``(case_id, model_id, Person)`` of a model folder that is a ledger case's, checked before any work."""
    from pipeline.check.record import ledger_model
    from pipeline.ledger.lifecycle import Person

    found = ledger_model(book, model_dir)
    if found is None:
        return None
    if not by or not role:
        raise LedgerError(f"{found[0]}/{found[1]} is a ledger case: give who checked the print to record it",
                          hint="give --by NAME --role ROLE (or --no-record to measure only)")
    return (*found, Person(by, role, npi))


def _say(report) -> None:
    if report.ct is not None:
        say(f"CT of the print: threshold {report.ct.threshold:.0f} (half-way between background "
            f"{report.ct.background_level:.0f} and object {report.ct.object_level:.0f}; "
            f"Otsu {report.ct.otsu_level:.0f})")
    r = report.registration
    say(f"registered: {r.overlap_share:.0%} of the scan within {r.overlap_mm:g} mm, RMS {r.residual_rms_mm:.3f} mm, "
        f"scale {report.scale:.4f} ({report.scale_error_percent:+.2f} %)")
    say(escape(report.summary()))
    for region in report.regions:
        say(f"  {escape(region.where)}: {region.peak_mm:+.2f} mm peak over {region.area_mm2:.0f} mm2 at "
            f"{', '.join(f'{v:.1f}' for v in region.centre_mm)} ({region.frame.upper()} mm)")
    for hold in report.holds:
        say(f"[yellow]hold[/] {escape(hold.code)}: {escape(hold.reason)}")
    for warning in report.warnings:
        say(f"[yellow]warning:[/] {escape(warning)}")
