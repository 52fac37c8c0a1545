"""Several structures into one label map; label maps from other tools (NIfTI, NRRD, DICOM SEG)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.errors import DicomError, GeometryError, SegmentationError
from pipeline.geometry import Geometry, Mask, write_image
from pipeline.load import load_series
from pipeline.segment import combine_masks, import_label_map, segment_volume


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory):
    """The phantom at 2.5 mm voxels, written as DICOM and loaded back like a user's series."""
    phantom = make_phantom(0.4, seed=0)
    folder = tmp_path_factory.mktemp("phantom_dicom")
    write_dicom_series(phantom, folder, with_truth=False)
    volume, _ = load_series(folder)
    return phantom, volume, folder


def test_combine_masks_of_one_case():
    geometry = Geometry((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    first = np.zeros(geometry.shape, np.uint8)
    first[1:3, 1:3, 1:3] = 1
    second = np.zeros(geometry.shape, np.uint8)
    second[2:4, 2:4, 2:4] = 2
    combined = combine_masks([Mask(first, geometry, {1: "aorta"}), Mask(second, geometry, {2: "heart"})])
    assert combined.labels == {1: "aorta", 2: "heart"}
    assert combined.voxel_count(1) == 8 - 1 and combined.voxel_count(2) == 8  # later wins the overlap
    assert combined.provenance["overlap_voxels"] == 1
    with pytest.raises(SegmentationError, match="label 1 is used for both"):
        combine_masks([Mask(first, geometry, {1: "aorta"}), Mask(first, geometry, {1: "heart"})])
    other = Geometry((4, 5, 6), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(GeometryError, match="same grid"):
        combine_masks([Mask(first, geometry), Mask(first, other)])


def test_segmented_structures_combine_into_one_label_map():
    phantom = make_phantom(0.6, seed=0)
    volume = phantom.volume()
    aorta, _ = segment_volume(volume, "aorta_cta", [phantom.landmarks["ascending_aorta"]], label=1)
    heart, _ = segment_volume(volume, "heart_bloodpool_cta", [phantom.landmarks["left_ventricle"]],
                              [phantom.landmarks["ascending_aorta"]], label=2)
    combined = combine_masks([aorta, heart])
    assert combined.labels == {1: "aorta", 2: "heart_bloodpool"}
    assert combined.voxel_count(1) > 0 and combined.voxel_count(2) > 0
    # the two structures were split apart: they barely overlap
    assert combined.provenance["overlap_voxels"] <= 0.01 * combined.voxel_count()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_import_label_map_on_the_same_grid(small_phantom, tmp_path, suffix):
    phantom, volume, _ = small_phantom
    path = write_image(phantom.labels, volume.geometry, tmp_path / f"labels{suffix}")
    mask = import_label_map(path, reference=volume.geometry)
    assert mask.geometry.same_grid(volume.geometry)
    np.testing.assert_array_equal(mask.array, phantom.labels)
    assert set(mask.labels) == set(np.unique(phantom.labels).tolist()) - {0}  # aorta, LV, vertebrae, thrombus


def test_import_label_map_on_another_grid_is_resampled(small_phantom, tmp_path):
    phantom, volume, _ = small_phantom
    g = volume.geometry
    # the same labels on a grid of half the voxels along every axis (every other voxel)
    coarse = Geometry(tuple(-(-n // 2) for n in g.shape), tuple(2 * s for s in g.spacing), g.origin, g.direction)
    path = write_image(phantom.labels[::2, ::2, ::2], coarse, tmp_path / "coarse.nii.gz")
    mask = import_label_map(path, reference=g)
    assert mask.geometry.same_grid(g) and "resampled_from" in mask.provenance
    # nearest neighbour: voxels that were sampled keep their label exactly
    np.testing.assert_array_equal(mask.array[::2, ::2, ::2], phantom.labels[::2, ::2, ::2])
    agreement = np.mean(mask.array == phantom.labels)
    assert agreement > 0.97


def test_import_dicom_seg(small_phantom, tmp_path):
    import highdicom as hd

    phantom, volume, folder = small_phantom
    normal = volume.geometry.slice_normal
    sources = sorted((pydicom.dcmread(p) for p in folder.iterdir() if p.is_file()),
                     key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))
    algorithm = hd.AlgorithmIdentificationSequence(
        name="test", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing"))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=name,
            segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
            segmented_property_type=hd.sr.CodedConcept("15825003", "SCT", "Aorta"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm_identification=algorithm)
        for number, name in [(1, "aorta"), (2, "left_ventricle")]
    ]
    labels = np.where(phantom.labels <= 2, phantom.labels, 0).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    mask = import_label_map(path, reference=volume.geometry)
    assert mask.labels == {1: "aorta", 2: "left_ventricle"}
    np.testing.assert_array_equal(mask.array, labels)


def test_import_refuses_bad_files(tmp_path, small_phantom):
    _, volume, folder = small_phantom
    with pytest.raises(DicomError, match="no such file"):
        import_label_map(tmp_path / "missing.nii.gz")
    ct_slice = next(p for p in folder.iterdir() if p.is_file())
    with pytest.raises(DicomError, match="not a Segmentation"):
        import_label_map(ct_slice)
    empty = write_image(np.zeros((4, 4, 4), np.uint8), Geometry((4, 4, 4), (1, 1, 1), (0, 0, 0)), tmp_path / "e.nii.gz")
    with pytest.raises(SegmentationError, match="no labelled voxel"):
        import_label_map(empty)
    far = write_image(np.ones((4, 4, 4), np.uint8), Geometry((4, 4, 4), (1, 1, 1), (5000, 0, 0)), tmp_path / "f.nii.gz")
    with pytest.raises(GeometryError, match="does not overlap"):
        import_label_map(far, reference=volume.geometry)
