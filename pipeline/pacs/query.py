"""What a query asks a node for and what it answers, shared by the DIMSE and DICOMweb clients.

No patient attributes are asked for: a query names studies by accession and UIDs only, so
nothing identifying reaches a log or a message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from pipeline.errors import ConfigError
from pipeline.report import Report

#: Return keys asked for at each query level (DICOM keywords).
QUERY_KEYS: dict[str, tuple[str, ...]] = {
    "STUDY": ("StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyDescription", "ModalitiesInStudy",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
               "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}


#: Characters that make a C-FIND matching key more than one exact value (PS3.4 C.2.2.2): the
#: wildcards, and the separator of a list of values (PS3.5 6.2).
_NOT_EXACT = {"*": "a wildcard (*)", "?": "a wildcard (?)", "\\": "a backslash (the separator of several values)"}
#: A UID: digits in components separated by dots, at most 64 characters (PS3.5 9.1; leading zeros,
#: which some archives write, are let through).
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def accession_problem(value: str) -> str | None:
    """Why a text cannot be matched as one exact Accession Number, or None if it can.

    A query key is matched as a pattern: a blank key matches every study, ``*`` and ``?`` are
    wildcards and a backslash separates values. Each would let a query find another patient's
    study, so none is allowed.

    Parameters
    ----------
    value : str
        The accession number as given.

    Returns
    -------
    str or None
        The reason (never quoting the value), or None.
    """
    text = value.strip(" \0")
    if not text:
        return "is blank (a blank query key matches every study)"
    for character, name in _NOT_EXACT.items():
        if character in text:
            return f"holds {name}: an accession number is matched as one exact value"
    if any(ord(character) < 32 or ord(character) == 127 for character in text):
        return "holds a control character"
    return None


def uid_problem(value: str) -> str | None:
    """Why a text is not a Study Instance UID that can be matched exactly, or None if it is.

    Parameters
    ----------
    value : str
        The UID as given.

    Returns
    -------
    str or None
        The reason, or None.
    """
    text = value.strip(" \0")
    if not text:
        return "is blank (a blank query key matches every study)"
    if len(text) > 64 or not _UID.fullmatch(text):
        return "is not a UID (digits and dots, at most 64 characters; no wildcards)"
    return None


def exact_keys(accession: str | None, study_uid: str | None) -> dict[str, str]:
    """The matching keys of a study query, each checked to be one exact value.

    Parameters
    ----------
    accession : str or None
        The Accession Number (surrounding spaces are DICOM padding and dropped).
    study_uid : str or None
        The Study Instance UID.

    Returns
    -------
    dict of str to str
        ``AccessionNumber`` and/or ``StudyInstanceUID`` to their exact values.

    Raises
    ------
    ConfigError
        Neither is given, or one is blank, holds a wildcard or backslash, or the UID is not a UID
        (checked before any query).
    """
    if accession is None and study_uid is None:
        raise ConfigError("give an accession number or a Study Instance UID to pull")
    keys = {}
    for keyword, name, value, problem in (("AccessionNumber", "the accession number", accession, accession_problem),
                                          ("StudyInstanceUID", "the Study Instance UID", study_uid, uid_problem)):
        if value is None:
            continue
        why = problem(value)
        if why:
            raise ConfigError(f"{name} given {why}; refused before any query",
                              hint="give the exact value the archive holds")
        keys[keyword] = value.strip(" \0")
    return keys


def exactly(found: Sequence[Dataset], keys: dict[str, str], *, required: bool) -> list[Dataset]:
    """The answers whose values of ``keys`` are exactly those asked for (DICOM padding stripped).

    An archive may match a key loosely (case-insensitively, as a pattern, or not at all); only
    an answer with the very value asked for is kept.

    Parameters
    ----------
    found : sequence of Dataset
        A query's answers.
    keys : dict of str to str
        DICOM keyword -> the exact value asked for.
    required : bool
        Whether an answer without a key counts as different (True) or is kept (False).

    Returns
    -------
    list of Dataset
        The answers that match, in order.
    """
    return [ds for ds in found if all(_same(ds, keyword, wanted, required) for keyword, wanted in keys.items())]


def _same(ds: Dataset, keyword: str, wanted: str, required: bool) -> bool:
    value = ds.get(keyword)
    if value is None or value == "":
        return not required
    return str(value).strip(" \0") == wanted


def instance_file_name(sop_instance_uid: str) -> str:
    """The file name of a retrieved instance: a hash of its UID (no identifier in a file name).

    Parameters
    ----------
    sop_instance_uid : str
        The instance's SOP Instance UID.

    Returns
    -------
    str
        20 hexadecimal digits of its SHA-256 and ``.dcm``.
    """
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:20] + ".dcm"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class StudyMatch(Report):
    """One study a node found for an accession number."""

    study_instance_uid: str
    study_date: str
    study_description: str
    modalities: list[str]
    series: int | None
    instances: int | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "StudyMatch":
        """The study a STUDY-level query answer describes.

        Parameters
        ----------
        ds : Dataset
            One C-FIND identifier or QIDO-RS result (missing keys become empty or None).

        Returns
        -------
        StudyMatch
        """
        modalities = ds.get("ModalitiesInStudy", "") or []
        modalities = [modalities] if isinstance(modalities, str) else list(modalities)
        return cls(str(ds.get("StudyInstanceUID", "")), str(ds.get("StudyDate", "") or ""),
                   str(ds.get("StudyDescription", "") or ""), [str(m) for m in modalities if m],
                   _int(ds.get("NumberOfStudyRelatedSeries")), _int(ds.get("NumberOfStudyRelatedInstances")))

    def label(self) -> str:
        """How a message lists the study.

        Returns
        -------
        str
            ``UID (date 'description', modalities, N series)``.
        """
        what = f" '{self.study_description}'" if self.study_description else ""
        return (f"{self.study_instance_uid} ({self.study_date or 'no date'}{what}, {'/'.join(self.modalities) or '-'}, "
                f"{self.series if self.series is not None else '?'} series)")


@dataclass
class SeriesMatch(Report):
    """One series of a study as a node lists it."""

    series_instance_uid: str
    series_number: int | None
    series_description: str
    modality: str
    instances: int | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "SeriesMatch":
        """The series a SERIES-level query answer describes.

        Parameters
        ----------
        ds : Dataset
            One C-FIND identifier or QIDO-RS result (missing keys become empty or None).

        Returns
        -------
        SeriesMatch
        """
        return cls(str(ds.get("SeriesInstanceUID", "")), _int(ds.get("SeriesNumber")),
                   str(ds.get("SeriesDescription", "") or ""), str(ds.get("Modality", "") or ""),
                   _int(ds.get("NumberOfSeriesRelatedInstances")))

    def label(self) -> str:
        """How a message lists the series.

        Returns
        -------
        str
            ``series N 'description' modality, M instance(s), UID ...``.
        """
        number = "?" if self.series_number is None else str(self.series_number)
        what = f" '{self.series_description}'" if self.series_description else ""
        count = "?" if self.instances is None else str(self.instances)
        return f"series {number}{what} {self.modality or '-'}, {count} instance(s), UID {self.series_instance_uid}"


@dataclass
class InstanceMatch:
    """One instance of a series as a node lists it."""

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "InstanceMatch":
        """The instance an IMAGE-level query answer describes.

        Parameters
        ----------
        ds : Dataset
            One C-FIND identifier or QIDO-RS result (missing keys become empty or None).

        Returns
        -------
        InstanceMatch
        """
        return cls(str(ds.get("SOPInstanceUID", "")), str(ds.get("SOPClassUID", "") or ""),
                   _int(ds.get("InstanceNumber")))


@dataclass
class StoreOutcome:
    """The node's answer to storing one instance."""

    sop_instance_uid: str
    sop_class_uid: str
    ok: bool
    reason: str = ""

