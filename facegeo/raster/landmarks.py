"""Rasterize 2D facial landmarks: Gaussian heat-maps, anti-aliased part drawings, part maps.

Landmarks are (B, N, 2) pixel coordinates (x right, y down, pixel centres at integers, see
:mod:`facegeo.coords`). The 68-point face parts follow the Multi-PIE / iBUG-300W order
(0-based): jaw 0-16, right brow 17-21, left brow 22-26, nose bridge 27-30, lower nose
31-35, right eye 36-41 (closed), left eye 42-47 (closed), outer lips 48-59 (closed), inner
lips 60-67 (closed); "right" is the subject's right (image left for a frontal face).

* :func:`heatmaps`: one Gaussian per landmark, differentiable w.r.t. the points.
* :func:`draw_landmark_lines`: the "landmark image" used by landmark-to-image generators
  (e.g. FD-GAN): every part drawn as an anti-aliased poly-line in its own colour.
* :func:`part_maps`: the same lines, one channel per part.

Anti-aliasing: a pixel at distance ``d`` from the centre line of a segment gets
``clamp(thickness / 2 + 0.5 - d, 0, 1)``, the box-filtered coverage of a line of that
thickness (the intensities across a straight line sum to ``thickness``).
"""

from __future__ import annotations

import torch

from facegeo.coords import pixel_grid
from facegeo.landmarks.conventions import GROUPS_68

__all__ = [
    "PARTS_68",
    "PART_COLORS_68",
    "part_segments",
    "heatmaps",
    "draw_landmark_lines",
    "part_maps",
]

#: 68-point parts: name -> (landmark indices in drawing order, closed contour?); the index
#: groups are the ones of :data:`facegeo.landmarks.conventions.GROUPS_68`.
_CLOSED_PARTS = ("right_eye", "left_eye", "outer_lips", "inner_lips")
PARTS_68: dict[str, tuple[tuple[int, ...], bool]] = {
    name: (GROUPS_68[name], name in _CLOSED_PARTS)
    for name in ("jaw", "right_brow", "left_brow", "nose_bridge", "nose_lower", "right_eye",
                 "left_eye", "outer_lips", "inner_lips")
}

#: default RGB colour of each part in :func:`draw_landmark_lines`
PART_COLORS_68: dict[str, tuple[float, float, float]] = {
    "jaw": (1.0, 1.0, 1.0),
    "right_brow": (1.0, 0.6, 0.0),
    "left_brow": (1.0, 0.6, 0.0),
    "nose_bridge": (0.0, 0.6, 1.0),
    "nose_lower": (0.0, 0.6, 1.0),
    "right_eye": (0.0, 1.0, 0.2),
    "left_eye": (0.0, 1.0, 0.2),
    "outer_lips": (1.0, 0.1, 0.3),
    "inner_lips": (1.0, 0.5, 0.8),
}


def _check_points(points: torch.Tensor, n: int | None = None) -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError("points must be a torch tensor")
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (B, N, 2), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"points must be floating point, got {points.dtype}")
    if n is not None and points.shape[1] != n:
        raise ValueError(f"expected {n} landmarks (68-point layout), got {points.shape[1]}")


def _check_missing(points: torch.Tensor, missing: str) -> None:
    """The finite-landmark rule of this module (see :func:`heatmaps`)."""
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', got {missing!r}")
    nan = torch.isnan(points).any(-1)
    inf = torch.isinf(points).any(-1)
    bad = (nan | inf) if missing == "raise" else inf
    if bool(bad.any()):
        b, i = (int(x) for x in bad.nonzero()[0])
        what = "NaN or inf" if missing == "raise" else "inf"
        hint = " (pass missing='skip' to leave NaN landmarks out)" if missing == "raise" else ""
        raise ValueError(f"points contain {what} at [{b}, {i}]{hint}")


def _check_size(height: int, width: int) -> None:
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive integers, got {height} x {width}")


def part_segments(parts: dict[str, tuple[tuple[int, ...], bool]] | None = None) -> dict:
    """Segments of each part: name -> (S, 2) int64 tensor of landmark index pairs."""
    parts = PARTS_68 if parts is None else parts
    out = {}
    for name, (idx, closed) in parts.items():
        pairs = list(zip(idx[:-1], idx[1:]))
        if closed and len(idx) > 2:
            pairs.append((idx[-1], idx[0]))
        out[name] = torch.tensor(pairs, dtype=torch.int64).view(-1, 2)
    return out


