"""``anatomodel convert SOURCE OUT.nii.gz``: write the loaded, corrected volume."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import app, say, timed_steps
from pipeline.files import atomic_write
from pipeline.geometry import IMAGE_SUFFIXES, is_image_file, write_volume
from pipeline.load import load_series


@app.command("convert")
def convert_command(
    source: Path = typer.Argument(..., help="DICOM folder or file, or a NIfTI/NRRD/MHA file."),
    output: Path = typer.Argument(..., help="Output image: .nii.gz, .nii, .nrrd or .mha."),
    series: str = typer.Option("auto", "--series", "-s", help="'auto', a SeriesInstanceUID or a series number."),
    prefer_bone: bool = typer.Option(False, "--prefer-bone", help="Let auto prefer bone kernels."),
    max_gap_mm: float = typer.Option(None, "--max-gap-mm", help="Refuse steps between slices wider than this (mm)."),
    resample_gaps: bool = typer.Option(False, "--resample-gaps", help="Fill gaps (missing slices) by "
                                       "interpolation instead of refusing; the report says so."),
    report: Path = typer.Option(None, "--report", help="Also write the load report as JSON here."),
) -> None:
    """Load a CT series (tilt, spacing and rescale corrected) and write it as one image file.

    Examples:

      anatomodel convert study/ volume.nii.gz

      anatomodel convert study/ volume.nrrd --series 3 --report load.json
    """
    if not is_image_file(output):
        raise typer.BadParameter(f"{output}: use one of {', '.join(IMAGE_SUFFIXES)}", param_hint="OUTPUT")
    from pipeline.preflight import writable_file

    writable_file(output)  # a read-only or misnamed output fails now, not after the load
    if report is not None:
        writable_file(report)
    with timed_steps("convert") as step:
        step("reading the series")
        volume, load_report = load_series(source, series, prefer_bone=prefer_bone, max_gap_mm=max_gap_mm,
                                          resample_gaps=resample_gaps)
        step("writing the volume")
        write_volume(volume, output)
    if report is not None:
        atomic_write(report, load_report.to_json() + "\n")
    shape = "x".join(map(str, volume.geometry.shape))
    spacing = "x".join(f"{s:.3f}" for s in volume.geometry.spacing)
    extras = [text for flag, text in ((load_report.tilt_corrected, "tilt corrected"),
                                      (load_report.uneven_spacing, "resampled to uniform spacing")) if flag]
    say(f"wrote {escape(str(output))}: series {load_report.series_number or '-'}, {shape} voxels of {spacing} mm"
        + (f" ({', '.join(extras)})" if extras else ""))
    for warning in load_report.warnings:
        say(f"[yellow]warning:[/] {escape(warning)}")
