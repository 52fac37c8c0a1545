"""The case file (a YAML contract other tools depend on) and ``run_case``, which chains the stages.

A case names one patient encounter, its source imaging, the printer, and every model to make::

    case_id: EXAMPLE-001
    patient: {name: "PHANTOM^AORTA", id: "PH0001", birth_date: 1964-03-01, sex: M}
    encounter:
      date_of_service: 2026-01-15
      facility: "..."
      ordering_provider: {name: "...", npi: "..."}
      rendering_provider: {name: "...", npi: "..."}
      payer: medicare
    indication: {icd10: [I71.2], summary: "..."}
    imaging: {dicom: ../../example_data/cta_phantom, series: auto}
    printer: formlabs_form3b
    models:
      - id: aorta-surgeon
        preset: aorta_cta
        seeds_lps_mm: [[x, y, z]]
        exclude_seeds_lps_mm: []
        purpose: surgical_planning
        recipient: "..."

Relative paths resolve against the case file's folder. Outputs go to
``OUT/<case_id>/<model_id>/`` (``mask.nii.gz``, ``model.stl``, ``print.stl``, ``print.3mf``,
``plan.json``, ``packet.pdf``, ``packet.json``, ``model.dcm``, ``SHA256SUMS``); the encounter's
one claim goes to ``OUT/encounters/ENC-<pseudonym>/charges.csv`` (billable lines),
``charges_pending.csv`` (lines waiting for a lifecycle step or a hold release) and ``charges.json``.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

from pydantic import Field, field_validator, model_validator

from pipeline.config import (CoordinateMM, LongString, PersonName, ShortText, StrictModel, bounded_text, find_config,
                             read_yaml, validate)
from pipeline.errors import CodingError, ConfigError, IdentityError, LedgerError, SegmentationError
from pipeline.holds import Hold
from pipeline.report import Report
from pipeline.stage_settings import MeshSettings, PrepareSettings, SegmentSettings

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def safe_path_component(text: str, *, what: str = "identifier") -> str:
    """Return ``text`` if it is safe as one path component, else raise ConfigError.

    Safe: 1-64 characters of letters, digits, ``.``, ``_`` and ``-``, not starting with a dot.
    Identifiers are refused rather than rewritten so two different ids never map to one folder.

    Parameters
    ----------
    text : str
        The identifier (a case id, a model id).
    what : str
        What it is, for the message.

    Returns
    -------
    str
        ``text`` unchanged.

    Raises
    ------
    ConfigError
        ``text`` is not safe as a file name (exit code 4).
    """
    try:
        return _safe(text, what)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _safe(text: str, what: str) -> str:
    if not _SAFE_ID.match(text):
        raise ValueError(f"{what} {text!r} cannot be used in a file name: use 1-64 letters, digits, '.', '_' or '-'")
    return text


class Provider(StrictModel):
    name: PersonName = Field(min_length=1, description="DICOM person name, e.g. FAMILY^GIVEN")
    npi: str = Field(pattern=r"^\d{10}$", description="National Provider Identifier, 10 digits")


class Patient(StrictModel):
    name: PersonName = Field(min_length=1, description="DICOM person name, e.g. FAMILY^GIVEN")
    id: LongString = Field(min_length=1, description="medical record number")
    birth_date: dt.date
    sex: Literal["M", "F", "O", "U"]


class Encounter(StrictModel):
    date_of_service: dt.date
    facility: LongString = Field(min_length=1)
    ordering_provider: Provider
    rendering_provider: Provider
    payer: LongString = Field(min_length=1)


class Indication(StrictModel):
    icd10: list[str] = Field(min_length=1, description="ICD-10-CM codes, first is primary")
    summary: ShortText = Field(min_length=1, description="medical necessity in one or two sentences")


class Imaging(StrictModel):
    dicom: Path | None = Field(None, description="DICOM folder or NIfTI/NRRD/MHA file; relative to the case file")
    series: str = Field("auto", description="auto, a SeriesInstanceUID or a series number")
    # Or pulled from a DICOM node (pipeline.pacs.resolve_imaging): node + accession [+ study].
    node: str | None = Field(None, description="a node of the nodes file, AET@HOST:PORT or a DICOMweb URL")
    accession: str | None = Field(None, min_length=1, description="the study's Accession Number at the node")
    study: str | None = Field(None, description="Study Instance UID, when one accession has several studies")
    max_gap_mm: float | None = Field(None, gt=0, le=100, description="refuse steps between slices wider than this, mm")
    resample_gaps: bool = Field(False, description="load a series with gaps, filling them by interpolation")

    @field_validator("series", mode="before")
    @classmethod
    def _series_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _one_source(self) -> "Imaging":
        if (self.dicom is None) == (self.node is None):
            raise ValueError("give either dicom (a folder or file) or node with accession (a DICOM node)")
        if self.node is not None and not (self.accession or self.study):
            raise ValueError("a node needs accession (or study) to find the study")
        from pipeline.pacs.query import accession_problem, uid_problem

        for name, value, problem in (("accession", self.accession, accession_problem),
                                     ("study", self.study, uid_problem)):
            why = problem(value) if value is not None else None
            if why:  # the value is not quoted: an accession number is the patient's data
                raise ValueError(f"{name} {why}")
        return self


class ManualStep(StrictModel):
    step: Literal["segmentation", "processing", "printing", "post_processing", "review", "other"]
    operator: PersonName = Field(min_length=1)
    minutes: float = Field(ge=0, le=10_000)
    started: dt.datetime | None = None
    note: ShortText = ""


Point = tuple[CoordinateMM, CoordinateMM, CoordinateMM]


class ModelSpec(StrictModel):
    id: str = Field(description="model id, used as a folder name")
    preset: str = Field(description="configs/presets/<name>.yaml, or a path to a preset file")
    seeds_lps_mm: list[Point] = Field(default_factory=list)
    exclude_seeds_lps_mm: list[Point] = Field(default_factory=list)
    seeds_index: list[tuple[int, int, int]] = Field(default_factory=list, description="(k, j, i) voxel seeds")
    purpose: Literal["surgical_planning", "patient_education", "trainee_education", "intraoperative_reference",
                     "procedural_simulation", "device_sizing", "other"] = "surgical_planning"
    recipient: bounded_text(256) = ""
    kind: Literal["anatomic_model", "guide"] = "anatomic_model"
    printer: str | None = Field(None, description="overrides the case's printer for this model")
    modifiers: list[str] = Field(default_factory=list)
    modifier_reasons: dict[str, str] = Field(default_factory=dict)
    manual_steps: list[ManualStep] = Field(default_factory=list)
    segment: SegmentSettings = Field(default_factory=SegmentSettings, description="preset overrides, ROI")
    mesh: MeshSettings = Field(default_factory=MeshSettings, description="any MeshOptions field")
    prepare: PrepareSettings = Field(default_factory=PrepareSettings, description="material, alternatives")

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return _safe(value, "model id")

    @model_validator(mode="after")
    def _needs_a_seed(self) -> "ModelSpec":
        if not self.seeds_lps_mm and not self.seeds_index:
            raise ValueError("give at least one seed in seeds_lps_mm (or seeds_index)")
        return self


class CaseFile(StrictModel):
    case_id: str
    patient: Patient
    encounter: Encounter
    indication: Indication
    imaging: Imaging
    printer: str
    models: list[ModelSpec] = Field(min_length=1)
    operator: PersonName | None = Field(None, description="who runs the case (default: $ANATOMODEL_OPERATOR, else the login name)")
    #: Folder of the case file; relative paths resolve against it. Not part of the YAML.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("case_id")
    @classmethod
    def _safe_case_id(cls, value: str) -> str:
        return _safe(value, "case_id")

    @model_validator(mode="after")
    def _checks(self) -> "CaseFile":
        ids = [m.id for m in self.models]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"model ids must be unique, repeated: {', '.join(duplicates)}")
        lowered = self.case_id.lower()
        identifying = [self.patient.id] + [part for part in re.split(r"[\^ ,]+", self.patient.name) if len(part) > 2]
        if any(part.lower() in lowered for part in identifying if part):
            raise ValueError("case_id must not contain the patient's name or id (it becomes a folder name)")
        return self

    def resolve(self, path: Path) -> Path:
        """A path from the case file, resolved against the case file's folder.

        Parameters
        ----------
        path : Path
            A path as the case file gives it (absolute, or relative to the case file).

        Returns
        -------
        Path
            ``path`` if absolute, else ``base_dir / path`` resolved.
        """
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def dicom_path(self) -> Path:
        """The case's DICOM folder or image file (``imaging.dicom``), resolved.

        Returns
        -------
        Path
            The folder or file.

        Raises
        ------
        ConfigError
            The imaging is named by a DICOM node, not a folder (exit code 4).
        """
        if self.imaging.dicom is None:
            raise ConfigError("imaging names a DICOM node, not a folder: run the case (it pulls the series) or "
                              "'anatomodel pull' it and name the folder in imaging.dicom")
        return self.resolve(self.imaging.dicom)


def load_case(path: str | Path) -> CaseFile:
    """Read and validate a case file, before any stage runs.

    Unknown presets, printers and payers, and diagnosis codes that are not ICD-10-CM, are refused
    naming the file, the field and the reason (a folder or a missing file too).

    Parameters
    ----------
    path : str or Path
        The case file (YAML).

    Returns
    -------
    CaseFile
        The validated case, ``base_dir`` set to the file's folder.

    Raises
    ------
    ConfigError
        Any of the above.
    """
    path = Path(path)
    data = read_yaml(path, "case file")
    case = validate(CaseFile, data, str(path))
    case = case.model_copy(update={"base_dir": path.resolve().parent})
    _check_named_configs(case, str(path))
    return case


def _check_named_configs(case: CaseFile, source: str) -> None:
    checks = [("printer", "printers", case.printer)]
    for index, model in enumerate(case.models):
        checks.append((f"models.{index}.preset", "presets", model.preset))
        if model.printer:
            checks.append((f"models.{index}.printer", "printers", model.printer))
    for field_name, kind, name in checks:
        try:
            find_config(kind, name)
        except ConfigError as error:
            raise ConfigError(f"{source}: field '{field_name}': {error}") from None
    _check_stage_settings(case, source)
    from pipeline.icd10 import check_indication
    from pipeline.payers import check_payer

    check_payer(case.encounter.payer, source)
    check_indication(case.indication.icd10, source)


def _check_stage_settings(case: CaseFile, source: str) -> None:
    """Preset overrides against the preset, a material against the model's printer."""
    from pipeline.presets import apply_overrides, load_preset
    from pipeline.printers import load_printer

    for index, model in enumerate(case.models):
        if model.segment.overrides:
            try:
                apply_overrides(load_preset(model.preset), model.segment.overrides)
            except ConfigError as error:
                raise ConfigError(f"{source}: field 'models.{index}.segment.overrides': {error}") from None
        material = model.prepare.material
        if material is not None:
            profile = load_printer(model.printer or case.printer)
            if material not in profile.materials:
                import difflib

                close = difflib.get_close_matches(material, list(profile.materials), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ConfigError(f"{source}: field 'models.{index}.prepare.material': {material!r} is not a material "
                                  f"of {profile.name}; {hint}available: {', '.join(profile.materials)}")


# --- running ---------------------------------------------------------------------------------
@dataclass
class StepRecord(Report):
    """One workflow step: automatic (timed here) or manual (from the case file)."""

    step: str
    operator: str
    started: str
    finished: str | None
    seconds: float
    automatic: bool
    note: str = ""


@dataclass
class ModelResult(Report):
    model_id: str
    folder: Path
    cpt: str | None
    files: list[str]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    version: int | None = None
    holds: list[Hold] = field(default_factory=list)


@dataclass
class CaseResult(Report):
    """A run's models, the encounter's charges files, and the holds that keep lines unbillable."""

    case_id: str
    folder: Path
    models: list[ModelResult]
    charges_files: list[Path]
    seconds: float
    holds: list[Hold] = field(default_factory=list)

    @property
    def held(self) -> bool:
        """Done, but at least one model's charge is held for review (exit code 19).

        Returns
        -------
        bool
            True when ``holds`` is not empty.
        """
        return bool(self.holds)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class _Workflow:
    """Collects timed steps for the packet."""

    def __init__(self, operator: str):
        self.operator = operator
        self.steps: list[StepRecord] = []

    def run(self, step: str, function: Callable[[], Any], note: str = "") -> Any:
        """Call ``function`` and record it as an automatic step timed here.

        Parameters
        ----------
        step : str
            The step's name (``segmentation``, ``processing``, ...).
        function : callable
            The work, called without arguments.
        note : str
            What the step does, for the packet.

        Returns
        -------
        object
            What ``function`` returned.
        """
        started, clock = _now(), time.perf_counter()
        result = function()
        self.steps.append(StepRecord(step, self.operator, started, _now(), round(time.perf_counter() - clock, 3),
                                     True, note))
        return result


def run_case(
    case: CaseFile | str | Path,
    out_dir: str | Path,
    *,
    deidentify: bool = False,
    operator: str | None = None,
    progress: Callable[[str], None] | None = None,
    ledger: Any = None,
    identity_override: str | None = None,
    correct_encounter: str | None = None,
) -> CaseResult:
    """Make every model of a case: load, segment, mesh, prepare, document, charge.

    Parameters
    ----------
    case : CaseFile or path
        The case, or the path of its YAML file.
    out_dir : path
        Output root; the case is written to ``out_dir/<case_id>/``.
    deidentify : bool
        Write a vendor copy: no name, MRN, birth date or accession in any file. The copy is not
        recorded in the ledger (no run, model version or charge: the identified packet stays the
        billed one) and writes no charges files; it is refused over an identified packet.
    operator : str, optional
        Who runs the case (default: the case's operator, else ``$ANATOMODEL_OPERATOR``, else the
        login name).
    progress : callable, optional
        Called with a short message as each step starts.
    ledger : pipeline.ledger.Ledger or path, optional
        The case ledger that records the run, numbers the charges (one transaction per
        encounter) and commits each model once its packet is in place (default:
        ``$ANATOMODEL_LEDGER``, else the per-user ledger).
    identity_override : str, optional
        Run although the case's patient differs from the series' patient; the reason is kept
        in the audit log and every model's charge is held until someone releases it.
    correct_encounter : str, optional
        Reason for moving a case id recorded for another patient or date of service (all its
        charges void) to the case's encounter.

    Returns
    -------
    CaseResult

    Raises
    ------
    IdentityError
        The case's patient (name, ID, birth date) is not the series' patient; before any work.
    CodingError
        A malformed ICD-10 code or refused modifiers; before any work.
    LedgerError
        A model's charge was exported for billing (a re-run would take the submitted line off the
        encounter's charges); before any work.
    """
    from pipeline.checks import case_holds, case_inventory, identity_mismatches
    from pipeline.ledger import open_ledger

    case_file = None if isinstance(case, CaseFile) else Path(case).absolute()
    if case_file is not None:
        case = load_case(case_file)
    operator = run_operator(operator, case)
    holds = case_holds(case)  # refuses malformed coding before any work
    if deidentify:
        _refuse_over_identified(case, out_dir)
    source = _imaging_source(case, Path(out_dir) / case.case_id, progress)
    found = case_inventory(case, source)  # the headers, read once for the identity check and the load
    mismatches = identity_mismatches(case, source, found=found)
    if mismatches and not (identity_override or "").strip():
        raise IdentityError(f"the case file's patient is not the patient of the series: {'; '.join(mismatches)}",
                            hint="check that the case file and the DICOM folder belong together; to run anyway, "
                                 "give --identity-override 'REASON' (recorded, and every charge held)")
    if mismatches:
        holds.append(Hold("identity.override", f"run on a series whose patient differs ({'; '.join(mismatches)}), "
                          "overridden with the reason kept in the audit log", "identity"))
    if deidentify:  # a vendor copy: never a model version, a charge or a run of the ledger
        return _make_models(case, out_dir, _VendorCopy(), deidentify=True, operator=operator, progress=progress,
                            holds=holds, source=source, found=found)
    book = open_ledger(ledger)
    try:
        book.check_rerun(case.case_id, [spec.id for spec in case.models])  # before any work
        with book.start_run(case_id=case.case_id, patient_id=case.patient.id, operator=operator,
                            date_of_service=case.encounter.date_of_service, correction=correct_encounter,
                            parameters=_run_parameters(case, deidentify, case_file)) as run:
            if mismatches:
                run.audit("identity.overridden", reason=identity_override.strip(), mismatches=mismatches)
            return _make_models(case, out_dir, run, deidentify=deidentify, operator=operator, progress=progress,
                                holds=holds, source=source, found=found)
    finally:
        if book is not ledger:
            book.close()


@dataclass
class _Staged:
    model_id: str
    folder: Path
    staging: Path


@dataclass
class _Published:
    version: int | None
    holds: list[Hold]


class _VendorCopy:
    """What ``_make_models`` publishes a de-identified copy through, in place of a ledger run.

    The vendor copy is not recorded in the ledger: it creates no model version, reserves and
    charges nothing, and never replaces the identified packet the ledger bills. Its packet carries
    the provisional charge line numbered over the case's models in case-file order (as
    ``anatomodel document`` does without a ledger record). Each model folder is built in a staging
    sibling and put in place atomically; a copy is never written over an identified packet.
    """

    ledger = None

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._lines: list[Any] = []

    def stage(self, model_id: str, folder: Path) -> _Staged:
        """A fresh staging sibling of the model folder to build the copy in.

        Parameters
        ----------
        model_id : str
            The model.
        folder : Path
            Its final folder.

        Returns
        -------
        _Staged
            The model, its folder and the staging folder (created).
        """
        import uuid

        folder = Path(folder).absolute()
        staging = folder.parent / f".{folder.name}.vendor-{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True)
        return _Staged(model_id, folder, staging)

    def charge(self, staged: _Staged, billable: Any) -> Any:
        """The provisional charge line of the copy, numbered after the lines given so far.

        Parameters
        ----------
        staged : _Staged
            The model's staging (unused: nothing is reserved).
        billable : BillableModel
            What the line bills.

        Returns
        -------
        ChargeLine
            The next line (:func:`pipeline.coding.next_charge`).
        """
        from pipeline.coding import next_charge

        line = next_charge(self._lines, billable)
        self._lines.append(line)
        return line

    def publish(self, staged: _Staged, *, mesh_sha256: str | None = None, holds: list[Hold] = (),
                libraries: Any = ()) -> _Published:
        """Put the staged copy in place atomically (the previous copy, if any, is removed).

        Parameters
        ----------
        staged : _Staged
            The model's staging.
        mesh_sha256 : str, optional
            Unused (no model version is recorded).
        holds : list of Hold
            The model's holds, returned as they are.
        libraries : object
            Unused (no provenance is recorded).

        Returns
        -------
        _Published
            No version, the holds.
        """
        from pipeline.ledger.folders import publish_folder, remove_folder

        publish_folder(staged.staging, staged.folder)
        remove_folder(staged.staging)  # the previous vendor copy, if the swap put one there
        return _Published(None, list(holds))

    def void_removed(self, model_ids: list[str]) -> list[str]:
        """Nothing to void: a copy charges nothing.

        Parameters
        ----------
        model_ids : list of str
            The case's models.

        Returns
        -------
        list of str
            Empty.
        """
        return []


def run_operator(given: str | None, case: CaseFile) -> str:
    """Who runs a case: ``given``, else the case file's operator, else the ledger's operator
    (``$ANATOMODEL_OPERATOR``, else the login name), as every ledger command has it.

    Parameters
    ----------
    given : str or None
        The operator named for this run (``anatomodel run --operator``).
    case : CaseFile
        The case, whose ``operator`` field may name one.

    Returns
    -------
    str
        The operator recorded for the run and its workflow steps.

    Raises
    ------
    ConfigError
        ``$ANATOMODEL_OPERATOR`` holds a control character (exit 4).
    """
    from pipeline.ledger.process import operator_name

    return given or case.operator or operator_name()


def _refuse_over_identified(case: CaseFile, out_dir: str | Path) -> None:
    """Refuse a vendor copy whose model folder holds an identified packet (before any work)."""
    import json

    for spec in case.models:
        packet = Path(out_dir) / case.case_id / spec.id / "packet.json"
        try:
            vendor = bool(json.loads(packet.read_text(encoding="utf-8"))["case"]["deidentified"])
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            vendor = False
        if not vendor:
            raise ConfigError(f"{packet.parent} holds an identified packet: a de-identified copy is written "
                              "beside the original, never over it", hint="give the vendor copy its own --out folder")


def _run_parameters(case: CaseFile, deidentify: bool, case_file: Path | None = None) -> dict[str, Any]:
    """What the ledger records as the run's parameters (no patient identifiers; the case file's
    path, from which a lifecycle step re-issues the packet)."""
    return {"imaging": case.imaging.model_dump(mode="json"), "printer": case.printer, "deidentify": deidentify,
            "case_file": str(case_file) if case_file else None, "packet_facts_sha256": packet_facts_sha256(case),
            "models": [spec.model_dump(mode="json", exclude={"manual_steps"}) for spec in case.models]}


def packet_facts_sha256(case: CaseFile) -> str:
    """SHA-256 of what a packet takes from the case file (patient, encounter, indication, models).

    A lifecycle step re-issues the packet from the run's case file; this digest, recorded with
    the run, tells whether that file still says what the run was made from (no identifier is
    stored, only the digest).

    Parameters
    ----------
    case : CaseFile
        The case as read.

    Returns
    -------
    str
        64 hex digits.
    """
    import hashlib
    import json

    facts = case.model_dump(mode="json", include={"case_id", "patient", "encounter", "indication", "models"})
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


class PacketSource(NamedTuple):
    """What a model's packet is re-issued from (:func:`packet_case`)."""

    case: CaseFile
    model: dict[str, Any]  # the model's current ledger row (its folder)
    run: dict[str, Any]  # the run that published it (its parameters)
    encounter_id: int  # where the re-issued files' checksums are recorded


def packet_case(book: Any, case_id: str, model_id: str) -> PacketSource | None:
    """The case file a model's packet is re-issued from, checked against what its run recorded.

    Parameters
    ----------
    book : Ledger
        The open ledger.
    case_id : str
        The case.
    model_id : str
        The model.

    Returns
    -------
    PacketSource or None
        The case as its file says now, the model's ledger row, its run's row and the encounter;
        None when the model has no current version or its run was given no case file (a
        script's object).

    Raises
    ------
    ConfigError
        The run's case file is gone, or it no longer says what the run was made from (patient,
        encounter, indication or models edited since): a packet re-issued from it would
        document another patient or claim (exit 4). Raised before a step is recorded.
    """
    detail = book.show(case_id)
    model = next((m for m in detail["models"] if m["model_id"] == model_id and m["status"] == "current"), None)
    if model is None:
        return None
    run = next(r for r in detail["runs"] if r["id"] == model["run_id"])
    case_file = run["parameters"].get("case_file")
    if not case_file:  # a run from a script's CaseFile object: there is no file to re-issue from
        return None
    if not Path(case_file).is_file():
        raise ConfigError(f"the case file of run {run['id']} ({case_file}) is no longer there: "
                          f"the packet of {case_id}/{model_id} could not be re-issued with this step",
                          hint="put the case file back where the run read it, or run the case again")
    case = load_case(case_file)
    recorded = run["parameters"].get("packet_facts_sha256")
    if recorded is not None and recorded != packet_facts_sha256(case):
        raise ConfigError(f"{case_file} was edited after run {run['id']} (its patient, encounter, indication or "
                          f"models differ): the packet of {case_id}/{model_id} would document what the run did not",
                          hint="undo the edit, or run the case again (a new version, approved again)")
    return PacketSource(case, model, run, detail["encounter"]["id"])


def mesh_geometry_sha256(model: Any) -> str:
    """SHA-256 of a model's triangles (float32 LPS mm), not of the STL file: a header that names
    the model does not make a reprint look new.

    Parameters
    ----------
    model : Model
        The model (its mesh, LPS mm).

    Returns
    -------
    str
        64 hex digits.
    """
    import hashlib

    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(model.mesh.triangles, dtype="<f4").tobytes()).hexdigest()


