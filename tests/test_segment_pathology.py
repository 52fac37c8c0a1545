"""Segmentation on the phantom family: real CTA pathology, against the analytic truth.

Every kind (``example_data.cta_phantom.KINDS``) at 1.5 mm voxels, and three at 0.5 mm on a
cropped field of view: one seed in the ascending aorta gives the contrast-filled lumen (recall
>= 0.97, leakage = false positives / truth <= 0.05), a seed in the arch or the descending aorta
gives the same model (Dice >= 0.98); the report accounts for every removed voxel; results that
are not the aorta are held; bad seeds are refused naming the seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from example_data.cta_phantom import KINDS, make_phantom
from pipeline.errors import SegmentationError
from pipeline.geometry import Mask
from pipeline.segment import segment_volume

_phantoms: dict = {}


def phantom(kind: str, spacing: float = 1.5, fov=None):
    key = (kind, spacing, fov)
    if key not in _phantoms:
        _phantoms[key] = make_phantom(kind=kind, spacing_mm=spacing, field_of_view_mm=fov)
    return _phantoms[key]


def scores(got: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Recall, leakage (false positives over the truth's size) and Dice."""
    hit = np.count_nonzero(got & truth)
    size = np.count_nonzero(truth)
    return hit / size, np.count_nonzero(got & ~truth) / size, 2 * hit / (np.count_nonzero(got) + size)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("kind", KINDS)
def test_one_seed_gives_the_lumen_and_any_seed_the_same(kind):
    made = phantom(kind)
    mask, report = segment_volume(made.volume(), "aorta_cta", [made.landmarks["ascending_aorta"]])
    got = mask.binary()
    recall, leakage, _ = scores(got, made.lumen)
    assert recall >= 0.97 and leakage <= 0.05, (kind, recall, leakage)
    assert report.holds == [], report.holds  # the aorta, as the preset describes it
    # every removed voxel is in one listed piece: the pieces add up to the removed volume
    cuts = report.leak_control.cuts
    assert sum(c.volume_ml for c in cuts) == pytest.approx(report.leak_control.removed_ml, abs=0.05 * len(cuts) + 0.05)
    removed = report.removed_pieces()
    if cuts:
        assert set(np.unique(removed)) - {0} == {c.piece for c in cuts}
        assert np.count_nonzero((removed > 0) & got) == 0
        # the left ventricle is among them, and the mask holds none of it
        assert np.count_nonzero(got & (made.labels == 2)) <= 0.01 * np.count_nonzero(made.labels == 2)
    for landmark in ("arch", "descending_aorta"):
        other, _ = segment_volume(made.volume(), "aorta_cta", [made.landmarks[landmark]])
        assert dice(other.binary(), got) >= 0.98, (kind, landmark)


# the thoracic aorta at 0.5 mm from the left ventricle to the arch's top, with the isthmus, the
# thrombosed stretch and the re-entry tear (at 0.5 mm the flap separates the lumina, and the
# false lumen below the thrombus joins only there); the heart whole: a chamber cut by the
# scan's edge is not a blob
FINE_FOV = ((-85.0, 95.0), (-50.0, 40.0), (-42.0, 50.0))


@pytest.mark.parametrize("kind", ["dissection", "coarctation", "touching"])
def test_fine_voxels(kind):
    made = phantom(kind, 0.5, FINE_FOV)
    mask, report = segment_volume(made.volume(), "aorta_cta", [made.landmarks["ascending_aorta"]])
    recall, leakage, _ = scores(mask.binary(), made.lumen)
    assert recall >= 0.97 and leakage <= 0.05, (kind, recall, leakage)


def test_touching_neighbours_are_removed_and_listed():
    made = phantom("touching")
    mask, report = segment_volume(made.volume(), "aorta_cta", [made.landmarks["ascending_aorta"]])
    got = mask.binary()
    removed = report.removed_pieces()
    for label in (6, 7, 8):  # pulmonary trunk, SVC, left atrium: each in a removed piece, not in the mask
        neighbour = made.labels == label
        assert np.count_nonzero(got & neighbour) <= 0.02 * np.count_nonzero(neighbour), label
        assert np.count_nonzero((removed > 0) & neighbour) >= 0.5 * np.count_nonzero(neighbour), label
    for cut in report.leak_control.cuts:
        assert set(vars(cut)) >= {"volume_ml", "centroid_lps_mm", "neck_lps_mm", "neck_radius_mm", "tubular"}


