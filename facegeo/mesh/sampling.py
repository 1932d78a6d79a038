"""Quadric-error mesh down-sampling and the sparse down/up-sampling matrices of CoMA.

:func:`qslim_decimate` is a Garland-Heckbert edge-collapse simplifier with the vertex placement
restricted to an end point of the collapsed edge (as in CoMA), so the coarse mesh's vertices
are a subset of the fine mesh's and down-sampling is a selection matrix ``D``. The up-sampling
matrix ``U`` holds, for every fine vertex, the barycentric coordinates of its closest point on
the coarse surface (:func:`closest_points_on_mesh`). :func:`mesh_hierarchy` builds the whole
pyramid for factors like ``(4, 4, 4, 4)`` and caches it on disk, keyed by a hash of the mesh.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facegeo.mesh.operators import _sparse, chebyshev_laplacian, clean_faces

__all__ = [
    "QSLIM_VERSION",
    "vertex_quadrics",
    "qslim_decimate",
    "closest_points_on_mesh",
    "upsampling_matrix",
    "selection_matrix",
    "MeshHierarchy",
    "mesh_hierarchy",
    "mesh_hash",
    "sample_surface",
    "hausdorff_distance",
]

#: bump when the algorithm changes, so cached hierarchies are recomputed
QSLIM_VERSION = "facegeo-qslim-1"


def _np_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    v = vertices.detach().cpu().double().numpy() if isinstance(vertices, torch.Tensor) \
        else np.asarray(vertices, dtype=np.float64)
    f = faces.detach().cpu().long() if isinstance(faces, torch.Tensor) \
        else torch.as_tensor(np.asarray(faces), dtype=torch.long)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("vertices contain NaN or inf")
    f = clean_faces(f, v.shape[0]).numpy()
    return v, f


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 3-D cross product (faster than np.cross for small arrays)."""
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
                     a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], 1)


