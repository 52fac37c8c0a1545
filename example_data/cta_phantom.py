"""A deterministic synthetic CT angiography phantom of the thoracic aorta, with analytic truth.

The anatomy is built from signed distance functions in patient LPS millimetres (x to the
patient's left, y posterior, z superior), so every structure has a known volume:

* ascending aorta (vertical tube, radius 14 mm) rising from an aortic root that joins the
  **left-ventricle blood pool** (ellipsoid) through a narrower annulus (radius 9 mm); contrast
  (about 350 HU) fills both, as it does in a real CTA;
* the **arch** (half torus, tube radius tapering 14 -> 12 mm) with three branch vessels leaving
  its top (brachiocephalic 6 mm, left common carotid 4.5 mm, left subclavian 5 mm), which run
  out of the top of the field of view;
* the **descending aorta** (radius 12 mm) with a **fusiform aneurysm** (radius 12 -> 22 -> 12 mm
  over 50 mm, bulging away from the spine), running out of the bottom of the field of view;
* a **vertebral column** 3.8 mm from the descending aorta: bodies with a cortical shell
  (1000 HU, 1.5 mm) around cancellous bone (250 HU), separated by discs (90 HU);
* myocardium, mediastinal soft tissue, a subcutaneous fat layer, both lungs and air;
* partial volume (a linear ramp across one voxel at every boundary), scanner blur
  (Gaussian, sigma 0.6 mm) and noise (Gaussian, sigma 20 HU), from a seeded generator.

The ground-truth label map samples the same functions at voxel centres: 1 aorta (with annulus
and branches), 2 left-ventricle blood pool, 3 vertebral bone.

Run ``anatomodel phantom OUT_DIR`` (or ``python -m example_data.cta_phantom OUT_DIR``) to write
it as a CT Image Storage DICOM series, one file a slice, files not in slice order.
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

LABELS = {1: "aorta", 2: "left_ventricle", 3: "vertebrae"}

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
}

NOISE_SIGMA_HU = 20.0
BLUR_SIGMA_MM = 0.6
CORTEX_MM = 1.5

# --- the anatomy, LPS mm ------------------------------------------------------------------
ASCENDING_XY = np.array([-8.0, -22.0])  # x, y of the ascending aorta's axis
DESCENDING_XY = np.array([22.3, 21.7])
ARCH_BASE_Z = 50.0
ROOT_Z = 0.0
ASCENDING_RADIUS = 14.0
DESCENDING_RADIUS = 12.0
ANNULUS_RADIUS = 9.0
ANNULUS_END = np.array([2.0, -28.0, -14.0])  # inside the left ventricle
LV_CENTRE = np.array([12.0, -30.0, -38.0])
LV_SEMI_AXES = np.array([24.0, 17.0, 28.0])
MYOCARDIUM_MM = 10.0
ANEURYSM_Z = (-70.0, -20.0)
ANEURYSM_MAX_RADIUS = 22.0
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


def _away_from_spine() -> np.ndarray:
    direction = DESCENDING_XY - SPINE_XY
    return direction / np.linalg.norm(direction)


# --- signed distance functions (negative inside), on arrays of LPS coordinates -------------
def _segment_sdf(x, y, z, start, end, radius):
    """Capsule around the segment start-end."""
    (sx, sy, sz), (ex, ey, ez) = (map(float, start), map(float, end))
    ax, ay, az = ex - sx, ey - sy, ez - sz
    t = np.clip(((x - sx) * ax + (y - sy) * ay + (z - sz) * az) / (ax * ax + ay * ay + az * az), 0.0, 1.0)
    return np.sqrt((x - sx - t * ax) ** 2 + (y - sy - t * ay) ** 2 + (z - sz - t * az) ** 2) - float(radius)


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


def aorta_sdf(x, y, z):
    """The aorta: root, annulus, ascending, arch, branches, descending with aneurysm."""
    ascending = _vertical_tube_sdf(x, y, z, *ASCENDING_XY, ASCENDING_RADIUS, ROOT_Z, ARCH_BASE_Z)
    annulus = _segment_sdf(x, y, z, [*ASCENDING_XY, ROOT_Z + 2.0], ANNULUS_END, ANNULUS_RADIUS)
    growth = aneurysm_growth(z)
    away_x, away_y = _away_from_spine().tolist()
    descending = _vertical_tube_sdf(
        x, y, z, float(DESCENDING_XY[0]) + away_x * growth, float(DESCENDING_XY[1]) + away_y * growth,
        DESCENDING_RADIUS + growth, -1e4, ARCH_BASE_Z,
    )
    sdf = np.minimum(np.minimum(ascending, annulus), np.minimum(descending, _arch_sdf(x, y, z)))
    for angle, radius in BRANCHES.values():
        start = arch_point(angle)
        sdf = np.minimum(sdf, _segment_sdf(x, y, z, start, [start[0], start[1], 1e4], radius))
    return sdf


def left_ventricle_sdf(x, y, z, grow: float = 0.0):
    """Ellipsoid blood pool (approximate distance), optionally grown by ``grow`` mm."""
    semi = (LV_SEMI_AXES + grow).tolist()
    centre = LV_CENTRE.tolist()
    scaled = np.sqrt(((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
                     + ((z - centre[2]) / semi[2]) ** 2)
    return (scaled - 1.0) * min(semi)


def vertebrae_sdf(x, y, z, shrink: float = 0.0):
    """Stack of cylindrical vertebral bodies separated by discs, optionally shrunk by ``shrink``."""
    period = VERTEBRA_HEIGHT + DISC_HEIGHT
    local = np.mod(z + 100.0, period) - DISC_HEIGHT / 2 - VERTEBRA_HEIGHT / 2
    return _vertical_tube_sdf(x, y, local, *SPINE_XY, VERTEBRA_RADIUS - shrink,
                              -VERTEBRA_HEIGHT / 2 + shrink, VERTEBRA_HEIGHT / 2 - shrink)


def _ellipse_sdf(x, y, centre, semi):
    (cx, cy), (ax, ay) = (np.asarray(centre, float).tolist(), np.asarray(semi, float).tolist())
    scaled = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return (scaled - 1.0) * min(ax, ay)


# --- the phantom ---------------------------------------------------------------------------
@dataclass
class Phantom:
    """The synthetic CTA: HU, truth labels, grid and named landmarks (LPS mm)."""

    hu: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    landmarks: dict[str, tuple[float, float, float]]
    seed: int
    label_names: dict[int, str] = field(default_factory=lambda: dict(LABELS))

    def volume(self) -> Volume:
        """The phantom as a loaded :class:`Volume` (with the DICOM series' identifiers)."""
        return Volume(self.hu, self.geometry, dict(series_identifiers(self)))


def phantom_geometry(shape_scale: float = 1.0, shape: tuple[int, int, int] | None = None) -> Geometry:
    """Grid of the phantom: the fixed field of view sampled by ``shape`` (or BASE_SHAPE*scale)."""
    if shape is None:
        if not shape_scale > 0:
            raise ValueError(f"shape_scale must be positive, got {shape_scale}")
        shape = tuple(max(int(round(n * shape_scale)), 8) for n in BASE_SHAPE)
    spacing = tuple((high - low) / n for (low, high), n in zip(FIELD_OF_VIEW_MM, shape))
    origin_kji = [low + s / 2 for (low, _), s in zip(FIELD_OF_VIEW_MM, spacing)]
    # Array axes k, j, i run along z, y, x: the LPS origin is (x, y, z).
    direction = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))
    return Geometry(shape, spacing, (origin_kji[2], origin_kji[1], origin_kji[0]), direction)