def _imaging_source(case: CaseFile, case_dir: Path, progress: Callable[[str], None] | None) -> Path:
    """The case's DICOM folder or image file; a series named by node and accession is pulled
    once into ``case_dir/imaging/`` first (before the identity check reads its headers)."""
    if case.imaging.node is None:
        return case.dicom_path
    from pipeline.pacs.resolve import resolve_imaging

    if progress:
        progress("pulling the series from the DICOM node")
    return resolve_imaging(case.imaging, case_dir)


def _make_models(case: CaseFile, out_dir: str | Path, run: Any, *, deidentify: bool, operator: str,
                 progress: Callable[[str], None] | None, holds: list[Hold], source: Path,
                 found: Any = None) -> CaseResult:
    """The stages for every model of a case, each model published and charged through ``run``;
    ``found`` is the source's inventory (:func:`pipeline.checks.case_inventory`) when read already."""
    import dataclasses

    from pipeline.checks import stage_holds
    from pipeline.coding import BillableModel
    from pipeline.ledger import lifecycle
    from pipeline.document import PacketInputs, write_packet
    from pipeline.document.pictures import display_mesh
    from pipeline.document.review import write_review_entries
    from pipeline.load import load_series
    from pipeline.mesh import mesh_mask, write_model
    from pipeline.prepare import plan_print, write_print_files
    from pipeline.printers import load_printer
    from pipeline.segment import segment_volume
    from pipeline.geometry import write_mask

    from pipeline.preflight import estimate_output_bytes, free_space, output_folder

    clock = time.perf_counter()
    tell = progress or (lambda message: None)
    case_dir = output_folder(Path(out_dir) / case.case_id)  # writable, or EnvironmentFault before any work
    presets_ask_bone = any("bone" in model.preset for model in case.models)

    tell(f"loading {case.imaging.dicom or 'the pulled series'}")
    load_started, load_clock = _now(), time.perf_counter()
    volume, load_report = load_series(source, case.imaging.series, prefer_bone=presets_ask_bone,
                                      max_gap_mm=case.imaging.max_gap_mm, resample_gaps=case.imaging.resample_gaps,
                                      found=found)
    check_case_coverage(case, volume, load_report)  # a series too short for a preset: before any model
    check_case_seeds(case, volume)  # and a bad seed of any model
    free_space(case_dir, estimate_output_bytes(volume.array.size, len(case.models)))  # before the first charge
    load_step = StepRecord("image_import", operator, load_started, _now(),
                           round(time.perf_counter() - load_clock, 3), True, "series selection and geometry checks")
    run.timings["image_import"] = load_step.seconds

    results: list[ModelResult] = []
    reviews: list[dict[str, Any]] = []
    for spec in case.models:
        model_clock = time.perf_counter()
        workflow = _Workflow(operator)
        workflow.steps.append(load_step)
        printer = load_printer(spec.printer or case.printer)
        tell(f"{spec.id}: segmenting ({spec.preset})")
        mask, segment_report = workflow.run("segmentation", lambda: segment_volume(
            volume, spec.preset, spec.seeds_lps_mm, spec.exclude_seeds_lps_mm,
            seeds_index=spec.seeds_index, label_name=spec.id, roi_lps_mm=spec.segment.roi_lps_mm,
            overrides=spec.segment.overrides or None))
        # The mask's NIfTI (1 s of deflate, which releases the GIL) is written while the mesh is made.
        with _BackgroundFile(case_dir, spec.id, lambda path: write_mask(mask, path)) as mask_file:
            tell(f"{spec.id}: meshing")
            model, mesh_report = workflow.run("processing", lambda: mesh_mask(
                mask, options=spec.mesh.to_options(), min_wall_mm=printer.min_wall_mm),
                                              note="surface extraction, smoothing, decimation, repair, QA")
            tell(f"{spec.id}: planning the print on {printer.name}")
            plan, prepare_report = workflow.run("print_preparation", lambda: plan_print(
                model, printer, alternatives=spec.prepare.alternatives, material=spec.prepare.material),
                                note="orientation, supports, fit")
            for manual in spec.manual_steps:
                started = manual.started.isoformat() if manual.started else ""
                note = "planned in the case file, not a record of work done" + (f": {manual.note}" if manual.note else "")
                workflow.steps.append(StepRecord(manual.step, manual.operator, started, None, manual.minutes * 60.0,
                                                 False, note))

            run.timings.update({f"{spec.id}.{step.step}": step.seconds for step in workflow.steps
                                if step.automatic and step is not load_step})
            mask_file.wait()
            reservation = run.stage(spec.id, case_dir / spec.id)
        staging = reservation.staging
        try:
            mask_file.move_to(staging / "mask.nii.gz")
            write_model(model, staging / "model.stl")
            write_print_files(plan, model, staging)
            geometry = mesh_geometry_sha256(model)
            billable = dataclasses.replace(BillableModel.from_case(case, spec), mesh_sha256=geometry)
            model_holds = [h.for_model(spec.id) for h in holds if h.model_id in (None, spec.id)]
            model_holds += [h.for_model(spec.id) for h in stage_holds(segment_report, mesh_report, plan)]
            charge = run.charge(reservation, billable)
            shown = display_mesh(model.mesh)  # decimated once: the packet's pictures and the review page
            cuts = segment_report.removed_pieces()  # a grid-sized array: made once, for both too
            tell(f"{spec.id}: documenting (provisional {charge.cpt})")
            inputs = PacketInputs.from_run(
                case=case, spec=spec, volume=volume, mask=mask, model=model, plan=plan,
                reports={"load": load_report.to_dict(), "segment": segment_report.to_dict(),
                         "mesh": mesh_report.to_dict(), "plan": plan.to_dict(), "prepare": prepare_report.to_dict()},
                workflow=[step.to_dict() for step in workflow.steps], charge=charge, deidentify=deidentify,
                removed=cuts, display_mesh=shown,
                lifecycle={"state": "prepared", "billable": False, "waiting_for": "approval", "sign_offs": [],
                           "holds": model_holds, "effort_minutes": lifecycle.effort_summary(
                               [{"effort": lifecycle.run_effort(run.timings, spec.id)}])},
            )
            write_packet(inputs, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            mask_file.path.unlink(missing_ok=True)
            raise
        target = case_dir / spec.id
        published = run.publish(reservation, mesh_sha256=geometry, holds=model_holds, libraries=mesh_report.libraries)
        results.append(ModelResult(spec.id, target, charge.cpt, sorted(p.name for p in target.iterdir()),
                                   round(time.perf_counter() - model_clock, 2), list(getattr(plan, "warnings", [])),
                                   published.version, list(published.holds)))
        if not deidentify:  # the radiologist's review page (identified cases only)
            reviews.append(_review_entry(case, spec.id, volume, mask, shown, cuts, target))
    if reviews:
        tell("writing the review page")
        write_review_entries(reviews, case_dir / "review.html", case_id=case.case_id)
    removed = run.void_removed([spec.id for spec in case.models])
    for model_id in removed:
        tell(f"{model_id}: no longer in the case file, its charge is void")
    charges_files = [] if run.ledger is None else write_encounter_charges(  # a vendor copy bills nothing
        run.ledger, run.encounter.id, Path(out_dir), case=case, deidentify=deidentify)
    return CaseResult(case.case_id, case_dir, results, charges_files, round(time.perf_counter() - clock, 2),
                      [hold for result in results for hold in result.holds])


class _BackgroundFile:
    """A file written by a thread into a hidden name of the case folder while the stages go on,
    then moved into the model's staging folder (one rename on the same file system).

    Leaving the ``with`` block waits for the thread; an error of the writer is raised by
    :meth:`wait`, and the hidden file is removed unless it was moved.
    """

    def __init__(self, folder: Path, model_id: str, write: Callable[[Path], Any]):
        import uuid

        from pipeline.threads import helper_thread

        self.path = folder / f".{model_id}.{uuid.uuid4().hex[:12]}.nii.gz"
        self._pool = helper_thread(f"write-{model_id}")
        self._future = self._pool.submit(write, self.path)

    def __enter__(self) -> "_BackgroundFile":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._pool.shutdown(wait=True)
        if exc_info[0] is not None:
            self.path.unlink(missing_ok=True)

    def wait(self) -> None:
        """Wait for the writer; raise what it raised (the hidden file is then removed)."""
        try:
            self._future.result()
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise

    def move_to(self, target: Path) -> None:
        """Rename the written file to ``target`` (after :meth:`wait`).

        Parameters
        ----------
        target : Path
            Its name in the staging folder (same file system as the case folder).
        """
        self.wait()
        self.path.replace(target)


def check_case_coverage(case: CaseFile, volume: Any, load_report: Any) -> None:
    """Refuse the series if it is shorter than a model's preset needs; record each preset's figure
    in ``load_report.coverage_needed_mm``.

    Parameters
    ----------
    case : CaseFile
        The case, whose models name the presets.
    volume : Volume
        The loaded series (its extent along the slice normal, mm).
    load_report : LoadReport
        The load's report, given each preset's ``coverage_mm``.

    Raises
    ------
    CoverageError
        Before any model is segmented (exit 21).
    """
    from pipeline.presets import apply_overrides, check_coverage, load_preset, series_extent_mm

    extent = series_extent_mm(volume.geometry)
    for spec in case.models:
        preset = apply_overrides(load_preset(spec.preset), spec.segment.overrides or None)  # as `segment --set` does
        if preset.coverage_mm is not None:
            load_report.coverage_needed_mm[preset.name] = preset.coverage_mm
        check_coverage(preset, extent, volume.geometry.shape[0], f"the series of model {spec.id}")


def check_case_seeds(case: CaseFile, volume: Any) -> None:
    """Check every model's preset, overrides and seeds on the loaded series before any model is made.

    Parameters
    ----------
    case : CaseFile
        The case, whose models name presets, seeds (LPS mm or voxel indices) and regions of interest.
    volume : Volume
        The loaded series.

    Raises
    ------
    SegmentationError
        A seed outside the volume or its region of interest, include and exclude seeds too close,
        an include seed outside the preset's HU window (exit 8); the message names the model.
    ConfigError
        An invalid override of a model's preset.
    """
    from pipeline.segment import check_segment_inputs

    for spec in case.models:
        try:
            check_segment_inputs(volume, spec.preset, spec.seeds_lps_mm, spec.exclude_seeds_lps_mm,
                                 seeds_index=spec.seeds_index, roi_lps_mm=spec.segment.roi_lps_mm,
                                 overrides=spec.segment.overrides or None)
        except SegmentationError as error:
            raise SegmentationError(f"model {spec.id}: {error.args[0]}", hint=error.hint) from error


def _review_entry(case: CaseFile, model_id: str, volume: Any, mask: Any, shown: Any, removed: Any,
                  folder: Path) -> dict[str, Any]:
    """One model's part of ``review.html``, made while its mask is in memory; ``shown`` is the
    packet's display copy of the mesh (decimated further for the page, not again from the model)
    and ``removed`` the leak-control cuts the packet drew (``SegmentReport.removed_pieces()``)."""
    import json

    from pipeline.document.review import ReviewModel, review_entry
    from pipeline.geometry import Mask

    facts = json.loads((folder / "packet.json").read_text(encoding="utf-8"))
    return review_entry(volume, case.case_id, ReviewModel(
        model_id=model_id, mask=mask, mesh=shown, facts=facts,
        removed=None if removed is None else Mask(removed, volume.geometry, {1: "removed by leak control"})))


def encounter_folder(out_dir: str | Path, patient_id: str, date_of_service: Any) -> Path:
    """``OUT/encounters/<pseudonym>``: where an encounter's one claim is written (no PHI in the name).

    Parameters
    ----------
    out_dir : str or Path
        The output root.
    patient_id : str
        The patient's MRN (only its pseudonym names the folder).
    date_of_service : datetime.date or str
        The encounter's date (ISO text accepted).

    Returns
    -------
    Path
        ``out_dir/encounters/ENC-<pseudonym>``.
    """
    from pipeline.coding import encounter_key
    from pipeline.document.deidentify import pseudonym

    day = date_of_service if isinstance(date_of_service, dt.date) else dt.date.fromisoformat(str(date_of_service))
    return Path(out_dir) / "encounters" / pseudonym(encounter_key(patient_id, day)).replace("ANON-", "ENC-")


def reissue_packet(book: Any, case_id: str, model_id: str) -> Path | None:
    """Re-issue a model's packet after a lifecycle step, as a new revision beside the model folder.

    The packet (with the step's state, sign-offs and holds on page 1) goes to
    ``OUT/<case_id>/<model_id>.packets/v<version>-<n>-<state>[-r<releases>]/``; its files' checksums are
    recorded in the ledger (``ledger verify`` checks them). The published model folder is left
    as it was.

    Parameters
    ----------
    book : Ledger
        The open ledger.
    case_id : str
        The case.
    model_id : str
        The model whose packet is re-issued.

    Returns
    -------
    Path or None
        The revision's folder, or None when the model has no current version or its run read
        no case file.

    Raises
    ------
    ConfigError
        The run's case file is gone or was edited since the run (:func:`packet_case`).
    """
    from pipeline.document.stage import document_model_folder

    source = packet_case(book, case_id, model_id)
    if source is None:
        return None
    state = book.model_state(case_id, model_id)
    folder = Path(source.model["folder"])
    revisions = folder.parent / f"{model_id}.packets"
    releases = sum(1 for hold in state["holds"] if hold.get("released_by"))
    # one folder per event or release: a release re-issues the packet without overwriting the step's
    name = f"v{state['version']}-{len(state['events']):02d}-{state['state']}" + (f"-r{releases}" if releases else "")
    report = document_model_folder(source.case, folder, out_dir=revisions / name, model_id=model_id,
                                   deidentify=bool(source.run["parameters"].get("deidentify")), ledger=book.location)
    book.record_documents(source.encounter_id, sorted(p for p in report.model_dir.rglob("*") if p.is_file()))
    return report.model_dir


def rewrite_encounter_charges(book: Any, case_id: str) -> list[Path]:
    """Rewrite the charges files of a case's encounter where its run wrote them (after a step).

    The output root is the one of the case's published models; the files are de-identified if
    that run was.

    Parameters
    ----------
    book : Ledger
        The open ledger.
    case_id : str
        The case.

    Returns
    -------
    list of Path
        The files written, or an empty list when the case has no published model.
    """
    detail = book.show(case_id)
    current = [model for model in detail["models"] if model["status"] == "current"]
    if not current:
        return []
    run = next(r for r in detail["runs"] if r["id"] == current[0]["run_id"])
    return write_encounter_charges(book, detail["encounter"]["id"], Path(current[0]["folder"]).parent.parent,
                                   deidentify=bool(run["parameters"].get("deidentify")))


def write_encounter_charges(book: Any, encounter_id: int, out_dir: str | Path, *, case: Any = None,
                            deidentify: bool = False) -> list[Path]:
    """Write an encounter's charges once, under the encounter, from the ledger; record their checksums.

    ``charges.csv`` lists the billable lines, ``charges_pending.csv`` the others with the step
    they wait for. The files (the summary PDF most of the time) are built outside the ledger's
    write lock and written under it (:meth:`pipeline.ledger.Ledger.write_documents`), so
    parallel batch workers do not wait for each other's PDF.

    Parameters
    ----------
    book : Ledger
        The open ledger.
    encounter_id : int
        The encounter's ledger id.
    out_dir : str or Path
        The output root (the files go to :func:`encounter_folder`).
    case : CaseFile, optional
        Gives the patient and encounter header (else the ledger's patient id only).
    deidentify : bool
        Write the vendor copy of the files.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    LedgerError
        The encounter's billable lines do not form a claim (exit code of a ledger fault).
    """
    from pipeline.document import case_charges

    def build(billing: Any) -> dict[Path, bytes]:
        """The encounter's files from its billing state (the ledger writes them under its lock).

        Parameters
        ----------
        billing : pipeline.ledger.lifecycle.Billing
            The encounter's billable and pending lines, patient id and date of service.

        Returns
        -------
        dict of Path to bytes
            Each file's path (under :func:`encounter_folder`) and content.

        Raises
        ------
        LedgerError
            The billable lines do not form a claim.
        """
        folder = encounter_folder(out_dir, billing.patient_id, billing.date_of_service)
        header = case if case is not None else {"case_id": "", "patient": {"id": billing.patient_id}}
        try:
            files = case_charges([entry.line for entry in billing.billable], header, deidentify=deidentify,
                                 pending=billing.pending)
        except CodingError as error:
            raise LedgerError(f"the encounter's billable lines do not form a claim: {error}",
                              hint="`anatomodel ledger verify` and `anatomodel ledger show CASE` show the lines") from error
        return {folder / name: data for name, data in files.items()}

    return book.write_documents(encounter_id, build)


def write_case_review(case_file: str | Path, out: str | Path) -> Any:
    """``OUT/<case_id>/review.html`` from the case's model folders (``mask.nii.gz``, ``model.stl``,
    ``packet.json``) and its source series (``anatomodel review``; ``run_case`` writes it too).

    Parameters
    ----------
    case_file : str or Path
        The case file.
    out : str or Path
        The output root the case was run into.

    Returns
    -------
    pipeline.document.review.ReviewReport

    Raises
    ------
    DocumentError
        A model folder lacks its mask, model or packet (the case was not run).
    """
    import json

    import trimesh

    from pipeline.document.review import ReviewModel, write_review_page
    from pipeline.errors import DocumentError
    from pipeline.geometry import read_mask
    from pipeline.load import load_series

    case = load_case(case_file)
    case_dir = Path(out) / case.case_id
    missing = [spec.id for spec in case.models
               if not all((case_dir / spec.id / name).is_file() for name in ("mask.nii.gz", "model.stl", "packet.json"))]
    if missing:
        raise DocumentError(f"{case_dir}: model folder(s) {', '.join(missing)} lack mask.nii.gz, model.stl or "
                            "packet.json; run `anatomodel run` on the case first")
    volume, _ = load_series(_imaging_source(case, case_dir, None), case.imaging.series)
    models = [ReviewModel(model_id=spec.id, mask=read_mask(case_dir / spec.id / "mask.nii.gz", {1: spec.id}),
                          mesh=trimesh.load_mesh(case_dir / spec.id / "model.stl"),
                          facts=json.loads((case_dir / spec.id / "packet.json").read_text(encoding="utf-8")))
              for spec in case.models]
    return write_review_page(volume, models, case_dir / "review.html", case_id=case.case_id)


__all__ = ["write_case_review", "CaseFile", "ModelSpec", "load_case", "run_case", "safe_path_component", "CaseResult", "ModelResult",
           "StepRecord"]
