"""``anatomodel phantom``: write the synthetic CTA phantom as a DICOM series."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.app import app, say


@app.command("phantom")
def phantom(
    out_dir: Path = typer.Argument(..., help="Folder to write the DICOM series (and truth/) into."),
    scale: float = typer.Option(1.0, help="Matrix size relative to 200x180x180 at 1 mm (2.5: 0.4 mm voxels)."),
    shape: str = typer.Option("", help="Exact matrix SLICESxROWSxCOLUMNS, e.g. 500x512x512 (overrides --scale)."),
    seed: int = typer.Option(0, help="Noise seed; the same seed writes the same files."),
    kind: str = typer.Option("aneurysm", help="Pathology: aneurysm, dissection, coarctation, touching, open_valve, "
                                              "bolus, calcified, spine, spine_osteoporotic."),
    spacing: float = typer.Option(0.0, help="Isotropic voxel size in mm, e.g. 1.5 or 0.5 (overrides --scale, --shape)."),
) -> None:
    """Write a deterministic synthetic CT angiography phantom (aorta, LV, spine) as DICOM.

    The truth is written to DIR/truth/: labels.nii.gz, lumen.nii.gz (contrast-filled aortic
    lumen), wall.nii.gz (inside the aorta's outer wall) and truth.json (landmarks in LPS mm).

    Examples:

      anatomodel phantom example_data/cta_phantom

      anatomodel phantom /tmp/dissection --kind dissection --spacing 1.5

      anatomodel phantom /tmp/cta_big --shape 500x512x512
    """
    from example_data.cta_phantom import KINDS, make_phantom, write_dicom_series
    from pipeline.errors import ConfigError

    matrix = None
    if shape:
        try:
            matrix = tuple(int(n) for n in shape.lower().split("x"))
            assert len(matrix) == 3 and min(matrix) >= 8
        except (ValueError, AssertionError):
            raise ConfigError(f"--shape {shape!r}: expected SLICESxROWSxCOLUMNS, each at least 8") from None
    if not scale > 0:
        raise ConfigError(f"--scale must be positive, got {scale}")
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    if spacing < 0:
        raise ConfigError(f"--spacing must be positive, got {spacing}")
    made = make_phantom(scale, seed, shape=matrix, kind=kind, spacing_mm=spacing or None)
    paths = write_dicom_series(made, out_dir)
    say(f"wrote {len(paths)} slices of {'x'.join(map(str, made.geometry.shape))} voxels "
        f"({made.geometry.spacing[0]:.3g} mm slices) to {out_dir}; truth in {out_dir / 'truth'}")
