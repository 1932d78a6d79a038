"""Pupil (eye-centre) localisation on the eye regions the 68 landmarks give, and the
74-point landmarks (68 + pupils + iris neighbours, :mod:`facegeo.landmarks.conventions`).

Method: gradient-based eye-centre localisation (Timm & Barth, "Accurate eye centre
localisation by means of gradients", VISAPP 2011), vectorised in torch and batched:

1. **Eye patch.** Per eye, an affine crop aligned with the corner-to-corner axis
   (36 -> 39 for the subject's right eye, 42 -> 45 for the left one), ``margin`` eye widths
   of context on each side, resampled to a fixed ``patch_width`` (so the method is scale
   invariant), gray levels normalised to [0, 1] inside the eye.
2. **Objective.** For a candidate centre c, with image gradients g_i (normalised,
   only those above ``mean + gradient_threshold * std`` of the magnitude, inside the eye
   contour grown by ``grow``) and displacements d_i = (x_i - c) / |x_i - c|::

       O(c) = w(c) * mean_i max(0, d_i . g_i)^2,   w(c) = (1 - I_blur(c)) ** darkness

   the iris/pupil boundary's gradients point outwards from the dark centre, so they all
   agree with d_i exactly at the centre (positive part only: eyelid and eyelash edges,
   whose gradients point inwards, do not vote). Candidates are restricted to the eye
   opening (inside the six contour points).
3. **Sub-pixel refinement.** The objective is continuous in c: it is evaluated again on
   a grid of ``1 / refine_steps`` patch pixels around the integer maximum, and a parabola
   through the best sample and its neighbours (per axis) gives the final offset.

Closed or degenerate eyes (no candidate inside the contour) fall back to the centroid of
the six eye points (``valid`` False in :func:`locate_pupils` with ``return_details``).

Accuracy and stability: ``benchmarks/bench_pupils.py`` (synthetic eyes with a known centre,
real media eyes whose iris is moved by a known warp (:func:`shift_iris`), jitter on the
media videos); see docs/landmarks.md "Pupils and the 74-point convention".
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from facegeo.coords import pixel_grid
from facegeo.landmarks.conventions import (
    NUM_LANDMARKS_74,
    _check68,
)
from facegeo.landmarks.crops import apply_affine, invert_affine, warp_affine

__all__ = [
    "eye_axes",
    "eye_patch_matrices",
    "eye_centre_objective",
    "points_in_polygon",
    "locate_pupils",
    "iris_points",
    "landmarks74",
    "smooth_pupils",
    "gaze_offsets",
    "gaze_following",
    "render_synthetic_eyes",
    "shift_iris",
]

# iBUG indices of the two eyes: (image-left corner, image-right corner, contour order)
_EYES = ((36, 39, (36, 37, 38, 39, 40, 41)), (42, 45, (42, 43, 44, 45, 46, 47)))


# ----------------------------------------------------------------------------- inputs
def _as_images(images) -> torch.Tensor:
    """(B, 3|1, H, W) / (3|1, H, W) float in [0, 1] or uint8 tensor, or (H, W, 3) /
    (H, W) uint8 numpy -> (B, 1, H, W) float32 gray in [0, 1]."""
    if isinstance(images, np.ndarray):
        a = images
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[-1] not in (1, 3):
            raise ValueError(f"numpy images must be (H, W) or (H, W, 3), got {a.shape}")
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
    elif isinstance(images, torch.Tensor):
        x = images[None] if images.dim() == 3 else images
    else:
        raise TypeError(f"images must be a torch.Tensor or numpy array, got "
                        f"{type(images).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 3, H, W), (B, 1, H, W) or (3, H, W), got "
                         f"{tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point in [0, 1], got {x.dtype}")
    x = x.float()
    if x.shape[1] == 3:
        x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return x


def _as_landmarks(landmarks68, batch: int) -> torch.Tensor:
    if isinstance(landmarks68, np.ndarray):
        landmarks68 = torch.from_numpy(landmarks68)
    _check68(landmarks68)
    lm = landmarks68[..., :2].float()
    if lm.dim() == 2:
        lm = lm[None]
    if lm.dim() != 3 or lm.shape[0] != batch:
        raise ValueError(f"landmarks68 must be (B, 68, 2) with B = {batch} (the number of "
                         f"images), got {tuple(landmarks68.shape)}")
    if not bool(torch.isfinite(lm).all()):
        raise ValueError("landmarks68 hold NaN/inf")
    return lm


# ------------------------------------------------------------------------- eye frames
def eye_axes(landmarks68: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per eye (subject's right eye first, then the left): the contour centroid, the unit
    corner-to-corner axis (pointing to the image right: 36 -> 39, 42 -> 45) and the eye
    width (corner distance).

    Args:
        landmarks68: (..., 68, 2) pixels.

    Returns:
        centre (..., 2, 2), axis (..., 2, 2), width (..., 2).
    """
    _check68(landmarks68)
    lm = landmarks68[..., :2].float()
    cs, ax, ws = [], [], []
    for a, b, ring in _EYES:
        v = lm[..., b, :] - lm[..., a, :]
        w = torch.linalg.vector_norm(v, dim=-1)
        ax.append(v / w.clamp_min(1e-6)[..., None])
        ws.append(w)
        cs.append(lm[..., list(ring), :].mean(-2))
    return torch.stack(cs, -2), torch.stack(ax, -2), torch.stack(ws, -1)


