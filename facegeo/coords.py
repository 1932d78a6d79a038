"""Conversions between the coordinate conventions used across facegeo.

* **pixel** coordinates: (x, y) with x to the right and y down; the *centre* of pixel
  (i, j) (row i, column j) is at (x, y) = (j, i). So the image spans [-0.5, W - 0.5] in x.
* **normalized** coordinates: the ``torch.nn.functional.grid_sample`` convention with
  ``align_corners=False``: -1 and +1 are the outer edges of the border pixels, so
  ``x_norm = (2 * x + 1) / W - 1``.

All functions take tensors of shape (..., 2) (last dimension is (x, y)) and broadcast.
Image sizes are ``(H, W)`` (height first, like ``image.shape[-2:]``), as everywhere in facegeo.
"""

from __future__ import annotations

import torch

from facegeo._deprecation import warn_deprecated

__all__ = ["pixel_to_normalized", "normalized_to_pixel", "pixel_grid", "normalized_grid"]


def _image_hw(fn: str, size, legacy: tuple, width, height) -> tuple[int, int]:
    """``(H, W)`` from the new ``size`` argument or, with a deprecation warning, from the old
    ``(width, height)`` spellings (positional ``fn(points, W, H)`` or ``width=, height=``)."""
    old_positional = len(legacy) == 1 and not isinstance(size, (tuple, list, torch.Size))
    if not legacy and width is None and height is None:
        if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
            raise TypeError(f"{fn}: size must be the image size (H, W), got {size!r}")
        h, w = size
    elif old_positional and width is None and height is None:
        warn_deprecated(f"{fn}(points, width, height)", f"{fn}(points, (height, width))",
                        stacklevel=4)
        w, h = size, legacy[0]
    elif not legacy and width is not None and height is not None and size is None:
        warn_deprecated(f"{fn}(points, width=, height=)", f"{fn}(points, (height, width))",
                        stacklevel=4)
        w, h = width, height
    elif not legacy and width is None and height is not None and size is not None \
            and not isinstance(size, (tuple, list, torch.Size)):
        warn_deprecated(f"{fn}(points, width, height=)", f"{fn}(points, (height, width))",
                        stacklevel=4)
        w, h = size, height
    else:
        raise TypeError(f"{fn}: pass the image size once, as size=(H, W); got size={size!r}, "
                        f"extra positional {legacy!r}, width={width!r}, height={height!r}")
    try:
        ok = int(h) == h and int(w) == w and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{fn}: image size must be positive integers (H, W), got ({h!r}, {w!r})")
    return int(h), int(w)


def _wh(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([w, h], dtype=like.dtype, device=like.device)


def pixel_to_normalized(points: torch.Tensor, size: tuple[int, int] | torch.Size | None = None,
                        *legacy, width: int | None = None,
                        height: int | None = None) -> torch.Tensor:
    """Pixel (x, y) -> ``grid_sample`` coordinates (``align_corners=False``).

    Args:
        points: (..., 2) pixel coordinates (x, y).
        size: the image size ``(H, W)`` (e.g. ``image.shape[-2:]``).
        legacy, width, height: the old ``(points, width, height)`` spellings, deprecated
            (removed in 0.3; they still give the same result, with a warning).

    Returns:
        (..., 2) normalized (x, y): ``(2 x + 1) / W - 1``, ``(2 y + 1) / H - 1``.
    """
    h, w = _image_hw("pixel_to_normalized", size, legacy, width, height)
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {tuple(points.shape)}")
    return (2.0 * points + 1.0) / _wh(h, w, points) - 1.0


def normalized_to_pixel(points: torch.Tensor, size: tuple[int, int] | torch.Size | None = None,
                        *legacy, width: int | None = None,
                        height: int | None = None) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalized`: (..., 2) normalized -> (..., 2) pixel (x, y).

    Args:
        points: (..., 2) normalized coordinates (x, y).
        size: the image size ``(H, W)``.
        legacy, width, height: the old ``(points, width, height)`` spellings, deprecated.
    """
    h, w = _image_hw("normalized_to_pixel", size, legacy, width, height)
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {tuple(points.shape)}")
    return ((points + 1.0) * _wh(h, w, points) - 1.0) / 2.0


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
