"""``packet.pdf`` and the case summary page, drawn with fpdf2 from the packet's facts.

Page 1 is the summary a coder and a surgeon read (:class:`pipeline.document.facts.PacketSummary`);
the pages after it are the report: sections in words, tables with units, every figure once. Raw
parameters stay in ``packet.json``. Text is drawn in DejaVu Sans (matplotlib ships it), with a
CJK font of the system (Droid Sans Fallback, Noto Sans CJK) as fallback; nothing is cut or dropped.
"""

from __future__ import annotations

import datetime as dt
import io
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from pipeline.document.facts import (
    PacketSummary,
    material_title,
    packet_summary,
    person_name,
    printer_title,
)

FONT = "dejavu"
#: CJK fonts looked for among the system's fonts, best first (file names without extension).
CJK_FONTS = ("DroidSansFallbackFull", "DroidSansFallback", "NotoSansCJKsc-Regular", "NotoSansSC-Regular",
             "NotoSansCJK-Regular", "wqy-microhei")


@lru_cache(maxsize=1)
def font_files() -> dict[str, Path]:
    """The TTF files drawn with: ``regular``, ``bold``, ``italic`` (DejaVu Sans from matplotlib's
    data) and, when the system has one, ``cjk``.

    Returns
    -------
    dict of str to Path
        Font role to TTF/OTF file; ``cjk`` is the first of :data:`CJK_FONTS` the system has, or
        absent. Found once and cached.
    """
    import matplotlib
    from matplotlib import font_manager

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    files = {"regular": folder / "DejaVuSans.ttf", "bold": folder / "DejaVuSans-Bold.ttf",
             "italic": folder / "DejaVuSans-Oblique.ttf"}
    system = {Path(p).stem: Path(p) for p in font_manager.findSystemFonts()
              if Path(p).suffix.lower() in (".ttf", ".otf")}
    for name in CJK_FONTS:
        if name in system:
            files["cjk"] = system[name]
            break
    return files


def text(value: Any) -> str:
    """A value as drawn: ``None`` as empty text.

    Parameters
    ----------
    value : object
        Any value.

    Returns
    -------
    str
        ``""`` for None, else ``str(value)``.
    """
    return "" if value is None else str(value)


