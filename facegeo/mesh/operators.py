"""Mesh graph operators: edges, adjacency, Laplacians (uniform, normalized, scaled, cotangent),
mass matrix, sparse application to batched features, interpolation and smoothing.

Conventions (see ``docs/mesh.md``):

* triangles ``faces`` are ``(F, 3)`` integer tensors (int64 preferred), vertices ``(V, 3)`` or
  batched ``(B, V, 3)``; features are ``(V, C)`` or ``(B, V, C)``.
* every sparse operator returned here is a coalesced ``torch.sparse_coo_tensor`` of shape
  ``(V, V)`` (or ``(B, V, V)`` for the cotangent Laplacian / mass matrix of a batch of
  vertex sets). Apply it to features with :func:`spmm`.
* Laplacians are positive semi-definite: ``L = D - A`` (uniform), ``I - D^-1/2 A D^-1/2``
  (normalized), and the cotangent Laplacian ``L_ij = -(cot a_ij + cot b_ij) / 2``,
  ``L_ii = -sum_j L_ij`` (this is ``-igl.cotmatrix``).

Defined behaviour on irregular input:

* **duplicate faces** (the same three vertices, in any order or orientation) are counted once
  everywhere: they are removed by :func:`clean_faces` before any operator is built;
* **degenerate faces** (a repeated vertex index) raise ``ValueError``; faces of zero *area*
  but distinct indices are kept for the graph and contribute nothing (cotangent weight 0,
  area 0) to the cotangent Laplacian and the mass matrix;
* **isolated vertices** (``num_vertices`` larger than the highest index, or indices not used
  by any face) have zero rows/columns in ``A``, ``D - A``, the cotangent Laplacian and the
  mass matrix; in the normalized Laplacian their diagonal is 1 (``D^-1/2`` is taken as 0
  for degree 0, the torch_geometric convention; scipy's ``csgraph.laplacian(normed=True)``
  puts 0 there instead);
* **non-manifold edges** (shared by more than two faces) are one edge of the graph (weight 1
  in ``A``); their cotangent weight is the sum over all incident faces (as libigl does).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "clean_faces",
    "edges",
    "boundary_edges",
    "vertex_degrees",
    "adjacency",
    "uniform_laplacian",
    "normalized_laplacian",
    "largest_eigenvalue",
    "scaled_laplacian",
    "chebyshev_laplacian",
    "cotangent_weights",
    "cotangent_laplacian",
    "mass_matrix",
    "spmm",
    "to_scipy",
    "from_scipy",
    "lerp",
    "blend",
    "laplacian_smooth",
]


# ----------------------------------------------------------------------------- helpers
def _sparse(indices: torch.Tensor, values: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Coalesced COO tensor (duplicates summed). Sorting linearised keys (+ a segment sum only
    when there are duplicates) is several times faster than ``Tensor.coalesce`` and keeps the
    values differentiable."""
    size = tuple(int(n) for n in size)
    if indices.shape[1] == 0:
        return torch.sparse_coo_tensor(indices, values, size, check_invariants=False).coalesce()
    key = indices[0]
    for d in range(1, len(size)):
        key = key * size[d] + indices[d]
    sk, perm = torch.sort(key)
    vals = values[perm]
    if bool((sk[1:] == sk[:-1]).any()):
        sk, inv = torch.unique_consecutive(sk, return_inverse=True)
        vals = torch.zeros(sk.numel(), dtype=values.dtype, device=values.device).index_add(
            0, inv, vals)
    idx = torch.empty(len(size), sk.numel(), dtype=torch.long, device=sk.device)
    rem = sk
    for d in range(len(size) - 1, 0, -1):
        idx[d] = rem % size[d]
        rem = rem // size[d]
    idx[0] = rem
    return torch.sparse_coo_tensor(idx, vals, size, is_coalesced=True, check_invariants=False)


