"""Measure one pose: overhangs, shadow-aware supports, contact, height, fit, stability, cups.

All quantities are in the print frame (mm, mm2, mm3). The cost that ranks poses is a sum of
dimensionless terms, each a measured quantity divided by a power of the model's characteristic
length ``scale_mm`` (the radius of the sphere with the same surface area), so that the ranking
does not depend on the model's size or on how it was rotated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.prepare.arrays import MeshArrays
from pipeline.prepare.columns import cast_columns
from pipeline.prepare.cups import Cups, find_cups, solid_voxels
from pipeline.prepare.frames import min_area_yaw, rotation_about_z, rotation_to_down, unit
from pipeline.printers import PrinterProfile

#: Weights of the cost terms (dimensionless). Support volume and overhang area dominate:
#: they are what costs resin, hours and surface quality.
WEIGHTS = {
    "support_volume": 1.0,        # per scale^3 of space under overhangs
    "overhang_area": 0.5,         # per scale^2 of surface needing supports
    "landing_area": 0.25,         # per scale^2 of upward surface that supports stand on
    "important_contact": 3.0,     # extra per scale^2 of contact on important faces
    "height": 0.05,               # per scale of height (layers: time)
    "cups": 2.0,                  # per scale^3 of trapped volume (SLA)
    "instability": 0.5,           # per unit of slenderness above 3 (FDM)
    "small_base": 0.05,           # no flat face on the plate to stick to (FDM)
    "no_fit": 100.0,              # a pose that does not fit the build volume
}
LAYER_LIMITED = {"sla", "polyjet", "sls"}


@dataclass
class Context:
    """What every pose of one model is measured against."""

    profile: PrinterProfile
    scale_mm: float
    important: np.ndarray | None = None
    weights: dict[str, float] = field(default_factory=lambda: dict(WEIGHTS))
    #: How far a decimated copy's surface may lie from the model's, mm: the fit is checked with
    #: that much extra room, and faces that close to the plate count as resting on it.
    decimation_error_mm: float = 0.0

    @property
    def cos_critical(self) -> float:
        """Cosine of the printer's critical overhang angle.

        Returns
        -------
        float
            ``cos(critical_overhang_deg)`` (dimensionless); a face whose downward normal
            component exceeds it needs support.
        """
        return float(np.cos(np.radians(self.profile.critical_overhang_deg)))

    @property
    def plate_tolerance_mm(self) -> float:
        """Faces this close to the plate rest on it (half a layer, at least 1e-3 of the size, at
        least the decimation error).

        Returns
        -------
        float
            The largest of half the layer height, 1e-3 of ``scale_mm`` and
            ``decimation_error_mm``, mm.
        """
        return max(self.profile.layer_height_mm / 2, 1e-3 * self.scale_mm, self.decimation_error_mm)


@dataclass
class PoseMetrics:
    """Measured properties of one pose (print frame, before placement on the plate)."""

    down: np.ndarray
    rotation: np.ndarray
    minimum: np.ndarray
    size_mm: np.ndarray
    overhang_area_mm2: float
    support_volume_mm3: float
    landing_area_mm2: float
    important_contact_mm2: float
    support_contact_area_mm2: float
    height_mm: float
    fits: bool
    slenderness: float
    base_area_mm2: float
    cups: Cups | None = None
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def total_cost(self) -> float:
        """The pose's cost, the sum of its terms (dimensionless; lower is better).

        Returns
        -------
        float
            ``sum(cost.values())``; 0 before :func:`cost_terms` filled ``cost``.
        """
        return float(sum(self.cost.values()))


def pose_rotation(down: np.ndarray, hull_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation putting ``down`` at the plate, turned about z so the footprint's minimum-area
    rectangle is axis-aligned (longer side along x). Returns the rotation and the rectangle.

    Parameters
    ----------
    down : ndarray (3,)
        Model direction (LPS, any length but not zero) that faces the plate.
    hull_points : ndarray (H, 3)
        Convex hull vertices of the model, model coordinates in mm.

    Returns
    -------
    rotation : ndarray (3, 3)
        Model coordinates to the print frame; ``rotation @ unit(down) == (0, 0, -1)``.
    rectangle : ndarray (2,)
        Side lengths of the footprint's minimum-area rectangle (longer first), mm.
    """
    tilt = rotation_to_down(down)
    footprint = hull_points @ tilt[:2].T
    angle, rectangle = min_area_yaw(footprint)
    return rotation_about_z(angle) @ tilt, rectangle


