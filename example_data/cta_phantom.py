"""A family of deterministic synthetic CT angiography phantoms of the thoracic aorta, with analytic truth.

The anatomy is built from signed distance functions in patient LPS millimetres (x to the
patient's left, y posterior, z superior), so every structure has a known shape and volume.
Every kind (``KINDS``) shares the base anatomy and adds one pathology seen on real CTA:

* ascending aorta (vertical tube, radius 14 mm) rising from an aortic root that joins the
  **left-ventricle blood pool** (ellipsoid) through a narrower annulus (radius 9 mm); contrast
  (about 350 HU) fills both, as it does in a real CTA;
* the **arch** (half torus, tube radius tapering 14 -> 12 mm) with three branch vessels leaving
  its top (brachiocephalic 6 mm, left common carotid 4.5 mm, left subclavian 5 mm), which run
  out of the top of the field of view;
* the **descending aorta** (radius 12 mm), running out of the bottom of the field of view;
* an **aortic wall** (2 mm, soft tissue) in a sleeve of **periaortic fat** (3 mm, -100 HU),
  so the outer wall a surgeon sizes a graft on is visible, as in a real mediastinum;
* a **vertebral column** 3.8 mm from the descending aorta: bodies with a cortical shell
  (1000 HU, 1.5 mm) around cancellous bone (250 HU), separated by discs (90 HU);
* myocardium, mediastinal soft tissue, a subcutaneous fat layer, both lungs and air;
* partial volume (a linear ramp across one voxel at every boundary), scanner blur
  (Gaussian, sigma 0.6 mm) and noise (Gaussian, sigma 20 HU), from a seeded generator.

Kinds (the figures each follows are given with its parameters below):

``aneurysm`` (default)
    fusiform aneurysm of the descending aorta (lumen radius 12 -> 22 -> 12 mm over 50 mm) with
    an eccentric mural thrombus (up to 10 mm thick) inside the outer wall.
``dissection``
    Stanford type B: from just below the left subclavian artery down the whole descending
    aorta (about 15 cm in the field of view), an intimal flap (1 mm) splits a dilated aorta
    (radius 16 mm) into a true lumen compressed to a 3-5 mm crescent and a false lumen at
    230 HU (150-300) thrombosed (35 HU) over 7 cm; an entry tear (radius 5 mm) below the
    flap's top and a re-entry tear low down.
``coarctation``
    isthmus narrowed to 40 % of the aortic diameter over about 5 mm, post-stenotic dilation.
``touching``
    pulmonary trunk, superior vena cava and left atrium (contrast-filled, 300 HU), each tangent
    to the aortic lumen: joined by a one-voxel partial-volume bridge.
``open_valve``
    the left ventricle joined through an open aortic valve (annulus radius 11.5 mm, 0.82 of
    the root).
``bolus``
    aortic HU falling 150 HU from the ascending (430 HU) to the descending aorta (280 HU);
    undiluted contrast (1400 HU) in the SVC with streak artefacts (+-120 HU) around it.
``calcified``
    calcified plaques (1000 HU, radius 2 mm) in the wall, protruding 2 mm into the lumen.
``spine`` / ``spine_osteoporotic``
    the descending aorta 2 mm in front of a vertebral body with a 1 mm cortex of 900 HU (reads
    500-700 HU once blurred) around cancellous bone of 250 HU; the osteoporotic variant's cortex
    is 350 HU (reads under 400 HU) around 180 HU.

The ground truth samples the same functions at voxel centres: ``labels`` (1 contrast-filled
aortic lumen with its branches, 2 left-ventricle blood pool, 3 vertebral bone, 4 thrombus,
5 calcified plaque, 6 pulmonary trunk, 7 SVC, 8 left atrium), ``lumen`` (label 1) and ``wall``
(everything inside the aorta's outer wall: lumen, thrombus, flap, plaque and the wall itself).

Run ``anatomodel phantom OUT_DIR --kind KIND`` (or ``python -m example_data.cta_phantom
OUT_DIR``) to write it as a CT Image Storage DICOM series, one file a slice, files not in
slice order, with the truth in ``OUT_DIR/truth/``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from pipeline.geometry import Geometry, Volume, write_image

#: Field of view in LPS mm: [min, max) along z (slices), y (rows), x (columns).
FIELD_OF_VIEW_MM = ((-100.0, 100.0), (-90.0, 90.0), (-90.0, 90.0))
#: Matrix at ``shape_scale=1``: 1 mm voxels.
BASE_SHAPE = (200, 180, 180)

LABELS = {1: "aorta", 2: "left_ventricle", 3: "vertebrae", 4: "thrombus", 5: "calcified_plaque",
          6: "pulmonary_trunk", 7: "superior_vena_cava", 8: "left_atrium"}

#: Arterial-phase HU. Lumen 350 HU: diagnostic CTA opacifies the aorta to 250-550 HU
#: (Bae, Radiology 2010;256:32-61). Thrombus 35 HU and wall 40 HU: unenhanced soft tissue
#: (mural thrombus 20-60 HU). Fat -100 HU, lung -850 HU. Cortical bone 1000 HU, cancellous
#: 250 HU (vertebral cancellous bone 150-300 HU in adults).
HU = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "soft_tissue": 40.0,
    "myocardium": 90.0,
    "contrast": 350.0,
    "disc": 90.0,
    "cortical_bone": 1000.0,
    "cancellous_bone": 250.0,
    "thrombus": 35.0,
    "false_lumen": 230.0,       # dissection: slower flow, 150-300 HU
    "neighbour_contrast": 300.0,  # pulmonary trunk, SVC, left atrium in the arterial phase
    "dense_svc": 1400.0,        # undiluted contrast arriving in the SVC (often > 1000 HU)
    "plaque": 1000.0,           # calcified plaque > 700 HU
}

NOISE_SIGMA_HU = 20.0
BLUR_SIGMA_MM = 0.6
CORTEX_MM = 1.5

# --- the anatomy, LPS mm ------------------------------------------------------------------
ASCENDING_XY = np.array([-8.0, -22.0])  # x, y of the ascending aorta's axis
DESCENDING_XY = np.array([22.3, 21.7])
ARCH_BASE_Z = 50.0
ROOT_Z = 0.0
ASCENDING_RADIUS = 14.0  # ascending aorta 28 mm diameter (normal < 40 mm)
DESCENDING_RADIUS = 12.0  # descending thoracic aorta 24 mm diameter (normal 20-28 mm)
ANNULUS_RADIUS = 9.0
ANNULUS_END = np.array([2.0, -28.0, -14.0])  # inside the left ventricle
LV_CENTRE = np.array([12.0, -30.0, -38.0])
LV_SEMI_AXES = np.array([24.0, 17.0, 28.0])
MYOCARDIUM_MM = 10.0
ANEURYSM_Z = (-70.0, -20.0)
ANEURYSM_MAX_RADIUS = 22.0
#: Mural thrombus of the aneurysm: its outer wall bulges up to this much further laterally (mm).
THROMBUS_MAX_MM = 10.0
WALL_MM = 2.0  # aortic wall 1.5-2.5 mm on CT
PERIAORTIC_FAT_MM = 3.0
SPINE_XY = np.array([0.0, 45.0])
VERTEBRA_RADIUS = 16.0
VERTEBRA_HEIGHT = 22.0
DISC_HEIGHT = 6.0
BODY_SEMI_AXES = (86.0, 78.0)
FAT_MM = 7.0
LUNG_CENTRES_XY = (np.array([-58.0, 5.0]), np.array([58.0, 5.0]))
LUNG_SEMI_AXES = (24.0, 48.0)
LUNG_Z = (-60.0, 200.0)
#: Branches leave the arch at these angles (pi: ascending side, 0: descending side).
BRANCHES = {
    "brachiocephalic": (0.70 * np.pi, 6.0),
    "left_common_carotid": (0.52 * np.pi, 4.5),
    "left_subclavian": (0.33 * np.pi, 5.0),
}

# dissection (Stanford type B; true lumen compressed to 3-5 mm, false lumen 150-300 HU)
DISSECTION_RADIUS = 16.0  # a dissected descending aorta dilates (32 mm diameter)
FLAP_TOP_Z = 45.0  # the flap starts just below the left subclavian artery
FLAP_MM = 1.0  # intimal flap 1 mm
TRUE_LUMEN_MM = (3.0, 5.0)  # the compressed true lumen's width varies between these
FALSE_LUMEN_THROMBUS_Z = (-55.0, 15.0)  # a 7 cm thrombosed stretch of the false lumen
ENTRY_TEAR = (32.0, 5.0)  # z and radius (mm) of the entry tear
REENTRY_TEAR = (-75.0, 4.0)
# coarctation: isthmus narrowed to 40 % of the diameter (a significant coarctation is < 50 %)
# (below z 38, where the arch's end cap stops covering the descending aorta's top)
COARCTATION_Z, COARCTATION_HALF_LENGTH, COARCTATION_FRACTION = 30.0, 5.0, 0.4
POST_STENOTIC = (5.0, 14.0, 4.0)  # centre z, half length, added radius (mm)
# open aortic valve: annulus 23 mm diameter against a 28 mm root
OPEN_ANNULUS_RADIUS = 11.5
# bolus: ascending 430 HU falling 150 HU along the aorta
BOLUS_HU = (430.0, 280.0)
SVC_STREAKS = (120.0, 12, 20.0)  # amplitude HU, streaks around the SVC, decay length mm
# calcified plaques: centre z or arch angle, direction around the axis (rad); radius 2.5 mm
PLAQUE_RADIUS_MM = 2.0
PLAQUE_DEPTH_MM = 2.0  # how far a plaque reaches into the lumen (and out through the 2 mm wall)
PLAQUES = (("descending", 30.0, 0.5), ("descending", 0.0, 2.5), ("descending", -40.0, 4.0),
           ("descending", -80.0, 1.0), ("arch", 0.6 * np.pi, -1.0), ("ascending", 20.0, 3.5))
# spine kinds: descending aorta 2 mm in front of a vertebral body, cortex 1 mm
SPINE_GAP_MM = 2.0
SPINE_CORTEX_MM = 1.0

KINDS = ("aneurysm", "dissection", "coarctation", "touching", "open_valve", "bolus", "calcified",
         "spine", "spine_osteoporotic")


@dataclass(frozen=True)
class Anatomy:
    """What changes between kinds: annulus, spine, bone HU."""

    kind: str
    annulus_radius: float
    spine_xy: tuple[float, float]
    cortex_mm: float
    cortical_hu: float
    cancellous_hu: float


def anatomy(kind: str) -> Anatomy:
    """The parameters of ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    spine, cortex, cortical, cancellous = tuple(SPINE_XY), CORTEX_MM, HU["cortical_bone"], HU["cancellous_bone"]
    if kind.startswith("spine"):
        towards = (SPINE_XY - DESCENDING_XY) / np.linalg.norm(SPINE_XY - DESCENDING_XY)
        spine = tuple(DESCENDING_XY + towards * (DESCENDING_RADIUS + SPINE_GAP_MM + VERTEBRA_RADIUS))
        cortex = SPINE_CORTEX_MM
        cortical, cancellous = (900.0, 250.0) if kind == "spine" else (350.0, 180.0)
    return Anatomy(kind, OPEN_ANNULUS_RADIUS if kind == "open_valve" else ANNULUS_RADIUS,
                   (float(spine[0]), float(spine[1])), cortex, cortical, cancellous)


