"""Training tasks: what one training step of a model does.

The :class:`~facegeo_models.common.trainer.Trainer` owns what every model shares (DDP,
AMP, EMA, gradient clipping, phases, validation, sample grids, logs, exact resume,
checkpoints). A :class:`TrainingTask` owns what differs between models:

* its **critics** (:meth:`TrainingTask.build_critics`): any number of networks trained
  against the generator (discriminators, classifiers), each a :class:`Critic` with its own
  optimizer config and the generator terms that need it; the phases that weight one of
  those terms train it, after the generator step, with :meth:`TrainingTask.critic_loss`;
* its **target** (:meth:`TrainingTask.target`);
* its **generator terms** (:meth:`TrainingTask.generator_losses`): the phase's weighted
  terms from the :class:`~facegeo_models.common.losses.LossComposer` (built-in terms plus
  :meth:`TrainingTask.model_terms`, by default the model's ``extra_losses``);
* **pixel sub-sampling**: a phase with ``pixels: P`` draws P random pixels per sample
  (:func:`sample_pixels`), passes their flat indices as ``batch["pixel_index"]`` (B, P) and
  compares prediction and target there only (:func:`gather_pixels`; a model may render
  just those pixels, (B, 3, P));
* **gradient penalty**: ``discriminator.gan_loss: wgan-gp`` (``gp_weight``) in the default
  discriminator's critic loss (:func:`~.discriminator.adversarial_critic_loss`).

A model picks its task with ``training_task(config)``
(:meth:`~facegeo_models.common.model.ReenactmentModel.training_task`); a model without that
method gets the default :class:`TrainingTask`: one generator (the model), the optional
multi-scale ``discriminator`` of the config, target ``batch["driving"]``.

Every method that runs networks gets ``nets``: ``{"model": generator, <critic name>:
network}``, possibly wrapped in DistributedDataParallel (call them, use :func:`unwrap` for
attributes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .discriminator import GAN_KINDS, MultiScaleDiscriminator, adversarial_critic_loss
from .losses import LossComposer
from .perceptual import build_perceptual

__all__ = ["Critic", "TrainingTask", "unwrap", "sample_pixels", "gather_pixels",
           "first_source"]

Nets = dict[str, nn.Module]


def unwrap(m: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or ``m`` itself)."""
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def first_source(batch: dict) -> torch.Tensor:
    """``batch["source"]`` as (B, 3, H, W): the first source of (B, n_src, 3, H, W)."""
    src = batch["source"]
    return src[:, 0] if src.dim() == 5 else src


def sample_pixels(batch: int, height: int, width: int, num: int, *, device=None
                  ) -> torch.Tensor:
    """(B, num) flat pixel indices ``y * width + x``, drawn uniformly without replacement
    per sample from the global torch RNG (so resumes reproduce them)."""
    if not 0 < num <= height * width:
        raise ValueError(f"need 0 < pixels <= {height * width}, got {num}")
    keys = torch.rand(batch, height * width)
    return keys.argsort(dim=1)[:, :num].to(device)


