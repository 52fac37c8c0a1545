"""The ledger's lifecycle operations: record a step, release a hold, decide what is billable.

:class:`LifecycleLedger` is a mixin of :class:`pipeline.ledger.Ledger`; the rules of the
lifecycle (order of the steps, details each needs, effort categories, numbering) live in
:mod:`pipeline.ledger.lifecycle`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline import coding, payers
from pipeline.errors import CodingError, LedgerError
from pipeline.holds import Hold
from pipeline.ledger import lifecycle
from pipeline.ledger.lifecycle import Billing, BillingLine, Person
from pipeline.report import to_jsonable


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), sort_keys=True)


def _check_release(where: str, hold: dict[str, Any], person: Person) -> None:
    """Refuse a release the claim cannot take: a hold on an invalid claim value, or a coding hold
    released by someone who is neither a coder nor a clinician (:mod:`pipeline.ledger.lifecycle`)."""
    code = hold["code"]
    if code in lifecycle.UNRELEASABLE:
        raise LedgerError(
            f"hold {code} of {where} cannot be released: the claim would carry the value it is about, which "
            "a payer denies", hint=f"correct {lifecycle.UNRELEASABLE[code]} in the case file and run the case "
                                   "again: the new version's line carries the corrected value")
    if hold["source"] == lifecycle.CODING_SOURCE and not (person.clinician or person.role.strip().lower()
                                                          in lifecycle.CODING_ROLES):
        raise LedgerError(f"hold {code} of {where} is a coding hold: releasing it needs a coder (role "
                          f"{' or '.join(lifecycle.CODING_ROLES)}) or a clinician (an NPI), not {person.role}",
                          hint="anatomodel release CASE MODEL CODE --by NAME --role coder --reason ...")


class LifecycleLedger:
    """Lifecycle steps, holds and billing on the ledger's tables (mixin of ``Ledger``)."""

    # -- state ------------------------------------------------------------------------------
    def _current_model(self, case_ref: int, model_id: str) -> Any:
        return self._db.execute("SELECT * FROM models WHERE case_ref = ? AND model_id = ? AND status = 'current'",
                                (case_ref, model_id)).fetchone()

    def _events(self, case_ref: int, model_id: str, version: int) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM events WHERE case_ref = ? AND model_id = ? AND version = ? "
                                "ORDER BY id", (case_ref, model_id, version)).fetchall()
        return [lifecycle.event_row(row) for row in rows]

    def _holds(self, case_ref: int, model_id: str, version: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT h.*, r.person AS released_by, r.role AS released_role, r.reason AS release_reason, "
            "r.at AS released_at FROM holds h LEFT JOIN releases r ON r.hold_id = h.id "
            "WHERE h.case_ref = ? AND h.model_id = ? AND h.version = ? ORDER BY h.id",
            (case_ref, model_id, version)).fetchall()
        return [dict(row) for row in rows]

    def model_state(self, case_id: str, model_id: str) -> dict[str, Any]:
        """The current version of a model, its state, its events and its holds (open and released).

        Parameters
        ----------
        case_id : str
            The case.
        model_id : str
            The model's id in the case.

        Returns
        -------
        dict
            Keys ``case_id``, ``model_id``, ``version`` (the current version, from 1), ``state`` (the
            last step, ``prepared`` when none was recorded), ``events`` (each step with who, when as
            ISO UTC text, effort and detail), ``effort_minutes`` (minutes per effort category, from
            :func:`pipeline.ledger.lifecycle.effort_summary`) and ``holds`` (open and released).

        Raises
        ------
        LedgerError
            If the case is not in the ledger or the model has no published version (exit code 13).
        """
        case = self._case_row(case_id)
        model = self._current_model(case["id"], model_id)
        if model is None:
            raise LedgerError(f"model {model_id!r} of case {case_id!r} has no published version in {self.path}",
                              hint=f"run the case first; `anatomodel ledger show {case_id}` lists its models")
        events = self._events(case["id"], model_id, model["version"])
        return {"case_id": case_id, "model_id": model_id, "version": model["version"],
                "state": events[-1]["step"] if events else "prepared", "events": events,
                "effort_minutes": lifecycle.effort_summary(events),
                "holds": self._holds(case["id"], model_id, model["version"])}

    # -- recording --------------------------------------------------------------------------
    def _record_prepared(self, attempt: Any, version: int, operator: str | None) -> None:
        """Within the commit's transaction: the ``prepared`` event and the holds of the run."""
        outcome = json.loads(attempt["outcome"] or "{}")
        at = _now()
        self._db.execute(
            "INSERT INTO events (case_ref, model_id, version, step, person, role, npi, at, effort, detail, "
            "recorded_at) VALUES (?, ?, ?, 'prepared', ?, 'operator', NULL, ?, ?, ?, ?)",
            (attempt["case_ref"], attempt["model_id"], version, operator or "recovery", at,
             _dumps(outcome.get("effort", [])), _dumps({"run": attempt["run_id"], "folder": attempt["folder"]}), at))
        for hold in outcome.get("holds", []):
            self._db.execute("INSERT INTO holds (case_ref, model_id, version, code, reason, source, raised_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (attempt["case_ref"], attempt["model_id"], version,
                                                               hold["code"], hold["reason"], hold["source"], at))

    def model_at_folder(self, folder: Any) -> tuple[str, str] | None:
        """``(case_id, model_id)`` of the current model version published to ``folder``, or None.

        Parameters
        ----------
        folder : str or os.PathLike
            A model folder (relative paths are taken from the current directory; a symlink matches by
            its absolute or its resolved path).

        Returns
        -------
        tuple of (str, str) or None
            ``(case_id, model_id)`` of the current version published there, or None when none is.
        """
        from pathlib import Path

        names = {str(Path(folder).absolute()), str(Path(folder).resolve())}
        for name in sorted(names):
            row = self._db.execute("SELECT cs.case_id, m.model_id FROM models m JOIN cases cs ON cs.id = m.case_ref "
                                   "WHERE m.folder = ? AND m.status = 'current'", (name,)).fetchone()
            if row is not None:
                return row["case_id"], row["model_id"]
        return None

    def record_step(self, case_id: str, model_id: str, step: str, person: Person, *, at: Any = None,
                    minutes: float | None = None, detail: dict[str, Any] | None = None,
                    holds: list[Hold] | None = None) -> dict[str, Any]:
        """Record one lifecycle step of a model's current version; return the model's new state.

        Parameters
        ----------
        case_id : str
            The case.
        model_id : str
            The model's id in the case.
        step : {"approved", "printed", "post_processed", "checked", "delivered", "discontinued", "reduced"}
        person : Person
            Who did it. Approval needs a clinician (an NPI).
        at : ISO text or datetime, optional
            When it happened (default now); not before the previous step, not in the future.
        minutes : float, optional
            Effort entered with the step (its registry category: :data:`lifecycle.STEP_CATEGORY`).
        detail : dict
            What: see :func:`pipeline.ledger.lifecycle.step_details`. ``delivered`` straight after
            ``post_processed`` needs ``qa_policy`` and ``qa_required`` false (a QA policy that does
            not require a print check).
        holds : list of Hold, optional
            Holds the step raises on the version (a failed ``checked`` step: one per failed
            criterion, at least one; a passing check raises none).

        Returns
        -------
        dict
            The model's new state, as :meth:`model_state` gives it.

        Raises
        ------
        LedgerError
            A step out of order (see :mod:`pipeline.ledger.lifecycle`: a reprint only after a failed
            check, delivery only after a check or with a policy that needs none, and after a failed
            check only once its holds are released), missing details, an approval without an NPI,
            impossible times.
        CodingError
            Modifier 53 or 52 refused by the coding rules.
        """
        if step not in lifecycle.FOLLOWS:
            raise LedgerError(f"unknown lifecycle step {step!r}; steps: {', '.join(lifecycle.FOLLOWS)}")
        if step == "approved" and not person.clinician:
            raise LedgerError(f"approval of {case_id}/{model_id} needs a clinician: give {person.name}'s NPI",
                              hint="give --npi")
        detail, measured = lifecycle.step_details(step, dict(detail or {}))
        holds = [hold.for_model(model_id) for hold in holds or []]
        if holds and step != "checked":
            raise LedgerError(f"the {step.replace('_', '-')} step raises no holds; a failed print check does")
        if step == "checked" and detail["passed"] == bool(holds):
            raise LedgerError("a failed print check needs its holds, a passing one has none"
                              if not holds else "a passing print check raises no holds")
        when = lifecycle.parse_time(at, f"the time of the {step} step")
        efforts = []
        if measured is not None:
            efforts.append(lifecycle.effort(lifecycle.STEP_CATEGORY[step], measured, person.clinician, "measured"))
        if minutes is not None:
            efforts.append(lifecycle.effort(lifecycle.STEP_CATEGORY[step], minutes, person.clinician, "entered"))
        with self._write() as db:
            case = self._case_row(case_id)
            model = self._current_model(case["id"], model_id)
            if model is None:
                raise LedgerError(f"model {model_id!r} of case {case_id!r} has no published version",
                                  hint="run the case first")
            events = self._events(case["id"], model_id, model["version"])
            state = events[-1]["step"] if events else "prepared"
            name = f"{case_id}/{model_id} v{model['version']}"
            charge = self._charge(case["id"], model_id)
            if charge is not None and charge["status"] == "void":
                raise LedgerError(f"the charge of {name} is void: no lifecycle step is recorded on it",
                                  hint=f"`anatomodel ledger unvoid {case_id} {model_id}` first, if it was voided in error")
            if state not in lifecycle.FOLLOWS[step]:
                position = lifecycle.STEPS.index(state) if state in lifecycle.STEPS[:-1] else None
                expected = lifecycle.STEPS[position + 1] if position is not None else None
                raise LedgerError(
                    f"{name} is {state}: it cannot be {step} now"
                    + (f" (next step: {expected})" if expected else " (it has reached its end state)"),
                    hint=(f"version {model['version']} is new (the case was run again): it needs approval again"
                          if state == "prepared" and model["version"] > 1 else None))
            open_qa = self._print_qa_holds(case["id"], model_id, model["version"])
            self._check_order(name, step, state, events, detail, open_qa)
            if events and when.isoformat() < events[-1]["at"]:
                raise LedgerError(f"the {step} step ({when.isoformat()}) cannot be before the {state} step "
                                  f"({events[-1]['at']})", hint="give the time it happened with --at")
            if step == "printed" and detail["job_end"] > when.isoformat():  # not printed before the job ended
                raise LedgerError(f"the print job of {name} ends ({detail['job_end']}) after the printed step "
                                  f"({when.isoformat()})", hint="record the step once the job has ended")
            if step in ("discontinued", "reduced"):
                modifier = "53" if step == "discontinued" else "52"
                line = coding.ChargeLine.from_dict(json.loads(charge["line"]))
                reasons = {**line.modifier_reasons, modifier: detail["reason"]}
                modifiers = coding.validate_modifiers([*line.modifiers, modifier], reasons)
                line = dataclasses.replace(line, modifiers=modifiers, modifier_reasons=reasons)
                status = "discontinued" if step == "discontinued" else charge["status"]
                self._revise(charge, person.name, f"{step.replace('_', '-')}: {detail['reason']}", status=status,
                             line=_dumps(line))
                refused = payers.modifier_hold(line.payer, modifier, line.cpt, model_id)
                if refused is not None:  # listed apart, with why, until a named person releases it
                    db.execute("INSERT INTO holds (case_ref, model_id, version, code, reason, source, raised_at) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)", (case["id"], model_id, model["version"], refused.code,
                                                                refused.reason, refused.source, _now()))
            db.execute(
                "INSERT INTO events (case_ref, model_id, version, step, person, role, npi, at, effort, detail, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (case["id"], model_id, model["version"], step, person.name, person.role, person.npi,
                 when.isoformat(), _dumps(efforts), _dumps(detail), _now()))
            self._audit(f"model.{step}", case_id, model_id, person.name, version=model["version"],
                        role=person.role, npi=person.npi, at=when.isoformat(), **detail)
            raised = _now()
            for hold in holds:
                db.execute("INSERT INTO holds (case_ref, model_id, version, code, reason, source, raised_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", (case["id"], model_id, model["version"], hold.code,
                                                            hold.reason, hold.source, raised))
            if step == "printed" and state == "checked":  # a reprint releases the failed check's holds
                reason = f"reprinted on {detail['printer']} ({detail['job_end']}): the new print is checked again"
                for hold in open_qa:
                    db.execute("INSERT INTO releases (hold_id, person, role, reason, at) VALUES (?, ?, ?, ?, ?)",
                               (hold["id"], person.name, person.role, reason, raised))
                    self._audit("hold.released", case_id, model_id, person.name, code=hold["code"], hold=hold["id"],
                                role=person.role, reason=reason, reprint=True)
        return self.model_state(case_id, model_id)

    def _print_qa_holds(self, case_ref: int, model_id: str, version: int) -> list[dict[str, Any]]:
        return [h for h in self._holds(case_ref, model_id, version)
                if h["source"] == lifecycle.PRINT_QA_SOURCE and h["released_by"] is None]

    @staticmethod
    def _check_order(name: str, step: str, state: str, events: list[dict[str, Any]], detail: dict[str, Any],
                     open_qa: list[dict[str, Any]]) -> None:
        """The print-QA rules of the order (:mod:`pipeline.ledger.lifecycle`) beyond :data:`FOLLOWS`."""
        checks = [event for event in events if event["step"] == "checked"]
        if step == "printed" and state == "checked" and checks[-1]["detail"]["passed"]:
            raise LedgerError(f"{name} passed its print check: deliver it (a reprint follows a failed check)")
        if step != "delivered":
            return
        if state == "post_processed":
            if checks:
                raise LedgerError(f"{name} was reprinted after a failed print check: check the new print "
                                  "before delivery", hint="anatomodel check MODEL_DIR SCAN --by NAME --role ROLE")
            if detail.get("qa_required") is not False or not detail.get("qa_policy"):
                raise LedgerError(f"{name} is post-processed: it needs its print check before delivery",
                                  hint="anatomodel check MODEL_DIR SCAN --by NAME --role ROLE; a lab whose QA "
                                       "policy says required: false delivers with --qa-policy NAME")
        elif open_qa:
            codes = ", ".join(hold["code"] for hold in open_qa)
            if checks and checks[-1]["detail"]["passed"]:  # a rescan passed: a reprint is refused, so say so
                raise LedgerError(f"{name} passed its last print check, but an earlier failed check's holds are "
                                  f"open ({codes}): a named person releases them before delivery",
                                  hint="anatomodel release CASE MODEL CODE --by NAME --role ROLE --reason ...")
            raise LedgerError(f"{name} failed its print check ({codes}): it is not delivered until a named "
                              "person releases the holds or the model is reprinted and checked again",
                              hint="anatomodel release CASE MODEL CODE --by NAME --role ROLE --reason ...; "
                                   "or anatomodel printed ... for the reprint")

    def release(self, case_id: str, model_id: str, code: str, person: Person, *, reason: str) -> dict[str, Any]:
        """Release an open hold of a model's current version, by a named person with a reason.

        Parameters
        ----------
        case_id : str
            The case.
        model_id : str
            The model's id in the case.
        code : str
            The open hold's code (e.g. ``ledger.duplicate_mesh``) or its numeric id as text; every open
            hold with that code is released.
        person : Person
            Who releases it (name, role and NPI, recorded with the release). A coding hold
            (source ``coding``) needs a coder (role ``coder`` or ``billing``) or a clinician (an NPI).
        reason : str
            What was checked and why; required, kept with the release and in the audit log.

        Returns
        -------
        dict
            The model's new state, as :meth:`model_state` gives it.

        Raises
        ------
        LedgerError
            If ``reason`` is empty, the case is not in the ledger, the model has no published version,
            it has no open hold ``code``, the hold's cause is a value the claim would carry
            (:data:`pipeline.ledger.lifecycle.UNRELEASABLE`: corrected in the case file and re-run
            instead), or a coding hold's releaser is neither a coder nor a clinician (exit code 13).
            Nothing is released then.
        """
        if not reason or not reason.strip():
            raise LedgerError(f"releasing hold {code} of {case_id}/{model_id} needs a reason",
                              hint="give --reason 'what was checked and why the charge is right'")
        with self._write():
            case = self._case_row(case_id)
            model = self._current_model(case["id"], model_id)
            if model is None:
                raise LedgerError(f"model {model_id!r} of case {case_id!r} has no published version")
            holds = self._holds(case["id"], model_id, model["version"])
            open_holds = [h for h in holds if h["released_by"] is None]
            match = [h for h in open_holds if h["code"] == code or str(h["id"]) == str(code)]
            if not match:
                known = ", ".join(h["code"] for h in open_holds) or "none"
                raise LedgerError(f"{case_id}/{model_id} v{model['version']} has no open hold {code!r} "
                                  f"(open holds: {known})")
            for hold in match:
                _check_release(f"{case_id}/{model_id}", hold, person)
            for hold in match:
                self._db.execute("INSERT INTO releases (hold_id, person, role, reason, at) VALUES (?, ?, ?, ?, ?)",
                                 (hold["id"], person.name, person.role, reason.strip(), _now()))
                self._audit("hold.released", case_id, model_id, person.name, code=hold["code"], hold=hold["id"],
                            role=person.role, npi=person.npi, reason=reason.strip())
        return self.model_state(case_id, model_id)

    # -- billing ----------------------------------------------------------------------------
    def billing(self, encounter_id: int) -> Billing:
        """The encounter's lines: billable ones (numbered), and pending ones with what they wait for.

        Parameters
        ----------
        encounter_id : int
            The encounter's row id in the ledger.

        Returns
        -------
        Billing
            The encounter's patient id and date of service, its billable lines (sorted by kind and
            sequence, an exported line as it was exported) and its pending lines with what each waits
            for; void lines are left out.

        Raises
        ------
        LedgerError
            If there is no such encounter (exit code 13).
        """
        encounter = self._db.execute("SELECT * FROM encounters WHERE id = ?", (encounter_id,)).fetchone()
        if encounter is None:
            raise LedgerError(f"no encounter {encounter_id} in {self.path}")
        rows = self._db.execute(
            "SELECT ch.*, cs.case_id, (SELECT line FROM exports x WHERE x.charge_id = ch.id ORDER BY x.id DESC "
            "LIMIT 1) AS exported FROM current_charges ch JOIN cases cs ON cs.id = ch.case_ref "
            "WHERE ch.encounter_id = ? AND ch.status != 'void' ORDER BY ch.seq", (encounter_id,)).fetchall()
        entries = []
        for row in rows:
            line = coding.ChargeLine.from_dict(json.loads(row["line"]))
            exported = coding.ChargeLine.from_dict(json.loads(row["exported"])) if row["exported"] else None
            model = self._current_model(row["case_ref"], row["model_id"])
            version = model["version"] if model is not None else None
            events = self._events(row["case_ref"], row["model_id"], version) if model is not None else []
            state = events[-1]["step"] if events else ("prepared" if model is not None else "reserved")
            recorded = self._holds(row["case_ref"], row["model_id"], version) if model is not None else []
            holds = [Hold(h["code"], h["reason"], h["source"], row["model_id"])
                     for h in recorded if h["released_by"] is None or h["code"] in lifecycle.UNRELEASABLE]
            if line.is_duplicate and any(h["code"] == lifecycle.HOLD_DUPLICATE_MESH and h["released_by"]
                                         for h in recorded):
                # A named person released the reprint's hold (a separately prepared model): the
                # line's duplicate-mesh flag no longer keeps it from the claim.
                line = dataclasses.replace(line, flags=[f for f in line.flags
                                                        if not f.startswith(coding.FLAG_DUPLICATE_MESH)])
            releases = self._db.execute(
                "SELECT MAX(r.at) FROM releases r JOIN holds h ON h.id = r.hold_id WHERE h.case_ref = ? AND "
                "h.model_id = ? AND h.version = ?", (row["case_ref"], row["model_id"], version)).fetchone()[0]
            if row["status"] == "reserved" or model is None:
                waiting = "its packet (the run that reserved it did not finish: run the case again, or void it)"
            elif state in lifecycle.END_STATES:
                waiting = None
            else:
                waiting = lifecycle.WAITS_FOR[state]
            if waiting is None and holds:
                fixed = [h.code for h in holds if h.code in lifecycle.UNRELEASABLE]
                released = [h.code for h in holds if h.code not in lifecycle.UNRELEASABLE]
                waiting = "; ".join([*(["release of " + ", ".join(released)] if released else []),
                                     *(["a corrected case file and a re-run (" + ", ".join(fixed) + ")"]
                                       if fixed else [])])
            elif state == "checked" and any(h.source == lifecycle.PRINT_QA_SOURCE for h in holds):
                waiting = "release of " + ", ".join(h.code for h in holds) + " or a reprint"
            ready_at = None
            if waiting is None:
                ready_at = max(filter(None, [events[-1]["at"] if events else None, releases]))
            entries.append({"row": row, "line": exported or line, "exported": exported, "ready_at": ready_at,
                            "state": state, "waiting": waiting, "holds": holds, "version": version})
        lifecycle.number_lines(entries)
        billable, pending = [], []
        for entry in entries:
            item = BillingLine(entry["row"]["case_id"], entry["row"]["model_id"], entry["version"], entry["state"],
                               entry["waiting"] is None, entry["waiting"], entry["exported"] is not None,
                               entry["holds"], entry["line"])
            (billable if item.billable else pending).append(item)
        billable.sort(key=lambda item: (item.line.kind, item.line.sequence))
        return Billing(encounter_id, encounter["patient_id"], encounter["date_of_service"], billable, pending)

    def case_billing(self, case_id: str) -> Billing:
        """:meth:`billing` of the encounter of a case.

        Parameters
        ----------
        case_id : str
            The case whose encounter is billed.

        Returns
        -------
        Billing
            As :meth:`billing` gives it.

        Raises
        ------
        LedgerError
            If the case is not in the ledger (exit code 13).
        """
        return self.billing(self._case_row(case_id)["encounter_id"])

    def export_billing(self, *, operator: str | None = None, record: bool = True) -> dict[str, Any]:
        """Every encounter's billable lines and claim, and its pending lines apart.

        With ``record``, each billable line not yet exported is recorded as exported (its code is
        frozen from then on: a later void or correction of it is refused).

        Parameters
        ----------
        operator : str, optional
            Who exports, recorded on each export row (default ``export``) and in the audit log.
        record : bool
            Record the billable lines as exported. An encounter whose billable lines do not form a claim
            is never recorded: it is listed with ``held`` (the coding error) and empty ``lines``.

        Returns
        -------
        dict
            Keys ``ledger`` (its location, no password), ``exported_at`` (ISO UTC time) and ``claims``:
            per encounter with a line not void, ``encounter_id``, ``patient_id``, ``date_of_service``,
            ``lines`` (the claim), ``billable``, ``pending`` and, when refused, ``held``.
        """
        with self._write():
            claims = [claim for _, claim in self._export_claims(operator, record)]
        return {"ledger": str(self.path), "exported_at": _now(), "claims": claims}

    def _export_claims(self, operator: str | None, record: bool) -> list[tuple[Billing, dict[str, Any]]]:
        """Within a write transaction: each encounter's billing and its claim (:meth:`export_billing`)."""
        result = []
        for encounter_id in [row["id"] for row in self._db.execute("SELECT id FROM encounters ORDER BY id")]:
            billing = self.billing(encounter_id)
            if not billing.billable and not billing.pending:
                continue
            try:
                claim = to_jsonable(billing.claim())
                problem = None
            except CodingError as error:
                claim, problem = [], str(error)
            if record and problem is None:
                for entry in billing.billable:
                    if entry.exported:
                        continue
                    charge = self._charge_id(entry.case_id, entry.model_id)
                    self._db.execute("INSERT INTO exports (charge_id, cpt, line, operator, exported_at) "
                                     "VALUES (?, ?, ?, ?, ?)", (charge, entry.line.cpt, _dumps(entry.line),
                                                                 operator or "export", _now()))
                    self._audit("charge.exported", entry.case_id, entry.model_id, operator, cpt=entry.line.cpt)
            result.append((billing, {"encounter_id": encounter_id, "patient_id": billing.patient_id,
                                     "date_of_service": billing.date_of_service, "lines": claim,
                                     **({"held": problem} if problem else {}),
                                     "billable": to_jsonable(billing.billable),
                                     "pending": to_jsonable(billing.pending)}))
        return result

    def _charge_id(self, case_id: str, model_id: str) -> int:
        return self._db.execute("SELECT ch.id FROM charges ch JOIN cases cs ON cs.id = ch.case_ref "
                                "WHERE cs.case_id = ? AND ch.model_id = ?", (case_id, model_id)).fetchone()[0]

    def is_exported(self, case_ref: int, model_id: str) -> bool:
        """Whether the model's charge was exported for billing (its line is frozen).

        Parameters
        ----------
        case_ref : int
            The case's row id in the ledger (not its case id).
        model_id : str
            The model's id in the case.

        Returns
        -------
        bool
            True once any export of the charge was recorded.
        """
        return self._db.execute("SELECT 1 FROM exports x JOIN charges ch ON ch.id = x.charge_id "
                                "WHERE ch.case_ref = ? AND ch.model_id = ?", (case_ref, model_id)).fetchone() is not None

    def write_documents(self, encounter_id: int, build: Any, *, attempts: int = 3) -> list[Any]:
        """Write files made from the encounter's billing and record their checksums.

        ``build(billing)`` gets the encounter's :meth:`billing` and returns the files' contents.
        It runs outside the write lock, on a snapshot (building a PDF takes long; parallel
        workers would wait for it); then, under the lock, the files are written and recorded
        only if the billing is still the one they were built from. If another process changed
        it meanwhile they are built again from the new state; the last attempt builds under the
        lock. So the files on disk and their recorded checksums always show a state the ledger
        had, never an older one written over a newer one.

        Parameters
        ----------
        encounter_id : int
            The encounter's row id in the ledger.
        build : callable
            ``build(billing: Billing) -> dict[pathlib.Path, bytes]``: each file's path and content;
            it writes nothing (its exceptions pass through, nothing is written).
        attempts : int
            How many times to build at most: the first ``attempts - 1`` outside the lock, the
            last under it (1: always under the lock).

        Returns
        -------
        list of pathlib.Path
            The paths written (each atomically), in ``build``'s order, each recorded with its
            absolute path and hex SHA-256.
        """
        for _ in range(max(1, attempts) - 1):
            with self._read():
                billing = self.billing(encounter_id)
            contents = build(billing)
            with self._write():
                if self.billing(encounter_id) == billing:
                    return self._write_recorded(encounter_id, contents)
            # changed meanwhile by another process: build again from the new state
        with self._write():  # the last attempt builds under the lock
            return self._write_recorded(encounter_id, build(self.billing(encounter_id)))

    def _write_recorded(self, encounter_id: int, contents: dict[Any, bytes]) -> list[Any]:
        """Write each file atomically and record its checksum (inside a write transaction)."""
        import hashlib

        from pipeline.files import atomic_write

        paths = []
        for path, data in contents.items():
            atomic_write(path, data)
            self._record_document(encounter_id, path, hashlib.sha256(data).hexdigest())
            paths.append(path)
        return paths

    def _record_document(self, encounter_id: int, path: Any, sha256: str) -> None:
        """One row of ``documents``: the file's absolute path and hex SHA-256 (in a write transaction)."""
        self._db.execute("INSERT INTO documents (encounter_id, path, sha256, written_at) VALUES (?, ?, ?, ?)",
                         (encounter_id, str(Path(path).absolute()), sha256, _now()))

    def record_documents(self, encounter_id: int, paths: list[Any]) -> list[Any]:
        """Record the checksums of files already written for an encounter (a packet's revision).

        Parameters
        ----------
        encounter_id : int
            The encounter's row id in the ledger.
        paths : list of pathlib.Path
            Files that no other process writes (e.g. a new revision folder's files).

        Returns
        -------
        list of pathlib.Path
            ``paths``, each recorded with its absolute path and hex SHA-256 (hashed before the
            write lock is taken).
        """
        from pipeline.files import sha256_file

        digests = [(path, sha256_file(path)) for path in paths]
        with self._write():
            for path, digest in digests:
                self._record_document(encounter_id, path, digest)
        return list(paths)
