"""The mask clean-up kept hand-written gives scikit-image's results (and the counts it lacks)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import morphology

from pipeline.segment.cleanup import drop_islands, fill_holes


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    """Smoothed noise above a level: islands and holes of every size, many touching the faces."""
    return ndi.gaussian_filter(np.random.default_rng(0).random((60, 70, 80)), 1.5) > 0.52


@pytest.mark.parametrize("size", [2, 20, 300])
def test_drop_islands_is_remove_small_objects(blobs, size):
    kept, removed = drop_islands(blobs, size)
    assert np.array_equal(kept, morphology.remove_small_objects(blobs, max_size=size - 1, connectivity=1))
    sizes = np.bincount(ndi.label(blobs)[0].ravel())[1:]
    assert removed == np.count_nonzero(sizes < size) > 0


@pytest.mark.parametrize("size", [5, 50, None])
def test_fill_holes_is_remove_small_holes_away_from_the_faces(blobs, size):
    solid = ~blobs  # mostly foreground: holes of every size, many touching the faces
    filled, added = fill_holes(solid, size)
    # skimage also fills small background that touches the array's faces: pad so none does (the
    # padded outside is at least the padding shell; every enclosed hole here is smaller)
    shell = np.pad(solid, 1).size - solid.size
    limit = shell - 1 if size is None else size
    padded = morphology.remove_small_holes(np.pad(solid, 1), max_size=limit, connectivity=1)[1:-1, 1:-1, 1:-1]
    assert np.array_equal(filled, padded)
    assert added == np.count_nonzero(filled & ~solid) > 0
