"""Compiled CPU z-buffer (pass 1 of :func:`facegeo.raster.rasterize`) with numba.

A classic bounding-box rasterizer: per triangle, the pixel-centre edge functions and the
depth key are evaluated at every pixel of its (image-clamped) bounding box, and the packed
key ``float32_bits(depth key) << 32 | face`` is z-tested against the buffer (smaller key
wins: the nearer surface, ties to the smaller face index).

The arithmetic reproduces the torch path (``core._zbuffer_torch``) operation by operation,
in the dtype of the vertices (float32 or float64), so both give the same face ids:

* corners relative to the box origin ``(xmin, ymin) = (max(ceil(min x), 0),
  max(ceil(min y), 0))``; edge function opposite corner i: ``c_i + a_i dx + b_i dy``
  (sign-normalised so inside means ``>= 0``; a pixel centre on an edge is covered);
* depth key ``zk = z`` (orthographic) or ``-1/z`` (pinhole), shifted per image by
  ``1 - min(zk)`` over that image's rasterizable triangles so that it is >= 1 and its
  float32 bit pattern is ordered like its value;
* each plane is evaluated as ``fma(b, dy, fma(a, dx, c))``: exactly what the torch path's
  ``matmul`` of the (c, a, b) planes with the (1, dx, dy) basis computes on an FMA CPU.

Parallel work: the batch is split into (image, band of rows) tasks, dealt round-robin to
``nthreads`` Python threads that run the GIL-free (``nogil``) kernels; every task owns its
rows, so no two threads ever write the same pixel (no atomics needed). Each task walks all
triangles of its image and skips those whose box does not meet its band. Plain threads
rather than ``parallel=True``/``prange``: numba's OpenMP layer keeps its workers spinning
after a parallel region, which made the following torch operations (pass 2) up to 10x
slower on a busy 2-core machine; idle pool threads block instead.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_INT64_MAX = np.iinfo(np.int64).max
_BG_KEY = 0x7F800000 << 32


@intrinsic
def _fma(typingctx, a, b, c):
    """Fused multiply-add ``a * b + c`` with one rounding (LLVM ``llvm.fma``)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@intrinsic
def _like(typingctx, like, x):
    """``x`` converted to the type of ``like``."""
    sig = like(like, x)

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[1], signature.args[1], signature.args[0])

    return sig, codegen


@intrinsic
def _f32_bits(typingctx, x):
    """The IEEE bit pattern of a float32 as an int32."""
    if x != types.float32:
        return None
    sig = types.int32(x)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@njit(cache=True, inline="always")
def _box(x0, x1, x2, lim):
    """Pixel-centre range [lo, hi] (floats) of a coordinate span, clamped to [0, lim - 1]."""
    lo = np.ceil(min(min(x0, x1), x2))
    hi = np.floor(max(max(x0, x1), x2))
    zero = _like(lo, 0.0)
    if lo < zero:
        lo = zero
    top = _like(lo, lim - 1)
    if hi > top:
        hi = top
    return lo, hi


@njit(cache=True, nogil=True)
def _valid_and_rows(v, faces, height, width, cull, persp, rows, zmin, start, step):
    """Per (image, face): rasterizable? -> ``rows[b, f] = (ymin, ymax)`` (empty: ymin > ymax).

    Also ``zmin[b]``: the smallest depth key of image b's rasterizable triangles. Images
    ``start, start + step, ...`` only."""
    B = v.shape[0]
    F = faces.shape[0]
    for b in range(start, B, step):
        zm = np.inf
        for f in range(F):
            rows[b, f, 0] = 1
            rows[b, f, 1] = 0
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            x0, y0, z0 = v[b, i0, 0], v[b, i0, 1], v[b, i0, 2]
            x1, y1, z1 = v[b, i1, 0], v[b, i1, 1], v[b, i1, 2]
            x2, y2, z2 = v[b, i2, 0], v[b, i2, 1], v[b, i2, 2]
            area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
            if cull:
                if not area2 < 0:
                    continue
            elif not area2 != 0:
                continue
            if not np.isfinite(area2 + z0 + z1 + z2):
                continue
            if persp and not min(min(z0, z1), z2) > 0:
                continue
            xlo, xhi = _box(x0, x1, x2, width)
            ylo, yhi = _box(y0, y1, y2, height)
            if not (xhi - xlo >= 0 and yhi - ylo >= 0):
                continue
            rows[b, f, 0] = int(ylo)
            rows[b, f, 1] = int(yhi)
            if persp:
                one = _like(z0, 1.0)
                k0, k1, k2 = -(one / z0), -(one / z1), -(one / z2)
            else:
                k0, k1, k2 = z0, z1, z2
            zm = min(zm, min(min(k0, k1), k2))
        zmin[b] = zm


