"""FSRT's regularisers of the latent expression vectors (sec. 3.2, eq. 11-15).

* :func:`expression_distance` - eq. 11 / 12: ``||e_1 - e_2||^2 / |e|``, batch mean
  (the paper's overline: mean over the batch).
* :func:`covariance_loss` - eq. 14: ``(1/c) sum_ij Cov(E)_ij^2`` (off-diagonal AND diagonal
  terms, unlike VICReg: an information bottleneck).
* :func:`variance_hinge_loss` - eq. 15: mean over vectors of
  ``max(0, 1 - sqrt(Var(e) + eps))``, the variance taken *along the feature dimension* of
  each vector.
"""

from __future__ import annotations

import torch

__all__ = ["expression_distance", "covariance_loss", "variance_hinge_loss"]


def _check(e: torch.Tensor, name: str = "E") -> None:
    if not isinstance(e, torch.Tensor) or e.dim() != 2:
        raise ValueError(f"{name} must have shape (N, c), got "
                         f"{tuple(getattr(e, 'shape', ()))}")


def expression_distance(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """(N, c) x 2 -> scalar: mean over N of ``||e1 - e2||^2 / c`` (eq. 11, 12)."""
    _check(e1, "e1")
    if e1.shape != e2.shape:
        raise ValueError(f"e1 {tuple(e1.shape)} and e2 {tuple(e2.shape)} differ in shape")
    return (e1.float() - e2.float()).pow(2).mean()


def covariance_loss(e: torch.Tensor) -> torch.Tensor:
    """eq. 14: (N, c) -> scalar ``sum_{i,j} Cov(E)_{ij}^2 / c`` with the unbiased sample
    covariance over the N vectors (N >= 2)."""
    _check(e)
    n, c = e.shape
    if n < 2:
        raise ValueError(f"the covariance needs at least 2 vectors, got {n}")
    x = e.float() - e.float().mean(0, keepdim=True)
    cov = x.T @ x / (n - 1)
    return cov.pow(2).sum() / c


def variance_hinge_loss(e: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """eq. 15: (N, c) -> scalar ``mean_e max(0, 1 - sqrt(Var(e) + eps))``, Var over the c
    features of each vector (unbiased; ``eps`` [VICReg] 1e-4)."""
    _check(e)
    var = e.float().var(dim=1)
    return torch.relu(1 - torch.sqrt(var + eps)).mean()
