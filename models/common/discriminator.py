"""Multi-scale patch discriminator and GAN losses (LSGAN, hinge, WGAN-GP).

The discriminator returns, per scale, its intermediate feature maps (for the
feature-matching loss) and a patch prediction map (B, 1, h, w).

Losses (means over batch and patches; ``real``/``fake`` are discriminator outputs):

=========  ==========================================  ===============================
kind       discriminator loss                          generator loss
=========  ==========================================  ===============================
lsgan      (1 - D(x))^2 + D(G)^2                       (1 - D(G))^2
hinge      relu(1 - D(x)) + relu(1 + D(G))             -D(G)
wgan-gp    D(G) - D(x) + lambda * GP                   -D(G)
=========  ==========================================  ===============================

GP = E[(||grad_x^ D(x^)||_2 - 1)^2] with x^ = a x + (1 - a) G, a ~ U(0, 1) per sample
(Gulrajani et al. 2017); for a patch critic D(x^) is summed over patches of each sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ImagePyramid, make_norm

__all__ = [
    "PatchDiscriminator",
    "MultiScaleDiscriminator",
    "GAN_KINDS",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "feature_matching_loss",
    "forward_split",
    "adversarial_critic_loss",
]

DiscOutputs = dict[float, tuple[list[torch.Tensor], torch.Tensor]]

GAN_KINDS = ("lsgan", "hinge", "wgan-gp")


class _DiscBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, pool: bool, sn: bool, kernel: int = 4):
        super().__init__()
        conv = nn.Conv2d(cin, cout, kernel)
        self.conv = nn.utils.parametrizations.spectral_norm(conv) if sn else conv
        self.norm = make_norm(norm, cout)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.norm(self.conv(x)), 0.2)
        return F.avg_pool2d(out, 2) if self.pool else out


class PatchDiscriminator(nn.Module):
    """FOMM-style patch discriminator. (B, C, H, W) -> (features list, (B, 1, h, w)).

    ``num_blocks`` conv(4x4, valid) -> norm -> LeakyReLU(0.2) -> avgpool blocks (no norm on
    the first, no pooling on the last), then a 1x1 conv to one channel. ``norm`` should be
    ``"instance"`` or ``"none"`` (not ``"batch"`` for WGAN-GP: the penalty assumes
    per-sample outputs)."""

    def __init__(self, num_channels: int = 3, block_expansion: int = 64, num_blocks: int = 4,
                 max_features: int = 512, norm: str = "instance", sn: bool = False):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = num_channels if i == 0 else min(max_features, block_expansion * 2 ** i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(_DiscBlock(cin, cout, norm if i > 0 else "none",
                                     pool=i != num_blocks - 1, sn=sn))
        self.blocks = nn.ModuleList(blocks)
        conv = nn.Conv2d(cout, 1, 1)
        self.final = nn.utils.parametrizations.spectral_norm(conv) if sn else conv

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"discriminator input must be (B, C, H, W), got {tuple(x.shape)}")
        feats = []
        out = x
        for block in self.blocks:
            out = block(out)
            feats.append(out)
        return feats, self.final(out)


class MultiScaleDiscriminator(nn.Module):
    """One :class:`PatchDiscriminator` per scale of an anti-aliased image pyramid.

    forward(x) -> ``{scale: (features, prediction)}`` for each scale in ``scales``."""

    def __init__(self, scales: tuple[float, ...] | list[float] = (1.0,), num_channels: int = 3,
                 **kwargs):
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.pyramid = ImagePyramid(self.scales, num_channels)
        self.discs = nn.ModuleDict({str(s).replace(".", "-"): PatchDiscriminator(
            num_channels, **kwargs) for s in self.scales})

    def forward(self, x: torch.Tensor) -> dict[float, tuple[list[torch.Tensor], torch.Tensor]]:
        pyr = self.pyramid(x)
        return {s: self.discs[str(s).replace(".", "-")](pyr[s]) for s in self.scales}


def _check_kind(kind: str) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN loss {kind!r}; expected one of {GAN_KINDS}")


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str = "lsgan") -> torch.Tensor:
    """Discriminator loss (scalar) from prediction maps of real and generated images (any
    equal shapes). For ``wgan-gp`` add :func:`gradient_penalty` yourself."""
    _check_kind(kind)
    if kind == "lsgan":
        return ((1 - real) ** 2).mean() + (fake ** 2).mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return fake.mean() - real.mean()


def generator_loss(fake: torch.Tensor, kind: str = "lsgan") -> torch.Tensor:
    """Adversarial generator loss (scalar) from the prediction map of generated images."""
    _check_kind(kind)
    if kind == "lsgan":
        return ((1 - fake) ** 2).mean()
    return -fake.mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP gradient penalty E[(||grad D(x^)||_2 - 1)^2] (scalar).

    Args:
        critic: maps (B, ...) inputs to outputs of any shape with batch first (a patch map
            is summed per sample).
        real, fake: (B, ...) tensors of the same shape (fake is detached).
        alpha: (B,) interpolation weights; uniform random if None.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake shapes differ: {tuple(real.shape)} vs "
                         f"{tuple(fake.shape)}")
    b = real.shape[0]
    if alpha is None:
        alpha = torch.rand(b, device=real.device, dtype=real.dtype)
    alpha = alpha.view(b, *([1] * (real.dim() - 1)))
    x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = critic(x)
        if isinstance(out, tuple):
            out = out[-1]
        grad, = torch.autograd.grad(out.float().reshape(b, -1).sum(), x, create_graph=True)
    norm = grad.reshape(b, -1).norm(dim=1)
    return ((norm - 1) ** 2).mean()


def feature_matching_loss(real_feats: list[torch.Tensor],
                          fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean absolute difference between discriminator features of
    real (detached) and generated images (pix2pixHD feature matching)."""
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError("feature lists must be non-empty and of equal length")
    total = 0.0
    for r, f in zip(real_feats, fake_feats):
        total = total + (r.detach() - f).abs().mean()
    return total / len(real_feats)


