"""``MeshReport``: what the mesh stage did and the quality figures of the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.report import Report


@dataclass
class ThinRegion:
    """A connected patch of surface where the wall is thinner than the printer allows.

    Attributes
    ----------
    centre_lps_mm : list of float
        Mean LPS position of the patch's vertices, mm.
    min_thickness_mm : float
        Thinnest wall measured in the patch, mm.
    vertices : int
        Surface vertices in the patch.
    """

    centre_lps_mm: list[float]
    min_thickness_mm: float
    vertices: int


@dataclass
class MeshReport(Report):
    """Quality figures of a mesh made by :func:`pipeline.mesh.mesh_mask`.

    Volumes are mm^3, areas mm^2, lengths mm, positions patient LPS mm, times seconds.
    ``distance_to_raw_*`` compare the final surface with the unsmoothed, undecimated
    marching-cubes surface of the mask (measured on up to ``options.quality_sample`` vertices).
    Wall thickness is measured along inward normals up to ``wall_probe_mm``;
    ``min_wall_thickness_mm`` is None when no wall is thinner than that.
    """

    structure: str
    label: int | None
    voxel_count: int
    voxel_spacing_mm: list[float]
    mask_volume_mm3: float
    crop_box_kji: list[list[int]]
    touches_volume_edge: list[str]
    # topology
    watertight: bool = False
    manifold: bool = False
    winding_consistent: bool = False
    outward_normals: bool = False
    self_intersecting_faces: int = 0
    shells: int = 0
    cavities: int = 0
    shells_removed: int = 0
    removed_volume_mm3: float = 0.0
    # measures
    volume_mm3: float = 0.0
    volume_vs_mask_percent: float = 0.0
    area_mm2: float = 0.0
    bounding_box_min_lps_mm: list[float] = field(default_factory=list)
    bounding_box_max_lps_mm: list[float] = field(default_factory=list)
    extent_mm: list[float] = field(default_factory=list)
    # smoothing and decimation
    raw_volume_mm3: float = 0.0
    smoothing_volume_change_percent: float = 0.0
    volume_correction_offset_mm: float = 0.0
    faces_raw: int = 0
    faces_final: int = 0
    vertices_final: int = 0
    distance_to_raw_mean_mm: float = 0.0
    distance_to_raw_p95_mm: float = 0.0
    distance_to_raw_max_mm: float = 0.0
    # printability
    min_wall_mm: float | None = None
    wall_probe_mm: float = 0.0
    min_wall_thickness_mm: float | None = None
    thin_regions: list[ThinRegion] = field(default_factory=list)
    thin_area_fraction: float = 0.0
    # what was done
    repaired: bool = False
    repair_actions: list[str] = field(default_factory=list)
    #: step -> the exact algorithm that ran (surface, shells, smoothing, volume_correction,
    #: decimation, repair); steps that did not run are absent
    algorithms: dict[str, str] = field(default_factory=dict)
    #: distribution -> version, for every library that shaped the mesh of this model
    libraries: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def printable(self) -> bool:
        """Closed, manifold, outward, free of self-intersections and of too-thin walls.

        Returns
        -------
        bool
        """
        return (self.watertight and self.manifold and self.winding_consistent and self.outward_normals
                and self.self_intersecting_faces == 0 and not self.thin_regions)
