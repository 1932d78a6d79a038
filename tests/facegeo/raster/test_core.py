"""Tests for facegeo.raster.core: analytic cases, brute force, open3d, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import facegeo.assets
from facegeo.raster import interpolate, rasterize, shade_lambert, vertex_normals


def _brute_force(verts: np.ndarray, faces: np.ndarray, H: int, W: int, cull: bool = False):
    """Independent float64 reference: loop over triangles, exact point-in-triangle."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    best = np.full((H, W), np.inf)
    fid = np.full((H, W), -1)
    bary = np.zeros((H, W, 3))
    for f, (a, b, c) in enumerate(faces):
        p0, p1, p2 = verts[a], verts[b], verts[c]
        M = np.array([[p0[0] - p2[0], p1[0] - p2[0]], [p0[1] - p2[1], p1[1] - p2[1]]])
        det = np.linalg.det(M)
        if det == 0 or (cull and det >= 0):
            continue
        inv = np.linalg.inv(M)
        l0 = inv[0, 0] * (xs - p2[0]) + inv[0, 1] * (ys - p2[1])
        l1 = inv[1, 0] * (xs - p2[0]) + inv[1, 1] * (ys - p2[1])
        l2 = 1 - l0 - l1
        inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        z = l0 * p0[2] + l1 * p1[2] + l2 * p2[2]
        win = inside & (z < best)
        best[win] = z[win]
        fid[win] = f
        bary[win] = np.stack([l0, l1, l2], -1)[win]
    return fid, np.where(fid >= 0, best, 0.0), bary


