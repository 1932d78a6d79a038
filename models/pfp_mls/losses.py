"""Losses of the pfp_mls model (eq. 8) and the feature-point perturbation of Table 2.

``L_total = lambda_p L_p + lambda_m L_m + lambda_f L_f + lambda_adv L_adv``:

* ``L_p``: multi-resolution VGG-19 perceptual loss (eq. 6) -- owned by the trainer
  (``perceptual: vgg19``, :class:`facegeo_models.common.perceptual.VGGPerceptualLoss`).
* ``L_m``: :func:`motion_loss`, eq. (7), via :func:`facegeo.mls.weighted_motion_loss`.
* ``L_f``: :func:`spreading_loss`, the feature-point spreading hinge.
* ``L_adv``: adversarial loss of the multi-scale patch discriminator -- owned by the
  trainer (``gan``).

:func:`total_loss` assembles eq. (8) outside the trainer (tests, notebooks) with the same
:class:`~facegeo_models.common.losses.LossComposer` the trainer uses.
"""

from __future__ import annotations

import torch

from facegeo import mls

from ..common.losses import LossComposer

__all__ = ["motion_loss", "spreading_loss", "total_loss", "perturb_one_point"]


def _check_points(k: torch.Tensor, name: str) -> None:
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(k).__name__}")
    if k.dim() != 3 or k.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, N, 2), got {tuple(k.shape)}")


def motion_loss(M: torch.Tensor, k_s: torch.Tensor, k_d: torch.Tensor,
                weights: torch.Tensor, *, detach_points: bool = True) -> torch.Tensor:
    """L_m of eq. (7): mean over batch and positions of ``sum_n w_n |k^_dn M - k^_sn|^2``
    (centred points, normalised weights; :func:`facegeo.mls.weighted_motion_loss`).

    Args:
        M: (B, h, w, 2, 2) predicted per-position transforms (row vectors).
        k_s, k_d: (B, N, 2) feature points (normalized coordinates).
        weights: (B, h, w, N) MLS weights.
        detach_points: stop the gradient into the points and weights, so that L_m only
            trains the prediction of M (otherwise it also pulls k_s towards an affine image
            of k_d).

    Returns:
        scalar (float32).
    """
    _check_points(k_s, "k_s")
    _check_points(k_d, "k_d")
    if detach_points:
        k_s, k_d, weights = k_s.detach(), k_d.detach(), weights.detach()
    return mls.weighted_motion_loss(M.float(), k_s.float(), k_d.float(), weights.float())


def spreading_loss(k: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Feature-point spreading hinge L_f: mean over the batch and the N(N-1) ordered pairs
    i != j of ``max(0, threshold - |k_i - k_j|)``.

    Args:
        k: (B, N, 2) points (normalized coordinates, image width = 2).
        threshold: distance below which a pair is penalised (> 0).

    Returns:
        scalar; 0 iff every pair is at least ``threshold`` apart.
    """
    _check_points(k, "k")
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    n = k.shape[1]
    if n < 2:
        raise ValueError("the spreading loss needs at least 2 points")
    diff = k.unsqueeze(2) - k.unsqueeze(1)
    # sqrt with an epsilon keeps the gradient finite when two points coincide
    dist = (diff.square().sum(-1) + 1e-12).sqrt()
    off = ~torch.eye(n, dtype=torch.bool, device=k.device)
    return torch.relu(threshold - dist)[:, off].mean()


def total_loss(model, batch: dict, out: dict, *, weights: dict[str, float],
               perceptual=None, discriminator=None, gan_kind: str = "lsgan"
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (8) for one batch outside the trainer: the common
    :class:`~facegeo_models.common.losses.LossComposer` (the trainer's) with the model's
    terms. ``weights``: {"perceptual": lambda_p, "motion": lambda_m, "spread": lambda_f,
    "gan": lambda_adv, "l1": ...}; ``perceptual``: a loss module (lambda_p > 0);
    ``discriminator``: a multi-scale discriminator (lambda_adv > 0). Returns (total,
    {name: unweighted scalar})."""
    return LossComposer(perceptual, gan_kind)(
        weights, out["prediction"], batch["driving"], discriminator=discriminator,
        model_terms=lambda: model.extra_losses(batch, out))


def perturb_one_point(batch_size: int, num_points: int, *, low: float = 0.05,
                      high: float = 0.5, generator: torch.Generator | None = None,
                      device=None) -> torch.Tensor:
    """Offsets for the feature-point robustness experiment (paper, Table 2): one randomly
    chosen point per sample gets uniform noise of magnitude in [low, high] (random sign)
    on each coordinate, in units where the image spans [0, 1]; all other offsets are 0.

    Returns (B, N, 2) offsets in *normalized* units (x2, image spans [-1, 1]), ready for
    ``batch["driving_point_offset"]`` / ``reenact(..., driving_point_offset=...)``.
    """
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got {low}, {high}")
    idx = torch.randint(num_points, (batch_size,), generator=generator)
    mag = low + (high - low) * torch.rand(batch_size, 2, generator=generator)
    sign = torch.randint(2, (batch_size, 2), generator=generator) * 2 - 1
    off = torch.zeros(batch_size, num_points, 2)
    off[torch.arange(batch_size), idx] = 2.0 * mag * sign
    return off.to(device)
