"""The case ledger: one SQLite file that records cases, encounters, model versions, runs,
charges and an append-only audit log, shared safely by concurrent processes.

Publishing a model follows a protocol that keeps the ledger and the disk consistent whatever
instant a process is killed at:

1. :meth:`Run.stage` records a *pending attempt* naming a staging folder beside the model folder;
   :meth:`Run.charge` decides the model's charge line in one ``BEGIN IMMEDIATE`` transaction
   (:func:`pipeline.coding.next_charge` over the encounter's lines, or the model's existing line
   on a re-run) and reserves it for the model id. (:meth:`Run.reserve` does both.)
2. The caller writes the complete packet (with that charge line) into the staging folder.
3. :meth:`Run.publish` -- check the packet against its ``SHA256SUMS``, flush it to disk, record
   the checksum of ``SHA256SUMS`` on the attempt (transaction), then, in one ``BEGIN IMMEDIATE``
   transaction, rename the staging folder into place and commit the model version and the charge.

A pending attempt whose process has died is *reclaimed* by the next writer: if its folder was
already renamed into place (its ``SHA256SUMS`` is the one recorded) the commit is completed,
otherwise the staging folder is deleted and the attempt marked abandoned. A reserved charge line
stays with its model id, so repeating the run picks it up (or it is voided): no charge exists
without a packet. The code decided at reservation is *provisional*: a committed charge is billed
only once its model is delivered and no hold is open, and the encounter's codes are numbered in
the order its models became billable (:mod:`pipeline.ledger.lifecycle`), so a dead run blocks
nothing. The same ledger runs on SQLite (a file) or PostgreSQL (a URL, :mod:`pipeline.ledger.pg`);
every row is under a hash chain (:mod:`pipeline.ledger.chain`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline import coding
from pipeline.config import text_problem
from pipeline.errors import CodingError, LedgerError
from pipeline.files import SUMS_NAME, read_sums, sha256_file
from pipeline.holds import Hold
from pipeline.ledger import chain, folders, lifecycle, pg
from pipeline.ledger.events import LifecycleLedger
from pipeline.ledger.process import ProcessIdentity, operator_name
from pipeline.ledger.schema import migrate
from pipeline.report import Report, software_versions, to_jsonable

LEDGER_VARIABLE = "ANATOMODEL_LEDGER"
#: Charge statuses that count as lines of the encounter when the next line is decided.
ACTIVE = ("reserved", "committed", "discontinued")
#: Charge statuses whose model has a packet on disk (billable once delivered and not held).
BILLED = ("committed", "discontinued")
#: Fields of a billed line a re-run corrects (until the line is exported).
_CORRECTABLE = ("icd10", "icd10_pointers", "modifiers", "modifier_reasons", "ordering_provider", "rendering_provider",
                "payer", "kind", "medical_necessity")


def default_ledger_path() -> Path:
    """The per-user ledger: ``$XDG_DATA_HOME/anatomodel/ledger.sqlite3`` (or ``~/.local/share``).

    Returns
    -------
    Path
        The default ledger file (not created here); ``XDG_DATA_HOME`` wins when set and non-empty.
    """
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "anatomodel" / "ledger.sqlite3"


def resolve_ledger_path(path: str | os.PathLike | None = None) -> Path | str:
    """``path`` if given, else ``$ANATOMODEL_LEDGER``, else :func:`default_ledger_path`.

    A PostgreSQL connection URL (``postgresql://...``) is returned as it is (a str).

    Parameters
    ----------
    path : str or os.PathLike, optional
        The ledger given by the caller (``--ledger``): a file path (``~`` is expanded) or a
        PostgreSQL URL. None or empty falls back to ``$ANATOMODEL_LEDGER``, then the default.

    Returns
    -------
    Path or str
        The ledger file as a :class:`~pathlib.Path`, or the normalised PostgreSQL URL as a str
        (:func:`pipeline.ledger.pg.normalised`).
    """
    for given in (path, os.environ.get(LEDGER_VARIABLE)):
        if given:
            return pg.normalised(given) if pg.is_url(given) else Path(given).expanduser()
    return default_ledger_path()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _switch_to_wal(db: sqlite3.Connection, timeout: float) -> str:
    """Put the database in WAL mode; returns the journal mode it ends in.

    When several processes open a new ledger at the same moment, SQLite can refuse the switch
    with "database is locked" at once instead of waiting on the busy timeout (seen about once in
    twelve three-process starts), so the switch is retried until ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _json(value: Any) -> str:
    return json.dumps(to_jsonable(value), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class LedgerEncounter:
    """A patient and a date of service: the unit within which charge lines are numbered."""

    id: int
    patient_id: str
    date_of_service: str


@dataclasses.dataclass
class Reservation:
    """A pending attempt to publish one model: where to build its packet, and its charge line
    (None until :meth:`Run.charge` decides it)."""

    attempt_id: int
    case_id: str
    model_id: str
    charge_line: Any
    new_charge: bool
    folder: Path
    staging: Path


@dataclasses.dataclass
class PublishedModel(Report):
    """A model version committed to the ledger, with its charge line."""

    case_id: str
    model_id: str
    version: int
    folder: Path
    charge_status: str
    charge_line: Any
    sums_sha256: str
    mesh_sha256: str | None
    holds: list[Hold] = dataclasses.field(default_factory=list)
    #: distribution -> version of everything that shaped this model (python, anatomodel and its
    #: mesh report's libraries)
    software: dict[str, str] = dataclasses.field(default_factory=dict)


class Ledger(LifecycleLedger):
    """The case ledger in a SQLite file (WAL mode, safe for concurrent processes).

    Parameters
    ----------
    path : path or str, optional
        The database file, or a PostgreSQL URL (``postgresql://user@host:port/db``); see
        :func:`resolve_ledger_path` for the default. Created (a file with its folder) on first
        use and migrated to the current schema. ``path`` is the location as shown (a URL
        without its password), ``location`` the one to connect to.
    timeout : float
        Seconds to wait for another process's write transaction before giving up.
    create : bool
        Whether a SQLite ledger that does not exist yet is made (with its folders); False for
        the commands that record on a case already run, so a mistyped path is an error.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 120.0, create: bool = True):
        location = resolve_ledger_path(path)
        self.identity = ProcessIdentity.current()
        if pg.is_url(location):
            self._open_postgresql(str(location), timeout)
            return
        self.backend, self.path, self.location = "sqlite", location, location
        if not create and not self.path.is_file():
            raise LedgerError(f"there is no ledger at {self.path}",
                              hint="give the ledger the case was run with (--ledger or $ANATOMODEL_LEDGER)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise LedgerError(f"cannot open the ledger {self.path}: {error}",
                              hint="check the path given by --ledger or $ANATOMODEL_LEDGER") from error
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = _switch_to_wal(self._db, timeout)
            if mode.lower() != "wal":
                self._db.close()
                raise LedgerError(f"the ledger {self.path} cannot use WAL mode (got {mode!r})",
                                  hint="keep the ledger on a local disk, not a network share")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            chain.register(self._db)
            migrate(self._db)
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise LedgerError(f"{self.path} is not a usable ledger: {error}",
                              hint="give --ledger the ledger file, or a new path to start one") from error

    def _open_postgresql(self, url: str, timeout: float) -> None:
        """Connect to the ledger on a PostgreSQL server and bring its schema up to date."""
        import psycopg

        self.backend, self.path, self.location = "postgresql", pg.redacted(url), url
        try:
            self._db = pg.PgConnection(url, timeout)
        except psycopg.Error as error:
            raise LedgerError(f"cannot connect to the ledger {self.path}: {str(error).strip()}",
                              hint="check the URL given by --ledger or $ANATOMODEL_LEDGER and that the "
                                   "server is running") from error
        try:
            pg.migrate(self._db)
        except psycopg.Error as error:
            self._db.close()
            raise LedgerError(f"{self.path} is not a usable ledger: {str(error).strip()}") from error

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the database's write lock from its first statement."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except pg.database_errors() as error:
            raise LedgerError(f"the ledger {self.path} stayed locked: {error}",
                              hint="another process holds it; try again") from error
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement in it sees the same snapshot."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        finally:
            self._db.execute("COMMIT")

    def _audit(self, action: str, case_id: str | None = None, model_id: str | None = None,
               operator: str | None = None, **detail: Any) -> None:
        # What people type (who, why); a failed run's error text is stored as it came, never refused
        _refuse_control_text(operator=operator, **{key: detail[key] for key in ("reason", "note")
                                                   if isinstance(detail.get(key), str)})
        self._db.execute(
            "INSERT INTO audit_log (at, operator, host, pid, action, case_id, model_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_now(), operator or operator_name(), self.identity.host, self.identity.pid, action,
             case_id, model_id, _json(detail)),
        )

    # -- runs -------------------------------------------------------------------------------
    def start_run(self, *, case_id: str, patient_id: str, date_of_service: dt.date | str,
                  parameters: dict | None = None, operator: str | None = None,
                  correction: str | None = None) -> Run:
        """Record the start of a run of a case (creating its case and encounter if new).

        A case recorded for another encounter is refused, unless every charge of it is void and
        ``correction`` gives the reason: then the case moves to the new encounter (audited).

        Parameters
        ----------
        case_id : str
            The case's id (from the case file); required, non-empty.
        patient_id : str
            The patient's id, which with ``date_of_service`` names the encounter; required, non-empty.
        date_of_service : datetime.date or str
            The date of service; a str is stored as given (ISO ``YYYY-MM-DD`` expected).
        parameters : dict, optional
            The run's parameters, stored as JSON on the run record.
        operator : str, optional
            Who runs it; default :func:`pipeline.ledger.process.operator_name`. No control characters.
        correction : str, optional
            The reason for moving a case to another encounter (``--correct-encounter``); needed only then.

        Returns
        -------
        Run
            The started run (status ``running``), to be used as a context manager.

        Raises
        ------
        LedgerError
            If ``case_id`` or ``patient_id`` is empty, if the case is recorded for another encounter
            and has a charge not void or no ``correction`` is given, if the operator or correction has
            control characters, or if the ledger stays locked (exit code 13).
        """
        if not case_id or not patient_id:
            raise LedgerError("a run needs a case id and a patient id")
        day = date_of_service.isoformat() if isinstance(date_of_service, dt.date) else str(date_of_service)
        operator = operator or operator_name()
        with self._write() as db:
            self._reclaim_dead()
            db.execute("INSERT OR IGNORE INTO encounters (patient_id, date_of_service, created_at) "
                       "VALUES (?, ?, ?)", (patient_id, day, _now()))
            encounter = db.execute("SELECT id FROM encounters WHERE patient_id = ? AND date_of_service = ?",
                                   (patient_id, day)).fetchone()["id"]
            case = db.execute("SELECT id, encounter_id FROM cases WHERE case_id = ?", (case_id,)).fetchone()
            if case is None:
                case_ref = db.execute("INSERT INTO cases (case_id, encounter_id, created_at) VALUES (?, ?, ?)",
                                      (case_id, encounter, _now())).lastrowid
            elif case["encounter_id"] != encounter:
                live = db.execute("SELECT COUNT(*) FROM current_charges WHERE case_ref = ? AND status != 'void'",
                                  (case["id"],)).fetchone()[0]
                if live or not correction:
                    raise LedgerError(
                        f"case {case_id!r} is recorded in the ledger for another patient or date of service",
                        hint="to correct the case's patient or date, void its charges with a reason "
                             "(`anatomodel ledger void`) and re-run with --correct-encounter REASON; "
                             "otherwise give this case its own case_id")
                db.execute("UPDATE cases SET encounter_id = ? WHERE id = ?", (encounter, case["id"]))
                for charge in db.execute("SELECT * FROM current_charges WHERE case_ref = ? ORDER BY seq",
                                         (case["id"],)).fetchall():  # re-decided by this run
                    self._revise(charge, operator, f"case moved to another encounter: {correction}",
                                 encounter_id=encounter, seq=self._next_seq(encounter), status="reserved")
                self._audit("case.encounter_corrected", case_id, operator=operator, reason=correction,
                            previous_encounter=case["encounter_id"], encounter=encounter)
                case_ref = case["id"]
            else:
                case_ref = case["id"]
            me = self.identity
            run_id = db.execute(
                "INSERT INTO runs (case_ref, status, parameters, software, operator, host, pid, pid_start, "
                "started_at) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (case_ref, _json(parameters or {}), _json(software_versions()), operator, me.host,
                 me.pid, me.start, _now())).lastrowid
            self._audit("run.started", case_id, operator=operator, run=run_id)
        return Run(self, run_id, case_ref, case_id, LedgerEncounter(encounter, patient_id, day), operator)

    # -- charges ----------------------------------------------------------------------------
    def _charge(self, case_ref: int, model_id: str) -> sqlite3.Row | None:
        """The model's charge as it stands (its newest revision), or None."""
        return self._db.execute("SELECT * FROM current_charges WHERE case_ref = ? AND model_id = ?",
                                (case_ref, model_id)).fetchone()

    def _next_seq(self, encounter_id: int) -> int:
        """The next place in an encounter's order of lines (after every line it ever had)."""
        return self._db.execute(
            "SELECT COALESCE(MAX(s.seq), 0) + 1 FROM (SELECT seq FROM charges WHERE encounter_id = ? "
            "UNION ALL SELECT seq FROM charge_revisions WHERE encounter_id = ?) s",
            (encounter_id, encounter_id)).fetchone()[0]

    def _revise(self, charge: sqlite3.Row, operator: str | None, reason: str, **changes: Any) -> None:
        """Within a write transaction: a new revision of ``charge`` (a ``current_charges`` row).

        ``changes`` are the columns that differ from the current revision (``encounter_id``,
        ``seq``, ``cpt``, ``line`` and ``billable`` as JSON text, ``status``); the revision
        supersedes the current one, with ``reason``. The rows of a charge are never changed.
        """
        values = {name: charge[name] for name in ("encounter_id", "seq", "cpt", "line", "billable", "status")}
        values.update(changes)
        self._db.execute(
            "INSERT INTO charge_revisions (charge_id, revision, supersedes, encounter_id, seq, cpt, line, billable, "
            "status, reason, operator, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (charge["id"], charge["revision"] + 1, charge["revision_id"], values["encounter_id"], values["seq"],
             values["cpt"], values["line"], values["billable"], values["status"], reason,
             operator or operator_name(), _now()))

    def _lines(self, encounter_id: int, statuses: Sequence[str]) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(statuses))
        return self._db.execute(
            f"SELECT ch.*, cs.case_id FROM current_charges ch JOIN cases cs ON cs.id = ch.case_ref "
            f"WHERE ch.encounter_id = ? AND ch.status IN ({marks}) ORDER BY ch.seq",
            (encounter_id, *statuses)).fetchall()

    def void(self, case_id: str, model_id: str, *, reason: str, discontinued: bool = False,
             operator: str | None = None) -> Any:
        """Void a model's charge, or mark it discontinued (modifier 53); return the new line.

        Parameters
        ----------
        reason : str
            Why; required, kept on the charge and in the audit log.
        discontinued : bool
            The model was started but discontinued: its line stays billed with modifier 53.
            Otherwise the line is voided (entered in error) and no longer billed.

        case_id : str
            The case whose model's charge is changed.
        model_id : str
            The model's id in the case.
        operator : str, optional
            Who does it; default :func:`pipeline.ledger.process.operator_name`. No control characters.

        Returns
        -------
        pipeline.coding.ChargeLine
            The charge line as it now stands (with modifier 53 and its reason when discontinued).

        Raises
        ------
        LedgerError
            If ``reason`` is empty, the case or its model's charge is not in the ledger, the charge is
            already void or discontinued, it was exported for billing, or ``discontinued`` is asked
            for a charge without a packet (exit code 13).
        """
        if not reason or not reason.strip():
            raise LedgerError(f"voiding or discontinuing {case_id}/{model_id} needs a reason",
                              hint="give --reason 'what happened and why'")
        with self._write():
            case = self._case_row(case_id)
            charge = self._charge(case["id"], model_id)
            if charge is None:
                raise LedgerError(f"no charge for model {model_id!r} of case {case_id!r} in {self.path}")
            if charge["status"] in ("void", "discontinued"):
                raise LedgerError(f"the charge of {case_id}/{model_id} is already {charge['status']}")
            line = _line(charge["line"])
            if self.is_exported(case["id"], model_id):
                raise LedgerError(
                    f"the charge of {case_id}/{model_id} was exported for billing: changing it here would "
                    "leave the submitted claim unexplained",
                    hint="correct the claim with the payer first; the ledger keeps the exported line")
            if discontinued:
                if charge["status"] != "committed":
                    raise LedgerError(
                        f"{case_id}/{model_id} has no packet yet, so it cannot be reported as "
                        "discontinued (modifier 53)", hint="void the reservation instead")
                line = _discontinued(line, reason.strip())
                status = "discontinued"
            else:
                status = "void"
            self._revise(charge, operator, reason.strip(), status=status, line=_json(line))
            self._audit(f"charge.{status}", case_id, model_id, operator, reason=reason.strip(),
                        cpt=charge["cpt"], previous_status=charge["status"])
        return line

    def unvoid(self, case_id: str, model_id: str, *, reason: str, operator: str | None = None) -> Any:
        """Undo a void: the model's charge counts again (committed if it has a packet, else reserved).

        Parameters
        ----------
        case_id : str
            The case whose model's charge is restored.
        model_id : str
            The model's id in the case.
        reason : str
            Why the charge is right after all; required, kept on the charge and in the audit log.
        operator : str, optional
            Who does it; default :func:`pipeline.ledger.process.operator_name`. No control characters.

        Returns
        -------
        pipeline.coding.ChargeLine
            The restored charge line (unchanged from before the void).

        Raises
        ------
        LedgerError
            If ``reason`` is empty, the case is not in the ledger or its model's charge is not void
            (exit code 13).
        """
        if not reason or not reason.strip():
            raise LedgerError(f"undoing the void of {case_id}/{model_id} needs a reason",
                              hint="give --reason 'why the charge is right after all'")
        with self._write():
            case = self._case_row(case_id)
            charge = self._charge(case["id"], model_id)
            if charge is None or charge["status"] != "void":
                raise LedgerError(f"the charge of {case_id}/{model_id} is not void"
                                  + ("" if charge is None else f" (it is {charge['status']})"))
            status = "committed" if self._current_model(case["id"], model_id) is not None else "reserved"
            self._revise(charge, operator, reason.strip(), status=status)
            self._audit("charge.unvoided", case_id, model_id, operator, reason=reason.strip(), status=status)
        return _line(charge["line"])

    def check_rerun(self, case_id: str, model_ids: Sequence[str]) -> None:
        """Refuse a run of a case whose models' charges were exported (before the run does any work).

        A re-run publishes a new version of each model, back at ``prepared``: an exported (submitted)
        line would leave the encounter's charges although its claim went out. :meth:`Run.charge`
        refuses it too, in its transaction; this says so before the stages run.

        Parameters
        ----------
        case_id : str
            The case to run; a case not in the ledger yet passes.
        model_ids : sequence of str
            The models the run would publish.

        Raises
        ------
        LedgerError
            Naming the exported models and what to do instead (exit code 13).
        """
        case = self._db.execute("SELECT id FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        exported = [] if case is None else [model for model in model_ids if self.is_exported(case["id"], model)]
        if exported:
            raise _exported_rerun(case_id, exported, {})

    def _duplicate_holds(self, case_ref: int, model_id: str, mesh_sha256: str | None) -> list[Hold]:
        """A hold when another model whose charge is not void has the same mesh hash."""
        if not mesh_sha256:
            return []
        other = self._db.execute(
            "SELECT cs.case_id, m.model_id FROM models m JOIN cases cs ON cs.id = m.case_ref JOIN current_charges ch "
            "ON ch.case_ref = m.case_ref AND ch.model_id = m.model_id WHERE m.mesh_sha256 = ? AND "
            "m.status IN ('current', 'superseded') AND ch.status != 'void' AND NOT (m.case_ref = ? AND "
            "m.model_id = ?) AND ch.id < (SELECT id FROM charges WHERE case_ref = ? AND model_id = ?) LIMIT 1",
            (mesh_sha256, case_ref, model_id, case_ref, model_id)).fetchone()
        if other is None:
            return []
        return [Hold(lifecycle.HOLD_DUPLICATE_MESH,
                     f"the mesh geometry is identical to model {other['model_id']} of case {other['case_id']}, "
                     "already charged: a reprint is not an individually prepared model; release it only if "
                     "this is a separately prepared model", "ledger", model_id)]

    # -- reading ----------------------------------------------------------------------------
    def _case_row(self, case_id: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            raise LedgerError(f"case {case_id!r} is not in the ledger {self.path}",
                              hint="`anatomodel ledger list` shows the recorded cases")
        return row

    def list_cases(self) -> list[dict[str, Any]]:
        """One summary per case: encounter, date, models, current versions and charge codes.

        Returns
        -------
        list of dict
            One dict per case, ordered by case id, with keys ``case_id``, ``encounter_id``,
            ``date_of_service`` (ISO date text), ``models`` (number of current versions), ``charges``
            (``MODEL CPT (basis)`` per line in line order, ``; `` separated, or None: the code as
            billed, exported or provisional, :data:`pipeline.ledger.lifecycle.CODE_BASIS`) and
            ``last_run`` (ISO UTC time of the last run's start, or None).
        """
        with self._read():
            rows = self._db.execute(
                "SELECT cs.id, cs.case_id, cs.encounter_id, e.date_of_service, "
                " (SELECT COUNT(*) FROM models m WHERE m.case_ref = cs.id AND m.status = 'current') AS models, "
                " (SELECT MAX(started_at) FROM runs r WHERE r.case_ref = cs.id) AS last_run "
                "FROM cases cs JOIN encounters e ON e.id = cs.encounter_id ORDER BY cs.case_id").fetchall()
            billed = {encounter: self.billing(encounter).by_model() for encounter in {r["encounter_id"] for r in rows}}
            cases = []
            for row in rows:
                charges = self._db.execute("SELECT model_id, cpt FROM current_charges WHERE case_ref = ? ORDER BY seq",
                                           (row["id"],)).fetchall()
                shown = [_shown_code(billed[row["encounter_id"]].get((row["case_id"], c["model_id"])), c["cpt"])
                         for c in charges]
                cases.append({**{k: row[k] for k in ("case_id", "encounter_id", "date_of_service", "models")},
                              "charges": "; ".join(f"{c['model_id']} {cpt} ({basis})" for c, (cpt, basis)
                                                   in zip(charges, shown)) or None,
                              "last_run": row["last_run"]})
        return cases

    def show(self, case_id: str) -> dict[str, Any]:
        """Everything recorded about a case: encounter, models, charges, runs and audit entries.

        Parameters
        ----------
        case_id : str
            The case to show.

        Returns
        -------
        dict
            Keys ``case_id``, ``encounter`` (``id``, ``date_of_service``), ``models`` (every version
            and attempt), ``charges`` (current state; ``cpt`` and ``line`` as billed, exported or
            provisional, said by ``cpt_basis``, :data:`pipeline.ledger.lifecycle.CODE_BASIS`; the code
            reserved at the run is in ``charge_revisions``), ``code_rule``, ``charge_revisions``, ``runs``
            (``parameters``, ``software`` and ``timings`` decoded; timings in s), ``audit`` (``detail``
            decoded) and ``lifecycle`` (:meth:`model_state` of each current model). Times are ISO UTC.

        Raises
        ------
        LedgerError
            If the case is not in the ledger (exit code 13).
        """
        with self._read():
            case = self._case_row(case_id)
            encounter = self._db.execute("SELECT * FROM encounters WHERE id = ?", (case["encounter_id"],)).fetchone()
            models = self._db.execute(
                "SELECT model_id, version, status, mesh_sha256, sums_sha256, folder, run_id, created_at, "
                "committed_at, outcome FROM models WHERE case_ref = ? ORDER BY model_id, id", (case["id"],)).fetchall()
            charges = self._db.execute(
                "SELECT model_id, seq, cpt, status, reason, line, revision, reserved_at, committed_at "
                "FROM current_charges WHERE case_ref = ? ORDER BY seq", (case["id"],)).fetchall()
            revisions = self._db.execute(
                "SELECT ch.model_id, r.revision, r.status, r.cpt, r.encounter_id, r.reason, r.operator, r.at "
                "FROM charge_revisions r JOIN charges ch ON ch.id = r.charge_id WHERE ch.case_ref = ? "
                "ORDER BY ch.id, r.revision", (case["id"],)).fetchall()
            runs = self._db.execute(
                "SELECT id, status, operator, host, pid, started_at, finished_at, parameters, software, "
                "timings, error FROM runs WHERE case_ref = ? ORDER BY id", (case["id"],)).fetchall()
            audit = self._db.execute("SELECT at, operator, action, model_id, detail FROM audit_log "
                                     "WHERE case_id = ? ORDER BY id", (case_id,)).fetchall()
            billed = self.billing(case["encounter_id"]).by_model()
        return {
            "case_id": case_id,
            "encounter": {"id": encounter["id"], "date_of_service": encounter["date_of_service"]},
            # a model's software: what shaped it (absent for versions published before it was recorded)
            "models": [{**{k: v for k, v in dict(r).items() if k != "outcome"},
                        "software": json.loads(r["outcome"]).get("software")} for r in models],
            "charges": [_shown_charge(dict(r), billed.get((case_id, r["model_id"]))) for r in charges],
            "code_rule": lifecycle.CODE_RULE,
            "charge_revisions": [dict(r) for r in revisions],
            "runs": [{**dict(r), **{k: json.loads(r[k]) for k in ("parameters", "software", "timings")}}
                     for r in runs],
            "audit": [{**dict(r), "detail": json.loads(r["detail"])} for r in audit],
            "lifecycle": [self.model_state(case_id, m["model_id"]) for m in models if m["status"] == "current"],
        }

    def export(self, *, record: bool = False, operator: str | None = None) -> dict[str, Any]:
        """Every charge row, and per encounter its claim (billable lines) and pending lines apart.

        With ``record`` the billable lines are recorded as exported: their codes are frozen. Each
        charge row shows the code its claim line carries (:data:`pipeline.ledger.lifecycle.CODE_RULE`).

        Parameters
        ----------
        record : bool
            Record the billable lines as exported (their codes can no longer change).
        operator : str, optional
            Who exports, for the audit log; default :func:`pipeline.ledger.process.operator_name`.

        Returns
        -------
        dict
            Keys ``ledger`` (its location, no password), ``exported_at`` (ISO UTC time),
            ``code_rule`` (how the codes are numbered), ``charges`` (every current charge row with
            its encounter, the current model ``version``, ``cpt`` and ``line`` as billed, exported or
            provisional and ``cpt_basis`` saying which, :data:`pipeline.ledger.lifecycle.CODE_BASIS`)
            and ``claims`` (per encounter, as :meth:`export_billing` gives them).
        """
        with self._write():
            rows = self._db.execute(
                "SELECT e.id AS encounter_id, e.patient_id, e.date_of_service, cs.case_id, ch.model_id, "
                "ch.seq, ch.cpt, ch.status, ch.reason, ch.line, ch.committed_at, "
                " (SELECT MAX(version) FROM models m WHERE m.case_ref = ch.case_ref AND m.model_id = ch.model_id "
                "  AND m.status = 'current') AS version "
                "FROM current_charges ch JOIN cases cs ON cs.id = ch.case_ref JOIN encounters e ON e.id = ch.encounter_id "
                "ORDER BY e.id, ch.seq").fetchall()
            claims = self._export_claims(operator, record)
        billed = {}
        for billing, claim in claims:
            for key, entry in billing.by_model().items():
                # a billable line of a claim recorded now was exported with the code shown
                billed[key] = dataclasses.replace(entry, exported=True) if (
                    record and entry.billable and "held" not in claim) else entry
        lines = [_shown_charge(dict(r), billed.get((r["case_id"], r["model_id"]))) for r in rows]
        return {"ledger": str(self.path), "exported_at": _now(), "code_rule": lifecycle.CODE_RULE,
                "charges": lines, "claims": [claim for _, claim in claims]}

    # -- recovery and verification -----------------------------------------------------------
    def reclaim(self) -> None:
        """Finish or abandon the attempts and runs of processes that have died."""
        with self._write():
            self._reclaim_dead()

    def _reclaim_dead(self) -> None:
        """Within a write transaction: settle every pending attempt whose process has died."""
        pending = self._db.execute(
            "SELECT m.*, r.host, r.pid, r.pid_start, cs.case_id FROM models m "
            "JOIN runs r ON r.id = m.run_id JOIN cases cs ON cs.id = m.case_ref "
            "WHERE m.status = 'pending'").fetchall()
        for attempt in pending:
            if ProcessIdentity(attempt["host"], attempt["pid"], attempt["pid_start"]).is_alive():
                continue
            folders.restore_backup(attempt["staging"], attempt["folder"])
            sums = Path(attempt["folder"]) / SUMS_NAME
            if attempt["sums_sha256"] and sums.is_file() and sha256_file(sums) == attempt["sums_sha256"]:
                version = self._commit_attempt(attempt, operator="recovery")
                self._audit("attempt.recovered", attempt["case_id"], attempt["model_id"], "recovery",
                            attempt=attempt["id"], version=version, reason="its process ended after the rename")
            else:
                self._db.execute("UPDATE models SET status = 'abandoned' WHERE id = ?", (attempt["id"],))
                self._audit("attempt.abandoned", attempt["case_id"], attempt["model_id"], "recovery",
                            attempt=attempt["id"], reason="its process ended before the packet was in place")
            folders.remove_folder(attempt["staging"])
        for run in self._db.execute("SELECT r.*, cs.case_id FROM runs r JOIN cases cs ON cs.id = r.case_ref "
                                    "WHERE r.status = 'running'").fetchall():
            if not ProcessIdentity(run["host"], run["pid"], run["pid_start"]).is_alive():
                self._db.execute("UPDATE runs SET status = 'interrupted', finished_at = ? WHERE id = ?",
                                 (_now(), run["id"]))
                self._audit("run.interrupted", run["case_id"], operator="recovery", run=run["id"])

    def _sweep_staging(self, folder: Path) -> None:
        """Delete staging folders beside ``folder`` that no pending attempt owns (left by a kill)."""
        owned = {Path(r["staging"]).name for r in self._db.execute(
            "SELECT staging FROM models WHERE status = 'pending' AND folder = ?", (str(folder),))}
        for path in folder.parent.glob(f".{folder.name}.staging-*"):
            if path.name.removesuffix(".previous") not in owned:
                folders.remove_folder(path)

    def _commit_attempt(self, attempt: sqlite3.Row, operator: str | None = None) -> int:
        """Within a write transaction: make an attempt the current version and bill its charge."""
        key = (attempt["case_ref"], attempt["model_id"])
        version = self._db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM models "
                                   "WHERE case_ref = ? AND model_id = ?", key).fetchone()[0]
        self._db.execute("UPDATE models SET status = 'superseded' WHERE case_ref = ? AND model_id = ? "
                         "AND status = 'current'", key)
        self._db.execute("UPDATE models SET status = 'current', version = ?, committed_at = ? WHERE id = ?",
                         (version, _now(), attempt["id"]))
        case_id = self._db.execute("SELECT case_id FROM cases WHERE id = ?", (key[0],)).fetchone()[0]
        charge = self._charge(*key)
        if charge["status"] == "reserved":
            self._revise(charge, operator, f"its packet was published (version {version})", status="committed")
            self._audit("charge.committed", case_id, key[1], operator, cpt=charge["cpt"])
        self._audit("model.published", case_id, key[1], operator, version=version,
                    sums_sha256=attempt["sums_sha256"], folder=attempt["folder"])
        self._record_prepared(attempt, version, operator)
        return version

    def anchor(self) -> dict[str, Any]:
        """The hash chain's head (last hash, number of entries, time) to keep outside the ledger.

        Returns
        -------
        dict
            The chain head from :func:`pipeline.ledger.chain.anchor`: last hash, number of chained
            entries and the ISO UTC time it was taken.
        """
        with self._read():
            return chain.anchor(self._db, _now())

    def verify(self, anchor: dict[str, Any] | None = None) -> VerifyReport:
        """Settle dead processes' attempts, then re-check the ledger and every current packet.

        Checks SQLite's integrity, the hash chain over every chained row
        (:func:`pipeline.ledger.chain.problems`), each current model folder against its
        ``SHA256SUMS`` (and that file against the checksum recorded when it was committed), that
        every billed charge has a current packet and every void its audit entry, that each
        encounter's billable lines form a valid claim, and that the charges files written from
        the ledger are unchanged. A file SQLite cannot read is a problem too, never a crash.
        With ``anchor`` (from :meth:`anchor`, kept elsewhere), the chain must also extend it.

        Parameters
        ----------
        anchor : dict, optional
            A chain head from :meth:`anchor` kept outside the ledger; the chain must extend it.

        Returns
        -------
        VerifyReport
            The problems (which make ``ledger verify`` fail) and notes found. A damaged database is
            reported as a problem, not raised.

        Raises
        ------
        LedgerError
            ``anchor`` is not an anchor (:func:`pipeline.ledger.chain.check_anchor`), before any
            work. Exit code 13.
        """
        if anchor is not None:
            chain.check_anchor(anchor)  # a malformed anchor is refused before any work
        try:
            report = self._verify()
            if anchor is not None:
                report.problems.extend(chain.anchor_problems(self._db, anchor))
            return report
        except pg.database_errors() as error:
            return VerifyReport(str(self.path), 0, 0, [f"{self.path}: the database is damaged: {error}"], [])

    def _verify(self) -> VerifyReport:
        self.reclaim()
        problems: list[str] = []
        notes: list[str] = []
        integrity = self._db.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"{self.path}: SQLite integrity check failed: {integrity}")
        current = self._db.execute(
            "SELECT m.*, cs.case_id FROM models m JOIN cases cs ON cs.id = m.case_ref "
            "WHERE m.status = 'current' ORDER BY cs.case_id, m.model_id").fetchall()
        suspects = [m for m in current if folders.folder_problems(m["folder"], m["sums_sha256"])]
        with self._write():
            # Confirm under the write lock: a run may have published a new version meanwhile.
            for suspect in suspects:
                model = self._db.execute("SELECT m.*, cs.case_id FROM models m JOIN cases cs ON cs.id = m.case_ref "
                                         "WHERE m.case_ref = ? AND m.model_id = ? AND m.status = 'current'",
                                         (suspect["case_ref"], suspect["model_id"])).fetchone()
                for problem in folders.folder_problems(model["folder"], model["sums_sha256"]):
                    problems.append(f"{model['case_id']}/{model['model_id']} v{model['version']}: {problem}")
            for folder in {Path(r["folder"]) for r in self._db.execute("SELECT DISTINCT folder FROM models")}:
                self._sweep_staging(folder)
        charges = self._db.execute(
            "SELECT ch.*, cs.case_id, (SELECT COUNT(*) FROM models m WHERE m.case_ref = ch.case_ref "
            " AND m.model_id = ch.model_id AND m.status = 'current') AS packets "
            "FROM current_charges ch JOIN cases cs ON cs.id = ch.case_ref ORDER BY ch.encounter_id, ch.seq").fetchall()
        for charge in charges:
            where = f"{charge['case_id']}/{charge['model_id']}"
            if charge["status"] in BILLED and not charge["packets"]:
                problems.append(f"{where}: charge {charge['cpt']} is {charge['status']} but has no packet")
            elif charge["status"] == "reserved":
                notes.append(f"{where}: {charge['cpt']} reserved, awaiting its packet (run the case again)")
        problems.extend(chain.problems(self._db, self.backend))
        problems.extend(self._revision_problems())
        for encounter_id in sorted({c["encounter_id"] for c in charges}):
            try:
                self.billing(encounter_id).claim()
            except (CodingError, LedgerError, KeyError, ValueError) as error:
                problems.append(f"encounter {encounter_id}: its billable lines do not form a claim: {error}")
        for document in self._db.execute("SELECT d.* FROM documents d WHERE d.id IN (SELECT MAX(id) FROM "
                                          "documents GROUP BY path)"):
            path = Path(document["path"])
            if not path.is_file():
                notes.append(f"{path}: written from the ledger, no longer there")
            elif sha256_file(path) != document["sha256"]:
                problems.append(f"{path}: changed since the ledger wrote it (rewrite it with `anatomodel ledger "
                                "charges CASE`, never by hand)")
        for attempt in self._db.execute("SELECT m.model_id, cs.case_id, r.host, r.pid FROM models m JOIN runs r "
                                        "ON r.id = m.run_id JOIN cases cs ON cs.id = m.case_ref "
                                        "WHERE m.status = 'pending'"):
            notes.append(f"{attempt['case_id']}/{attempt['model_id']}: being written by pid {attempt['pid']} "
                         f"on {attempt['host']}")
        return VerifyReport(str(self.path), len(current), len(charges), problems, notes)


    def _revision_problems(self) -> list[str]:
        """Breaks in the charges' revision histories: each charge has revisions 1, 2, ... each
        superseding the one before, and every void revision its ``charge.void`` audit entry."""
        found, history = [], {}
        for row in self._db.execute(
                "SELECT ch.id AS charge, cs.case_id, ch.model_id, r.id, r.revision, r.supersedes, r.status "
                "FROM charges ch JOIN cases cs ON cs.id = ch.case_ref LEFT JOIN charge_revisions r "
                "ON r.charge_id = ch.id ORDER BY ch.id, r.revision"):
            history.setdefault((row["charge"], row["case_id"], row["model_id"]), []).append(row)
        audited = {}
        for row in self._db.execute("SELECT case_id, model_id FROM audit_log WHERE action = 'charge.void'"):
            audited[(row["case_id"], row["model_id"])] = audited.get((row["case_id"], row["model_id"]), 0) + 1
        for (_, case_id, model_id), revisions in history.items():
            where = f"{case_id}/{model_id}"
            if revisions[0]["id"] is None:
                found.append(f"{where}: the charge has no revision (its state was removed)")
                continue
            previous = None
            for number, revision in enumerate(revisions, start=1):
                if revision["revision"] != number or revision["supersedes"] != previous:
                    found.append(f"{where}: charge revision {revision['revision']} does not supersede revision "
                                 f"{number - 1} (its history was rewritten)")
                    break
                previous = revision["id"]
            voids = sum(1 for revision in revisions if revision["status"] == "void")
            if voids > audited.get((case_id, model_id), 0):
                found.append(f"{where}: charge is void without an audit entry")
        return found


