"""Numeric reliability of the geometry library: non-finite input is refused with a clear
ValueError at the public entry points (never a silent NaN / zero / dropped mesh), MLS stays
finite and correct where naive weights underflow, and property-based checks (hypothesis)
that every geometry op returns finite output or raises ValueError."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facegeo import mesh, mls, raster
from facegeo import transforms as T
from facegeo.fitting import validate_landmarks

NAN, INF = float("nan"), float("inf")


# ----------------------------------------------------------------------------- small meshes
def _grid_mesh(n: int = 4, dtype=torch.float64):
    """(n*n, 3) vertices of a slightly bumpy grid in [0, 1]^2 and its (2 (n-1)^2, 3) faces."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, n, dtype=dtype),
                            torch.linspace(0, 1, n, dtype=dtype), indexing="ij")
    z = 0.1 * torch.sin(3 * xs) * torch.cos(2 * ys)
    v = torch.stack([xs, ys, z], -1).reshape(-1, 3)
    f = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            f += [[a, b, d], [a, d, c]]
    return v, torch.tensor(f, dtype=torch.int64)


def _screen_mesh(h: int = 16, w: int = 16, dtype=torch.float64):
    """The grid mesh scaled into an h x w image (counter-clockwise on screen), (1, V, 3)."""
    v, f = _grid_mesh(4, dtype)
    s = torch.tensor([w - 3.0, h - 3.0, 5.0], dtype=dtype)
    vs = v * s + torch.tensor([1.0, 1.0, 2.0], dtype=dtype)
    return vs[None], f[:, [0, 2, 1]]


# ============================================================================ item 7: mesh
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_cotangent_laplacian_rejects_nonfinite_vertex(bad):
    v, f = _grid_mesh()
    v[5, 1] = bad
    with pytest.raises(ValueError, match=r"vertices.*vertex 5"):
        mesh.cotangent_laplacian(v, f)
    with pytest.raises(ValueError, match=r"vertices.*vertex 5"):
        mesh.cotangent_laplacian(v[None].repeat(2, 1, 1), f)


def test_mass_matrix_and_cotangent_weights_reject_nonfinite_vertex():
    v, f = _grid_mesh()
    v[3, 0] = NAN
    for kind in ("voronoi", "barycentric"):
        with pytest.raises(ValueError, match=r"vertices.*vertex 3"):
            mesh.mass_matrix(v, f, kind)
    with pytest.raises(ValueError, match="vertices"):
        mesh.cotangent_weights(v, f)
    with pytest.raises(ValueError, match="vertices"):
        mesh.laplacian_smooth(v, f, 2, method="cotangent")


def test_largest_eigenvalue_rejects_nonfinite_matrix():
    v, f = _grid_mesh()
    L = mesh.uniform_laplacian(f).coalesce()
    vals = L.values().clone()
    vals[0] = NAN
    Lb = torch.sparse_coo_tensor(L.indices(), vals, L.shape)
    with pytest.raises(ValueError, match="L contains NaN or inf"):
        mesh.largest_eigenvalue(Lb)
    big = torch.sparse_coo_tensor(torch.stack([torch.arange(100)] * 2),
                                  torch.full((100,), INF), (100, 100))
    with pytest.raises(ValueError, match="L contains NaN or inf"):
        mesh.largest_eigenvalue(big)
    with pytest.raises(ValueError, match="L contains NaN or inf"):
        mesh.scaled_laplacian(Lb)


def test_lerp_and_blend_reject_nonfinite_weights():
    a, b = torch.zeros(4, 3), torch.ones(4, 3)
    with pytest.raises(ValueError, match="t"):
        mesh.lerp(a, b, NAN)
    with pytest.raises(ValueError, match="t"):
        mesh.lerp(a, b, [0.0, INF])
    with pytest.raises(ValueError, match="weights"):
        mesh.blend(torch.stack([a, b]), torch.tensor([NAN, 0.5]), affine=False)


