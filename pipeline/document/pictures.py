"""Pictures for the packet, rendered with matplotlib (Agg) to PNG bytes.

* :func:`ct_slices_png`: three orthogonal CT slices through the mask centroid (snapped to the
  nearest mask voxel), the mask outline
  drawn on each, in a vascular window, with patient-direction letters from the grid geometry.
* :func:`model_views_png`: the model seen from the front, the left and above, Lambert-shaded by
  a small orthographic renderer (painter's order over the triangles; large meshes are decimated
  for display only).
* :func:`print_views_png`: the oriented print mesh on the build plate, faces that need support
  drawn in red.

None of these writes PHI: the pictures carry no names, ids or dates.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from pipeline.geometry import Mask, Volume, bounding_box  # noqa: E402
from pipeline.mesh.decimate import decimate  # noqa: E402

#: CT angiography window (level, width) in HU: contrast-filled vessels bright, bone brighter.
CTA_WINDOW = (200.0, 800.0)
#: Faces drawn per view; larger meshes are decimated for the picture only.
DISPLAY_FACES = 15000
_LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
_DPI = 110


def figure_png(figure: plt.Figure) -> bytes:
    """A figure as PNG bytes (at the packet's resolution, no software tag), the figure closed.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure to save; it is closed afterwards and must not be used again.

    Returns
    -------
    bytes
        The PNG file's bytes.
    """
    buffer = io.BytesIO()
    engine = figure.get_layout_engine()
    if engine is not None:
        # Lay the figure out once, at the resolution it is saved at, and save it without its
        # engine: savefig would otherwise draw every artist twice (once, drawing nothing, only
        # to run the layout), resampling each CT slice and building each shaded face twice.
        figure.set_dpi(_DPI)
        engine.execute(figure)
        figure.set_layout_engine(None)
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _direction_letter(vector: np.ndarray) -> str:
    """The patient direction (L/R/P/A/S/I) a grid axis points to, by its largest LPS part."""
    axis = int(np.argmax(np.abs(vector)))
    return _LPS_LETTERS[axis][1 if vector[axis] > 0 else 0]


def mask_centroid_index(mask: Mask) -> tuple[int, int, int]:
    """Array index ``(k, j, i)`` of the mask voxel nearest to the mask's centroid.

    Snapping to a mask voxel keeps all three slices on the structure even when the centroid of
    a curved shape (an aortic arch) lies outside it. Distances are measured in mm.

    Parameters
    ----------
    mask : Mask
        The segmentation (non-zero voxels are the structure) and its grid geometry.

    Returns
    -------
    tuple of (int, int, int)
        The voxel's array index in ``(k, j, i)`` order; the grid's middle voxel when the mask
        is empty.
    """
    box = bounding_box(mask.array)
    if box is None:
        return tuple(n // 2 for n in mask.geometry.shape)  # type: ignore[return-value]
    inside = mask.array[box] != 0
    spacing = np.asarray(mask.geometry.spacing, dtype=float)
    # The centroid from the three axis profiles (integer sums, exact), not from every voxel's index.
    profiles = [inside.sum(axis=tuple(b for b in range(3) if b != a), dtype=np.int64) for a in range(3)]
    count = int(profiles[0].sum())
    centre = np.array([np.dot(np.arange(len(p)), p) / count for p in profiles])  # in the box, voxels
    # The nearest voxel is looked for in a window around the centroid that grows until it holds a
    # voxel within its radius r: every voxel outside is then further than r, so the one found is
    # the nearest of the whole mask (first in array order among equals, as argmin over all gives).
    radius = 4 * float(spacing.max())
    while True:
        low = np.maximum(np.floor(centre - radius / spacing).astype(int), 0)
        high = np.minimum(np.ceil(centre + radius / spacing).astype(int) + 1, inside.shape)
        points = np.stack(np.nonzero(inside[tuple(slice(a, b) for a, b in zip(low, high))]), axis=-1) + low
        whole = bool(np.all(low == 0) and np.all(high == inside.shape))
        if len(points):
            distances = np.sum((points * spacing - centre * spacing) ** 2, axis=1)
            nearest = int(np.argmin(distances))
            if whole or distances[nearest] <= radius**2:
                return tuple(int(v) + s.start for v, s in zip(points[nearest], box))  # type: ignore[return-value]
        radius *= 2


def _oriented_slice(image: np.ndarray, outline: np.ndarray | None, spacing: tuple[float, float],
                    letters: tuple[str, str]):
    """Turn a slice to radiological display: S (else A) up; patient left (else P) on the right.

    ``letters`` are the patient directions of increasing row and column index.
    Returns the image, the outline, the (row, column) spacing and the letters at the bottom
    and right edges.
    """
    rows, cols = letters
    if cols in "SI" or (cols in "AP" and rows in "LR"):  # the vertical axis must run along rows
        image = image.T
        outline = outline.T if outline is not None else None
        spacing, (rows, cols) = spacing[::-1], (cols, rows)
    if rows in "SA":  # increasing index goes up: row 0 at the bottom
        image, rows = image[::-1], {"S": "I", "A": "P"}[rows]
        outline = outline[::-1] if outline is not None else None
    if cols in "RA":  # patient right / anterior on the viewer's left
        image, cols = image[:, ::-1], {"R": "L", "A": "P"}[cols]
        outline = outline[:, ::-1] if outline is not None else None
    return image, outline, spacing, (rows, cols)


def ct_slices_png(volume: Volume, mask: Mask | None, window: tuple[float, float] = CTA_WINDOW,
                  removed: np.ndarray | None = None) -> bytes:
    """Axial, coronal and sagittal slices through the mask centroid, the mask outline in red.

    ``removed`` (on the volume's grid, non-zero where segmentation's leak control cut pieces
    off: ``SegmentReport.removed_pieces()``) is outlined in cyan.

    The slices pass through the mask voxel nearest to the centroid (:func:`mask_centroid_index`).

    Slices are shown in mm (pixel aspect from the spacing) in radiological orientation, with the
    patient-direction letters taken from the grid's direction matrix.

    Parameters
    ----------
    volume : Volume
        The CT, HU, with its grid geometry.
    mask : Mask or None
        The segmentation on the same grid; None shows the middle slices without an outline.
    window : tuple of (float, float)
        Display window ``(level, width)``, HU.
    removed : ndarray, optional
        Pieces cut off by leak control, same shape as the volume (non-zero where cut).

    Returns
    -------
    bytes
        A PNG of the three slices.
    """
    geometry = volume.geometry
    centre = mask_centroid_index(mask) if mask is not None else tuple(n // 2 for n in geometry.shape)
    centre_lps = geometry.index_to_lps(np.asarray(centre, dtype=float))
    level, width = window
    direction = geometry.direction_matrix
    # The fixed axis nearest to z gives the axial slice, to y the coronal, to x the sagittal.
    normals = {fixed: _direction_letter(direction[:, fixed]) for fixed in range(3)}
    planes = sorted(range(3), key=lambda a: "SIAPLR".index(normals[a]) // 2)
    opposite = {a: b for pair in _LPS_LETTERS for a, b in (pair, pair[::-1])}
    figure, axes = plt.subplots(1, 3, figsize=(11, 4.2), layout="constrained")
    for fixed, ax in zip(planes, axes):
        rows_axis, cols_axis = [a for a in range(3) if a != fixed]
        index = [slice(None)] * 3
        index[fixed] = centre[fixed]
        outline = mask.array[tuple(index)] > 0 if mask is not None else None
        image, outline, (row_mm, col_mm), (bottom, right) = _oriented_slice(
            volume.array[tuple(index)], outline,
            (geometry.spacing[rows_axis], geometry.spacing[cols_axis]),
            (_direction_letter(direction[:, rows_axis]), _direction_letter(direction[:, cols_axis])),
        )
        height_mm, width_mm = image.shape[0] * row_mm, image.shape[1] * col_mm
        ax.imshow(image, cmap="gray", vmin=level - width / 2, vmax=level + width / 2,
                  extent=(0, width_mm, height_mm, 0), interpolation="nearest")
        ys = (np.arange(image.shape[0]) + 0.5) * row_mm
        xs = (np.arange(image.shape[1]) + 0.5) * col_mm
        if outline is not None and outline.any():
            ax.contour(xs, ys, outline.astype(np.uint8), levels=[0.5], colors="red", linewidths=1.0)
        if removed is not None:
            cut = _oriented_slice(volume.array[tuple(index)], removed[tuple(index)] > 0,
                                  (geometry.spacing[rows_axis], geometry.spacing[cols_axis]),
                                  (_direction_letter(direction[:, rows_axis]), _direction_letter(direction[:, cols_axis])))[1]
            if cut.any():
                ax.contour(xs, ys, cut.astype(np.uint8), levels=[0.5], colors="cyan", linewidths=1.0)
        for text, x, y, ha, va in ((right, 0.98, 0.5, "right", "center"), (opposite[right], 0.02, 0.5, "left", "center"),
                                   (bottom, 0.5, 0.02, "center", "bottom"), (opposite[bottom], 0.5, 0.98, "center", "top")):
            ax.text(x, y, text, color="yellow", ha=ha, va=va, fontsize=11, transform=ax.transAxes)
        plane = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal"}.get(normals[fixed], "sagittal")
        lps_axis = "LPS".index({"L": "L", "R": "L", "A": "P", "P": "P", "S": "S", "I": "S"}[normals[fixed]])
        ax.set_title(f"{plane}, {'xyz'[lps_axis]} = {centre_lps[lps_axis]:.1f} mm (LPS)", fontsize=9)
        ax.set_xlabel("mm", fontsize=8)
        ax.tick_params(labelsize=7)
    cut_note = ", removed pieces (cyan)" if removed is not None and removed.any() else ""
    figure.suptitle(f"CT (window L{level:.0f}/W{width:.0f} HU) with the segmentation outline (red){cut_note}", fontsize=10)
    return figure_png(figure)


def display_mesh(mesh: trimesh.Trimesh, max_faces: int = DISPLAY_FACES) -> trimesh.Trimesh:
    """The mesh itself, or a quadric-decimated copy of at most ``max_faces`` faces for display.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        The mesh, mm.
    max_faces : int
        Most faces drawn.

    Returns
    -------
    trimesh.Trimesh
        ``mesh`` itself when small enough; else a decimated copy, or (when decimation fails) a
        fixed random subset of ``max_faces`` of its faces. For pictures only, never for print.
    """
    if len(mesh.faces) <= max_faces:
        return mesh
    try:
        vertices, faces = decimate(np.asarray(mesh.vertices), np.asarray(mesh.faces), max_faces)
        return trimesh.Trimesh(vertices, faces, process=False)
    except Exception:  # decimation is a display nicety: fall back to a face subsample
        keep = np.random.default_rng(0).choice(len(mesh.faces), max_faces, replace=False)
        return trimesh.Trimesh(mesh.vertices, mesh.faces[np.sort(keep)], process=False)


def render_mesh(ax: plt.Axes, mesh: trimesh.Trimesh, view: np.ndarray, up: np.ndarray,
            colors: np.ndarray | None = None) -> None:
    """Orthographic Lambert-shaded render of ``mesh`` looking along ``view`` (unit, from eye).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes to draw into; their limits are set to the mesh (mm, equal aspect).
    mesh : trimesh.Trimesh
        The mesh, mm.
    view : ndarray (3,)
        Viewing direction, from the eye into the scene (normalised here).
    up : ndarray (3,)
        Roughly the screen's up direction, not parallel to ``view`` (made orthogonal to it).
    colors : ndarray (F, 3), optional
        RGB in 0..1 per face of ``mesh``; default a uniform red-brown.
    """
    view = view / np.linalg.norm(view)
    right = np.cross(view, up)
    right /= np.linalg.norm(right)
    up = np.cross(right, view)
    normals = mesh.face_normals
    facing = normals @ view < 0
    triangles = mesh.vertices[mesh.faces[facing]]
    light = -view + 0.35 * up + 0.25 * right
    light /= np.linalg.norm(light)
    # Key light from above the viewer, a weaker fill from below so undersides stay readable.
    intensity = (0.3 + 0.6 * np.clip(normals[facing] @ light, 0.0, 1.0)
                 + 0.3 * np.clip(normals[facing] @ -up, 0.0, 1.0))
    intensity = np.clip(intensity, 0.0, 1.0)
    base = np.tile([0.86, 0.42, 0.36], (len(triangles), 1)) if colors is None else colors[facing]
    shaded = np.clip(base * intensity[:, None], 0, 1)
    depth = (triangles.mean(axis=1) @ view)
    order = np.argsort(-depth)  # far first: nearer faces are painted over them
    projected = np.stack([triangles @ right, triangles @ up], axis=-1)[order]
    faces = PolyCollection(projected, facecolors=shaded[order], edgecolors="none", antialiased=False)
    # The limits are set below and the faces lie inside them: neither the data limits nor the
    # layout need the extent of every polygon (each a pass over all of them).
    faces.set_in_layout(False)
    ax.add_collection(faces, autolim=False)
    lo = projected.reshape(-1, 2).min(axis=0)
    hi = projected.reshape(-1, 2).max(axis=0)
    pad = 0.04 * float(np.max(hi - lo) or 1.0)
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)


def rigid_transform(source: trimesh.Trimesh, target: trimesh.Trimesh, tolerance_mm: float = 1e-3) -> np.ndarray | None:
    """The 4x4 rigid transform taking ``source``'s vertices onto ``target``'s, or None.

    None unless the meshes have the same faces and every vertex lands within ``tolerance_mm``
    (the print mesh is the model moved onto the plate: its display copy is then the model's
    display copy moved the same way, instead of a second decimation).

    Parameters
    ----------
    source : trimesh.Trimesh
        The mesh to move (e.g. the model).
    target : trimesh.Trimesh
        Where it should land (e.g. the print mesh).
    tolerance_mm : float
        Largest accepted distance of any vertex from its target, mm (per coordinate).

    Returns
    -------
    ndarray (4, 4) or None
        The homogeneous rotation-and-translation (no reflection, no scale), or None.
    """
    a, b = np.asarray(source.vertices), np.asarray(target.vertices)
    if a.shape != b.shape or not np.array_equal(source.faces, target.faces):
        return None
    transform, _, _ = trimesh.registration.procrustes(a, b, reflection=False, scale=False, return_cost=True)
    moved = a @ transform[:3, :3].T + transform[:3, 3]
    if np.max(np.abs(moved - b)) > tolerance_mm:
        return None
    return transform


def model_views_png(mesh: trimesh.Trimesh, shown: trimesh.Trimesh | None = None) -> bytes:
    """The model in patient space seen from the front (anterior), the left and above.

    ``shown`` is the display copy (default :func:`display_mesh` of ``mesh``).

    Parameters
    ----------
    mesh : trimesh.Trimesh
        The model, patient LPS mm.
    shown : trimesh.Trimesh, optional
        The copy to draw.

    Returns
    -------
    bytes
        A PNG of the three views.
    """
    shown = display_mesh(mesh) if shown is None else shown
    # LPS: x to the patient's left, y posterior, z superior.
    views = (
        ("anterior view", np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        ("left lateral view", np.array([-1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        ("superior view", np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0])),
    )
    figure, axes = plt.subplots(1, 3, figsize=(11, 4.2), layout="constrained")
    for ax, (title, view, up) in zip(axes, views):
        render_mesh(ax, shown, view, up)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mm", fontsize=8)
    figure.suptitle(f"Model, patient space ({len(mesh.faces)} faces"
                    f"{f', {len(shown.faces)} drawn' if shown is not mesh else ''})", fontsize=10)
    return figure_png(figure)


def _face_centres(mesh: trimesh.Trimesh) -> np.ndarray:
    """Each face's vertex mean (``triangles_center``, the same sums) without trimesh's cache checks."""
    return np.asarray(mesh.vertices)[np.asarray(mesh.faces)].mean(axis=1)


def print_views_png(mesh: trimesh.Trimesh, support_faces: np.ndarray | None, caption: str = "",
                    shown: trimesh.Trimesh | None = None, transform: np.ndarray | None = None) -> bytes:
    """The oriented print mesh on the plate (z up) from the front and the side, support faces red.

    ``shown`` is the display copy (default :func:`display_mesh` of ``mesh``). With ``transform``,
    ``mesh`` and ``shown`` are the model where it was made (patient space) and ``transform`` puts
    them on the plate: only the display copy is moved, not the whole model.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        The model as placed for printing, print frame mm (z up from the plate); or, with
        ``transform``, the model in its own frame, mm.
    support_faces : ndarray (F,) of bool or None
        Per face of ``mesh``: True where it needs support; ignored when None or of another
        length. Carried to a decimated ``shown`` by nearest face centre.
    caption : str
        Text appended to the title.
    shown : trimesh.Trimesh, optional
        The copy to draw, in the frame of ``mesh``.
    transform : ndarray (4, 4), optional
        Rigid transform (rotation and translation, mm) from the frame of ``mesh`` to the print
        frame, e.g. ``PrintPlan.transform``; default: ``mesh`` is in the print frame already.

    Returns
    -------
    bytes
        A PNG of the two views, the plate drawn as a black line.
    """
    shown = display_mesh(mesh) if shown is None else shown
    colors = np.tile([0.55, 0.62, 0.78], (len(shown.faces), 1))
    if support_faces is not None and len(support_faces) == len(mesh.faces):
        flags = np.asarray(support_faces, dtype=bool)
        if shown is not mesh:  # carry flags to the decimated faces by nearest centroid (a rigid motion keeps it)
            tree = cKDTree(_face_centres(mesh), leafsize=32, balanced_tree=False, compact_nodes=False)
            _, nearest = tree.query(_face_centres(shown))
            flags = flags[nearest]
        colors[flags] = [0.85, 0.1, 0.1]
    if transform is not None:
        transform = np.asarray(transform, dtype=float)
        z0 = float((np.asarray(mesh.vertices) @ transform[2, :3] + transform[2, 3]).min())
        shown = shown.copy().apply_transform(transform)
    else:
        z0 = float(mesh.bounds[0, 2])
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
    for ax, (title, view) in zip(axes, (("front (looking along +y)", np.array([0.0, 1.0, 0.0])),
                                        ("side (looking along -x)", np.array([-1.0, 0.0, 0.0])))):
        render_mesh(ax, shown, view, np.array([0.0, 0.0, 1.0]), colors)
        ax.axhline(z0, color="black", linewidth=2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mm", fontsize=8)
    legend = "red: faces that need support" if support_faces is not None else "support faces not available"
    figure.suptitle(f"Print orientation on the build plate (black line); {legend}. {caption}".strip(), fontsize=10)
    return figure_png(figure)
