"""A CNN decoder from a latent motion vector to a dense flow image.

The image half of the mesh-guided motion net (Yao et al., section 3.2: an "asymmetric
autoencoder" whose encoder is a graph network and whose decoder is 2-D convolutional); any
model that regresses a dense motion field from a vector (a pose code, a mesh or keypoint
embedding) can use it.

* :class:`UpResBlock2d`: the paper's up-sampling block: two branches, a main branch
  ``upsample -> conv3x3 -> norm -> ReLU -> conv3x3 -> norm -> ReLU`` and a shortcut
  ``upsample`` (plus a 1x1 convolution when the channel count changes), added.
* :class:`LatentFlowDecoder`: ``Linear -> (C_0, b, b)`` map, ``len(channels) - 1``
  :class:`UpResBlock2d`, ``num_res_blocks`` residual blocks (BigGAN-style pre-activation
  :class:`~facegeo_models.common.blocks.ResBlock2d`), a conv7x7 to 2 channels: a
  displacement in the normalized ``grid_sample`` convention (align_corners=False, see
  :mod:`facegeo.coords`). The last convolution starts at zero, so an untrained decoder
  predicts the identity warp (:meth:`LatentFlowDecoder.grid`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResBlock2d, identity_grid, make_norm

__all__ = ["UpResBlock2d", "LatentFlowDecoder"]


class UpResBlock2d(nn.Module):
    """Residual 2x up-sampling block (see the module docstring).

    Args:
        in_features, out_features: C_in, C_out.
        norm: ``make_norm`` name (``"batch"`` in the paper).
        mode: interpolation of both branches (``"nearest"`` or ``"bilinear"``).

    Shapes: (B, C_in, H, W) -> (B, C_out, 2H, 2W).
    """

    def __init__(self, in_features: int, out_features: int, norm: str = "batch",
                 mode: str = "nearest"):
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
        self.mode = mode
        self.conv1 = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm1 = make_norm(norm, out_features)
        self.conv2 = nn.Conv2d(out_features, out_features, 3, padding=1)
        self.norm2 = make_norm(norm, out_features)
        self.shortcut = (nn.Conv2d(in_features, out_features, 1)
                         if in_features != out_features else nn.Identity())

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"UpResBlock2d expects (B, C, H, W), got {tuple(x.shape)}")
        up = self._up(x)
        h = F.relu(self.norm1(self.conv1(up)))
        h = F.relu(self.norm2(self.conv2(h)))
        return h + self.shortcut(up)


class LatentFlowDecoder(nn.Module):
    """Latent vector -> dense displacement image (see the module docstring).

    Args:
        latent_dim: D of the input vector.
        channels: (C_0, C_1, ..., C_n): C_0 channels on the ``base_size`` map, then one
            :class:`UpResBlock2d` to each following width; the output side is
            ``base_size * 2**n``.
        base_size: side b of the first feature map.
        num_res_blocks: residual blocks at the output resolution.
        norm: normalization of every block (``"batch"`` in the paper).
        max_displacement: if set, the displacement is ``max_displacement * tanh(.)``
            (normalized units); None: unbounded.

    forward(z (B, D)) -> (B, 2, S, S) displacement (x, y channels), S = ``out_size``.
    """

    def __init__(self, latent_dim: int, channels=(256, 128, 64, 32), base_size: int = 4,
                 num_res_blocks: int = 2, norm: str = "batch",
                 max_displacement: float | None = None):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 1 or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive widths, got "
                             f"{channels}")
        if base_size < 1 or latent_dim < 1:
            raise ValueError("latent_dim and base_size must be >= 1")
        self.latent_dim, self.base_size, self.channels = latent_dim, base_size, channels
        self.max_displacement = max_displacement
        self.fc = nn.Linear(latent_dim, channels[0] * base_size * base_size)
        self.fc_norm = make_norm(norm, channels[0])
        self.up_blocks = nn.ModuleList(UpResBlock2d(a, b, norm=norm)
                                       for a, b in zip(channels[:-1], channels[1:]))
        self.res_blocks = nn.Sequential(*[ResBlock2d(channels[-1], norm=norm)
                                          for _ in range(num_res_blocks)])
        self.out_norm = make_norm(norm, channels[-1])
        self.final = nn.Conv2d(channels[-1], 2, 7, padding=3)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    @property
    def out_size(self) -> int:
        """Side S of the displacement image."""
        return self.base_size * 2 ** (len(self.channels) - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"LatentFlowDecoder expects (B, {self.latent_dim}) latents, got "
                             f"{tuple(z.shape)}")
        b = self.base_size
        x = F.relu(self.fc_norm(self.fc(z).view(z.shape[0], self.channels[0], b, b)))
        for block in self.up_blocks:
            x = block(x)
        x = self.res_blocks(x)
        d = self.final(F.relu(self.out_norm(x)))
        if self.max_displacement is not None:
            d = self.max_displacement * torch.tanh(d)
        return d

    def grid(self, z: torch.Tensor) -> torch.Tensor:
        """The backward sampling grid ``identity + displacement``: (B, D) -> (B, S, S, 2)
        (normalized coordinates, ready for
        :func:`~facegeo_models.common.blocks.warp`)."""
        d = self(z)
        ident = identity_grid(z.shape[0], d.shape[-2], d.shape[-1], device=d.device,
                              dtype=d.dtype)
        return ident + d.permute(0, 2, 3, 1)
