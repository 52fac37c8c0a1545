"""Batch runs: manifests, and real cases through ``run_case`` on a real Dask ``LocalCluster`` (one
the test starts, and the one ``run_batch`` starts and stops by default), all writing one SQLite
ledger; per-case costs (wall, CPU, queued seconds, peak memory, worker) checked against bounds
derived from the machine and the cluster."""

from __future__ import annotations

import json
import os
import socketserver
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.batch import MIN_MEMORY_LIMIT, parse_memory_limit, read_manifest, run_batch, run_one_case
from pipeline.errors import AnatomodelError, ConfigError, DicomError
from pipeline.ledger import Ledger, folder_problems
from postgres_server import postgres_server  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
#: Smaller than the default phantom (about 1.7 mm voxels) to keep the end-to-end runs quick.
PHANTOM_SCALE = 0.6


# -- manifests ----------------------------------------------------------------------------------
def test_manifest_formats_resolve_against_the_manifest_folder(tmp_path):
    (tmp_path / "m").mkdir()
    expected = [tmp_path / "m" / "a.yaml", tmp_path / "cases" / "b.yaml"]
    forms = {
        "header.csv": "case,note\na.yaml,first\n../cases/b.yaml,second\n",
        "plain.csv": "# a comment\na.yaml\n\n../cases/b.yaml\n",
        "list.yaml": "- a.yaml\n- ../cases/b.yaml\n",
        "mapping.yml": "cases:\n  - a.yaml\n  - {case: ../cases/b.yaml}\n",
    }
    for name, text in forms.items():
        (tmp_path / "m" / name).write_text(text)
        assert [p.resolve() for p in read_manifest(tmp_path / "m" / name)] == [p.resolve() for p in expected], name


@pytest.mark.parametrize("name, text, message", [
    ("empty.csv", "case\n", "lists no case files"),
    ("hole.csv", "case,note\n,x\n", "row 2 has no 'case' value"),
    ("bad.yaml", "cases: 3\n", "expected a list"),
    ("bad2.yaml", "- a.yaml\n- 7\n", "entry 2"),
    ("cases.txt", "a.yaml\n", "expected a .csv, .yaml or .yml"),
])
def test_bad_manifests_are_refused_with_the_reason(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_manifest(tmp_path / name)
    with pytest.raises(ConfigError, match="not found"):
        read_manifest(tmp_path / "missing.csv")


# -- real cases ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def phantom_series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch_phantom") / "cta"
    write_dicom_series(make_phantom(PHANTOM_SCALE), folder)
    return folder


def patient_series(dicom: Path, number: int) -> Path:
    """A copy of the series whose headers name patient ``number`` (the run checks the identity)."""
    import pydicom

    copy = dicom.parent / f"{dicom.name}-PT{number:04d}"
    if dicom.is_dir() and not copy.exists():
        copy.mkdir()
        for path in dicom.glob("IM*"):
            ds = pydicom.dcmread(path)
            ds.PatientID, ds.PatientName = f"PT{number:04d}", f"PHANTOM^NUMBER{number}"
            ds.save_as(copy / path.name)
    return copy if dicom.is_dir() else dicom


def write_case(folder: Path, number: int, dicom: Path, models: int = 2) -> Path:
    """The example case as patient ``number`` (its own encounter), on a copy of the series for them.

    With ``models=1`` only the example's cheaper model (the left ventricle) is kept.
    """
    case = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case["case_id"] = f"BATCH-{number:03d}"
    case["patient"].update(id=f"PT{number:04d}", name=f"PHANTOM^NUMBER{number}")
    case["imaging"]["dicom"] = str(patient_series(dicom, number))
    case["models"] = case["models"][-models:]
    path = folder / f"case{number}.yaml"
    path.write_text(yaml.safe_dump(case, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def dask_batch(tmp_path_factory, phantom_series):
    """Four cases on a two-worker LocalCluster: case 1 has two models, 2 and 4 one each, and
    case 3's DICOM folder is missing."""
    from distributed import LocalCluster

    root = tmp_path_factory.mktemp("dask_batch")
    (root / "cases").mkdir()
    cases = [write_case(root / "cases", 1, phantom_series), write_case(root / "cases", 2, phantom_series, 1),
             write_case(root / "cases", 3, root / "no-such-series"), write_case(root / "cases", 4, phantom_series, 1)]
    manifest = root / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"cases": [f"cases/{c.name}" for c in cases]}))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="2GiB") as cluster:
        report = run_batch(manifest, root / "out", scheduler=cluster.scheduler_address,
                           ledger=root / "ledger.sqlite3", progress=False)
        workers = set(cluster.scheduler_info["workers"])
    return root, report, workers


