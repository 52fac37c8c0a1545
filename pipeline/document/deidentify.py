"""De-identification of the packet (the vendor copy) and the check that it worked.

Follows DICOM PS3.15 Annex E, the Basic Application Level Confidentiality Profile with two of
its options, named in every vendor copy (:data:`METHOD_TEXT`, :data:`METHOD_CODES`):

* Basic Profile: patient name and id are replaced by one pseudonym (``ANON-`` + 10 hex digits
  of an HMAC-SHA-256 of the patient id under the site's secret key, see :func:`site_key`): the
  same patient gets the same pseudonym in every packet, and without the key the pseudonym cannot
  be traced back to the id. Birth date, sex and accession number are removed. Every UID of the
  source (study, series, frame of reference, instances) is replaced by a new UID derived from it
  under the key, the same original always giving the same replacement so references inside the
  copy stay consistent; the copy's own instances get fresh UIDs. Institution and physician names
  are removed.
* Retain Longitudinal Temporal Information with Modified Dates Option: every date (study date,
  date of service, the processing dates) is moved back by the same per-patient number of days
  (:func:`date_shift_days`, 1-365, from the key), so intervals stay true and no date is real.
* Clean Descriptors Option: in free text carried from the case and the stage reports
  (summaries, descriptions, recipients, medical necessity) every identifier of the source and
  every staff name is replaced by ``[removed]``. Absolute paths are cut to their file name.

:func:`find_identifiers` then reads every byte of every file of the folder (inflating PDF
streams, gzip files and zip members, recursively) and reports any identifying string left:
the names, ids, accession, every source UID and every unshifted source date
(:func:`vendor_copy_identifiers`; a real date that is byte for byte a shifted date the copy
holds is no leak and is left out).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable

from pydicom.uid import generate_uid

from pipeline.errors import ConfigError, EnvironmentFault

log = logging.getLogger(__name__)

#: Environment variable holding the site's de-identification key (any long random text).
KEY_VARIABLE = "ANATOMODEL_DEID_KEY"
#: Environment variable naming the key file (default: :func:`default_key_file`).
KEY_FILE_VARIABLE = "ANATOMODEL_DEID_KEY_FILE"
#: Shortest key accepted, characters: a short key can be found by trying keys.
MIN_KEY_CHARS = 32

REMOVED = "[removed]"

#: Provenance and report keys whose values identify the patient or the study.
IDENTIFYING_KEYS = frozenset({
    "patient_name", "patient_id", "patient_birth_date", "birth_date", "accession_number",
    "mrn", "study_time", "other_patient_ids", "patient_address",
    "referring_physician_name", "institution_name", "source_folder", "source_files",
})

#: Keys whose values are DICOM dates (DA, ``YYYYMMDD``): shifted like ISO dates, else removed.
DICOM_DATE_KEYS = frozenset({"study_date", "series_date", "acquisition_date", "content_date"})

#: The profile and options applied (PS3.16 CID 7050 De-identification Method).
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option")
CLEAN_DESCRIPTORS_CODE = ("113105", "DCM", "Clean Descriptors Option")
METHOD_CODES = (BASIC_PROFILE_CODE, MODIFIED_DATES_CODE, CLEAN_DESCRIPTORS_CODE)
#: Deidentification Method (0012,0063), LO: at most 64 characters.
METHOD_TEXT = "PS3.15 E Basic; Modified Dates; Clean Descriptors; new UIDs"
#: What each choice did, in words, for the packet.
METHOD_CHOICES = (
    "Basic Application Level Confidentiality Profile (PS3.15 Annex E): patient name and id replaced by one "
    "keyed pseudonym; birth date, sex, accession number, institution and physician names removed",
    "every source UID (study, series, frame of reference, instances) replaced by a new UID derived under the "
    "site key; the copy's own instances have new UIDs",
    "Retain Longitudinal Temporal Information with Modified Dates Option: every date moved back by the same "
    "per-patient number of days; study time removed",
    "Clean Descriptors Option: every identifier and staff name in free text replaced by [removed]; absolute "
    "paths cut to file names",
)

#: UIDs under this root are the standard's own (SOP classes, transfer syntaxes): not identifying.
_STANDARD_UID_ROOT = "1.2.840.10008."
_UID = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){3,}(?![0-9.])")
_ISO_DATE = re.compile(r"(?<![0-9])([0-9]{4})-([0-9]{2})-([0-9]{2})(?![0-9])")


def default_key_file() -> Path:
    """Where the installation's key is kept: ``$XDG_CONFIG_HOME/anatomodel/deid.key`` (or ``~/.config``).

    Returns
    -------
    Path
        The default key file's path; it may not exist yet.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "anatomodel" / "deid.key"


