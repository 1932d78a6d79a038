"""Losses of the mesh-guided model (eq. 4) and its training step.

``L_total = lambda_rec L_rec + lambda_c L_c + lambda_FM L_FM + lambda_adv L_adv``
(section 3.4, weights 10, 1, 10, 1, section 4):

* ``L_rec`` (eq. 5): the VGG-19 pyramid perceptual loss (256, 128, 64, 32) -- the
  trainer's ``perceptual`` term (``perceptual: vgg19``; the MobileFaceNet face-feature
  substitute where VGG-19 weights are absent, :mod:`facegeo_models.common.perceptual`).
* ``L_c`` (eq. 6): :func:`coefficient_loss`, term ``coefficient``. The paper regresses the
  generated image's coefficients with the pretrained 3DMM regressor of 3DDFA [53]; facegeo
  has no differentiable image -> 3DMM regressor, so :class:`CoefficientRegressor` (a small
  CNN) is trained *alongside* the generator, as a second critic, to predict from a real
  frame the facegeo landmark fit of that frame (identity of the clip, expression, pose);
  the generator term compares its prediction on the generated frame with the source's
  identity and the driving frame's expression and pose.
* ``L_FM`` (eq. 7) and ``L_adv`` (eq. 8, WGAN-GP): the trainer's ``feature_matching`` and
  ``gan`` terms with ``discriminator.gan_loss: wgan-gp`` (gradient penalty weight
  ``discriminator.gp_weight``).

:class:`MeshGTask` is the :class:`~facegeo_models.common.task.TrainingTask` that adds the
regressor critic and the ``coefficient`` term.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common.blocks import DownBlock2d, SameBlock2d
from ..common.task import Critic, TrainingTask, first_source, unwrap

__all__ = ["coefficient_targets", "coefficient_loss", "CoefficientRegressor", "MeshGTask",
           "POSE_DIM"]

#: pose entries of the coefficient vector: yaw, pitch, roll (radians), scale * 2 / S,
#: translation (normalized x, y)
POSE_DIM = 6


def coefficient_targets(batch: dict, prefix: str, size: int, id_coeffs=None
                        ) -> dict[str, torch.Tensor]:
    """The coefficient groups of eq. (6) from a batch's fit arrays.

    Args:
        batch: with ``<prefix>_angles`` (B, 3) degrees, ``_scale`` (B,), ``_translation``
            (B, 2) crop pixels, ``_exp_coeffs`` (B, K_exp), and ``id_coeffs`` (B, K_id).
        prefix: ``"source"`` or ``"driving"`` (a (B, n_src, ...) source: the first).
        size: crop side S the pixel values refer to.
        id_coeffs: identity to use instead of ``batch["id_coeffs"]``.

    Returns:
        ``{"id": (B, K_id), "exp": (B, K_exp), "pose": (B, 6)}`` with pose = (yaw, pitch,
        roll in radians, 2 s / S, (2 t + 1) / S - 1).
    """
    ang, s, t, e = (batch[f"{prefix}_{k}"] for k in ("angles", "scale", "translation",
                                                      "exp_coeffs"))
    if ang.dim() == 3:
        ang, s, t, e = ang[:, 0], s[:, 0], t[:, 0], e[:, 0]
    ident = batch["id_coeffs"] if id_coeffs is None else id_coeffs
    pose = torch.cat([ang.float() * (math.pi / 180.0), (2.0 / size) * s.float()[:, None],
                      (2.0 * t.float() + 1.0) / size - 1.0], 1)
    return {"id": ident.float(), "exp": e.float(), "pose": pose}


def coefficient_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
                     ) -> torch.Tensor:
    """L1 coefficient loss (eq. 6): ``mean|id - id'| + mean|exp - exp'| + mean|p - p'|``
    over the batch (a mean per group, so the 100 ICT identity coefficients do not outweigh
    the 6 pose numbers). ``pred`` / ``target``: dicts of :func:`coefficient_targets`.
    Returns a float32 scalar."""
    missing = {"id", "exp", "pose"} - set(pred) | {"id", "exp", "pose"} - set(target)
    if missing:
        raise KeyError(f"coefficient groups missing: {sorted(missing)}")
    total = 0.0
    for k in ("id", "exp", "pose"):
        if pred[k].shape != target[k].shape:
            raise ValueError(f"{k}: prediction {tuple(pred[k].shape)} vs target "
                             f"{tuple(target[k].shape)}")
        total = total + (pred[k].float() - target[k].float()).abs().mean()
    return total


class CoefficientRegressor(nn.Module):
    """Image -> 3DMM coefficients (our stand-in for the 3DDFA regressor of eq. 6).

    conv7x7 -> ``num_blocks`` DownBlock2d (widths ``block_expansion * 2**i``, capped at
    ``max_features``) -> global average pool -> linear to K_id + K_exp + 6.

    forward(images (B, 3, H, W) in [0, 1]) -> ``{"id": (B, K_id), "exp": (B, K_exp),
    "pose": (B, 6)}``.
    """

    def __init__(self, num_id: int, num_exp: int, block_expansion: int = 32,
                 num_blocks: int = 4, max_features: int = 256, norm: str = "instance"):
        super().__init__()
        self.num_id, self.num_exp = num_id, num_exp
        self.first = SameBlock2d(3, block_expansion, kernel_size=7, norm=norm)
        blocks, cin = [], block_expansion
        for i in range(num_blocks):
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(DownBlock2d(cin, cout, norm=norm))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_id + num_exp + POSE_DIM)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.head(self.blocks(self.first(x)).mean((2, 3))).float()
        a, e = self.num_id, self.num_exp
        return {"id": y[:, :a], "exp": y[:, a:a + e], "pose": y[:, a + e:]}


class MeshGTask(TrainingTask):
    """The default task (perceptual, GAN / feature matching with the config's
    discriminator, ``gan_loss: wgan-gp`` for the paper) plus the coefficient loss.

    With a phase weighting ``coefficient``, a :class:`CoefficientRegressor` critic
    (``coefficient_regressor``; config section ``coefficient_regressor``: its kwargs and an
    ``optimizer``) is trained on the real source and driving frames to predict their fits
    (L1, :func:`coefficient_loss`; logs ``loss/coeff_regressor``), and the generator term
    ``coefficient`` is :func:`coefficient_loss` of its prediction on the generated frame
    against the source identity and the driving expression and pose.
    """

    def __init__(self, config: dict):
        super().__init__(config)
        rcfg = dict(config.get("coefficient_regressor") or {})
        self.regressor_optimizer = rcfg.pop("optimizer", None)
        self.regressor_kwargs = rcfg

    def build_critics(self, model, uses):
        critics = super().build_critics(model, uses)
        if "coefficient" in uses:
            m = unwrap(model)
            critics["coefficient_regressor"] = Critic(
                CoefficientRegressor(m.num_id, m.num_exp, **self.regressor_kwargs),
                terms=("coefficient",), optimizer=self.regressor_optimizer,
                log_name="coeff")
        return critics

    def model_terms(self, nets, batch, out, weights):
        terms = super().model_terms(nets, batch, out, weights)
        if weights.get("coefficient"):
            pred = out["prediction"]
            src_id = coefficient_targets(batch, "source", pred.shape[-1])["id"]
            want = coefficient_targets(batch, "driving", pred.shape[-1], id_coeffs=src_id)
            terms["coefficient"] = coefficient_loss(nets["coefficient_regressor"](pred), want)
        return terms

    def critic_loss(self, name, nets, batch, out):
        if name != "coefficient_regressor":
            return super().critic_loss(name, nets, batch, out)
        src, drv = first_source(batch), batch["driving"]
        s = drv.shape[-1]
        pred = nets[name](torch.cat([src, drv]))
        want = [coefficient_targets(batch, p, s) for p in ("source", "driving")]
        want = {k: torch.cat([want[0][k], want[1][k]]) for k in want[0]}
        loss = coefficient_loss(pred, want)
        return loss, {"coeff_regressor": loss.detach()}