def assert_costs_consistent(report, workers: set[str], memory_limit: int) -> None:
    """Each case's figures within what the machine and the cluster allow.

    A process cannot use more CPU time than its wall time on every core it may run on; a case
    cannot queue longer than the batch lasted; a worker holds at least the case's CT volume
    (int16) and is restarted by Dask above 95 % of its limit; two single-threaded workers cannot
    spend more case time than twice the batch's wall time.
    """
    cores = len(os.sched_getaffinity(0))
    voxels = int(np.prod(make_phantom(PHANTOM_SCALE).hu.shape))
    for outcome in report.outcomes:
        assert outcome.worker in workers, outcome
        assert 0 < outcome.wall_seconds <= report.seconds
        assert 0 <= outcome.cpu_seconds <= outcome.wall_seconds * cores + 0.05, outcome  # 10 ms clock ticks
        assert 0 <= outcome.queued_seconds <= report.seconds, outcome
        assert outcome.peak_rss_mib * 2**20 < 0.95 * memory_limit, outcome
        if outcome.ok:
            assert outcome.peak_rss_mib * 2**20 > 2 * voxels, outcome
    assert sum(o.wall_seconds for o in report.outcomes) <= len(workers) * report.seconds
    assert report.cases_per_minute == pytest.approx(60 * len(report.outcomes) / report.seconds)
    data = json.loads(report.to_json())
    assert {"wall_seconds", "cpu_seconds", "queued_seconds", "peak_rss_mib", "worker"} <= set(data["outcomes"][0])
    assert data["dashboard"] == report.dashboard


def deliver_and_release(ledger: Ledger) -> None:
    """Deliver every prepared model and release its holds (the trainee model is education-only)."""
    from pipeline.ledger.lifecycle import Person
    from test_ledger_protocol import deliver_all

    deliver_all(ledger)
    for case in ledger.list_cases():
        for state in ledger.show(case["case_id"])["lifecycle"]:
            for hold in state["holds"]:
                if hold["released_by"] is None:
                    ledger.release(case["case_id"], state["model_id"], hold["code"], Person("CODER^CHIEF", "coder"),
                                   reason="payer policy checked")


def _charges(ledger_path: Path) -> list[tuple[str, str, str, str]]:
    with Ledger(ledger_path) as ledger:
        return [(c["case_id"], c["model_id"], c["cpt"], c["status"]) for c in ledger.export()["charges"]]


@pytest.mark.slow
def test_dask_batch_three_packets_one_clear_failure_consistent_ledger(dask_batch):
    root, report, workers = dask_batch
    assert report.scheduler.startswith("tcp://127.0.0.1:") and not report.local_cluster
    assert report.workers == 2 and report.memory_limit == 2 << 30  # the cluster's own workers and limits
    assert report.dashboard.startswith("http://127.0.0.1:") and report.dashboard.endswith("/status")
    assert_costs_consistent(report, workers, memory_limit=2 << 30)
    assert [o.ok for o in report.outcomes] == [True, True, False, True]
    failure = report.failed[0]
    assert failure.error_type == "DicomError" and "no-such-series" in failure.error
    assert report.exit_code == failure.exit_code != 0
    assert [o.models for o in report.outcomes] == [["aorta-surgeon", "ventricle-or"], ["ventricle-or"],
                                                   [], ["ventricle-or"]]
    for outcome in report.outcomes:
        for model in outcome.models:
            assert folder_problems(root / "out" / outcome.case_id / model) == []
    assert len(list((root / "out" / "encounters").glob("*/charges.json"))) == 3  # one claim per encounter
    assert not (root / "out" / "BATCH-003").exists() or not any((root / "out" / "BATCH-003").iterdir())

    with Ledger(root / "ledger.sqlite3") as ledger:
        verify = ledger.verify()
        assert verify.ok and verify.packets_checked == 4 and not verify.notes, verify.problems
        deliver_and_release(ledger)
        claims = {c["patient_id"]: [(line["cpt"], line["units"]) for line in c["lines"]]
                  for c in ledger.export()["claims"]}
        runs = {case["case_id"]: ledger.show(case["case_id"])["runs"] for case in ledger.list_cases()}
    assert claims == {"PT0001": [("0559T", 1), ("0560T", 1)], "PT0002": [("0559T", 1)], "PT0004": [("0559T", 1)]}
    assert "BATCH-003" not in runs  # its missing series was found before the ledger recorded a run
    assert all([r["status"] for r in runs[f"BATCH-{n:03d}"]] == ["ok"] for n in (1, 2, 4))


