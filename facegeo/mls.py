"""Moving-least-squares (MLS) deformation of points and images.

Schaefer, McPhail and Warren, "Image deformation using moving least squares",
SIGGRAPH 2006, in the form used by the paired-feature-point reenactment model
(``pfp_mls``, eqs. 3-5 and 7).

Given control points ``p`` (B, N, 2) and their targets ``q`` (B, N, 2), every query point
``v`` gets its own transform ``f_v(x) = (x - p*) M + q*`` (row vectors, ``x @ M``) that
minimises ``sum_i w_i |f_v(p_i) - q_i|^2`` with ``w_i = 1 / |p_i - v|^(2 alpha)``, where
``p* = sum w_i p_i / sum w_i`` and ``q* = sum w_i q_i / sum w_i``; ``M`` is an arbitrary
2x2 matrix ("affine"), a rotation times a scale ("similarity") or a rotation ("rigid").
The deformed point is ``f_v(v)``.

Implementation notes (see docs/mls.md for the derivation):

* Everything is computed in a frame centred on each query point, ``d_i = p_i - v`` and
  ``delta_i = q_i - p_i``, so the displacement is ``u = delta* - d* K`` with
  ``K = M - I``. The weighted sums that appear there have no catastrophic cancellation
  near a control point (unlike raw moments in image coordinates), so float32 is accurate
  right up to the control points.
* At ``v == p_i`` the weight is infinite. Squared distances are clamped from below at
  ``(rho * scale)^2`` (``scale`` = RMS spread of the control points, ``rho = 1e-6`` for
  ``alpha <= 1.25``); a query point that close to ``p_i`` maps to ``q_i`` up to rounding,
  no NaN appears in values or gradients.
* Affine with (nearly) collinear control points: the weighted covariance ``A`` of the
  control points is singular. ``M`` is then solved from ``(A + lam I) K = C + lam K_sim``,
  i.e. the affine fit is pulled towards the similarity fit in the degenerate direction,
  with ``lam = eps * tr(A) * exp(-r / eps)``, ``r = 4 det(A) / tr(A)^2`` in [0, 1]
  (``eps = affine_eps``, default 1e-3). ``lam`` is negligible (< 1e-7 tr A) unless
  ``r < 0.016``, i.e. unless the weighted control points are nearly on a line.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from facegeo.coords import pixel_grid, pixel_to_normalized

__all__ = [
    "KINDS",
    "MLSTransforms",
    "WeightedMotion",
    "mls_deform",
    "mls_transforms",
    "mls_grid",
    "warp_image",
    "border_points",
    "weighted_motion",
    "apply_motion",
    "weighted_motion_loss",
]

KINDS = ("affine", "similarity", "rigid")
_MIN_POINTS = {"affine": 3, "similarity": 2, "rigid": 2}


class MLSTransforms(NamedTuple):
    """Per-query-point MLS transforms: ``f(x) = (x - p_star) @ M + q_star``.

    p_star: (B, M, 2) weighted centroid of the control points p.
    q_star: (B, M, 2) weighted centroid of the targets q.
    M: (B, M, 2, 2) linear part, acting on row vectors.
    """

    p_star: torch.Tensor
    q_star: torch.Tensor
    M: torch.Tensor


class WeightedMotion(NamedTuple):
    """The weighted motion of the pfp_mls paper (eqs. 3-5) on a grid of positions.

    weights: (B, H, W, N) normalised MLS weights ``w_n / sum_n w_n`` (eq. 4).
    k_d_star: (B, H, W, 2) weighted centroid of the driving points k_d.
    k_s_star: (B, H, W, 2) weighted centroid of the source points k_s.
    M: (B, H, W, 2, 2) closed-form per-position transform (None when ``kind=None``).
    flow: (B, H, W, 2) ``f_x = (x - k_d*) M + k_s*`` (eq. 5; None when ``kind=None``).
    """

    weights: torch.Tensor
    k_d_star: torch.Tensor
    k_s_star: torch.Tensor
    M: torch.Tensor | None
    flow: torch.Tensor | None


# --------------------------------------------------------------------------- validation


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, torch.Tensor) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a Python number, got {type(alpha).__name__}")
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number, got {alpha}")
    return float(alpha)


def _check_points(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {t.dtype}")
    if t.dim() != 3 or t.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, N, 2), got {tuple(t.shape)}")


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _rho(alpha: float) -> float:
    # relative clamp radius: keeps the largest weight ratio below ~1e15 for any alpha
    return 10.0 ** (-min(6.0, 7.5 / alpha))


def _validate_controls(p: torch.Tensor, q: torch.Tensor, kind: str | None, alpha: float,
                       check_values: bool, names: tuple[str, str] = ("p", "q")) -> None:
    np_, nq = names
    _check_points(np_, p)
    _check_points(nq, q)
    if p.shape != q.shape:
        raise ValueError(f"{np_} and {nq} must have the same shape, got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")
    if p.dtype != q.dtype or p.device != q.device:
        raise TypeError(f"{np_} and {nq} must share dtype and device, got {p.dtype}/{p.device} "
                        f"and {q.dtype}/{q.device}")
    n = p.shape[1]
    need = _MIN_POINTS[kind] if kind is not None else 1
    if n < need:
        raise ValueError(f"{kind or 'MLS'} needs at least {need} control points, got {n}")
    if p.shape[0] == 0:
        raise ValueError("batch size must be at least 1")
    if not check_values:
        return
    _check_finite(np_, p)
    _check_finite(nq, q)
    if n >= 2:
        with torch.no_grad():
            scale = _scale(p)  # (B,)
            dist = torch.cdist(p, p)  # (B, N, N)
            eye = torch.eye(n, dtype=torch.bool, device=p.device)
            close = (dist <= _rho(alpha) * scale[:, None, None]) & ~eye
            if bool(close.any()):
                b, i, j = (int(x) for x in close.nonzero()[0])
                raise ValueError(
                    f"duplicate control points: {np_}[{b}, {i}] and {np_}[{b}, {j}] coincide "
                    f"({p[b, i].tolist()}); remove one of them")


def _check_query(v: torch.Tensor, p: torch.Tensor, check_values: bool) -> torch.Tensor:
    _check_points("v", v)
    if v.dtype != p.dtype or v.device != p.device:
        raise TypeError(f"v must have the dtype and device of p ({p.dtype}/{p.device}), "
                        f"got {v.dtype}/{v.device}")
    if v.shape[0] != p.shape[0]:
        if v.shape[0] != 1:
            raise ValueError(f"v has batch size {v.shape[0]} but p has {p.shape[0]} "
                             "(v may also have batch size 1)")
        v = v.expand(p.shape[0], -1, -1)
    if check_values:
        _check_finite("v", v)
    return v


def _scale(p: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) -> (B,) RMS distance of the points to their mean.

    Floored at 1e-8 so that fully collapsed points (possible with ``validate=False``, e.g.
    learned keypoints early in training) still give finite weights instead of NaN.
    """
    c = p - p.mean(dim=1, keepdim=True)
    return c.square().sum(-1).mean(-1).sqrt().clamp_min(1e-8)


