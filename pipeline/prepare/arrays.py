"""Plain per-face arrays of a triangle mesh, computed once with numpy.

trimesh's cached properties validate and cache more than this stage needs; on a 500k-face mesh
computing them costs about a second, so the prepare stage works on these arrays instead. The
areas, normals and volumes are the mesh stage's own measures (:func:`pipeline.mesh.topology.measures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipeline.mesh.topology import Measures, measures


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
    measured : Measures
        :func:`pipeline.mesh.topology.measures` of the mesh (face volumes and cross products; no
        vertex normals).
    """

    vertices: np.ndarray
    faces: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray
    areas: np.ndarray
    centres: np.ndarray
    measured: Measures

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
        measured = measures(vertices, faces, normals=False)
        double_area = 2 * measured.face_areas
        normals = np.stack(measured.face_cross, axis=1)
        normals /= np.where(double_area > 0, double_area, 1.0)[:, None]
        a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
        return cls(vertices, faces, triangles, normals, measured.face_areas, (a + b + c) / 3, measured)

    @property
    def volume(self) -> float:
        """Enclosed volume (divergence theorem), mm3; negative if the normals point inwards.

        Returns
        -------
        float
            The signed volume, mm3 (meaningful for a closed surface).
        """
        return self.measured.volume

    @cached_property
    def centre_of_mass(self) -> np.ndarray:
        """Centre of the enclosed volume (of the surface if the volume is near zero), mm.

        Returns
        -------
        ndarray (3,)
            The centroid of the solid (signed tetrahedra from a common apex), or the area-weighted
            mean of the face centres when the volume is below 1e-9 of (surface area)^1.5; mm,
            in the mesh's coordinates. Computed once and cached.
        """
        signed, apex = self.measured.face_volumes, self.measured.origin
        total = signed.sum()
        if abs(total) < 1e-9 * max(self.areas.sum(), 1e-12) ** 1.5:
            return (self.areas @ self.centres) / self.areas.sum()
        return (signed @ (3 * self.centres + apex) / 4) / total  # each tetrahedron's centroid
