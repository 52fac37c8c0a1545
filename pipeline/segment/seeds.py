"""Seeds: LPS millimetres or voxel indices, checked against the volume and the HU window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from pipeline.errors import SegmentationError
from pipeline.geometry import Geometry, Volume, format_lps


@dataclass
class Seed:
    """A seed as given and as placed on the grid."""

    kind: str  # "include" or "exclude"
    index: tuple[int, int, int]  # array (k, j, i)
    lps_mm: tuple[float, float, float]
    given_as: str  # "lps_mm" or "index"
    hu: float = float("nan")  # median HU of the 3x3x3 voxels around the seed

    def describe(self) -> str:
        """``include seed at LPS (x, y, z) mm``.

        Returns
        -------
        str
            The kind and LPS position to 0.1 mm, e.g. ``include seed at LPS (12.0, -40.5, 80.0) mm``.
        """
        x, y, z = self.lps_mm
        return f"{self.kind} seed at LPS ({x:.1f}, {y:.1f}, {z:.1f}) mm"

    def to_dict(self) -> dict:
        """The seed for a JSON report.

        Returns
        -------
        dict
            ``kind``, ``index_kji``, ``lps_mm`` (mm, rounded to 0.01), ``given_as`` and ``hu``.
        """
        return {"kind": self.kind, "index_kji": list(self.index), "lps_mm": [round(v, 2) for v in self.lps_mm],
                "given_as": self.given_as, "hu": self.hu}


def _extent(geometry: Geometry) -> str:
    low, high = geometry.bounds_lps()
    return ("x {:.1f}..{:.1f}, y {:.1f}..{:.1f}, z {:.1f}..{:.1f} mm (LPS)"
            .format(low[0], high[0], low[1], high[1], low[2], high[2]))


def resolve_seeds(volume: Volume, kind: str, lps_points: Iterable, index_points: Iterable) -> list[Seed]:
    """Place seeds on the grid, refusing any outside the volume with the volume's extent.

    Parameters
    ----------
    volume : Volume
        The CT volume (HU array indexed ``(k, j, i)``, with its geometry).
    kind : {"include", "exclude"}
        What the seeds are for (stored on each seed, used in messages).
    lps_points : iterable of sequence of float
        Seeds as LPS coordinates in mm (x to the patient's left, y posterior, z superior); each is
        placed on the nearest voxel.
    index_points : iterable of sequence of int
        Seeds as voxel indices ``(k, j, i)``.

    Returns
    -------
    list of Seed
        The LPS seeds then the index seeds, in the order given, each with its ``hu``: the median HU
        of the (up to) 3 x 3 x 3 voxels around it.

    Raises
    ------
    SegmentationError
        If a point is not three finite coordinates, an index is not three whole numbers, or a seed
        lies outside the volume (the message gives the volume's extent) (exit code 8).
    """
    geometry = volume.geometry
    seeds = []
    for point in lps_points:
        point = np.asarray(point, dtype=float).reshape(-1)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise SegmentationError(f"{kind} seed {point.tolist()} is not three finite LPS coordinates (mm)")
        index = geometry.lps_to_index(point)
        if not geometry.contains_index(index):
            raise SegmentationError(
                f"{kind} seed at {format_lps(point)} lies outside the volume, "
                f"which spans {_extent(geometry)}",
                hint="check the seed's coordinates (LPS: x to the patient's left, y posterior, z superior)",
            )
        nearest = np.clip(np.rint(index).astype(int), 0, np.asarray(geometry.shape) - 1)
        seeds.append(Seed(kind, tuple(int(v) for v in nearest), tuple(float(v) for v in point), "lps_mm"))
    for index in index_points:
        index = np.asarray(index).reshape(-1)
        if index.shape != (3,) or not np.all(np.equal(np.mod(index, 1), 0)):
            raise SegmentationError(f"{kind} seed index {index.tolist()} is not three whole numbers (k, j, i)")
        index = index.astype(int)
        if np.any(index < 0) or np.any(index >= np.asarray(geometry.shape)):
            raise SegmentationError(
                f"{kind} seed index (k, j, i) = {tuple(index.tolist())} lies outside the volume of "
                f"{geometry.shape[0]} x {geometry.shape[1]} x {geometry.shape[2]} voxels"
            )
        lps = geometry.index_to_lps(index)
        seeds.append(Seed(kind, tuple(int(v) for v in index), tuple(float(v) for v in lps), "index"))
    for seed in seeds:
        k, j, i = seed.index
        around = volume.array[max(k - 1, 0):k + 2, max(j - 1, 0):j + 2, max(i - 1, 0):i + 2]
        seed.hu = float(np.median(around))
    return seeds


def check_contrast(seeds: list[Seed], min_contrast_hu: float | None, structure: str) -> None:
    """Refuse a contrast preset on a scan whose HU at an include seed shows no contrast.

    Parameters
    ----------
    seeds : list of Seed
        The include seeds (with their ``hu``).
    min_contrast_hu : float or None
        Least HU an arterial phase shows in the structure; None skips the check. Seeds below
        -300 HU (air) are left to :func:`check_in_window`.
    structure : str
        The structure's name, for the message.

    Raises
    ------
    SegmentationError
        If a seed's HU is in -300..``min_contrast_hu`` (exit code 8).
    """
    if min_contrast_hu is None:
        return
    for seed in seeds:
        if -300 <= seed.hu < min_contrast_hu:
            raise SegmentationError(
                f"{seed.describe()}: HU at the seed {seed.hu:.0f}; an arterial phase needs at least "
                f"{min_contrast_hu:.0f} HU in the {structure}: this scan has no arterial contrast there, "
                "or the seed lies outside the lumen",
                hint="use an arterial-phase CTA, or move the seed into the contrast-filled lumen")


def check_in_window(seeds: list[Seed], lower: float, upper: float, preset_name: str) -> None:
    """Refuse an include seed whose HU lies outside the window, saying both and what it hit.

    Parameters
    ----------
    seeds : list of Seed
        The include seeds (with their ``hu``).
    lower : float
        The window's lower bound in HU (inclusive).
    upper : float
        The window's upper bound in HU (inclusive).
    preset_name : str
        The preset's name, for the message.

    Raises
    ------
    SegmentationError
        At the first seed whose HU is outside ``lower..upper``, saying what it lies in (air or lung
        below -300 HU, bone or metal above the window, soft tissue in between) (exit code 8).
    """
    for seed in seeds:
        if lower <= seed.hu <= upper:
            continue
        if seed.hu < -300:
            what = "it lies in air or lung"
        elif seed.hu > upper:
            what = "it lies in bone, a calcification or metal, brighter than the lumen"
        else:
            what = "it lies in soft tissue or a vessel wall, below the lumen"
        raise SegmentationError(
            f"{seed.describe()} has {seed.hu:.0f} HU, outside the {preset_name} window "
            f"{lower:.0f}..{upper:.0f} HU: {what}",
            hint="place the seed inside the contrast-filled structure, or choose a preset or "
                 "threshold override that matches its HU",
        )


def check_apart(include: list[Seed], exclude: list[Seed], spacing: tuple[float, ...], min_mm: float) -> None:
    """Refuse an exclude seed on top of an include seed (closer than ``min_mm``).

    Parameters
    ----------
    include : list of Seed
        The include seeds.
    exclude : list of Seed
        The exclude seeds.
    spacing : tuple of float
        Voxel size in mm per axis ``(k, j, i)``; distances are between the seeds' voxels.
    min_mm : float
        Least distance in mm between an include and an exclude seed.

    Raises
    ------
    SegmentationError
        If an exclude seed is closer than ``min_mm`` to an include seed (exit code 8).
    """
    for a in include:
        for b in exclude:
            gap = float(np.linalg.norm((np.asarray(a.index) - np.asarray(b.index)) * np.asarray(spacing)))
            if gap < min_mm:
                raise SegmentationError(
                    f"{b.describe()} lies {gap:.1f} mm from the {a.describe()}: a structure cannot be both kept and "
                    f"removed (seeds must be at least {min_mm:.1f} mm apart)",
                    hint="move the exclude seed into the structure to remove, or drop it")


def snap_into(mask: np.ndarray, index: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """The seed voxel if it lies in ``mask``, else the nearest mask voxel among its 26 neighbours.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        The mask, indexed ``(k, j, i)``.
    index : tuple of int
        The seed voxel ``(k, j, i)``, inside the array.

    Returns
    -------
    tuple of int or None
        The seed itself when in the mask, else the mask voxel nearest in index units (squared
        distance, no spacing) among its 26 neighbours, or None when none is in the mask.
    """
    k, j, i = index
    if mask[k, j, i]:
        return index
    lows = [max(v - 1, 0) for v in index]
    around = mask[lows[0]:k + 2, lows[1]:j + 2, lows[2]:i + 2]
    hits = np.argwhere(around)
    if hits.size == 0:
        return None
    hits = hits + np.asarray(lows)
    best = hits[np.argmin(((hits - np.asarray(index)) ** 2).sum(axis=1))]
    return tuple(int(v) for v in best)
