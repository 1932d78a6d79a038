"""Networks of the sparse-to-dense motion transfer model (s2d).

Zhao, Wu and Guo, "Sparse to Dense Motion Transfer for Face Image Animation" (ICCV
workshops 2021); see docs/models/s2d.md for the equations and the choices the paper leaves
open.

Data flow (coordinates inside the network are normalized ``grid_sample`` coordinates,
align_corners=False; landmark vectors are the 74 points of
:func:`facegeo.landmarks.pupils.landmarks74`, flattened)::

    S_I (B,3,S,S), S_lm, D_lm (B,74,2)
      global branch M_G on S_I (at motion_scale):   encoder  <- AdaIN(S_lm)
                                                    bottleneck/decoder += Add_Motion(D_lm - S_lm)
                                                    decoder  <- AdaIN(D_lm)
                                                    -> f_G (B,h,w,2) backward grid
      3 local branches M_Li (right eye + brow, left eye + brow, mouth) on P x P source
      patches around the region centres (the same block with the region's points,
      in box coordinates)                           -> f_Li (P,P,2), m_Li (P,P)
      F = f_G (1 - m_Li) + f^_Li m_Li inside each driving region box (eq. 3),
          f^_Li = c_s + f_Li * half_side (the local motion shifted and scaled)
    E_I = warp(S_I, F) (eq. 1); generator(E_I, F - id) -> residual R, mask M
    T_I = E_I (1 - M) + R M                                             (eq. 2)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facegeo.coords import pixel_to_normalized
from facegeo.landmarks.conventions import GROUPS_74, NUM_LANDMARKS_74

from ..common.adain import AdaIN
from ..common.blocks import (
    AntiAliasInterpolation2d,
    DownBlock2d,
    ResBlock2d,
    SameBlock2d,
    UpBlock2d,
    identity_grid,
    warp_grid,
)
from ..common.model import ReenactmentModel, batch_images, check_images
from ..common.registry import register_model

__all__ = ["REGIONS", "AddMotion", "MotionBranch", "SparseToDenseMotion",
           "ResidualGenerator", "S2D", "region_boxes", "crop_regions", "paste_local_motion"]

#: The three local regions (paper sec. 3.2): 74-point indices of each branch's landmarks.
REGIONS: dict[str, tuple[int, ...]] = {
    "right_eye": GROUPS_74["right_brow"] + GROUPS_74["right_eye_gaze"],
    "left_eye": GROUPS_74["left_brow"] + GROUPS_74["left_eye_gaze"],
    "mouth": GROUPS_74["lips"],
}


# --------------------------------------------------------------------------- layers
class AddMotion(nn.Module):
    """Add_Motion layer: ``h + FC(D_lm - S_lm)`` (paper sec. 3.2).

    The landmark motion vector (B, D) goes through a bias-free linear map to a
    (c, s, s) map (s = ``min(H, grid)``), bilinearly resized to (H, W) and mapped to the
    feature channels by a bias-free 1x1 convolution (a factorised FC, so the layer stays
    small at any resolution). Bias-free: zero motion adds exactly nothing.

    forward(h (B, C, H, W), motion (B, D)) -> (B, C, H, W).
    """

    def __init__(self, motion_dim: int, channels: int, hidden: int = 16, grid: int = 8):
        super().__init__()
        self.hidden, self.grid = hidden, grid
        self.fc = nn.Linear(motion_dim, hidden * grid * grid, bias=False)
        self.proj = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, h: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = h.shape
        if motion.shape != (b, self.fc.in_features):
            raise ValueError(f"motion must be (B={b}, {self.fc.in_features}), got "
                             f"{tuple(motion.shape)}")
        m = self.fc(motion.to(h.dtype)).view(b, self.hidden, self.grid, self.grid)
        s = (min(hh, self.grid), min(ww, self.grid))
        if s != (self.grid, self.grid):
            m = F.adaptive_avg_pool2d(m, s)
        if m.shape[-2:] != (hh, ww):
            m = F.interpolate(m, size=(hh, ww), mode="bilinear", align_corners=False)
        return h + self.proj(m)


class _Norm(nn.Module):
    """AdaIN(features, landmark code), or, with ``adain=False`` (the ablation), an affine
    instance norm that ignores the code."""

    def __init__(self, channels: int, cond_dim: int, adain: bool):
        super().__init__()
        self.adain = AdaIN(channels, cond_dim) if adain else None
        self.norm = None if adain else nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x, cond):
        return self.adain(x, cond) if self.adain is not None else self.norm(x)


class MotionBranch(nn.Module):
    """One dense-motion branch: a U-Net whose encoder is steered by the source landmarks
    and decoder by the driving landmarks (AdaIN), with Add_Motion layers injecting their
    difference.

    Args:
        num_points: landmarks of the branch (input vectors are 2 * num_points long).
        block_expansion, num_blocks, max_features: U-Net widths (level i has
            ``min(max_features, block_expansion * 2**(i+1))`` channels).
        style_dim: landmark code size (an MLP of the landmark vector, shared by source and
            driving).
        mask: also predict a combination mask (local branches).
        adain, add_motion: the two ablation switches of the paper (Table 4).
        add_motion_levels: Add_Motion at the bottleneck and the first this-many decoder
            levels (``None``: every level).
        add_motion_hidden, add_motion_grid: :class:`AddMotion` factorisation.

    forward(image (B, 3, h, w), src (B, N, 2), drv (B, N, 2)) with landmarks in the
    image's normalized coordinates -> dict with ``flow`` (B, h, w, 2), a backward sampling
    grid (identity + predicted displacement, zero-initialised), and ``mask`` (B, 1, h, w)
    in [0, 1] when enabled. h, w divisible by 2**num_blocks.
    """

    def __init__(self, num_points: int, block_expansion: int = 32, num_blocks: int = 4,
                 max_features: int = 256, style_dim: int = 128, mask: bool = False,
                 adain: bool = True, add_motion: bool = True,
                 add_motion_levels: int | None = None, add_motion_hidden: int = 16,
                 add_motion_grid: int = 8):
        super().__init__()
        self.num_points, self.num_blocks = num_points, num_blocks
        d = 2 * num_points
        self.style = nn.Sequential(nn.Linear(d, style_dim), nn.ReLU(),
                                   nn.Linear(style_dim, style_dim), nn.ReLU())

        def ch(i):
            return min(max_features, block_expansion * 2 ** i)

        self.first = SameBlock2d(3, ch(0), kernel_size=7, norm="none")
        self.down = nn.ModuleList([DownBlock2d(ch(i), ch(i + 1), norm="none")
                                   for i in range(num_blocks)])
        self.enc_norm = nn.ModuleList([_Norm(ch(i + 1), style_dim, adain)
                                       for i in range(num_blocks)])
        self.up = nn.ModuleList()
        self.dec_norm = nn.ModuleList()
        for k, i in enumerate(reversed(range(num_blocks))):
            cin = ch(i + 1) * (1 if k == 0 else 2)
            self.up.append(UpBlock2d(cin, ch(i), norm="none"))
            self.dec_norm.append(_Norm(ch(i), style_dim, adain))
        levels = num_blocks if add_motion_levels is None else int(add_motion_levels)
        self.add_motion = nn.ModuleList()
        if add_motion:
            # bottleneck (channels ch(num_blocks)) then the decoder outputs
            chans = [ch(num_blocks)] + [ch(i) for i in reversed(range(num_blocks))][:levels]
            self.add_motion.extend(AddMotion(d, c, add_motion_hidden, add_motion_grid)
                                   for c in chans)
        out_c = 2 * ch(0)
        self.flow = nn.Conv2d(out_c, 2, 7, padding=3)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)
        self.mask = nn.Conv2d(out_c, 1, 7, padding=3) if mask else None

    def forward(self, image: torch.Tensor, src: torch.Tensor, drv: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        b, _, h, w = image.shape
        m = 2 ** self.num_blocks
        if h % m or w % m:
            raise ValueError(f"branch input H, W must be divisible by {m}, got {(h, w)}")
        if src.shape != (b, self.num_points, 2) or drv.shape != src.shape:
            raise ValueError(f"src and drv must be (B={b}, {self.num_points}, 2), got "
                             f"{tuple(src.shape)}, {tuple(drv.shape)}")
        s_vec, d_vec = src.flatten(1).to(image.dtype), drv.flatten(1).to(image.dtype)
        codes = self.style(torch.cat([s_vec, d_vec]))
        s_code, d_code = codes[:b], codes[b:]
        motion = d_vec - s_vec
        x = self.first(image)
        skips = [x]
        for block, norm in zip(self.down, self.enc_norm):
            x = norm(block(x), s_code)
            skips.append(x)
        skips.pop()
        k = 0
        if len(self.add_motion):
            x = self.add_motion[0](x, motion)
            k = 1
        for block, norm in zip(self.up, self.dec_norm):
            x = norm(block(x), d_code)
            if k < len(self.add_motion):
                x = self.add_motion[k](x, motion)
                k += 1
            x = torch.cat([x, skips.pop()], 1)
        disp = self.flow(x).permute(0, 2, 3, 1)
        out = {"flow": identity_grid(b, h, w, device=image.device, dtype=disp.dtype) + disp}
        if self.mask is not None:
            out["mask"] = torch.sigmoid(self.mask(x))
        return out


# --------------------------------------------------------------------- local regions
def region_boxes(points: torch.Tensor, half_side: float) -> torch.Tensor:
    """Square boxes centred on the centroid of each region's points.

    Args:
        points: (B, 74, 2) normalized coordinates.
        half_side: half the box side in normalized units (paper: 64 px of 256 -> 0.25).

    Returns:
        (B, R, 2) box centres (normalized), one per :data:`REGIONS` entry.
    """
    if points.dim() != 3 or points.shape[1] != NUM_LANDMARKS_74:
        raise ValueError(f"points must be (B, 74, 2), got {tuple(points.shape)}")
    return torch.stack([points[:, list(idx)].mean(1) for idx in REGIONS.values()], 1)


def crop_regions(image: torch.Tensor, centres: torch.Tensor, half_side: float,
                 size: int) -> torch.Tensor:
    """(B, C, H, W) image, (B, R, 2) normalized centres -> (B, R, C, size, size) patches
    (bilinear, border padding): patch coordinate u in [-1, 1] samples image point
    ``centre + u * half_side``."""
    b, c = image.shape[:2]
    r = centres.shape[1]
    grid = identity_grid(1, size, size, device=image.device, dtype=image.dtype)
    g = centres[:, :, None, None].to(image.dtype) + half_side * grid[None]    # (B,R,s,s,2)
    out = F.grid_sample(image.repeat_interleave(r, 0), g.flatten(0, 1), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out.view(b, r, c, size, size)


def paste_local_motion(global_flow: torch.Tensor, local_flow: torch.Tensor,
                       local_mask: torch.Tensor, src_centres: torch.Tensor,
                       drv_centres: torch.Tensor, half_side: float) -> torch.Tensor:
    """Eq. (3): combine the global motion with the local ones inside their regions.

    Args:
        global_flow: (B, H, W, 2) backward grid f_G.
        local_flow: (B, R, P, P, 2) local backward grids in box coordinates (u in
            [-1, 1] of the driving box -> position in the source box).
        local_mask: (B, R, 1, P, P) in [0, 1].
        src_centres, drv_centres: (B, R, 2) box centres (normalized).
        half_side: half box side (normalized).

    Returns:
        (B, H, W, 2): ``f_G (1 - m) + f^ m`` with ``f^ = c_s + half_side * f_L(u)``,
        ``u = (p - c_d) / half_side``, at the pixels of each driving box (mask 0 outside
        it), regions applied in order. ``f_L(u)`` is ``u`` plus the bilinearly resampled
        displacement ``f_L - identity`` (border-clamped), so an identity local flow gives
        exactly the translation ``c_s - c_d``.
    """
    b, h, w, _ = global_flow.shape
    r, p = local_flow.shape[1], local_flow.shape[2]
    ident = identity_grid(b, h, w, device=global_flow.device, dtype=global_flow.dtype)
    out = global_flow
    for i in range(r):
        u = (ident - drv_centres[:, i, None, None].to(ident)) / half_side      # (B,H,W,2)
        m = F.grid_sample(local_mask[:, i].to(ident), u, mode="bilinear",
                          padding_mode="zeros", align_corners=False)[:, 0, ..., None]
        inside = (u.abs() <= 1).all(-1, keepdim=True).to(m)
        m = m * inside
        # the local displacement f_L - id is resampled (not the grid: no extrapolation)
        pd = local_flow[:, i].to(ident) - identity_grid(b, p, p, device=ident.device,
                                                       dtype=ident.dtype)
        d = F.grid_sample(pd.permute(0, 3, 1, 2), u, mode="bilinear", padding_mode="border",
                          align_corners=False).permute(0, 2, 3, 1)
        f_hat = src_centres[:, i, None, None].to(ident) + half_side * (u + d)
        out = out * (1 - m) + f_hat * m
    return out


class SparseToDenseMotion(nn.Module):
    """Global + local dense motion from sparse landmarks (paper sec. 3.2, Fig. 1).

    Args:
        image_size: S.
        motion_scale: the global branch runs at ``S * motion_scale`` (paper: 1, 256x256).
        local_fraction: local box side / S (paper: 64 / 256 = 0.25); the local branches
            run at ``round(S * local_fraction)`` pixels.
        use_local: the "no local motion" ablation when False.
        global_branch, local_branch: :class:`MotionBranch` kwargs.

    forward(source (B, 3, S, S), src_lm, drv_lm (B, 74, 2) normalized) -> dict with
    ``deformation`` (B, S, S, 2) the fused backward grid F, ``global_flow`` (B, h, w, 2),
    and with local branches ``local_flow`` (B, 3, P, P, 2), ``local_mask``
    (B, 3, 1, P, P), ``src_centres``/``drv_centres`` (B, 3, 2).
    """

    def __init__(self, image_size: int = 256, motion_scale: float = 1.0,
                 local_fraction: float = 0.25, use_local: bool = True,
                 global_branch: dict | None = None, local_branch: dict | None = None,
                 adain: bool = True, add_motion: bool = True):
        super().__init__()
        self.image_size, self.motion_scale = image_size, float(motion_scale)
        self.down = AntiAliasInterpolation2d(3, self.motion_scale)
        ab = {"adain": adain, "add_motion": add_motion}
        self.global_branch = MotionBranch(NUM_LANDMARKS_74, **ab, **(global_branch or {}))
        self.use_local = bool(use_local)
        self.local_size = int(round(image_size * local_fraction))
        self.half_side = float(local_fraction)          # box side / S in [-1, 1] units: 2f/2
        self.local_branches = nn.ModuleDict()
        if self.use_local:
            for name, idx in REGIONS.items():
                self.local_branches[name] = MotionBranch(len(idx), mask=True, **ab,
                                                         **(local_branch or {}))

    def forward(self, source: torch.Tensor, src_lm: torch.Tensor, drv_lm: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        b, _, s, _ = source.shape
        g = self.global_branch(self.down(source), src_lm, drv_lm)
        flow = g["flow"]
        if flow.shape[1:3] != (s, s):
            # resize the displacement, not the grid (bilinear resizing does not extrapolate
            # the identity at the borders)
            h, w = flow.shape[1:3]
            disp = flow - identity_grid(b, h, w, device=flow.device, dtype=flow.dtype)
            disp = F.interpolate(disp.permute(0, 3, 1, 2), size=(s, s), mode="bilinear",
                                 align_corners=False).permute(0, 2, 3, 1)
            flow = identity_grid(b, s, s, device=flow.device, dtype=flow.dtype) + disp
        out = {"global_flow": g["flow"]}
        if not self.use_local:
            out["deformation"] = flow
            return out
        hs = self.half_side
        cs, cd = region_boxes(src_lm, hs), region_boxes(drv_lm, hs)
        patches = crop_regions(source, cs, hs, self.local_size)
        flows, masks = [], []
        for i, (name, idx) in enumerate(REGIONS.items()):
            ls = (src_lm[:, list(idx)] - cs[:, i, None]) / hs
            ld = (drv_lm[:, list(idx)] - cd[:, i, None]) / hs
            o = self.local_branches[name](patches[:, i], ls, ld)
            flows.append(o["flow"])
            masks.append(o["mask"])
        lf, lmask = torch.stack(flows, 1), torch.stack(masks, 1)
        out.update(deformation=paste_local_motion(flow, lf, lmask, cs, cd, hs),
                   local_flow=lf, local_mask=lmask, src_centres=cs, drv_centres=cd)
        return out


# ------------------------------------------------------------------------- generator
class ResidualGenerator(nn.Module):
    """The image generation network of eq. (2), FOMM's generator body (conv7 -> down
    blocks -> residual bottleneck -> up blocks -> conv7) on the warped source E_I and,
    with ``motion_input`` (the paper's final model), the dense motion ``F - identity``
    concatenated; outputs a residual image R and a mask M.

    forward(deformed (B, 3, H, W), displacement (B, 2, H, W) or None) -> dict with
    ``prediction`` = E (1 - M) + R M, ``residual`` (B, 3, H, W), ``mask`` (B, 1, H, W).
    """

    def __init__(self, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 2, num_bottleneck_blocks: int = 6,
                 norm: str = "batch", motion_input: bool = True):
        super().__init__()
        self.motion_input, self.num_down_blocks = bool(motion_input), num_down_blocks
        cin = 3 + (2 if motion_input else 0)

        def ch(i):
            return min(max_features, block_expansion * 2 ** i)

        self.first = SameBlock2d(cin, ch(0), kernel_size=7, norm=norm)
        self.down = nn.Sequential(*[DownBlock2d(ch(i), ch(i + 1), norm=norm)
                                    for i in range(num_down_blocks)])
        self.bottleneck = nn.Sequential(*[ResBlock2d(ch(num_down_blocks), norm=norm)
                                          for _ in range(num_bottleneck_blocks)])
        self.up = nn.Sequential(*[UpBlock2d(ch(i + 1), ch(i), norm=norm)
                                  for i in reversed(range(num_down_blocks))])
        self.final = nn.Conv2d(ch(0), 4, 7, padding=3)

    def forward(self, deformed: torch.Tensor, displacement: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
        x = deformed
        if self.motion_input:
            if displacement is None:
                raise ValueError("this generator takes the dense motion as input")
            x = torch.cat([deformed, displacement.to(deformed.dtype)], 1)
        y = self.final(self.up(self.bottleneck(self.down(self.first(x)))))
        res, mask = torch.sigmoid(y[:, :3]), torch.sigmoid(y[:, 3:4])
        return {"prediction": deformed * (1 - mask) + res * mask, "residual": res,
                "mask": mask}


# ------------------------------------------------------------------------------ model
@register_model("s2d", paper="Zhao, Wu, Guo: Sparse to Dense Motion Transfer for Face "
                "Image Animation (ICCVW 2021)",
                description="landmark-driven dense motion (AdaIN + Add_Motion, global + "
                            "local eye/mouth branches, gaze) (model 5)")
class S2D(ReenactmentModel):
    """The full s2d reenactment model.

    Args (the configs in ``configs/*.yaml`` give the values):
        image_size: S (inputs of :meth:`reenact` are resized to it).
        motion: :class:`SparseToDenseMotion` kwargs (motion_scale, local_fraction,
            use_local, adain, add_motion, global_branch, local_branch).
        generator: :class:`ResidualGenerator` kwargs.
        pupils: :func:`facegeo.landmarks.pupils.landmarks74` kwargs (how the 74 points are
            made from the 68 and the image).
        parsing_size: resolution of the landmark parsing maps of the parsing prior.

    forward(batch): ``batch["source"]`` (B, 3, S, S) (or (B, n, 3, S, S): the first),
    ``batch["driving"]`` (B, 3, S, S) in [0, 1], ``batch["source_landmarks"]`` /
    ``batch["driving_landmarks"]`` (B, 68, 2) or (B, 74, 2) pixel landmarks (68 points are
    completed to 74 by the pupil localiser on the images, without gradients). Returns a
    dict: ``prediction`` (B, 3, S, S), ``deformed`` E_I, ``deformation`` (B, S, S, 2),
    ``mask``/``residual`` of the generator, ``global_flow``, the local outputs and
    ``source_landmarks74``/``driving_landmarks74`` (B, 74, 2) pixels.
    """

    requires = frozenset({"image", "landmarks68"})
    modes = ("absolute", "relative")

    def __init__(self, image_size: int = 256, motion: dict | None = None,
                 generator: dict | None = None, pupils: dict | None = None,
                 parsing_size: int = 64):
        super().__init__()
        self.image_size = int(image_size)
        self.pupil_kwargs = dict(pupils or {})
        self.parsing_size = int(parsing_size)
        self.motion = SparseToDenseMotion(image_size, **(motion or {}))
        self.generator = ResidualGenerator(**(generator or {}))

    # ----------------------------------------------------------------- pieces
    def landmarks74(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S), (B, 68 | 74, 2) pixels -> (B, 74, 2) pixels (no gradient)."""
        if landmarks.dim() != 3 or landmarks.shape[1] not in (68, NUM_LANDMARKS_74) \
                or landmarks.shape[0] != images.shape[0]:
            raise ValueError(f"landmarks must be (B={images.shape[0]}, 68 or 74, 2), got "
                             f"{tuple(landmarks.shape)}")
        if landmarks.shape[1] == NUM_LANDMARKS_74:
            return landmarks.float()
        from facegeo.landmarks.pupils import landmarks74

        with torch.no_grad():
            return landmarks74(images.detach().float(), landmarks.float(),
                               **self.pupil_kwargs).to(images.device)

    def to_normalized(self, points: torch.Tensor) -> torch.Tensor:
        return pixel_to_normalized(points.float(), (self.image_size, self.image_size))

    def animate(self, source: torch.Tensor, src_lm74: torch.Tensor,
                drv_lm74: torch.Tensor) -> dict[str, torch.Tensor]:
        """Source (B, 3, S, S) and 74-point pixel landmarks (B, 74, 2) of source and
        driving -> the output dict of :meth:`forward`."""
        check_images(source, "source")
        if source.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"source must be {self.image_size}x{self.image_size}, got "
                             f"{tuple(source.shape[-2:])}")
        mot = self.motion(source, self.to_normalized(src_lm74).to(source),
                          self.to_normalized(drv_lm74).to(source))
        grid = mot["deformation"]
        deformed = warp_grid(source, grid)
        disp = (grid - identity_grid(*grid.shape[:3], device=grid.device,
                                     dtype=grid.dtype)).permute(0, 3, 1, 2)
        gen = self.generator(deformed, disp)
        return {**mot, **gen, "deformed": deformed}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        src, drv = batch_images(batch)
        for k in ("source_landmarks", "driving_landmarks"):
            if batch.get(k) is None:
                raise ValueError(f"s2d needs batch[{k!r}] (B, 68, 2): train on data with "
                                 "landmarks (apps/train.py preprocess; data.require_landmarks)")
        sl = batch["source_landmarks"]
        if sl.dim() == 4:
            sl = sl[:, 0]
        s74 = self.landmarks74(src, sl)
        d74 = self.landmarks74(drv, batch["driving_landmarks"])
        out = self.animate(src, s74, d74)
        out.update(source_landmarks74=s74, driving_landmarks74=d74)
        return out

    def extra_losses(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        """The parsing prior L_par (eq. 7) as ``parsing``: landmark parsing maps of the
        source warped by F against the driving ones (:func:`.losses.parsing_loss`)."""
        from .losses import parsing_loss

        return {"parsing": parsing_loss(out["deformation"], out["source_landmarks74"],
                                        out["driving_landmarks74"], self.image_size,
                                        self.parsing_size)}

    # -------------------------------------------------------------- inference
    def _rescaled(self, cond):
        """A :class:`~facegeo.pipeline.Conditioning` whose ``landmarks68`` (and its
        reference's) are in pixels of the ``image_size`` crop its images are resized to."""
        from dataclasses import replace

        from facegeo.pipeline import Conditioning

        if not isinstance(cond, Conditioning) or cond.image is None \
                or cond.landmarks68 is None or cond.image.shape[-1] == self.image_size:
            return cond
        if cond.image.shape[-1] != cond.image.shape[-2]:
            raise ValueError(f"s2d needs square crops, got {tuple(cond.image.shape[-2:])}")
        k = self.image_size / float(cond.image.shape[-1])
        ref = self._rescaled(cond.reference) if cond.reference is not None else None
        return replace(cond, landmarks68=(cond.landmarks68 + 0.5) * k - 0.5, reference=ref)

    def encode_source(self, sources):
        """The sources' conditioning at ``image_size`` (landmarks rescaled with the crops);
        (N, 3, H, W) images, a :class:`~facegeo.pipeline.Conditioning`."""
        return super().encode_source(self._rescaled(sources))

    def reenact(self, sources, driving, *, mode: str | None = None, **kw):
        """:meth:`ReenactmentModel.reenact` with the landmarks of ``driving`` (and its
        reference) rescaled to the ``image_size`` crops. ``driving`` must be a
        :class:`~facegeo.pipeline.Conditioning` with ``image`` and ``landmarks68``."""
        return super().reenact(sources, self._rescaled(driving), mode=mode, **kw)

    def _reenact(self, sources, driving, *, mode: str, return_all: bool = False):
        """First source crop animated by the driving landmarks ``driving.landmarks68``
        (B, 68, 2) crop pixels (pupils from ``driving.image``). ``relative``: the
        driver's landmark motion since ``driving.reference`` added to the source
        landmarks; ``absolute``: the driver's landmarks as they are (the paper)."""
        src_img = sources.image[:1]
        s74 = self.landmarks74(src_img, sources.get("landmarks68")[:1].to(src_img))
        d_img = driving.get("image")
        d74 = self.landmarks74(d_img, driving.get("landmarks68").to(src_img))
        if mode == "relative":
            ref = driving.reference
            if ref is None or ref.landmarks68 is None or ref.image is None:
                raise ValueError("relative mode needs driving.reference with image and "
                                 "landmarks68")
            r_img = self.prepare_images(ref.image[:1])
            r74 = self.landmarks74(r_img, ref.landmarks68[:1].to(src_img))
            d74 = s74 + (d74 - r74)
        b = d74.shape[0]
        out = self.animate(src_img.expand(b, -1, -1, -1), s74.expand(b, -1, -1), d74)
        return out if return_all else out["prediction"]
