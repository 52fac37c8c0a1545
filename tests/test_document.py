"""The document stage: packet.pdf, packet.json, model.dcm, SHA256SUMS, charges, de-identification.

Inputs are real and small: a CT series written with pydicom (and read back to build the Volume,
its geometry and provenance independently of the load stage), a mask, an icosphere model
exported as a binary STL, and hand-made stage reports.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import re
import zipfile
import zlib
from pathlib import Path

import jsonschema
import numpy as np
import pydicom
import pypdf
import pytest
import trimesh
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipeline.coding import BillableModel, next_charge
from pipeline.document import PacketInputs, write_case_charges, write_packet
from pipeline.errors import DocumentError
from pipeline.geometry import Geometry, Mask, Volume
from pipeline.model import Model

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "pipeline" / "schemas" / "packet.schema.json"

PATIENT = {"name": "DOE^JANE", "id": "MRN778899", "birth_date": dt.date(1964, 3, 1), "sex": "F"}
ACCESSION = "ACC55501"
DOS = dt.date(2026, 1, 15)
#: Every form in which the patient could be identified in an output.
IDENTIFYING = ["DOE^JANE", "DOE JANE", "JANE DOE", "DOE, JANE", "DOE_JANE", "MRN778899", "1964-03-01",
               "19640301", "03/01/1964", ACCESSION]
SHAPE = (24, 48, 40)  # slices, rows, columns
SPACING = (2.0, 0.8, 0.75)  # mm: slice spacing, row spacing, column spacing
SPHERE_CENTRE = np.array([4.0, -3.0, 22.0])  # LPS mm
SPHERE_RADIUS = 9.0


# -- fixtures: a real DICOM source series -----------------------------------------------------------

def _write_ct_series(folder: Path) -> list[Path]:
    """A CT Image Storage series: axial slices, sphere of contrast (350 HU) in soft tissue (40 HU)."""
    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    nk, nj, ni = SHAPE
    rows_y = -20.0 + SPACING[1] * np.arange(nj)
    cols_x = -15.0 + SPACING[2] * np.arange(ni)
    paths = []
    for k in range(nk):
        z = 0.0 + SPACING[0] * k
        y, x = np.meshgrid(rows_y, cols_x, indexing="ij")
        inside = (x - SPHERE_CENTRE[0]) ** 2 + (y - SPHERE_CENTRE[1]) ** 2 + (z - SPHERE_CENTRE[2]) ** 2 < SPHERE_RADIUS ** 2
        stored = np.where(inside, 350 + 1024, 40 + 1024).astype(np.uint16)
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID = PATIENT["name"], PATIENT["id"]
        ds.PatientBirthDate, ds.PatientSex = "19640301", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260110", "101500", ACCESSION
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, k + 1
        ds.Manufacturer, ds.ConvolutionKernel, ds.KVP, ds.SliceThickness = "ACME", "B26f", 100, SPACING[0]
        ds.ContrastBolusAgent = "iodinated"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(cols_x[0]), float(rows_y[0]), z]
        ds.PixelSpacing = [SPACING[1], SPACING[2]]
        ds.Rows, ds.Columns = nj, ni
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = stored.tobytes()
        path = folder / f"slice_{(k * 7) % nk:03d}.dcm"  # files not in slice order
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _volume_from_dicom(paths: list[Path]) -> Volume:
    """Read the series back: sort by position, HU from the rescale, geometry from IOP/IPP."""
    slices = sorted((pydicom.dcmread(p) for p in paths), key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices]).astype(np.int16)
    first = slices[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    direction = np.stack([normal, iop[3:], iop[:3]], axis=1)  # columns: array axes k, j, i
    step = float(slices[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    geometry = Geometry(shape=hu.shape, spacing=(step, *map(float, first.PixelSpacing)),
                        origin=tuple(map(float, first.ImagePositionPatient)), direction=direction)
    provenance = {
        "patient_name": str(first.PatientName), "patient_id": first.PatientID,
        "patient_birth_date": first.PatientBirthDate, "patient_sex": first.PatientSex,
        "study_instance_uid": first.StudyInstanceUID, "series_instance_uid": first.SeriesInstanceUID,
        "frame_of_reference_uid": first.FrameOfReferenceUID, "accession_number": first.AccessionNumber,
        "study_date": first.StudyDate, "study_time": first.StudyTime, "modality": first.Modality,
        "manufacturer": first.Manufacturer, "kvp": float(first.KVP), "convolution_kernel": first.ConvolutionKernel,
        "contrast_bolus_agent": first.ContrastBolusAgent, "slice_thickness_mm": float(first.SliceThickness),
        "number_of_slices": len(slices), "pixel_spacing_mm": [float(v) for v in first.PixelSpacing],
        "series_number": int(first.SeriesNumber), "transfer_syntax_uid": str(first.file_meta.TransferSyntaxUID),
        "source_instances": [{"sop_class_uid": d.SOPClassUID, "sop_instance_uid": d.SOPInstanceUID} for d in slices],
        "source_sha256": hashlib.sha256(b"".join(Path(p).read_bytes() for p in sorted(paths))).hexdigest(),
    }
    return Volume(hu, geometry, provenance)


@pytest.fixture(scope="session")
def source(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("source") / "DOE_JANE_CT"
    paths = _write_ct_series(folder)
    volume = _volume_from_dicom(paths)
    mask = Mask((volume.array > 200).astype(np.uint8), volume.geometry, {1: "aorta"})
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_RADIUS)
    mesh.apply_translation(SPHERE_CENTRE)
    return {"paths": paths, "volume": volume, "mask": mask, "mesh": mesh}


def _billable(model_id: str, mesh_sha256: str | None = None) -> BillableModel:
    return BillableModel(
        model_id=model_id, patient_id=PATIENT["id"], date_of_service=DOS, icd10=("I71.23",), case_id="CASE-7",
        structure="aorta", indication_summary="Fusiform aneurysm of the descending thoracic aorta, 5.8 cm",
        purpose="surgical_planning", recipient="Cardiothoracic surgery",
        ordering_provider={"name": "Dr. Ann Order", "npi": "1234567893"},
        rendering_provider={"name": "Dr. Ray Render", "npi": "1234567893"}, payer="medicare",
        mesh_sha256=mesh_sha256)


def _inputs(source: dict, model_id: str, charge, *, deidentify: bool, with_print: bool = True) -> PacketInputs:
    mesh = source["mesh"]
    oriented = mesh.copy()
    oriented.apply_translation(-oriented.bounds[0])  # on the plate
    return PacketInputs(
        case_id="CASE-7", patient=dict(PATIENT),
        encounter={"date_of_service": DOS, "facility": "General Hospital 3D Lab",
                   "ordering_provider": {"name": "Dr. Ann Order", "npi": "1234567893"},
                   "rendering_provider": {"name": "Dr. Ray Render", "npi": "1234567893"}, "payer": "medicare"},
        indication={"icd10": ["I71.23"], "summary": "Fusiform aneurysm of the descending thoracic aorta, 5.8 cm"},
        model_spec={"id": model_id, "preset": "aorta_cta", "purpose": "surgical_planning",
                    "recipient": "Cardiothoracic surgery", "kind": "model",
                    "manual_steps": [{"step": "post_processing", "operator": "Tech Ty", "minutes": 35}]},
        charge=charge, volume=source["volume"], mask=source["mask"], model=Model(mesh, "aorta"),
        reports={
            "load": {"series": "3", "slices": 24, "source_folder": str(source["paths"][0].parent)},
            "segment": {"method": "threshold_region_growing", "lower_hu": 200, "upper_hu": 700,
                        "seeds_lps_mm": [SPHERE_CENTRE.tolist()], "voxels": int(source["mask"].voxel_count())},
            "mesh": {"watertight": True, "faces": int(len(mesh.faces)), "volume_ml": float(mesh.volume / 1000)},
            "plan": {"printer": "formlabs_form3b", "support_volume_mm3": 812.5, "height_mm": 18.0},
        },
        workflow=[{"step": "segmentation", "start": "2026-01-15T08:00:00+00:00",
                   "end": "2026-01-15T08:00:30+00:00", "operator": "Tech Ty"}],
        print_mesh=oriented if with_print else None,
        support_faces=(oriented.face_normals[:, 2] < -0.7) if with_print else None,
        deidentify=deidentify,
    )


def _model_folder(folder: Path, source: dict, model_id: str, case: str = "CASE-7") -> Path:
    """A new model folder ``folder/case/model_id`` holding the source mesh as model.stl."""
    model_dir = folder / case / model_id
    model_dir.mkdir(parents=True)
    source["mesh"].export(model_dir / "model.stl")
    return model_dir


def _make_packet(folder: Path, source: dict, model_id: str, charge, *, deidentify: bool, **kwargs) -> Path:
    model_dir = _model_folder(folder, source, model_id)
    source["mask"].array.tofile(model_dir / "mask.raw")  # any earlier-stage file is hashed too
    write_packet(_inputs(source, model_id, charge, deidentify=deidentify, **kwargs), model_dir)
    return model_dir


@pytest.fixture(scope="session")
def packet(source, tmp_path_factory) -> Path:
    charge = next_charge([], _billable("aorta-surgeon"))
    return _make_packet(tmp_path_factory.mktemp("identified"), source, "aorta-surgeon", charge, deidentify=False)


@pytest.fixture(scope="session")
def vendor_packet(source, tmp_path_factory) -> Path:
    charge = next_charge([], _billable("aorta-surgeon"))
    return _make_packet(tmp_path_factory.mktemp("vendor"), source, "aorta-surgeon", charge, deidentify=True)


# -- files and checksums ------------------------------------------------------------------------------

def test_packet_files_and_checksums(packet):
    names = sorted(p.name for p in packet.iterdir())
    assert names == ["SHA256SUMS", "mask.raw", "model.dcm", "model.stl", "packet.json", "packet.pdf"]
    listed = {}
    for line in (packet / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        listed[name] = digest
    assert set(listed) == set(names) - {"SHA256SUMS"}
    for name, digest in listed.items():
        assert hashlib.sha256((packet / name).read_bytes()).hexdigest() == digest


# -- packet.json ---------------------------------------------------------------------------------------

def test_packet_json_validates_and_holds_the_facts(packet, source):
    facts = json.loads((packet / "packet.json").read_text())
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(facts, schema, cls=jsonschema.Draft202012Validator)
    assert facts["schema_version"] == schema["properties"]["schema_version"]["const"]
    assert facts["charge"]["cpt"] == "0559T" and facts["charge"]["units"] == 1
    assert facts["indication"]["icd10"] == ["I71.23"]
    assert facts["indication"]["descriptions"] == ["Aneurysm of the descending thoracic aorta, without rupture"]
    assert facts["patient"]["id"] == PATIENT["id"]
    assert facts["source_imaging"]["study_instance_uid"] == source["volume"].provenance["study_instance_uid"]
    assert facts["source_imaging"]["number_of_source_instances"] == SHAPE[0]
    # Reports are carried as given, not re-derived.
    assert facts["segmentation"]["voxels"] == int(source["mask"].voxel_count())
    assert facts["print_plan"]["support_volume_mm3"] == 812.5
    minutes = {s["step"]: s["minutes"] for s in facts["workflow"]["steps"]}
    assert minutes == {"segmentation": 0.5, "post_processing": 35.0}
    assert facts["workflow"]["total_minutes"] == 35.5
    stl = (packet / "model.stl").read_bytes()
    files = {f["name"]: f for f in facts["files"]}
    assert files["model.stl"]["sha256"] == hashlib.sha256(stl).hexdigest()
    assert files["model.stl"]["bytes"] == len(stl)


def test_schema_refuses_a_packet_without_indication(packet):
    facts = json.loads((packet / "packet.json").read_text())
    facts["indication"]["icd10"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(facts, json.loads(SCHEMA.read_text()), cls=jsonschema.Draft202012Validator)


# -- packet.pdf -----------------------------------------------------------------------------------------

def _pdf_text(path: Path) -> tuple[pypdf.PdfReader, list[str]]:
    reader = pypdf.PdfReader(path)
    return reader, [page.extract_text() for page in reader.pages]


def test_pdf_opens_and_holds_the_expected_text(packet):
    reader, pages = _pdf_text(packet / "packet.pdf")
    text = "\n".join(pages)
    for expected in ("CASE-7", "aorta-surgeon", "Jane Doe", "MRN778899", "1964-03-01", "2026-01-15",
                     "Dr. Ann Order", "1234567893", "I71.23", "Fusiform aneurysm", "0559T",
                     "first individually prepared and processed component", "B26f", "iodinated", ACCESSION, "Study date 2026-01-10", "Study time 10:15:00",
                     "Tech Ty", "post processing", "35.00", "threshold_region_growing", "Support volume 812.5 mm³",
                     "Medical necessity", "Prepared by", "Reviewed by", "Total time recorded: 35.5 min"):
        assert expected in text, expected
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in page
    first_page = " ".join(pages[0].split())                          # the diagnosis title beside its code
    assert "A: I71.23 Aneurysm of the descending thoracic aorta, without rupture" in first_page
    assert reader.metadata.title.startswith("Anatomic model packet")


def test_pdf_holds_the_three_pictures(packet):
    reader = pypdf.PdfReader(packet / "packet.pdf")
    images = [image for page in reader.pages for image in page.images]
    assert len(images) == 3
    for image in images:
        picture = image.image
        assert picture.width > 300 and picture.height > 150
        pixels = np.asarray(picture.convert("RGB"))
        assert pixels.std() > 10  # not blank
    # Page 1 shows the model (figure 2); the CT picture, with the outline in pure red pixels, follows.
    assert len(reader.pages[0].images) == 1
    ct = np.asarray(images[1].image.convert("RGB")).astype(int)
    assert np.count_nonzero((ct[..., 0] > 200) & (ct[..., 1] < 60) & (ct[..., 2] < 60)) > 50
    # The print picture marks supports in red-dominant faces.
    plate = np.asarray(images[2].image.convert("RGB")).astype(int)
    assert np.count_nonzero((plate[..., 0] > 80) & (plate[..., 0] > 2.5 * plate[..., 1])) > 200


def test_page_one_is_the_summary_a_coder_reads(packet):
    reader, pages = _pdf_text(packet / "packet.pdf")
    first = " ".join(pages[0].split())
    facts = json.loads((packet / "packet.json").read_text())
    charge = facts["charge"]
    # the charge line's row: CPT, units, modifiers, state (derived from the packet's own facts)
    assert f"{charge['cpt']} {charge['units']} none pending: the model is not yet approved" in first
    for pointer, code, title in zip(charge["icd10_pointers"], charge["icd10"], facts["indication"]["descriptions"]):
        assert f"{pointer}: {code} {title}" in first
    assert "prepared, not yet approved" in first and "No hold on this model." in first
    assert "Patient Jane Doe" in first and "Date of service 2026-01-15" in first


def test_pdf_has_no_cut_word_and_no_dropped_row(packet):
    _, pages = _pdf_text(packet / "packet.pdf")
    text = "\n".join(pages)
    words = set(text.split())
    facts = json.loads((packet / "packet.json").read_text())
    assert "..." not in text and "\u2026" not in text and "more rows" not in text
    for entry in facts["files"]:                                     # every row, the hash whole
        assert entry["name"] in words and entry["sha256"] in words
    for key in ("study_instance_uid", "series_instance_uid", "frame_of_reference_uid", "source_sha256"):
        assert facts["source_imaging"][key] in words
    for step in facts["workflow"]["steps"]:
        assert step["step"].replace("_", " ") in text
    assert "2026-01-15 08:00:00 +00:00" in text


def test_unicode_names_render(source, tmp_path):
    """A CJK (and an accented) name is drawn, not folded to '?'; the emoji is not required."""
    from pipeline.document.pdf import font_files

    if "cjk" not in font_files():
        pytest.fail("no CJK font on this system: install Debian fonts-droid-fallback (.ci/run does)")
    charge = next_charge([], _billable("aorta-intl"))
    model_dir = _model_folder(tmp_path, source, "aorta-intl")
    inputs = _inputs(source, "aorta-intl", charge, deidentify=False, with_print=False)
    inputs.patient = dict(PATIENT, name="山田^太郎")
    inputs.encounter["ordering_provider"] = {"name": "MÜLLER^ZOË", "npi": "1234567893"}
    write_packet(inputs, model_dir)
    first = pypdf.PdfReader(model_dir / "packet.pdf").pages[0].extract_text()
    assert "太郎 山田" in first
    assert "Zoë Müller" in first
    assert "?" not in first
    assert "DroidSans" in "".join(_embedded_fonts(model_dir / "packet.pdf"))


def _embedded_fonts(path) -> set[str]:
    """The base font names a PDF's pages use (subset prefixes included)."""
    names = set()
    for page in pypdf.PdfReader(path).pages:
        for font in page["/Resources"]["/Font"].values():
            names.add(str(font.get_object()["/BaseFont"]))
    return names