def _arch_frame() -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Centre, radius and in-plane unit vectors (towards descending, normal) of the arch."""
    start = np.array([*ASCENDING_XY, ARCH_BASE_Z])
    end = np.array([*DESCENDING_XY, ARCH_BASE_Z])
    centre = (start + end) / 2
    radius = float(np.linalg.norm(end - start) / 2)
    towards_descending = (end - start) / np.linalg.norm(end - start)
    normal = np.cross(towards_descending, [0.0, 0.0, 1.0])
    return centre, radius, towards_descending, normal


def arch_point(angle: float) -> np.ndarray:
    """LPS point of the arch centre line; angle pi at the ascending end, 0 at the descending."""
    centre, radius, towards_descending, _ = _arch_frame()
    return centre + radius * (np.cos(angle) * towards_descending + np.sin(angle) * np.array([0.0, 0.0, 1.0]))


def aneurysm_growth(z: np.ndarray) -> np.ndarray:
    """Radius added to the descending aorta at height z (mm): sin^2 bump over the aneurysm."""
    low, high = ANEURYSM_Z
    phase = np.clip((z - low) / (high - low), 0.0, 1.0)
    return (ANEURYSM_MAX_RADIUS - DESCENDING_RADIUS) * np.sin(np.pi * phase) ** 2


def _bump(z, centre: float, half_length: float):
    """cos^2 bump: 1 at ``centre``, 0 beyond ``half_length`` (mm)."""
    phase = np.clip((z - centre) / half_length, -1.0, 1.0)
    return np.cos(0.5 * np.pi * phase) ** 2


def _away_from_spine() -> np.ndarray:
    direction = DESCENDING_XY - SPINE_XY
    return direction / np.linalg.norm(direction)


def descending_profile(z, kind: str):
    """Centre x, centre y and radius (mm) of the descending aorta's lumen (outer lumen) at z."""
    cx, cy = float(DESCENDING_XY[0]), float(DESCENDING_XY[1])
    if kind == "aneurysm":
        growth = aneurysm_growth(z)
        away_x, away_y = _away_from_spine().tolist()
        return cx + away_x * growth, cy + away_y * growth, DESCENDING_RADIUS + growth
    if kind == "coarctation":
        narrowing = (1 - COARCTATION_FRACTION) * DESCENDING_RADIUS * _bump(z, COARCTATION_Z, COARCTATION_HALF_LENGTH)
        dilation = POST_STENOTIC[2] * _bump(z, POST_STENOTIC[0], POST_STENOTIC[1])
        return cx, cy, DESCENDING_RADIUS - narrowing + dilation
    if kind == "dissection":
        ramp = np.clip((ARCH_BASE_Z - z) / 20.0, 0.0, 1.0)
        return cx, cy, DESCENDING_RADIUS + (DISSECTION_RADIUS - DESCENDING_RADIUS) * (3 * ramp**2 - 2 * ramp**3)
    return cx, cy, DESCENDING_RADIUS + 0.0 * z


