"""Unit tests of facegeo.reenact (small sizes; the ICT model and dlib on tiny inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegeo import transforms as T
from facegeo.geometric.render import head_flow
from facegeo.landmarks import NoFaceError
from facegeo.morphable import MorphableModel
from facegeo.raster import mesh_flow
from facegeo.reenact import (
    DrivingTrack,
    FaceFit,
    GeometricReenactor,
    expression_from_names,
    interpolate_fits,
    posed_vertices,
    synthetic_driving,
    track_driving,
)


@pytest.fixture(scope="module")
def model(assets_dir):
    return MorphableModel.load()


@pytest.fixture(scope="module")
def rr(model):
    return GeometricReenactor(model, size=64)


def _fit(model, yaw=0.0, pitch=0.0, roll=0.0, scale=2.0, t=(32.0, 34.0), id_seed=None,
         exp=None, n=1):
    g = torch.Generator().manual_seed(id_seed) if id_seed is not None else None
    ident = (torch.randn(1, model.n_id, generator=g) if g is not None
             else torch.zeros(1, model.n_id))
    e = torch.zeros(1, model.n_exp) if exp is None else exp
    rot = T.euler_to_matrix(torch.tensor([[float(yaw), float(pitch), float(roll)]]))
    return FaceFit(rot, torch.tensor([scale]), torch.tensor([t]), ident, e).expand(n)


def test_posed_vertices_matches_weak_perspective(model):
    f = _fit(model, yaw=20, pitch=-10, roll=5)
    v = model.vertices(f.id_coeffs, f.exp_coeffs)
    iv = posed_vertices(v, f.rotation, f.scale, f.translation)
    ref = T.weak_perspective_project(v, f.rotation, f.translation, f.scale)
    torch.testing.assert_close(iv[..., :2], ref, rtol=0, atol=1e-4)
    # depth: the nose tip (most frontal vertex, +z) is nearer (smaller z) than the mean
    tip = int(model.mean[:, 2].argmax())
    assert float(iv[0, tip, 2]) < float(iv[0, :, 2].mean())


def test_target_fits_relative_and_absolute(model, rr):
    src = _fit(model, yaw=-10, scale=2.0, t=(30.0, 33.0), id_seed=1)
    drv = FaceFit(
        T.euler_to_matrix(torch.tensor([[5.0, 0, 0], [25.0, 10.0, 0]])),
        torch.tensor([3.0, 3.3]), torch.tensor([[20.0, 20.0], [26.0, 17.0]]),
        torch.randn(2, model.n_id), torch.rand(2, model.n_exp))
    rel = rr.target_fits(src, drv, "relative")
    # the first driving frame reproduces the source pose
    torch.testing.assert_close(rel.rotation[0], src.rotation[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(rel.scale[0], src.scale[0])
    torch.testing.assert_close(rel.translation[0], src.translation[0])
    # the relative rotation between frames is the driver's (20 deg yaw, 10 deg pitch)
    rel_rot = rel.rotation[1] @ rel.rotation[0].T
    drv_rot = drv.rotation[1] @ drv.rotation[0].T
    torch.testing.assert_close(rel_rot, drv_rot, atol=1e-5, rtol=0)
    # scale ratio and translation scaled by the source/driver size ratio
    assert float(rel.scale[1]) == pytest.approx(2.0 * 3.3 / 3.0, rel=1e-6)
    torch.testing.assert_close(rel.translation[1],
                               src.translation[0] + (2.0 / 3.0) * torch.tensor([6.0, -3.0]))
    ab = rr.target_fits(src, drv, "absolute")
    torch.testing.assert_close(ab.rotation, drv.rotation)
    torch.testing.assert_close(ab.translation, drv.translation)
    for f in (rel, ab):  # the identity is always the source's, the expression the driver's
        torch.testing.assert_close(f.id_coeffs, src.id_coeffs.expand(2, -1))
        torch.testing.assert_close(f.exp_coeffs, drv.exp_coeffs)
    rexp = rr.target_fits(src, drv, "relative", relative_expression=True)
    want = (src.exp_coeffs + drv.exp_coeffs - drv.exp_coeffs[:1]).clamp(0, 1)
    torch.testing.assert_close(rexp.exp_coeffs, want)
    with pytest.raises(ValueError, match="mode"):
        rr.target_fits(src, drv, "sideways")


def test_driver_face_shape_does_not_leak(model, rr):
    """Two drivers with very different face shapes but the same motion -> (nearly) the same
    target mesh, through the real landmark fit."""
    T_ = 4
    exp = torch.zeros(T_, model.n_exp)
    names = list(model.exp_names)
    exp[:, names.index("jawOpen")] = torch.tensor([0.0, 0.2, 0.5, 0.3])
    exp[:, names.index("mouthSmile_L")] = torch.tensor([0.0, 0.6, 0.0, 0.4])
    ang = torch.tensor([[0.0, 0, 0], [15, 5, 0], [-10, -5, 3], [5, 8, -4]])
    rot = T.euler_to_matrix(ang)
    lms, shapes = [], []
    for seed in (3, 4):
        ident = torch.randn(1, model.n_id, generator=torch.Generator().manual_seed(seed)) * 1.5
        v = model.vertices(ident.expand(T_, -1), exp)
        lm3 = model.landmarks(v)
        shapes.append(v)
        lms.append(T.weak_perspective_project(lm3, rot, torch.tensor([[32.0, 34.0]]).expand(T_, 2),
                                              torch.full((T_,), 2.0)))
    src = _fit(model, id_seed=7)
    tgts, drivers = [], []
    for lm in lms:
        track = DrivingTrack(lm, torch.ones(T_, dtype=torch.bool), (64, 64), 30.0)
        dfit = rr.fit_driving(track, torch.tensor([[31.5, 31.5, 64.0]]).expand(T_, 3))
        drivers.append(dfit)
        tgt = rr.target_fits(src, dfit, "relative")
        tgts.append(rr.image_vertices(tgt)[:, rr.lm_rows])
    driver_gap = (shapes[0] - shapes[1]).norm(dim=-1).mean() * 2.0  # pixels at scale 2
    target_gap = (tgts[0] - tgts[1])[..., :2].norm(dim=-1).mean()
    assert float(driver_gap) > 1.0
    assert float(target_gap) < 0.25 * float(driver_gap)
    # the fitted driver identities differ (so equality above is not trivial)
    assert float((drivers[0].id_coeffs - drivers[1].id_coeffs).abs().max()) > 0.3


def test_mesh_flow_matches_raster_mesh_flow(model, rr):
    src = _fit(model, yaw=-8, id_seed=2)
    tgt = _fit(model, yaw=18, pitch=6, t=(33.0, 32.0), id_seed=2,
               exp=expression_from_names(model, {"jawOpen": 0.4}))
    sv, tv = rr.image_vertices(src), rr.image_vertices(tgt)
    xy, cov, _ = rr._mesh_flow(sv, tv, 64, 64)
    ref = mesh_flow(sv, tv, rr.faces, 64, 64, cull_backfaces=True)
    assert torch.equal(cov, ref.driving.mask)
    m = ref.valid
    assert int(m.sum()) > 500
    torch.testing.assert_close(xy[m], ref.src_xy[m], atol=1e-3, rtol=0)


def test_resized_fit_is_the_resized_image(model, rr):
    # pixel centres at integers: x' = (x + 0.5) k - 0.5 for every vertex
    f = _fit(model, yaw=12, pitch=-5, id_seed=1)
    v, vk = rr.image_vertices(f), rr.image_vertices(f.resized(0.5))
    torch.testing.assert_close(vk[..., :2], (v[..., :2] + 0.5) * 0.5 - 0.5, atol=1e-4, rtol=0)


def test_render_with_a_smaller_map_matches_the_full_map(model):
    # the backward map at 32 px, upsampled to 64, against the map at 64: the same warp up
    # to a sub-pixel smoothing (the face flow is piecewise linear, the head flow smooth)
    g = torch.Generator().manual_seed(1)
    img = F.avg_pool2d(torch.rand(1, 3, 64, 64, generator=g), 5, 1, 2)  # smooth texture
    src = _fit(model, yaw=-6, id_seed=3)
    tgt = _fit(model, yaw=15, pitch=5, t=(33.0, 33.0), id_seed=3,
               exp=expression_from_names(model, {"jawOpen": 0.3}))
    full = GeometricReenactor(model, size=64, map_size=None).render(img, src, tgt)
    half = GeometricReenactor(model, size=64, map_size=32).render(img, src, tgt)
    assert half.frames.shape == full.frames.shape == (1, 3, 64, 64)
    assert half.src_xy.shape == (1, 64, 64, 2) and half.face_mask.shape == (1, 64, 64)
    inside = (full.face_mask[0] > 0.99) & (half.face_mask[0] > 0.99)
    assert int(inside.sum()) > 300
    err = (half.src_xy[0] - full.src_xy[0]).norm(dim=-1)
    assert float(err[inside].median()) < 0.1 and float(err.max()) < 3.0
    assert float((half.frames - full.frames).abs().mean()) < 0.012  # measured 0.008
    with pytest.raises(ValueError, match="map_size"):
        GeometricReenactor(model, size=64, map_size=8)


def test_render_identity_and_translation(model, rr):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 64, 64, generator=g)
    src = _fit(model, id_seed=5)
    same = rr.render(img, src, src)
    grid = torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="xy"), -1)
    # identical target: identity warp everywhere (mouth fill off: nothing opens)
    assert float((same.src_xy[0] - grid).abs().max()) < 0.05
    assert float((same.frames - img).abs().mean()) < 0.02
    # a 3-pixel shift of the head: the face moves by 3 px, the image border stays put
    moved = FaceFit(src.rotation, src.scale, src.translation + torch.tensor([[3.0, 0.0]]),
                    src.id_coeffs, src.exp_coeffs)
    out = rr.render(img, src, moved)
    d = out.src_xy[0] - grid
    face = out.face_mask[0] > 0.99
    assert int(face.sum()) > 100
    torch.testing.assert_close(d[face], torch.tensor([-3.0, 0.0]).expand_as(d[face]),
                               atol=1e-3, rtol=0)
    # far from the head (beyond the head proxy's fade radius) nothing moves: a smaller head
    small = _fit(model, id_seed=5, scale=1.0)
    moved_s = FaceFit(small.rotation, small.scale, small.translation + torch.tensor([[3.0, 0.0]]),
                      small.id_coeffs, small.exp_coeffs)
    out_s = rr.render(img, small, moved_s)
    _, rho = head_flow(rr.head_ellipsoid(small), (moved_s.rotation, moved_s.scale,
                                                  moved_s.translation),
                       (small.rotation, small.scale, small.translation), 64, 64, step=1,
                       fade=rr.head_fade)
    # margin and tolerance: the renderer evaluates the head flow on a 4-pixel grid
    far = (rho[0] > rr.head_fade + 0.2) & ~(out_s.face_mask[0] > 0)
    assert int(far.sum()) > 200
    assert float((out_s.src_xy[0] - grid)[far].abs().max()) < 0.25  # of a 3-pixel move
    # continuity: neighbouring output pixels sample nearby source pixels (no tears)
    assert float((d[1:] - d[:-1]).norm(dim=-1).max()) < 1.5
    assert float((d[:, 1:] - d[:, :-1]).norm(dim=-1).max()) < 1.5


def test_mouth_opening_is_filled(model, rr):
    img = torch.full((1, 3, 64, 64), 0.8)
    src = _fit(model, scale=2.5, id_seed=6)
    tgt = FaceFit(src.rotation, src.scale, src.translation, src.id_coeffs,
                  expression_from_names(model, {"jawOpen": 0.9}))
    out = rr.render(img, src, tgt)
    lm = out.target_landmarks[0]
    mouth = lm[60:68].mean(0).round().long()
    assert float(out.frames[0, :, mouth[1], mouth[0]].max()) < 0.4  # dark cavity
    no_fill = GeometricReenactor(model, size=64, mouth_color=None)
    assert float(no_fill.render(img, src, tgt).frames.min()) > 0.79


def test_interpolate_fits(model):
    a = _fit(model, yaw=0, id_seed=1)
    b = _fit(model, yaw=40, pitch=10, scale=4.0, t=(20.0, 10.0), id_seed=2,
             exp=expression_from_names(model, {"jawOpen": 1.0}))
    f = interpolate_fits(a, b, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(f.rotation[0], a.rotation[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(f.rotation[2], b.rotation[0], atol=1e-5, rtol=0)
    # slerp midpoint: half the rotation angle from both ends
    half = T.rotation_angle(a.rotation[0], f.rotation[1])
    full = T.rotation_angle(a.rotation[0], b.rotation[0])
    assert float(half) == pytest.approx(float(full) / 2, rel=1e-4)
    assert float(f.scale[1]) == pytest.approx(np.sqrt(2.0 * 4.0), rel=1e-5)
    torch.testing.assert_close(f.exp_coeffs[1], 0.5 * b.exp_coeffs[0])
    torch.testing.assert_close(f.id_coeffs, a.id_coeffs.expand(3, -1))  # a's identity kept
    pose = interpolate_fits(a, b, 1.0, only="pose")
    torch.testing.assert_close(pose.exp_coeffs, a.exp_coeffs)
    torch.testing.assert_close(pose.rotation, b.rotation, atol=1e-5, rtol=0)
    ex = interpolate_fits(a, b, 1.0, only="expression")
    torch.testing.assert_close(ex.rotation, a.rotation, atol=1e-6, rtol=0)
    torch.testing.assert_close(ex.exp_coeffs, b.exp_coeffs)
    with pytest.raises(ValueError, match="only"):
        interpolate_fits(a, b, 0.5, only="hair")


def test_expression_from_names(model):
    e = expression_from_names(model, {"jawOpen": 0.6, "mouthSmileLeft": 0.8})
    names = list(model.exp_names)
    assert float(e[0, names.index("jawOpen")]) == pytest.approx(0.6)
    assert float(e[0, names.index("mouthSmile_L")]) == pytest.approx(0.8)
    assert int((e != 0).sum()) == 2
    with pytest.raises(ValueError, match="unknown expression"):
        expression_from_names(model, {"frown": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expression_from_names(model, {"jawOpen": 1.5})


def test_synthetic_driving(model):
    src = _fit(model, yaw=10, id_seed=1)
    d = synthetic_driving(src, model, 30)
    assert len(d) == 30
    yaw = d.angles[:, 0]
    assert float(yaw.max()) > 25 and float(yaw.min()) < -5  # +-20 deg around the source's 10
    assert float(d.exp_coeffs.max()) <= 1.0 and float(d.exp_coeffs.min()) >= 0.0
    torch.testing.assert_close(d.id_coeffs, src.id_coeffs.expand(30, -1))


def test_bad_inputs(rr):
    with pytest.raises(NoFaceError, match="source"):
        rr.fit_source(torch.full((3, 96, 96), 0.5))
    with pytest.raises(ValueError, match="alpha"):
        rr.fit_source(torch.rand(4, 64, 64))
    with pytest.raises(ValueError, match="no frames"):
        track_driving([], 30.0)
    with pytest.raises(NoFaceError, match="any of the 2"):
        track_driving([np.full((80, 80, 3), 128, np.uint8)] * 2, 30.0)
    with pytest.raises(ValueError, match="size"):
        GeometricReenactor(rr.model, size=8)


def test_track_driving_holds_frames_without_face(media_dir, model):
    from facegeo.video import read_video

    frames, fps = read_video(media_dir / "lp_d12.mp4", max_frames=4)
    frames = frames[:, ::2, ::2].copy()  # 256 x 256
    blank = np.full_like(frames[0], 90)
    seq = [blank, frames[0], frames[1], blank, blank, frames[2], frames[3]]
    tr = track_driving(seq, fps)
    assert tr.good.tolist() == [False, True, True, False, False, True, True]
    assert tr.n_missing == 3
    torch.testing.assert_close(tr.landmarks[3], tr.landmarks[2])  # held
    torch.testing.assert_close(tr.landmarks[4], tr.landmarks[2])
    torch.testing.assert_close(tr.landmarks[0], tr.landmarks[1])  # leading: first good
    # the fitted parameters of held frames are copies too
    rr = GeometricReenactor(model, size=64)
    f = rr.fit_driving(tr)
    torch.testing.assert_close(f.rotation[4], f.rotation[2])
    torch.testing.assert_close(f.exp_coeffs[0], f.exp_coeffs[1])


def test_reenact_function_on_real_frames(media_dir, model):
    from facegeo.image_io import load_image
    from facegeo.reenact import reenact
    from facegeo.video import read_video

    frames, fps = read_video(media_dir / "lp_d12.mp4", max_frames=3)
    src = load_image(media_dir / "lp_s12.jpg")
    rr = GeometricReenactor(model, size=64)
    res = reenact(src, frames[:, ::2, ::2], fps=fps, reenactor=rr)
    assert res.frames.shape == (3, 3, 64, 64) and res.fps == fps and res.n_missing == 0
    assert set(res.timings) == {"landmarks", "fit", "raster", "warp"}
    # relative mode: the first frame keeps the source pose
    torch.testing.assert_close(res.target_fit.rotation[0], res.source_fit.rotation[0],
                               atol=1e-5, rtol=0)
    one = reenact(src, torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255,
                  reenactor=rr, crop=False, mode="absolute")
    assert one.frames.shape == (1, 3) + tuple(src.shape[1:])


def test_transfer_gaze_moves_the_iris_by_the_drivers_change(rr):
    """transfer_gaze on synthetic eyes with known iris centres: the rendered frames (the
    source itself, looking ahead) get their irises moved by the driver's along-axis gaze
    change, located back within 0.02 eye widths; the across-axis change is not
    transferred; a change larger than max_gaze_shift is clipped; absolute mode moves to the
    driver's gaze; a still driver leaves the frames as they are."""
    from facegeo.landmarks.pupils import gaze_offsets, locate_pupils, render_synthetic_eyes

    src, lm, _ = render_synthetic_eyes(torch.zeros(1, 2, 2), size=128, noise=0.0)
    g = torch.tensor([[0.0, 0.0], [0.08, 0.0], [-0.1, 0.0], [0.05, 0.06], [0.4, 0.0]])
    drv, dlm, _ = render_synthetic_eyes(g[:, None].expand(-1, 2, -1).contiguous(), size=128,
                                        noise=0.0)
    n = len(g)
    frames = src.expand(n, -1, -1, -1).contiguous()
    lms = lm.expand(n, -1, -1)
    out = rr.transfer_gaze(frames, lms, src, lm, lm, drv, dlm, "relative",
                           reference_image=drv[:1], reference_landmarks=dlm[:1])
    got = gaze_offsets(locate_pupils(out, lms), lms) - gaze_offsets(locate_pupils(src, lm), lm)
    want = torch.tensor([0.0, 0.08, -0.1, 0.05, rr.max_gaze_shift])
    torch.testing.assert_close(got[..., 0], want[:, None].expand(-1, 2), atol=0.02, rtol=0)
    assert got[..., 1].abs().max() < 0.02                      # across: not transferred
    torch.testing.assert_close(out[0], src[0])                 # reference frame: unchanged
    absolute = rr.transfer_gaze(frames[1:2], lms[:1], src, lm, lm, drv[1:2], dlm[1:2],
                                "absolute")
    torch.testing.assert_close(absolute, out[1:2])
    with pytest.raises(ValueError, match="reference"):
        rr.transfer_gaze(frames, lms, src, lm, lm, drv, dlm, "relative")
