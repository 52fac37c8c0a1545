"""Leak control: split a grown region at its constrictions.

Contrast fills the aorta, the heart and the veins alike, so a region grown inside an HU window
runs from the aorta through the aortic annulus into the left ventricle, and through any contact
into a neighbouring vessel. What separates them is shape: the connection is a neck, narrower
than the structures on either side of it.

The region's Euclidean distance map ``D`` (mm to the nearest outside voxel: the radius of the
largest ball centred there) is split by a watershed into basins, one per local widening. Two
neighbouring basins meet at a saddle: the radius of the widest ball that passes between them.

1. Basins are joined in order of decreasing saddle (as a maximum spanning tree is built) when
   the saddle is at least ``neck_ratio`` times the smaller of the two pieces' widest radii, less
   ``tolerance_mm`` for the grid's quantisation, and the join would not put an include and an
   exclude seed into one piece. Branches and fusiform widenings join (no deep saddle); a chamber
   behind a valve ring and a structure touching over a small contact do not. Between an include
   and an exclude seed the cut falls at the narrowest connection, as a marker-based watershed on
   the distance map places it (competitive growth).
2. Step 1 compares a neck with the widest part of each whole piece, which also cuts a long
   tapering vessel from a widening far along it (an abdominal aortic aneurysm below a
   thoracic aorta wider than the abdominal aorta). So each cut next to the kept region is
   looked at again, comparing the neck with the widest radius on either side within
   ``neighbourhood_mm`` of it: a valve ring or a contact is a *short* neck between two wide
   parts and stays cut; a long narrow vessel is as wide as its own neck near it and rejoins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from pipeline.geometry import bounding_box


@dataclass
class Split:
    keep: np.ndarray  # bool, the pieces holding include seeds
    removed: list[dict]  # the pieces cut off next to the kept region
    basins: int
    removed_voxels: int
    rejoined: int  # pieces cut by the whole-piece test and rejoined by the local one


def _basin_graph(labels: np.ndarray, distance: np.ndarray, count: int):
    """Face-adjacent basin pairs ``(n, 2)``, their saddle radius (max over the shared boundary of
    the smaller D of each voxel pair) and where that saddle is (voxel index, ``(n, 3)``)."""
    keys, values, places = [], [], []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        boundary = (a != b) & (a > 0) & (b > 0)
        if not boundary.any():
            continue
        la, lb = a[boundary].astype(np.int64), b[boundary].astype(np.int64)
        keys.append(np.minimum(la, lb) * (count + 1) + np.maximum(la, lb))
        values.append(np.minimum(distance[tuple(lo)][boundary], distance[tuple(hi)][boundary]))
        places.append(np.argwhere(boundary))
    if not keys:
        return np.empty((0, 2), np.int64), np.empty(0, np.float32), np.empty((0, 3), np.int64)
    key, value, place = np.concatenate(keys), np.concatenate(values), np.concatenate(places)
    order = np.lexsort((value, key))  # by pair, then by saddle value: the last of each pair is its max
    key, value, place = key[order], value[order], place[order]
    last = np.flatnonzero(np.r_[key[1:] != key[:-1], True])
    pairs = np.stack([key[last] // (count + 1), key[last] % (count + 1)], axis=1)
    return pairs, value[last], place[last]


def _widest_near(distance: np.ndarray, labels: np.ndarray, member_basins: np.ndarray, centre: np.ndarray,
                 spacing: tuple[float, ...], radius_mm: float) -> float:
    """Largest D within ``radius_mm`` of ``centre`` (index) among basins flagged in ``member_basins``."""
    half = [int(np.ceil(radius_mm / s)) for s in spacing]
    box = tuple(slice(max(c - h, 0), c + h + 1) for c, h in zip(centre, half))
    offsets = np.ogrid[tuple(slice(b.start - c, min(b.stop, n) - c) for b, c, n in zip(box, centre, labels.shape))]
    near = (sum((o * s) ** 2 for o, s in zip(offsets, spacing)) <= radius_mm**2) & member_basins[labels[box]]
    return float(distance[box][near].max()) if near.any() else 0.0


def split_at_constrictions(region: np.ndarray, spacing: tuple[float, float, float],
                           include: list[tuple[int, int, int]], exclude: list[tuple[int, int, int]],
                           neck_ratio: float | None, neighbourhood_mm: float = 30.0,
                           tolerance_mm: float | None = None) -> Split:
    """Keep the pieces of ``region`` joined to the include seeds by no constriction.

    Parameters
    ----------
    region : ndarray of bool
        The grown region (connected components holding the include seeds).
    spacing : tuple of float
        Voxel size, mm.
    include, exclude : list of index
        Seed voxels inside ``region`` (exclude seeds outside it are ignored).
    neck_ratio : float or None
        Join neighbouring pieces only when saddle >= neck_ratio * narrower side - tolerance;
        None joins every pair except include with exclude (competitive growth alone).
    neighbourhood_mm : float
        Radius around a neck within which the sides' widths are measured in the second step, mm.
    tolerance_mm : float, optional
        Allowance for the distance map's quantisation; half the largest voxel size by default.

    Returns
    -------
    Split
    """
    if tolerance_mm is None:
        tolerance_mm = 0.5 * max(spacing)
    # Work in the region's box (one empty voxel around it keeps the distance map right).
    box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in bounding_box(region))
    full_shape = region.shape
    region = region[box]
    include = [tuple(v - b.start for v, b in zip(s, box)) for s in include]
    exclude = [tuple(v - b.start for v, b in zip(s, box)) for s in exclude
               if all(b.start <= v < b.stop for v, b in zip(s, box))]
    distance = ndi.distance_transform_edt(region, sampling=spacing).astype(np.float32)
    peaks_mask = (distance == ndi.maximum_filter(distance, size=3)) & region
    markers, count = ndi.label(peaks_mask, structure=np.ones((3, 3, 3), bool))
    # Every seed is a marker of its own, so an include and an exclude seed never share a basin.
    seeds = [(s, "include") for s in include] + [(s, "exclude") for s in exclude if region[s]]
    for seed, _ in seeds:
        count += 1
        markers[seed] = count
    labels = watershed(-distance, markers, mask=region)
    peaks = np.zeros(count + 1, np.float32)
    peaks[1:] = ndi.maximum(distance, labels, np.arange(1, count + 1))
    pairs, saddles, places = _basin_graph(labels, distance, count)

    parent = np.arange(count + 1)
    group_peak = peaks.copy()
    has_include = np.zeros(count + 1, bool)
    has_exclude = np.zeros(count + 1, bool)
    for seed, kind in seeds:
        (has_include if kind == "include" else has_exclude)[labels[seed]] = True

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def conflict(a: int, b: int) -> bool:
        return bool((has_include[a] and has_exclude[b]) or (has_exclude[a] and has_include[b]))

    def join(a: int, b: int) -> None:
        parent[b] = a
        group_peak[a] = max(group_peak[a], group_peak[b])
        has_include[a] |= has_include[b]
        has_exclude[a] |= has_exclude[b]

    def narrow(saddle: float, wide_a: float, wide_b: float) -> bool:
        return neck_ratio is not None and saddle < neck_ratio * min(wide_a, wide_b) - tolerance_mm

    for index in np.argsort(-saddles, kind="stable"):
        a, b = find(int(pairs[index, 0])), find(int(pairs[index, 1]))
        if a != b and not conflict(a, b) and not narrow(saddles[index], group_peak[a], group_peak[b]):
            join(a, b)

    # Step 2: look again at the cuts next to the kept region, with the widths near each neck.
    rejoined = 0
    changed = neck_ratio is not None
    while changed:
        changed = False
        roots = np.array([find(x) for x in range(count + 1)])
        kept_basins = has_include[roots]
        kept_basins[0] = False
        for index in np.argsort(-saddles, kind="stable"):
            a, b = roots[pairs[index, 0]], roots[pairs[index, 1]]
            if a == b or has_include[a] == has_include[b] or conflict(a, b):
                continue
            kept_root, other_root = (a, b) if has_include[a] else (b, a)
            near_kept = _widest_near(distance, labels, kept_basins, places[index], spacing, neighbourhood_mm)
            near_other = _widest_near(distance, labels, roots == other_root, places[index], spacing,
                                      neighbourhood_mm)
            if not narrow(saddles[index], near_kept, near_other):
                join(kept_root, other_root)
                rejoined += 1
                changed = True
                break

    roots = np.array([find(a) for a in range(count + 1)])
    kept_roots = {roots[labels[seed]] for seed, kind in seeds if kind == "include"}
    kept_basins = np.isin(roots, list(kept_roots))
    kept_basins[0] = False
    keep = np.zeros(full_shape, bool)
    keep[box] = kept_basins[labels]

    # Report the pieces cut off right next to the kept region: their size, widest ball and neck.
    removed = []
    voxel_mm3 = float(np.prod(spacing))
    for root in sorted(set(roots[1:]) - kept_roots):
        members = roots == root
        members[0] = False
        touching = kept_basins[pairs[:, 0]] & members[pairs[:, 1]] | kept_basins[pairs[:, 1]] & members[pairs[:, 0]]
        if not touching.any():
            continue
        piece = members[labels]
        neck = np.flatnonzero(touching)[np.argmax(saddles[touching])]
        removed.append({
            "voxels": int(piece.sum()),
            "volume_ml": round(int(piece.sum()) * voxel_mm3 / 1000, 2),
            "neck_radius_mm": round(float(saddles[neck]), 1),
            "widest_radius_mm": round(float(group_peak[root]), 1),
            "centroid_index": [round(float(c + b.start), 1) for c, b in zip(np.argwhere(piece).mean(axis=0), box)],
            "neck_index": [int(c + b.start) for c, b in zip(places[neck], box)],
            "held_exclude_seed": bool(has_exclude[root]),
        })
    removed.sort(key=lambda r: -r["voxels"])
    return Split(keep=keep, removed=removed, basins=count,
                 removed_voxels=int(region.sum() - kept_basins[labels].sum()), rejoined=rejoined)
