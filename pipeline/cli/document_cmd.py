"""``anatomodel document MODEL_DIR --case CASE.yaml``: (re)write one model's packet."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import app, say, stdout


@app.command("document")
def document_command(
    model_dir: Path = typer.Argument(..., help="The model folder (OUT/<case_id>/<model_id>) holding model.stl."),
    case_file: Path = typer.Option(..., "--case", "-c", help="The case YAML the model belongs to."),
    model_id: str = typer.Option(None, "--model-id", help="Model id in the case (default: the folder's name)."),
    out: Path = typer.Option(None, "--out", "-o",
                             help="Write to OUT/<case_id>/<model_id> instead of rewriting MODEL_DIR."),
    deidentify: bool = typer.Option(False, "--deidentify",
                                    help="Vendor copy: no name, MRN, birth date or accession in any file (needs --out)."),
    images: bool = typer.Option(True, "--images/--no-images",
                                help="Load the source series for the CT pictures and DICOM references."),
    ledger: Path = typer.Option(None, "--ledger", help="Case ledger with the model's charge line "
                                "(default: $ANATOMODEL_LEDGER, else the per-user ledger)."),
    as_json: bool = typer.Option(False, "--json", help="Print the packet report as JSON on stdout."),
) -> None:
    """Write packet.pdf, packet.json, model.dcm and SHA256SUMS for one model.

    Examples:

      anatomodel document out/EXAMPLE-001/aorta-surgeon --case configs/cases/example_aorta.yaml

      anatomodel document out/EXAMPLE-001/aorta-surgeon --case case.yaml --deidentify --out vendor
    """
    from pipeline.case import load_case
    from pipeline.document.stage import document_model_folder

    report = document_model_folder(load_case(case_file), model_dir, out_dir=out, deidentify=deidentify,
                                   model_id=model_id, with_images=images, ledger=ledger)
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
        return
    say(f"{report.model_id}: {report.cpt}, packet of {report.pdf_pages} pages written to "
        f"{escape(str(report.model_dir))} ({report.seconds:.1f} s)")
    for warning in report.warnings:
        say(f"  warning: {escape(warning)}")
