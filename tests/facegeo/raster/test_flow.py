"""Tests for facegeo.raster.flow: analytic flows, occlusion, pinhole transfer, warping."""

from __future__ import annotations

import numpy as np
import torch

import facegeo.assets
from facegeo.raster import flow_to_color, interpolate, mesh_flow, rasterize, warp_flow


def _grid_mesh(n: int = 6, lo: float = 3.3, hi: float = 20.6, z: float = 5.0):
    """Flat square grid mesh (CCW on screen), (V, 3) float64 and (F, 3)."""
    t = np.linspace(lo, hi, n)
    xs, ys = np.meshgrid(t, t)
    v = np.stack([xs.ravel(), ys.ravel(), np.full(n * n, z)], 1)
    f = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            f += [[a, c, b], [b, c, d]]
    return torch.tensor(v), torch.tensor(f)


def test_identity_and_affine_flow_are_exact():
    v, f = _grid_mesh()
    src = v[None]
    res = mesh_flow(src, src, f, 24, 24)
    assert res.valid.sum() > 200
    assert res.flow[res.valid].abs().max() < 1e-12
    assert not res.occluded.any()
    # driving = affine image of source: x_d = A x_s + t  =>  backward flow maps to A^-1(x - t)
    A = torch.tensor([[0.9, -0.25], [0.3, 1.1]], dtype=torch.float64)
    t = torch.tensor([1.7, -2.2], dtype=torch.float64)
    drv = src.clone()
    drv[..., :2] = src[..., :2] @ A.T + t
    res = mesh_flow(src, drv, f, 24, 24)
    ys, xs = torch.nonzero(res.valid[0], as_tuple=True)
    p = torch.stack([xs, ys], 1).to(torch.float64)
    expect = (p - t) @ torch.linalg.inv(A).T
    torch.testing.assert_close(res.src_xy[0, ys, xs], expect, atol=1e-9, rtol=0)
    torch.testing.assert_close(res.flow[0, ys, xs], expect - p, atol=1e-9, rtol=0)
    assert (res.flow[~res.valid] == 0).all()


def test_occlusion_in_source_view():
    # two parallel squares: in the source the small one (near) hides part of the big one;
    # in the driving view the small one moved far to the right.
    big_v, big_f = _grid_mesh(4, 2.2, 21.4, z=10.0)
    small_v, small_f = _grid_mesh(3, 8.1, 14.3, z=2.0)
    v = torch.cat([big_v, small_v])
    f = torch.cat([big_f, small_f + big_v.shape[0]])
    src = v[None].clone()
    drv = v[None].clone()
    drv[0, big_v.shape[0] :, 0] += 20.0  # no longer overlaps the big square
    res = mesh_flow(src, drv, f, 24, 40)
    big = res.driving.face_id[0] < big_f.shape[0]
    # driving pixels of the big square that the small square covers in the source
    ys, xs = torch.nonzero(res.valid[0] & big, as_tuple=True)
    under = (xs >= 8.1) & (xs <= 14.3) & (ys >= 8.1) & (ys <= 14.3)
    occ = res.occluded[0, ys, xs]
    assert under.sum() > 20
    assert torch.equal(occ, under)
    # the small square itself is visible in the source: not occluded
    small = res.valid[0] & (res.driving.face_id[0] >= big_f.shape[0])
    assert small.sum() > 20 and not res.occluded[0][small].any()
    assert torch.equal(res.visible, res.valid & ~res.occluded)


def test_pinhole_transfer_matches_reprojection():
    # a 3D surface (two triangles) seen from two pinhole cameras
    P = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.4], [1.0, 1.0, 0.0], [-1.0, 1.0, -0.3]])
    f = torch.tensor([[0, 3, 2], [0, 2, 1]])
    fx, c = 30.0, 15.5

    def cam(R, t):
        X = P @ R.T + t
        img = np.stack([fx * X[:, 0] / X[:, 2] + c, fx * X[:, 1] / X[:, 2] + c, X[:, 2]], 1)
        return X, torch.tensor(img)[None]

    a = np.deg2rad(25)
    Ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    Xs, src = cam(np.eye(3), np.array([0.1, 0.0, 4.0]))
    Xd, drv = cam(Ry, np.array([-0.2, 0.1, 4.5]))
    res = mesh_flow(src, drv, f, 32, 32, perspective_correct=True)
    m = res.valid[0]
    assert m.sum() > 150
    # 3D point seen at each driving pixel (perspective-correct interpolation of the
    # *object-space* positions) projected with the source camera
    obj = interpolate(torch.tensor(P)[None], res.driving, f)[0][m].numpy()
    Xsrc = obj + np.array([0.1, 0.0, 4.0])
    expect = np.stack([fx * Xsrc[:, 0] / Xsrc[:, 2] + c, fx * Xsrc[:, 1] / Xsrc[:, 2] + c], 1)
    np.testing.assert_allclose(res.src_xy[0][m].numpy(), expect, atol=1e-8)
    np.testing.assert_allclose(res.src_depth[0][m].numpy(), Xsrc[:, 2], atol=1e-8)