# --- signed distance functions (negative inside), on arrays of LPS coordinates -------------
def _segment_sdf(x, y, z, start, end, radius):
    """Capsule around the segment start-end."""
    (sx, sy, sz), (ex, ey, ez) = (map(float, start), map(float, end))
    ax, ay, az = ex - sx, ey - sy, ez - sz
    t = np.clip(((x - sx) * ax + (y - sy) * ay + (z - sz) * az) / (ax * ax + ay * ay + az * az), 0.0, 1.0)
    return np.sqrt((x - sx - t * ax) ** 2 + (y - sy - t * ay) ** 2 + (z - sz - t * az) ** 2) - float(radius)


def _sphere_sdf(x, y, z, centre, radius):
    cx, cy, cz = map(float, centre)
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - float(radius)


def _vertical_tube_sdf(x, y, z, cx, cy, radius, z_low, z_high):
    """Capped vertical cylinder with (possibly z-dependent) centre and radius."""
    cx, cy, radius = (v if isinstance(v, np.ndarray) else float(v) for v in (cx, cy, radius))
    z_low, z_high = (v if isinstance(v, np.ndarray) else float(v) for v in (z_low, z_high))
    radial = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - radius
    axial = np.maximum(z_low - z, z - z_high)
    outside = np.sqrt(np.maximum(radial, 0) ** 2 + np.maximum(axial, 0) ** 2)
    return outside + np.minimum(np.maximum(radial, axial), 0)


def _arch_sdf(x, y, z):
    centre, radius, towards_descending, normal = (np.asarray(v, float).tolist() for v in _arch_frame())
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    a = dx * towards_descending[0] + dy * towards_descending[1]
    c = dx * normal[0] + dy * normal[1]
    above = np.maximum(dz, 0.0)
    angle = np.arctan2(above, a)
    tube_radius = DESCENDING_RADIUS + (ASCENDING_RADIUS - DESCENDING_RADIUS) / np.pi * angle
    in_plane = np.sqrt(a**2 + above**2) - radius
    distance = np.sqrt(in_plane**2 + c**2 + np.minimum(dz, 0.0) ** 2)
    return distance - tube_radius


def _descending_sdf(x, y, z, kind: str):
    cx, cy, radius = descending_profile(z, kind)
    return _vertical_tube_sdf(x, y, z, cx, cy, radius, -1e4, ARCH_BASE_Z)


def _vessel_sdf(x, y, z, kind: str, with_annulus: bool = True):
    """Union of root, ascending, arch, descending and branches (the outer lumen)."""
    sdf = np.minimum(_vertical_tube_sdf(x, y, z, *ASCENDING_XY, ASCENDING_RADIUS, ROOT_Z, ARCH_BASE_Z),
                     np.minimum(_descending_sdf(x, y, z, kind), _arch_sdf(x, y, z)))
    if with_annulus:
        sdf = np.minimum(sdf, _segment_sdf(x, y, z, [*ASCENDING_XY, ROOT_Z + 2.0], ANNULUS_END,
                                           anatomy(kind).annulus_radius))
    for angle, radius in BRANCHES.values():
        start = arch_point(angle)
        sdf = np.minimum(sdf, _segment_sdf(x, y, z, start, [start[0], start[1], 1e4], radius))
    return sdf


def aorta_sdf(x, y, z, kind: str = "aneurysm"):
    """The aorta's blood space: root, annulus, ascending, arch, branches, descending (all lumina)."""
    return _vessel_sdf(x, y, z, kind)


def _dissection_coordinates(x, y, z):
    """Distance along the flap's normal from the axis (t, mm), the flap's plane offset and R."""
    cx, cy, radius = descending_profile(z, "dissection")
    u = _away_from_spine()  # the true lumen lies on the anterior side
    t = (x - cx) * float(u[0]) + (y - cy) * float(u[1])
    low, high = TRUE_LUMEN_MM
    width = 0.5 * (low + high) + 0.5 * (high - low) * np.cos(2 * np.pi * z / 50.0)
    return t, radius - width, radius


def _tear_centre(z: float) -> np.ndarray:
    _, plane, _ = _dissection_coordinates(np.float64(0), np.float64(0), np.float64(z))
    u = _away_from_spine()
    return np.array([*(DESCENDING_XY + u * (float(plane) - FLAP_MM / 2)), z])


def flap_sdf(x, y, z):
    """Intimal flap with its cap over the false lumen's top, less the entry and re-entry tears."""
    t, plane, _ = _dissection_coordinates(x, y, z)
    outer = _descending_sdf(x, y, z, "dissection")
    band = np.maximum(np.abs(t - (plane - FLAP_MM / 2)) - FLAP_MM / 2, z - FLAP_TOP_Z)
    cap = np.maximum(t - plane, np.abs(z - (FLAP_TOP_Z + FLAP_MM / 2)) - FLAP_MM / 2)
    sdf = np.maximum(outer, np.minimum(band, cap))
    for tear_z, radius in (ENTRY_TEAR, REENTRY_TEAR):
        sdf = np.maximum(sdf, -_sphere_sdf(x, y, z, _tear_centre(tear_z), radius))
    return sdf


