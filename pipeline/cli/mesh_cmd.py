"""``anatomodel mesh MASK --out model.stl``: a label map to a checked, printable surface."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from rich.markup import escape

from pipeline.cli.app import app, say, stdout, timed_steps
from pipeline.files import atomic_write


@app.command("mesh")
def mesh_command(
    mask_file: Path = typer.Argument(..., help="Label map (.nii.gz, .nii, .nrrd, .mha) on the CT grid."),
    out: Path = typer.Option(..., "--out", "-o", help="Model to write (.stl, .3mf, .obj), patient LPS mm."),
    format: str = typer.Option(None, "--format", "-f",
                               help="stl (binary), stl-ascii, 3mf or obj; default from the --out suffix."),
    label: int = typer.Option(None, "--label", help="Label to mesh (default: every nonzero label as one solid)."),
    min_wall: float = typer.Option(None, "--min-wall", help="Printer's minimum wall, mm: thinner patches are reported."),
    target_faces: int = typer.Option(500_000, "--target-faces", help="Face budget; 0 keeps every triangle."),
    smoothing: str = typer.Option("windowed_sinc", "--smoothing", help="windowed_sinc, taubin or none."),
    iterations: int = typer.Option(30, "--iterations", help="Smoothing iterations."),
    passband: float = typer.Option(None, "--passband", help="Smoothing pass band (default 0.01 sinc, 0.1 Taubin)."),
    min_piece: float = typer.Option(10.0, "--min-piece", help="Drop pieces and cavities smaller than this, mm3."),
    report: Path = typer.Option(None, "--report", help="Also write the mesh report as JSON here."),
    json_out: bool = typer.Option(False, "--json", help="Print the mesh report as JSON on stdout."),
) -> None:
    """Mesh a mask: marching cubes, smoothing, decimation, repair and QA, then write the model.

    Examples:

      anatomodel mesh aorta.nii.gz --out aorta.stl --min-wall 1.0 --report mesh.json

      anatomodel mesh labels.nii.gz --label 3 --out spine.3mf
    """
    from pipeline.geometry import read_mask
    from pipeline.mesh import FORMATS, MeshOptions, mesh_mask, write_model

    # click's (not typer's bundled) exception: pipeline.cli.main maps it to exit code 2
    if format is not None and format not in FORMATS:
        raise click.BadParameter(f"{format!r}: use one of {', '.join(FORMATS)}", param_hint="--format")
    if format is None and out.suffix.lower() not in (".stl", ".3mf", ".obj"):
        raise click.BadParameter(f"{out}: use a .stl, .3mf or .obj name, or give --format", param_hint="--out")
    if smoothing not in ("windowed_sinc", "taubin", "none"):
        raise click.BadParameter(f"{smoothing!r}: use windowed_sinc, taubin or none", param_hint="--smoothing")
    from pipeline.preflight import writable_file

    for path in (out, report):  # a read-only or misnamed output fails now, not after the work
        if path is not None:
            writable_file(path)
    if passband is None:
        passband = 0.1 if smoothing == "taubin" else 0.01
    try:
        options = MeshOptions(smoothing=smoothing, smoothing_iterations=iterations, smoothing_passband=passband,
                              target_faces=target_faces or None, min_shell_volume_mm3=min_piece)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    if min_wall is not None and not 0 < min_wall < float("inf"):  # NaN fails too
        raise click.BadParameter(f"must be a positive number of mm, got {min_wall}", param_hint="--min-wall")
    mask = read_mask(mask_file)
    with timed_steps("mesh") as step:
        step("meshing, smoothing and measuring the surface")
        model, mesh_report = mesh_mask(mask, label=label, options=options, min_wall_mm=min_wall)
    write_model(model, out, format)
    if report is not None:
        atomic_write(report, mesh_report.to_json() + "\n")
    if json_out:
        stdout.print(mesh_report.to_json(), markup=False, highlight=False)
    closed = "closed manifold" if mesh_report.watertight and mesh_report.manifold else "NOT closed"
    say(f"wrote {escape(str(out))}: {escape(mesh_report.structure)}, {mesh_report.faces_final} faces, {closed}, "
        f"{mesh_report.volume_mm3 / 1000:.2f} ml ({mesh_report.volume_vs_mask_percent:+.2f} % vs mask), "
        f"{mesh_report.shells} shell(s)")
    wall = mesh_report.min_wall_thickness_mm
    say(f"distance to the raw surface mean {mesh_report.distance_to_raw_mean_mm:.3f} mm, "
        f"p95 {mesh_report.distance_to_raw_p95_mm:.3f} mm; thinnest wall "
        + (f"{wall:.2f} mm" if wall is not None else f"over {mesh_report.wall_probe_mm:g} mm"))
    for warning in mesh_report.warnings:
        say(f"[yellow]warning:[/] {escape(warning)}")