def test_two_include_seeds_are_both_kept():
    made = phantom("dissection")
    seeds = [made.landmarks["ascending_aorta"], made.landmarks["true_lumen"]]
    mask, report = segment_volume(made.volume(), "aorta_cta", seeds)
    got = mask.binary()
    for seed in report.seeds:
        assert seed.effect == "in the result"
        assert got[tuple(seed.index_kji)]
    assert scores(got, made.lumen)[0] >= 0.97


@pytest.mark.parametrize("kind", ["aneurysm", "dissection"])
def test_outer_wall_preset(kind):
    made = phantom(kind)
    mask, report = segment_volume(made.volume(), "aorta_wall_cta", [made.landmarks["ascending_aorta"]])
    assert dice(mask.binary(), made.wall) >= 0.90
    # the thrombus (an aneurysm's mural thrombus, a dissection's thrombosed false lumen) is in it
    thrombus = made.labels == 4
    # (measured: 0.93 of the aneurysm's thrombus, whose thin edges are lost; 0.95 of the dissection's)
    assert np.count_nonzero(mask.binary() & thrombus) >= 0.80 * np.count_nonzero(thrombus)


@pytest.mark.parametrize("spacing", [1.0, pytest.param(0.75, marks=pytest.mark.slow)])
def test_outer_wall_keeps_the_thrombus_at_fine_voxels(spacing):
    """At 1.25 mm voxels and finer the lumen's blurred edge (above the wall window, below the
    lumen's) is a voxel or more thick; the aneurysm's mural thrombus beyond it is still found
    (measured 0.86 of it at 1 and 0.75 mm; 0.24 when the edge cut it off)."""
    made = phantom("aneurysm", spacing)
    mask, report = segment_volume(made.volume(), "aorta_wall_cta", [made.landmarks["ascending_aorta"]])
    got, thrombus = mask.binary(), made.labels == 4
    assert report.cleanup.outer_wall.thrombus_voxels > 0
    assert np.count_nonzero(got & thrombus) >= 0.80 * np.count_nonzero(thrombus)
    assert dice(got, made.wall) >= 0.90


@pytest.mark.parametrize("landmark", ["left_ventricle", "vertebra"])
def test_a_blob_is_held_naming_the_place(landmark):
    made = phantom("aneurysm")
    _, report = segment_volume(made.volume(), "aorta_cta", [made.landmarks[landmark]])
    codes = [hold.code for hold in report.holds]
    assert "segment.result_is_a_blob" in codes
    hold = report.holds[codes.index("segment.result_is_a_blob")]
    assert hold.source == "segment" and "LPS (" in hold.reason
    assert report.to_dict()["holds"][0]["code"] == hold.code  # serialised with the report


def test_left_ventricle_seed_names_a_seed_in_the_aorta():
    made = phantom("aneurysm")
    _, report = segment_volume(made.volume(), "aorta_cta", [made.landmarks["left_ventricle"]])
    reason = next(h.reason for h in report.holds if h.code == "segment.result_is_a_blob")
    suggested = [float(v) for v in reason.split("a seed in the tube removed at LPS (")[1].split(")")[0].split(",")]
    index = tuple(np.rint(made.geometry.lps_to_index(suggested)).astype(int))
    assert made.labels[index] == 1  # the place it names is in the aorta


def test_a_tube_cut_by_an_exclude_seed_is_held():
    """An exclude seed low in the descending aorta cuts the aorta there: the kept tube ends away
    from the scan's edge next to a removed tube, and the model is held."""
    made = phantom("coarctation")
    _, report = segment_volume(made.volume(), "aorta_cta", [made.landmarks["ascending_aorta"]],
                               [made.landmarks["distal_descending_aorta"]])
    codes = {hold.code for hold in report.holds}
    assert codes & {"segment.removed_tube_continues", "segment.tube_ends_inside_scan"}, report.holds


def test_a_scan_without_contrast_is_refused_with_the_hu():
    made = phantom("aneurysm")
    hu = made.hu.copy()
    blood = (made.labels == 1) | (made.labels == 2)
    hu[blood] = (hu[blood] - 350 + 45).astype(np.int16)  # unenhanced blood, ~45 HU
    from pipeline.geometry import Volume

    with pytest.raises(SegmentationError, match=r"HU at the seed 4\d; an arterial phase needs at least 200 HU in the aorta"):
        segment_volume(Volume(hu, made.geometry), "aorta_cta", [made.landmarks["ascending_aorta"]])


