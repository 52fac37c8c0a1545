"""Many cases at once on a Dask distributed cluster: a LocalCluster by default, or a given scheduler.

Each case of a manifest runs through :func:`pipeline.case.run_case` in its own task; a failing
case is recorded with its error and exit code and does not stop the others. Every task writes to
the same ledger, whose per-encounter transactions keep the charges consistent with parallel
writers. Without a scheduler address the batch starts a :class:`distributed.LocalCluster` of
single-threaded worker processes on this machine (each with a memory limit) and stops it after.

A manifest is a CSV file (a ``case`` column, or case files in the first column) or a YAML file
(a list of case files, or a mapping with a ``cases`` list). Relative paths resolve against the
manifest's folder.
"""

from __future__ import annotations

import csv
import gc
import io
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.config import MAX_TEXT_CHARS, read_text, read_yaml, text_problem
from pipeline.errors import AnatomodelError, ConfigError, EnvironmentFault, HeldForReview, MemoryLimitExceeded
from pipeline.ledger import Ledger, resolve_ledger_path
from pipeline.report import Report

#: The memory limit of each local worker process unless told otherwise.
DEFAULT_MEMORY_LIMIT = "3GiB"
#: The least memory limit accepted for a local worker, in bytes: below it a case would be paused
#: or its worker restarted by Dask before it finishes (a synthetic phantom case peaked at 0.74 GiB
#: of resident memory in ``benchmarks/bench_batch.py``, a clinical CTA at 1.9 GiB; see docs/batch.md).
MIN_MEMORY_LIMIT = 1 << 30
#: Environment of each local worker process: one thread for every native thread pool a case uses
#: (ITK's filters, VTK's SMP back end; Dask sets OpenMP, MKL and OpenBLAS to one already) and for
#: the package's own helper threads and k-d tree queries (``pipeline.threads`` reads
#: ``OMP_NUM_THREADS``), so that N workers use N cores and do not compete for them.
SINGLE_THREADED_ENVIRONMENT = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "VTK_SMP_BACKEND_IN_USE": "Sequential",
                               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

#: A local worker that keeps more than this part of its memory limit resident after a case is
#: restarted before its next case: what the libraries of a large case keep (0.9 GiB after one on a
#: 400 x 512 x 512 series) would otherwise pause the worker for good (Dask pauses it at 80 % and
#: resumes it below 70 %) or push the next case over the limit.
RESTART_FRACTION = 0.5
#: Scheduler settings of the local cluster: a case whose worker dies (above its memory limit) is
#: not run again (Dask's default, 3, runs it up to 4 times, restarting a worker each time).
LOCAL_SCHEDULER_CONFIG = {"distributed.scheduler.allowed-failures": 0}

_CASE_COLUMNS = ("case", "case_file", "path")
#: Seconds between looks at the cluster while cases wait for a free worker thread.
_POLL_SECONDS = 1.0
#: Seconds to reach a given scheduler, and to wait for its answer to Dask's handshake.
_CONNECT_SECONDS = 20
_HANDSHAKE_SECONDS = 5.0
#: Seconds to wait for the nanny's report that a lost worker was restarted for its memory.
_MEMORY_EVENT_SECONDS = 3.0


@dataclass
class CaseOutcome(Report):
    """How one case of a batch ended, and what it cost the worker that ran it.

    Times are seconds; ``cpu_seconds`` is the worker process's CPU time (user + system, every
    thread: ``time.process_time``) during the case, ``queued_seconds`` the time from the
    batch's start, when every case is queued, to the start of the case (clocks of the client's
    and the worker's machine), ``peak_rss_mib`` the worker process's peak resident memory during
    the case in MiB (``VmHWM`` after resetting it at the start; None where ``/proc`` does not
    offer that), ``resident_after_mib`` its resident memory when the case ended. On a worker with several threads,
    CPU time and peak memory are shared by the cases it runs at the same time.
    """

    case_file: str
    ok: bool
    wall_seconds: float
    cpu_seconds: float = 0.0
    queued_seconds: float | None = None
    peak_rss_mib: float | None = None
    #: The worker process's resident memory in MiB when the case ended (``VmRSS``; None without ``/proc``).
    resident_after_mib: float | None = None
    worker: str | None = None  # the Dask worker's address (tcp://HOST:PORT)
    case_id: str | None = None
    models: list[str] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    exit_code: int = 0
    #: ``MODEL CODE`` of each hold that keeps a line of the case unbillable (done, but held).
    holds: list[str] = field(default_factory=list)


