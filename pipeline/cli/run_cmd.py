"""``anatomodel run``: every model of a case, from DICOM to packet."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import LEDGER_OPTION, app, log_to_file, say, stdout, timed_steps
from pipeline.errors import HeldForReview


@app.command("run")
def run(
    case_file: Path = typer.Argument(..., help="The case YAML (see configs/cases/example_aorta.yaml)."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output root; the case goes to OUT/<case_id>/."),
    deidentify: bool = typer.Option(False, "--deidentify", help="Vendor copy: no name, MRN, birth date or accession in any file."),
    operator: str = typer.Option("", help="Who runs the case (default: the case file's operator, else $ANATOMODEL_OPERATOR, else your login)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ledger: Path = LEDGER_OPTION,
    identity_override: str = typer.Option(
        None, "--identity-override", metavar="REASON",
        help="Run although the case's patient differs from the series' (reason recorded; every charge held)."),
    correct_encounter: str = typer.Option(
        None, "--correct-encounter", metavar="REASON",
        help="Move this case id (all its charges void) to the case file's patient and date of service."),
) -> None:
    """Run a case: load, segment, mesh, prepare and document every model, then write the charges.

    The steps are logged to OUT/<case_id>/run.log. Each model is then *prepared*: its charge
    becomes billable once approved, printed, post-processed, checked (`anatomodel check`) and
    delivered (`anatomodel approve ...`). Exit 19: done, but a charge is held for review (`anatomodel release`).
    A re-run makes a new version of each model; once a model's charge was exported for billing
    (`anatomodel ledger export`), a re-run of its case is refused before any work (exit 13): the
    submitted claim is corrected or voided with the payer.

    Examples:

      anatomodel run configs/cases/example_aorta.yaml --out out

      anatomodel run case.yaml --out vendor --deidentify --json
    """
    from pipeline.case import load_case, run_case

    with log_to_file(out / load_case(case_file).case_id / "run.log"), timed_steps("run", announce=True) as progress:
        result = run_case(case_file, out, deidentify=deidentify, operator=operator or None, progress=progress,
                          ledger=ledger, identity_override=identity_override, correct_encounter=correct_encounter)
        # (the case id naming the log's folder is sanitised)
    if as_json:
        stdout.print_json(json.dumps(result.to_dict()))
    else:
        for model in result.models:
            say(f"{model.model_id}: prepared (provisional {model.cpt}) -> {model.folder} ({model.seconds:.1f} s)")
            for warning in packet_warnings(Path(model.folder), model.warnings):
                say(f"  warning: {escape(warning)}")
            for hold in model.holds:
                say(f"  [yellow]held:[/] {hold.code}: {escape(hold.reason)}")
        say(f"charges: {', '.join(str(p) for p in result.charges_files)}" if result.charges_files else
            "charges: none (a de-identified copy is not recorded in the ledger and bills nothing)")
    if result.held:
        raise HeldForReview(f"{len(result.holds)} hold(s) on the models of {result.case_id}: "
                            + ", ".join(sorted({f'{h.model_id} {h.code}' for h in result.holds})),
                            hint="each line stays unbillable until released: anatomodel release CASE MODEL CODE "
                                 "--by NAME --role ROLE --reason ...")


def packet_warnings(folder: Path, fallback: list[str]) -> list[str]:
    """The model's one list of warnings (every stage's, from its ``packet.json``), else ``fallback``.

    Parameters
    ----------
    folder : Path
        The model's output folder (``OUT/<case_id>/<model_id>``).
    fallback : list of str
        The warnings to show when the folder has no ``packet.json``.

    Returns
    -------
    list of str
        The packet's ``warnings`` (empty when it has none), else a copy of ``fallback``.
    """
    packet = folder / "packet.json"
    if packet.is_file():
        return list(json.loads(packet.read_text(encoding="utf-8")).get("warnings") or [])
    return list(fallback)
