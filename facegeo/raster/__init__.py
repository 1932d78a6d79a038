"""Mesh rasterization, attribute interpolation, dense flow between meshes, landmark drawing.

See ``docs/raster.md`` for the conventions (pixel centres at integers, y down, depth along
+z, counter-clockwise-on-screen = front-facing).
"""

from facegeo.raster.core import (
    Fragments,
    available_backends,
    face_normals,
    interpolate,
    rasterize,
    shade_lambert,
    vertex_normals,
)

__all__ = [
    "Fragments",
    "available_backends",
    "face_normals",
    "interpolate",
    "rasterize",
    "shade_lambert",
    "vertex_normals",
]
