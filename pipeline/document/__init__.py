"""The document stage: the packet that supports each model's charge.

Per model, into the model folder (a staging folder the caller renames when complete):
``packet.pdf``, ``packet.json`` (schema ``pipeline/schemas/packet.schema.json``), ``model.dcm``
(DICOM Encapsulated STL in the source study) and, last, ``SHA256SUMS`` over every file.
Per case: ``charges.csv``, ``charges.json`` and ``case_summary.pdf`` (:func:`write_case_charges`, or
:func:`case_charges` for their bytes).

With ``deidentify=True`` the packet is the vendor copy (DICOM PS3.15 Annex E Basic Profile with
the Modified Dates and Clean Descriptors options, see :mod:`pipeline.document.deidentify`): no
name, patient id, birth date, accession number, source UID or real date in any byte of any
file, which is checked before the packet is finished.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path

import numpy as np
import trimesh

from pipeline.document import deidentify as deid
from pipeline.document.charges import case_charges, write_case_charges
from pipeline.document.dicom import build_encapsulated_stl, write_encapsulated_stl
from pipeline.document.facts import build_facts, packet_schema, validate_packet, workflow_steps
from pipeline.document.inputs import PacketInputs, PacketReport
from pipeline.document.pdf import packet_pdf
from pipeline.document.pictures import (
    ct_slices_png,
    display_mesh,
    model_views_png,
    print_views_png,
    rigid_transform,
)
from pipeline.errors import DocumentError
from pipeline.files import SUMS_NAME, atomic_write, folder_sha256, sha256_file, write_sums

__all__ = [
    "PacketInputs", "PacketReport", "write_packet", "write_case_charges", "case_charges", "packet_schema",
    "validate_packet", "PACKET_FILES",
]

log = logging.getLogger(__name__)

#: The files this stage adds to a model folder.
PACKET_FILES = ("model.dcm", "packet.json", "packet.pdf", SUMS_NAME)


def _print_view(inputs: PacketInputs, model_dir: Path, warnings: list[str]):
    """The print mesh, its support flags and the transform onto the plate, from wherever they
    are available: with a plan, the model itself and the plan's transform (the picture moves
    only its display copy); else a given or written print mesh, already placed (transform None)."""
    mesh, faces, transform = inputs.print_mesh, inputs.support_faces, None
    if mesh is None and inputs.print_plan is not None and inputs.model is not None:
        try:
            from pipeline import prepare

            transform = np.asarray(inputs.print_plan.transform, dtype=float).reshape(4, 4)
            mesh = inputs.model.mesh
            if faces is None:
                faces = prepare.plan_support_faces(inputs.print_plan, inputs.model)
        except (ImportError, AttributeError, TypeError, ValueError) as error:
            mesh, transform = None, None
            warnings.append(f"print orientation picture: the prepare stage's helpers are not usable ({error})")
    print_stl = model_dir / "print.stl"
    if mesh is None and print_stl.is_file():
        mesh = trimesh.load_mesh(print_stl)
    if mesh is not None and faces is not None and len(faces) != len(mesh.faces):
        warnings.append("support flags do not match the print mesh's faces: supports not marked")
        faces = None
    return mesh, faces, transform


def _refuse_identifiers(model_dir: Path, identifiers: list[str], when: str) -> None:
    """Raise DocumentError if any byte of any file of the folder (inflated: PDF streams, gzip,
    zip members) holds an identifier of the source (see
    :func:`~pipeline.document.deidentify.vendor_copy_identifiers`: names, ids, accession, source
    UIDs, unshifted dates). The message names files and kinds only: it reaches logs, so it never
    repeats the identifier."""
    hits = deid.find_identifiers(model_dir, identifiers)
    if hits:
        kinds = sorted({_kind(needle) for _, needle in hits})
        raise DocumentError(
            f"the de-identified packet still holds {' and '.join(kinds)} ({when}) in: "
            + ", ".join(sorted({name for name, _ in hits}))
            + "; files written by earlier stages must not carry PHI (STL header, mask metadata, file names)"
        )


def _lab_dates(inputs: PacketInputs) -> list[dt.date]:
    """The lab's own dates a vendor copy holds (shifted): its creation date, in UTC and in the
    local time zone model.dcm is written in, and the dates of the workflow steps."""
    dates = [inputs.created.date(), inputs.created.astimezone().date()]
    for step in workflow_steps(inputs):
        for moment in (step["start"], step["end"]):
            try:
                dates.append(dt.datetime.fromisoformat(str(moment)).date())
            except ValueError:
                continue
    return dates


def _kind(needle: str) -> str:
    """What an identifier is, for messages that must not repeat it."""
    if deid.is_source_uid(needle):
        return "a UID"
    if deid.is_date_text(needle):
        return "a date"
    return "a patient identifier"


def write_packet(inputs: PacketInputs, model_dir: Path) -> PacketReport:
    """Write the packet of one model into ``model_dir``.

    Parameters
    ----------
    inputs : PacketInputs
        The case, the stage outputs and reports, and the model's charge line.
    model_dir : Path
        The model folder holding ``model.stl`` (and ``mask.nii.gz``, ``print.stl``,
        ``print.3mf``, ``plan.json`` when those stages ran). Written in place; the caller renames
        the folder into its final place once this returns.

    Returns
    -------
    PacketReport

    Raises
    ------
    DocumentError
        ``model.stl`` missing, the facts failing the schema, or (de-identified) an identifier
        found in any file or file name of the folder.
    """
    started = time.perf_counter()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DocumentError(f"model folder {model_dir} does not exist; run the mesh stage first")
    warnings = list(inputs.charge.flags)
    provenance = inputs.volume.provenance if inputs.volume is not None else {}
    identifiers = deid.identifying_strings(inputs.patient, provenance)
    alias = None
    if inputs.deidentify:
        alias = deid.pseudonym(deid.patient_key(inputs.patient, provenance))
        staff = deid.staff_strings(inputs.encounter, inputs.workflow or [])
        identifiers = sorted({*identifiers, *staff}, key=len, reverse=True)
        forbidden = sorted({*deid.vendor_copy_identifiers(inputs.patient, provenance, inputs.encounter,
                                                          lab_dates=_lab_dates(inputs)), *staff},
                           key=len, reverse=True)
        named = [p for p in (model_dir.name, model_dir.parent.name) if any(s.lower() in p.lower() for s in identifiers)]
        if named:
            raise DocumentError("a de-identified packet cannot be written into a folder named after the patient; "
                                "use a case id and model id that do not contain the name or MRN")
        _refuse_identifiers(model_dir, forbidden, "before the packet was written")

    stl_path = Path(inputs.files.get("model.stl") or model_dir / "model.stl")
    if not stl_path.is_file():
        raise DocumentError(f"{stl_path} is missing: the packet encapsulates the mesh stage's model.stl")
    stl_bytes = stl_path.read_bytes()

    pictures: list[tuple[bytes, str]] = []
    if inputs.volume is not None:
        if inputs.mask is None:
            warnings.append("no segmentation mask given: CT slices shown without an outline")
        removed = "" if inputs.removed is None else "; pieces that leak control removed, in cyan"
        pictures.append((ct_slices_png(inputs.volume, inputs.mask, removed=inputs.removed),
                         f"Orthogonal CT slices through the centroid of the segmentation, outline in red{removed}."))
    else:
        warnings.append("no source volume given: CT slices not shown")
    mesh = inputs.model.mesh if inputs.model is not None else trimesh.load_mesh(stl_path)
    shown = inputs.display_mesh if inputs.display_mesh is not None else display_mesh(mesh)
    pictures.append((model_views_png(mesh, shown), "The model in patient space (LPS mm), shaded."))
    print_mesh, support, placement = _print_view(inputs, model_dir, warnings)
    if print_mesh is not None:
        if placement is not None:  # the model and its display copy, put on the plate by the plan
            png = print_views_png(print_mesh, support, shown=shown if print_mesh is mesh else None,
                                  transform=placement)
        else:
            moved = rigid_transform(mesh, print_mesh)
            shown_print = shown.copy().apply_transform(moved) if moved is not None else None
            png = print_views_png(print_mesh, support, shown=shown_print)
        pictures.append((png, "Print orientation on the build plate; faces needing support in red."))
    else:
        warnings.append("no print plan: print orientation not shown")

    series_number = (1000 if inputs.charge.kind == "model" else 2000) + int(inputs.charge.sequence)
    dataset, dicom_summary = build_encapsulated_stl(
        stl_bytes, provenance, inputs.patient, model_id=inputs.charge.model_id, series_number=series_number,
        software_version=inputs.software_version, alias=alias, created=inputs.created,
    )
    write_encapsulated_stl(dataset, model_dir / "model.dcm")
    warnings += dicom_summary.notes

    listed = folder_sha256(model_dir, skip=PACKET_FILES[1:])
    files = [{"name": name, "sha256": digest, "bytes": (model_dir / name).stat().st_size}
             for name, digest in listed.items()]
    titles = [title for _, title in pictures]
    facts = build_facts(
        inputs, alias=alias, identifiers=identifiers,
        dicom={k: v for k, v in vars(dicom_summary).items() if k != "notes"},
        files=files, pictures=[{"title": t} for t in titles], warnings=warnings,
    )
    atomic_write(model_dir / "packet.json", json.dumps(facts, indent=2))
    pdf_bytes, pages = packet_pdf(facts, [(png, f"Figure {n}. {title}") for n, (png, title) in enumerate(pictures, 1)])
    atomic_write(model_dir / "packet.pdf", pdf_bytes)

    if inputs.deidentify:
        _refuse_identifiers(model_dir, forbidden, "after the packet was written")
    # each file is read once: the ones packet.json lists were hashed above and are unchanged
    digests = write_sums(model_dir, known=listed)
    checksums = dict(sorted({**digests, SUMS_NAME: sha256_file(model_dir / SUMS_NAME)}.items()))
    report = PacketReport(
        model_dir=model_dir, model_id=inputs.charge.model_id, cpt=inputs.charge.cpt, files=checksums,
        pdf_pages=pages, pictures=titles, deidentified=inputs.deidentify,
        dicom_sop_instance_uid=dicom_summary.sop_instance_uid,
        seconds=round(time.perf_counter() - started, 3), warnings=warnings,
    )
    log.info("packet of model %s written: %d pages, %d pictures, %.1f s",
             inputs.charge.model_id, pages, len(pictures), report.seconds)
    return report
