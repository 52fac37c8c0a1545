"""``check_print``: measure a scan of the printed model against the model folder it came from."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from pipeline.check.deviation import DeviationStats, model_to_scan, scan_to_model
from pipeline.check.pictures import deviation_views_png
from pipeline.check.policy import QAPolicy, load_policy
from pipeline.check.regions import worst_regions
from pipeline.check.register import register
from pipeline.check.report import SOURCE, CheckReport, Criterion
from pipeline.check.scan import Scan, read_scan
from pipeline.errors import AnatomodelError
from pipeline.files import atomic_write
from pipeline.holds import Hold

#: Samples of each surface for the deviation figures.
SAMPLES = 20_000
#: Scan area hanging below the support contacts, as a share of the contact area, that means the
#: supports are still on (estimate: a removed support leaves a nub well under this).
SUPPORTS_PRESENT_SHARE = 0.1
REPORT_FILE = "check.json"
PICTURE_FILE = "deviation_views.png"


def check_print(model_dir: str | os.PathLike, scan: str | os.PathLike | Scan, *,
                policy: str | QAPolicy = "default", printer: str | None = None, material: str | None = None,
                estimate_scale: bool = True, out_dir: str | os.PathLike | None = None,
                samples: int = SAMPLES, seed: int = 0) -> CheckReport:
    """Register a scan of a printed model to the model and measure the print against it.

    Parameters
    ----------
    model_dir : path
        A model folder: ``model.stl`` (patient LPS) or else ``print.stl`` (print frame), and
        ``plan.json`` when the prepare stage ran (printer, material, support contacts).
    scan : path or Scan
        An STL/OBJ/PLY/3MF surface scan, a CT of the print (DICOM folder or file,
        NIfTI/NRRD/MHA), or a :class:`~pipeline.check.scan.Scan` already read.
    policy : str or QAPolicy
        QA policy name (``configs/qa/<name>.yaml``), YAML path, or a loaded policy.
    printer, material : str, optional
        Select the policy's overrides; by default those of ``plan.json``.
    estimate_scale : bool
        Fit and report a uniform scale (a shrunk print); False fits a rigid motion only, so a
        shrunk print shows as deviation.
    out_dir : path, optional
        Write ``check.json`` and ``deviation_views.png`` there.
    samples : int
        Area-uniform samples of each surface for the deviation figures.
    seed : int
        Seed of the surface samples (results are deterministic for a seed).

    Returns
    -------
    CheckReport

    Raises
    ------
    pipeline.errors.ScanError
        Unusable scan (empty, no triangles, wrong units, no printed object in the CT).
    pipeline.errors.RegistrationError
        The scan does not fit the model (another object, no convergence).
    pipeline.errors.ConfigError
        Unknown or invalid policy.
    """
    started = time.perf_counter()
    folder = Path(model_dir)
    policy = policy if isinstance(policy, QAPolicy) else load_policy(policy)
    reference_name, reference, frame = _reference(folder)
    plan = _plan(folder)
    printer = printer or (plan or {}).get("printer")
    material = material or (plan or {}).get("material")
    limits = policy.limits_for(printer, material)
    scan = scan if isinstance(scan, Scan) else read_scan(scan)

    registration = register(scan.mesh, reference, limits=policy.registration, estimate_scale=estimate_scale,
                            seed=seed)
    moved = scan.mesh.copy()
    moved.apply_transform(np.asarray(registration.matrix))

    support = _support_faces(plan, reference, frame)
    excluded = None
    if support is not None and policy.exclude_support_contacts:
        excluded = _with_margin(reference, support, policy.support_margin_mm)
    seen = model_to_scan(reference, moved, excluded_faces=excluded, count=samples, seed=seed)
    scan_points, scan_signed, scan_excluded = scan_to_model(moved, reference, excluded_faces=excluded,
                                                            count=samples, seed=seed + 1)
    to_print = (np.asarray(plan["transform"]) if frame == "lps" else np.eye(4)) if plan else None
    hanging = _below_contacts(scan_points, scan_signed, support, reference, to_print, policy.support_margin_mm,
                              limits.tolerance_mm)
    if excluded is not None:
        scan_excluded = scan_excluded | hanging
    measured = seen.measured
    measured_area = float(measured.sum()) * seen.area_per_point_mm2
    m2s = DeviationStats.of("model_to_scan", seen.signed_mm[measured], measured_area, limits.tolerance_mm)
    s2m = DeviationStats.of("scan_to_model", scan_signed[~scan_excluded], moved.area * float(np.mean(~scan_excluded)),
                            limits.tolerance_mm)
    coverage = float(seen.covered[~seen.excluded].mean()) if (~seen.excluded).any() else 0.0
    supports, contact_share = _supports(support, reference, hanging, moved.area)

    transform = to_print if frame == "lps" else None
    regions = worst_regions(seen.points[measured], seen.signed_mm[measured], limits.tolerance_mm,
                            seen.area_per_point_mm2, frame=frame, bounds=reference.bounds, to_print=transform)
    criteria = _criteria(m2s, s2m, registration.scale, coverage, limits)
    passed = all(c.passed for c in criteria)
    model_id = folder.resolve().name
    report = CheckReport(
        model_id=model_id, reference=reference_name, frame=frame, scan_kind=scan.kind, scan_source=scan.source,
        scan_faces=len(scan.mesh.faces), scan_open_edges=scan.open_edges, ct=scan.ct, registration=registration,
        scale=registration.scale, scale_error_percent=(registration.scale - 1) * 100, scan_to_model=s2m,
        model_to_scan=m2s, coverage=coverage, supports=supports, support_contact_share=contact_share,
        supports_excluded=excluded is not None, regions=regions, policy=policy.name, printer=printer,
        material=material, limits=limits.model_dump(), criteria=criteria, passed=passed,
        holds=_holds(criteria, regions, model_id))
    if support is None:
        report.warnings.append("no plan.json with support contacts: supports cannot be told apart "
                               "from deviations, and none were left out")
    elif not policy.exclude_support_contacts:
        report.warnings.append("the policy keeps support contact areas in the verdict")
    if out_dir is not None:
        report.files = [REPORT_FILE, PICTURE_FILE]
        picture = deviation_views_png(reference, seen.points, seen.signed_mm, measured, limits.tolerance_mm,
                                      frame=frame, caption=f"{'PASS' if passed else 'FAIL'} ({policy.name})")
        report.seconds = time.perf_counter() - started
        _write(Path(out_dir), {PICTURE_FILE: picture, REPORT_FILE: (report.to_json() + "\n").encode()})
    report.seconds = time.perf_counter() - started
    return report


def _reference(folder: Path) -> tuple[str, trimesh.Trimesh, str]:
    from pipeline.mesh import read_model

    if not folder.is_dir():
        raise AnatomodelError(f"{folder}: no such model folder", hint="give the folder that holds model.stl")
    for name, frame in (("model.stl", "lps"), ("print.stl", "print")):
        if (folder / name).is_file():
            return name, read_model(folder / name).mesh, frame
    raise AnatomodelError(f"{folder}: holds neither model.stl nor print.stl",
                          hint="give a model folder written by anatomodel run or prepare")


def _plan(folder: Path) -> dict | None:
    path = folder / "plan.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise AnatomodelError(f"{path}: cannot be read as JSON ({error})", hint="re-run anatomodel prepare") from None


def _support_faces(plan: dict | None, reference: trimesh.Trimesh, frame: str) -> np.ndarray | None:
    """Faces of the reference the plan puts supports on (the prepare stage's own rule)."""
    from pipeline.model import Model
    from pipeline.prepare import PrintPlan, plan_support_faces

    if plan is None:
        return None
    names = {f.name for f in dataclasses.fields(PrintPlan)}
    known = PrintPlan(**{k: v for k, v in plan.items() if k in names})
    if frame == "print":  # print.stl is already on the plate
        known = dataclasses.replace(known, transform=np.eye(4).tolist())
    return plan_support_faces(known, Model(reference))


def _with_margin(mesh: trimesh.Trimesh, faces: np.ndarray, margin_mm: float) -> np.ndarray:
    """Faces within ``margin_mm`` (centre to centre) of a flagged face, and the flagged ones."""
    if not faces.any() or margin_mm <= 0:
        return faces.copy()
    centres = mesh.triangles_center
    distance, _ = cKDTree(centres[faces]).query(centres, distance_upper_bound=margin_mm)
    return faces | np.isfinite(distance)


def _below_contacts(points, signed, support, reference, to_print, margin_mm, tolerance_mm) -> np.ndarray:
    """Scan points outside the model that hang below a support contact (where supports stand).

    In the print frame, a point within ``margin_mm`` + 1 mm (a strut's radius) across the plate
    of a support face's centre and below it, and more than the tolerance outside the model, is
    support material (or its stub), not a deviation of the model.
    """
    if support is None or not support.any():
        return np.zeros(len(points), bool)
    centres = trimesh.transform_points(reference.triangles_center[support], to_print)
    placed = trimesh.transform_points(points, to_print)
    across, nearest = cKDTree(centres[:, :2]).query(placed[:, :2], distance_upper_bound=margin_mm + 1.0)
    below = np.zeros(len(points), bool)
    found = np.isfinite(across)
    below[found] = placed[found, 2] < centres[nearest[found], 2] + margin_mm
    return below & (signed > tolerance_mm)


def _supports(support, reference, hanging, scan_area) -> tuple[str, float]:
    """"present" when the scan holds material hanging below the support contacts."""
    if support is None:
        return "unknown", 0.0
    contact_area = float(reference.area_faces[support].sum())
    share = contact_area / float(reference.area)
    outside = float(np.mean(hanging)) * scan_area
    return ("present" if contact_area > 0 and outside > SUPPORTS_PRESENT_SHARE * contact_area else "removed"), share


def _criteria(m2s: DeviationStats, s2m: DeviationStats, scale: float, coverage: float, limits) -> list[Criterion]:
    worst = max(m2s.max_abs_mm, s2m.max_abs_mm)
    scale_error = abs(scale - 1) * 100
    return [
        Criterion("mean_abs_deviation", m2s.mean_abs_mm, limits.max_mean_abs_mm,
                  m2s.mean_abs_mm <= limits.max_mean_abs_mm),
        Criterion("max_abs_deviation", worst, limits.max_abs_mm, worst <= limits.max_abs_mm),
        Criterion("area_share_beyond_tolerance", m2s.share_beyond_tolerance, limits.max_area_share_beyond,
                  m2s.share_beyond_tolerance <= limits.max_area_share_beyond, "share"),
        Criterion("scale_error", scale_error, limits.max_scale_error_percent,
                  scale_error <= limits.max_scale_error_percent, "percent"),
        Criterion("coverage", coverage, limits.min_coverage, coverage >= limits.min_coverage, "share"),
    ]


_HOLD_TEXT = {
    "mean_abs_deviation": "the print's mean deviation from the model is {value:.3f} mm (policy {limit:g} mm)",
    "max_abs_deviation": "the print deviates from the model by up to {value:.3f} mm (policy {limit:g} mm)",
    "area_share_beyond_tolerance": "{value:.1%} of the model surface deviates beyond tolerance (policy {limit:.1%})",
    "scale_error": "the print is {value:.2f} % off the model's size (policy {limit:g} %): "
                   "check the printer's calibration",
    "coverage": "the scan sees only {value:.0%} of the model (policy {limit:.0%}): rescan the missing sides",
}


def _holds(criteria: list[Criterion], regions, model_id: str) -> list[Hold]:
    where = (f"; worst at {regions[0].where} ({', '.join(f'{v:.1f}' for v in regions[0].centre_mm)} "
             f"{regions[0].frame.upper()} mm, {regions[0].peak_mm:+.2f} mm)") if regions else ""
    return [Hold(f"{SOURCE}.{c.name}", _HOLD_TEXT[c.name].format(value=c.value, limit=c.limit)
                 + (where if c.name != "coverage" else "")
                 + ". Release after review by a named person, or reprint the model.", SOURCE, model_id)
            for c in criteria if not c.passed]


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        atomic_write(folder / name, data)