# ============================================================================ item 7: raster
@pytest.mark.parametrize("backend", raster.available_backends())
@pytest.mark.parametrize("bad", [NAN, INF])
def test_rasterize_rejects_nonfinite_vertex_every_backend(backend, bad):
    v, f = _screen_mesh()
    frags = raster.rasterize(v, f, 16, 16, backend=backend)
    assert frags.mask.sum() > 100
    v = v.clone()
    v[0, 6, 2] = bad
    with pytest.raises(ValueError, match=r"verts.*\[0, 6\]"):
        raster.rasterize(v, f, 16, 16, backend=backend)


def test_rasterize_ignores_nonfinite_unreferenced_vertex():
    v, f = _screen_mesh()
    extra = torch.tensor([[[NAN, NAN, NAN]]], dtype=v.dtype)
    a = raster.rasterize(v, f, 16, 16, backend="torch")
    b = raster.rasterize(torch.cat([v, extra], 1), f, 16, 16, backend="torch")
    assert torch.equal(a.face_id, b.face_id)


def test_mesh_flow_rejects_nonfinite_vertices():
    v, f = _screen_mesh()
    d = v.clone()
    d[0, 2, 0] = NAN
    with pytest.raises(ValueError, match="drv_verts"):
        raster.mesh_flow(v, d, f, 16, 16)
    with pytest.raises(ValueError, match="src_verts"):
        raster.mesh_flow(d, v, f, 16, 16)


def test_interpolate_rejects_nonfinite_attributes():
    v, f = _screen_mesh()
    frags = raster.rasterize(v, f, 16, 16)
    attrs = torch.rand(1, v.shape[1], 3, dtype=v.dtype)
    attrs[0, 4, 1] = NAN
    with pytest.raises(ValueError, match=r"attrs.*\[0, 4\]"):
        raster.interpolate(attrs, frags, f)
    with pytest.raises(ValueError, match="background"):
        raster.interpolate(attrs.nan_to_num(), frags, f, background=NAN)


# ============================================================================ item 7: MLS
def _reference_mls(v, p, q, kind, alpha):
    """Float64 numpy MLS (Schaefer et al. 2006), written independently of facegeo.mls:
    complex numbers for the similarity / rigid closed forms, a 2x2 solve for affine."""
    v, p, q = (np.asarray(x, dtype=np.float64) for x in (v, p, q))
    r2 = ((p[None] - v[:, None]) ** 2).sum(-1)  # (M, N)
    w = r2 ** -alpha
    w = w / w.sum(1, keepdims=True)
    ps, qs = w @ p, w @ q  # (M, 2)
    ph, qh = p[None] - ps[:, None], q[None] - qs[:, None]  # (M, N, 2)
    x = v - ps
    if kind == "affine":
        a = np.einsum("mn,mni,mnj->mij", w, ph, ph)
        b = np.einsum("mn,mni,mnj->mij", w, ph, qh)
        return np.einsum("mi,mij->mj", x, np.linalg.solve(a, b)) + qs
    pc, qc, xc = ph[..., 0] + 1j * ph[..., 1], qh[..., 0] + 1j * qh[..., 1], x[:, 0] + 1j * x[:, 1]
    s = (w * np.conj(pc) * qc).sum(1)
    c = s / (w * np.abs(pc) ** 2).sum(1) if kind == "similarity" else s / np.abs(s)
    y = xc * c
    return np.stack([y.real, y.imag], -1) + qs


def _six_points(tight: bool = True):
    """Six control points: tight (spread ~3 px near (100, 100): naive float32 weights of
    the far pixels of a 2048 image underflow) or wide (spread ~140 px mid-image)."""
    if tight:
        p = torch.tensor([[[100.0, 100.0], [104.0, 101.0], [102.0, 105.0], [98.0, 104.0],
                           [105.0, 106.0], [101.0, 97.0]]])
        d = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 1.0],
                           [-1.0, 1.0]]])
    else:
        p = torch.tensor([[[900.0, 900.0], [1100.0, 905.0], [1010.0, 1000.0], [905.0, 1110.0],
                           [1120.0, 1100.0], [1000.0, 1210.0]]])
        d = torch.tensor([[[5.0, -3.0], [-4.0, 2.0], [3.0, 6.0], [-2.0, -5.0], [6.0, 1.0],
                           [-3.0, 4.0]]])
    return p, p + d


