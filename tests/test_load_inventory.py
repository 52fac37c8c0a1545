"""Inventory and automatic series choice on the real Philips study folder (index files included)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from pipeline.errors import SeriesSelectionError
from pipeline.load import inventory


def _uid_of(folder: Path) -> str:
    first = next(p for p in sorted(folder.iterdir()) if p.name != "DIRFILE")
    return str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)


@pytest.fixture(scope="module")
def philips(philips_dir):
    return inventory(philips_dir)


def test_every_series_found_with_counts(philips, philips_dir):
    by_folder = {s.folders[0]: s for s in philips.series}
    assert set(by_folder) == {
        "S21570/S1000", "S21570/S2010", "S21570/S2020", "S21570/S4010",
        "S21610/S1000", "S21610/S2010", "S21610/S3010", "S21610/S4010",
    }
    for folder, info in by_folder.items():
        files = [p for p in (philips_dir / folder).iterdir() if p.name != "DIRFILE"]
        assert info.instances == len(files), folder
        assert info.series_instance_uid == _uid_of(philips_dir / folder)
    # DICOMDIR plus one DIRFILE per study and per series folder.
    index_files = [p for p in philips_dir.rglob("*") if p.name in ("DICOMDIR", "DIRFILE")]
    assert philips.skipped_index_files == len(index_files) == 11
    assert philips.skipped_non_dicom == 0


def test_auto_picks_the_1mm_series(philips, philips_dir):
    assert philips.chosen == _uid_of(philips_dir / "S21570" / "S2020")
    assert "1.0 mm" in philips.chosen_reason
    chosen = philips.get(philips.chosen)
    assert chosen.slice_thickness_mm == 1.0 and chosen.slices == 140
    assert not philips.ambiguous
    assert any("2 studies" in note for note in philips.notes)


def test_localizers_and_exam_summaries_unusable_with_reason(philips):
    by_folder = {s.folders[0]: s for s in philips.series}
    for study in ("S21570", "S21610"):
        localizer = by_folder[f"{study}/S1000"]
        assert not localizer.usable and "localizer" in localizer.reasons[0]
        summary = by_folder[f"{study}/S4010"]
        assert not summary.usable and "secondary capture" in summary.reasons[0]
    for folder in ("S21570/S2010", "S21570/S2020", "S21610/S2010", "S21610/S3010"):
        assert by_folder[folder].usable and by_folder[folder].auto_candidate


def test_series_fields(philips):
    by_folder = {s.folders[0]: s for s in philips.series}
    tilted = by_folder["S21610/S2010"]
    assert tilted.gantry_tilt_deg == -18.5
    assert abs(tilted.tilt_from_geometry_deg) == pytest.approx(18.5, abs=0.05)
    # 2.5 mm table steps along z are 2.5 * cos(18.5 deg) along the tilted slice normal.
    assert tilted.spacing_between_slices_min_mm == pytest.approx(2.5 * 0.9483237, abs=1e-3)
    assert tilted.matrix == [512, 512] and tilted.convolution_kernel == "UB"
    assert tilted.transfer_syntaxes == ["Explicit VR Little Endian"]
    assert by_folder["S21610/S3010"].gantry_tilt_deg == 16.5
    data = json.loads(philips.to_json())
    assert data["chosen"] == philips.chosen and len(data["series"]) == 8
    assert "PatientName" not in philips.to_json() and "HEAD" not in philips.to_json()


def test_selection_by_number_and_uid(philips, philips_dir):
    info, how = philips.select("202")
    assert info.series_instance_uid == _uid_of(philips_dir / "S21570" / "S2020") and "number" in how
    uid = _uid_of(philips_dir / "S21610" / "S3010")
    assert philips.select(uid)[0].series_number == 301
    with pytest.raises(SeriesSelectionError, match="matches 2 series"):
        philips.select(201)  # the number exists in both studies
    with pytest.raises(SeriesSelectionError, match="no series with series number 999"):
        philips.select(999)
    with pytest.raises(SeriesSelectionError, match="localizer"):
        philips.select(_uid_of(philips_dir / "S21570" / "S1000"))


def test_identical_reconstructions_are_ambiguous(philips_dir, tmp_path):
    """Two copies of a series differing only in UID tie on every criterion: auto refuses."""
    source = philips_dir / "S21570" / "S2010"
    for copy, uid in (("a", "1.2.826.0.1.3680043.8.498.1001"), ("b", "1.2.826.0.1.3680043.8.498.1002")):
        (tmp_path / copy).mkdir()
        for path in sorted(source.glob("I*")):
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = f"{uid}.{ds.InstanceNumber}"
            ds.save_as(tmp_path / copy / path.name)
    shutil.copy(philips_dir / "DICOMDIR", tmp_path / "DICOMDIR")
    found = inventory(tmp_path)
    assert found.chosen is None and found.ambiguous
    assert any("ambiguous" in note for note in found.notes)
    with pytest.raises(SeriesSelectionError, match="ambiguous"):
        found.select("auto")


def test_ranking_criteria(philips, philips_dir):
    """Contrast/angio hints first, then thin slices, then the wanted kernel, then coverage."""
    from dataclasses import replace

    from pipeline.load.inventory import choose, kernel_class

    by_folder = {s.folders[0]: s for s in philips.series}
    thin, thick = by_folder["S21570/S2020"], by_folder["S21570/S2010"]
    assert choose([thick, thin])[0] == thin.series_instance_uid
    angio_thick = replace(thick, angio_hint=True)
    assert choose([thin, angio_thick])[0] == thick.series_instance_uid
    bone_thin = replace(thin, series_instance_uid="bone", convolution_kernel="BONEPLUS", kernel_class="bone")
    soft_thin = replace(thin, slice_thickness_mm=1.25)
    assert choose([bone_thin, soft_thin])[0] == soft_thin.series_instance_uid
    assert choose([bone_thin, soft_thin], prefer_bone=True)[0] == "bone"
    # A bone kernel at 1 mm still beats a soft one at 5 mm: thin slices come first.
    assert choose([bone_thin, thick])[0] == "bone"
    short = replace(thin, series_instance_uid="short", coverage_mm=40.0)
    assert choose([short, thin])[0] == thin.series_instance_uid
    kernels = {"B30f": "soft", "Br64": "bone", "BONE": "bone", "STANDARD": "soft", "UB": "soft",
               "FC03": "soft", "FC52": "bone", "LUNG": "bone", "YC": "bone", "B": "soft"}
    assert {kernel: kernel_class(kernel) for kernel in kernels} == kernels
