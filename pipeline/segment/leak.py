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
3. A narrowing of the structure itself (the aortic isthmus, a coarctation, the compressed true
   lumen of a dissection) is a deep neck too. What tells it from a leak is the shape on either
   side: the kept tube's axis near the neck (principal axis of its voxels within a few radii)
   points at the piece beyond (the line between the two sides' centroids runs within
   ``continuation_angle`` of that axis), and the piece is not a blob (it reaches the scan's edge,
   or is at least ``blob_elongation`` times as long as its widest radius). Such a piece rejoins.
   A chamber behind a valve is a blob; a neighbouring tube touching the side of the kept one
   (pulmonary trunk, SVC, a vertebral body) lies across its axis, not along it.
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
    continued: int  # pieces rejoined because they continue the kept tube
    pieces: np.ndarray  # int32 on the region's grid: 0 kept or outside, n the n-th removed piece


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


def continues_tube(kept: np.ndarray, piece: np.ndarray, centre: np.ndarray, spacing: tuple[float, ...],
               radius_mm: float, min_cos: float) -> tuple[bool, float]:
    """Whether ``piece`` lies along the axis of ``kept`` near ``centre`` (index): the cosine between
    the kept voxels' principal axis and the line from their centroid to the piece's, within
    ``radius_mm`` of the centre.

    Parameters
    ----------
    kept : numpy.ndarray of bool
        The kept part, indexed ``(k, j, i)``.
    piece : numpy.ndarray of bool
        The cut piece, on the same grid.
    centre : numpy.ndarray of int
        The neck's voxel index ``(k, j, i)``.
    spacing : tuple of float
        Voxel size in mm per axis ``(k, j, i)``.
    radius_mm : float
        Radius of the ball around ``centre`` the voxels are taken from, mm.
    min_cos : float
        Least cosine between the axis and the line (cos of the continuation angle).

    Returns
    -------
    tuple of (bool, float)
        Whether the cosine reaches ``min_cos``, and the cosine; ``(False, 0.0)`` when the ball holds
        fewer than 8 kept or 2 piece voxels, or the kept voxels have no clear axis (largest
        eigenvalue under 1.5 times the next).
    """
    half = [int(np.ceil(radius_mm / s)) for s in spacing]
    box = tuple(slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(centre, half, kept.shape))
    offsets = np.ogrid[tuple(slice(b.start - c, b.stop - c) for b, c in zip(box, centre))]
    ball = sum((o * s) ** 2 for o, s in zip(offsets, spacing)) <= radius_mm**2
    near_kept = np.argwhere(kept[box] & ball) * np.asarray(spacing)
    near_piece = np.argwhere(piece[box] & ball) * np.asarray(spacing)
    if len(near_kept) < 8 or len(near_piece) < 2:
        return False, 0.0
    values, vectors = np.linalg.eigh(np.cov(near_kept.T))
    axis = vectors[:, -1]
    if values[-1] < 1.5 * values[-2]:  # no clear axis: a blob, not a tube
        return False, 0.0
    line = near_piece.mean(axis=0) - near_kept.mean(axis=0)
    cos = abs(float(line @ axis)) / max(float(np.linalg.norm(line)), 1e-6)
    return cos >= min_cos, cos


def is_blob(piece: np.ndarray, widest_mm: float, spacing: tuple[float, ...], full_box: tuple[slice, ...],
             full_shape: tuple[int, ...], elongation: float) -> bool:
    """A piece that stays inside the scan and is shorter than ``elongation`` x its widest radius.

    Parameters
    ----------
    piece : numpy.ndarray of bool
        The piece, on a grid that is a crop of the scan.
    widest_mm : float
        The piece's widest radius (largest distance-map value), mm.
    spacing : tuple of float
        Voxel size in mm per axis ``(k, j, i)``.
    full_box : tuple of slice
        Where the crop lies in the scan (its ``start`` offsets are used).
    full_shape : tuple of int
        The scan's shape in voxels.
    elongation : float
        Length over widest radius below which a piece is a blob.

    Returns
    -------
    bool
        False when the piece's bounding box touches a face of the scan; otherwise whether its
        longest bounding-box side (mm) is under ``elongation * widest_mm``.
    """
    where = bounding_box(piece)
    for axis, (w, b, n) in enumerate(zip(where, full_box, full_shape)):
        if w.start + b.start == 0 or w.stop + b.start == n:
            return False
    length = max((w.stop - w.start) * s for w, s in zip(where, spacing))
    return length < elongation * max(widest_mm, 1e-6)


