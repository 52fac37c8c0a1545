"""Bone from the public skull phantom (Philips, dcm_qa_ct): one skull, no head holder, and the
same volume from the 1 mm and the 5 mm reconstructions of one acquisition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.load import load_series
from pipeline.segment import segment


@pytest.fixture(scope="module")
def skulls(philips_dir):
    made = {}
    for name, folder in [("1mm", "S2020"), ("5mm", "S2010")]:
        volume, _ = load_series(philips_dir / "S21570" / folder)
        mask, report = segment(volume, "bone_ct")
        made[name] = (volume, mask, report)
    return made


def _holder_voxel(volume):
    """The head holder under the skull: in the middle slice, the most posterior voxel above
    500 HU along the central image column (the skull lies in front of it, the table is air here)."""
    k = volume.geometry.shape[0] // 2
    i = volume.geometry.shape[2] // 2
    rows = np.flatnonzero(volume.array[k, :, i] > 500)
    return k, int(rows.max()), i


@pytest.mark.parametrize("name", ["1mm", "5mm"])
def test_the_skull_is_one_component_without_the_holder(skulls, name):
    volume, mask, report = skulls[name]
    got = mask.binary()
    _, count = ndi.label(got)
    assert count == 1 and report.components == 1
    holder = _holder_voxel(volume)
    # the holder is a structure of its own in the bone window, and none of it is in the mask
    bone_window = volume.array >= 200
    pieces, _ = ndi.label(bone_window)
    holder_piece = pieces == pieces[holder]
    assert np.count_nonzero(holder_piece) > 10_000
    assert np.count_nonzero(got & holder_piece) == 0
    # and the skull is most of the bone window (not a fragment)
    assert np.count_nonzero(got) > 0.6 * np.count_nonzero(bone_window & ~holder_piece)


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