@pytest.mark.slow
def test_rerun_on_the_default_local_cluster_keeps_charges_and_makes_version_two(dask_batch, capsys):
    """``anatomodel batch`` (its own LocalCluster, stopped after) repeats case 1 beside two failing entries."""
    from distributed import Client

    from pipeline.cli import main

    root, _, _ = dask_batch
    ledger_path = root / "ledger.sqlite3"
    before = _charges(ledger_path)
    manifest = root / "again.csv"
    manifest.write_text("case\ncases/case1.yaml\ncases/case3.yaml\ncases/missing.yaml\n")
    code = main(["batch", str(manifest), "--workers", "2", "--out", str(root / "out"),
                 "--ledger", str(ledger_path), "--json"])
    printed = capsys.readouterr()
    report = json.loads(printed.out)
    assert code == DicomError.exit_code  # the first failure in manifest order
    assert [(o["ok"], o["error_type"]) for o in report["outcomes"]] == [
        (True, None), (False, "DicomError"), (False, "ConfigError")]
    assert "missing.yaml not found" in report["outcomes"][2]["error"]
    assert "2 of 3 case(s) failed" in " ".join(printed.err.split())
    assert report["local_cluster"] and report["workers"] == 2 and report["memory_limit"] == 3 << 30
    assert f"Dask dashboard: {report['dashboard']}" in printed.err
    assert all(o["worker"].startswith("tcp://127.0.0.1:") for o in report["outcomes"])
    with pytest.raises(OSError):  # the batch stopped the cluster it started
        Client(report["scheduler"], timeout="2s")

    assert _charges(ledger_path) == before
    with Ledger(ledger_path) as ledger:
        versions = {(m["model_id"], m["version"], m["status"]) for m in ledger.show("BATCH-001")["models"]}
        assert ledger.verify().ok
    assert versions == {("aorta-surgeon", 1, "superseded"), ("aorta-surgeon", 2, "current"),
                        ("ventricle-or", 1, "superseded"), ("ventricle-or", 2, "current")}
    with Ledger(ledger_path) as ledger:  # version 2 needs approval again; then it is billed as before
        deliver_and_release(ledger)
        claims = {c["patient_id"]: [(line["cpt"], line["units"]) for line in c["lines"]]
                  for c in ledger.export()["claims"]}
    assert claims["PT0001"] == [("0559T", 1), ("0560T", 1)]


@pytest.mark.parametrize("value, message", [
    ("512MiB", "512 MiB per worker, too little"), ("3 lots", "not a size"), ("", "not a size"),
    ("0", "too little")])
def test_a_bad_memory_limit_is_refused_before_any_work(tmp_path, capsys, value, message):
    from pipeline.cli import main

    (tmp_path / "m.csv").write_text("case\na.yaml\n")
    code = main(["batch", str(tmp_path / "m.csv"), "--memory-limit", value, "--out", str(tmp_path / "out"),
                 "--ledger", str(tmp_path / "l.sqlite3")])
    assert code == ConfigError.exit_code == 4
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists() and not (tmp_path / "l.sqlite3").exists()  # nothing started


def test_memory_limits_parse_as_dask_sizes():
    assert parse_memory_limit("3GiB") == 3 * 2**30 and parse_memory_limit("1500 MB") == 1_500_000_000
    assert parse_memory_limit(MIN_MEMORY_LIMIT) == MIN_MEMORY_LIMIT == 2**30
    with pytest.raises(ConfigError):
        parse_memory_limit(MIN_MEMORY_LIMIT - 1)


def _vm_hwm_mib() -> float:
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))


def test_a_case_measures_its_own_peak_memory_not_the_process_history(tmp_path):
    """The peak of a case that allocates nothing is far below an earlier, freed 300 MiB peak."""
    block = np.ones(300 * 2**20, dtype=np.uint8)  # touched: resident
    del block
    before = _vm_hwm_mib()
    outcome = run_one_case(str(tmp_path / "missing.yaml"), str(tmp_path / "out"), str(tmp_path / "l.sqlite3"))
    assert (outcome.ok, outcome.error_type, outcome.exit_code) == (False, "ConfigError", ConfigError.exit_code)
    assert outcome.worker is None and outcome.queued_seconds is None  # not on a Dask worker, not submitted
    assert before >= 300 and outcome.peak_rss_mib < before - 250
    assert 0 <= outcome.cpu_seconds <= outcome.wall_seconds * len(os.sched_getaffinity(0)) + 0.05


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("case\na.yaml\n")
    with pytest.raises(AnatomodelError, match="cannot reach the Dask scheduler at nowhere"):
        run_batch(tmp_path / "m.csv", tmp_path / "out", scheduler="nowhere", ledger=tmp_path / "l.sqlite3")


