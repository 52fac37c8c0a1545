"""The ``anatomodel`` Typer application and its global options.

Subcommands live one per module in this package and register themselves on :data:`app`; each
is a thin layer over a library function importable from :mod:`pipeline`.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from pipeline.errors import RESERVED_EXIT_CODES, AnatomodelError, HeldForReview, exit_codes


def exit_code_help() -> str:
    """The exit codes for ``anatomodel --help``, made from :func:`pipeline.errors.exit_codes` so
    that a new error class is listed the day it is added.

    Returns
    -------
    str
        A heading, then one line per code: each reserved code with its meaning, each error
        class's code with its name (the ``kind`` of a ``--json`` error object), the signal codes.
    """
    lines = [f"{code} {meaning}" for code, meaning in RESERVED_EXIT_CODES.items()]
    lines += [f"{code} {error.__name__}" + (" (done, but held for review: not a failure)" if error is HeldForReview
                                            else "") for code, error in exit_codes().items()]
    lines += ["130 interrupted (Ctrl-C); 128 + N stopped by signal N (143: SIGTERM)"]
    return "Exit codes (what each means: the README's table):\n\n" + "\n".join(lines)


app = typer.Typer(
    name="anatomodel",
    help="CT angiography to printable anatomic models and the packet that supports CPT 0559T/0560T.",
    epilog=exit_code_help(),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

#: Messages for people go to stderr so that ``--json`` output on stdout stays machine-readable.
#: Off a terminal (a pipe, a log file) lines are never hard-wrapped: paths and cells stay whole.
console = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty(),
                  width=None if sys.stderr.isatty() else 100_000)
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 100_000)

#: Libraries whose log lines (font scans, image plugins, font subsetting) are shown only with --debug.
QUIET_LIBRARIES = ("matplotlib", "PIL", "fontTools", "fpdf", "trimesh", "urllib3", "asyncio")


@dataclass
class GlobalOptions:
    debug: bool = False
    quiet: bool = False
    verbose: bool = False
    log_file: Path | None = None


options = GlobalOptions()

#: Status lines printed by :func:`say` are also logged under this name (for log files).
cli_log = logging.getLogger("anatomodel.cli")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: ``--ledger`` of the commands that read or write the case ledger.
LEDGER_OPTION = typer.Option(None, "--ledger", help="Ledger file or postgresql:// URL (default: $ANATOMODEL_LEDGER, "
                             "else the per-user ledger).")


def _print_version(value: bool) -> None:
    if value:
        from pipeline.report import anatomodel_version

        stdout.print(f"anatomodel {anatomodel_version()}")
        raise typer.Exit(0)


@app.callback()
def _global(
    context: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and results."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step's details."),
    log_file: Path = typer.Option(None, "--log-file", help="Also append every step's log to this file "
                                  "(with times; never patient data)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the anatomodel version and exit."),
) -> None:
    """Global options apply to every subcommand and are given before it.

    The exit codes are the help's epilog (:func:`exit_code_help`). Shell completion:
    anatomodel --install-completion.
    """
    options.debug, options.quiet, options.verbose, options.log_file = debug, quiet, verbose, log_file
    level = logging.DEBUG if verbose or debug else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose or debug else logging.INFO)
    if not any(getattr(handler, "_anatomodel_console", False) for handler in root.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(lambda record: not record.name.startswith(cli_log.name))  # say() already printed it
        handler._anatomodel_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for handler in root.handlers:
        if getattr(handler, "_anatomodel_console", False):
            handler.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    if log_file is not None:
        handler = _add_file_handler(log_file)
        context.call_on_close(lambda: (root.removeHandler(handler), handler.close()))


class _ConsoleHandler(logging.Handler):
    """Log lines through the same rich console as the progress bars, so a line printed while a
    bar is drawn goes above it instead of breaking into it."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record on the console (stderr); a failure goes to ``handleError``, never up.

        Parameters
        ----------
        record : logging.LogRecord
            The record to print, formatted by the handler's formatter, without Rich markup.
        """
        try:
            console.print(self.format(record), markup=False, highlight=False)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _add_file_handler(path: Path) -> logging.Handler:
    from pipeline.preflight import writable_file  # refuses a folder, read-only file or folder: exit 15

    path = writable_file(path)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.DEBUG if options.verbose or options.debug else logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler


@contextmanager
def log_to_file(path: str | Path) -> Iterator[Path]:
    """Also log everything (status lines included) to ``path`` while the block runs.

    For a per-run log, e.g. ``anatomodel run`` writing ``OUT/<case_id>/run.log``. Log lines name
    steps, files and figures; never put patient data (name, id, birth date, accession) in them.

    When the block raises, the log's last line says why (``failed: ...``, an internal error
    named as such, an interrupt with what it interrupted) and the exception goes on.

    Parameters
    ----------
    path : str or Path
        The log file; appended to, at DEBUG level with ``--verbose``/``--debug``, else INFO.

    Yields
    ------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    EnvironmentFault
        ``path`` cannot be written (a folder, read-only, ...). Exit code 15.
    """
    handler = _add_file_handler(Path(path))
    try:
        yield Path(path)
    except BaseException as error:  # the log ends with why the run stopped, where the user looks
        from pipeline.interrupt import received
        from pipeline.preflight import environment_fault, find_environment_error

        fault = find_environment_error(error)
        reason = str(environment_fault(fault) if fault is not None else error) or type(error).__name__
        if fault is None and not isinstance(error, AnatomodelError | KeyboardInterrupt):
            reason = f"internal error: {type(error).__name__}: {reason}"
        stop = received()
        if stop is not None and str(stop) not in reason:
            reason = f"{stop} (while: {reason})"
        cli_log.error("failed: %s", " ".join(reason.split()))
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def shown(value: object) -> str:
    """Stored text made safe for the terminal: each control character (an ANSI escape, a bell,
    NUL...) is written as a visible escape (``\\x1b``), then Rich markup is escaped.

    A ledger written by an older version, or by another program, may hold such text: printed raw
    it would recolour, retitle or clear the user's terminal.

    Parameters
    ----------
    value : object
        The stored value (None shows as empty text).

    Returns
    -------
    str
        Printable text with Rich markup escaped (``\\xNN`` below U+0100, else ``\\uNNNN``).
    """
    text = "" if value is None else str(value)
    visible = "".join(char if char.isprintable() or char == " " else
                      (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}") for char in text)
    return escape(visible)


def say(message: str) -> None:
    """Print a progress or status line for people unless ``--quiet`` (and log it for log files).

    Parameters
    ----------
    message : str
        The line, in Rich markup (escape stored text with :func:`shown`); logged as plain text
        at INFO under ``anatomodel.cli``.
    """
    cli_log.info(Text.from_markup(message).plain)
    if not options.quiet:
        console.print(message)


def emit(text: str, out: Path | None, written: str) -> None:
    """Print a command's output on stdout, or write it to ``out`` and say so.

    Parameters
    ----------
    text : str
        The whole output (its own line ends; nothing is added), written as UTF-8.
    out : Path or None
        The file to write atomically (replaced if it exists); None prints ``text`` on stdout.
    written : str
        The status line :func:`say` prints once ``out`` is written (Rich markup; escape stored
        text and the path with :func:`shown`).

    Raises
    ------
    OSError
        ``out`` cannot be written (nothing is left behind).
    """
    if out is None:
        typer.echo(text, nl=False)
    else:
        from pipeline.files import atomic_write

        atomic_write(out, text)
        say(written)


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr for a step that takes more than a second.

    Yields ``advance(message="", step=True)``: shows ``message`` as the current activity and,
    with ``step``, moves the bar by one of ``total`` steps (a spinner when ``total`` is None).
    Hidden by ``--quiet``, and drawn only on a terminal (nothing is left in logs or pipes).

    Parameters
    ----------
    description : str
        What the step is, shown before the bar.
    total : int, optional
        Number of steps; None shows a spinner without a count.

    Yields
    ------
    callable
        ``advance(message="", step=True)``.
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total}" if total else ""), TimeElapsedColumn(),
                   console=console, transient=True, disable=options.quiet)
    with bar:
        task = bar.add_task(description, total=total)

        def advance(message: str = "", step: bool = True) -> None:
            """Show the current activity and move the bar.

            Parameters
            ----------
            message : str
                The current activity (plain text; escaped here); empty shows the description
                alone.
            step : bool
                Count one step done.
            """
            bar.update(task, advance=1 if step else 0,
                       description=f"{description}: {escape(message)}" if message else description)

        yield advance


@dataclass
class StepTime:
    """One step of a command and how long it took, s."""

    step: str
    seconds: float


@contextmanager
def timed_steps(description: str, announce: bool = False) -> Iterator[Callable[[str], None]]:
    """A ``progress(message)`` callback for a library function that announces each step.

    Each message ends the step before it and starts a new one: on a terminal a spinner with the
    step's elapsed time runs until the next message, and with ``announce`` the message is also
    printed with :func:`say` (a line per step; otherwise a failing command's first line stays
    its error). When the block ends, the time of every step is printed (``step times:`` lines).

    Parameters
    ----------
    description : str
        What the command does, shown before each step's message.
    announce : bool
        Also print each step's message as a status line.

    Yields
    ------
    callable
        ``progress(message)``: ends the current step and starts one named ``message``. Step
        times are measured with ``time.perf_counter``, s, rounded to 0.01 s.
    """
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    times: list[StepTime] = []
    current: list = [None, 0.0]  # step message, start time
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   console=console, transient=True, disable=options.quiet or not console.is_terminal)

    def close() -> None:
        if current[0] is not None:
            times.append(StepTime(current[0], round(time.perf_counter() - current[1], 2)))

    with bar:
        task = bar.add_task(description, total=None)

        def progress(message: str) -> None:
            """End the current step and start the next.

            Parameters
            ----------
            message : str
                The new step's name (plain text; escaped here).
            """
            close()
            current[:] = [message, time.perf_counter()]
            if announce:
                say(escape(message))
            bar.reset(task, description=f"{description}: {escape(message)}")

        yield progress
        close()
    if times:
        say(f"step times ({sum(t.seconds for t in times):.1f} s in all):")
        for entry in times:
            say(f"  {entry.seconds:7.1f} s  {escape(entry.step)}")


def hide_flag_types(command) -> None:
    """Show flags in help without a ``<bool>`` type column (they take no value): every flag of
    ``command`` and its subcommands gets an empty metavar.

    Parameters
    ----------
    command : click.Command
        The command or group (e.g. ``typer.main.get_command(app)``); changed in place,
        recursively through the subcommands of a group.
    """
    help_option = command.get_help_option(command.context_class(command))  # created once, then cached
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        hide_flag_types(sub)