def test_bad_seeds_are_refused_naming_the_seed():
    made = phantom("aneurysm")
    volume = made.volume()
    plaque = phantom("calcified").landmarks["plaque_0"]
    with pytest.raises(SegmentationError, match=r"include seed at LPS .* lies in bone(,| or) a calcification"):
        segment_volume(phantom("calcified").volume(), "aorta_cta", [plaque])
    lung = tuple(float(v) for v in (-58.0, 5.0, 40.0))
    with pytest.raises(SegmentationError, match=r"include seed at LPS \(-58.0, 5.0, 40.0\) mm .* air or lung"):
        segment_volume(volume, "aorta_cta", [lung])
    seed = made.landmarks["ascending_aorta"]
    with pytest.raises(SegmentationError, match=r"exclude seed at LPS .* lies .* mm from the include seed"):
        segment_volume(volume, "aorta_cta", [seed], [np.add(seed, (0.5, 0.0, 0.0))])


def test_exclude_seeds_report_their_effect():
    made = phantom("touching")
    seeds = [made.landmarks["ascending_aorta"]]
    outside = (0.0, 70.0, -60.0)  # soft tissue behind the spine, outside anything grown
    _, report = segment_volume(made.volume(), "aorta_cta", seeds, [made.landmarks["superior_vena_cava"], outside])
    effects = [s.effect for s in report.seeds if s.kind == "exclude"]
    assert effects[0] == "removed with the piece it lies in"
    assert effects[1].startswith("outside the grown region")
    assert any("had no effect" in w for w in report.warnings)


def test_exclude_seed_without_include_seeds_removes_its_component():
    """bone_ct keeps the largest component in the bone window, which in a CTA is the contrast-
    filled aorta and left ventricle; an exclude seed there removes it and the next largest, a
    vertebral body, is kept. An exclude seed in a component not kept says it had no effect."""
    from scipy import ndimage as ndi

    made = phantom("aneurysm")
    blood = (made.labels == 1) | (made.labels == 2)
    mask, report = segment_volume(made.volume(), "bone_ct", exclude_seeds_lps_mm=[made.landmarks["ascending_aorta"]])
    got = mask.binary()
    assert [s.effect for s in report.seeds] == ["removed with the piece it lies in"]
    assert np.count_nonzero(got & blood) == 0
    # what is kept is one vertebra with its blurred rim (within two voxels of the bone's truth)
    assert got.any() and not np.any(got & ~ndi.binary_dilation(made.labels == 3, iterations=2))
    removed = report.removed_pieces()
    assert np.count_nonzero((removed > 0) & made.lumen) >= 0.95 * np.count_nonzero(made.lumen)
    assert report.leak_control.cuts and report.leak_control.cuts[0].held_exclude_seed
    _, report = segment_volume(made.volume(), "bone_ct", exclude_seeds_lps_mm=[made.landmarks["vertebra"]])
    assert report.seeds[0].effect.startswith("outside the grown region")
    assert any("had no effect" in w for w in report.warnings)


def test_removed_pieces_are_drawn_in_cyan():
    import io

    from PIL import Image

    from pipeline.document.pictures import ct_slices_png

    made = phantom("aneurysm")
    mask, report = segment_volume(made.volume(), "aorta_cta", [made.landmarks["ascending_aorta"]])
    removed = report.removed_pieces()
    assert removed is not None and removed.any()
    # through the ventricle (the removed piece), so every slice crosses it
    centre = np.argwhere(removed > 0).mean(axis=0).round().astype(int)
    spot = np.zeros(removed.shape, np.uint8)
    spot[tuple(centre)] = 1
    probe = Mask(spot, mask.geometry, {1: "probe"}, {})
    pixels = np.asarray(Image.open(io.BytesIO(ct_slices_png(made.volume(), probe, removed=removed))).convert("RGB"))
    cyan = (pixels[..., 0] < 80) & (pixels[..., 1] > 180) & (pixels[..., 2] > 180)
    assert cyan.sum() > 50
    plain = np.asarray(Image.open(io.BytesIO(ct_slices_png(made.volume(), probe))).convert("RGB"))
    assert ((plain[..., 0] < 80) & (plain[..., 1] > 180) & (plain[..., 2] > 180)).sum() == 0


def test_command_line_shows_the_hold_and_the_report_keeps_it(tmp_path, capsys):
    import json

    from pipeline.cli import main
    from pipeline.geometry import write_volume

    made = phantom("aneurysm")
    source = write_volume(made.volume(), tmp_path / "ct.nii.gz")
    x, y, z = made.landmarks["left_ventricle"]
    code = main(["--quiet", "segment", str(source), "--preset", "aorta_cta", "--seed", str(x), str(y), str(z),
                 "--out", str(tmp_path / "m.nii.gz"), "--report", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 0 and "HOLD segment.result_is_a_blob" in " ".join(err.split())
    holds = json.loads((tmp_path / "r.json").read_text())["holds"]
    assert holds and holds[0]["code"] == "segment.result_is_a_blob" and holds[0]["source"] == "segment"