def test_latin_packet_does_not_embed_the_cjk_font(source, tmp_path):
    """The CJK fallback is loaded only when a text needs it: a Latin-script packet draws in DejaVu only."""
    charge = next_charge([], _billable("aorta-latin"))
    model_dir = _model_folder(tmp_path, source, "aorta-latin", case="CASE-8")
    inputs = _inputs(source, "aorta-latin", charge, deidentify=False, with_print=False)
    inputs.encounter["ordering_provider"] = {"name": "MÜLLER^ZOË", "npi": "1234567893"}
    write_packet(inputs, model_dir)
    fonts = _embedded_fonts(model_dir / "packet.pdf")
    assert fonts and all("DejaVu" in name for name in fonts), fonts
    assert "Zoë Müller" in pypdf.PdfReader(model_dir / "packet.pdf").pages[0].extract_text()


def test_packet_without_volume_or_plan_still_written(source, tmp_path):
    charge = next_charge([], _billable("aorta-trainee"))
    model_dir = _model_folder(tmp_path, source, "aorta-trainee")
    inputs = _inputs(source, "aorta-trainee", charge, deidentify=False, with_print=False)
    inputs.volume = None
    inputs.mask = None
    report = write_packet(inputs, model_dir)
    assert len(report.pictures) == 1
    assert any("CT slices not shown" in w for w in report.warnings)
    assert any("print orientation not shown" in w for w in report.warnings)
    assert len(pypdf.PdfReader(model_dir / "packet.pdf").pages) >= 2


