"""Plain per-face arrays of a triangle mesh, computed once with numpy.

trimesh's cached properties validate and cache more than this stage needs; on a 500k-face mesh
computing them costs about a second, so the prepare stage works on these arrays instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass
class MeshArrays:
    """Vertices, faces and per-face geometry of a mesh (mm, mm2).

    Attributes
    ----------
    triangles : ndarray (F, 3, 3)
        Corner coordinates of each face.
    normals : ndarray (F, 3)
        Unit outward normals (zero for degenerate faces).
    areas : ndarray (F,)
        Face areas, mm2.
    centres : ndarray (F, 3)
        Face centroids.
    """

    vertices: np.ndarray
    faces: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray
    areas: np.ndarray
    centres: np.ndarray

    @classmethod
    def from_arrays(cls, vertices: np.ndarray, faces: np.ndarray) -> "MeshArrays":
        """The per-face arrays of a mesh given as vertices and faces.

        Parameters
        ----------
        vertices : ndarray (V, 3)
            Vertex coordinates, mm (copied to float64 if needed).
        faces : ndarray (F, 3)
            Vertex indices of each triangle, counter-clockwise seen from outside (copied to
            int64 if needed).

        Returns
        -------
        MeshArrays
            Triangles, unit normals (zero for degenerate faces), areas (mm2) and centroids (mm).
        """
        vertices = np.ascontiguousarray(vertices, dtype=np.float64)
        faces = np.ascontiguousarray(faces, dtype=np.int64)
        triangles = np.take(vertices, faces, axis=0)  # several times faster than vertices[faces]
        a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
        cross = np.cross(b - a, c - a)
        double_area = np.sqrt(np.einsum("ij,ij->i", cross, cross))
        normals = cross / np.where(double_area > 0, double_area, 1.0)[:, None]
        return cls(vertices, faces, triangles, normals, double_area / 2, (a + b + c) / 3)

    @property
    def volume(self) -> float:
        """Enclosed volume (divergence theorem), mm3; negative if the normals point inwards.

        Returns
        -------
        float
            The signed volume, mm3 (meaningful for a closed surface).
        """
        a, b, c = self.triangles[:, 0], self.triangles[:, 1], self.triangles[:, 2]
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)

    @cached_property
    def centre_of_mass(self) -> np.ndarray:
        """Centre of the enclosed volume (of the surface if the volume is near zero), mm.

        Returns
        -------
        ndarray (3,)
            The centroid of the solid (signed tetrahedra from the origin), or the area-weighted
            mean of the face centres when the volume is below 1e-9 of (surface area)^1.5; mm,
            in the mesh's coordinates. Computed once and cached.
        """
        a, b, c = self.triangles[:, 0], self.triangles[:, 1], self.triangles[:, 2]
        signed = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6
        total = signed.sum()
        if abs(total) < 1e-9 * max(self.areas.sum(), 1e-12) ** 1.5:
            return (self.areas @ self.centres) / self.areas.sum()
        return (signed @ (a + b + c) / 4) / total
