"""Many cases at once: local processes by default, a Dask distributed cluster when given.

Each case of a manifest runs through :func:`pipeline.case.run_case` in its own task; a failing
case is recorded with its error and does not stop the others. Every task writes to the same
ledger, whose per-encounter transactions keep the charges consistent with parallel writers.

A manifest is a CSV file (a ``case`` column, or case files in the first column) or a YAML file
(a list of case files, or a mapping with a ``cases`` list). Relative paths resolve against the
manifest's folder.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.config import MAX_TEXT_CHARS, read_text, read_yaml, text_problem
from pipeline.errors import AnatomodelError, ConfigError, HeldForReview
from pipeline.ledger import Ledger, resolve_ledger_path
from pipeline.report import Report

_CASE_COLUMNS = ("case", "case_file", "path")


@dataclass
class CaseOutcome(Report):
    """How one case of a batch ended."""

    case_file: str
    ok: bool
    seconds: float
    case_id: str | None = None
    models: list[str] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    exit_code: int = 0
    #: ``MODEL CODE`` of each hold that keeps a line of the case unbillable (done, but held).
    holds: list[str] = field(default_factory=list)


@dataclass
class BatchReport(Report):
    """The outcome of every case of a batch, in manifest order."""

    manifest: str
    out_dir: str
    ledger: str
    workers: int
    scheduler: str | None
    seconds: float
    outcomes: list[CaseOutcome]
    dashboard: str | None = None  # the Dask scheduler's dashboard (None: local processes, or no bokeh)

    @property
    def failed(self) -> list[CaseOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def held(self) -> list[CaseOutcome]:
        """The cases that succeeded with at least one line held for review."""
        return [outcome for outcome in self.outcomes if outcome.ok and outcome.holds]

    @property
    def exit_code(self) -> int:
        """The exit code of the first failure (never 0); else 19 (:class:`HeldForReview`) if a
        case is held; else 0."""
        failure = next((outcome.exit_code or 1 for outcome in self.failed), 0)
        return failure or (HeldForReview.exit_code if self.held else 0)

    def table(self) -> Table:
        """A summary table for people: one row per case."""
        table = Table(title=f"batch: {len(self.outcomes) - len(self.failed)} of {len(self.outcomes)} "
                            f"case(s) succeeded in {self.seconds:.1f} s")
        for column in ("case file", "case id", "result", "models", "seconds", "error or holds"):
            table.add_column(column, overflow="fold")
        folder = Path(self.manifest).absolute().parent
        for outcome in self.outcomes:
            shown = Path(outcome.case_file)
            shown = shown.relative_to(folder) if shown.is_relative_to(folder) else shown
            table.add_row(escape(str(shown)), escape(outcome.case_id or ""),
                          _result(outcome), escape(" ".join(outcome.models)), f"{outcome.seconds:.1f}",
                          escape(outcome.error or ", ".join(outcome.holds)))
        return table


def _result(outcome: CaseOutcome) -> str:
    if not outcome.ok:
        return "[red]failed[/]"
    return "[yellow]held[/]" if outcome.holds else "[green]ok[/]"


def read_manifest(manifest: str | os.PathLike) -> list[Path]:
    """The case files a manifest lists, as absolute paths, in order.

    Raises
    ------
    ConfigError
        If the manifest is missing, not CSV or YAML, malformed, or lists no case.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ConfigError(f"manifest {manifest} not found", hint="give a CSV or YAML file listing case files")
    suffix = manifest.suffix.lower()
    if suffix == ".csv":
        entries = _csv_entries(manifest)
    elif suffix in (".yaml", ".yml"):
        entries = _yaml_entries(manifest)
    else:
        raise ConfigError(f"manifest {manifest}: expected a .csv, .yaml or .yml file")
    if not entries:
        raise ConfigError(f"manifest {manifest} lists no case files")
    return [(manifest.parent / entry).absolute() for entry in entries]