def eye_patch_matrices(landmarks68: torch.Tensor, patch_size: tuple[int, int] = (32, 48),
                       margin: float = 0.2) -> torch.Tensor:
    """Affine maps image pixel -> eye-patch pixel for both eyes.

    The patch is centred on the contour centroid, its x axis along the corner-to-corner
    axis; ``(1 + 2 margin)`` eye widths span the patch width, the same scale vertically.

    Args:
        landmarks68: (B, 68, 2) pixels.
        patch_size: (h, w) of the patch.
        margin: context on each side, in eye widths.

    Returns:
        (B, 2, 2, 3): ``[b, e]`` maps image (x, y) of image b to patch (x, y) of eye e
        (0 = subject's right eye, 1 = left eye).
    """
    if landmarks68.dim() != 3:
        raise ValueError(f"landmarks68 must be (B, 68, 2), got {tuple(landmarks68.shape)}")
    h, w = patch_size
    centre, axis, width = eye_axes(landmarks68)
    scale = w / ((1 + 2 * margin) * width.clamp_min(1e-3))          # patch px per image px
    cos, sin = axis[..., 0], axis[..., 1]
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    a = scale[..., None, None] * rot                                 # (B, 2, 2, 2)
    mid = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=a.dtype, device=a.device)
    t = mid - (a @ centre[..., None])[..., 0]
    return torch.cat([a, t[..., None]], -1)


