"""Where the planes of a series lie: ordering, spacing, gaps, duplicates and gantry-tilt shear.

Everything is derived from ImagePositionPatient and ImageOrientationPatient alone (never from
InstanceNumber, SliceLocation or GantryDetectorTilt, which scanners fill inconsistently). Each
plane's position is split into its distance along the slice normal and its in-plane offset from
the first plane along the column and row directions (array axes j and i). A gantry-tilted stack is one
whose in-plane offsets grow with ``n`` (the planes are sheared); :mod:`pipeline.load.resample`
removes that shear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.load.headers import Plane

#: Planes closer than this along the normal occupy the same position, mm.
DUPLICATE_TOLERANCE_MM = 0.01
#: Orientation cosines differing by less than this are the same orientation.
ORIENTATION_TOLERANCE = 1e-3
#: An in-plane offset below this fraction of a pixel is no shear (rounding in the headers).
SHEAR_TOLERANCE_PX = 0.05
#: Slices are evenly spaced when every one lies within this (mm), or this fraction of the mean
#: step, of its place on a uniform grid (rounded positions in the headers stay even).
UNEVEN_TOLERANCE_MM = 0.02
UNEVEN_TOLERANCE_FRACTION = 0.02
#: Without an explicit limit, a step this many times the median spacing that the slice
#: thicknesses do not cover is a gap (a missing slice).
GAP_FACTOR = 1.5
#: Slack on "the slice thicknesses cover the step", mm.
COVERAGE_SLACK_MM = 0.1
#: Fewest slices that make a volume: a surface needs planes on both sides of it, and two planes
#: are a slab whatever their spacing.
MIN_SLICES = 3
#: A usual step wider than this many slice thicknesses leaves most of the anatomy unimaged
#: between the slices (every 20th slice of a 1 mm series: 5% imaged); interpolating it would
#: invent the rest, so it is refused whatever the caller asks.
SPARSE_FACTOR = 2.0


def format_mm(value: float) -> str:
    """A length in mm as printed in messages (two decimals).

    Parameters
    ----------
    value : float
        A length in mm.

    Returns
    -------
    str
        The number with two decimals, without the unit (e.g. ``1.25``).
    """
    return f"{value:.2f}"


@dataclass
class StackLayout:
    """Geometry of a stack of planes, sorted along the slice normal.

    Attributes
    ----------
    order : list of int
        Indices into the input planes, sorted by position along the normal (duplicates of the
        same instance removed).
    normal, row, column : (3,) ndarray
        LPS unit vectors: slice normal (row x column), row direction (along columns ``i``),
        column direction (along rows ``j``).
    positions_mm : (n,) ndarray
        Distance of each sorted plane from the first along the normal, mm.
    offsets_mm : (n, 2) ndarray
        In-plane offset of each sorted plane from the first, along (column direction, row
        direction), i.e. along array axes (j, i), mm.
    pixel_spacing_mm : (2,) ndarray
        (row spacing, column spacing): along array axes (j, i), mm.
    slice_thickness_mm : (n,) ndarray
        SliceThickness of each sorted plane, mm (NaN where absent).
    duplicates : list of (int, int)
        Pairs of input indices at the same position that are different instances.
    dropped_copies : int
        Planes dropped because the same instance (SOP Instance UID and frame) appeared twice.
    problems : list of str
        Why this stack cannot be loaded as a volume (empty when it can).
    """

    order: list[int]
    normal: np.ndarray
    row: np.ndarray
    column: np.ndarray
    positions_mm: np.ndarray
    offsets_mm: np.ndarray
    pixel_spacing_mm: np.ndarray
    slice_thickness_mm: np.ndarray
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    dropped_copies: int = 0
    problems: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    @property
    def median_step_mm(self) -> float:
        """The usual step between neighbouring slices, mm (NaN for fewer than two).

        Returns
        -------
        float
            The median of :attr:`spacings_mm`, mm; NaN for fewer than two slices.
        """
        steps = self.spacings_mm
        return float(np.median(steps)) if steps.size else float("nan")

    @property
    def median_thickness_mm(self) -> float:
        """The usual SliceThickness, mm (NaN when no slice gives one).

        Returns
        -------
        float
            The median of the known slice thicknesses, mm; NaN when none is known.
        """
        known = self.slice_thickness_mm[np.isfinite(self.slice_thickness_mm)]
        return float(np.median(known)) if known.size else float("nan")

    @property
    def imaged_fraction(self) -> float:
        """Fraction of the stack's extent that some slice images (thickness vs step), 0..1.

        Each step counts as imaged up to the mean thickness of its two slices; NaN without
        thicknesses or with fewer than two slices.

        Returns
        -------
        float
            Imaged length over the stack's extent, 0..1; NaN as above.
        """
        steps = self.spacings_mm
        thickness = self.slice_thickness_mm
        if not steps.size or not np.all(np.isfinite(thickness)) or steps.sum() <= 0:
            return float("nan")
        covered = np.minimum(steps, (thickness[:-1] + thickness[1:]) / 2)
        return float(covered.sum() / steps.sum())

    @property
    def spacings_mm(self) -> np.ndarray:
        """Steps between consecutive sorted planes along the normal, mm.

        Returns
        -------
        numpy.ndarray of float
            ``(n - 1,)`` steps in mm (zero for planes at the same position).
        """
        return np.diff(self.positions_mm)

    @property
    def sheared(self) -> bool:
        """True when the planes' in-plane offsets exceed rounding (gantry tilt).

        Returns
        -------
        bool
            True when some plane's in-plane offset from the first exceeds ``SHEAR_TOLERANCE_PX``
            pixels along an axis; False for fewer than two planes.
        """
        if len(self.order) < 2:
            return False
        return bool(np.max(np.abs(self.offsets_mm) / self.pixel_spacing_mm) > SHEAR_TOLERANCE_PX)

    @property
    def uneven(self) -> bool:
        """True when some slice is off a uniform grid from the first to the last slice.

        Returns
        -------
        bool
            True when some slice is farther from its place on the uniform grid than
            ``max(UNEVEN_TOLERANCE_MM, UNEVEN_TOLERANCE_FRACTION * step)`` mm; False for fewer than
            three slices.
        """
        if len(self.order) < 3:
            return False
        step = self.positions_mm[-1] / (len(self.order) - 1)
        uniform = np.arange(len(self.order)) * step
        tolerance = max(UNEVEN_TOLERANCE_MM, UNEVEN_TOLERANCE_FRACTION * step)
        return bool(np.abs(self.positions_mm - uniform).max() > tolerance)

    @property
    def tilt_deg(self) -> float:
        """Angle between the stacking direction and the slice normal, degrees.

        Signed by the shear along the column direction (0 for an untilted stack). Its magnitude
        is the gantry tilt; its sign follows the image axes, not the scanner's convention.

        Returns
        -------
        float
            The signed tilt in degrees; 0.0 for fewer than two slices or a stack of zero extent.
        """
        if len(self.order) < 2 or self.positions_mm[-1] <= 0:
            return 0.0
        # Least-squares shear (mm of in-plane offset per mm along the normal) along the column
        # direction, which is where a gantry tilt puts it.
        n = self.positions_mm
        shear = float(np.dot(n, self.offsets_mm[:, 0]) / np.dot(n, n))
        return float(np.degrees(np.arctan(shear)))


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def analyse(planes: list[Plane], max_gap_mm: float | None = None, *,
            allow_gaps: bool = False) -> StackLayout | None:
    """Sort planes along their normal and find what stops them forming a volume.

    Parameters
    ----------
    planes : list of Plane
        Planes of one series.
    max_gap_mm : float, optional
        Largest allowed step between neighbouring slices, mm. When None, a step over
        ``GAP_FACTOR`` times the median step that the two slices' thicknesses do not cover is a
        gap (so irregular but contiguous acquisitions load, missing slices do not).
    allow_gaps : bool
        Keep gaps out of ``problems`` (they are still listed in ``gaps``): the caller will
        resample across them and say so. Too few slices and sparse stacks stay problems.

    Returns
    -------
    StackLayout or None
        None when the planes lack position or orientation altogether.
    """
    located = [p for p in planes if p.position is not None and p.orientation is not None]
    if not located:
        return None
    problems: list[str] = []
    if len(located) < len(planes):
        problems.append(f"{len(planes) - len(located)} image(s) have no position/orientation")
    orientations = np.array([p.orientation for p in located])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        problems.append("mixed orientations: the images are not parallel planes of one volume")
    sizes = {(p.rows, p.columns) for p in located}
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes, key=str))
        problems.append(f"mixed matrix sizes ({shown})")
    spacings = {p.pixel_spacing for p in located}
    if None in spacings:
        problems.append("pixel spacing missing")
    elif len({tuple(np.round(s, 4)) for s in spacings}) > 1:
        problems.append("mixed pixel spacings")

    row = _unit(np.asarray(located[0].orientation[:3]))
    column = _unit(np.asarray(located[0].orientation[3:]))
    normal = _unit(np.cross(row, column))
    position = np.array([p.position for p in located])
    distance = (position - position[0]) @ normal
    index_of = [i for i, p in enumerate(planes) if p.position is not None and p.orientation is not None]
    # Sort by distance along the normal; ties keep file order (resolved below).
    sort = np.argsort(distance, kind="stable")

    order: list[int] = []
    duplicates: list[tuple[int, int]] = []
    copies = 0
    last_distance = -np.inf
    for s in sort:
        if order and distance[s] - last_distance < DUPLICATE_TOLERANCE_MM:
            kept, this = planes[order[-1]], located[s]
            if (kept.sop_instance_uid, kept.frame) == (this.sop_instance_uid, this.frame):
                copies += 1
            else:
                duplicates.append((order[-1], index_of[s]))
            continue
        order.append(index_of[s])
        last_distance = distance[s]

    first = planes[order[0]]
    origin = np.asarray(first.position)
    sorted_positions = np.array([planes[i].position for i in order]) - origin
    positions_mm = sorted_positions @ normal
    offsets_mm = np.stack([sorted_positions @ column, sorted_positions @ row], axis=1)
    pixel_spacing = np.asarray(first.pixel_spacing or (1.0, 1.0), dtype=float)
    thickness = np.array([planes[i].slice_thickness or np.nan for i in order], dtype=float)
    layout = StackLayout(
        order=order,
        normal=normal,
        row=row,
        column=column,
        positions_mm=positions_mm,
        offsets_mm=offsets_mm,
        pixel_spacing_mm=pixel_spacing,
        slice_thickness_mm=thickness,
        duplicates=duplicates,
        dropped_copies=copies,
        problems=problems,
    )
    if len(order) < 2:
        problems.append("single slice: not a volume")
        return layout
    if len(order) < MIN_SLICES:
        problems.append(f"only {len(order)} slices ({format_mm(float(positions_mm[-1]))} mm apart): not a volume, "
                        f"at least {MIN_SLICES} are needed")
    sparse = sparse_problem(layout)
    if sparse:
        problems.append(sparse)
    layout.gaps = find_gaps(layout, planes, max_gap_mm)
    if not allow_gaps:
        problems.extend(layout.gaps)
    return layout


def sparse_problem(layout: StackLayout) -> str | None:
    """Why the slices are too thin for their step to image the anatomy between them, or None.

    Parameters
    ----------
    layout : StackLayout
        The sorted stack.

    Returns
    -------
    str or None
        The reason (thickness and step in mm, imaged percentage) when the median step is over
        :data:`SPARSE_FACTOR` times the median thickness; None otherwise or when no thickness is known.
    """
    step, thickness = layout.median_step_mm, layout.median_thickness_mm
    if not (np.isfinite(thickness) and thickness > 0 and step > SPARSE_FACTOR * thickness):
        return None
    return (f"slices {format_mm(thickness)} mm thick every {format_mm(step)} mm image only "
            f"{100 * layout.imaged_fraction:.0f}% of the {format_mm(float(layout.positions_mm[-1]))} mm they span "
            f"(the step is over {SPARSE_FACTOR:g} x the thickness): not a volume; load the full series "
            "(every slice) or a reconstruction with slices as thick as their step")


def find_gaps(layout: StackLayout, planes: list[Plane], max_gap_mm: float | None) -> list[str]:
    """Describe each step between neighbouring slices that is a gap (see :func:`analyse`).

    Parameters
    ----------
    layout : StackLayout
        The sorted stack (at least two slices).
    planes : list of Plane
        The input planes that ``layout.order`` indexes.
    max_gap_mm : float or None
        Largest allowed step in mm; None: a step is a gap when it exceeds both :data:`GAP_FACTOR`
        times the median step and the mean thickness of its two slices plus
        :data:`COVERAGE_SLACK_MM`.

    Returns
    -------
    list of str
        One message per gap, with its size in mm and the LPS positions (mm) of the slices around it;
        empty when there is none.
    """
    steps = layout.spacings_mm
    if max_gap_mm is not None:
        wide = steps > max_gap_mm
        limit = f"the limit of {format_mm(max_gap_mm)} mm"
    else:
        thickness = layout.slice_thickness_mm
        covered = np.nan_to_num((thickness[:-1] + thickness[1:]) / 2, nan=0.0) + COVERAGE_SLACK_MM
        wide = (steps > GAP_FACTOR * np.median(steps)) & (steps > covered)
        limit = f"{GAP_FACTOR} x the usual {format_mm(float(np.median(steps)))} mm step and the slice thickness"
    messages = []
    for k in np.flatnonzero(wide):
        below, above = planes[layout.order[k]], planes[layout.order[k + 1]]
        messages.append(
            f"gap of {format_mm(steps[k])} mm (over {limit}) between the slices at "
            f"{_describe_position(below)} and {_describe_position(above)}"
        )
    return messages


def _describe_position(plane: Plane) -> str:
    x, y, z = plane.position
    number = f" (instance {plane.instance_number})" if plane.instance_number is not None else ""
    return f"LPS ({x:.2f}, {y:.2f}, {z:.2f}) mm{number}"
