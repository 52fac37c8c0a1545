"""De-identification that holds: a vendor copy of a real run identifies no one.

A whole case is run with ``deidentify=True`` on the synthetic CTA written as DICOM, then every
byte of every file of the vendor copy is searched (raw, every zlib stream inflated, gzip and zip
members unpacked recursively, PDF text extracted by pypdf, DICOM values decoded by pydicom) for
every identifier of the source read back from the source DICOM files themselves: names, ids,
accession, every UID, and every real date. The scanner here is written independently of
``pipeline.document.deidentify``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import io
import json
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path

import pydicom
import pypdf
import pytest
import yaml

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.document import deidentify as deid
from pipeline.errors import ConfigError
from pipeline.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]
CASE = {
    "case_id": "VENDOR-7",
    "patient": {"name": "PHANTOM^AORTA", "id": "PH0001", "birth_date": "1964-03-01", "sex": "M"},
    "encounter": {"date_of_service": "2026-01-15", "facility": "Example University Hospital, 3D Printing Lab",
                  "ordering_provider": {"name": "SURGEON^ORDERING", "npi": "1234567893"},
                  "rendering_provider": {"name": "RADIOLOGIST^RENDERING", "npi": "1987654328"},
                  "payer": "medicare"},
}


def _inflate_all(data: bytes, depth: int = 0) -> list[bytes]:
    """The bytes, plus every zlib stream found at any offset, gzip and zip content, recursively."""
    parts = [data]
    if depth > 3:
        return parts
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                parts += [member.encode()] + _inflate_all(archive.read(member), depth + 1)
    if data[:2] == b"\x1f\x8b":
        parts += _inflate_all(gzip.decompress(data), depth + 1)
    for match in re.finditer(rb"stream\r?\n", data):  # PDF streams, by their start only
        try:
            parts += _inflate_all(zlib.decompressobj().decompress(data[match.end():]), depth + 1)
        except zlib.error:
            continue
    return parts


def _readable(path: Path) -> bytes:
    data = path.read_bytes()
    parts = _inflate_all(data)
    if data.startswith(b"%PDF"):
        reader = pypdf.PdfReader(path)
        parts += [page.extract_text().encode() for page in reader.pages]
        parts.append(json.dumps({str(k): str(v) for k, v in (reader.metadata or {}).items()}).encode())
    if path.suffix == ".dcm":
        parts.append(str(pydicom.dcmread(path)).encode())
    return b"\n".join(parts).lower()


def _date_forms(day: dt.date) -> list[str]:
    return [day.isoformat(), day.strftime("%Y%m%d"), day.strftime("%m/%d/%Y"), day.strftime("%d.%m.%Y")]


@pytest.fixture(scope="module")
def vendor_run(tmp_path_factory):
    from pipeline.case import run_case

    root = tmp_path_factory.mktemp("vendor")
    write_dicom_series(make_phantom(shape_scale=0.5), root / "cta", with_truth=False)
    example = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    case = {**example, **CASE, "imaging": {"dicom": "cta", "series": "auto"}, "models": example["models"][:1]}
    (root / "case.yaml").write_text(yaml.safe_dump(case, sort_keys=False))
    ledger = root / "ledger.sqlite3"
    identified = run_case(root / "case.yaml", root / "out", ledger=ledger)
    with Ledger(ledger) as book:
        before = _billed_record(book)
    result = run_case(root / "case.yaml", root / "vendor", deidentify=True, ledger=ledger)
    with Ledger(ledger) as book:
        after = _billed_record(book)
    source = [pydicom.dcmread(p) for p in sorted((root / "cta").glob("IM*"))]
    return result, source, case | {"ledger": ledger, "identified": identified, "before": before, "after": after,
                                   "root": root}


def _billed_record(book: Ledger) -> dict:
    """What the ledger bills for the case: its model versions, charges, runs and the claim's lines."""
    detail = book.show("VENDOR-7")
    billing = book.case_billing("VENDOR-7")
    return {"models": detail["models"], "charges": detail["charges"], "runs": [r["id"] for r in detail["runs"]],
            "lines": [(e.model_id, e.version, e.line.cpt) for e in billing.billable + billing.pending],
            "audit": len(detail["audit"])}


