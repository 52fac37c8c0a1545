"""Claim lines as CSV for a charge-capture import: one row per billable claim line.

Columns (:data:`COLUMNS`): the encounter id, the date of service, the MRN, CPT, units, modifiers
(space separated), the diagnosis pointers and the codes they name with their ICD-10-CM titles
(``; `` separated), the rendering and ordering NPIs, the payer and the models on the line.
Written with the standard ``csv`` module (RFC 4180 quoting).
"""

from __future__ import annotations

import csv
import io

from pipeline.coding import ClaimLine
from pipeline.exports import EncounterFacts, pointed_diagnoses
from pipeline.icd10 import icd10_description

COLUMNS = ("encounter_id", "date_of_service", "patient_id", "cpt", "units", "modifiers", "icd10_pointers",
           "icd10", "icd10_descriptions", "rendering_npi", "ordering_npi", "payer", "model_ids")


def charges_csv(encounters: list[tuple[EncounterFacts, list[ClaimLine]]]) -> str:
    """The CSV text of the billable claim lines of one or more encounters.

    Parameters
    ----------
    encounters : list of tuple of (EncounterFacts, list of pipeline.coding.ClaimLine)
        Per encounter its facts and its billable claim lines (:func:`pipeline.exports.billable_lines`).

    Returns
    -------
    str
        CSV text with a header row of :data:`COLUMNS` and one row per line, CRLF line ends. Holds
        PHI (patient id): never in a file name or a log.

    Raises
    ------
    CodingError
        If a line's diagnosis pointer names no diagnosis (exit code 11).
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for facts, lines in encounters:
        for line in lines:
            codes = pointed_diagnoses(line)
            writer.writerow({
                "encounter_id": facts.encounter_id, "date_of_service": line.date_of_service.isoformat(),
                "patient_id": facts.patient_id, "cpt": line.cpt, "units": line.units,
                "modifiers": " ".join(line.modifiers), "icd10_pointers": "".join(line.icd10_pointers),
                "icd10": "; ".join(codes), "icd10_descriptions": "; ".join(icd10_description(c) for c in codes),
                "rendering_npi": line.rendering_provider.get("npi", ""),
                "ordering_npi": line.ordering_provider.get("npi", ""), "payer": line.payer,
                "model_ids": " ".join(line.model_ids),
            })
    return out.getvalue()


__all__ = ["COLUMNS", "charges_csv"]