def test_missing_stl_is_a_document_error(source, tmp_path):
    charge = next_charge([], _billable("x"))
    with pytest.raises(DocumentError, match="model.stl is missing"):
        write_packet(_inputs(source, "x", charge, deidentify=False), tmp_path)


# -- model.dcm: the Encapsulated STL IOD ---------------------------------------------------------------

#: PS3.3 A.85.1 (Encapsulated STL IOD): its mandatory modules and, from each module's table, the
#: Type 1 (present, non-empty) and Type 2 (present, may be empty) attributes at the top level.
ENCAPSULATED_STL_MODULES = {
    "Patient (C.7.1.1)": ({}, {"PatientName", "PatientID", "PatientBirthDate", "PatientSex"}),
    "General Study (C.7.2.1)": ({"StudyInstanceUID"},
                                {"StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"}),
    "Encapsulated Document Series (C.24.1)": ({"Modality", "SeriesInstanceUID", "SeriesNumber"}, set()),
    "Frame of Reference (C.7.4.1)": ({"FrameOfReferenceUID"}, {"PositionReferenceIndicator"}),
    "General Equipment (C.7.5.1)": (set(), {"Manufacturer"}),
    "Enhanced General Equipment (C.7.5.2)": (
        {"Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions"}, set()),
    "Encapsulated Document (C.24.2)": (
        {"InstanceNumber", "BurnedInAnnotation", "EncapsulatedDocument", "MIMETypeOfEncapsulatedDocument"},
        {"ContentDate", "ContentTime", "AcquisitionDateTime", "ConceptNameCodeSequence", "DocumentTitle"}),
    "Manufacturing 3D Model (C.8.X.1)": ({"MeasurementUnitsCodeSequence"}, set()),
    "SOP Common (C.12.1)": ({"SOPClassUID", "SOPInstanceUID"}, set()),
}


