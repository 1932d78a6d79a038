"""Square face crops (FOMM / VoxCeleb style), their inverse, and feathered paste-back.

A crop box is ``(cx, cy, side)`` in pixel coordinates: the square
``[cx - side/2, cx + side/2] x [cy - side/2, cy + side/2]`` of the *continuous* image plane
(pixel centres at integers, so an image spans [-0.5, W - 0.5]). Cropping to ``size`` pixels
maps image point x to crop point ``u = (x - cx) * size / side + size / 2 - 0.5`` (same for
y): the affine matrix returned by :func:`crop_matrix`.

:func:`face_boxes` builds boxes from landmarks: the landmark bounding box (w x h) is made
square with side ``(1 + 2 * margin) * max(w, h)`` and its centre moved up by
``shift_up * side`` (the landmarks stop at the brows; the head extends above them). With
the defaults (margin 0.4, shift 0.1) the face fills about the central 55 % of the crop,
as in the VoxCeleb crops used by FOMM. :func:`clip_boxes` keeps one box for a whole clip
(``"fixed"``: the square that contains every per-frame box, as FOMM's ``crop-video.py``)
or smooths them over time (``"smooth"``: Gaussian filter of centre and side).

:func:`crop_images` resamples with ``grid_sample`` (bilinear), low-pass filtering first when
it shrinks by more than 1.25x (Gaussian sigma ``(side / size - 1) / 2``) to avoid aliasing.
:func:`paste_back` warps a crop back into the frame and blends it with a feathered mask
that ramps from 0 at the crop edge to 1 at ``feather * size`` pixels inside (smoothstep).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facegeo.coords import pixel_grid, pixel_to_normalized

__all__ = [
    "face_boxes",
    "clip_boxes",
    "crop_matrix",
    "points_to_crop",
    "points_from_crop",
    "apply_affine",
    "invert_affine",
    "warp_affine",
    "crop_images",
    "feather_mask",
    "paste_back",
    "arcface_align",
]


def _check_boxes(boxes: torch.Tensor) -> None:
    if boxes.ndim < 1 or boxes.shape[-1] != 3:
        raise ValueError(f"boxes must be (..., 3) = (cx, cy, side), got {tuple(boxes.shape)}")
    if not bool((boxes[..., 2] > 0).all()):
        raise ValueError("box side must be positive")


def face_boxes(landmarks: torch.Tensor, margin: float = 0.4, shift_up: float = 0.1) -> torch.Tensor:
    """Square crop boxes around landmarks.

    Args:
        landmarks: (..., N, 2) pixel coordinates (typically N = 68).
        margin: extra space on each side as a fraction of the landmark box's longer side.
        shift_up: upward shift of the centre as a fraction of the final side.

    Returns:
        (..., 3) boxes ``(cx, cy, side)``.
    """
    if landmarks.ndim < 2 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be (..., N, 2), got {tuple(landmarks.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    lo, hi = landmarks.amin(-2), landmarks.amax(-2)
    c = (lo + hi) / 2
    side = (1 + 2 * margin) * (hi - lo).amax(-1)
    return torch.stack([c[..., 0], c[..., 1] - shift_up * side, side], -1)


def clip_boxes(boxes: torch.Tensor, mode: str = "fixed", sigma: float = 5.0) -> torch.Tensor:
    """Make per-frame boxes of a clip temporally consistent.

    Args:
        boxes: (T, 3) per-frame ``(cx, cy, side)``.
        mode: ``"fixed"`` (one box containing all, repeated), ``"smooth"`` (Gaussian filter
            over time, standard deviation ``sigma`` frames, edges replicated), ``"none"``.

    Returns:
        (T, 3).
    """
    _check_boxes(boxes)
    if boxes.ndim != 2:
        raise ValueError(f"boxes must be (T, 3), got {tuple(boxes.shape)}")
    if mode == "none":
        return boxes.clone()
    if mode == "fixed":
        lo = (boxes[:, :2] - boxes[:, 2:] / 2).amin(0)
        hi = (boxes[:, :2] + boxes[:, 2:] / 2).amax(0)
        box = torch.cat([(lo + hi) / 2, (hi - lo).amax()[None]])
        return box.expand_as(boxes).clone()
    if mode == "smooth":
        if sigma <= 0:
            return boxes.clone()
        r = max(1, int(3 * sigma))
        t = torch.arange(-r, r + 1, dtype=boxes.dtype, device=boxes.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = (k / k.sum()).view(1, 1, -1).expand(3, 1, -1)
        x = F.pad(boxes.T[None], (r, r), mode="replicate")
        return F.conv1d(x, k, groups=3)[0].T.contiguous()
    raise ValueError(f"mode must be 'fixed', 'smooth' or 'none', got {mode!r}")


def crop_matrix(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Affine maps from image pixels to crop pixels.

    Args:
        boxes: (..., 3) ``(cx, cy, side)``.
        size: crop side in pixels.

    Returns:
        (..., 2, 3) matrices M with ``u = M[:, :2] @ x + M[:, 2]``.
    """
    _check_boxes(boxes)
    s = size / boxes[..., 2]
    z = torch.zeros_like(s)
    tx = size / 2 - 0.5 - s * boxes[..., 0]
    ty = size / 2 - 0.5 - s * boxes[..., 1]
    return torch.stack([torch.stack([s, z, tx], -1), torch.stack([z, s, ty], -1)], -2)


