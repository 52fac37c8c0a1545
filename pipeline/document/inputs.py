"""``PacketInputs`` (what the document stage is given) and ``PacketReport`` (what it wrote)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from pipeline.coding import ChargeLine
from pipeline.geometry import Mask, Volume
from pipeline.model import Model
from pipeline.report import Report, anatomodel_version


@dataclass
class PacketInputs:
    """Everything the packet of one model is made from (built by ``pipeline.case.run_case``).

    Parameters
    ----------
    case_id : str
        The case id (sanitised; it names the case folder).
    patient : dict
        The case file's patient block: ``name``, ``id``, ``birth_date``, ``sex``.
    encounter : dict
        ``date_of_service`` (date or ISO text), ``facility``, ``ordering_provider`` and
        ``rendering_provider`` (each ``{name, npi}``), ``payer``.
    indication : dict
        ``icd10`` (list of codes) and ``summary`` (text).
    model_spec : dict
        The case file's model entry: ``id``, ``preset``, ``purpose``, ``recipient``, ``kind``
        (``model`` or ``guide``), ``modifiers``, ``modifier_reasons``, ``manual_steps`` (each
        ``{step, operator, minutes}`` and optionally ``start``/``end``).
    charge : ChargeLine
        The model's line from :func:`pipeline.coding.next_charge` (via the ledger).
    volume, mask, model
        The source CT (its ``provenance`` names the study and series), the segmentation and the
        mesh. Any may be None when the stage was entered later; the packet says what is missing.
    reports : dict of str to dict
        Stage reports as dicts, keyed ``load``, ``segment``, ``mesh``, ``plan``: shown as given.
    workflow : list of dict
        Automated steps with ``step``, ``start``, ``end`` (ISO timestamps), ``operator``,
        ``minutes``.
    files : dict of str to Path
        Files already in the model folder (``mask.nii.gz``, ``model.stl``, ``print.stl``,
        ``print.3mf``, ``plan.json``).
    print_plan : object, optional
        The prepare stage's plan object, when ``print_mesh``/``support_faces`` are not given:
        its ``transform`` puts the model's display copy on the plate and
        ``pipeline.prepare.plan_support_faces`` gives the faces drawn red.
    print_mesh : trimesh.Trimesh, optional
        The model as oriented on the build plate.
    support_faces : ndarray of bool, optional
        Per face of ``print_mesh``: True where it needs support.
    display_mesh : trimesh.Trimesh, optional
        The display copy of ``model.mesh`` (:func:`pipeline.document.pictures.display_mesh`),
        when the caller made it already (``run_case`` shares it with the review page); made
        from the model when not given.
    deidentify : bool
        Write the vendor copy: no name, id, birth date or accession anywhere.
    lifecycle : dict, optional
        Where the model stands in the ledger: ``state``, ``billable``, ``waiting_for``,
        ``sign_offs`` (list of ``{step, person, role, at}``) and ``holds`` (list of Hold dicts).
    removed : ndarray of uint8, optional
        On the volume's grid, non-zero where the segmentation's leak control cut pieces off
        (``SegmentReport.removed_pieces()``): outlined in another colour on the CT slices.
    """

    case_id: str
    patient: dict[str, Any]
    encounter: dict[str, Any]
    indication: dict[str, Any]
    model_spec: dict[str, Any]
    charge: ChargeLine
    volume: Volume | None = None
    mask: Mask | None = None
    model: Model | None = None
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    workflow: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    print_plan: Any = None
    print_mesh: trimesh.Trimesh | None = None
    support_faces: np.ndarray | None = None
    display_mesh: trimesh.Trimesh | None = None
    software_version: str = field(default_factory=anatomodel_version)
    deidentify: bool = False
    lifecycle: dict[str, Any] | None = None
    removed: np.ndarray | None = None
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).replace(microsecond=0))

    @classmethod
    def from_run(
        cls,
        *,
        case: Any,
        spec: Any,
        charge: ChargeLine,
        volume: Volume | None = None,
        mask: Mask | None = None,
        model: Model | None = None,
        plan: Any = None,
        reports: dict[str, dict[str, Any]] | None = None,
        workflow: list[dict[str, Any]] | None = None,
        deidentify: bool = False,
        files: dict[str, Path] | None = None,
        lifecycle: dict[str, Any] | None = None,
        removed: np.ndarray | None = None,
        display_mesh: trimesh.Trimesh | None = None,
    ) -> "PacketInputs":
        """Inputs from ``run_case``'s objects: the ``CaseFile``, its ``ModelSpec`` and the stage outputs.

        Manual steps are expected in ``workflow`` already (``run_case`` records them there), so they
        are not taken twice from the spec.

        Parameters
        ----------
        case : pipeline.case.CaseFile
            The validated case file (case id, patient, encounter, indication).
        spec : pipeline.case model entry
            The model's entry of the case file (its ``manual_steps`` are left out).
        charge : ChargeLine
            The model's charge line.
        volume, mask, model : optional
            The source CT, the segmentation and the mesh (any may be None).
        plan : object, optional
            The prepare stage's print plan.
        reports : dict of str to dict, optional
            Stage reports as dicts, keyed ``load``, ``segment``, ``mesh``, ``plan``.
        workflow : list of dict, optional
            The run's steps, manual steps included.
        deidentify : bool
            Write the vendor copy.
        files : dict of str to Path, optional
            Files already in the model folder.
        lifecycle : dict, optional
            Where the model stands in the ledger.
        removed : ndarray of uint8, optional
            Leak-control cuts on the volume's grid.
        display_mesh : trimesh.Trimesh, optional
            The display copy of the model's mesh, when already made.

        Returns
        -------
        PacketInputs
            The inputs, with the installed software version and ``created`` now (UTC).
        """
        spec_facts = spec.model_dump(mode="json", exclude={"manual_steps"})
        spec_facts["kind"] = "guide" if spec_facts.get("kind") == "guide" else "model"
        return cls(
            case_id=case.case_id,
            patient=case.patient.model_dump(mode="python"),
            encounter=case.encounter.model_dump(mode="python"),
            indication=case.indication.model_dump(mode="python"),
            model_spec=spec_facts,
            charge=charge,
            volume=volume,
            mask=mask,
            model=model,
            reports=dict(reports or {}),
            workflow=list(workflow or []),
            files=dict(files or {}),
            print_plan=plan,
            deidentify=deidentify,
            lifecycle=lifecycle,
            removed=removed,
            display_mesh=display_mesh,
        )


@dataclass
class PacketReport(Report):
    """What :func:`pipeline.document.write_packet` wrote into the model folder."""

    model_dir: Path
    model_id: str
    cpt: str
    files: dict[str, str]
    pdf_pages: int
    pictures: list[str]
    deidentified: bool
    dicom_sop_instance_uid: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