def test_model_dcm_has_every_attribute_its_iod_requires(packet):
    ds = pydicom.dcmread(packet / "model.dcm")
    for module, (type1, type2) in ENCAPSULATED_STL_MODULES.items():
        for keyword in type1:
            assert keyword in ds and ds[keyword].value not in (None, "", b""), f"{module}: {keyword} (Type 1)"
        for keyword in type2:
            assert keyword in ds, f"{module}: {keyword} (Type 2)"
    # Conditional: Source Instance Sequence (the model derives from other instances) and the
    # Common Instance Reference module (it references instances of another series).
    assert len(ds.SourceInstanceSequence) == SHAPE[0]
    assert len(ds.ReferencedSeriesSequence) == 1


def test_model_dcm_against_the_standard_tables_shipped_with_highdicom(packet):
    """Cross-check with the PS3.3 module tables in highdicom's copy of the standard (JSON)."""
    standard = Path(__import__("highdicom").__file__).parent / "_standard"
    iod = json.loads((standard / "sop_class_iod_map.json").read_text())["1.2.840.10008.5.1.4.1.1.104.3"]
    modules = json.loads((standard / "iod_module_map.json").read_text())[iod]
    attributes = json.loads((standard / "module_attribute_map.json").read_text())
    ds = pydicom.dcmread(packet / "model.dcm")
    mandatory = [m["key"] for m in modules if m["usage"] == "M"]
    assert {"patient", "general-study", "encapsulated-document-series", "frame-of-reference",
            "enhanced-general-equipment", "encapsulated-document", "manufacturing-3d-model",
            "sop-common"} <= set(mandatory)
    checked = 0
    for module in mandatory:
        for attribute in attributes[module]:
            if attribute["path"] or attribute["type"] not in ("1", "2"):
                continue
            assert attribute["keyword"] in ds, f"{module}: {attribute['keyword']} (Type {attribute['type']})"
            if attribute["type"] == "1":
                assert ds[attribute["keyword"]].value not in (None, "", b""), f"{module}: {attribute['keyword']}"
            checked += 1
    assert checked >= 25


