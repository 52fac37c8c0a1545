"""HL7 v2.5 DFT^P03 (post detail financial transaction): one message per encounter, via hl7apy.

Segments: MSH, EVN (P03), PID (MRN, name, birth date, sex), PV1 (outpatient, visit number in
PV1-19), one FT1 per billable claim line in a DFT_P03_FINANCIAL group, then one DG1 per diagnosis
of the encounter (DG1-1 set id = the claim's pointer letter A, B, ...; DG1-15 priority).

FT1 fields written: FT1-1 set id, FT1-4 transaction date (date of service), FT1-6 type ``CG``
(charge), FT1-7 transaction code and FT1-25 procedure code (CPT, coding system ``C4``), FT1-10
quantity (units), FT1-19 the diagnoses the line points to (ICD-10-CM, ``I10``), FT1-20 performed
by and FT1-21 ordered by (XCN: NPI, name, assigning authority CMS, identifier type ``NPI``),
FT1-26 the modifiers (``C4`` for CPT modifiers, ``HCPCS`` for Level II).

The message is built and validated at ``STRICT`` level by hl7apy; :func:`parse_dft` parses one
back the same way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipeline.coding import POINTER_LETTERS, ClaimLine
from pipeline.exports import EncounterFacts, is_cpt_modifier, one_encounter, pointed_diagnoses
from pipeline.icd10 import icd10_description

#: XCN-9 assigning authority of an NPI (CMS, OID of the NPI registry).
NPI_AUTHORITY = ("CMS", "2.16.840.1.113883.4.6", "ISO")


def _text(value: str, limit: int = 199) -> str:
    """Text for a leaf, cut to the HL7 v2.5 maximum length of its data type.

    hl7apy escapes ``| ^ ~ \\`` on output but not the subcomponent separator ``&``; strict
    validation refuses a value over the maximum length (199 for CE text, 20 for HD and MSH-10).
    """
    raw = str(value)[:limit]
    while len(raw.replace("&", "\\T\\")) > limit:
        raw = raw[:-1]
    return raw.replace("&", "\\T\\")


def _strict() -> Any:
    from hl7apy.consts import VALIDATION_LEVEL

    return VALIDATION_LEVEL.STRICT


def _ce(field: Any, code: str, text: str, system: str) -> None:
    field.ce_1 = _text(code)
    if text:
        field.ce_2 = _text(text)
    field.ce_3 = system


def _xcn(field: Any, provider: dict[str, str]) -> None:
    field.xcn_1 = str(provider["npi"])
    name = str(provider.get("name", "")).strip()
    if name:
        field.xcn_2.fn_1 = _text(name, 194)
    field.xcn_9.hd_1, field.xcn_9.hd_2, field.xcn_9.hd_3 = NPI_AUTHORITY
    field.xcn_13 = "NPI"


def dft_message(lines: list[ClaimLine], facts: EncounterFacts, *, sent: dt.datetime | None = None,
                control_id: str | None = None, sending_application: str = "ANATOMODEL",
                sending_facility: str = "", receiving_application: str = "CHARGES") -> Any:
    """The DFT^P03 message of one encounter's billable claim lines.

    Parameters
    ----------
    lines : list of ClaimLine
        Billable lines of one encounter.
    facts : EncounterFacts
    sent : datetime.datetime, optional
        MSH-7 / EVN-2 (default: now, UTC).
    control_id : str, optional
        MSH-10 (default: the encounter id and the time sent; at most 20 characters).
    sending_application, sending_facility, receiving_application : str
        MSH-3, MSH-4 and MSH-5 namespace ids as the interface engine knows them (at most 20
        characters each).

    Returns
    -------
    hl7apy.core.Message
        Validated; ``.to_er7()`` gives the message (segments separated by ``\\r``).

    Raises
    ------
    CodingError
        No lines, or lines of several encounters (from :func:`pipeline.exports.one_encounter`;
        exit code 11).
    """
    from hl7apy.core import Message

    first = one_encounter(lines)
    sent = sent or dt.datetime.now(dt.UTC)
    stamp = sent.strftime("%Y%m%d%H%M%S")
    message = Message("DFT_P03", version="2.5", validation_level=_strict())
    message.msh.msh_3.hd_1 = _text(sending_application, 20)
    if sending_facility:
        message.msh.msh_4.hd_1 = _text(sending_facility, 20)
    message.msh.msh_5.hd_1 = _text(receiving_application, 20)
    message.msh.msh_7 = stamp
    message.msh.msh_9 = "DFT^P03^DFT_P03"
    message.msh.msh_10 = _text(control_id or f"{facts.encounter_id}-{stamp}", 20)
    message.msh.msh_11 = "P"
    message.msh.msh_12 = "2.5"
    message.evn.evn_1 = "P03"
    message.evn.evn_2 = stamp
    pid = message.pid
    pid.pid_1 = "1"
    pid.pid_3.cx_1 = _text(facts.patient_id)
    pid.pid_3.cx_5 = "MR"
    family, given = facts.family_given
    pid.pid_5.xpn_1.fn_1 = _text(family, 194)
    if given:
        pid.pid_5.xpn_2 = _text(given[0], 194)
    pid.pid_7 = facts.birth_date.strftime("%Y%m%d")
    pid.pid_8 = facts.sex
    message.pv1.pv1_1 = "1"
    message.pv1.pv1_2 = "O"
    message.pv1.pv1_19.cx_1 = _text(facts.encounter_id)
    for index, line in enumerate(lines, start=1):
        ft1 = message.add_group("DFT_P03_FINANCIAL").ft1
        ft1.ft1_1 = str(index)
        ft1.ft1_4 = line.date_of_service.strftime("%Y%m%d")
        ft1.ft1_6 = "CG"
        _ce(ft1.ft1_7, line.cpt, line.descriptor, "C4")
        ft1.ft1_10 = str(line.units)
        for code in pointed_diagnoses(line):
            _ce(ft1.add_field("FT1_19"), code, icd10_description(code), "I10")
        if line.rendering_provider.get("npi"):
            _xcn(ft1.ft1_20, line.rendering_provider)
        if line.ordering_provider.get("npi"):
            _xcn(ft1.ft1_21, line.ordering_provider)
        _ce(ft1.ft1_25, line.cpt, line.descriptor, "C4")
        for modifier in line.modifiers:
            _ce(ft1.add_field("FT1_26"), modifier, "", "C4" if is_cpt_modifier(modifier) else "HCPCS")
    for index, code in enumerate(first.diagnoses, start=1):
        dg1 = message.add_segment("DG1")
        dg1.dg1_1 = str(index)
        _ce(dg1.dg1_3, code, icd10_description(code), "I10")
        dg1.dg1_6 = "F"
        dg1.dg1_15 = str(index)
    message.validate()
    return message


def parse_dft(text: str) -> Any:
    """Parse a DFT^P03 message (``\\r`` or newline separated) and validate it strictly.

    Parameters
    ----------
    text : str
        The ER7 text of one message; ``\\r\\n`` and ``\\n`` line ends are read as ``\\r``.

    Returns
    -------
    hl7apy.core.Message
        The message with its ``DFT_P03_FINANCIAL`` groups found, validated at ``STRICT`` level
        (hl7apy's ``ParserError`` or ``OperationNotAllowed`` for text that is no well-formed
        message, ``ValidationError`` for a missing, extra or over-long field).
    """
    from hl7apy.parser import parse_message

    message = parse_message(text.replace("\r\n", "\r").replace("\n", "\r"), validation_level=_strict(),
                            find_groups=True)
    message.validate()
    return message


def pointer_of(dg1_set_id: str) -> str:
    """The claim's diagnosis pointer letter of a DG1 set id (``1`` -> ``A``).

    Parameters
    ----------
    dg1_set_id : str
        DG1-1 as written by :func:`dft_message`: ``"1"`` .. ``"12"``.

    Returns
    -------
    str
        The pointer letter ``A`` .. ``L``.

    Raises
    ------
    ValueError
        ``dg1_set_id`` is not a whole number from 1 to 12 (a claim points at most 12
        diagnoses; ``"0"`` must not wrap round to ``L``).
    """
    number = int(dg1_set_id)
    if not 1 <= number <= len(POINTER_LETTERS):
        raise ValueError(f"DG1 set id {dg1_set_id!r} is not 1..{len(POINTER_LETTERS)}")
    return POINTER_LETTERS[number - 1]


__all__ = ["dft_message", "parse_dft", "pointer_of"]
