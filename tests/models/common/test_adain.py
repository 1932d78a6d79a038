"""AdaIN (facegeo_models.common.adain) against the formula written out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegeo_models.common.adain import AdaIN, adaptive_instance_norm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_adaptive_instance_norm_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) * 3 + 1
    gamma = torch.randn(2, 3, generator=g, dtype=torch.float64)
    beta = torch.randn(2, 3, generator=g, dtype=torch.float64)
    got = adaptive_instance_norm(x, gamma, beta, eps=1e-5).numpy()
    xn = x.numpy()
    for b in range(2):
        for c in range(3):
            v = xn[b, c]
            mu = v.sum() / v.size
            var = ((v - mu) ** 2).sum() / v.size
            want = gamma[b, c].item() * (v - mu) / np.sqrt(var + 1e-5) + beta[b, c].item()
            np.testing.assert_allclose(got[b, c], want, rtol=1e-10, atol=1e-10)
    # style statistics are transferred: output mean beta, std |gamma| (eps aside)
    out = adaptive_instance_norm(x, gamma, beta, eps=0.0)
    torch.testing.assert_close(out.mean((2, 3)), beta)
    torch.testing.assert_close(out.std((2, 3), unbiased=False), gamma.abs())


def test_adain_layer_identity_init_and_modulation():
    torch.manual_seed(0)
    layer = AdaIN(4, 6)
    x, s = torch.randn(3, 4, 5, 5), torch.randn(3, 6)
    # untrained: a plain (non-affine) instance norm, whatever the code
    torch.testing.assert_close(layer(x, s), F.instance_norm(x, eps=1e-5), atol=1e-5,
                               rtol=1e-5)
    with torch.no_grad():
        layer.affine.weight.normal_()
        layer.affine.bias.normal_()
    gb = s @ layer.affine.weight.T + layer.affine.bias
    gamma, beta = 1 + gb[:, :4], gb[:, 4:]
    want = gamma[..., None, None] * F.instance_norm(x, eps=1e-5) + beta[..., None, None]
    torch.testing.assert_close(layer(x, s), want, atol=1e-5, rtol=1e-5)
    # per-sample: sample 1 does not depend on sample 0's code
    s2 = s.clone()
    s2[0] += 5
    torch.testing.assert_close(layer(x, s2)[1:], layer(x, s)[1:])


def test_adain_errors():
    layer = AdaIN(4, 6)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        layer(torch.zeros(2, 3, 4, 4), torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        layer(torch.zeros(2, 4, 4, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="batch"):
        layer(torch.zeros(2, 4, 4, 4), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="gamma and beta"):
        adaptive_instance_norm(torch.zeros(2, 4, 3, 3), torch.zeros(2, 3), torch.zeros(2, 3))