def _symmetric(ei: torch.Tensor, ej: torch.Tensor, off: torch.Tensor, diag: torch.Tensor,
               V: int) -> torch.Tensor:
    """COO (V, V) (or (B, V, V) for 2-D off/diag) with entries ``off`` at (ei, ej) and (ej, ei)
    for unique undirected edges ei < ej, and ``diag`` on the diagonal."""
    ar = torch.arange(V, device=ei.device)
    rows = torch.cat([ei, ej, ar])
    cols = torch.cat([ej, ei, ar])
    if off.ndim == 1:
        return _sparse(torch.stack([rows, cols]), torch.cat([off, off, diag]), (V, V))
    B = off.shape[0]
    b = torch.arange(B, device=ei.device).repeat_interleave(rows.numel())
    idx = torch.stack([b, rows.repeat(B), cols.repeat(B)])
    return _sparse(idx, torch.cat([off, off, diag], 1).reshape(-1), (B, V, V))


def _csr(m: torch.Tensor) -> torch.Tensor:
    """COO -> CSR (int32 indices when they fit: MKL / cuSPARSE use them without a per-call
    conversion), without the 'beta' warning spam."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        c = m.to_sparse_csr()
        if c.values().numel() < 2**31 - 1 and max(c.shape) < 2**31 - 1:
            c = torch.sparse_csr_tensor(c.crow_indices().int(), c.col_indices().int(),
                                        c.values(), c.shape, check_invariants=False)
        return c


def _check_faces(faces: torch.Tensor, num_vertices: int | None) -> tuple[torch.Tensor, int]:
    if not isinstance(faces, torch.Tensor):
        raise TypeError(f"faces must be a torch.Tensor (F, 3), got {type(faces).__name__}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype.is_floating_point or faces.dtype == torch.bool or faces.is_complex():
        raise TypeError(f"faces must be an integer tensor, got {faces.dtype}")
    faces = faces.long()
    fmax = int(faces.max()) + 1 if faces.numel() else 0
    if faces.numel() and int(faces.min()) < 0:
        raise ValueError("faces contain negative vertex indices")
    if num_vertices is None:
        num_vertices = fmax
    elif num_vertices < fmax:
        raise ValueError(f"faces index vertex {fmax - 1} but num_vertices={num_vertices}")
    return faces, int(num_vertices)


def clean_faces(faces: torch.Tensor, num_vertices: int | None = None) -> torch.Tensor:
    """Validate triangles and drop duplicates.

    Args:
        faces: (F, 3) integer tensor.
        num_vertices: optional vertex count, checked against the indices.
    Returns:
        (F', 3) int64: ``faces`` with every later duplicate of a triangle removed (two faces are
        duplicates when they use the same three vertices, whatever the order/orientation); the
        first occurrence keeps its orientation and the order of faces is preserved.
    Raises:
        ValueError: wrong shape, negative / out-of-range indices, or a degenerate face (a
        vertex index repeated inside one triangle).
    """
    faces, V = _check_faces(faces, num_vertices)
    if faces.numel() == 0:
        return faces.reshape(0, 3)
    s = faces.sort(dim=1).values
    bad = (s[:, 0] == s[:, 1]) | (s[:, 1] == s[:, 2])
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:10].tolist()
        raise ValueError(f"degenerate faces (repeated vertex index) at rows {rows}")
    if V < 2_000_000:  # V**3 fits in int64: unique on scalar keys (much faster than dim=0)
        _, inv = torch.unique((s[:, 0] * V + s[:, 1]) * V + s[:, 2], return_inverse=True)
    else:
        _, inv = torch.unique(s, dim=0, return_inverse=True)
    n = int(inv.max()) + 1
    if n == faces.shape[0]:
        return faces
    first = torch.full((n,), faces.shape[0], dtype=torch.long, device=faces.device)
    first.scatter_reduce_(0, inv, torch.arange(faces.shape[0], device=faces.device), "amin")
    keep = torch.zeros(faces.shape[0], dtype=torch.bool, device=faces.device)
    keep[first] = True
    return faces[keep]


def _unique_edges(faces: torch.Tensor, V: int, counts: bool = False):
    a = faces.reshape(-1)
    b = faces[:, [1, 2, 0]].reshape(-1)
    u = torch.unique(torch.minimum(a, b) * max(V, 1) + torch.maximum(a, b),
                     return_counts=counts)
    if counts:
        u, c = u
    out = torch.stack([u // max(V, 1), u % max(V, 1)], 1)
    return (out, c) if counts else out


def edges(faces: torch.Tensor, num_vertices: int | None = None) -> torch.Tensor:
    """Unique undirected edges of a triangle mesh.

    Args:
        faces: (F, 3) integer tensor.
    Returns:
        (E, 2) int64 with ``e[:, 0] < e[:, 1]``, sorted lexicographically.
    """
    faces, V = _check_faces(faces, num_vertices)
    return _unique_edges(clean_faces(faces, V), V)


def boundary_edges(faces: torch.Tensor, num_vertices: int | None = None) -> torch.Tensor:
    """Edges used by exactly one face.

    Args:
        faces: (F, 3) integer tensor.
    Returns:
        (Eb, 2) int64 undirected boundary edges with ``e[:, 0] < e[:, 1]``.
    """
    faces, V = _check_faces(faces, num_vertices)
    u, cnt = _unique_edges(clean_faces(faces, V), V, counts=True)
    return u[cnt == 1]


def adjacency(
    faces: torch.Tensor,
    num_vertices: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Binary symmetric vertex adjacency matrix ``A`` (no self loops).

    Args:
        faces: (F, 3) integer tensor.
        num_vertices: V (default ``faces.max() + 1``); extra vertices are isolated.
        dtype: value dtype.
    Returns:
        sparse COO (V, V) on ``faces.device``, ``A_ij = 1`` iff ``ij`` is an edge.
    """
    faces, V = _check_faces(faces, num_vertices)
    e = edges(faces, V)
    idx = torch.cat([e, e.flip(1)], 0).T
    return _sparse(idx, torch.ones(idx.shape[1], dtype=dtype, device=faces.device), (V, V))


