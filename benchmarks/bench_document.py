"""Benchmark of the document stage: the shaded model pictures and a whole clinical-size packet.

1. Shaded views of a mesh (three views, PNG): ours (:func:`pipeline.document.pictures.model_views_png`,
   decimated to 15 000 faces for display, Lambert shading, painter's order) against the baseline
   every matplotlib user reaches for, ``Axes3D.plot_trisurf`` on the full mesh, same three views
   and the same figure size and dpi. Meshes: icospheres of 82k and 328k faces and a 500k-face
   bumpy sphere.
2. ``write_packet`` on a clinical-size input: a 500 x 512 x 512 int16 CT with a 500k-face
   model, identified and de-identified (the de-identified run also scans every byte of the
   folder for identifiers).

Run::

    /work/venv/bin/python benchmarks/bench_document.py [--repeats 3] [--skip-baseline]

and a markdown table of medians is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def meshes():
    import trimesh

    bumpy = trimesh.creation.icosphere(subdivisions=7, radius=40.0)
    bumpy = bumpy.subdivide(face_index=np.arange(57_500))  # each split face makes four: 500k faces
    bumpy = trimesh.Trimesh(bumpy.vertices * (1.0 + 0.05 * np.sin(bumpy.vertices[:, :1] / 4.0)), bumpy.faces)
    return {
        "icosphere 82k": trimesh.creation.icosphere(subdivisions=6, radius=40.0),
        "icosphere 328k": trimesh.creation.icosphere(subdivisions=7, radius=40.0),
        f"bumpy sphere {len(bumpy.faces) // 1000}k": bumpy,
    }


def trisurf_views_png(mesh) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(11, 4.2))
    for index, (elevation, azimuth) in enumerate(((0, -90), (0, 180), (90, -90))):
        ax = figure.add_subplot(1, 3, index + 1, projection="3d")
        v = mesh.vertices
        ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=mesh.faces, color="salmon", linewidth=0, shade=True)
        ax.view_init(elevation, azimuth)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def timed(function, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeats`` calls (CPU is steadier on a busy machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def packet_inputs(mesh, deidentify: bool):
    from pipeline.coding import BillableModel, next_charge
    from pipeline.document import PacketInputs
    from pipeline.geometry import Geometry, Mask, Volume
    from pipeline.model import Model

    geometry = Geometry(shape=(500, 512, 512), spacing=(0.5, 0.4, 0.4), origin=(-102.0, -102.0, -125.0),
                        direction=((0, 0, 1), (0, 1, 0), (1, 0, 0)))
    hu = np.full(geometry.shape, 40, dtype=np.int16)
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    k, j, i = np.ogrid[:500, :512, :512]
    inside = ((k - 250) * 0.5) ** 2 + ((j - 256) * 0.4) ** 2 + ((i - 256) * 0.4) ** 2 < 40.0 ** 2
    hu[inside] = 350
    mask[inside] = 1
    provenance = {"patient_name": "BENCH^PATIENT", "patient_id": "BENCH0001", "patient_birth_date": "19500101",
                  "accession_number": "BENCHACC1", "study_instance_uid": "1.2.3.4", "series_instance_uid": "1.2.3.4.5",
                  "frame_of_reference_uid": "1.2.3.4.6", "modality": "CT", "number_of_slices": 500,
                  "source_instances": [{"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                                        "sop_instance_uid": f"1.2.3.4.5.{n}"} for n in range(500)]}
    patient = {"name": "BENCH^PATIENT", "id": "BENCH0001", "birth_date": dt.date(1950, 1, 1), "sex": "O"}
    billable = BillableModel(model_id="bench", patient_id="BENCH0001", date_of_service=dt.date(2026, 1, 15),
                             icd10=("I71.23",), indication_summary="benchmark")
    oriented = mesh.copy()
    oriented.apply_translation(-oriented.bounds[0])
    return PacketInputs(
        case_id="BENCH", patient=patient,
        encounter={"date_of_service": dt.date(2026, 1, 15), "facility": "bench",
                   "ordering_provider": {"name": "A", "npi": "1234567893"},
                   "rendering_provider": {"name": "B", "npi": "1234567893"}, "payer": "bench"},
        indication={"icd10": ["I71.23"], "summary": "benchmark"},
        model_spec={"id": "bench", "preset": None, "kind": "model"},
        charge=next_charge([], billable), volume=Volume(hu, geometry, provenance), mask=Mask(mask, geometry),
        model=Model(mesh, "sphere"), print_mesh=oriented, support_faces=oriented.face_normals[:, 2] < -0.7,
        deidentify=deidentify,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-baseline", action="store_true", help="do not run plot_trisurf")
    args = parser.parse_args()

    from pipeline.document import write_packet
    from pipeline.document.pictures import model_views_png

    print("| shaded views (3 views, PNG) | faces | ours wall / CPU (s) | plot_trisurf wall / CPU (s) | CPU speed-up |")
    print("|---|---|---|---|---|")
    all_meshes = meshes()
    for name, mesh in all_meshes.items():
        ours = timed(lambda: model_views_png(mesh), args.repeats)
        base = (float("nan"),) * 2 if args.skip_baseline else timed(lambda: trisurf_views_png(mesh), 1)
        print(f"| {name} | {len(mesh.faces)} | {ours[0]:.2f} / {ours[1]:.2f} | {base[0]:.2f} / {base[1]:.2f} "
              f"| {base[1] / ours[1]:.1f}x |")

    big = list(all_meshes.values())[-1]
    print()
    print(f"| write_packet, 500x512x512 CT, model of {len(big.faces)} faces | wall (s) | CPU (s) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for deidentify in (False, True):
            inputs = packet_inputs(big, deidentify)
            folders = iter(range(args.repeats))

            def one_packet() -> None:
                model_dir = Path(folder) / f"{deidentify}-{next(folders)}"
                model_dir.mkdir()
                big.export(model_dir / "model.stl")
                write_packet(inputs, model_dir)

            wall, cpu = timed(one_packet, args.repeats)
            label = "de-identified (with the byte scans)" if deidentify else "identified"
            print(f"| {label} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
