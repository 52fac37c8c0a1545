"""Command line: ``anatomodel`` (also ``python -m pipeline``).

Errors caused by input are printed as one line and mapped to the exit code of their class in
:mod:`pipeline.errors`; ``--debug`` adds the traceback. Exit 1 means an internal error (a bug).
"""

from __future__ import annotations

import json
import sys
import traceback

import click
import typer
from rich.markup import escape

from pipeline.cli.app import app, console, hide_flag_types, options
from pipeline.config import text_problem
from pipeline.errors import AnatomodelError, ConfigError, HeldForReview
from pipeline.interrupt import Terminated, received, terminate_unwinds
from pipeline.preflight import environment_fault, find_environment_error

# Importing the command modules registers their subcommands on ``app``.
from pipeline.cli import (  # noqa: E402,F401  (imported for their side effect)
    batch_cmd,
    charges_cmd,
    check_cmd,
    convert_cmd,
    document_cmd,
    inspect_cmd,
    ledger_cmd,
    lifecycle_cmd,
    mesh_cmd,
    phantom_cmd,
    prepare_cmd,
    pull_cmd,
    push_cmd,
    regress_cmd,
    review_cmd,
    run_cmd,
    segment_cmd,
)

__all__ = ["app", "main"]

# Typer >= 0.20 vendors click: catch both its exceptions and click's own.
try:
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # an older Typer uses click itself
    _TyperClickException = click.exceptions.ClickException
_EXIT = (click.exceptions.Exit, typer.Exit)
_USAGE = (click.exceptions.ClickException, _TyperClickException)
_ABORT = (click.exceptions.Abort, typer.Abort)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (also the process exit code).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``). An argument holding a
        control character is refused before any work (exit 4).

    Returns
    -------
    int
        0 on success; the exit code of the error's class in :mod:`pipeline.errors` (3-21) for an
        input, environment or PACS error, printed as one line; 19 when the work is done but a
        charge is held for review; 2 for a usage error; 130 when aborted or interrupted; 128 + N
        when stopped by signal N; 1 for an internal error (a bug). With ``--json`` every error
        is also written to stdout as ``{"error": {kind, message, exit_code}}``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    hide_flag_types(command)
    try:
        with terminate_unwinds():
            _refuse_control_characters(args)
            result = command.main(args=args, prog_name="anatomodel", standalone_mode=False)
    except _EXIT as done:
        return int(done.exit_code)
    except _USAGE as error:
        error.show()
        return _json_error(args, "usage", error.format_message(), int(error.exit_code))
    except _ABORT:  # click turns KeyboardInterrupt (and so Terminated) into Abort
        stop = received()
        if stop is not None:
            return _json_error(args, "stopped", str(stop), _stopped(stop))
        console.print("aborted")
        return _json_error(args, "aborted", "aborted", 130)
    except HeldForReview as held:
        console.print(f"[bold yellow]done, but held for review:[/] {escape(str(held))}")
        return held.exit_code
    except AnatomodelError as error:
        return _json_error(args, type(error).__name__, str(error), _report(error, args))
    except Terminated as stop:
        return _json_error(args, "stopped", str(stop), _stopped(stop))
    except KeyboardInterrupt:
        console.print("interrupted")
        return _json_error(args, "interrupted", "interrupted", 130)
    except Exception as error:  # a bug: say so, and how to report it
        fault = find_environment_error(error)
        if fault is not None:  # disk full, read-only, ... met mid-run: the machine's fault, not a bug
            environment = environment_fault(fault)
            return _json_error(args, type(environment).__name__, str(environment), _report(environment, args))
        message = (f"internal error: {type(error).__name__}: {' '.join(str(error).split())}. Run again with "
                   "--debug for the traceback and report it with the command you ran.")
        if options.debug or "--debug" in args:
            traceback.print_exc()
        else:
            console.print(escape(message), soft_wrap=True)
        return _json_error(args, "internal", message, 1)
    return int(result) if isinstance(result, int) else 0


def _refuse_control_characters(args: list[str]) -> None:
    """Refuse an argument holding a control character (NUL, ESC...), before any work: every text
    a command stores (operator and ``--by`` names, roles, reasons, notes) comes from one."""
    for position, arg in enumerate(args, 1):
        problem = text_problem(arg, len(arg))
        if problem:
            raise ConfigError(f"argument {position} {problem}")


def _stopped(stop: Terminated) -> int:
    """A run ended by a signal: its cleanup has run (the stack unwound); say so and exit 128 + N."""
    console.print(f"{stop}: unfinished work was marked failed and its staging folders removed", soft_wrap=True)
    return stop.exit_code


def _report(error: AnatomodelError, args: list[str]) -> int:
    """Print an input or environment error as one line (the traceback too with --debug)."""
    if options.debug or "--debug" in args:
        traceback.print_exc()
    # One line of printable text, whatever a library or a file name put in the message.
    line = " ".join("".join(c if c.isprintable() else " " for c in str(error)).split())
    console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    return error.exit_code


def _json_error(args: list[str], kind: str, message: str, code: int) -> int:
    """With ``--json``, the one JSON document on stdout is this error object; returns ``code``."""
    if "--json" in args:
        sys.stdout.write(json.dumps({"error": {"kind": kind, "message": message, "exit_code": code}}) + "\n")
        sys.stdout.flush()
    return code
