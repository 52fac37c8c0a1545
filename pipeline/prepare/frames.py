"""Rotations and directions: which way is down, candidate directions, turning about the vertical.

Conventions: a pose is a rotation ``R`` taking model coordinates (LPS mm) to the print frame
(x, y across the plate, z up from the plate). The model direction ``d`` that points at the plate
satisfies ``R @ d == (0, 0, -1)``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError

DOWN = np.array([0.0, 0.0, -1.0])
_YAW_POINTS = 1500  # footprint points used to find the minimum-area rectangle


def unit(vectors: np.ndarray) -> np.ndarray:
    """Normalise vectors along the last axis.

    Parameters
    ----------
    vectors : array_like (..., 3)
        Vectors, any length but not zero (a zero vector gives NaN).

    Returns
    -------
    ndarray
        Float vectors of the same shape, each of length 1.
    """
    vectors = np.asarray(vectors, dtype=float)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def rotation_to_down(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the unit vector ``direction`` to (0, 0, -1) (Rodrigues).

    Kept over ``trimesh.geometry.align_vectors``: that returns *a* rotation taking ``direction``
    down, not the smallest one (entries differ by up to 0.43 for a random direction, measured),
    and the footprint's yaw is searched after this tilt, so the tilt must not turn the model
    about the vertical on its own.

    Parameters
    ----------
    direction : ndarray (3,)
        The model direction to point at the plate (normalised here; not zero).

    Returns
    -------
    ndarray (3, 3)
        A proper rotation matrix ``R`` with ``R @ unit(direction) == (0, 0, -1)``: the identity
        when it already points down, a half turn about x when it points straight up.
    """
    d = unit(direction)
    axis = np.cross(d, DOWN)
    sin, cos = np.linalg.norm(axis), float(np.dot(d, DOWN))
    if sin < 1e-12:
        # Already down, or straight up: turn half a circle about x.
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / sin
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * cross + (1 - cos) * cross @ cross


def rotation_about_z(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about the vertical axis.

    Parameters
    ----------
    angle : float
        Angle, radians, counter-clockwise seen from above (+z).

    Returns
    -------
    ndarray (3, 3)
        The rotation matrix.
    """
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def fibonacci_sphere(count: int) -> np.ndarray:
    """``count`` nearly uniform unit vectors (Fibonacci lattice), shape (count, 3).

    Parameters
    ----------
    count : int
        Number of directions.

    Returns
    -------
    ndarray (count, 3)
        Unit vectors, from near +z to near -z.
    """
    i = np.arange(count) + 0.5
    z = 1 - 2 * i / count
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def principal_frame(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows: the principal axes of weighted points, signs fixed by the third moment.

    Rotating the input rotates this frame with it, so directions defined in it (the Fibonacci
    candidates) do not depend on how the model happens to be rotated.

    Parameters
    ----------
    points : ndarray (N, 3)
        Points, mm (e.g. face centres).
    weights : ndarray (N,)
        Non-negative weight per point (e.g. face areas, mm2), not all zero.

    Returns
    -------
    ndarray (3, 3)
        Unit axes as rows, largest weighted variance first; the first two point where the
        weighted third moment along them is positive, the third is their cross product (a
        right-handed frame).
    """
    w = weights / weights.sum()
    centred = points - w @ points
    covariance = (centred * w[:, None]).T @ centred
    _, vectors = np.linalg.eigh(covariance)
    axes = vectors.T[::-1].copy()
    for row in axes[:2]:
        skew = w @ (centred @ row) ** 3
        if skew < 0:
            row *= -1
    axes[2] = np.cross(axes[0], axes[1])
    return axes


def min_area_yaw(points_xy: np.ndarray) -> tuple[float, np.ndarray]:
    """Rotation angle about z that makes the footprint's minimum-area rectangle axis-aligned.

    Rotating calipers over the hull edges. Kept over ``trimesh.bounds.oriented_bounds_2D``, which
    finds the same rectangle (same sides to 1e-8 mm) 9x slower on a 3000-point footprint
    (0.009 vs 0.001 s, measured): it runs once for every candidate orientation.

    Parameters
    ----------
    points_xy : ndarray (N, 2)
        Footprint points (projections of the hull vertices), mm.

    Returns
    -------
    angle : float
        Radians to rotate by; after it, the rectangle's longer side lies along x.
    size : ndarray (2,)
        Rectangle side lengths (longer first), mm.
    """
    if len(points_xy) > _YAW_POINTS:
        points_xy = points_xy[:: len(points_xy) // _YAW_POINTS + 1]
    try:
        hull = points_xy[ConvexHull(points_xy).vertices]
    except (QhullError, ValueError):
        hull = points_xy
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    angles = np.concatenate([angles, [0.0]])
    c, s = np.cos(-angles), np.sin(-angles)
    x = hull[:, 0, None] * c - hull[:, 1, None] * s
    y = hull[:, 0, None] * s + hull[:, 1, None] * c
    width, depth = np.ptp(x, axis=0), np.ptp(y, axis=0)
    best = int(np.argmin(width * depth + 1e-9 * angles))
    angle, size = -angles[best], np.array([width[best], depth[best]])
    if size[1] > size[0]:
        angle, size = angle + np.pi / 2, size[::-1]
    return float(angle), size
