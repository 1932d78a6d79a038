"""FD-GAN's training step: a patch discriminator and an adversarial patch identity
classifier (eqs. 10-12 of Xiang et al. 2020).

Generator terms (a phase weights them by name; the paper: ``rec: 50, patch_gan: 1,
identity_adv: 1``):

* ``rec``: the model's ``|T(x_T, l_T, l'_T) - x'_T|^2`` on [-1, 1] pixels
  (:meth:`~.network.LDNetFDGAN.extra_losses`);
* ``patch_gan``: ``D(T(...))^2``
  (:func:`~facegeo_models.common.patch_critic.lsgan_pm1_generator_loss`);
* ``identity_adv``: ``-log P(k | C(T(...)))`` averaged over patches.

Critics (each trained after the generator step in the phases that weight its term):

* ``patch_discriminator``: :class:`~facegeo_models.common.patch_critic.PatchCritic` with one
  output channel, ``(D(x_T) - 1)^2 + (D(T) + 1)^2`` (eq. 10), logged as ``loss/disc``;
* ``identity_classifier``: a PatchCritic with K = ``num_identities`` logits,
  ``-log P(k|C(x_T)) - log(1 - P(k|C(T)))`` (eq. 11), logged as ``loss/id_cls``.

Both have the U-Net down path's structure (``widths`` of the config section, default the
model's). The real image of eqs. 10-11 is x_T, the source frame (as written). Identity
labels k are ``batch["identity"]`` (the dataset's ``with_identity``).

Config sections ``patch_discriminator`` / ``identity_classifier``: ``widths``, ``norm``,
``optimizer`` (default ``train.optimizer``), and for the classifier ``num_identities``
(required: the number of training identities).
"""

from __future__ import annotations

from ..common.patch_critic import (
    PatchCritic,
    lsgan_pm1_critic_loss,
    lsgan_pm1_generator_loss,
    patch_classifier_critic_loss,
    patch_classifier_generator_loss,
)
from ..common.task import Critic, TrainingTask, first_source, unwrap

__all__ = ["FDGANTask"]


def _labels(batch: dict):
    k = batch.get("identity")
    if k is None:
        raise ValueError("the identity_adv term needs identity labels: batch['identity'] "
                         "(set data.with_identity: true, and data.identities to the corpus "
                         "manifest or an identities.json)")
    return k


class FDGANTask(TrainingTask):
    """See the module docstring."""

    def __init__(self, config: dict):
        super().__init__(config)
        self.disc_cfg = dict(config.get("patch_discriminator") or {})
        self.cls_cfg = dict(config.get("identity_classifier") or {})

    def _critic(self, model, cfg: dict, out_channels: int) -> PatchCritic:
        fd = unwrap(model).fdgan
        return PatchCritic(3, tuple(cfg.get("widths", fd.widths)), out_channels,
                           norm=cfg.get("norm", "none"), slope=float(cfg.get("slope", 0.2)))

    def build_critics(self, model, uses):
        critics = super().build_critics(model, uses)
        if "patch_gan" in uses:
            critics["patch_discriminator"] = Critic(
                self._critic(model, self.disc_cfg, 1), terms=("patch_gan",),
                optimizer=self.disc_cfg.get("optimizer"), log_name="d")
        if "identity_adv" in uses:
            k = self.cls_cfg.get("num_identities")
            if not k or int(k) < 2:
                raise ValueError("identity_classifier.num_identities (>= 2, the number of "
                                 "training identities) is needed for the identity_adv term")
            critics["identity_classifier"] = Critic(
                self._critic(model, self.cls_cfg, int(k)), terms=("identity_adv",),
                optimizer=self.cls_cfg.get("optimizer"), log_name="c")
        return critics

    def model_terms(self, nets, batch, out, weights):
        terms = super().model_terms(nets, batch, out, weights)
        pred = out["prediction"] * 2 - 1
        if weights.get("patch_gan"):
            terms["patch_gan"] = lsgan_pm1_generator_loss(nets["patch_discriminator"](pred))
        if weights.get("identity_adv"):
            terms["identity_adv"] = patch_classifier_generator_loss(
                nets["identity_classifier"](pred), _labels(batch))
        return terms

    def critic_loss(self, name, nets, batch, out):
        real = first_source(batch) * 2 - 1
        fake = out["prediction"].detach() * 2 - 1
        if name == "patch_discriminator":
            loss = lsgan_pm1_critic_loss(nets[name](real), nets[name](fake))
            return loss, {"disc": loss.detach()}
        if name == "identity_classifier":
            loss = patch_classifier_critic_loss(nets[name](real), nets[name](fake),
                                                _labels(batch))
            return loss, {"id_cls": loss.detach()}
        return super().critic_loss(name, nets, batch, out)