@dataclasses.dataclass
class VerifyReport(Report):
    """What ``ledger verify`` found: ``problems`` make it fail, ``notes`` are informational."""

    ledger: str
    packets_checked: int
    charges_checked: int
    problems: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        """Whether the ledger passed.

        Returns
        -------
        bool
            True when no problem was found (notes do not count).
        """
        return not self.problems


class Run:
    """One run of a case, recorded in the ledger; publishes its models through the protocol.

    Use as a context manager: on exit, attempts it did not publish are abandoned (their staging
    folders deleted) and the run is recorded as ``ok`` or ``failed``.
    """

    def __init__(self, ledger: Ledger, run_id: int, case_ref: int, case_id: str, encounter: LedgerEncounter,
                 operator: str):
        self.ledger, self.id, self.case_ref, self.case_id = ledger, run_id, case_ref, case_id
        self.encounter, self.operator = encounter, operator
        self.timings: dict[str, float] = {}
        self._pending: dict[int, Reservation] = {}
        self._finished = False

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: object) -> None:
        for reservation in list(self._pending.values()):
            self.abandon(reservation)
        if not self._finished:
            self.finish(error=None if error is None else f"{type(error).__name__}: {error}")

    def stage(self, model_id: str, folder: str | os.PathLike) -> Reservation:
        """Record a pending attempt and create its empty staging folder beside ``folder``.

        Parameters
        ----------
        model_id : str
            The model's id in the case.
        folder : path
            The model folder the packet will be published to (``OUT/<case_id>/<model_id>``).

        Returns
        -------
        Reservation
            The pending attempt, with its staging folder (created, empty) and no charge line yet.

        Raises
        ------
        LedgerError
            If the ledger stays locked (exit code 13).
        OSError
            If the staging folder cannot be created.
        """
        ledger, db = self.ledger, self.ledger._db
        folder = Path(folder).absolute()
        staging = folder.parent / f".{folder.name}.staging-{uuid.uuid4().hex[:12]}"
        with ledger._write():
            ledger._reclaim_dead()
            ledger._sweep_staging(folder)
            attempt_id = db.execute(
                "INSERT INTO models (case_ref, model_id, status, run_id, folder, staging, created_at) "
                "VALUES (?, ?, 'pending', ?, ?, ?, ?)",
                (self.case_ref, model_id, self.id, str(folder), str(staging), _now())).lastrowid
        staging.mkdir(parents=True)
        reservation = Reservation(attempt_id, self.case_id, model_id, None, False, folder, staging)
        self._pending[attempt_id] = reservation
        return reservation

    def charge(self, reservation: Reservation, billable: Any) -> Any:
        """Decide the attempt's charge line in one transaction for the encounter, and return it.

        A model id whose line was billed keeps it (a re-run is a new version, never a new
        charge); once the line was exported, a re-run is refused. A line still only reserved (its first attempt failed or was killed) is decided
        again in its place in the encounter, from the case as it is now. Otherwise
        :func:`pipeline.coding.next_charge` decides it from the encounter's reserved and billed
        lines, and the line is reserved for this model id.

        Parameters
        ----------
        reservation : Reservation
            The attempt from :meth:`stage`; its ``charge_line`` and ``new_charge`` are set here.
        billable : pipeline.coding.BillableModel
            The model as coding sees it (indication, ICD-10 codes, modifiers, providers, payer).

        Returns
        -------
        pipeline.coding.ChargeLine
            The charge line decided for the model (also set on ``reservation``).

        Raises
        ------
        LedgerError
            If the model id is already used by another case on the same encounter, or the model's
            line was exported for billing (a re-run of it is refused; exit code 13).
        CodingError
            If the billing rules refuse the line (exit code 11).
        """
        ledger, db, model_id = self.ledger, self.ledger._db, reservation.model_id
        with ledger._write():
            charge = ledger._charge(self.case_ref, model_id)
            if charge is not None and charge["status"] == "reserved":
                before = [_line(r["line"]) for r in ledger._lines(self.encounter.id, ACTIVE) if r["seq"] < charge["seq"]]
                line = coding.next_charge(before, billable)
                if (_json(line), _json(billable)) != (charge["line"], charge["billable"]):
                    ledger._revise(charge, self.operator, f"re-decided by run {self.id} from the case as it is now",
                                   cpt=line.cpt, line=_json(line), billable=_json(billable))
                if line.cpt != charge["cpt"]:
                    ledger._audit("charge.redecided", self.case_id, model_id, self.operator,
                                  previous=charge["cpt"], cpt=line.cpt)
            elif charge is not None:
                line = self._corrected(charge, billable)
            else:
                active = ledger._lines(self.encounter.id, ACTIVE)
                line = coding.next_charge([_line(r["line"]) for r in active], billable)
                if any(flag.startswith(coding.FLAG_RERUN) for flag in line.flags):
                    other = next(r["case_id"] for r in active if r["model_id"] == model_id)
                    raise LedgerError(
                        f"model id {model_id!r} is already used by case {other!r} on the same encounter",
                        hint="model ids must be unique within an encounter; rename the model in the case file")
                seq = ledger._next_seq(self.encounter.id)
                charge_id = db.execute(
                    "INSERT INTO charges (encounter_id, case_ref, model_id, seq, cpt, line, billable, status, "
                    "reserved_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'reserved', ?)",
                    (self.encounter.id, self.case_ref, model_id, seq, line.cpt, _json(line), _json(billable),
                     _now())).lastrowid
                db.execute(
                    "INSERT INTO charge_revisions (charge_id, revision, supersedes, encounter_id, seq, cpt, line, "
                    "billable, status, reason, operator, at) VALUES (?, 1, NULL, ?, ?, ?, ?, ?, 'reserved', ?, ?, ?)",
                    (charge_id, self.encounter.id, seq, line.cpt, _json(line), _json(billable),
                     f"reserved by run {self.id}", self.operator, _now()))
                ledger._audit("charge.reserved", self.case_id, model_id, self.operator, cpt=line.cpt, seq=seq)
        reservation.charge_line, reservation.new_charge = line, charge is None
        return line

    def _corrected(self, charge: sqlite3.Row, billable: Any) -> Any:
        """Within the charge transaction: a billed line with the case's coding as it is now.

        A line not yet exported takes the new ICD-10 codes, modifiers and providers (audited as
        ``charge.corrected``); a re-run of an exported one is refused (its new version would take
        the submitted line off the claim). A void or discontinued line is kept as it is.
        """
        ledger, line = self.ledger, _line(charge["line"])
        if charge["status"] not in BILLED:
            return line
        before = [_line(r["line"]) for r in ledger._lines(self.encounter.id, ACTIVE) if r["seq"] < charge["seq"]]
        fresh = coding.next_charge(before, billable)
        fresh = dataclasses.replace(fresh, cpt=line.cpt, descriptor=line.descriptor, sequence=line.sequence)
        changed = {name: (getattr(line, name), getattr(fresh, name)) for name in _CORRECTABLE
                   if getattr(line, name) != getattr(fresh, name)}
        if ledger.is_exported(self.case_ref, charge["model_id"]):
            raise _exported_rerun(self.case_id, [charge["model_id"]], changed)
        if not changed or charge["status"] != "committed":
            return line
        ledger._revise(charge, self.operator, f"corrected by run {self.id}: {', '.join(changed)} changed in the case",
                       line=_json(fresh), billable=_json(billable))
        ledger._audit("charge.corrected", self.case_id, charge["model_id"], self.operator,
                      changed={name: {"from": old, "to": new} for name, (old, new) in changed.items()})
        return fresh

    def reserve(self, model_id: str, billable: Any, folder: str | os.PathLike) -> Reservation:
        """:meth:`stage` and :meth:`charge` in one call (when the billable model is known first).

        Parameters
        ----------
        model_id : str
            The model's id in the case.
        billable : pipeline.coding.BillableModel
            The model as coding sees it; see :meth:`charge`.
        folder : str or os.PathLike
            The model folder the packet will be published to.

        Returns
        -------
        Reservation
            The pending attempt with its charge line decided.
        """
        reservation = self.stage(model_id, folder)
        self.charge(reservation, billable)
        return reservation

    def publish(self, reservation: Reservation, *, mesh_sha256: str | None = None,
                holds: Sequence[Hold] = (), libraries: Iterable[str] = ()) -> PublishedModel:
        """Put the staged packet in place and commit its version and charge (step 3).

        The version is recorded as ``prepared`` (with the run's measured effort), with ``holds``
        (:class:`pipeline.holds.Hold`) on it, plus a hold when ``mesh_sha256`` (best: of the mesh
        geometry, not the file) equals another model's whose charge is not void.

        Parameters
        ----------
        reservation : Reservation
            The attempt from :meth:`stage`, charged by :meth:`charge`, whose staging folder holds the
            complete packet with its ``SHA256SUMS``.
        mesh_sha256 : str, optional
            Hex SHA-256 used to find duplicate models; default the ``model.stl`` entry of ``SHA256SUMS``.
        holds : sequence of pipeline.holds.Hold
            Reasons to hold the model's billing until someone releases it.
        libraries : iterable of str
            Distribution names of the libraries that shaped the model (its ``MeshReport.libraries``);
            recorded with their installed versions, python's and anatomodel's as the version's
            software.

        Returns
        -------
        PublishedModel
            The committed version (numbered from 1 per model), its folder, charge status and line, the
            hex SHA-256 of ``SHA256SUMS`` and of the mesh, the holds put on it and its software.

        Raises
        ------
        LedgerError
            If the staged packet is incomplete (a file missing, changed or not in SHA256SUMS).
        ValueError
            If the reservation has no charge line yet (:meth:`charge` was not called).
        """
        ledger, db = self.ledger, self.ledger._db
        if reservation.charge_line is None:
            raise ValueError("charge() the reservation before publishing it")
        problems = folders.folder_problems(reservation.staging)
        if problems:
            raise LedgerError(f"the packet of {self.case_id}/{reservation.model_id} is incomplete: "
                              + "; ".join(problems), hint="nothing was published or billed")
        folders.fsync_tree(reservation.staging)
        sums_sha256 = sha256_file(reservation.staging / SUMS_NAME)
        if mesh_sha256 is None:
            mesh_sha256 = read_sums(reservation.staging / SUMS_NAME).get("model.stl")
        with ledger._write():
            holds = [*holds, *ledger._duplicate_holds(self.case_ref, reservation.model_id, mesh_sha256)]
            outcome = {"holds": [h.for_model(reservation.model_id) for h in holds],
                       "effort": lifecycle.run_effort(self.timings, reservation.model_id),
                       "software": software_versions(libraries)}
            updated = db.execute("UPDATE models SET sums_sha256 = ?, mesh_sha256 = ?, outcome = ? WHERE id = ? AND "
                                 "status = 'pending'", (sums_sha256, mesh_sha256, _json(outcome),
                                                        reservation.attempt_id))
            if updated.rowcount != 1:
                raise LedgerError(f"the attempt to publish {self.case_id}/{reservation.model_id} was "
                                  "reclaimed by another process", hint="run the case again")
        with ledger._write():
            ledger._reclaim_dead()
            folders.publish_folder(reservation.staging, reservation.folder)
            attempt = db.execute("SELECT * FROM models WHERE id = ?", (reservation.attempt_id,)).fetchone()
            version = ledger._commit_attempt(attempt, self.operator)
            charge = ledger._charge(self.case_ref, reservation.model_id)
        self._pending.pop(reservation.attempt_id, None)
        folders.remove_folder(reservation.staging)  # now holds the previous version, if any
        return PublishedModel(self.case_id, reservation.model_id, version, reservation.folder, charge["status"],
                              _line(charge["line"]), sums_sha256, mesh_sha256, list(outcome["holds"]),
                              dict(outcome["software"]))

    def abandon(self, reservation: Reservation, reason: str = "the run stopped before publishing") -> None:
        """Give up an attempt: delete its staging folder; its charge line stays reserved.

        Parameters
        ----------
        reservation : Reservation
            The attempt to give up.
        reason : str
            Why, for the audit log.
        """
        ledger = self.ledger
        with ledger._write():
            ledger._db.execute("UPDATE models SET status = 'abandoned' WHERE id = ? AND status = 'pending'",
                               (reservation.attempt_id,))
            ledger._audit("attempt.abandoned", self.case_id, reservation.model_id, self.operator,
                          attempt=reservation.attempt_id, reason=reason)
            folders.remove_folder(reservation.staging)
        self._pending.pop(reservation.attempt_id, None)

    def audit(self, action: str, **detail: Any) -> None:
        """Record an entry of this run in the audit log (e.g. an overridden identity check).

        Parameters
        ----------
        action : str
            The audit action name (dotted, e.g. ``identity.overridden``).
        **detail
            JSON-serialisable details stored with the entry; ``reason`` and ``note`` must be plain text.
        """
        with self.ledger._write():
            self.ledger._audit(action, self.case_id, operator=self.operator, run=self.id, **detail)

    def void_removed(self, model_ids: Sequence[str]) -> list[str]:
        """Void the charges of this case's models that are no longer in the case file.

        Returns the model ids voided. A removed model whose charge was exported is refused.

        Parameters
        ----------
        model_ids : sequence of str
            The model ids still in the case file; every other model of the case with a charge not
            void is voided.

        Returns
        -------
        list of str
            The model ids voided, in the ledger's order.

        Raises
        ------
        LedgerError
            If a removed model's charge was exported for billing (exit code 13); the models voided
            before it stay voided.
        """
        ledger, voided = self.ledger, []
        rows = ledger._db.execute("SELECT model_id FROM current_charges WHERE case_ref = ? AND status != 'void'",
                                  (self.case_ref,)).fetchall()
        for row in rows:
            if row["model_id"] in model_ids:
                continue
            if ledger.is_exported(self.case_ref, row["model_id"]):
                raise LedgerError(f"model {row['model_id']!r} was removed from case {self.case_id}, but its charge "
                                  "was exported for billing", hint="correct the claim with the payer first")
            ledger.void(self.case_id, row["model_id"], reason="removed from the case file", operator=self.operator)
            voided.append(row["model_id"])
        return voided

    def finish(self, *, error: str | None = None, timings: dict[str, float] | None = None) -> None:
        """Record the end of the run: ``ok``, or ``failed`` with the error message.

        Parameters
        ----------
        error : str, optional
            The error message of a failed run (stored as it came); None for a run that ended ``ok``.
        timings : dict of str to float, optional
            Step durations in seconds, merged into the run's timings.
        """
        self.timings.update(timings or {})
        status = "failed" if error else "ok"
        with self.ledger._write():
            self.ledger._db.execute("UPDATE runs SET status = ?, finished_at = ?, timings = ?, error = ? "
                                    "WHERE id = ?", (status, _now(), _json(self.timings), error, self.id))
            self.ledger._audit(f"run.{status}", self.case_id, operator=self.operator, run=self.id,
                               **({"error": error} if error else {}))
        self._finished = True


