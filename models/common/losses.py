"""The loss composer: the weighted named terms a phase config asks for.

A phase weights its loss terms by name (``losses: {l1: 1, perceptual: 10, motion: 10,
gan: 0.1}``). :class:`LossComposer` computes the terms with a non-zero weight and their
weighted sum::

    composer = LossComposer(perceptual=build_perceptual("face"), gan_kind="lsgan")
    total, terms = composer(weights, pred, target, discriminator=disc,
                            model_terms=lambda: model.extra_losses(batch, out))

Built-in terms (:data:`BUILTIN_TERMS`; ``pred`` / ``target`` of any equal shape, images
(B, 3, H, W) for ``perceptual`` and the GAN terms):

============== ==========================================================================
l1             mean |pred - target|
mse            mean (pred - target)^2
perceptual     the configured perceptual loss (VGG-19 or the face substitute)
gan            mean over discriminator scales of the generator's adversarial loss
feature_matching mean over scales of the discriminator feature-matching loss
============== ==========================================================================

Model terms (``model_terms``: a dict of scalars or a function returning one, e.g. the
model's ``extra_losses``) are used under their own names. A weighted name that is neither
built in nor among the model's terms is a ``ValueError`` naming the known ones. Terms are
computed in the order above, then the model's; the total is summed in that order too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .discriminator import GAN_KINDS, feature_matching_loss, forward_split, generator_loss

__all__ = ["BUILTIN_TERMS", "LossComposer", "weighted_sum"]

BUILTIN_TERMS = ("l1", "mse", "perceptual", "gan", "feature_matching")

ModelTerms = Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]] | None


def weighted_sum(weights: Mapping[str, float], terms: Mapping[str, torch.Tensor]
                 ) -> torch.Tensor:
    """``sum_k weights[k] * terms[k]`` (float32), in the order of ``terms``."""
    return sum(float(weights[k]) * v.float() for k, v in terms.items())


class LossComposer:
    """Weighted named loss terms (see the module docstring).

    Args:
        perceptual: a frozen perceptual loss ``(pred, target) -> scalar``, or None (then a
            weighted ``perceptual`` term is an error).
        gan_kind: adversarial loss of the ``gan`` term: ``lsgan``, ``hinge`` or ``wgan-gp``.
    """

    def __init__(self, perceptual: nn.Module | None = None, gan_kind: str = "lsgan"):
        if gan_kind not in GAN_KINDS:
            raise ValueError(f"unknown gan_loss {gan_kind!r}; expected one of {GAN_KINDS}")
        self.perceptual, self.gan_kind = perceptual, gan_kind

    def terms(self, weights: Mapping[str, float], pred: torch.Tensor, target: torch.Tensor,
              *, discriminator: nn.Module | None = None, model_terms: ModelTerms = None,
              phase: str | None = None) -> dict[str, torch.Tensor]:
        """The unweighted terms with a non-zero weight, ``{name: scalar}``.

        Args:
            weights: ``{name: weight}`` of the phase.
            pred, target: prediction and target (same shape).
            discriminator: a multi-scale discriminator (``x -> {scale: (features, map)}``)
                for ``gan`` / ``feature_matching``; called once on (target, pred).
            model_terms: the model's own terms (dict, or a function returning one, called
                after the built-in terms).
            phase: phase name for error messages.
        """
        w = {k: float(v) for k, v in weights.items()}
        terms: dict[str, torch.Tensor] = {}
        if w.get("l1"):
            terms["l1"] = (pred.float() - target.float()).abs().mean()
        if w.get("mse"):
            terms["mse"] = ((pred.float() - target.float()) ** 2).mean()
        if w.get("perceptual"):
            if self.perceptual is None:
                raise ValueError(f"phase {phase!r} uses the 'perceptual' loss but perceptual "
                                 "is 'none'")
            terms["perceptual"] = self.perceptual(pred.float(), target.float())
        if w.get("gan") or w.get("feature_matching"):
            if discriminator is None:
                raise ValueError(f"phase {phase!r} uses gan / feature_matching without a "
                                 "discriminator")
            real, fake = forward_split(discriminator, target, pred)
            if w.get("gan"):
                terms["gan"] = sum(generator_loss(fake[s][1].float(), self.gan_kind)
                                   for s in fake) / len(fake)
            if w.get("feature_matching"):
                terms["feature_matching"] = sum(
                    feature_matching_loss(real[s][0], fake[s][0]) for s in fake) / len(fake)
        extra = model_terms() if callable(model_terms) else (model_terms or {})
        for k, v in extra.items():
            if k in BUILTIN_TERMS:
                raise ValueError(f"model term {k!r} shadows a built-in loss term")
            if w.get(k):
                terms[k] = v
        unknown = set(w) - set(BUILTIN_TERMS) - set(extra)
        if unknown:
            raise ValueError(f"phase {phase!r} weights unknown losses {sorted(unknown)}; "
                             f"known: built-in {list(BUILTIN_TERMS)}, model "
                             f"{sorted(extra)}")
        return terms

    def __call__(self, weights: Mapping[str, float], pred: torch.Tensor,
                 target: torch.Tensor, **kw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, terms)``: :meth:`terms` and their :func:`weighted_sum`."""
        terms = self.terms(weights, pred, target, **kw)
        return weighted_sum(weights, terms), terms
