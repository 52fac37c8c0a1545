"""``run_regress``: every regression case through the pipeline, checked against its golden result."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import AnatomodelError, ConfigError, RegressionDrift
from pipeline.regress import golden as goldens
from pipeline.regress.golden import SOURCE_TREE
from pipeline.regress.cases import RegressCase, run_regress_case, select_cases
from pipeline.regress.consistency import compare_acquisitions
from pipeline.regress.surface import mesh_metrics
from pipeline.report import Report, anatomodel_version

#: Tilted series compared with the untilted 1 mm skull (checked), and the 5 mm one (for information),
#: each with the case holding the 1 mm acquisition at its slice thickness (for the volume), if any.
REFERENCE_CASE = "skull_1mm"
CONSISTENCY_CASES = {"skull_tilt_minus18": (True, "skull_1mm_as_2p5mm"),
                     "skull_tilt_plus16": (True, "skull_1mm_as_2p5mm"),
                     "skull_5mm": (False, None)}


@dataclass
class RegressResult(Report):
    """Outcome of a regression run (serialised as the JSON report)."""

    anatomodel_version: str
    started: str
    phantoms: str
    golden: str
    updated_golden: bool
    cases: list[dict[str, Any]] = field(default_factory=list)
    consistency: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        """One line per failed check: case, quantity, golden, measured, tolerance.

        Returns
        -------
        list of str
            The failed golden checks (case order), then the failed consistency comparisons; empty when
            everything holds.
        """
        lines = []
        for case in self.cases:
            for check in case["checks"]:
                if not check["ok"]:
                    lines.append(f"{case['case']}: {check['quantity']} {check['measured']} vs golden "
                                 f"{check['golden']} (tolerance {check['tolerance']})")
        for name, item in self.consistency.items():
            if item["checked"] and not item["ok"]:
                lines.append(f"{name} vs {REFERENCE_CASE}: {_consistency_failure(item)}")
        return lines

    @property
    def ok(self) -> bool:
        """Whether every check held.

        Returns
        -------
        bool
            True when :attr:`failures` is empty.
        """
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The JSON report.

        Returns
        -------
        dict
            The fields as :meth:`pipeline.report.Report.to_dict` gives them, plus ``ok`` and ``failures``.
        """
        data = super().to_dict()
        data["ok"], data["failures"] = self.ok, self.failures
        return data

    def raise_for_drift(self) -> None:
        """Raise :class:`RegressionDrift` listing every failed check, if any.

        Raises
        ------
        RegressionDrift
            If any check failed (exit code 14).
        """
        if self.failures:
            raise RegressionDrift(f"{len(self.failures)} check(s) out of tolerance: " + "; ".join(self.failures),
                                  hint="see the report; if the change is intended, rerun with --update-golden")


def _consistency_failure(item: dict[str, Any]) -> str:
    """What failed in a cross-acquisition comparison, each figure beside the bound it broke."""
    distance, bound = item["distance"]["mean_mm"], item["bounds"]["mean_distance_mm"]
    difference, limit = item["volume_difference"], item["bounds"]["volume_difference"]
    return (f"mean distance {distance:.3f} mm " + ("exceeds" if distance > bound else "within") + f" {bound} mm, "
            f"volume {difference:+.2%} " + ("within" if abs(difference) <= limit else "outside") + f" ±{limit:.0%}")


def cases_with_references(only: str | list[str] | None) -> list[RegressCase]:
    """The cases asked for, plus the reference cases their consistency checks compare with.

    A tilted skull is compared with the 1 mm skull and with the 1 mm series at the tilted
    series' slice thickness; asking for the tilted case alone must run those too, or the
    comparison would silently fall back to a mismatched reference.

    Parameters
    ----------
    only : str or list of str or None
        Case names, comma-separated or a list; None or empty for every case.

    Returns
    -------
    list of RegressCase
        The cases to run, in the order of :data:`pipeline.regress.cases.CASES`.

    Raises
    ------
    ConfigError
        If a name is not a case (exit code 4).
    """
    asked = select_cases(only)
    names = {case.name for case in asked}
    for case in asked:
        if case.name in CONSISTENCY_CASES:
            matched = CONSISTENCY_CASES[case.name][1]
            names |= {REFERENCE_CASE} | ({matched} if matched else set())
    return select_cases(sorted(names)) if only else asked


def default_phantoms_dir() -> Path:
    """``$ANATOMODEL_PHANTOMS``, else ``../shared/phantoms`` (from here, then from the source tree).

    Returns
    -------
    Path
        The phantom folder (not checked to exist when it comes from the variable or the source tree).
    """
    if os.environ.get("ANATOMODEL_PHANTOMS"):
        return Path(os.environ["ANATOMODEL_PHANTOMS"])
    here = Path("..") / "shared" / "phantoms"
    if here.is_dir():
        return here
    return SOURCE_TREE.parent / "shared" / "phantoms"


