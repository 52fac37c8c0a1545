"""The deviation map as a picture: the model from three views, coloured by signed deviation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

# The packet's orthographic renderer (painter's order, Lambert shading) draws these views too.
from pipeline.document.pictures import display_mesh, figure_png, render_mesh  # noqa: E402

#: Faces not measured (not seen by the scan, or support contact): grey.
UNMEASURED = (0.75, 0.75, 0.75)
VIEWS = {
    "lps": (("anterior view", (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
            ("left lateral view", (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
            ("superior view", (0.0, 0.0, -1.0), (0.0, -1.0, 0.0))),
    "print": (("front (looking along +y)", (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
              ("side (looking along -x)", (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
              ("top (looking down)", (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))),
}


def deviation_views_png(model: trimesh.Trimesh, points: np.ndarray, signed_mm: np.ndarray, measured: np.ndarray,
                        tolerance_mm: float, *, frame: str = "lps", caption: str = "") -> bytes:
    """PNG of the model from three views, each face coloured by the deviation sampled nearest to it.

    Parameters
    ----------
    model : trimesh.Trimesh
        The reference model (frame ``frame``), mm.
    points, signed_mm, measured : ndarray
        Area-uniform samples of the model, their signed deviation (mm, + outward) and whether
        each was measured.
    tolerance_mm : float
        The colour scale spans -2 to +2 tolerances (red: print outside the model, blue: inside).
    frame : {"lps", "print"}
    caption : str

    Returns
    -------
    bytes
        The PNG image (three views side by side, with a colour bar in mm).
    """
    shown = display_mesh(model)
    _, nearest = cKDTree(points).query(shown.triangles_center)
    scale = Normalize(-2 * tolerance_mm, 2 * tolerance_mm)
    colormap = plt.get_cmap("RdBu_r")
    colors = colormap(scale(np.nan_to_num(signed_mm[nearest])))[:, :3]
    colors[~measured[nearest]] = UNMEASURED
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4), layout="constrained")
    for ax, (title, view, up) in zip(axes, VIEWS[frame]):
        render_mesh(ax, shown, np.array(view), np.array(up), colors)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mm", fontsize=8)
    bar = figure.colorbar(plt.cm.ScalarMappable(scale, colormap), ax=list(axes), shrink=0.8)
    bar.set_label("deviation, mm (+ print outside the model)", fontsize=8)
    figure.suptitle(f"Print vs model: signed deviation (grey: not measured). {caption}".strip(), fontsize=10)
    return figure_png(figure)
