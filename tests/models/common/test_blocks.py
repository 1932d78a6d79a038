"""Smoke and known-answer tests for models/common blocks, discriminator and losses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facegeo.coords import normalized_to_pixel, pixel_to_normalized
from facegeo_models.common import blocks as B
from facegeo_models.common import discriminator as D

torch.manual_seed(0)


# tiny tensors: one intra-op thread is faster than two on a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def _grad_ok(module: nn.Module, out: torch.Tensor) -> None:
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_basic_blocks_shapes_and_grads(norm):
    x = torch.rand(2, 4, 16, 12)
    assert B.SameBlock2d(4, 8, norm=norm)(x).shape == (2, 8, 16, 12)
    assert B.DownBlock2d(4, 8, norm=norm)(x).shape == (2, 8, 8, 6)
    assert B.UpBlock2d(4, 8, norm=norm)(x).shape == (2, 8, 32, 24)
    r = B.ResBlock2d(4, norm=norm)
    y = r(x)
    assert y.shape == x.shape
    _grad_ok(r, y)
    with pytest.raises(ValueError, match="unknown norm"):
        B.make_norm("layer", 4)


def test_resblock_zero_residual_is_identity():
    r = B.ResBlock2d(3, norm="none")
    nn.init.zeros_(r.conv2.weight)
    nn.init.zeros_(r.conv2.bias)
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(r(x), x)


def test_hourglass_shapes_and_grads():
    hg = B.Hourglass(block_expansion=8, in_features=3, num_blocks=3, max_features=32)
    x = torch.rand(2, 3, 32, 24)
    y = hg(x)
    assert y.shape == (2, 8 + 3, 32, 24) and hg.out_filters == 11
    _grad_ok(hg, y)
    with pytest.raises(ValueError, match="divisible"):
        hg(torch.rand(1, 3, 30, 24))


def test_antialias_constant_and_checkerboard():
    aa = B.AntiAliasInterpolation2d(3, 0.25)
    c = torch.full((1, 3, 32, 32), 0.7)
    y = aa(c)
    assert y.shape == (1, 3, 8, 8)
    torch.testing.assert_close(y, c[:, :, :8, :8], atol=1e-5, rtol=0)
    # Nyquist-frequency checkerboard (mean 0.5): naive subsampling aliases it to a constant
    # 0 image, the anti-aliased one gives its mean.
    ii, jj = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    cb = ((ii + jj) % 2).float().expand(1, 3, 32, 32)
    naive = cb[:, :, ::4, ::4]
    assert naive.abs().max() == 0
    smooth = aa(cb)
    assert (smooth - 0.5).abs().max() < 0.02
    assert B.AntiAliasInterpolation2d(3, 1.0)(cb) is cb
    with pytest.raises(ValueError):
        B.AntiAliasInterpolation2d(3, 0.3)
    k = B.gaussian_kernel1d(1.5)
    assert abs(k.sum().item() - 1) < 1e-6
    pyr = B.ImagePyramid([1, 0.5, 0.25])(c)
    assert [v.shape[-1] for v in pyr.values()] == [32, 16, 8]


def test_soft_argmax_of_delta_is_its_location():
    h, w = 13, 17
    locs = torch.tensor([[[3, 5], [16, 0]], [[0, 12], [8, 6]]])  # pixel (x, y)
    logits = torch.full((2, 2, h, w), -1e4)
    for b in range(2):
        for k in range(2):
            x, y = locs[b, k]
            logits[b, k, y, x] = 0
    kp, prob = B.soft_argmax(logits, temperature=1.0)
    assert prob.shape == (2, 2, h, w)
    torch.testing.assert_close(normalized_to_pixel(kp, (h, w)), locs.float(), atol=1e-4, rtol=0)
    # DSNT on the same (normalized) delta maps gives the same answer
    torch.testing.assert_close(B.dsnt(prob), kp)
    with pytest.raises(ValueError, match="normalized"):
        B.dsnt(prob * 2)


def test_soft_argmax_symmetric_blob_subpixel():
    # expectation of a Gaussian centred at a sub-pixel point (away from borders) is that point
    h = w = 64
    target = pixel_to_normalized(torch.tensor([[[30.3, 20.7]]]), (h, w))
    g = B.keypoints_to_gaussian(target, h, w, sigma=0.05)
    kp = B.dsnt(g / g.sum(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(kp, target, atol=1e-4, rtol=0)


def test_dsnt_regularizers():
    h = w = 32
    target = torch.tensor([[[0.1, -0.2]]])
    g = B.keypoints_to_gaussian(target, h, w, sigma=0.1)
    g = g / g.sum(dim=(2, 3), keepdim=True)
    assert B.dsnt_regularizer(g, target, sigma=0.1, kind="js") < 1e-6
    assert B.dsnt_regularizer(g, target, sigma=0.1, kind="var") < 1e-5
    flat = torch.full((1, 1, h, w), 1.0 / (h * w))
    js = B.dsnt_regularizer(flat, target, sigma=0.1, kind="js")
    assert 0.1 < js <= math.log(2) + 1e-6
    with pytest.raises(ValueError):
        B.dsnt_regularizer(g, target, kind="kl")


def test_keypoint_detector():
    kd = B.KeypointDetector(num_kp=5, block_expansion=8, max_features=32, num_blocks=3,
                            estimate_jacobian=True, scale_factor=0.5)
    out = kd(torch.rand(2, 3, 64, 64))
    assert out["value"].shape == (2, 5, 2) and out["heatmap"].shape == (2, 5, 32, 32)
    assert out["value"].abs().max() <= 1
    torch.testing.assert_close(out["heatmap"].sum(dim=(2, 3)), torch.ones(2, 5))
    # Jacobian head starts at the identity
    torch.testing.assert_close(out["jacobian"], torch.eye(2).expand(2, 5, 2, 2))
    _grad_ok(kd, out["value"] + out["jacobian"].sum())


def test_warp_identity_and_integer_shift():
    x = torch.rand(2, 3, 8, 10)
    g = B.identity_grid(2, 8, 10)
    torch.testing.assert_close(B.warp_grid(x, g), x, atol=1e-6, rtol=0)
    # sample one pixel to the right: out[..., j] = x[..., j + 1]
    shift = g.clone()
    shift[..., 0] += 2.0 / 10
    y = B.warp_grid(x, shift)
    torch.testing.assert_close(y[..., :-1], x[..., 1:], atol=1e-6, rtol=0)
    assert torch.all(y[..., -1] == 0)
    # grid at another resolution is resized
    assert B.warp_grid(x, B.identity_grid(2, 4, 5)).shape == x.shape
    with pytest.raises(ValueError):
        B.warp_grid(x, g[:1])


def test_the_two_warps_agree_through_flow_to_grid_and_old_name_warns():
    """warp_grid (normalized grid) and facegeo.raster.warp_flow (pixel flow) are one
    operation in two parametrisations: flow_to_grid converts (non-square image)."""
    from facegeo.raster import flow_to_grid, warp_flow

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 11, generator=g, dtype=torch.float64)
    flow = 2 * torch.randn(2, 6, 11, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(B.warp_grid(x, flow_to_grid(flow, 6, 11)), warp_flow(x, flow))
    with pytest.warns(DeprecationWarning, match="warp_grid"):
        old = B.warp(x, B.identity_grid(2, 6, 11, dtype=torch.float64), "border")
    torch.testing.assert_close(old, B.warp_grid(x, B.identity_grid(2, 6, 11,
                                                                   dtype=torch.float64),
                                                "border"), atol=0, rtol=0)


def test_occlusion_aware_generator():
    gen = B.OcclusionAwareGenerator(block_expansion=8, max_features=32, num_down_blocks=2,
                                    num_bottleneck_blocks=2)
    gen.eval()
    src = torch.rand(2, 3, 32, 32, requires_grad=True)
    deform = B.identity_grid(2, 16, 16).clone().requires_grad_(True)
    occ = torch.rand(2, 1, 16, 16)
    out = gen(src, deform, occ)
    assert out["prediction"].shape == (2, 3, 32, 32)
    assert out["deformed"].shape == (2, 3, 32, 32)
    assert 0 <= out["prediction"].min() and out["prediction"].max() <= 1
    out["prediction"].sum().backward()
    assert deform.grad is not None and deform.grad.abs().sum() > 0
    # fully occluded -> the output does not depend on the source at all
    src2 = torch.rand(2, 3, 32, 32, requires_grad=True)
    out0 = gen(src2, deform.detach(), torch.zeros(2, 1, 16, 16))["prediction"]
    out0.sum().backward()
    assert src2.grad.abs().max() == 0


def test_dense_motion_network_k_motions():
    """K = 3 motions + background: shapes, a softmax mask, and the deformation is exactly
    the motion the mask selects (background = identity grid); the hourglass sees the
    features, the source warped by each motion and the displacements."""
    torch.manual_seed(0)
    b, k, h, w = 2, 3, 16, 16
    net = B.DenseMotionNetwork(feature_channels=5, num_motions=k, block_expansion=8,
                               num_blocks=2, max_features=16, norm="instance")
    assert net.hourglass.encoder.down_blocks[0].conv.in_channels == 5 + 4 * 3 + 2 * 3
    src = torch.rand(b, 3, h, w)
    motions = B.identity_grid(b, h, w)[:, None] + 0.2 * torch.randn(b, k, h, w, 2)
    feats = torch.randn(b, 5, h, w)
    out = net(src, motions, feats)
    assert out["deformation"].shape == (b, h, w, 2) and out["mask"].shape == (b, k + 1, h, w)
    assert out["occlusion"].shape == (b, 1, h, w)
    assert out["sparse_deformed"].shape == (b, k + 1, 3, h, w)
    torch.testing.assert_close(out["mask"].sum(1), torch.ones(b, h, w))
    torch.testing.assert_close(out["sparse_deformed"][:, 2], B.warp_grid(src, motions[:, 1]))
    _grad_ok(net, out["deformation"] + out["occlusion"].sum())
    with torch.no_grad():
        net.mask.weight.zero_()
        for sel in range(k + 1):
            net.mask.bias.fill_(-1e4)
            net.mask.bias[sel] = 0
            d = net(src, motions, feats)["deformation"]
            want = B.identity_grid(b, h, w) if sel == 0 else motions[:, sel - 1]
            torch.testing.assert_close(d, want)
    one = B.DenseMotionNetwork(2, block_expansion=8, num_blocks=2, max_features=16,
                               occlusion=False, displacement=False)
    y = one(src, motions[:, 0], feats[:, :2])  # K = 1 takes (B, h, w, 2)
    assert y["mask"].shape == (b, 2, h, w) and "occlusion" not in y
    with pytest.raises(ValueError, match="motions"):
        net(src, motions[:, :2], feats)


# ------------------------------------------------------------------------ discriminator
def test_multiscale_discriminator_shapes_grads():
    d = D.MultiScaleDiscriminator(scales=(1, 0.5), block_expansion=8, num_blocks=3,
                                  max_features=32, sn=True)
    out = d(torch.rand(2, 3, 64, 64))
    assert set(out) == {1.0, 0.5}
    feats, pred = out[1.0]
    assert len(feats) == 3 and pred.shape[:2] == (2, 1)
    _grad_ok(d, sum(p.sum() for _, p in out.values()))


def test_gan_losses_known_values():
    real = torch.tensor([1.0, 1.0])
    fake = torch.tensor([0.0, 0.0])
    assert D.discriminator_loss(real, fake, "lsgan") == 0
    assert D.generator_loss(fake, "lsgan") == 1
    assert D.discriminator_loss(torch.tensor([2.0]), torch.tensor([-3.0]), "hinge") == 0
    assert D.discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0]), "hinge") == 2
    assert D.generator_loss(torch.tensor([0.5, 1.5]), "hinge") == -1
    assert D.discriminator_loss(torch.tensor([3.0]), torch.tensor([1.0]), "wgan-gp") == -2
    with pytest.raises(ValueError):
        D.generator_loss(fake, "vanilla2")


def test_gradient_penalty_linear_critic():
    torch.manual_seed(1)
    w = torch.randn(3 * 4 * 4)
    real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)

    def critic(scale):
        ww = w / w.norm() * scale
        return lambda x: x.flatten(1) @ ww

    assert D.gradient_penalty(critic(1.0), real, fake) < 1e-10
    torch.testing.assert_close(D.gradient_penalty(critic(2.0), real, fake), torch.tensor(1.0))
    # gradient flows into critic parameters
    lin = nn.Linear(48, 1)
    gp = D.gradient_penalty(lambda x: lin(x.flatten(1)), real, fake)
    gp.backward()
    torch.testing.assert_close(gp, (lin.weight.norm() - 1) ** 2)
    assert lin.weight.grad is not None


def test_feature_matching():
    a = [torch.ones(2, 3), torch.zeros(2, 4)]
    b = [torch.zeros(2, 3, requires_grad=True), torch.full((2, 4), 2.0, requires_grad=True)]
    loss = D.feature_matching_loss(a, b)
    assert loss == 1.5
    loss.backward()
    assert b[0].grad is not None
    with pytest.raises(ValueError):
        D.feature_matching_loss(a, b[:1])