def test_naive_float32_weights_underflow_in_the_test_case():
    """Precondition of the next tests: far from the control points the naive float32
    weights |p - v|^(-2 alpha) (even relative to the point spread) all underflow to 0."""
    p, _ = _six_points()
    v = torch.tensor([[2047.0, 0.0], [0.0, 2047.0], [2047.0, 2047.0]])
    r2 = (p[0, None] - v[:, None]).square().sum(-1)
    s2 = (p[0] - p[0].mean(0)).square().sum(-1).mean()
    tiny = torch.finfo(torch.float32).tiny  # below: subnormal or 0
    assert ((r2 / s2).pow(-8.0).sum(-1) < tiny).all()
    assert (r2.pow(-8.0).sum(-1) < tiny).all()


@pytest.mark.parametrize("tight", [True, False])
@pytest.mark.parametrize("kind", ["rigid", "similarity", "affine"])
@pytest.mark.parametrize("alpha", [4.0, 8.0])
def test_mls_far_queries_large_alpha_match_float64_reference(kind, alpha, tight):
    p, q = _six_points(tight)
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.rand(1, 3000, 2, generator=g) * 2047,
                   torch.tensor([[[0.0, 0.0], [2047.0, 0.0], [0.0, 2047.0], [2047.0, 2047.0]]])],
                  1)
    # the reference has no near-collinear regularisation of the affine fit
    out = mls.mls_deform(v, p, q, kind, alpha, affine_eps=0.0)
    assert torch.isfinite(out).all()
    # queries outside the clamp disks (radius rho * scale) around the control points
    scale = (p - p.mean(1, keepdim=True)).square().sum(-1).mean().sqrt()
    far = (torch.cdist(v, p)[0].min(-1).values > 2 * mls._rho(alpha) * scale).numpy()
    assert far.mean() > 0.95
    ref = _reference_mls(v[0], p[0], q[0], kind, alpha)
    err = np.abs(out[0].double().numpy() - ref)[far].max()
    assert err < 1e-2, err  # pixels, on a 2048 image (float32)
    out64 = mls.mls_deform(v.double(), p.double(), q.double(), kind, alpha, affine_eps=0.0)
    np.testing.assert_allclose(out64[0].numpy()[far], ref[far], atol=1e-6)


def test_mls_grid_2048_alpha8_is_finite():
    p, q = _six_points()
    out = mls.mls_grid(p, q, 2048, 2048, "rigid", 8.0, grid_step=16)
    assert torch.isfinite(out).all()
    # full resolution on a band of far rows (every pixel of rows 0 and 2047)
    xs = torch.arange(2048.0)
    v = torch.cat([torch.stack([xs, torch.zeros_like(xs)], -1),
                   torch.stack([xs, torch.full_like(xs, 2047.0)], -1)])[None]
    out = mls.mls_deform(v, p, q, "rigid", 8.0)
    ref = _reference_mls(v[0], p[0], q[0], "rigid", 8.0)
    assert np.abs(out[0].double().numpy() - ref).max() < 2e-3


@pytest.mark.parametrize("kind", ["rigid", "similarity", "affine"])
@pytest.mark.parametrize("alpha", [1.0, 2.0, 8.0])
def test_mls_still_exact_at_control_points(kind, alpha):
    p, q = _six_points()
    out = mls.mls_deform(p, p, q, kind, alpha)
    torch.testing.assert_close(out, q, atol=2e-3, rtol=0)
    out = mls.mls_deform(p.double(), p.double(), q.double(), kind, alpha)
    torch.testing.assert_close(out, q.double(), atol=1e-8, rtol=0)


