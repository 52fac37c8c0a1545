"""The worst regions of a deviation map: connected patches beyond tolerance, named by location."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from pipeline.report import Report

#: Words for the directions of each frame's axes: (negative side, positive side) per axis.
SIDES = {
    "lps": (("right", "left"), ("anterior", "posterior"), ("inferior", "superior")),
    "print": (("-x side", "+x side"), ("-y side", "+y side"), ("bottom (plate side)", "top")),
}
#: A centre further than this share of the half-extent from the middle is on that side.
SIDE_SHARE = 1 / 3


@dataclass
class Region(Report):
    """A connected patch of the model surface deviating beyond the tolerance.

    Attributes
    ----------
    where : str
        Plain-language side of the model, e.g. "left, superior" (patient) or "top" (print).
    centre_mm : list of float
        Mean position of the patch in the reference frame (``frame``), mm.
    frame : {"lps", "print"}
        Patient LPS (model.stl) or the printer's build frame (print.stl).
    centre_print_mm : list of float or None
        The same point in the print frame, when the plan's transform is known.
    area_mm2 : float
    peak_mm : float
        The deviation of largest magnitude in the patch (signed: + outward, - inward).
    mean_mm : float
        Mean signed deviation of the patch.
    """

    where: str
    centre_mm: list[float]
    frame: str
    centre_print_mm: list[float] | None
    area_mm2: float
    peak_mm: float
    mean_mm: float


def worst_regions(points: np.ndarray, signed: np.ndarray, tolerance_mm: float, area_per_point_mm2: float, *,
                  frame: str, bounds: np.ndarray, to_print: np.ndarray | None = None,
                  limit: int = 5, min_points: int = 3) -> list[Region]:
    """Patches of samples beyond ``tolerance_mm``, largest first.

    Parameters
    ----------
    points, signed : ndarray
        Area-uniform samples of the model (reference frame mm) and their signed deviation.
    tolerance_mm, area_per_point_mm2 : float
    frame : {"lps", "print"}
    bounds : (2, 3) ndarray
        The model's bounding box (the sides are named against its middle).
    to_print : (4, 4) ndarray, optional
        Reference frame to print frame.
    limit, min_points : int
        At most this many regions, each of at least ``min_points`` samples.

    Returns
    -------
    list of Region
        Up to ``limit`` patches, most samples first: samples beyond the tolerance joined when
        within three sample spacings (``sqrt(area_per_point_mm2)``, mm). Each carries its
        side, centre (mm, and in the print frame when ``to_print`` is given), area (samples x
        ``area_per_point_mm2``, mm2), peak and mean signed deviation (mm). Empty when fewer than
        ``min_points`` samples lie beyond the tolerance.
    """
    beyond = np.flatnonzero(np.abs(signed) > tolerance_mm)
    if beyond.size < min_points:
        return []
    spacing = np.sqrt(area_per_point_mm2)
    pairs = cKDTree(points[beyond]).query_pairs(3.0 * spacing, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(beyond.size,) * 2)
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    regions = []
    for label in np.argsort(sizes)[::-1][:limit]:
        if sizes[label] < min_points:
            break
        members = beyond[labels == label]
        centre = points[members].mean(axis=0)
        values = signed[members]
        regions.append(Region(
            where=describe(centre, bounds, frame), centre_mm=centre.round(2).tolist(), frame=frame,
            centre_print_mm=None if to_print is None
            else (to_print[:3, :3] @ centre + to_print[:3, 3]).round(2).tolist(),
            area_mm2=float(members.size * area_per_point_mm2), peak_mm=float(values[np.argmax(np.abs(values))]),
            mean_mm=float(values.mean())))
    return regions


def describe(point: np.ndarray, bounds: np.ndarray, frame: str) -> str:
    """The side of the model a point is on, e.g. "left, superior"; "middle" near the centre.

    Parameters
    ----------
    point : (3,) ndarray
        A position in ``frame``, mm.
    bounds : (2, 3) ndarray
        The model's bounding box ``(min, max)`` in the same frame, mm.
    frame : {"lps", "print"}
        Which words to use: patient sides (right/left, anterior/posterior, inferior/superior)
        or the printer's axes (-x/+x side, -y/+y side, bottom/top). Another value raises
        ``KeyError``.

    Returns
    -------
    str
        The words of each axis along which the point lies more than :data:`SIDE_SHARE` of the
        half-extent from the middle, the farthest axis first, joined by ", "; ``"middle"`` when
        none.
    """
    middle = bounds.mean(axis=0)
    half = np.maximum((bounds[1] - bounds[0]) / 2, 1e-9)
    offset = (np.asarray(point) - middle) / half
    words = [SIDES[frame][axis][int(offset[axis] > 0)] for axis in np.argsort(-np.abs(offset))
             if abs(offset[axis]) > SIDE_SHARE]
    return ", ".join(words) or "middle"
