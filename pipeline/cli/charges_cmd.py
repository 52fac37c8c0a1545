"""``anatomodel charges list | export``: the coder's view of a case and the exports for billing."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.app import LEDGER_OPTION, app, emit, say, stdout

charges_app = typer.Typer(
    name="charges",
    help="A case's charges as a coder reads them, and exports for the hospital (FHIR, HL7 v2 DFT, CSV).",
    epilog="Examples: anatomodel charges list configs/cases/example_aorta.yaml  |  "
           "anatomodel charges export case.yaml --format hl7 --out dft.hl7",
    no_args_is_help=True,
)
app.add_typer(charges_app, name="charges")

CASE_ARGUMENT = typer.Argument(..., help="The case YAML (patient, encounter and payer come from it).")
OTHER_OPTION = typer.Option(None, "--other-code", help="Another CPT/HCPCS code billed that day (repeat), e.g. 76377.")
MESH_ONLY_OPTION = typer.Option(None, "--mesh-only", help="A model delivered as a mesh only, not printed (repeat).")
SETTING_OPTION = typer.Option("hospital_outpatient", "--setting",
                              help="hospital_outpatient, physician_office, inpatient or asc.")


def _review(case_file: Path, ledger: Path | None, other: list[str] | None, mesh_only: list[str] | None,
            setting: str):
    """The case, its encounter id and the coder's view (every input checked before reading the ledger)."""
    from pipeline.case import load_case
    from pipeline.errors import ConfigError
    from pipeline.exports.review import review_lines
    from pipeline.icd10 import check_indication
    from pipeline.ledger import Ledger
    from pipeline.payers import PROCEDURE_CODE, ClaimFacts, check_payer

    case = load_case(case_file)
    check_indication(case.indication.icd10, str(case_file))
    payer = check_payer(case.encounter.payer, str(case_file))
    if setting not in ("hospital_outpatient", "physician_office", "inpatient", "asc"):
        raise ConfigError(f"--setting must be hospital_outpatient, physician_office, inpatient or asc, got {setting!r}")
    bad = [code for code in other or () if not re.fullmatch(PROCEDURE_CODE, code.strip().upper())]
    if bad:
        raise typer.BadParameter(f"{bad} are not CPT or HCPCS codes (e.g. 76377, C8001)", param_hint="--other-code")
    unknown = sorted(set(mesh_only or ()) - {spec.id for spec in case.models})
    if unknown:
        raise typer.BadParameter(f"{unknown} are not models of case {case.case_id} "
                                 f"({', '.join(spec.id for spec in case.models)})", param_hint="--mesh-only")
    facts = ClaimFacts(other_codes=tuple(other or ()), mesh_only_models=tuple(mesh_only or ()), setting=setting)
    with Ledger(ledger) as book:
        billing = book.case_billing(case.case_id)
    return case, billing.encounter_id, review_lines(billing, payer, facts)


@charges_app.command("list")
def list_charges(case_file: Path = CASE_ARGUMENT, ledger: Path = LEDGER_OPTION,
                 other_code: list[str] = OTHER_OPTION, mesh_only: list[str] = MESH_ONLY_OPTION,
                 setting: str = SETTING_OPTION,
                 as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")) -> None:
    """Show each model's charge: state (pending, held with reason, billable), diagnoses, payer rules.

    Examples:

      anatomodel charges list configs/cases/example_aorta.yaml

      anatomodel charges list case.yaml --other-code 76377 --json
    """
    from pipeline.report import to_jsonable

    case, _, review = _review(case_file, ledger, other_code, mesh_only, setting)
    if as_json:
        stdout.print_json(json.dumps(to_jsonable({"case_id": case.case_id, "payer": review.payer,
                                                  "lines": review.lines, "notes": review.notes})))
        return
    table = Table(title=f"case {escape(case.case_id)} · payer {escape(review.payer)}")
    for column in ("#", "model", "CPT", "state", "diagnoses", "payer rules", "reasons"):
        table.add_column(column, overflow="fold")
    for line in review.lines:
        cpt = "-".join([line.cpt, *line.modifiers])
        table.add_row(str(line.seq), escape(line.model_id), cpt, line.state, escape("\n".join(line.diagnoses)),
                      escape("\n".join(line.rules)), escape("\n".join(line.reasons)))
    stdout.print(table)
    for note in review.notes:
        say(f"note: {escape(note)}")


@charges_app.command("export")
def export_charges(case_file: Path = CASE_ARGUMENT,
                   fmt: str = typer.Option("fhir", "--format", help="fhir (Bundle JSON), hl7 (DFT^P03) or csv."),
                   out: Path = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
                   ledger: Path = LEDGER_OPTION, other_code: list[str] = OTHER_OPTION,
                   mesh_only: list[str] = MESH_ONLY_OPTION, setting: str = SETTING_OPTION) -> None:
    """Export the case's billable claim lines (held lines are left out) for the hospital's charge capture.

    Examples:

      anatomodel charges export configs/cases/example_aorta.yaml --format fhir --out bundle.json

      anatomodel charges export case.yaml --format hl7 --out dft.hl7
    """
    from pipeline.errors import CodingError, ConfigError
    from pipeline.exports import EncounterFacts

    if fmt not in ("fhir", "hl7", "csv"):
        raise ConfigError(f"--format must be fhir, hl7 or csv, got {fmt!r}")
    case, encounter_id, review = _review(case_file, ledger, other_code, mesh_only, setting)
    lines = review.billable
    if not lines:
        held = sum(1 for line in review.lines if line.state != "billable")
        raise CodingError(f"case {case.case_id}: no billable charge line to export ({held} held or pending); "
                          "`anatomodel charges list` shows why")
    facts = EncounterFacts.from_case(case, encounter_id=f"ENC{encounter_id}")
    if fmt == "fhir":
        from pipeline.exports.fhir import charge_bundle

        text = charge_bundle(lines, facts).model_dump_json(indent=2) + "\n"
    elif fmt == "hl7":
        from pipeline.exports.hl7 import dft_message

        text = dft_message(lines, facts, sent=dt.datetime.now(dt.UTC)).to_er7() + "\r"
    else:
        from pipeline.exports.csvfile import charges_csv

        text = charges_csv([(facts, lines)])
    emit(text, out, f"wrote {len(lines)} billable claim line(s) of case {escape(case.case_id)} as {fmt} "
                    f"to {escape(str(out))}")