def _t(a, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def test_single_triangle_matches_brute_force():
    v = np.array([[2.3, 1.7, 5.0], [13.6, 4.2, 7.0], [5.1, 12.8, 3.0]])
    f = np.array([[0, 1, 2]])
    fr = rasterize(_t(v)[None], _t(f, torch.int64), 16, 18)
    fid, depth, bary = _brute_force(v, f, 16, 18)
    assert fr.face_id.shape == (1, 16, 18)
    assert torch.equal(fr.face_id[0], torch.as_tensor(fid))
    assert torch.equal(fr.mask[0], torch.as_tensor(fid >= 0))
    assert fr.mask.sum() > 30
    np.testing.assert_allclose(fr.depth[0].numpy(), depth, atol=1e-9)
    np.testing.assert_allclose(fr.bary[0].numpy(), bary, atol=1e-9)
    # barycentrics reproduce the pixel centre
    pos = interpolate(_t(v)[None], fr, _t(f, torch.int64))[0]
    ys, xs = np.nonzero(fid >= 0)
    np.testing.assert_allclose(pos[ys, xs, 0].numpy(), xs, atol=1e-9)
    np.testing.assert_allclose(pos[ys, xs, 1].numpy(), ys, atol=1e-9)


def test_two_overlapping_triangles_nearest_wins_any_order():
    v = np.array(
        [
            [1.2, 1.1, 2.0],
            [14.7, 2.3, 2.0],
            [3.3, 13.9, 2.0],  # flat at z = 2
            [2.1, 3.4, 0.5],
            [13.2, 12.6, 4.5],
            [10.4, 1.3, 3.0],
        ]  # slanted, crosses z = 2
    )
    for f in (np.array([[0, 1, 2], [3, 4, 5]]), np.array([[3, 4, 5], [0, 1, 2]])):
        fr = rasterize(_t(v)[None], _t(f, torch.int64), 16, 16)
        fid, depth, _ = _brute_force(v, f, 16, 16)
        assert torch.equal(fr.face_id[0], torch.as_tensor(fid))
        np.testing.assert_allclose(fr.depth[0].numpy(), depth, atol=1e-9)
        # both triangles are visible somewhere (the slanted one pierces the flat one)
        assert set(np.unique(fid)) == {-1, 0, 1}


def test_backface_culling_and_winding():
    # counter-clockwise on screen (y down): (0,0) -> (0,10) -> (10,0) is CCW when displayed
    ccw = np.array([[0.4, 0.3, 1.0], [0.6, 9.7, 1.0], [9.8, 0.5, 1.0]])
    cw = ccw[[0, 2, 1]]
    f = _t([[0, 1, 2]], torch.int64)
    for tri, front in ((ccw, True), (cw, False)):
        n = rasterize(_t(tri)[None], f, 12, 12).mask.sum()
        m = rasterize(_t(tri)[None], f, 12, 12, cull_backfaces=True).mask.sum()
        assert n > 40
        assert m == (n if front else 0)
    # a back face in front of a front face is culled, revealing the front face
    v = np.concatenate([ccw, cw - [0, 0, 0.5]])
    fr = rasterize(
        _t(v)[None], _t([[0, 1, 2], [3, 4, 5]], torch.int64), 12, 12, cull_backfaces=True
    )
    assert set(fr.face_id.unique().tolist()) == {-1, 0}
    fr = rasterize(_t(v)[None], _t([[0, 1, 2], [3, 4, 5]], torch.int64), 12, 12)
    assert set(fr.face_id.unique().tolist()) == {-1, 1}


def test_clipping_at_image_borders():
    # large triangle sticking out of all four sides, plus one entirely outside
    v = np.array(
        [
            [-20.5, -7.3, 1.0],
            [40.2, 3.1, 2.0],
            [4.4, 35.7, 3.0],
            [30, 30, 0],
            [40, 30, 0],
            [30, 40, 0],
        ]
    )
    f = np.array([[0, 1, 2], [3, 4, 5]])
    fr = rasterize(_t(v)[None], _t(f, torch.int64), 13, 17)
    fid, depth, bary = _brute_force(v, f, 13, 17)
    assert torch.equal(fr.face_id[0], torch.as_tensor(fid))
    np.testing.assert_allclose(fr.depth[0].numpy(), depth, atol=1e-9)
    np.testing.assert_allclose(fr.bary[0].numpy(), bary, atol=1e-9)
    assert fid[0, 0] == 0 and fid[-1, -1] == 0  # corners covered


def test_random_soup_matches_brute_force_batched():
    g = np.random.default_rng(0)
    B, F, H, W = 2, 40, 20, 24
    verts = np.concatenate([g.uniform([-3, -3, 0], [W + 3, H + 3, 10], (B, F * 3, 3))], 0)
    # mostly small triangles: shrink each towards its centroid
    tri = verts.reshape(B, F, 3, 3)
    cen = tri.mean(2, keepdims=True)
    scale = g.uniform(0.05, 0.6, (B, F, 1, 1))
    verts = (cen + (tri - cen) * scale).reshape(B, F * 3, 3)
    faces = np.arange(F * 3).reshape(F, 3)
    for dtype in (torch.float64, torch.float32):
        fr = rasterize(_t(verts, dtype), _t(faces, torch.int64), H, W)
        for b in range(B):
            fid, depth, _ = _brute_force(verts[b], faces, H, W)
            agree = (fr.face_id[b].numpy() == fid).mean()
            assert agree == 1.0 if dtype == torch.float64 else agree > 0.995
            np.testing.assert_allclose(fr.depth[b].numpy(), depth, atol=1e-4)


def _ict_image_space(size: int, yaw_deg: float = 0.0, offset=(0.37, 0.21)):
    d = np.load(facegeo.assets.resolve("ict_facekit"))
    v = d["mean"].astype(np.float64)
    a = np.deg2rad(yaw_deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    v = v @ R.T
    s = size * 0.9 / (v[:, 1].max() - v[:, 1].min())
    cy = (v[:, 1].max() + v[:, 1].min()) / 2
    # (x, y up, z to viewer) -> image space (x right, y down, z = depth away from camera)
    img = np.stack(
        [
            v[:, 0] * s + size / 2 + offset[0],
            -(v[:, 1] - cy) * s + size / 2 + offset[1],
            -v[:, 2] * s,
        ],
        1,
    )
    return img, d["faces"].astype(np.int64)


@pytest.mark.parametrize("size,yaw", [(128, 0.0), (192, 35.0)])
def test_ict_against_open3d_raycasting(size, yaw):
    import open3d as o3d

    v, f = _ict_image_space(size, yaw)
    fr = rasterize(torch.tensor(v, dtype=torch.float32)[None], torch.tensor(f), size, size)
    # independent reference: Embree ray casting, one orthographic ray per pixel centre along +z
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    z0 = v[:, 2].min() - 10
    rays = np.stack([xs, ys, np.full_like(xs, z0), 0 * xs, 0 * xs, 1 + 0 * xs], -1)
    hit = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
    t = hit["t_hit"].numpy()
    ref_mask = np.isfinite(t)
    ref_id = np.where(ref_mask, hit["primitive_ids"].numpy().astype(np.int64), -1)
    ref_depth = t + z0
    mask = fr.mask[0].numpy()
    assert (mask != ref_mask).sum() <= 0.001 * ref_mask.sum()
    both = mask & ref_mask
    agree = (fr.face_id[0].numpy()[both] == ref_id[both]).mean()
    assert agree >= 0.995, agree
    d = fr.depth[0].numpy()[both]
    rel = np.abs(d - ref_depth[both]) / np.abs(ref_depth[both]).clip(min=1.0)
    assert rel.max() < 1e-4, rel.max()
    # the open3d backend gives the same visibility through the same interface
    fo = rasterize(
        torch.tensor(v, dtype=torch.float32)[None], torch.tensor(f), size, size, backend="open3d"
    )
    assert (fo.face_id == fr.face_id).float().mean() > 0.999


def test_cull_backfaces_on_ict_keeps_only_front_faces():
    v, f = _ict_image_space(96, 50.0)
    vt = torch.tensor(v)[None]
    fr = rasterize(vt, torch.tensor(f), 96, 96, cull_backfaces=True)
    tv = vt[0][torch.tensor(f)[fr.pix_face]]
    area = (tv[:, 1, 0] - tv[:, 0, 0]) * (tv[:, 2, 1] - tv[:, 0, 1]) - (
        tv[:, 2, 0] - tv[:, 0, 0]
    ) * (tv[:, 1, 1] - tv[:, 0, 1])
    assert (area < 0).all()
    # outward normals of visible front faces point towards the camera (-z)
    n = interpolate(vertex_normals(vt, torch.tensor(f)), fr, torch.tensor(f))[fr.mask]
    assert (n[:, 2] < 0).float().mean() > 0.97


def test_perspective_correct_plane():
    # a slanted 3D quad seen by a pinhole camera (fx = fy = 40, cx = cy = 15.5)
    P = np.array([[-1.0, -1.0, 3.0], [1.2, -0.9, 5.0], [1.1, 1.0, 6.0], [-0.9, 1.1, 4.0]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    fx, cx = 40.0, 15.5
    img = np.stack([fx * P[:, 0] / P[:, 2] + cx, fx * P[:, 1] / P[:, 2] + cx, P[:, 2]], 1)
    fr = rasterize(_t(img)[None], _t(f, torch.int64), 32, 32, perspective_correct=True)
    m = fr.mask[0].numpy()
    assert m.sum() > 100
    # 3D point from perspective-correct barycentrics must lie on the camera ray of the pixel
    X = interpolate(_t(P)[None], fr, _t(f, torch.int64))[0].numpy()[m]
    ys, xs = np.nonzero(m)
    np.testing.assert_allclose(fx * X[:, 0] / X[:, 2] + cx, xs, atol=1e-8)
    np.testing.assert_allclose(fx * X[:, 1] / X[:, 2] + cx, ys, atol=1e-8)
    # and the depth is its camera z
    np.testing.assert_allclose(fr.depth[0].numpy()[m], X[:, 2], atol=1e-8)
    # plain screen-space interpolation would not satisfy this
    fl = rasterize(_t(img)[None], _t(f, torch.int64), 32, 32)
    Xl = interpolate(_t(P)[None], fl, _t(f, torch.int64))[0].numpy()[m]
    assert np.abs(fx * Xl[:, 0] / Xl[:, 2] + cx - xs).max() > 0.05


def test_interpolation_gradients():
    v = _t([[[1.3, 0.7, 5.0], [6.6, 2.2, 7.0], [2.1, 6.8, 3.0]]]).requires_grad_(True)
    f = _t([[0, 1, 2]], torch.int64)
    attr = torch.randn(1, 3, 2, dtype=torch.float64, requires_grad=True)

    def fn(verts, a):
        fr = rasterize(verts, f, 8, 8)
        return interpolate(a, fr, f), fr.depth

    assert torch.autograd.gradcheck(fn, (v, attr))
    # moving a vertex moves the interpolated position of fixed pixels: d(x)/d(v) is nonzero
    out, _ = fn(v, v.detach())
    assert out.requires_grad


def test_interpolate_with_separate_attribute_index():
    # per-corner attribute table (like faces_uv): same geometry, different attribute rows
    v = _t([[[0.5, 0.5, 1.0], [9.5, 0.5, 1.0], [0.5, 9.5, 1.0], [9.5, 9.5, 1.0]]])
    f = _t([[0, 1, 2], [1, 3, 2]], torch.int64)
    uv = _t([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [6.0, 5.0], [5.0, 6.0]])
    fuv = _t([[0, 1, 2], [4, 5, 3]], torch.int64)
    fr = rasterize(v, f, 10, 10)
    out = interpolate(uv, fr, fuv, background=-1.0)[0]
    ref = np.full((10, 10, 2), -1.0)
    for i in range(10):
        for j in range(10):
            k = fr.face_id[0, i, j].item()
            if k >= 0:
                ref[i, j] = (fr.bary[0, i, j, :, None] * uv[fuv[k]]).sum(0).numpy()
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    assert out.shape == (10, 10, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_interpolation_equals_the_torch_path(dtype):
    # without autograd the CPU path is the numba kernel; with a gradient asked for, torch's
    # gather-and-sum: both on a random batch, shared (1, A, C) and per-image attributes,
    # and a dense background image that shows through off the mesh
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(3)
    B, H, W = 3, 40, 48
    v = torch.rand(B, 30, 3, generator=g, dtype=torch.float64) * torch.tensor([W, H, 1.0])
    f = torch.randint(0, 30, (60, 3), generator=g)
    fr = rasterize(v, f, H, W)
    assert fr.mask.any() and not fr.mask.all()
    bg = torch.rand(B, H, W, 2, generator=g, dtype=dtype)
    for attrs in (torch.rand(1, 30, 2, generator=g, dtype=dtype),
                  torch.rand(B, 30, 2, generator=g, dtype=dtype)):
        fast = interpolate(attrs, fr, f, background=bg)
        ref = interpolate(attrs.clone().requires_grad_(True), fr, f, background=bg).detach()
        torch.testing.assert_close(fast, ref, rtol=1e-6 if dtype == torch.float32 else 1e-14,
                                   atol=0)
        torch.testing.assert_close(fast[~fr.mask], bg[~fr.mask], rtol=0, atol=0)
        # brute force at the covered pixels
        b, i, j = fr.mask.nonzero()[0].tolist()
        k = int(fr.face_id[b, i, j])
        a = attrs[b if attrs.shape[0] > 1 else 0]
        expect = (fr.bary[b, i, j, :, None].to(dtype) * a[f[k]]).sum(0)
        torch.testing.assert_close(fast[b, i, j], expect)
    with pytest.raises(ValueError, match="background image must have shape"):
        interpolate(attrs, fr, f, background=bg[:1])
    with pytest.raises(ValueError, match="attrs must have shape"):
        interpolate(torch.rand(2, 30, 2, dtype=dtype), fr, f)


def test_lambert_shading_of_tilted_plane():
    # plane tilted by 60 degrees about the y axis: n . l = cos(60) with a camera light
    c, s = np.cos(np.pi / 3), np.sin(np.pi / 3)
    P = np.array([[-5, -5, 0], [5, -5, 0], [5, 5, 0], [-5, 5, 0]], float)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    img = P @ R.T + [8, 8, 20]
    f = _t([[0, 3, 2], [0, 2, 1]], torch.int64)  # CCW on screen
    vt = _t(img)[None]
    fr = rasterize(vt, f, 16, 16)
    rgb = shade_lambert(vt, f, fr, ambient=0.2, diffuse=0.8, background=0.5)
    assert rgb.shape == (1, 3, 16, 16)
    m = fr.mask[0]
    np.testing.assert_allclose(rgb[0, :, m].numpy(), 0.85 * (0.2 + 0.8 * 0.5), atol=1e-9)
    assert torch.all(rgb[0, :, ~m] == 0.5)


def test_input_validation():
    v = torch.zeros(1, 3, 3)
    f = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="verts"):
        rasterize(torch.zeros(3, 3), f, 4, 4)
    with pytest.raises(ValueError, match="faces"):
        rasterize(v, torch.tensor([0, 1, 2]), 4, 4)
    with pytest.raises(ValueError, match="out of range"):
        rasterize(v, torch.tensor([[0, 1, 3]]), 4, 4)
    with pytest.raises(TypeError, match="integer"):
        rasterize(v, f.float(), 4, 4)
    with pytest.raises(ValueError, match="image size"):
        rasterize(v, f, 0, 4)
    with pytest.raises(ValueError, match="backend"):
        rasterize(v, f, 4, 4, backend="opengl")
    fr = rasterize(v, f, 4, 4)
    assert fr.mask.sum() == 0 and (fr.face_id == -1).all()
    with pytest.raises(ValueError, match="attrs"):
        interpolate(torch.zeros(2, 3, 1), fr, f)


def test_pytorch3d_backend_is_optional_with_clear_message():
    from facegeo.raster import available_backends

    backends = available_backends()
    try:
        import open3d  # noqa: F401

        has_open3d = True
    except ImportError:  # a core-only install (tests/project/test_core_install.py)
        has_open3d = False
    assert backends[0] == "torch" and ("open3d" in backends) == has_open3d
    try:
        import pytorch3d  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="PyTorch3D"):
            rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), 4, 4, backend="pytorch3d")
    else:  # pragma: no cover - not installed in this environment
        v, f = _ict_image_space(64)
        a = rasterize(torch.tensor(v, dtype=torch.float32)[None], torch.tensor(f), 64, 64)
        b = rasterize(
            torch.tensor(v, dtype=torch.float32)[None], torch.tensor(f), 64, 64, backend="pytorch3d"
        )
        assert (a.face_id == b.face_id).float().mean() > 0.995


def test_cpu_batch_groups_give_the_same_fragments(monkeypatch):
    import facegeo.raster.core as core

    g = np.random.default_rng(3)
    B, F, H, W = 3, 30, 14, 15
    verts = g.uniform([-2, -2, 0], [W + 2, H + 2, 5], (B, F * 3, 3))
    faces = torch.arange(F * 3).reshape(F, 3)
    vt = _t(verts).requires_grad_(True)
    whole = rasterize(vt, faces, H, W, backend="torch")
    monkeypatch.setattr(core, "_GROUP_TRIANGLES", 2 * F)  # groups of 2 items: (2, 1)
    parts = rasterize(vt, faces, H, W, backend="torch")
    for name in ("face_id", "bary", "depth", "mask", "pix", "pix_face", "pix_bary"):
        assert torch.equal(getattr(whole, name), getattr(parts, name)), name
    attr = torch.randn(B, F * 3, 2, dtype=torch.float64)
    a = interpolate(attr, whole, faces)
    b = interpolate(attr, parts, faces)
    assert torch.equal(a, b)
    (ga,) = torch.autograd.grad(a.sum(), vt)
    (gb,) = torch.autograd.grad(b.sum(), vt)
    assert torch.equal(ga, gb) and ga.abs().sum() > 0


# ----------------------------------------------------------------------------- numba backend
def _soup(seed: int, B: int, F: int, H: int, W: int, margin: float = 6.0):
    """Random batched triangle soup: mostly small triangles, some large ones crossing the
    borders, some entirely outside, a degenerate one and one flipped to the back (a NaN
    vertex is refused by rasterize since the finite-input check, see
    test_numeric_reliability)."""
    g = np.random.default_rng(seed)
    tri = g.uniform([-margin, -margin, 0], [W + margin, H + margin, 10], (B, F, 3, 3))
    cen = tri.mean(2, keepdims=True)
    scale = np.where(g.uniform(size=(B, F, 1, 1)) < 0.8, g.uniform(0.05, 0.5, (B, F, 1, 1)), 1.5)
    tri = cen + (tri - cen) * scale
    tri[:, 0, 2] = tri[:, 0, 1]  # degenerate (two equal corners)
    tri[:, 1] = tri[:, 1, ::-1]  # (was a NaN vertex) reversed winding
    tri[:, 2] += [3 * W, 0, 0]  # right of the image
    return tri.reshape(B, F * 3, 3), np.arange(F * 3).reshape(F, 3)


def _ids_equal(a, b):
    return torch.equal(a.face_id, b.face_id) and torch.equal(a.mask, b.mask)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cull,persp", [(False, False), (True, False), (False, True)])
def test_numba_equals_torch_on_random_soups(dtype, cull, persp):
    import facegeo.raster.core as core

    assert "numba" in core.available_backends()
    H, W = 21, 26
    for seed in range(3):
        verts, faces = _soup(seed, 3, 60, H, W)
        if persp:
            verts[..., 2] -= 1.0  # some triangles reach z <= 0 and are dropped
        v, f = _t(verts, dtype), _t(faces, torch.int64)
        kw = dict(cull_backfaces=cull, perspective_correct=persp)
        a = rasterize(v, f, H, W, backend="torch", **kw)
        b = rasterize(v, f, H, W, backend="numba", **kw)
        assert a.mask.sum() > 300
        assert torch.equal(a.face_id, b.face_id), (seed, (a.face_id != b.face_id).sum())
        for name in ("mask", "pix", "pix_face", "bary", "depth", "pix_bary"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        if dtype == torch.float64:
            # packed keys (depth bits | face) identical too: the same depth order
            ka = core._zbuffer_torch(v, f, H, W, cull, persp)
            kb = core._zbuffer_numba(v, f, H, W, cull, persp)
            assert torch.equal(ka, kb)
            if not persp:  # and both equal the independent brute force
                for i in range(3):
                    fid, _, _ = _brute_force(verts[i], faces, H, W, cull)
                    assert torch.equal(b.face_id[i], torch.as_tensor(fid))


def test_numba_ties_on_pixel_centres_and_shared_edges():
    # an integer grid of coplanar triangles: edges and corners pass through pixel centres,
    # so coverage and depth ties decide (covered if on the boundary; equal depth -> the
    # smaller face index wins), plus a second, identical copy with larger face indices
    n = 4
    ys, xs = np.mgrid[0 : n + 1, 0 : n + 1]
    pts = np.stack([xs.ravel() * 3.0, ys.ravel() * 3.0, np.full(xs.size, 2.0)], 1)
    quads = [(i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j) for i in range(n)
             for j in range(n)]  # fmt: skip
    quads += [((i + 1) * (n + 1) + j + 1, (i + 1) * (n + 1) + j, i * (n + 1) + j + 1)
              for i in range(n) for j in range(n)]  # fmt: skip
    faces = np.array(quads + quads)
    H = W = 3 * n + 3
    v = _t(pts)[None]
    for cull in (False, True):
        a = rasterize(v, _t(faces, torch.int64), H, W, backend="torch", cull_backfaces=cull)
        b = rasterize(v, _t(faces, torch.int64), H, W, backend="numba", cull_backfaces=cull)
        assert torch.equal(a.face_id, b.face_id)
        # exact integer reference: covered iff all three edge functions are >= 0 after
        # orienting the triangle; all depths are equal, so the first covering face wins
        P = pts[:, :2].astype(np.int64)
        yy, xx = np.mgrid[0:H, 0:W]
        fid = np.full((H, W), -1)
        for k, (i0, i1, i2) in enumerate(faces):
            c = P[[i0, i1, i2]]
            area = (c[1, 0] - c[0, 0]) * (c[2, 1] - c[0, 1]) - (c[2, 0] - c[0, 0]) * (
                c[1, 1] - c[0, 1]
            )
            if area == 0 or (cull and area > 0):
                continue
            w = [
                (c[(e + 2) % 3, 0] - c[(e + 1) % 3, 0]) * (yy - c[(e + 1) % 3, 1])
                - (c[(e + 2) % 3, 1] - c[(e + 1) % 3, 1]) * (xx - c[(e + 1) % 3, 0])
                for e in range(3)
            ]
            inside = np.all([np.sign(area) * we >= 0 for we in w], 0)
            fid[inside & (fid < 0)] = k
        assert torch.equal(b.face_id[0], torch.as_tensor(fid))
        if not cull:
            assert (b.face_id[0, : 3 * n + 1, : 3 * n + 1] >= 0).all()
            assert int(b.face_id.max()) < len(quads)  # the copies never win a tie
        else:  # the grid triangles are clockwise on screen: all culled
            assert not b.mask.any()


@pytest.mark.parametrize("cull", [False, True])
def test_numba_equals_torch_on_ict_batch(cull):
    views = [
        _ict_image_space(160, yaw, off)
        for yaw, off in ((35.0, (0.37, 0.21)), (-20.0, (-30.0, 41.3)))
    ]
    v = torch.tensor(np.stack([x[0] for x in views]), dtype=torch.float32)  # 2nd: off-image
    f = torch.tensor(views[0][1])
    a = rasterize(v, f, 160, 160, backend="torch", cull_backfaces=cull)
    b = rasterize(v, f, 160, 160, backend="numba", cull_backfaces=cull)
    c = rasterize(v, f, 160, 160, cull_backfaces=cull)  # default: auto -> numba on the CPU
    assert b.mask.sum() > 10000 and not b.mask[1, :, -1].any() and b.mask[1, -1].any()
    assert torch.equal(a.face_id, b.face_id) and torch.equal(b.face_id, c.face_id)
    assert torch.equal(a.bary, b.bary) and torch.equal(a.depth, b.depth)
    # single images give the same as the batch
    for i in range(2):
        s = rasterize(v[i : i + 1], f, 160, 160, backend="numba", cull_backfaces=cull)
        assert torch.equal(s.face_id[0], b.face_id[i])


def test_numba_threads_and_bands_do_not_change_the_result():
    from facegeo.raster import _numba_kernel as kern

    verts, faces = _soup(7, 2, 80, 37, 29)
    v = verts.astype(np.float32)
    ref, counts, nb = kern.zbuffer(v, faces, 37, 29, False, False, 1)
    assert nb == 1 and counts.sum() == (ref != np.iinfo(np.int64).max).sum()
    for nt in (2, 3, 8):
        out, counts, nb = kern.zbuffer(v, faces, 37, 29, False, False, nt)
        assert np.array_equal(out, ref) and counts.sum() == (out != ref.max()).sum()
        assert nb > 1  # the rows were split into bands
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rasterize(_t(v, torch.float32), _t(faces, torch.int64), 37, 29)
        torch.set_num_threads(3)
        three = rasterize(_t(v, torch.float32), _t(faces, torch.int64), 37, 29)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one.face_id, three.face_id) and torch.equal(one.pix, three.pix)


def test_pass2_chunks_give_the_same_fragments_and_gradients(monkeypatch):
    import facegeo.raster.core as core

    verts, faces = _soup(11, 2, 40, 17, 19)
    vt = _t(verts).requires_grad_(True)
    f = _t(faces, torch.int64)
    whole = rasterize(vt, f, 17, 19)
    monkeypatch.setattr(core, "_PASS2_CHUNK", 7)
    parts = rasterize(vt, f, 17, 19)
    assert whole.pix.numel() > 7 * 20
    for name in ("face_id", "bary", "depth", "pix", "pix_face", "pix_bary"):
        assert torch.equal(getattr(whole, name), getattr(parts, name)), name
    (ga,) = torch.autograd.grad(whole.depth.sum() + whole.bary[..., 0].sum(), vt)
    (gb,) = torch.autograd.grad(parts.depth.sum() + parts.bary[..., 0].sum(), vt)
    # (summation order of the gradient scatter differs between chunkings)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
    assert ga.abs().sum() > 0


def test_auto_backend_falls_back_to_torch_without_numba(monkeypatch):
    import facegeo.raster.core as core

    verts, faces = _soup(5, 1, 30, 12, 14)
    v, f = _t(verts), _t(faces, torch.int64)
    ref = rasterize(v, f, 12, 14, backend="numba")
    monkeypatch.setattr(core, "_numba_kernel", lambda: None)
    assert "numba" not in core.available_backends()
    assert torch.equal(rasterize(v, f, 12, 14).face_id, ref.face_id)  # auto -> torch
    with pytest.raises(ImportError, match="numba"):
        rasterize(v, f, 12, 14, backend="numba")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("persp", [False, True])
def test_numba_compiled_pass2_equals_autograd_pass2(dtype, persp):
    # without autograd the numba backend computes the barycentrics and depth in compiled
    # code too; it must give bit-identical results to the torch pass used with autograd
    verts, faces = _soup(13, 2, 70, 23, 25)
    if persp:
        verts[..., 2] += 1.0
    v = _t(verts, dtype)
    f = _t(faces, torch.int64)
    kw = dict(perspective_correct=persp, backend="numba")
    plain = rasterize(v, f, 23, 25, **kw)
    with torch.no_grad():
        nograd = rasterize(v.clone().requires_grad_(True), f, 23, 25, **kw)
    graded = rasterize(v.clone().requires_grad_(True), f, 23, 25, **kw)
    ref = rasterize(v, f, 23, 25, perspective_correct=persp, backend="torch")
    assert graded.bary.requires_grad and not plain.bary.requires_grad
    assert not nograd.bary.requires_grad
    for name in ("face_id", "mask", "pix", "pix_face", "bary", "depth", "pix_bary"):
        for other in (nograd, graded, ref):
            assert torch.equal(getattr(plain, name), getattr(other, name).detach()), name
    assert plain.mask.sum() > 150