def key_file() -> Path:
    """The key file in use: ``$ANATOMODEL_DEID_KEY_FILE``, else :func:`default_key_file`.

    Returns
    -------
    Path
        The key file's path (an empty variable counts as unset); it may not exist yet.
    """
    return Path(os.environ.get(KEY_FILE_VARIABLE) or default_key_file())


def site_key() -> bytes:
    """The installation's secret de-identification key.

    ``$ANATOMODEL_DEID_KEY`` when set (at least :data:`MIN_KEY_CHARS` characters), else the key
    file (:func:`key_file`), which is generated on first use (64 random hex digits, permissions
    0600) and announced in the log with its path. A key file others may read is refused, and so
    is a short key: a pseudonym made under a guessable key can be recomputed from a guessed MRN.

    Returns
    -------
    bytes
        The key as UTF-8 bytes, surrounding white space removed.

    Raises
    ------
    ConfigError
        The key is too short, or the key file is readable by group or others, or empty.
        Exit code 4.
    EnvironmentFault
        The key file cannot be created or read. Exit code 15.
    """
    given = os.environ.get(KEY_VARIABLE)
    if given is not None:
        if len(given.strip()) < MIN_KEY_CHARS:
            raise ConfigError(f"${KEY_VARIABLE} is shorter than {MIN_KEY_CHARS} characters: too easy to guess",
                              hint=f"set it to a long random text, e.g. the output of `openssl rand -hex 32`, "
                                   f"or unset it to use the key file {key_file()}")
        return given.strip().encode("utf-8")
    path = key_file()
    if not path.exists():
        _create_key_file(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"the de-identification key file {path} may be read by others (mode {mode:04o})",
                              hint=f"run `chmod 600 {path}`")
        key = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise EnvironmentFault(f"cannot read the de-identification key file {path}: {error.strerror}",
                               hint=f"check its permissions, or set ${KEY_VARIABLE}") from None
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"the de-identification key file {path} holds fewer than {MIN_KEY_CHARS} characters",
                          hint="restore it from its backup (pseudonyms depend on it), or remove it to make a new one")
    return key.encode("utf-8")


