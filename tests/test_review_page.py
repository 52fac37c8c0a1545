"""review.html in a real headless Chromium (Debian ``chromium``), driven over the DevTools protocol.

The page is built from a CT volume with a sphere of contrast, its mask, a removed piece and the
sphere's mesh; the browser must load it from file:// with no console error and no request
beyond the file, draw the outline the mask implies, change the image when the slider moves, and
lay the views out as designed (three slices in a row, the 3D view beside them).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import trimesh
from PIL import Image

from pipeline.document.review import ReviewModel, slice_data, write_review_page
from pipeline.errors import DocumentError
from pipeline.geometry import Geometry, Mask, Volume

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHAPE = (36, 60, 56)
SPACING = (1.5, 0.8, 0.8)
CENTRE_INDEX = np.array([18, 30, 26])
RADIUS_MM = 9.0


@pytest.fixture(scope="module")
def scene():
    geometry = Geometry(shape=SHAPE, spacing=SPACING, origin=(-20.0, -25.0, 0.0),
                        direction=((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)))
    k, j, i = np.indices(SHAPE)
    distance = np.sqrt(((k - CENTRE_INDEX[0]) * SPACING[0]) ** 2 + ((j - CENTRE_INDEX[1]) * SPACING[1]) ** 2
                       + ((i - CENTRE_INDEX[2]) * SPACING[2]) ** 2)
    hu = np.where(distance < RADIUS_MM, 350, 40).astype(np.int16)
    blob = (np.abs(k - 18) <= 2) & (np.abs(j - 30) <= 3) & (np.abs(i - 45) <= 3)   # a removed piece
    hu[blob] = 300
    volume = Volume(hu, geometry, {})
    mask = Mask((distance < RADIUS_MM).astype(np.uint8), geometry, {1: "aorta"})
    removed = Mask(blob.astype(np.uint8), geometry, {1: "removed"})
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS_MM)
    mesh.apply_translation(geometry.index_to_lps(CENTRE_INDEX[None].astype(float))[0])
    facts = {
        "case": {"case_id": "CASE-R", "deidentified": False},
        "patient": {"name": "DOE^JANE", "id": "MRN1", "birth_date": "1964-03-01", "sex": "F", "pseudonym": None},
        "encounter": {"date_of_service": "2026-01-15", "facility": "Lab", "payer": "medicare",
                      "ordering_provider": {"name": "A", "npi": None}, "rendering_provider": {"name": "B", "npi": None}},
        "indication": {"icd10": ["I71.23"], "descriptions": ["Aneurysm of the descending thoracic aorta, without rupture"]},
        "model": {"id": "aorta", "structure": "aorta"},
        "charge": {"cpt": "0559T", "units": 1, "modifiers": [], "icd10": ["I71.23"], "icd10_pointers": ["A"],
                   "descriptor": "Anatomic model 3D print"},
        "mesh_qa": {"watertight": bool(mesh.is_watertight), "manifold": True, "winding_consistent": True,
                    "outward_normals": True, "self_intersecting_faces": 0},
        "print_plan": None,
        "segmentation": {"warnings": [], "holds": [{"code": "segment.tube_ends_inside_scan", "source": "segment",
                                                    "reason": "the aorta ends inside the scan", "model_id": "aorta"}]},
        "warnings": ["mesh QA: an example warning"],
    }
    return volume, mask, removed, mesh, facts


def test_no_model_is_refused_and_no_page_written(scene, tmp_path):
    volume = scene[0]
    with pytest.raises(DocumentError, match="no model to review"):
        write_review_page(volume, [], tmp_path / "review.html", case_id="CASE-R")
    assert not any(tmp_path.iterdir())


def test_slice_crop_keeps_every_voxel_of_the_segmentation(scene):
    volume, mask, removed, _, _ = scene
    data = slice_data(volume, mask, removed)
    labels = np.frombuffer(base64.b64decode(data["labels"]), np.uint8).reshape(data["shape"])
    assert data["spacing_mm"] == list(SPACING)                  # small volume: not strided
    assert np.count_nonzero(labels == 1) == np.count_nonzero(mask.array)
    assert np.count_nonzero(labels == 2) == np.count_nonzero(removed.array)


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, socket):
        self.socket = socket
        self.events: list[dict] = []
        self.counter = 0

    def send(self, method: str, **params) -> dict:
        self.counter += 1
        self.socket.send(json.dumps({"id": self.counter, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.counter:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(json.loads(self.socket.recv(timeout=deadline - time.monotonic())))
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run does)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1400,1100", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://")[1].split("/")[0].rsplit(":", 1)[1])
        assert port is not None, "chromium did not open its DevTools port"
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _page_url(port: int) -> str:
    """The websocket of the browser's page (its DevTools HTTP endpoint on localhost)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=20) as answer:
        targets = json.load(answer)
    return next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]


