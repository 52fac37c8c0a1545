"""``packet.pdf`` and the case summary page, drawn with fpdf2 from the packet's facts.

Core PDF fonts (Helvetica) cover Latin-1 only: text is folded to Latin-1 before drawing.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any, Iterable

from fpdf import FPDF
from fpdf.enums import XPos, YPos

_FOLD = str.maketrans({"\u2014": "-", "\u2013": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"',
                       "\u201d": '"', "\u2264": "<=", "\u2265": ">=", "\u2192": "->", "\u2026": "...",
                       "\u00a0": " ", "\u2212": "-"})
_MAX_VALUE = 110
_MAX_ROWS = 45


def latin1(value: Any) -> str:
    """Text drawable with the core fonts (non-Latin-1 characters become '?')."""
    text = "" if value is None else str(value)
    return text.translate(_FOLD).encode("latin-1", "replace").decode("latin-1")


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested report dicts as ``(dotted.key, text)`` rows; lists of numbers on one row."""
    rows: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            rows += flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        for index, item in enumerate(value):
            rows += flatten(item, f"{prefix}[{index}]")
    else:
        if isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, list):
            text = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        if len(text) > _MAX_VALUE:
            text = text[: _MAX_VALUE - 3] + "..."
        rows.append((prefix, text))
    return rows


