"""Non-shrinking surface smoothing: Taubin's lambda/mu filter and a volume correction.

Taubin smoothing with uniform weights commutes with affine maps, so it runs on voxel-index
coordinates, where the flat caps at the edge of the scanned volume are planes of constant index
that are easy to hold in place.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
from scipy import sparse
from scipy.optimize import brentq

from pipeline.mesh.topology import measures, uniform_laplacian


def taubin(vertices: np.ndarray, faces: np.ndarray, *, iterations: int, lamb: float, mu: float,
           fixed_planes: list[tuple[int, float, np.ndarray]] = (), adjacency=None) -> np.ndarray:
    """Taubin lambda/mu smoothing (G. Taubin, SIGGRAPH 1995).

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Vertex positions (any affine frame, e.g. voxel indices).
    faces : (m, 3) ndarray of int
    iterations : int
        Passes; even passes shrink by ``lamb``, odd passes inflate by ``mu``.
    lamb, mu : float
        Step sizes, ``0 < lamb < mu``.
    fixed_planes : list of (axis, value, vertex indices)
        Vertices held on the plane ``coordinate[axis] == value`` (they slide within it).
    adjacency : scipy.sparse.csr_matrix, optional
        :func:`~pipeline.mesh.topology.vertex_adjacency` of the mesh, if already built.

    Returns
    -------
    (n, 3) ndarray
        Smoothed positions.
    """
    laplacian = uniform_laplacian(faces, len(vertices), adjacency)
    smoothed = vertices.copy()
    for index in range(iterations):
        step = lamb if index % 2 == 0 else -mu
        smoothed += step * (laplacian @ smoothed - smoothed)
        for axis, value, members in fixed_planes:
            smoothed[members, axis] = value
    return smoothed


#: Meshes with at least this many vertices are filtered on two threads when an executor is given.
PARALLEL_VERTICES = 20_000
#: Nuttall window coefficients (centred form): little pass-band ripple, so little size change.
_NUTTALL = (0.355768, 0.487396, 0.144232, 0.012604)


def windowed_sinc(vertices: np.ndarray, faces: np.ndarray, *, iterations: int, passband: float,
                  fixed_planes: list[tuple[int, float, np.ndarray]] = (), adjacency=None,
                  executor: Executor | None = None) -> np.ndarray:
    """Windowed-sinc low-pass filter of the surface (Taubin, Zhang and Golub, IBM RC-20404, 1996).

    A Chebyshev expansion of the ideal low-pass filter in the eigenbasis of the uniform
    Laplacian ``K = I - L`` (eigenvalues ``k`` in [0, 2]), truncated to ``iterations`` terms and
    tapered by a Nuttall window. Frequencies below ``passband`` pass, the marching-cubes
    staircase (high frequencies) is removed. One sparse product per term.

    Parameters
    ----------
    vertices : (n, 3) ndarray
    faces : (m, 3) ndarray of int
    iterations : int
        Chebyshev terms (each one sparse product).
    passband : float
        Pass-band frequency ``k_PB`` in (0, 2); 0.01-0.1 for marching-cubes surfaces.
    fixed_planes : list of (axis, value, vertex indices)
        Vertices put back on the plane ``coordinate[axis] == value`` after filtering.
    adjacency : scipy.sparse.csr_matrix, optional
        :func:`~pipeline.mesh.topology.vertex_adjacency` of the mesh, if already built.
    executor : concurrent.futures.Executor, optional
        With one, a large mesh is filtered as two blocks of rows, one on the executor and one
        on this thread (SciPy's sparse product releases the GIL): about twice as fast on two cores.

    Returns
    -------
    (n, 3) ndarray
        The filtered positions, in the unit of ``vertices``.
    """
    laplacian = uniform_laplacian(faces, len(vertices), adjacency)
    coefficients = _sinc_coefficients(iterations, passband)
    centre = vertices.mean(axis=0)  # the filter's gain at k = 0 is not exactly 1: filter about the centre
    # Chebyshev recurrence on M = I - K/2 = (I + L)/2: T0 = x, T1 = M x, T(n+1) = 2 M T(n) - T(n-1)
    previous = vertices - centre
    current = 0.5 * (previous + laplacian @ previous)
    smoothed = coefficients[0] * previous + coefficients[1] * current
    following = np.empty_like(current)
    parts = 2 if executor is not None and len(vertices) >= PARALLEL_VERTICES else 1
    bounds = np.linspace(0, len(vertices), parts + 1).astype(int)
    blocks = [(slice(a, b), _row_block(laplacian, a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    for n in range(2, iterations + 1):
        pending = [executor.submit(_chebyshev_step, *block, current, previous, following, smoothed, coefficients[n])
                   for block in blocks[1:]]
        _chebyshev_step(*blocks[0], current, previous, following, smoothed, coefficients[n])
        for job in pending:
            job.result()
        previous, current, following = current, following, previous
    smoothed += centre
    for axis, value, members in fixed_planes:
        smoothed[members, axis] = value
    return smoothed


def _row_block(matrix: sparse.csr_matrix, first: int, stop: int) -> sparse.csr_matrix:
    """Rows ``first:stop`` of a CSR matrix as views of its arrays (slicing would copy them)."""
    begin, end = matrix.indptr[first], matrix.indptr[stop]
    return sparse.csr_matrix((matrix.data[begin:end], matrix.indices[begin:end], matrix.indptr[first:stop + 1] - begin),
                             shape=(stop - first, matrix.shape[1]), copy=False)


def _chebyshev_step(rows: slice, block, current: np.ndarray, previous: np.ndarray, following: np.ndarray,
                    smoothed: np.ndarray, coefficient: float) -> None:
    """Rows ``rows`` of the next term ``T(n+1) = (I + L) T(n) - T(n-1)``, added to ``smoothed``."""
    term = block @ current
    term += current[rows]
    term -= previous[rows]
    following[rows] = term
    term *= coefficient
    smoothed[rows] += term


def _sinc_coefficients(iterations: int, passband: float) -> np.ndarray:
    """Chebyshev coefficients of the windowed ideal low-pass filter with unit gain at ``passband``.

    The window widens the transition band, which lowers the gain inside the pass band (the
    surface would shrink); the cut-off angle is moved by an offset ``sigma``, found by Newton's
    root finding, so that the filter passes ``k_PB`` with gain 1 (the paper's "optimal sigma").
    """
    theta = np.arccos(1.0 - 0.5 * passband)
    order = np.arange(iterations + 1)
    x = order / (iterations + 1.0)
    window = sum(a * np.cos(n * np.pi * x) for n, a in enumerate(_NUTTALL))
    at_passband = np.cos(order * theta)  # T_n(1 - k_PB / 2)

    def coefficients(angle):
        """Windowed Chebyshev coefficients of the ideal low pass with cut-off ``angle``.

        Parameters
        ----------
        angle : float or ndarray
            Cut-off angle(s), radians.

        Returns
        -------
        ndarray
            ``(..., iterations + 1)`` coefficients, one row per angle.
        """
        angle = np.asarray(angle, dtype=float)[..., None]
        sinc = np.where(order == 0, angle / np.pi, 2.0 * np.sin(order * angle) / (np.pi * np.maximum(order, 1)))
        return window * sinc

    def excess_gain(sigma: float) -> float:
        """Gain at the pass band minus one, with the cut-off moved by ``sigma``.

        Parameters
        ----------
        sigma : float
            Offset of the cut-off angle, radians.

        Returns
        -------
        float
        """
        return float(coefficients(theta + sigma) @ at_passband) - 1.0

    # the root nearest 0: scan for sign changes, then refine the closest bracket
    grid = np.linspace(-0.99 * theta, np.pi - theta, 4001)
    gains = coefficients(theta + grid) @ at_passband - 1.0
    changes = np.flatnonzero(np.sign(gains[1:]) != np.sign(gains[:-1]))
    if changes.size == 0:
        raise ValueError(f"no windowed-sinc filter with {iterations} terms passes k_PB={passband} at unit gain")
    nearest = changes[np.argmin(np.abs(grid[changes]))]
    sigma = brentq(excess_gain, grid[nearest], grid[nearest + 1], xtol=1e-12)
    return coefficients(theta + sigma)


def enclosed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed, outward-wound mesh.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Positions.
    faces : (m, 3) ndarray of int
        Outward-wound triangles.

    Returns
    -------
    float
        The volume, in the unit of ``vertices`` cubed.
    """
    return measures(vertices, faces, normals=False).volume


def correct_volume(vertices: np.ndarray, faces: np.ndarray, target_volume: float, *,
                   hold: np.ndarray | None = None, hold_normals: np.ndarray | None = None,
                   rounds: int = 6) -> tuple[np.ndarray, float, float]:
    """Offset the surface along its vertex normals until it encloses ``target_volume``.

    Newton's method on the offset ``d``: moving every vertex by ``d`` along its unit normal
    changes the volume at the rate ``sum_v n_v . grad_v V``, where on a closed mesh the volume's
    gradient at a vertex is a sixth of the summed (area-weighted) normals of its faces. With this
    exact rate one step usually lands within 1e-5 of the target; a check confirms it.

    Parameters
    ----------
    vertices : (n, 3) ndarray
        Positions, mm.
    faces : (m, 3) ndarray of int
        Outward-wound triangles.
    target_volume : float
        Volume to reach, mm^3.
    hold : (n,) ndarray of bool, optional
        Vertices that may move only perpendicular to ``hold_normals`` (flat caps at the edge of the
        volume keep their plane).
    hold_normals : (n, 3) ndarray, optional
        Plane normals of the held vertices.
    rounds : int
        Most Newton steps taken.

    Returns
    -------
    vertices : (n, 3) ndarray
    offset_mm : float
        The total offset applied (positive outward).
    initial_volume : float
        The volume before the correction.
    """
    moved = vertices.copy()
    total = 0.0
    measured = measures(moved, faces)
    initial_volume = measured.volume
    for _ in range(rounds):
        if abs(target_volume - measured.volume) <= 1e-5 * abs(target_volume):
            break
        normals = measured.vertex_normals
        gradient_along = measured.vertex_normal_lengths / 6.0  # |grad_v V|, and grad_v V is along n_v
        if hold is not None and hold.any():
            unit, plane = normals[hold], hold_normals[hold]
            projected = unit - np.einsum("ij,ij->i", unit, plane)[:, None] * plane
            normals = normals.copy()
            normals[hold] = projected
            # held vertices move along their normals projected into the cap: rate |grad| (n' . n)
            gradient_along[hold] *= np.einsum("ij,ij->i", projected, unit)
        rate = float(gradient_along.sum())
        if rate <= 0:
            break
        offset = (target_volume - measured.volume) / rate
        moved += offset * normals
        total += offset
        volume = measures(moved, faces, normals=False).volume
        if abs(target_volume - volume) <= 1e-5 * abs(target_volume):
            break
        measured = measures(moved, faces)
    return moved, total, initial_volume
