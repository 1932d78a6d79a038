"""The loss composer (models/common/losses.py): known values of the built-in terms, the
weighted total, model terms, and the errors for unknown names and missing parts."""

from __future__ import annotations

import pytest
import torch

from facegeo_models.common import discriminator as D
from facegeo_models.common.losses import BUILTIN_TERMS, LossComposer, weighted_sum

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pixel_terms_and_weighted_total():
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.full((2, 3, 4, 4), 0.5)
    total, terms = LossComposer()({"l1": 2.0, "mse": 10.0}, pred, target)
    assert list(terms) == ["l1", "mse"]
    assert terms["l1"].item() == 0.5 and terms["mse"].item() == 0.25
    assert total.item() == pytest.approx(2 * 0.5 + 10 * 0.25)
    # zero weights are not computed; shapes other than images work (sub-sampled pixels)
    total, terms = LossComposer()({"l1": 0, "mse": 1}, torch.zeros(2, 3, 7),
                                  torch.ones(2, 3, 7))
    assert list(terms) == ["mse"] and total.item() == 1.0
    assert weighted_sum({"a": 3}, {"a": torch.tensor(2.0)}).item() == 6.0


def test_model_terms_order_and_unknown_names():
    calls = []

    def model_terms():
        calls.append(1)
        return {"motion": torch.tensor(0.5), "spread": torch.tensor(2.0)}

    pred, target = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    c = LossComposer()
    total, terms = c({"spread": 1.0, "l1": 1.0, "motion": 4.0}, pred, target,
                     model_terms=model_terms)
    assert list(terms) == ["l1", "motion", "spread"] and len(calls) == 1
    assert total.item() == pytest.approx(1 + 4 * 0.5 + 2)
    with pytest.raises(ValueError, match=r"unknown losses \['nope'\].*l1.*motion"):
        c({"l1": 1, "nope": 1}, pred, target, model_terms=model_terms, phase="p")
    with pytest.raises(ValueError, match="perceptual is 'none'"):
        c({"perceptual": 1}, pred, target)
    with pytest.raises(ValueError, match="without a discriminator"):
        c({"gan": 1}, pred, target)
    with pytest.raises(ValueError, match="shadows"):
        c({"l1": 1}, pred, target, model_terms={"l1": torch.tensor(0.0)})
    with pytest.raises(ValueError, match="gan_loss"):
        LossComposer(gan_kind="vanilla")
    assert BUILTIN_TERMS == ("l1", "mse", "perceptual", "gan", "feature_matching")


def test_gan_and_feature_matching_terms_match_direct_computation():
    torch.manual_seed(0)
    disc = D.MultiScaleDiscriminator(scales=(1.0, 0.5), block_expansion=4, num_blocks=2,
                                     max_features=8)
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    for kind in D.GAN_KINDS:
        _, terms = LossComposer(gan_kind=kind)({"gan": 1, "feature_matching": 1}, pred,
                                               target, discriminator=disc)
        real, fake = disc(target), disc(pred)
        gan = sum(D.generator_loss(fake[s][1], kind) for s in fake) / 2
        fm = sum(D.feature_matching_loss(real[s][0], fake[s][0]) for s in fake) / 2
        torch.testing.assert_close(terms["gan"], gan)
        torch.testing.assert_close(terms["feature_matching"], fm)


def test_perceptual_term_uses_the_module():
    class Mean(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).mean().abs() * 3

    pred, target = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    total, terms = LossComposer(Mean())({"perceptual": 0.5}, pred, target)
    assert terms["perceptual"].item() == 3 and total.item() == 1.5


def test_adversarial_critic_loss_and_forward_split():
    torch.manual_seed(1)
    disc = D.MultiScaleDiscriminator(block_expansion=4, num_blocks=2, max_features=8)
    real, fake = torch.rand(2, 3, 16, 16), torch.rand(3, 3, 16, 16)
    a, b = D.forward_split(disc, real, fake)
    torch.testing.assert_close(a[1.0][1], disc(real)[1.0][1])
    torch.testing.assert_close(b[1.0][0][0], disc(fake)[1.0][0][0])
    loss, logs = D.adversarial_critic_loss(disc, real, fake[:2], "hinge")
    want = D.discriminator_loss(disc(real)[1.0][1], disc(fake[:2])[1.0][1], "hinge")
    torch.testing.assert_close(loss, want)
    assert set(logs) == {"disc"}
    loss, logs = D.adversarial_critic_loss(disc, real, fake[:2], "wgan-gp", gp_weight=10)
    assert set(logs) == {"disc", "gp"} and logs["gp"] >= 0
    torch.testing.assert_close(loss, logs["disc"] + 10 * logs["gp"])
    loss.backward()
    assert all(p.grad is not None for p in disc.parameters())