def false_lumen_sdf(x, y, z):
    t, plane, _ = _dissection_coordinates(x, y, z)
    return np.maximum(_descending_sdf(x, y, z, "dissection"), np.maximum(t - (plane - FLAP_MM), z - FLAP_TOP_Z))


def _aneurysm_outer_sdf(x, y, z):
    """Outer lumen of the aneurysm grown laterally (+x) by the mural thrombus."""
    cx, cy, radius = descending_profile(z, "aneurysm")
    low, high = ANEURYSM_Z
    extra = THROMBUS_MAX_MM / 2 * np.sin(np.pi * np.clip((z - low) / (high - low), 0.0, 1.0)) ** 2
    return _vertical_tube_sdf(x, y, z, cx + extra, cy, radius + extra, -1e4, ARCH_BASE_Z)


def thrombus_sdf(x, y, z, kind: str):
    """Thrombus inside the outer wall: the aneurysm's mural thrombus, the thrombosed false lumen."""
    if kind == "aneurysm":
        return np.maximum(_aneurysm_outer_sdf(x, y, z), -aorta_sdf(x, y, z, kind))
    if kind == "dissection":
        low, high = FALSE_LUMEN_THROMBUS_Z
        return np.maximum(false_lumen_sdf(x, y, z), np.maximum(low - z, z - high))
    return np.full(np.broadcast(x, y, z).shape, 1e4, np.float32)


def outer_wall_sdf(x, y, z, kind: str):
    """The aorta's outer wall: lumen, thrombus and the wall itself (the root's part inside the
    left ventricle is no wall: :func:`make_phantom` takes the blood pool out of the truth)."""
    inner = _vessel_sdf(x, y, z, kind)
    if kind == "aneurysm":
        inner = np.minimum(inner, _aneurysm_outer_sdf(x, y, z))
    return inner - WALL_MM


def _plaque_centres(kind: str) -> list[np.ndarray]:
    """Centres of the calcified plaques, on the lumen's surface pushed out so they reach PLAQUE_DEPTH_MM in."""
    if kind != "calcified":
        return []
    out = PLAQUE_RADIUS_MM - PLAQUE_DEPTH_MM
    centres = []
    for where, position, direction in PLAQUES:
        around = np.array([np.cos(direction), np.sin(direction), 0.0])
        if where == "descending":
            radius = DESCENDING_RADIUS
            centres.append(np.array([*DESCENDING_XY, position]) + around * (radius + out))
        elif where == "ascending":
            centres.append(np.array([*ASCENDING_XY, position]) + around * (ASCENDING_RADIUS + out))
        else:
            centre, _, _, _ = _arch_frame()
            point = arch_point(position)
            outward = (point - centre) / np.linalg.norm(point - centre)
            radius = DESCENDING_RADIUS + (ASCENDING_RADIUS - DESCENDING_RADIUS) / np.pi * position
            centres.append(point + outward * (radius + out))
    return centres


def plaque_sdf(x, y, z, kind: str):
    sdf = np.full(np.broadcast(x, y, z).shape, 1e4, np.float32)
    for centre in _plaque_centres(kind):
        sdf = np.minimum(sdf, _sphere_sdf(x, y, z, centre, PLAQUE_RADIUS_MM))
    return sdf


# Neighbours of the ``touching`` kind, each tangent to the aortic lumen.
PULMONARY_TRUNK = (np.array([-8.0 + 27.0, -22.0]), 13.0, (5.0, 45.0))  # axis xy, radius, z range
SVC_TOUCHING = (np.array([-8.0 - 23.0, -22.0]), 9.0, (-10.0, 1e4))
LEFT_ATRIUM_Z, LEFT_ATRIUM_SEMI_AXES = 5.0, np.array([20.0, 10.0, 14.0])
#: the bolus kind's SVC: 2 mm of wall from the ascending aorta, not touching its lumen
SVC_BOLUS = (np.array([-30.0, -10.0]), 9.0, (-10.0, 1e4))


def _ellipsoid_sdf(x, y, z, centre, semi):
    (cx, cy, cz), (ax, ay, az) = (np.asarray(centre, float).tolist(), np.asarray(semi, float).tolist())
    return (np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2) - 1.0) * min(ax, ay, az)


def _left_atrium_centre() -> np.ndarray:
    """The left atrium, placed behind the ascending aorta so that the two are tangent."""
    # along y, the ellipsoid's front sits semi[1] before its centre: tangent to the tube at x = -8
    semi = LEFT_ATRIUM_SEMI_AXES
    return np.array([ASCENDING_XY[0], ASCENDING_XY[1] + ASCENDING_RADIUS + semi[1], LEFT_ATRIUM_Z])


def neighbour_sdfs(kind: str) -> dict[int, Callable]:
    """Label -> sdf of the contrast-filled neighbours of ``kind`` (touching, bolus)."""
    if kind == "touching":
        (pt_xy, pt_r, pt_z), (svc_xy, svc_r, svc_z) = PULMONARY_TRUNK, SVC_TOUCHING
        semi = LEFT_ATRIUM_SEMI_AXES
        return {6: lambda x, y, z: _vertical_tube_sdf(x, y, z, *pt_xy, pt_r, *pt_z),
                7: lambda x, y, z: _vertical_tube_sdf(x, y, z, *svc_xy, svc_r, *svc_z),
                8: lambda x, y, z: _ellipsoid_sdf(x, y, z, _left_atrium_centre(), semi)}
    if kind == "bolus":
        svc_xy, svc_r, svc_z = SVC_BOLUS
        return {7: lambda x, y, z: _vertical_tube_sdf(x, y, z, *svc_xy, svc_r, *svc_z)}
    return {}


