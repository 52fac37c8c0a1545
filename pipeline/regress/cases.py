"""The regression cases: which scan, which preset, which seed, and running one through the pipeline."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.errors import ConfigError
from pipeline.geometry import Mask, Volume
from pipeline.model import Model

#: The public scans, relative to the phantom folder (see its README.md).
DCM_QA_CT = "dcm_qa_ct/series"


@dataclass(frozen=True)
class RegressCase:
    """One model made from one scan.

    Parameters
    ----------
    name : str
        Identifier (file name of its golden result).
    description : str
        What it is, in words.
    series : str or None
        Folder of the DICOM series, relative to the phantom folder; None for the synthetic CTA.
    preset : str
        Segmentation preset.
    seed : {"auto_bone", "landmark:<name>"}
        How the include seed is chosen.
    slice_thickness_mm : float, optional
        Average the loaded slices along the slice axis to this thickness first (a thick-slice
        reconstruction of the same acquisition: the slice-thickness-matched reference of the
        cross-acquisition check).
    """

    name: str
    description: str
    series: str | None
    preset: str
    seed: str
    slice_thickness_mm: float | None = None


CASES: tuple[RegressCase, ...] = (
    RegressCase("skull_1mm", "head phantom skull, Philips Ingenuity, 1 mm axial, no tilt",
                f"{DCM_QA_CT}/Philips/S21570/S2020", "bone_ct", "auto_bone"),
    RegressCase("skull_5mm", "same acquisition, 5 mm reconstruction",
                f"{DCM_QA_CT}/Philips/S21570/S2010", "bone_ct", "auto_bone"),
    RegressCase("skull_tilt_minus18", "same phantom, 2.5 mm, gantry tilt -18.5 degrees",
                f"{DCM_QA_CT}/Philips/S21610/S2010", "bone_ct", "auto_bone"),
    RegressCase("skull_tilt_plus16", "same phantom, 2.5 mm, gantry tilt +16.5 degrees",
                f"{DCM_QA_CT}/Philips/S21610/S3010", "bone_ct", "auto_bone"),
    RegressCase("skull_1mm_as_2p5mm", "the 1 mm series averaged to 2.5 mm thick slices (the tilted series' "
                "thickness), untilted: the thickness-matched reference of the tilted skulls",
                f"{DCM_QA_CT}/Philips/S21570/S2020", "bone_ct", "auto_bone", slice_thickness_mm=2.5),
    RegressCase("ge_head_bone", "human head, GE HiSpeed, tilted, uneven slice spacing, files unsorted",
                f"{DCM_QA_CT}/GE", "bone_ct", "auto_bone"),
    RegressCase("synthetic_aorta", "synthetic CTA phantom (example_data.cta_phantom, scale 1), aorta",
                None, "aorta_cta", "landmark:ascending_aorta"),
)


def thicken_slices(volume: Volume, thickness_mm: float) -> Volume:
    """The volume as if reconstructed with ``thickness_mm`` thick slices, on the same grid.

    Each slice becomes the mean of the slab ``thickness_mm`` thick around it (a box along the
    slice axis, partial end voxels weighted by their overlap), as a thick reconstruction
    averages the thin ones. Slab by slab in float32; the result is int16 HU.

    Parameters
    ----------
    volume : Volume
        The CT volume (int16 HU, indexed ``(k, j, i)``; ``k`` the slice axis).
    thickness_mm : float
        The wanted slice thickness in mm.

    Returns
    -------
    Volume
        A new int16 HU volume on the same geometry, its provenance noting the averaging; the input
        itself when ``thickness_mm`` is at most one slice step.
    """
    width = thickness_mm / volume.geometry.spacing[0]
    if width <= 1.0:
        return volume
    half = int(np.ceil((width - 1.0) / 2.0))
    kernel = np.ones(2 * half + 1)
    kernel[[0, -1]] = (width - (2 * half - 1)) / 2.0
    kernel /= kernel.sum()
    from scipy.ndimage import convolve1d

    thick = np.empty_like(volume.array)
    for start in range(0, volume.array.shape[1], 64):
        rows = slice(start, start + 64)
        averaged = convolve1d(volume.array[:, rows].astype(np.float32), kernel.astype(np.float32), axis=0, mode="nearest")
        thick[:, rows] = np.clip(np.rint(averaged), -32768, 32767)
    provenance = dict(volume.provenance, derived=f"slices averaged to {thickness_mm:g} mm thickness")
    return Volume(thick, volume.geometry, provenance)


def case_names() -> list[str]:
    """The regression cases' names.

    Returns
    -------
    list of str
        The names of :data:`CASES`, in their order.
    """
    return [case.name for case in CASES]


def select_cases(only: str | list[str] | None) -> list[RegressCase]:
    """The cases named in ``only`` (comma-separated or a list), all of them when empty.

    Parameters
    ----------
    only : str or list of str or None
        Case names, comma-separated or a list (blank names ignored); None or empty for every case.

    Returns
    -------
    list of RegressCase
        The selected cases in the order of :data:`CASES`.

    Raises
    ------
    ConfigError
        If a name is not a case (exit code 4).
    """
    if not only:
        return list(CASES)
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    unknown = [n for n in names if n not in case_names()]
    if unknown:
        raise ConfigError(f"unknown regression case(s) {', '.join(unknown)}",
                          hint=f"choose from {', '.join(case_names())}")
    return [case for case in CASES if case.name in names]


@dataclass
class CaseRun:
    """A case run through load, segment and mesh, with what each stage reported."""

    case: RegressCase
    volume: Volume
    mask: Mask
    model: Model
    seed: dict[str, Any]
    stages: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    truth: dict[str, Any] | None = None


def run_regress_case(case: RegressCase, phantoms: Path, *, workdir: Path | None = None,
                     progress: Callable[[str], None] | None = None) -> CaseRun:
    """Run one case through load -> segment -> mesh (the library functions the CLI wraps).

    Parameters
    ----------
    case : RegressCase
        The case to run.
    phantoms : Path
        The phantom folder (``$ANATOMODEL_PHANTOMS``) holding ``case.series``.
    workdir : Path, optional
        Where the scratch folder (the synthetic phantom's DICOM) is made; default the system's temp.
    progress : callable, optional
        ``progress(message)`` gets a line per stage.

    Returns
    -------
    CaseRun
        The volume, mask, model and seed, each stage's report, stage times in s, and (synthetic case)
        its Dice against the analytic aorta and the truth volume in mL.

    Raises
    ------
    ConfigError
        If the case's series is not in the phantom folder (exit code 4).
    ValueError
        If the case's seed rule is unknown.
    """
    from pipeline.load import load_series
    from pipeline.mesh import mesh_mask
    from pipeline.presets import load_preset
    from pipeline.segment import segment_volume

    tell = progress or (lambda message: None)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    truth_labels = None
    with tempfile.TemporaryDirectory(prefix="anatomodel_regress_", dir=workdir) as scratch:
        if case.series is None:
            from example_data.cta_phantom import make_phantom, write_dicom_series

            tell(f"{case.name}: writing the synthetic CTA phantom as DICOM")
            phantom = make_phantom()
            write_dicom_series(phantom, Path(scratch), with_truth=False)
            source, truth_labels, landmarks = Path(scratch), phantom.labels, phantom.landmarks
            del phantom
            seconds["phantom"] = time.perf_counter() - clock
            clock = time.perf_counter()
        else:
            source, landmarks = phantoms / case.series, {}
            if not source.is_dir():
                raise ConfigError(f"phantom series {source} not found",
                                  hint="give --phantoms DIR or set ANATOMODEL_PHANTOMS")
        tell(f"{case.name}: load")
        volume, load_report = load_series(source)
    if case.slice_thickness_mm:
        volume = thicken_slices(volume, case.slice_thickness_mm)
    seconds["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    preset = load_preset(case.preset)
    if case.seed == "auto_bone":
        from pipeline.regress.seeds import bone_seed

        seed_index, seed = bone_seed(volume, preset.threshold.lower_hu)
        seeds = {"seeds_index": [seed_index]}
    elif case.seed.startswith("landmark:"):
        name = case.seed.split(":", 1)[1]
        point = landmarks[name]
        seed = {"method": f"the phantom's landmark '{name}'", "seed_lps_mm": [round(v, 2) for v in point]}
        seeds = {"seeds_lps_mm": [point]}
    else:
        raise ValueError(f"unknown seed rule {case.seed!r}")
    seconds["seed"] = time.perf_counter() - clock

    clock = time.perf_counter()
    tell(f"{case.name}: segment ({case.preset})")
    mask, segment_report = segment_volume(volume, preset, **seeds)
    seconds["segment"] = time.perf_counter() - clock

    clock = time.perf_counter()
    tell(f"{case.name}: mesh")
    model, mesh_report = mesh_mask(mask)
    seconds["mesh"] = time.perf_counter() - clock

    truth = None
    if truth_labels is not None:
        found, expected = mask.array > 0, truth_labels == 1
        overlap = int(np.count_nonzero(found & expected))
        truth = {"dice_vs_analytic_aorta": 2.0 * overlap / (int(found.sum()) + int(expected.sum())),
                 "truth_aorta_ml": float(expected.sum()) * mask.geometry.voxel_volume_mm3 / 1000.0}
    stages = {
        "load": {"shape_kji": list(volume.geometry.shape), "spacing_kji_mm": [round(s, 4) for s in volume.geometry.spacing],
                 "tilt_corrected": load_report.tilt_corrected, "warnings": load_report.warnings},
        "segment": {"volume_ml": segment_report.volume_ml, "components": segment_report.components,
                    "window": segment_report.window, "warnings": segment_report.warnings},
        "mesh": {"faces": len(model.mesh.faces), "warnings": list(getattr(mesh_report, "warnings", []))},
    }
    return CaseRun(case, volume, mask, model, seed, stages, seconds, truth)
