"""Metrics against known answers and independent implementations (kornia, pytorch_msssim,
scipy)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facegeo import metrics as M


def _imgs(seed=0, b=2, c=3, h=48, w=40):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(b, c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


def test_l1_psnr_known_values():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.full_like(x, 0.1)
    assert torch.allclose(M.l1(x, y), torch.tensor([0.1, 0.1]))
    assert torch.allclose(M.psnr(x, y), torch.tensor([20.0, 20.0]))  # 10 log10(1/0.01)
    assert torch.isinf(M.psnr(x, x)).all()


def test_psnr_max_db_cap_is_the_mse_clamp():
    # max_db caps through the MSE (clamped at max^2 10^(-max_db/10)); the training validation
    # metric (models.common.trainer) is psnr(max_db=100), bit-identical to its former formula
    from facegeo_models.common.trainer import VALIDATION_METRICS

    x, y = _imgs(3)
    x32, y32 = x.float(), y.float()
    assert torch.equal(M.psnr(x, y, max_db=100), M.psnr(x, y))  # far from the cap: unchanged
    z = torch.zeros(2, 3, 8, 8)
    assert torch.equal(M.psnr(z, z, max_db=100), torch.full((2,), 100.0))
    assert torch.equal(M.psnr(z, z, max_val=2.0, max_db=40.0), torch.full((2,), 40.0))
    assert M.psnr(x, y, max_db=5.0).max() <= 5.0 + 1e-9
    for a, b in ((x32, y32), (z, z), (z, z + 1e-6), (x, y)):
        old = 10 * torch.log10(1.0 / ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10))
        assert torch.equal(VALIDATION_METRICS["psnr"](a, b), old)


def test_ssim_matches_kornia():
    import kornia

    x, y = _imgs()
    ours = M.ssim(x, y)
    ref = kornia.metrics.ssim(x, y, window_size=11, padding="valid").flatten(1).mean(1)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(M.ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_ms_ssim_matches_pytorch_msssim():
    from pytorch_msssim import ms_ssim as ref_ms_ssim
    from pytorch_msssim import ssim as ref_ssim

    x, y = _imgs(1, b=2, h=192, w=176)
    assert torch.allclose(M.ms_ssim(x, y), ref_ms_ssim(x, y, data_range=1.0, size_average=False),
                          atol=1e-6)
    assert torch.allclose(M.ssim(x, y), ref_ssim(x, y, data_range=1.0, size_average=False),
                          atol=1e-6)
    assert torch.allclose(M.ms_ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_image_metric_errors():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="shapes differ"):
        M.l1(x, torch.rand(1, 3, 32, 31))
    with pytest.raises(ValueError, match="larger than"):
        M.ms_ssim(x, x)
    with pytest.raises(ValueError, match="at least"):
        M.ssim(x[..., :8, :8], x[..., :8, :8])


def test_akd_and_missing_rate():
    gt = torch.zeros(4, 68, 2)
    pred = gt.clone()
    pred[..., 0] += 3.0
    pred[..., 1] += 4.0  # every landmark 5 px away
    found = torch.tensor([True, True, False, True])
    value, mkr = M.akd(pred, gt, pred_found=found)
    assert value.item() == pytest.approx(5.0)
    assert mkr.item() == pytest.approx(0.25)
    value, mkr = M.akd(pred, gt, pred_found=torch.zeros(4, dtype=torch.bool))
    assert math.isnan(value.item()) and mkr.item() == 1.0


def test_pose_and_expression_metrics():
    a = torch.tensor([[10.0, -5.0, 2.0]])
    b = torch.tensor([[13.0, -1.0, 2.0]])
    assert M.pose_rmse(a, b).item() == pytest.approx(math.sqrt((9 + 16) / 3))
    assert M.pose_similarity(a, 2 * a).item() == pytest.approx(1.0)
    assert M.pose_similarity(a, -a).item() == pytest.approx(-1.0)
    e1 = torch.tensor([[0.0, 0.5, 0.9, 0.1]])
    e2 = torch.tensor([[0.3, 0.6, 0.1, 0.0]])
    assert M.expression_agreement(e1, e2).item() == pytest.approx(0.5)
    assert M.expression_distance(e1, e2).item() == pytest.approx(
        float(np.linalg.norm([-0.3, -0.1, 0.8, 0.1])))


def test_frechet_distance_analytic():
    # same covariance: distance is the squared mean difference
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    s = a @ a.T + np.eye(5)
    mu = rng.normal(size=5)
    assert M.frechet_distance(mu, s, mu + 1.0, s) == pytest.approx(5.0, abs=1e-6)
    # 1-D Gaussians: (m1-m2)^2 + (s1 - s2)^2 with standard deviations s
    assert M.frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([1.0]),
                              np.array([[9.0]])) == pytest.approx(1 + 1)
    # statistics of samples
    f = torch.tensor(rng.normal(size=(4000, 3)))
    m, c = M.gaussian_statistics(f)
    assert np.allclose(m, 0, atol=0.1) and np.allclose(c, np.eye(3), atol=0.1)


@settings(max_examples=25, deadline=None)
@given(v=st.tuples(st.floats(-5, 5), st.floats(-5, 5)), p0=st.floats(-100, 100))
def test_sms_zero_for_constant_velocity(v, p0):
    t = torch.arange(10, dtype=torch.float64)[:, None, None]
    track = p0 + t * torch.tensor(v, dtype=torch.float64) + torch.zeros(10, 68, 2,
                                                                         dtype=torch.float64)
    assert M.sms(track).item() == pytest.approx(0.0, abs=1e-9)


def test_sms_known_jitter():
    # alternating +-1 px in x: |(x_{t-1}+x_{t+1})/2 - x_t| = 2 for each of the 68 x
    # coordinates at every interior frame, 0 for the y coordinates
    x = torch.tensor([1.0, -1.0] * 5)
    track = torch.zeros(10, 68, 2)
    track[..., 0] = x[:, None]
    assert M.sms(track).item() == pytest.approx(2.0 * 68)
    assert M.sms(track, per_coordinate=True).item() == pytest.approx(1.0)
    assert M.sms(track[None].repeat(3, 1, 1, 1)).shape == (3,)
    with pytest.raises(ValueError):
        M.sms(track[:2])


def test_flicker():
    frames = torch.zeros(3, 3, 4, 4)
    frames[1, :, :2] = 0.5  # top half changes in frame 1 only
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[2:] = True
    assert M.flicker(frames, mask).item() == 0.0
    assert M.flicker(frames).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="empty"):
        M.flicker(frames, torch.zeros(4, 4, dtype=torch.bool))


def _face_with_openings(eye_h: float, mouth_h: float) -> torch.Tensor:
    """68 landmarks whose eyes are 4-px-wide hexagons with lids +-eye_h off the corner line
    and whose inner lips 62 / 66 are mouth_h apart, with a 10-px mouth (48 - 54)."""
    lm = torch.zeros(68, 2)
    for start, x0 in ((36, 10.0), (42, 30.0)):
        lm[start:start + 6] = torch.tensor([[x0, 0], [x0 + 1, -eye_h], [x0 + 3, -eye_h],
                                            [x0 + 4, 0], [x0 + 3, eye_h], [x0 + 1, eye_h]])
    lm[48], lm[54] = torch.tensor([15.0, 40]), torch.tensor([25.0, 40])
    lm[62], lm[66] = torch.tensor([20.0, 40 - mouth_h / 2]), torch.tensor([20.0, 40 + mouth_h / 2])
    return lm


def test_eye_and_mouth_opening_analytic():
    # EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) = (2h + 2h) / 8 = h / 2
    lm = torch.stack([_face_with_openings(h, m) for h, m in ((0.6, 0.0), (0.0, 3.0), (1.0, 5.0))])
    assert torch.allclose(M.eye_opening(lm), torch.tensor([0.3, 0.0, 0.5]))
    assert torch.allclose(M.mouth_opening(lm), torch.tensor([0.0, 0.3, 0.5]))
    # invariant to translation, rotation and scale of the face
    c, s = math.cos(0.4), math.sin(0.4)
    moved = 2.5 * lm @ torch.tensor([[c, -s], [s, c]]) + torch.tensor([7.0, -3.0])
    assert torch.allclose(M.eye_opening(moved), M.eye_opening(lm), atol=1e-5)
    assert torch.allclose(M.mouth_opening(moved), M.mouth_opening(lm), atol=1e-5)
    assert M.eye_opening(torch.zeros(2, 74, 2) + lm[:1].mean()).shape == (2,)
    with pytest.raises(ValueError, match="68, 2"):
        M.mouth_opening(torch.zeros(3, 5, 2))


def test_pearson_matches_numpy_and_its_edge_cases():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(9, generator=g), torch.rand(9, generator=g)
    assert float(M.pearson(a, b)) == pytest.approx(np.corrcoef(a.numpy(), b.numpy())[0, 1],
                                                  abs=1e-6)
    assert float(M.pearson(3 * b + 1, b)) == pytest.approx(1.0)
    assert float(M.pearson(-b, b)) == pytest.approx(-1.0)
    assert float(M.pearson(torch.full((9,), 0.3), b)) == 0.0     # a still output
    assert math.isnan(float(M.pearson(b, torch.full((9,), 0.3))))  # nothing to follow
    assert math.isnan(float(M.pearson(a[:2], b[:2])))              # too short
    with pytest.raises(ValueError, match="series"):
        M.pearson(a, b[:4])


# ----------------------------------------------------------------------------- FID network
def _expected_inception_keys() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of pytorch-fid's FID Inception (torchvision Inception3
    naming, no aux head, 1008 classes), written out from the published architecture tables:
    per block, (conv name, in, out, kernel)."""
    convs = [("Conv2d_1a_3x3", 3, 32, (3, 3)), ("Conv2d_2a_3x3", 32, 32, (3, 3)),
             ("Conv2d_2b_3x3", 32, 64, (3, 3)), ("Conv2d_3b_1x1", 64, 80, (1, 1)),
             ("Conv2d_4a_3x3", 80, 192, (3, 3))]
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        convs += [(f"{name}.branch1x1", cin, 64, (1, 1)), (f"{name}.branch5x5_1", cin, 48, (1, 1)),
                  (f"{name}.branch5x5_2", 48, 64, (5, 5)),
                  (f"{name}.branch3x3dbl_1", cin, 64, (1, 1)),
                  (f"{name}.branch3x3dbl_2", 64, 96, (3, 3)),
                  (f"{name}.branch3x3dbl_3", 96, 96, (3, 3)),
                  (f"{name}.branch_pool", cin, pool, (1, 1))]
    convs += [("Mixed_6a.branch3x3", 288, 384, (3, 3)),
              ("Mixed_6a.branch3x3dbl_1", 288, 64, (1, 1)),
              ("Mixed_6a.branch3x3dbl_2", 64, 96, (3, 3)),
              ("Mixed_6a.branch3x3dbl_3", 96, 96, (3, 3))]
    for name, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        row, col = (1, 7), (7, 1)
        convs += [(f"{name}.branch1x1", 768, 192, (1, 1)), (f"{name}.branch7x7_1", 768, c, (1, 1)),
                  (f"{name}.branch7x7_2", c, c, row), (f"{name}.branch7x7_3", c, 192, col),
                  (f"{name}.branch7x7dbl_1", 768, c, (1, 1)),
                  (f"{name}.branch7x7dbl_2", c, c, col), (f"{name}.branch7x7dbl_3", c, c, row),
                  (f"{name}.branch7x7dbl_4", c, c, col), (f"{name}.branch7x7dbl_5", c, 192, row),
                  (f"{name}.branch_pool", 768, 192, (1, 1))]
    convs += [("Mixed_7a.branch3x3_1", 768, 192, (1, 1)),
              ("Mixed_7a.branch3x3_2", 192, 320, (3, 3)),
              ("Mixed_7a.branch7x7x3_1", 768, 192, (1, 1)),
              ("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7)),
              ("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1)),
              ("Mixed_7a.branch7x7x3_4", 192, 192, (3, 3))]
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        convs += [(f"{name}.branch1x1", cin, 320, (1, 1)),
                  (f"{name}.branch3x3_1", cin, 384, (1, 1)),
                  (f"{name}.branch3x3_2a", 384, 384, (1, 3)),
                  (f"{name}.branch3x3_2b", 384, 384, (3, 1)),
                  (f"{name}.branch3x3dbl_1", cin, 448, (1, 1)),
                  (f"{name}.branch3x3dbl_2", 448, 384, (3, 3)),
                  (f"{name}.branch3x3dbl_3a", 384, 384, (1, 3)),
                  (f"{name}.branch3x3dbl_3b", 384, 384, (3, 1)),
                  (f"{name}.branch_pool", cin, 192, (1, 1))]
    keys = {}
    for name, cin, cout, k in convs:
        keys[f"{name}.conv.weight"] = (cout, cin, *k)
        for s in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{s}"] = (cout,)
        keys[f"{name}.bn.num_batches_tracked"] = ()
    keys["fc.weight"], keys["fc.bias"] = (1008, 2048), (1008,)
    return keys


def test_inception_fid_state_dict_names_and_parameter_count():
    net = M.InceptionFID()
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == _expected_inception_keys()
    # torchvision's Inception3 has 27,161,264 parameters; minus its aux head
    # (768*128 + 2*128 + 128*768*25 + 2*768 + 768*1000 + 1000) and with 1008 classes:
    aux = 768 * 128 + 2 * 128 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000
    expected = 27_161_264 - aux + 8 * 2048 + 8
    assert sum(p.numel() for p in net.parameters()) == expected
    net.load_state_dict(net.state_dict(), strict=True)


def test_inception_fid_features_and_fid_plumbing():
    torch.manual_seed(0)
    net = M.InceptionFID().eval()
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        f = net(x)
        f2 = net(torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                                 align_corners=False))
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert torch.allclose(f, f2, atol=1e-4)          # the input is resized to 299 first
    assert (f >= 0).all()                            # pooled ReLU outputs
    # (a 2048-d matrix square root takes a minute on one core: check on 16 features)
    g = torch.cat([f[:, :16], f[:, :16] + 1.0])
    assert M.fid_from_features(g, g) == pytest.approx(0.0, abs=1e-6)
    assert M.fid_from_features(g, g + 0.5) == pytest.approx(16 * 0.25, rel=1e-6)
    with pytest.raises(ValueError):
        net(torch.rand(1, 1, 64, 64))
    from facegeo.assets import AssetNotFoundError

    with pytest.raises((AssetNotFoundError, FileNotFoundError)):
        M.InceptionFID.pretrained("/nonexistent/pt_inception.pth")


# ----------------------------------------------------------------------------- LPIPS
def test_lpips_backbone_and_linear_keys():
    # torchvision alexnet().features: conv layers at 0, 3, 6, 8, 10
    expected = {"features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
                "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
                "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
                "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
                "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,)}
    net = M.LPIPS()
    got = {f"features.{k}": tuple(v.shape) for k, v in net.features.state_dict().items()}
    assert got == expected
    # a torchvision-format dict (with the classifier) loads; a wrong one does not
    sd = {k: torch.randn(s) for k, s in expected.items()}
    sd["classifier.1.weight"] = torch.randn(4096, 9216)
    net.load_backbone(sd)
    assert torch.equal(net.features[3].weight, sd["features.3.weight"])
    with pytest.raises(RuntimeError):
        net.load_backbone({k: v for k, v in sd.items() if k != "features.8.bias"})
    # linear weights in the layout of the LPIPS authors' alex.pth load strictly
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
           for i, c in enumerate((64, 192, 384, 256, 256))}
    net.load_linear(lin)
    assert torch.equal(net.lins[2].weight, lin["lin2.model.1.weight"])
    assert all((w.weight >= 0).all() for w in net.lins)
    with pytest.raises(ValueError, match="linear"):
        net.load_linear({"lin0.weight": torch.zeros(1, 64, 1, 1)})
    from facegeo.assets import AssetNotFoundError

    with pytest.raises((AssetNotFoundError, FileNotFoundError)):
        M.LPIPS.pretrained("/nonexistent/alexnet.pth")


def test_lpips_matches_brute_force_formula():
    """Random backbone and random non-negative linear weights: compare with the formula
    written out with plain conv2d calls."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = M.LPIPS().eval()
    net.load_linear({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
                     for i, c in enumerate((64, 192, 384, 256, 256))})
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)

    def acts(img):
        h = (2 * img - 1 - torch.tensor(M.LPIPS_SHIFT).view(1, 3, 1, 1)) / torch.tensor(
            M.LPIPS_SCALE).view(1, 3, 1, 1)
        w = net.features
        out = []
        h = F.relu(F.conv2d(h, w[0].weight, w[0].bias, 4, 2))
        out.append(h)
        h = F.relu(F.conv2d(F.max_pool2d(h, 3, 2), w[3].weight, w[3].bias, 1, 2))
        out.append(h)
        h = F.relu(F.conv2d(F.max_pool2d(h, 3, 2), w[6].weight, w[6].bias, 1, 1))
        out.append(h)
        h = F.relu(F.conv2d(h, w[8].weight, w[8].bias, 1, 1))
        out.append(h)
        h = F.relu(F.conv2d(h, w[10].weight, w[10].bias, 1, 1))
        out.append(h)
        return [a / (a.norm(dim=1, keepdim=True) + 1e-10) for a in out]

    ref = sum(torch.einsum("bchw,c->bhw", (a - b) ** 2, lin.weight.view(-1)).mean((1, 2))
              for a, b, lin in zip(acts(x), acts(y), net.lins))
    with torch.no_grad():
        d = net(x, y)
        assert torch.allclose(d, ref, rtol=1e-4, atol=1e-7)
        assert torch.allclose(net(y, x), d, rtol=1e-5)
        assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-7)
        assert (d > 0).all()
    with pytest.raises(ValueError):
        net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_cosine_similarity_broadcasts_and_is_the_only_one():
    """(..., D) x (..., D) -> (...), against the explicit formula; the landmarks.identity
    spelling is a deprecated alias giving the same values."""
    from facegeo.landmarks import identity

    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, 128, generator=g, dtype=torch.float64)
    b = torch.randn(3, 128, generator=g, dtype=torch.float64)
    got = M.cosine_similarity(a, b)
    ref = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    assert got.shape == (4, 3)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(M.cosine_similarity(a[0], b), ref[0])  # (B, D): rows
    assert float(M.cosine_similarity(torch.zeros(5), torch.ones(5))) == 0.0
    with pytest.warns(DeprecationWarning, match="facegeo.metrics.cosine_similarity"):
        old = identity.cosine_similarity(a, b)
    torch.testing.assert_close(old, got, atol=0, rtol=0)
    with pytest.raises(ValueError, match="same D"):
        M.cosine_similarity(a, torch.zeros(3, 64))
    with pytest.raises(ValueError, match="broadcast"):
        M.cosine_similarity(a, torch.zeros(5, 128))
