"""The stages of the geometric renderer, each usable on its own (docs/reenact.md, figure
``img/reenact_stages.png``).

1. :func:`face_flow`: rasterize the target face mesh, transfer each covered pixel's
   barycentrics to the (shared) source mesh: the backward flow of
   :func:`facegeo.raster.mesh_flow` without rasterizing the source again per frame.
2. :func:`head_flow`: the head proxy's backward map (:func:`facegeo.geometric.headproxy.
   ellipsoid_flow`) on a coarse grid, upsampled: hair, ears, outline, the background next to
   the head.
3. :func:`silhouette_weight`: 0 on the face mesh silhouette, 1 a few pixels inside.
4. :func:`compose`: ``src = head + m (face - head)`` and one ``grid_sample`` of the source.
5. :func:`soften_stretched`: where the warp magnifies a thin strip of the source (what the
   source saw edge-on: the side of the head a turn brings into view), the sharp sample
   would be a streak; it is replaced by a sample of a low-pass copy of the source, a smooth
   fill of the strip's colours.
6. :func:`eyelid_fill`: target pixels outside the target's eye opening that still sample
   the source's eye opening (or its lash line) show the source eyeball where the target
   lid is closed; they are painted with the source's own lid skin colour.
7. :func:`mouth_fill`: target mouth pixels whose source lies outside the source's mouth
   opening are painted as a dark cavity (a warp cannot invent teeth).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facegeo.coords import normalized_to_pixel, pixel_grid, pixel_to_normalized

__all__ = ["face_flow", "head_flow", "silhouette_weight", "compose", "mouth_fill",
           "polygon_mask", "min_stretch", "soften_stretched", "eyelid_fill"]


def face_flow(faces: torch.Tensor, src_v: torch.Tensor, tgt_v: torch.Tensor, H: int, W: int,
              *, backend: str = "auto"):
    """Backward source coordinates of the target mesh's pixels.

    Args:
        faces: (F, 3) triangles; src_v: (1 or B, V, 3) and tgt_v (B, V, 3) image-space
            vertices (:func:`facegeo.geometric.facemesh.posed_vertices`).
        H, W: output size.

    Returns:
        src_xy (B, H, W, 2) (identity off the mesh), covered (B, H, W) bool, depth (B, H, W).
    """
    from facegeo.raster import interpolate, rasterize

    B = tgt_v.shape[0]
    frag = rasterize(tgt_v, faces, H, W, cull_backfaces=True, backend=backend)
    grid = pixel_grid(H, W, device=tgt_v.device, dtype=src_v.dtype)
    src_xy = interpolate(src_v[..., :2], frag, faces,
                         background=grid.unsqueeze(0).expand(B, -1, -1, -1))
    return src_xy, frag.mask, frag.depth


def head_flow(head, target: tuple, source: tuple, H: int, W: int, *, step: int = 4,
              fade: float = 1.4, with_rho: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The head proxy's backward flow on every ``step``-th pixel, upsampled (bilinear).

    Args:
        head: :class:`~facegeo.geometric.headproxy.HeadEllipsoid`.
        target, source: ``(rotation, scale, translation)`` poses (B rows / 1 row).
        H, W: output size; step: grid spacing in pixels; fade: see ``ellipsoid_flow``.
        with_rho: also upsample rho (else None is returned for it).

    Returns:
        src (B, H, W, 2) source pixel positions, rho (B, H, W) silhouette radius.
    """
    from facegeo.geometric.headproxy import ellipsoid_flow

    B = target[0].shape[0]
    h, w = -(-H // step), -(-W // step)
    dev, dt = target[0].device, torch.float32
    # coarse grid at pixel centres of the step x step blocks
    g = (pixel_grid(h, w, device=dev, dtype=dt) + 0.5) * step - 0.5
    src, rho = ellipsoid_flow(g.unsqueeze(0).expand(B, -1, -1, -1), head, target, source,
                              fade=fade)
    if step > 1:
        def up(x):  # (B, C, h, w) -> (B, C, H, W)
            return F.interpolate(x, scale_factor=step, mode="bilinear",
                                 align_corners=False)[..., :H, :W]
        disp = up((src - g).permute(0, 3, 1, 2))
        src = pixel_grid(H, W, device=dev, dtype=dt) + disp.permute(0, 2, 3, 1)
        rho = up(rho[:, None])[:, 0] if with_rho else None
    return src, rho


def silhouette_weight(covered: torch.Tensor, blend_px: float) -> torch.Tensor:
    """(B, H, W) bool coverage -> (B, H, W) float weight: 0 on the silhouette (and off the
    mesh), 1 from ``blend_px`` pixels inside (separable erosion then box blur, on a map
    reduced to <= 128 px and upsampled)."""
    S = covered.shape[-1]
    covf = covered[:, None].float()
    f = max(1, S // 128)
    low = F.avg_pool2d(covf, f, ceil_mode=True) if f > 1 else covf
    k = max(3, int(2 * round(blend_px / f) + 1))
    inside = -F.max_pool2d(-low, (k, 1), stride=1, padding=(k // 2, 0))
    inside = -F.max_pool2d(-inside, (1, k), stride=1, padding=(0, k // 2))
    m = F.avg_pool2d(inside, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)
    m = F.avg_pool2d(m, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)
    if f > 1:
        m = F.interpolate(m, size=covered.shape[-2:], mode="bilinear", align_corners=False)
    return (m * covf)[:, 0]


def compose(image: torch.Tensor, face_xy: torch.Tensor, outer_xy: torch.Tensor,
            weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blend the two flows and warp.

    The flows may be a smaller map (h, w) of the same picture (pixel centres at integers
    in the map's own pixels): the blended map is upsampled bilinearly to the image size
    (the backward map is smooth; the source is still sampled at full resolution).

    Args:
        image: (1 or B, 3, H, W) source; face_xy, outer_xy: (B, h, w, 2) source positions
            (pixels of the h x w map); weight: (B, h, w) (1 = face flow).

    Returns:
        frames (B, 3, H, W), src_xy (B, H, W, 2) (source pixels), grid (B, H, W, 2)
        (``grid_sample`` coordinates of src_xy).
    """
    B, h, w = weight.shape
    H, W = image.shape[-2:]
    src_xy = torch.lerp(outer_xy, face_xy, weight[..., None])
    grid = pixel_to_normalized(src_xy, (h, w))  # the same for any resolution
    if (h, w) != (H, W):
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(H, W), mode="bilinear",
                             align_corners=False).permute(0, 2, 3, 1).contiguous()
        src_xy = normalized_to_pixel(grid, (H, W))
    img = image.expand(B, -1, -1, -1) if image.shape[0] == 1 else image
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out, src_xy, grid


def min_stretch(src_xy: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 2) backward map -> (B, H, W) smaller singular value of its Jacobian
    (source pixels per target pixel along the most magnified direction; < 1 = magnified),
    by central differences (one-sided at the border)."""
    def d(t, dim):
        g = torch.gradient(t, dim=dim)[0]
        return g
    jx = d(src_xy, 2)  # d src / d x: (B, H, W, 2)
    jy = d(src_xy, 1)
    a = (jx * jx).sum(-1) + (jy * jy).sum(-1)
    det = (jx[..., 0] * jy[..., 1] - jx[..., 1] * jy[..., 0]).abs()
    return ((a - (a * a - 4 * det * det).clamp_min(0).sqrt()) / 2).clamp_min(0).sqrt()


def soften_stretched(frames: torch.Tensor, image: torch.Tensor, src_xy: torch.Tensor,
                     grid: torch.Tensor, *, start: float = 0.5, full: float = 0.2,
                     factor: int = 8) -> torch.Tensor:
    """Replace streaks by a smooth fill where the warp magnifies the source strongly.

    Args:
        frames: (B, 3, H, W) warped frames; image: (1 or B, 3, H, W) the source;
        src_xy: (B, H, W, 2) the backward map; grid: its ``grid_sample`` coordinates.
        start, full: :func:`min_stretch` below ``start`` (2x magnification) begins the
            blend to the low-pass sample, below ``full`` (5x) it is complete.
        factor: the low-pass copy is the source box-averaged over ``factor`` pixels.

    Returns:
        (B, 3, H, W).
    """
    B, _, H, W = frames.shape
    # the stretch on every 4th pixel (the Jacobian of a 4x subsampled map is 4x)
    sig = min_stretch(src_xy[:, ::4, ::4]) / 4
    w = ((start - sig) / (start - full)).clamp(0, 1)
    if not bool((w > 0).any()):
        return frames
    w = F.interpolate(w[:, None], size=(H, W), mode="bilinear", align_corners=False)
    low = F.avg_pool2d(image, factor, ceil_mode=True)  # sampled bilinearly: a smooth copy
    low = low.expand(B, -1, -1, -1) if low.shape[0] == 1 else low
    soft = F.grid_sample(low, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)
    return torch.lerp(frames, soft, w)


def polygon_mask(poly: torch.Tensor, size, offset=(0, 0)) -> torch.Tensor:
    """(B, N, 2) pixel polygons (star-shaped around their centroid) -> (B, H, W) float mask
    (rasterized triangle fan, softened by a 3 x 3 box filter).

    Args:
        poly: (B, N, 2) pixel coordinates; size: S (square) or (H, W) of the mask;
        offset: (x0, y0) pixel of the mask's top-left corner (a window of a larger image).
    """
    from facegeo.raster import rasterize

    H, W = (size, size) if isinstance(size, int) else size
    n = poly.shape[1]
    poly = poly - poly.new_tensor([float(offset[0]), float(offset[1])])
    c = poly.mean(1, keepdim=True)
    v = torch.cat([c, poly], 1)
    v = torch.cat([v, torch.zeros_like(v[..., :1])], -1)
    i = torch.arange(1, n + 1, device=poly.device)
    faces = torch.stack([torch.zeros_like(i), i, i % n + 1], 1)
    m = rasterize(v, faces, H, W).mask[:, None].to(poly.dtype)
    return F.avg_pool2d(m, 3, stride=1, padding=1, count_include_pad=False)[:, 0]


def _window(pts: torch.Tensor, S: int, pad: float) -> tuple[int, int, int, int]:
    """Integer window (x0, y0, x1, y1) containing all (..., 2) points plus ``pad`` pixels,
    clipped to the S x S image (may be empty)."""
    lo = pts.reshape(-1, 2).amin(0) - pad
    hi = pts.reshape(-1, 2).amax(0) + pad
    x0, y0 = (int(max(0, min(S, v))) for v in lo.floor().tolist())
    x1, y1 = (int(max(0, min(S, v))) for v in (hi.ceil() + 1).tolist())
    return x0, y0, x1, y1


def _sample_window_mask(poly: torch.Tensor, grid: torch.Tensor, S: int,
                        pad: float = 2.0) -> torch.Tensor:
    """The (1, N, 2) source polygon's mask, rasterized in its own window only, sampled at
    the (B, h, w, 2) ``grid_sample`` coordinates of an S x S source -> (B, 1, h, w)."""
    B = grid.shape[0]
    x0, y0, x1, y1 = _window(poly, S, pad)
    if x1 <= x0 or y1 <= y0:
        return grid.new_zeros(B, 1, *grid.shape[1:3])
    m = polygon_mask(poly, (y1 - y0, x1 - x0), (x0, y0))
    px = ((grid + 1) * S - 1) / 2 - grid.new_tensor([float(x0), float(y0)])
    g = pixel_to_normalized(px, (y1 - y0, x1 - x0))
    return F.grid_sample(m[:, None].expand(B, -1, -1, -1), g, mode="bilinear",
                         padding_mode="zeros", align_corners=False)


def mouth_fill(frames: torch.Tensor, grid: torch.Tensor, target_mouth: torch.Tensor,
               source_mouth: torch.Tensor, color, *, source_image: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Paint target mouth-opening pixels that sample outside the source's mouth opening.

    Computed in the window around the target mouths only.

    Args:
        frames: (B, 3, S, S) warped frames; grid: (B, S, S, 2) their ``grid_sample`` grid.
        target_mouth: (B, 8, 2) target inner-lip polygon; source_mouth: (1, 8, 2) source's.
        color: RGB of the cavity; a grayscale ``source_image`` (all channels equal) gets
            its Rec. 601 luma.

    Returns:
        (B, 3, S, S).
    """
    B, _, S, _ = frames.shape
    x0, y0, x1, y1 = _window(target_mouth, S, 2.0)
    if x1 <= x0 or y1 <= y0:
        return frames
    m_t = polygon_mask(target_mouth, (y1 - y0, x1 - x0), (x0, y0))
    s_in = _sample_window_mask(source_mouth.to(target_mouth), grid[:, y0:y1, x0:x1], S)
    w = (m_t[:, None] * (1 - s_in)).clamp(0, 1)
    col = torch.as_tensor(color, dtype=frames.dtype, device=frames.device)
    if source_image is not None and float((source_image.amax(1)
                                           - source_image.amin(1)).max()) <= 1 / 255:
        luma = col.new_tensor([0.299, 0.587, 0.114])
        col = (col * luma).sum().expand(3)
    out = frames.clone()
    win = out[:, :, y0:y1, x0:x1]
    out[:, :, y0:y1, x0:x1] = win * (1 - w) + col.view(1, 3, 1, 1) * w
    return out


def _scaled(poly: torch.Tensor, sy: float) -> torch.Tensor:
    """(B, N, 2) polygons stretched vertically by ``sy`` about their centroid."""
    c = poly.mean(1, keepdim=True)
    return c + (poly - c) * poly.new_tensor([1.0 + 0.5 * (sy - 1), sy])


def _eye_height(eye: torch.Tensor) -> torch.Tensor:
    """(B, 6, 2) eye contours -> (B,) mean lid distance."""
    return ((eye[:, 1] - eye[:, 5]).norm(dim=-1) + (eye[:, 2] - eye[:, 4]).norm(dim=-1)) / 2


def eyelid_fill(frames: torch.Tensor, grid: torch.Tensor, target_eyes: torch.Tensor,
                source_eyes: torch.Tensor, skin: torch.Tensor, *,
                margin: float = 1.6) -> torch.Tensor:
    """Paint closed target eyelids where the warp still shows the source's open eye.

    Computed in a window around each target eye only.

    Args:
        frames: (B, 3, S, S) warped frames; grid: (B, S, S, 2) their ``grid_sample`` grid.
        target_eyes: (B, E, 6, 2) target eye contours (68-point order 36-41 / 42-47);
        source_eyes: (1, E, 6, 2) the source's.
        skin: (1, E, 3) lid skin colour per eye (e.g. the source just above the upper lid).
        margin: both openings are taken ``margin`` times taller (lashes, lid margin), so an
            unchanged eye is left alone.

    Returns:
        (B, 3, S, S): ``out (1 - w) + skin w`` with ``w`` = (source opening, sampled through
        the warp) x (1 - target opening), per eye (0 where the target eye is as open), and
        a dark lash line along the target's upper lid as strong as the lid is closed
        relative to the source (what a closed eye shows).
    """
    B, _, S, _ = frames.shape
    out = frames
    for e in range(target_eyes.shape[1]):
        te, se = target_eyes[:, e], source_eyes[:, e].to(target_eyes)
        closed = (1 - _eye_height(te) / _eye_height(se).clamp_min(1e-6)).clamp(0, 1)  # (B,)
        width = (te[:, 0] - te[:, 3]).norm(dim=-1)
        x0, y0, x1, y1 = _window(te, S, float(width.max()) * 0.7 + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        hw = (y1 - y0, x1 - x0)
        m_t = polygon_mask(_scaled(te, margin), hw, (x0, y0))
        s_in = _sample_window_mask(_scaled(se, margin), grid[:, y0:y1, x0:x1], S)
        w = (s_in * (1 - m_t[:, None])).clamp(0, 1)
        w = F.avg_pool2d(w, 3, stride=1, padding=1, count_include_pad=False)
        col = skin[:, e].to(out).view(1, 3, 1, 1)
        if out is frames:
            out = frames.clone()
        win = out[:, :, y0:y1, x0:x1] * (1 - w) + col * w
        lid = (te[:, :4] + torch.stack([te[:, 0], te[:, 5], te[:, 4], te[:, 3]], 1)) / 2
        if bool((closed > 0.05).any()):
            line = _band_mask(lid, width / 30 + 0.5, hw, (x0, y0)) * closed.view(B, 1, 1)
            win = win * (1 - line[:, None]) + (0.35 * col) * line[:, None]
        out[:, :, y0:y1, x0:x1] = win
    return out


def _band_mask(line: torch.Tensor, half: torch.Tensor, size, offset) -> torch.Tensor:
    """(B, N, 2) polylines, (B,) vertical half-widths -> (B, H, W) mask of the band
    ``line +- half`` (a rasterized triangle strip, softened by a 3 x 3 box filter) in the
    window of ``size`` (H, W) at ``offset`` (x0, y0)."""
    from facegeo.raster import rasterize

    H, W = size
    pts = line - line.new_tensor([float(offset[0]), float(offset[1])])
    d = torch.zeros_like(pts)
    d[..., 1] = half[:, None]
    v = torch.cat([pts - d, pts + d], 1)  # upper 0..N-1, lower N..2N-1
    v = torch.cat([v, torch.zeros_like(v[..., :1])], -1)
    n = pts.shape[1]
    i = torch.arange(n - 1, device=pts.device)
    faces = torch.cat([torch.stack([i, i + n, i + 1], 1),
                       torch.stack([i + 1, i + n, i + n + 1], 1)])
    m = rasterize(v, faces, H, W).mask[:, None].to(pts.dtype)
    return F.avg_pool2d(m, 3, stride=1, padding=1, count_include_pad=False)[:, 0]