def test_model_dcm_content_and_references(packet, source):
    ds = pydicom.dcmread(packet / "model.dcm")
    provenance = source["volume"].provenance
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.3"
    assert ds.Modality == "M3D" and ds.MIMETypeOfEncapsulatedDocument == "model/stl"
    stl = (packet / "model.stl").read_bytes()
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == stl
    assert ds.EncapsulatedDocumentLength == len(stl)
    # Same patient and study as the source series, a new series, the source frame of reference.
    first = pydicom.dcmread(source["paths"][0])
    assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate) == (str(first.PatientName), first.PatientID,
                                                                        first.PatientBirthDate)
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.AccessionNumber == first.AccessionNumber
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    referenced = {item.ReferencedSOPInstanceUID for item in ds.SourceInstanceSequence}
    assert referenced == {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in source["paths"]}
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == provenance["series_instance_uid"]
    units = ds.MeasurementUnitsCodeSequence[0]
    assert (units.CodeValue, units.CodingSchemeDesignator) == ("mm", "UCUM")
    assert ds.Manufacturer == "anatomodel" and ds.SoftwareVersions
    # The encapsulated STL is the model, in patient LPS mm.
    mesh = trimesh.load(io.BytesIO(bytes(ds.EncapsulatedDocument)), file_type="stl")
    assert np.allclose(mesh.bounds, source["mesh"].bounds, atol=1e-4)


