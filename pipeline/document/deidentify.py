"""De-identification of the packet (the vendor copy) and the check that it worked.

Choices (following DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile):

* Patient name and patient id are replaced by one pseudonym (``ANON-`` + 10 hex digits of an
  HMAC-SHA-256 of the patient id under the site key ``$ANATOMODEL_DEID_KEY``): the same patient
  gets the same pseudonym in every packet and charge file, and without the key the pseudonym
  cannot be traced back to the id.
* Birth date, accession number, study date and time, content date and time: removed (emptied
  where DICOM makes them Type 2). No date shifting: the charge line keeps the date of service,
  which billing needs and which is not a patient identifier of the list above.
* Study, series, frame-of-reference and source-instance UIDs: replaced by hash-derived UIDs, the
  same original always giving the same replacement, so references inside a case stay consistent.
* Patient sex: removed (Basic Profile ``Z``).
* Free text carried from the stage reports: any string containing an identifying string is
  replaced by ``[removed]``; absolute paths are cut to their file name.

:func:`find_identifiers` then reads every byte of every file of the folder (inflating PDF
streams, gzip files and zip members) and reports any identifying string left.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable

from pydicom.uid import generate_uid

#: Mixed into every hash so that pseudonyms and UIDs differ from other tools' hashes of the same ids.
_SALT = "anatomodel-deidentify-v1"
#: Environment variable holding the site's de-identification key.
KEY_VARIABLE = "ANATOMODEL_DEID_KEY"

REMOVED = "[removed]"

#: Provenance and report keys whose values identify the patient or the study.
IDENTIFYING_KEYS = frozenset({
    "patient_name", "patient_id", "patient_birth_date", "birth_date", "accession_number",
    "mrn", "study_date", "study_time", "other_patient_ids", "patient_address",
    "referring_physician_name", "institution_name", "source_folder", "source_files",
})

#: The DICOM de-identification method code of the profile applied (PS3.16 CID 7050).
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
#: Deidentification Method (0012,0063), LO: at most 64 characters.
METHOD_TEXT = "PS3.15 Basic Profile: ids pseudonymised, dates removed, new UIDs"


def _key() -> bytes:
    """The site's de-identification key (``$ANATOMODEL_DEID_KEY``), else the public salt.

    Without a site key a pseudonym is a hash anyone can recompute from a guessed MRN; a lab that
    sends packets out sets the key (any long random text) once for all its runs.
    """
    return (os.environ.get(KEY_VARIABLE) or _SALT).encode("utf-8")


def pseudonym(patient_id: str) -> str:
    """A stable pseudonymous patient id, ``ANON-`` + 10 hex digits (HMAC-SHA-256 of the id)."""
    digest = hmac.new(_key(), str(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return f"ANON-{digest[:10].upper()}"


def replace_uid(uid: str) -> str:
    """A new UID derived from ``uid`` by keyed hashing (the same input always gives the same UID)."""
    return generate_uid(entropy_srcs=[_key().decode("utf-8"), str(uid)])


def _date_forms(value: Any) -> list[str]:
    """The ways a date is written in our outputs and in DICOM."""
    if value in (None, ""):
        return []
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        date = value
    else:
        text = str(value).strip()
        for pattern in ("%Y-%m-%d", "%Y%m%d", "%m/%d/%Y"):
            try:
                date = dt.datetime.strptime(text, pattern).date()
                break
            except ValueError:
                continue
        else:
            return [text]
    return [date.isoformat(), date.strftime("%Y%m%d"), date.strftime("%m/%d/%Y"), date.strftime("%d.%m.%Y")]


def _name_forms(name: Any) -> list[str]:
    """A person name as DICOM (``FAMILY^GIVEN``) and as people write it."""
    text = str(name or "").strip()
    if not text:
        return []
    parts = [p for p in re.split(r"[\^,\s]+", text) if p]
    forms = {text, " ".join(parts), "^".join(parts), "_".join(parts), ", ".join(parts), ",".join(parts)}
    if len(parts) >= 2:
        forms.add(" ".join([*parts[1:], parts[0]]))
    return sorted(forms, key=len, reverse=True)


def identifying_strings(patient: dict[str, Any] | None, provenance: dict[str, Any] | None = None) -> list[str]:
    """Strings whose presence in any output would identify the patient.

    Name (in its DICOM and written forms), patient id, birth date (ISO, DICOM, US and EU forms),
    accession number; from the case file's patient block and the DICOM provenance. Strings
    shorter than three characters are left out (they would match everywhere).
    """
    patient = patient or {}
    provenance = provenance or {}
    found: list[str] = []
    found += _name_forms(patient.get("name")) + _name_forms(provenance.get("patient_name"))
    for key in ("id", "mrn"):
        found.append(str(patient.get(key) or ""))
    found.append(str(provenance.get("patient_id") or ""))
    found += _date_forms(patient.get("birth_date")) + _date_forms(provenance.get("patient_birth_date"))
    found.append(str(provenance.get("accession_number") or ""))
    found.append(str(patient.get("accession_number") or ""))
    unique = {s.strip() for s in found if len(s.strip()) >= 3}
    return sorted(unique, key=len, reverse=True)


def scrub(value: Any, strings: Iterable[str]) -> Any:
    """A copy of ``value`` (nested dicts/lists) with identifying keys and strings removed."""
    needles = [s.lower() for s in strings]

    def clean(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: (REMOVED if str(k).lower() in IDENTIFYING_KEYS else clean(v)) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v) for v in item]
        if isinstance(item, Path):
            item = str(item)
        if isinstance(item, str):
            if any(n in item.lower() for n in needles):
                return REMOVED
            if item.startswith("/") and "/" in item[1:]:
                return Path(item).name
        return item

    return clean(value)


# -- the check --------------------------------------------------------------------------------------

_PDF_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.DOTALL)


def readable_bytes(path: Path) -> bytes:
    """Every byte of a file as a reader would see it: raw, plus inflated PDF streams, gzip
    content and zip members (so compressed text cannot hide an identifier)."""
    data = Path(path).read_bytes()
    pieces = [data]
    name = path.name.lower()
    if data.startswith(b"%PDF"):
        for match in _PDF_STREAM.finditer(data):
            try:
                pieces.append(zlib.decompress(match.group(1)))
            except zlib.error:
                continue
    if name.endswith(".gz") or data[:2] == b"\x1f\x8b":
        try:
            pieces.append(gzip.decompress(data))
        except (OSError, EOFError, zlib.error):
            pass
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            pieces += [archive.read(member) for member in archive.namelist()]
    return b"\n".join(pieces)


def _encodings(text: str) -> list[bytes]:
    lowered = text.lower()
    forms = [lowered.encode("utf-8"), lowered.encode("utf-16-be"), lowered.encode("utf-16-le")]
    try:
        forms.append(lowered.encode("latin-1"))
    except UnicodeEncodeError:
        pass
    return forms


def find_identifiers(folder: Path, strings: Iterable[str]) -> list[tuple[str, str]]:
    """``(relative path, identifying string)`` for each identifier found in any file or file
    name under ``folder`` (case-insensitive; UTF-8, UTF-16 and Latin-1 encodings)."""
    strings = [s for s in strings if s]
    hits: list[tuple[str, str]] = []
    for path in sorted(p for p in Path(folder).rglob("*")):
        relative = str(path.relative_to(folder))
        for needle in strings:
            if needle.lower() in relative.lower():
                hits.append((relative, needle))
        if not path.is_file():
            continue
        content = readable_bytes(path).lower()
        for needle in strings:
            if any(form in content for form in _encodings(needle)):
                hits.append((relative, needle))
    return hits