def overhang_faces(normal_z: np.ndarray, face_bottom: np.ndarray, ctx: Context) -> np.ndarray:
    """Faces that need support: facing down more steeply than the critical angle, off the plate.

    Parameters
    ----------
    normal_z : ndarray (F,)
        Vertical component of each face's unit normal in the print frame (negative: facing
        down).
    face_bottom : ndarray (F,)
        Height of each face's lowest vertex above the plate, mm.
    ctx : Context
        The printer (critical angle, whether it needs supports) and the plate tolerance.

    Returns
    -------
    ndarray (F,) of bool
        True for faces with ``-normal_z > cos_critical`` higher than the plate tolerance; all
        False for a printer that needs no supports.
    """
    if not ctx.profile.needs_supports:
        return np.zeros(len(normal_z), dtype=bool)
    return (-normal_z > ctx.cos_critical) & (face_bottom > ctx.plate_tolerance_mm)


def fits_build_volume(size: np.ndarray, profile: PrinterProfile) -> tuple[bool, np.ndarray]:
    """Whether a footprint ``size[0] >= size[1]`` of height ``size[2]`` fits, and the margins
    (x, y, z) left on each side in the best of the two placements on the plate, mm.

    Parameters
    ----------
    size : ndarray (3,)
        The pose's extent (footprint longer side, shorter side, height), mm.
    profile : PrinterProfile
        The printer (build volume, clearance, support base).

    Returns
    -------
    fits : bool
        True when every margin is at least zero.
    margins : ndarray (3,)
        Room left on each side along the printer's x and y (the longer footprint side placed
        along the longer usable plate side), and above the model along z, mm; negative where it
        does not fit.
    """
    usable = usable_volume(profile)
    plate = np.sort(usable[:2])[::-1]
    margins = np.array([(plate[0] - size[0]) / 2, (plate[1] - size[1]) / 2, usable[2] - size[2]])
    if usable[0] < usable[1]:
        margins[:2] = margins[1::-1]
    return bool(np.all(margins >= 0)), margins


def usable_volume(profile: PrinterProfile) -> np.ndarray:
    """Build volume less the clearances and the support base, mm (x, y, z).

    Parameters
    ----------
    profile : PrinterProfile
        The printer (``build_volume_mm``, ``clearance_mm`` on each side of x and y,
        ``support_base_mm`` under the model).

    Returns
    -------
    ndarray (3,)
        Usable x, y and z, mm.
    """
    v = profile.build_volume_mm
    c = profile.clearance_mm
    return np.array([v.x - 2 * c, v.y - 2 * c, v.z - profile.support_base_mm])