# -- de-identification -----------------------------------------------------------------------------------

def _every_readable_byte(path: Path) -> bytes:
    """Raw bytes, inflated PDF streams, pypdf text and metadata, gzip and zip content, DICOM values."""
    data = path.read_bytes()
    parts = [data]
    if data.startswith(b"%PDF"):
        for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.DOTALL):
            try:
                parts.append(zlib.decompress(match.group(1)))
            except zlib.error:
                pass
        reader = pypdf.PdfReader(path)
        parts += [page.extract_text().encode() for page in reader.pages]
        parts.append(json.dumps({str(k): str(v) for k, v in (reader.metadata or {}).items()}).encode())
    if data[:2] == b"\x1f\x8b":
        parts.append(gzip.decompress(data))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            parts += [archive.read(name) for name in archive.namelist()]
    if path.suffix == ".dcm":
        parts.append(str(pydicom.dcmread(path)).encode())
    return b"\n".join(parts).lower()


def test_vendor_packet_has_no_identifier_in_any_byte(vendor_packet, source, tmp_path):
    case_dir = vendor_packet.parent
    lines = [next_charge([], _billable("aorta-surgeon"))]
    write_case_charges(lines, case_dir, {"case_id": "CASE-7", "patient": PATIENT,
                                         "encounter": {"facility": "General Hospital 3D Lab", "payer": "medicare"},
                                         "provenance": source["volume"].provenance}, deidentify=True)
    files = [p for p in case_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"packet.pdf", "packet.json", "model.dcm", "model.stl", "SHA256SUMS",
                                       "charges.csv", "charges.json", "case_summary.pdf"}
    for path in files:
        content = _every_readable_byte(path)
        for needle in IDENTIFYING:
            for encoded in (needle.lower().encode(), needle.lower().encode("utf-16-be")):
                assert encoded not in content, f"{needle!r} found in {path.relative_to(case_dir)}"
            assert needle.lower() not in str(path.relative_to(case_dir)).lower()


def test_vendor_packet_keeps_the_facts_under_a_pseudonym(vendor_packet, source):
    facts = json.loads((vendor_packet / "packet.json").read_text())
    jsonschema.validate(facts, json.loads(SCHEMA.read_text()), cls=jsonschema.Draft202012Validator)
    assert facts["case"]["deidentified"] and facts["deidentification"]["applied"]
    alias = facts["patient"]["pseudonym"]
    assert re.fullmatch(r"ANON-[0-9A-F]{10}", alias)
    assert facts["charge"]["cpt"] == "0559T" and facts["indication"]["icd10"] == ["I71.23"]
    assert facts["load"]["source_folder"] == "[removed]"
    ds = pydicom.dcmread(vendor_packet / "model.dcm")
    assert ds.PatientName == alias and ds.PatientID == alias
    assert ds.PatientIdentityRemoved == "YES"
    # PS3.15 Annex E: the Basic Profile and the two options chosen, by their CID 7050 codes.
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100", "113107", "113105"]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    provenance = source["volume"].provenance
    # Modified Dates: the study date moved back by whole days (1-365), the same shift as the packet's dates.
    shift = dt.datetime.strptime(provenance["study_date"], "%Y%m%d") - dt.datetime.strptime(ds.StudyDate, "%Y%m%d")
    assert shift.seconds == 0 and 1 <= shift.days <= 365
    dos = dt.date.fromisoformat(facts["encounter"]["date_of_service"])
    assert (DOS - dos).days == shift.days  # the case's date of service, shifted alike
    assert ds.AccessionNumber == "" and ds.PatientBirthDate == ""
    assert ds.StudyInstanceUID != provenance["study_instance_uid"]
    assert ds.FrameOfReferenceUID == facts["source_imaging"]["frame_of_reference_uid"]
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == (vendor_packet / "model.stl").read_bytes()
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(vendor_packet / "packet.pdf").pages)
    assert alias in text and "DE-IDENTIFIED COPY" in text and "0559T" in text


def test_vendor_packet_refuses_an_stl_header_with_phi(source, tmp_path):
    charge = next_charge([], _billable("aorta-surgeon"))
    model_dir = tmp_path / "CASE-7" / "aorta-surgeon"
    model_dir.mkdir(parents=True)
    stl = bytearray(trimesh.exchange.stl.export_stl(source["mesh"]))
    stl[:80] = b"patient DOE^JANE".ljust(80, b" ")
    (model_dir / "model.stl").write_bytes(bytes(stl))
    with pytest.raises(DocumentError, match=r"still holds a patient identifier \(before .*\) in: model.stl;") as error:
        write_packet(_inputs(source, "aorta-surgeon", charge, deidentify=True), model_dir)
    assert "DOE" not in str(error.value)
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.stl"]  # nothing written, nothing lost


