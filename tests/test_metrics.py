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
    # alternating +-1 px in x: |(x_{t-1}+x_{t+1})/2 - x_t| = 2 at every interior frame
    x = torch.tensor([1.0, -1.0] * 5)
    track = torch.zeros(10, 68, 2)
    track[..., 0] = x[:, None]
    assert M.sms(track).item() == pytest.approx(2.0)
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
