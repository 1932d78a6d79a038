"""Dense backward flow between two posed meshes of the same topology, and image warping.

For every pixel ``p`` of the *driving* image covered by the driving mesh, the visible
surface point is found by rasterization (triangle + barycentrics); the same point on the
*source* mesh (same triangle, same barycentrics: "barycentric transfer") is projected into
the source image. That gives the **backward flow** used to warp the source image into the
driving geometry:

    src_xy[b, i, j] = location in the source image (pixels) of the surface seen at
                      driving pixel (x, y) = (j, i)
    flow[b, i, j]   = src_xy[b, i, j] - (j, i)         (a displacement, in pixels)
    warped[b, :, i, j] = source[b, :, src_y, src_x]    (bilinear, :func:`warp_flow`)

Both meshes are given in image space like :func:`facegeo.raster.rasterize` (x right, y
down, pixel centres at integers, z = depth along +z, nearest wins). With
``perspective_correct=True`` (pinhole, z = camera depth) the transfer is exact for the 3D
surface point: the driving barycentrics are perspective-corrected and re-projected with
the source depths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from facegeo._deprecation import warn_deprecated
from facegeo.coords import pixel_grid, pixel_to_normalized
from facegeo.raster.core import Fragments, _check_mesh, rasterize

__all__ = ["MeshFlow", "mesh_flow", "warp_flow", "warp", "flow_to_grid", "flow_to_color"]


@dataclass
class MeshFlow:
    """Result of :func:`mesh_flow` (driving image H x W, batch B).

    * ``flow``: (B, H, W, 2) backward displacement in pixels (0 where not ``valid``).
    * ``src_xy``: (B, H, W, 2) absolute source-image pixel coordinates (``flow`` + pixel
      centre; equal to the pixel centre where not ``valid``).
    * ``valid``: (B, H, W) bool: the driving mesh covers the pixel and the transferred point
      falls inside the source image.
    * ``occluded``: (B, H, W) bool: valid pixels whose surface point is hidden in the source
      view (another part of the source mesh is in front of it there), so the source image
      does not show it.
    * ``src_depth``: (B, H, W) depth of the transferred point in the source view.
    * ``driving``, ``source``: the two :class:`~facegeo.raster.Fragments`.
    """

    flow: torch.Tensor
    src_xy: torch.Tensor
    valid: torch.Tensor
    occluded: torch.Tensor
    src_depth: torch.Tensor
    driving: Fragments
    source: Fragments

    @property
    def visible(self) -> torch.Tensor:
        """(B, H, W) bool: ``valid & ~occluded`` (the warp is trustworthy there)."""
        return self.valid & ~self.occluded


def _default_tol(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B,) mean edge length of each mesh (image-space units)."""
    tv = verts.detach()[:, faces]  # (B, F, 3, 3)
    e = (tv - tv.roll(1, dims=2)).norm(dim=-1)  # (B, F, 3)
    return e.mean(dim=(1, 2))


def mesh_flow(
    src_verts: torch.Tensor,
    drv_verts: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    src_size: tuple[int, int] | None = None,
    cull_backfaces: bool = False,
    perspective_correct: bool = False,
    depth_tol: float | None = None,
    backend: str = "auto",
) -> MeshFlow:
    """Backward flow from a driving mesh to a source mesh (same topology, image space).

    Args:
        src_verts: (B, V, 3) source mesh posed in the source image.
        drv_verts: (B, V, 3) driving mesh posed in the driving image.
        faces: (F, 3) shared triangles.
        height, width: driving image size (the flow's size).
        src_size: (H_s, W_s) source image size for the occlusion test and the ``valid``
            check; default (height, width).
        cull_backfaces: passed to :func:`~facegeo.raster.rasterize` for both views.
        perspective_correct: pinhole meshes (z = camera depth), exact 3D transfer.
        depth_tol: a transferred point counts as occluded in the source when it lies more
            than this behind the source depth buffer at its (nearest) source pixel and the
            source pixel shows another triangle. Default: the source mesh's mean edge length.
        backend: rasterizer backend (see :func:`facegeo.raster.rasterize`; "auto" = numba on CPU).

    Returns:
        :class:`MeshFlow`. ``flow`` and ``src_xy`` are differentiable w.r.t. both meshes'
        vertices (piecewise: visibility is fixed).
    """
    src_verts, faces = _check_mesh(src_verts, faces, "src_verts")
    drv_verts, _ = _check_mesh(drv_verts, faces, "drv_verts")
    if src_verts.shape != drv_verts.shape:
        raise ValueError(
            f"source and driving meshes must have the same shape (same topology), got "
            f"{tuple(src_verts.shape)} and {tuple(drv_verts.shape)}"
        )
    hs, ws = src_size if src_size is not None else (height, width)
    B = drv_verts.shape[0]
    kw = dict(cull_backfaces=cull_backfaces, perspective_correct=perspective_correct)
    drv = rasterize(drv_verts, faces, height, width, backend=backend, **kw)
    src = rasterize(src_verts, faces, hs, ws, backend=backend, **kw)

    # barycentric transfer of the covered driving pixels
    hw = height * width
    b = torch.div(drv.pix, hw, rounding_mode="floor")
    V = src_verts.shape[1]
    corner = (faces[drv.pix_face] + (b * V)[:, None]).reshape(-1)
    sv = src_verts.reshape(-1, 3).index_select(0, corner).view(-1, 3, 3)  # (N, 3, 3)
    lam = drv.pix_bary.to(sv.dtype)  # 3D barycentrics (perspective-corrected if pinhole)
    if perspective_correct:
        mu = lam * sv[..., 2]
        src_z = mu.sum(1)
        mu = mu / src_z[:, None]  # screen-space barycentrics in the source view
    else:
        mu = lam
        src_z = (lam * sv[..., 2]).sum(1)
    xy = (mu.unsqueeze(-1) * sv[..., :2]).sum(1)  # (N, 2)

    inside = (
        (xy[:, 0] >= -0.5) & (xy[:, 0] <= ws - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= hs - 0.5)
    )
    # occlusion test against the source z-buffer at the nearest source pixel
    with torch.no_grad():
        ix = xy[:, 0].round().clamp(0, ws - 1).long()
        iy = xy[:, 1].round().clamp(0, hs - 1).long()
        spix = b * (hs * ws) + iy * ws + ix
        s_face = src.face_id.reshape(-1)[spix]
        s_depth = src.depth.detach().reshape(-1)[spix]
        tol = (
            _default_tol(src_verts, faces)[b]
            if depth_tol is None
            else torch.full_like(src_z, float(depth_tol))
        )
        behind = src_z.detach() - s_depth > tol
        occ = inside & (s_face >= 0) & (s_face != drv.pix_face) & behind

    grid = pixel_grid(height, width, device=drv_verts.device, dtype=xy.dtype)
    grid = grid.unsqueeze(0).expand(B, -1, -1, -1).reshape(-1, 2)
    src_xy = grid.index_put((drv.pix,), torch.where(inside[:, None], xy, grid[drv.pix]))
    flow = src_xy - grid
    npix = B * hw
    valid = torch.zeros(npix, dtype=torch.bool, device=drv_verts.device)
    valid[drv.pix] = inside
    occluded = torch.zeros_like(valid)
    occluded[drv.pix] = occ
    depth = src_z.new_zeros(npix).index_put((drv.pix,), torch.where(inside, src_z, 0.0))
    shape = (B, height, width)
    return MeshFlow(
        flow=flow.view(*shape, 2),
        src_xy=src_xy.view(*shape, 2),
        valid=valid.view(shape),
        occluded=occluded.view(shape),
        src_depth=depth.view(shape),
        driving=drv,
        source=src,
    )