# -- per-case charges --------------------------------------------------------------------------------------

@pytest.mark.parametrize("count, expected", [
    (1, [("0559T", "1")]),
    (2, [("0559T", "1"), ("0560T", "1")]),
    (3, [("0559T", "1"), ("0560T", "2")]),
])
def test_case_charges_for_one_two_three_models(tmp_path, count, expected):
    lines = []
    for n in range(count):
        lines.append(next_charge(lines, _billable(f"model-{n}", mesh_sha256=f"mesh-{n}")))
    case = {"case_id": "CASE-7", "patient": PATIENT, "encounter": {"facility": "General Hospital 3D Lab"}}
    paths = write_case_charges(lines, tmp_path / "CASE-7", case)
    assert [p.name for p in paths] == ["charges.csv", "charges.json", "case_summary.pdf"]
    rows = list(csv.DictReader((tmp_path / "CASE-7" / "charges.csv").open()))
    assert [(r["cpt"], r["units"]) for r in rows] == expected
    assert all(r["icd10_pointers"] == "A" and r["diagnoses"] == "A=I71.23" and r["date_of_service"] == "2026-01-15"
               and r["rendering_npi"] == "1234567893" and r["patient"] == PATIENT["id"] for r in rows)
    document = json.loads((tmp_path / "CASE-7" / "charges.json").read_text())
    assert [(c["cpt"], c["units"]) for c in document["claim_lines"]] == [(c, int(u)) for c, u in expected]
    assert len(document["model_lines"]) == count
    summary = "\n".join(p.extract_text() for p in pypdf.PdfReader(paths[2]).pages)
    assert "CASE-7" in summary and all(f"model-{n}" in summary for n in range(count))


def test_stage_warnings_reach_packet_json_and_page_one(source, tmp_path):
    from pipeline.document.facts import gather_warnings

    assert gather_warnings({"segment": {"warnings": ["small"]}, "mesh": {"warnings": ["cut"]},
                            "plan": {"warnings": ["cut"]}}, ["cut", "own"]) == [
        "segmentation: small", "mesh QA: cut", "print plan: cut", "cut", "own"]
    charge = next_charge([], _billable("aorta-warned"))
    model_dir = _model_folder(tmp_path, source, "aorta-warned")
    inputs = _inputs(source, "aorta-warned", charge, deidentify=False)
    inputs.reports["segment"]["warnings"] = ["volume 52.7 ml lies outside what aorta_cta expects"]
    inputs.reports["mesh"]["warnings"] = ["the structure is cut by the edge of the scanned volume"]
    write_packet(inputs, model_dir)
    facts = json.loads((model_dir / "packet.json").read_text())
    assert facts["warnings"][:2] == ["segmentation: volume 52.7 ml lies outside what aorta_cta expects",
                                     "mesh QA: the structure is cut by the edge of the scanned volume"]
    first = " ".join(pypdf.PdfReader(model_dir / "packet.pdf").pages[0].extract_text().split())
    for warning in facts["warnings"]:
        assert warning in first
    # the segmentation's warning is also its plausibility verdict
    assert "Segmentation plausibility ✗ check volume 52.7 ml" in first


@pytest.mark.parametrize("deidentify", [False, True], ids=["identified", "vendor"])
def test_lossy_source_warning_reaches_packet_json_and_page_one(source, phantoms_dir, tmp_path, deidentify):
    """A real lossy compressed (NEMA WG04 JPEG 2000 irreversible) series' load report, as case.py
    passes it: its lossy evidence is in the packet's load block and its warning on page 1."""
    from test_load_lossy import nema_file, nema_series

    from pipeline.load import load_series

    _, load_report = load_series(nema_series(nema_file(phantoms_dir, "CT1", "J2KI"), tmp_path / "nema"), 1)
    warning = f"load: {load_report.lossy_compression.warning()}"
    charge = next_charge([], _billable("aorta-lossy"))
    model_dir = _model_folder(tmp_path, source, "aorta-lossy")
    inputs = _inputs(source, "aorta-lossy", charge, deidentify=deidentify)
    inputs.reports["load"] = load_report.to_dict()
    write_packet(inputs, model_dir)
    facts = json.loads((model_dir / "packet.json").read_text())
    assert facts["load"]["lossy_compression"]["lossy"] is True
    assert facts["warnings"][0] == warning
    first = " ".join(pypdf.PdfReader(model_dir / "packet.pdf").pages[0].extract_text().split())
    assert warning in first