def _exported_rerun(case_id: str, model_ids: Sequence[str], changed: dict[str, Any]) -> LedgerError:
    """The refusal of a re-run of models whose charges were exported (submitted for billing)."""
    names = ", ".join(f"{case_id}/{model}" for model in model_ids)
    what = f"its {', '.join(changed)} cannot be changed by a re-run, and " if changed else ""
    return LedgerError(
        f"the {'charge' if len(model_ids) == 1 else 'charges'} of {names} {'was' if len(model_ids) == 1 else 'were'} "
        f"exported for billing; {what}a re-run would publish a new version back at 'prepared' and take the "
        "submitted line off the encounter's charges",
        hint="the exported claim stands as submitted: correct or void it with the payer (a corrected or void "
             "claim; the ledger keeps the exported line, `ledger void` refuses it); a separately prepared model "
             "is run as a case of its own (its own case_id and model id)")


def _refuse_control_text(**texts: str | None) -> None:
    """Refuse a control character (NUL, an ANSI escape...) in a person's text bound for the audit
    log (operator, reason, note), whichever way it came (command line or a script using the library).

    Raises
    ------
    LedgerError
        Naming the field; nothing is written.
    """
    for field, text in texts.items():
        problem = text_problem(text, 100_000) if text else None
        if problem:
            raise LedgerError(f"{field.replace('_', ' ')} {problem}", hint="give plain text")


