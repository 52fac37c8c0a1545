"""``anatomodel inspect DIR``: list the series of a study folder and which one ``auto`` loads."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import app, stdout
from pipeline.load import Inventory, inventory


def _mm(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(found: Inventory) -> None:
    """Print an inventory for people: one block per series, then the choice and notes (stdout).

    Parameters
    ----------
    found : Inventory
        The inventory of a DICOM folder (series with their geometry in mm and degrees, the
        automatic choice and its notes).
    """
    stdout.print(f"[bold]{len(found.series)} series[/] in {escape(found.root)}")
    for info in found.series:
        chosen = info.series_instance_uid == found.chosen
        number = "-" if info.series_number is None else str(info.series_number)
        title = f"series {number} '{info.series_description or ''}' ({', '.join(info.folders)})"
        stdout.print(("[bold green]auto ->[/] " if chosen else "        ") + f"[bold]{escape(title)}[/]")
        matrix = "x".join(map(str, info.matrix)) if info.matrix else "-"
        pixels = "x".join(f"{v:.3f}" for v in info.pixel_spacing_mm) if info.pixel_spacing_mm else "-"
        steps = (f"{_mm(info.spacing_between_slices_min_mm)}-{_mm(info.spacing_between_slices_max_mm)} mm"
                 if info.spacing_between_slices_min_mm is not None else "-")
        lines = [
            f"UID {info.series_instance_uid}",
            f"{info.modality or '-'} {chr(92).join(info.image_type) or '-'} ({info.sop_class}); "
            f"{info.slices} slice(s) in {info.instances} file(s); matrix {matrix}, pixels {pixels} mm",
            f"thickness {_mm(info.slice_thickness_mm)} mm, steps {steps}, coverage {_mm(info.coverage_mm, 1)} mm, "
            f"gantry tilt {_mm(info.gantry_tilt_deg, 1)} deg (geometry {_mm(info.tilt_from_geometry_deg, 1)})",
            f"{', '.join(info.transfer_syntaxes)}; contrast {info.contrast_agent or '-'}; "
            f"kernel {info.convolution_kernel or '-'} ({info.kernel_class or '-'})"
            + ("; angio hint" if info.angio_hint else ""),
        ]
        if info.usable:
            verdict = "volume: yes" + ("" if info.auto_candidate else f" (not for auto: {info.not_auto_reason})")
        else:
            verdict = f"volume: NO, {'; '.join(info.reasons)}"
        lines.append(verdict)
        lines.extend(f"note: {note}" for note in info.notes)
        for line in lines:
            stdout.print("          " + escape(line))
    stdout.print(
        f"skipped {found.skipped_non_dicom} non-DICOM file(s) and {found.skipped_index_files} index file(s) "
        "(DICOMDIR/DIRFILE)"
    )
    for entry in found.unreadable:
        stdout.print(f"unreadable: {escape(entry['file'])}: {escape(entry['reason'])}")
    label = "auto chooses" if found.chosen else "auto chooses nothing"
    stdout.print(f"[bold]{label}[/]: {escape(found.chosen_reason)}")
    for note in found.notes:
        stdout.print(f"note: {escape(note)}")


@app.command("inspect")
def inspect_command(
    folder: Path = typer.Argument(..., help="Study folder (searched recursively) or one DICOM file."),
    as_json: bool = typer.Option(False, "--json", help="Print the inventory as JSON on stdout."),
    prefer_bone: bool = typer.Option(False, "--prefer-bone", help="Let auto prefer bone kernels."),
) -> None:
    """List every series of a DICOM folder, whether it can be a CT volume, and what [bold]auto[/] picks.

    Examples:

      anatomodel inspect study/

      anatomodel inspect study/ --json
    """
    found = inventory(folder, prefer_bone=prefer_bone)
    if as_json:
        print(found.to_json())
    else:
        render(found)
