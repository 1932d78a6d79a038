"""Keypoint helpers shared by the keypoint-conditioned models (FOMM family, FSRT).

* :data:`LANDMARK_SUBSETS` / :func:`landmark_keypoints`: keypoints taken from the 68
  facegeo landmarks (a named subset or all 68), normalized (align_corners=False) units.
* :func:`convex_hull_area`: area of the 2D convex hull of each point set (Andrew's
  monotone chain), the scale FOMM's relative motion adapts with.
* :func:`to_normalized` / :func:`to_pixels`: pixel <-> normalized points of an H x W image
  (:mod:`facegeo.coords`).
* :func:`relative_keypoints`: FOMM's relative motion transfer, source keypoints moved by
  the driver's displacement from its reference frame (optionally scaled by the hull
  areas).

Points are (B, K, 2) as (x, y); normalized coordinates follow :mod:`facegeo.coords`.
"""

from __future__ import annotations

import inspect

import torch

from facegeo.coords import normalized_to_pixel, pixel_to_normalized

__all__ = ["LANDMARK_SUBSETS", "landmark_keypoints", "convex_hull_area",
           "relative_keypoints", "to_normalized", "to_pixels"]

#: Named subsets of the 68 iBUG landmarks (0-based indices) used as model keypoints.
#: ``ten``: outer and inner eye corners (36, 39, 42, 45), nose tip (30), mouth corners
#: (48, 54), upper and lower lip centre (51, 57), chin (8): the rigid head pose plus eye
#: and mouth opening, ten points as FSRT's detector gives. ``all68``: every landmark.
LANDMARK_SUBSETS: dict[str, tuple[int, ...]] = {
    "ten": (36, 39, 42, 45, 30, 48, 54, 51, 57, 8),
    "all68": tuple(range(68)),
}


def landmark_keypoints(landmarks: torch.Tensor, width: int, height: int,
                       subset: str = "ten") -> torch.Tensor:
    """Keypoints from landmarks: (..., 68, 2) pixel landmarks of a ``width`` x ``height``
    image -> (..., K, 2) normalized coordinates of the ``subset`` (see
    :data:`LANDMARK_SUBSETS`)."""
    if subset not in LANDMARK_SUBSETS:
        raise ValueError(f"unknown landmark subset {subset!r}; expected one of "
                         f"{sorted(LANDMARK_SUBSETS)}")
    if not isinstance(landmarks, torch.Tensor) or landmarks.dim() < 2 or tuple(
            landmarks.shape[-2:]) != (68, 2):
        raise ValueError(f"landmarks must have shape (..., 68, 2), got "
                         f"{tuple(getattr(landmarks, 'shape', ()))}")
    idx = torch.tensor(LANDMARK_SUBSETS[subset], device=landmarks.device)
    return to_normalized(landmarks.index_select(-2, idx).float(), height, width)


# facegeo.coords is moving from (points, width, height) to (points, (H, W)); call the
# spelling the installed version has, without its deprecation warning
_SIZE_API = "size" in inspect.signature(pixel_to_normalized).parameters


def to_normalized(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) pixel (x, y) of an H x W image -> normalized
    (:func:`facegeo.coords.pixel_to_normalized`)."""
    if _SIZE_API:
        return pixel_to_normalized(points, (height, width))
    return pixel_to_normalized(points, width, height)


def to_pixels(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_normalized` (:func:`facegeo.coords.normalized_to_pixel`)."""
    if _SIZE_API:
        return normalized_to_pixel(points, (height, width))
    return normalized_to_pixel(points, width, height)


def _cross(o: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def convex_hull_area(points: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) -> (B,) area of each set's convex hull (0 for degenerate sets).

    Andrew's monotone chain then the shoelace formula, in float64 on the CPU (K is a
    handful of keypoints; not differentiable)."""
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (B, K, 2), got {tuple(points.shape)}")
    out = []
    for pts in points.detach().double().cpu():
        order = sorted(range(len(pts)), key=lambda i: (float(pts[i, 0]), float(pts[i, 1])))
        p = [pts[i] for i in order]
        if len(p) < 3:
            out.append(0.0)
            continue
        lower: list[torch.Tensor] = []
        for q in p:
            while len(lower) >= 2 and _cross(lower[-2], lower[-1], q) <= 0:
                lower.pop()
            lower.append(q)
        upper: list[torch.Tensor] = []
        for q in reversed(p):
            while len(upper) >= 2 and _cross(upper[-2], upper[-1], q) <= 0:
                upper.pop()
            upper.append(q)
        hull = torch.stack(lower[:-1] + upper[:-1])
        x, y = hull[:, 0], hull[:, 1]
        out.append(0.5 * abs(float((x * y.roll(-1) - x.roll(-1) * y).sum())))
    return torch.tensor(out, dtype=points.dtype, device=points.device)


def relative_keypoints(kp_source: torch.Tensor, kp_driving: torch.Tensor,
                       kp_reference: torch.Tensor, *, adapt_scale: bool = True
                       ) -> torch.Tensor:
    """FOMM relative motion: ``kp_source + s * (kp_driving - kp_reference)``.

    Args:
        kp_source: (1, K, 2) or (B, K, 2) keypoints of the source.
        kp_driving: (B, K, 2) keypoints of the driving frames.
        kp_reference: (1, K, 2) or (B, K, 2) keypoints of the driving reference frame
            (the one best matching the source; the first by default).
        adapt_scale: ``s = sqrt(area(hull(source)) / area(hull(reference)))`` (FOMM's
            ``adapt_movement_scale``); otherwise s = 1.

    Returns:
        (B, K, 2) keypoints.
    """
    for name, t in (("kp_source", kp_source), ("kp_driving", kp_driving),
                    ("kp_reference", kp_reference)):
        if t.dim() != 3 or t.shape[-1] != 2 or t.shape[1] != kp_driving.shape[1]:
            raise ValueError(f"{name} must have shape (B, {kp_driving.shape[1]}, 2), got "
                             f"{tuple(t.shape)}")
    scale = torch.ones(kp_source.shape[0], device=kp_source.device, dtype=kp_source.dtype)
    if adapt_scale:
        a_s, a_r = convex_hull_area(kp_source), convex_hull_area(kp_reference)
        ok = a_r > 0
        scale = torch.where(ok, (a_s / a_r.clamp_min(1e-12)).sqrt(), scale)
        scale = scale.to(kp_source)
    return kp_source + scale.view(-1, 1, 1) * (kp_driving - kp_reference)

