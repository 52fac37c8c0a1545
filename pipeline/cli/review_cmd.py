"""``anatomodel review CASE.yaml --out OUT``: the case's ``review.html``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.app import app, say, timed_steps


@app.command("review")
def review_command(
    case_file: Path = typer.Argument(..., help="The case YAML."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output root the case was run into (OUT/<case_id>/)."),
) -> None:
    """Write OUT/<case_id>/review.html: every model's outline on the CT slices, the model turning,
    the QA figures and holds, and the command that approves it. Opens from the file system.

    Examples:

      anatomodel review configs/cases/example_aorta.yaml --out out
    """
    from pipeline.case import write_case_review

    with timed_steps("review") as step:
        step("reading the series and the model folders")
        report = write_case_review(case_file, out)
    say(f"wrote {escape(str(report.path))} ({report.bytes / 1e6:.1f} MB, {len(report.crops)} model(s))")
