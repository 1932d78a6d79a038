"""Down path, patch critics and their losses (models/common/patch_critic.py) against
written-out formulas and brute-force loops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facegeo_models.common.patch_critic import (
    ConvDownPath,
    PatchCritic,
    log1mexp,
    lsgan_pm1_critic_loss,
    lsgan_pm1_generator_loss,
    patch_classifier_critic_loss,
    patch_classifier_generator_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_down_path_structure_and_shapes():
    torch.manual_seed(0)
    net = ConvDownPath(5, (4, 8, 16))
    feats = net(torch.randn(2, 5, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 4, 16, 16), (2, 8, 8, 8), (2, 16, 4, 4)]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    # per level: a 4x4 stride-2 convolution, then a flat 3x3 convolution
    assert [(c.kernel_size, c.stride) for c in convs] == [((4, 4), (2, 2)), ((3, 3), (1, 1))] * 3
    # level 1 by hand: conv4 s2 -> lrelu -> conv3 -> lrelu
    x = torch.randn(1, 5, 32, 32)
    a = torch.nn.functional.leaky_relu(convs[0](x), 0.2)
    a = torch.nn.functional.leaky_relu(convs[1](a), 0.2)
    torch.testing.assert_close(net(x)[0], a)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 5, 36, 36))
    with pytest.raises(ValueError, match="5, H, W"):
        net(torch.randn(1, 3, 32, 32))


def test_patch_critic_shapes():
    c = PatchCritic(3, (4, 8), out_channels=7)
    assert c(torch.randn(2, 3, 16, 16)).shape == (2, 7, 4, 4)


def test_lsgan_pm1_losses():
    real, fake = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    want = sum((float(r) - 1) ** 2 for r in real.flatten()) / 18 + sum(
        (float(f) + 1) ** 2 for f in fake.flatten()) / 18
    assert float(lsgan_pm1_critic_loss(real, fake)) == pytest.approx(want, rel=1e-5)
    assert float(lsgan_pm1_generator_loss(fake)) == pytest.approx(
        float((fake ** 2).mean()), rel=1e-6)


def test_log1mexp():
    x = torch.tensor([-1e-8, -1e-3, -0.5, -0.7, -2.0, -30.0], dtype=torch.float64)
    want = torch.tensor([math.log(-math.expm1(float(v))) for v in x], dtype=torch.float64)
    torch.testing.assert_close(log1mexp(x), want)


def test_patch_classifier_losses_brute_force():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(2, 4, 2, 3, generator=g), torch.randn(2, 4, 2, 3, generator=g)
    k = torch.tensor([1, 3])
    r_sum = f_sum = g_sum = 0.0
    for b in range(2):
        for y in range(2):
            for x in range(3):
                pr = torch.softmax(real[b, :, y, x].double(), 0)[k[b]]
                pf = torch.softmax(fake[b, :, y, x].double(), 0)[k[b]]
                r_sum += -math.log(pr)
                f_sum += -math.log(1 - pf)
                g_sum += -math.log(pf)
    n = 12
    assert float(patch_classifier_critic_loss(real, fake, k)) == pytest.approx(
        (r_sum + f_sum) / n, rel=1e-5)
    assert float(patch_classifier_generator_loss(fake, k)) == pytest.approx(g_sum / n, rel=1e-5)
    # a certain classifier: the fake term is floored at -log(eps), finite
    sure = torch.full((2, 4, 2, 3), -50.0)
    sure[0, 1], sure[1, 3] = 50.0, 50.0
    v = patch_classifier_critic_loss(sure, sure, k, eps=1e-6)
    assert float(v) == pytest.approx(-math.log(1e-6), rel=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        patch_classifier_generator_loss(fake, torch.tensor([0, 4]))
