"""The regression report: JSON, and an HTML page beside it with pictures (PNG, embedded)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import atomic_write
from pipeline.report import to_jsonable


def report_paths(path: str | Path) -> tuple[Path, Path]:
    """The JSON file and the HTML page a ``--report PATH`` names.

    The page is ``PATH`` with suffix ``.html``; the JSON is ``PATH``, or ``PATH`` with suffix
    ``.json`` when ``PATH`` is itself the ``.html`` page (else the page would overwrite it).

    Parameters
    ----------
    path : str or Path
        What the user gave: ``report.json``, ``report.html`` or ``report`` (no suffix).

    Returns
    -------
    tuple of (Path, Path)
        The JSON file and the HTML page, never the same file.
    """
    path = Path(path)
    page = path.with_suffix(".html")
    return (path.with_suffix(".json") if path == page else path), page


def write_report(result: Any, path: Path, pictures: dict[str, bytes]) -> tuple[Path, Path]:
    """Write the JSON report and the HTML page that :func:`report_paths` names; return both paths.

    Parameters
    ----------
    result : RegressionResult
        The run's result (:func:`pipeline.regress.run_regress`); anything with a ``to_dict()``
        giving ``ok``, ``cases``, ``consistency``, ``seconds`` (s) and the version fields.
    path : Path
        What ``--report`` named (see :func:`report_paths`). Its folder is created if missing.
    pictures : dict of str to bytes
        PNG images by case name, and ``"consistency"`` for the distance histogram; a case
        without a picture gets none.

    Returns
    -------
    tuple of (Path, Path)
        The JSON file and the HTML page, both written atomically (``OSError`` if the folder
        cannot be written).
    """
    path, page = report_paths(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_jsonable(result.to_dict())
    atomic_write(path, json.dumps(data, indent=2) + "\n")
    atomic_write(page, _html(data, pictures))
    return path, page


def model_picture(mesh: Any, volume: Any, mask: Any, title: str) -> bytes:
    """PNG: the model's surface points seen from the front, side and top, and a mid slice with the mask outline.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        The model's surface, LPS mm (40 000 points are sampled from it, shaded by their normals).
    volume : Volume
        The CT volume the model came from (int16 HU, shown at -200..1200 HU).
    mask : Mask
        The segmentation on ``volume``'s grid; the slice shown is the mean ``k`` of the slices
        it occupies, and must not be empty.
    title : str
        The figure's title (case name and description; no PHI).

    Returns
    -------
    bytes
        The PNG file's bytes.
    """
    from pipeline.document.pictures import figure_png  # first: it selects the Agg backend
    import matplotlib.pyplot as plt

    points, normals = _points(mesh)
    figure, axes = plt.subplots(1, 4, figsize=(16, 4.2), dpi=80)
    views = [("front (x, z)", 0, 2, 1), ("left side (y, z)", 1, 2, 0), ("top (x, y)", 0, 1, 2)]
    for axis, (name, u, v, depth) in zip(axes, views):
        order = np.argsort(points[:, depth])  # far points first, near ones drawn over them
        shade = np.abs(normals[order, depth])
        axis.scatter(points[order, u], points[order, v], c=shade, cmap="bone", s=0.3, vmin=0, vmax=1)
        axis.set_aspect("equal")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("LPS mm", fontsize=8)
        axis.tick_params(labelsize=7)
    k = int(np.flatnonzero(mask.array.any(axis=(1, 2))).mean())
    axes[3].imshow(volume.array[k], cmap="gray", vmin=-200, vmax=1200)
    axes[3].contour(mask.array[k] > 0, levels=[0.5], colors="tab:red", linewidths=0.6)
    axes[3].set_title(f"slice {k} with the mask outline", fontsize=9)
    axes[3].axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure_png(figure)


def distance_picture(distances: dict[str, np.ndarray], title: str) -> bytes:
    """PNG: histogram of surface distances (mm) per compared series.

    Parameters
    ----------
    distances : dict of str to ndarray
        Per series name, the distances (mm) of its registered surface points to the reference
        skull; drawn clipped at 3 mm, the legend giving the unclipped mean.
    title : str
        The figure's title.

    Returns
    -------
    bytes
        The PNG file's bytes.
    """
    from pipeline.document.pictures import figure_png  # first: it selects the Agg backend
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.2), dpi=80)
    for name, values in distances.items():
        axis.hist(np.clip(values, 0, 3), bins=60, histtype="step", label=f"{name} (mean {values.mean():.2f} mm)")
    axis.set_xlabel("distance to the 1 mm skull after registration, mm (clipped at 3)")
    axis.set_ylabel("surface points")
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure_png(figure)


def _points(mesh: Any, count: int = 40_000) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.regress.surface import sample_surface

    return sample_surface(mesh, count, seed=5)


def _html(data: dict[str, Any], pictures: dict[str, bytes]) -> str:
    e = html.escape
    verdict = "PASS" if data["ok"] else "DRIFT"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>anatomodel regression</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;font-size:90%}.bad{background:#fdd}.good{background:#dfd}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>anatomodel regression: {verdict}</h1>",
        f"<p>anatomodel {e(str(data['anatomodel_version']))}, {e(str(data['started']))}, "
        f"{data['seconds']:.0f} s; phantoms {e(str(data['phantoms']))}; golden {e(str(data['golden']))}</p>",
    ]
    for case in data["cases"]:
        parts.append(f"<h2>{e(case['case'])}: {'ok' if case['ok'] else 'DRIFT'}</h2><p>{e(case['description'])}"
                     f"<br>seed: {e(json.dumps(case['seed']))}</p>")
        parts.append("<table><tr><th>quantity</th><th>golden</th><th>measured</th><th>tolerance</th><th></th></tr>")
        for check in case["checks"]:
            style = "good" if check["ok"] else "bad"
            parts.append(f"<tr class='{style}'><td>{e(check['quantity'])}</td><td>{e(str(check['golden']))}</td>"
                         f"<td>{e(str(check['measured']))}</td><td>{e(check['tolerance'])}</td>"
                         f"<td>{'ok' if check['ok'] else 'DRIFT'}</td></tr>")
        parts.append("</table>")
        if case["case"] in pictures:
            parts.append(_img(pictures[case["case"]], case["case"]))
    if data["consistency"]:
        parts.append("<h2>Consistency across acquisitions</h2><p>Each series' skull rigidly registered "
                     "(point-to-plane ICP from the identity) to the untilted 1 mm skull, compared over the "
                     "z range both cover (inset by a margin: meshes are capped where a scan ends).</p>")
        parts.append("<table><tr><th>series</th><th>common z (mm)</th><th>ICP rotation (deg)</th>"
                     "<th>ICP translation (mm)</th><th>mean distance before / after (mm)</th><th>volume (ml)</th>"
                     "<th>1 mm volume (ml)</th><th>1 mm at this thickness (ml)</th><th>difference to 1 mm / "
                     "to thickness-matched</th><th>checked</th><th></th></tr>")
        for name, item in data["consistency"].items():
            style = "good" if item["ok"] else ("bad" if item["checked"] else "")
            matched = item["volume_ml_thickness_matched_reference"]
            parts.append(
                f"<tr class='{style}'><td>{e(name)}</td><td>{item['common_z_lps_mm']}</td>"
                f"<td>{item['icp']['rotation_deg']:.3f}</td>"
                f"<td>{', '.join(f'{v:.2f}' for v in item['icp']['translation_mm'])}</td>"
                f"<td>{item['distance_before_registration']['mean_mm']:.3f} / {item['distance']['mean_mm']:.3f}</td>"
                f"<td>{item['volume_ml']:.1f}</td><td>{item['reference_volume_ml']:.1f}</td>"
                f"<td>{'-' if matched is None else f'{matched:.1f}'}</td>"
                f"<td>{item['volume_difference_to_reference']:+.2%} / "
                f"{'-' if matched is None else format(item['volume_difference'], '+.2%')}</td>"
                f"<td>{'yes' if item['checked'] else 'information'}</td>"
                f"<td>{'ok' if item['ok'] else 'out of bounds'}</td></tr>")
        parts.append("</table>")
        if "consistency" in pictures:
            parts.append(_img(pictures["consistency"], "consistency"))
    parts.append("</body></html>")
    return "\n".join(parts)


def _img(png: bytes, alt: str) -> str:
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"