def landmarks() -> dict[str, tuple[float, float, float]]:
    """Named points (LPS mm) inside each structure, for seeds and checks."""
    low, high = ANEURYSM_Z
    mid = (low + high) / 2
    away = _away_from_spine() * aneurysm_growth(np.array(mid))
    points = {
        "ascending_aorta": (*ASCENDING_XY, 25.0),
        "aortic_root": (*ASCENDING_XY, ROOT_Z + 4.0),
        "annulus": tuple((np.array([*ASCENDING_XY, ROOT_Z]) + ANNULUS_END) / 2),
        "arch": tuple(arch_point(np.pi / 2)),
        "descending_aorta": (*DESCENDING_XY, 20.0),
        "aneurysm": (DESCENDING_XY[0] + away[0], DESCENDING_XY[1] + away[1], mid),
        "left_ventricle": tuple(LV_CENTRE),
        "vertebra": (*SPINE_XY, -100.0 + DISC_HEIGHT + VERTEBRA_HEIGHT / 2 + 4 * (VERTEBRA_HEIGHT + DISC_HEIGHT)),
    }
    for name, (angle, _) in BRANCHES.items():
        start = arch_point(angle)
        points[name] = (start[0], start[1], 92.0)
    return {name: tuple(float(v) for v in point) for name, point in points.items()}


def analytic_volumes_mm3() -> dict[str, float]:
    """Exact volumes of the analytic pieces the label map is checked against (mm^3)."""
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


def _paint(image: np.ndarray, sdf: np.ndarray, hu: float, ramp_mm: float) -> None:
    """Blend ``hu`` into ``image`` by the voxel fraction inside ``sdf`` (partial volume)."""
    fraction = np.clip(0.5 - sdf / ramp_mm, 0.0, 1.0)
    image += fraction * (np.float32(hu) - image)