def test_a_vendor_copy_never_becomes_the_billed_packet(vendor_run):
    result, _source, case = vendor_run
    before, after = case["before"], case["after"]
    assert after == before  # no run, model version, charge or audit entry added by the vendor copy
    [current] = [m for m in after["models"] if m["status"] == "current"]
    assert Path(current["folder"]) == case["identified"].models[0].folder == case["root"] / "out" / "VENDOR-7" / (
        result.models[0].model_id)
    billed = json.loads((Path(current["folder"]) / "packet.json").read_text())
    assert billed["case"]["deidentified"] is False and billed["patient"]["id"] == "PH0001"
    assert result.models[0].version is None and result.charges_files == []
    assert not (case["root"] / "vendor" / "encounters").exists()  # a vendor copy writes no claim
    with Ledger(case["ledger"]) as book:
        assert book.verify().ok  # the identified packet on disk is still the one recorded


def test_a_vendor_copy_over_the_identified_packet_is_refused_before_work(vendor_run):
    from pipeline.case import run_case

    _result, _source, case = vendor_run
    packet = case["root"] / "out" / "VENDOR-7" / case["models"][0]["id"] / "packet.json"
    stamp = packet.stat().st_mtime_ns
    with pytest.raises(ConfigError, match="never over it"):
        run_case(case["root"] / "case.yaml", case["root"] / "out", deidentify=True, ledger=case["ledger"])
    assert packet.stat().st_mtime_ns == stamp
    assert not list(packet.parent.parent.glob(".*"))  # no staging folder left


def _source_identifiers(source: list[pydicom.Dataset], case: dict) -> dict[str, list[str]]:
    first = source[0]
    uids = {str(ds.SOPInstanceUID) for ds in source}
    uids |= {str(first.StudyInstanceUID), str(first.SeriesInstanceUID), str(first.FrameOfReferenceUID)}
    name = str(first.PatientName)
    names = {name, name.replace("^", " "), " ".join(reversed(name.split("^"))), name.replace("^", ", ")}
    dates = {dt.datetime.strptime(first.StudyDate, "%Y%m%d").date(),
             dt.datetime.strptime(first.PatientBirthDate, "%Y%m%d").date(),
             dt.date.fromisoformat(case["encounter"]["date_of_service"])}
    return {
        "identifier": sorted(names | {str(first.PatientID), str(first.AccessionNumber), case["patient"]["id"],
                                      str(first.ReferringPhysicianName), str(first.InstitutionName),
                                      case["encounter"]["facility"], "SURGEON^ORDERING", "RADIOLOGIST^RENDERING"}),
        "uid": sorted(uids),
        "date": sorted(form for day in dates for form in _date_forms(day)),
    }