def _return_neck_tubes(region: np.ndarray, kept: np.ndarray, distance: np.ndarray, spacing: tuple[float, ...],
                       box: tuple[slice, ...], full_shape: tuple[int, ...], elongation: float,
                       exclude: list[tuple[int, int, int]]) -> np.ndarray:
    """Give the kept part the tube that leads into a removed blob (the aortic root's annulus).

    The watershed puts a cut anywhere along a uniform neck. A chamber is the part of the blob
    wider than its neck: its voxels farther than the neck's radius from the blob's surface, grown
    back by that radius (an opening). The rest of the neck, next to the kept part, is kept.
    """
    pieces, count = ndi.label(region & ~kept, np.ones((3, 3, 3), bool))
    near_kept = ndi.binary_dilation(kept)
    for number, where in enumerate(ndi.find_objects(pieces), start=1):
        local = tuple(slice(max(w.start - 1, 0), w.stop + 1) for w in where)
        piece = pieces[local] == number
        if any(piece[tuple(e - b.start for e, b in zip(x, local))] for x in exclude
               if all(b.start <= e < b.stop for e, b in zip(x, local))):
            continue  # the user asked for this piece to go
        contact = near_kept[local] & piece
        if not contact.any():
            continue
        widest = float(distance[local][piece].max())
        shifted = tuple(slice(l.start + b.start, l.stop + b.start) for l, b in zip(local, box))
        if not is_blob(piece, widest, spacing, shifted, full_shape, elongation):
            continue
        neck = float(distance[local][contact].max()) + 0.5 * max(spacing)
        own = ndi.distance_transform_edt(np.pad(piece, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        deep = own > neck
        if not deep.any():
            continue
        body = (ndi.distance_transform_edt(~deep, sampling=spacing) <= neck) & piece
        stub = piece & ~body
        stubs, _ = ndi.label(stub, np.ones((3, 3, 3), bool))
        joined = np.unique(stubs[contact & stub])
        kept[local] |= np.isin(stubs, joined[joined > 0])
    return kept


def _removed_pieces(region: np.ndarray, kept_local: np.ndarray, distance: np.ndarray, spacing: tuple[float, ...],
                    box: tuple[slice, ...], full_shape: tuple[int, ...], blob_elongation: float,
                    exclude: list[tuple[int, int, int]]) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """The kept part and the removed pieces of a region cropped to ``box``, on the full grid.

    Every removed voxel belongs to one listed piece: a connected part of the region outside the
    kept one, with its size, widest ball and the widest neck by which it touched the kept part.

    Parameters
    ----------
    region : numpy.ndarray of bool
        The region, cropped to ``box``.
    kept_local : numpy.ndarray of bool
        Its kept part, on the same crop.
    distance : numpy.ndarray of float
        The region's distance map on the crop, mm.
    spacing : tuple of float
        Voxel size in mm per axis ``(k, j, i)``.
    box : tuple of slice
        Where the crop lies in the full grid.
    full_shape : tuple of int
        The full grid's shape, voxels.
    blob_elongation : float
        A piece inside the scan shorter than this many times its widest radius is a blob.
    exclude : list of tuple of int
        Exclude seeds, indices into the crop.

    Returns
    -------
    tuple of (numpy.ndarray of bool, list of dict, numpy.ndarray of int32)
        The kept part on the full grid, the removed pieces (as :class:`Split` lists them, indices
        on the full grid) and the pieces' numbers on the full grid (0 elsewhere).
    """
    pieces, count_pieces = ndi.label(region & ~kept_local, np.ones((3, 3, 3), bool))
    removed = []
    voxel_mm3 = float(np.prod(spacing))
    near_kept = ndi.binary_dilation(kept_local)
    for number, where in enumerate(ndi.find_objects(pieces), start=1):
        piece = pieces == number
        # the neck: the widest ball on the piece's contact with the kept part
        contact = np.argwhere(piece & near_kept)
        neck = contact[np.argmax(distance[tuple(contact.T)])] if len(contact) else None
        removed.append({
            "piece": number,
            "voxels": int(piece.sum()),
            "volume_ml": round(int(piece.sum()) * voxel_mm3 / 1000, 2),
            "neck_radius_mm": round(float(distance[tuple(neck)]), 1) if neck is not None else None,
            "widest_radius_mm": round(float(distance[piece].max()), 1),
            "centroid_index": [round(float(c + b.start), 1) for c, b in zip(np.argwhere(piece).mean(axis=0), box)],
            "neck_index": ([int(c + b.start) for c, b in zip(neck, box)] if neck is not None
                           else [int(c + b.start) for c, b in zip(np.argwhere(piece)[0], box)]),
            "held_exclude_seed": bool(any(piece[s] for s in exclude)),
            "inside_index": [int(c + b.start) for c, b in zip(np.unravel_index(np.argmax(np.where(piece, distance, 0)),
                                                                                piece.shape), box)],
            "tubular": not is_blob(piece, float(distance[piece].max()), spacing, box, full_shape, blob_elongation),
        })
    full_pieces = np.zeros(full_shape, np.int32)
    full_pieces[box] = pieces
    keep = np.zeros(full_shape, bool)
    keep[box] = kept_local
    return keep, removed, full_pieces


def split_at_constrictions(region: np.ndarray, spacing: tuple[float, float, float],
                           include: list[tuple[int, int, int]], exclude: list[tuple[int, int, int]],
                           neck_ratio: float | None, neighbourhood_mm: float = 30.0,
                           tolerance_mm: float | None = None, continuation_angle_deg: float | None = None,
                           blob_elongation: float = 4.0) -> Split:
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
    continuation_angle_deg : float, optional
        Rejoin a piece lying within this angle of the kept tube's axis that is not a blob (step
        3); None leaves every cut piece cut.
    blob_elongation : float
        A piece inside the scan shorter than this many times its widest radius is a blob.

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
        """The group of a basin.

        Parameters
        ----------
        a : int
            A basin label.

        Returns
        -------
        int
            The root of its group (union-find, with path halving).
        """
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def conflict(a: int, b: int) -> bool:
        """Whether joining two groups would put an include and an exclude seed together.

        Parameters
        ----------
        a : int
            A group root.
        b : int
            Another group root.

        Returns
        -------
        bool
            True when one holds an include seed and the other an exclude seed.
        """
        return bool((has_include[a] and has_exclude[b]) or (has_exclude[a] and has_include[b]))

    def join(a: int, b: int) -> None:
        """Merge group ``b`` into group ``a``.

        Parameters
        ----------
        a : int
            The group root that stays the root.
        b : int
            The group root merged into it (its widest radius and seed flags carry over).
        """
        parent[b] = a
        group_peak[a] = max(group_peak[a], group_peak[b])
        has_include[a] |= has_include[b]
        has_exclude[a] |= has_exclude[b]

    def narrow(saddle: float, wide_a: float, wide_b: float) -> bool:
        """Whether a saddle is a constriction between sides of the given widths.

        Parameters
        ----------
        saddle : float
            The saddle radius between the two sides, mm.
        wide_a : float
            The widest radius of one side, mm.
        wide_b : float
            The widest radius of the other side, mm.

        Returns
        -------
        bool
            True when ``saddle < neck_ratio * min(wide_a, wide_b) - tolerance_mm`` (a neck to cut);
            always False when ``neck_ratio`` is None.
        """
        return neck_ratio is not None and saddle < neck_ratio * min(wide_a, wide_b) - tolerance_mm

    for index in np.argsort(-saddles, kind="stable"):
        a, b = find(int(pairs[index, 0])), find(int(pairs[index, 1]))
        if a != b and not conflict(a, b) and not narrow(saddles[index], group_peak[a], group_peak[b]):
            join(a, b)

    # Step 2: look again at the cuts next to the kept region, with the widths near each neck.
    rejoined = continued = 0
    refused: set[tuple[int, int]] = set()
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
            if continuation_angle_deg is None or (kept_root, other_root) in refused:
                continue
            other = (roots == other_root)[labels]
            along, _ = continues_tube(kept_basins[labels], other, places[index], spacing,
                                  max(2.5 * near_kept, 10.0), float(np.cos(np.radians(continuation_angle_deg))))
            if along and not is_blob(other, float(group_peak[other_root]), spacing, box, full_shape,
                                      blob_elongation):
                join(kept_root, other_root)
                continued += 1
                changed = True
                refused.clear()
                break
            refused.add((kept_root, other_root))

    roots = np.array([find(a) for a in range(count + 1)])
    kept_roots = {roots[labels[seed]] for seed, kind in seeds if kind == "include"}
    kept_basins = np.isin(roots, list(kept_roots))
    kept_basins[0] = False

    # Every removed voxel belongs to one listed piece: a connected part of the region outside the
    # kept one, with its size, widest ball and the widest neck by which it touched the kept part.
    kept_local = kept_basins[labels]
    if neck_ratio is not None:
        kept_local = _return_neck_tubes(region, kept_local, distance, spacing, box, full_shape, blob_elongation,
                                        [s for s, kind in seeds if kind == "exclude"])
    keep, removed, full_pieces = _removed_pieces(region, kept_local, distance, spacing, box, full_shape,
                                                 blob_elongation, [s for s, kind in seeds if kind == "exclude"])
    return Split(keep=keep, removed=removed, basins=count, removed_voxels=int(region.sum() - kept_local.sum()),
                 rejoined=rejoined, continued=continued, pieces=full_pieces)


def split_between_seeds(region: np.ndarray, spacing: tuple[float, float, float],
                        include: list[tuple[int, int, int]], exclude: list[tuple[int, int, int]],
                        blob_elongation: float = 4.0) -> Split:
    """Competitive growth alone: the part of ``region`` nearer the include seeds than the exclude ones.

    A marker watershed on the distance map, flooded from the seeds only, puts the cut at the
    narrowest connection between them, and half-way along a connection of even width (a thin
    vessel, whose distance map is one plateau). Without include seeds the whole region goes.

    Parameters
    ----------
    region : ndarray of bool
        The region (connected components holding the exclude seeds).
    spacing : tuple of float
        Voxel size, mm.
    include, exclude : list of index
        Seed voxels inside ``region``.
    blob_elongation : float
        A removed piece inside the scan shorter than this many times its widest radius is a blob.

    Returns
    -------
    Split
        With ``basins`` the number of seeds and nothing rejoined.
    """
    box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in bounding_box(region))
    full_shape = region.shape
    region = region[box]
    include = [tuple(v - b.start for v, b in zip(s, box)) for s in include]
    exclude = [tuple(v - b.start for v, b in zip(s, box)) for s in exclude]
    distance = ndi.distance_transform_edt(region, sampling=spacing).astype(np.float32)
    markers = np.zeros(region.shape, np.int32)
    for seed in exclude:
        markers[seed] = 2
    for seed in include:
        markers[seed] = 1
    kept_local = watershed(-distance, markers, mask=region) == 1
    keep, removed, pieces = _removed_pieces(region, kept_local, distance, spacing, box, full_shape, blob_elongation,
                                            exclude)
    return Split(keep=keep, removed=removed, basins=len(include) + len(exclude),
                 removed_voxels=int(region.sum() - kept_local.sum()), rejoined=0, continued=0, pieces=pieces)