@pytest.mark.slow
def test_a_batch_on_a_postgresql_ledger_with_a_held_case_exits_19(tmp_path, phantom_series, postgres_server, capsys):
    """``anatomodel batch`` on a ledger URL (the real server): one clean case, one whose model is for
    trainee education (held: likely not medically necessary). Done, but held: exit 19, not 0."""
    from pipeline.cli import main
    from pipeline.errors import HeldForReview

    url = postgres_server.new_database()
    (tmp_path / "cases").mkdir()
    clean = write_case(tmp_path / "cases", 6, phantom_series, 1)
    held = write_case(tmp_path / "cases", 7, phantom_series, 1)
    case = yaml.safe_load(held.read_text())
    case["models"][0]["purpose"] = "trainee_education"
    held.write_text(yaml.safe_dump(case, sort_keys=False))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"case\ncases/{clean.name}\ncases/{held.name}\n")
    # One worker: case 6 is charged first, so case 7's identical mesh (the same series) is its reprint.
    code = main(["batch", str(manifest), "--workers", "1", "--out", str(tmp_path / "out"), "--ledger", url, "--json"])
    printed = capsys.readouterr()
    report = json.loads(printed.out)
    assert code == HeldForReview.exit_code == 19, printed.err
    assert [(o["ok"], o["holds"]) for o in report["outcomes"]] == [
        (True, []), (True, ["ventricle-or coding.education_only", "ventricle-or ledger.duplicate_mesh"])]
    assert report["ledger"] == url  # the URL as given, not a path made of it
    assert "held for review" in " ".join(printed.err.split())
    with Ledger(url) as ledger:  # both cases are in the server's ledger, one claim each once delivered
        assert {c["case_id"] for c in ledger.list_cases()} == {"BATCH-006", "BATCH-007"}
        assert ledger.verify().ok


# -- a case over the memory limit ---------------------------------------------------------------
#: The series of a case too large for a 1 GiB worker: its case peaked at 1.14 GiB resident in a
#: bare process (1.0 GiB when its worker was restarted), against 0.47 GiB for the small phantom's.
BIG_SHAPE = (400, 512, 512)


@pytest.mark.slow
def test_a_case_over_the_memory_limit_fails_alone_once_and_the_next_case_runs(tmp_path, phantom_series, capsys):
    """One worker of 1 GiB, the oversized case first: it is reported as out of memory (exit 22),
    run once (one run in the ledger, not Dask's four attempts), and the small case after it,
    well under the limit, succeeds on the restarted worker."""
    from pipeline.cli import main
    from pipeline.errors import MemoryLimitExceeded

    write_dicom_series(make_phantom(shape=BIG_SHAPE), tmp_path / "big", with_truth=False)
    case = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case["case_id"], case["imaging"]["dicom"] = "BATCH-BIG", str(tmp_path / "big")  # the phantom's own patient
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(case, sort_keys=False))
    small = write_case(tmp_path, 9, phantom_series, 1)
    (tmp_path / "mem.csv").write_text(f"case\nbig.yaml\n{small.name}\n")
    ledger = tmp_path / "l.sqlite3"
    code = main(["batch", str(tmp_path / "mem.csv"), "--workers", "1", "--memory-limit", "1GiB",
                 "--out", str(tmp_path / "out"), "--ledger", str(ledger), "--json"])
    printed = capsys.readouterr()
    big, done = json.loads(printed.out)["outcomes"]
    assert code == MemoryLimitExceeded.exit_code == 22, printed.err
    assert (big["ok"], big["error_type"], big["exit_code"]) == (False, "MemoryLimitExceeded", 22)
    assert big["error"].startswith("ran out of memory: the worker exceeded --memory-limit 1GiB")
    assert "give more memory or fewer workers" in big["error"]
    assert done["ok"] and done["case_id"] == "BATCH-009" and done["peak_rss_mib"] < 0.8 * 1024, done
    with sqlite3.connect(ledger) as db:  # each attempt of a case starts a run
        runs = dict(db.execute("SELECT c.case_id, COUNT(*) FROM runs r JOIN cases c ON c.id = r.case_ref "
                               "GROUP BY c.case_id").fetchall())
    assert runs == {"BATCH-BIG": 1, "BATCH-009": 1}