def _face_planes(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (F, 3) and twice the areas (F,)."""
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    a2 = np.linalg.norm(n, axis=1)
    n = n / np.where(a2 > 0, a2, 1.0)[:, None]
    return n, a2


def vertex_quadrics(vertices, faces, boundary_weight: float = 1.0) -> np.ndarray:
    """Garland-Heckbert error quadrics.

    Every face contributes ``p p^T`` (``p = [n, -n.x0]``, its unit-normal plane) to its three
    vertices; every boundary edge contributes ``boundary_weight * q q^T`` to its two end
    points, ``q`` the plane through the edge perpendicular to its face (keeps the outline).

    Args:
        vertices: (V, 3); faces: (F, 3).
    Returns:
        (V, 4, 4) float64 array; ``[x, 1] Q [x, 1]^T`` is the summed squared plane distance.
    """
    v, f = _np_mesh(vertices, faces)
    n, a2 = _face_planes(v, f)
    ok = a2 > 0
    p = np.concatenate([n, -(n * v[f[:, 0]]).sum(1, keepdims=True)], 1)
    K = np.einsum("fi,fj->fij", p, p) * ok[:, None, None]
    Q = np.zeros((v.shape[0], 4, 4))
    for k in range(3):
        np.add.at(Q, f[:, k], K)
    if boundary_weight > 0 and len(f):
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        fid = np.tile(np.arange(len(f)), 3)
        key = np.sort(e, 1)
        _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        b = cnt[inv.ravel()] == 1
        e, fid = e[b], fid[b]
        d = v[e[:, 1]] - v[e[:, 0]]
        m = np.cross(d, n[fid])
        ln = np.linalg.norm(m, axis=1)
        good = ln > 0
        m = m[good] / ln[good, None]
        e = e[good]
        q = np.concatenate([m, -(m * v[e[:, 0]]).sum(1, keepdims=True)], 1)
        Kb = boundary_weight * np.einsum("fi,fj->fij", q, q)
        np.add.at(Q, e[:, 0], Kb)
        np.add.at(Q, e[:, 1], Kb)
    return Q


class _Decimator:
    """Edge-collapse state. Faces are python lists; vertex -> face-id sets."""

    def __init__(self, v: np.ndarray, f: np.ndarray, boundary_weight: float,
                 min_normal_cos: float):
        self.v = v
        self.vh = np.concatenate([v, np.ones((len(v), 1))], 1)
        self.faces = f.tolist()
        self.alive = [True] * len(f)
        self.vf: list[set[int]] = [set() for _ in range(len(v))]
        for i, (a, b, c) in enumerate(self.faces):
            self.vf[a].add(i)
            self.vf[b].add(i)
            self.vf[c].add(i)
        self.Q = vertex_quadrics(v, f, boundary_weight)
        self.ver = [0] * len(v)
        self.min_cos = min_normal_cos
        self.heap: list = []

    # -- costs
    def _push_edges(self, a: int, nbs: list[int]) -> None:
        if not nbs:
            return
        nb = np.asarray(nbs)
        Qs = self.Q[a][None] + self.Q[nb]
        pa = self.vh[a]
        pn = self.vh[nb]
        keep_a = np.einsum("i,kij,j->k", pa, Qs, pa)
        keep_n = np.einsum("ki,kij,kj->k", pn, Qs, pn)
        cost = np.minimum(keep_a, keep_n).tolist()
        pref = (keep_a <= keep_n).tolist()
        va = self.ver[a]
        for n, c, p in zip(nbs, cost, pref):
            if p:
                heapq.heappush(self.heap, (c, a, n, va, self.ver[n]))
            else:
                heapq.heappush(self.heap, (c, n, a, self.ver[n], va))

    def init_heap(self) -> None:
        f = np.asarray([fc for fc, al in zip(self.faces, self.alive) if al], dtype=np.int64)
        self.heap = []
        if len(f) == 0:
            return
        e = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1),
                      axis=0)
        r, c = e[:, 0], e[:, 1]
        Qs = self.Q[r] + self.Q[c]
        kr = np.einsum("ki,kij,kj->k", self.vh[r], Qs, self.vh[r])
        kc = np.einsum("ki,kij,kj->k", self.vh[c], Qs, self.vh[c])
        cost = np.minimum(kr, kc)
        keep = np.where(kr <= kc, r, c)
        rem = np.where(kr <= kc, c, r)
        ver = self.ver
        self.heap = [(cc, k, m, ver[k], ver[m])
                     for cc, k, m in zip(cost.tolist(), keep.tolist(), rem.tolist())]
        heapq.heapify(self.heap)

    # -- topology
    def _nbrs(self, x: int) -> set[int]:
        s: set[int] = set()
        faces = self.faces
        for fi in self.vf[x]:
            s.update(faces[fi])
        s.discard(x)
        return s

    def _is_boundary(self, x: int) -> bool:
        cnt: dict[int, int] = {}
        faces = self.faces
        for fi in self.vf[x]:
            for y in faces[fi]:
                if y != x:
                    cnt[y] = cnt.get(y, 0) + 1
        return any(c == 1 for c in cnt.values())

    def valid(self, keep: int, rem: int) -> bool:
        vf = self.vf
        shared = vf[keep] & vf[rem]
        if not shared:
            return False
        moved = vf[rem] - shared
        if not (vf[keep] - shared) and not moved:
            return False  # would leave the kept vertex without faces
        faces = self.faces
        opp = set()
        for fi in shared:
            opp.update(faces[fi])
        opp.discard(keep)
        opp.discard(rem)
        if (self._nbrs(keep) & self._nbrs(rem)) != opp:
            return False  # link condition
        if len(shared) >= 2 and self._is_boundary(keep) and self._is_boundary(rem):
            return False  # interior edge between two boundary vertices: would pinch
        if not moved:
            return True
        existing = {frozenset(faces[fi]) for fi in vf[keep] - shared}
        new_faces = []
        for fi in moved:
            nf = [keep if x == rem else x for x in faces[fi]]
            key = frozenset(nf)
            if key in existing:
                return False  # would duplicate a face
            existing.add(key)
            new_faces.append(nf)
        old = np.asarray([faces[fi] for fi in moved])
        new = np.asarray(new_faces)
        v = self.v
        p0 = v[old]  # (k, 3, 3)
        n0 = _cross(p0[:, 1] - p0[:, 0], p0[:, 2] - p0[:, 0])
        p1 = v[new]
        n1 = _cross(p1[:, 1] - p1[:, 0], p1[:, 2] - p1[:, 0])
        l0 = np.sqrt((n0 * n0).sum(1))
        l1 = np.sqrt((n1 * n1).sum(1))
        if (l1 <= 1e-12 * max(float(l0.max()), 1e-300)).any():
            return False  # zero-area face
        cos = (n0 * n1).sum(1) / np.maximum(l0 * l1, 1e-300)
        return bool((cos >= self.min_cos).all())

    def collapse(self, keep: int, rem: int) -> None:
        vf, faces = self.vf, self.faces
        shared = vf[keep] & vf[rem]
        for fi in shared:
            self.alive[fi] = False
            for x in faces[fi]:
                if x != rem:
                    vf[x].discard(fi)
        for fi in vf[rem] - shared:
            fc = faces[fi]
            fc[fc.index(rem)] = keep
            vf[keep].add(fi)
        vf[rem] = set()
        self.Q[keep] += self.Q[rem]
        self.ver[keep] += 1
        self.ver[rem] = -1
        self._push_edges(keep, sorted(self._nbrs(keep)))

    def run(self, n_collapse: int) -> int:
        done = 0
        refilled = False
        ver = self.ver
        while done < n_collapse:
            if not self.heap:
                if refilled:
                    break
                self.init_heap()
                refilled = True
                continue
            _, k, m, vk, vm = heapq.heappop(self.heap)
            if ver[k] != vk or ver[m] != vm or ver[k] < 0 or ver[m] < 0:
                continue
            if self.valid(k, m):
                self.collapse(k, m)
            elif self.valid(m, k):
                self.collapse(m, k)
            else:
                continue
            done += 1
            refilled = False
        return done


def selection_matrix(kept: torch.Tensor, num_vertices: int,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Down-sampling matrix ``D`` (W, V) with ``D[i, kept[i]] = 1``.

    Args:
        kept: (W,) int64 indices of the kept vertices.
    Returns:
        sparse COO (W, V).
    """
    kept = torch.as_tensor(kept, dtype=torch.long)
    W = kept.numel()
    if W and (int(kept.min()) < 0 or int(kept.max()) >= num_vertices):
        raise ValueError(f"kept indices must lie in [0, {num_vertices})")
    idx = torch.stack([torch.arange(W), kept])  # one entry per row, already sorted
    return torch.sparse_coo_tensor(idx, torch.ones(W, dtype=dtype), (W, num_vertices),
                                   is_coalesced=True, check_invariants=False)


def qslim_decimate(vertices, faces, target_vertices: int, *, boundary_weight: float = 1.0,
                   min_normal_cos: float = 0.0):
    """Quadric-error edge-collapse simplification with end-point placement (CoMA's qslim).

    Edges are collapsed in order of ``min(x_a^T (Q_a + Q_b) x_a, x_b^T (Q_a + Q_b) x_b)``;
    the end point with the smaller error is kept (no new positions). A collapse is refused if
    it breaks the link condition (keeps the mesh manifold), joins two boundary vertices by an
    interior edge, duplicates a face, creates a zero-area face, or turns a face normal by
    more than ``arccos(min_normal_cos)``. Vertices not used by any face are dropped.

    Args:
        vertices: (V, 3) float (tensor or array); faces: (F, 3) int.
        target_vertices: number of vertices of the result (>= 3).
        boundary_weight: weight of the boundary-preserving quadrics (0 disables).
        min_normal_cos: minimal cosine between a face normal before and after a collapse.
    Returns:
        ``(kept, faces_coarse)``: kept (W,) int64 tensor of the fine vertex indices (sorted),
        faces_coarse (F', 3) int64 tensor indexing into ``kept``.
    Raises:
        ValueError: bad input, or the target cannot be reached without breaking the mesh.
    """
    v, f = _np_mesh(vertices, faces)
    used = np.zeros(len(v), dtype=bool)
    used[f.ravel()] = True
    n_used = int(used.sum())
    if target_vertices < 3:
        raise ValueError(f"target_vertices must be >= 3, got {target_vertices}")
    dec = _Decimator(v, f, boundary_weight, min_normal_cos)
    n_collapse = max(0, n_used - int(target_vertices))
    dec.init_heap()
    done = dec.run(n_collapse)
    if done < n_collapse:
        raise ValueError(f"qslim_decimate: stopped at {n_used - done} vertices, target "
                         f"{target_vertices} cannot be reached without degenerate topology")
    fa = np.asarray([fc for fc, al in zip(dec.faces, dec.alive) if al], dtype=np.int64)
    kept = np.unique(fa.ravel())
    remap = np.full(len(v), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return torch.from_numpy(kept), torch.from_numpy(remap[fa])


# ----------------------------------------------------------------------------- closest points
def _closest_on_triangles(p, a, b, c):
    """Exact closest point on triangles (Ericson, Real-Time Collision Detection 5.1.5).

    p, a, b, c: (..., 3) float64. Returns barycentric (..., 3) and squared distance (...)."""
    ab, ac, ap = b - a, c - a, p - a
    d1 = (ab * ap).sum(-1)
    d2 = (ac * ap).sum(-1)
    bp = p - b
    d3 = (ab * bp).sum(-1)
    d4 = (ac * bp).sum(-1)
    cp = p - c
    d5 = (ab * cp).sum(-1)
    d6 = (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        den = va + vb + vc
        v_in = vb / den
        w_in = vc / den
        bary = np.stack([1 - v_in - w_in, v_in, w_in], -1)
        # regions in reverse priority so that earlier (higher priority) ones override
        w_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        m = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        bary = np.where(m[..., None], np.stack([0 * w_bc, 1 - w_bc, w_bc], -1), bary)
        w_ac = d2 / (d2 - d6)
        m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        bary = np.where(m[..., None], np.stack([1 - w_ac, 0 * w_ac, w_ac], -1), bary)
        m = (d6 >= 0) & (d5 <= d6)
        bary = np.where(m[..., None], np.array([0.0, 0.0, 1.0]), bary)
        v_ab = d1 / (d1 - d3)
        m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        bary = np.where(m[..., None], np.stack([1 - v_ab, v_ab, 0 * v_ab], -1), bary)
        m = (d3 >= 0) & (d4 <= d3)
        bary = np.where(m[..., None], np.array([0.0, 1.0, 0.0]), bary)
        m = (d1 <= 0) & (d2 <= 0)
        bary = np.where(m[..., None], np.array([1.0, 0.0, 0.0]), bary)
    bad = ~np.isfinite(bary).all(-1)
    if bad.any():  # degenerate triangle: fall back to the nearest corner
        dd = np.stack([(ap * ap).sum(-1), (bp * bp).sum(-1), (cp * cp).sum(-1)], -1)
        bary = np.where(bad[..., None], np.eye(3)[dd.argmin(-1)], bary)
    q = bary[..., 0:1] * a + bary[..., 1:2] * b + bary[..., 2:3] * c
    return bary, ((p - q) ** 2).sum(-1)


def closest_points_on_mesh(points, vertices, faces, *, chunk: int = 200_000):
    """Exact closest point on a triangle surface for every query point.

    A first guess from the 4 faces with the nearest centroids gives an upper bound ``d`` on
    each point's distance; every face whose centroid lies within ``d + R`` (``R`` the
    largest centroid-to-corner distance of the mesh) is then tested exactly (Ericson's
    point-triangle algorithm), which cannot miss the closest face.

    Args:
        points: (N, 3); vertices: (V, 3); faces: (F, 3).
    Returns:
        ``(face_index (N,) int64, bary (N, 3) float64, closest (N, 3) float64,
        distance (N,) float64)`` as numpy arrays (ties go to the lowest candidate).
    """
    from scipy.spatial import cKDTree

    v, f = _np_mesh(vertices, faces)
    p = points.detach().cpu().double().numpy() if isinstance(points, torch.Tensor) \
        else np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    if len(f) == 0:
        raise ValueError("mesh has no faces")
    if not np.isfinite(p).all():
        raise ValueError("points contain NaN or inf")
    tri = v[f]  # (F, 3, 3)
    cen = tri.mean(1)
    Rf = np.sqrt(((tri - cen[:, None]) ** 2).sum(-1)).max(1)
    ctree = cKDTree(cen)
    k0 = min(4, len(f))
    _, ic = ctree.query(p, k=k0)
    ic = np.asarray(ic).reshape(len(p), k0)
    t0 = tri[ic]
    _, d2 = _closest_on_triangles(p[:, None], t0[:, :, 0], t0[:, :, 1], t0[:, :, 2])
    dbound = np.sqrt(d2.min(1)) * (1 + 1e-9) + 1e-12
    # faces grouped by radius (halving classes) so each group's search ball stays tight
    groups = []
    hi = float(Rf.max())
    rest = np.arange(len(f))
    for _ in range(8):
        sel = Rf[rest] > hi / 2
        if len(groups) == 7:
            sel[:] = True
        if sel.any():
            groups.append((rest[sel], hi))
        rest = rest[~sel]
        hi = hi / 2
        if len(rest) == 0:
            break
    cand_l, pid_l = [], []
    for ids, r in groups:
        tree = ctree if len(ids) == len(f) else cKDTree(cen[ids])
        lists = tree.query_ball_point(p, dbound + r)
        lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(p))
        c = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64,
                        count=int(lens.sum()))
        cand_l.append(ids[c])
        pid_l.append(np.repeat(np.arange(len(p)), lens))
    pid = np.concatenate(pid_l)
    order = np.argsort(pid, kind="stable")
    pid = pid[order]
    cand = np.concatenate(cand_l)[order]
    lens = np.bincount(pid, minlength=len(p))
    bary = np.empty((len(cand), 3))
    dist2 = np.empty(len(cand))
    for s in range(0, len(cand), chunk):
        sl = slice(s, s + chunk)
        tc = tri[cand[sl]]
        bary[sl], dist2[sl] = _closest_on_triangles(p[pid[sl]], tc[:, 0], tc[:, 1], tc[:, 2])
    # per point: first candidate with the minimal distance (groups are contiguous)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    gmin = np.minimum.reduceat(dist2, starts)
    hit = np.flatnonzero(dist2 <= gmin[pid])
    first = np.full(len(p), -1, dtype=np.int64)
    first[pid[hit[::-1]]] = hit[::-1]
    out_f = cand[first]
    out_b = bary[first]
    closest = (out_b[:, :, None] * tri[out_f]).sum(1)
    return out_f, out_b, closest, np.sqrt(dist2[first])


def upsampling_matrix(fine_vertices, coarse_vertices, coarse_faces,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CoMA up-sampling matrix: row ``i`` holds the barycentric coordinates of fine vertex
    ``i``'s closest point on the coarse surface, at the three corners of that coarse triangle.

    Args:
        fine_vertices: (V, 3); coarse_vertices: (W, 3); coarse_faces: (F', 3).
    Returns:
        sparse COO (V, W); rows are non-negative and sum to 1.
    """
    v, _ = _np_mesh(fine_vertices, torch.zeros(0, 3, dtype=torch.long))
    vc, fc = _np_mesh(coarse_vertices, coarse_faces)
    fi, bary, _, _ = closest_points_on_mesh(v, vc, fc)
    rows = np.repeat(np.arange(len(v)), 3)
    cols = fc[fi].ravel()
    idx = torch.from_numpy(np.stack([rows, cols]))
    return _sparse(idx, torch.from_numpy(bary.ravel()).to(dtype), (len(v), len(vc)))


# ----------------------------------------------------------------------------- hierarchy
@dataclass
class MeshHierarchy:
    """A CoMA mesh pyramid.

    Attributes:
        vertices: list of L+1 tensors (V_l, 3) float32; level 0 is the input mesh.
        faces: list of L+1 tensors (F_l, 3) int64.
        kept: list of L tensors (V_{l+1},) int64: level l+1's vertices as indices into level l.
        down: list of L sparse COO (V_{l+1}, V_l) selection matrices D_l.
        up: list of L sparse COO (V_l, V_{l+1}) barycentric matrices U_l.
        build_seconds: time spent building (0 when loaded from the cache).
        from_cache: whether it was loaded from the cache.
    """

    vertices: list[torch.Tensor]
    faces: list[torch.Tensor]
    kept: list[torch.Tensor]
    down: list[torch.Tensor]
    up: list[torch.Tensor]
    build_seconds: float = 0.0
    from_cache: bool = False
    key: str = ""
    _lap: dict = field(default_factory=dict, repr=False)

    @property
    def num_levels(self) -> int:
        return len(self.down)

    @property
    def num_vertices(self) -> list[int]:
        return [int(v.shape[0]) for v in self.vertices]

    def laplacians(self, normalization: str = "sym") -> list[torch.Tensor]:
        """Scaled Chebyshev Laplacians of every level (computed lambda_max), L+1 sparse COO
        (V_l, V_l) tensors."""
        if normalization not in self._lap:
            self._lap[normalization] = [
                chebyshev_laplacian(f, int(v.shape[0]), normalization=normalization)
                for v, f in zip(self.vertices, self.faces)]
        return self._lap[normalization]


def mesh_hash(vertices, faces, *extra) -> str:
    """sha256 hex digest of a mesh (float64 vertices, int64 faces) and extra parameters."""
    v = vertices.detach().cpu().double().numpy() if isinstance(vertices, torch.Tensor) \
        else np.asarray(vertices, dtype=np.float64)
    f = faces.detach().cpu().long().numpy() if isinstance(faces, torch.Tensor) \
        else np.asarray(faces, dtype=np.int64)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(v, dtype="<f8").tobytes())
    h.update(str(v.shape).encode())
    h.update(np.ascontiguousarray(f, dtype="<i8").tobytes())
    h.update(str(f.shape).encode())
    h.update(repr(extra).encode())
    return h.hexdigest()


def _save(path: Path, hier: MeshHierarchy) -> None:
    from facegeo.assets import atomic_write

    arrays = {"num_levels": np.array(hier.num_levels)}
    for i, (v, f) in enumerate(zip(hier.vertices, hier.faces)):
        arrays[f"v{i}"] = v.numpy()
        arrays[f"f{i}"] = f.numpy()
    for i, (k, U) in enumerate(zip(hier.kept, hier.up)):
        arrays[f"kept{i}"] = k.numpy()
        arrays[f"U{i}_idx"] = U.indices().numpy()
        arrays[f"U{i}_val"] = U.values().numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def _load(path: Path) -> MeshHierarchy:
    with np.load(path) as z:
        n = int(z["num_levels"])
        vs = [torch.from_numpy(z[f"v{i}"]) for i in range(n + 1)]
        fs = [torch.from_numpy(z[f"f{i}"]) for i in range(n + 1)]
        kept = [torch.from_numpy(z[f"kept{i}"]) for i in range(n)]
        # stored from coalesced tensors: indices are sorted and unique
        ups = [torch.sparse_coo_tensor(
            torch.from_numpy(z[f"U{i}_idx"]), torch.from_numpy(z[f"U{i}_val"]),
            (vs[i].shape[0], vs[i + 1].shape[0]), is_coalesced=True, check_invariants=False)
            for i in range(n)]
    downs = [selection_matrix(k, vs[i].shape[0]) for i, k in enumerate(kept)]
    return MeshHierarchy(vs, fs, kept, downs, ups, 0.0, True)


def mesh_hierarchy(vertices, faces, factors=(4, 4, 4, 4), *, boundary_weight: float = 1.0,
                   cache: bool = True, cache_dir: str | Path | None = None) -> MeshHierarchy:
    """CoMA's ``generate_transform_matrices``: repeated quadric decimation by ``factors``.

    Level ``l+1`` has ``ceil(V_l / factors[l])`` vertices (``V_0`` counts only the vertices
    used by faces). ``D_l`` selects the kept vertices; ``U_l`` maps level ``l+1`` back to level
    ``l`` with barycentric weights on the closest coarse triangle, so ``U_l @ D_l @ X``
    reproduces the kept vertices of ``X`` exactly.

    Args:
        vertices: (V, 3) float tensor/array (a template mesh, e.g. a 3DMM mean).
        faces: (F, 3) int.
        factors: down-sampling factor of each level (each >= 1).
        boundary_weight: see :func:`qslim_decimate`.
        cache: load/store the result under ``<cache>/mesh_sampling/<sha256>.npz`` where
            ``<cache>`` is ``cache_dir`` or :func:`facegeo.assets.cache_dir` (written
            atomically). The key hashes the vertices, faces, factors, options and
            :data:`QSLIM_VERSION`.
    Returns:
        :class:`MeshHierarchy`.
    """
    factors = tuple(float(x) for x in factors)
    if any(not x >= 1 for x in factors):
        raise ValueError(f"factors must all be >= 1, got {factors}")
    v, f = _np_mesh(vertices, faces)
    key = mesh_hash(v, f, QSLIM_VERSION, factors, float(boundary_weight))
    path = None
    if cache:
        if cache_dir is None:
            from facegeo.assets import cache_dir as _cd

            cache_dir = _cd()
        path = Path(cache_dir) / "mesh_sampling" / f"{key}.npz"
        if path.is_file():
            try:
                h = _load(path)
                h.key = key
                return h
            except (OSError, KeyError, ValueError):
                pass  # corrupt cache file: rebuild and overwrite
    t0 = time.perf_counter()
    vs = [torch.from_numpy(v).float()]
    fs = [torch.from_numpy(f).long()]
    kept_l, downs, ups = [], [], []
    cur_v, cur_f = v, f
    for fac in factors:
        n_used = len(np.unique(cur_f))
        target = max(3, math.ceil(n_used / fac))
        kept, fc = qslim_decimate(cur_v, cur_f, target, boundary_weight=boundary_weight)
        new_v = cur_v[kept.numpy()]
        kept_l.append(kept)
        downs.append(selection_matrix(kept, len(cur_v)))
        ups.append(upsampling_matrix(cur_v, new_v, fc))
        vs.append(torch.from_numpy(new_v).float())
        fs.append(fc)
        cur_v, cur_f = new_v, fc.numpy()
    h = MeshHierarchy(vs, fs, kept_l, downs, ups, time.perf_counter() - t0, False, key)
    if path is not None:
        _save(path, h)
    return h


# ----------------------------------------------------------------------------- evaluation
def sample_surface(vertices, faces, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniformly distributed on the surface (area-weighted), numpy (n, 3)."""
    v, f = _np_mesh(vertices, faces)
    _, a2 = _face_planes(v, f)
    rng = np.random.default_rng(seed)
    fi = rng.choice(len(f), size=n, p=a2 / a2.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    return (w[:, :, None] * v[f[fi]]).sum(1)


def hausdorff_distance(vertices_a, faces_a, vertices_b, faces_b, *, samples: int = 50000,
                       seed: int = 0) -> tuple[float, float, float]:
    """Symmetric Hausdorff distance between two surfaces, estimated from the vertices plus
    ``samples`` area-uniform surface points of each (exact point-to-surface distances).

    Returns:
        ``(hausdorff, a_to_b, b_to_a)``: the max of the two one-sided maxima, and those.
    """
    pa = np.concatenate([_np_mesh(vertices_a, faces_a)[0],
                         sample_surface(vertices_a, faces_a, samples, seed)])
    pb = np.concatenate([_np_mesh(vertices_b, faces_b)[0],
                         sample_surface(vertices_b, faces_b, samples, seed + 1)])
    ab = closest_points_on_mesh(pa, vertices_b, faces_b)[3].max()
    ba = closest_points_on_mesh(pb, vertices_a, faces_a)[3].max()
    return float(max(ab, ba)), float(ab), float(ba)
