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
from facegeo.raster.flow import (
    MeshFlow,
    flow_to_color,
    flow_to_grid,
    mesh_flow,
    warp,
    warp_flow,
)
from facegeo.raster.landmarks import (
    PART_COLORS_68,
    PARTS_68,
    draw_landmark_lines,
    heatmaps,
    part_maps,
    part_segments,
)

__all__ = [
    "PARTS_68",
    "PART_COLORS_68",
    "draw_landmark_lines",
    "heatmaps",
    "part_maps",
    "part_segments",
    "Fragments",
    "MeshFlow",
    "flow_to_color",
    "flow_to_grid",
    "mesh_flow",
    "warp_flow",
    "warp",
    "available_backends",
    "face_normals",
    "interpolate",
    "rasterize",
    "shade_lambert",
    "vertex_normals",
]