def test_a_worker_lost_otherwise_is_an_environment_fault_not_a_bug(tmp_path):
    from concurrent.futures import CancelledError

    from pipeline.batch import _lost
    from pipeline.errors import EnvironmentFault

    outcome = _lost(None, str(tmp_path / "a.yaml"), CancelledError("lost"), "--memory-limit 1GiB", 0.0)
    assert (outcome.ok, outcome.error_type, outcome.exit_code) == (False, "EnvironmentFault", EnvironmentFault.exit_code)
    assert outcome.error.startswith("worker lost: CancelledError: lost")


class _AnsweringHTTP(socketserver.BaseRequestHandler):
    """Answers before it is asked, as the dashboard's web server answers a Dask handshake."""

    def handle(self):
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("server", ["http.server", "answering"])
def test_a_scheduler_address_that_is_not_dask_is_a_clear_error(tmp_path, capsys, server):
    """An HTTP port given as the scheduler (the dashboard's 8787 for 8786): exit 3, as for an
    unreachable scheduler, naming the likely mistake; nothing is run. A plain ``http.server``
    says nothing until it has a request line (Dask's client would wait for ever); one that
    answers at once has its answer read as frame sizes (``MemoryError``) by Dask."""
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    from pipeline.cli import main

    httpd = (HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler) if server == "http.server"
             else socketserver.ThreadingTCPServer(("127.0.0.1", 0), _AnsweringHTTP))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    (tmp_path / "m.csv").write_text("case\na.yaml\n")
    try:
        code = main(["batch", str(tmp_path / "m.csv"), "--scheduler", f"tcp://127.0.0.1:{httpd.server_address[1]}",
                     "--out", str(tmp_path / "out"), "--ledger", str(tmp_path / "l.sqlite3")])
    finally:
        httpd.shutdown()
        httpd.server_close()
    err = " ".join(capsys.readouterr().err.split())
    assert code == AnatomodelError.exit_code == 3, err
    assert "answers but does not speak the Dask protocol (is it the dashboard port?)" in err
    assert "internal error" not in err and "MemoryError: Unable to allocate" not in err


def test_an_empty_scheduler_address_is_a_usage_error_not_a_local_cluster(tmp_path, capsys):
    from pipeline.cli import main

    (tmp_path / "m.csv").write_text("case\na.yaml\n")
    code = main(["batch", str(tmp_path / "m.csv"), "--scheduler", " ", "--out", str(tmp_path / "out"),
                 "--ledger", str(tmp_path / "l.sqlite3")])
    assert code == 2 and "--scheduler" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--scheduler is empty"):
        run_batch(tmp_path / "m.csv", tmp_path / "out", scheduler="", ledger=tmp_path / "l.sqlite3")
    assert not (tmp_path / "out").exists() and not (tmp_path / "l.sqlite3").exists()  # nothing started


def test_a_memory_limit_above_the_machine_is_refused_and_too_many_workers_warned(tmp_path, capsys):
    from distributed.system import MEMORY_LIMIT
    from rich.console import Console

    from pipeline.batch import _check_machine_memory

    with pytest.raises(ConfigError, match="more than this machine's memory"):
        run_batch(tmp_path / "m.csv", tmp_path / "out", memory_limit=MEMORY_LIMIT + 2**30, ledger=tmp_path / "l.sqlite3")
    assert not (tmp_path / "out").exists()  # refused before the manifest is even read
    _check_machine_memory(MIN_MEMORY_LIMIT, 1, Console(stderr=True))  # fits: silent
    assert "warning" not in capsys.readouterr().err
    workers = MEMORY_LIMIT // MIN_MEMORY_LIMIT + 1
    _check_machine_memory(MIN_MEMORY_LIMIT, workers, Console(stderr=True, width=200))
    assert f"{workers} workers of 1.00 GiB may use more than this machine's" in capsys.readouterr().err


def test_a_failed_case_reports_the_case_id_its_file_gives(tmp_path):
    case = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case["case_id"], case["imaging"]["dicom"] = "BATCH-NODICOM", str(tmp_path / "no-such-series")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(case, sort_keys=False))
    outcome = run_one_case(str(tmp_path / "c.yaml"), str(tmp_path / "out"), str(tmp_path / "l.sqlite3"))
    assert (outcome.ok, outcome.case_id, outcome.exit_code) == (False, "BATCH-NODICOM", DicomError.exit_code)
    (tmp_path / "bad.yaml").write_text("case_id: [unclosed\n")
    assert run_one_case(str(tmp_path / "bad.yaml"), str(tmp_path / "out"), str(tmp_path / "l.sqlite3")).case_id is None