def _scan(files: list[Path], needles: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    found = []
    for path in files:
        content = _readable(path)
        for kind, values in needles.items():
            for value in values:
                for encoded in (value.lower().encode(), value.lower().encode("utf-16-le")):
                    if encoded in content:
                        found.append((path.name, kind, value))
    return found


def test_no_byte_of_the_vendor_copy_identifies_the_source(vendor_run):
    result, source, case = vendor_run
    needles = _source_identifiers(source, case)
    assert len(needles["uid"]) == len(source) + 3
    files = [p for p in (case["root"] / "vendor").rglob("*") if p.is_file()]  # everything the run wrote
    assert {"packet.pdf", "packet.json", "model.dcm", "model.stl", "mask.nii.gz", "print.3mf"} <= {p.name for p in files}
    assert _scan(files, needles) == []
    assert not [p for p in (case["root"] / "vendor").rglob("*")
                if any(v.lower() in str(p).lower() for values in needles.values() for v in values)]
    # the scanner finds what it looks for: the identified packet holds every kind
    kinds = {kind for _name, kind, _value in _scan(
        [p for p in case["identified"].models[0].folder.rglob("*") if p.is_file()], needles)}
    assert kinds == {"identifier", "uid", "date"}


def test_vendor_charges_shift_every_date_and_name_no_one(vendor_run, tmp_path):
    """An encounter's charges written as a vendor copy (``write_case_charges(deidentify=True)``)."""
    from pipeline.case import load_case
    from pipeline.document import write_case_charges

    _result, source, case = vendor_run
    with Ledger(case["ledger"]) as book:
        billing = book.case_billing("VENDOR-7")
    entries = billing.billable + billing.pending
    first = source[0]
    provenance = {"patient_name": str(first.PatientName), "patient_id": first.PatientID,
                  "patient_birth_date": first.PatientBirthDate, "accession_number": first.AccessionNumber,
                  "study_date": first.StudyDate}
    header = load_case(case["root"] / "case.yaml").model_dump(mode="python") | {"provenance": provenance}
    files = write_case_charges([e.line for e in entries], tmp_path / "claim", header, deidentify=True,
                               pending=billing.pending)
    assert {p.name for p in files} == {"charges.csv", "charges_pending.csv", "charges.json", "case_summary.pdf"}
    assert _scan(files, _source_identifiers(source, case)) == []
    shift = dt.timedelta(days=deid.date_shift_days("PH0001"))
    shifted = (dt.date.fromisoformat(case["encounter"]["date_of_service"]) - shift).isoformat()
    rows = (tmp_path / "claim" / "charges.csv").read_text().splitlines()
    assert len(rows) == 1 + len(entries) and all(shifted in row for row in rows[1:])
    assert shifted in _readable(tmp_path / "claim" / "case_summary.pdf").decode("latin-1")


def test_every_uid_of_the_vendor_copy_is_new(vendor_run):
    result, source, case = vendor_run
    old = set(_source_identifiers(source, case)["uid"])
    folder = result.models[0].folder
    ds = pydicom.dcmread(folder / "model.dcm")
    seen = []
    ds.walk(lambda _, element: seen.append(str(element.value)) if element.VR == "UI" else None)
    instance_uids = [uid for uid in seen if not uid.startswith("1.2.840.10008.")]
    assert instance_uids and not old & set(instance_uids)
    facts = json.loads((folder / "packet.json").read_text())
    text = json.dumps(facts)
    assert not [uid for uid in old if uid in text]
    # The copy's references agree with each other: the packet names model.dcm's UIDs.
    assert facts["load"]["series_instance_uid"] == facts["source_imaging"]["series_instance_uid"]
    assert facts["source_imaging"]["series_instance_uid"] == ds.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert facts["dicom"]["sop_instance_uid"] == ds.SOPInstanceUID
    assert facts["source_imaging"]["study_instance_uid"] == ds.StudyInstanceUID


def test_dates_are_shifted_alike_as_the_method_says(vendor_run):
    result, source, case = vendor_run
    folder = result.models[0].folder
    facts = json.loads((folder / "packet.json").read_text())
    ds = pydicom.dcmread(folder / "model.dcm")
    study = dt.datetime.strptime(source[0].StudyDate, "%Y%m%d").date()
    service = dt.date.fromisoformat(case["encounter"]["date_of_service"])
    shift = service - dt.date.fromisoformat(facts["encounter"]["date_of_service"])
    assert 1 <= shift.days <= 365
    assert study - dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date() == shift
    assert study - dt.datetime.strptime(facts["source_imaging"]["study_date"], "%Y%m%d").date() == shift
    assert "Modified Dates" in facts["deidentification"]["method"] == ds.DeidentificationMethod
    assert [c["code"] for c in facts["deidentification"]["codes"]] == ["113100", "113107", "113105"]
    assert ds.PatientBirthDate == "" and facts["patient"]["birth_date"] is None
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(folder / "packet.pdf").pages)
    assert facts["encounter"]["date_of_service"] in text
    # The profile and its options are named, in the packet and in model.dcm (PS3.15 Annex E).
    flat = " ".join(text.split())
    for name in ("Basic Application Confidentiality Profile", "Modified Dates Option", "Clean Descriptors Option"):
        assert name in flat  # the PS3.16 CID 7050 code meanings
    assert "PS3.15 Annex E" in flat and "not billed" in flat
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100", "113107", "113105"]


def _key_with_shift(days: int, monkeypatch) -> str:
    """A key under which the test patient's dates move back by exactly ``days``."""
    for number in range(100_000):
        key = f"collision-test-key-{number:08d}-padding-padding"
        monkeypatch.setenv(deid.KEY_VARIABLE, key)
        if deid.date_shift_days("PH0001") == days:
            return key
    raise AssertionError(f"no key shifts by {days} days")


def test_a_shifted_date_equal_to_a_real_one_is_not_refused(tmp_path, monkeypatch):
    """The date of service ten days after the scan, and a key whose shift is ten days: the copy's
    shifted date of service is byte for byte the real study date. That is no leak (the copy holds
    the same bytes whichever date they came from) and the copy is written; every other identifier
    and real date is still absent, and the study date itself is shifted."""
    from pipeline.case import run_case

    study = dt.datetime.strptime(_phantom_study_date(), "%Y%m%d").date()
    service = study + dt.timedelta(days=10)
    _key_with_shift(10, monkeypatch)
    write_dicom_series(make_phantom(shape_scale=0.5), tmp_path / "cta", with_truth=False)
    example = yaml.safe_load((REPO / "configs" / "cases" / "example_aorta.yaml").read_text())
    encounter = {**CASE["encounter"], "date_of_service": service.isoformat()}
    case = {**example, **CASE, "encounter": encounter, "imaging": {"dicom": "cta", "series": "auto"},
            "models": example["models"][:1]}
    (tmp_path / "case.yaml").write_text(yaml.safe_dump(case, sort_keys=False))
    result = run_case(tmp_path / "case.yaml", tmp_path / "vendor", deidentify=True, ledger=tmp_path / "l.sqlite3")

    folder = result.models[0].folder
    facts = json.loads((folder / "packet.json").read_text())
    assert facts["encounter"]["date_of_service"] == study.isoformat()  # the coincidence happened
    shifted_study = (study - dt.timedelta(days=10)).strftime("%Y%m%d")
    assert facts["source_imaging"]["study_date"] == shifted_study
    assert pydicom.dcmread(folder / "model.dcm").StudyDate == shifted_study
    source = [pydicom.dcmread(p) for p in sorted((tmp_path / "cta").glob("IM*"))]
    needles = _source_identifiers(source, case)
    coinciding = set(_date_forms(study))
    needles["date"] = [form for form in needles["date"] if form not in coinciding]
    assert set(_date_forms(service)) <= set(needles["date"])  # the real date of service is still searched for
    files = [p for p in (tmp_path / "vendor").rglob("*") if p.is_file()]
    assert _scan(files, needles) == []