def points_in_polygon(points: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """Even-odd point-in-polygon test, batched.

    Args:
        points: (N, P, 2) query points.
        poly: (N, K, 2) polygon vertices in order (closed implicitly).

    Returns:
        (N, P) bool, True inside.
    """
    x, y = points[..., 0:1], points[..., 1:2]                          # (N, P, 1)
    a, b = poly[:, None], poly.roll(-1, dims=1)[:, None]               # (N, 1, K, 2)
    ya, yb = a[..., 1], b[..., 1]
    cross = (ya > y) != (yb > y)
    t = (y - ya) / torch.where((yb - ya).abs() < 1e-9, torch.full_like(ya, 1e-9), yb - ya)
    xi = a[..., 0] + t * (b[..., 0] - a[..., 0])
    return ((cross & (x < xi)).sum(-1) % 2) == 1


# -------------------------------------------------------------------------- objective
def _gradients(gray: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 2, h, w) central differences (one-sided at the border)."""
    gx = torch.zeros_like(gray)
    gy = torch.zeros_like(gray)
    gx[..., 1:-1] = (gray[..., 2:] - gray[..., :-2]) / 2
    gx[..., 0], gx[..., -1] = gray[..., 1] - gray[..., 0], gray[..., -1] - gray[..., -2]
    gy[..., 1:-1, :] = (gray[..., 2:, :] - gray[..., :-2, :]) / 2
    gy[..., 0, :] = gray[..., 1, :] - gray[..., 0, :]
    gy[..., -1, :] = gray[..., -1, :] - gray[..., -2, :]
    return torch.cat([gx, gy], 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2
                  / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def eye_centre_objective(gray: torch.Tensor, centres: torch.Tensor,
                         gradient_mask: torch.Tensor | None = None, *,
                         gradient_threshold: float = 0.3, darkness: float = 1.0,
                         blur_sigma: float = 1.0, weight_map: torch.Tensor | None = None,
                         chunk: int = 512) -> torch.Tensor:
    """The Timm & Barth objective at arbitrary (sub-pixel) candidate centres.

    Args:
        gray: (N, 1, h, w) patches in [0, 1].
        centres: (N, C, 2) candidate centres, patch pixels (x, y).
        gradient_mask: (N, h, w) bool, pixels whose gradients vote (None: all).
        gradient_threshold: a gradient votes when its magnitude exceeds
            ``mean + gradient_threshold * std`` over the voting pixels (Timm & Barth use
            0.3).
        darkness: exponent of the dark-centre prior ``(1 - I_blur(c))``; 0 switches it off.
        blur_sigma: Gaussian sigma (patch px) of the prior's smoothing.
        weight_map: (N, 1, h, w) precomputed ``1 - I_blur`` (else computed here).
        chunk: candidates per block (memory: N * chunk * h * w floats).

    Returns:
        (N, C) objective values (0 where no gradient votes).
    """
    if gray.dim() != 4 or gray.shape[1] != 1:
        raise ValueError(f"gray must be (N, 1, h, w), got {tuple(gray.shape)}")
    n, _, h, w = gray.shape
    if centres.dim() != 3 or centres.shape[0] != n or centres.shape[-1] != 2:
        raise ValueError(f"centres must be (N={n}, C, 2), got {tuple(centres.shape)}")
    g = _gradients(gray).flatten(2).transpose(1, 2)                    # (N, P, 2)
    mag = torch.linalg.vector_norm(g, dim=-1)                          # (N, P)
    vote = torch.ones_like(mag, dtype=torch.bool) if gradient_mask is None else \
        gradient_mask.reshape(n, -1)
    cnt = vote.sum(-1, keepdim=True).clamp_min(1)
    mean = (mag * vote).sum(-1, keepdim=True) / cnt
    std = (((mag - mean) ** 2) * vote).sum(-1, keepdim=True).div(cnt).sqrt()
    keep = vote & (mag > mean + gradient_threshold * std) & (mag > 1e-6)
    nkeep = keep.sum(-1).clamp_min(1).float()                          # (N,)
    # compact the voting pixels to the front (padding votes with a zero gradient)
    k = max(1, int(keep.sum(-1).max()))
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]
    xy = pixel_grid(h, w, device=gray.device).reshape(1, -1, 2).expand(n, -1, -1)
    xy = xy.gather(1, order[..., None].expand(-1, -1, 2))              # (N, K, 2)
    gk = g.gather(1, order[..., None].expand(-1, -1, 2))
    kk = keep.gather(1, order)
    gn = torch.where(kk[..., None], gk / gk.norm(dim=-1, keepdim=True).clamp_min(1e-12), 0.0)
    xg = (xy * gn).sum(-1)                                             # (N, K)  x_i . g_i
    xx = (xy * xy).sum(-1)                                             # (N, K)
    out = []
    for lo in range(0, centres.shape[1], chunk):
        c = centres[:, lo:lo + chunk].float()                          # (N, c, 2)
        # (x_i - c) . g_i and |x_i - c|^2 through batched matrix products
        num = xg[:, None] - c @ gn.transpose(1, 2)                     # (N, c, K)
        d2 = xx[:, None] - 2 * (c @ xy.transpose(1, 2)) + (c * c).sum(-1, keepdim=True)
        dot = num * torch.rsqrt(d2.clamp_min(1e-12))
        out.append(dot.clamp_min(0).pow(2).sum(-1) / nkeep[:, None])
    obj = torch.cat(out, 1)
    if darkness:
        if weight_map is None:
            weight_map = 1 - _blur(gray, blur_sigma)
        grid = torch.stack([(2 * centres[..., 0] + 1) / w - 1,
                            (2 * centres[..., 1] + 1) / h - 1], -1)[:, None]   # (N,1,C,2)
        wc = F.grid_sample(weight_map, grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[:, 0, 0]
        obj = obj * wc.clamp_min(0).pow(darkness)
    return obj


# ------------------------------------------------------------------------- localiser
def locate_pupils(images, landmarks68, *, patch_width: int = 48, margin: float = 0.2,
                  aspect: float = 0.6, grow: float = 0.15, gradient_threshold: float = 0.3,
                  darkness: float = 1.0, blur_sigma: float = 1.0, refine_steps: int = 8,
                  inset: float = 0.0, return_details: bool = False):
    """Pupil centres of both eyes from the image(s) and their 68 landmarks.

    Args:
        images: (B, 3, H, W) or (B, 1, H, W) float in [0, 1] (or uint8), one (3, H, W)
            image, or an (H, W, 3) uint8 numpy image.
        landmarks68: (B, 68, 2) (or (68, 2) for one image) pixel coordinates (pixel
            centres at integers, :mod:`facegeo.coords`).
        patch_width: eye patch width in pixels (the patch height is
            ``round(aspect * patch_width)``); the objective costs O((h w)^2) per eye.
        margin: context on each side of the eye corners, in eye widths.
        aspect: patch height / width.
        grow: the gradients that vote lie inside the eye contour scaled by ``1 + grow``
            about its centroid (the iris boundary, not the brow or the skin folds).
        gradient_threshold, darkness, blur_sigma: see :func:`eye_centre_objective`.
        refine_steps: sub-pixel refinement grid, ``1 / refine_steps`` patch pixels (0: off,
            integer patch pixels).
        inset: candidates lie inside the eye contour scaled by ``1 - inset`` about its
            centroid (keeps the estimate off the lids).
        return_details: also return a dict with ``valid`` (B, 2) bool (False: the eye
            is closed / degenerate and the contour centroid is returned), ``score``
            (B, 2) objective at the result, ``patches`` (B, 2, h, w) gray patches,
            ``matrices`` (B, 2, 2, 3) image -> patch maps and ``patch_pupils`` (B, 2, 2).

    Returns:
        (B, 2, 2) pupil centres in image pixels, subject's right eye (of 36-41) first;
        (B, 2, 2) for a single (un-batched) image too. With ``return_details``:
        ``(pupils, details)``.
    """
    gray = _as_images(images)
    b = gray.shape[0]
    lm = _as_landmarks(landmarks68, b).to(gray.device)
    if patch_width < 8:
        raise ValueError(f"patch_width must be >= 8, got {patch_width}")
    if not 0 <= margin <= 2 or not 0 < aspect <= 2:
        raise ValueError(f"margin must be in [0, 2] and aspect in (0, 2], got {margin}, "
                         f"{aspect}")
    pw, ph = int(patch_width), max(4, int(round(aspect * patch_width)))
    mats = eye_patch_matrices(lm, (ph, pw), margin)                    # (B, 2, 2, 3)
    m = mats.reshape(2 * b, 2, 3)
    src = gray.repeat_interleave(2, 0)
    patches = warp_affine(src, m, (ph, pw), padding_mode="border")     # (2B, 1, ph, pw)
    rings = torch.stack([lm[:, list(r)] for _, _, r in _EYES], 1).reshape(2 * b, 6, 2)
    poly = apply_affine(m, rings)                                      # (2B, 6, 2)
    cen = poly.mean(1, keepdim=True)
    grid = pixel_grid(ph, pw, device=gray.device).reshape(1, -1, 2).expand(2 * b, -1, -1)
    inside = points_in_polygon(grid, cen + (1 - inset) * (poly - cen))     # (2B, P)
    grown = points_in_polygon(grid, cen + (1 + grow) * (poly - cen))
    # normalise the gray levels inside the grown contour (robust to exposure)
    flat = patches.flatten(1)
    big = float(torch.finfo(flat.dtype).max)
    lo = torch.where(grown, flat, big).amin(1)
    hi = torch.where(grown, flat, -big).amax(1)
    ok_range = grown.any(1)
    lo = torch.where(ok_range, lo, flat.amin(1))
    hi = torch.where(ok_range, hi, flat.amax(1))
    patches = ((patches - lo.view(-1, 1, 1, 1)) / (hi - lo).clamp_min(1e-3).view(-1, 1, 1, 1)
               ).clamp(0, 1)
    wmap = 1 - _blur(patches, blur_sigma)
    kw = dict(gradient_threshold=gradient_threshold, darkness=darkness,
              blur_sigma=blur_sigma, weight_map=wmap)
    # coarse stage: the integer candidates inside the eye opening, compacted
    nin = max(1, int(inside.sum(1).max()))
    order = torch.argsort((~inside).to(torch.int8), dim=1, stable=True)[:, :nin]
    cand = grid.gather(1, order[..., None].expand(-1, -1, 2))
    obj = eye_centre_objective(patches, cand, grown.view(-1, ph, pw), **kw)
    obj = torch.where(inside.gather(1, order), obj, -1.0)
    valid = inside.any(1)
    best = obj.argmax(1)
    c0 = cand.gather(1, best[:, None, None].expand(-1, 1, 2))[:, 0]    # (2B, 2)
    score = obj.gather(1, best[:, None])[:, 0]
    if refine_steps:
        s = int(refine_steps)
        off = torch.arange(-s, s + 1, device=gray.device, dtype=torch.float32) / s
        oy, ox = torch.meshgrid(off, off, indexing="ij")
        fine = torch.stack([ox, oy], -1).reshape(1, -1, 2)            # (1, F, 2)
        cand = c0[:, None] + fine                                      # (2B, F, 2)
        fo = eye_centre_objective(patches, cand, grown.view(-1, ph, pw), **kw)
        fo = fo.view(-1, 2 * s + 1, 2 * s + 1)
        k = fo.flatten(1).argmax(1)
        iy, ix = k // (2 * s + 1), k % (2 * s + 1)
        score = torch.maximum(score, fo.flatten(1).gather(1, k[:, None])[:, 0])

        def parabola(v_m, v_0, v_p):
            den = v_m - 2 * v_0 + v_p
            return torch.where(den < -1e-12, 0.5 * (v_m - v_p) / den.clamp(max=-1e-12),
                               torch.zeros_like(v_0)).clamp(-0.5, 0.5)

        rows = torch.arange(fo.shape[0], device=gray.device)
        ixm, ixp = (ix - 1).clamp(0, 2 * s), (ix + 1).clamp(0, 2 * s)
        iym, iyp = (iy - 1).clamp(0, 2 * s), (iy + 1).clamp(0, 2 * s)
        dx = parabola(fo[rows, iy, ixm], fo[rows, iy, ix], fo[rows, iy, ixp])
        dy = parabola(fo[rows, iym, ix], fo[rows, iy, ix], fo[rows, iyp, ix])
        dx = torch.where((ix > 0) & (ix < 2 * s), dx, 0.0)
        dy = torch.where((iy > 0) & (iy < 2 * s), dy, 0.0)
        c0 = c0 + torch.stack([(ix - s + dx) / s, (iy - s + dy) / s], -1)
    c0 = torch.where(valid[:, None], c0, cen[:, 0])
    pupils = apply_affine(invert_affine(m), c0[:, None])[:, 0].view(b, 2, 2)
    if not return_details:
        return pupils
    return pupils, {"valid": valid.view(b, 2), "score": score.view(b, 2),
                    "patches": patches.view(b, 2, ph, pw), "matrices": mats,
                    "patch_pupils": c0.view(b, 2, 2)}


def iris_points(landmarks68: torch.Tensor, pupils: torch.Tensor,
                iris_ratio: float = 0.21) -> torch.Tensor:
    """The six gaze points of the 74-point convention from the pupils.

    Per eye: the pupil, then the iris edge towards the eye's outer corner and the iris
    edge towards its inner corner, along the corner-to-corner axis at
    ``iris_ratio * eye width`` from the pupil (an iris diameter of about 42 % of the
    palpebral fissure: 11.7 mm over about 28 mm, the anthropometric averages).

    Args:
        landmarks68: (..., 68, 2) pixels.
        pupils: (..., 2, 2) pixels (right eye, left eye), e.g. from :func:`locate_pupils`.

    Returns:
        (..., 6, 2) in the order of indices 68-73 (docs/landmarks.md).
    """
    if pupils.shape[-2:] != (2, 2) or pupils.shape[:-2] != landmarks68.shape[:-2]:
        raise ValueError(f"pupils must be (..., 2, 2) matching landmarks68 "
                         f"{tuple(landmarks68.shape)}, got {tuple(pupils.shape)}")
    _, axis, width = eye_axes(landmarks68)
    r = (iris_ratio * width)[..., None] * axis                       # (..., 2, 2)
    p = pupils.to(r)
    # right eye (36 outer, image left): outer = p - r; left eye (45 outer, image right)
    right = torch.stack([p[..., 0, :], p[..., 0, :] - r[..., 0, :], p[..., 0, :] + r[..., 0, :]],
                        -2)
    left = torch.stack([p[..., 1, :], p[..., 1, :] + r[..., 1, :], p[..., 1, :] - r[..., 1, :]],
                       -2)
    return torch.cat([right, left], -2)


def landmarks74(images, landmarks68, *, iris_ratio: float = 0.21, **kwargs) -> torch.Tensor:
    """68 landmarks + the pupils and their iris neighbours = 74 landmarks.

    Args:
        images: (B, 3, H, W) float in [0, 1] (see :func:`locate_pupils` for the other
            accepted forms).
        landmarks68: (B, 68, 2) pixels (or (68, 2) for one image).
        iris_ratio: see :func:`iris_points`.
        kwargs: options of :func:`locate_pupils`.

    Returns:
        (B, 74, 2) pixels: 0-67 the input points, 68-73 as
        :data:`facegeo.landmarks.conventions.GROUPS_74` names them.
    """
    gray = _as_images(images)
    lm = _as_landmarks(landmarks68, gray.shape[0])
    kwargs.pop("return_details", None)
    pupils = locate_pupils(gray, lm, **kwargs).to(lm)
    out = torch.cat([lm, iris_points(lm, pupils, iris_ratio)], -2)
    assert out.shape[-2] == NUM_LANDMARKS_74
    return out


def smooth_pupils(pupils: torch.Tensor, landmarks68: torch.Tensor, fps: float, *,
                  min_cutoff: float = 4.0, beta: float = 5.0, d_cutoff: float = 1.0,
                  zero_phase: bool = True) -> torch.Tensor:
    """Temporal smoothing of a pupil track (video): the One-Euro filter
    (:func:`facegeo.landmarks.tracking.one_euro_smooth`) on the *gaze offset*, the pupil
    relative to the eye-contour centroid in eye widths, so head motion (already smoothed
    in the landmarks) is not filtered twice and the cut-off is size independent.

    Args:
        pupils: (T, 2, 2) per-frame pupils (pixels), e.g. :func:`locate_pupils`.
        landmarks68: (T, 68, 2) the (tracked) landmarks they were found with.
        fps: frame rate; min_cutoff, beta, d_cutoff: One-Euro parameters (defaults: the
            tracker's).
        zero_phase: forward-backward (lag-free, offline) instead of causal.

    Returns:
        (T, 2, 2) smoothed pupils (pixels).
    """
    from facegeo.landmarks.tracking import one_euro_smooth

    if pupils.dim() != 3 or pupils.shape[1:] != (2, 2) or landmarks68.shape[0] != len(pupils):
        raise ValueError(f"pupils must be (T, 2, 2) with landmarks68 (T, 68, 2), got "
                         f"{tuple(pupils.shape)} and {tuple(landmarks68.shape)}")
    cen, _, width = eye_axes(landmarks68)
    w = width[..., None].clamp_min(1e-3)
    off = (pupils.to(cen) - cen) / w
    sm = one_euro_smooth(off, fps, min_cutoff, beta, d_cutoff, zero_phase=zero_phase)
    return cen + sm * w


def gaze_offsets(pupils: torch.Tensor, landmarks68: torch.Tensor) -> torch.Tensor:
    """The gaze channel: each pupil relative to its eye, in the eye's own frame.

    Args:
        pupils: (..., 2, 2) pixels (right eye, left eye).
        landmarks68: (..., 68, 2) pixels.

    Returns:
        (..., 2, 2): per eye (along the corner-to-corner axis, across it, image-down
        positive) offset of the pupil from the contour centroid, in eye widths; invariant
        to the head's translation, in-plane rotation and scale.
    """
    cen, axis, width = eye_axes(landmarks68)
    d = pupils.to(cen) - cen
    along = (d * axis).sum(-1)
    normal = torch.stack([-axis[..., 1], axis[..., 0]], -1)
    across = (d * normal).sum(-1)
    return torch.stack([along, across], -1) / width[..., None].clamp_min(1e-3)


def gaze_following(driving: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
    """How well an animated video follows the driver's gaze.

    Args:
        driving, output: (T, 2, 2) :func:`gaze_offsets` of the driving frames and of the
            generated frames (T >= 3).

    Returns:
        ``corr``: Pearson correlation of the displacements from the first frame
        (``g_t - g_0``, all eyes and both axes pooled; 1 = follows, 0 = ignores);
        ``gain``: least-squares slope of output on driving displacement (1 = same
        amplitude); ``corr_along``: the correlation of the horizontal (along-axis)
        component alone, the main gaze direction.
    """
    if driving.shape != output.shape or driving.dim() != 3 or driving.shape[1:] != (2, 2) \
            or driving.shape[0] < 3:
        raise ValueError(f"driving and output must both be (T>=3, 2, 2), got "
                         f"{tuple(driving.shape)} and {tuple(output.shape)}")

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        den = (a.norm() * b.norm()).clamp_min(1e-12)
        return float((a * b).sum() / den)

    dd = (driving[1:] - driving[:1]).double()
    do = (output[1:] - output[:1]).double()
    gain = float((dd * do).sum() / (dd * dd).sum().clamp_min(1e-12))
    return {"corr": corr(dd.flatten(), do.flatten()), "gain": gain,
            "corr_along": corr(dd[..., 0].flatten(), do[..., 0].flatten())}


# ------------------------------------------------------ constructions with known truth
def render_synthetic_eyes(offsets: torch.Tensor, *, size: int = 128,
                          eye_width: float = 30.0, opening: float = 0.36,
                          iris_ratio: float = 0.21, noise: float = 0.02, blur: float = 0.7,
                          seed: int = 0, supersample: int = 4
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic frontal faces with two eyes whose iris centres are known exactly.

    Skin background (a smooth random shading), per eye an almond opening between two
    corners (upper lid arc higher than the lower one), white sclera, a dark iris disc of
    radius ``iris_ratio * eye_width`` with a darker pupil, clipped by the lids, a dark lid
    line; anti-aliased by supersampling, blurred and noised.

    Args:
        offsets: (B, 2, 2) iris-centre offsets from the eye centre, in eye widths (x, y),
            subject's right eye first.
        size: image side S.

    Returns:
        images (B, 3, S, S) in [0, 1], landmarks68 (B, 68, 2) pixels (the eye points
        36-47 on the lids, the other points at plausible positions), pupils (B, 2, 2)
        the true iris centres in pixels.
    """
    if offsets.dim() != 3 or offsets.shape[1:] != (2, 2):
        raise ValueError(f"offsets must be (B, 2, 2), got {tuple(offsets.shape)}")
    g = torch.Generator().manual_seed(seed)
    b, s, ss = offsets.shape[0], size, size * supersample
    centres = torch.tensor([[0.34 * s, 0.42 * s], [0.66 * s, 0.42 * s]])
    half, up, low = eye_width / 2, opening * eye_width * 0.62, opening * eye_width * 0.38
    r_iris = iris_ratio * eye_width
    # fine pixel centres in image pixels
    fy, fx = torch.meshgrid(torch.arange(ss), torch.arange(ss), indexing="ij")
    px = (fx.float() + 0.5) / supersample - 0.5
    py = (fy.float() + 0.5) / supersample - 0.5
    imgs, lms, pups = [], [], []
    for i in range(b):
        base = 0.55 + 0.1 * torch.rand(3, generator=g)
        skin = (torch.tensor([0.85, 0.62, 0.5]) * base)[:, None, None]
        shade = F.interpolate(torch.rand(1, 1, 4, 4, generator=g), size=(ss, ss),
                              mode="bicubic", align_corners=False)[0]
        img = (skin * (0.9 + 0.2 * shade)).clone()                     # (3, ss, ss)
        iris_col = torch.tensor([0.35, 0.22, 0.12]) * (0.7 + 0.6 * torch.rand(1, generator=g))
        lm = torch.zeros(68, 2)
        pup = torch.zeros(2, 2)
        for e in range(2):
            cx, cy = centres[e]
            u = (px - cx) / half                                        # -1 .. 1 corners
            inside_x = u.abs() < 1
            prof = (1 - u**2).clamp_min(0)
            top, bot = cy - up * prof, cy + low * prof
            opening_m = inside_x & (py > top) & (py < bot)
            ic = torch.tensor([cx, cy]) + offsets[i, e] * eye_width
            pup[e] = ic
            dist = ((px - ic[0]) ** 2 + (py - ic[1]) ** 2).sqrt()
            sclera = torch.tensor([0.92, 0.9, 0.88])
            col = torch.where((dist < r_iris)[None], iris_col[:, None, None],
                              sclera[:, None, None])
            col = torch.where((dist < 0.45 * r_iris)[None],
                              torch.tensor([0.05, 0.04, 0.04])[:, None, None], col)
            # iris texture: radial darkening towards the limbus
            col = col * torch.where(dist < r_iris, 1 - 0.25 * (dist / r_iris) ** 4,
                                    torch.ones_like(dist))
            img = torch.where(opening_m[None], col, img)
            lid = inside_x & ((py - top).abs() < 0.8) & (py <= top + 0.8)
            img = torch.where(lid[None], img * 0.45, img)
            # iBUG eye points: corners and two points on each lid at u = -+1/3
            corners = [(cx - half, cy), (cx + half, cy)]
            us = (-1 / 3, 1 / 3)
            upper = [(cx + uu * half, cy - up * (1 - uu**2)) for uu in us]
            lower = [(cx + uu * half, cy + low * (1 - uu**2)) for uu in us]
            ring = [corners[0], upper[0], upper[1], corners[1], lower[1], lower[0]]
            base_i = 36 if e == 0 else 42
            lm[base_i:base_i + 6] = torch.tensor(ring)
        # the rest of the 68 points: a plausible frontal layout (unused by the localiser)
        t = torch.linspace(0, math.pi, 17)
        lm[0:17] = torch.stack([0.5 * s - 0.4 * s * torch.cos(t), 0.45 * s + 0.4 * s *
                                torch.sin(t)], -1)
        lm[17:27] = torch.stack([torch.linspace(0.22, 0.78, 10) * s,
                                 torch.full((10,), 0.3 * s)], -1)
        lm[27:36] = torch.stack([torch.full((9,), 0.5 * s),
                                 torch.linspace(0.45, 0.62, 9) * s], -1)
        th = torch.linspace(0, 2 * math.pi, 21)[:20]
        lm[48:68] = torch.stack([0.5 * s + 0.12 * s * torch.cos(th),
                                 0.75 * s + 0.04 * s * torch.sin(th)], -1)
        img = F.avg_pool2d(img[None], supersample)[0]
        imgs.append(img)
        lms.append(lm)
        pups.append(pup)
    x = torch.stack(imgs)
    if blur > 0:
        x = _blur(x.reshape(-1, 1, s, s), blur).reshape(b, 3, s, s)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1), torch.stack(lms), torch.stack(pups)


def shift_iris(images: torch.Tensor, landmarks68: torch.Tensor, pupils: torch.Tensor,
               shift: torch.Tensor, *, iris_ratio: float = 0.21, taper: float = 0.2
               ) -> torch.Tensor:
    """Move the iris of real eyes by a known amount (a gaze change with the lids fixed).

    A backward warp ``out(x) = in(x - w(x) shift)`` inside each eye opening: ``w = 1`` on
    the disc covering the iris before and after the move (radius ``iris_ratio * width +
    |shift| / 2`` about the midpoint), falling linearly to 0 over ``taper`` eye widths,
    and 0 outside the eye contour (grown by 10 %), so the lids and the skin stay put. The
    iris centre then lies at ``pupils + shift`` exactly (where the disc is translated
    rigidly).

    Args:
        images: (B, 3, H, W) in [0, 1].
        landmarks68: (B, 68, 2) pixels.
        pupils: (B, 2, 2) current iris centres (pixels), e.g. :func:`locate_pupils`.
        shift: (B, 2, 2) or (2,) displacement in pixels (per eye, or one for both).

    Returns:
        (B, 3, H, W) warped images.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    b, _, h, w = images.shape
    lm = _as_landmarks(landmarks68, b).to(images)
    pupils = pupils.to(images)
    shift = torch.as_tensor(shift, dtype=images.dtype, device=images.device)
    shift = shift.expand(b, 2, 2) if shift.shape == (2,) else shift
    if shift.shape != (b, 2, 2) or pupils.shape != (b, 2, 2):
        raise ValueError(f"pupils and shift must be (B={b}, 2, 2), got "
                         f"{tuple(pupils.shape)}, {tuple(shift.shape)}")
    _, _, width = eye_axes(lm)                                         # (B, 2)
    xy = pixel_grid(h, w, device=images.device, dtype=images.dtype).reshape(1, -1, 2)
    disp = torch.zeros(b, h * w, 2, dtype=images.dtype, device=images.device)
    for e, (_, _, ring) in enumerate(_EYES):
        poly = lm[:, list(ring)]
        cen = poly.mean(1, keepdim=True)
        inside = points_in_polygon(xy.expand(b, -1, -1), cen + 1.1 * (poly - cen))
        mid = pupils[:, e] + shift[:, e] / 2
        r1 = iris_ratio * width[:, e] + torch.linalg.vector_norm(shift[:, e], dim=-1) / 2
        r2 = r1 + taper * width[:, e]
        d = torch.linalg.vector_norm(xy - mid[:, None], dim=-1)        # (B, P)
        wgt = ((r2[:, None] - d) / (r2 - r1)[:, None]).clamp(0, 1) * inside
        disp = disp + wgt[..., None] * shift[:, e][:, None]
    src = (xy - disp).reshape(b, h, w, 2)
    grid = torch.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)
