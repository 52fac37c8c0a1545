"""``anatomodel ledger list | show | void | export | anchor | verify``: read and correct the case ledger."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer
from rich.table import Table

from pipeline.cli.app import LEDGER_OPTION, app, emit, say, shown, stdout
from pipeline.errors import LedgerError
from pipeline.ledger import Ledger
from pipeline.ledger.lifecycle import CODE_BASIS, CODE_RULE
from pipeline.report import to_jsonable

ledger_app = typer.Typer(
    name="ledger",
    help="The case ledger: cases, model versions, charges (0559T/0560T), runs and the audit log.",
    epilog="Examples: anatomodel ledger list  |  anatomodel ledger show EXAMPLE-001 --json  |  "
           "anatomodel ledger export --format csv --out charges.csv  |  anatomodel ledger verify",
    no_args_is_help=True,
)
app.add_typer(ledger_app, name="ledger")

JSON_OPTION = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")
_CSV_FIELDS = ("encounter_id", "patient_id", "date_of_service", "case_id", "model_id", "seq", "cpt", "cpt_basis",
               "units", "modifiers", "icd10", "icd10_pointers", "status", "reason", "version", "committed_at")


def _print_json(value: object) -> None:
    stdout.print_json(json.dumps(to_jsonable(value)))


@ledger_app.command("list")
def list_cases(ledger: Path = LEDGER_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List the recorded cases with their models and charge lines (each code as billed, exported or
    provisional: the encounter's lines are numbered in the order they became billable)."""
    with Ledger(ledger) as book:
        cases = book.list_cases()
    if as_json:
        _print_json(cases)
        return
    table = Table(title=f"{len(cases)} case(s)", caption=CODE_RULE)
    for column in ("case", "encounter", "date of service", "models", "charges", "last run (UTC)"):
        table.add_column(column, overflow="fold")
    for case in cases:
        table.add_row(shown(case["case_id"]), str(case["encounter_id"]), shown(case["date_of_service"]),
                      str(case["models"]), shown(case["charges"] or ""),
                      shown((case["last_run"] or "")[:16].replace("T", " ")))
    stdout.print(table)


@ledger_app.command("show")
def show(case_id: str = typer.Argument(..., help="The case id."), ledger: Path = LEDGER_OPTION,
         as_json: bool = JSON_OPTION) -> None:
    """Show everything recorded about one case: models, versions, charges (as billed), runs, audit log."""
    with Ledger(ledger) as book:
        detail = book.show(case_id)
    if as_json:
        _print_json(detail)
        return
    stdout.print(f"case [bold]{shown(case_id)}[/] · encounter {detail['encounter']['id']} · "
                 f"date of service {shown(detail['encounter']['date_of_service'])}")
    models = Table(title="model versions")
    for column in ("model", "version", "status", "mesh sha256", "folder"):
        models.add_column(column)
    for model in detail["models"]:
        models.add_row(shown(model["model_id"]), str(model["version"] or "-"), shown(model["status"]),
                       shown((model["mesh_sha256"] or "")[:16]), shown(model["folder"]))
    charges = Table(title="charges", caption=CODE_RULE)
    for column in ("#", "model", "CPT", "code", "modifiers", "status", "reason"):
        charges.add_column(column)
    for charge in detail["charges"]:
        charges.add_row(str(charge["seq"]), shown(charge["model_id"]), shown(charge["cpt"]),
                        shown(charge["cpt_basis"]), shown(" ".join(charge["line"]["modifiers"])),
                        shown(charge["status"]), shown(charge["reason"] or ""))
    lifecycle = Table(title="lifecycle (current versions)")
    for column in ("model", "version", "state", "signed off by", "open holds"):
        lifecycle.add_column(column, overflow="fold")
    for state in detail["lifecycle"]:
        signed = ", ".join(f"{e['step']}: {e['person']} ({e['role']})" for e in state["events"] if e["step"] != "prepared")
        holds = ", ".join(h["code"] for h in state["holds"] if h["released_by"] is None)
        lifecycle.add_row(shown(state["model_id"]), str(state["version"]), shown(state["state"]), shown(signed),
                          shown(holds))
    audit = Table(title="audit log")
    for column in ("at", "operator", "action", "model", "detail"):
        audit.add_column(column)
    for entry in detail["audit"]:
        audit.add_row(shown(entry["at"]), shown(entry["operator"]), shown(entry["action"]),
                      shown(entry["model_id"] or ""), shown(json.dumps(entry["detail"], ensure_ascii=False)))
    for table in (models, charges, lifecycle, audit):
        stdout.print(table)


@ledger_app.command("void")
def void(
    case_id: str = typer.Argument(..., help="The case id."),
    model_id: str = typer.Argument(..., help="The model id within the case."),
    reason: str = typer.Option(..., "--reason", help="Why (required; kept in the audit log)."),
    discontinued: bool = typer.Option(
        False, "--discontinued",
        help="The model was started but discontinued: keep it billed with modifier 53 instead of voiding."),
    operator: str = typer.Option(None, "--operator", help="Who (default: $ANATOMODEL_OPERATOR or the login)."),
    ledger: Path = LEDGER_OPTION,
) -> None:
    """Void a model's charge, or report it as discontinued (modifier 53)."""
    with Ledger(ledger) as book:
        line = book.void(case_id, model_id, reason=reason, discontinued=discontinued, operator=operator)
    what = f"discontinued: {line.cpt}-{'-'.join(line.modifiers)}" if discontinued else f"voided: {line.cpt}"
    say(f"{shown(case_id)}/{shown(model_id)} {what}")