def _phantom_study_date() -> str:
    from example_data.cta_phantom import STUDY_DATE

    return STUDY_DATE


def test_the_scan_leaves_out_only_a_real_date_that_equals_a_shifted_one():
    """vendor_copy_identifiers: a real study date is searched for unless it equals the shifted
    form of a date the copy holds (the date of service, or a lab date such as today's)."""
    service = dt.date(2026, 3, 1)
    shift = dt.timedelta(days=deid.date_shift_days("PH0001"))
    patient = {"id": "PH0001", "name": "PHANTOM^AORTA"}

    def searched(study_day: dt.date, lab_dates=()) -> bool:
        found = deid.vendor_copy_identifiers(patient, {"study_date": study_day.strftime("%Y%m%d")},
                                             {"date_of_service": service.isoformat()}, lab_dates=lab_dates)
        return study_day.isoformat() in found and study_day.strftime("%Y%m%d") in found

    assert searched(service - shift - dt.timedelta(days=1))
    assert not searched(service - shift)  # the shifted date of service is that very date
    today = dt.date(2026, 12, 2)
    assert searched(today - shift)
    assert not searched(today - shift, lab_dates=[today])  # the shifted creation date is that very date
    found = deid.vendor_copy_identifiers(patient, {"study_date": "20260115"}, {"date_of_service": service.isoformat()})
    assert service.isoformat() in found  # the real date of service never equals its own shift


# -- the key ------------------------------------------------------------------------------------------

def test_a_key_is_generated_once_with_0600_and_pseudonyms_need_it(tmp_path, monkeypatch):
    path = tmp_path / "config" / "deid.key"
    monkeypatch.setenv(deid.KEY_FILE_VARIABLE, str(path))
    monkeypatch.delenv(deid.KEY_VARIABLE, raising=False)
    alias = deid.pseudonym("PH0001")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert len(key) >= deid.MIN_KEY_CHARS
    assert deid.pseudonym("PH0001") == alias  # stable under one key
    expected = hmac.new(key.encode(), b"pseudonym\x1fPH0001", hashlib.sha256).hexdigest()[:10].upper()
    assert alias == f"ANON-{expected}"
    # The old public salt no longer recomputes it.
    public = hmac.new(b"anatomodel-deidentify-v1", b"PH0001", hashlib.sha256).hexdigest()[:10].upper()
    assert alias != f"ANON-{public}"
    path.unlink()
    assert deid.pseudonym("PH0001") != alias  # a new installation, a new key


def test_a_key_file_others_can_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "deid.key"
    path.write_text("x" * 64)
    os.chmod(path, 0o644)
    monkeypatch.setenv(deid.KEY_FILE_VARIABLE, str(path))
    monkeypatch.delenv(deid.KEY_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match="chmod 600"):
        deid.pseudonym("PH0001")


def test_a_short_key_is_refused(monkeypatch):
    monkeypatch.setenv(deid.KEY_VARIABLE, "secret")
    with pytest.raises(ConfigError, match="shorter than"):
        deid.replace_uid("1.2.3.4.5")


def test_the_check_reads_compressed_pdf_streams_and_zip_members(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.123456789"
    inner = zlib.compress(f"BT ({uid}) Tj ET".encode())
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<>> stream\n" + inner + b"\nendstream endobj\n")
    with zipfile.ZipFile(tmp_path / "b.3mf", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("3D/model.model", "<model name='2026-01-15'/>")
    hits = deid.find_identifiers(tmp_path, [uid, "2026-01-15"])
    assert sorted(hits) == [("a.pdf", uid), ("b.3mf", "2026-01-15")]