def _csv_entries(manifest: Path) -> list[str]:
    text = read_text(manifest, "manifest")  # bounded, UTF-8, not binary
    rows = [row for row in csv.reader(io.StringIO(text, newline=""))
            if any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")]
    for number, row in enumerate(rows, 1):
        for cell in row:
            problem = text_problem(cell, MAX_TEXT_CHARS)
            if problem:
                raise ConfigError(f"{manifest}: row {number}: {problem}")
    if not rows:
        return []
    header = [name.strip().lower() for name in rows[0]]
    column = next((header.index(name) for name in _CASE_COLUMNS if name in header), None)
    if column is None:
        return [row[0].strip() for row in rows]
    for number, row in enumerate(rows[1:], 2):
        if len(row) <= column or not row[column].strip():
            raise ConfigError(f"{manifest}: row {number} has no {header[column]!r} value")
    return [row[column].strip() for row in rows[1:]]


def _yaml_entries(manifest: Path) -> list[str]:
    data = read_yaml(manifest)
    if isinstance(data, dict):
        data = data.get("cases")
    if not isinstance(data, list):
        raise ConfigError(f"{manifest}: expected a list of case files or a mapping with a 'cases' list")
    entries = []
    for number, item in enumerate(data, 1):
        if isinstance(item, dict):
            item = next((item[name] for name in _CASE_COLUMNS if name in item), None)
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{manifest}: entry {number} of 'cases' is not a case file path (got {item!r})")
        entries.append(item.strip())
    return entries


def run_one_case(case_file: str, out_dir: str, ledger: str) -> CaseOutcome:
    """Run one case and describe how it ended, never raising (the task a worker executes)."""
    from pipeline.case import run_case

    start = time.perf_counter()
    try:
        if not Path(case_file).is_file():
            raise ConfigError(f"case file {case_file} not found", hint="fix the path in the manifest")
        result = run_case(case_file, out_dir, ledger=ledger)
    except AnatomodelError as error:
        return CaseOutcome(case_file, False, time.perf_counter() - start, error=str(error),
                           error_type=type(error).__name__, exit_code=error.exit_code)
    except Exception as error:  # a bug in one case must not stop the batch: report it whole
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        return CaseOutcome(case_file, False, time.perf_counter() - start, error=f"internal error: {detail}",
                           error_type=type(error).__name__, exit_code=1)
    return CaseOutcome(case_file, True, time.perf_counter() - start, case_id=_case_id(result),
                       models=_model_ids(result),
                       holds=sorted({f"{hold.model_id} {hold.code}" for hold in getattr(result, "holds", None) or []}))


def _case_id(result: object) -> str | None:
    case = getattr(result, "case", None)
    return getattr(result, "case_id", None) or getattr(case, "case_id", None)


def _model_ids(result: object) -> list[str]:
    models = getattr(result, "models", None) or []
    return [getattr(model, "model_id", None) or getattr(model, "id", None) or str(model) for model in models]


def run_batch(manifest: str | os.PathLike, out_dir: str | os.PathLike, *, workers: int = 2,
              scheduler: str | None = None, ledger: str | os.PathLike | None = None,
              console: Console | None = None, progress: bool = True) -> BatchReport:
    """Run every case of a manifest, in parallel, and report how each ended.

    Parameters
    ----------
    manifest : path
        CSV or YAML file listing case files (relative paths resolve against its folder).
    out_dir : path
        Output root; each case writes ``OUT/<case_id>/``.
    workers : int
        Local worker processes (ignored with ``scheduler``: the cluster has its own).
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://HOST:PORT``); its workers must see
        ``out_dir``, the case files and the ledger at the same paths.
    ledger : path, optional
        The ledger every case writes to (default: ``$ANATOMODEL_LEDGER`` or the per-user one).
    console : rich.console.Console, optional
        Where the progress bar goes (default: stderr).
    progress : bool
        Show a progress bar.

    Returns
    -------
    BatchReport
        One :class:`CaseOutcome` per case, in manifest order; ``exit_code`` is non-zero if any
        case failed.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    cases = read_manifest(manifest)
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = resolve_ledger_path(ledger)  # a file (made absolute for the workers) or a PostgreSQL URL
    ledger_path = ledger_path.absolute() if isinstance(ledger_path, Path) else ledger_path
    with Ledger(ledger_path) as opened:  # create and migrate it once, before the workers start
        shown = str(opened.path)  # without a URL's password
    console = console or Console(stderr=True)
    client = _connect(scheduler) if scheduler else None
    dashboard = _dashboard(client) if client is not None else None
    if dashboard:
        console.print(f"Dask dashboard: {dashboard}")
    start = time.perf_counter()
    outcomes: dict[int, CaseOutcome] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("cases", total=len(cases))

        def record(index: int, outcome: CaseOutcome) -> None:
            outcomes[index] = outcome
            mark = _result(outcome)
            bar.console.print(f"{mark} {escape(Path(outcome.case_file).name)} ({outcome.seconds:.1f} s)")
            bar.advance(task)

        arguments = [(str(case), str(out_dir), str(ledger_path)) for case in cases]
        if client is not None:
            with client:
                _run_on_dask(client, arguments, record)
        else:
            _run_locally(workers, arguments, record)
    return BatchReport(str(manifest), str(out_dir), shown, workers, scheduler,
                       time.perf_counter() - start, [outcomes[i] for i in range(len(cases))], dashboard)


def _lost(case_file: str, error: BaseException) -> CaseOutcome:
    return CaseOutcome(case_file, False, 0.0, error=f"worker lost: {type(error).__name__}: {error}",
                       error_type=type(error).__name__, exit_code=1)


def _run_locally(workers: int, arguments: list[tuple[str, str, str]], record) -> None:
    # spawn, not fork: the parent may hold threads (the progress bar) and native library state.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_one_case, *args): index for index, args in enumerate(arguments)}
        for future in concurrent.futures.as_completed(futures):
            index = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # the worker process died (killed, out of memory)
                outcome = _lost(arguments[index][0], error)
            record(index, outcome)


def _connect(scheduler: str):
    """A Dask distributed client of the scheduler at ``scheduler`` (``tcp://HOST:PORT``)."""
    try:
        from distributed import Client
    except ImportError as error:
        raise AnatomodelError("--scheduler needs Dask distributed",
                              hint="pip install 'anatomodel[dask]'") from error
    try:
        return Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as error:
        raise AnatomodelError(f"cannot reach the Dask scheduler at {scheduler}: {error}",
                              hint="check the address (tcp://HOST:PORT) and that the scheduler runs") from error


def _dashboard(client) -> str | None:
    """The address of the scheduler's dashboard, or None when it serves none (bokeh missing)."""
    try:
        return client.dashboard_link
    except KeyError:
        return None


def _run_on_dask(client, arguments: list[tuple[str, str, str]], record) -> None:
    from distributed import as_completed

    batch = f"{os.getpid()}-{time.time_ns()}"  # task keys unique across batches on one cluster
    futures = {client.submit(run_one_case, *args, pure=False, key=f"anatomodel-case-{index}-{batch}"): index
               for index, args in enumerate(arguments)}
    for future in as_completed(futures):
        index = futures[future]
        try:
            outcome = future.result()
        except Exception as error:  # the worker died (KilledWorker) or the task was lost
            outcome = _lost(arguments[index][0], error)
        record(index, outcome)