@njit(cache=True, nogil=True)
def _raster_tasks(
    v, faces, height, width, persp, rows, zmin, nbands, out, counts, ids, start, step
):
    """Z-buffer: ``out`` (B, H, W) int64 packed keys, INT64_MAX on background (``ids``:
    the face ids, -1 on background); ``counts[t]``: covered pixels of task t.

    Task t = (image t // nbands, band of rows t % nbands); tasks ``start, start + step,
    ...`` only, so that threads with different ``start`` never write the same pixel."""
    B = v.shape[0]
    F = faces.shape[0]
    band_h = (height + nbands - 1) // nbands
    ntasks = B * nbands
    for t in range(start, ntasks, step):
        b = t // nbands
        k = t - b * nbands
        r0 = k * band_h
        r1 = min(r0 + band_h, height) - 1  # inclusive
        for i in range(r0, r1 + 1):
            for j in range(width):
                out[b, i, j] = _INT64_MAX
        if r0 > r1:
            continue
        one = _like(v[b, 0, 0], 1.0)  # 1 in the vertex dtype
        zshift = one - zmin[b]
        for f in range(F):
            ya = rows[b, f, 0]
            yb = rows[b, f, 1]
            if ya > yb or yb < r0 or ya > r1:
                continue
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            x0, y0, z0 = v[b, i0, 0], v[b, i0, 1], v[b, i0, 2]
            x1, y1, z1 = v[b, i1, 0], v[b, i1, 1], v[b, i1, 2]
            x2, y2, z2 = v[b, i2, 0], v[b, i2, 1], v[b, i2, 2]
            xmin, xmax = _box(x0, x1, x2, width)
            ymin, _ = _box(y0, y1, y2, height)
            rx0, rx1, rx2 = x0 - xmin, x1 - xmin, x2 - xmin
            ry0, ry1, ry2 = y0 - ymin, y1 - ymin, y2 - ymin
            ex0, ey0 = rx2 - rx1, ry2 - ry1
            ex1, ey1 = rx0 - rx2, ry0 - ry2
            ex2, ey2 = rx1 - rx0, ry1 - ry0
            c0 = ey0 * rx1 - ex0 * ry1
            c1 = ey1 * rx2 - ex1 * ry2
            c2 = ey2 * rx0 - ex2 * ry0
            area = c0 + c1 + c2
            sgn = -one if area < 0 else one
            if persp:
                k0, k1, k2 = -(one / z0), -(one / z1), -(one / z2)
            else:
                k0, k1, k2 = z0, z1, z2
            zs0 = (k0 + zshift) / area
            zs1 = (k1 + zshift) / area
            zs2 = (k2 + zshift) / area
            # planes (value at the box origin, d/dx, d/dy)
            p0c, p0a, p0b = c0 * sgn, -ey0 * sgn, ex0 * sgn
            p1c, p1a, p1b = c1 * sgn, -ey1 * sgn, ex1 * sgn
            p2c, p2a, p2b = c2 * sgn, -ey2 * sgn, ex2 * sgn
            dc = c0 * zs0 + c1 * zs1 + c2 * zs2
            da = -(ey0 * zs0 + ey1 * zs1 + ey2 * zs2)
            db = ex0 * zs0 + ex1 * zs1 + ex2 * zs2
            ix0 = int(xmin)
            ix1 = int(xmax)
            iy0 = int(ymin)
            lo = max(ya, r0)
            hi = min(yb, r1)
            key_f = np.int64(f)
            for i in range(lo, hi + 1):
                fy = _like(xmin, i - iy0)
                # fma(b, dy, fma(a, dx, c)): the order of the matmul, so no row hoisting
                for j in range(ix0, ix1 + 1):
                    fx = _like(xmin, j - ix0)
                    w0 = _fma(p0b, fy, _fma(p0a, fx, p0c))
                    if w0 < 0:
                        continue
                    w1 = _fma(p1b, fy, _fma(p1a, fx, p1c))
                    if w1 < 0:
                        continue
                    w2 = _fma(p2b, fy, _fma(p2a, fx, p2c))
                    if w2 < 0:
                        continue
                    zc = np.float32(_fma(db, fy, _fma(da, fx, dc)))
                    bits = np.int64(_f32_bits(zc))
                    key = (bits << 32) + key_f
                    if key < out[b, i, j]:
                        out[b, i, j] = key
        n = 0
        for i in range(r0, r1 + 1):
            for j in range(width):
                key = out[b, i, j]
                if key >= _BG_KEY:
                    out[b, i, j] = _INT64_MAX
                    if ids:
                        out[b, i, j] = -1
                else:
                    n += 1
                    if ids:
                        out[b, i, j] = key & 0xFFFFFFFF
        counts[t] = n


