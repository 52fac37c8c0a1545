"""Leak control: split a grown region at its constrictions.

Contrast fills the aorta, the heart and the veins alike, so a region grown inside an HU window
runs from the aorta through the aortic annulus into the left ventricle, and through any contact
into a neighbouring vessel. What separates them is shape: the connection is a neck, narrower
than the structures on either side.

The region's Euclidean distance map ``D`` (mm to the nearest outside voxel: the radius of the
largest ball centred there) is split by a watershed into basins, one per local widening. Two
neighbouring basins meet at a saddle: the radius of the widest ball that passes between them.
Basins are joined in order of decreasing saddle (as a maximum spanning tree is built) when

* the saddle is at least ``neck_ratio`` times the smaller of the two sides' peak radii
  (less ``tolerance_mm`` for the grid's quantisation) — a branch, or a fusiform aneurysm, widens
  or narrows gradually and joins; a chamber behind a valve ring or a vessel touching over a
  small contact does not — and
* the join would not put an include seed and an exclude seed into one piece (competitive
  growth: between the two, the cut falls at the narrowest connection, as a marker-based
  watershed on the distance map places it).
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


def _basin_graph(labels: np.ndarray, distance: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Face-adjacent basin pairs ``(n, 2)`` and their saddle radius (max over the boundary of min D)."""
    keys, values = [], []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        boundary = (a != b) & (a > 0) & (b > 0)
        if not boundary.any():
            continue
        la, lb = a[boundary].astype(np.int64), b[boundary].astype(np.int64)
        saddle = np.minimum(distance[tuple(lo)][boundary], distance[tuple(hi)][boundary])
        keys.append(np.minimum(la, lb) * (count + 1) + np.maximum(la, lb))
        values.append(saddle)
    if not keys:
        return np.empty((0, 2), np.int64), np.empty(0, np.float32)
    key, value = np.concatenate(keys), np.concatenate(values)
    order = np.argsort(key, kind="stable")
    key, value = key[order], value[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    unique = key[starts]
    saddles = np.maximum.reduceat(value, starts)
    pairs = np.stack([unique // (count + 1), unique % (count + 1)], axis=1)
    return pairs, saddles


def split_at_constrictions(region: np.ndarray, spacing: tuple[float, float, float],
                           include: list[tuple[int, int, int]], exclude: list[tuple[int, int, int]],
                           neck_ratio: float | None, tolerance_mm: float | None = None) -> Split:
    """Keep the pieces of ``region`` joined to the include seeds by no constriction.

    Parameters
    ----------
    region : ndarray of bool
        The grown region (one connected component holding the include seeds).
    spacing : tuple of float
        Voxel size, mm.
    include, exclude : list of index
        Seed voxels inside ``region`` (exclude seeds outside it are ignored).
    neck_ratio : float or None
        Join neighbouring basins only when saddle >= neck_ratio * smaller peak - tolerance;
        None joins every pair except include with exclude (competitive growth alone).
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
    pairs, saddles = _basin_graph(labels, distance, count)

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

    for index in np.argsort(-saddles, kind="stable"):
        a, b = find(int(pairs[index, 0])), find(int(pairs[index, 1]))
        if a == b:
            continue
        if (has_include[a] and has_exclude[b]) or (has_exclude[a] and has_include[b]):
            continue
        if neck_ratio is not None and saddles[index] < neck_ratio * min(group_peak[a], group_peak[b]) - tolerance_mm:
            continue
        parent[b] = a
        group_peak[a] = max(group_peak[a], group_peak[b])
        has_include[a] |= has_include[b]
        has_exclude[a] |= has_exclude[b]

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
        removed.append({
            "voxels": int(piece.sum()),
            "volume_ml": round(int(piece.sum()) * voxel_mm3 / 1000, 2),
            "neck_radius_mm": round(float(saddles[touching].max()), 1),
            "widest_radius_mm": round(float(group_peak[root]), 1),
            "centroid_index": [round(float(c + b.start), 1) for c, b in zip(np.argwhere(piece).mean(axis=0), box)],
            "held_exclude_seed": bool(has_exclude[root]),
        })
    removed.sort(key=lambda r: -r["voxels"])
    return Split(keep=keep, removed=removed, basins=count, removed_voxels=int(region.sum() - keep.sum()))
