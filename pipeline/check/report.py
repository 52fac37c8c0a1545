"""``CheckReport``: the figures of one print check, its verdict, and the holds it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.check.deviation import DeviationStats
from pipeline.check.regions import Region
from pipeline.check.register import Registration
from pipeline.check.scan import CtThreshold
from pipeline.holds import Hold
from pipeline.report import Report

SOURCE = "print_qa"


@dataclass
class Criterion(Report):
    """One line of the verdict: a measured figure against its policy limit."""

    name: str
    value: float
    limit: float
    passed: bool
    unit: str = "mm"


@dataclass
class CheckReport(Report):
    """The print check of one model.

    Lengths mm, areas mm2, shares 0-1. Deviations are signed with the model's outward normals
    (+: the print has material outside the model). ``model_to_scan`` is measured on the model's
    surface seen by the scan and outside support contacts; the verdict is taken on it (mean,
    area beyond tolerance, coverage) and on both directions' maximum.

    Attributes
    ----------
    model_id : str
        The model folder's name (a model id, never patient data).
    reference : {"model.stl", "print.stl"}
        The model the scan was registered to; ``frame`` is its frame ("lps" or "print").
    scan_kind : {"surface", "ct"}
    scan_source : str
    scan_faces, scan_open_edges : int
    ct : CtThreshold or None
        How a CT of the print was thresholded and meshed.
    registration : Registration
    scale : float
        Size of the print relative to the model (0.99: 1 % small); ``scale_error_percent`` the
        same as ``(scale - 1) x 100``. Deviations are measured after removing it.
    coverage : float
        Share of the model surface the scan sees.
    supports : {"removed", "present", "unknown"}
        Whether the scan still shows support structures at the plan's contact areas.
    support_contact_share : float
        Share of the model surface in support contact areas (left out of the verdict when
        ``supports_excluded``).
    criteria : list of Criterion
    passed : bool
    holds : list of Hold
        One per failed criterion (source "print_qa"); empty when the print passes.
    """

    model_id: str
    reference: str
    frame: str
    scan_kind: str
    scan_source: str
    scan_faces: int
    scan_open_edges: int
    ct: CtThreshold | None
    registration: Registration
    scale: float
    scale_error_percent: float
    scan_to_model: DeviationStats
    model_to_scan: DeviationStats
    coverage: float
    supports: str
    support_contact_share: float
    supports_excluded: bool
    regions: list[Region]
    policy: str
    printer: str | None
    material: str | None
    limits: dict[str, float]
    criteria: list[Criterion]
    passed: bool
    holds: list[Hold] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for people: verdict, the key figures, the worst region.

        Returns
        -------
        str
            ``PASS``/``FAIL`` and the policy, then model-to-scan mean |deviation|, SD, p95 (mm),
            the maximum of both directions (mm), the share beyond tolerance, scale, coverage,
            supports and the worst region (side, peak mm, area mm2) when there is one. No patient
            data (the model id is not in it).
        """
        m = self.model_to_scan
        worst = f"; worst: {self.regions[0].where} ({self.regions[0].peak_mm:+.2f} mm, " \
                f"{self.regions[0].area_mm2:.0f} mm2)" if self.regions else ""
        return (f"{'PASS' if self.passed else 'FAIL'} ({self.policy}): mean |dev| {m.mean_abs_mm:.3f} mm, "
                f"SD {m.sd_mm:.3f}, p95 {m.p95_abs_mm:.3f}, "
                f"max {max(m.max_abs_mm, self.scan_to_model.max_abs_mm):.3f} mm, "
                f"{m.share_beyond_tolerance:.1%} beyond {m.tolerance_mm:g} mm; scale {self.scale:.4f}; "
                f"coverage {self.coverage:.0%}; supports {self.supports}{worst}")


def checked_event(report: CheckReport) -> dict[str, Any]:
    """The ``checked`` lifecycle event of a model: its figures, verdict and holds.

    The lifecycle (ledger) records this between ``post_processed`` and ``delivered``: the
    figures go into the event's detail and onto the re-issued packet; each hold keeps the charge
    line unbillable until a named person releases it or the model is reprinted (a reprint is a
    new print of the same model version, never a new 0560T).

    Parameters
    ----------
    report : CheckReport
        The finished print check of one model.

    Returns
    -------
    dict
        ``event`` ("checked"), ``model_id``, ``passed``, ``policy``, ``figures`` (model-to-scan
        ``mean_mm`` signed, ``mean_abs_mm``, ``sd_mm``, ``p95_abs_mm``, ``max_abs_mm`` of both
        directions, ``tolerance_mm`` and ``residual_rms_mm`` in mm; ``share_beyond_tolerance``,
        ``coverage`` and ``overlap_share`` as 0-1 shares; ``scale`` as a ratio; ``supports`` and
        ``scan_kind`` as words) and ``holds`` (:class:`~pipeline.holds.Hold` objects attached to
        the model).
    """
    m = report.model_to_scan
    return {
        "event": "checked",
        "model_id": report.model_id,
        "passed": report.passed,
        "policy": report.policy,
        "figures": {
            "mean_mm": m.mean_mm, "mean_abs_mm": m.mean_abs_mm, "sd_mm": m.sd_mm, "p95_abs_mm": m.p95_abs_mm,
            "max_abs_mm": max(m.max_abs_mm, report.scan_to_model.max_abs_mm),
            "share_beyond_tolerance": m.share_beyond_tolerance, "tolerance_mm": m.tolerance_mm,
            "scale": report.scale, "coverage": report.coverage, "supports": report.supports,
            "scan_kind": report.scan_kind, "overlap_share": report.registration.overlap_share,
            "residual_rms_mm": report.registration.residual_rms_mm,
        },
        "holds": [hold.for_model(report.model_id) for hold in report.holds],
    }