def _create_key_file(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first: use theirs
    except OSError as error:
        raise EnvironmentFault(f"cannot create the de-identification key file {path}: {error.strerror}",
                               hint=f"set ${KEY_FILE_VARIABLE} to a writable place, or set ${KEY_VARIABLE}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(secrets.token_hex(32) + "\n")
    log.warning("generated this installation's de-identification key in %s (mode 0600): keep it secret and back "
                "it up; pseudonyms and replacement UIDs depend on it", path)


def _keyed(*parts: str) -> bytes:
    return hmac.new(site_key(), "\x1f".join(parts).encode("utf-8"), hashlib.sha256).digest()


def pseudonym(patient_id: str) -> str:
    """A stable pseudonymous patient id, ``ANON-`` + 10 hex digits (HMAC-SHA-256 of the id under the key).

    Parameters
    ----------
    patient_id : str
        The patient key (see :func:`patient_key`); converted with ``str``.

    Returns
    -------
    str
        ``ANON-`` and 10 upper-case hex digits; the same for the same id and site key.

    Raises
    ------
    ConfigError, EnvironmentFault
        From :func:`site_key`, when the key is unusable.
    """
    return f"ANON-{_keyed('pseudonym', str(patient_id)).hex()[:10].upper()}"


def replace_uid(uid: str) -> str:
    """A new UID derived from ``uid`` under the key (the same input always gives the same UID).

    Parameters
    ----------
    uid : str
        The source UID to replace; converted with ``str``.

    Returns
    -------
    str
        A UID under pydicom's root, generated from the keyed hash of ``uid``.

    Raises
    ------
    ConfigError, EnvironmentFault
        From :func:`site_key`, when the key is unusable.
    """
    return generate_uid(entropy_srcs=[_keyed("uid", str(uid)).hex()])


def date_shift_days(patient_id: str) -> int:
    """Days every date of this patient's vendor copies moves back: 1-365, from the key.

    Parameters
    ----------
    patient_id : str
        The patient key (see :func:`patient_key`); converted with ``str``.

    Returns
    -------
    int
        The shift, days, in 1..365; the same for the same id and site key.

    Raises
    ------
    ConfigError, EnvironmentFault
        From :func:`site_key`, when the key is unusable.
    """
    return 1 + int.from_bytes(_keyed("date-shift", str(patient_id))[:4], "big") % 365


def shift_date(value: dt.date, patient_id: str) -> dt.date:
    """``value`` moved back by :func:`date_shift_days` days.

    Parameters
    ----------
    value : datetime.date
        The real date.
    patient_id : str
        The patient key the shift is derived from.

    Returns
    -------
    datetime.date
        ``value`` minus the patient's shift.
    """
    return value - dt.timedelta(days=date_shift_days(patient_id))


def shift_dicom_date(value: Any, patient_id: str) -> str:
    """A DICOM DA (``YYYYMMDD``) or ISO date moved back by the patient's shift; empty if unreadable.

    Parameters
    ----------
    value : date, datetime or str
        The date: a ``date``/``datetime`` or text as ``YYYY-MM-DD``, ``YYYYMMDD`` or
        ``MM/DD/YYYY``; None or empty gives an empty result.
    patient_id : str
        The patient key the shift is derived from.

    Returns
    -------
    str
        The shifted date as DICOM DA ``YYYYMMDD``, or ``""`` when ``value`` is not a date.
    """
    parsed = _parse_date(value)
    return shift_date(parsed, patient_id).strftime("%Y%m%d") if parsed else ""


def _parse_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value or "").strip()
    for pattern in ("%Y-%m-%d", "%Y%m%d", "%m/%d/%Y"):
        try:
            return dt.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    return None


def patient_key(patient: dict[str, Any] | None, provenance: dict[str, Any] | None = None) -> str:
    """The text pseudonyms and date shifts are derived from: the case's patient id, else the
    source's, else the name (so one patient gets one pseudonym and one shift everywhere).

    Parameters
    ----------
    patient : dict or None
        The case file's patient block (keys ``id``, ``name``); None counts as empty.
    provenance : dict or None
        The source's DICOM provenance (key ``patient_id``); None counts as empty.

    Returns
    -------
    str
        The first non-empty of those values as text, or ``""`` when all are empty.
    """
    patient, provenance = patient or {}, provenance or {}
    return str(patient.get("id") or provenance.get("patient_id") or patient.get("name") or "")


_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{2}/[0-9]{2}/[0-9]{4}|[0-9]{2}\.[0-9]{2}\.[0-9]{4}")


def is_date_text(text: str) -> bool:
    """True for a date as :func:`identifying_strings` writes them (ISO, DICOM, US, EU forms).

    Parameters
    ----------
    text : str
        The whole text to test (``YYYY-MM-DD``, ``YYYYMMDD``, ``MM/DD/YYYY`` or ``DD.MM.YYYY``).

    Returns
    -------
    bool
        True when ``text`` is one of those forms and, except the EU form, a real calendar date.
    """
    return bool(_DATE_TEXT.fullmatch(text)) and _parse_date(text) is not None or bool(
        re.fullmatch(r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}", text))


def is_source_uid(text: str) -> bool:
    """True for a UID that is not one of the standard's own (a SOP class, a transfer syntax).

    Parameters
    ----------
    text : str
        The whole text to test.

    Returns
    -------
    bool
        True when ``text`` is a dotted UID of at least four numeric parts not under the DICOM
        root ``1.2.840.10008.``.
    """
    return bool(_UID.fullmatch(text)) and not text.startswith(_STANDARD_UID_ROOT)


def source_uids(provenance: dict[str, Any] | None) -> list[str]:
    """Every instance-level UID of the source: study, series, frame of reference, instances.

    Parameters
    ----------
    provenance : dict or None
        The source's DICOM provenance (``study_instance_uid``, ``series_instance_uid``,
        ``frame_of_reference_uid``, ``source_instances[].sop_instance_uid``); None counts as
        empty.

    Returns
    -------
    list of str
        Sorted, de-duplicated UIDs that pass :func:`is_source_uid`.
    """
    provenance = provenance or {}
    found = [str(provenance.get(key) or "") for key in
             ("study_instance_uid", "series_instance_uid", "frame_of_reference_uid")]
    found += [str(item.get("sop_instance_uid") or "") for item in provenance.get("source_instances") or []]
    return sorted({uid for uid in found if is_source_uid(uid)})


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


def vendor_copy_identifiers(patient: dict[str, Any] | None, provenance: dict[str, Any] | None = None,
                            encounter: dict[str, Any] | None = None, *,
                            lab_dates: Iterable[dt.date] = ()) -> list[str]:
    """Everything a vendor copy must not hold: :func:`identifying_strings`, every source UID,
    and every real (unshifted) date of the source: study date, date of service.

    A real date that equals the shifted form of a date the copy holds is left out: when two of
    the case's dates lie exactly the patient's shift apart (the study ten days before the date of
    service and a shift of ten days; a run today whose shift reaches back to the scan), the
    shifted later date is byte for byte the real earlier one. No byte scan can tell the two apart,
    and refusing would refuse that patient's copy on that day for no leak; the copy's date
    fields are shifted by construction (:func:`scrub`, :func:`shift_dicom_date`).

    Parameters
    ----------
    patient, provenance, encounter : dict, optional
        The case file's patient block, the source's DICOM provenance and the encounter.
    lab_dates : iterable of datetime.date, optional
        The lab's own dates the copy holds shifted: the packet's creation date (UTC and local),
        the workflow steps' dates.

    Returns
    -------
    list of str
        Longest first, so a scan reports the longest match.
    """
    provenance = provenance or {}
    real = {d for d in (_parse_date(provenance.get("study_date")),
                        _parse_date((encounter or {}).get("date_of_service"))) if d is not None}
    held = [_parse_date(provenance.get(key)) for key in DICOM_DATE_KEYS]
    held += [_parse_date((encounter or {}).get("date_of_service")), *lab_dates]
    key = patient_key(patient, provenance)
    shifted = {shift_date(d, key) for d in held if d is not None} if real else set()
    coinciding = real & shifted
    if coinciding:
        log.info("%d real date(s) of the source equal a shifted date the vendor copy holds (two of the case's "
                 "dates lie the patient's shift apart): not searched for, a byte scan cannot tell them apart",
                 len(coinciding))
    found = set(identifying_strings(patient, provenance)) | set(source_uids(provenance))
    found |= {form for d in real - coinciding for form in _date_forms(d) if len(form) >= 8}
    return sorted(found, key=len, reverse=True)


def staff_strings(encounter: dict[str, Any] | None, workflow: Iterable[dict[str, Any]] = ()) -> list[str]:
    """Names the Basic Profile removes besides the patient's: the institution (facility), the
    ordering and rendering physicians, and the operators of the workflow steps.

    Parameters
    ----------
    encounter : dict or None
        The case file's encounter (``facility``, ``ordering_provider.name``,
        ``rendering_provider.name``); None counts as empty.
    workflow : iterable of dict
        The workflow steps, each with an optional ``operator`` name.

    Returns
    -------
    list of str
        The names in their written and DICOM forms, de-duplicated, at least three characters,
        longest first.
    """
    encounter = encounter or {}
    found = [str(encounter.get("facility") or "")]
    for role in ("ordering_provider", "rendering_provider"):
        found += _name_forms((encounter.get(role) or {}).get("name"))
    for step in workflow:
        found += _name_forms(step.get("operator"))
    return sorted({s.strip() for s in found if len(s.strip()) >= 3}, key=len, reverse=True)


def identifying_strings(patient: dict[str, Any] | None, provenance: dict[str, Any] | None = None) -> list[str]:
    """Strings whose presence in any output would identify the patient.

    Name (in its DICOM and written forms), patient id, birth date (ISO, DICOM, US and EU forms),
    accession number; from the case file's patient block and the DICOM provenance. Strings
    shorter than three characters are left out (they would match everywhere).

    Parameters
    ----------
    patient : dict or None
        The case file's patient block (``name``, ``id``, ``mrn``, ``birth_date``,
        ``accession_number``); None counts as empty.
    provenance : dict or None
        The source's DICOM provenance (``patient_name``, ``patient_id``,
        ``patient_birth_date``, ``accession_number``); None counts as empty.

    Returns
    -------
    list of str
        De-duplicated strings, white space stripped, longest first.
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


def scrub(value: Any, strings: Iterable[str], *, patient_id: str | None = None, uids: bool = True) -> Any:
    """A copy of ``value`` (nested dicts/lists) with identifying keys and strings removed.

    Each identifier in a string (any case) becomes ``[removed]``; absolute paths are cut to their file
    name; with ``uids``, every source UID (see :func:`is_source_uid`) in any string is replaced
    by :func:`replace_uid` (give False for values whose UIDs were replaced already). With ``patient_id``, every ISO date (``YYYY-MM-DD``, alone or starting
    a timestamp) is moved back by the patient's :func:`date_shift_days`.

    Values under :data:`IDENTIFYING_KEYS` become ``[removed]``; values under
    :data:`DICOM_DATE_KEYS` are shifted with ``patient_id`` (``[removed]`` when unreadable or
    without ``patient_id``).

    Parameters
    ----------
    value : object
        The data to clean: dicts, lists, tuples, strings, paths and other scalars, nested.
    strings : iterable of str
        The identifying strings to remove (e.g. :func:`identifying_strings`); empty ones are
        ignored.
    patient_id : str or None
        The patient key for date shifts; None removes DICOM dates and leaves ISO dates.
    uids : bool
        Replace source UIDs in strings.

    Returns
    -------
    object
        A cleaned copy: dicts stay dicts, lists and tuples become lists, paths become
        strings; other scalars are returned as they are.

    Raises
    ------
    ConfigError, EnvironmentFault
        From :func:`site_key`, when a UID or date must be replaced and the key is unusable.
    """
    needles = sorted({s for s in strings if s}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(n) for n in needles), re.IGNORECASE) if needles else None
    shift = dt.timedelta(days=date_shift_days(patient_id)) if patient_id is not None else None

    def shifted(match: re.Match) -> str:
        """The ISO date of ``match`` moved back by the shift.

        Parameters
        ----------
        match : re.Match
            A match of ``YYYY-MM-DD`` with the year, month and day as groups 1-3.

        Returns
        -------
        str
            The shifted ISO date, or ``[removed]`` when it is not a real date.
        """
        try:
            day = dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            return REMOVED
        return (day - shift).isoformat()

    def dicom_date(item: Any) -> Any:
        """A DICOM date value shifted, or removed when there is no shift.

        Parameters
        ----------
        item : object
            The value of a :data:`DICOM_DATE_KEYS` key.

        Returns
        -------
        object
            ``item`` when None or empty, else the shifted ``YYYYMMDD`` or ``[removed]``.
        """
        if item in (None, ""):
            return item
        return (shift_dicom_date(item, patient_id) or REMOVED) if shift is not None else REMOVED

    def clean(item: Any) -> Any:
        """One value cleaned, recursively.

        Parameters
        ----------
        item : object
            The value.

        Returns
        -------
        object
            The cleaned copy.
        """
        if isinstance(item, dict):
            return {k: (REMOVED if str(k).lower() in IDENTIFYING_KEYS else
                        dicom_date(v) if str(k).lower() in DICOM_DATE_KEYS else clean(v)) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v) for v in item]
        if isinstance(item, Path):
            item = str(item)
        if isinstance(item, str):
            if pattern is not None:
                item = pattern.sub(REMOVED, item)
            if item.startswith("/") and "/" in item[1:]:
                item = Path(item).name
            if uids:
                item = _UID.sub(lambda m: replace_uid(m.group(0)) if is_source_uid(m.group(0)) else m.group(0),
                                item)
            if shift is not None:
                item = _ISO_DATE.sub(shifted, item)
        return item

    return clean(value)


# -- the check --------------------------------------------------------------------------------------

_PDF_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.DOTALL)


def readable_bytes(path: Path) -> bytes:
    """Every byte of a file as a reader would see it: raw, plus inflated PDF streams, gzip
    content and zip members, recursively (so compressed text cannot hide an identifier).

    Parameters
    ----------
    path : Path
        The file to read.

    Returns
    -------
    bytes
        The raw bytes followed, newline-separated, by each decompressed part (zip member
        names included), down to four levels of nesting; parts that fail to decompress are
        skipped.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    return _unpacked(Path(path).read_bytes(), depth=0)


def _unpacked(data: bytes, depth: int) -> bytes:
    pieces = [data]
    if depth > 3:  # a zip in a gzip in a PDF stream in a zip is as deep as any real file goes
        return data
    if b"stream" in data:  # PDF streams (FlateDecode), in a PDF or embedded in anything else
        for match in _PDF_STREAM.finditer(data):
            try:
                pieces.append(_unpacked(zlib.decompress(match.group(1)), depth + 1))
            except zlib.error:
                continue
    if data[:2] == b"\x1f\x8b":
        try:
            pieces.append(_unpacked(gzip.decompress(data), depth + 1))
        except (OSError, EOFError, zlib.error):
            pass
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.infolist():
                    pieces.append(member.filename.encode("utf-8"))
                    pieces.append(_unpacked(archive.read(member), depth + 1))
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError):
            pass
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
    name under ``folder`` (case-insensitive; UTF-8, UTF-16 and Latin-1 encodings).

    Parameters
    ----------
    folder : Path
        The folder to search, recursively (file and folder names, and file contents through
        :func:`readable_bytes`).
    strings : iterable of str
        The identifying strings (e.g. :func:`vendor_copy_identifiers`); empty ones are ignored.

    Returns
    -------
    list of tuple of (str, str)
        ``(path relative to folder, string)`` per hit, in path order; a string found both in a
        file's name and in its content is listed twice. Empty when the folder is clean.

    Raises
    ------
    OSError
        A file cannot be read.
    """
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
