"""Mesh operators: adjacency and Laplacians, Chebyshev operators, quadric-error
down-sampling with CoMA's sparse down/up-sampling matrices, interpolation and smoothing.

See ``docs/mesh.md``. The neural layers (ChebConv, graph residual block) are in
:mod:`facegeo.graphconv`.
"""

from facegeo.mesh.operators import (
    adjacency,
    blend,
    boundary_edges,
    chebyshev_laplacian,
    clean_faces,
    cotangent_laplacian,
    cotangent_weights,
    edges,
    from_scipy,
    laplacian_smooth,
    largest_eigenvalue,
    lerp,
    mass_matrix,
    normalized_laplacian,
    scaled_laplacian,
    spmm,
    to_scipy,
    uniform_laplacian,
    vertex_degrees,
)
from facegeo.mesh.sampling import (
    QSLIM_VERSION,
    MeshHierarchy,
    closest_points_on_mesh,
    hausdorff_distance,
    mesh_hash,
    mesh_hierarchy,
    qslim_decimate,
    sample_surface,
    selection_matrix,
    upsampling_matrix,
    vertex_quadrics,
)

__all__ = [
    "QSLIM_VERSION",
    "MeshHierarchy",
    "closest_points_on_mesh",
    "hausdorff_distance",
    "mesh_hash",
    "mesh_hierarchy",
    "qslim_decimate",
    "sample_surface",
    "selection_matrix",
    "upsampling_matrix",
    "vertex_quadrics",
    "adjacency",
    "blend",
    "boundary_edges",
    "chebyshev_laplacian",
    "clean_faces",
    "cotangent_laplacian",
    "cotangent_weights",
    "edges",
    "from_scipy",
    "largest_eigenvalue",
    "laplacian_smooth",
    "lerp",
    "mass_matrix",
    "normalized_laplacian",
    "scaled_laplacian",
    "spmm",
    "to_scipy",
    "uniform_laplacian",
    "vertex_degrees",
]
