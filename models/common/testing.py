"""Tiny models for testing the training infrastructure (registered under test-only names).

``_test_tiny_warp``: a miniature reenactment network with the interface every model
implements for :class:`~facegeo_models.common.trainer.Trainer`:

* ``forward(batch) -> dict`` with ``"prediction"`` (B, 3, H, W) in [0, 1], where ``batch``
  holds ``"source"`` (B, 3, H, W) or (B, n_src, 3, H, W) and ``"driving"`` (B, 3, H, W);
* optional ``extra_losses(batch, out) -> {name: scalar}``, weighted by the phase config.

It predicts a dense flow and an occlusion map from (source, driving) with two convolutions
and renders with :class:`~facegeo_models.common.blocks.OcclusionAwareGenerator`. It uses
group normalization, so its per-sample outputs do not depend on the batch (needed for the
multi-process gradient test).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import OcclusionAwareGenerator, identity_grid
from .registry import register_model

__all__ = ["TinyWarpModel"]


class TinyWarpModel(nn.Module):
    def __init__(self, channels: int = 8, num_down_blocks: int = 2, bottleneck: int = 1,
                 max_flow: float = 0.25, norm: str = "group"):
        super().__init__()
        self.max_flow = max_flow
        self.motion = nn.Sequential(
            nn.Conv2d(6, channels, 3, padding=1), nn.GroupNorm(4, channels), nn.ReLU(),
            nn.Conv2d(channels, 3, 3, padding=1))
        self.generator = OcclusionAwareGenerator(
            num_channels=3, block_expansion=channels, max_features=4 * channels,
            num_down_blocks=num_down_blocks, num_bottleneck_blocks=bottleneck, norm=norm)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        src, drv = batch["source"], batch["driving"]
        if src.dim() == 5:
            src = src[:, 0]
        h, w = src.shape[-2:]
        m = self.motion(torch.cat([F.avg_pool2d(src, 2), F.avg_pool2d(drv, 2)], dim=1))
        flow = torch.tanh(m[:, :2]).permute(0, 2, 3, 1) * self.max_flow
        grid = identity_grid(src.shape[0], h // 2, w // 2, device=src.device,
                             dtype=src.dtype) + flow
        out = self.generator(src, grid, torch.sigmoid(m[:, 2:3]))
        out["flow"] = flow
        return out

    def extra_losses(self, batch, out) -> dict[str, torch.Tensor]:
        f = out["flow"]
        smooth = (f[:, 1:] - f[:, :-1]).abs().mean() + (f[:, :, 1:] - f[:, :, :-1]).abs().mean()
        return {"flow_smoothness": smooth}


@register_model("_test_tiny_warp", overwrite=True)
def build_tiny_warp(config: dict) -> nn.Module:
    return TinyWarpModel(**config)
