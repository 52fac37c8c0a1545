"""The prepare stage on the phantom aorta (meshed by the mesh stage): orientation quality and
independence from the input rotation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from example_data.cta_phantom import make_phantom
from pipeline.geometry import Mask
from pipeline.mesh import mesh_mask
from pipeline.model import Model
from pipeline.prepare import plan_print
from pipeline.prepare.arrays import MeshArrays
from pipeline.prepare.evaluate import Context, evaluate_pose
from pipeline.prepare.plan import FINAL_CELLS
from pipeline.prepare.search import convex_hull
from pipeline.printers import load_printer

AORTA = 1


@pytest.fixture(scope="session")
def aorta() -> Model:
    phantom = make_phantom()
    mask = Mask(array=(phantom.labels == AORTA).astype(np.uint8), geometry=phantom.geometry,
                labels={AORTA: "aorta"})
    model, _ = mesh_mask(mask, label=AORTA)
    return model


@pytest.fixture(scope="session")
def aorta_plans(aorta) -> dict:
    return {printer: plan_print(aorta, printer)[0] for printer in ("formlabs_form3b", "ultimaker_s5")}


@pytest.mark.slow
def test_aorta_support_volume_beats_random_orientations(aorta, aorta_plans):
    """Below the 10th percentile of 200 random orientations, measured the same way."""
    printer = "formlabs_form3b"
    plan = aorta_plans[printer]
    assert plan.fits
    arrays = MeshArrays.from_arrays(aorta.mesh.vertices, aorta.mesh.faces)
    hull = convex_hull(arrays)
    ctx = Context(profile=load_printer(printer), scale_mm=float(np.sqrt(arrays.areas.sum() / (4 * np.pi))))
    cell = float(np.ptp(hull.points, axis=0).max()) / FINAL_CELLS
    directions = Rotation.random(200, random_state=7).apply([0.0, 0.0, -1.0])
    volumes = [evaluate_pose(arrays, hull.points, d, ctx, cell).support_volume_mm3 for d in directions]
    assert plan.support_volume_mm3 < np.percentile(volumes, 10)


@pytest.mark.slow
def test_plan_does_not_depend_on_the_input_rotation(aorta, aorta_plans):
    base = aorta_plans["ultimaker_s5"]
    for seed in (1, 2):
        rotation = Rotation.random(random_state=seed)
        moved = aorta.mesh.copy()
        transform = np.eye(4)
        transform[:3, :3] = rotation.as_matrix()
        transform[:3, 3] = [40.0 * seed, -25.0, 13.0]
        moved.apply_transform(transform)
        plan, _ = plan_print(Model(moved, name="aorta"), "ultimaker_s5")
        assert plan.cost_total == pytest.approx(base.cost_total, rel=0.05)
        assert plan.support_volume_mm3 == pytest.approx(base.support_volume_mm3, rel=0.15)
        assert plan.overhang_area_mm2 == pytest.approx(base.overhang_area_mm2, rel=0.15)
        assert plan.height_mm == pytest.approx(base.height_mm, rel=0.05)
        # The same side of the aorta faces the plate (within a few degrees).
        down = rotation.inv().apply(plan.down_direction_lps)
        assert np.degrees(np.arccos(np.clip(down @ base.down_direction_lps, -1, 1))) < 10


def test_aorta_plan_reports_everything(aorta_plans):
    plan = aorta_plans["formlabs_form3b"]
    assert plan.layers == int(np.ceil((plan.height_mm + 7) / 0.1))
    assert plan.material_part_ml > 0 and plan.material_part_g > plan.material_part_ml
    assert plan.support_volume_mm3 > 0 and plan.material_supports_ml > 0
    assert plan.estimated_time_h > 0
    assert len(plan.alternatives) == 3
    costs = [other.cost_total for other in plan.alternatives]
    assert costs == sorted(costs)
    # Runner-ups are different orientations (at least 15 degrees from the chosen one).
    for other in plan.alternatives:
        assert np.dot(other.down_direction_lps, plan.down_direction_lps) < np.cos(np.radians(15))
    assert set(plan.margins_mm) == {"x", "y", "z"} and min(plan.margins_mm.values()) >= 0