def vertex_degrees(faces: torch.Tensor, num_vertices: int | None = None) -> torch.Tensor:
    """Number of distinct neighbours of every vertex.

    Returns:
        (V,) int64.
    """
    faces, V = _check_faces(faces, num_vertices)
    e = edges(faces, V)
    deg = torch.zeros(V, dtype=torch.long, device=faces.device)
    deg.index_add_(0, e.flatten(), torch.ones(e.numel(), dtype=torch.long, device=faces.device))
    return deg


def uniform_laplacian(
    faces: torch.Tensor, num_vertices: int | None = None, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Combinatorial (graph) Laplacian ``L = D - A``.

    Args:
        faces: (F, 3) integer tensor.
        num_vertices: V (isolated vertices give zero rows).
    Returns:
        sparse COO (V, V), symmetric positive semi-definite, rows sum to 0.
    """
    faces, V = _check_faces(faces, num_vertices)
    e = _unique_edges(clean_faces(faces, V), V)
    deg = torch.bincount(e.reshape(-1), minlength=V).to(dtype)
    off = -torch.ones(e.shape[0], dtype=dtype, device=faces.device)
    return _symmetric(e[:, 0], e[:, 1], off, deg, V)


def normalized_laplacian(
    faces: torch.Tensor, num_vertices: int | None = None, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Symmetric normalized Laplacian ``L = I - D^-1/2 A D^-1/2``.

    ``D^-1/2`` is 0 for isolated vertices, so their row is ``e_i`` (diagonal 1), as in
    ``torch_geometric.utils.get_laplacian(normalization="sym")``.

    Args:
        faces: (F, 3) integer tensor.
        num_vertices: V.
    Returns:
        sparse COO (V, V), symmetric, eigenvalues in [0, 2].
    """
    faces, V = _check_faces(faces, num_vertices)
    e = _unique_edges(clean_faces(faces, V), V)
    deg = torch.bincount(e.reshape(-1), minlength=V).to(torch.float64)
    dis = torch.where(deg > 0, deg.clamp_min(1e-300).rsqrt(), torch.zeros_like(deg))
    off = -(dis[e[:, 0]] * dis[e[:, 1]])
    return _symmetric(e[:, 0], e[:, 1], off.to(dtype),
                      torch.ones(V, dtype=dtype, device=faces.device), V)


def to_scipy(m: torch.Tensor):
    """Sparse (V, W) torch tensor (COO or CSR) -> ``scipy.sparse.csr_matrix`` (float64)."""
    import numpy as np
    import scipy.sparse as sp

    if m.layout != torch.sparse_coo:
        m = m.to_sparse_coo()
    m = m.coalesce().cpu()
    i, j = m.indices().numpy()
    return sp.csr_matrix((m.values().double().numpy(), (i, j)), shape=tuple(m.shape),
                         dtype=np.float64)


def from_scipy(m, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``scipy.sparse`` matrix -> coalesced torch sparse COO tensor."""
    import numpy as np

    c = m.tocoo()
    idx = torch.from_numpy(np.vstack([c.row, c.col]).astype(np.int64))
    return _sparse(idx, torch.from_numpy(c.data).to(dtype), c.shape).to(device)


def largest_eigenvalue(L: torch.Tensor, *, tol: float = 1e-8) -> float:
    """Largest eigenvalue of a symmetric sparse matrix (ARPACK Lanczos, float64).

    Args:
        L: sparse (V, V) symmetric tensor.
    Returns:
        lambda_max as a Python float (exact to ~``tol`` relative).
    """
    import numpy as np
    import scipy.sparse.linalg as sla

    if L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"L must be a square (V, V) matrix, got {tuple(L.shape)}")
    S = to_scipy(L)
    n = S.shape[0]
    if n == 0:
        raise ValueError("empty matrix")
    if not np.isfinite(S.data).all():
        raise ValueError("L contains NaN or inf values")
    if n <= 64:
        return float(np.linalg.eigvalsh(S.toarray()).max())
    v0 = np.ones(n) + np.arange(n) % 7 * 0.1
    try:
        vals = sla.eigsh(S, k=1, which="LA", tol=tol, return_eigenvectors=False, v0=v0,
                         ncv=min(n, 40))
    except sla.ArpackNoConvergence:  # rare: retry with a larger Krylov space
        vals = sla.eigsh(S, k=1, which="LA", tol=tol, return_eigenvectors=False, v0=v0,
                         ncv=min(n, 160), maxiter=50 * n)
    return float(vals.max())


def scaled_laplacian(L: torch.Tensor, lambda_max: float | None = None) -> torch.Tensor:
    """Chebyshev-scaled Laplacian ``L~ = 2 L / lambda_max - I`` (spectrum in [-1, 1]).

    Args:
        L: sparse (V, V) symmetric Laplacian.
        lambda_max: its largest eigenvalue; computed with :func:`largest_eigenvalue` when None.
    Returns:
        sparse COO (V, V), same dtype/device as ``L``.
    """
    if lambda_max is None:
        lambda_max = largest_eigenvalue(L)
    if not (lambda_max > 0 and math.isfinite(lambda_max)):
        raise ValueError(f"lambda_max must be finite and > 0, got {lambda_max}")
    L = L.coalesce()
    if not bool(torch.isfinite(L.values()).all()):
        raise ValueError("L contains NaN or inf values")
    V = L.shape[0]
    ar = torch.arange(V, device=L.device)
    idx = torch.cat([L.indices(), torch.stack([ar, ar])], 1)
    vals = torch.cat([L.values() * (2.0 / lambda_max),
                      -torch.ones(V, dtype=L.dtype, device=L.device)])
    return _sparse(idx, vals, (V, V))


def chebyshev_laplacian(
    faces: torch.Tensor,
    num_vertices: int | None = None,
    *,
    normalization: str = "sym",
    dtype: torch.dtype = torch.float32,
    return_lambda: bool = False,
):
    """The operator of a Chebyshev convolution: scaled Laplacian of the mesh graph with its
    computed largest eigenvalue.

    Args:
        faces: (F, 3) integer tensor.
        num_vertices: V.
        normalization: ``"sym"`` (``I - D^-1/2 A D^-1/2``, as in CoMA / mesh-guided GCN) or
            ``"none"`` (``D - A``).
        return_lambda: also return lambda_max.
    Returns:
        sparse COO (V, V) ``L~`` (and the float lambda_max if requested).
    """
    if normalization == "sym":
        L = normalized_laplacian(faces, num_vertices, dtype=torch.float64)
    elif normalization in ("none", None):
        L = uniform_laplacian(faces, num_vertices, dtype=torch.float64)
    else:
        raise ValueError(f"normalization must be 'sym' or 'none', got {normalization!r}")
    lam = largest_eigenvalue(L)
    Ls = scaled_laplacian(L, lam).to(dtype)
    return (Ls, lam) if return_lambda else Ls


# ----------------------------------------------------------------------------- cotangent
def _check_vertices(vertices: torch.Tensor, V: int | None = None) -> tuple[torch.Tensor, bool]:
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"vertices must be a torch.Tensor, got {type(vertices).__name__}")
    if vertices.ndim not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (V, 3) or (B, V, 3), got "
                         f"{tuple(vertices.shape)}")
    if not vertices.dtype.is_floating_point:
        raise TypeError(f"vertices must be floating point, got {vertices.dtype}")
    batched = vertices.ndim == 3
    _check_finite_vertices(vertices, "vertices")
    return (vertices if batched else vertices[None]), batched


def _check_finite_vertices(vertices: torch.Tensor, name: str) -> None:
    """ValueError naming the first non-finite vertex ((V, 3) or (B, V, 3) tensor)."""
    ok = torch.isfinite(vertices.detach()).all(-1)
    if not bool(ok.all()):
        idx = [int(i) for i in (~ok).nonzero()[0]]
        where = f"vertex {idx[-1]}" + (f" of batch item {idx[0]}" if len(idx) == 2 else "")
        raise ValueError(f"{name} contain NaN or inf (first at {where})")


def _face_geometry(vertices: torch.Tensor, faces: torch.Tensor):
    """Per-face cotangents at the three corners and areas. vertices (B, V, 3)."""
    p = vertices[:, faces]  # (B, F, 3, 3)
    e0 = p[:, :, 2] - p[:, :, 1]  # opposite corner 0
    e1 = p[:, :, 0] - p[:, :, 2]  # opposite corner 1
    e2 = p[:, :, 1] - p[:, :, 0]  # opposite corner 2
    l2 = torch.stack([(e0 * e0).sum(-1), (e1 * e1).sum(-1), (e2 * e2).sum(-1)], -1)
    area2 = torch.linalg.cross(e2, -e1, dim=-1).norm(dim=-1)  # twice the area, (B, F)
    # cot at corner k = (l_i^2 + l_j^2 - l_k^2) / (4 A) = (l_i^2 + l_j^2 - l_k^2) / (2 * area2)
    s = l2.sum(-1, keepdim=True)
    ok = area2 > 0
    denom = torch.where(ok, area2, torch.ones_like(area2))[..., None] * 2
    cot = torch.where(ok[..., None], (s - 2 * l2) / denom, torch.zeros_like(l2))
    return cot, area2 * 0.5, l2


def cotangent_weights(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Cotangent of every triangle corner.

    Args:
        vertices: (V, 3) or (B, V, 3).
        faces: (F, 3) integer tensor (validated, duplicates removed by the caller).
    Returns:
        (F, 3) or (B, F, 3): ``cot[f, k]`` is the cotangent of the angle at corner ``k``
        (0 for zero-area faces).
    """
    v, batched = _check_vertices(vertices)
    faces, _ = _check_faces(faces, v.shape[1])
    cot = _face_geometry(v, faces.to(v.device))[0]
    return cot if batched else cot[0]


def _diagonal(vals: torch.Tensor, batched: bool) -> torch.Tensor:
    """Diagonal COO from (B, V) values: (B, V, V) if batched else (V, V) from vals[0]."""
    B, V = vals.shape
    ar = torch.arange(V, device=vals.device)
    if not batched:
        return torch.sparse_coo_tensor(torch.stack([ar, ar]), vals[0], (V, V), is_coalesced=True,
                                       check_invariants=False)
    b = torch.arange(B, device=vals.device).repeat_interleave(V)
    idx = torch.stack([b, ar.repeat(B), ar.repeat(B)])
    return torch.sparse_coo_tensor(idx, vals.reshape(-1), (B, V, V), is_coalesced=True,
                                   check_invariants=False)


def cotangent_laplacian(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Cotangent Laplacian (positive semi-definite; equals ``-igl.cotmatrix``).

    ``L_ij = -1/2 * sum over faces containing edge ij of cot(angle opposite ij)``,
    ``L_ii = -sum_{j != i} L_ij``. Differentiable w.r.t. ``vertices``.

    Args:
        vertices: (V, 3) or (B, V, 3) float.
        faces: (F, 3) integer tensor; duplicate faces are counted once.
    Returns:
        sparse COO (V, V), or (B, V, V) for batched vertices; dtype of ``vertices``.
    """
    v, batched = _check_vertices(vertices)
    V = v.shape[1]
    faces = clean_faces(faces, V).to(v.device)
    cot = _face_geometry(v, faces)[0]  # (B, F, 3)
    # corner k is opposite edge (k+1, k+2)
    ci = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0]])
    cj = torch.cat([faces[:, 2], faces[:, 0], faces[:, 1]])
    wc = 0.5 * torch.cat([cot[..., 0], cot[..., 1], cot[..., 2]], -1)  # (B, 3F)
    sk, perm = torch.sort(torch.minimum(ci, cj) * V + torch.maximum(ci, cj))
    uk, inv = torch.unique_consecutive(sk, return_inverse=True)
    w = torch.zeros(v.shape[0], uk.numel(), dtype=v.dtype, device=v.device).index_add(
        1, inv, wc[:, perm])
    ei, ej = uk // V, uk % V
    diag = torch.zeros(v.shape[0], V, dtype=v.dtype, device=v.device)
    diag = diag.index_add(1, ei, w).index_add(1, ej, w)
    if batched:
        return _symmetric(ei, ej, -w, diag, V)
    return _symmetric(ei, ej, -w[0], diag[0], V)


def mass_matrix(vertices: torch.Tensor, faces: torch.Tensor, kind: str = "voronoi") -> torch.Tensor:
    """Diagonal (lumped) mass matrix.

    * ``"barycentric"``: ``M_ii`` = one third of the area of the faces around ``i``;
    * ``"voronoi"``: mixed Voronoi areas (Meyer et al. 2003): for a non-obtuse triangle corner
      ``i`` gets ``(|e_ij|^2 cot k + |e_ik|^2 cot j) / 8``; in an obtuse triangle the obtuse
      corner gets ``area/2`` and the two others ``area/4`` (this is ``igl.massmatrix``'s
      default ``MASSMATRIX_TYPE_VORONOI``).

    Args:
        vertices: (V, 3) or (B, V, 3) float.
        faces: (F, 3) integer tensor; duplicate faces are counted once.
        kind: ``"voronoi"`` or ``"barycentric"``.
    Returns:
        sparse COO diagonal (V, V) or (B, V, V); isolated vertices get 0.
    """
    v, batched = _check_vertices(vertices)
    B, V = v.shape[0], v.shape[1]
    faces = clean_faces(faces, V).to(v.device)
    cot, area, l2 = _face_geometry(v, faces)
    if kind == "barycentric":
        a = (area / 3)[..., None].expand(-1, -1, 3)
    elif kind == "voronoi":
        # corner k: edges to the two other corners have squared lengths l2[k+1], l2[k+2]
        # (edge (k, k+1) is opposite corner k+2 etc.)
        vor = torch.stack([
            l2[..., 1] * cot[..., 1] + l2[..., 2] * cot[..., 2],
            l2[..., 2] * cot[..., 2] + l2[..., 0] * cot[..., 0],
            l2[..., 0] * cot[..., 0] + l2[..., 1] * cot[..., 1],
        ], -1) / 8
        obtuse = cot < 0  # cot < 0 <=> angle > 90 degrees
        any_obt = obtuse.any(-1, keepdim=True)
        a = torch.where(any_obt, torch.where(obtuse, area[..., None] / 2, area[..., None] / 4),
                        vor)
    else:
        raise ValueError(f"kind must be 'voronoi' or 'barycentric', got {kind!r}")
    vals = torch.zeros(B, V, dtype=v.dtype, device=v.device).index_add(
        1, faces.T.reshape(-1), a.transpose(1, 2).reshape(B, -1))
    return _diagonal(vals, batched)


# ----------------------------------------------------------------------------- applying
def _mm(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sparse (W, V) @ dense (V, N) without autograd bookkeeping. ``torch.addmm`` with
    ``beta=0`` skips the zero-fill and the extra copy that ``torch.sparse.mm`` makes."""
    return torch.addmm(x.new_zeros(()), M, x, beta=0)


class _SpMM(torch.autograd.Function):
    """y = M @ x for a constant sparse M with a precomputed transpose for the backward."""

    @staticmethod
    def forward(ctx, x, M, Mt):
        ctx.Mt = Mt
        return _mm(M, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        return _mm(ctx.Mt, g.contiguous()), None, None


def spmm(M: torch.Tensor, x: torch.Tensor, Mt: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a sparse (W, V) matrix to vertex features, batched.

    The batch is folded into the channels so one sparse product serves the whole batch.

    Args:
        M: sparse (W, V) COO or CSR tensor (treated as a constant unless ``Mt`` is None and
            it requires grad), or a batched sparse COO (B, W, V) (e.g. the cotangent
            Laplacian of a batch of vertex sets), applied per sample with ``torch.bmm``.
        x: (V, C) or (B, V, C) dense features ((B, V, C) for a batched ``M``).
        Mt: optional precomputed transpose of ``M`` (sparse, (V, W)), used for the gradient
            w.r.t. ``x`` (pass ``M`` itself for a symmetric matrix).
    Returns:
        (W, C) or (B, W, C), in ``x``'s dtype (half/bfloat16 inputs are multiplied in
        float32: there are no half sparse kernels on the CPU).
    """
    if isinstance(M, torch.Tensor) and M.ndim == 3:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[0] != M.shape[0] \
                or x.shape[1] != M.shape[2]:
            raise ValueError(f"batched matrix {tuple(M.shape)} needs (B, V, C) features with "
                             f"B={M.shape[0]}, V={M.shape[2]}, got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        return torch.bmm(M.to(x.dtype), x)
    if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
        raise ValueError(f"x must be a (V, C) or (B, V, C) tensor, got "
                         f"{tuple(getattr(x, 'shape', ()))}")
    if M.ndim != 2 or M.shape[1] != x.shape[-2]:
        raise ValueError(f"matrix of shape {tuple(M.shape)} cannot be applied to features "
                         f"with {x.shape[-2]} vertices")
    out_dtype = x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):  # no half sparse kernels on the CPU
        x = x.float()
    if M.dtype != x.dtype:
        M = M.to(x.dtype)
        Mt = Mt.to(x.dtype) if Mt is not None else None
    if x.ndim == 3:
        B, V, C = x.shape
        x2 = x.permute(1, 0, 2).reshape(V, B * C)
    else:
        x2 = x
    with torch.autocast(x.device.type, enabled=False):
        if Mt is not None and not M.requires_grad:
            y = _SpMM.apply(x2, M, Mt)
        else:
            y = torch.sparse.mm(M, x2)
    if x.ndim == 3:
        y = y.reshape(M.shape[0], B, C).permute(1, 0, 2)
    return y.to(out_dtype)


# ----------------------------------------------------------------------------- blending
def lerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """Linear interpolation ``(1 - t) a + t b`` of vertex sets or coefficient vectors.

    Args:
        a, b: tensors of the same shape ``S`` (e.g. (V, 3), (B, V, 3), (B, K)).
        t: a float (result shape ``S``) or a 1-D tensor/sequence of T weights (result
            ``(T, *S)``). Weights outside [0, 1] extrapolate.
    Returns:
        the interpolated tensor(s).
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if isinstance(t, (int, float)):
        if not math.isfinite(t):
            raise ValueError(f"t must be finite, got {t}")
        return torch.lerp(a, b, float(t))
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"t must be finite, got {t.tolist()}")
    if t.ndim != 1:
        raise ValueError(f"t must be a float or a 1-D sequence of weights, got shape "
                         f"{tuple(t.shape)}")
    return torch.lerp(a[None], b[None], t.reshape(-1, *([1] * a.ndim)))


def blend(items: torch.Tensor, weights: torch.Tensor, *, affine: bool = True) -> torch.Tensor:
    """Weighted blend of N vertex sets / coefficient vectors: ``sum_n w_n X_n``.

    Args:
        items: (N, *S) stacked vertex sets (e.g. (N, V, 3)) or coefficients (N, K).
        weights: (N,) or (..., N) weights.
        affine: require every weight vector to sum to 1 (so the blend of identical items is
            that item, and translations are preserved).
    Returns:
        (*S) for (N,) weights, (..., *S) for batched weights.
    """
    weights = torch.as_tensor(weights, dtype=items.dtype, device=items.device)
    if weights.shape[-1] != items.shape[0]:
        raise ValueError(f"weights' last dimension ({weights.shape[-1]}) must equal the number "
                         f"of items ({items.shape[0]})")
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("weights contain NaN or inf")
    if affine:
        s = weights.sum(-1)
        if not torch.allclose(s, torch.ones_like(s), atol=1e-5):
            raise ValueError(f"affine blend: weights must sum to 1, got sums {s.flatten()[:5]}")
    return torch.tensordot(weights, items, dims=([-1], [0]))


# ----------------------------------------------------------------------------- smoothing
def laplacian_smooth(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    iterations: int = 10,
    lam: float = 0.5,
    *,
    method: str = "uniform",
    taubin_mu: float | None = None,
    fix_boundary: bool = True,
    fixed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Explicit Laplacian smoothing ``v <- v + lam * (W v - v)``, W a row-stochastic averaging
    operator over the one-ring.

    * ``method="uniform"``: ``W = D^-1 A`` (umbrella operator);
    * ``method="cotangent"``: ``W_ij = w_ij / sum_j w_ij`` with the cotangent weights
      ``w_ij = (cot a + cot b)/2`` recomputed each iteration (reproduces linear functions, so
      a flat patch stays put); negative edge weights (non-Delaunay edges) are clamped to 0 so
      the step is a convex combination.
    * ``taubin_mu`` (< -lam, e.g. -0.53 for lam=0.5): Taubin lambda|mu smoothing, each
      iteration is a ``lam`` step followed by a ``mu`` step (counteracts shrinkage).

    Args:
        vertices: (V, 3) or (B, V, 3).
        faces: (F, 3) integer tensor.
        iterations: number of steps (>= 0).
        lam: step size in (0, 1].
        fix_boundary: keep vertices on boundary edges fixed.
        fixed: optional (V,) bool mask of vertices to keep fixed.
    Returns:
        smoothed vertices, same shape as ``vertices``. Differentiable.
    """
    v, batched = _check_vertices(vertices)
    V = v.shape[1]
    faces = clean_faces(faces, V).to(v.device)
    if iterations < 0 or not 0 < lam <= 1:
        raise ValueError(f"need iterations >= 0 and 0 < lam <= 1, got {iterations}, {lam}")
    if method not in ("uniform", "cotangent"):
        raise ValueError(f"method must be 'uniform' or 'cotangent', got {method!r}")
    mask = torch.zeros(V, dtype=torch.bool, device=v.device)
    if fixed is not None:
        if fixed.shape != (V,):
            raise ValueError(f"fixed must be a (V,) bool mask, got {tuple(fixed.shape)}")
        mask |= fixed.to(v.device, torch.bool)
    if fix_boundary:
        be = boundary_edges(faces, V)
        mask[be.flatten()] = True
    free = (~mask).to(v.dtype)[None, :, None]
    A = adjacency(faces, V, dtype=v.dtype)
    deg = torch.zeros(V, dtype=v.dtype, device=v.device).index_add_(0, A.indices()[0], A.values())
    has_nb = (deg > 0).to(v.dtype)[None, :, None]
    Acsr = _csr(A)
    # edge list for the cotangent weights: corner k opposite edge (k+1, k+2)
    ci = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0]])
    cj = torch.cat([faces[:, 2], faces[:, 0], faces[:, 1]])
    ekey, einv = torch.unique(torch.minimum(ci, cj) * V + torch.maximum(ci, cj),
                              return_inverse=True)
    ei, ej = ekey // V, ekey % V

    def average(x: torch.Tensor) -> torch.Tensor:
        if method == "uniform":
            return spmm(Acsr, x, Acsr) / deg.clamp_min(1)[None, :, None]
        cot = _face_geometry(x, faces)[0]
        wc = 0.5 * torch.cat([cot[..., 0], cot[..., 1], cot[..., 2]], -1)  # (B, 3F)
        w = torch.zeros(x.shape[0], ekey.numel(), dtype=x.dtype, device=x.device)
        w = w.index_add(1, einv, wc).clamp_min(0)  # per-edge (cot a + cot b) / 2, >= 0
        num = torch.zeros_like(x)
        den = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
        num = num.index_add(1, ei, w[..., None] * x[:, ej])
        num = num.index_add(1, ej, w[..., None] * x[:, ei])
        den = den.index_add(1, ei, w).index_add(1, ej, w)
        ok = den > 0
        return torch.where(ok[..., None], num / den.clamp_min(1e-30)[..., None], x)

    step = free * has_nb
    for _ in range(iterations):
        v = v + lam * step * (average(v) - v)
        if taubin_mu is not None:
            v = v + taubin_mu * step * (average(v) - v)
    return v if batched else v[0]