def _structures() -> list[tuple[str, Callable, float]]:
    """Structures painted in order (later ones cover earlier ones): name, sdf, HU."""
    def lungs(x, y, z):
        in_z = np.maximum(LUNG_Z[0] - z, z - LUNG_Z[1])
        return np.maximum(np.minimum(*(_ellipse_sdf(x, y, c, LUNG_SEMI_AXES) for c in LUNG_CENTRES_XY)), in_z)

    inner_body = (BODY_SEMI_AXES[0] - FAT_MM, BODY_SEMI_AXES[1] - FAT_MM)
    return [
        ("fat", lambda x, y, z: _ellipse_sdf(x, y, (0.0, 0.0), BODY_SEMI_AXES) + 0 * z, HU["fat"]),
        ("soft_tissue", lambda x, y, z: _ellipse_sdf(x, y, (0.0, 0.0), inner_body) + 0 * z, HU["soft_tissue"]),
        ("lungs", lungs, HU["lung"]),
        ("discs", lambda x, y, z: _vertical_tube_sdf(x, y, z, *SPINE_XY, VERTEBRA_RADIUS, -1e4, 1e4), HU["disc"]),
        ("cortical_bone", vertebrae_sdf, HU["cortical_bone"]),
        ("cancellous_bone", lambda x, y, z: vertebrae_sdf(x, y, z, shrink=CORTEX_MM), HU["cancellous_bone"]),
        ("myocardium", lambda x, y, z: left_ventricle_sdf(x, y, z, grow=MYOCARDIUM_MM), HU["myocardium"]),
        ("blood_pool", lambda x, y, z: np.minimum(left_ventricle_sdf(x, y, z), aorta_sdf(x, y, z)), HU["contrast"]),
    ]


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
def _structure_extent(name: str, margin_mm: float) -> list[tuple[float, float]]:
    return _extent(next(sdf for label, sdf, _ in _structures() if label == name), margin_mm)


def _paint_all(image: np.ndarray, labels: np.ndarray, coords: list[np.ndarray], ramp_mm: float) -> None:
    """Paint every structure into ``image`` and the truth into ``labels`` within each one's box."""
    for name, sdf, hu in _structures():
        extent = _structure_extent(name, round(1.0 + ramp_mm, 6))
        index = [np.flatnonzero((c >= low) & (c <= high)) for c, (low, high) in zip(coords, extent)]
        if any(i.size == 0 for i in index):
            continue
        box = tuple(slice(i[0], i[-1] + 1) for i in index)
        z, y, x = (c[b] for c, b in zip(coords, box))
        _paint(image[box], sdf(x[None, None, :], y[None, :, None], z[:, None, None]), hu, ramp_mm)
        if name == "blood_pool":
            aorta = aorta_sdf(x[None, None, :], y[None, :, None], z[:, None, None]) < 0
            ventricle = left_ventricle_sdf(x[None, None, :], y[None, :, None], z[:, None, None]) < 0
            labels[box][aorta] = 1
            labels[box][ventricle] = 2
        elif name == "cortical_bone":
            labels[box][sdf(x[None, None, :], y[None, :, None], z[:, None, None]) < 0] = 3


def make_phantom(shape_scale: float = 1.0, seed: int = 0, shape: tuple[int, int, int] | None = None,
                 slab: int = 16) -> Phantom:
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

    Returns
    -------
    Phantom
    """
    geometry = phantom_geometry(shape_scale, shape)
    nk, nj, ni = geometry.shape
    sk, sj, si = geometry.spacing
    x_lps = geometry.origin[0] + si * np.arange(ni, dtype=np.float32)
    y_lps = geometry.origin[1] + sj * np.arange(nj, dtype=np.float32)
    z_lps = geometry.origin[2] + sk * np.arange(nk, dtype=np.float32)
    ramp_mm = float(np.mean(geometry.spacing))
    image = np.full(geometry.shape, HU["air"], dtype=np.float32)
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    for start in range(0, nk, slab):
        stop = min(start + slab, nk)
        _paint_all(image[start:stop], labels[start:stop], [z_lps[start:stop], y_lps, x_lps], ramp_mm)
    sigma = [BLUR_SIGMA_MM / s for s in geometry.spacing]
    ndimage.gaussian_filter(image, sigma, output=image, mode="nearest")
    rng = np.random.default_rng(seed)
    for start in range(0, nk, slab):
        stop = min(start + slab, nk)
        image[start:stop] += rng.standard_normal((stop - start, nj, ni), dtype=np.float32) * np.float32(NOISE_SIGMA_HU)
    hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    return Phantom(hu=hu, labels=labels, geometry=geometry, landmarks=landmarks(), seed=seed)


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

    Also writes ``truth/labels.nii.gz`` and ``truth/truth.json`` (label names, landmarks,
    analytic volumes) unless ``with_truth`` is False. Returns the DICOM file paths.
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
        (truth / "truth.json").write_text(json.dumps({
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
    args = parser.parse_args(argv)
    phantom = make_phantom(args.scale, args.seed)
    paths = write_dicom_series(phantom, args.out)
    write(f"wrote {len(paths)} slices {phantom.geometry.shape} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