def flow_to_grid(flow: torch.Tensor, src_height: int, src_width: int) -> torch.Tensor:
    """Backward displacement (B, H, W, 2) in pixels -> ``grid_sample`` grid (B, H, W, 2).

    ``grid[b, i, j] = pixel_to_normalized((j, i) + flow[b, i, j])`` for a source image of
    size ``src_height`` x ``src_width`` (``align_corners=False``, see :mod:`facegeo.coords`).
    """
    if flow.dim() != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape (B, H, W, 2), got {tuple(flow.shape)}")
    H, W = flow.shape[1:3]
    grid = pixel_grid(H, W, device=flow.device, dtype=flow.dtype)
    return pixel_to_normalized(grid + flow, (src_height, src_width))


def warp_flow(
    image: torch.Tensor,
    flow: torch.Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Backward-warp ``image`` with a pixel displacement field (a *flow*).

    facegeo has two warps: this one takes a flow, displacements in pixels; the models'
    ``facegeo_models.common.blocks.warp_grid`` takes a ``grid_sample`` grid (absolute
    positions in normalized coordinates). :func:`flow_to_grid` converts the first into the
    second.

    ``out[b, :, i, j] = image[b, :, i + flow[b, i, j, 1], j + flow[b, i, j, 0]]``, sampled
    with ``torch.nn.functional.grid_sample(align_corners=False)`` (pixel centres at
    integers, :mod:`facegeo.coords`); locations outside the source give ``padding_mode``.

    Args:
        image: (B, C, H_s, W_s) source image.
        flow: (B, H, W, 2) backward displacement in pixels, e.g. :attr:`MeshFlow.flow`; the
            output has the flow's size H x W (it may differ from the source's).
        mode, padding_mode: as for ``grid_sample``.

    Returns:
        (B, C, H, W) warped image.
    """
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")
    if flow.dim() != 4 or flow.shape[-1] != 2 or flow.shape[0] != image.shape[0]:
        raise ValueError(
            f"flow must have shape (B={image.shape[0]}, H, W, 2), got {tuple(flow.shape)}"
        )
    grid = flow_to_grid(flow.to(image.dtype), image.shape[2], image.shape[3])
    return nnf.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def warp(image: torch.Tensor, flow: torch.Tensor, **kwargs) -> torch.Tensor:
    """Deprecated name of :func:`warp_flow` (removed in 0.3)."""
    warn_deprecated("facegeo.raster.warp", "facegeo.raster.warp_flow (pixel displacements; "
                    "a normalized grid goes to facegeo_models.common.blocks.warp_grid)")
    return warp_flow(image, flow, **kwargs)


def flow_to_color(flow: torch.Tensor, max_norm: float | None = None) -> torch.Tensor:
    """Visualise a flow (B, H, W, 2) as an RGB image (B, 3, H, W) in [0, 1].

    Hue = direction (0 deg = +x, red), saturation = magnitude / ``max_norm`` (default: the
    largest magnitude in each image), value 1 (zero flow is white).
    """
    if flow.dim() != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape (B, H, W, 2), got {tuple(flow.shape)}")
    mag = flow.norm(dim=-1)
    if max_norm is None:
        scale = mag.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
    else:
        scale = torch.as_tensor(float(max_norm), dtype=flow.dtype, device=flow.device)
    sat = (mag / scale).clamp(0, 1)
    hue = (torch.atan2(flow[..., 1], flow[..., 0]) / (2 * math.pi)) % 1.0  # [0, 1)
    # HSV -> RGB with V = 1
    k = torch.stack([(5 + hue * 6) % 6, (3 + hue * 6) % 6, (1 + hue * 6) % 6], 1)
    rgb = 1 - sat.unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return rgb