def test_print_preparation_warnings_reach_page_one(source, tmp_path):
    """The prepare stage's warnings are the plan's (PrepareReport has none): a model longer than
    the printer's build volume, planned for real, is named on page 1 as case.py passes it."""
    from pipeline.prepare import plan_print
    from pipeline.prepare.evaluate import usable_volume
    from pipeline.printers import load_printer

    printer = load_printer("formlabs_form3b")
    slab = trimesh.creation.box((1.5 * float(max(usable_volume(printer))), 30.0, 4.0)).subdivide_to_size(4.0)
    plan, prepare_report = plan_print(Model(slab, "slab"), printer, alternatives=0)
    assert not plan.fits and not hasattr(prepare_report, "warnings")
    charge = next_charge([], _billable("aorta-planned"))
    model_dir = _model_folder(tmp_path, source, "aorta-planned")
    inputs = _inputs(source, "aorta-planned", charge, deidentify=False)
    inputs.reports |= {"plan": plan.to_dict(), "prepare": prepare_report.to_dict()}
    write_packet(inputs, model_dir)
    first = " ".join(pypdf.PdfReader(model_dir / "packet.pdf").pages[0].extract_text().split())
    assert plan.warnings and all(f"print plan: {warning}" in first for warning in plan.warnings)
    assert f"does not fit {printer.name}" in first


def test_holds_of_the_charge_line_and_the_stages_make_page_one_held(packet):
    from pipeline.document.facts import packet_summary

    facts = json.loads((packet / "packet.json").read_text())
    assert packet_summary(facts).billing == "pending" and packet_summary(facts).holds == []
    coding = {"code": "coding.icd10_not_billable", "reason": "I71.2 is a header", "source": "coding",
              "model_id": "aorta-surgeon"}
    segment = {"code": "segment.tube_ends_inside_scan", "reason": "the aorta ends inside the scan",
               "source": "segment", "model_id": "aorta-surgeon"}
    facts["charge"]["holds"] = [coding]
    facts["segmentation"]["holds"] = [segment, segment]
    summary = packet_summary(facts)
    assert [h.code for h in summary.holds] == ["segment.tube_ends_inside_scan", "coding.icd10_not_billable"]
    assert summary.billing == "held" and "I71.2 is a header" in summary.billing_reason
    plausibility = next(v for v in summary.verdicts if v.name == "Segmentation plausibility")
    assert plausibility.passed is False and "ends inside the scan" in plausibility.text
    # the stage's report names no model; the ledger's copy of the same hold does: listed once
    facts["segmentation"]["holds"] = [{**segment, "model_id": None}]
    facts["lifecycle"] = {"state": "prepared", "holds": [segment, coding], "sign_offs": [], "billable": False}
    assert [(h.code, h.model_id) for h in packet_summary(facts).holds] == [
        ("segment.tube_ends_inside_scan", None), ("coding.icd10_not_billable", "aorta-surgeon")]


def test_page_one_draws_the_lifecycle_given(packet):
    """The summary the lifecycle fills (state, sign-offs, holds) is what page 1 says."""
    from pipeline.document.facts import SignOff, packet_summary
    from pipeline.document.pdf import packet_pdf
    from pipeline.holds import Hold

    facts = json.loads((packet / "packet.json").read_text())
    summary = packet_summary(facts)
    summary.state, summary.billing, summary.billing_reason = "approved", "held", "payer rule: ABN missing"
    summary.signoffs = [SignOff("Reviewed by (rendering provider)", "Ray Render", "2026-01-16 09:30")]
    summary.holds = [Hold("payer.abn_required", "Medicare expects an ABN: append GA or GZ", "payer:medicare")]
    data, _ = packet_pdf(facts, [], summary)
    first = " ".join(pypdf.PdfReader(io.BytesIO(data)).pages[0].extract_text().split())
    assert "held: payer rule: ABN missing" in first and ": approved" in first
    assert "Reviewed by (rendering provider) Ray Render 2026-01-16 09:30" in first
    assert "payer.abn_required payer:medicare Medicare expects an ABN: append GA or GZ" in first


def test_cjk_font_is_added_on_the_first_text_that_needs_it():
    """The 0.5 s CJK parse happens only for a text DejaVu cannot draw (and then once)."""
    from pipeline.document.pdf import FONT, _Document, font_files

    if "cjk" not in font_files():
        pytest.fail("no CJK font on this system: install Debian fonts-droid-fallback (.ci/run does)")
    document = _Document("title")
    document.add_page()
    document.set_font(FONT, "B", 9)
    document.cell(0, 5, "Zoë Müller, 0.5 mm, ±2 %")
    assert "cjk" not in document.fonts
    document.cell(0, 5, "山田 太郎")
    assert "cjk" in document.fonts and document.font_style == "B"
    document.cell(0, 5, "田中")  # added once
    assert pypdf.PdfReader(io.BytesIO(bytes(document.output()))).pages[0].extract_text().count("田") == 2
