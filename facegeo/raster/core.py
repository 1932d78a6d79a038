"""Batched triangle rasterizer (z-buffer) and differentiable attribute interpolation.

Conventions (see ``docs/raster.md``):

* Vertices are given **in image space**, shape (B, V, 3): ``x`` (pixels, right), ``y``
  (pixels, down), ``z`` (depth along the viewing direction: the camera looks down +z, so
  the *smallest* depth wins). Pixel (row i, column j) has its centre at (x, y) = (j, i)
  (the :mod:`facegeo.coords` convention); a pixel is covered by a triangle when its
  centre lies inside the triangle or on its boundary.
* ``perspective_correct=False`` (weak-perspective / orthographic, the default): ``z`` is
  any depth that is affine over each triangle in screen space (e.g. the rotated and scaled
  model z); barycentrics and depth are interpolated linearly in screen space.
* ``perspective_correct=True`` (pinhole): ``(x, y)`` are the projected pixel coordinates
  and ``z`` is the positive camera-space depth; ``1/z`` is interpolated linearly in screen
  space (exact for a pinhole camera), barycentrics are perspective-corrected, and triangles
  with a vertex at ``z <= 0`` are dropped (no near-plane clipping).
* Winding: a triangle is *front-facing* when it is counter-clockwise as seen on the screen,
  i.e. its signed area ``(x1-x0)(y2-y0) - (x2-x0)(y1-y0)`` in y-down pixel coordinates is
  negative; equivalently its right-hand normal in the (x right, y down, z forward) frame
  points towards the camera (normal z < 0). A mesh whose normals point outwards (ICT, BFM)
  is front-facing after the usual y flip to image space. ``cull_backfaces=True`` drops
  back-facing triangles before the depth test; otherwise both sides are rasterized.
  Degenerate (zero-area) triangles are always dropped.

The torch path is two vectorised passes: (1) every triangle enumerates the pixel centres
of its bounding box (triangles are grouped by box size into square tiles), evaluates edge
functions and depth, packs ``(depth, triangle id)`` into one int64 key whose order is the
depth order, and a ``scatter_reduce(amin)`` over pixels is the z-buffer; (2) for every
covered pixel the barycentrics are recomputed from the vertices with autograd, so
gradients reach the vertex positions.

On the CPU the default backend (``"auto"``) replaces pass 1 by a compiled numba kernel
(:mod:`facegeo.raster._numba_kernel`): a bounding-box rasterizer with the same arithmetic,
hence the same face ids, run on GIL-free threads over (image, band of rows) tasks; it also
emits the sparse view of the covered pixels. Pass 2 is the same torch code on every
backend (in cache-sized chunks on the CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from facegeo._optional import require

__all__ = [
    "Fragments",
    "rasterize",
    "interpolate",
    "vertex_normals",
    "face_normals",
    "shade_lambert",
    "available_backends",
]

_INT64_MAX = torch.iinfo(torch.int64).max
_BG_KEY = 0x7F800000 << 32  # packed key of a +inf depth: not covered
_TILE_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128)
_MIN_BUCKET = 16384  # candidates below which a tile-shape bucket is merged into a square one
_MAX_CHUNK = 1 << 17  # candidate (triangle, pixel) pairs per vectorised chunk
_GROUP_TRIANGLES = 100_000  # CPU: triangles per batch group (cache-sized working set)
_PASS2_CHUNK = 32768  # CPU: covered pixels per pass-2 chunk (torch's parallel grain size)


@dataclass
class Fragments:
    """Result of :func:`rasterize`.

    Dense per-pixel outputs (B = batch, H x W image):

    * ``face_id``: (B, H, W) int64, index into ``faces`` of the visible triangle, -1 on
      background.
    * ``bary``: (B, H, W, 3) barycentric coordinates of the pixel centre w.r.t. the visible
      triangle's corners (perspective-corrected if requested), zeros on background.
      Differentiable w.r.t. the vertices.
    * ``depth``: (B, H, W) interpolated depth of the visible surface (camera-space ``z``
      for a pinhole camera), 0 on background. Differentiable w.r.t. the vertices.
    * ``mask``: (B, H, W) bool, True where a triangle covers the pixel.

    Sparse view of the covered pixels (N of them), used by :func:`interpolate`:

    * ``pix``: (N,) int64 flat index ``b*H*W + i*W + j`` of each covered pixel.
    * ``pix_face``: (N,) int64 visible triangle of each covered pixel.
    * ``pix_bary``: (N, 3) its barycentrics (differentiable).
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    pix: torch.Tensor
    pix_face: torch.Tensor
    pix_bary: torch.Tensor
    height: int
    width: int

    @property
    def batch_size(self) -> int:
        return self.face_id.shape[0]