def open_ledger(ledger: Ledger | str | os.PathLike | None = None) -> Ledger:
    """A :class:`Ledger` from an open ledger, a path, or the default location.

    Parameters
    ----------
    ledger : Ledger or str or os.PathLike, optional
        An open ledger (returned as it is), a file path or PostgreSQL URL, or None for the default
        (:func:`resolve_ledger_path`).

    Returns
    -------
    Ledger
        The open ledger.
    """
    return ledger if isinstance(ledger, Ledger) else Ledger(ledger)


def _shown_code(entry: Any, reserved: str) -> tuple[str, str]:
    """The CPT code a view shows of a charge and its basis: its billing line's, or the reserved code of a void one."""
    return (reserved, "void") if entry is None else (entry.line.cpt, entry.code_basis)


def _shown_charge(row: dict[str, Any], entry: Any) -> dict[str, Any]:
    """A current charge row as the views show it: ``cpt`` and ``line`` of its billing ``entry``
    (:class:`pipeline.ledger.lifecycle.BillingLine`, None for a void charge), with ``cpt_basis``."""
    if entry is None:
        return {**row, "line": json.loads(row["line"]), "cpt_basis": "void"}
    return {**row, "cpt": entry.line.cpt, "line": to_jsonable(entry.line), "cpt_basis": entry.code_basis}


def _line(text: str) -> Any:
    """A stored charge line as a :class:`pipeline.coding.ChargeLine`."""
    return coding.ChargeLine.from_dict(json.loads(text))


def _discontinued(line: Any, reason: str) -> Any:
    """The line with modifier 53 (discontinued procedure) and its reason, checked by the rules."""
    reasons = {**line.modifier_reasons, "53": reason}
    modifiers = coding.validate_modifiers([*line.modifiers, "53"], reasons)
    return dataclasses.replace(line, modifiers=modifiers, modifier_reasons=reasons)
