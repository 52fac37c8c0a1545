"""``anatomodel pull --from NODE --accession ACC --out DIR``: fetch a CT series from a DICOM node."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import app, say, stdout
from pipeline.cli.inspect_cmd import render
from pipeline.files import atomic_write
from pipeline.load import inventory
from pipeline.pacs import pull, resolve_node


@app.command("pull")
def pull_command(
    node: str = typer.Option(..., "--from", help="A node of the nodes file, AET@HOST:PORT (DIMSE) or an "
                             "http(s):// DICOMweb URL."),
    out: Path = typer.Option(..., "--out", help="Folder to write the series into (must be new)."),
    accession: str = typer.Option(None, "--accession", help="The study's Accession Number."),
    study: str = typer.Option(None, "--study", help="Study Instance UID (chooses among several studies of "
                              "one accession)."),
    series: str = typer.Option("auto", "--series", "-s", help="'auto', a SeriesInstanceUID or a series number."),
    nodes_file: Path = typer.Option(None, "--nodes", help="Nodes YAML file (default $ANATOMODEL_NODES or "
                                    "~/.config/anatomodel/nodes.yaml)."),
    calling_aet: str = typer.Option(None, "--aet", help="Our AE title (default ANATOMODEL or the nodes file's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the pull report as JSON on stdout."),
    report: Path = typer.Option(None, "--report", help="Also write the pull report as JSON here."),
) -> None:
    """Find a study by accession number, list its series, and retrieve one complete series.

    DIMSE nodes retrieve with C-GET (or C-MOVE to our storage SCP, `retrieve: move` in the nodes
    file); DICOMweb nodes with WADO-RS. A partial retrieve is refused and nothing is written.

    Examples:

      anatomodel pull --from PACS@pacs.hospital.org:11112 --accession A123 --out study/

      anatomodel pull --from https://pacs.hospital.org/dicom-web --accession A123 --out study/

      anatomodel pull --from pacs --accession A123 --study 1.2.840... --series 3 --out study/
    """
    if accession is None and study is None:
        raise typer.BadParameter("give --accession (or --study)", param_hint="--accession")
    target = resolve_node(node, nodes_file, calling_ae_title=calling_aet)
    done = pull(target, out, accession=accession, study_uid=study, series=series)
    if report is not None:
        atomic_write(report, done.to_json() + "\n")
    if as_json:
        print(done.to_json())
        return
    stdout.print(f"[bold]{len(done.series)} series[/] in study {escape(done.study_instance_uid)} at "
                 f"{escape(done.node)}")
    for match in done.series:
        mark = "[bold green]pulled ->[/] " if match.series_instance_uid == done.series_instance_uid else "          "
        stdout.print(mark + escape(match.label()))
    render(inventory(out))
    for note in done.notes:
        stdout.print(f"note: {escape(note)}")
    say(f"pulled {done.instances_listed} instance(s) with {done.method} from {escape(done.node)} into "
        f"{escape(str(out))} in {done.seconds:.1f} s" + (" (already there)" if done.reused else ""))
