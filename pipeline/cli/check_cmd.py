"""``anatomodel check MODEL_DIR SCAN``: measure a scan of the printed model against the model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import app, say, stdout


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
) -> None:
    """Register the scan to the model (no landmarks), measure the signed deviation both ways and
    give the verdict of the QA policy. A failed check lists its holds; exit code 0 either way
    (read "passed" in the JSON). A scan that does not fit the model exits 18, an unusable scan 17.

    Examples:

      anatomodel check out/EXAMPLE-001/aorta-surgeon scans/aorta-print.stl

      anatomodel check out/EXAMPLE-001/aorta-surgeon ct_of_print/ --policy leng2017 --json
    """
    from pipeline.check import check_print, read_scan

    scanned = read_scan(scan, series=series)
    report = check_print(model_dir, scanned, policy=policy, printer=printer, material=material,
                         estimate_scale=not rigid, out_dir=out or model_dir.parent / "print-qa" / model_dir.name)
    if json_out:
        stdout.print(report.to_json(), markup=False, highlight=False)
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
