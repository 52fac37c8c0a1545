"""Registration of a scan to the model that was printed, without landmarks.

Coarse: the principal axes of the two surfaces (area-uniform samples) are matched under each of
the 24 proper rotations that map one set of axes onto the other (every symmetric flip and, for
near-round shapes, every axis order), each candidate refined by a few ICP steps; the best goes
on. Fine: trimmed point-to-plane ICP against a dense sample of the model (a k-d tree), then a few
steps against the exact closest points of the model's triangles
(:func:`trimesh.proximity.closest_point`). Each step solves a similarity (rotation, translation
and one uniform scale) with :func:`trimesh.registration.procrustes`. Points farther than three
robust standard deviations are left out of each step, so a deformed region or scanner debris
does not pull the fit. Open3D is not used: this trimmed ICP on trimesh and SciPy meets the
10 s budget of ``benchmarks/bench_check.py`` and its accuracy targets, and Open3D (a large
binary dependency) has not been measured against it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from pipeline.check.policy import RegistrationLimits
from pipeline.errors import RegistrationError, ScanError
from pipeline.report import Report

#: Scale (reference size / scan size) of the principal axes that is taken as a units mistake.
UNIT_SCALE_LIMITS = (0.5, 2.0)
#: A registered print whose scale differs from 1 by more than this is not the model at 1:1.
MAX_PLAUSIBLE_SCALE_ERROR = 0.2
#: Samples of the coarse search: model points in its k-d tree, scan points moved.
COARSE_REFERENCE = 5_000
COARSE_SCAN = 1_000
_HINT = "is it the scan of another object, or of a broken print? Check the scan and the model folder"
_UNITS = {25.4: "inches", 10.0: "centimetres", 1000.0: "metres", 1 / 25.4: "thousandths of an inch",
          0.001: "micrometres"}


@dataclass
class Registration(Report):
    """How the scan was moved onto the model, and how well it fits.

    Attributes
    ----------
    matrix : list of list of float
        4x4 similarity taking scan coordinates to the model's frame (mm).
    scale : float
        Size of the print relative to the model (0.99: the print is 1 % small).
    rotation_deg : float
        Angle of the rotation part, degrees.
    translation_mm : list of float
        Translation part, mm.
    overlap_share : float
        Share of the scan's surface (area-uniform sample) within ``overlap_mm`` of the model.
    overlap_mm : float
    residual_rms_mm : float
        RMS distance of the overlapping scan points to the model, mm.
    inlier_share : float
        Share of the scan points the last ICP step kept (the rest deviate by more than three
        robust standard deviations).
    coarse_scale : float
        Scale from the principal axes alone (before ICP).
    candidates : int
        Coarse orientations tried.
    iterations : int
        ICP steps of the chosen candidate.
    seconds : float
    """

    matrix: list[list[float]]
    scale: float
    rotation_deg: float
    translation_mm: list[float]
    overlap_share: float
    overlap_mm: float
    residual_rms_mm: float
    inlier_share: float
    coarse_scale: float
    candidates: int
    iterations: int
    seconds: float


def register(scan: trimesh.Trimesh, reference: trimesh.Trimesh, *,
             limits: RegistrationLimits | None = None, estimate_scale: bool = True,
             scan_points: int = 8_000, reference_points: int = 50_000, exact_points: int = 5_000,
             seed: int = 0) -> Registration:
    """Register a scan of a print to the model it was printed from.

    Parameters
    ----------
    scan : trimesh.Trimesh
        The scan, any pose, mm; may be open (holes).
    reference : trimesh.Trimesh
        The model, closed, outward normals, mm.
    limits : RegistrationLimits, optional
        When the result counts as converged (defaults: 2 mm, 70 %, 0.5 mm).
    estimate_scale : bool
        Fit one uniform scale as well (a shrunk resin print); False fits a rigid motion.
    scan_points, reference_points, exact_points : int
        Area-uniform samples: of the scan for ICP, of the model for its k-d tree, and of the
        scan for the exact steps and the convergence figures.
    seed : int
        Seed of the samples (the result is deterministic for a seed).

    Returns
    -------
    Registration

    Raises
    ------
    ScanError
        The scan's size is far from the model's (inches, metres) or the fit scale is implausible.
    RegistrationError
        The fit did not converge: too little of the scan overlaps the model, or the residual
        is too large (another object, a broken print).
    """
    started = time.perf_counter()
    limits = limits or RegistrationLimits()
    rng = np.random.default_rng(seed)
    points = _sample(scan, scan_points, rng)
    targets, normals = _sample(reference, reference_points, rng, with_normals=True)
    tree = cKDTree(targets)
    spacing = float(np.sqrt(reference.area / len(targets)))

    scan_centre, scan_axes, scan_spread = _principal(points)
    ref_centre, ref_axes, ref_spread = _principal(targets)
    coarse_scale = float(np.sqrt(ref_spread / scan_spread)) if scan_spread > 0 else np.inf
    _check_units(coarse_scale)
    if not estimate_scale:
        coarse_scale = 1.0

    # Coarse search on small samples (far-off candidates make k-d queries slow on a dense tree).
    coarse_tree, coarse_targets, coarse_normals = tree, targets, normals
    if len(targets) > COARSE_REFERENCE:
        pick = rng.choice(len(targets), COARSE_REFERENCE, replace=False)
        coarse_targets, coarse_normals = targets[pick], normals[pick]
        coarse_tree = cKDTree(coarse_targets)
    coarse_spacing = float(np.sqrt(reference.area / len(coarse_targets)))
    few = points[rng.choice(len(points), min(COARSE_SCAN, len(points)), replace=False)]
    candidates = []
    for rotation in _axis_rotations(ref_axes, scan_axes):
        initial = _similarity(coarse_scale * rotation, ref_centre - coarse_scale * rotation @ scan_centre)
        matrix, _, cost, _ = _icp(few, initial, coarse_tree, coarse_targets, coarse_normals, coarse_spacing,
                                  estimate_scale, 12)
        candidates.append((cost, matrix))
    candidates.sort(key=lambda item: item[0])
    refined = [_icp(few, initial, coarse_tree, coarse_targets, coarse_normals, coarse_spacing, estimate_scale, 40)
               for _, initial in candidates[:3]]
    matrix = min(refined, key=lambda item: item[2])[0]
    # Another object shows already here; its fine ICP would only be slow (far k-d queries).
    near, _ = coarse_tree.query(trimesh.transform_points(few, matrix),
                                distance_upper_bound=limits.overlap_mm + coarse_spacing)
    coarse_overlap = float(np.mean(np.isfinite(near)))
    if coarse_overlap < limits.min_overlap / 2:
        raise RegistrationError(
            f"the scan does not fit the model: at best {coarse_overlap:.0%} of the scan lies within about "
            f"{limits.overlap_mm:g} mm of the model in any orientation ({limits.min_overlap:.0%} needed)", hint=_HINT)
    matrix, steps, _, kept = _icp(points, matrix, tree, targets, normals, spacing, estimate_scale, 30,
                                  reach=2 * limits.overlap_mm)
    exact = points[rng.choice(len(points), min(exact_points, len(points)), replace=False)]
    matrix, exact_steps, kept, distances = _exact_icp(exact, matrix, reference, estimate_scale, limits)
    overlap, residual = _fit(distances, limits)
    _converged(overlap, residual, limits)
    linear = matrix[:3, :3]
    fit_scale = float(np.cbrt(np.linalg.det(linear)))
    rotation = linear / fit_scale
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1))))
    print_scale = 1.0 / fit_scale
    if abs(print_scale - 1.0) > MAX_PLAUSIBLE_SCALE_ERROR:
        raise ScanError(f"the registered scan is {print_scale:.3f} times the model's size: not this model at 1:1",
                        hint="check the scan's units and that the model was printed unscaled")
    return Registration(
        matrix=matrix.tolist(), scale=print_scale, rotation_deg=angle, translation_mm=matrix[:3, 3].tolist(),
        overlap_share=overlap, overlap_mm=limits.overlap_mm, residual_rms_mm=residual, inlier_share=kept,
        coarse_scale=1.0 / coarse_scale, candidates=len(candidates), iterations=steps + exact_steps,
        seconds=time.perf_counter() - started)


def _check_units(coarse_scale: float) -> None:
    low, high = UNIT_SCALE_LIMITS
    if low <= coarse_scale <= high:
        return
    if not np.isfinite(coarse_scale):
        raise ScanError("the scan's points all coincide: it has no extent", hint="export the scan again")
    guess = min(_UNITS, key=lambda factor: abs(np.log(coarse_scale / factor)))
    likely = (f"; it looks like {_UNITS[guess]} (factor {guess:g})"
              if abs(np.log(coarse_scale / guess)) < np.log(1.15) else "")
    raise ScanError(
        f"the scan is {1 / coarse_scale:.4g} times the model's size (a scale far from 1){likely}",
        hint="export the scan in millimetres, or check that it is the scan of this model")


def _sample(mesh: trimesh.Trimesh, count: int, rng: np.random.Generator, with_normals: bool = False):
    points, faces = trimesh.sample.sample_surface(mesh, count, seed=rng)
    points = np.asarray(points, dtype=np.float64)
    return (points, np.asarray(mesh.face_normals)[faces]) if with_normals else points


def _principal(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre, principal axes (columns, by decreasing variance) and total variance."""
    centre = points.mean(axis=0)
    covariance = np.cov((points - centre).T)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    return centre, vectors[:, order], float(values.sum())


