"""FSRT's training step (sec. 3.3) on the common :class:`~facegeo_models.common.task.TrainingTask`.

What it adds to the default task:

* **detector stage**: a phase that weights ``equivariance`` trains the learned keypoint
  detector (FOMM's self-supervision: its equivariance term plus the reconstruction
  gradient); every other phase keeps it frozen, as the paper keeps its pretrained one.
* **phase I** (``pixels: 4096``): MSE on randomly sampled pixels; only those are rendered
  (the default task's pixel sub-sampling).
* **phase II / III** (``subgrid: s``): the image-based losses (perceptual, GAN, feature
  matching) on the strided sub-grid ``driving[:, :, oy::s, ox::s]`` with a random offset
  (oy, ox) per step, so every position is covered over training (the paper: 128^2 of the
  256^2 pixels, s = 2). Only the sub-grid is rendered (the paper renders the other pixels
  without gradient for its logs; we skip them).
"""

from __future__ import annotations

import torch

from facegeo_models.common.discriminator import adversarial_critic_loss
from facegeo_models.common.task import TrainingTask, unwrap

__all__ = ["FSRTTask", "subgrid_index"]


def subgrid_index(batch: int, height: int, width: int, stride: int, offset: tuple[int, int],
                  *, device=None) -> torch.Tensor:
    """(B, (H/s)(W/s)) flat indices ``y * W + x`` of the pixels (oy + s i, ox + s j), row
    major, so ``gather_pixels(x, idx).view(B, C, H/s, W/s) == x[:, :, oy::s, ox::s]``."""
    oy, ox = offset
    if stride < 1 or height % stride or width % stride or not (
            0 <= oy < stride and 0 <= ox < stride):
        raise ValueError(f"bad sub-grid: stride {stride}, offset {offset}, size "
                         f"{height}x{width}")
    ys = torch.arange(oy, height, stride, device=device)
    xs = torch.arange(ox, width, stride, device=device)
    idx = (ys[:, None] * width + xs[None, :]).reshape(-1)
    return idx.expand(batch, -1)


class FSRTTask(TrainingTask):
    """The default task plus the detector stage and the strided sub-grid (module
    docstring). Phase keys read: ``losses``, ``pixels``, ``subgrid``."""

    def generator_losses(self, nets, batch, phase):
        model = unwrap(nets["model"])
        model.train_detector = bool(float(phase["losses"].get("equivariance", 0) or 0))
        stride = int(phase.get("subgrid") or 0)
        if not stride:
            return super().generator_losses(nets, batch, phase)
        if phase.get("pixels"):
            raise ValueError(f"phase {phase.get('name')!r}: give pixels or subgrid, not both")
        target = self.target(batch)
        b, c, h, w = target.shape
        off = (int(torch.randint(stride, ())), int(torch.randint(stride, ())))
        idx = subgrid_index(b, h, w, stride, off, device=target.device)
        out = nets["model"]({**batch, "pixel_index": idx})
        pred = out["prediction"].reshape(b, c, h // stride, w // stride)
        target = target[:, :, off[0]::stride, off[1]::stride]
        out = {**out, "prediction": pred, "subgrid_target": target}
        weights = phase["losses"]
        total, terms = self.composer(
            weights, pred, target, discriminator=nets.get("discriminator"),
            model_terms=lambda: self.model_terms(nets, batch, out, weights),
            phase=phase.get("name"))
        return out, total, terms

    def critic_loss(self, name, nets, batch, out):
        if name != "discriminator" or "subgrid_target" not in out:
            return super().critic_loss(name, nets, batch, out)
        return adversarial_critic_loss(nets[name], out["subgrid_target"],
                                       out["prediction"].detach(), self.gan_kind,
                                       self.gp_weight)
