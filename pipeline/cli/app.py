"""The ``anatomodel`` Typer application and its global options.

Subcommands live one per module in this package and register themselves on :data:`app`; each
is a thin layer over a library function importable from :mod:`pipeline`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import typer
from rich.console import Console

app = typer.Typer(
    name="anatomodel",
    help="CT angiography to printable anatomic models and the packet that supports CPT 0559T/0560T.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

#: Messages for people go to stderr so that ``--json`` output on stdout stays machine-readable.
console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)


@dataclass
class GlobalOptions:
    debug: bool = False
    quiet: bool = False
    verbose: bool = False


options = GlobalOptions()


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and results."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step's details."),
) -> None:
    """Global options apply to every subcommand and are given before it."""
    options.debug, options.quiet, options.verbose = debug, quiet, verbose
    level = logging.DEBUG if verbose or debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def say(message: str) -> None:
    """Print a progress or status line for people unless ``--quiet``."""
    if not options.quiet:
        console.print(message)