@dataclass
class BatchReport(Report):
    """The outcome of every case of a batch, in manifest order.

    ``seconds`` is the wall time from the first submission to the last outcome (the cluster's
    start, ``startup_seconds``, excluded); ``memory_limit`` the bytes per local worker, or on a
    given scheduler the smallest limit of its workers (None if one has none).
    """

    manifest: str
    out_dir: str
    ledger: str
    workers: int
    scheduler: str
    seconds: float
    outcomes: list[CaseOutcome]
    dashboard: str | None = None  # the Dask scheduler's dashboard (None: it serves none)
    memory_limit: int | None = None
    startup_seconds: float = 0.0
    local_cluster: bool = True

    @property
    def failed(self) -> list[CaseOutcome]:
        """The cases that failed, in manifest order.

        Returns
        -------
        list of CaseOutcome
        """
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def held(self) -> list[CaseOutcome]:
        """The cases that succeeded with at least one line held for review.

        Returns
        -------
        list of CaseOutcome
        """
        return [outcome for outcome in self.outcomes if outcome.ok and outcome.holds]

    @property
    def cases_per_minute(self) -> float:
        """Throughput: cases that ended (either way) per minute of ``seconds``.

        Returns
        -------
        float
            Cases per minute (0 for an empty or instantaneous batch).
        """
        return 60.0 * len(self.outcomes) / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """The exit code of the first failure (never 0); else 19 (:class:`HeldForReview`) if a
        case is held; else 0.

        Returns
        -------
        int
        """
        failure = next((outcome.exit_code or 1 for outcome in self.failed), 0)
        return failure or (HeldForReview.exit_code if self.held else 0)

    def table(self) -> Table:
        """A summary table for people: one row per case.

        Returns
        -------
        rich.table.Table
            Case file, case id, result, models, wall, CPU and queued seconds, peak MiB, worker,
            and the error or holds.
        """
        where = f"local cluster of {self.workers}" if self.local_cluster else self.scheduler
        table = Table(title=f"batch: {len(self.outcomes) - len(self.failed)} of {len(self.outcomes)} "
                            f"case(s) succeeded in {self.seconds:.1f} s ({self.cases_per_minute:.1f} cases/min, "
                            f"{escape(where)})",
                      caption=f"dashboard: {self.dashboard}" if self.dashboard else None)
        for column in ("case file", "case id", "result", "models", "wall s", "CPU s", "queued s", "peak MiB",
                       "worker", "error or holds"):
            table.add_column(column, overflow="fold",
                             justify="right" if column.endswith((" s", "MiB")) else "left")
        folder = Path(self.manifest).absolute().parent
        for outcome in self.outcomes:
            shown = Path(outcome.case_file)
            shown = shown.relative_to(folder) if shown.is_relative_to(folder) else shown
            table.add_row(escape(str(shown)), escape(outcome.case_id or ""), _result(outcome),
                          escape(" ".join(outcome.models)), f"{outcome.wall_seconds:.1f}",
                          f"{outcome.cpu_seconds:.1f}", _figure(outcome.queued_seconds, 1),
                          _figure(outcome.peak_rss_mib, 0), escape(outcome.worker or ""),
                          escape(outcome.error or ", ".join(outcome.holds)))
        return table