def test_warp_integer_shift_and_convention():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 10, 12, generator=g, dtype=torch.float64)
    flow = torch.zeros(2, 10, 12, 2, dtype=torch.float64)
    flow[..., 0] = 2.0  # sample 2 pixels to the right
    flow[..., 1] = -1.0  # and one up
    out = warp_flow(img, flow)
    torch.testing.assert_close(out[:, :, 1:, :-2], img[:, :, :-1, 2:])
    assert (out[:, :, 0] == 0).all() and (out[:, :, :, -2:] == 0).all()
    # half-pixel shift = average of neighbours (bilinear)
    flow[..., 0], flow[..., 1] = 0.5, 0.0
    out = warp_flow(img, flow)
    torch.testing.assert_close(out[..., :-1], 0.5 * (img[..., :-1] + img[..., 1:]))


def test_render_warp_consistency_on_ict():
    """Warping a rendered source by the mesh flow reproduces the rendered driving image."""
    d = np.load(facegeo.assets.resolve("ict_facekit"))
    v = torch.tensor(d["mean"], dtype=torch.float64)
    f = torch.tensor(d["faces"].astype(np.int64))
    jaw = list(d["exp_names"]).index("jawOpen")
    S = 96

    def pose(verts, yaw):
        a = np.deg2rad(yaw)
        R = torch.tensor(
            [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], dtype=v.dtype
        )
        x = verts @ R.T
        s = S * 0.8 / 34.0
        return torch.stack([x[:, 0] * s + S / 2 + 0.3, -x[:, 1] * s + S / 2 + 0.2, -x[:, 2] * s], 1)

    src = pose(v, -20)[None]
    drv = pose(v + 0.8 * torch.tensor(d["exp_basis"][jaw], dtype=v.dtype), 15)[None]
    # smooth procedural texture on the surface, a function of the rest-pose position
    tex = 0.5 + 0.5 * torch.sin(v[:, :3] * torch.tensor([0.45, 0.35, 0.25], dtype=v.dtype))
    rs = rasterize(src, f, S, S, cull_backfaces=True)
    rd = rasterize(drv, f, S, S, cull_backfaces=True)
    img_s = interpolate(tex, rs, f).permute(0, 3, 1, 2)
    img_d = interpolate(tex, rd, f).permute(0, 3, 1, 2)
    res = mesh_flow(src, drv, f, S, S, cull_backfaces=True)
    warped = warp_flow(img_s, res.flow)
    vis = res.visible[0]
    # keep away from the source silhouette, where bilinear sampling mixes in background
    mask_s = rs.mask.double()[None]
    inner = torch.nn.functional.avg_pool2d(mask_s, 3, 1, 1)[0, 0] > 0.999
    src_inner = warp_flow(inner.double()[None, None], res.flow)[0, 0] > 0.999
    sel = vis & src_inner
    assert sel.sum() > 0.5 * rd.mask.sum()
    err = (warped[0] - img_d[0]).abs().amax(0)[sel]
    assert err.mean() < 0.005 and torch.quantile(err, 0.95) < 0.015, (err.mean(), err.max())
    # without the flow the images disagree clearly (the test can fail)
    err0 = (img_s[0] - img_d[0]).abs().amax(0)[sel]
    assert err0.mean() > 10 * err.mean()
    # turning the head hides part of one cheek in the source: some pixels are occluded
    assert res.occluded.sum() > 20


def test_flow_to_color():
    flow = torch.zeros(1, 2, 2, 2)
    flow[0, 0, 1] = torch.tensor([1.0, 0.0])  # +x: red
    flow[0, 1, 0] = torch.tensor([0.0, 1.0])  # +y (down)
    rgb = flow_to_color(flow)
    assert rgb.shape == (1, 3, 2, 2)
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.ones(3))
    torch.testing.assert_close(rgb[0, :, 0, 1], torch.tensor([1.0, 0.0, 0.0]))
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_flow_validation():
    v, f = _grid_mesh()
    import pytest

    with pytest.raises(ValueError, match="same shape"):
        mesh_flow(v[None], v[None, :-1], f[:2], 8, 8)
    with pytest.raises(ValueError, match="flow"):
        warp_flow(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, 3))


def test_warp_flow_on_a_non_square_source_and_old_name():
    """A (4, 9) source warped onto a (3, 5) flow: out = image[i + fy, j + fx] (direct
    indexing as the reference); the deprecated facegeo.raster.warp agrees and warns."""
    import pytest

    from facegeo import raster

    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 2, 4, 9, generator=g, dtype=torch.float64)
    flow = torch.zeros(1, 3, 5, 2, dtype=torch.float64)
    flow[..., 0], flow[..., 1] = 3.0, 1.0
    out = warp_flow(img, flow)
    assert out.shape == (1, 2, 3, 5)
    torch.testing.assert_close(out[0], img[0, :, 1:4, 3:8])
    with pytest.warns(DeprecationWarning, match="warp_flow"):
        old = raster.warp(img, flow, padding_mode="border")
    torch.testing.assert_close(old, warp_flow(img, flow, padding_mode="border"), atol=0, rtol=0)
