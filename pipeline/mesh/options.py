"""``MeshOptions``: the parameters of the mesh stage, with defaults for a 0.3-1 mm CTA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.report import Report


@dataclass(frozen=True)
class MeshOptions(Report):
    """Parameters of :func:`pipeline.mesh.mesh_mask`.

    Parameters
    ----------
    smoothing : {"taubin", "none"}
        Surface smoothing. Taubin's lambda/mu filter removes the marching-cubes staircase without
        the shrinkage of plain Laplacian smoothing.
    smoothing_iterations : int
        Number of Taubin passes (each lambda or mu step counts as one pass).
    smoothing_lambda : float
        Taubin's positive (shrinking) step, 0 < lambda < 1.
    smoothing_passband : float
        Taubin's pass-band frequency ``k_PB = 1/lambda - 1/mu``; the negative step ``mu`` follows
        from it. Smaller keeps less detail.
    preserve_volume : bool
        After smoothing, move the surface along its normals by a uniform distance so the enclosed
        volume equals the mask's voxel volume (corrects the residual shrinkage).
    target_faces : int or None
        Face budget: decimate (quadric edge collapse) to at most this many triangles. None keeps
        every triangle.
    max_decimation_error_mm : float or None
        If set, decimation is backed off (up to three halvings of the reduction) until the 95th
        percentile of the distance from the decimated surface to the undecimated one is at most
        this, mm. The face budget still applies first.
    min_shell_volume_mm3 : float
        Closed pieces (and enclosed cavities) smaller than this volume are removed, mm^3.
    repair : bool
        If the surface is not a single-sheeted closed, consistently wound manifold free of
        self-intersections after smoothing and decimation, repair it with MeshFix.
    wall_probe_mm : float
        Walls are measured along inward rays up to this length (at least 1.5 times the printer's
        minimum wall when one is given); thicker walls are not measured, mm.
    quality_sample : int
        Surface-distance statistics use at most this many vertices (a fixed-seed sample).
    """

    smoothing: Literal["taubin", "none"] = "taubin"
    smoothing_iterations: int = 30
    smoothing_lambda: float = 0.5
    smoothing_passband: float = 0.1
    preserve_volume: bool = True
    target_faces: int | None = 500_000
    max_decimation_error_mm: float | None = None
    min_shell_volume_mm3: float = 10.0
    repair: bool = True
    wall_probe_mm: float = 3.0
    quality_sample: int = 20_000

    def __post_init__(self) -> None:
        if self.smoothing not in ("taubin", "none"):
            raise ValueError(f"smoothing must be 'taubin' or 'none', got {self.smoothing!r}")
        if self.smoothing_iterations < 0:
            raise ValueError(f"smoothing_iterations must be >= 0, got {self.smoothing_iterations}")
        if not 0.0 < self.smoothing_lambda < 1.0:
            raise ValueError(f"smoothing_lambda must lie in (0, 1), got {self.smoothing_lambda}")
        if not 0.0 <= self.smoothing_passband < 1.0 / self.smoothing_lambda - 1.0:
            raise ValueError(f"smoothing_passband must lie in [0, 1/lambda - 1), got {self.smoothing_passband}")
        if self.target_faces is not None and self.target_faces < 4:
            raise ValueError(f"target_faces must be at least 4 (a tetrahedron), got {self.target_faces}")
        if self.max_decimation_error_mm is not None and not self.max_decimation_error_mm > 0:
            raise ValueError(f"max_decimation_error_mm must be positive, got {self.max_decimation_error_mm}")
        if self.min_shell_volume_mm3 < 0:
            raise ValueError(f"min_shell_volume_mm3 must be >= 0, got {self.min_shell_volume_mm3}")
        if not self.wall_probe_mm > 0:
            raise ValueError(f"wall_probe_mm must be positive, got {self.wall_probe_mm}")
        if self.quality_sample < 1:
            raise ValueError(f"quality_sample must be positive, got {self.quality_sample}")

    @property
    def smoothing_mu(self) -> float:
        """Taubin's negative step magnitude, from lambda and the pass band."""
        return 1.0 / (1.0 / self.smoothing_lambda - self.smoothing_passband)