# --------------------------------------------------------------------------- core


def _chunk_size(b: int, n: int, m: int, device: torch.device) -> int:
    target = (1 << 17) if device.type == "cpu" else (1 << 25)
    return max(1, min(m, target // max(1, b * n)))


def _moments(v: torch.Tensor, p: torch.Tensor, dmat_t: torch.Tensor, tol2: torch.Tensor,
             inv_s2: torch.Tensor, alpha: float, second: bool):
    """Weighted sums for one chunk of query points.

    v = (vx, vy) each (B, Mc), p (B, N, 2) contiguous,
    dmat_t (B, 1, 3, N) = [1, delta_x, delta_y]^T, tol2 / inv_s2 (B, 1, 1).
    The pairwise tensors are laid out (B, N, Mc) so that sums over the
    control points are contiguous row reductions / one small GEMM.

    Returns s (B, 3, 3, Mc) with s[:, a, c] = sum_n w_n g_a(d_n) h_c(delta_n) where
    g = (1, d_x, d_y) and h = (1, delta_x, delta_y), the second moments
    (sxx, sxy, syy) (B, Mc) or None, and swr (B, Mc) = sum_n w_n |d_n|^2.
    """
    b, mc = v[0].shape
    n = p.shape[1]
    px = p[..., 0].unsqueeze(-1)  # (B, N, 1)
    py = p[..., 1].unsqueeze(-1)
    vx = v[0].unsqueeze(1)  # (B, 1, Mc)
    vy = v[1].unsqueeze(1)
    dx = px - vx  # (B, N, Mc)
    dy = py - vy
    grad = torch.is_grad_enabled() and (v[0].requires_grad or v[1].requires_grad
                                        or p.requires_grad or dmat_t.requires_grad)
    if grad:
        r2 = torch.maximum(dx * dx + dy * dy, tol2)
        w = r2.reciprocal() if alpha == 1.0 else (r2 * inv_s2).pow(-alpha)
        g = torch.stack([w, w * dx, w * dy], 1)  # (B, 3, N, Mc)
    else:
        r2 = torch.mul(dx, dx)
        r2.addcmul_(dy, dy)
        torch.maximum(r2, tol2, out=r2)
        g = torch.empty((b, 3, n, mc), dtype=p.dtype, device=p.device)
        w = g[:, 0]
        if alpha == 1.0:
            torch.reciprocal(r2, out=w)
        else:
            torch.mul(r2, inv_s2, out=w)
            w.pow_(-alpha)
        torch.mul(w, dx, out=g[:, 1])
        torch.mul(w, dy, out=g[:, 2])
    s = torch.matmul(dmat_t, g)  # (B, 3, 3, Mc)
    if second:
        if grad:
            sxx = (g[:, 1] * dx).sum(1)
            sxy = (g[:, 1] * dy).sum(1)
        else:  # reuse the r2 buffer, it is no longer needed
            sxx = torch.mul(g[:, 1], dx, out=r2).sum(1)
            sxy = torch.mul(g[:, 1], dy, out=r2).sum(1)
        if alpha == 1.0:
            # sum w (dx^2 + dy^2) = n, up to clamped (hit) distances where d* ~ 0
            swr = torch.full_like(sxx, float(n))
            syy = swr - sxx
        else:
            syy = (g[:, 2] * dy).sum(1)
            swr = sxx + syy
        return s, (sxx, sxy, syy), swr
    if alpha == 1.0:
        # w |d|^2 = 1 except for clamped (hit) distances, where d* ~ 0 makes it irrelevant
        swr = torch.full_like(s[:, 0, 0], float(n))
    else:
        swr = (g[:, 0] * r2).sum(1)
    return s, None, swr


def _solve(s, second, swr, kind: str, affine_eps: float, want_m: bool):
    """Per-point closed forms from the weighted sums. Returns (u, d_star, delta_star, K)."""
    inv0 = s[:, 0, 0].reciprocal()
    sdx, sdy = s[:, 1, 0], s[:, 2, 0]
    ds_x, ds_y = sdx * inv0, sdy * inv0  # d* = p* - v
    dl_x, dl_y = s[:, 0, 1] * inv0, s[:, 0, 2] * inv0  # delta* = q* - p*
    # C_ab = sum w p^_a delta^_b
    cxx = s[:, 1, 1] - sdx * dl_x
    cxy = s[:, 1, 2] - sdx * dl_y
    cyx = s[:, 2, 1] - sdy * dl_x
    cyy = s[:, 2, 2] - sdy * dl_y
    mu = swr - (sdx * ds_x + sdy * ds_y)  # sum w |p^|^2
    if second is not None:
        sxx, sxy, syy = second
        second = (sxx - sdx * ds_x, sxy - sdx * ds_y, syy - sdy * ds_y)
    return _closed_form((ds_x, ds_y), (dl_x, dl_y), (cxx, cxy, cyx, cyy), mu, second, kind,
                        affine_eps, want_m)


def _closed_form(ds, dl, c, mu, a, kind: str, affine_eps: float, want_m: bool):
    """Closed forms from the centred sums: d* = p* - v, delta* = q* - p*,
    C_ab = sum w p^_a delta_b, mu = sum w |p^|^2 and (affine) A = sum w p^ p^T as
    (axx, axy, ayy). The weights may carry any per-query factor (it cancels)."""
    ds_x, ds_y = ds
    dl_x, dl_y = dl
    cxx, cxy, cyx, cyy = c
    g_re = (cxx + cyy) / mu
    g_im = (cxy - cyx) / mu
    if kind == "similarity":
        kxx, kxy, kyx, kyy = g_re, g_im, -g_im, g_re
    elif kind == "rigid":
        c_re = 1.0 + g_re
        norm = (c_re * c_re + g_im * g_im).clamp_min(1e-30).sqrt()
        r_re, r_im = c_re / norm, g_im / norm
        kxx, kxy, kyx, kyy = r_re - 1.0, r_im, -r_im, r_re - 1.0
    else:
        axx, axy, ayy = a
        tr = axx + ayy
        det = axx * ayy - axy * axy
        if affine_eps > 0:
            r = 4.0 * det / (tr * tr)
            lam = affine_eps * tr * torch.exp(-r / affine_eps)
            axx = axx + lam
            ayy = ayy + lam
            det = axx * ayy - axy * axy
            # right-hand side C + lam K_sim
            cxx = cxx + lam * g_re
            cxy = cxy + lam * g_im
            cyx = cyx - lam * g_im
            cyy = cyy + lam * g_re
        idet = det.reciprocal()
        # K = A^-1 C, A^-1 = [[ayy, -axy], [-axy, axx]] / det
        kxx = (ayy * cxx - axy * cyx) * idet
        kxy = (ayy * cxy - axy * cyy) * idet
        kyx = (axx * cyx - axy * cxx) * idet
        kyy = (axx * cyy - axy * cxy) * idet
    # u = delta* - d* K   (row vector d*)
    ux = dl_x - (ds_x * kxx + ds_y * kyx)
    uy = dl_y - (ds_x * kxy + ds_y * kyy)
    u = torch.stack([ux, uy], dim=-1)
    k = None
    if want_m:
        k = torch.stack([torch.stack([kxx, kxy], -1), torch.stack([kyx, kyy], -1)], -2)
    return u, torch.stack([ds_x, ds_y], -1), torch.stack([dl_x, dl_y], -1), k


def _centred_moments(v, p, dmat_t, tol2: torch.Tensor, alpha: float, second: bool):
    """Centred weighted sums for one chunk of query points (alpha > 1).

    For alpha > 1 one weight dominates by many orders of magnitude near a control point,
    and far from tightly clustered control points every weight underflows in float32
    (``|d|^(-2 alpha)``). Here the weights are ``(r2_min / r2)^alpha`` with r2_min the
    smallest (clamped) squared distance of each query point (the largest weight is 1, so
    their sum never underflows and never overflows; the per-query factor cancels in every
    normalised quantity, and r2_min is a constant for autograd). The second moments are
    summed around the weighted centroid (two passes) instead of being recovered from raw
    moments, which cancels catastrophically when the weights are very unequal.

    v = (vx, vy) each (B, Mc), p (B, N, 2), dmat_t (B, 1, 3, N), tol2 (B, 1, 1).
    Returns the arguments of :func:`_closed_form`: d*, delta*, C, mu, A (or None).
    """
    px = p[..., 0].unsqueeze(-1)  # (B, N, 1)
    py = p[..., 1].unsqueeze(-1)
    dx = px - v[0].unsqueeze(1)  # (B, N, Mc)
    dy = py - v[1].unsqueeze(1)
    r2 = torch.maximum(dx * dx + dy * dy, tol2)
    with torch.no_grad():
        r2min, near = r2.min(1)  # (B, Mc): the nearest control point of each query
    w = (r2min.unsqueeze(1) / r2).pow(alpha)  # (B, N, Mc) in (0, 1], 1 at the nearest point
    # sums around the nearest control point p_k (its own term is exactly 0 there, so p* - p_k
    # keeps its precision even when the other weights are ~1e-10 of w_k)
    pkx, pky = p[..., 0].gather(1, near), p[..., 1].gather(1, near)  # (B, Mc)
    ex, ey = px - pkx.unsqueeze(1), py - pky.unsqueeze(1)  # p - p_k
    s = torch.matmul(dmat_t[:, 0], w)  # (B, 3, Mc): sum w, sum w delta_x, sum w delta_y
    inv0 = s[:, 0].reciprocal()
    es_x = (w * ex).sum(1) * inv0  # p* - p_k
    es_y = (w * ey).sum(1) * inv0
    dl_x, dl_y = s[:, 1] * inv0, s[:, 2] * inv0
    hx = ex - es_x.unsqueeze(1)  # p^ = p - p*
    hy = ey - es_y.unsqueeze(1)
    g = torch.stack([w * hx, w * hy], 1)  # (B, 2, N, Mc)
    c = torch.matmul(dmat_t[:, :, 1:], g)  # (B, 2, 2, Mc): C_ab = sum w p^_a delta_b
    axx = (g[:, 0] * hx).sum(1)
    ayy = (g[:, 1] * hy).sum(1)
    a = (axx, (g[:, 0] * hy).sum(1), ayy) if second else None
    ds = ((pkx - v[0]) + es_x, (pky - v[1]) + es_y)  # d* = p* - v
    return ds, (dl_x, dl_y), (c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1]), axx + ayy, a


def _fused_moments(vx, vy, px, py, dlx, dly, tol2: float, alpha: float, second: bool):
    """All weighted sums in one expression, for ``torch.compile`` to fuse into a single loop.

    Coordinates are pre-divided by the control-point scale, so ``tol2`` is a constant.
    vx, vy (B, 1, M); px, py, dlx, dly (B, N, 1).
    Returns (B, 13, M): the 9 entries of :func:`_moments`' ``s`` (a-major), then
    sxx, sxy, syy (zeros unless ``second``) and sum w |d|^2.
    """
    dx = px - vx
    dy = py - vy
    r2 = torch.clamp_min(dx * dx + dy * dy, tol2)
    w = 1.0 / r2 if alpha == 1.0 else r2 ** (-alpha)
    wdx = w * dx
    wdy = w * dy
    terms = [w, w * dlx, w * dly, wdx, wdx * dlx, wdx * dly, wdy, wdy * dlx, wdy * dly]
    if second:
        terms += [wdx * dx, wdx * dy, wdy * dy]
    out = torch.stack([t.sum(-2) for t in terms], 1)
    zeros = [] if second else [torch.zeros_like(out[:, :3])]
    swr = torch.ones_like(out[:, :1]) * px.shape[1] if alpha == 1.0 else \
        (w * r2).sum(-2).unsqueeze(1)
    return torch.cat([out, *zeros, swr], 1)


_COMPILED: dict = {}


def _compiled_moments():
    fn = _COMPILED.get("moments")
    if fn is None:
        fn = torch.compile(_fused_moments, dynamic=True)
        _COMPILED["moments"] = fn
    return fn


def _mls(v, p, q, kind, alpha, affine_eps, want_m, backend="eager"):
    """Chunked driver. v (B, M, 2) -> u (B, M, 2) [, d*, delta*, K]."""
    b, m, _ = v.shape
    n = p.shape[1]
    delta = q - p
    dmat_t = torch.cat([torch.ones_like(delta[..., :1]), delta], dim=-1)
    dmat_t = dmat_t.transpose(1, 2).unsqueeze(1)  # (B, 1, 3, N)
    with torch.no_grad():
        scale = _scale(p)
    rho = _rho(alpha)
    tol2 = (rho * scale).square().view(b, 1, 1)
    inv_s2 = scale.square().reciprocal().view(b, 1, 1)
    second = kind == "affine"
    if backend not in ("eager", "inductor"):
        raise ValueError(f"backend must be 'eager' or 'inductor', got {backend!r}")
    if alpha > 1.0:  # numerically safe centred two-pass sums (the fused kernel is alpha <= 1)
        step = _chunk_size(b, 2 * n, m, v.device)
        vx, vy = v[..., 0].contiguous(), v[..., 1].contiguous()
        p = p.contiguous()
        parts = [_centred_moments((vx[:, s:s + step], vy[:, s:s + step]), p, dmat_t, tol2,
                                  alpha, second) for s in range(0, m, step)]
        if len(parts) == 1:
            ds, dl, c, mu, a = parts[0]
        else:
            def cat(get):
                return tuple(torch.cat([get(x)[i] for x in parts], -1)
                             for i in range(len(get(parts[0]))))
            ds, dl, c = cat(lambda x: x[0]), cat(lambda x: x[1]), cat(lambda x: x[2])
            mu = torch.cat([x[3] for x in parts], -1)
            a = cat(lambda x: x[4]) if second else None
        return _closed_form(ds, dl, c, mu, a, kind, affine_eps, want_m)
    if backend == "inductor":
        if torch.is_grad_enabled() and (v.requires_grad or p.requires_grad or q.requires_grad):
            raise ValueError("backend='inductor' is for inference only (no autograd); "
                             "use backend='eager' to differentiate")
        sc = scale.view(b, 1, 1)
        vs, ps, ds = v / sc, p / sc, delta / sc
        sums = _compiled_moments()(
            vs[..., 0].unsqueeze(1).contiguous(), vs[..., 1].unsqueeze(1).contiguous(),
            ps[..., 0:1].contiguous(), ps[..., 1:2].contiguous(), ds[..., 0:1].contiguous(),
            ds[..., 1:2].contiguous(), rho * rho, alpha, second)
        sm = sums[:, :9].reshape(b, 3, 3, m)
        sec = (sums[:, 9], sums[:, 10], sums[:, 11]) if second else None
        u, d_star, delta_star, k = _solve(sm, sec, sums[:, 12], kind, affine_eps, want_m)
        sc = sc.view(b, 1, 1)
        return (u * sc, d_star * sc if want_m else None,
                delta_star * sc if want_m else None, k)
    if backend != "eager":
        raise ValueError(f"backend must be 'eager' or 'inductor', got {backend!r}")
    step = _chunk_size(b, n, m, v.device)
    vx, vy = v[..., 0].contiguous(), v[..., 1].contiguous()
    p = p.contiguous()
    parts = [_moments((vx[:, s:s + step], vy[:, s:s + step]), p, dmat_t, tol2, inv_s2, alpha,
                      second) for s in range(0, m, step)]
    if len(parts) == 1:
        sm, sec, swr = parts[0]
    else:
        sm = torch.cat([x[0] for x in parts], -1)
        sec = tuple(torch.cat([x[1][i] for x in parts], -1) for i in range(3)) if second \
            else None
        swr = torch.cat([x[2] for x in parts], -1)
    return _solve(sm, sec, swr, kind, affine_eps, want_m)


# --------------------------------------------------------------------------- public API


def mls_deform(v: torch.Tensor, p: torch.Tensor, q: torch.Tensor, kind: str = "rigid",
               alpha: float = 1.0, *, affine_eps: float = 1e-3, validate: bool = True,
               backend: str = "eager") -> torch.Tensor:
    """Deform points with moving least squares so that control points ``p`` move to ``q``.

    Args:
        v: (B, M, 2) query points (or (1, M, 2), broadcast over the batch).
        p: (B, N, 2) control points (distinct; N >= 3 for affine, N >= 2 otherwise).
        q: (B, N, 2) their targets.
        kind: "affine", "similarity" or "rigid".
        alpha: weight exponent, ``w_i = |p_i - v|^(-2 alpha)``.
        affine_eps: strength of the near-collinear fallback of the affine form (0 = off;
            then collinear control points give inf/NaN).
        validate: check values (NaN/inf, duplicate control points); costs a device sync.
        backend: "eager" (default, differentiable) or "inductor": the weighted sums fused
            by ``torch.compile`` into one loop (inference only, about 2-3x faster on CPU for
            image-sized inputs; the first call in a process compiles, 15-60 s).

    Returns:
        (B, M, 2) deformed points ``f_v(v)``; ``f(p_i) = q_i``. Differentiable w.r.t.
        v, p and q. Any coordinate frame works (pixels or normalized).
    """
    kind = _check_kind(kind)
    alpha = _check_alpha(alpha)
    _validate_controls(p, q, kind, alpha, validate)
    v = _check_query(v, p, validate)
    u = _mls(v, p, q, kind, alpha, affine_eps, False, backend)[0]
    return v + u


def mls_transforms(v: torch.Tensor, p: torch.Tensor, q: torch.Tensor, kind: str = "rigid",
                   alpha: float = 1.0, *, affine_eps: float = 1e-3,
                   validate: bool = True) -> MLSTransforms:
    """The per-point MLS transforms ``f_v(x) = (x - p*) M + q*`` at every query point.

    Args: as :func:`mls_deform` (v (B, M, 2), p and q (B, N, 2)).

    Returns:
        :class:`MLSTransforms` with p_star (B, M, 2), q_star (B, M, 2), M (B, M, 2, 2)
        (row-vector convention, ``y = x @ M``). ``(v - p_star) @ M + q_star`` equals
        :func:`mls_deform`.
    """
    kind = _check_kind(kind)
    alpha = _check_alpha(alpha)
    _validate_controls(p, q, kind, alpha, validate)
    v = _check_query(v, p, validate)
    _, d_star, delta_star, k = _mls(v, p, q, kind, alpha, affine_eps, True)
    p_star = v + d_star
    eye = torch.eye(2, dtype=v.dtype, device=v.device)
    return MLSTransforms(p_star, p_star + delta_star, k + eye)


def border_points(height: int, width: int, per_side: int, *,
                  device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Evenly spaced points on the border pixel centres of an image, corners included.

    Args:
        height, width: image size (each >= 2).
        per_side: points per side including both corners (>= 2).

    Returns:
        (4 * (per_side - 1), 2) pixel coordinates, clockwise from the top-left corner.
    """
    if per_side < 2:
        raise ValueError(f"per_side must be >= 2, got {per_side}")
    if height < 2 or width < 2:
        raise ValueError(f"image must be at least 2x2, got {height}x{width}")
    t = torch.linspace(0.0, 1.0, per_side, device=device, dtype=dtype)[:-1]
    x1, y1 = float(width - 1), float(height - 1)
    top = torch.stack([t * x1, torch.zeros_like(t)], -1)
    right = torch.stack([torch.full_like(t, x1), t * y1], -1)
    bottom = torch.stack([x1 - t * x1, torch.full_like(t, y1)], -1)
    left = torch.stack([torch.zeros_like(t), y1 - t * y1], -1)
    return torch.cat([top, right, bottom, left], 0)


def _with_border(p, q, height, width, pin_border):
    if not pin_border:
        return p, q
    if isinstance(pin_border, bool):
        pin_border = 5
    bp = border_points(height, width, int(pin_border), device=p.device, dtype=p.dtype)
    bp = bp.unsqueeze(0).expand(p.shape[0], -1, -1)
    return torch.cat([p, bp], 1), torch.cat([q, bp], 1)


def mls_grid(p: torch.Tensor, q: torch.Tensor, height: int, width: int, kind: str = "rigid",
             alpha: float = 1.0, *, grid_step: int = 1, pin_border: int | bool = 0,
             affine_eps: float = 1e-3, validate: bool = True,
             backend: str = "eager") -> torch.Tensor:
    """MLS deformation ``f`` (p -> q) evaluated at every pixel centre of an image.

    Args:
        p, q: (B, N, 2) control points and targets, pixel coordinates.
        height, width: image size.
        kind, alpha, affine_eps, validate, backend: as :func:`mls_deform`.
        grid_step: 1 = exact at every pixel; s > 1 = evaluate on a coarse grid of about
            (H / s) x (W / s) points spanning the image corners and upsample the
            displacement bilinearly (the error of this shortcut is measured in docs/mls.md).
        pin_border: 0/False = off; k >= 2 (True = 5) adds 4 (k - 1) fixed control points
            (q = p) on the border pixel centres, so the image border stays (nearly) in place.

    Returns:
        (B, H, W, 2) pixel coordinates ``f(x)`` for each pixel centre ``x`` = (j, i).
    """
    if not isinstance(grid_step, int) or grid_step < 1:
        raise ValueError(f"grid_step must be an integer >= 1, got {grid_step!r}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    kind = _check_kind(kind)
    alpha = _check_alpha(alpha)
    _validate_controls(p, q, kind, alpha, False)
    p, q = _with_border(p, q, height, width, pin_border)
    _validate_controls(p, q, kind, alpha, validate)
    b = p.shape[0]
    if grid_step == 1:
        grid = pixel_grid(height, width, device=p.device, dtype=p.dtype)
        v = grid.reshape(1, -1, 2)
        u = _mls(v.expand(b, -1, -1), p, q, kind, alpha, affine_eps, False, backend)[0]
        return (v + u).view(b, height, width, 2)
    hc = max(2, math.ceil((height - 1) / grid_step) + 1) if height > 1 else 1
    wc = max(2, math.ceil((width - 1) / grid_step) + 1) if width > 1 else 1
    ys = torch.linspace(0.0, height - 1, hc, device=p.device, dtype=p.dtype)
    xs = torch.linspace(0.0, width - 1, wc, device=p.device, dtype=p.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    v = torch.stack([gx, gy], -1).reshape(1, -1, 2)
    u = _mls(v.expand(b, -1, -1), p, q, kind, alpha, affine_eps, False, backend)[0]
    u = u.view(b, hc, wc, 2).permute(0, 3, 1, 2)
    u = F.interpolate(u, size=(height, width), mode="bilinear", align_corners=True)
    grid = pixel_grid(height, width, device=p.device, dtype=p.dtype)
    return grid.unsqueeze(0) + u.permute(0, 2, 3, 1)


def warp_image(image: torch.Tensor, p: torch.Tensor, q: torch.Tensor, kind: str = "rigid",
               alpha: float = 1.0, *, grid_step: int = 1, pin_border: int | bool = 0,
               mode: str = "bilinear", padding_mode: str = "border",
               affine_eps: float = 1e-3, validate: bool = True,
               return_grid: bool = False, backend: str = "eager"):
    """Warp an image with MLS so that the content at ``p`` moves to ``q``.

    The inverse map is computed directly as the MLS deformation q -> p at every output pixel
    (backward warping, no holes) and the image is sampled there with ``grid_sample``
    (``align_corners=False``, :mod:`facegeo.coords` conventions). The output pixel at
    ``q_i`` shows the input at ``p_i`` exactly.

    Args:
        image: (B, C, H, W) float image.
        p, q: (B, N, 2) pixel coordinates in the input / output image.
        kind, alpha, grid_step, pin_border, affine_eps, validate, backend: as
            :func:`mls_grid`.
        mode, padding_mode: passed to ``grid_sample``.
        return_grid: also return the (B, H, W, 2) pixel source positions.

    Returns:
        (B, C, H, W) warped image (and the source grid if ``return_grid``).
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError("image must be a (B, C, H, W) tensor, got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else image}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a floating point tensor, got {image.dtype}")
    _check_points("p", p)
    if image.shape[0] != p.shape[0]:
        raise ValueError(f"image batch {image.shape[0]} != control point batch {p.shape[0]}")
    h, w = image.shape[-2:]
    src = mls_grid(q.to(image.dtype), p.to(image.dtype), h, w, kind, alpha,
                   grid_step=grid_step, pin_border=pin_border, affine_eps=affine_eps,
                   validate=validate, backend=backend)
    out = F.grid_sample(image, pixel_to_normalized(src, (h, w)), mode=mode,
                        padding_mode=padding_mode, align_corners=False)
    return (out, src) if return_grid else out


# --------------------------------------------------------------------------- pfp_mls motion


def _grid_points(grid: torch.Tensor, b: int, like: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    if not isinstance(grid, torch.Tensor) or grid.shape[-1] != 2 or grid.dim() not in (3, 4):
        raise ValueError("grid must have shape (H, W, 2) or (B, H, W, 2), got "
                         f"{tuple(grid.shape) if isinstance(grid, torch.Tensor) else grid}")
    if grid.dtype != like.dtype or grid.device != like.device:
        raise TypeError(f"grid must have the dtype/device of the points ({like.dtype}/"
                        f"{like.device}), got {grid.dtype}/{grid.device}")
    if grid.dim() == 3:
        grid = grid.unsqueeze(0)
    if grid.shape[0] not in (1, b):
        raise ValueError(f"grid batch {grid.shape[0]} does not match point batch {b}")
    h, w = grid.shape[1:3]
    return grid.expand(b, -1, -1, -1).reshape(b, h * w, 2), h, w


def _normalized_weights(v: torch.Tensor, k: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, M, 2), (B, N, 2) -> (B, M, N) weights normalised to sum 1, finite at v == k_n."""
    with torch.no_grad():
        scale = _scale(k)
    tol2 = (_rho(alpha) * scale).square().view(-1, 1, 1)
    r2 = torch.maximum((k.unsqueeze(1) - v.unsqueeze(2)).square().sum(-1), tol2)
    if alpha > 1.0:  # (r2_min / r2)^alpha: largest weight 1, the sum cannot underflow
        with torch.no_grad():
            r2min = r2.amin(-1, keepdim=True)
        w = (r2min / r2).pow(alpha)
    else:  # alpha <= 1: |d / scale|^(-2 alpha) cannot under/overflow (unchanged numbers)
        w = (r2 / scale.square().view(-1, 1, 1)).pow(-alpha)
    return w / w.sum(-1, keepdim=True)


def weighted_motion(k_s: torch.Tensor, k_d: torch.Tensor, grid: torch.Tensor,
                    alpha: float = 1.0, kind: str | None = "affine", *,
                    affine_eps: float = 1e-3, validate: bool = True) -> WeightedMotion:
    """Weighted motion of the pfp_mls paper (eqs. 3-5) at every grid position x.

    The motion maps driving positions to source positions: ``f_x`` minimises
    ``sum_n w_n |f_x(k_dn) - k_sn|^2`` with ``w_n = 1 / |k_dn - x|^(2 alpha)`` (eq. 3-4) and
    ``f_x(y) = (y - k_d*) M + k_s*`` (eq. 5). Points and grid may be in any common frame
    (pixels, or normalized [-1, 1] as the networks usually use).

    Args:
        k_s: (B, N, 2) source feature points.
        k_d: (B, N, 2) driving feature points (distinct).
        grid: (H, W, 2) or (B, H, W, 2) positions x (e.g. :func:`facegeo.coords.pixel_grid`).
        alpha: weight exponent (the paper uses alpha <= 1).
        kind: closed form of M ("affine", "similarity", "rigid"), or None to return only the
            weights and centroids (when a network predicts M itself).
        affine_eps, validate: as :func:`mls_deform`.

    Returns:
        :class:`WeightedMotion`: weights (B, H, W, N) normalised to sum 1 (the paper's w_n
        divided by sum_n w_n; finite at x == k_dn, where it is one-hot), k_d_star and
        k_s_star (B, H, W, 2), M (B, H, W, 2, 2) and flow (B, H, W, 2) (None if kind is None).
    """
    alpha = _check_alpha(alpha)
    if kind is not None:
        kind = _check_kind(kind)
    _validate_controls(k_d, k_s, kind, alpha, validate, ("k_d", "k_s"))
    b = k_d.shape[0]
    v, h, w = _grid_points(grid, b, k_d)
    if validate:
        _check_finite("grid", v)
    wts = _normalized_weights(v, k_d, alpha)  # (B, M, N)
    if kind is None:
        kd_star = wts @ k_d
        ks_star = wts @ k_s
        mat = flow = None
    else:
        u, d_star, delta_star, k = _mls(v, k_d, k_s, kind, alpha, affine_eps, True)
        kd_star = v + d_star
        ks_star = kd_star + delta_star
        mat = (k + torch.eye(2, dtype=v.dtype, device=v.device)).view(b, h, w, 2, 2)
        flow = (v + u).view(b, h, w, 2)
    return WeightedMotion(wts.view(b, h, w, -1), kd_star.view(b, h, w, 2),
                          ks_star.view(b, h, w, 2), mat, flow)


def apply_motion(grid: torch.Tensor, M: torch.Tensor, k_d_star: torch.Tensor,
                 k_s_star: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``f_x = (x - k_d*) M + k_s*`` for a per-position (e.g. predicted) M.

    Args:
        grid: (H, W, 2) or (B, H, W, 2) positions x.
        M: (B, H, W, 2, 2) per-position linear maps (row vectors: ``y = x @ M``).
        k_d_star, k_s_star: (B, H, W, 2) weighted centroids (from :func:`weighted_motion`).

    Returns:
        (B, H, W, 2) the motion f_x (source position for each driving position x).
    """
    if M.dim() != 5 or M.shape[-2:] != (2, 2):
        raise ValueError(f"M must have shape (B, H, W, 2, 2), got {tuple(M.shape)}")
    if k_d_star.shape != M.shape[:-1] or k_s_star.shape != M.shape[:-1]:
        raise ValueError(f"k_d_star {tuple(k_d_star.shape)} and k_s_star "
                         f"{tuple(k_s_star.shape)} must have shape {tuple(M.shape[:-1])}")
    if grid.dim() == 3:
        grid = grid.unsqueeze(0)
    if grid.shape[1:] != M.shape[1:-1] or grid.shape[0] not in (1, M.shape[0]):
        raise ValueError(f"grid {tuple(grid.shape)} does not match M {tuple(M.shape)}")
    return ((grid - k_d_star).unsqueeze(-2) @ M).squeeze(-2) + k_s_star


def weighted_motion_loss(M: torch.Tensor, k_s: torch.Tensor, k_d: torch.Tensor,
                         weights: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 7 of pfp_mls: ``L_m = sum_n w_n |k^_dn M - k^_sn|^2`` at every position.

    ``k^_dn = k_dn - k_d*``, ``k^_sn = k_sn - k_s*`` with the centroids of ``weights``
    (the printed eq. 7 drops the hats on the right-hand side; substituting eq. 5 into eq. 3
    gives the centred form used here). With normalised weights (as returned by
    :func:`weighted_motion`) this is the paper's loss divided by ``sum_n w_n`` at each
    position, which has the same minimiser M and stays finite at the feature points.

    Args:
        M: (B, H, W, 2, 2) predicted transforms (row vectors).
        k_s, k_d: (B, N, 2) source and driving feature points.
        weights: (B, H, W, N) non-negative weights (e.g. ``weighted_motion(...).weights``).
        reduction: "mean" (over batch and positions), "sum", or "none" -> (B, H, W).

    Returns:
        scalar, or (B, H, W) with reduction "none".
    """
    if M.dim() != 5 or M.shape[-2:] != (2, 2):
        raise ValueError(f"M must have shape (B, H, W, 2, 2), got {tuple(M.shape)}")
    _check_points("k_s", k_s)
    _check_points("k_d", k_d)
    if k_s.shape != k_d.shape:
        raise ValueError(f"k_s {tuple(k_s.shape)} and k_d {tuple(k_d.shape)} must match")
    b, h, w = M.shape[:3]
    if weights.shape != (b, h, w, k_d.shape[1]) or k_d.shape[0] != b:
        raise ValueError(f"weights must have shape {(b, h, w, k_d.shape[1])} for M "
                         f"{tuple(M.shape)} and points {tuple(k_d.shape)}, got "
                         f"{tuple(weights.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    wsum = weights.sum(-1, keepdim=True)
    wn = weights / wsum
    kd_star = torch.einsum("bhwn,bnc->bhwc", wn, k_d)
    ks_star = torch.einsum("bhwn,bnc->bhwc", wn, k_s)
    kd_hat = k_d[:, None, None] - kd_star.unsqueeze(-2)  # (B, H, W, N, 2)
    ks_hat = k_s[:, None, None] - ks_star.unsqueeze(-2)
    res = kd_hat @ M - ks_hat
    loss = (weights * res.square().sum(-1)).sum(-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