def gather_pixels(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images, (B, P) flat indices -> (B, C, P)."""
    b, c = images.shape[:2]
    return images.flatten(2).gather(2, index[:, None, :].expand(b, c, -1))


@dataclass
class Critic:
    """A network the task trains against the generator (discriminator or classifier).

    Attributes:
        network: the module (the trainer moves it to the device, wraps it in DDP, saves it
            as ``<name>.safetensors`` and restores it on resume).
        terms: the generator loss terms that use it; a phase weighting any of them also
            runs this critic's step (:meth:`TrainingTask.critic_loss`).
        optimizer: its ``build_optimizer`` config (None: ``train.optimizer``); its learning
            rate follows ``train.scheduler`` at the global step.
        log_name: its gradient norm is logged as ``grad_norm/<log_name>`` (default: its
            name).
    """

    network: nn.Module
    terms: tuple[str, ...]
    optimizer: dict | None = None
    log_name: str | None = None


class TrainingTask:
    """The default task (see the module docstring); subclass and override to change it.

    Args:
        config: the full training config. Reads ``perceptual`` and ``discriminator``
            (``gan_loss``, ``gp_weight``, ``optimizer``, the rest are
            :class:`~.discriminator.MultiScaleDiscriminator` kwargs).
    """

    def __init__(self, config: dict):
        self.config = config
        dcfg = dict(config.get("discriminator") or {})
        self.gan_kind = dcfg.pop("gan_loss", "lsgan")
        if self.gan_kind not in GAN_KINDS:
            raise ValueError(f"unknown gan_loss {self.gan_kind!r}; expected one of {GAN_KINDS}")
        self.gp_weight = float(dcfg.pop("gp_weight", 10.0))
        self.disc_optimizer = dcfg.pop("optimizer", None)
        self.disc_kwargs = dcfg
        self.perceptual: nn.Module | None = None
        self.composer: LossComposer | None = None

    # ------------------------------------------------------------------ building
    def build(self, model: nn.Module, uses: set[str], device: torch.device
              ) -> dict[str, Critic]:
        """Called once by the trainer right after building ``model`` (same RNG stream on
        every rank): builds the perceptual loss and the composer, then the critics.
        ``uses``: the loss names some phase weights (non-zero)."""
        self.perceptual = build_perceptual(self.config.get("perceptual", "none"))
        if self.perceptual is not None:
            self.perceptual.to(device)
        if "perceptual" in uses and self.perceptual is None:
            raise ValueError("a phase uses the 'perceptual' loss but perceptual is 'none'")
        self.composer = LossComposer(self.perceptual, self.gan_kind)
        critics = self.build_critics(model, uses)
        for name in critics:
            if name in ("model", "ema") or not name.replace("_", "").isalnum():
                raise ValueError(f"bad critic name {name!r}")
        return critics

    def build_critics(self, model: nn.Module, uses: set[str]) -> dict[str, Critic]:
        """``{name: Critic}``; default: the multi-scale ``discriminator`` when a phase uses
        ``gan`` or ``feature_matching``."""
        if not {"gan", "feature_matching"} & uses:
            return {}
        return {"discriminator": Critic(MultiScaleDiscriminator(**self.disc_kwargs),
                                        terms=("gan", "feature_matching"),
                                        optimizer=self.disc_optimizer, log_name="d")}

    # ------------------------------------------------------------------ steps
    def target(self, batch: dict) -> torch.Tensor:
        """What the prediction is compared with: ``batch["driving"]`` (B, 3, H, W)."""
        return batch["driving"]

    def generator_losses(self, nets: Nets, batch: dict, phase: dict
                         ) -> tuple[dict, torch.Tensor, dict[str, torch.Tensor]]:
        """Forward of the generator and its weighted phase losses. Returns (model outputs,
        weighted total, {name: unweighted term})."""
        weights = phase["losses"]
        num = phase.get("pixels")
        if num:
            ref = self.target(batch)
            batch = {**batch, "pixel_index": sample_pixels(
                ref.shape[0], ref.shape[-2], ref.shape[-1], int(num), device=ref.device)}
        out = nets["model"](batch)
        pred, target = out["prediction"], self.target(batch)
        if num:
            target = gather_pixels(target, batch["pixel_index"])
            if pred.dim() == 4:
                pred = gather_pixels(pred, batch["pixel_index"])
        total, terms = self.composer(
            weights, pred, target, discriminator=nets.get("discriminator"),
            model_terms=lambda: self.model_terms(nets, batch, out, weights),
            phase=phase.get("name"))
        return out, total, terms

    def model_terms(self, nets: Nets, batch: dict, out: dict, weights: dict
                    ) -> dict[str, torch.Tensor]:
        """The model's own terms ``{name: scalar}``: its ``extra_losses(batch, out)``."""
        fn = getattr(unwrap(nets["model"]), "extra_losses", None)
        return dict(fn(batch, out)) if fn is not None else {}

    def critic_loss(self, name: str, nets: Nets, batch: dict, out: dict
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of critic ``name`` after a generator step (``out``: its outputs, detach
        what goes in). Returns (loss, {log name: scalar}); the trainer logs
        ``loss/<log name>``. Default (``discriminator``): real target vs detached prediction,
        with the gradient penalty for wgan-gp (logs ``disc``, ``gp``)."""
        if name != "discriminator":
            raise NotImplementedError(f"{type(self).__name__} has no loss for critic {name!r}")
        return adversarial_critic_loss(nets[name], self.target(batch),
                                       out["prediction"].detach(), self.gan_kind,
                                       self.gp_weight)
