"""``anatomodel prepare MODEL --printer NAME --out DIR``: orient, check fit, write print files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import app, say, stdout, timed_steps
from pipeline.errors import HeldForReview


@app.command("prepare")
def prepare_command(
    model_file: Path = typer.Argument(..., help="Model in patient LPS mm: .stl, .3mf, .obj or .ply."),
    printer: str = typer.Option(..., "--printer", "-p", help="Printer profile name (configs/printers) or YAML path."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for print.stl, print.3mf and plan.json."),
    material: str = typer.Option(None, "--material", "-m", help="Material of the profile (its default if omitted)."),
    alternatives: int = typer.Option(3, "--alternatives", help="Runner-up orientations to report."),
    as_json: bool = typer.Option(False, "--json", help="Print plan.json on stdout."),
) -> None:
    """Choose the print orientation (least support volume, overhang and contact), check the
    build volume and write the oriented model and its plan.

    A model that fits the printer in no orientation tried is still written (print.stl in the
    chosen pose, plan.json with the split and scale advice, for inspection), but exits 19: done,
    held for review, as `run` holds its charge. Nothing is scaled or cut: the lab decides.

    Example:

      anatomodel prepare out/aorta/model.stl --printer formlabs_form3b --out out/aorta/print
    """
    from pipeline.mesh import read_model
    from pipeline.prepare import plan_print, write_print_files

    model = read_model(model_file)
    with timed_steps("prepare") as step:
        step(f"searching the print orientation on {printer}")
        plan, _ = plan_print(model, printer, alternatives=alternatives, material=material)
        step("writing the print files")
        paths = write_print_files(plan, model, out)
    if as_json:
        stdout.print(plan.to_json(), markup=False, highlight=False)
    fit = "fits" if plan.fits else "DOES NOT FIT"
    say(f"{escape(plan.printer)}: {fit}; height {plan.height_mm:.1f} mm ({plan.layers} layers), "
        f"supports {plan.support_volume_mm3 / 1000:.1f} cm3 under {plan.overhang_area_mm2:.0f} mm2 of "
        f"overhang, about {plan.estimated_time_h:.1f} h; wrote {escape(str(paths['plan'].parent))}")
    for warning in plan.warnings:
        say(f"[yellow]warning:[/] {escape(warning)}")
    if not plan.fits:
        raise HeldForReview(f"{model_file.name} fits {plan.printer} in no orientation tried; the print "
                            f"files in {paths['plan'].parent} are for inspection",
                            hint="split or scale it as plan.json's split says, or choose a larger printer")