def _figure(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = f"{value:.{digits}f}"
    return f"{value} {unit}".strip()


class _Document(FPDF):
    def __init__(self, running_title: str):
        super().__init__(orientation="P", unit="mm", format="Letter")
        self.running_title = running_title
        self.set_auto_page_break(auto=True, margin=16)
        self.set_margins(15, 14, 15)
        fonts = font_files()
        self.add_font(FONT, "", fonts["regular"])
        self.add_font(FONT, "B", fonts["bold"])
        self.add_font(FONT, "I", fonts["italic"])
        # The CJK fallback (0.5 s to parse, most of a PDF's font time) is added on the first text
        # a DejaVu face cannot draw; a packet in Latin script never loads it.
        self._cjk_file = fonts.get("cjk")

    def normalize_text(self, text: str) -> str:
        """Add the CJK fallback font the first time a text holds a character the current font lacks.

        Parameters
        ----------
        text : str
            A text about to be measured or drawn (fpdf2 passes every one through here).

        Returns
        -------
        str
            ``text``, as fpdf2 normalises it.
        """
        if self._cjk_file is not None and self.is_ttf_font and not text.isascii():
            cmap = self.current_font.cmap
            if any(ord(character) not in cmap for character in text):
                self.add_font("cjk", "", self._cjk_file)  # leaves the current font as it is
                self.set_fallback_fonts(["cjk"], exact_match=False)
                self._cjk_file = None
        return super().normalize_text(text)

    def header(self) -> None:
        self.set_font(FONT, "", 8)
        self.set_text_color(90)
        self.cell(0, 5, self.running_title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(160)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(2)
        self.set_text_color(0)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, "", 8)
        self.set_text_color(90)
        self.cell(0, 6, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0)

    # -- building blocks ---------------------------------------------------------------------
    def heading(self, title: str) -> None:
        """A shaded section title, on a new page when less than 40 mm are left.

        Parameters
        ----------
        title : str
            The section title.
        """
        if self.get_y() > self.h - 40:
            self.add_page()
        self.ln(2)
        self.set_font(FONT, "B", 11)
        self.set_fill_color(230, 236, 245)
        self.cell(0, 7, text(title), fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def paragraph(self, words: str, size: float = 9, style: str = "") -> None:
        """Text across the page width, wrapped.

        Parameters
        ----------
        words : str
            The text (None draws nothing).
        size : float
            Font size, points.
        style : str
            fpdf2 font style: ``""``, ``"B"`` (bold) or ``"I"`` (italic).
        """
        self.set_font(FONT, style, size)
        self.multi_cell(0, 4.6, text(words), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def key_values(self, rows: Iterable[tuple[str, Any]], key_width: float = 68) -> None:
        """A two-column table of labels and values, or ``(none)`` when there are no rows.

        Parameters
        ----------
        rows : iterable of (str, object)
            Label and value per row (values drawn with :func:`text`).
        key_width : float
            Width of the label column, mm.
        """
        rows = [(k, v) for k, v in rows]
        if not rows:
            self.paragraph("(none)", style="I")
            return
        self.set_font(FONT, "", 8)
        with self.table(col_widths=(key_width, self.epw - key_width), text_align="LEFT", first_row_as_headings=False,
                        line_height=4.2, padding=0.8) as table:
            for key, value in rows:
                row = table.row()
                row.cell(text(key))
                row.cell(text(value))

    def grid(self, headings: list[str], rows: list[list[Any]], widths: tuple[float, ...] | None = None) -> None:
        """A table with a heading row.

        Parameters
        ----------
        headings : list of str
            The column headings.
        rows : list of list
            The rows, one value per column (None drawn empty).
        widths : tuple of float, optional
            Column widths (fpdf2 scales them to the page width); default equal columns.
        """
        self.set_font(FONT, "", 8)
        with self.table(col_widths=widths, text_align="LEFT", line_height=4.2, padding=0.8) as table:
            head = table.row()
            for heading in headings:
                head.cell(text(heading))
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(text("" if value is None else value))

    def picture(self, png: bytes, caption: str, width: float | None = None) -> None:
        """A picture at the left margin with its caption below, on a new page when it does not fit.

        Parameters
        ----------
        png : bytes
            The PNG image.
        caption : str
            The caption, in italics.
        width : float, optional
            Drawn width, mm (the height follows the image's aspect); default the page width
            inside the margins.
        """
        width = width or self.epw
        from PIL import Image

        with Image.open(io.BytesIO(png)) as image:
            height = width * image.height / image.width
        if self.get_y() + height + 10 > self.h - 16:
            self.add_page()
        self.image(io.BytesIO(png), x=self.l_margin, w=width)
        self.paragraph(caption, size=8, style="I")

    def signature_lines(self, roles: list[str]) -> None:
        """A signature line and a date line per role, kept together on one page.

        Parameters
        ----------
        roles : list of str
            Who signs, one line each (``"Reviewed by (coder)"``).
        """
        if self.get_y() > self.h - 20 - 14 * len(roles):
            self.add_page()
        self.ln(4)
        self.set_font(FONT, "", 9)
        for role in roles:
            self.ln(8)
            y = self.get_y()
            self.line(self.l_margin, y, self.l_margin + 95, y)
            self.line(self.l_margin + 110, y, self.w - self.r_margin, y)
            self.cell(110, 5, text(role))
            self.cell(0, 5, "Date", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _metadata(pdf: _Document, title: str, subject: str, created: Any) -> None:
    pdf.set_title(text(title))
    pdf.set_subject(text(subject))
    pdf.set_author("anatomodel")
    pdf.set_creator("anatomodel")
    pdf.set_creation_date(created)


def _output(pdf: _Document) -> bytes:
    return bytes(pdf.output())


def _get(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _shown(value: Any, unit: str, digits: int) -> str:
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return _figure(" x ".join(f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in value), unit)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v, unit, digits)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(text(v) for v in value) or "none"
    return _figure(value, unit, digits)


def measured_rows(report: dict[str, Any] | None, spec: Iterable[tuple[str, str, str, int]]) -> list[tuple[str, str]]:
    """``(label, value with unit)`` rows of a stage report for each ``(label, dotted key, unit,
    digits)`` of ``spec`` the report holds.

    Parameters
    ----------
    report : dict or None
        A stage report as a dict; None counts as empty.
    spec : iterable of (str, str, str, int)
        Label, dotted key into the report, unit text (``mm``, ``HU``, ``ml``; ``""`` for none)
        and decimals for floats.

    Returns
    -------
    list of (str, str)
        Label and drawn value (``yes``/``no`` for booleans, ``a x b x c`` for lists of numbers),
        in the order of ``spec``, for the keys the report holds with a value other than None.
    """
    report = report or {}
    return [(label, _shown(value, unit, digits)) for label, path, unit, digits in spec
            if (value := _get(report, path)) is not None]


#: What each report section shows, in words with units; the rest of each report is in packet.json.
LOAD_ROWS = (("Series chosen", "selection", "", 0), ("Slices used", "slices_used", "", 0),
             ("Slice ordering", "slice_ordering", "", 0), ("Rescale to HU", "rescale", "", 0),
             ("Gantry tilt (header)", "gantry_tilt_header_deg", "deg", 1),
             ("Tilt corrected", "tilt_corrected", "", 0), ("Resampling", "resampling", "", 0),
             ("Grid", "output_shape", "voxels", 0), ("Voxel size", "output_spacing_mm", "mm", 2))
SEGMENT_ROWS = (("Method", "method", "", 0), ("Preset", "preset", "", 0),
                ("HU window, lower", "window.lower_hu", "HU", 0), ("HU window, upper", "window.upper_hu", "HU", 0),
                ("HU window, lower", "lower_hu", "HU", 0), ("HU window, upper", "upper_hu", "HU", 0),
                ("Seeds", "seeds_lps_mm", "mm (LPS)", 1), ("Voxels", "voxels", "", 0),
                ("Volume", "volume_ml", "ml", 1), ("Connected pieces", "components", "", 0),
                ("HU mean", "hu_statistics.mean", "HU", 0), ("HU standard deviation", "hu_statistics.sd", "HU", 0),
                ("HU 5th to 95th percentile, low", "hu_statistics.p5", "HU", 0),
                ("HU 5th to 95th percentile, high", "hu_statistics.p95", "HU", 0),
                ("Bone barrier", "bone_separation.barrier_ml", "ml", 2),
                ("Leak control: removed", "leak_control.removed_ml", "ml", 1))
MESH_ROWS = (("Surface faces", "faces_final", "", 0), ("Surface faces", "faces", "", 0),
             ("Vertices", "vertices_final", "", 0), ("Shells", "shells", "", 0),
             ("Shells removed", "shells_removed", "", 0), ("Cavities", "cavities", "", 0),
             ("Model volume", "volume_mm3", "mm³", 0), ("Model volume", "volume_ml", "ml", 2),
             ("Surface area", "area_mm2", "mm²", 0), ("Extent (x, y, z)", "extent_mm", "mm", 1),
             ("Distance to the voxel surface, mean", "distance_to_raw_mean_mm", "mm", 2),
             ("Distance to the voxel surface, 95th percentile", "distance_to_raw_p95_mm", "mm", 2),
             ("Distance to the voxel surface, largest", "distance_to_raw_max_mm", "mm", 2),
             ("Share of the surface thinner than the printer allows", "thin_area_fraction", "", 4),
             ("Repaired", "repaired", "", 0), ("Repairs", "repair_actions", "", 0))
PLAN_ROWS = (("Technology", "technology", "", 0), ("Layer height", "layer_height_mm", "mm", 2),
             ("Layers", "layers", "", 0), ("Height on the plate", "height_mm", "mm", 1),
             ("Footprint", "footprint_mm", "mm", 1), ("Needs supports", "needs_supports", "", 0),
             ("Overhang area", "overhang_area_mm2", "mm²", 0), ("Support volume", "support_volume_mm3", "mm³", 1),
             ("Resin or material for the part", "material_part_ml", "ml", 1),
             ("Weight of the part", "material_part_g", "g", 1),
             ("Material for supports", "material_supports_ml", "ml", 2),
             ("Drain cups", "cup_count", "", 0), ("Estimated print time", "estimated_time_h", "h", 1))
RAW_NOTE = ("Raw parameters (the preset and its overrides, the mesh options, the print transform, the "
            "orientation search's cost terms and alternative orientations, per-step timings) are in "
            "packet.json beside this PDF, under segmentation, mesh_qa and print_plan.")


def _clock(stamp: str | None) -> str:
    """An ISO timestamp as ``2026-01-15 08:00:30 +00:00`` (breaks between words, not inside)."""
    if not stamp:
        return ""
    moment = dt.datetime.fromisoformat(stamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f" {moment.strftime('%z')[:3]}:{moment.strftime('%z')[3:]}"
                                                  if moment.tzinfo else "")


def _dicom_when(key: str, value: Any) -> str:
    """DICOM dates and times as people write them (``20260115`` as ``2026-01-15``, ``081500``
    as ``08:15:00``); other values as :func:`_shown` draws them."""
    raw = text(value)
    if key.endswith("_date") and len(raw) == 8 and raw.isdigit():
        return f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"
    if key.endswith("_time") and len(raw) >= 6 and raw[:6].isdigit():
        return f"{raw[:2]}:{raw[2:4]}:{raw[4:6]}"
    return _shown(value, "", 2)


def _label(key: str) -> str:
    """``slice_thickness_mm`` as ``Slice thickness (mm)``."""
    if key == "kvp":
        return "Tube voltage (kVp)"
    units = {"mm": "mm", "deg": "deg", "ml": "ml", "hu": "HU", "sha256": "SHA-256", "uid": "UID"}
    words = key.split("_")
    unit = units.get(words[-1]) if len(words) > 1 and words[-1] in ("mm", "deg", "ml", "hu") else None
    words = words[:-1] if unit else words
    written = " ".join(units.get(w, w) for w in words)
    written = written[:1].upper() + written[1:]
    return f"{written} ({unit})" if unit else written


def page_one(pdf: _Document, summary: PacketSummary, picture: tuple[bytes, str] | None) -> None:
    """The summary page: who, the charge line and its state, verdicts, picture, sign-offs, holds.

    Parameters
    ----------
    pdf : _Document
        The document, positioned on page 1 under its title.
    summary : PacketSummary
        What page 1 shows.
    picture : tuple of (bytes, str) or None
        The model views as PNG and their caption, drawn as large as the room left allows (20 to
        75 mm wide); None draws no picture.
    """
    pdf.heading("Charge line")
    pdf.grid(["CPT", "Units", "Modifiers", "State"],
             [[summary.cpt, summary.units, " ".join(summary.modifiers) or "none",
               f"{summary.billing}: {summary.billing_reason}"]], widths=(22, 14, 28, 116))
    pdf.paragraph("Diagnoses (ICD-10-CM, by claim pointer):", size=9, style="B")
    for line in _diagnosis_lines(summary):
        pdf.paragraph(line, size=9)
    pdf.paragraph(summary.descriptor, size=8, style="I")
    pdf.heading("Patient and encounter")
    pdf.key_values(summary.patient + summary.encounter, key_width=45)
    pdf.heading(f"Model {summary.model_id} ({summary.structure}): {summary.state}")
    marks = {True: "✓ pass", False: "✗ check", None: "– not measured"}
    pdf.grid(["Check", "Result", "Measured"], [[v.name, marks[v.passed], v.text] for v in summary.verdicts],
             widths=(55, 25, 100))
    pdf.heading("Sign-offs and holds")
    pdf.grid(["Role", "Name", "Signed"], [[s.role, s.name, s.signed_at] for s in summary.signoffs]
             or [["(no sign-off yet)", "", ""]], widths=(55, 75, 50))
    for line in summary.effort:
        pdf.paragraph(f"Effort recorded (ACR-RSNA registry categories): {line}", size=8)
    if summary.holds:
        pdf.grid(["Hold", "Source", "Reason"], [[h.code, h.source, h.reason] for h in summary.holds],
                 widths=(50, 25, 105))
    else:
        pdf.paragraph("No hold on this model.", size=9)
    pdf.paragraph("Warnings" if summary.warnings else "No warnings from any stage.", size=9, style="B")
    for warning in summary.warnings:
        pdf.paragraph(f"- {warning}", size=8)
    if picture is not None:  # on page 1 whatever the room left: as large as fits, up to 75 mm wide
        from PIL import Image

        with Image.open(io.BytesIO(picture[0])) as image:
            aspect = image.width / image.height
        room = pdf.h - 16 - pdf.get_y() - 12
        pdf.picture(picture[0], picture[1], width=max(20.0, min(75.0, room * aspect)))


def _diagnosis_lines(summary: PacketSummary) -> list[str]:
    """``A: I71.23 Aneurysm of ...`` lines, the form a claim's diagnosis pointers are read in."""
    return [f"{p}: {c} {t}".rstrip() for p, c, t in summary.diagnoses]


def packet_pdf(facts: dict[str, Any], pictures: list[tuple[bytes, str]],
               summary: PacketSummary | None = None) -> tuple[bytes, int]:
    """Draw the packet; return the PDF bytes and its page count.

    Parameters
    ----------
    facts : dict
        The packet's facts (``packet.json``).
    pictures : list of (bytes, str)
        PNG pictures and captions: the CT slices, the model views, the print orientation (any
        may be missing); the model views go on page 1.
    summary : PacketSummary, optional
        Page 1; by default :func:`pipeline.document.facts.packet_summary` of ``facts`` (a model
        prepared, not yet approved).

    Returns
    -------
    data : bytes
        The PDF file's bytes (US Letter).
    pages : int
        Its page count.
    """
    summary = summary or packet_summary(facts)
    case_id, model = facts["case"]["case_id"], facts["model"]
    charge = facts["charge"]
    title = f"Anatomic model packet - case {case_id}, model {model['id']}"
    pdf = _Document(f"{title} - {charge['cpt']}")
    _metadata(pdf, title, f"Documentation supporting CPT {charge['cpt']}",
              dt.datetime.fromisoformat(facts["generated"]["created"]))
    pdf.add_page()
    pdf.set_font(FONT, "B", 15)
    pdf.cell(0, 9, "3D-printed anatomic model: documentation packet", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.paragraph(
        f"Case {case_id} - model {model['id']} ({model['structure']}) - generated "
        f"{facts['generated']['created']} by anatomodel {facts['generated']['version']}"
        + (" - DE-IDENTIFIED COPY" if facts["case"]["deidentified"] else ""), size=9)
    model_view = next((p for p in pictures if "model in patient space" in p[1]), None)
    page_one(pdf, summary, model_view)

    pdf.add_page()
    pdf.heading("1. Indication and model")
    indication = facts["indication"]
    pdf.paragraph(indication["summary"] or "(no summary given)", size=9)
    plan = facts["print_plan"] or {}
    pdf.key_values([("Model", model["id"]), ("Structure", model["structure"]), ("Kind", model["kind"]),
                    ("Preset", model["preset"]), ("Purpose", text(model["purpose"]).replace("_", " ")),
                    ("Recipient", model["recipient"])]
                   + ([("Printer", printer_title(plan.get("printer")))] if plan.get("printer") else [])
                   + ([("Material", material_title(plan.get("printer"), plan.get("material")))]
                      if plan.get("material") else []))

    pdf.heading("2. Source imaging")
    pdf.key_values([(_label(k), _dicom_when(k, v)) for k, v in facts["source_imaging"].items()])

    pdf.heading("3. Workflow: steps, operators, time spent")
    steps = facts["workflow"]["steps"]
    if steps:
        pdf.grid(["Step", "Kind", "Start", "End", "Operator", "Minutes"],
                 [[s["step"].replace("_", " "), s["kind"], _clock(s["start"]), _clock(s["end"]), person_name(s["operator"]),
                   "" if s["minutes"] is None else f"{s['minutes']:.2f}"] for s in steps],
                 widths=(34, 18, 38, 38, 34, 18))
    pdf.paragraph(f"Total time recorded: {facts['workflow']['total_minutes']:.1f} min", size=9, style="B")

    pdf.heading("4. Loading and segmentation")
    if facts.get("load"):
        pdf.paragraph("The series was read and checked as follows.", size=9)
        pdf.key_values(measured_rows(facts["load"], LOAD_ROWS))
    segmentation = facts["segmentation"] or {}
    seeds = [s for s in segmentation.get("seeds") or [] if isinstance(s, dict)]
    pdf.paragraph("The structure was segmented as follows." if segmentation else "No segmentation report.", size=9)
    pdf.key_values(measured_rows(segmentation, SEGMENT_ROWS))
    if seeds:
        pdf.grid(["Seed", "Position (LPS mm)", "HU there"],
                 [[s.get("kind", ""), ", ".join(f"{c:.1f}" for c in s.get("lps_mm") or []), _figure(s.get("hu"), "", 0)]
                  for s in seeds], widths=(30, 100, 50))

    others = [p for p in pictures if p is not model_view]
    if others:
        pdf.heading("5. Pictures")
        for png, caption in others:
            pdf.picture(png, caption)

    pdf.heading("6. Mesh quality")
    pdf.paragraph("Page 1 gives whether the mesh is closed, its thinnest wall and its volume change; "
                  "the mesh stage also measured:", size=9)
    pdf.key_values(measured_rows(facts["mesh_qa"], MESH_ROWS))

    pdf.heading("7. Print plan")
    if plan:
        pdf.paragraph(f"Printed on a {printer_title(plan.get('printer'))}"
                      + (f" in {material_title(plan.get('printer'), plan.get('material'))}" if plan.get("material")
                         else "") + "; the chosen orientation:", size=9)
    pdf.key_values(measured_rows(plan, PLAN_ROWS)
                   + ([("Material cost", f"{plan['material_cost']:.2f} {plan.get('currency', '')}".strip())]
                      if _figure(plan.get("material_cost")) != "not measured" else []))
    pdf.paragraph(RAW_NOTE, size=8, style="I")

    pdf.heading("8. Charge: descriptor and medical necessity")
    pdf.key_values([(f"Modifier {m}", r) for m, r in (charge.get("modifier_reasons") or {}).items()]
                   + [("Flag", f) for f in charge["flags"]] + [("Rules version", charge.get("rules_version"))])
    pdf.paragraph("Medical necessity", size=9, style="B")
    pdf.paragraph(charge["medical_necessity"], size=9)

    pdf.heading("9. Files and DICOM object")
    pdf.grid(["File", "Bytes", "SHA-256"], [[f["name"], f["bytes"], f["sha256"]] for f in facts["files"]],
             widths=(35, 20, 125))
    pdf.key_values([(_label(k), v) for k, v in facts["dicom"].items()])

    pdf.heading("10. Attestation")
    pdf.paragraph("I attest that this patient-specific model was individually prepared, processed and printed "
                  "from the image data set named above, for the indication stated, and that this packet is "
                  "complete and accurate.", size=9)
    pdf.signature_lines(["Prepared by (3D lab operator)", "Reviewed by (rendering provider)",
                         "Received by (ordering provider or delegate)"])
    data = _output(pdf)
    return data, pdf.pages_count


def case_summary_pdf(summary: dict[str, Any]) -> bytes:
    """One page per case: who, which models with which code, and what is billed.

    Parameters
    ----------
    summary : dict
        Built by :mod:`pipeline.document.charges`: ``case_id``, ``created`` (ISO timestamp),
        ``header`` (label, value rows), ``models`` (``model_id``, ``cpt``, ``modifiers``,
        ``icd10``, ``flags``), ``claims`` (``date_of_service``, ``cpt``, ``units``,
        ``modifiers``, ``icd10_pointers``, ``model_ids``), ``diagnoses`` (pointer, code pairs)
        and ``held`` (texts).

    Returns
    -------
    bytes
        The PDF file's bytes (US Letter).
    """
    title = f"Case summary - {summary['case_id']}"
    pdf = _Document(title)
    _metadata(pdf, title, "3D-printed anatomic models and charges of one case",
              dt.datetime.fromisoformat(summary["created"]))
    pdf.add_page()
    pdf.set_font(FONT, "B", 14)
    pdf.cell(0, 8, text(f"Case {summary['case_id']}: models and charges"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
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
