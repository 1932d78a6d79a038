"""A U-Net down path, patch critics built on it, and their patch-averaged losses.

* :class:`ConvDownPath`: levels of ``4x4 stride-2 conv -> act -> 3x3 conv -> act`` (the
  down-convolution module of FD-GAN's U-Nets, Xiang et al. 2020, supplement sec. 6);
  returns every level's features (the U-Net skips).
* :class:`PatchCritic`: that down path plus a 1x1 convolution to ``out_channels`` scores
  per patch: a patch discriminator (1 channel) or a patch classifier (K identity logits),
  the paper's "same structure as the down-convolution module of the U-Nets".
* Losses averaged over batch and patches:

  =======================================  ===============================================
  :func:`lsgan_pm1_critic_loss`            ``(D(x) - 1)^2 + (D(G) + 1)^2`` (FD-GAN eq. 10)
  :func:`lsgan_pm1_generator_loss`         ``D(G)^2`` (eq. 12)
  :func:`patch_classifier_critic_loss`     ``-log P(k|C(x)) - log(1 - P(k|C(G)))`` (eq. 11)
  :func:`patch_classifier_generator_loss`  ``-log P(k|C(G))`` (eq. 12)
  =======================================  ===============================================

  The least-squares GAN with targets -1 / +1 for the critic and 0 for the generator is the
  a = -1, b = 1, c = 0 case of Mao et al. (2017); it differs from the 0 / 1 / 1 LSGAN of
  :mod:`.discriminator`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import make_norm

__all__ = ["ConvDownPath", "PatchCritic", "lsgan_pm1_critic_loss", "lsgan_pm1_generator_loss",
           "patch_classifier_critic_loss", "patch_classifier_generator_loss", "log1mexp"]


class ConvDownPath(nn.Module):
    """Down-convolution levels: ``conv4x4 s2 (pad 1) -> norm -> LeakyReLU -> conv3x3
    (pad 1) -> norm -> LeakyReLU`` per width.

    Args:
        in_channels: input channels.
        widths: output channels of each level (FD-GAN: (32, 64, 128, 256)).
        norm: normalization after each convolution (:func:`~.blocks.make_norm`).
        slope: LeakyReLU negative slope.

    forward(x (B, C, H, W)) -> list of len(widths) maps, level i (B, widths[i], H / 2^(i+1),
    W / 2^(i+1)); H and W must be divisible by 2^len(widths).
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...] | list[int],
                 norm: str = "none", slope: float = 0.2):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {widths}")
        self.widths, self.slope = widths, float(slope)
        levels = []
        cin = in_channels
        for w in widths:
            levels.append(nn.Sequential(
                nn.Conv2d(cin, w, 4, stride=2, padding=1), make_norm(norm, w),
                nn.LeakyReLU(slope),
                nn.Conv2d(w, w, 3, padding=1), make_norm(norm, w), nn.LeakyReLU(slope)))
            cin = w
        self.levels = nn.ModuleList(levels)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (B, {self.in_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        f = 2 ** len(self.levels)
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"height and width must be divisible by {f} "
                             f"({len(self.levels)} stride-2 levels), got {tuple(x.shape[-2:])}")
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


class PatchCritic(nn.Module):
    """:class:`ConvDownPath` + 1x1 conv head: (B, C, H, W) -> (B, out_channels, H / 2^L,
    W / 2^L) per-patch scores (a discriminator with ``out_channels=1``, a classifier with
    K logits)."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] | list[int] = (32, 64,
                 128, 256), out_channels: int = 1, norm: str = "none", slope: float = 0.2):
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.down = ConvDownPath(in_channels, widths, norm=norm, slope=slope)
        self.head = nn.Conv2d(self.down.widths[-1], out_channels, 1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(x)[-1])


def lsgan_pm1_critic_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``mean((real - 1)^2) + mean((fake + 1)^2)`` over batch and patches (scalar)."""
    return (real.float() - 1).pow(2).mean() + (fake.float() + 1).pow(2).mean()


def lsgan_pm1_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """``mean(fake^2)``: the generator pulls the critic's score to 0 (scalar)."""
    return fake.float().pow(2).mean()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for x <= 0, computed stably (Maechler 2012); -inf at x = 0."""
    x = x.clamp(max=0)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)),
                       torch.log1p(-torch.exp(x)))


def _label_log_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) logits, (B,) int labels -> (B, h, w) log P(label) per patch."""
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, K, h, w), got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (B={logits.shape[0]},), got {tuple(labels.shape)}")
    k = logits.shape[1]
    labels = labels.long()
    if bool(((labels < 0) | (labels >= k)).any()):
        raise ValueError(f"identity labels must lie in [0, {k}) (the classifier has {k} "
                         f"classes), got {labels.tolist()}")
    lp = F.log_softmax(logits.float(), dim=1)
    idx = labels.to(lp.device)[:, None, None, None].expand(-1, 1, *lp.shape[-2:])
    return lp.gather(1, idx)[:, 0]


def patch_classifier_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                                 labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 11: ``mean(-log P(k|C(x))) + mean(-log(1 - P(k|C(G))))`` over batch and patches.

    Args:
        real_logits, fake_logits: (B, K, h, w) classifier logits of real / generated images.
        labels: (B,) identity indices k.
        eps: ``1 - P`` is floored at eps (the term is unbounded when C is certain).
    """
    real = -_label_log_prob(real_logits, labels).mean()
    lp_fake = _label_log_prob(fake_logits, labels)
    fake = -log1mexp(lp_fake).clamp(min=torch.log(torch.tensor(eps)).item()).mean()
    return real + fake


def patch_classifier_generator_loss(fake_logits: torch.Tensor, labels: torch.Tensor
                                    ) -> torch.Tensor:
    """Eq. 12's classifier term: ``mean(-log P(k|C(G)))`` over batch and patches."""
    return -_label_log_prob(fake_logits, labels).mean()
