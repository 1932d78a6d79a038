"""The s2d parsing prior (paper eq. 7) with parsing maps made from the 74 landmarks.

The paper warps the face-parsing map of the source (from a face parser, Te et al. 2020)
with the dense motion F and counts the pixels whose label differs from the driving
frame's parsing map. We have no face parser: the maps are rasterized from the 74
landmarks instead (:func:`landmark_parsing`), so the prior says "the warp carries each
landmark-delimited face part of the source onto the same part of the driver", the iris
discs included (gaze).

Labels (:data:`PARSING_LABELS`): 0 background, 1 face (the jaw line closed over the
brows), 2 brows (within ``brow_width`` of the brow poly-lines), 3 nose (27, 31-35
polygon), 4 eyes (sclera: the eye contours), 5 irises (discs of radius
``iris_ratio * eye width`` about the pupils, inside the eye contours), 6 lips (outer
minus inner contour), 7 mouth interior (inner contour). Later labels overwrite earlier
ones.

* :func:`parsing_mismatch`: eq. (7) itself, nearest warping, the fraction of mismatched
  pixels (no gradient: a metric);
* :func:`parsing_loss`: the differentiable form used for training: the one-hot source
  maps warped *bilinearly*, ``1 - mean_p sum_c warped_c(p) D_c(p)``; it equals eq. (7)
  wherever the bilinear weights are one-hot (nearest warping), and its gradient moves F.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facegeo.coords import pixel_grid
from facegeo.landmarks.conventions import NUM_LANDMARKS_74
from facegeo.landmarks.pupils import eye_axes, points_in_polygon

from ..common.blocks import warp_grid

__all__ = ["PARSING_LABELS", "landmark_parsing", "parsing_mismatch", "parsing_loss"]

PARSING_LABELS = ("background", "face", "brows", "nose", "eyes", "irises", "lips", "mouth")

_FACE = tuple(range(0, 17)) + tuple(range(26, 16, -1))
_NOSE = (27, 31, 32, 33, 34, 35)
_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
_OUTER = tuple(range(48, 60))
_INNER = tuple(range(60, 68))


def _poly_mask(xy: torch.Tensor, lm: torch.Tensor, idx) -> torch.Tensor:
    return points_in_polygon(xy, lm[:, list(idx)])


def _near_polyline(xy: torch.Tensor, pts: torch.Tensor, width: float) -> torch.Tensor:
    """(B, P, 2), (B, K, 2) -> (B, P) bool: within ``width / 2`` of the open poly-line."""
    a, b = pts[:, :-1, None], pts[:, 1:, None]                       # (B, K-1, 1, 2)
    p = xy[:, None]                                                  # (B, 1, P, 2)
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    d = (p - (a + t[..., None] * ab)).norm(dim=-1)                   # (B, K-1, P)
    return d.amin(1) <= width / 2


def landmark_parsing(landmarks74: torch.Tensor, size: int, image_size: int, *,
                     iris_ratio: float = 0.21, brow_width: float = 0.04) -> torch.Tensor:
    """Parsing label maps rasterized from 74 landmarks.

    Args:
        landmarks74: (B, 74, 2) pixels of an ``image_size`` square image.
        size: output side (the maps cover the whole image).
        iris_ratio: iris radius / eye width (as :func:`facegeo.landmarks.pupils.iris_points`).
        brow_width: brow thickness in units of the image side.

    Returns:
        (B, size, size) int64 labels (:data:`PARSING_LABELS`).
    """
    if landmarks74.dim() != 3 or landmarks74.shape[1:] != (NUM_LANDMARKS_74, 2):
        raise ValueError(f"landmarks74 must be (B, 74, 2), got {tuple(landmarks74.shape)}")
    b = landmarks74.shape[0]
    k = size / float(image_size)
    lm = (landmarks74.float() + 0.5) * k - 0.5                       # pixels of the map
    xy = pixel_grid(size, size, device=lm.device).reshape(1, -1, 2).expand(b, -1, -1)
    lab = torch.zeros(b, size * size, dtype=torch.long, device=lm.device)
    lab[_poly_mask(xy, lm, _FACE)] = 1
    brows = _near_polyline(xy, lm[:, 17:22], brow_width * size) | \
        _near_polyline(xy, lm[:, 22:27], brow_width * size)
    lab[brows] = 2
    lab[_poly_mask(xy, lm, _NOSE)] = 3
    _, _, width = eye_axes(lm[:, :68])
    for e, ring in enumerate(_EYES):
        eye = _poly_mask(xy, lm, ring)
        lab[eye] = 4
        r = iris_ratio * width[:, e]
        iris = ((xy - lm[:, 68 + 3 * e, None]).norm(dim=-1) <= r[:, None]) & eye
        lab[iris] = 5
    outer, inner = _poly_mask(xy, lm, _OUTER), _poly_mask(xy, lm, _INNER)
    lab[outer] = 6
    lab[inner] = 7
    return lab.view(b, size, size)


def _downsample_grid(grid: torch.Tensor, size: int) -> torch.Tensor:
    if grid.shape[1:3] == (size, size):
        return grid
    return F.interpolate(grid.permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1)


def parsing_mismatch(deformation: torch.Tensor, source_lm74: torch.Tensor,
                     driving_lm74: torch.Tensor, image_size: int, size: int = 64
                     ) -> torch.Tensor:
    """Eq. (7): ``1 - |f_eq(f_w^n(S_P, F), D_P)|``, the fraction of pixels whose warped
    (nearest) source label differs from the driving label.

    Args:
        deformation: (B, H, W, 2) backward grid F (normalized, driving -> source).
        source_lm74, driving_lm74: (B, 74, 2) pixels of the ``image_size`` images.
        size: parsing map resolution (F is resized to it).

    Returns:
        (B,) mismatch fractions in [0, 1].
    """
    sp = landmark_parsing(source_lm74, size, image_size)
    dp = landmark_parsing(driving_lm74, size, image_size)
    g = _downsample_grid(deformation.float(), size)
    warped = F.grid_sample(sp[:, None].float(), g, mode="nearest", padding_mode="zeros",
                           align_corners=False)[:, 0].round().long()
    return (warped != dp).float().flatten(1).mean(1)


def parsing_loss(deformation: torch.Tensor, source_lm74: torch.Tensor,
                 driving_lm74: torch.Tensor, image_size: int, size: int = 64
                 ) -> torch.Tensor:
    """The differentiable parsing prior (module docstring): scalar, mean over the batch.

    Args: as :func:`parsing_mismatch`.
    """
    n = len(PARSING_LABELS)
    with torch.no_grad():
        sp = F.one_hot(landmark_parsing(source_lm74, size, image_size), n)
        dp = F.one_hot(landmark_parsing(driving_lm74, size, image_size), n)
    g = _downsample_grid(deformation, size)
    src = sp.permute(0, 3, 1, 2).to(g.dtype)
    warped = warp_grid(src, g)                                       # (B, n, s, s)
    # outside the image: background (as the nearest warp's zero padding of the labels)
    outside = 1 - warped.sum(1, keepdim=True)
    warped = torch.cat([warped[:, :1] + outside, warped[:, 1:]], 1)
    agree = (warped * dp.permute(0, 3, 1, 2).to(g.dtype)).sum(1)
    return 1 - agree.mean()