def points_to_crop(points: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N, 2) image pixels -> (B, N, 2) crop pixels for (B, 3) boxes."""
    return apply_affine(crop_matrix(boxes, size), points)


def points_from_crop(points: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N, 2) crop pixels -> (B, N, 2) image pixels (inverse of :func:`points_to_crop`)."""
    _check_boxes(boxes)
    s = (boxes[..., 2] / size)[..., None, None]
    return (points + 0.5 - size / 2) * s + boxes[..., None, :2]


def apply_affine(m: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(..., 2, 3) affine maps applied to (..., N, 2) points -> (..., N, 2)."""
    return points @ m[..., :2].transpose(-1, -2) + m[..., None, :, 2]


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Inverse of (..., 2, 3) affine maps -> (..., 2, 3)."""
    ai = torch.linalg.inv(m[..., :2])
    return torch.cat([ai, -(ai @ m[..., 2:])], -1)


def warp_affine(
    images: torch.Tensor,
    matrices: torch.Tensor,
    out_size: tuple[int, int],
    *,
    padding_mode: str = "border",
    antialias: bool = True,
) -> torch.Tensor:
    """Warp images with affine maps given from *input* pixels to *output* pixels.

    Args:
        images: (B, C, H, W).
        matrices: (B, 2, 3) maps input pixel (x, y) -> output pixel.
        out_size: (H_out, W_out).
        padding_mode: ``grid_sample`` padding (``"zeros"``, ``"border"``, ``"reflection"``).
        antialias: Gaussian pre-filter when the map shrinks by more than 1.25x.

    Returns:
        (B, C, H_out, W_out).
    """
    if images.ndim != 4 or matrices.shape != (images.shape[0], 2, 3):
        raise ValueError(f"images (B,C,H,W) and matrices (B,2,3) expected, got "
                         f"{tuple(images.shape)} and {tuple(matrices.shape)}")
    b, _, h, w = images.shape
    ho, wo = out_size
    m = matrices.to(images)
    inv = invert_affine(m)                                       # output -> input
    src = images
    if antialias:
        shrink = 1.0 / torch.sqrt(torch.linalg.det(m[:, :, :2]).abs())   # input px per out px
        if bool((shrink > 1.25).any()):
            import kornia

            sig = ((shrink - 1) / 2).clamp(min=1e-3)
            k = int(2 * torch.ceil(3 * sig.max()).item() + 1)
            blurred = kornia.filters.gaussian_blur2d(
                images, (k, k), torch.stack([sig, sig], -1), border_type="replicate")
            sel = (shrink > 1.25).view(b, 1, 1, 1)
            src = torch.where(sel, blurred, images)
    grid = pixel_grid(ho, wo, device=images.device, dtype=images.dtype)          # (Ho, Wo, 2)
    xy = grid.view(1, -1, 2) @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]
    norm = pixel_to_normalized(xy, (h, w)).view(b, ho, wo, 2)
    return F.grid_sample(src, norm, mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


def crop_images(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: int = 256,
    *,
    padding_mode: str = "border",
    antialias: bool = True,
) -> torch.Tensor:
    """Square crops resized to ``size`` x ``size``.

    Args:
        images: (B, C, H, W) (or (C, H, W) with (3,) boxes).
        boxes: (B, 3) ``(cx, cy, side)``.
        size: output side.

    Returns:
        (B, C, size, size).
    """
    if images.ndim == 3:
        return crop_images(images[None], boxes.reshape(1, 3), size, padding_mode=padding_mode,
                           antialias=antialias)[0]
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    _check_boxes(boxes)
    if boxes.shape != (images.shape[0], 3):
        raise ValueError(f"boxes must be (B, 3) for B={images.shape[0]}, got {tuple(boxes.shape)}")
    return warp_affine(images, crop_matrix(boxes.to(images), size), (size, size),
                       padding_mode=padding_mode, antialias=antialias)


def feather_mask(size: int, feather: float = 0.1, *, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(size, size) blending mask: 1 inside, smoothstep down to 0 at the border over
    ``feather * size`` pixels."""
    u = torch.arange(size, device=device, dtype=dtype)
    return _window(u[:, None], size, feather) * _window(u[None, :], size, feather)


def _window(u: torch.Tensor, size: int, feather: float) -> torch.Tensor:
    d = torch.minimum(u + 0.5, size - 0.5 - u)                  # distance to the crop edge
    if feather <= 0:
        return (d > 0).to(u.dtype)
    t = (d / (feather * size)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def paste_back(
    frames: torch.Tensor,
    crops: torch.Tensor,
    boxes: torch.Tensor,
    *,
    feather: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Put (processed) crops back into their frames with feathered blending.

    Args:
        frames: (B, C, H, W) full frames.
        crops: (B, C, S, S) crops made with ``boxes``.
        boxes: (B, 3) ``(cx, cy, side)`` used for cropping.
        feather: width of the blending ramp as a fraction of S (0 = hard edge).
        mask: optional (B, 1, S, S) extra weights in [0, 1] (e.g. a face mask).

    Returns:
        (B, C, H, W) blended frames.
    """
    if frames.ndim != 4 or crops.ndim != 4 or crops.shape[-1] != crops.shape[-2]:
        raise ValueError(f"frames (B,C,H,W) and square crops (B,C,S,S) expected, got "
                         f"{tuple(frames.shape)}, {tuple(crops.shape)}")
    b, c, h, w = frames.shape
    s = crops.shape[-1]
    _check_boxes(boxes)
    m = crop_matrix(boxes.to(frames), s)                           # frame -> crop
    grid = pixel_grid(h, w, device=frames.device, dtype=frames.dtype).view(1, -1, 2)
    u = grid @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]       # (B, HW, 2) crop coords
    norm = pixel_to_normalized(u, (s, s)).view(b, h, w, 2)
    warped = F.grid_sample(crops.to(frames), norm, mode="bilinear", padding_mode="border",
                           align_corners=False)
    alpha = (_window(u[..., 0], s, feather) * _window(u[..., 1], s, feather)).view(b, 1, h, w)
    if mask is not None:
        if mask.shape != (b, 1, s, s):
            raise ValueError(f"mask must be (B, 1, S, S), got {tuple(mask.shape)}")
        alpha = alpha * F.grid_sample(mask.to(frames), norm, mode="bilinear",
                                      padding_mode="zeros", align_corners=False)
    return frames * (1 - alpha) + warped * alpha


def arcface_align(images: torch.Tensor, landmarks: torch.Tensor, size: int = 112) -> torch.Tensor:
    """ArcFace-style aligned crops: similarity transform of the 5 points derived from the
    68 landmarks onto the standard 112x112 template (scaled to ``size``).

    Args:
        images: (B, 3, H, W).
        landmarks: (B, 68, 2).

    Returns:
        (B, 3, size, size).
    """
    from facegeo.landmarks.conventions import (
        ARCFACE_TEMPLATE_112,
        similarity_transform,
        to_5_points,
    )

    dst = (ARCFACE_TEMPLATE_112.to(images) + 0.5) * (size / 112.0) - 0.5
    src = to_5_points(landmarks.to(images))
    m = similarity_transform(src, dst.expand_as(src))
    return warp_affine(images, m, (size, size))
