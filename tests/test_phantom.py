"""The synthetic CTA phantom: deterministic, faithful to its analytic anatomy, a real DICOM series."""

from __future__ import annotations

import hashlib

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from example_data import cta_phantom
from example_data.cta_phantom import analytic_volumes_mm3, make_phantom, write_dicom_series


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _z_centres(geometry):
    return geometry.origin[2] + geometry.spacing[0] * np.arange(geometry.shape[0])


def _x_centres(geometry):
    return geometry.origin[0] + geometry.spacing[2] * np.arange(geometry.shape[2])


def test_deterministic(phantom):
    again = make_phantom()
    assert hashlib.sha256(again.hu.tobytes()).digest() == hashlib.sha256(phantom.hu.tobytes()).digest()
    np.testing.assert_array_equal(again.labels, phantom.labels)
    other_seed = make_phantom(seed=1)
    assert not np.array_equal(other_seed.hu, phantom.hu)
    np.testing.assert_array_equal(other_seed.labels, phantom.labels)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_label_volumes_match_formulas(scale):
    made = phantom_at(scale)
    formulas = analytic_volumes_mm3()
    g = made.geometry
    z, x = _z_centres(g), _x_centres(g)
    aorta = made.labels == 1
    voxel = g.voxel_volume_mm3
    low, high = cta_phantom.ANEURYSM_Z
    aneurysm = aorta[(z > low) & (z < high)].sum() * voxel
    assert aneurysm == pytest.approx(formulas["aneurysm_segment"], rel=0.01)
    # The ascending and descending tubes are the only aorta at these heights; x = 8 mm separates them.
    slab = aorta[(z > -10) & (z < 40)]
    assert slab[:, :, x > 8].sum() * voxel == pytest.approx(formulas["descending_tube_-10_40"], rel=0.01)
    slab = aorta[(z > 10) & (z < 40)]
    assert slab[:, :, x < 8].sum() * voxel == pytest.approx(formulas["ascending_tube_10_40"], rel=0.01)
    assert (made.labels == 2).sum() * voxel == pytest.approx(formulas["left_ventricle"], rel=0.01)


_cache = {}


def phantom_at(scale):
    if scale not in _cache:
        _cache[scale] = make_phantom(scale)
    return _cache[scale]


def test_intensities_are_ct_like(phantom):
    hu, labels = phantom.hu, phantom.labels
    assert hu.dtype == np.int16
    # Away from boundaries (eroded truth), contrast ~350 HU with noise sigma 15-25 HU.
    from scipy import ndimage

    core = ndimage.binary_erosion(labels == 1, iterations=3)
    assert 330 < np.median(hu[core]) < 370
    assert 15 <= np.std(hu[core]) <= 25
    bone = labels == 3
    assert np.percentile(hu[bone], 99) > 700  # cortical shell
    cancellous = ndimage.binary_erosion(bone, iterations=4)
    assert 200 <= np.median(hu[cancellous]) <= 300
    assert np.median(hu[labels == 2]) > 300  # contrast in the ventricle too
    assert (hu < -800).mean() > 0.05  # lung and air present


def test_landmarks_lie_in_their_structures(phantom):
    expected = {"ascending_aorta": 1, "descending_aorta": 1, "aneurysm": 1, "arch": 1, "left_ventricle": 2,
                "vertebra": 3, "brachiocephalic": 1, "left_common_carotid": 1, "left_subclavian": 1}
    for name, label in expected.items():
        index = tuple(np.rint(phantom.geometry.lps_to_index(phantom.landmarks[name])).astype(int))
        assert phantom.labels[index] == label, name


def test_spine_is_a_few_mm_from_the_aorta(phantom):
    from scipy import ndimage

    distance_to_bone = ndimage.distance_transform_edt(phantom.labels != 3, sampling=phantom.geometry.spacing)
    gap = distance_to_bone[phantom.labels == 1].min()
    assert 2.0 <= gap <= 6.0


def test_dicom_series_is_real_and_out_of_order(tmp_path):
    made = make_phantom(0.5)
    paths = write_dicom_series(made, tmp_path / "series")
    datasets = [pydicom.dcmread(p) for p in paths]
    assert all(ds.SOPClassUID == pydicom.uid.CTImageStorage for ds in datasets)
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(paths)
    # File names and instance numbers do not follow the slice position.
    by_name = [ds.ImagePositionPatient[2] for _, ds in sorted(zip([p.name for p in paths], datasets))]
    assert by_name != sorted(by_name)
    for k, ds in enumerate(datasets):
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, made.hu[k])
    # An independent reader (ITK's GDCM series reader) places the volume where our geometry says.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "series")))
    image = reader.Execute()
    np.testing.assert_allclose(image.GetOrigin(), made.geometry.origin, atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), made.geometry.spacing[::-1], atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), made.hu)
    assert (tmp_path / "series" / "truth" / "labels.nii.gz").is_file()
