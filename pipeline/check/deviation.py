"""Signed surface deviation between a registered scan and the model, both ways, exactly.

Distances are to the exact closest point on the other surface's triangles
(:func:`trimesh.proximity.closest_point`); both signs come from the model's outward normals, so
a positive deviation always means the print has material outside the model (too big there) and a
negative one that it lacks material (too small). Samples are area-uniform, so a share of samples
is a share of surface area.

Model points the scan does not see ("uncovered": their closest scan point lies on the rim of a
hole of the scan, or off to the side rather than in front of or behind them, or on scan surface
running across the model's rather than alongside it, or on scan surface whose own nearest model
point is elsewhere: a wall seen across a hole) are left out of the figures; so are model points
in support contact areas when the plan knows them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from pipeline.report import Report

#: A closest scan point more than this angle off the model's normal line lies beside the point,
#: not over it: the scan has a hole there (degrees).
SIDEWAYS_DEG = 60.0
#: ... unless it is this close (noise tilts the scan's triangles), mm.
SIDEWAYS_MIN_MM = 0.1


@dataclass
class DeviationStats(Report):
    """Signed deviation of one direction, mm (positive: the print is outside the model).

    Attributes
    ----------
    direction : {"scan_to_model", "model_to_scan"}
    points : int
        Samples the figures are computed on.
    mean_mm, mean_abs_mm, sd_mm : float
        Mean signed deviation, mean absolute deviation, standard deviation of the signed one.
    p95_abs_mm, max_abs_mm : float
        95th percentile and maximum of the absolute deviation.
    max_outward_mm, max_inward_mm : float
        Largest deviation outward (positive) and inward (negative, as a negative number).
    share_beyond_tolerance : float
        Share of the measured surface whose absolute deviation exceeds the tolerance.
    area_beyond_tolerance_mm2 : float
    tolerance_mm : float
    """

    direction: str
    points: int
    mean_mm: float
    mean_abs_mm: float
    sd_mm: float
    p95_abs_mm: float
    max_abs_mm: float
    max_outward_mm: float
    max_inward_mm: float
    share_beyond_tolerance: float
    area_beyond_tolerance_mm2: float
    tolerance_mm: float

    @classmethod
    def of(cls, direction: str, signed: np.ndarray, area_mm2: float, tolerance_mm: float) -> "DeviationStats":
        """Figures of signed deviations sampled uniformly over a surface of ``area_mm2``.

        Parameters
        ----------
        direction : str
            Which way the deviations were measured (e.g. model to scan), stored as given.
        signed : numpy.ndarray of float
            ``(n,)`` signed deviations in mm (positive: the other surface lies outside).
        area_mm2 : float
            Area the samples cover, mm².
        tolerance_mm : float
            The allowed absolute deviation, mm.

        Returns
        -------
        DeviationStats
            Mean, mean absolute, SD, 95th percentile and maximum absolute, largest outward and inward
            deviations (mm), the share of samples beyond the tolerance and the area it stands for (mm²);
            every figure NaN (0 points) when ``signed`` is empty.
        """
        if signed.size == 0:
            nan = float("nan")
            return cls(direction, 0, nan, nan, nan, nan, nan, nan, nan, nan, nan, tolerance_mm)
        absolute = np.abs(signed)
        beyond = float(np.mean(absolute > tolerance_mm))
        return cls(direction=direction, points=int(signed.size), mean_mm=float(signed.mean()),
                   mean_abs_mm=float(absolute.mean()), sd_mm=float(signed.std()),
                   p95_abs_mm=float(np.percentile(absolute, 95)), max_abs_mm=float(absolute.max()),
                   max_outward_mm=float(max(signed.max(), 0.0)), max_inward_mm=float(min(signed.min(), 0.0)),
                   share_beyond_tolerance=beyond, area_beyond_tolerance_mm2=beyond * area_mm2,
                   tolerance_mm=tolerance_mm)


@dataclass
class ModelSamples:
    """Area-uniform samples of the model surface and their deviation to the scan.

    Attributes
    ----------
    points : (n, 3) ndarray
        Positions on the model, model frame mm.
    normals : (n, 3) ndarray
        Outward normals of their faces.
    signed_mm : (n,) ndarray
        Signed deviation to the scan (NaN where not measured).
    covered : (n,) ndarray of bool
        Seen by the scan: the closest scan point is not on the rim of a hole, lies within
        ``SIDEWAYS_DEG`` of the model's normal line on a scan face within ``SIDEWAYS_DEG`` of
        parallel to the model's, and the model point nearest to it is this one (all waived
        nearer than ``SIDEWAYS_MIN_MM``).
    excluded : (n,) ndarray of bool
        In a support contact area.
    area_per_point_mm2 : float
    """

    points: np.ndarray
    normals: np.ndarray
    signed_mm: np.ndarray
    covered: np.ndarray
    excluded: np.ndarray
    area_per_point_mm2: float

    @property
    def measured(self) -> np.ndarray:
        """The samples that count in the figures.

        Returns
        -------
        numpy.ndarray of bool
            ``(n,)``: samples seen by the scan and not in a support contact area.
        """
        return self.covered & ~self.excluded


def model_to_scan(model: trimesh.Trimesh, scan: trimesh.Trimesh, *, excluded_faces: np.ndarray | None = None,
                  count: int = 20_000, seed: int = 0) -> ModelSamples:
    """Deviation from area-uniform samples of the model to the (registered) scan.

    Parameters
    ----------
    model : trimesh.Trimesh
        The model mesh, mm.
    scan : trimesh.Trimesh
        The scan of the print, registered into the model's frame, mm.
    excluded_faces : numpy.ndarray of bool, optional
        Per model face, True in a support contact area.
    count : int
        Number of surface samples.
    seed : int
        Seed of the sampling's random generator (same seed, same samples).

    Returns
    -------
    ModelSamples
        The samples, their signed deviation in mm (positive where the scan lies outside the model),
        and which were seen and which excluded.
    """
    points, faces = trimesh.sample.sample_surface(model, count, seed=np.random.default_rng(seed))
    normals = np.asarray(model.face_normals)[faces]
    closest, distance, triangle = trimesh.proximity.closest_point(scan, points)
    sign = np.sign(np.einsum("ij,ij->i", closest - points, normals))
    signed = np.where(sign == 0, 1.0, sign) * distance
    limit = np.cos(np.radians(SIDEWAYS_DEG))
    along = np.abs(np.einsum("ij,ij->i", closest - points, normals)) / np.maximum(distance, 1e-12)
    # the scan's surface there must also run alongside the model's (not a wall seen across a crease)
    parallel = np.abs(np.einsum("ij,ij->i", np.asarray(scan.face_normals)[triangle], normals))
    unseen = ((along < limit) | (parallel < limit)) & (distance > SIDEWAYS_MIN_MM)
    # ... and the model point nearest to that scan point must be this one (not a wall across a hole)
    far = np.flatnonzero(~unseen & (distance > SIDEWAYS_MIN_MM))
    if far.size:
        back = trimesh.proximity.closest_point(model, closest[far])[0]
        unseen[far] = np.linalg.norm(back - points[far], axis=1) > 0.5 * distance[far] + SIDEWAYS_MIN_MM
    covered = ~(_on_rim(scan, closest, triangle) | unseen)
    excluded = np.zeros(len(points), bool) if excluded_faces is None else np.asarray(excluded_faces)[faces]
    return ModelSamples(points=np.asarray(points), normals=normals, signed_mm=signed, covered=covered,
                        excluded=excluded, area_per_point_mm2=float(model.area) / count)


def scan_to_model(scan: trimesh.Trimesh, model: trimesh.Trimesh, *, excluded_faces: np.ndarray | None = None,
                  count: int = 20_000, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deviation from area-uniform samples of the (registered) scan to the model.

    Parameters
    ----------
    scan : trimesh.Trimesh
        The scan of the print, registered into the model's frame, mm.
    model : trimesh.Trimesh
        The model mesh, mm.
    excluded_faces : numpy.ndarray of bool, optional
        Per model face, True in a support contact area.
    count : int
        Number of surface samples.
    seed : int
        Seed of the sampling's random generator.

    Returns
    -------
    points : (n, 3) ndarray
        Scan samples, model frame mm.
    signed_mm : (n,) ndarray
        Signed distance to the model (positive outside it).
    excluded : (n,) ndarray of bool
        Samples whose closest model point lies in a support contact area.
    """
    points, _ = trimesh.sample.sample_surface(scan, count, seed=np.random.default_rng(seed))
    closest, distance, triangle = trimesh.proximity.closest_point(model, points)
    sign = np.sign(np.einsum("ij,ij->i", points - closest, np.asarray(model.face_normals)[triangle]))
    signed = np.where(sign == 0, 1.0, sign) * distance
    excluded = np.zeros(len(points), bool) if excluded_faces is None else np.asarray(excluded_faces)[triangle]
    return np.asarray(points), signed, excluded


def _on_rim(mesh: trimesh.Trimesh, points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """True where a closest point lies on a boundary edge (the rim of a hole) of ``mesh``."""
    counts = np.bincount(mesh.edges_unique_inverse, minlength=len(mesh.edges_unique))
    boundary = (counts == 1)[mesh.faces_unique_edges[triangles]]  # edges v0v1, v1v2, v2v0
    if not boundary.any():
        return np.zeros(len(points), bool)
    corners = mesh.vertices[mesh.faces[triangles]]
    size = max(float(np.ptp(mesh.vertices, axis=0).max()), 1.0)
    rim = np.zeros(len(points), bool)
    for edge, (a, b) in enumerate(((0, 1), (1, 2), (2, 0))):
        start, stop = corners[:, a], corners[:, b]
        direction = stop - start
        t = np.clip(np.einsum("ij,ij->i", points - start, direction)
                    / np.maximum(np.einsum("ij,ij->i", direction, direction), 1e-30), 0, 1)
        gap = np.linalg.norm(points - (start + t[:, None] * direction), axis=1)
        rim |= boundary[:, edge] & (gap < 1e-7 * size)
    return rim
