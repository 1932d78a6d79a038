"""Conversions between the coordinate conventions used across facegeo.

* **pixel** coordinates: (x, y) with x to the right and y down; the *centre* of pixel
  (i, j) (row i, column j) is at (x, y) = (j, i). So the image spans [-0.5, W - 0.5] in x.
* **normalized** coordinates: the ``torch.nn.functional.grid_sample`` convention with
  ``align_corners=False``: -1 and +1 are the outer edges of the border pixels, so
  ``x_norm = (2 * x + 1) / W - 1``.

All functions take tensors of shape (..., 2) (last dimension is (x, y)) and broadcast.
"""

from __future__ import annotations

import torch

__all__ = ["pixel_to_normalized", "normalized_to_pixel", "pixel_grid", "normalized_grid"]


def _size(width: int, height: int, like: torch.Tensor) -> torch.Tensor:
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    return torch.tensor([width, height], dtype=like.dtype, device=like.device)


def pixel_to_normalized(points: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(..., 2) pixel (x, y) -> (..., 2) grid_sample coordinates (align_corners=False)."""
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {tuple(points.shape)}")
    size = _size(width, height, points)
    return (2.0 * points + 1.0) / size - 1.0


def normalized_to_pixel(points: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalized`: (..., 2) normalized -> (..., 2) pixel."""
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {tuple(points.shape)}")
    size = _size(width, height, points)
    return ((points + 1.0) * size - 1.0) / 2.0


def pixel_grid(
    height: int,
    width: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pixel-centre coordinates of an image: (H, W, 2) with grid[i, j] = (j, i)."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def normalized_grid(
    height: int,
    width: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Normalized (align_corners=False) pixel-centre coordinates: (H, W, 2) as (x, y), i.e.
    :func:`pixel_grid` through :func:`pixel_to_normalized`, so grid[i, j] =
    ((2 j + 1) / W - 1, (2 i + 1) / H - 1); the identity grid of ``grid_sample``."""
    xs = (2 * torch.arange(width, device=device, dtype=dtype) + 1) / width - 1
    ys = (2 * torch.arange(height, device=device, dtype=dtype) + 1) / height - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)
