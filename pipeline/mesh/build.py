"""``mesh_mask``: a label map to a closed, smoothed, decimated, checked surface in LPS mm."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from concurrent.futures import Executor, Future

import numpy as np
import trimesh

from pipeline.errors import MeshError
from pipeline.geometry import Mask
from pipeline.mesh.decimate import decimate
from pipeline.mesh.distance import SurfaceDistance
from pipeline.mesh.options import MeshOptions
from pipeline.mesh.qa import Quality, measure
from pipeline.mesh.repair import meshfix, remove_back_to_back_faces, remove_small_shells
from pipeline.mesh.report import MeshReport
from pipeline.mesh.smoothing import correct_volume, enclosed_volume, taubin, windowed_sinc
from pipeline.mesh.surface import extract_surface, structure_array
from pipeline.mesh.thickness import MaskField
from pipeline.mesh.topology import Topology, compact, measures, topology, vertex_adjacency
from pipeline.model import Model
from pipeline.report import StageClock, installed_versions
from pipeline.threads import helper_thread


def mesh_mask(mask: Mask, *, label: int | None = None, options: MeshOptions | None = None,
              min_wall_mm: float | None = None) -> tuple[Model, MeshReport]:
    """Turn one structure of a label map into a printable closed surface in patient space.

    Marching cubes (level 0.5) on the mask cropped to its bounding box and padded with
    background, so a structure cut by the edge of the scan is capped flat at that edge;
    windowed-sinc (or Taubin) smoothing with the caps held in their plane; a uniform normal
    offset restoring the mask's volume; quadric decimation to the face budget; repair if the
    result is not a clean closed manifold (decimation's back-to-back folds removed locally, then
    MeshFix for anything left); and the quality figures of :class:`MeshReport`.
    Uses two threads where the work allows it (see ``benchmarks/bench_mesh.py``).

    Parameters
    ----------
    mask : Mask
        Label map with its patient-space geometry.
    label : int, optional
        The label to mesh; None meshes every nonzero label as one solid.
    options : MeshOptions, optional
        Parameters; the defaults suit a 0.3-1 mm CTA.
    min_wall_mm : float, optional
        The printer's minimum wall, mm: thinner patches are listed in the report.

    Returns
    -------
    model : Model
        Vertices in LPS mm, outward normals.
    report : MeshReport

    Raises
    ------
    MeshError
        Empty mask or label, nothing left above the minimum piece volume, or a surface that
        cannot be repaired into a closed manifold.
    """
    options = options or MeshOptions()
    if min_wall_mm is not None and not min_wall_mm > 0:
        raise ValueError(f"min_wall_mm must be positive, got {min_wall_mm}")
    # A second thread shares the work where the GIL is released (sparse products, k-d tree
    # construction, NumPy array passes): smoothing, the QA's search tree and its ray marching.
    # Within a budget of one thread (a batch worker) the same tasks run in turn on this one.
    with _numpy_without_huge_pages(), helper_thread("anatomodel-mesh") as background:
        return _mesh(mask, label, options, min_wall_mm, background)


def _mesh(mask: Mask, label: int | None, options: MeshOptions, min_wall_mm: float | None,
          background: Executor) -> tuple[Model, MeshReport]:
    """The body of :func:`mesh_mask`; ``background`` runs work that overlaps the main thread."""
    timings: dict[str, float] = {}
    clock = StageClock(timings, digits=4)
    geometry = mask.geometry
    name = mask.labels.get(label, f"label_{label}") if label is not None else _joined_name(mask)

    binary, box = structure_array(mask, label)
    padded = np.pad(binary.view(np.uint8), 1)
    del binary
    raw = extract_surface(padded, box, geometry, options.surface)
    clock("marching_cubes")
    voxel_volume = geometry.voxel_volume_mm3
    mask_volume = raw.voxel_count * voxel_volume
    report = MeshReport(
        structure=name, label=label, voxel_count=raw.voxel_count, voxel_spacing_mm=list(geometry.spacing),
        mask_volume_mm3=mask_volume, crop_box_kji=[[s.start, s.stop] for s in box],
        touches_volume_edge=raw.touched_edges(), min_wall_mm=min_wall_mm,
        wall_probe_mm=max(options.wall_probe_mm, 1.5 * (min_wall_mm or 0.0)),
        faces_raw=len(raw.faces), options=dataclasses.asdict(options), timings_s=timings,
    )
    report.algorithms["surface"] = raw.algorithm
    used = ["numpy", "scipy", "trimesh", "vtk" if raw.algorithm.startswith("vtk") else "scikit-image"]
    if report.touches_volume_edge:
        report.warnings.append(
            "the structure is cut by the edge of the scanned volume ("
            + ", ".join(report.touches_volume_edge) + "): the model is closed with a flat cap there")

    raw_lps = geometry.index_to_lps(raw.vertices_index)
    raw_measures = background.submit(measures, raw_lps, raw.faces, False)  # while the adjacency is built
    adjacency = vertex_adjacency(raw.faces, len(raw_lps), np.int8)
    keep, shells = remove_small_shells(raw_lps, raw.faces, options.min_shell_volume_mm3, adjacency,
                                       face_volumes=raw_measures.result().face_volumes)
    if shells.kept == 0:
        raise MeshError(
            f"every piece of {name} is smaller than the minimum piece volume "
            f"({options.min_shell_volume_mm3:g} mm3; the mask has {raw.voxel_count} voxel(s), "
            f"{mask_volume:.3g} mm3)",
            hint="lower MeshOptions.min_shell_volume_mm3 to keep it, or check the segmentation")
    report.shells_removed, report.removed_volume_mm3 = shells.removed, shells.removed_volume_mm3
    report.algorithms["shells"] = (f"connected pieces under {options.min_shell_volume_mm3:g} mm3 removed "
                                   f"({shells.removed} removed)")
    if shells.removed:
        index_vertices, faces, kept_vertices = compact(raw.vertices_index, raw.faces[keep])
        raw_lps = raw_lps[kept_vertices]
        adjacency = vertex_adjacency(faces, len(raw_lps), np.int8)
    else:
        index_vertices, faces, kept_vertices = raw.vertices_index, raw.faces, np.arange(len(raw_lps))
    report.raw_volume_mm3 = shells.kept_volume_mm3
    if raw.voxel_count < 8:
        report.warnings.append(f"the structure has only {raw.voxel_count} voxel(s); its model is a rough blob")
    clock("shells")

    caps = [(axis, value, members[np.isin(members, kept_vertices)]) for axis, value, members in raw.cap_vertices()]
    caps = [(axis, value, np.searchsorted(kept_vertices, members)) for axis, value, members in caps]
    if options.smoothing == "windowed_sinc" and options.smoothing_iterations > 0:
        report.algorithms["smoothing"] = (f"windowed sinc (Taubin, Zhang and Golub 1996), "
                                          f"{options.smoothing_iterations} iterations, pass band "
                                          f"{options.smoothing_passband:g}, cap planes held")
        index_vertices = windowed_sinc(index_vertices, faces, iterations=options.smoothing_iterations,
                                       passband=options.smoothing_passband, fixed_planes=caps,
                                       adjacency=adjacency, executor=background)
    elif options.smoothing == "taubin" and options.smoothing_iterations > 0:
        report.algorithms["smoothing"] = (f"Taubin lambda/mu, {options.smoothing_iterations} iterations, "
                                          f"lambda {options.smoothing_lambda:g}, mu {options.smoothing_mu:g}")
        index_vertices = taubin(index_vertices, faces, iterations=options.smoothing_iterations,
                                lamb=options.smoothing_lambda, mu=options.smoothing_mu, fixed_planes=caps,
                                adjacency=adjacency)
    vertices = geometry.index_to_lps(index_vertices)
    clock("smoothing")
    # the raw surface's search tree (for the QA's drift figures) is built on the other thread
    # while this one corrects the volume and decimates
    raw_distance = background.submit(SurfaceDistance, raw_lps, faces)
    if options.preserve_volume:
        target = mask_volume - shells.removed_volume_mm3
        hold, hold_normals = _cap_constraints(len(vertices), caps, geometry)
        corrected, offset, smoothed_volume = correct_volume(vertices, faces, target, hold=hold,
                                                            hold_normals=hold_normals)
    else:
        smoothed_volume = enclosed_volume(vertices, faces)
    if smoothed_volume < 0.5 * report.raw_volume_mm3:
        # Structures a few voxels across are all "staircase" to the filter and collapse.
        report.warnings.append(
            f"smoothing would shrink {name} by {100 * (1 - smoothed_volume / report.raw_volume_mm3):.0f} %: "
            "it is too small for the pass band, so the unsmoothed surface is kept")
        vertices, smoothed_volume = raw_lps.copy(), report.raw_volume_mm3
        report.algorithms["smoothing"] = "none: the structure is too small for the pass band"
        if options.preserve_volume:
            corrected, offset, _ = correct_volume(vertices, faces, target, hold=hold, hold_normals=hold_normals)
    if options.preserve_volume:
        vertices, report.volume_correction_offset_mm = corrected, offset
        report.algorithms["volume_correction"] = (f"uniform offset along vertex normals to the mask volume "
                                                  f"(one exact Newton step), {offset:+.4f} mm")
    report.smoothing_volume_change_percent = 100.0 * (smoothed_volume - report.raw_volume_mm3) / report.raw_volume_mm3
    clock("volume_correction")

    if options.target_faces is not None and len(faces) > options.target_faces:
        vertices, faces = _decimate(vertices, faces, options)
        report.algorithms["decimation"] = (f"fast-simplification quadric edge collapse, {report.faces_raw} -> "
                                           f"{len(faces)} faces")
        used.append("fast-simplification")
        clock("decimation")

    field = MaskField(padded, [s.start - 1 for s in box], geometry)
    # decimation's folds are found from the topology alone and undone locally before the full
    # QA, so it runs once (MeshFix on the whole model takes seconds)
    known = topology(vertices, faces)
    if options.repair and known[0].duplicate_half_edges:
        vertices, faces, pairs = remove_back_to_back_faces(vertices, faces)
        if pairs:
            report.repaired = True
            report.repair_actions.append(f"removed {pairs} back-to-back face pair(s) folded by decimation "
                                         f"({_defects(known[0])})")
            clock("repair")
            known = None
    measured = _measure(vertices, faces, field, raw_distance, min_wall_mm, options, background, known)
    clock("quality")
    if options.repair and _needs_repair(measured):
        report.repaired = True
        report.repair_actions.append(_repair_reason(measured))
        vertices, faces = meshfix(vertices, faces)
        used.append("pymeshfix")
        if len(faces) == 0:
            raise MeshError(f"the surface of {name} could not be repaired: MeshFix removed every triangle")
        clock("meshfix")
        measured = _measure(vertices, faces, field, raw_distance, min_wall_mm, options, background)
        clock("quality_after_meshfix")

    if report.repair_actions:
        report.algorithms["repair"] = "; ".join(
            ("MeshFix (pymeshfix)" if action.startswith("MeshFix") else "local removal of back-to-back folds")
            for action in report.repair_actions)
    report.libraries = installed_versions(used)
    _fill_quality(report, measured)
    report.faces_final, report.vertices_final = len(faces), len(vertices)
    if not (measured.topology.watertight and measured.topology.manifold):
        raise MeshError(
            f"the surface of {name} is not a closed manifold after repair ({_repair_reason(measured)})",
            hint="check the mask for one-voxel bridges or sheets; try repair=True or less decimation")
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    provenance = {
        "stage": "mesh", "structure": name, "label": label, "source_mask": dict(mask.provenance),
        "grid": geometry.to_dict(), "crop_box_kji": report.crop_box_kji,
    }
    timings["total"] = float(sum(timings.values()))
    return Model(mesh=mesh, name=name, provenance=provenance), report


_huge_pages_lock = threading.Lock()
_huge_pages_users = 0
_huge_pages_before = True


@contextlib.contextmanager
def _numpy_without_huge_pages():
    """Keep NumPy from asking for transparent huge pages while a surface is built.

    NumPy marks every array of 4 MB or more with ``madvise(MADV_HUGEPAGE)``; under Linux's usual
    THP setting (``defrag=madvise``) the first touch of such an array can make the kernel compact
    memory on the spot. The mesh stage makes hundreds of short-lived arrays of 2-20 MB: on the
    benchmark's segmented aorta, runs with huge pages took 14% longer (medians of six
    interleaved fresh-process runs each, 3.65 s against 3.20 s on a busy host). NumPy's own
    switch is restored afterwards (a counter keeps overlapping calls from different threads right).
    """
    global _huge_pages_users, _huge_pages_before
    switch = getattr(getattr(np, "_core", None), "multiarray", None)
    switch = getattr(switch, "_set_madvise_hugepage", None)
    if switch is None:  # another NumPy layout: nothing to change
        yield
        return
    with _huge_pages_lock:
        if _huge_pages_users == 0:
            _huge_pages_before = switch(False)
        _huge_pages_users += 1
    try:
        yield
    finally:
        with _huge_pages_lock:
            _huge_pages_users -= 1
            if _huge_pages_users == 0:
                switch(_huge_pages_before)


def _joined_name(mask: Mask) -> str:
    present = [mask.labels[value] for value in sorted(mask.labels)]
    return "+".join(present) if present else "structure"


def _cap_constraints(n_vertices: int, caps, geometry) -> tuple[np.ndarray, np.ndarray]:
    """Which vertices lie on a flat cap at the volume edge, and the LPS normal of that cap."""
    hold = np.zeros(n_vertices, dtype=bool)
    normals = np.zeros((n_vertices, 3))
    to_index = np.linalg.inv(geometry.affine[:3, :3])
    for axis, _, members in caps:
        normal = to_index[axis] / np.linalg.norm(to_index[axis])  # gradient of index[axis] in LPS
        hold[members] = True
        normals[members] = normal
    return hold, normals


def _decimate(vertices: np.ndarray, faces: np.ndarray, options: MeshOptions) -> tuple[np.ndarray, np.ndarray]:
    """Decimate to the face budget, backing off when an error bound (mm) is exceeded."""
    target = options.target_faces
    decimated = decimate(vertices, faces, target)
    if options.max_decimation_error_mm is None:
        return decimated
    before = SurfaceDistance(vertices, faces)
    for _ in range(3):
        sample = decimated[0][np.random.default_rng(0).permutation(len(decimated[0]))[:options.quality_sample]]
        if np.percentile(before(sample), 95) <= options.max_decimation_error_mm:
            break
        target = (target + len(faces)) // 2
        decimated = decimate(vertices, faces, target)
    return decimated


def _measure(vertices, faces, field, raw_distance: Future, min_wall_mm, options, background,
             known_topology=None) -> Quality:
    return measure(vertices, faces, field=field, raw=raw_distance.result(), min_wall_mm=min_wall_mm,
                   probe_mm=options.wall_probe_mm, sample=options.quality_sample, background=background,
                   known_topology=known_topology)


def _needs_repair(quality: Quality) -> bool:
    shape = quality.topology
    return not (shape.watertight and shape.manifold) or quality.self_intersecting_faces > 0 or quality.volume_mm3 <= 0


def _repair_reason(quality: Quality) -> str:
    defects = _defects(quality.topology, quality.self_intersecting_faces, quality.volume_mm3)
    return "MeshFix: " + defects if defects else "none needed"


def _defects(shape: Topology, self_intersecting_faces: int = 0, volume_mm3: float = 1.0) -> str:
    """The defects of a surface, in words ("" if none)."""
    parts = []
    if shape.boundary_edges:
        parts.append(f"{shape.boundary_edges} open edge(s)")
    if shape.duplicate_half_edges:
        parts.append(f"{shape.duplicate_half_edges} inconsistently wound or non-manifold edge(s)")
    if shape.nonmanifold_vertices:
        parts.append(f"{shape.nonmanifold_vertices} pinched vertex(es)")
    if shape.degenerate_faces:
        parts.append(f"{shape.degenerate_faces} degenerate face(s)")
    if self_intersecting_faces:
        parts.append(f"{self_intersecting_faces} self-intersecting face(s)")
    if volume_mm3 <= 0:
        parts.append("inward-facing normals")
    return ", ".join(parts)


def _fill_quality(report: MeshReport, measured: Quality) -> None:
    shape = measured.topology
    report.watertight, report.manifold = shape.watertight, shape.manifold
    report.winding_consistent = shape.winding_consistent
    report.outward_normals = measured.volume_mm3 > 0
    report.self_intersecting_faces = measured.self_intersecting_faces
    report.shells, report.cavities = measured.shells, measured.cavities
    report.volume_mm3 = measured.volume_mm3
    report.volume_vs_mask_percent = 100.0 * (measured.volume_mm3 - report.mask_volume_mm3) / report.mask_volume_mm3
    report.area_mm2 = measured.area_mm2
    low, high = measured.bounds
    report.bounding_box_min_lps_mm = [float(v) for v in low]
    report.bounding_box_max_lps_mm = [float(v) for v in high]
    report.extent_mm = [float(v) for v in high - low]
    report.distance_to_raw_mean_mm, report.distance_to_raw_p95_mm, report.distance_to_raw_max_mm = measured.distance_to_raw
    report.min_wall_thickness_mm = measured.min_wall_thickness_mm
    report.thin_regions, report.thin_area_fraction = measured.thin_regions, measured.thin_area_fraction
    if measured.thin_regions:
        report.warnings.append(
            f"{len(measured.thin_regions)} patch(es) thinner than the minimum wall of {report.min_wall_mm:g} mm "
            f"(thinnest {measured.thin_regions[0].min_thickness_mm:.2f} mm at LPS "
            f"{measured.thin_regions[0].centre_lps_mm})")
    if measured.self_intersecting_faces:
        report.warnings.append(f"{measured.self_intersecting_faces} self-intersecting face(s) remain")