def test_mls_inductor_backend_far_queries_finite():
    pytest.importorskip("torch._inductor")
    p, q = _six_points()
    v = torch.tensor([[[0.0, 0.0], [2047.0, 2047.0], [1000.0, 1000.0]]])
    # alpha > 1 runs the eager centred sums on either backend (the fused kernel is alpha <= 1)
    try:
        out = mls.mls_deform(v, p, q, "rigid", 8.0, backend="inductor")
    except Exception as exc:  # noqa: BLE001 - no compiler available
        pytest.skip(f"inductor unavailable: {exc}")
    ref = _reference_mls(v[0], p[0], q[0], "rigid", 8.0)
    assert np.abs(out[0].double().numpy() - ref).max() < 2e-3


def test_weighted_motion_far_queries_finite():
    p, q = _six_points()
    ys, xs = torch.meshgrid(torch.linspace(0, 2047, 9), torch.linspace(0, 2047, 9),
                            indexing="ij")
    grid = torch.stack([xs, ys], -1)
    for kind in (None, "affine", "rigid"):
        wm = mls.weighted_motion(q, p, grid, alpha=8.0, kind=kind)
        assert torch.isfinite(wm.weights).all()
        torch.testing.assert_close(wm.weights.sum(-1), torch.ones(1, 9, 9))
        assert torch.isfinite(wm.k_d_star).all() and torch.isfinite(wm.k_s_star).all()
        if kind is not None:
            ref = _reference_mls(grid.reshape(-1, 2), p[0], q[0], kind, 8.0)
            assert np.abs(wm.flow.reshape(-1, 2).double().numpy() - ref).max() < 0.05 \
                or kind == "affine"  # (near-collinear regularisation, see above)
            assert torch.isfinite(wm.flow).all()


def test_weighted_motion_unchanged_on_normal_inputs():
    """Normalised weights in the frame of [-1, 1] keypoints: the safe form equals the
    paper's w_n / sum w_n (float64 reference) to 1e-6."""
    g = torch.Generator().manual_seed(1)
    k_d = torch.rand(2, 10, 2, generator=g) * 2 - 1
    k_s = k_d + 0.1 * torch.randn(2, 10, 2, generator=g)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    grid = torch.stack([xs, ys], -1)
    for alpha in (0.5, 1.0):
        wm = mls.weighted_motion(k_s, k_d, grid, alpha=alpha, kind=None)
        r2 = (k_d.double()[:, None, None] - grid.double()[None, :, :, None]).square().sum(-1)
        w = r2 ** -alpha
        w = w / w.sum(-1, keepdim=True)
        torch.testing.assert_close(wm.weights.double(), w, atol=1e-6, rtol=0)


# ============================================================================ item 11
def test_heatmaps_reject_nan_landmarks_unless_skipped():
    pts = torch.tensor([[[3.0, 4.0], [NAN, 2.0]]])
    with pytest.raises(ValueError, match=r"points.*\[0, 1\]"):
        raster.heatmaps(pts, 8, 8)
    hm = raster.heatmaps(pts, 8, 8, missing="skip")
    assert (hm[0, 1] == 0).all() and hm[0, 0].max() == 1
    with pytest.raises(ValueError, match="inf"):
        raster.heatmaps(torch.tensor([[[INF, 2.0]]]), 8, 8, missing="skip")
    with pytest.raises(ValueError, match="missing"):
        raster.heatmaps(pts, 8, 8, missing="zero")


def test_part_maps_reject_nan_landmarks_unless_skipped():
    pts = torch.rand(1, 68, 2) * 10
    pts[0, 30] = NAN
    with pytest.raises(ValueError, match=r"points.*\[0, 30\]"):
        raster.part_maps(pts, 12, 12)
    with pytest.raises(ValueError, match=r"points.*\[0, 30\]"):
        raster.draw_landmark_lines(pts, 12, 12)
    m = raster.part_maps(pts, 12, 12, missing="skip")
    assert torch.isfinite(m).all()
    img = raster.draw_landmark_lines(pts, 12, 12, missing="skip")
    assert torch.isfinite(img).all()


