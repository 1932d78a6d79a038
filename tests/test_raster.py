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
    assert backends[:2] == ["torch", "open3d"]
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
    whole = rasterize(vt, faces, H, W)
    monkeypatch.setattr(core, "_GROUP_TRIANGLES", 2 * F)  # groups of 2 items: (2, 1)
    parts = rasterize(vt, faces, H, W)
    for name in ("face_id", "bary", "depth", "mask", "pix", "pix_face", "pix_bary"):
        assert torch.equal(getattr(whole, name), getattr(parts, name)), name
    attr = torch.randn(B, F * 3, 2, dtype=torch.float64)
    a = interpolate(attr, whole, faces)
    b = interpolate(attr, parts, faces)
    assert torch.equal(a, b)
    (ga,) = torch.autograd.grad(a.sum(), vt)
    (gb,) = torch.autograd.grad(b.sum(), vt)
    assert torch.equal(ga, gb) and ga.abs().sum() > 0
