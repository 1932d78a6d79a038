"""Moving least squares: closed forms against brute-force weighted least squares, invariants,
gradients, image warping and the pfp_mls weighted motion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize_scalar

from facegeo import mls
from facegeo.coords import pixel_grid

KINDS = ("affine", "similarity", "rigid")


# --------------------------------------------------------------------------- references


def _weights(x, p, alpha):
    return 1.0 / np.sum((p - x) ** 2, axis=1) ** alpha


def _solve_normal(rows, rhs, w):
    a = np.asarray(rows, dtype=np.float64)
    b = np.asarray(rhs, dtype=np.float64)
    ww = np.repeat(w, 2)
    lhs = a.T @ (ww[:, None] * a)
    return np.linalg.lstsq(lhs, a.T @ (ww * b), rcond=None)[0]


def brute_force(v, p, q, kind, alpha):
    """Per query point: minimise sum_i w_i |x_i M + t - q_i|^2 directly over (M, t).

    affine / similarity: weighted normal equations of the linear least-squares problem in the
    unknowns (M entries, t) solved with numpy lstsq; rigid: search over the rotation angle with
    the optimal translation for each angle from the same kind of linear solve.
    Row-vector convention y = x @ M + t.
    """
    out = []
    for x in v:
        w = _weights(x, p, alpha)
        if kind == "affine":
            rows, rhs = [], []
            for (px, py), (qx, qy) in zip(p, q):
                rows += [[px, 0, py, 0, 1, 0], [0, px, 0, py, 0, 1]]
                rhs += [qx, qy]
            s = _solve_normal(rows, rhs, w)
            m, t = np.array([[s[0], s[1]], [s[2], s[3]]]), s[4:]
        elif kind == "similarity":
            rows, rhs = [], []
            for (px, py), (qx, qy) in zip(p, q):
                rows += [[px, -py, 1, 0], [py, px, 0, 1]]
                rhs += [qx, qy]
            a, b, tx, ty = _solve_normal(rows, rhs, w)
            m, t = np.array([[a, b], [-b, a]]), np.array([tx, ty])
        else:
            def fit(theta, w=w):
                rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
                rows = [[1, 0], [0, 1]] * len(p)
                rhs = (q - p @ rot).reshape(-1)
                t = _solve_normal(rows, rhs, w)
                res = np.sum(w * np.sum((p @ rot + t - q) ** 2, axis=1))
                return res, rot, t

            thetas = np.linspace(-np.pi, np.pi, 361)
            t0 = thetas[int(np.argmin([fit(th)[0] for th in thetas]))]
            best = minimize_scalar(lambda th: fit(th)[0], bounds=(t0 - 0.02, t0 + 0.02),
                                   method="bounded", options={"xatol": 1e-12})
            _, m, t = fit(best.x)
        out.append(x @ m + t)
    return np.array(out)


def _t(a, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def _affine_conditioning(v, p, alpha):
    """min over query points of 4 det / tr^2 of the weighted covariance (1 = isotropic)."""
    worst = 1.0
    for x in v:
        w = _weights(x, p, alpha)
        w = w / w.sum()
        c = p - w @ p
        a = (w[:, None] * c).T @ c
        worst = min(worst, 4 * np.linalg.det(a) / np.trace(a) ** 2)
    return worst


control_sets = st.integers(3, 7).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (n, 2), elements=st.floats(-10, 10)),
        arrays(np.float64, (n, 2), elements=st.floats(-3, 3)),
        arrays(np.float64, (4, 2), elements=st.floats(-12, 12)),
    )
)


def _assume_well_posed(p, v):
    d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)) + np.eye(len(p)) * 1e9
    assume(d.min() > 0.5)
    dv = np.sqrt(((v[:, None] - p[None]) ** 2).sum(-1))
    assume(dv.min() > 1e-2)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=control_sets, alpha=st.sampled_from([0.5, 1.0, 1.5, 2.0]))
def test_closed_forms_match_brute_force(kind, data, alpha):
    p, dq, v = data
    _assume_well_posed(p, v)
    if kind == "affine":
        # stay away from the documented near-collinear fallback
        assume(_affine_conditioning(v, p, alpha) > 0.05)
    q = p + dq
    ref = brute_force(v, p, q, kind, alpha)
    got = mls.mls_deform(_t(v)[None], _t(p)[None], _t(q)[None], kind, alpha)[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6 * (1 + np.abs(ref).max()))


@pytest.mark.parametrize("kind", KINDS)
def test_transforms_reproduce_deformation_and_class(kind):
    g = torch.Generator().manual_seed(1)
    p = torch.rand(2, 6, 2, generator=g, dtype=torch.float64) * 20
    q = p + torch.randn(2, 6, 2, generator=g, dtype=torch.float64)
    v = torch.rand(2, 9, 2, generator=g, dtype=torch.float64) * 20
    tr = mls.mls_transforms(v, p, q, kind)
    f = ((v - tr.p_star).unsqueeze(-2) @ tr.M).squeeze(-2) + tr.q_star
    torch.testing.assert_close(f, mls.mls_deform(v, p, q, kind))
    m = tr.M
    if kind in ("similarity", "rigid"):
        # conformal: M = s R, so M M^T = s^2 I and det > 0
        mmt = m @ m.transpose(-1, -2)
        s2 = mmt[..., 0, 0]
        torch.testing.assert_close(mmt, s2[..., None, None] * torch.eye(2, dtype=m.dtype)
                                   .expand_as(mmt))
        assert (torch.linalg.det(m) > 0).all()
    if kind == "rigid":
        # a rotation: preserves lengths and angles of every local vector
        torch.testing.assert_close(m @ m.transpose(-1, -2),
                                   torch.eye(2, dtype=m.dtype).expand_as(m))
        torch.testing.assert_close(torch.linalg.det(m), torch.ones_like(m[..., 0, 0]))
    # centroids are the weighted means
    w = 1.0 / ((p[:, None] - v[:, :, None]) ** 2).sum(-1)
    w = w / w.sum(-1, keepdim=True)
    torch.testing.assert_close(tr.p_star, w @ p)
    torch.testing.assert_close(tr.q_star, w @ q)


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("kind", KINDS)
def test_identity_when_q_equals_p(kind):
    g = torch.Generator().manual_seed(2)
    p = torch.rand(3, 10, 2, generator=g) * 100
    v = torch.rand(3, 50, 2, generator=g) * 120 - 10
    torch.testing.assert_close(mls.mls_deform(v, p, p.clone(), kind), v, atol=1e-4, rtol=0)


def _rot(deg):
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]],
                        dtype=torch.float64)


@pytest.mark.parametrize("kind,scale", [("affine", 1.7), ("similarity", 0.6), ("rigid", 1.0)])
def test_global_similarity_reproduced(kind, scale):
    g = torch.Generator().manual_seed(3)
    p = torch.rand(1, 8, 2, generator=g, dtype=torch.float64) * 50
    t = torch.tensor([3.0, -7.0], dtype=torch.float64)
    m = scale * _rot(33.0)
    q = p @ m + t
    v = torch.rand(1, 40, 2, generator=g, dtype=torch.float64) * 80 - 15
    torch.testing.assert_close(mls.mls_deform(v, p, q, kind), v @ m + t)


def test_global_affine_reproduced():
    g = torch.Generator().manual_seed(4)
    p = torch.rand(2, 7, 2, generator=g, dtype=torch.float64) * 50
    m = torch.tensor([[1.3, 0.4], [-0.2, 0.7]], dtype=torch.float64)
    t = torch.tensor([-5.0, 2.0], dtype=torch.float64)
    v = torch.rand(2, 40, 2, generator=g, dtype=torch.float64) * 80 - 15
    torch.testing.assert_close(mls.mls_deform(v, p, p @ m + t, "affine"), v @ m + t)


@pytest.mark.parametrize("kind", KINDS)
def test_rigid_like_transforms_preserve_local_angles(kind):
    # for a global rotation + translation every kind must give a map whose Jacobian
    # preserves angles between local vectors (checked by finite differences)
    g = torch.Generator().manual_seed(5)
    p = torch.rand(1, 6, 2, generator=g, dtype=torch.float64) * 30
    q = p @ _rot(-50.0) + torch.tensor([1.0, 2.0], dtype=torch.float64)
    x0 = torch.tensor([[[7.3, 11.1]]], dtype=torch.float64)
    e = 1e-5
    a = torch.tensor([1.0, 0.3], dtype=torch.float64)
    b = torch.tensor([-0.4, 1.0], dtype=torch.float64)
    f0 = mls.mls_deform(x0, p, q, kind)[0, 0]
    fa = mls.mls_deform(x0 + e * a, p, q, kind)[0, 0] - f0
    fb = mls.mls_deform(x0 + e * b, p, q, kind)[0, 0] - f0

    def angle(u, w):
        return torch.atan2(u[0] * w[1] - u[1] * w[0], u @ w)

    assert abs(float(angle(fa, fb) - angle(a, b))) < 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_interpolates_control_points_exactly_no_nan(kind):
    g = torch.Generator().manual_seed(7)
    p = (torch.rand(2, 12, 2, generator=g) * 500).requires_grad_(True)
    q = (p.detach() + torch.randn(2, 12, 2, generator=g) * 10).requires_grad_(True)
    v = p.detach().clone().requires_grad_(True)
    out = mls.mls_deform(v, p, q, kind)
    torch.testing.assert_close(out, q.detach(), atol=1e-3, rtol=0)
    out.sum().backward()
    for t in (v, p, q):
        assert torch.isfinite(t.grad).all()
    # moving q_i moves f(p_i) one-to-one
    torch.testing.assert_close(q.grad, torch.ones_like(q), atol=1e-4, rtol=0)
    # just next to a control point the map is continuous (no catastrophic cancellation in fp32)
    off = torch.tensor([1e-3, -2e-3])
    near32 = mls.mls_deform(p.detach() + off, p.detach(), q.detach(), kind)
    near64 = mls.mls_deform((p.detach() + off).double(), p.detach().double(),
                            q.detach().double(), kind)
    torch.testing.assert_close(near32.double(), near64, atol=2e-3, rtol=0)
    torch.testing.assert_close(near64, q.detach().double(), atol=0.05, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    g = torch.Generator().manual_seed(8)
    p = (torch.rand(1, 4, 2, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    q = (p.detach() + torch.randn(1, 4, 2, generator=g, dtype=torch.float64) * 0.3)
    q.requires_grad_(True)
    v = (torch.rand(1, 3, 2, generator=g, dtype=torch.float64) * 5 - 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: mls.mls_deform(a, b, c, kind, 1.0),
                                    (v, p, q))
    assert torch.autograd.gradcheck(lambda a, b, c: mls.mls_deform(a, b, c, kind, 0.75),
                                    (v, p, q))


@pytest.mark.parametrize("kind", KINDS)
def test_batch_matches_single_and_chunks(kind):
    g = torch.Generator().manual_seed(9)
    p = torch.rand(3, 9, 2, generator=g) * 64
    q = p + torch.randn(3, 9, 2, generator=g) * 2
    v = torch.rand(3, 12000, 2, generator=g) * 64  # several CPU chunks
    out = mls.mls_deform(v, p, q, kind)
    for i in range(3):
        # single batch element, and a query set small enough for one chunk
        torch.testing.assert_close(out[i, :100], mls.mls_deform(v[i:i + 1, :100], p[i:i + 1],
                                                                q[i:i + 1], kind)[0])
        torch.testing.assert_close(out[i, -100:], mls.mls_deform(v[i:i + 1, -100:], p[i:i + 1],
                                                                 q[i:i + 1], kind)[0])
    # a shared (1, M, 2) query broadcasts
    torch.testing.assert_close(mls.mls_deform(v[:1, :50], p, q, kind),
                               mls.mls_deform(v[:1, :50].expand(3, -1, -1), p, q, kind))


def test_affine_collinear_fallback():
    # all control points on a line: plain affine is singular; the fallback stays finite, and
    # reproduces a global similarity exactly
    t = torch.linspace(0, 10, 5, dtype=torch.float64)
    p = torch.stack([t, 0.5 * t + 1], -1)[None]
    m = 1.3 * _rot(20.0)
    q = p @ m + torch.tensor([2.0, -1.0], dtype=torch.float64)
    v = torch.rand(1, 30, 2, dtype=torch.float64) * 20 - 5
    out = mls.mls_deform(v, p, q, "affine")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, v @ m + torch.tensor([2.0, -1.0], dtype=torch.float64))
    # without the fallback the singular system is not finite somewhere or far off
    raw = mls.mls_deform(v, p, q, "affine", affine_eps=0.0)
    assert not torch.allclose(raw, out, atol=1e-3) or not torch.isfinite(raw).all()
    # nearly collinear with a non-similarity motion: finite and still interpolating
    p2 = p.clone()
    p2[0, 2, 1] += 1e-7
    q2 = q + torch.randn_like(q)
    out2 = mls.mls_deform(torch.cat([p2, v], 1), p2, q2, "affine")
    assert torch.isfinite(out2).all()
    torch.testing.assert_close(out2[:, :5], q2, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs():
    p = torch.rand(1, 5, 2) * 10
    q = p + 1
    v = torch.rand(1, 4, 2)
    with pytest.raises(ValueError, match="same shape"):
        mls.mls_deform(v, p, q[:, :4])
    with pytest.raises(ValueError, match=r"\(B, N, 2\)"):
        mls.mls_deform(v, p[0], q[0])
    with pytest.raises(ValueError, match=r"v must have shape"):
        mls.mls_deform(v[..., :1], p, q)
    with pytest.raises(ValueError, match="batch size"):
        mls.mls_deform(torch.rand(2, 4, 2), torch.rand(3, 5, 2), torch.rand(3, 5, 2))
    with pytest.raises(ValueError, match="at least 3 control points"):
        mls.mls_deform(v, p[:, :2], q[:, :2], "affine")
    with pytest.raises(ValueError, match="at least 2 control points"):
        mls.mls_deform(v, p[:, :1], q[:, :1], "similarity")
    with pytest.raises(ValueError, match="at least 2 control points"):
        mls.mls_deform(v, p[:, :1], q[:, :1], "rigid")
    dup = p.clone()
    dup[0, 3] = dup[0, 1]
    with pytest.raises(ValueError, match="duplicate control points"):
        mls.mls_deform(v, dup, q)
    for name, args in [("p", (v, p.clone().index_fill_(1, torch.tensor([2]), float("nan")), q)),
                       ("q", (v, p, q.clone().index_fill_(1, torch.tensor([0]), float("inf")))),
                       ("v", (torch.full_like(v, float("nan")), p, q))]:
        with pytest.raises(ValueError, match=f"{name} contains NaN"):
            mls.mls_deform(*args)
    with pytest.raises(ValueError, match="kind"):
        mls.mls_deform(v, p, q, "projective")
    with pytest.raises(ValueError, match="alpha"):
        mls.mls_deform(v, p, q, alpha=0.0)
    with pytest.raises(TypeError, match="floating point"):
        mls.mls_deform(v, p.long(), q.long())
    with pytest.raises(TypeError, match="dtype"):
        mls.mls_deform(v.double(), p, q)
    img = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="image"):
        mls.warp_image(img[0], p, q)
    with pytest.raises(ValueError, match="grid_step"):
        mls.warp_image(img, p, q, grid_step=0)
    with pytest.raises(ValueError, match="per_side"):
        mls.border_points(8, 8, 1)


def test_bad_inputs_weighted_motion():
    k_d = torch.rand(2, 4, 2)
    k_s = k_d + 0.1
    grid = torch.rand(5, 6, 2)
    with pytest.raises(ValueError, match="k_d and k_s must have the same shape"):
        mls.weighted_motion(k_s[:, :3], k_d, grid)
    with pytest.raises(ValueError, match="grid must have shape"):
        mls.weighted_motion(k_s, k_d, grid[..., :1])
    with pytest.raises(ValueError, match="grid batch"):
        mls.weighted_motion(k_s, k_d, torch.rand(3, 5, 6, 2))
    with pytest.raises(ValueError, match="grid contains NaN"):
        mls.weighted_motion(k_s, k_d, torch.full_like(grid, float("nan")))
    with pytest.raises(ValueError, match="k_s contains NaN"):
        mls.weighted_motion(torch.full_like(k_s, float("nan")), k_d, grid)
    wm = mls.weighted_motion(k_s, k_d, grid, kind=None)
    m = torch.eye(2).expand(2, 5, 6, 2, 2)
    with pytest.raises(ValueError, match="weights must have shape"):
        mls.weighted_motion_loss(m, k_s, k_d, wm.weights[..., :3])
    with pytest.raises(ValueError, match="M must have shape"):
        mls.weighted_motion_loss(m[..., 0], k_s, k_d, wm.weights)
    with pytest.raises(ValueError, match="reduction"):
        mls.weighted_motion_loss(m, k_s, k_d, wm.weights, reduction="max")
    with pytest.raises(ValueError, match="must have shape"):
        mls.apply_motion(grid, m, wm.k_d_star[..., :1], wm.k_s_star)


# --------------------------------------------------------------------------- images


def _smooth_image(h, w, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    chans = []
    for _ in range(3 * b):
        fx, fy, ph = (torch.rand(3, generator=g) * torch.tensor([0.3, 0.3, 6.0])).tolist()
        chans.append(0.5 + 0.5 * torch.sin(fx * xx + fy * yy + ph))
    return torch.stack(chans).view(b, 3, h, w)


@pytest.mark.parametrize("kind", KINDS)
def test_warp_identity_and_translation(kind):
    img = _smooth_image(40, 50)
    p = torch.tensor([[[10.0, 10.0], [40.0, 12.0], [25.0, 30.0], [12.0, 33.0]]])
    torch.testing.assert_close(mls.warp_image(img, p, p.clone(), kind), img, atol=1e-5, rtol=0)
    shift = torch.tensor([3.0, -2.0])
    out = mls.warp_image(img, p, p + shift, kind)
    # out(x) = img(x - shift) away from the border
    torch.testing.assert_close(out[..., 5:-5, 8:-8], img[..., 7:-3, 5:-11], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_warp_moves_content_from_p_to_q(kind):
    img = _smooth_image(64, 64, b=2, seed=1)
    g = torch.Generator().manual_seed(10)
    p = torch.randint(8, 56, (2, 6, 2), generator=g).float()
    q = (p + torch.randint(-4, 5, (2, 6, 2), generator=g)).float()
    assume_ok = torch.cdist(p, p) + torch.eye(6) * 100
    assert (assume_ok > 0).all()
    out, src = mls.warp_image(img, p, q, kind, return_grid=True)
    assert src.shape == (2, 64, 64, 2)
    for b in range(2):
        for i in range(6):
            qx, qy = q[b, i].long().tolist()
            px, py = p[b, i].long().tolist()
            torch.testing.assert_close(src[b, qy, qx], p[b, i], atol=1e-3, rtol=0)
            torch.testing.assert_close(out[b, :, qy, qx], img[b, :, py, px], atol=1e-3, rtol=0)


@pytest.mark.parametrize("grid_step", [1, 3])
def test_warp_is_differentiable(grid_step):
    img = _smooth_image(20, 24).double()
    p = torch.tensor([[[5.3, 6.1], [17.2, 5.7], [11.4, 14.8], [4.1, 15.2]]],
                     dtype=torch.float64, requires_grad=True)
    q = (p.detach() + torch.tensor([0.7, -0.4], dtype=torch.float64)).requires_grad_(True)
    out = mls.warp_image(img, p, q, "rigid", grid_step=grid_step, pin_border=3)
    (out * img).sum().backward()
    for t in (p, q):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # the analytic gradient w.r.t. q matches a central finite difference
    f = lambda qq: (mls.warp_image(img, p.detach(), qq, "rigid", grid_step=grid_step,  # noqa: E731
                                   pin_border=3) * img).sum()
    e = torch.zeros_like(q)
    e[0, 2, 0] = 1e-5
    fd = (f(q.detach() + e) - f(q.detach() - e)) / 2e-5
    assert abs(float(fd) - float(q.grad[0, 2, 0])) < 1e-4 * (1 + abs(float(fd)))


def test_coarse_grid_shortcut_error_is_small_and_exact_on_nodes():
    # landmark-like layout: control points at least ~20 px apart, displacements of a few px
    # (the shortcut's error concentrates next to close control points that move differently)
    g = torch.Generator().manual_seed(11)
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    p = torch.stack([xs * 45 + 30, ys * 55 + 40], -1).reshape(1, 20, 2)
    p = p + torch.rand(1, 20, 2, generator=g) * 10
    q = p + torch.randn(1, 20, 2, generator=g) * 4
    exact = mls.mls_grid(p, q, 256, 256, "rigid")
    coarse = mls.mls_grid(p, q, 256, 256, "rigid", grid_step=5)
    # 256 - 1 = 255 = 51 * 5: the coarse nodes are every 5th pixel
    torch.testing.assert_close(coarse[:, ::5, ::5], exact[:, ::5, ::5], atol=1e-3, rtol=0)
    err = (coarse - exact).norm(dim=-1)
    assert err.max() < 1.0
    assert err.mean() < 0.02


def test_pinned_border_stays():
    h, w = 49, 65  # (h - 1) and (w - 1) divisible by 8: the 9 pins per side sit on pixels
    img = _smooth_image(h, w)
    p = torch.tensor([[[20.0, 20.0], [44.0, 20.0], [32.0, 30.0]]])
    q = p + torch.tensor([[[-4.0, 3.0], [4.0, 3.0], [0.0, 5.0]]])
    pinned = mls.mls_grid(q, p, h, w, "similarity", pin_border=9)
    free = mls.mls_grid(q, p, h, w, "similarity")
    grid = pixel_grid(h, w)
    border = torch.zeros(h, w, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    d_pinned = (pinned[0] - grid)[border].norm(dim=-1)
    d_free = (free[0] - grid)[border].norm(dim=-1)
    assert d_pinned.max() < 0.5 < d_free.max()
    pins = mls.border_points(h, w, 9)
    assert torch.equal(pins, pins.round())
    ij = pins.long()
    torch.testing.assert_close(pinned[0, ij[:, 1], ij[:, 0]], pins, atol=1e-4, rtol=0)
    out = mls.warp_image(img, p, q, "similarity", pin_border=True)
    torch.testing.assert_close(out[..., 0, 0], img[..., 0, 0], atol=1e-4, rtol=0)


def test_border_points_layout():
    b = mls.border_points(5, 7, 3)
    expected = torch.tensor([[0, 0], [3, 0], [6, 0], [6, 2], [6, 4], [3, 4], [0, 4], [0, 2]],
                            dtype=torch.float32)
    torch.testing.assert_close(b, expected)


# --------------------------------------------------------------------------- pfp_mls motion


def test_weighted_motion_matches_definitions():
    g = torch.Generator().manual_seed(12)
    k_d = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 2 - 1
    k_s = k_d + torch.randn(2, 5, 2, generator=g, dtype=torch.float64) * 0.1
    ys = torch.linspace(-1, 1, 6, dtype=torch.float64)
    xs = torch.linspace(-1, 1, 7, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)
    for kind in KINDS:
        wm = mls.weighted_motion(k_s, k_d, grid, alpha=0.8, kind=kind)
        assert wm.weights.shape == (2, 6, 7, 5) and wm.M.shape == (2, 6, 7, 2, 2)
        x = grid.reshape(-1, 2).numpy()
        for b in range(2):
            w = np.stack([_weights(xx, k_d[b].numpy(), 0.8) for xx in x])
            w /= w.sum(1, keepdims=True)
            np.testing.assert_allclose(wm.weights[b].reshape(-1, 5).numpy(), w, atol=1e-12)
            np.testing.assert_allclose(wm.k_d_star[b].reshape(-1, 2).numpy(), w @ k_d[b].numpy(),
                                       atol=1e-12)
            np.testing.assert_allclose(wm.k_s_star[b].reshape(-1, 2).numpy(), w @ k_s[b].numpy(),
                                       atol=1e-12)
            ref = brute_force(x, k_d[b].numpy(), k_s[b].numpy(), kind, 0.8)
            np.testing.assert_allclose(wm.flow[b].reshape(-1, 2).numpy(), ref, atol=1e-6)
        torch.testing.assert_close(mls.apply_motion(grid, wm.M, wm.k_d_star, wm.k_s_star),
                                   wm.flow)
    only = mls.weighted_motion(k_s, k_d, grid, alpha=0.8, kind=None)
    assert only.M is None and only.flow is None
    torch.testing.assert_close(only.k_s_star, wm.k_s_star)


def test_weighted_motion_loss_is_minimised_by_affine_closed_form():
    g = torch.Generator().manual_seed(13)
    k_d = torch.rand(1, 6, 2, generator=g, dtype=torch.float64) * 2 - 1
    k_s = k_d @ torch.tensor([[1.1, 0.2], [-0.1, 0.9]], dtype=torch.float64)
    k_s = k_s + 0.05 * torch.randn(1, 6, 2, generator=g, dtype=torch.float64)
    grid = pixel_grid(5, 5, dtype=torch.float64) / 2 - 1
    wm = mls.weighted_motion(k_s, k_d, grid, kind="affine")
    m = wm.M.clone().requires_grad_(True)
    loss = mls.weighted_motion_loss(m, k_s, k_d, wm.weights, reduction="none")
    assert loss.shape == (1, 5, 5)
    # brute-force eq. 7 at one position
    w = wm.weights[0, 2, 3].numpy()
    kd_hat = k_d[0].numpy() - w @ k_d[0].numpy()
    ks_hat = k_s[0].numpy() - w @ k_s[0].numpy()
    ref = np.sum(w * np.sum((kd_hat @ wm.M[0, 2, 3].numpy() - ks_hat) ** 2, 1))
    assert abs(float(loss[0, 2, 3].detach()) - ref) < 1e-12
    # stationarity: the closed form is the per-position minimiser
    loss.sum().backward()
    assert m.grad.abs().max() < 1e-10
    worse = mls.weighted_motion_loss(wm.M + 0.01 * torch.randn_like(wm.M), k_s, k_d, wm.weights,
                                     reduction="none")
    assert (worse > loss.detach()).all()
    assert mls.weighted_motion_loss(wm.M, k_s, k_d, wm.weights).shape == ()


def test_weighted_motion_at_feature_point_is_finite_one_hot():
    k_d = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    k_s = (k_d.detach() + 0.1).requires_grad_(True)
    grid = torch.tensor([[[0.0, 0.0], [0.5, 0.5]]])
    wm = mls.weighted_motion(k_s, k_d, grid, kind="rigid")
    torch.testing.assert_close(wm.weights[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(wm.flow[0, 0, 0], k_s[0, 0].detach())
    (wm.flow.sum() + mls.weighted_motion_loss(wm.M, k_s, k_d, wm.weights)).backward()
    assert torch.isfinite(k_d.grad).all() and torch.isfinite(k_s.grad).all()


def test_inductor_backend_matches_eager():
    # one compiled kernel (second moments off) serves rigid and similarity
    g = torch.Generator().manual_seed(14)
    p = torch.rand(2, 7, 2, generator=g) * 60 + 2
    q = p + torch.randn(2, 7, 2, generator=g) * 3
    with torch.no_grad():
        for kind in ("rigid", "similarity"):
            fused = mls.mls_grid(q, p, 24, 32, kind, backend="inductor")
            torch.testing.assert_close(fused, mls.mls_grid(q, p, 24, 32, kind), atol=1e-3,
                                       rtol=0)
    with pytest.raises(ValueError, match="inference only"):
        mls.mls_deform(p.clone().requires_grad_(True), p, q, backend="inductor")
    with pytest.raises(ValueError, match="backend"):
        mls.mls_deform(p, p, q, backend="triton")


@pytest.mark.integration
def test_real_photo_smile_with_dlib_landmarks(media_dir):
    import cv2

    from facegeo.landmarks import detect_landmarks

    bgr = cv2.imread(str(media_dir / "lp_s1.jpg"))
    rgb = cv2.cvtColor(cv2.resize(bgr, (384, 384), interpolation=cv2.INTER_AREA),
                       cv2.COLOR_BGR2RGB)
    p = detect_landmarks(rgb, detector="dlib_hog")[None].float()
    q = p.clone()
    width = float((p[0, 54] - p[0, 48]).norm())
    q[0, 48] += torch.tensor([-0.08, -0.15]) * width
    q[0, 54] += torch.tensor([0.08, -0.15]) * width
    img = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    out, src = mls.warp_image(img, p, q, "rigid", pin_border=True, return_grid=True)
    assert out.shape == img.shape and torch.isfinite(out).all()
    # the output at q_i shows the input at p_i (both sampled bilinearly at sub-pixel points)
    from facegeo.coords import pixel_to_normalized

    def sample(im, pts):
        grid = pixel_to_normalized(pts, (384, 384))[:, None]
        return torch.nn.functional.grid_sample(im, grid, align_corners=False)[:, :, 0]

    # (bilinear reading of the map between pixel centres: the map has a kink at each q_i)
    torch.testing.assert_close(sample(src.permute(0, 3, 1, 2), q), p.transpose(1, 2),
                               atol=0.5, rtol=0)
    # unmoved landmarks (eyes, nose, jaw) stay put; the mouth corners really moved
    still = torch.ones(68, dtype=torch.bool)
    still[[48, 54]] = False
    grid_at = sample(src.permute(0, 3, 1, 2), p[:, still]).transpose(1, 2)
    torch.testing.assert_close(grid_at, p[:, still], atol=0.05, rtol=0)
    assert (out - img).abs().amax(1)[0].max() > 0.1
    # pinned frame: the border rows and columns barely change
    assert (out - img)[..., 0, :].abs().max() < 0.05
    assert (out - img)[..., :, -1].abs().max() < 0.05


def test_weights_finite_for_collapsed_points_without_validation():
    # learned keypoints can collapse early in training; kind=None must stay finite
    k = torch.zeros(1, 4, 2)
    for grid in (torch.rand(3, 3, 2), torch.zeros(2, 2, 2)):
        wm = mls.weighted_motion(k + 0.1, k, grid, kind=None, validate=False)
        torch.testing.assert_close(wm.weights, torch.full_like(wm.weights, 0.25))
        torch.testing.assert_close(wm.k_s_star, torch.full_like(wm.k_s_star, 0.1))