class _Document(FPDF):
    def __init__(self, running_title: str):
        super().__init__(orientation="P", unit="mm", format="Letter")
        self.running_title = latin1(running_title)
        self.set_auto_page_break(auto=True, margin=16)
        self.set_margins(15, 14, 15)

    def header(self) -> None:
        self.set_font("helvetica", "", 8)
        self.set_text_color(90)
        self.cell(0, 5, self.running_title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(160)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(2)
        self.set_text_color(0)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("helvetica", "", 8)
        self.set_text_color(90)
        self.cell(0, 6, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0)

    # -- building blocks ---------------------------------------------------------------------
    def heading(self, text: str) -> None:
        if self.get_y() > self.h - 40:
            self.add_page()
        self.ln(2)
        self.set_font("helvetica", "B", 11)
        self.set_fill_color(230, 236, 245)
        self.cell(0, 7, latin1(text), fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def paragraph(self, text: str, size: float = 9, style: str = "") -> None:
        self.set_font("helvetica", style, size)
        self.multi_cell(0, 4.6, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def key_values(self, rows: Iterable[tuple[str, Any]], key_width: float = 68) -> None:
        rows = [(k, v) for k, v in rows]
        if not rows:
            self.paragraph("(none)", style="I")
            return
        shown = rows[:_MAX_ROWS]
        self.set_font("helvetica", "", 8)
        with self.table(col_widths=(key_width, self.epw - key_width), text_align="LEFT", first_row_as_headings=False,
                        line_height=4.2, padding=0.8) as table:
            for key, value in shown:
                row = table.row()
                row.cell(latin1(key))
                row.cell(latin1(value))
        if len(rows) > len(shown):
            self.paragraph(f"... {len(rows) - len(shown)} more rows in packet.json", size=8, style="I")

    def grid(self, headings: list[str], rows: list[list[Any]], widths: tuple[float, ...] | None = None) -> None:
        self.set_font("helvetica", "", 8)
        with self.table(col_widths=widths, text_align="LEFT", line_height=4.2, padding=0.8) as table:
            head = table.row()
            for text in headings:
                head.cell(latin1(text))
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(latin1("" if value is None else value))

    def picture(self, png: bytes, caption: str, width: float | None = None) -> None:
        width = width or self.epw
        from PIL import Image

        with Image.open(io.BytesIO(png)) as image:
            height = width * image.height / image.width
        if self.get_y() + height + 10 > self.h - 16:
            self.add_page()
        self.image(io.BytesIO(png), x=self.l_margin, w=width)
        self.paragraph(caption, size=8, style="I")

    def signature_lines(self, roles: list[str]) -> None:
        if self.get_y() > self.h - 20 - 14 * len(roles):
            self.add_page()
        self.ln(4)
        self.set_font("helvetica", "", 9)
        for role in roles:
            self.ln(8)
            y = self.get_y()
            self.line(self.l_margin, y, self.l_margin + 95, y)
            self.line(self.l_margin + 110, y, self.w - self.r_margin, y)
            self.cell(110, 5, latin1(role))
            self.cell(0, 5, "Date", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _metadata(pdf: _Document, title: str, subject: str, created: Any) -> None:
    pdf.set_title(latin1(title))
    pdf.set_subject(latin1(subject))
    pdf.set_author("anatomodel")
    pdf.set_creator("anatomodel")
    pdf.set_creation_date(created)


def _output(pdf: _Document) -> bytes:
    return bytes(pdf.output())


def _lifecycle_block(pdf: Any, lifecycle: dict[str, Any] | None, cpt: str) -> None:
    """Page 1: where the model stands (state, sign-offs, holds) and whether its charge is billable."""
    if not lifecycle:
        return
    billable = (f"BILLABLE as {cpt}" if lifecycle["billable"]
                else f"NOT BILLABLE YET (provisional {cpt}): waits for {lifecycle['waiting_for']}")
    pdf.paragraph(f"Status: {lifecycle['state'].replace('_', '-')} - {billable}", size=10, style="B")
    for sign_off in lifecycle.get("sign_offs", []):
        pdf.paragraph(f"Signed off: {sign_off['step']} by {sign_off['person']} ({sign_off['role']}) at "
                      f"{sign_off['at']}", size=9)
    for hold in lifecycle.get("holds", []):
        pdf.paragraph(f"HELD: {hold['code']}: {hold['reason']}", size=9, style="I")
    effort = [f"{category.replace('_', ' ')} {who.replace('_', '-')} {minutes:.0f}"
              for category, split in (lifecycle.get("effort_minutes") or {}).items()
              for who, minutes in split.items() if minutes]
    if effort:
        pdf.paragraph("Effort recorded (min, ACR-RSNA registry categories): " + "; ".join(effort), size=9)


def packet_pdf(facts: dict[str, Any], pictures: list[tuple[bytes, str]]) -> tuple[bytes, int]:
    """Draw the packet; return the PDF bytes and its page count."""
    case_id, model = facts["case"]["case_id"], facts["model"]
    charge = facts["charge"]
    title = f"Anatomic model packet - case {case_id}, model {model['id']}"
    pdf = _Document(f"{title} - {charge['cpt']}")
    _metadata(pdf, title, f"Documentation supporting CPT {charge['cpt']}",
              dt.datetime.fromisoformat(facts["generated"]["created"]))
    pdf.add_page()
    pdf.set_font("helvetica", "B", 15)
    pdf.cell(0, 9, "3D-printed anatomic model: documentation packet", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.paragraph(
        f"Case {case_id} - model {model['id']} ({model['structure']}) - {charge['cpt']} - generated "
        f"{facts['generated']['created']} by anatomodel {facts['generated']['version']}"
        + (" - DE-IDENTIFIED COPY" if facts["case"]["deidentified"] else ""), size=9)
    _lifecycle_block(pdf, facts.get("lifecycle"), charge["cpt"])

    patient, encounter = facts["patient"], facts["encounter"]
    pdf.heading("1. Patient and encounter")
    if facts["case"]["deidentified"]:
        patient_rows = [("Patient (pseudonym)", patient["pseudonym"])]
    else:
        patient_rows = [("Patient name", patient["name"]), ("Patient id (MRN)", patient["id"]),
                        ("Birth date", patient["birth_date"]), ("Sex", patient["sex"])]
    provider = lambda p: f"{p['name']} (NPI {p['npi'] or 'not given'})"  # noqa: E731
    pdf.key_values(patient_rows + [
        ("Date of service", encounter["date_of_service"]), ("Facility", encounter["facility"]),
        ("Ordering provider", provider(encounter["ordering_provider"])),
        ("Rendering provider", provider(encounter["rendering_provider"])), ("Payer", encounter["payer"]),
    ])

    pdf.heading("2. Indication")
    indication = facts["indication"]
    titles = indication.get("descriptions") or [""] * len(indication["icd10"])
    pdf.key_values([("ICD-10-CM", "; ".join(f"{p}: {c} {t}".rstrip()
                                            for p, c, t in zip("ABCDEFGHIJKL", indication["icd10"], titles))),
                    ("Summary", facts["indication"]["summary"])])
    pdf.key_values([("Model id", model["id"]), ("Structure", model["structure"]), ("Kind", model["kind"]),
                    ("Preset", model["preset"]), ("Purpose", model["purpose"]), ("Recipient", model["recipient"])])

    pdf.heading("3. Source imaging")
    pdf.key_values([(k.replace("_", " "), v) for k, v in facts["source_imaging"].items()])

    pdf.heading("4. Workflow: steps, operators, time spent")
    steps = facts["workflow"]["steps"]
    if steps:
        pdf.grid(["Step", "Kind", "Start", "End", "Operator", "Minutes"],
                 [[s["step"], s["kind"], s["start"], s["end"], s["operator"],
                   "" if s["minutes"] is None else f"{s['minutes']:.2f}"] for s in steps],
                 widths=(38, 18, 38, 38, 32, 18))
    pdf.paragraph(f"Total time recorded: {facts['workflow']['total_minutes']:.1f} min", size=9, style="B")

    pdf.heading("5. Segmentation: method and parameters")
    pdf.key_values(flatten(facts["segmentation"] or {}))
    if facts.get("load"):
        pdf.paragraph("Loading the series:", size=9, style="B")
        pdf.key_values(flatten(facts["load"]))

    pdf.heading("6. Pictures")
    for png, caption in pictures:
        pdf.picture(png, caption)

    pdf.heading("7. Mesh quality")
    pdf.key_values(flatten(facts["mesh_qa"] or {}))

    pdf.heading("8. Print plan")
    pdf.key_values(flatten(facts["print_plan"] or {}))

    pdf.heading("9. Charge line")
    pdf.grid(["CPT", "Units", "Modifiers", "ICD-10 (pointer)", "Date of service"],
             [[charge["cpt"], charge["units"], " ".join(charge["modifiers"]) or "-",
               ", ".join(f"{p}: {c}" for p, c in zip(charge["icd10_pointers"], charge["icd10"])),
               charge["date_of_service"]]], widths=(22, 14, 30, 74, 40))
    pdf.key_values([("Descriptor", charge["descriptor"])]
                   + [(f"Modifier {m}", r) for m, r in (charge.get("modifier_reasons") or {}).items()]
                   + [("Flag", f) for f in charge["flags"]])
    pdf.paragraph("Medical necessity", size=9, style="B")
    pdf.paragraph(charge["medical_necessity"], size=9)

    pdf.heading("10. Files and DICOM object")
    pdf.grid(["File", "Bytes", "SHA-256"], [[f["name"], f["bytes"], f["sha256"]] for f in facts["files"]],
             widths=(35, 20, 125))
    pdf.key_values([(k.replace("_", " "), v) for k, v in facts["dicom"].items()])
    if facts["warnings"]:
        pdf.paragraph("Warnings", size=9, style="B")
        for warning in facts["warnings"]:
            pdf.paragraph(f"- {warning}", size=8)

    pdf.heading("11. Attestation")
    pdf.paragraph("I attest that this patient-specific model was individually prepared, processed and printed "
                  "from the image data set named above, for the indication stated, and that this packet is "
                  "complete and accurate.", size=9)
    pdf.signature_lines(["Prepared by (3D lab operator)", "Reviewed by (rendering provider)",
                         "Received by (ordering provider or delegate)"])
    data = _output(pdf)
    return data, pdf.pages_count


def case_summary_pdf(summary: dict[str, Any]) -> bytes:
    """One page per case: who, which models with which code, and what is billed."""
    title = f"Case summary - {summary['case_id']}"
    pdf = _Document(title)
    _metadata(pdf, title, "3D-printed anatomic models and charges of one case",
              dt.datetime.fromisoformat(summary["created"]))
    pdf.add_page()
    pdf.set_font("helvetica", "B", 14)
    pdf.cell(0, 8, latin1(f"Case {summary['case_id']}: models and charges"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.key_values(summary["header"])
    pdf.heading("Models")
    pdf.grid(["Model", "CPT", "Modifiers", "ICD-10", "Flags"],
             [[m["model_id"], m["cpt"], " ".join(m["modifiers"]) or "-", ", ".join(m["icd10"]),
               "; ".join(m["flags"]) or "-"] for m in summary["models"]], widths=(32, 16, 22, 30, 80))
    pdf.heading("Billed (claim lines)")
    pdf.grid(["Date of service", "CPT", "Units", "Modifiers", "Pointers", "Models"],
             [[c["date_of_service"], c["cpt"], c["units"], " ".join(c["modifiers"]) or "-",
               "".join(c["icd10_pointers"]), ", ".join(c["model_ids"])] for c in summary["claims"]],
             widths=(28, 16, 12, 22, 18, 84))
    if summary["diagnoses"]:
        pdf.paragraph("Diagnoses: " + ", ".join(f"{p}: {c}" for p, c in summary["diagnoses"]), size=9)
    for held in summary["held"]:
        pdf.paragraph(f"Held for review: {held}", size=8, style="I")
    pdf.signature_lines(["Reviewed by (coder)"])
    return _output(pdf)