@ledger_app.command("charges")
def charges(
    case_id: str = typer.Argument(..., help="A case id of the encounter."),
    ledger: Path = LEDGER_OPTION,
) -> None:
    """Rewrite the encounter's charges files (OUT/encounters/ENC-...) from the ledger."""
    from pipeline.case import rewrite_encounter_charges

    with Ledger(ledger) as book:
        files = rewrite_encounter_charges(book, case_id)
    if not files:
        raise LedgerError(f"case {case_id!r} has no published model, so no output folder is known",
                          hint="run the case first")
    say(f"wrote {', '.join(shown(str(p)) for p in files)}")


@ledger_app.command("unvoid")
def unvoid(
    case_id: str = typer.Argument(..., help="The case id."),
    model_id: str = typer.Argument(..., help="The model id within the case."),
    reason: str = typer.Option(..., "--reason", help="Why (required; kept in the audit log)."),
    operator: str = typer.Option(None, "--operator", help="Who (default: $ANATOMODEL_OPERATOR or the login)."),
    ledger: Path = LEDGER_OPTION,
) -> None:
    """Undo a void: the model's charge counts again (a dead run's reservation can be voided and back)."""
    with Ledger(ledger) as book:
        line = book.unvoid(case_id, model_id, reason=reason, operator=operator)
    say(f"{shown(case_id)}/{shown(model_id)} counts again (provisional {line.cpt})")


@ledger_app.command("export")
def export(
    out: Path = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
    fmt: str = typer.Option("json", "--format", help="json (charges and claim lines) or csv (charges)."),
    preview: bool = typer.Option(False, "--preview", help="Do not record the billable lines as exported."),
    operator: str = typer.Option(None, "--operator", help="Who exports (default: $ANATOMODEL_OPERATOR or the login)."),
    ledger: Path = LEDGER_OPTION,
) -> None:
    """Export for billing: each encounter's claim from its billable (delivered) lines, pending lines apart.

    Every format shows each line's code as its claim carries it: the encounter's lines are
    numbered in the order they became billable (the first 0559T, each further one 0560T),
    whatever order the models were run in; a pending line's code is provisional (the CSV's
    cpt_basis column says which). Exported lines keep their CPT code from then on (unless --preview).
    """
    if fmt not in ("json", "csv"):
        raise LedgerError(f"--format must be json or csv, got {fmt!r}")
    with Ledger(ledger) as book:
        data = book.export(record=not preview, operator=operator)
    if fmt == "json":
        text = json.dumps(to_jsonable(data), indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for charge in data["charges"]:
            line = charge["line"]
            writer.writerow({**{k: charge.get(k) for k in _CSV_FIELDS}, "cpt_basis": CODE_BASIS[charge["cpt_basis"]],
                             "units": line["units"],
                             "modifiers": " ".join(line["modifiers"]), "icd10": " ".join(line["icd10"]),
                             "icd10_pointers": "".join(line["icd10_pointers"])})
        text = buffer.getvalue()
    emit(text, out, f"wrote {len(data['charges'])} charge line(s) to {shown(str(out))}")


@ledger_app.command("anchor")
def anchor(ledger: Path = LEDGER_OPTION, out: Path = typer.Option(
        None, "--out", "-o", help="Write the anchor to this file (keep it outside the ledger's machine).")) -> None:
    """Print (or write) the hash chain's head: last hash, entries, time. `ledger verify --anchor FILE`
    later fails if the chain no longer extends it (a rewrite of the whole chain)."""
    with Ledger(ledger) as book:
        kept = book.anchor()
    emit(json.dumps(kept, indent=2) + "\n", out, f"wrote the anchor ({kept['entries']} chain entries) to {shown(str(out))}")


@ledger_app.command("verify")
def verify(ledger: Path = LEDGER_OPTION, as_json: bool = JSON_OPTION, anchor_file: Path = typer.Option(
        None, "--anchor", help="An anchor from `ledger anchor`: also fail if the chain no longer extends it.")) -> None:
    """Re-check every recorded packet against its SHA256SUMS; fail if anything is missing or changed."""
    from pipeline.ledger.chain import read_anchor

    kept = read_anchor(anchor_file) if anchor_file is not None else None
    with Ledger(ledger) as book:
        report = book.verify(kept)
    if as_json:
        _print_json({**report.to_dict(), "ok": report.ok})
    else:
        for note in report.notes:
            say(f"note: {shown(note)}")
        for problem in report.problems:
            stdout.print(f"[red]problem:[/] {shown(problem)}")
        say(f"checked {report.packets_checked} packet(s) and {report.charges_checked} charge(s) in "
            f"{shown(report.ledger)}: " + ("all intact" if report.ok else f"{len(report.problems)} problem(s)"))
    if not report.ok:
        raise LedgerError(f"ledger verify found {len(report.problems)} problem(s) in {report.ledger}")