def forward_split(disc: nn.Module, *images: torch.Tensor) -> list[DiscOutputs]:
    """One forward of a multi-scale discriminator on the concatenation of ``images`` (each
    (B_i, C, H, W); a single call, so one DDP reduction), split back per input: a list of
    ``{scale: (features, prediction)}``, one per image batch."""
    sizes = [x.shape[0] for x in images]
    out = disc(torch.cat(images, dim=0))
    split = []
    for i in range(len(images)):
        lo, hi = sum(sizes[:i]), sum(sizes[:i + 1])
        split.append({s: ([f[lo:hi] for f in feats], pred[lo:hi])
                      for s, (feats, pred) in out.items()})
    return split


def adversarial_critic_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                            kind: str = "lsgan", gp_weight: float = 10.0
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a multi-scale discriminator ``disc`` for one critic step.

    Mean over scales of :func:`discriminator_loss` of real vs fake (``fake`` should be
    detached); for ``wgan-gp`` plus ``gp_weight`` times the gradient penalty on random
    interpolates (a ~ U(0, 1) per sample, drawn from the global torch RNG), computed in the
    same discriminator forward as real and fake (one DDP call; the patch map is summed per
    sample).

    Returns (loss, logs) with logs ``{"disc": adversarial part, "gp": penalty}`` (``gp``
    for wgan-gp only), detached.
    """
    _check_kind(kind)
    images = [real, fake]
    if kind == "wgan-gp":
        a = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        interp = (a * real + (1 - a) * fake).detach().requires_grad_(True)
        images.append(interp)
    outs = forward_split(disc, *images)
    loss = sum(discriminator_loss(outs[0][s][1].float(), outs[1][s][1].float(), kind)
               for s in outs[0]) / len(outs[0])
    logs = {"disc": loss.detach()}
    if kind == "wgan-gp":
        crit = sum(outs[2][s][1].float().flatten(1).sum(1).sum() for s in outs[2])
        grad, = torch.autograd.grad(crit, interp, create_graph=True)
        gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        logs["gp"] = gp.detach()
        loss = loss + gp_weight * gp
    return loss, logs
