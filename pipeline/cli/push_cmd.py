"""``anatomodel push MODEL_DIR --to NODE``: send the model, its SEG and its packet into the source study."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import app, say, stdout
from pipeline.pacs import resolve_node
from pipeline.pacs.push import push


@app.command("push")
def push_command(
    model_dir: Path = typer.Argument(..., help="A model folder OUT/<case_id>/<model_id> written by 'run'."),
    node: str = typer.Option(..., "--to", help="A node of the nodes file, AET@HOST:PORT or a DICOMweb URL."),
    source: Path = typer.Option(None, "--source", help="Folder holding the source CT series (default: "
                                "the case's pulled series, else the node's series metadata or series)."),
    nodes_file: Path = typer.Option(None, "--nodes", help="Nodes YAML file (default $ANATOMODEL_NODES or "
                                    "~/.config/anatomodel/nodes.yaml)."),
    calling_aet: str = typer.Option(None, "--aet", help="Our AE title (default ANATOMODEL or the nodes file's)."),
    ledger: Path = typer.Option(None, "--ledger", help="Ledger file recording what was sent (default "
                                "$ANATOMODEL_LEDGER or the per-user ledger)."),
    again: bool = typer.Option(False, "--again", help="Send everything, even what the ledger records as sent."),
    as_json: bool = typer.Option(False, "--json", help="Print the push report as JSON on stdout."),
) -> None:
    """Send model.dcm (Encapsulated STL), a DICOM SEG of mask.nii.gz on the source series and
    packet.pdf (Encapsulated PDF) into the source study (same Study and Frame of Reference UIDs).

    A repeat sends the same SOP Instance UIDs, and only what the node has not confirmed before.

    Examples:

      anatomodel push out/CASE-001/aorta-surgeon --to PACS@pacs.hospital.org:11112

      anatomodel push out/CASE-001/aorta-surgeon --to https://pacs.hospital.org/dicom-web --source study/
    """
    target = resolve_node(node, nodes_file, calling_ae_title=calling_aet)
    done = push(model_dir, target, source=source, ledger=ledger, again=again)
    if as_json:
        print(done.to_json())
        return
    for item in done.objects:
        stdout.print(f"{item.kind:<13} {item.status:<13} {escape(item.sop_instance_uid)} ({item.bytes} bytes)")
    say(f"pushed to {escape(done.node)}: {done.sent} sent, {done.already_sent} already sent, into study "
        f"{escape(done.study_instance_uid)}")