def _figure(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _result(outcome: CaseOutcome) -> str:
    if not outcome.ok:
        return "[red]failed[/]"
    return "[yellow]held[/]" if outcome.holds else "[green]ok[/]"


def read_manifest(manifest: str | os.PathLike) -> list[Path]:
    """The case files a manifest lists, as absolute paths, in order.

    Parameters
    ----------
    manifest : str or os.PathLike
        A ``.csv`` (a ``case``, ``case_file`` or ``path`` column, else the first column; ``#``
        comments) or ``.yaml``/``.yml`` file (a list, or a mapping with a ``cases`` list).

    Returns
    -------
    list of Path
        Absolute paths, relative entries resolved against the manifest's folder.

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


def parse_memory_limit(value: str | int) -> int:
    """The memory limit of one local worker, in bytes, from a size such as ``3GiB`` or ``4000MB``.

    Parameters
    ----------
    value : str or int
        A size Dask understands (``dask.utils.parse_bytes``: ``3GiB``, ``3.5 GB``, ``3221225472``),
        or bytes.

    Returns
    -------
    int
        Bytes, at least :data:`MIN_MEMORY_LIMIT` (1 GiB).

    Raises
    ------
    ConfigError
        The value is not a size, or is below 1 GiB (exit code 4); raised before any case runs.
    """
    from dask.utils import parse_bytes

    try:
        if isinstance(value, str) and not value.strip():
            raise ValueError("it is empty")  # parse_bytes reads "" as 0 bytes
        limit = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--memory-limit {value!r} is not a size: {error}",
                          hint="give bytes per worker such as 3GiB or 4000MB") from error
    if limit < MIN_MEMORY_LIMIT:
        raise ConfigError(f"--memory-limit {value!r} is {limit / 2**20:.0f} MiB per worker, too little for one case "
                          f"(at least {MIN_MEMORY_LIMIT / 2**30:.0f} GiB)",
                          hint="give 3GiB per worker, 4GiB for large studies; use fewer workers if memory is short")
    return limit


def run_one_case(case_file: str, out_dir: str, ledger: str, submitted_at: float | None = None) -> CaseOutcome:
    """Run one case and describe how it ended and what it cost, never raising (a worker's task).

    Parameters
    ----------
    case_file : str
        Absolute path of the case file.
    out_dir : str
        Absolute output root.
    ledger : str
        The ledger file or PostgreSQL URL.
    submitted_at : float, optional
        When the case was queued (the batch's start), seconds since the epoch (``time.time()``
        of the client); gives ``queued_seconds``.

    Returns
    -------
    CaseOutcome
        ``ok`` with the case id, models and holds, or the error, its class and exit code (and the
        case id if the case file gives one); always
        the wall, CPU and queued seconds, the peak resident MiB and the worker's address.
    """
    from pipeline.case import run_case

    started_at = time.time()
    measured = _reset_peak_memory()
    cpu, start = time.process_time(), time.perf_counter()
    try:
        result = run_case(_existing(case_file), out_dir, ledger=ledger)
        ended = dict(ok=True, case_id=_case_id(result), models=_model_ids(result),
                     holds=sorted({f"{hold.model_id} {hold.code}" for hold in getattr(result, "holds", None) or []}))
    except AnatomodelError as error:
        ended = dict(ok=False, case_id=_declared_case_id(case_file), error=str(error),
                     error_type=type(error).__name__, exit_code=error.exit_code)
    except Exception as error:  # a bug in one case must not stop the batch: report it whole
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        ended = dict(ok=False, case_id=_declared_case_id(case_file), error=f"internal error: {detail}",
                     error_type=type(error).__name__, exit_code=1)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    gc.collect()  # what the case left behind, so that the resident memory after it is what stays
    return CaseOutcome(case_file, wall_seconds=round(wall, 3), cpu_seconds=round(cpu, 3),
                       queued_seconds=None if submitted_at is None else round(started_at - submitted_at, 3),
                       peak_rss_mib=_status_mib("VmHWM") if measured else None,
                       resident_after_mib=_status_mib("VmRSS"), worker=_worker_address(), **ended)


def _existing(case_file: str) -> str:
    """``case_file``, if it is a file; else a :class:`ConfigError` naming it."""
    if not Path(case_file).is_file():
        raise ConfigError(f"case file {case_file} not found", hint="fix the path in the manifest")
    return case_file


def _declared_case_id(case_file: str) -> str | None:
    """The ``case_id`` a case file gives, if it can be read (None: missing, malformed, or none)."""
    try:
        data = read_yaml(case_file, "case file")
    except AnatomodelError:
        return None
    case_id = data.get("case_id") if isinstance(data, dict) else None
    return case_id if isinstance(case_id, str) and case_id.strip() else None


def _reset_peak_memory() -> bool:
    """Reset this process's peak resident memory (``VmHWM``); False where Linux's ``/proc`` lacks it."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def _status_mib(name: str) -> float | None:
    """A memory figure of this process from ``/proc/self/status`` in MiB: ``VmHWM``, the peak
    resident memory since the last reset, or ``VmRSS``, the resident memory now."""
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith(f"{name}:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return None


def _worker_address() -> str | None:
    """The address of the Dask worker running this task (None outside a worker)."""
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return None


def _case_id(result: object) -> str | None:
    case = getattr(result, "case", None)
    return getattr(result, "case_id", None) or getattr(case, "case_id", None)


def _model_ids(result: object) -> list[str]:
    models = getattr(result, "models", None) or []
    return [getattr(model, "model_id", None) or getattr(model, "id", None) or str(model) for model in models]


def run_batch(manifest: str | os.PathLike, out_dir: str | os.PathLike, *, workers: int = 2,
              scheduler: str | None = None, memory_limit: str | int = DEFAULT_MEMORY_LIMIT,
              ledger: str | os.PathLike | None = None, console: Console | None = None,
              progress: bool = True) -> BatchReport:
    """Run every case of a manifest on a Dask cluster, in parallel, and report how each ended.

    Without ``scheduler`` a :class:`distributed.LocalCluster` of ``workers`` single-threaded
    worker processes is started on this machine (on 127.0.0.1, with a dashboard on a free port;
    a case whose worker dies is not run again) and stopped afterwards; with it, the cases run on
    that cluster's workers. At most one case per worker thread is submitted at a time (the others
    wait here), so that a worker that dies takes no other case with it.

    Parameters
    ----------
    manifest : path
        CSV or YAML file listing case files (relative paths resolve against its folder).
    out_dir : path
        Output root; each case writes ``OUT/<case_id>/``.
    workers : int
        Local worker processes, one thread each (ignored with ``scheduler``: the cluster has its own).
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://HOST:PORT``); its workers must see
        ``out_dir``, the case files and the ledger at the same paths.
    memory_limit : str or int
        Memory limit of each local worker process, a size (``3GiB``) or bytes; at least 1 GiB.
        Dask pauses a worker at 80 % of it and restarts it at 95 %: its case is reported as out
        of memory (:class:`~pipeline.errors.MemoryLimitExceeded`, exit code 22) and not run
        again, and the other cases run on. A worker holds one case at a time; one that keeps
        more than half its limit after a case is restarted before the next. Checked with a
        scheduler too, but its workers keep their own limits (the report gives the smallest).
    ledger : path, optional
        The ledger every case writes to (default: ``$ANATOMODEL_LEDGER`` or the per-user one).
    console : rich.console.Console, optional
        Where the dashboard address and the progress bar go (default: stderr).
    progress : bool
        Show a progress bar.

    Returns
    -------
    BatchReport
        One :class:`CaseOutcome` per case, in manifest order, with its wall, CPU and queued
        seconds, peak resident MiB and worker; the dashboard address; ``exit_code`` is non-zero
        if any case failed.

    Raises
    ------
    ConfigError
        ``workers`` below 1, an empty ``scheduler``, a malformed or too small ``memory_limit``
        (or, for the local cluster, one above this machine's memory), or a bad manifest (exit
        code 4); refused before any case runs.
    AnatomodelError
        The scheduler cannot be reached, or its address answers but does not speak Dask's
        protocol (an HTTP port such as the dashboard's; exit code 3).
    LedgerError
        The ledger cannot be opened (exit code 13).
    """
    from dask.utils import format_bytes

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if scheduler is not None and not scheduler.strip():
        raise ConfigError("--scheduler is empty", hint="give tcp://HOST:PORT, or leave it out for a local cluster")
    limit = parse_memory_limit(memory_limit)
    console = console or Console(stderr=True)
    if scheduler is None:
        _check_machine_memory(limit, workers, console)
    cases = read_manifest(manifest)
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = resolve_ledger_path(ledger)  # a file (made absolute for the workers) or a PostgreSQL URL
    ledger_path = ledger_path.absolute() if isinstance(ledger_path, Path) else ledger_path
    with Ledger(ledger_path) as opened:  # create and migrate it once, before the workers start
        shown = str(opened.path)  # without a URL's password
    arguments = [(str(case), str(out_dir), str(ledger_path)) for case in cases]
    started = time.perf_counter()
    with _cluster(scheduler, workers, limit) as client:
        startup = time.perf_counter() - started
        dashboard = _dashboard(client)
        if dashboard:
            console.print(f"Dask dashboard: {dashboard}")
        address = client.scheduler.address
        exceeded = (f"--memory-limit {memory_limit if isinstance(memory_limit, str) else format_bytes(limit)}"
                    if scheduler is None else "its memory limit")
        if scheduler is not None:  # the cluster's own workers and limits
            workers, limit = _cluster_workers(client)
        start = time.perf_counter()
        outcomes: dict[int, CaseOutcome] = {}
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task("cases", total=len(cases))
            restart_above = RESTART_FRACTION * limit / 2**20 if scheduler is None else None
            for index, outcome in _run_on_dask(client, arguments, exceeded, restart_above):
                outcomes[index] = outcome
                if progress:
                    bar.console.print(f"{_result(outcome)} {escape(Path(outcome.case_file).name)} "
                                      f"({outcome.wall_seconds:.1f} s)")
                bar.advance(task)
        seconds = time.perf_counter() - start
    return BatchReport(str(manifest), str(out_dir), shown, workers,
                       address, seconds, [outcomes[i] for i in range(len(cases))], dashboard,
                       limit, round(startup, 3), scheduler is None)


def _check_machine_memory(limit: int, workers: int, console: Console) -> None:
    """Refuse a local worker's ``limit`` above the memory of this machine (Dask would ignore it
    and use the machine's); warn when ``workers`` such limits exceed it together."""
    from dask.utils import format_bytes
    from distributed.system import MEMORY_LIMIT  # physical memory, or a cgroup's or rlimit's if smaller

    if limit > MEMORY_LIMIT:
        raise ConfigError(f"--memory-limit {format_bytes(limit)} per worker is more than this machine's memory "
                          f"({format_bytes(MEMORY_LIMIT)})",
                          hint="give at most the machine's memory divided by --workers")
    if limit * workers > MEMORY_LIMIT:
        console.print(f"[yellow]warning:[/] {workers} workers of {format_bytes(limit)} may use more than this "
                      f"machine's {format_bytes(MEMORY_LIMIT)}; the system may kill a worker before Dask restarts it")


@contextmanager
def _cluster(scheduler: str | None, workers: int, memory_limit: int) -> Iterator:
    """A client of the given scheduler, or of a LocalCluster started (and stopped) here."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = _connect(scheduler)
        with client:
            yield client
        return
    try:
        with dask.config.set(LOCAL_SCHEDULER_CONFIG):  # read as the scheduler starts
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   memory_limit=memory_limit, dashboard_address="127.0.0.1:0",
                                   env=SINGLE_THREADED_ENVIRONMENT)
    except OSError as error:
        raise EnvironmentFault(f"cannot start a local Dask cluster of {workers} worker(s): {error}",
                               hint="check free memory and that 127.0.0.1 accepts connections") from error
    with cluster, Client(cluster) as client:
        yield client


def _cluster_workers(client) -> tuple[int, int | None]:
    """How many workers the scheduler knows now, and the smallest memory limit among them in
    bytes (None if one has no limit)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    limits = [info.get("memory_limit") or 0 for info in workers.values()]
    return len(workers), (min(limits) if limits and all(limits) else None)


def _lost(client, case_file: str, error: BaseException, exceeded: str, since: float) -> CaseOutcome:
    """The outcome of a case whose task ended without a result: its worker was restarted for its
    memory (:class:`MemoryLimitExceeded`), or died or was lost otherwise (:class:`EnvironmentFault`)."""
    from dask.utils import format_bytes

    worker = getattr(getattr(error, "last_worker", None), "address", None)  # a KilledWorker's
    rss = _memory_restart(client, worker, since) if worker else None
    if rss is not None:
        failure: AnatomodelError = MemoryLimitExceeded(
            f"ran out of memory: the worker exceeded {exceeded} ({format_bytes(rss)} resident) and was restarted",
            hint="give more memory or fewer workers")
    else:
        failure = EnvironmentFault(f"worker lost: {type(error).__name__}: {error}",
                                   hint="the worker process died or its machine went away; run the case again")
    return CaseOutcome(case_file, False, 0.0, worker=worker, case_id=_declared_case_id(case_file), error=str(failure),
                       error_type=type(failure).__name__, exit_code=failure.exit_code)


def _memory_restart(client, worker: str, since: float) -> int | None:
    """The resident bytes at which ``worker``'s nanny restarted it for its memory since ``since``
    (the scheduler's ``worker-restart-memory`` events), or None if it did not.

    The nanny sends the event as it stops the worker, so it may reach the scheduler just after
    the scheduler saw the worker go: it is looked for during :data:`_MEMORY_EVENT_SECONDS`.
    """
    deadline = time.monotonic() + _MEMORY_EVENT_SECONDS
    while True:
        for stamp, event in client.get_events("worker-restart-memory"):
            if stamp >= since and isinstance(event, dict) and event.get("worker") == worker:
                return int(event.get("rss") or 0)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _connect(scheduler: str):
    """A Dask distributed client of the scheduler at ``scheduler`` (``tcp://HOST:PORT``), once
    the address has answered Dask's handshake (:func:`_handshake_problem`)."""
    from distributed import Client

    problem = _handshake_problem(scheduler)
    if problem is not None:
        raise AnatomodelError(f"cannot use the Dask scheduler at {scheduler}: the address answers but does not speak "
                              f"the Dask protocol (is it the dashboard port?): {problem}",
                              hint="give the scheduler's own port (tcp://HOST:8786 by default), not its dashboard's")
    try:
        return Client(scheduler, timeout=f"{_CONNECT_SECONDS}s")
    except (OSError, TimeoutError, ValueError) as error:
        raise AnatomodelError(f"cannot reach the Dask scheduler at {scheduler}: {error}",
                              hint="check the address (tcp://HOST:PORT) and that the scheduler runs") from error


def _handshake_problem(scheduler: str) -> str | None:
    """Why the server at a ``tcp://`` address, reached, does not complete Dask's handshake within
    :data:`_HANDSHAKE_SECONDS`; None if it does, or is not reached (the client says why), or the
    address is not plain TCP.

    Dask's client would wait for ever on a server that says nothing (an HTTP server waits for a
    request line), and reads an HTTP answer as frame sizes (``MemoryError: Unable to allocate
    3.07 EiB``): the handshake is tried here first, bounded, on its own event loop in a thread.
    """
    import asyncio
    import socket
    import threading

    from distributed.comm import connect, parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        protocol, location = parse_address(scheduler)
        if protocol != "tcp":
            return None
        with socket.create_connection(parse_host_port(location), timeout=_HANDSHAKE_SECONDS):
            pass
    except (OSError, ValueError, TypeError):
        return None  # not reached, or not an address: the client's own error says which

    async def shake() -> None:
        comm = await asyncio.wait_for(connect(scheduler, timeout=_HANDSHAKE_SECONDS), _HANDSHAKE_SECONDS)
        await comm.close()

    problems: list[str] = []

    def run() -> None:
        try:
            asyncio.run(shake())
        except (asyncio.TimeoutError, TimeoutError):
            problems.append(f"no Dask handshake within {_HANDSHAKE_SECONDS:.0f} s")
        except MemoryError:  # an HTTP answer read as frame sizes
            problems.append("its answer is not a Dask message")
        except Exception as error:  # closed, garbled
            problems.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=run, name="anatomodel-dask-handshake", daemon=True)
    thread.start()
    thread.join()
    return problems[0] if problems else None


def _dashboard(client) -> str | None:
    """The address of the scheduler's dashboard, or None when it serves none."""
    try:
        return client.dashboard_link
    except KeyError:
        return None


def _run_on_dask(client, arguments: list[tuple[str, str, str]], exceeded: str,
                 restart_above: float | None) -> Iterator[tuple[int, CaseOutcome]]:
    """Run every case, at most one per worker thread at a time, and yield ``(index, outcome)`` as
    each ends (in the order they end).

    Cases wait on the client until a worker thread is free, not in a worker's queue: a worker
    that dies (above its memory limit) takes only the case it was running with it. ``exceeded``
    names the limit in the message of a case whose worker was restarted for its memory; a worker
    that kept more than ``restart_above`` MiB resident after a case is restarted before it gets
    another (None: never).
    """
    from distributed import wait

    batch = f"{os.getpid()}-{time.time_ns()}"  # task keys unique across batches on one cluster
    started = time.time()  # when every case was queued: gives queued_seconds and bounds the memory events
    waiting = list(enumerate(arguments))[::-1]  # popped from the end: manifest order
    running: dict = {}  # future: index
    while waiting or running:
        free = sum(client.nthreads().values()) - len(running)  # the workers the scheduler has now
        while waiting and free > 0:
            index, args = waiting.pop()
            running[client.submit(run_one_case, *args, started, pure=False,
                                  key=f"anatomodel-case-{index}-{batch}")] = index
            free -= 1
        if not running:  # no worker yet (or all restarting): wait for one
            time.sleep(_POLL_SECONDS)
            continue
        try:
            done = wait(list(running), timeout=_POLL_SECONDS, return_when="FIRST_COMPLETED").done
        except TimeoutError:  # none ended: look again for workers that joined
            continue
        for future in done:
            index = running.pop(future)
            try:
                outcome = future.result()
            except Exception as error:  # the worker died (KilledWorker) or the task was lost
                outcome = _lost(client, arguments[index][0], error, exceeded, started)
            future.release()
            if restart_above is not None and outcome.worker and (outcome.resident_after_mib or 0) > restart_above:
                client.restart_workers([outcome.worker], raise_for_error=False)
            yield index, outcome
