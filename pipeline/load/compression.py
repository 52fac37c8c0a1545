"""Whether a series' pixels went through lossy compression, from its headers alone.

Two kinds of evidence count, from the headers the inventory already read (nothing more is read
or decoded): LossyImageCompression (0028,2110) ``"01"`` in any instance (it stays set when a
lossy compressed image is later stored uncompressed), and a transfer syntax that compresses
lossily. A lossy transfer syntax counts even when the flag says ``"00"``: JPEG 2000
(1.2.840.10008.1.2.4.91) allows both kinds, and which one was used is known only from the
codestream. Lossy compression changes HU by tens of HU (the NEMA WG04 JPEG 2000 CT sample: 26 HU
on average, up to 352 HU), enough to move a segmentation's threshold boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import (
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from pipeline.load.headers import LossyMarks, Plane, lossy_marks, transfer_syntax_name

#: pydicom's compressed transfer syntaxes that are lossless by definition.
LOSSLESS_SYNTAXES = frozenset({
    JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, JPEG2000MCLossless, HTJ2KLossless,
    HTJ2KLosslessRPCL, RLELossless,
})
#: LossyImageCompressionMethod defined terms (PS3.3 C.7.6.1.1.5.1), as the warning names them.
METHOD_NAMES = {
    "ISO_10918_1": "JPEG", "ISO_14495_1": "JPEG-LS near-lossless", "ISO_15444_1": "JPEG 2000",
    "ISO_15444_15": "HTJ2K", "ISO_13818_2": "MPEG2", "ISO_14496_10": "H.264", "ISO_23008_2": "HEVC",
}
LOSSY_FLAG = "01"


def is_lossy_syntax(uid: str) -> bool:
    """Whether a transfer syntax compresses lossily (or may: JPEG 2000, HTJ2K, JPEG-LS near-lossless).

    Parameters
    ----------
    uid : str
        A transfer syntax UID.

    Returns
    -------
    bool
        True for a compressed syntax pydicom knows (``UID.is_compressed``) other than its
        lossless ones (:data:`LOSSLESS_SYNTAXES`); False for native, deflated and unknown UIDs.
    """
    try:
        return UID(uid).is_compressed and uid not in LOSSLESS_SYNTAXES
    except ValueError:  # not a transfer syntax pydicom knows
        return False


@dataclass
class LossyCompression:
    """Whether the source was lossy compressed, and why we know (no patient data).

    Counts are of source instances (files: a multi-frame file counts once); ``ratios`` are the
    distinct LossyImageCompressionRatio values given (uncompressed / compressed size,
    dimensionless), ``methods`` the distinct LossyImageCompressionMethod defined terms.
    """

    lossy: bool
    instances: int
    flagged_instances: int = 0
    lossy_syntax_instances: int = 0
    lossy_syntaxes: list[str] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    ratio_instances: int = 0
    methods: list[str] = field(default_factory=list)
    method_instances: int = 0
    evidence: str = ""

    def warning(self) -> str | None:
        """The load warning for a lossy source, or None when the source was not lossy compressed.

        Returns
        -------
        str or None
            What compressed it (methods, else the lossy transfer syntaxes), the ratios and the
            flag count, then what that means for HU and what to do.
        """
        if not self.lossy:
            return None
        named = [METHOD_NAMES.get(method, method) for method in self.methods]
        parts = [", ".join(named or self.lossy_syntaxes or ["method not recorded"])]
        if self.ratios:
            parts.append(f"ratio {', '.join(f'{ratio:g}:1' for ratio in self.ratios)}")
        if self.flagged_instances:
            parts.append(f"LossyImageCompression 01 in {self.flagged_instances} of {self.instances} instance(s)")
        return (f"the source was lossy compressed ({'; '.join(parts)}): HU may differ from the scanner's by tens "
                "of HU; check with the radiologist before printing")


def _seen(what: str, values: list[str] | list[float], count: int, instances: int) -> str:
    """``what``, its values and in how many of ``instances`` it was seen."""
    if not count:
        return f"{what} in none of {instances} instance(s)"
    shown = ", ".join(f"{value:g}" if isinstance(value, float) else value for value in values)
    return f"{what}{' ' + shown if shown else ''} in {count} of {instances} instance(s)"


def _evidence(found: LossyCompression) -> str:
    """The sentence saying what the headers showed, with counts of instances."""
    return "; ".join((
        _seen("LossyImageCompression (0028,2110) 01", [], found.flagged_instances, found.instances),
        _seen("a lossy transfer syntax", found.lossy_syntaxes, found.lossy_syntax_instances, found.instances),
        _seen("LossyImageCompressionRatio (0028,2112)", found.ratios, found.ratio_instances, found.instances),
        _seen("LossyImageCompressionMethod (0028,2114)", found.methods, found.method_instances, found.instances),
    ))


def lossy_compression(planes: list[Plane]) -> LossyCompression:
    """Whether the planes' source instances were lossy compressed, from their headers.

    Parameters
    ----------
    planes : list of Plane
        The planes loaded; their headers (``Plane.header``) and transfer syntaxes are read,
        once per file.

    Returns
    -------
    LossyCompression
        ``lossy`` when any instance has LossyImageCompression ``"01"`` or a lossy transfer
        syntax (:func:`is_lossy_syntax`), with the counts, ratios, methods and ``evidence``.
    """
    by_file: dict[Path, Plane] = {}
    for plane in planes:
        by_file.setdefault(plane.path, plane)
    marks = [lossy_marks(plane.header) if plane.header is not None else LossyMarks() for plane in by_file.values()]
    lossy_syntax = [plane for plane in by_file.values() if is_lossy_syntax(plane.transfer_syntax_uid)]
    flagged = sum(mark.flag == LOSSY_FLAG for mark in marks)
    found = LossyCompression(
        lossy=bool(flagged or lossy_syntax),
        instances=len(by_file),
        flagged_instances=flagged,
        lossy_syntax_instances=len(lossy_syntax),
        lossy_syntaxes=sorted({transfer_syntax_name(plane.transfer_syntax_uid) for plane in lossy_syntax}),
        ratios=sorted({ratio for mark in marks for ratio in mark.ratios}),
        ratio_instances=sum(bool(mark.ratios) for mark in marks),
        methods=sorted({method for mark in marks for method in mark.methods}),
        method_instances=sum(bool(mark.methods) for mark in marks),
    )
    found.evidence = _evidence(found)
    return found