def _lm68(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 68, 2, generator=g) * 100


def test_validate_landmarks_rejects_nan_visibility():
    vis = torch.ones(1, 68)
    vis[0, 3] = NAN
    with pytest.raises(ValueError, match="visibility"):
        validate_landmarks(_lm68(), vis)


@pytest.mark.parametrize("name,value", [("lambda_id", NAN), ("lambda_exp", NAN),
                                        ("lambda_id", INF), ("lambda_exp", -1.0),
                                        ("smooth_pose", NAN), ("smooth_exp", INF)])
def test_fitter_rejects_nonfinite_or_negative_weights(name, value):
    from facegeo.fitting import LandmarkFitter

    fitter = LandmarkFitter.__new__(LandmarkFitter)  # the checks run before any model use
    kw = {name: value}
    if name.startswith("smooth"):
        kw["shared_identity"] = True
    with pytest.raises(ValueError, match=name):
        fitter.fit(_lm68(), **kw)


# ============================================================================ property-based
# "finite output or a ValueError", never a silent NaN, over random finite and non-finite
# input. Tiny sizes and few examples keep the whole section to a few seconds.
_PROP = settings(max_examples=30, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_special = st.sampled_from([NAN, INF, -INF])


def _finite_or_valueerror(fn, *args, **kw):
    try:
        out = fn(*args, **kw)
    except ValueError:
        return None
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        if not isinstance(o, (torch.Tensor, float)):
            continue
        if isinstance(o, torch.Tensor) and o.layout != torch.strided:
            o = o.coalesce().values() if o.layout == torch.sparse_coo else o.values()
        o = torch.as_tensor(o)
        if o.is_floating_point():
            assert torch.isfinite(o).all(), f"silent non-finite output of {fn.__name__}"
    return out


@st.composite
def _arrays(draw, shape, lo=-50.0, hi=50.0, dtype=torch.float64):
    """Random array of ``shape``; with probability ~1/3 a few entries are NaN/inf."""
    n = int(np.prod(shape))
    vals = draw(st.lists(st.floats(lo, hi, allow_nan=False), min_size=n, max_size=n))
    x = torch.tensor(vals, dtype=dtype).reshape(shape)
    if draw(st.integers(0, 2)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            x.view(-1)[draw(st.integers(0, n - 1))] = draw(_special)
    return x


@_PROP
@given(data=st.data(), kind=st.sampled_from(["rigid", "similarity", "affine"]),
       alpha=st.sampled_from([0.5, 1.0, 2.0, 8.0]), dtype=st.sampled_from([torch.float32,
                                                                          torch.float64]))
def test_property_mls_points_and_grid(data, kind, alpha, dtype):
    p = data.draw(_arrays((1, 5, 2), 0, 15, dtype))
    q = data.draw(_arrays((1, 5, 2), 0, 15, dtype))
    v = data.draw(_arrays((1, 7, 2), -200, 200, dtype))
    _finite_or_valueerror(mls.mls_deform, v, p, q, kind, alpha)
    _finite_or_valueerror(mls.mls_grid, p, q, 16, 16, kind, alpha)
    wm = _finite_or_valueerror(mls.weighted_motion, q, p, v.reshape(1, 7, 1, 2), alpha=alpha)
    if wm is not None:
        assert all(torch.isfinite(t).all() for t in wm if t is not None)


@_PROP
@given(data=st.data(), batched=st.booleans())
def test_property_laplacians(data, batched):
    _, f = _grid_mesh(3)
    v = data.draw(_arrays((2, 9, 3) if batched else (9, 3), -5, 5))
    _finite_or_valueerror(mesh.uniform_laplacian, f)
    _finite_or_valueerror(mesh.cotangent_laplacian, v, f)
    _finite_or_valueerror(mesh.mass_matrix, v, f)
    _finite_or_valueerror(mesh.mass_matrix, v, f, "barycentric")
    _finite_or_valueerror(mesh.laplacian_smooth, v, f, 2, method="cotangent")
    L = _finite_or_valueerror(mesh.cotangent_laplacian, v[0] if batched else v, f)
    if L is not None:
        lam = _finite_or_valueerror(mesh.largest_eigenvalue, L)
        assert math.isfinite(lam)


@_PROP
@given(data=st.data(), backend=st.sampled_from(raster.available_backends()),
       cull=st.booleans(), persp=st.booleans())
def test_property_rasterizer(data, backend, cull, persp):
    _, f = _screen_mesh()
    v = data.draw(_arrays((1, 16, 3), -4, 20))
    if persp:
        v[..., 2] = v[..., 2].abs() + 1
    frags = _finite_or_valueerror(raster.rasterize, v, f, 16, 16, backend=backend,
                                  cull_backfaces=cull, perspective_correct=persp)
    if frags is None:
        assert not torch.isfinite(v).all()
        return
    assert torch.isfinite(frags.bary).all() and torch.isfinite(frags.depth).all()
    _finite_or_valueerror(raster.interpolate, v, frags, f)


@_PROP
@given(data=st.data())
def test_property_landmark_drawing(data):
    pts = data.draw(_arrays((1, 68, 2), -3, 19, torch.float32))
    for missing in ("raise", "skip"):
        _finite_or_valueerror(raster.heatmaps, pts, 16, 16, missing=missing)
        _finite_or_valueerror(raster.heatmaps, pts, 16, 16, missing=missing, normalize=True)
        _finite_or_valueerror(raster.draw_landmark_lines, pts, 16, 16, missing=missing)


@_PROP
@given(data=st.data())
def test_property_transform_round_trips(data):
    ang = data.draw(_arrays((4, 3), -80, 80))
    R = _finite_or_valueerror(T.euler_to_matrix, ang)
    if R is not None:
        back = _finite_or_valueerror(T.matrix_to_euler, R)
        torch.testing.assert_close(T.euler_to_matrix(back), R, atol=1e-9, rtol=0)
    aa = data.draw(_arrays((4, 3), -3, 3))
    R = _finite_or_valueerror(T.axis_angle_to_matrix, aa)
    if R is not None:
        back = _finite_or_valueerror(T.matrix_to_axis_angle, R)
        torch.testing.assert_close(T.axis_angle_to_matrix(back), R, atol=1e-8, rtol=0)
    m = data.draw(_arrays((2, 3, 3), -2, 2))
    _finite_or_valueerror(T.matrix_to_euler, m)
    _finite_or_valueerror(T.matrix_to_axis_angle, m)


@_PROP
@given(data=st.data(), lam=st.sampled_from([0.0, 2e-4, 1.0, -1.0, NAN, INF]))
def test_property_fitting_validation(data, lam):
    """The checks in front of the solver: validated landmarks are finite where they count,
    bad prior weights are refused (the solver itself is exercised in test_fitting)."""
    from facegeo.fitting import LandmarkFitter

    x = data.draw(_arrays((2, 68, 2), 0, 100, torch.float32))
    vis = torch.tensor(data.draw(st.lists(st.booleans(), min_size=136, max_size=136))).view(2, 68)
    res = _finite_or_valueerror(validate_landmarks, x, vis | (torch.arange(68) < 10))
    if res is not None:
        xv, w = res
        assert torch.isfinite(xv).all() and torch.isfinite(w).all() and (w >= 0).all()
    fitter = LandmarkFitter.__new__(LandmarkFitter)
    if not (lam >= 0 and math.isfinite(lam)):
        with pytest.raises(ValueError, match="lambda_id"):
            fitter.fit(x, lambda_id=lam)