def left_ventricle_sdf(x, y, z, grow: float = 0.0):
    """Ellipsoid blood pool (approximate distance), optionally grown by ``grow`` mm."""
    semi = (LV_SEMI_AXES + grow).tolist()
    centre = LV_CENTRE.tolist()
    scaled = np.sqrt(((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
                     + ((z - centre[2]) / semi[2]) ** 2)
    return (scaled - 1.0) * min(semi)


def vertebrae_sdf(x, y, z, shrink: float = 0.0, kind: str = "aneurysm"):
    """Stack of cylindrical vertebral bodies separated by discs, optionally shrunk by ``shrink``."""
    period = VERTEBRA_HEIGHT + DISC_HEIGHT
    local = np.mod(z + 100.0, period) - DISC_HEIGHT / 2 - VERTEBRA_HEIGHT / 2
    return _vertical_tube_sdf(x, y, local, *anatomy(kind).spine_xy, VERTEBRA_RADIUS - shrink,
                              -VERTEBRA_HEIGHT / 2 + shrink, VERTEBRA_HEIGHT / 2 - shrink)


def _ellipse_sdf(x, y, centre, semi):
    (cx, cy), (ax, ay) = (np.asarray(centre, float).tolist(), np.asarray(semi, float).tolist())
    scaled = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return (scaled - 1.0) * min(ax, ay)


def bolus_hu(x, y, z):
    """Contrast HU along the aorta for the ``bolus`` kind: 430 HU at the root, 280 HU at the bottom."""
    centre, radius, towards, _ = (np.asarray(v, float).tolist() if isinstance(v, np.ndarray) else v
                                  for v in _arch_frame())
    a = (x - centre[0]) * towards[0] + (y - centre[1]) * towards[1]
    angle = np.arctan2(np.maximum(z - ARCH_BASE_Z, 0.0), a)
    ascending = 0.2 * np.clip((z - ROOT_Z) / (ARCH_BASE_Z - ROOT_Z), 0.0, 1.0)
    arch = 0.2 + 0.2 * (np.pi - angle) / np.pi
    descending = 0.4 + 0.6 * np.clip((ARCH_BASE_Z - z) / 150.0, 0.0, 1.0)
    fraction = np.where(z >= ARCH_BASE_Z, arch, np.where(a < 0, ascending, descending))
    return BOLUS_HU[0] - (BOLUS_HU[0] - BOLUS_HU[1]) * fraction


# --- the phantom ---------------------------------------------------------------------------
@dataclass
class Phantom:
    """The synthetic CTA: HU, truth labels and outer wall, grid and named landmarks (LPS mm)."""

    hu: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    landmarks: dict[str, tuple[float, float, float]]
    seed: int
    label_names: dict[int, str] = field(default_factory=lambda: dict(LABELS))
    kind: str = "aneurysm"
    wall: np.ndarray | None = None  # bool: inside the aorta's outer wall

    @property
    def lumen(self) -> np.ndarray:
        """Truth of the contrast-filled aortic lumen (label 1)."""
        return self.labels == 1

    def volume(self) -> Volume:
        """The phantom as a loaded :class:`Volume` (with the DICOM series' identifiers)."""
        return Volume(self.hu, self.geometry, dict(series_identifiers(self)))


def phantom_geometry(shape_scale: float = 1.0, shape: tuple[int, int, int] | None = None,
                     spacing_mm: float | None = None, field_of_view_mm=None) -> Geometry:
    """Grid of the phantom: the field of view sampled by ``shape``, ``spacing_mm`` or BASE_SHAPE*scale.

    ``field_of_view_mm`` ((z0, z1), (y0, y1), (x0, x1)) in LPS mm crops the default
    :data:`FIELD_OF_VIEW_MM` (fine voxels on a short stretch of the aorta).
    """
    fov = FIELD_OF_VIEW_MM if field_of_view_mm is None else tuple(tuple(map(float, r)) for r in field_of_view_mm)
    if len(fov) != 3 or any(len(r) != 2 or not r[1] > r[0] for r in fov):
        raise ValueError(f"field_of_view_mm must be ((z0, z1), (y0, y1), (x0, x1)) with z0 < z1 ..., got {fov}")
    if spacing_mm is not None:
        if not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
        shape = tuple(max(int(round((high - low) / spacing_mm)), 8) for low, high in fov)
        fov = tuple((low, low + n * spacing_mm) for (low, _), n in zip(fov, shape))
    elif shape is None:
        if not shape_scale > 0:
            raise ValueError(f"shape_scale must be positive, got {shape_scale}")
        base = [n * (high - low) / (h0 - l0) for n, (low, high), (l0, h0) in zip(BASE_SHAPE, fov, FIELD_OF_VIEW_MM)]
        shape = tuple(max(int(round(n * shape_scale)), 8) for n in base)
    spacing = tuple((high - low) / n for (low, high), n in zip(fov, shape))
    origin_kji = [low + s / 2 for (low, _), s in zip(fov, spacing)]
    # Array axes k, j, i run along z, y, x: the LPS origin is (x, y, z).
    direction = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))
    return Geometry(shape, spacing, (origin_kji[2], origin_kji[1], origin_kji[0]), direction)


def landmarks(kind: str = "aneurysm") -> dict[str, tuple[float, float, float]]:
    """Named points (LPS mm) inside each structure, for seeds and checks."""
    spine = np.asarray(anatomy(kind).spine_xy)
    points = {
        "ascending_aorta": (*ASCENDING_XY, 25.0),
        "aortic_root": (*ASCENDING_XY, ROOT_Z + 4.0),
        "annulus": tuple((np.array([*ASCENDING_XY, ROOT_Z]) + ANNULUS_END) / 2),
        "arch": tuple(arch_point(np.pi / 2)),
        "descending_aorta": (*DESCENDING_XY, 20.0),
        "left_ventricle": tuple(LV_CENTRE),
        "vertebra": (*spine, -100.0 + DISC_HEIGHT + VERTEBRA_HEIGHT / 2 + 4 * (VERTEBRA_HEIGHT + DISC_HEIGHT)),
        "distal_descending_aorta": (*DESCENDING_XY, -90.0),
    }
    u = _away_from_spine()
    if kind == "aneurysm":
        low, high = ANEURYSM_Z
        mid = (low + high) / 2
        away = u * aneurysm_growth(np.array(mid))
        points["aneurysm"] = (DESCENDING_XY[0] + away[0], DESCENDING_XY[1] + away[1], mid)
        cx, cy, radius = descending_profile(np.array(mid), kind)
        points["thrombus"] = (float(cx + radius + THROMBUS_MAX_MM / 2), float(cy), mid)
        points["distal_descending_aorta"] = (*DESCENDING_XY, -90.0)
    if kind == "dissection":
        z = -20.0
        _, plane, radius = _dissection_coordinates(np.float64(0), np.float64(0), np.float64(z))
        points["true_lumen"] = (*(DESCENDING_XY + u * 0.5 * (float(plane) + float(radius))), z)
        points["thrombus"] = (*(DESCENDING_XY - u * 5.0), z)
        points["false_lumen"] = (*(DESCENDING_XY - u * 5.0), 25.0)
        points["distal_descending_aorta"] = (*(DESCENDING_XY - u * 5.0), -90.0)
    if kind == "coarctation":
        points["isthmus"] = (*DESCENDING_XY, COARCTATION_Z)
    for label, name in ((6, "pulmonary_trunk"), (7, "superior_vena_cava"), (8, "left_atrium")):
        if label in neighbour_sdfs(kind):
            if label == 8:
                points[name] = tuple(_left_atrium_centre())
            else:
                xy = {6: PULMONARY_TRUNK[0], 7: (SVC_TOUCHING if kind == "touching" else SVC_BOLUS)[0]}[label]
                points[name] = (*xy, 30.0)
    for number, centre in enumerate(_plaque_centres(kind)):
        points[f"plaque_{number}"] = tuple(centre)
    for name, (angle, _) in BRANCHES.items():
        start = arch_point(angle)
        points[name] = (start[0], start[1], 92.0)
    return {name: tuple(float(v) for v in point) for name, point in points.items()}


