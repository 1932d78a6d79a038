"""Tiny models for testing the training infrastructure (registered under test-only names).

* ``_test_tiny_warp`` (:class:`TinyWarpModel`): the default
  :class:`~facegeo_models.common.task.TrainingTask`.
* ``_test_two_critics`` (:class:`TwoCriticWarpModel`): the same network trained by
  :class:`TwoCriticTask`, which adds a second critic, a source-conditioned patch classifier
  with its own loss and optimizer, to the multi-scale discriminator.

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
from .discriminator import (
    MultiScaleDiscriminator,
    adversarial_critic_loss,
    forward_split,
    generator_loss,
)
from .registry import register_model
from .task import Critic, TrainingTask, first_source

__all__ = ["TinyWarpModel", "TwoCriticWarpModel", "TwoCriticTask", "tracked_face_clip"]


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


class TwoCriticTask(TrainingTask):
    """The default task plus ``pair_classifier``: a multi-scale patch discriminator on
    (source, image) channel pairs, real = (source, driving), fake = (source, prediction),
    with its own GAN loss (config ``pair_classifier.gan_loss``, default hinge) and optimizer
    (``pair_classifier.optimizer``); the generator term ``pair_gan`` fools it. Critic logs:
    ``loss/pair_disc``, ``grad_norm/pair``."""

    def __init__(self, config: dict):
        super().__init__(config)
        pcfg = dict(config.get("pair_classifier") or {})
        self.pair_kind = pcfg.pop("gan_loss", "hinge")
        self.pair_optimizer = pcfg.pop("optimizer", None)
        self.pair_kwargs = pcfg

    def build_critics(self, model, uses):
        critics = super().build_critics(model, uses)
        if "pair_gan" in uses:
            critics["pair_classifier"] = Critic(
                MultiScaleDiscriminator(num_channels=6, **self.pair_kwargs), terms=("pair_gan",),
                optimizer=self.pair_optimizer, log_name="pair")
        return critics

    def model_terms(self, nets, batch, out, weights):
        terms = super().model_terms(nets, batch, out, weights)
        if weights.get("pair_gan"):
            pair = torch.cat([first_source(batch), out["prediction"]], 1)
            fake, = forward_split(nets["pair_classifier"], pair)
            terms["pair_gan"] = sum(generator_loss(fake[s][1].float(), self.pair_kind)
                                    for s in fake) / len(fake)
        return terms

    def critic_loss(self, name, nets, batch, out):
        if name != "pair_classifier":
            return super().critic_loss(name, nets, batch, out)
        src = first_source(batch)
        loss, logs = adversarial_critic_loss(
            nets[name], torch.cat([src, self.target(batch)], 1),
            torch.cat([src, out["prediction"].detach()], 1), self.pair_kind)
        return loss, {f"pair_{k}": v for k, v in logs.items()}


class TwoCriticWarpModel(TinyWarpModel):
    """:class:`TinyWarpModel` trained by :class:`TwoCriticTask`."""

    def training_task(self, config: dict) -> TrainingTask:
        return TwoCriticTask(config)


@register_model("_test_two_critics", overwrite=True)
def build_two_critics(config: dict) -> nn.Module:
    return TwoCriticWarpModel(**config)


def tracked_face_clip(path, size: int, *, frames: int = 12, detector: str = "dlib_hog"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``frames`` frames of a real video as face crops with tracked landmarks,
    for tests of landmark-driven models.

    The face is detected once and tracked (:class:`facegeo.landmarks.LandmarkTracker`,
    One-Euro smoothed); one crop box for the clip (:func:`facegeo.landmarks.crops.face_boxes`
    of the mean landmarks), so the head moves inside the crops as in the video.

    Returns:
        crops (T, 3, size, size) in [0, 1], landmarks (T, 68, 2) in crop pixels.
    """
    from facegeo.landmarks import LandmarkTracker
    from facegeo.landmarks.crops import crop_images, face_boxes, points_to_crop
    from facegeo.video import frames_to_tensor, read_video

    arr, fps = read_video(path, max_frames=frames)
    lm = LandmarkTracker(detector, fps=fps).track(arr).smoothed.float()
    box = face_boxes(lm.mean(0, keepdim=True)).expand(len(lm), -1)
    x = frames_to_tensor(arr)
    return crop_images(x, box, size), points_to_crop(lm, box, size)
