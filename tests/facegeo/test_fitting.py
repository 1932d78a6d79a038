"""facegeo.fitting: synthetic ground truth, eos reference, bad input, video mode, real photo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facegeo import fitting
from facegeo import transforms as T
from facegeo.morphable import MorphableModel


@pytest.fixture(scope="module")
def model(assets_dir):
    return MorphableModel.load()


@pytest.fixture(scope="module")
def fitter(model):
    return fitting.LandmarkFitter(model)


def synth(model, n, seed, noise=0.0, yaw=35.0, camera="weak_perspective", id_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, model.n_id, generator=g) * id_scale
    e = torch.rand(n, model.n_exp, generator=g) * (torch.rand(n, model.n_exp, generator=g) < 0.2)
    ang = torch.stack([(torch.rand(n, generator=g) * 2 - 1) * yaw,
                       (torch.rand(n, generator=g) * 2 - 1) * 20,
                       (torch.rand(n, generator=g) * 2 - 1) * 15], 1)
    R = T.euler_to_matrix(ang)
    lm = model.landmarks(model.vertices(a, e))
    s = 15 + 5 * torch.rand(n, generator=g)
    t = 256 + 20 * torch.randn(n, 2, generator=g)
    if camera == "weak_perspective":
        x = T.weak_perspective_project(lm, R, t, s)
        cam = dict(s=s, t=t)
    else:
        f = torch.full((n,), 1200.0)
        tz = f / s
        t3 = torch.cat([(t - 255.5) / s[:, None], tz[:, None]], 1)
        x = T.pinhole_project(lm, R, t3, f, (255.5, 255.5))
        cam = dict(f=f, t=t3)
    x = x + noise * torch.randn(x.shape, generator=g)
    return x, dict(a=a, e=e, R=R, angles=ang, lm=lm, **cam)


def test_pose_only_exact(model, fitter):
    """Mean-shape landmarks, any pose: pose-only fit recovers it exactly."""
    n = 6
    g = torch.Generator().manual_seed(3)
    ang = torch.stack([torch.linspace(-60, 60, n), torch.linspace(-25, 25, n),
                       torch.linspace(20, -20, n)], 1)
    R = T.euler_to_matrix(ang)
    s = 10 + 10 * torch.rand(n, generator=g)
    t = 100 + 300 * torch.rand(n, 2, generator=g)
    x = T.weak_perspective_project(model.landmarks().expand(n, 68, 3), R, t, s)
    r = fitter.fit(x, fit_identity=False, fit_expression=False, contour="fixed")
    assert r.rmse.max() < 1e-2
    assert T.rotation_angle(r.rotation, R).max() < 0.02
    torch.testing.assert_close(r.scale, s, rtol=1e-4, atol=0)
    torch.testing.assert_close(r.translation, t, rtol=0, atol=5e-3)
    torch.testing.assert_close(r.angles, ang, rtol=0, atol=0.02)
    assert (r.id_coeffs == 0).all() and (r.exp_coeffs == 0).all()


def test_noise_free_synthetic_tight(model, fitter):
    x, gt = synth(model, 16, seed=0)
    r = fitter.fit(x, contour="fixed")
    assert torch.isfinite(r.landmarks2d).all()
    assert r.rmse.median() < 0.6 and r.rmse.max() < 1.2, r.rmse
    rot = T.rotation_angle(r.rotation, gt["R"])
    assert rot.median() < 1.0 and rot.max() < 2.5, rot
    # blendshape weights stay in the box
    assert r.exp_coeffs.min() >= 0 and r.exp_coeffs.max() <= 1
    # the recovered mesh is close to the truth (ICT is in cm; faces are ~18 cm wide)
    v_err = (r.vertices(model) - model.vertices(gt["a"], gt["e"])).norm(dim=-1).mean(1)
    assert v_err.median() < 0.5, v_err
    # weaker prior -> closer fit
    r2 = fitter.fit(x, contour="fixed", lambda_id=1e-5, lambda_exp=1e-5)
    assert r2.rmse.median() < 0.5 * r.rmse.median()
    # result's own projection agrees with the fitted landmarks
    lm = model.landmarks(r.vertices(model))
    torch.testing.assert_close(r.project(lm), r.landmarks2d, atol=1e-3, rtol=0)


def test_noisy_synthetic(model, fitter):
    x, gt = synth(model, 16, seed=1, noise=1.5)
    r = fitter.fit(x)
    # the truth itself is sqrt(2)*1.5 = 2.1 px away from the noisy points
    assert 0.8 < r.rmse.median() < 2.6
    assert T.rotation_angle(r.rotation, gt["R"]).median() < 2.0


def test_pinhole(model, fitter):
    x, gt = synth(model, 8, seed=2, camera="pinhole")
    r = fitter.fit(x, camera="pinhole", focal=1200.0, principal_point=(255.5, 255.5),
                   contour="fixed")
    assert r.camera == "pinhole" and r.translation.shape == (8, 3)
    assert r.rmse.median() < 0.7
    assert T.rotation_angle(r.rotation, gt["R"]).median() < 1.0
    # depth of the head is recovered within a few percent
    assert ((r.translation[:, 2] - gt["t"][:, 2]).abs() / gt["t"][:, 2]).median() < 0.05
    lm = model.landmarks(r.vertices(model))
    torch.testing.assert_close(r.project(lm), r.landmarks2d, atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="image_hw"):
        fitter.fit(x, camera="pinhole")
    r2 = fitter.fit(x, camera="pinhole", image_hw=(512, 512), estimate_focal=True)
    assert torch.isfinite(r2.focal).all() and r2.rmse.median() < 1.5


def test_pinhole_image_hw_is_height_width_and_old_image_size_warns(model, fitter):
    """image_hw=(H, W) on a non-square 480 x 640 frame gives the defaults focal = max(H, W),
    principal point ((W - 1) / 2, (H - 1) / 2); the old width-first image_size=(W, H) warns
    and gives the same fit (never a transposed principal point)."""
    x, _ = synth(model, 3, seed=5, camera="pinhole")
    kw = dict(camera="pinhole", contour="fixed", iterations=3)
    explicit = fitter.fit(x, focal=640.0, principal_point=(319.5, 239.5), **kw)
    new = fitter.fit(x, image_hw=(480, 640), **kw)
    torch.testing.assert_close(new.principal_point, explicit.principal_point, atol=0, rtol=0)
    torch.testing.assert_close(new.landmarks2d, explicit.landmarks2d, atol=0, rtol=0)
    assert new.principal_point[0].tolist() == [319.5, 239.5]
    with pytest.warns(DeprecationWarning, match=r"image_hw=\(H, W\)"):
        old = fitter.fit(x, image_size=(640, 480), **kw)
    with pytest.warns(DeprecationWarning, match="fit_landmarks"):
        old_fn = fitting.fit_landmarks(model, x, image_size=(640, 480), **kw)
    for o in (old, old_fn):
        torch.testing.assert_close(o.principal_point, new.principal_point, atol=0, rtol=0)
        torch.testing.assert_close(o.landmarks2d, new.landmarks2d, atol=0, rtol=0)
    transposed = fitter.fit(x, image_hw=(640, 480), **kw)
    assert transposed.principal_point[0].tolist() == [239.5, 319.5]
    with pytest.raises(TypeError, match="image_hw"):
        fitter.fit(x, image_hw=(480, 640), image_size=(640, 480), **kw)


def test_visibility_and_weights(model, fitter):
    x, gt = synth(model, 4, seed=4)
    vis = torch.ones(4, 68, dtype=torch.bool)
    vis[:, 0:8] = False  # hide the right jaw
    vis[0, 36:42] = False
    xn = x.clone()
    xn[~vis] = float("nan")  # invisible points may be NaN
    r = fitter.fit(xn, visibility=vis, contour="fixed")
    assert torch.isfinite(r.landmarks2d).all()
    err = (r.landmarks2d - x).norm(dim=-1)
    assert err[vis].median() < 0.8
    assert err[~vis].median() < 5.0  # hidden points are predicted by the model
    w = torch.ones(68)
    w[48:] = 5.0
    rw = fitter.fit(x, weights=w, contour="fixed")
    r0 = fitter.fit(x, contour="fixed")
    e_w = (rw.landmarks2d - x)[:, 48:].norm(dim=-1).mean()
    e_0 = (r0.landmarks2d - x)[:, 48:].norm(dim=-1).mean()
    assert e_w < e_0


def test_sliding_contour_reduces_error(model, fitter):
    x, _ = synth(model, 8, seed=5, noise=0.0)
    # move the jawline points outward along the image x axis, as a silhouette would
    x2 = x.clone()
    x2[:, 0:8, 0] -= 3.0
    x2[:, 9:17, 0] += 3.0
    fixed = fitter.fit(x2, contour="fixed")
    slide = fitter.fit(x2, contour="slide")
    assert slide.rmse.mean() < fixed.rmse.mean()
    assert (slide.contour_vertices[:, :17] != model.landmarks68[:17]).any()
    assert (slide.contour_vertices[:, 17:] == model.landmarks68[17:]).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda x: x[:, :60], "68"),
        (lambda x: x[..., :1], "shape"),
        (lambda x: x.index_put((torch.tensor([0]), torch.tensor([3])),
                               torch.tensor([float("nan"), 1.0])), "NaN"),
        (lambda x: x.index_put((torch.tensor([1]), torch.tensor([7])),
                               torch.tensor([float("inf"), 1.0])), "NaN/inf"),
        (lambda x: torch.stack([torch.linspace(0, 100, 68), torch.linspace(0, 50, 68)], 1)
         .expand(2, 68, 2), "collinear"),
        (lambda x: torch.full((2, 68, 2), 7.0), "degenerate"),
    ],
)
def test_bad_input(fitter, bad, match):
    x = torch.rand(2, 68, 2) * 100
    with pytest.raises(ValueError, match=match):
        fitter.fit(bad(x))


def test_bad_input_visibility_and_options(fitter):
    x = torch.rand(2, 68, 2) * 100
    vis = torch.zeros(2, 68, dtype=torch.bool)
    vis[:, :5] = True
    with pytest.raises(ValueError, match="visible"):
        fitter.fit(x, visibility=vis)
    with pytest.raises(ValueError, match="weights"):
        fitter.fit(x, weights=-torch.ones(68))
    with pytest.raises(ValueError, match="camera"):
        fitter.fit(x, camera="fisheye")
    with pytest.raises(ValueError, match="contour"):
        fitter.fit(x, contour="magic")
    with pytest.raises(ValueError, match="shared_identity"):
        fitter.fit(x, smooth_exp=1.0)
    with pytest.raises(TypeError):
        fitter.fit(x.numpy())


def test_random_points_never_nan(fitter):
    """Arbitrary (non-face) point sets: a fit may be poor but is always finite."""
    g = torch.Generator().manual_seed(9)
    x = torch.rand(8, 68, 2, generator=g) * torch.tensor([300.0, 20.0]) + 10
    r = fitter.fit(x)
    for t in (r.rotation, r.translation, r.scale, r.id_coeffs, r.exp_coeffs, r.landmarks2d,
              r.rmse, r.angles):
        assert torch.isfinite(t).all()


def test_video_shares_identity(model, fitter):
    n = 8
    x, gt = synth(model, n, seed=6, noise=1.0)
    # one person: same identity in every frame
    a = gt["a"][:1].expand(n, -1)
    lm = model.landmarks(model.vertices(a, gt["e"]))
    g = torch.Generator().manual_seed(1)
    xs = T.weak_perspective_project(lm, gt["R"], gt["t"], gt["s"])
    xs = xs + 1.0 * torch.randn(xs.shape, generator=g)
    rv = fitting.fit_video(model, xs)
    assert (rv.id_coeffs == rv.id_coeffs[:1]).all()
    ri = fitter.fit(xs)
    neutral_true = model.vertices(gt["a"][:1])
    err_video = (model.vertices(rv.id_coeffs[:1]) - neutral_true).norm(dim=-1).mean()
    err_single = (model.vertices(ri.id_coeffs) - neutral_true).norm(dim=-1).mean(1)
    assert err_video < err_single.mean()
    assert rv.rmse.median() < 2.5
    assert T.rotation_angle(rv.rotation, gt["R"]).median() < 2.0
    # temporal smoothness reduces frame-to-frame expression changes
    rs = fitting.fit_video(model, xs, smooth_exp=1e-2, smooth_pose=1e-2)
    jit = (rv.exp_coeffs[1:] - rv.exp_coeffs[:-1]).abs().mean()
    jit_s = (rs.exp_coeffs[1:] - rs.exp_coeffs[:-1]).abs().mean()
    assert jit_s < jit
    assert torch.isfinite(rs.landmarks2d).all()
    # one weight per coefficient: a uniform vector is the scalar; zero weights leave
    # those coefficients as free as without smoothing
    ru = fitting.fit_video(model, xs, smooth_exp=torch.full((model.n_exp,), 1e-2),
                           smooth_pose=1e-2)
    assert torch.allclose(ru.exp_coeffs, rs.exp_coeffs, atol=1e-5)
    free = torch.zeros(model.n_exp, dtype=torch.bool)
    free[::2] = True
    rp = fitting.fit_video(model, xs, smooth_exp=torch.where(free, 0.0, 1.0), smooth_pose=1e-2)
    rb = fitting.fit_video(model, xs, smooth_exp=1.0, smooth_pose=1e-2)

    def jitter(r, cols):
        return (r.exp_coeffs[1:, cols] - r.exp_coeffs[:-1, cols]).abs().mean()

    assert jitter(rp, free) > 1.5 * jitter(rb, free)
    assert jitter(rp, ~free) < jitter(rv, ~free)
    with pytest.raises(ValueError, match="smooth_exp has 3 weights"):
        fitting.fit_video(model, xs, smooth_exp=torch.ones(3))
    with pytest.raises(ValueError, match="smooth_exp"):
        fitting.fit_video(model, xs, smooth_exp=torch.tensor([1.0, -1.0]).repeat(
            model.n_exp // 2 + 1)[:model.n_exp])


def _eos_model(model):
    eos = pytest.importorskip("eos") if False else __import__("eos")
    mean = model.mean.numpy().reshape(-1).astype(np.float32)
    idb = model.id_basis.numpy().reshape(model.n_id, -1).T.astype(np.float32).copy()
    shape = eos.morphablemodel.PcaModel(mean, idb, np.ones(model.n_id, np.float32),
                                        model.triangles.numpy().tolist())
    bs = [eos.morphablemodel.Blendshape(nm, model.exp_basis[k].numpy().reshape(-1)
                                        .astype(np.float32)) for k, nm in
          enumerate(model.exp_names)]
    return eos, eos.morphablemodel.MorphableModel(shape, bs, eos.morphablemodel.PcaModel())


def test_at_least_eos_accuracy(model, fitter):
    """Same landmarks, same ICT arrays: our landmark RMSE is not worse than eos'."""
    eos, mm = _eos_model(model)
    x, _ = synth(model, 3, seed=7)
    lmk = model.landmarks68.numpy()
    mapper = eos.core.LandmarkMapper()
    eos_rmse = []
    for b in range(x.shape[0]):
        lms = [eos.core.Landmark(str(int(lmk[i])), [float(x[b, i, 0]), float(x[b, i, 1])])
               for i in range(68)]
        mesh, rp, _, _ = eos.fitting.fit_shape_and_pose(mm, lms, mapper, 512, 512,
                                                        num_iterations=5)
        P = eos.fitting.get_3x4_affine_camera_matrix(rp, 512, 512)
        v = np.asarray(mesh.vertices)[lmk]
        p = (P @ np.c_[v, np.ones(68)].T).T[:, :2]
        eos_rmse.append(math.sqrt(((p - x[b].numpy()) ** 2).sum(1).mean()))
    ours = fitter.fit(x, contour="fixed").rmse
    assert ours.mean().item() <= np.mean(eos_rmse)