def heatmaps(
    points: torch.Tensor,
    height: int,
    width: int,
    *,
    sigma: float = 2.0,
    normalize: bool = False,
    missing: str = "raise",
) -> torch.Tensor:
    """Per-landmark Gaussian heat-maps ``exp(-|p - l_n|^2 / (2 sigma^2))``.

    Args:
        points: (B, N, 2) landmark pixel coordinates.
        height, width: map size H, W (pixel centres at integer coordinates).
        sigma: standard deviation in pixels.
        normalize: divide each map by its sum (a spatial probability distribution).
        missing: ``"raise"`` (default): a NaN or inf coordinate raises ValueError naming the
            first bad ``[batch, landmark]``; ``"skip"``: a landmark with a NaN coordinate is
            missing and its map is all zeros (also with ``normalize``); inf still raises.

    Returns:
        (B, N, H, W), differentiable w.r.t. ``points``; peak value 1 at a landmark that lies
        on a pixel centre (before normalisation).
    """
    _check_points(points)
    _check_missing(points, missing)
    _check_size(height, width)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    finite = torch.isfinite(points).all(-1)  # (B, N)
    pts = torch.where(finite[..., None], points, torch.zeros_like(points))
    xs = torch.arange(width, device=points.device, dtype=points.dtype)
    ys = torch.arange(height, device=points.device, dtype=points.dtype)
    gx = torch.exp(-((xs - pts[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, N, W)
    gy = torch.exp(-((ys - pts[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, N, H)
    hm = gy.unsqueeze(-1) * gx.unsqueeze(-2)  # separable: (B, N, H, W)
    hm = hm * finite[..., None, None].to(hm.dtype)
    if normalize:
        hm = hm / hm.sum(dim=(-2, -1), keepdim=True).clamp(min=torch.finfo(hm.dtype).tiny)
    return hm


def _segment_coverage(
    points: torch.Tensor, seg: torch.Tensor, height: int, width: int, thickness: float
) -> torch.Tensor:
    """(B, N, 2), (S, 2) -> (B, H, W) max anti-aliased coverage of the segments."""
    B = points.shape[0]
    out = points.new_zeros(B, height, width)
    if seg.numel() == 0:
        return out
    grid = pixel_grid(height, width, device=points.device, dtype=points.dtype)  # (H, W, 2)
    a = points[:, seg[:, 0]]  # (B, S, 2)
    b = points[:, seg[:, 1]]
    ok = (torch.isfinite(a).all(-1) & torch.isfinite(b).all(-1))[..., None, None]
    a = torch.where(torch.isfinite(a), a, torch.zeros_like(a))
    b = torch.where(torch.isfinite(b), b, torch.zeros_like(b))
    ab = b - a
    len2 = (ab * ab).sum(-1).clamp(min=1e-12)  # (B, S)
    chunk = 8
    for s in range(0, seg.shape[0], chunk):
        aa = a[:, s : s + chunk, None, None, :]  # (B, s, 1, 1, 2)
        d = ab[:, s : s + chunk, None, None, :]
        ap = grid - aa  # (B, s, H, W, 2)
        t = ((ap * d).sum(-1) / len2[:, s : s + chunk, None, None]).clamp(0, 1)
        dist = (ap - t.unsqueeze(-1) * d).norm(dim=-1)
        cov = (thickness / 2 + 0.5 - dist).clamp(0, 1) * ok[:, s : s + chunk].to(dist.dtype)
        out = torch.maximum(out, cov.amax(1))
    return out


def part_maps(
    points: torch.Tensor,
    height: int,
    width: int,
    *,
    thickness: float = 1.0,
    parts: dict[str, tuple[tuple[int, ...], bool]] | None = None,
    missing: str = "raise",
) -> torch.Tensor:
    """One channel per face part with its anti-aliased poly-line.

    Args:
        points: (B, 68, 2) landmarks (or (B, N, 2) with custom ``parts``).
        height, width: output size.
        thickness: line width in pixels.
        parts: name -> (indices, closed); default :data:`PARTS_68` (channel order = dict
            order: jaw, right_brow, left_brow, nose_bridge, nose_lower, right_eye,
            left_eye, outer_lips, inner_lips).
        missing: ``"raise"`` (default) or ``"skip"``: as in :func:`heatmaps`; skipped (NaN)
            landmarks leave out every segment that touches them.

    Returns:
        (B, P, H, W) in [0, 1].
    """
    _check_points(points, 68 if parts is None else None)
    _check_missing(points, missing)
    _check_size(height, width)
    if thickness <= 0:
        raise ValueError(f"thickness must be positive, got {thickness}")
    segs = part_segments(parts)
    n = points.shape[1]
    for name, s in segs.items():
        if s.numel() and (int(s.min()) < 0 or int(s.max()) >= n):
            raise ValueError(f"part {name!r} indexes landmarks outside [0, {n})")
    maps = [
        _segment_coverage(points, s.to(points.device), height, width, thickness)
        for s in segs.values()
    ]
    return torch.stack(maps, 1)


def draw_landmark_lines(
    points: torch.Tensor,
    height: int,
    width: int,
    *,
    thickness: float = 1.0,
    colors: dict[str, tuple[float, float, float]] | None = None,
    background: torch.Tensor | None = None,
    missing: str = "raise",
) -> torch.Tensor:
    """The "landmark image": face parts drawn as anti-aliased coloured poly-lines.

    Args:
        points: (B, 68, 2) landmarks in pixels.
        height, width: output size.
        thickness: line width in pixels.
        colors: part name -> RGB in [0, 1]; default :data:`PART_COLORS_68`.
        background: optional (B, 3, H, W) image to draw on (lines are alpha-blended with
            their coverage); default black.
        missing: ``"raise"`` (default) or ``"skip"`` NaN landmarks, as in :func:`part_maps`.

    Returns:
        (B, 3, H, W) RGB in [0, 1]. Where parts overlap, the part drawn last (dict order)
        is on top.
    """
    colors = PART_COLORS_68 if colors is None else colors
    maps = part_maps(points, height, width, thickness=thickness, missing=missing)
    B = points.shape[0]
    if background is None:
        img = points.new_zeros(B, 3, height, width)
    else:
        if background.shape != (B, 3, height, width):
            raise ValueError(
                f"background must have shape {(B, 3, height, width)}, got {tuple(background.shape)}"
            )
        img = background.to(points.dtype)
    for k, name in enumerate(PARTS_68):
        if name not in colors:
            raise ValueError(f"colors has no entry for part {name!r}")
        c = torch.tensor(colors[name], dtype=points.dtype, device=points.device).view(1, 3, 1, 1)
        alpha = maps[:, k : k + 1]
        img = img * (1 - alpha) + c * alpha
    return img