def run_regress(phantoms: str | Path | None = None, golden: str | Path | None = None, *,
                only: str | list[str] | None = None, update_golden: bool = False,
                pictures: bool = False, progress: Callable[[str], None] | None = None,
                ) -> tuple[RegressResult, dict[str, bytes]]:
    """Run the regression cases and compare each model with its golden result.

    Parameters
    ----------
    phantoms : path, optional
        Folder of the public phantom scans (holding ``dcm_qa_ct/``); see :func:`default_phantoms_dir`.
    golden : path, optional
        Folder of the golden records; ``regress/golden`` of the source tree by default.
    only : str or list of str, optional
        Case names (comma-separated) to run; all by default. The reference cases a named case
        is compared with are run too (see :func:`cases_with_references`).
    update_golden : bool
        Rewrite the golden records from this run instead of checking against them.
    pictures : bool
        Also draw the PNG pictures of the report.
    progress : callable, optional
        Called with a line of text before each step.

    Returns
    -------
    result : RegressResult
        Checks per case and the cross-acquisition consistency; ``result.ok`` says whether all hold.
    pictures : dict of str to bytes
        PNG images by case name (and ``"consistency"``), empty unless ``pictures``.

    Raises
    ------
    ConfigError
        If a case needs the phantom scans and ``phantoms`` has no ``dcm_qa_ct/``, if a given
        ``golden`` folder does not exist (unless ``update_golden``), or no default golden folder is
        found (exit code 4).
    """
    started, clock = dt.datetime.now().isoformat(timespec="seconds"), time.perf_counter()
    tell = progress or (lambda message: None)
    cases = cases_with_references(only)
    phantoms = Path(phantoms) if phantoms else default_phantoms_dir()
    if any(case.series for case in cases) and not (phantoms / "dcm_qa_ct").is_dir():
        raise ConfigError(f"public phantom scans not found in {phantoms} (no dcm_qa_ct/ folder)",
                          hint="give --phantoms DIR or set ANATOMODEL_PHANTOMS")
    if golden:
        golden = Path(golden)
        if not update_golden and not golden.is_dir():
            raise ConfigError(f"golden folder {golden} not found", hint="give --golden DIR or run --update-golden")
    else:
        golden = goldens.default_golden_dir(for_writing=update_golden)
    result = RegressResult(anatomodel_version(), started, str(phantoms), str(golden), update_golden)
    images: dict[str, bytes] = {}
    meshes: dict[str, tuple[Any, Any]] = {}
    for number, case in enumerate(cases, 1):
        tell(f"[{number}/{len(cases)}] {case.name}: {case.description}")
        try:
            run = run_regress_case(case, phantoms, progress=tell)
        except ConfigError:
            raise
        except (AnatomodelError, MemoryError) as error:
            # A stage refusing a phantom it used to model is drift too: record it, go on.
            tell(f"{case.name}: the pipeline failed: {type(error).__name__}: {error}")
            result.cases.append({"case": case.name, "description": case.description, "source": case.series,
                                 "preset": case.preset, "seed": {}, "ok": False, "checks": [
                                     {"quantity": "pipeline ran", "golden": True, "measured": False,
                                      "tolerance": f"{type(error).__name__}: {error}", "ok": False}]})
            continue
        metrics = mesh_metrics(run.model.mesh)
        entry = _check_case(case, run, metrics, golden, update_golden, tell)
        result.cases.append(entry)
        if pictures:
            from pipeline.regress.report import model_picture

            images[case.name] = model_picture(run.model.mesh, run.volume, run.mask, f"{case.name}: {case.description}")
        meshes[case.name] = (run.model.mesh, run.volume.geometry)
        del run
    if REFERENCE_CASE in meshes:
        reference, reference_grid = meshes[REFERENCE_CASE]
        distances = {}
        for name, (checked, matched) in CONSISTENCY_CASES.items():
            if name in meshes:
                tell(f"consistency: {name} registered to {REFERENCE_CASE}")
                volume_reference = meshes[matched][0] if matched in meshes else None
                item = compare_acquisitions(reference, reference_grid, *meshes[name], checked=checked,
                                            volume_reference=volume_reference)
                distances[name] = item.pop("distances_after")
                result.consistency[name] = item
        if pictures and distances:
            from pipeline.regress.report import distance_picture

            images["consistency"] = distance_picture(distances, "skull surfaces after registration to the 1 mm skull")
    result.seconds = time.perf_counter() - clock
    return result, images


def _check_case(case: RegressCase, run: Any, metrics: dict[str, Any], folder: Path, update: bool,
                tell: Callable[[str], None]) -> dict[str, Any]:
    entry = {"case": case.name, "description": case.description, "source": case.series, "preset": case.preset,
             "seed": run.seed, "metrics": metrics, "stages": run.stages, "seconds": run.seconds,
             "truth": run.truth, "checks": []}
    if update:
        tell(f"{case.name}: writing the golden record")
        goldens.write_golden(folder, case.name, case.description, case.series, case.preset, metrics,
                             run.model.mesh, list(run.volume.geometry.spacing), run.seed)
    record = goldens.read_golden(folder, case.name)
    if record is None:
        entry["checks"].append({"quantity": "golden record", "golden": None, "measured": None,
                                "tolerance": f"{goldens.golden_path(folder, case.name)} must exist", "ok": False})
    else:
        tell(f"{case.name}: comparing with the golden result")
        entry["checks"] = goldens.compare(record, metrics, run.model.mesh, folder)
    entry["ok"] = all(check["ok"] for check in entry["checks"])
    return entry