def test_real_photo(model, media_dir):
    from facegeo.landmarks import detect_landmarks

    x = detect_landmarks(media_dir / "lp_s1.jpg", detector="dlib_hog")[None].float()
    r = fitting.fit_landmarks(model, x)
    iod = (x[:, 36] - x[:, 45]).norm(dim=-1)
    err = (r.landmarks2d - x).norm(dim=-1) / iod[:, None]
    assert err.median() < 0.02
    assert r.angles.abs().max() < 60


def test_differentiable_wrt_landmarks(model, fitter):
    """The unrolled fit is differentiable; moving every point by d moves t2d by d."""
    ang = torch.tensor([[20.0, -10.0, 5.0]])
    x = T.weak_perspective_project(model.landmarks(), T.euler_to_matrix(ang),
                                   torch.tensor([[250.0, 260.0]]), torch.tensor([18.0]))
    x = x.detach().requires_grad_()
    r = fitter.fit(x, fit_identity=False, fit_expression=False, contour="fixed", iterations=8)
    r.translation[0, 0].backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, :, 0].sum().item() == pytest.approx(1.0, abs=1e-3)
    assert x.grad[0, :, 1].sum().item() == pytest.approx(0.0, abs=1e-3)
    x2 = x.detach().clone().requires_grad_()
    full = fitter.fit(x2)
    (full.exp_coeffs.sum() + full.angles.sum() + full.id_coeffs.sum()).backward()
    assert torch.isfinite(x2.grad).all() and x2.grad.abs().sum() > 0


def test_pca_expression_model(model):
    """A PCA-style expression model (Gaussian prior, no box): negative coefficients allowed."""
    pca = MorphableModel(
        model.mean, model.triangles, model.id_basis[:30], model.exp_basis[:12] * 0.5,
        id_std=torch.ones(30), exp_std=torch.full((12,), 2.0), exp_kind="pca",
        landmarks68=model.landmarks68, contour=model.contour, units="cm",
    )
    g = torch.Generator().manual_seed(11)
    a = torch.randn(6, 30, generator=g)
    e = 2.0 * torch.randn(6, 12, generator=g)
    R = T.euler_to_matrix(torch.tensor([[15.0, -5.0, 3.0]]).expand(6, 3))
    x = T.weak_perspective_project(model.landmarks(pca.vertices(a, e)), R,
                                   torch.full((6, 2), 256.0), torch.full((6,), 18.0))
    r = fitting.fit_landmarks(pca, x, contour="fixed", lambda_id=1e-5, lambda_exp=1e-5,
                              iterations=10)
    assert r.rmse.max() < 0.3
    assert (r.exp_coeffs < -0.5).any()  # not clamped to a box
    assert T.rotation_angle(r.rotation, R).max() < 1.0
