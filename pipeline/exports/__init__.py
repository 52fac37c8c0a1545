"""Charge exports a hospital's systems take in: FHIR R4 ChargeItem bundles, HL7 v2.5 DFT^P03, CSV.

Every exporter is a pure function over plain data: the encounter's billable claim lines
(:class:`pipeline.coding.ClaimLine`, after :func:`pipeline.payers.check_claim`) and the
:class:`EncounterFacts` the lines do not carry (who the patient is, the visit number). Use
:func:`billable_lines` to drop the lines a hold keeps from the claim. The outputs carry PHI by
necessity (they go to the hospital's billing system): never put them in a file name or a log.

Like the CLI, this package sits outside the stages: nothing in a stage imports it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.coding import POINTER_LETTERS, ClaimLine
from pipeline.errors import CodingError
from pipeline.holds import Hold

#: Code systems (FHIR canonical URLs; HL7 v2 table 0396 names).
CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"
ICD10CM_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"


@dataclass(frozen=True)
class EncounterFacts:
    """Who and where, for one encounter (patient + date of service).

    Parameters
    ----------
    encounter_id : str
        The hospital's visit (account) number for the encounter, or the ledger's encounter id.
    patient_id : str
        Medical record number.
    patient_name : str
        DICOM person-name form ``FAMILY^GIVEN`` (as the case file gives it).
    birth_date : datetime.date
    sex : {"M", "F", "O", "U"}
    facility : str
        The performing facility's name.
    """

    encounter_id: str
    patient_id: str
    patient_name: str
    birth_date: dt.date
    sex: Literal["M", "F", "O", "U"]
    facility: str

    @classmethod
    def from_case(cls, case: Any, encounter_id: str) -> EncounterFacts:
        """The facts of a case file (``pipeline.case.CaseFile``) and its encounter id.

        Parameters
        ----------
        case : pipeline.case.CaseFile
            The case file; its ``patient`` (id, name, birth date, sex) and ``encounter.facility`` are read.
        encounter_id : str
            The visit (account) number or ledger encounter id; converted to str.

        Returns
        -------
        EncounterFacts
            The encounter's facts (PHI: keep out of logs and file names).
        """
        return cls(encounter_id=str(encounter_id), patient_id=case.patient.id, patient_name=case.patient.name,
                   birth_date=case.patient.birth_date, sex=case.patient.sex, facility=case.encounter.facility)

    @property
    def family_given(self) -> tuple[str, list[str]]:
        """The patient's name split at ``^``.

        Returns
        -------
        tuple of (str, list of str)
            The family name, and the other non-empty components (given, middle, ...) in order.
        """
        family, _, given = self.patient_name.partition("^")
        return family, [part for part in given.split("^") if part]


def is_cpt_modifier(modifier: str) -> bool:
    """Whether a claim-line modifier is a CPT one (two digits, ``26``) rather than HCPCS Level II (``GA``).

    The one rule both exports follow: FHIR names the system by URI, HL7 v2 by table code.

    Parameters
    ----------
    modifier : str
        A claim line's modifier code, such as ``"26"`` or ``"GA"``.

    Returns
    -------
    bool
        True when every character is an ASCII digit.
    """
    return modifier.isascii() and modifier.isdigit()


def billable_lines(lines: Iterable[ClaimLine], holds: Iterable[Hold] = ()) -> list[ClaimLine]:
    """The lines no unreleased hold keeps from the claim.

    A line is dropped when any of its models has a hold, or the line lists one of its own
    models as held (a units split's excess line). Models a line holds *apart* from its units
    (reprints, listed in ``held`` but not in ``model_ids``) do not drop it.

    Parameters
    ----------
    lines : iterable of pipeline.coding.ClaimLine
        The encounter's claim lines.
    holds : iterable of pipeline.holds.Hold
        The unreleased holds; only their ``model_id`` is used.

    Returns
    -------
    list of pipeline.coding.ClaimLine
        The lines kept, in the order given.
    """
    held = {hold.model_id for hold in holds}
    result = []
    for line in lines:
        if any(model in held or model in line.held for model in line.model_ids):
            continue
        result.append(line)
    return result


def pointed_diagnoses(line: ClaimLine) -> list[str]:
    """The diagnosis codes a line's pointers name, in pointer order.

    Parameters
    ----------
    line : pipeline.coding.ClaimLine
        A claim line with ``icd10_pointers`` (letters ``A``, ``B``, ...) into its ``diagnoses``.

    Returns
    -------
    list of str
        The ICD-10-CM codes the pointers name.

    Raises
    ------
    CodingError
        A pointer that names no diagnosis of the encounter (exit code 11).
    """
    codes = []
    for letter in line.icd10_pointers:
        index = POINTER_LETTERS.find(letter)
        if index < 0 or index >= len(line.diagnoses):
            raise CodingError(f"{line.cpt}: diagnosis pointer {letter!r} names none of {line.diagnoses}")
        codes.append(line.diagnoses[index])
    return codes


def one_encounter(lines: list[ClaimLine]) -> ClaimLine:
    """The first line, after checking every line is of the same encounter and there is one.

    Parameters
    ----------
    lines : list of pipeline.coding.ClaimLine
        The claim lines to export.

    Returns
    -------
    pipeline.coding.ClaimLine
        ``lines[0]`` (its encounter fields stand for all the lines).

    Raises
    ------
    CodingError
        If there is no line or the lines belong to more than one encounter (exit code 11).
    """
    if not lines:
        raise CodingError("no billable charge lines to export for this encounter")
    keys = sorted({line.encounter_key for line in lines})
    if len(keys) > 1:
        raise CodingError(f"the lines belong to {len(keys)} encounters; export one encounter at a time")
    return lines[0]


__all__ = ["CPT_SYSTEM", "ICD10CM_SYSTEM", "NPI_SYSTEM", "EncounterFacts", "billable_lines", "one_encounter",
           "pointed_diagnoses"]