def _boundary(labels: np.ndarray, value: int) -> int:
    """Pixels of ``value`` with a 4-neighbour of another label (the image edge counts as 0)."""
    padded = np.pad(labels, 1)
    core = padded[1:-1, 1:-1] == value
    differs = ((padded[:-2, 1:-1] != value) | (padded[2:, 1:-1] != value)
               | (padded[1:-1, :-2] != value) | (padded[1:-1, 2:] != value))
    return int(np.count_nonzero(core & differs))


def test_review_page_in_headless_chromium(scene, browser, tmp_path):
    volume, mask, removed, mesh, facts = scene
    page_path = tmp_path / "review.html"
    report = write_review_page(volume, [ReviewModel("aorta", mask, mesh, facts, removed=removed)], page_path,
                               case_id="CASE-R")
    text = page_path.read_text()
    assert "DOE" not in text and "MRN1" not in text and "1964" not in text   # no PHI in the page
    assert "http://" not in text.split("<script", 1)[0] and "src=" not in text  # nothing fetched

    from websockets.sync.client import connect

    with connect(_page_url(browser), max_size=None, open_timeout=20) as socket:
        tools = DevTools(socket)
        tools.send("Runtime.enable")
        tools.send("Log.enable")
        tools.send("Network.enable")
        tools.send("Page.enable")
        tools.send("Page.navigate", url=page_path.as_uri())
        tools.wait_for("Page.loadEventFired")

        errors = [e for e in tools.events
                  if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        assert errors == []
        requests = [e["params"]["request"]["url"] for e in tools.events if e.get("method") == "Network.requestWillBeSent"]
        assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests

        # The outline drawn on the axial slice is the mask's boundary at that slice (red), and the
        # removed piece's (orange), pixel for pixel.
        count_js = """(() => { const c = document.querySelector('canvas.slice[data-axis="0"]');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let red = 0, orange = 0;
            for (let p = 0; p < d.length; p += 4) { if (d[p] === 255 && d[p+1] === 0 && d[p+2] === 0) red++;
              if (d[p] === 255 && d[p+1] === 160 && d[p+2] === 0) orange++; }
            return [red, orange, Number(document.querySelector('input[aria-label="axial slice"]').value)]; })()"""
        red, orange, slice_index = tools.evaluate(count_js)
        labels = np.frombuffer(base64.b64decode(slice_data(volume, mask, removed)["labels"]), np.uint8)
        labels = labels.reshape(report.crops["aorta"])
        assert red == _boundary(labels[slice_index], 1) > 20
        assert orange == _boundary(labels[slice_index], 2) > 0

        # The slider changes the image.
        before = tools.evaluate("document.querySelector('canvas.slice[data-axis=\"0\"]').toDataURL()")
        tools.evaluate("""(() => { const s = document.querySelector('input[aria-label="axial slice"]');
            s.value = String(Number(s.value) + 3); s.dispatchEvent(new Event('input')); })()""")
        after = tools.evaluate("document.querySelector('canvas.slice[data-axis=\"0\"]').toDataURL()")
        assert after != before
        red_after, _, moved = tools.evaluate(count_js)
        assert moved == slice_index + 3 and red_after == _boundary(labels[moved], 1) > 20

        # The layout: three slices and the 3D view in one row, left to right, then the QA table
        # and the approve command; checked on a screenshot.
        rects = tools.evaluate("""[...document.querySelectorAll('#model-aorta canvas')].map(c => {
            const r = c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height, c.className]; })""")
        assert [r[4] for r in rects] == ["slice", "slice", "slice", "model3d"]
        assert all(abs(r[1] - rects[0][1]) < 2 for r in rects)
        assert all(a[0] + a[2] <= b[0] for a, b in zip(rects, rects[1:]))
        table_top = tools.evaluate("document.querySelector('#model-aorta table').getBoundingClientRect().top")
        assert table_top > max(r[1] + r[3] for r in rects)
        assert tools.evaluate("document.querySelector('code.approve').textContent").startswith("anatomodel ")
        assert "segment.tube_ends_inside_scan" in tools.evaluate("document.body.innerText")
        shot = tools.send("Page.captureScreenshot", format="png")
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")).astype(int)
        scale = image.shape[1] / tools.evaluate("window.innerWidth")

        def region(rect):
            left, top, width, height = (int(round(v * scale)) for v in rect[:4])
            return image[top:top + height, left:left + width]

        for rect in rects[:3]:                                   # CT grey with the red outline
            pixels = region(rect)
            assert np.count_nonzero((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)) > 10
        model_view = region(rects[3])                            # the shaded model on its background
        background = np.all(np.abs(model_view - [244, 244, 244]) < 4, axis=-1)
        assert 0.05 < 1 - background.mean() < 0.9
