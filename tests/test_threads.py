"""The thread budget: a process told to use one thread (a batch worker) gives the same results on it.

The mesh stage and the surface distances normally overlap work on a helper thread and send k-d
tree queries to every core; with ``OMP_NUM_THREADS=1`` they run on the calling thread. The model,
its QA figures and the distances must not depend on which.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import numpy as np
import pytest
import trimesh

from pipeline.mesh import mesh_mask
from pipeline.mesh.distance import SurfaceDistance
from pipeline.threads import InlineExecutor, helper_thread, thread_budget
from test_mesh import SHAPES, voxelise


@pytest.mark.parametrize("setting, expected", [("1", 1), ("3", 3), (" 2 ", 2)])
def test_budget_follows_omp_num_threads(monkeypatch, setting, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", setting)
    assert thread_budget() == expected


@pytest.mark.parametrize("setting", [None, "", "0", "-2", "two", "1.5"])
def test_budget_without_a_usable_setting_is_the_cores_this_process_may_use(monkeypatch, setting):
    if setting is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", setting)
    assert thread_budget() == len(os.sched_getaffinity(0))


def test_a_budget_of_one_runs_helpers_on_the_calling_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with helper_thread("probe") as helper:
        assert isinstance(helper, InlineExecutor)
        assert helper.submit(threading.get_ident).result() == threading.get_ident()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with helper_thread("probe") as helper:
        assert helper.submit(threading.get_ident).result() != threading.get_ident()


def test_inline_executor_delivers_the_task_error_through_the_future():
    future = InlineExecutor().submit(int, "not a number")
    with pytest.raises(ValueError, match="not a number"):
        future.result()


def test_mesh_is_the_same_on_one_thread_and_on_two(monkeypatch):
    sdf, _, half = SHAPES["torus"]
    mask = voxelise(sdf, half, 0.8)
    runs = {}
    for setting in ("1", "2"):
        monkeypatch.setenv("OMP_NUM_THREADS", setting)
        runs[setting] = mesh_mask(mask, min_wall_mm=1.0)
    (one, one_report), (two, two_report) = runs["1"], runs["2"]
    assert np.array_equal(one.mesh.vertices, two.mesh.vertices) and np.array_equal(one.mesh.faces, two.mesh.faces)
    one_fields, two_fields = dataclasses.asdict(one_report), dataclasses.asdict(two_report)
    del one_fields["timings_s"], two_fields["timings_s"]
    assert one_fields == two_fields

def test_surface_distances_are_the_same_with_one_query_thread(monkeypatch):
    surface = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    points = np.random.default_rng(7).normal(scale=8.0, size=(5000, 3))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    many = SurfaceDistance(surface.vertices, surface.faces)(points)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one = SurfaceDistance(surface.vertices, surface.faces)(points)
    _, exact, _ = trimesh.proximity.closest_point(surface, points)
    assert np.array_equal(one, many)
    np.testing.assert_allclose(one, exact, atol=1e-9)