def evaluate_pose(mesh: MeshArrays, hull_points: np.ndarray, down: np.ndarray, ctx: Context,
                  cell_mm: float, with_cups: bool = False) -> PoseMetrics:
    """Measure the model resting with the model direction ``down`` towards the plate.

    Parameters
    ----------
    mesh : MeshArrays
        The model (or a decimated copy of it), model coordinates in mm.
    hull_points : ndarray (H, 3)
        Convex hull vertices of the model (or of a decimated copy): they set the turn about
        the vertical axis (the footprint's minimum-area rectangle).
    down : ndarray (3,)
        Model direction that faces the plate.
    ctx : Context
        The printer, the model's scale and important faces, the cost weights and the
        decimation error.
    cell_mm : float
        Spacing of the vertical rays that measure the support volume, mm.
    with_cups : bool
        Also look for cups (SLA), on a voxel grid of ``cell_mm``.

    Returns
    -------
    PoseMetrics
        The pose's rotation, size and measured areas (mm2), support volume (mm3), height (mm),
        fit, slenderness (dimensionless), base area (mm2), cups (with ``with_cups``) and cost
        terms.
    """
    profile = ctx.profile
    rotation, _ = pose_rotation(down, hull_points)
    vertices = mesh.vertices @ rotation.T
    minimum = vertices.min(axis=0)
    size = vertices.max(axis=0) - minimum
    vertices -= minimum
    triangles = np.take(vertices, mesh.faces, axis=0)  # several times faster than vertices[faces]
    normal_z = mesh.normals @ rotation[2]
    z = triangles[:, :, 2]
    face_bottom = np.minimum(np.minimum(z[:, 0], z[:, 1]), z[:, 2])
    face_top = np.maximum(np.maximum(z[:, 0], z[:, 1]), z[:, 2])
    needs = overhang_faces(normal_z, face_bottom, ctx)
    # Flat faces lying on the plate: what an extruded first layer sticks to.
    base_area = float(mesh.areas[(face_top <= ctx.plate_tolerance_mm) & (normal_z < -0.9)].sum())

    overhang_area = float(mesh.areas[needs].sum())
    important = ctx.important if ctx.important is not None else np.zeros(len(needs), dtype=bool)
    important_contact = float(mesh.areas[needs & important].sum())
    support_volume = landing = 0.0
    cups = None
    if needs.any() or with_cups:
        columns = cast_columns(triangles, cell_mm)
        below_index, below_z = columns.below()
        gap = columns.z - below_z
        supported = needs[columns.face] & (gap > ctx.plate_tolerance_mm)
        cell_area = cell_mm**2
        support_volume = float(gap[supported].sum() * cell_area)
        on_part = supported & (below_index >= 0)
        landing_face = columns.face[below_index[on_part]]
        # A support foot on a sloped surface covers cell_area / cos(slope) of it.
        foot = cell_area / np.clip(np.abs(normal_z[landing_face]), 0.25, 1.0)
        landing = float(foot.sum())
        important_contact += float(foot[important[landing_face]].sum())
        if with_cups:
            entering = normal_z[columns.face] < 0
            solid = solid_voxels(columns, entering, float(size[2]))
            cups = find_cups(solid, cell_mm, columns.origin)

    fits, _ = fits_build_volume(size + 2 * ctx.decimation_error_mm, profile)
    centre = mesh.centre_of_mass @ rotation.T - minimum
    # Height of the centre of mass over the radius of the footprint rectangle: tall, narrow
    # poses wobble on FDM printers.
    slenderness = float(centre[2] / max(np.sqrt(size[0] * size[1] / np.pi), 1e-9))
    metrics = PoseMetrics(
        down=unit(down), rotation=rotation, minimum=minimum, size_mm=size,
        overhang_area_mm2=overhang_area, support_volume_mm3=support_volume,
        landing_area_mm2=landing, important_contact_mm2=important_contact,
        support_contact_area_mm2=overhang_area + landing, height_mm=float(size[2]),
        fits=fits, slenderness=slenderness, base_area_mm2=base_area, cups=cups,
    )
    metrics.cost = cost_terms(metrics, ctx)
    return metrics


def cost_terms(m: PoseMetrics, ctx: Context) -> dict[str, float]:
    """The dimensionless cost of a pose, term by term.

    Parameters
    ----------
    m : PoseMetrics
        The measured pose.
    ctx : Context
        The weights, the model's ``scale_mm`` each quantity is divided by (to the power of its
        dimension) and the printer's technology.

    Returns
    -------
    dict of str to float
        One value per key of :data:`WEIGHTS`; cups only count for printers that drain cups,
        instability and small base only for FDM, height at 0.3 of its weight outside
        :data:`LAYER_LIMITED` technologies.
    """
    w, s = ctx.weights, ctx.scale_mm
    technology = ctx.profile.technology
    terms = {
        "support_volume": w["support_volume"] * m.support_volume_mm3 / s**3,
        "overhang_area": w["overhang_area"] * m.overhang_area_mm2 / s**2,
        "landing_area": w["landing_area"] * m.landing_area_mm2 / s**2,
        "important_contact": w["important_contact"] * m.important_contact_mm2 / s**2,
        "height": w["height"] * m.height_mm / s * (1.0 if technology in LAYER_LIMITED else 0.3),
        "cups": 0.0,
        "instability": 0.0,
        "small_base": 0.0,
        "no_fit": 0.0 if m.fits else w["no_fit"],
    }
    if m.cups is not None and ctx.profile.drain_cups:
        terms["cups"] = w["cups"] * m.cups.volume_mm3 / s**3
    if technology == "fdm":
        terms["instability"] = w["instability"] * max(0.0, m.slenderness - 3.0)
        # Full credit from a base of 5 % of the model's scale squared (a 20 mm tube's rim).
        terms["small_base"] = w["small_base"] * max(0.0, 1.0 - m.base_area_mm2 / (0.05 * s**2))
    return terms