def _axis_rotations(ref_axes: np.ndarray, scan_axes: np.ndarray) -> list[np.ndarray]:
    """The 24 proper rotations taking the scan's axes onto the model's, up to order and sign."""
    rotations = []
    for order in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            swap = np.zeros((3, 3))
            swap[list(range(3)), list(order)] = signs
            rotation = ref_axes @ swap @ scan_axes.T
            if np.linalg.det(rotation) > 0:
                rotations.append(rotation)
    return rotations


def _similarity(linear: np.ndarray, translation: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = linear, translation
    return matrix


def _trim(residuals: np.ndarray, floor: float) -> np.ndarray:
    """Pairs within three robust standard deviations (1.4826 x the median absolute residual)."""
    cut = max(3.0 * 1.4826 * float(np.median(residuals)), floor)
    return residuals <= cut


def _icp(points, matrix, tree, targets, normals, spacing, estimate_scale, iterations, reach=np.inf):
    """Trimmed point-to-plane ICP on the k-d tree: returns matrix, steps, robust cost, kept share.

    Points with no model sample within ``reach`` mm are left out (and the queries stay fast).
    """
    kept = 1.0
    for step in range(1, iterations + 1):
        moved = trimesh.transform_points(points, matrix)
        distance, index = tree.query(moved, distance_upper_bound=reach)
        found = np.isfinite(distance)
        moved, distance, index = moved[found], distance[found], index[found]
        plane = np.einsum("ij,ij->i", moved - targets[index], normals[index])
        feet = moved - plane[:, None] * normals[index]
        residual = np.where(distance > 3 * spacing, distance, np.abs(plane))
        inliers = _trim(residual, 0.01)
        if inliers.sum() < 10:
            break
        kept = float(inliers.sum() / len(points))
        update = trimesh.registration.procrustes(moved[inliers], feet[inliers], reflection=False,
                                                 scale=estimate_scale, return_cost=False)
        matrix = update @ matrix
        if _small(update, moved):
            break
    moved = trimesh.transform_points(points, matrix)
    distance, index = tree.query(moved, distance_upper_bound=reach)
    found = np.isfinite(distance)
    moved, distance, index = moved[found], distance[found], index[found]
    if not found.any():
        return matrix, step, np.inf, 0.0
    residual = np.abs(np.einsum("ij,ij->i", moved - targets[index], normals[index]))
    residual = np.where(distance > 3 * spacing, distance, residual)
    share = float(np.sum(residual < 3 * spacing)) / len(points)
    return matrix, step, float(np.median(residual)) / max(share, 1e-3), kept


def _exact_icp(points, matrix, reference, estimate_scale, limits: RegistrationLimits, iterations: int = 6):
    """Trimmed ICP against the exact closest points on the model's triangles.

    Returns the matrix, the steps, the kept share and the exact distances of ``points`` after
    the last step. Gives up at once (RegistrationError) when the first step's fit is far from
    converging, so another object costs one exact query, not six.
    """
    kept = 1.0
    moved = trimesh.transform_points(points, matrix)
    closest, distance, _ = trimesh.proximity.closest_point(reference, moved)
    overlap, residual = _fit(distance, limits)
    if overlap < limits.min_overlap - 0.1 or residual > 2 * limits.max_residual_mm:
        _converged(overlap, residual, limits)
    for step in range(1, iterations + 1):
        inliers = _trim(distance, 0.01)
        kept = float(inliers.mean())
        update = trimesh.registration.procrustes(moved[inliers], closest[inliers], reflection=False,
                                                 scale=estimate_scale, return_cost=False)
        matrix = update @ matrix
        moved = trimesh.transform_points(points, matrix)
        closest, distance, _ = trimesh.proximity.closest_point(reference, moved)
        if _small(update, moved):
            break
    return matrix, step, kept, distance


def _fit(distances: np.ndarray, limits: RegistrationLimits) -> tuple[float, float]:
    """Overlap share and RMS residual of the overlapping points."""
    overlapping = distances <= limits.overlap_mm
    overlap = float(overlapping.mean())
    residual = float(np.sqrt(np.mean(distances[overlapping] ** 2))) if overlapping.any() else np.inf
    return overlap, residual


def _converged(overlap: float, residual: float, limits: RegistrationLimits) -> None:
    if overlap < limits.min_overlap or residual > limits.max_residual_mm:
        raise RegistrationError(
            f"the scan does not fit the model: {overlap:.0%} of the scan lies within {limits.overlap_mm:g} mm of "
            f"the registered model ({limits.min_overlap:.0%} needed), RMS {residual:.2f} mm "
            f"(at most {limits.max_residual_mm:g} mm)", hint=_HINT)


def _small(update: np.ndarray, points: np.ndarray) -> bool:
    """True when the update moves no point by more than a micrometre."""
    radius = float(np.max(np.linalg.norm(points - points.mean(axis=0), axis=1)))
    shift = np.abs(update - np.eye(4))
    return float(shift[:3, :3].max() * radius + shift[:3, 3].max()) < 1e-3
