"""``anatomodel segment SOURCE --preset P --seed X Y Z --out mask.nii.gz``: one structure."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import click
import typer
import yaml
from rich.markup import escape

from pipeline.cli.app import app, console, options, say
from pipeline.errors import ConfigError
from pipeline.files import atomic_write


def _overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs (dotted keys, YAML values) as a dict of preset overrides."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected FIELD=VALUE, e.g. threshold.lower_hu=150")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


#: Options that take several numbers each; Typer cannot declare a repeatable tuple option, so
#: they are read from the command's extra arguments (documented in the help text).
_POINT_OPTIONS = {
    "--seed": (3, float), "--exclude-seed": (3, float),
    "--seed-index": (3, int), "--exclude-seed-index": (3, int),
    "--roi": (6, float),
}


def _point_options(args: list[str]) -> dict[str, list[tuple]]:
    """Parse ``--seed X Y Z`` (repeatable) and the like from the extra arguments."""
    found: dict[str, list[tuple]] = {name: [] for name in _POINT_OPTIONS}
    position = 0
    while position < len(args):
        name = args[position]
        if name not in _POINT_OPTIONS:
            raise click.UsageError(f"unexpected argument {name!r}")
        count, kind = _POINT_OPTIONS[name]
        values = args[position + 1:position + 1 + count]
        try:
            if len(values) != count:
                raise ValueError
            found[name].append(tuple(kind(v) for v in values))
        except ValueError:
            what = "whole numbers" if kind is int else "numbers"
            raise click.UsageError(f"{name} takes {count} {what}, got {' '.join(values) or 'none'}") from None
        position += 1 + count
    if len(found["--roi"]) > 1:
        raise click.UsageError("--roi may be given once")
    return found


@app.command("segment", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def segment_command(
    ctx: typer.Context,
    source: Path = typer.Argument(..., help="DICOM folder or file, or a NIfTI/NRRD/MHA CT volume."),
    preset: str = typer.Option(None, "--preset", "-p", help="Structure preset name (aorta_cta, bone_ct, ...) or YAML file."),
    labels: Path = typer.Option(None, "--labels", help="Instead of segmenting, import this label map made in "
                                "another tool (NIfTI, NRRD, DICOM SEG) onto SOURCE's grid."),
    add_to: Path = typer.Option(None, "--add-to", help="Combine the result with the structures of this mask "
                                "(same grid) into one label map; the new structure wins where they overlap."),
    out: Path = typer.Option(..., "--out", "-o", help="Mask to write (.nii.gz, .nii, .nrrd, .mha), on the source grid."),
    label: int = typer.Option(1, "--label", help="Label value of the structure in the mask (1-255)."),
    label_name: str = typer.Option(None, "--label-name", help="Structure name (default: the preset's)."),
    settings: Optional[List[str]] = typer.Option(
        None, "--set", help="Override a preset field, e.g. --set threshold.lower_hu=150 (repeatable)."),
    series: str = typer.Option("auto", "--series", "-s", help="'auto', a SeriesInstanceUID or a series number."),
    report: Path = typer.Option(None, "--report", help="Also write the segmentation report as JSON here."),
) -> None:
    """Segment one structure from a CT series and write its mask (and report).

    Seeds and region (repeat a seed option for several seeds):

      --seed X Y Z                  include seed, patient LPS mm

      --exclude-seed X Y Z          a structure that must not join (e.g. the left ventricle)

      --seed-index K J I            include seed as voxel index (slice, row, column)

      --exclude-seed-index K J I    exclude seed as voxel index

      --roi X0 Y0 Z0 X1 Y1 Z1       nothing outside this LPS box (mm) is segmented

    Examples:

      anatomodel segment ct/ --preset aorta_cta --seed -8 -22 25 --out aorta.nii.gz --report aorta.json

      anatomodel segment ct/ --preset aorta_cta --seed -8 -22 25 --exclude-seed 12 -30 -38 --out aorta.nii.gz

      anatomodel segment head/ --preset bone_ct --out skull.nii.gz

      anatomodel segment ct/ --preset heart_bloodpool_cta --seed 12 -30 -38 --label 2 --add-to aorta.nii.gz --out case.nii.gz

      anatomodel segment ct/ --labels from_other_tool.seg.dcm --out mask.nii.gz
    """
    from pipeline.geometry import IMAGE_SUFFIXES, is_image_file, read_mask, write_mask
    from pipeline.load import load_series
    from pipeline.segment import combine_masks, import_label_map, segment_volume

    points = _point_options(list(ctx.args))
    if not is_image_file(out):
        raise typer.BadParameter(f"{out}: use one of {', '.join(IMAGE_SUFFIXES)}", param_hint="--out")
    if (preset is None) == (labels is None):
        raise click.UsageError("give either --preset (to segment) or --labels (to import a label map)")
    from pipeline.preflight import writable_file

    for path in (out, report):  # a read-only or misnamed output fails now, not after the work
        if path is not None:
            writable_file(path)
    overrides = _overrides(settings or [])
    roi = points["--roi"][0] if points["--roi"] else None
    volume, _ = load_series(source, series)
    if labels is not None:
        mask = import_label_map(labels, reference=volume.geometry)
        if add_to is not None:
            mask = combine_masks([read_mask(add_to), mask])
        write_mask(mask, out)
        counts = ", ".join(f"{name} {mask.volume_ml(value):.1f} ml" for value, name in mask.labels.items())
        resampled = " (resampled onto the source grid)" if "resampled_from" in mask.provenance else ""
        say(f"wrote {escape(str(out))}: {escape(counts)}{resampled}")
        return
    from pipeline.presets import apply_overrides, check_coverage, load_preset, series_extent_mm

    check_coverage(apply_overrides(load_preset(preset), overrides), series_extent_mm(volume.geometry),
                   volume.geometry.shape[0], str(source))  # a series too short for the structure: before the work
    mask, segment_report = segment_volume(
        volume, preset, points["--seed"], points["--exclude-seed"],
        seeds_index=points["--seed-index"], exclude_seeds_index=points["--exclude-seed-index"],
        label=label, label_name=label_name,
        roi_lps_mm=(roi[:3], roi[3:]) if roi else None, overrides=overrides or None,
    )
    if add_to is not None:
        mask = combine_masks([read_mask(add_to), mask])
    write_mask(mask, out)
    if report is not None:
        atomic_write(report, segment_report.to_json() + "\n")
    leak = segment_report.leak_control
    cut = f", leak control cut {leak.removed_ml:g} ml" if leak.removed_ml else ""
    say(f"wrote {escape(str(out))}: {segment_report.structure} {segment_report.volume_ml:.1f} ml "
        f"({segment_report.voxels} voxels, {segment_report.components} component(s)){cut}")
    for warning in segment_report.warnings:
        say(f"[yellow]warning:[/] {escape(warning)}")
    if options.verbose:
        for piece in leak.cuts:
            say(f"  removed piece {piece.piece}: {piece.volume_ml:g} ml at LPS {tuple(piece.centroid_lps_mm)} "
                f"mm, neck radius {piece.neck_radius_mm} mm ({'tube' if piece.tubular else 'blob'})")
    for hold in segment_report.holds:  # a hold blocks the charge: shown even with --quiet
        console.print(f"[red]HOLD[/] {escape(hold.code)}: {escape(hold.reason)}")
