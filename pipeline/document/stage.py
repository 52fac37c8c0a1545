"""The document stage alone, on a model folder written by earlier runs (``anatomodel document``)."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import trimesh

from pipeline.document.inputs import PacketInputs, PacketReport
from pipeline.errors import DocumentError

log = logging.getLogger(__name__)

#: Files of earlier stages that are carried into a packet folder when one exists.
STAGE_FILES = ("mask.nii.gz", "model.stl", "print.stl", "print.3mf", "plan.json")


def _charge_of(case: Any, model_id: str, case_dir: Path, ledger: str | Path | None):
    """The model's charge line and lifecycle: the ledger's record if it has one (the billed code
    once billable, else the provisional one), else numbered over the case's models in case-file
    order. Returns the line, the lifecycle block (None without a record) and where they came from."""
    from pipeline.coding import BillableModel, next_charge
    from pipeline.errors import LedgerError
    from pipeline.ledger import Ledger, resolve_ledger_path

    path = resolve_ledger_path(ledger)
    if isinstance(path, str) or path.is_file():  # a PostgreSQL URL, or a ledger file
        book = Ledger(path)
        try:
            billing = book.case_billing(case.case_id)
            entry = next((e for e in billing.billable + billing.pending
                          if e.case_id == case.case_id and e.model_id == model_id), None)
            state = book.model_state(case.case_id, model_id) if entry is not None else None
        except LedgerError:
            entry = None
        finally:
            book.close()
        if entry is not None:
            sign_offs = [{"step": e["step"], "person": e["person"], "role": e["role"], "at": e["at"], "npi": e.get("npi")}
                         for e in state["events"] if e["step"] != "prepared"]
            sign_offs += [{"step": f"release of {h['code']}", "person": h["released_by"], "role": h["released_role"],
                           "at": h["released_at"], "reason": h["release_reason"]}
                          for h in state["holds"] if h.get("released_by")]
            sign_offs.sort(key=lambda signed: str(signed["at"]))  # ISO UTC text: in time order
            lifecycle = {"state": entry.state, "billable": entry.billable, "waiting_for": entry.waiting_for,
                         "sign_offs": sign_offs, "holds": entry.holds, "effort_minutes": state["effort_minutes"]}
            qa = _print_qa(state["events"])
            if qa is not None:
                lifecycle["print_qa"] = qa
            return entry.line, lifecycle, f"charge line from the ledger {book.path}"
    lines = []
    for spec in case.models:
        line = next_charge(lines, BillableModel.from_case(case, spec, case_dir / spec.id / "model.stl"))
        if spec.id == model_id:
            return line, None, "no ledger record: charge numbered in case-file order (not recorded in the ledger)"
        lines.append(line)
    raise DocumentError(f"model {model_id!r} is not in case {case.case_id}")


#: Where the published packet's facts keep each stage report (``PacketInputs.reports`` key -> facts key).
_REPORT_FACTS = {"load": "load", "segment": "segmentation", "mesh": "mesh_qa", "prepare": "print_preparation"}


def _stage_reports(model_dir: Path) -> dict[str, Any]:
    """The stage reports of the packet already in ``model_dir`` (its ``packet.json``), so a packet
    re-issued after a lifecycle step keeps the verdicts, warnings and holds of the run; empty
    when the folder has no packet yet (its stages were run one by one)."""
    path = model_dir / "packet.json"
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DocumentError(f"{path} cannot be read ({error}): the packet's stage reports would be lost",
                            hint="restore the model folder (`anatomodel ledger verify` names what changed) "
                                 "or run the case again") from error
    return {key: facts[name] for key, name in _REPORT_FACTS.items() if facts.get(name) is not None}


def _print_qa(events: list[dict]) -> dict | None:
    """The last print check of the current print (none once a reprint follows it)."""
    steps = [event["step"] for event in events]
    if "checked" not in steps:
        return None
    last = len(steps) - 1 - steps[::-1].index("checked")
    if "printed" in steps[last:]:
        return None
    event = events[last]
    detail = event["detail"]
    return {"passed": detail["passed"], "policy": detail["policy"], "policy_version": detail.get("policy_version"),
            "failed": detail.get("failed", []), "figures": detail["figures"], "person": event["person"],
            "at": event["at"]}


def document_model_folder(
    case: Any,
    model_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    deidentify: bool = False,
    model_id: str | None = None,
    with_images: bool = True,
    ledger: str | Path | None = None,
) -> PacketReport:
    """Write (or rewrite) the packet of one model from the files of its folder.

    Parameters
    ----------
    case : pipeline.case.CaseFile
        The case the model belongs to, as :func:`pipeline.case.load_case` read it (the caller
        loads it: this stage does not import the case layer above it).
    model_dir : path
        ``OUT/<case_id>/<model_id>`` with at least ``model.stl`` (and ``mask.nii.gz``,
        ``print.stl``, ``plan.json`` when those stages ran).
    out_dir : path, optional
        Output root for a copy: the packet goes to ``out_dir/<case_id>/<model_id>``, built in a
        staging folder and renamed when complete. Required with ``deidentify`` and when the
        ledger records the model (it holds the checksums of the packet in ``model_dir``);
        otherwise the packet is rewritten in ``model_dir`` itself.
    deidentify : bool
        Write the vendor copy (no name, MRN, birth date or accession in any file).
    model_id : str, optional
        Defaults to the folder's name.
    with_images : bool
        Load the source series for the CT pictures and the DICOM references (slow on clinical
        series); without it the packet says that the CT slices are not shown.
    ledger : path, optional
        The case ledger holding the model's charge line (default: ``$ANATOMODEL_LEDGER`` or the
        per-user ledger). Without a record the line is numbered in case-file order.

    Returns
    -------
    PacketReport
        What was written; its ``model_dir`` is the folder that holds the packet (``model_dir``
        itself, or ``out_dir/<case_id>/<model_id>``).

    Raises
    ------
    DocumentError
        The model is not in the case, ``model.stl`` is missing, ``deidentify`` without
        ``out_dir``, or no ``out_dir`` while the ledger records the model's packet. Exit code 12.
    """
    from pipeline.ledger.folders import publish_folder, remove_folder
    from pipeline.geometry import read_mask
    from pipeline.model import Model
    from pipeline.prepare.output import read_plan

    model_dir = Path(model_dir)
    model_id = model_id or model_dir.name
    spec = next((s for s in case.models if s.id == model_id), None)
    if spec is None:
        raise DocumentError(f"model {model_id!r} is not in case {case.case_id}; models: "
                            f"{', '.join(s.id for s in case.models)}")
    if not (model_dir / "model.stl").is_file():
        raise DocumentError(f"{model_dir / 'model.stl'} is missing: run the mesh stage (or `anatomodel run`) first")
    if deidentify and out_dir is None:
        raise DocumentError("a de-identified copy needs --out: it is written beside the original, never over it")

    volume = None
    if with_images:
        from pipeline.load import load_series

        volume, _ = load_series(case.dicom_path, case.imaging.series)
    mask = read_mask(model_dir / "mask.nii.gz", {1: spec.id}) if (model_dir / "mask.nii.gz").is_file() else None
    model = Model(trimesh.load_mesh(model_dir / "model.stl"), spec.id)
    reports = _stage_reports(model_dir)
    if (model_dir / "plan.json").is_file():
        reports["plan"] = json.loads((model_dir / "plan.json").read_text(encoding="utf-8"))
    charge, lifecycle, source = _charge_of(case, model_id, model_dir.parent, ledger)
    log.info("%s: %s", model_id, source)
    if out_dir is None and source.startswith("charge line from the ledger"):
        raise DocumentError(f"the ledger records the checksums of {model_dir}'s packet: write the new packet "
                            "elsewhere with --out, or re-run the model with `anatomodel run`")
    workflow = [step.model_dump(mode="json") | {"automatic": False, "seconds": step.minutes * 60.0}
                for step in spec.manual_steps]
    plan = read_plan(model_dir / "plan.json") if "plan" in reports else None
    inputs = PacketInputs.from_run(case=case, spec=spec, charge=charge, volume=volume, mask=mask, model=model,
                                   plan=plan, reports=reports, workflow=workflow, deidentify=deidentify,
                                   lifecycle=lifecycle)
    from pipeline.document import write_packet

    if out_dir is None:
        return write_packet(inputs, model_dir)
    target = Path(out_dir) / case.case_id / model_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{model_id}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for name in STAGE_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, staging / name)
        report = write_packet(inputs, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_folder(staging, target)
    remove_folder(staging)  # the previous version, if the swap put one there
    report.model_dir = target
    return report