@njit(cache=True, nogil=True)
def _gather_tasks(
    fid, faces, nverts, nbands, offsets, mask, pix, pix_face, corners, xy, start, step
):
    """Sparse view of the covered pixels of tasks ``start, start + step, ...``: task t
    writes its pixels (in row-major order) at ``offsets[t]`` of the output vectors."""
    B, height, width = fid.shape
    band_h = (height + nbands - 1) // nbands
    for t in range(start, B * nbands, step):
        b = t // nbands
        k = t - b * nbands
        r0 = k * band_h
        r1 = min(r0 + band_h, height)
        n = offsets[t]
        for i in range(r0, r1):
            for j in range(width):
                f = fid[b, i, j]
                mask[b, i, j] = f >= 0
                if f >= 0:
                    pix[n] = (b * height + i) * width + j
                    pix_face[n] = f
                    for c in range(3):
                        corners[c, n] = faces[f, c] + b * nverts
                    xy[0, n] = j
                    xy[1, n] = i
                    n += 1


def _plan(B: int, height: int, nthreads: int) -> tuple[int, int]:
    """(threads, bands per image): bands of >= 8 rows, ~4 tasks per thread for small B."""
    nt = max(1, int(nthreads))
    nbands = max(1, min(-(-4 * nt // B), height // 8)) if nt > 1 else 1
    return min(nt, B * nbands), nbands


def _run(nt: int, fn, *args) -> None:
    """``fn(*args, k, nt)`` for k < nt, on the pool threads when nt > 1."""
    if nt == 1:
        fn(*args, 0, 1)
        return
    pool = _pool(nt)
    for job in [pool.submit(fn, *args, k, nt) for k in range(nt)]:
        job.result()


def zbuffer(
    v: np.ndarray,
    faces: np.ndarray,
    height: int,
    width: int,
    cull: bool,
    persp: bool,
    nthreads: int,
    ids: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Z-buffer of a batch on ``nthreads`` threads (GIL-free kernels).

    Args: (B, V, 3) float32/float64 vertices, (F, 3) int64 faces, image size, culling,
    pinhole depth key, threads; ``ids``: return face ids instead of packed keys.

    Returns: (B, H, W) int64 packed keys ``depth_bits << 32 | face`` (INT64_MAX on
    background), or face ids (-1 on background) when ``ids``; the per-task covered-pixel
    counts; bands per image."""
    B, F = v.shape[0], faces.shape[0]
    rows = np.empty((B, F, 2), np.int32)
    zmin = np.empty(B, v.dtype)
    out = np.empty((B, height, width), np.int64)
    nt, nbands = _plan(B, height, nthreads)
    counts = np.zeros(B * nbands, np.int64)
    # task t -> thread t % nt: every thread gets bands from the whole image
    _run(min(nt, B), _valid_and_rows, v, faces, height, width, cull, persp, rows, zmin)
    _run(nt, _raster_tasks, v, faces, height, width, persp, rows, zmin, nbands, out, counts, ids)
    return out, counts, nbands


def rasterize_ids(v, faces, height, width, cull, persp, nthreads, xy_dtype):
    """Face ids and the sparse view of the covered pixels, all in compiled code.

    Returns ``face_id`` (B, H, W) int64 (-1 on background), ``mask`` (B, H, W) bool and
    for the N covered pixels in row-major order: ``pix`` (N,) (flat ``b*H*W + i*W + j``),
    ``pix_face`` (N,), ``corners`` (3, N) int64 (the triangle's corners as rows of the
    (B*V, 3) stacked vertices: ``faces[pix_face, k] + b * V``) and ``xy`` (2, N) the pixel
    centre (j, i) in ``xy_dtype``."""
    fid, counts, nbands = zbuffer(v, faces, height, width, cull, persp, nthreads, ids=True)
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    n = int(offsets[-1])
    mask = np.empty(fid.shape, np.bool_)
    pix, pix_face = np.empty(n, np.int64), np.empty(n, np.int64)
    corners = np.empty((3, n), np.int64)
    xy = np.empty((2, n), xy_dtype)
    nt, _ = _plan(fid.shape[0], height, nthreads)
    _run(
        nt, _gather_tasks, fid, faces, v.shape[1], nbands, offsets, mask, pix, pix_face, corners, xy
    )
    return fid, mask, pix, pix_face, corners, xy


_POOLS: dict = {}
_POOL_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    """A shared pool of ``n`` worker threads (blocked, not spinning, while idle); a new one
    after a fork (the parent's worker threads do not exist in the child)."""
    key = (os.getpid(), n)
    with _POOL_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(n, thread_name_prefix="facegeo-raster")
        return pool


@njit(cache=True, nogil=True)
def _bary_tasks(vflat, corners, xy, persp, pix, pix_bary, bary_img, depth_img, start, step):
    """Pass 2 without autograd, the same operations as ``core._barycentrics`` (in the same
    order and dtype): pixels ``start, start + step, ...`` of the sparse view."""
    one = _like(vflat[0, 0], 1.0)
    for n in range(start, pix.size, step):
        c0, c1, c2 = corners[0, n], corners[1, n], corners[2, n]
        px, py = xy[0, n], xy[1, n]
        x0, y0, z0 = vflat[c0, 0], vflat[c0, 1], vflat[c0, 2]
        x1, y1, z1 = vflat[c1, 0], vflat[c1, 1], vflat[c1, 2]
        x2, y2, z2 = vflat[c2, 0], vflat[c2, 1], vflat[c2, 2]
        rx0, rx1, rx2 = x0 - px, x1 - px, x2 - px
        ry0, ry1, ry2 = y0 - py, y1 - py, y2 - py
        w0 = rx1 * ry2 - rx2 * ry1
        w1 = rx2 * ry0 - rx0 * ry2
        w2 = rx0 * ry1 - rx1 * ry0
        if persp:
            w0, w1, w2 = w0 / z0, w1 / z1, w2 / z2
        inv = one / (w0 + w1 + w2)
        b0, b1, b2 = w0 * inv, w1 * inv, w2 * inv
        if persp:
            area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
            depth = inv * area
        else:
            depth = (w0 * z0 + w1 * z1 + w2 * z2) * inv
        p = pix[n]
        pix_bary[n, 0] = b0
        pix_bary[n, 1] = b1
        pix_bary[n, 2] = b2
        bary_img[p, 0] = b0
        bary_img[p, 1] = b1
        bary_img[p, 2] = b2
        depth_img[p] = depth


def barycentrics(vflat, corners, xy, persp, pix, npix, nthreads):
    """Pass 2 without autograd: ``pix_bary`` (N, 3), dense ``bary`` (npix, 3) and
    ``depth`` (npix,) (zeros on background), in the dtype of ``vflat`` (B*V, 3)."""
    n = pix.size
    pix_bary = np.empty((n, 3), vflat.dtype)
    bary_img = np.zeros((npix, 3), vflat.dtype)
    depth_img = np.zeros(npix, vflat.dtype)
    nt = max(1, min(int(nthreads), n // 4096))
    _run(nt, _bary_tasks, vflat, corners, xy, persp, pix, pix_bary, bary_img, depth_img)
    return pix_bary, bary_img, depth_img


@njit(cache=True, nogil=True)
def _interp_tasks(attrs, faces, pix, pix_face, bary, hw, out, start, step):
    """``out[pix[n]] = sum_k bary[n, k] attrs[b, faces[pix_face[n], k]]`` for the
    ``start``-th of ``step`` contiguous chunks of the sparse view (``b = pix[n] // hw``,
    or 0 when ``attrs`` has one row shared by the batch); the products are summed in the
    torch path's order."""
    shared = attrs.shape[0] == 1
    n_pix = pix.size
    for n in range(n_pix * start // step, n_pix * (start + 1) // step):
        p = pix[n]
        b = 0 if shared else p // hw
        f = pix_face[n]
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        w0, w1, w2 = bary[n, 0], bary[n, 1], bary[n, 2]
        for c in range(attrs.shape[2]):
            out[p, c] = w0 * attrs[b, i0, c] + w1 * attrs[b, i1, c] + w2 * attrs[b, i2, c]


def interpolate(attrs, faces, pix, pix_face, bary, hw, out, nthreads):
    """Attribute interpolation without autograd, in place: ``out`` (npix, C) holds the
    background and gets the covered pixels (see ``core.interpolate``); ``attrs`` (1 or B,
    A, C) and ``bary`` (N, 3) in the dtype of ``out``."""
    nt = max(1, min(int(nthreads), pix.size // 4096))
    _run(nt, _interp_tasks, attrs, faces, pix, pix_face, bary, hw, out)