# ----------------------------------------------------------------------------- checks
def _check_mesh(
    verts: torch.Tensor, faces: torch.Tensor, name: str = "verts"
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(verts, torch.Tensor) or not isinstance(faces, torch.Tensor):
        raise TypeError("verts and faces must be torch tensors")
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape (B, V, 3), got {tuple(verts.shape)}")
    if not verts.is_floating_point():
        raise TypeError(f"verts must be a floating point tensor, got {verts.dtype}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise TypeError(f"faces must be an integer tensor, got {faces.dtype}")
    faces = faces.to(device=verts.device, dtype=torch.int64)
    if faces.numel():
        # on the CPU via a numpy view: a torch reduction over 60k indices opens an OpenMP
        # parallel region, which cost ~10 ms of spinning on a busy 2-core machine
        ff = faces.numpy() if faces.device.type == "cpu" else faces
        lo, hi = int(ff.min()), int(ff.max())
        if lo < 0 or hi >= verts.shape[1]:
            raise ValueError(
                f"faces index vertices out of range [0, {verts.shape[1]}): min {lo}, max {hi}"
            )
    if faces.shape[0] >= 2**31:
        raise ValueError("too many faces (at most 2**31 - 1)")
    _check_finite_used(verts, faces, name)
    return verts, faces


def _finite_rows(x: torch.Tensor) -> torch.Tensor | np.ndarray:
    """(B, V, C) -> (B, V) bool "all finite" (numpy on the CPU: no OpenMP region)."""
    x = x.detach()
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return np.isfinite(x.numpy()).all(-1)
    return torch.isfinite(x).all(-1)


def _check_finite_used(verts: torch.Tensor, faces: torch.Tensor, name: str) -> None:
    """ValueError when a vertex used by a face is NaN/inf (unused vertices may be anything)."""
    ok = _finite_rows(verts)
    if bool(ok.all()):
        return
    used = torch.zeros(verts.shape[1], dtype=torch.bool, device=verts.device)
    used[faces.reshape(-1)] = True
    ok = torch.as_tensor(ok, device=verts.device)
    bad = ~ok & used
    if bool(bad.any()):
        b, v = (int(i) for i in bad.nonzero()[0])
        f = int((faces == v).any(1).nonzero()[0])
        raise ValueError(
            f"{name} contains NaN or inf at [{b}, {v}] (a corner of face {f}); a triangle "
            "with a non-finite vertex cannot be rasterized"
        )


def _check_size(height: int, width: int) -> None:
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(
            f"image size must be positive integers, got height={height}, width={width}"
        )


# ----------------------------------------------------------------------------- pass 1
def _sortable_int(z: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 whose signed order is the float order (for finite values)."""
    bits = z.contiguous().view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.to(torch.int64)


def _key_depth(z: torch.Tensor, perspective_correct: bool) -> torch.Tensor:
    # A quantity affine in screen space, increasing with distance.
    return -1.0 / z if perspective_correct else z


def _min3(a: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.minimum(a[..., 0], a[..., 1]), a[..., 2])


def _valid_faces(tv: torch.Tensor, cull_backfaces: bool, perspective_correct: bool) -> torch.Tensor:
    """(..., 3, 3) corner xyz -> (...) bool: rasterizable (and front-facing if culling)."""
    x, y, z = tv[..., 0], tv[..., 1], tv[..., 2]
    area2 = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (
        y[..., 1] - y[..., 0]
    )
    valid = area2 < 0 if cull_backfaces else area2 != 0
    valid &= torch.isfinite(area2 + z[..., 0] + z[..., 1] + z[..., 2])
    if perspective_correct:
        valid &= _min3(z) > 0
    return valid


@torch.no_grad()
def _zbuffer_torch(
    verts: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    cull_backfaces: bool,
    perspective_correct: bool,
) -> torch.Tensor:
    """Pass 1: (B*H*W,) int64 packed keys ``depth_bits << 32 | face``, INT64_MAX on background."""
    B = verts.shape[0]
    F = faces.shape[0]
    dev = verts.device
    v = verts.detach()
    if v.dtype != torch.float64:
        v = v.float()
    npix = B * height * width
    # Structure-of-arrays corner coordinates: soa[3 * k + c] = coordinate c of corner k,
    # each row a contiguous (B*F,) vector (fast element-wise kernels).
    V = v.shape[1]
    vt = v.permute(2, 0, 1).reshape(3, B * V)
    cidx = (faces.T.reshape(3, 1, F) + (torch.arange(B, device=dev) * V).view(1, B, 1)).reshape(-1)
    soa = vt.index_select(1, cidx).view(3, 3, B * F).transpose(0, 1).reshape(9, B * F)
    x0, y0, z0, x1, y1, z1, x2, y2, z2 = soa.unbind(0)
    xlo = torch.minimum(torch.minimum(x0, x1), x2)
    xhi = torch.maximum(torch.maximum(x0, x1), x2)
    ylo = torch.minimum(torch.minimum(y0, y1), y2)
    yhi = torch.maximum(torch.maximum(y0, y1), y2)
    bw = torch.floor(xhi).clamp_(max=width - 1) - torch.ceil(xlo).clamp_(min=0)
    bh = torch.floor(yhi).clamp_(max=height - 1) - torch.ceil(ylo).clamp_(min=0)
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    valid = area2 < 0 if cull_backfaces else area2 != 0
    valid &= (bw >= 0) & (bh >= 0) & torch.isfinite(area2 + z0 + z1 + z2)
    if perspective_correct:
        valid &= torch.minimum(torch.minimum(z0, z1), z2) > 0
    keep = torch.nonzero(valid).squeeze(1)
    if keep.numel() == 0:
        return torch.full((npix,), _INT64_MAX, dtype=torch.int64, device=dev)
    # Group the kept triangles by tile shape (kh x kw >= bbox, sizes from _TILE_SIZES).
    bwk = bw.index_select(0, keep) + 1
    bhk = bh.index_select(0, keep) + 1
    smax = int(torch.maximum(bwk.max(), bhk.max()))
    sizes = [s for s in _TILE_SIZES if s < smax] + [smax]
    edges = torch.tensor(sizes, device=dev, dtype=bwk.dtype)
    ns = len(sizes)
    # Triangles whose box was clamped at the right or bottom border need the two box-limit
    # planes (a tile sticking out of the box would wrap to the next row or image); for the
    # others the edge functions alone reject the tile's overshoot.
    clamped = (xhi.index_select(0, keep) >= width - 1) | (yhi.index_select(0, keep) >= height - 1)
    iw = torch.bucketize(bwk, edges)
    ih = torch.bucketize(bhk, edges)
    cls = clamped.to(iw.dtype) * (ns * ns)
    bucket = iw * ns + ih + cls
    # Every non-empty bucket costs a dozen kernel launches: shapes with few candidates are
    # moved to the square tile of their larger side, which bounds the number of buckets.
    area = (edges[iw] * edges[ih]).to(torch.int64)
    cnt = torch.bincount(bucket, minlength=2 * ns * ns)
    small = cnt[bucket] * area < _MIN_BUCKET
    isq = torch.maximum(iw, ih)
    bucket = torch.where(small, isq * ns + isq + cls, bucket)
    perm = torch.argsort(bucket)
    counts = torch.bincount(bucket, minlength=2 * ns * ns).tolist()
    keep = keep.index_select(0, perm)
    per_tri = soa.index_select(1, keep)  # (9, T), contiguous rows
    x0, y0, z0, x1, y1, z1, x2, y2, z2 = per_tri.unbind(0)
    xmin = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2)).clamp_(min=0)
    ymin = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2)).clamp_(min=0)
    bw = torch.floor(torch.maximum(torch.maximum(x0, x1), x2)).clamp_(max=width - 1) - xmin + 1
    bh = torch.floor(torch.maximum(torch.maximum(y0, y1), y2)).clamp_(max=height - 1) - ymin + 1
    # depth key, affine in screen space; shifted to >= 1 so that the int32 bit patterns of
    # the (positive) float32 values are ordered like the values; masked-out candidates get
    # +inf (0x7F800000), i.e. a key >= _BG_KEY.
    zk0 = _key_depth(z0, perspective_correct)
    zk1 = _key_depth(z1, perspective_correct)
    zk2 = _key_depth(z2, perspective_correct)
    # per image (so that the keys do not depend on which items are rasterized together)
    bidx = torch.div(keep, F, rounding_mode="floor")
    zkmin = torch.minimum(torch.minimum(zk0, zk1), zk2)
    zmin = zkmin.new_full((B,), math.inf).scatter_reduce_(0, bidx, zkmin, "amin")
    zshift = (1.0 - zmin).index_select(0, bidx)
    # Corner coordinates relative to the tile origin (xmin, ymin), for precision.
    rx0, rx1, rx2 = x0 - xmin, x1 - xmin, x2 - xmin
    ry0, ry1, ry2 = y0 - ymin, y1 - ymin, y2 - ymin
    # Edge function opposite corner i (j = i+1, k = i+2):
    # w_i(p) = (xk - xj)(py - yj) - (yk - yj)(px - xj)  (affine in p)
    ex0, ey0 = rx2 - rx1, ry2 - ry1
    ex1, ey1 = rx0 - rx2, ry0 - ry2
    ex2, ey2 = rx1 - rx0, ry1 - ry0
    c0 = ey0 * rx1 - ex0 * ry1
    c1 = ey1 * rx2 - ex1 * ry2
    c2 = ey2 * rx0 - ex2 * ry0
    area = c0 + c1 + c2  # w0 + w1 + w2 is the same everywhere
    sgn = torch.where(area < 0, -1.0, 1.0).to(v.dtype)
    zs0, zs1, zs2 = (zk0 + zshift) / area, (zk1 + zshift) / area, (zk2 + zshift) / area
    one = torch.ones_like(bw)
    zero = torch.zeros_like(bw)
    # Six affine planes (value at the origin, d/dx, d/dy) per triangle, (6, 3, T): three
    # edge functions and two bounding-box limits (all >= 0 inside), and the depth key
    # zk(p) = sum_i w_i(p) zk_i / area.
    planes = torch.stack(
        [
            c0 * sgn, -ey0 * sgn, ex0 * sgn,
            c1 * sgn, -ey1 * sgn, ex1 * sgn,
            c2 * sgn, -ey2 * sgn, ex2 * sgn,
            bw - 1, -one, zero,
            bh - 1, zero, -one,
            c0 * zs0 + c1 * zs1 + c2 * zs2,
            -(ey0 * zs0 + ey1 * zs1 + ey2 * zs2),
            ex0 * zs0 + ex1 * zs1 + ex2 * zs2,
        ]
    ).view(6, 3, -1)  # fmt: skip
    planes4 = planes[[0, 1, 2, 5]]
    fid = keep - bidx * F
    base = bidx * (height * width) + (ymin * width + xmin).to(torch.int64)
    # Tiles may stick out of the bounding box (masked); pad the buffer so indices stay valid.
    kmax = sizes[-1]
    buf = torch.full((npix + kmax * (width + 1),), _INT64_MAX, dtype=torch.int64, device=dev)
    start = 0
    for bi, cnt in enumerate(counts):
        if cnt == 0:
            continue
        with_box = bi >= ns * ns
        kw, kh = sizes[(bi // ns) % ns], sizes[bi % ns]
        pl = planes if with_box else planes4
        dx = torch.arange(kw, device=dev).repeat(kh)
        dy = torch.arange(kh, device=dev).repeat_interleave(kw)
        basis = torch.stack([torch.ones_like(dx), dx, dy]).to(v.dtype)  # (3, kh*kw)
        offs = dx + dy * width
        chunk = max(1, _MAX_CHUNK // (kw * kh))
        for c in range(start, start + cnt, chunk):
            e = min(c + chunk, start + cnt)
            w = torch.matmul(pl[:, :, c:e].transpose(1, 2), basis)  # (6 or 4, t, kh*kw)
            zc = w[-1].float()
            zc.masked_fill_(w[:-1].amin(0) < 0, math.inf)
            key = torch.add(fid[c:e, None], zc.view(torch.int32), alpha=1 << 32)
            pix = base[c:e, None] + offs
            buf.scatter_reduce_(0, pix.view(-1), key.view(-1), "amin")
        start += cnt
    buf = buf[:npix]
    buf.masked_fill_(buf >= _BG_KEY, _INT64_MAX)
    return buf


# ----------------------------------------------------------------------------- backends
def available_backends() -> list[str]:
    """Names accepted by ``rasterize(..., backend=...)`` that work in this environment."""
    out = ["torch"]
    try:
        import open3d  # noqa: F401

        out.append("open3d")
    except ImportError:
        pass
    if _numba_kernel() is not None:
        out.append("numba")
    try:
        import pytorch3d.renderer.mesh.rasterize_meshes  # noqa: F401

        out.append("pytorch3d")
    except ImportError:
        pass
    return out


def _face_subsets(verts, faces, cull_backfaces, perspective_correct):
    tv = verts.detach()[:, faces]  # (B, F, 3, 3)
    return _valid_faces(tv, cull_backfaces, perspective_correct)  # (B, F)


@torch.no_grad()
def _zbuffer_open3d(verts, faces, height, width, cull_backfaces, perspective_correct):
    o3d = require("open3d", "backend='open3d' (use backend='torch' or 'numba' otherwise)")
    import numpy as np

    B = verts.shape[0]
    valid = _face_subsets(verts, faces, cull_backfaces, perspective_correct).cpu()
    v = verts.detach().to("cpu", torch.float32)
    zk = _key_depth(v[..., 2], perspective_correct)
    f_np = faces.cpu().numpy().astype(np.uint32)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    out = torch.full((B, height * width), _INT64_MAX, dtype=torch.int64)
    for b in range(B):
        keep = torch.nonzero(valid[b]).squeeze(1)
        if keep.numel() == 0:
            continue
        pts = torch.stack([v[b, :, 0], v[b, :, 1], zk[b]], 1)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor(pts.numpy()), o3d.core.Tensor(np.ascontiguousarray(f_np[keep.numpy()]))
        )
        z_start = float(pts[:, 2].min()) - 1.0
        rays = torch.zeros(height, width, 6)
        rays[..., 0] = xs
        rays[..., 1] = ys
        rays[..., 2] = z_start
        rays[..., 5] = 1.0
        hit = scene.cast_rays(o3d.core.Tensor(rays.numpy()))
        t = torch.from_numpy(hit["t_hit"].numpy()).reshape(-1)
        prim = torch.from_numpy(hit["primitive_ids"].numpy().astype(np.int64)).reshape(-1)
        ok = torch.isfinite(t)
        fid = keep[prim.clamp(max=keep.numel() - 1)]
        key = (_sortable_int(t + z_start) << 32) | fid
        out[b] = torch.where(ok, key, _INT64_MAX)
    return out.reshape(-1).to(verts.device)


@torch.no_grad()
def _zbuffer_pytorch3d(verts, faces, height, width, cull_backfaces, perspective_correct):
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes
    except ImportError as exc:
        raise ImportError(
            "backend='pytorch3d' needs PyTorch3D (see https://github.com/facebookresearch/"
            "pytorch3d/blob/main/INSTALL.md); it is optional, use backend='torch' (always "
            "available) or backend='open3d'"
        ) from exc
    B = verts.shape[0]
    valid = _face_subsets(verts, faces, cull_backfaces, perspective_correct)
    v = verts.detach().float()
    zk = _key_depth(v[..., 2], perspective_correct)
    z_shift = 1.0 - zk.amin(dim=1, keepdim=True)  # PyTorch3D skips faces behind z = 0
    s = float(min(height, width))
    # PyTorch3D NDC: +X left, +Y up; output pixel (i, j) centre at
    # x = (W - 2j - 1) / min(H, W), y = (H - 2i - 1) / min(H, W).
    ndc = torch.stack(
        [(width - 2.0 * v[..., 0] - 1.0) / s, (height - 2.0 * v[..., 1] - 1.0) / s, zk + z_shift],
        -1,
    )
    keeps = [torch.nonzero(valid[b]).squeeze(1) for b in range(B)]
    mesh = Meshes(verts=list(ndc), faces=[faces[k] for k in keeps])
    pix_to_face, zbuf, _, _ = rasterize_meshes(
        mesh,
        image_size=(height, width),
        blur_radius=0.0,
        faces_per_pixel=1,
        perspective_correct=False,
        cull_backfaces=False,
    )
    p2f = pix_to_face[..., 0].reshape(B, -1)
    zb = zbuf[..., 0].reshape(B, -1) - z_shift
    first = mesh.mesh_to_faces_packed_first_idx().to(p2f.device)
    out = torch.full((B, height * width), _INT64_MAX, dtype=torch.int64, device=verts.device)
    for b in range(B):
        ok = p2f[b] >= 0
        local = (p2f[b] - first[b]).clamp(min=0)
        fid = keeps[b][local.clamp(max=max(keeps[b].numel() - 1, 0))] if keeps[b].numel() else local
        key = (_sortable_int(zb[b].float()) << 32) | fid
        out[b] = torch.where(ok, key, _INT64_MAX)
    return out.reshape(-1)


def _numba_kernel():
    """The compiled-kernel module, or None when numba is not installed."""
    try:
        from facegeo.raster import _numba_kernel
    except ImportError:
        return None
    return _numba_kernel


def _numba_inputs(verts: torch.Tensor):
    """The compiled kernel module and the detached float32/float64 CPU vertices it takes
    (clear errors when numba is missing or the tensors are not on the CPU)."""
    kern = _numba_kernel()
    if kern is None:
        raise ImportError(
            "backend='numba' needs the numba package (pip install numba); "
            "use backend='torch' (always available) otherwise"
        )
    if verts.device.type != "cpu":
        raise ValueError(
            f"backend='numba' runs on CPU tensors only, got device {verts.device}; "
            "use backend='torch' (or 'auto') for GPU tensors"
        )
    v = verts.detach()
    if v.dtype != torch.float64:
        v = v.float()
    return kern, v


@torch.no_grad()
def _zbuffer_numba(verts, faces, height, width, cull_backfaces, perspective_correct):
    kern, v = _numba_inputs(verts)
    # as many threads as torch is allowed to use (torch.set_num_threads)
    keys, _, _ = kern.zbuffer(
        v.contiguous().numpy(),
        faces.contiguous().numpy(),
        height,
        width,
        bool(cull_backfaces),
        bool(perspective_correct),
        torch.get_num_threads(),
    )
    return torch.from_numpy(keys).view(-1)


_BACKENDS = {
    "torch": _zbuffer_torch,
    "numba": _zbuffer_numba,
    "open3d": _zbuffer_open3d,
    "pytorch3d": _zbuffer_pytorch3d,
}


# ----------------------------------------------------------------------------- pass 2
def _barycentrics(
    vt: torch.Tensor,
    corners: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    perspective_correct: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable barycentrics (N, 3) and depth (N,) at covered pixel centres.

    ``vt``: (3, B*V) vertex coordinates (``verts.permute(2, 0, 1).reshape(3, -1)``);
    ``corners``: (3, N) the visible triangle's corners as indices into the B*V stacked
    vertices; ``px``, ``py``: (N,) pixel centre (column, row) in ``vt.dtype``."""
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = (
        [vt[c].index_select(0, corners[k]) for k in range(3)] for c in range(3)
    )
    rx0, rx1, rx2 = x0 - px, x1 - px, x2 - px
    ry0, ry1, ry2 = y0 - py, y1 - py, y2 - py
    w0 = rx1 * ry2 - rx2 * ry1  # edge function opposite corner 0, at the pixel centre
    w1 = rx2 * ry0 - rx0 * ry2
    w2 = rx0 * ry1 - rx1 * ry0
    if perspective_correct:
        w0, w1, w2 = w0 / z0, w1 / z1, w2 / z2
    inv = 1.0 / (w0 + w1 + w2)
    bary = torch.stack([w0 * inv, w1 * inv, w2 * inv], 1)
    if perspective_correct:
        # sum_i (w_i / area) / z_i = 1 / depth, and w / z above is that up to 1 / area
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        depth = inv * area
    else:
        depth = (w0 * z0 + w1 * z1 + w2 * z2) * inv
    return bary, depth


def rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
    perspective_correct: bool = False,
    backend: str = "auto",
) -> Fragments:
    """Rasterize image-space triangle meshes with a z-buffer (nearest surface wins).

    Args:
        verts: (B, V, 3) vertices in image space: x, y in pixels (pixel centres at
            integers, y down), z = depth (smaller is nearer; see the module docstring).
        faces: (F, 3) integer triangle indices, shared by the batch.
        height, width: output image size H, W.
        cull_backfaces: drop back-facing triangles (clockwise on screen) before the depth
            test.
        perspective_correct: treat z as positive pinhole camera depth and interpolate
            perspective-correctly (see the module docstring).
        backend: ``"auto"`` (default: ``"numba"`` for CPU tensors when numba is
            installed, else ``"torch"``), ``"numba"`` (compiled CPU z-buffer, same face
            ids as ``"torch"``), ``"torch"`` (built-in, any device), ``"open3d"`` (Embree
            ray casting on the CPU) or ``"pytorch3d"`` (``rasterize_meshes``; optional
            dependency). The backend only decides visibility; barycentrics and depth are
            always recomputed in torch so they are differentiable w.r.t. ``verts``.

    Returns:
        :class:`Fragments` with ``face_id`` (B, H, W) int64 (-1 = background), ``bary``
        (B, H, W, 3), ``depth`` (B, H, W) (0 on background), ``mask`` (B, H, W) bool and
        the sparse per-covered-pixel view used by :func:`interpolate`.
    """
    verts, faces = _check_mesh(verts, faces)
    _check_size(height, width)
    if backend == "auto":
        use_numba = verts.device.type == "cpu" and _numba_kernel() is not None
        backend = "numba" if use_numba else "torch"
    if backend not in _BACKENDS:
        raise ValueError(
            f"unknown backend {backend!r}; choose one of {sorted(_BACKENDS) + ['auto']}"
        )
    B = verts.shape[0]
    g = _cpu_group(verts, faces)
    if backend != "torch" or g >= B:
        return _rasterize(verts, faces, height, width, cull_backfaces, perspective_correct, backend)
    # CPU: groups of batch items keep the working set cache-sized (20-25 % faster at B = 16)
    parts = [
        _rasterize(
            verts[i : i + g], faces, height, width, cull_backfaces, perspective_correct, backend
        )
        for i in range(0, B, g)
    ]
    hw = height * width
    return Fragments(
        face_id=torch.cat([q.face_id for q in parts]),
        bary=torch.cat([q.bary for q in parts]),
        depth=torch.cat([q.depth for q in parts]),
        mask=torch.cat([q.mask for q in parts]),
        pix=torch.cat([q.pix + i * g * hw for i, q in enumerate(parts)]),
        pix_face=torch.cat([q.pix_face for q in parts]),
        pix_bary=torch.cat([q.pix_bary for q in parts]),
        height=height,
        width=width,
    )


def _cpu_group(verts: torch.Tensor, faces: torch.Tensor) -> int:
    """Batch items per group: about _GROUP_TRIANGLES triangles on the CPU, all on a GPU."""
    if verts.device.type != "cpu":
        return verts.shape[0]
    return max(1, _GROUP_TRIANGLES // max(faces.shape[0], 1))


def _rasterize(verts, faces, height, width, cull_backfaces, perspective_correct, backend):
    B = verts.shape[0]
    npix = B * height * width
    shape = (B, height, width)
    compiled_pass2 = False
    if backend == "numba":
        face_id, covered, pix, pix_face, corners, xy = _pass1_numba(
            verts, faces, height, width, cull_backfaces, perspective_correct
        )
        if not (torch.is_grad_enabled() and verts.requires_grad) and verts.dtype in (
            torch.float32,
            torch.float64,
        ):
            # no autograd needed: pass 2 in compiled code too (same operations)
            bary, bary_img, depth_img = (
                torch.from_numpy(a)
                for a in _numba_kernel().barycentrics(
                    verts.detach().reshape(-1, 3).contiguous().numpy(),
                    corners.numpy(),
                    xy.numpy(),
                    bool(perspective_correct),
                    pix.numpy(),
                    npix,
                    torch.get_num_threads(),
                )
            )
            compiled_pass2 = True
        else:
            px, py = xy.to(verts.dtype).unbind(0)  # no copy unless verts are half precision
    else:
        keys = _BACKENDS[backend](verts, faces, height, width, cull_backfaces, perspective_correct)
        covered = keys != _INT64_MAX
        b, i, j = torch.nonzero(covered.view(shape)).T  # (3, N): batch, row, column
        pix = (b * height + i) * width + j
        pix_face = keys.index_select(0, pix) & 0xFFFFFFFF
        face_id = torch.full((npix,), -1, dtype=torch.int64, device=verts.device)
        face_id.index_copy_(0, pix, pix_face)
        bV = b * verts.shape[1]
        ft = faces.T.contiguous()
        corners = torch.stack([ft[k].index_select(0, pix_face) + bV for k in range(3)])
        px, py = j.to(verts.dtype), i.to(verts.dtype)
    if not compiled_pass2:
        bary, depth = _pass2(verts, corners, px, py, perspective_correct)
        bary_img = verts.new_zeros(npix, 3).index_put((pix,), bary)
        depth_img = verts.new_zeros(npix).index_put((pix,), depth)
    return Fragments(
        face_id=face_id.view(shape),
        bary=bary_img.view(*shape, 3),
        depth=depth_img.view(shape),
        mask=covered.view(shape),
        pix=pix,
        pix_face=pix_face,
        pix_bary=bary,
        height=height,
        width=width,
    )


def _pass1_numba(verts, faces, height, width, cull_backfaces, perspective_correct):
    """Compiled pass 1 on the CPU: face ids, mask and the sparse view of covered pixels."""
    kern, v = _numba_inputs(verts)
    out = kern.rasterize_ids(
        v.contiguous().numpy(),
        faces.contiguous().numpy(),
        height,
        width,
        bool(cull_backfaces),
        bool(perspective_correct),
        torch.get_num_threads(),
        v.numpy().dtype,
    )
    return tuple(torch.from_numpy(a) for a in out)


def _pass2(verts, corners, px, py, perspective_correct):
    """Pass 2 (:func:`_barycentrics`), on the CPU in chunks of at most _PASS2_CHUNK pixels:
    each chunk stays in cache and below torch's intra-op parallel grain size (torch's
    OpenMP threads made this pass 5-10x slower, not faster, on a busy 2-core machine)."""
    n = px.numel()
    vt = verts.permute(2, 0, 1).reshape(3, -1)  # (3, B*V)
    if verts.device.type != "cpu" or n <= _PASS2_CHUNK:
        return _barycentrics(vt, corners, px, py, perspective_correct)
    c = _PASS2_CHUNK
    parts = [
        _barycentrics(vt, corners[:, i : i + c], px[i : i + c], py[i : i + c], perspective_correct)
        for i in range(0, n, c)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# ----------------------------------------------------------------------------- interpolation
def interpolate(
    attrs: torch.Tensor,
    frags: Fragments,
    faces: torch.Tensor,
    *,
    background: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Interpolate vertex attributes at the pixel centres ("rasterize, then interpolate").

    ``out[b, i, j] = sum_k bary[b, i, j, k] * attrs[b, faces[face_id[b, i, j], k]]`` on
    covered pixels, ``background`` elsewhere. Differentiable w.r.t. ``attrs`` and, through
    the barycentrics, w.r.t. the rasterized vertex positions (within each triangle; the
    visibility itself is piecewise constant).

    On the CPU without autograd (no gradient needed for ``attrs`` or the barycentrics)
    the covered pixels are filled by a compiled kernel when numba is installed (the same
    products summed in the same order; about 20x faster than the torch path).

    Args:
        attrs: (B, A, C), (1, A, C) or (A, C) per-vertex attributes (colors, normals, UVs,
            positions); one row is shared by the whole batch.
        frags: output of :func:`rasterize` (batch B, image H x W).
        faces: (F, 3) indices into ``attrs``: the rasterized faces, or a parallel index
            array such as per-corner UV indices (``faces_uv``), which handles UV seams.
        background: finite scalar or (C,) value for uncovered pixels, or a (B, H, W, C)
            image copied to them as given (e.g. the identity pixel grid, for a flow that
            is the identity off the mesh).

    Returns:
        (B, H, W, C) interpolated attributes.
    """
    if not isinstance(attrs, torch.Tensor):
        raise TypeError("attrs must be a torch tensor")
    B, H, W = frags.face_id.shape
    if attrs.dim() == 2:
        attrs = attrs.unsqueeze(0)
    if attrs.dim() != 3 or attrs.shape[0] not in (1, B):
        raise ValueError(
            f"attrs must have shape (B={B}, A, C), (1, A, C) or (A, C), got {tuple(attrs.shape)}"
        )
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    faces = faces.to(device=attrs.device, dtype=torch.int64)
    if frags.pix_face.numel() and int(frags.pix_face.max()) >= faces.shape[0]:
        raise ValueError("faces has fewer rows than the rasterized mesh")
    if faces.numel() and int(faces.max()) >= attrs.shape[1]:
        raise ValueError(f"faces index attributes out of range ({attrs.shape[1]} rows)")
    C = attrs.shape[2]
    ok = _finite_rows(attrs)
    if not bool(ok.all()):
        b, a = (int(i) for i in (~torch.as_tensor(ok)).nonzero()[0])
        raise ValueError(f"attrs contains NaN or inf at [{b}, {a}]")
    bg = torch.as_tensor(background, dtype=attrs.dtype, device=attrs.device)
    if bg.dim() == 4:  # an image is copied as given
        if tuple(bg.shape) != (B, H, W, C):
            raise ValueError(
                f"a background image must have shape ({B}, {H}, {W}, {C}), got {tuple(bg.shape)}"
            )
    elif bg.dim() > 1 or (bg.dim() == 1 and bg.shape[0] not in (1, C)):
        raise ValueError(f"background must be a scalar, have shape ({C},) or ({B}, {H}, {W}, {C})")
    elif not bool(torch.isfinite(bg).all()):
        raise ValueError(f"background must be finite, got {background}")
    out = attrs.new_empty(B * H * W, C)
    out.view(B, H, W, C).copy_(bg.expand(B, H, W, C))
    bary = frags.pix_bary.to(attrs.dtype)
    kern = _numba_kernel() if attrs.device.type == "cpu" else None
    grad = torch.is_grad_enabled() and (attrs.requires_grad or bary.requires_grad)
    if kern is not None and not grad and attrs.dtype in (torch.float32, torch.float64):
        kern.interpolate(
            attrs.detach().contiguous().numpy(),
            faces.contiguous().numpy(),
            frags.pix.numpy(),
            frags.pix_face.numpy(),
            bary.detach().contiguous().numpy(),
            H * W,
            out.numpy(),
            torch.get_num_threads(),
        )
        return out.view(B, H, W, C)
    attrs = attrs.expand(B, -1, -1)
    b = torch.div(frags.pix, H * W, rounding_mode="floor")
    vals = attrs[b[:, None], faces[frags.pix_face]]  # (N, 3, C)
    out_pix = (bary.unsqueeze(-1) * vals).sum(1)
    out = out.index_put((frags.pix,), out_pix)
    return out.view(B, H, W, C)


def face_normals(
    verts: torch.Tensor, faces: torch.Tensor, *, normalize: bool = True
) -> torch.Tensor:
    """Right-hand face normals ``(v1 - v0) x (v2 - v0)``: (B, V, 3), (F, 3) -> (B, F, 3);
    unit length (``normalize=True``, the default) or twice the triangle area (``False``)."""
    verts, faces = _check_mesh(verts, faces)
    tv = verts[:, faces]
    n = torch.cross(tv[:, :, 1] - tv[:, :, 0], tv[:, :, 2] - tv[:, :, 0], dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12) if normalize else n


def vertex_normals(
    verts: torch.Tensor, faces: torch.Tensor, *, eps: float = 1e-12
) -> torch.Tensor:
    """Area-weighted unit vertex normals: (B, V, 3), (F, 3) -> (B, V, 3).

    The sum of the incident faces' right-hand cross products (length = twice the area),
    divided by its length clamped at ``eps``: vertices used by no face get a zero vector.
    The one implementation (:meth:`facegeo.morphable.MorphableModel.vertex_normals` calls it)."""
    verts, faces = _check_mesh(verts, faces)
    fn = face_normals(verts, faces, normalize=False)  # length = 2 * area
    B, V = verts.shape[:2]
    vn = verts.new_zeros(B, V, 3)
    for k in range(3):
        vn = vn.index_add(1, faces[:, k], fn)
    return torch.nn.functional.normalize(vn, dim=-1, eps=eps)


def shade_lambert(
    verts: torch.Tensor,
    faces: torch.Tensor,
    frags: Fragments,
    *,
    colors: torch.Tensor | None = None,
    light_dir: tuple[float, float, float] | torch.Tensor = (0.0, 0.0, -1.0),
    ambient: float = 0.3,
    diffuse: float = 0.7,
    background: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Two-sided Lambertian shading of a rasterized mesh (for visualisation).

    ``rgb = colors * (ambient + diffuse * max(0, n . l))`` with the interpolated unit vertex
    normal ``n`` turned towards the camera (n_z <= 0) and ``l`` the unit direction *towards*
    the light in image space (x right, y down, z away from the camera; the default
    (0, 0, -1) is a light at the camera).

    Args:
        verts: (B, V, 3) image-space vertices that were rasterized.
        faces: (F, 3) triangles.
        frags: :func:`rasterize` output for ``verts``/``faces``.
        colors: (B, V, 3) or (V, 3) vertex colors in [0, 1]; default light grey.
        light_dir: (3,) or (B, 3) direction towards the light.
        ambient, diffuse: weights.
        background: scalar, (3,) or (B, 3, H, W) image used where nothing is covered.

    Returns:
        (B, 3, H, W) image in [0, 1] (not clamped if the weights sum above 1).
    """
    B, H, W = frags.face_id.shape
    vn = vertex_normals(verts, faces)
    n = torch.nn.functional.normalize(interpolate(vn, frags, faces), dim=-1, eps=1e-12)
    n = torch.where(n[..., 2:3] > 0, -n, n)
    light = torch.as_tensor(light_dir, dtype=n.dtype, device=n.device).reshape(-1, 3)
    light = torch.nn.functional.normalize(light, dim=-1).view(-1, 1, 1, 3)
    shade = ambient + diffuse * (n * light).sum(-1, keepdim=True).clamp(min=0)
    if colors is None:
        colors = verts.new_full((verts.shape[1], 3), 0.85)
    rgb = interpolate(colors, frags, faces) * shade  # (B, H, W, 3)
    rgb = rgb.permute(0, 3, 1, 2)
    m = frags.mask.unsqueeze(1)
    bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
    if bg.dim() == 1:
        bg = bg.view(1, -1, 1, 1)
    return torch.where(m, rgb, bg.expand_as(rgb) if bg.dim() == 4 else bg)