def analytic_volumes_mm3() -> dict[str, float]:
    """Exact volumes of the analytic pieces of the ``aneurysm`` kind's label map (mm^3)."""
    low, high = ANEURYSM_Z
    growth = ANEURYSM_MAX_RADIUS - DESCENDING_RADIUS
    r0 = DESCENDING_RADIUS
    # integral of pi (r0 + d sin^2)^2 over one period: mean sin^2 = 1/2, mean sin^4 = 3/8
    aneurysm = np.pi * (high - low) * (r0**2 + r0 * growth + 3.0 / 8.0 * growth**2)
    return {
        "aneurysm_segment": float(aneurysm),  # descending aorta for z in ANEURYSM_Z
        "descending_tube_-10_40": float(np.pi * r0**2 * 50.0),  # z in [-10, 40]
        "ascending_tube_10_40": float(np.pi * ASCENDING_RADIUS**2 * 30.0),  # z in [10, 40]
        "left_ventricle": float(4.0 / 3.0 * np.pi * np.prod(LV_SEMI_AXES)),
    }


def _paint(image: np.ndarray, sdf: np.ndarray, hu, ramp_mm: float) -> None:
    """Blend ``hu`` (a number or an array) into ``image`` by the voxel fraction inside ``sdf``."""
    fraction = np.clip(0.5 - sdf / ramp_mm, 0.0, 1.0)
    image += fraction * (np.asarray(hu, np.float32) - image)


@dataclass(frozen=True)
class _Structure:
    name: str
    sdf: Callable
    hu: float | Callable  # a number, or a function of (x, y, z)
    label: int | None = None  # truth label set where sdf < 0 (later structures win)
    wall: bool = False  # the outer-wall truth is where this sdf < 0


@functools.lru_cache(maxsize=None)
def _structures(kind: str) -> tuple[_Structure, ...]:
    """Structures painted in order (later ones cover earlier ones)."""
    bone = anatomy(kind)

    def lungs(x, y, z):
        in_z = np.maximum(LUNG_Z[0] - z, z - LUNG_Z[1])
        return np.maximum(np.minimum(*(_ellipse_sdf(x, y, c, LUNG_SEMI_AXES) for c in LUNG_CENTRES_XY)), in_z)

    inner_body = (BODY_SEMI_AXES[0] - FAT_MM, BODY_SEMI_AXES[1] - FAT_MM)
    wall = functools.partial(outer_wall_sdf, kind=kind)
    structures = [
        _Structure("fat", lambda x, y, z: _ellipse_sdf(x, y, (0.0, 0.0), BODY_SEMI_AXES) + 0 * z, HU["fat"]),
        _Structure("soft_tissue", lambda x, y, z: _ellipse_sdf(x, y, (0.0, 0.0), inner_body) + 0 * z, HU["soft_tissue"]),
        _Structure("lungs", lungs, HU["lung"]),
        _Structure("periaortic_fat", lambda x, y, z: wall(x, y, z) - PERIAORTIC_FAT_MM, HU["fat"]),
        _Structure("discs", lambda x, y, z: _vertical_tube_sdf(x, y, z, *bone.spine_xy, VERTEBRA_RADIUS, -1e4, 1e4),
                   HU["disc"]),
        _Structure("cortical_bone", functools.partial(vertebrae_sdf, kind=kind), bone.cortical_hu, 3),
        _Structure("cancellous_bone", functools.partial(vertebrae_sdf, shrink=bone.cortex_mm, kind=kind),
                   bone.cancellous_hu),
        _Structure("myocardium", lambda x, y, z: left_ventricle_sdf(x, y, z, grow=MYOCARDIUM_MM), HU["myocardium"]),
        _Structure("aortic_wall", wall, HU["soft_tissue"], wall=True),
        _Structure("thrombus_outside_lumen" if kind == "aneurysm" else "unused",
                   functools.partial(thrombus_sdf, kind=kind) if kind == "aneurysm" else None, HU["thrombus"], 4),
        _Structure("aorta", functools.partial(aorta_sdf, kind=kind), bolus_hu if kind == "bolus" else HU["contrast"], 1),
        _Structure("left_ventricle", left_ventricle_sdf, BOLUS_HU[0] if kind == "bolus" else HU["contrast"], 2),
    ]
    if kind == "dissection":
        structures += [_Structure("false_lumen", false_lumen_sdf, HU["false_lumen"]),
                       _Structure("thrombosed_false_lumen", functools.partial(thrombus_sdf, kind=kind), HU["thrombus"], 4),
                       _Structure("intimal_flap", flap_sdf, HU["soft_tissue"], 9)]
    for label, sdf in neighbour_sdfs(kind).items():
        hu = HU["dense_svc"] if kind == "bolus" else HU["neighbour_contrast"]
        structures.append(_Structure(LABELS[label], sdf, hu, label))
    if kind == "calcified":
        structures.append(_Structure("calcified_plaque", functools.partial(plaque_sdf, kind=kind), HU["plaque"], 5))
    return tuple(s for s in structures if s.sdf is not None)


