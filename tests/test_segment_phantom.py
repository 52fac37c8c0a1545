"""The aorta of the synthetic CTA phantom from one click, scored against its analytic labels.

Labels: 1 aorta (root, annulus, arch branches, descending aorta with its aneurysm), 2 the
left-ventricle blood pool (same contrast, joined through the annulus), 3 vertebrae.
"""

from __future__ import annotations

import numpy as np
import pytest

from example_data.cta_phantom import make_phantom
from pipeline.segment import segment_volume

AORTA, VENTRICLE, BONE = 1, 2, 3


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(1.0, seed=0)


def _score(mask, labels):
    got = mask.binary()
    truth = labels == AORTA
    dice = 2 * np.count_nonzero(got & truth) / (np.count_nonzero(got) + np.count_nonzero(truth))
    ventricle_share = np.count_nonzero(got & (labels == VENTRICLE)) / np.count_nonzero(got)
    return dice, ventricle_share, np.count_nonzero(got & (labels == BONE))


def test_one_seed_in_the_ascending_aorta(phantom):
    mask, report = segment_volume(phantom.volume(), "aorta_cta", [phantom.landmarks["ascending_aorta"]])
    dice, ventricle_share, bone = _score(mask, phantom.labels)
    assert dice >= 0.95
    assert ventricle_share <= 0.05
    assert bone == 0
    # leak control found the ventricle behind the annulus and says so
    cut = report.leak_control.cuts[0]
    assert cut.neck_radius_mm < cut.widest_radius_mm
    lv = np.asarray(phantom.landmarks["left_ventricle"])
    assert np.linalg.norm(np.asarray(cut.centroid_lps_mm) - lv) < 10.0
    truth_lv_ml = np.count_nonzero(phantom.labels == VENTRICLE) * phantom.geometry.voxel_volume_mm3 / 1000
    assert cut.volume_ml == pytest.approx(truth_lv_ml, rel=0.25)
    assert report.bone_separation.barrier_ml > 0
    assert report.components == 1


def test_exclude_seed_in_the_ventricle(phantom):
    mask, report = segment_volume(phantom.volume(), "aorta_cta", [phantom.landmarks["ascending_aorta"]],
                                  [phantom.landmarks["left_ventricle"]])
    dice, ventricle_share, bone = _score(mask, phantom.labels)
    assert dice >= 0.95 and ventricle_share <= 0.05 and bone == 0
    assert any(cut.held_exclude_seed for cut in report.leak_control.cuts)


def test_exclude_seed_alone_splits_at_the_annulus(phantom):
    """Competitive growth without automatic leak control still stops at the annulus."""
    mask, _ = segment_volume(phantom.volume(), "aorta_cta", [phantom.landmarks["ascending_aorta"]],
                             [phantom.landmarks["left_ventricle"]], overrides={"leak_control.mode": "off"})
    dice, ventricle_share, bone = _score(mask, phantom.labels)
    assert dice >= 0.95 and ventricle_share <= 0.05 and bone == 0


def test_plain_threshold_growth_takes_the_ventricle(phantom):
    """What leak control is for: without it (and without exclude seeds) the ventricle joins."""
    mask, _ = segment_volume(phantom.volume(), "aorta_cta", [phantom.landmarks["ascending_aorta"]],
                             overrides={"leak_control.mode": "off"})
    _, ventricle_share, _ = _score(mask, phantom.labels)
    assert ventricle_share > 0.15


@pytest.mark.parametrize("landmark", ["descending_aorta", "aneurysm", "arch"])
def test_any_seed_in_the_aorta_gives_the_aorta(phantom, landmark):
    mask, _ = segment_volume(phantom.volume(), "aorta_cta", [phantom.landmarks[landmark]])
    dice, ventricle_share, bone = _score(mask, phantom.labels)
    assert dice >= 0.95 and ventricle_share <= 0.05 and bone == 0


def test_seed_in_the_ventricle_gives_the_heart_bloodpool(phantom):
    mask, _ = segment_volume(phantom.volume(), "heart_bloodpool_cta", [phantom.landmarks["left_ventricle"]],
                             [phantom.landmarks["ascending_aorta"]])
    got, truth = mask.binary(), phantom.labels == VENTRICLE
    dice = 2 * np.count_nonzero(got & truth) / (np.count_nonzero(got) + np.count_nonzero(truth))
    assert dice >= 0.9
