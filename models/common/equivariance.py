"""Self-supervised keypoint training by equivariance (FOMM, Siarohin et al. 2019, sec. 3.3).

A keypoint detector K should move its points with the image: for a random smooth
deformation T (an affine map plus a thin-plate spline), the points found in the deformed
image, mapped through T, are the points of the original image. :class:`RandomTPS` draws T;
:func:`equivariance_loss` is FOMM's ``equivariance_value`` term
``| K(x) - T(K(T^{-1} x)) |_1``.

Coordinates are normalized (x, y) in the ``grid_sample`` convention
(align_corners=False; :mod:`facegeo.coords`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .blocks import coordinate_grid

__all__ = ["RandomTPS", "equivariance_loss"]


class RandomTPS:
    """A batch of random deformations ``T(p) = A p + t + sum_i w_i U(|p - c_i|)`` with the
    TPS kernel ``U(r) = r^2 log r`` (FOMM's ``Transform``).

    Args:
        batch: B deformations.
        sigma_affine: std of the affine part's deviation from the identity ([FOMM] 0.05).
        sigma_tps: std of the TPS weights ([FOMM] 0.005).
        points_tps: the TPS control points lie on a ``points_tps`` x ``points_tps`` grid
            over [-1, 1]^2 ([FOMM] 5).
        generator: torch RNG (default: the global one).

    :meth:`warp_coordinates` applies T to (B, N, 2) points; :meth:`transform_frame` resamples
    (B, C, H, W) images as ``x'(p) = x(T(p))``, so a feature at q in ``x'`` is at T(q) in x.
    """

    def __init__(self, batch: int, sigma_affine: float = 0.05, sigma_tps: float = 0.005,
                 points_tps: int = 5, *, generator: torch.Generator | None = None,
                 device=None, dtype: torch.dtype = torch.float32):
        if batch < 1 or points_tps < 1:
            raise ValueError(f"need batch >= 1 and points_tps >= 1, got {batch}, {points_tps}")
        noise = torch.randn(batch, 2, 3, generator=generator) * sigma_affine
        self.theta = (noise + torch.eye(2, 3)).to(device=device, dtype=dtype)   # (B, 2, 3)
        lin = torch.linspace(-1, 1, points_tps)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        self.control_points = torch.stack([xx, yy], -1).reshape(-1, 2).to(device=device,
                                                                          dtype=dtype)
        self.control_params = (torch.randn(batch, points_tps ** 2, generator=generator)
                               * sigma_tps).to(device=device, dtype=dtype)      # (B, P)

    @property
    def batch(self) -> int:
        return self.theta.shape[0]

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) -> (B, N, 2): T applied to each sample's points."""
        if coords.dim() != 3 or coords.shape[-1] != 2 or coords.shape[0] != self.batch:
            raise ValueError(f"coords must have shape ({self.batch}, N, 2), got "
                             f"{tuple(coords.shape)}")
        theta = self.theta.to(coords)
        out = coords @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
        cp = self.control_points.to(coords)
        r = (coords[:, :, None] - cp[None, None]).abs().sum(-1)     # FOMM: L1 distance
        u = r ** 2 * torch.log(r + 1e-6)
        return out + (u * self.control_params.to(coords)[:, None]).sum(-1, keepdim=True)

    def transform_frame(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): ``x'(p) = x(T(p))`` (bilinear, zero outside)."""
        if frames.dim() != 4 or frames.shape[0] != self.batch:
            raise ValueError(f"frames must have shape ({self.batch}, C, H, W), got "
                             f"{tuple(frames.shape)}")
        b, _, h, w = frames.shape
        grid = coordinate_grid(h, w, device=frames.device, dtype=frames.dtype)
        grid = self.warp_coordinates(grid.reshape(1, -1, 2).expand(b, -1, -1))
        return F.grid_sample(frames, grid.view(b, h, w, 2), mode="bilinear",
                             padding_mode="zeros", align_corners=False)


def equivariance_loss(kp: torch.Tensor, kp_transformed: torch.Tensor,
                      transform: RandomTPS) -> torch.Tensor:
    """FOMM's equivariance (value) loss, a scalar: mean | kp - T(kp_transformed) |.

    Args:
        kp: (B, K, 2) keypoints of the images x.
        kp_transformed: (B, K, 2) keypoints detected in ``transform.transform_frame(x)``.
        transform: the :class:`RandomTPS` T.
    """
    if kp.shape != kp_transformed.shape:
        raise ValueError(f"kp {tuple(kp.shape)} and kp_transformed "
                         f"{tuple(kp_transformed.shape)} must have the same shape")
    return (kp - transform.warp_coordinates(kp_transformed)).abs().mean()
