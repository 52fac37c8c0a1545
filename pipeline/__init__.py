"""anatomodel: CT angiography to printable patient-specific anatomic models and their packets.

The Python API a lab scripts (the ``anatomodel`` command is a thin layer over exactly these)::

    import pipeline
    result = pipeline.run_case("configs/cases/example_aorta.yaml", "out")

    volume, load_report = pipeline.load_series("study/", series="auto")
    mask, segment_report = pipeline.segment_volume(volume, "aorta_cta", seeds_lps_mm=[(x, y, z)])
    model, mesh_report = pipeline.mesh_mask(mask)
    plan, prepare_report = pipeline.plan_print(model, "formlabs_form3b")
    check = pipeline.check_print("out/CASE/model-id", "scan_of_the_print.stl")   # print QA

Names are imported on first use, so ``import pipeline`` stays fast.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Geometry": "pipeline.geometry",
    "Volume": "pipeline.geometry",
    "Mask": "pipeline.geometry",
    "Model": "pipeline.model",
    "read_volume": "pipeline.geometry",
    "read_mask": "pipeline.geometry",
    "write_volume": "pipeline.geometry",
    "write_mask": "pipeline.geometry",
    "inventory": "pipeline.load",
    "load_series": "pipeline.load",
    "segment_volume": "pipeline.segment",
    "combine_masks": "pipeline.segment",
    "import_label_map": "pipeline.segment",
    "mesh_mask": "pipeline.mesh",
    "write_model": "pipeline.mesh",
    "read_model": "pipeline.mesh",
    "plan_print": "pipeline.prepare",
    "write_print_files": "pipeline.prepare",
    "write_packet": "pipeline.document",
    "check_print": "pipeline.check",
    "load_case": "pipeline.case",
    "run_case": "pipeline.case",
    "run_batch": "pipeline.batch",
    "Ledger": "pipeline.ledger",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
