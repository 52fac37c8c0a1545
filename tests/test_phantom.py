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


# --- the phantom family: each kind's pathology, measured on its truth and its HU ------------
_kinds: dict = {}


def kind_at(kind, spacing=1.0, fov=None):
    if (kind, spacing, fov) not in _kinds:
        _kinds[kind, spacing, fov] = make_phantom(kind=kind, spacing_mm=spacing, field_of_view_mm=fov)
    return _kinds[kind, spacing, fov]


def _slice_at(made, z):
    return int(round(made.geometry.lps_to_index((0.0, 0.0, z))[0]))


def test_dissection_true_lumen_false_lumen_and_thrombus():
    from scipy import ndimage

    made = kind_at("dissection")
    g = made.geometry
    # the true lumen in the thrombosed stretch is a 3-5 mm crescent: its thickness along the
    # flap's normal, measured on the truth, on slices through that stretch
    u = cta_phantom._away_from_spine()
    widths = []
    for z in (-50.0, -35.0, -20.0, -5.0, 10.0):
        k = _slice_at(made, z)
        j, i = np.nonzero(made.lumen[k])
        points = g.index_to_lps(np.stack([np.full(j.size, k), j, i], axis=1))
        t = (points[:, 0] - cta_phantom.DESCENDING_XY[0]) * u[0] + (points[:, 1] - cta_phantom.DESCENDING_XY[1]) * u[1]
        near_descending = np.hypot(points[:, 0] - cta_phantom.DESCENDING_XY[0],
                                   points[:, 1] - cta_phantom.DESCENDING_XY[1]) < 20
        widths.append(t[near_descending].max() - t[near_descending].min() + g.spacing[1])
    assert 2.0 <= min(widths) and max(widths) <= 6.0  # 3-5 mm, +-1 voxel of quantisation
    false_lumen_hu = np.median(made.hu[ndimage.binary_erosion(made.lumen, iterations=2)
                                       & (np.abs(_z_centres(g) - 30)[:, None, None] < 8)
                                       & (np.hypot(*np.meshgrid(_x_centres(g) - cta_phantom.DESCENDING_XY[0] + 5 * u[0],
                                                                g.origin[1] + g.spacing[1] * np.arange(g.shape[1])
                                                                - cta_phantom.DESCENDING_XY[1] + 5 * u[1],
                                                                indexing="xy")) < 5)[None]])
    assert 150 <= false_lumen_hu <= 300
    thrombus = ndimage.binary_erosion(made.labels == 4, iterations=2)
    assert np.median(made.hu[thrombus]) < 60
    # the entry tear joins the lumina: true and false lumen are one component of the truth
    labels, _ = ndimage.label(made.lumen)
    at = lambda name: labels[tuple(np.rint(g.lps_to_index(made.landmarks[name])).astype(int))]
    assert at("true_lumen") == at("false_lumen") == at("ascending_aorta") != 0
    assert made.wall[made.labels == 4].all()  # the thrombus lies inside the outer wall


def test_coarctation_isthmus_is_40_percent_of_the_diameter():
    made = kind_at("coarctation", 0.5, ((20.0, 40.0), (0.0, 45.0), (0.0, 45.0)))
    area = np.count_nonzero(made.lumen[_slice_at(made, cta_phantom.COARCTATION_Z)] &
                            (_x_centres(made.geometry) > 8)[None, :]) * made.geometry.spacing[1] * made.geometry.spacing[2]
    diameter = 2 * np.sqrt(area / np.pi)
    assert diameter / (2 * cta_phantom.DESCENDING_RADIUS) == pytest.approx(0.4, abs=0.04)


@pytest.mark.parametrize("label", [6, 7, 8])
def test_touching_neighbours_are_within_a_voxel_of_the_aorta(label):
    from scipy import ndimage

    made = kind_at("touching", 1.5)
    to_aorta = ndimage.distance_transform_edt(~made.lumen, sampling=made.geometry.spacing)
    assert to_aorta[made.labels == label].min() <= max(made.geometry.spacing)


def test_open_valve_annulus_narrower_than_the_root():
    assert cta_phantom.anatomy("open_valve").annulus_radius / cta_phantom.ASCENDING_RADIUS == pytest.approx(0.82, abs=0.01)
    assert cta_phantom.anatomy("open_valve").annulus_radius > cta_phantom.anatomy("aneurysm").annulus_radius


def test_bolus_falls_150_hu_and_the_svc_is_dense():
    from scipy import ndimage

    made = kind_at("bolus", 1.5)
    core = ndimage.binary_erosion(made.lumen, iterations=2)
    z = _z_centres(made.geometry)[:, None, None]
    x = _x_centres(made.geometry)[None, None, :]
    ascending = np.median(made.hu[core & (z > 5) & (z < 15) & (x < 8)])
    distal = np.median(made.hu[core & (z < -85)])
    assert 120 <= ascending - distal <= 170
    assert np.median(made.hu[ndimage.binary_erosion(made.labels == 7, iterations=2)]) > 1000


def test_calcified_plaques_are_dense_and_out_of_the_lumen():
    made = kind_at("calcified")
    plaque = made.labels == 5
    assert plaque.any() and np.percentile(made.hu[plaque], 75) > 700
    assert not (plaque & made.lumen).any() and made.wall[plaque].mean() >= 0.95  # in the wall, out of the lumen


@pytest.mark.parametrize("kind, cortex_range", [("spine", (500, 1000)), ("spine_osteoporotic", (-1000, 400))])
def test_spine_kinds_sit_close_with_their_cortex(kind, cortex_range):
    from scipy import ndimage

    made = kind_at(kind, 0.5, ((-40.0, 0.0), (5.0, 65.0), (-20.0, 40.0)))  # descending aorta and spine
    bone = made.labels == 3
    gap = ndimage.distance_transform_edt(~bone, sampling=made.geometry.spacing)[made.lumen].min()
    assert 1.0 <= gap <= 3.0
    shell = bone & ~ndimage.binary_erosion(bone, iterations=2)  # the outer 1 mm: the cortex
    assert cortex_range[0] <= np.median(made.hu[shell & ndimage.binary_erosion(bone)]) <= cortex_range[1]


def test_phantom_command_writes_a_kind_with_its_truth(tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.geometry import read_image

    assert main(["phantom", str(tmp_path / "c"), "--kind", "coarctation", "--spacing", "4"]) == 0
    truth = tmp_path / "c" / "truth"
    meta = __import__("json").loads((truth / "truth.json").read_text())
    assert meta["kind"] == "coarctation" and "isthmus" in meta["landmarks_lps_mm"]
    lumen, wall = read_image(truth / "lumen.nii.gz"), read_image(truth / "wall.nii.gz")
    assert lumen[0].shape == wall[0].shape and (wall[0][lumen[0] > 0] > 0).mean() > 0.97
    assert main(["phantom", str(tmp_path / "x"), "--kind", "nope"]) == 4
    assert "choose one of" in capsys.readouterr().err
