"""``PrepareReport``: how :func:`pipeline.prepare.plan_print` reached its plan, in numbers."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.report import Report


@dataclass
class PrepareReport(Report):
    """What the print-preparation stage did: the meshes it searched on and what it measured.

    The plan itself (pose, supports, material, time) is the :class:`~pipeline.prepare.PrintPlan`;
    this report says how it was found. Lengths in mm, times in seconds.

    Attributes
    ----------
    printer, material : str
        Profile and material planned for.
    mesh_faces : int
        Faces of the model, on which the chosen pose is measured.
    rerank_faces, search_faces : int
        Faces of the copies the runners-up were ranked again on and the search ran on.
    poses_searched, poses_reranked : int
        Poses the search kept and poses measured again on the finer copy.
    wall_limit_mm : float
        The printer's minimum wall, mm.
    wall_points_sampled, thin_wall_points : int
        Surface points whose wall was measured, and those thinner than ``wall_limit_mm``.
    thinnest_wall_mm : float or None
        Thinnest wall measured (up to twice the limit), mm; None when every wall is thicker.
    unsupported_islands : int
        Lowest points off the plate the overhang supports miss.
    seconds : float
        Wall time of the stage, s.
    """

    printer: str
    material: str
    mesh_faces: int
    rerank_faces: int
    search_faces: int
    poses_searched: int
    poses_reranked: int
    wall_limit_mm: float
    wall_points_sampled: int = 0
    thin_wall_points: int = 0
    thinnest_wall_mm: float | None = None
    unsupported_islands: int = 0
    seconds: float = 0.0
