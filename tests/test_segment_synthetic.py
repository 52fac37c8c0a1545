"""Segmentation on small synthetic volumes with analytic shapes: growth, leak control, bone,
exclude seeds, clean-up, region of interest, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import SegmentationError
from pipeline.geometry import Geometry, Volume
from pipeline.segment import segment_volume

SPACING = (1.0, 0.8, 0.8)  # anisotropic on purpose
SHAPE = (80, 100, 100)
# array axes k, j, i run along z, y, x (axial slices), as in a CT series
GEOMETRY = Geometry(SHAPE, SPACING, (-40.0, -40.0, -40.0), ((0, 0, 1), (0, 1, 0), (1, 0, 0)))
CONTRAST, TISSUE = 350.0, 40.0


def lps_grid(geometry: Geometry = GEOMETRY):
    """LPS coordinates (x, y, z) of every voxel centre, each (nk, nj, ni)."""
    index = np.indices(geometry.shape, dtype=float).reshape(3, -1).T
    return [c.reshape(geometry.shape) for c in geometry.index_to_lps(index).T]


def capsule(x, y, z, start, end, radius):
    """Signed distance (mm) to a capsule around the segment start-end."""
    p = np.stack([x, y, z], axis=-1)
    a, b = np.asarray(start, float), np.asarray(end, float)
    t = np.clip(((p - a) @ (b - a)) / np.dot(b - a, b - a), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1) - radius


def sphere(x, y, z, centre, radius):
    return np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) - radius


def render(layers, noise=15.0, seed=0, geometry=GEOMETRY):
    """HU image: tissue background, each (sdf, HU) painted with a one-voxel partial-volume ramp."""
    image = np.full(geometry.shape, TISSUE, np.float32)
    ramp = float(np.mean(geometry.spacing))
    for sdf, hu in layers:
        fraction = np.clip(0.5 - sdf / ramp, 0, 1)
        image += fraction * (hu - image)
    image += np.random.default_rng(seed).normal(0, noise, geometry.shape).astype(np.float32)
    return Volume(np.clip(np.rint(image), -1024, 3071).astype(np.int16), geometry)


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def two_chambers():
    """A vessel (radius 7 mm) ending in a chamber (radius 13 mm) through a neck of radius 3.5 mm."""
    x, y, z = lps_grid()
    vessel = capsule(x, y, z, (-20, 0, 30), (-20, 0, -5), 7.0)
    neck = capsule(x, y, z, (-20, 0, -5), (5, 0, -15), 3.5)
    chamber = sphere(x, y, z, (12, 0, -15), 13.0)
    volume = render([(np.minimum(np.minimum(vessel, neck), chamber), CONTRAST)])
    return volume, vessel < 0, chamber < 0, neck < 0


def test_leak_control_cuts_the_chamber_at_the_neck(two_chambers):
    volume, vessel, chamber, _ = two_chambers
    mask, report = segment_volume(volume, "aorta_cta", [(-20, 0, 15)], overrides={"bone_separation.enabled": False})
    got = mask.binary()
    assert dice(got, vessel) >= 0.9
    assert np.count_nonzero(got & chamber) <= 0.02 * np.count_nonzero(got)
    cuts = report.leak_control.cuts
    assert cuts and cuts[0].neck_radius_mm < 5.0 and cuts[0].widest_radius_mm > 10.0
    # the cut-off piece is reported where the chamber is (LPS mm, within a block or two)
    assert np.linalg.norm(np.subtract(cuts[0].centroid_lps_mm, (12, 0, -15))) < 6.0


def test_without_leak_control_the_chamber_joins(two_chambers):
    volume, vessel, chamber, _ = two_chambers
    mask, report = segment_volume(volume, "aorta_cta", [(-20, 0, 15)],
                                  overrides={"leak_control.mode": "off", "bone_separation.enabled": False})
    got = mask.binary()
    assert np.count_nonzero(got & chamber) >= 0.9 * np.count_nonzero(chamber)
    assert report.leak_control.applied is False


def test_auto_leak_control_only_cuts_past_the_expected_volume(two_chambers):
    volume, vessel, chamber, _ = two_chambers
    whole_ml = (np.count_nonzero(vessel | chamber) * GEOMETRY.voxel_volume_mm3) / 1000
    relaxed = {"leak_control.mode": "auto", "leak_control.max_volume_ml": 2 * whole_ml, "bone_separation.enabled": False}
    mask, report = segment_volume(volume, "aorta_cta", [(-20, 0, 15)], overrides=relaxed)
    assert not report.leak_control.applied and np.count_nonzero(mask.binary() & chamber) > 0
    strict = dict(relaxed, **{"leak_control.max_volume_ml": 0.5 * whole_ml})
    mask, report = segment_volume(volume, "aorta_cta", [(-20, 0, 15)], overrides=strict)
    assert report.leak_control.applied and report.leak_control.expectation_exceeded
    assert np.count_nonzero(mask.binary() & chamber) <= 0.02 * mask.voxel_count()


def test_exclude_seed_splits_at_the_narrowest_connection(two_chambers):
    volume, vessel, chamber, neck = two_chambers
    overrides = {"leak_control.mode": "off", "bone_separation.enabled": False}
    mask, report = segment_volume(volume, "aorta_cta", [(-20, 0, 15)], [(12, 0, -15)], overrides=overrides)
    got = mask.binary()
    assert dice(got, vessel) >= 0.85
    assert np.count_nonzero(got & chamber) <= 0.02 * np.count_nonzero(got)
    assert report.leak_control.cuts[0].held_exclude_seed
    # and the other way round: seeded in the chamber, excluding the vessel
    mask, _ = segment_volume(volume, "aorta_cta", [(12, 0, -15)], [(-20, 0, 15)], overrides=overrides)
    assert dice(mask.binary(), chamber) >= 0.9


def test_branches_and_a_fusiform_widening_stay():
    x, y, z = lps_grid()
    # main tube along z whose radius swells 6 -> 11 -> 6 mm (like an aneurysm), with a 3 mm branch
    radius = 6.0 + 5.0 * np.sin(np.clip((z + 20) / 30, 0, 1) * np.pi) ** 2
    tube = np.sqrt((x + 5) ** 2 + y**2) - radius
    tube = np.maximum(tube, np.abs(z) - 38)
    branch = capsule(x, y, z, (-5, 0, 25), (25, 0, 35), 3.0)
    truth = np.minimum(tube, branch) < 0
    volume = render([(np.minimum(tube, branch), CONTRAST)])
    mask, report = segment_volume(volume, "aorta_cta", [(-5, 0, 30)], overrides={"bone_separation.enabled": False})
    assert dice(mask.binary(), truth) >= 0.95
    assert report.leak_control.removed_ml <= 0.02 * report.volume_ml


def _tube_on_bone(cortex_mm: float, gap_mm: float):
    """A vessel (radius 6 mm) lying ``gap_mm`` from a vertebra-like block: a cortex (1000 HU)
    around cancellous bone (250 HU, inside the contrast window)."""
    x, y, z = lps_grid()
    vessel = capsule(x, y, z, (0, -8 - gap_mm, -35), (0, -8 - gap_mm, 35), 6.0)
    body = np.maximum(np.sqrt(x**2 + (y - 12) ** 2) - 14.0, np.abs(z) - 30)
    cortex = np.maximum(body, -(body + cortex_mm))
    volume = render([(body, 250.0), (cortex, 1000.0), (vessel, CONTRAST)])
    return volume, vessel < 0, body < 0, body < -1.0


def test_bone_near_the_vessel_does_not_join():
    volume, vessel, bone, _ = _tube_on_bone(1.5, gap_mm=1.0)
    mask, report = segment_volume(volume, "aorta_cta", [(0, -9, 0)], overrides={"leak_control.mode": "off"})
    got = mask.binary()
    assert np.count_nonzero(got & bone) == 0
    assert dice(got, vessel) >= 0.95
    assert report.bone_separation.filled_interior_ml > 0


@pytest.mark.parametrize("cortex_mm", [0.8, 0.5])
def test_cancellous_bone_touching_the_vessel_is_kept_out(cortex_mm):
    """A thin cortex touching the vessel: partial volume opens it, and cancellous bone at
    contrast HU joins a plain threshold growth. The barrier (cortex filled slice by slice)
    stops it where the cortex still reads as bone (0.8 mm); where it does not (0.5 mm), leak
    control cuts the vertebra off at the contact."""
    volume, vessel, bone, cancellous = _tube_on_bone(cortex_mm, gap_mm=0.0)
    plain, _ = segment_volume(volume, "aorta_cta", [(0, -8, 0)],
                              overrides={"leak_control.mode": "off", "bone_separation.enabled": False})
    assert np.count_nonzero(plain.binary() & cancellous) > 0.9 * np.count_nonzero(cancellous)
    mask, report = segment_volume(volume, "aorta_cta", [(0, -8, 0)])
    got = mask.binary()
    assert np.count_nonzero(got & cancellous) == 0
    # only the contact's partial-volume voxels (centres inside the cortex, HU mixed with contrast)
    assert np.count_nonzero(got & bone) <= 0.005 * np.count_nonzero(got)
    assert dice(got, vessel) >= 0.95


def test_mask_is_on_the_full_grid_with_its_label(two_chambers):
    volume, *_ = two_chambers
    mask, report = segment_volume(volume, "aorta_cta", [(-20, 0, 15)], label=3, label_name="my vessel")
    assert mask.array.dtype == np.uint8 and mask.geometry == volume.geometry
    assert set(np.unique(mask.array)) == {0, 3} and mask.labels == {3: "my vessel"}
    assert report.voxels == mask.voxel_count()
    assert report.volume_ml == pytest.approx(mask.volume_ml(), abs=1e-3)
    assert report.components == 1
    data = json.loads(report.to_json())
    assert data["seeds"][0]["hu"] == pytest.approx(CONTRAST, abs=40)
    assert data["hu_statistics"]["median"] == pytest.approx(CONTRAST, abs=30)
    assert set(data["timings_s"]) >= {"grow", "cleanup"}


def test_seed_index_and_lps_give_the_same_mask(two_chambers):
    volume, *_ = two_chambers
    lps = (-20.0, 0.0, 15.0)
    index = tuple(int(v) for v in np.rint(volume.geometry.lps_to_index(lps)))
    by_lps, _ = segment_volume(volume, "aorta_cta", [lps])
    by_index, report = segment_volume(volume, "aorta_cta", seeds_index=[index])
    assert np.array_equal(by_lps.array, by_index.array)
    assert report.seeds[0].given_as == "index"


def test_region_of_interest_limits_the_mask(two_chambers):
    volume, vessel, *_ = two_chambers
    roi = ((-40, -40, 5), (40, 40, 40))
    mask, report = segment_volume(volume, "aorta_cta", [(-20, 0, 15)], roi_lps_mm=roi)
    z = volume.geometry.index_to_lps(np.argwhere(mask.binary()))[:, 2]
    assert z.min() >= 5 - 1e-6
    assert report.roi_index_box is not None


def test_adaptive_window_is_measured_around_the_seed(two_chambers):
    volume, vessel, *_ = two_chambers
    mask, report = segment_volume(volume, "custom_example", [(-20, 0, 15)],
                                  overrides={"cleanup.shell": None, "bone_separation.enabled": False})
    window = report.window
    assert window.mode == "adaptive"
    assert window.seed_mean_hu == pytest.approx(CONTRAST, abs=10)
    assert window.seed_sd_hu == pytest.approx(15, abs=5)
    assert window.lower_hu == pytest.approx(window.seed_mean_hu - 3 * window.seed_sd_hu, abs=0.2)


def test_holes_are_filled_and_islands_dropped():
    x, y, z = lps_grid()
    ball_sdf = sphere(x, y, z, (0, 0, 0), 12.0)
    hole = sphere(x, y, z, (0, 0, 0), 3.0)
    island = sphere(x, y, z, (25, 25, 25), 2.0)
    volume = render([(ball_sdf, CONTRAST), (hole, TISSUE), (island, CONTRAST)], noise=5.0)
    preset = {"leak_control.mode": "off", "bone_separation.enabled": False}
    mask, report = segment_volume(volume, "aorta_cta", [(0, 8, 0)], overrides=preset)
    assert mask.binary()[tuple(np.rint(GEOMETRY.lps_to_index((0, 0, 0))).astype(int))]
    assert np.count_nonzero(mask.binary() & (island < 0)) == 0
    expected = 4 / 3 * np.pi * 12.0**3 / 1000
    assert report.volume_ml == pytest.approx(expected, rel=0.05)


def test_hollow_shell_has_the_wall_thickness():
    x, y, z = lps_grid()
    tube = np.maximum(np.sqrt(x**2 + y**2) - 8.0, np.abs(z) - 25)
    volume = render([(tube, CONTRAST)], noise=5.0)
    base = {"leak_control.mode": "off", "bone_separation.enabled": False}
    for side, inner, outer in [("outside", 8.0, 10.0), ("inside", 6.0, 8.0)]:
        overrides = dict(base, **{"cleanup.shell": {"thickness_mm": 2.0, "side": side}})
        mask, report = segment_volume(volume, "aorta_cta", [(0, 0, 0)], overrides=overrides)
        got = mask.binary()
        # the wall's cross-section in the middle slices is the annulus between the two radii
        middle = np.abs(z) < 15
        area = np.count_nonzero(got & middle) * GEOMETRY.voxel_volume_mm3 / (np.count_nonzero(middle) / np.prod(SHAPE[1:]) * SPACING[0])
        # a 0.8 mm voxel is 40% of the 2 mm wall: the ring of voxel centres is coarsely quantised
        assert area == pytest.approx(np.pi * (outer**2 - inner**2), rel=0.15), side
        assert not got[tuple(np.rint(GEOMETRY.lps_to_index((0, 0, 0))).astype(int))]


def test_seed_outside_the_volume_names_the_extent(two_chambers):
    volume, *_ = two_chambers
    with pytest.raises(SegmentationError, match=r"outside the volume.*z -40\.0\.\.39\.0"):
        segment_volume(volume, "aorta_cta", [(0, 0, 500)])
    with pytest.raises(SegmentationError, match="outside the volume of 80 x 100 x 100"):
        segment_volume(volume, "aorta_cta", seeds_index=[(0, 0, 100)])


def test_seed_outside_the_window_names_its_hu_and_the_window(two_chambers):
    volume, *_ = two_chambers
    # the CTA preset first asks for contrast at the seed (soft tissue, ~40 HU, is below 200 HU) ...
    with pytest.raises(SegmentationError, match=r"HU at the seed \d+; an arterial phase needs at least 200 HU"):
        segment_volume(volume, "aorta_cta", [(30, 30, 30)])
    # ... and without that requirement the window says what the seed hit
    with pytest.raises(SegmentationError, match=r"has \d+ HU, outside the aorta_cta window 150\.\.700 HU: it lies "
                                                r"in soft tissue"):
        segment_volume(volume, "aorta_cta", [(30, 30, 30)], overrides={"threshold.min_contrast_hu": None})


def test_missing_seed_bad_label_and_empty_result_are_refused(two_chambers):
    volume, *_ = two_chambers
    with pytest.raises(SegmentationError, match="needs at least one include seed"):
        segment_volume(volume, "aorta_cta")
    with pytest.raises(SegmentationError, match="label 0"):
        segment_volume(volume, "aorta_cta", [(-20, 0, 15)], label=0)
    with pytest.raises(SegmentationError, match="empty"):
        segment_volume(volume, "aorta_cta", [(-20, 0, 15)], overrides={"cleanup.opening_mm": 15.0})
    with pytest.raises(SegmentationError, match="region of interest"):
        segment_volume(volume, "aorta_cta", [(-20, 0, 15)], roi_lps_mm=((0, 0, 0), (10, 10, 10)))


def test_a_widening_far_along_a_narrower_vessel_stays():
    """Like an abdominal aneurysm below a thoracic aorta wider than the abdominal aorta: a wide
    vessel (radius 12 mm) tapers into a long narrow one (7 mm, 50 mm long) that swells into a
    fusiform widening (16 mm). Compared with the whole pieces, the 7 mm vessel is a neck between
    two wider parts; compared with the widths near it, it is not, and nothing is cut."""
    geometry = Geometry((140, 80, 80), (1.0, 1.0, 1.0), (-40.0, -40.0, -70.0), ((0, 0, 1), (0, 1, 0), (1, 0, 0)))
    x, y, z = lps_grid(geometry)
    radius = np.interp(z, [-65, -42, -20, 30, 40, 68], [7, 16, 7, 7, 12, 12])
    vessel = np.maximum(np.sqrt(x**2 + y**2) - radius, np.abs(z + 1) - 67)
    volume = render([(vessel, CONTRAST)], geometry=geometry)
    overrides = {"bone_separation.enabled": False}
    mask, report = segment_volume(volume, "aorta_cta", [(0, 0, 55)], overrides=overrides)
    assert dice(mask.binary(), vessel < 0) >= 0.95
    assert report.leak_control.rejoined_after_local_check >= 1
    # with widths measured over the whole pieces (a neighbourhood wider than the volume) and no
    # shape test, the widening is cut off at the narrow vessel ...
    whole = dict(overrides, **{"leak_control.neighbourhood_mm": 200.0})
    mask, report = segment_volume(volume, "aorta_cta", [(0, 0, 55)],
                                  overrides=dict(whole, **{"leak_control.continuation_angle_deg": None}))
    assert np.count_nonzero(mask.binary() & (z < -30)) == 0
    # ... and the shape test keeps it: the piece lies along the kept tube's axis and runs out of the scan
    mask, report = segment_volume(volume, "aorta_cta", [(0, 0, 55)], overrides=whole)
    assert dice(mask.binary(), vessel < 0) >= 0.95
    assert report.leak_control.rejoined_as_continuation >= 1


@pytest.mark.parametrize("lumen_hu", [230.0, 350.0, 680.0])
def test_half_maximum_window_follows_the_contrast_level(lumen_hu):
    """Weak (230 HU) to dense low-kV (680 HU) contrast: the lower bound sits half-way between the
    lumen and the tissue, the upper bound and the bone threshold rise above a dense lumen."""
    x, y, z = lps_grid()
    tube = np.maximum(np.sqrt(x**2 + y**2) - 8.0, np.abs(z) - 30)
    volume = render([(tube, lumen_hu)])
    mask, report = segment_volume(volume, "aorta_cta", [(0, 0, 0)])
    window = report.window
    assert window.mode == "half_maximum"
    assert window.seed_median_hu == pytest.approx(lumen_hu, abs=10)
    assert window.lower_hu == pytest.approx(max(150.0, (lumen_hu + TISSUE) / 2), abs=8)
    assert window.upper_hu >= lumen_hu + 100
    assert report.bone_separation.cortical_hu >= window.upper_hu
    assert report.volume_ml == pytest.approx(np.count_nonzero(tube < 0) * GEOMETRY.voxel_volume_mm3 / 1000, rel=0.05)


def test_ventricle_behind_a_realistic_aortic_root_is_cut():
    """Adult proportions, open valve: ascending aorta and sinus 15 mm radius, annulus 12.5 mm,
    outflow tract 12 mm, ventricle 25 x 28 x 40 mm semi-axes. The neck is only 0.8 of the aorta
    (the phantom's is 0.64); the ventricle must still be cut off."""
    geometry = Geometry((200, 100, 100), (1.0, 1.0, 1.0), (-50.0, -50.0, -110.0), ((0, 0, 1), (0, 1, 0), (1, 0, 0)))
    x, y, z = lps_grid(geometry)
    radius = np.interp(z, [-32, 0, 2, 80], [12.0, 12.5, 15.0, 15.0])
    aorta = np.maximum(np.sqrt(x**2 + y**2) - radius, np.maximum(-32 - z, z - 85))
    ventricle = (np.sqrt((x / 28) ** 2 + (y / 25) ** 2 + ((z + 55) / 40) ** 2) - 1) * 25
    volume = render([(np.minimum(aorta, ventricle), CONTRAST)], geometry=geometry)
    mask, report = segment_volume(volume, "aorta_cta", [(0, 0, 50)], overrides={"bone_separation.enabled": False})
    got = mask.binary()
    assert np.count_nonzero(got & (ventricle < 0)) <= 0.05 * np.count_nonzero(got)
    assert dice(got, (aorta < 0) & (z >= 0)) >= 0.9  # the outflow tract above the ventricle may stay
    assert report.leak_control.cuts[0].widest_radius_mm > 20


def test_keep_all_drops_only_small_islands():
    x, y, z = lps_grid()
    big = sphere(x, y, z, (-15, 0, 0), 8.0)
    second = sphere(x, y, z, (15, 0, 0), 6.0)
    speck = sphere(x, y, z, (0, 25, 25), 1.5)
    volume = render([(np.minimum(np.minimum(big, second), speck), CONTRAST)], noise=5.0)
    overrides = {"leak_control.mode": "off", "bone_separation.enabled": False,
                 "cleanup.keep": "all", "cleanup.min_island_ml": 0.1}
    mask, report = segment_volume(volume, "aorta_cta", [(-15, 0, 0)], overrides=overrides)
    got = mask.binary()
    assert report.components == 2 and report.cleanup.islands_removed >= 1
    assert np.count_nonzero(got & (second < 0)) > 0.9 * np.count_nonzero(second < 0)
    assert np.count_nonzero(got & (speck < 0)) == 0


def _thin_vessel(radius_mm: float = 0.8, spacing: float = 0.5):
    """A vessel of even width along k through the volume (350 HU in 40 HU tissue, no noise),
    narrower than the 1.5 mm analysis grid: its axis at j = i = 15 mm."""
    shape = (120, 60, 60)
    geometry = Geometry(shape, (spacing,) * 3, (0.0, 0.0, 0.0))
    k, j, i = np.indices(shape) * spacing
    off_axis = np.sqrt((j - 15.0) ** 2 + (i - 15.0) ** 2)
    hu = np.full(shape, TISSUE, np.int16)
    hu[off_axis <= radius_mm] = CONTRAST
    return Volume(hu, geometry), k, off_axis


def test_exclude_seed_is_honoured_on_the_narrow_structure_fallback():
    """Too thin for the analysis grid, the vessel is grown at full resolution; an exclude seed
    along it still cuts it, half-way between the seeds (the vessel has no narrower place)."""
    volume, k_mm, off_axis = _thin_vessel()
    include, exclude = (60, 30, 30), (10, 30, 30)  # 30 mm and 5 mm along the vessel
    mask, report = segment_volume(volume, "aorta_cta", seeds_index=[include], exclude_seeds_index=[exclude])
    assert "narrower than the analysis grid" in " ".join(report.warnings)
    got = mask.binary()
    assert got[include] and not got[exclude]
    assert [s.effect for s in report.seeds] == ["in the result", "removed with the piece it lies in"]
    assert np.all(off_axis[got] <= 0.8)
    # half-way between the seeds: (5 + 30) / 2 = 17.5 mm, within a voxel or two
    assert k_mm[got].min() == pytest.approx(17.5, abs=1.0)
    assert report.leak_control.competitive_split and report.leak_control.cuts[0].held_exclude_seed
    removed = report.removed_pieces()
    assert removed[exclude] > 0 and np.count_nonzero((removed > 0) & got) == 0


def test_narrow_structure_fallback_is_checked_for_plausibility():
    """A 0.8 mm vessel grown as aorta_cta (too thin for the analysis grid) is held: its widest
    radius (the axis voxel's distance to the nearest outside voxel centre, 0.8 mm plus at most a
    voxel) lies far below the 6 mm the preset expects of the aorta."""
    volume, _, _ = _thin_vessel()
    _, report = segment_volume(volume, "aorta_cta", seeds_index=[(60, 30, 30)])
    assert "narrower than the analysis grid" in " ".join(report.warnings)
    assert report.plausibility is not None and report.plausibility.shape == "tube"
    assert 0.8 <= report.plausibility.widest_radius_mm <= 0.8 + 0.5
    assert "segment.radius_out_of_range" in [h.code for h in report.holds]


def test_full_resolution_growth_of_a_plausible_tube_is_not_held():
    """The same checks on the voxel grid measure an 8 mm tube running out of both ends of the
    scan as 8 mm (within a voxel) and find nothing to hold."""
    volume, _, _ = _thin_vessel(radius_mm=8.0)
    overrides = {"leak_control.mode": "off", "bone_separation.enabled": False}
    _, report = segment_volume(volume, "aorta_cta", seeds_index=[(60, 30, 30)], overrides=overrides)
    assert report.method.startswith("connected threshold growth at full resolution")
    assert report.plausibility.widest_radius_mm == pytest.approx(8.0, abs=0.5)
    assert report.plausibility.blob is False and report.holds == []


@pytest.mark.parametrize("fill_holes, max_hole_ml, filled", [(False, None, False), (True, 0.05, False),
                                                              (True, 0.2, True)])
def test_hole_filling_is_as_configured_with_leak_control(fill_holes, max_hole_ml, filled):
    """A ball of contrast (radius 12 mm) around a cavity of tissue (radius 3 mm, 4/3 pi 3^3 mm3 =
    0.113 ml), grown with leak control and the bone barrier: the cavity is filled only when
    asked to, and only when no larger than max_hole_ml; the report counts what was filled."""
    x, y, z = lps_grid()
    hole = sphere(x, y, z, (0, 0, 0), 3.0)
    volume = render([(sphere(x, y, z, (0, 0, 0), 12.0), CONTRAST), (hole, TISSUE)], noise=5.0)
    overrides = {"cleanup.fill_holes": fill_holes, "cleanup.max_hole_ml": max_hole_ml}
    mask, report = segment_volume(volume, "aorta_cta", [(0, 8, 0)], overrides=overrides)
    assert report.leak_control.applied and report.bone_separation is not None
    got = mask.binary()
    ramp = float(np.mean(SPACING))
    if filled:
        assert np.all(got[hole < 0])
        # the cavity in the window: the voxels more than half tissue (sdf < 0), less noise at its edge
        assert report.cleanup.holes_filled_voxels == pytest.approx(np.count_nonzero(hole < 0), rel=0.15)
    else:
        # no voxel that is more tissue than contrast (sdf < -ramp / 2: all tissue) is in the mask
        assert not np.any(got[hole < -0.5 * ramp])
        assert report.cleanup.holes_filled_voxels in (None, 0)
