"""Adaptive instance normalization (AdaIN; Huang & Belongie, ICCV 2017) conditioned on a
vector.

``AdaIN(x, s) = gamma(s) * (x - mu(x)) / sigma(x) + beta(s)`` with per-sample, per-channel
mean ``mu`` and standard deviation ``sigma`` over the spatial positions (biased variance,
``sigma = sqrt(var + eps)``), and ``gamma, beta`` affine functions of the conditioning
vector ``s``. Used by S2D (landmark vectors steer the dense-motion encoder / decoder) and
usable by any model that conditions feature statistics on a code (style, identity, pose).

* :func:`adaptive_instance_norm` - the normalisation with given ``gamma`` / ``beta``;
* :class:`AdaIN` - a layer with its own linear map ``s -> (gamma, beta)``, initialised to
  the identity modulation (``gamma = 1``, ``beta = 0`` for every ``s``), so an untrained
  AdaIN is a plain (non-affine) instance norm.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["adaptive_instance_norm", "AdaIN"]


def adaptive_instance_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                           eps: float = 1e-5) -> torch.Tensor:
    """Instance-normalise ``x`` and modulate it per sample and channel.

    Args:
        x: (B, C, H, W) features (or (B, C, L)).
        gamma, beta: (B, C) scale and shift.
        eps: added to the variance.

    Returns:
        Same shape as ``x``.
    """
    if x.dim() < 3:
        raise ValueError(f"x must be (B, C, ...) with spatial dims, got {tuple(x.shape)}")
    b, c = x.shape[:2]
    if gamma.shape != (b, c) or beta.shape != (b, c):
        raise ValueError(f"gamma and beta must be (B, C) = {(b, c)}, got "
                         f"{tuple(gamma.shape)} and {tuple(beta.shape)}")
    dims = tuple(range(2, x.dim()))
    var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
    view = (b, c) + (1,) * len(dims)
    return gamma.view(view) * (x - mean) * torch.rsqrt(var + eps) + beta.view(view)


class AdaIN(nn.Module):
    """AdaIN layer conditioned on a vector.

    Args:
        channels: C of the features.
        cond_dim: D of the conditioning vector.
        eps: variance epsilon.

    forward(x (B, C, H, W), cond (B, D)) -> (B, C, H, W).
    """

    def __init__(self, channels: int, cond_dim: int, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.affine = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) -> gamma (B, C) = 1 + first half, beta (B, C) = second half."""
        if cond.dim() != 2 or cond.shape[1] != self.affine.in_features:
            raise ValueError(f"cond must be (B, {self.affine.in_features}), got "
                             f"{tuple(cond.shape)}")
        g, b = self.affine(cond).chunk(2, dim=1)
        return 1 + g, b

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must be (B, {self.channels}, H, W), got {tuple(x.shape)}")
        gamma, beta = self.modulation(cond)
        if cond.shape[0] != x.shape[0]:
            raise ValueError(f"x and cond batch sizes differ: {x.shape[0]} vs {cond.shape[0]}")
        return adaptive_instance_norm(x, gamma.to(x.dtype), beta.to(x.dtype), self.eps)
