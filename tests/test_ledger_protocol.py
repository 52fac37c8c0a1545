"""The ledger's publishing protocol under real concurrent processes and real SIGKILLs.

Each worker is a separate Python process (this file run as a script) that drives the protocol
with small real packets: a folder of files and a real ``SHA256SUMS``. The imaging pipeline is
exercised by ``test_batch.py``; here the point is the database and the file system.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.coding import BillableModel
from pipeline.ledger import Ledger, folder_problems
from postgres_server import new_ledger, postgres_server  # noqa: F401  (fixtures: both back ends)

HERE = Path(__file__).resolve()
PATIENT = "PT-PROTOCOL"
DATE = dt.date(2026, 1, 15)
#: Repetitions of the randomised tests; raise it for a stress run (``ANATOMODEL_LEDGER_TRIALS=10``).
TRIALS = int(os.environ.get("ANATOMODEL_LEDGER_TRIALS", "2"))
#: Points at which a worker kills itself with SIGKILL (see ``_arm``).
CRASH_POINTS = ("reserved", "writing", "before-rename", "after-rename", "after-commit")


def billable(case_id: str, model_id: str, patient: str = PATIENT) -> BillableModel:
    return BillableModel(model_id=model_id, patient_id=patient, date_of_service=DATE, icd10=("I71.21",),
                         case_id=case_id, structure=model_id)


#: A clinician (NPI with a valid check digit) and a technologist for the lifecycle steps.
REVIEWER = ("RADIOLOGIST^REVIEW", "radiologist", "1234567893")
TECH = ("TECH^LAB", "technologist", None)


def walk(ledger: Ledger, case_id: str, model_id: str, until: str = "delivered") -> dict:
    """Take a published model through approval, printing, post-processing and delivery (without a
    print check, under a QA policy that requires none) up to ``until``."""
    from pipeline.ledger.lifecycle import Person

    steps = [("approved", Person(*REVIEWER), {}),
             ("printed", Person(*TECH), {"printer": "formlabs_form3b", "serial": "F3B-0042", "material": "Clear V4",
                                         "lot": "L-7781", "layer_height_mm": 0.1,
                                         "job_start": "2026-01-16T08:00:00+00:00",
                                         "job_end": "2026-01-16T13:30:00+00:00"}),
             ("post_processed", Person(*TECH), {"steps": ["cleaning", "curing", "support_removal"]}),
             # Delivered unchecked, as a lab whose QA policy does not require a print check (configs/qa/optional.yaml).
             ("delivered", Person(*TECH), {"recipient": "Cardiac surgery", "purpose": "surgical planning",
                                           "qa_policy": "optional", "qa_required": False})]
    state = ledger.model_state(case_id, model_id)
    for step, person, detail in steps:
        state = ledger.record_step(case_id, model_id, step, person, detail=detail, minutes=10)
        if step == until:
            break
    return state


def deliver_all(ledger: Ledger) -> None:
    """Deliver every current model of the ledger that is still only prepared."""
    for row in ledger._db.execute("SELECT cs.case_id, m.model_id FROM models m JOIN cases cs ON cs.id = m.case_ref "
                                  "WHERE m.status = 'current' ORDER BY m.committed_at").fetchall():
        if ledger.model_state(row["case_id"], row["model_id"])["state"] == "prepared":
            walk(ledger, row["case_id"], row["model_id"])


def write_packet(folder: Path, model_id: str, payload_bytes: int = 200_000, *, halfway=None) -> None:
    """A small real packet: three files and a ``SHA256SUMS`` over them, written in chunks."""
    seed = int.from_bytes(hashlib.sha256(f"{model_id}{time.time_ns()}".encode()).digest()[:4], "little")
    data = random.Random(seed).randbytes(payload_bytes)
    with open(folder / "model.stl", "wb") as handle:
        for start in range(0, payload_bytes, 16_384):
            handle.write(data[start:start + 16_384])
            if halfway and start >= payload_bytes // 2:
                halfway()
    (folder / "packet.json").write_text(json.dumps({"model_id": model_id, "bytes": payload_bytes}))
    (folder / "sub").mkdir()
    (folder / "sub" / "plan.json").write_text("{}")
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    sums = "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    (folder / "SHA256SUMS").write_text(sums)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(crash_at: str | None):
    """Make this process SIGKILL itself at one point of the protocol; return the packet hook."""
    from pipeline.ledger import folders

    if crash_at == "before-rename":
        folders.publish_folder = lambda *a: _die()
    elif crash_at == "after-rename":
        real_publish = folders.publish_folder
        folders.publish_folder = lambda *a: (real_publish(*a), _die())
    elif crash_at == "after-commit":
        real_remove = folders.remove_folder
        folders.remove_folder = lambda path: _die() if ".staging-" in str(path) else real_remove(path)
    return _die if crash_at == "writing" else None


def publish_models(ledger_path: str | Path, out: str | Path, case_id: str, model_ids: list[str], *,
                   crash_at: str | None = None, go: str | None = None, payload: int = 200_000) -> list[dict]:
    """One run of a case that publishes the given models through the ledger protocol."""
    halfway = _arm(crash_at)
    print("ready", flush=True)  # imports done: the protocol starts now, or when told to
    while go and not os.path.exists(go):  # line the workers up so their transactions collide
        time.sleep(0.0005)
    published = []
    with Ledger(ledger_path) as ledger, ledger.start_run(case_id=case_id, patient_id=PATIENT,
                                                         date_of_service=DATE) as run:
        for model_id in model_ids:
            reservation = run.reserve(model_id, billable(case_id, model_id), Path(out) / case_id / model_id)
            if crash_at == "reserved":
                _die()
            write_packet(reservation.staging, model_id, payload, halfway=halfway)
            model = run.publish(reservation)
            published.append({"model_id": model_id, "version": model.version, "cpt": model.charge_line.cpt})
            print(f"published {model_id}", flush=True)
    return published


def _spawn(*args: str, go: Path | None = None, crash_at: str | None = None) -> subprocess.Popen:
    command = [sys.executable, str(HERE), *args] + (["--go", str(go)] if go else [])
    if crash_at:
        command += ["--crash-at", crash_at]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _start_together(workers: list[subprocess.Popen], go: Path) -> None:
    """Wait until every worker has imported everything, then let them all go at once."""
    for worker in workers:
        assert worker.stdout.readline() == "ready\n", worker.communicate()[1]
    go.touch()


def _charges(ledger_path: Path) -> list[tuple[str, str, str, str]]:
    with Ledger(ledger_path) as ledger:
        rows = ledger.export()["charges"]
    return [(r["case_id"], r["model_id"], r["cpt"], r["status"]) for r in rows]


def _current_versions(ledger_path: Path, case_id: str) -> dict[str, int]:
    with Ledger(ledger_path) as ledger:
        models = ledger.show(case_id)["models"]
    return {m["model_id"]: m["version"] for m in models if m["status"] == "current"}


def _assert_disk_clean(out: Path) -> None:
    """Every model folder is complete and no staging folder is left."""
    for case in out.iterdir():
        leftovers = [p.name for p in case.iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers
        for model in case.iterdir():
            assert folder_problems(model) == []


def _verify(ledger_path: Path) -> list[str]:
    """Problems ``ledger verify`` finds (it first settles the attempts of dead processes)."""
    with Ledger(ledger_path) as ledger:
        return ledger.verify().problems


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_processes_on_one_encounter_number_exactly_one_first_model(tmp_path, processes, new_ledger):
    for trial in range(TRIALS):
        ledger_path, out = new_ledger(f"ledger{trial}"), tmp_path / f"out{trial}"
        Ledger(ledger_path).close()
        go = tmp_path / f"go{trial}"
        # Two cases of the same patient and date: one encounter across cases and processes.
        workers = [_spawn(str(ledger_path), str(out), f"CASE-{i % 2}", f"model-{i}", go=go)
                   for i in range(processes)]
        _start_together(workers, go)
        results = [w.communicate(timeout=120) for w in workers]
        assert [w.returncode for w in workers] == [0] * processes, [err for _, err in results]
        charges = _charges(ledger_path)
        codes = sorted(cpt for *_, cpt, status in charges if status == "committed")
        assert codes == ["0559T"] + ["0560T"] * (processes - 1)
        assert sorted(model for _, model, *_ in charges) == [f"model-{i}" for i in range(processes)]
        with Ledger(ledger_path) as ledger:
            report = ledger.verify()
            assert report.ok, report.problems
            assert report.packets_checked == processes
        _assert_disk_clean(out)


def test_same_model_in_two_processes_makes_versions_not_charges(tmp_path, new_ledger):
    ledger_path, out = new_ledger(), tmp_path / "out"
    go = tmp_path / "go"
    workers = [_spawn(str(ledger_path), str(out), "CASE-A", "aorta", go=go) for _ in range(3)]
    _start_together(workers, go)
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()
    assert _charges(ledger_path) == [("CASE-A", "aorta", "0559T", "committed")]
    with Ledger(ledger_path) as ledger:
        versions = sorted(m["version"] for m in ledger.show("CASE-A")["models"])
        assert versions == [1, 2, 3]
        assert ledger.verify().ok
    _assert_disk_clean(out)


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_sigkill_at_each_protocol_step_leaves_ledger_and_disk_consistent(tmp_path, crash_at, new_ledger):
    ledger_path, out = new_ledger(), tmp_path / "out"
    models = ["aorta", "ventricle"]
    first = publish_models(ledger_path, out, "CASE-K", models)
    assert [m["cpt"] for m in first] == ["0559T", "0560T"]

    killed = _spawn(str(ledger_path), str(out), "CASE-K", "aorta", "extra", crash_at=crash_at)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL

    assert _verify(ledger_path) == []
    _assert_disk_clean(out)
    # The interrupted version was either completed by recovery or abandoned, never half-kept.
    rolled_forward = crash_at in ("after-rename", "after-commit")
    assert _current_versions(ledger_path, "CASE-K")["aorta"] == (2 if rolled_forward else 1)

    again = publish_models(ledger_path, out, "CASE-K", ["aorta", "extra"])
    assert [m["cpt"] for m in again] == ["0559T", "0560T"]
    assert _current_versions(ledger_path, "CASE-K") == {"aorta": 3 if rolled_forward else 2,
                                                         "ventricle": 1, "extra": 1}
    assert sorted(c[2] for c in _charges(ledger_path)) == ["0559T", "0560T", "0560T"]
    assert _verify(ledger_path) == []
    _assert_disk_clean(out)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_repeat(tmp_path, new_ledger):
    ledger_path, out = new_ledger(), tmp_path / "out"
    payload = ["--payload", "3000000"]
    timing = _spawn(str(ledger_path), str(out), "CASE-TIMING", *[f"t-m{i}" for i in range(4)], *payload)
    assert timing.stdout.readline() == "ready\n"
    began = time.perf_counter()
    assert timing.wait(timeout=120) == 0
    per_model = (time.perf_counter() - began) / 4  # protocol time per model, without start-up
    generator = random.Random(20260115)
    trials = 3 * TRIALS
    for trial in range(trials):
        case, models = f"CASE-R{trial}", [f"r{trial}-m{i}" for i in range(4)]
        process = _spawn(str(ledger_path), str(out), case, *models, *payload)
        # A random moment within a random model's turn: robust to the machine's load.
        for _ in range(1 + generator.randrange(len(models))):
            assert process.stdout.readline() in ("ready\n", *(f"published {m}\n" for m in models))
        time.sleep(generator.uniform(0.0, per_model))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert _verify(ledger_path) == []
        _assert_disk_clean(out)
        again = publish_models(ledger_path, out, case, models)
        assert [m["model_id"] for m in again] == models
    with Ledger(ledger_path) as ledger:
        deliver_all(ledger)
        export = ledger.export()
        assert ledger.verify().ok
        interrupted = ledger._db.execute("SELECT COUNT(*) FROM runs WHERE status = 'interrupted'").fetchone()[0]
    assert interrupted >= trials // 2  # most kills landed inside a run, not before or after it
    # Every case is the same patient and date of service: one encounter, one 0559T in all.
    assert all(c["status"] == "committed" for c in export["charges"])
    assert len(export["charges"]) == 4 * (trials + 1)
    assert sum(c["cpt"] == "0559T" for c in export["charges"]) == 1
    assert [(c["cpt"], c["units"]) for c in export["claims"][0]["lines"]] == [("0559T", 1), ("0560T", 4 * (trials + 1) - 1)]


def test_dead_first_reservation_is_completed_by_repeating_its_run(tmp_path, new_ledger):
    ledger_path, out = new_ledger(), tmp_path / "out"
    killed = _spawn(str(ledger_path), str(out), "CASE-D", "first", crash_at="reserved")
    killed.communicate(timeout=60)
    second = publish_models(ledger_path, out, "CASE-E", ["second"])
    assert second[0]["cpt"] == "0560T"  # provisional: the dead run's 0559T stays with its model id
    with Ledger(ledger_path) as ledger:
        report = ledger.verify()
        assert report.ok and any("reserved" in note for note in report.notes)
        deliver_all(ledger)
        claim = ledger.export()["claims"][0]
        # The dead reservation blocks nothing: numbering follows the delivered models.
        assert [(c["cpt"], c["units"], c["model_ids"]) for c in claim["lines"]] == [("0559T", 1, ["second"])]
        assert [(p["model_id"], p["waiting_for"][:10]) for p in claim["pending"]] == [("first", "its packet")]
    assert publish_models(ledger_path, out, "CASE-D", ["first"])[0]["cpt"] == "0559T"
    with Ledger(ledger_path) as ledger:
        deliver_all(ledger)
        claims = ledger.export()["claims"][0]["lines"]
    assert [(c["cpt"], c["units"], c["model_ids"]) for c in claims] == [("0559T", 1, ["second"]),
                                                                         ("0560T", 1, ["first"])]


def test_documents_built_from_a_stale_snapshot_are_built_again_never_written(tmp_path, new_ledger):
    """``write_documents`` builds outside the write lock. When another process changes the
    encounter between the snapshot and the lock, the files made from the old state are not
    written: they are built again (the third time under the lock), and the file on disk and its
    recorded checksum show the state the ledger has."""
    from pipeline.ledger.lifecycle import Person

    ledger_path, out = new_ledger(), tmp_path / "out"
    publish_models(ledger_path, out, "CASE-W", ["first"])
    printed = {"printer": "formlabs_form3b", "serial": "F3B-0042", "material": "Clear V4", "lot": "L-7781",
               "layer_height_mm": 0.1, "job_start": "2026-01-16T08:00:00+00:00", "job_end": "2026-01-16T13:30:00+00:00"}
    seen = []

    def build(billing):
        seen.append([(e.model_id, e.state, e.waiting_for) for e in billing.billable + billing.pending])
        if len(seen) <= 2:  # another process takes the model one step on, while this one builds
            with Ledger(ledger_path) as other:
                if len(seen) == 1:
                    other.record_step("CASE-W", "first", "approved", Person(*REVIEWER), minutes=10)
                else:
                    other.record_step("CASE-W", "first", "printed", Person(*TECH), detail=printed, minutes=10)
        return {out / "encounter.txt": repr(seen[-1]).encode()}

    with Ledger(ledger_path) as ledger:
        encounter = ledger.case_billing("CASE-W").encounter_id
        paths = ledger.write_documents(encounter, build, attempts=3)
        final = [(e.model_id, e.state, e.waiting_for) for e in ledger.billing(encounter).billable
                 + ledger.billing(encounter).pending]
        report = ledger.verify()
    assert [states[0][1] for states in seen] == ["prepared", "approved", "printed"]
    assert paths == [out / "encounter.txt"] and (out / "encounter.txt").read_text() == repr(final) == repr(seen[-1])
    assert report.ok, report.problems  # the recorded checksum is the file's


def main() -> None:
    parser = argparse.ArgumentParser(description="publish models through the ledger protocol")
    parser.add_argument("ledger")
    parser.add_argument("out")
    parser.add_argument("case_id")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--crash-at", choices=CRASH_POINTS)
    parser.add_argument("--go", help="start when this file exists")
    parser.add_argument("--payload", type=int, default=200_000)
    args = parser.parse_args()
    published = publish_models(args.ledger, args.out, args.case_id, args.models, crash_at=args.crash_at,
                               go=args.go, payload=args.payload)
    print(json.dumps(published))


if __name__ == "__main__":
    main()
