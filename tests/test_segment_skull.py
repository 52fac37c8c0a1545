"""Bone from the public skull phantom (Philips, dcm_qa_ct): one skull, no head holder, and the
same volume from the 1 mm and the 5 mm reconstructions of one acquisition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.load import load_series
from pipeline.segment import segment_volume


@pytest.fixture(scope="module")
def skulls(philips_dir):
    made = {}
    for name, folder in [("1mm", "S2020"), ("5mm", "S2010")]:
        volume, _ = load_series(philips_dir / "S21570" / folder)
        mask, report = segment_volume(volume, "bone_ct")
        made[name] = (volume, mask, report)
    return made


def _holder(volume):
    """The head holder: the bone-window (>= 200 HU) structure that runs out of the posterior
    edge of the images (it curves under the head, the skull lies well inside the field)."""
    pieces, _ = ndi.label(volume.array >= 200)
    touching = np.unique(pieces[:, -1, :])
    touching = touching[touching > 0]
    sizes = np.bincount(pieces.ravel())
    return pieces == touching[np.argmax(sizes[touching])], pieces


@pytest.mark.parametrize("name", ["1mm", "5mm"])
def test_the_skull_is_one_component_without_the_holder(skulls, name):
    volume, mask, report = skulls[name]
    got = mask.binary()
    _, count = ndi.label(got)
    assert count == 1 and report.components == 1
    holder, pieces = _holder(volume)
    holder_ml = np.count_nonzero(holder) * volume.geometry.voxel_volume_mm3 / 1000
    assert holder_ml > 50
    assert np.count_nonzero(got & holder) == 0
    # the skull is most of the rest of the bone window, not a fragment
    assert np.count_nonzero(got) > 0.9 * np.count_nonzero((pieces > 0) & ~holder)


def test_volume_agrees_between_1mm_and_5mm_slices(skulls):
    _, _, thin = skulls["1mm"]
    _, _, thick = skulls["5mm"]
    # Partial volume is real: 5 mm slices average the thin skull vault with air, and a plain
    # voxel count loses much of it ...
    assert thick.volume_ml < 0.9 * thin.volume_ml
    # ... while counting surface voxels by their filled fraction recovers it.
    a, b = thin.volume_ml_partial_volume, thick.volume_ml_partial_volume
    assert abs(a - b) / a <= 0.10
    # the partial-volume estimate of the thin slices stays close to their voxel count
    assert abs(a - thin.volume_ml) / thin.volume_ml <= 0.10