def _extent(sdf: Callable, margin_mm: float = 3.0) -> list[tuple[float, float]]:
    """LPS box (z, y, x ranges) where ``sdf`` < margin, found on a 2 mm grid over the field of view."""
    axes = [np.arange(low - 2.0, high + 2.0, 2.0, dtype=np.float32) for low, high in FIELD_OF_VIEW_MM]
    z, y, x = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    inside = np.broadcast_to(sdf(x, y, z), (len(axes[0]), len(axes[1]), len(axes[2]))) < margin_mm
    box = []
    for axis, coords in enumerate(axes):
        present = np.flatnonzero(np.any(inside, axis=tuple(a for a in range(3) if a != axis)))
        box.append((float(coords[present[0]]) - 2.0, float(coords[present[-1]]) + 2.0) if present.size else (0.0, -1.0))
    return box


@functools.lru_cache(maxsize=None)
def _structure_extent(kind: str, name: str, margin_mm: float) -> list[tuple[float, float]]:
    sdf = next(s.sdf for s in _structures(kind) if s.name == name)
    box = _extent(sdf, margin_mm)
    if name in ("fat", "soft_tissue", "lungs", "discs"):
        return box
    # structures running out of the field of view: open the box on that side
    return [(low if low > FIELD_OF_VIEW_MM[a][0] else -1e4, high if high < FIELD_OF_VIEW_MM[a][1] else 1e4)
            for a, (low, high) in enumerate(box)]


def _paint_all(image: np.ndarray, labels: np.ndarray, wall: np.ndarray, coords: list[np.ndarray], ramp_mm: float,
               kind: str) -> None:
    """Paint every structure into ``image`` and the truth into ``labels``/``wall`` within each one's box."""
    for structure in _structures(kind):
        extent = _structure_extent(kind, structure.name, round(1.0 + ramp_mm, 6))
        index = [np.flatnonzero((c >= low) & (c <= high)) for c, (low, high) in zip(coords, extent)]
        if any(i.size == 0 for i in index):
            continue
        box = tuple(slice(i[0], i[-1] + 1) for i in index)
        z, y, x = (c[b] for c, b in zip(coords, box))
        x, y, z = x[None, None, :], y[None, :, None], z[:, None, None]
        sdf = structure.sdf(x, y, z)
        hu = structure.hu(x, y, z) if callable(structure.hu) else structure.hu
        _paint(image[box], sdf, hu, ramp_mm)
        if structure.label is not None:
            labels[box][np.broadcast_to(sdf < 0, labels[box].shape)] = structure.label
        if structure.wall:
            wall[box] |= np.broadcast_to(sdf < 0, wall[box].shape)


def _add_streaks(image: np.ndarray, coords: list[np.ndarray]) -> None:
    """Streak artefacts around the bolus kind's dense SVC: +-amplitude HU in bands radiating from it."""
    (cx, cy), radius, (z_low, _) = SVC_BOLUS
    amplitude, count, decay = SVC_STREAKS
    z, y, x = coords
    dx, dy = x[None, :] - np.float32(cx), y[:, None] - np.float32(cy)
    rho = np.sqrt(dx**2 + dy**2)
    pattern = (amplitude * np.cos(count * np.arctan2(dy, dx)) * np.exp(-np.maximum(rho - radius, 0) / decay)
               * (rho > radius)).astype(np.float32)
    body = _ellipse_sdf(x[None, :], y[:, None], (0.0, 0.0), BODY_SEMI_AXES) < 0
    image[z >= z_low] += pattern * body


def make_phantom(shape_scale: float = 1.0, seed: int = 0, shape: tuple[int, int, int] | None = None,
                 slab: int = 16, *, kind: str = "aneurysm", spacing_mm: float | None = None,
                 field_of_view_mm=None) -> Phantom:
    """Build the phantom.

    Parameters
    ----------
    shape_scale : float
        Matrix size relative to :data:`BASE_SHAPE` (200 x 180 x 180 at 1 mm); the field of view
        is fixed, so 2.5 gives 0.4 mm voxels and 500 x 450 x 450 voxels.
    seed : int
        Seed of the noise generator; the same seed gives the same phantom, bit for bit.
    shape : tuple of int, optional
        Exact matrix ``(slices, rows, columns)``, e.g. ``(500, 512, 512)`` for a clinical size;
        overrides ``shape_scale``.
    slab : int
        Slices computed at a time (bounds the float32 working memory).
    kind : str
        One of :data:`KINDS` (see the module's docstring).
    spacing_mm : float, optional
        Isotropic voxel size (mm); overrides ``shape`` and ``shape_scale``.
    field_of_view_mm : ((z0, z1), (y0, y1), (x0, x1)), optional
        A crop of :data:`FIELD_OF_VIEW_MM` (LPS mm), for fine voxels on a short stretch.

    Returns
    -------
    Phantom
    """
    anatomy(kind)  # refuses an unknown kind
    geometry = phantom_geometry(shape_scale, shape, spacing_mm, field_of_view_mm)
    nk, nj, ni = geometry.shape
    sk, sj, si = geometry.spacing
    x_lps = geometry.origin[0] + si * np.arange(ni, dtype=np.float32)
    y_lps = geometry.origin[1] + sj * np.arange(nj, dtype=np.float32)
    z_lps = geometry.origin[2] + sk * np.arange(nk, dtype=np.float32)
    ramp_mm = float(np.mean(geometry.spacing))
    image = np.full(geometry.shape, HU["air"], dtype=np.float32)
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    wall = np.zeros(geometry.shape, dtype=bool)
    for start in range(0, nk, slab):
        stop = min(start + slab, nk)
        coords = [z_lps[start:stop], y_lps, x_lps]
        _paint_all(image[start:stop], labels[start:stop], wall[start:stop], coords, ramp_mm, kind)
        if kind == "bolus":
            _add_streaks(image[start:stop], coords)
    wall &= labels != 2
    sigma = [BLUR_SIGMA_MM / s for s in geometry.spacing]
    ndimage.gaussian_filter(image, sigma, output=image, mode="nearest")
    rng = np.random.default_rng(seed)
    for start in range(0, nk, slab):
        stop = min(start + slab, nk)
        image[start:stop] += rng.standard_normal((stop - start, nj, ni), dtype=np.float32) * np.float32(NOISE_SIGMA_HU)
    hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    names = {k: v for k, v in {**LABELS, 9: "intimal_flap"}.items() if k in np.unique(labels)}
    return Phantom(hu=hu, labels=labels, geometry=geometry, landmarks=landmarks(kind), seed=seed,
                   label_names=names, kind=kind, wall=wall)


