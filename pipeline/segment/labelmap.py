"""Several structures into one label map, and label maps made in other tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import DicomError, GeometryError, SegmentationError
from pipeline.geometry import Geometry, Mask, is_image_file, read_mask


def combine_masks(masks: list[Mask]) -> Mask:
    """Merge masks of one grid into one label map; a later mask wins where two overlap.

    Each mask keeps its label values and names; two masks may not use the same value for
    different names. The overlap (voxels claimed twice) is recorded in the provenance.

    Parameters
    ----------
    masks : list of Mask
        Label maps on one grid (uint8 values, indexed ``(k, j, i)``), in order of priority (last wins).

    Returns
    -------
    Mask
        A uint8 label map on the first mask's grid with every label, its provenance listing the
        masks' labels and ``overlap_voxels``.

    Raises
    ------
    SegmentationError
        If ``masks`` is empty or one label value has two names (exit code 8).
    GeometryError
        If the masks are not on the same grid (exit code 7).
    """
    if not masks:
        raise SegmentationError("no masks to combine")
    geometry = masks[0].geometry
    array = np.zeros(geometry.shape, np.uint8)
    labels: dict[int, str] = {}
    overlap = 0
    for mask in masks:
        if not mask.geometry.same_grid(geometry):
            raise GeometryError("masks to combine must lie on the same grid (segment them from one volume)")
        for value, name in mask.labels.items():
            if value in labels and labels[value] != name:
                raise SegmentationError(
                    f"label {value} is used for both {labels[value]!r} and {name!r}; give each structure its own label")
            labels[value] = name
        present = mask.array > 0
        overlap += int(np.count_nonzero(present & (array > 0)))
        array[present] = mask.array[present]
    return Mask(array, geometry, labels, {"combined_from": [dict(m.labels) for m in masks], "overlap_voxels": overlap})


def resample_nearest(mask: Mask, reference: Geometry) -> Mask:
    """Mask resampled onto ``reference`` by nearest neighbour (label values are never blended).

    Parameters
    ----------
    mask : Mask
        The label map, on its own grid (LPS, mm).
    reference : Geometry
        The grid to resample onto (the volume's).

    Returns
    -------
    Mask
        A uint8 label map on ``reference`` (0 outside the source grid), the same labels, and the
        source geometry in its provenance as ``resampled_from``.
    """
    import SimpleITK as sitk

    moving = mask.geometry.to_sitk(sitk.GetImageFromArray(mask.array))
    target = reference.to_sitk(sitk.Image(*reversed(reference.shape), sitk.sitkUInt8))
    resampled = sitk.Resample(moving, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    provenance = dict(mask.provenance, resampled_from=mask.geometry.to_dict())
    return Mask(sitk.GetArrayFromImage(resampled), reference, dict(mask.labels), provenance)


def _read_dicom_seg(path: Path) -> Mask:
    """A DICOM Segmentation object (binary or fractional) as a label map on its own frame grid."""
    import highdicom as hd
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for a corrupt file
        raise DicomError(f"{path}: cannot be read as DICOM ({error})") from error
    if dataset.get("Modality") != "SEG":
        raise DicomError(f"{path}: is DICOM but not a Segmentation (Modality {dataset.get('Modality')!r})")
    seg = hd.seg.Segmentation.from_dataset(dataset)
    numbers = list(seg.segment_numbers)
    if max(numbers, default=0) > 255:
        raise SegmentationError(f"{path}: segment numbers above 255 cannot be stored in a label map")
    try:
        volume = seg.get_volume(segment_numbers=numbers, combine_segments=True, relabel=False)
    except (ValueError, RuntimeError) as error:
        raise GeometryError(f"{path}: the segmentation frames do not form a regular 3-D grid ({error})") from error
    # highdicom's volume is indexed (slice, row, column) with an affine to LPS, as Geometry is.
    affine = np.asarray(volume.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    array = np.asarray(volume.array).astype(np.uint8)
    geometry = Geometry(array.shape, tuple(spacing), tuple(affine[:3, 3]), tuple(tuple(r) for r in direction))
    names = {int(d.SegmentNumber): str(d.SegmentLabel) for d in seg.SegmentSequence}
    present = {int(v) for v in np.unique(array) if v}
    return Mask(array, geometry, {v: names.get(v, f"label_{v}") for v in sorted(present)},
                {"source_file": path.name, "source_format": "DICOM SEG"})


def import_label_map(path: str | Path, reference: Geometry | None = None) -> Mask:
    """Read a label map from NIfTI, NRRD/MHA or DICOM SEG, on ``reference``'s grid if given.

    A map on another grid than ``reference`` is resampled by nearest neighbour (and says so in
    its provenance), so a segmentation made in another tool can be meshed with this volume.

    Parameters
    ----------
    path : str or Path
        A NIfTI (``.nii``, ``.nii.gz``), NRRD or MHA image, or a DICOM Segmentation file.
    reference : Geometry, optional
        The volume's grid to put the map on; None keeps the map's own grid.

    Returns
    -------
    Mask
        The label map (uint8), labelled with the values present (DICOM SEG: the segment labels).

    Raises
    ------
    DicomError
        If the file does not exist, is not readable DICOM, or is DICOM but not a Segmentation (exit code 5).
    SegmentationError
        If the map holds no labelled voxel or a segment number is above 255 (exit code 8).
    GeometryError
        If the SEG frames do not form a regular 3-D grid, or the map does not overlap ``reference``
        (exit code 7).
    """
    path = Path(path)
    if not path.exists():
        raise DicomError(f"{path}: no such file")
    if is_image_file(path):
        mask = read_mask(path)
    else:
        mask = _read_dicom_seg(path)
    if not mask.labels:
        raise SegmentationError(f"{path}: the label map holds no labelled voxel")
    if reference is not None and not mask.geometry.same_grid(reference):
        mask = resample_nearest(mask, reference)
        if not mask.array.any():
            raise GeometryError(f"{path}: the label map does not overlap the volume's grid")
    return mask
