"""What a query asks a node for and what it answers, shared by the DIMSE and DICOMweb clients.

No patient attributes are asked for: a query names studies by accession and UIDs only, so
nothing identifying reaches a log or a message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from pipeline.report import Report

#: Return keys asked for at each query level (DICOM keywords).
QUERY_KEYS: dict[str, tuple[str, ...]] = {
    "STUDY": ("StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyDescription", "ModalitiesInStudy",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
               "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}


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