# --- DICOM ---------------------------------------------------------------------------------
PATIENT = {"name": "PHANTOM^AORTA", "id": "PH0001", "birth_date": "19640301", "sex": "M"}
STUDY_DATE = "20260115"
STUDY_TIME = "081500"
ACCESSION = "ACC20260115001"
RESCALE_INTERCEPT = -1024.0


def _uid(seed: int, shape: tuple[int, ...], *parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["anatomodel-cta-phantom", str(seed), "x".join(map(str, shape)), *map(str, parts)])


def series_identifiers(phantom: Phantom) -> dict[str, object]:
    """The identifiers the phantom's DICOM series carries (same keys as a loaded Volume)."""
    shape = phantom.geometry.shape
    return {
        "patient_name": PATIENT["name"],
        "patient_id": PATIENT["id"],
        "patient_birth_date": PATIENT["birth_date"],
        "patient_sex": PATIENT["sex"],
        "study_instance_uid": _uid(phantom.seed, shape, "study"),
        "series_instance_uid": _uid(phantom.seed, shape, "series"),
        "frame_of_reference_uid": _uid(phantom.seed, shape, "frame"),
        "accession_number": ACCESSION,
        "study_date": STUDY_DATE,
        "study_time": STUDY_TIME,
        "study_description": "CTA CHEST AORTA",
        "series_description": f"CTA AORTA {phantom.geometry.spacing[0]:.2f}mm",
        "series_number": 3,
        "modality": "CT",
        "manufacturer": "anatomodel",
        "manufacturer_model_name": "synthetic CTA phantom",
        "kvp": 100.0,
        "convolution_kernel": "Br36",
        "contrast_bolus_agent": "Iohexol 350 mgI/ml",
        "slice_thickness_mm": phantom.geometry.spacing[0],
        "number_of_slices": shape[0],
        "pixel_spacing_mm": [phantom.geometry.spacing[1], phantom.geometry.spacing[2]],
        "gantry_tilt_deg": 0.0,
    }


def _slice_dataset(phantom: Phantom, k: int, ids: dict, order_name: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    geometry = phantom.geometry
    nk, nj, ni = geometry.shape
    sop_uid = _uid(phantom.seed, geometry.shape, "slice", k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = STUDY_TIME
    ds.AccessionNumber = ACCESSION
    ds.Modality = "CT"
    ds.Manufacturer = ids["manufacturer"]
    ds.ManufacturerModelName = ids["manufacturer_model_name"]
    ds.InstitutionName = "anatomodel synthetic"
    ds.ReferringPhysicianName = "REFERRING^PHYSICIAN"
    ds.StudyDescription = ids["study_description"]
    ds.SeriesDescription = ids["series_description"]
    ds.PatientName = PATIENT["name"]
    ds.PatientID = PATIENT["id"]
    ds.PatientBirthDate = PATIENT["birth_date"]
    ds.PatientSex = PATIENT["sex"]
    ds.BodyPartExamined = "CHEST"
    ds.ContrastBolusAgent = ids["contrast_bolus_agent"]
    ds.ContrastBolusRoute = "IV"
    ds.SliceThickness = f"{geometry.spacing[0]:.4g}"
    ds.KVP = "100"
    ds.DataCollectionDiameter = "500"
    ds.SoftwareVersions = "anatomodel-phantom-1"
    ds.ReconstructionDiameter = f"{ni * geometry.spacing[2]:.4g}"
    ds.GantryDetectorTilt = "0"
    ds.ConvolutionKernel = ids["convolution_kernel"]
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ids["study_instance_uid"]
    ds.SeriesInstanceUID = ids["series_instance_uid"]
    ds.StudyID = "1"
    ds.SeriesNumber = ids["series_number"]
    ds.AcquisitionNumber = 1
    # Instance numbers run head to feet, opposite to the array: a loader must sort by position.
    ds.InstanceNumber = nk - k
    position = geometry.index_to_lps([k, 0, 0])
    ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = ids["frame_of_reference_uid"]
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{position[2]:.6g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = nj, ni
    ds.PixelSpacing = [f"{geometry.spacing[1]:.6g}", f"{geometry.spacing[2]:.6g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = "300", "800"
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    stored = (phantom.hu[k].astype(np.int32) - int(RESCALE_INTERCEPT)).astype(np.int16)
    ds.PixelData = stored.tobytes()
    return ds


def write_dicom_series(phantom: Phantom, folder: str | Path, *, with_truth: bool = True) -> list[Path]:
    """Write the phantom as a CT Image Storage series, one file per slice, named out of order.

    Also writes ``truth/labels.nii.gz``, ``truth/lumen.nii.gz`` (the contrast-filled aortic
    lumen), ``truth/wall.nii.gz`` (inside the aorta's outer wall) and ``truth/truth.json``
    (kind, label names, landmarks, analytic volumes) unless ``with_truth`` is False. Returns the DICOM file paths.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = series_identifiers(phantom)
    nk = phantom.geometry.shape[0]
    # A fixed shuffle so file names carry no slice order.
    names = np.random.default_rng(1000 + phantom.seed).permutation(nk)
    paths = []
    for k in range(nk):
        path = folder / f"IM{names[k]:05d}"
        _slice_dataset(phantom, k, ids, path.name).save_as(path, enforce_file_format=True)
        paths.append(path)
    if with_truth:
        truth = folder / "truth"
        write_image(phantom.labels, phantom.geometry, truth / "labels.nii.gz")
        write_image(phantom.lumen.astype(np.uint8), phantom.geometry, truth / "lumen.nii.gz")
        if phantom.wall is not None:
            write_image(phantom.wall.astype(np.uint8), phantom.geometry, truth / "wall.nii.gz")
        (truth / "truth.json").write_text(json.dumps({
            "kind": phantom.kind,
            "labels": {str(k): v for k, v in phantom.label_names.items()},
            "landmarks_lps_mm": phantom.landmarks,
            "analytic_volumes_mm3": analytic_volumes_mm3(),
            "geometry": phantom.geometry.to_dict(),
            "seed": phantom.seed,
            "hu_sha256": hashlib.sha256(phantom.hu.tobytes()).hexdigest(),
        }, indent=2))
    return paths


def main(argv: list[str] | None = None, write: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=KINDS, default="aneurysm")
    parser.add_argument("--spacing", type=float, default=None)
    args = parser.parse_args(argv)
    phantom = make_phantom(args.scale, args.seed, kind=args.kind, spacing_mm=args.spacing)
    paths = write_dicom_series(phantom, args.out)
    write(f"wrote {len(paths)} slices {phantom.geometry.shape} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
