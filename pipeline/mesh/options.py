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
    surface : {"auto", "vtk", "skimage"}
        Marching-cubes implementation: VTK's flying edges (about 8x faster on a clinical mask,
        same triangles) when VTK is installed ("auto"), else scikit-image's Lewiner cubes.
    smoothing : {"windowed_sinc", "taubin", "none"}
        Surface smoothing that removes the marching-cubes staircase without shrinking: a
        windowed-sinc low-pass filter (Taubin, Zhang and Golub 1996, as in 3D Slicer) or Taubin's
        lambda/mu filter.
    smoothing_iterations : int
        Windowed-sinc terms, or Taubin passes (each lambda or mu step counts as one); one sparse
        matrix product each.
    smoothing_passband : float
        Pass-band frequency ``k_PB``: the windowed-sinc cut-off in (0, 2), or Taubin's
        ``1/lambda - 1/mu`` (which sets mu). Smaller smooths more; 0.01 suits the windowed sinc,
        0.1 Taubin.
    smoothing_lambda : float
        Taubin's positive (shrinking) step, 0 < lambda < 1.
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

    surface: Literal["auto", "vtk", "skimage"] = "auto"
    smoothing: Literal["windowed_sinc", "taubin", "none"] = "windowed_sinc"
    smoothing_iterations: int = 30
    smoothing_passband: float = 0.01
    smoothing_lambda: float = 0.5
    preserve_volume: bool = True
    target_faces: int | None = 500_000
    max_decimation_error_mm: float | None = None
    min_shell_volume_mm3: float = 10.0
    repair: bool = True
    wall_probe_mm: float = 2.0
    quality_sample: int = 10_000

    def __post_init__(self) -> None:
        if self.surface not in ("auto", "vtk", "skimage"):
            raise ValueError(f"surface must be 'auto', 'vtk' or 'skimage', got {self.surface!r}")
        if self.smoothing not in ("windowed_sinc", "taubin", "none"):
            raise ValueError(f"smoothing must be 'windowed_sinc', 'taubin' or 'none', got {self.smoothing!r}")
        if self.smoothing_iterations < 0:
            raise ValueError(f"smoothing_iterations must be >= 0, got {self.smoothing_iterations}")
        if not 0.0 < self.smoothing_lambda < 1.0:
            raise ValueError(f"smoothing_lambda must lie in (0, 1), got {self.smoothing_lambda}")
        if self.smoothing == "taubin" and not 0.0 <= self.smoothing_passband < 1.0 / self.smoothing_lambda - 1.0:
            raise ValueError(f"Taubin's smoothing_passband must lie in [0, 1/lambda - 1), got {self.smoothing_passband}")
        if self.smoothing == "windowed_sinc" and self.smoothing_iterations == 1:
            raise ValueError("the windowed-sinc filter needs at least 2 smoothing_iterations (or 0 for none)")
        if self.smoothing == "windowed_sinc" and not 0.0 < self.smoothing_passband < 2.0:
            raise ValueError(f"the windowed-sinc smoothing_passband must lie in (0, 2), got {self.smoothing_passband}")
        if self.target_faces is not None and self.target_faces < 4:
            raise ValueError(f"target_faces must be at least 4 (a tetrahedron), got {self.target_faces}")
        if self.max_decimation_error_mm is not None and not self.max_decimation_error_mm > 0:
            raise ValueError(f"max_decimation_error_mm must be positive, got {self.max_decimation_error_mm}")
        if not self.min_shell_volume_mm3 >= 0:  # NaN fails too
            raise ValueError(f"min_shell_volume_mm3 must be >= 0, got {self.min_shell_volume_mm3}")
        if not self.wall_probe_mm > 0:
            raise ValueError(f"wall_probe_mm must be positive, got {self.wall_probe_mm}")
        if self.quality_sample < 1:
            raise ValueError(f"quality_sample must be positive, got {self.quality_sample}")

    @property
    def smoothing_mu(self) -> float:
        """Taubin's negative step magnitude, from lambda and the pass band.

        Returns
        -------
        float
            ``mu`` with ``1/lambda - 1/mu`` equal to the pass band (Taubin 1995).
        """
        return 1.0 / (1.0 / self.smoothing_lambda - self.smoothing_passband)
