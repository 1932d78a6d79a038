"""Network of the paired-feature-point / weighted-MLS-motion reenactment model (pfp_mls).

Tripathy, Kannala and Rahtu, "Single Source One Shot Reenactment using Weighted Motion
from Paired Feature Points" (see docs/models/pfp_mls.md for the equations and for the
choices the paper leaves open).

Data flow (all coordinates inside the network are *normalized* ``grid_sample`` coordinates,
align_corners=False, x right / y down, see :mod:`facegeo.coords`)::

    I_s, I_d (B,3,H,W) --ImageEmbedder--> l_s, l_d (B,N,D), D = hm*hm (paper: 1024 = 32*32)
    l_st = l_s + T(l_s, l_d), l_dt = l_d + T(l_d, l_s)                  (eq. 1)
    softmax heat-maps (B,N,hm,hm) -> means k_s, k_d (B,N,2)
    MLS weights w (eq. 4, facegeo.mls) + Gaussian heat-maps of k_s, k_d
        --single conv--> M (B,h,w,2,2); f_x = (x - k_d*) M + k_s*           (eq. 5)
    U-Net(source, source warped by f, f, heat-maps) -> softmax mask over {background, f}
        -> dense backward grid (B,h,w,2) + occlusion (B,1,h,w)
    OcclusionAwareGenerator(source, grid, occlusion) -> I_r (B,3,H,W)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facegeo import mls

from ..common.attention import (
    DecoderLayer,
    EncoderLayer,
    PositionalAttention,
    PositionwiseFeedForward,
    sinusoidal_encoding,
)
from ..common.blocks import (
    AntiAliasInterpolation2d,
    DenseMotionNetwork,
    DownBlock2d,
    OcclusionAwareGenerator,
    coordinate_grid,
    keypoints_to_gaussian,
    make_norm,
    soft_argmax,
)
from ..common.model import ReenactmentModel, batch_images
from ..common.registry import register_model

__all__ = [
    "PairedFeaturePointTransformer",
    "ImageEmbedder",
    "WeightedMotionEstimator",
    "PFPMLS",
    # shared blocks (facegeo_models.common), importable from here for compatibility
    "sinusoidal_encoding",
    "PositionalAttention",
    "PositionwiseFeedForward",
    "EncoderLayer",
    "DecoderLayer",
    "DenseMotionUNet",
]

# The dense-motion U-Net of the paper is FOMM's, with one motion besides the background.
DenseMotionUNet = DenseMotionNetwork


# ------------------------------------------------------------------------ transformer
class PairedFeaturePointTransformer(nn.Module):
    """The paired-feature-point transformer T (one encoder and one decoder layer).

    ``T(a, b) = Decoder(b, Encoder(a))`` and, eq. (1),
    ``l_st = l_s + T(l_s, l_d)``, ``l_dt = l_d + T(l_d, l_s)`` (the same T both ways).

    forward(l_s (B, N, D), l_d (B, N, D)) -> (l_st, l_dt), each (B, N, D).
    """

    def __init__(self, dim: int = 1024, heads: int = 4, d_ff: int = 2048,
                 dropout: float = 0.0, max_len: int = 256):
        super().__init__()
        self.encoder = EncoderLayer(dim, heads, d_ff, dropout, max_len)
        self.decoder = DecoderLayer(dim, heads, d_ff, dropout, max_len)

    def transform(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """T(a, b): (B, N, D), (B, N, D) -> (B, N, D)."""
        return self.decoder(b, self.encoder(a))

    def forward(self, l_s: torch.Tensor, l_d: torch.Tensor) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
        if l_s.shape != l_d.shape or l_s.dim() != 3:
            raise ValueError(f"l_s and l_d must both be (B, N, D), got {tuple(l_s.shape)} "
                             f"and {tuple(l_d.shape)}")
        b = l_s.shape[0]
        # both directions in one batched pass: T(l_s, l_d) and T(l_d, l_s)
        t = self.transform(torch.cat([l_s, l_d]), torch.cat([l_d, l_s]))
        return l_s + t[:b], l_d + t[b:]


# --------------------------------------------------------------------------- embedder
class ImageEmbedder(nn.Module):
    """Image -> N embedding vectors of size hm*hm (paper: N = 10, 1024 = 32*32).

    Anti-aliased resize by ``scale_factor``, ``num_blocks`` conv3x3 -> batch norm -> ReLU ->
    2x2 average-pool blocks, a conv3x3 -> batch norm to N channels, average pooling to
    hm x hm (a no-op when the size already matches), flattened per channel.

    forward(image (B, 3, H, W)) -> (B, N, hm*hm).
    """

    def __init__(self, num_points: int = 10, heatmap_size: int = 32,
                 block_expansion: int = 64, num_blocks: int = 2, max_features: int = 256,
                 scale_factor: float = 0.5, norm: str = "batch"):
        super().__init__()
        self.num_points, self.heatmap_size = num_points, heatmap_size
        self.down = AntiAliasInterpolation2d(3, scale_factor)
        blocks = []
        cin = 3
        for i in range(num_blocks):
            cout = min(max_features, block_expansion * 2 ** i)
            blocks.append(DownBlock2d(cin, cout, norm=norm))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(cin, num_points, 3, padding=1)
        self.head_norm = make_norm(norm, num_points)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.head_norm(self.head(self.blocks(self.down(image))))
        if x.shape[-2:] != (self.heatmap_size, self.heatmap_size):
            x = F.adaptive_avg_pool2d(x, self.heatmap_size)
        return x.flatten(2)


# ----------------------------------------------------------------------------- motion
class WeightedMotionEstimator(nn.Module):
    """Weighted motion, eqs. (3)-(5).

    The MLS weights ``w_n = |k_dn - x|^(-2 alpha)`` (eq. 4, normalised to sum 1) and the
    weighted centroids k_d*, k_s* come from :func:`facegeo.mls.weighted_motion`; a single
    convolution maps [w (N), Gaussian heat-map of k_d (N), of k_s (N)] to the four entries of
    M (initialised to the identity), and ``f_x = (x - k_d*) M + k_s*``
    (:func:`facegeo.mls.apply_motion`). Computed in float32 (also under autocast).

    forward(k_s (B, N, 2), k_d (B, N, 2), height, width) -> dict with
    ``weights`` (B, h, w, N), ``k_d_star``/``k_s_star`` (B, h, w, 2), ``M`` (B, h, w, 2, 2),
    ``flow`` (B, h, w, 2) normalized source position for each driving position x,
    ``heatmap_source``/``heatmap_driving`` (B, N, h, w) Gaussian heat-maps.
    """

    def __init__(self, num_points: int = 10, alpha: float = 1.0, kernel_size: int = 7,
                 gaussian_sigma: float = 0.1):
        super().__init__()
        if not 0 < alpha:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha, self.sigma = float(alpha), float(gaussian_sigma)
        self.conv = nn.Conv2d(3 * num_points, 4, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        with torch.no_grad():
            self.conv.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))

    def forward(self, k_s: torch.Tensor, k_d: torch.Tensor, height: int, width: int
                ) -> dict[str, torch.Tensor]:
        with torch.autocast(k_s.device.type, enabled=False):
            k_s, k_d = k_s.float(), k_d.float()
            grid = coordinate_grid(height, width, device=k_s.device)
            wm = mls.weighted_motion(k_s, k_d, grid, self.alpha, kind=None, validate=False)
            g_s = keypoints_to_gaussian(k_s, height, width, self.sigma)
            g_d = keypoints_to_gaussian(k_d, height, width, self.sigma)
            inp = torch.cat([wm.weights.permute(0, 3, 1, 2), g_d, g_s], dim=1)
            m = self.conv(inp).permute(0, 2, 3, 1)
            mat = m.reshape(*m.shape[:3], 2, 2)
            flow = mls.apply_motion(grid, mat, wm.k_d_star, wm.k_s_star)
        return {"weights": wm.weights, "k_d_star": wm.k_d_star, "k_s_star": wm.k_s_star,
                "M": mat, "flow": flow, "heatmap_source": g_s, "heatmap_driving": g_d}


# ------------------------------------------------------------------------------ model
@register_model("pfp_mls", paper="Tripathy, Kannala, Rahtu: Single Source One Shot "
                "Reenactment using Weighted Motion from Paired Feature Points",
                description="paired feature points + weighted MLS motion (model 1)")
class PFPMLS(ReenactmentModel):
    """The full pfp_mls reenactment model.

    Args (the configs in ``configs/*.yaml`` give the values):
        image_size: training resolution (inputs of :meth:`reenact` are resized to it).
        num_points: N feature points (paper: 10).
        heatmap_size: hm; the embedding size is hm*hm (paper: 32 -> 1024).
        embedder: kwargs of :class:`ImageEmbedder` (block_expansion, num_blocks,
            max_features, scale_factor).
        transformer: kwargs of :class:`PairedFeaturePointTransformer` (heads, d_ff, dropout).
        temperature: softmax temperature of the heat-maps.
        motion: {alpha, kernel_size, gaussian_sigma, scale_factor}: the weighted motion and
            the dense motion are computed at ``image_size * scale_factor``.
        dense_motion: kwargs of :class:`~facegeo_models.common.blocks.DenseMotionNetwork`
            (block_expansion, num_blocks, max_features; one motion, N feature channels).
        generator: kwargs of :class:`~facegeo_models.common.blocks.OcclusionAwareGenerator`.
        norm: normalization of the convolutional parts ("batch" as the paper).
        motion_loss_detach_points: L_m (eq. 7) trains M only (points and weights detached).
        spread_threshold: distance (normalized units) below which the spreading hinge acts.

    forward(batch) with ``batch["source"]`` (B, 3, H, W) (or (B, n, 3, H, W): first source)
    and ``batch["driving"]`` (B, 3, H, W), images in [0, 1]; optional
    ``batch["driving_point_offset"]`` (B, N, 2) added to k_d in normalized units (for the
    robustness experiment). Returns a dict: ``prediction`` (B, 3, H, W), ``deformed``,
    ``kp_source``/``kp_driving`` (B, N, 2) normalized, ``heatmap_source``/
    ``heatmap_driving`` (B, N, hm, hm) softmax heat-maps, ``motion_M`` (B, h, w, 2, 2),
    ``motion_weights`` (B, h, w, N), ``flow`` (B, h, w, 2), ``deformation`` (B, h, w, 2),
    ``occlusion`` (B, 1, h, w), ``mask`` (B, 2, h, w).
    """

    def __init__(self, image_size: int = 256, num_points: int = 10, heatmap_size: int = 32,
                 embedder: dict | None = None, transformer: dict | None = None,
                 temperature: float = 0.1, motion: dict | None = None,
                 dense_motion: dict | None = None, generator: dict | None = None,
                 norm: str = "batch", motion_loss_detach_points: bool = True,
                 spread_threshold: float = 0.2):
        super().__init__()
        if num_points < 3:
            raise ValueError(f"num_points must be >= 3, got {num_points}")
        self.image_size, self.num_points, self.heatmap_size = image_size, num_points, \
            heatmap_size
        self.temperature = float(temperature)
        self.motion_loss_detach_points = bool(motion_loss_detach_points)
        self.spread_threshold = float(spread_threshold)
        motion = dict(motion or {})
        self.motion_scale = float(motion.pop("scale_factor", 0.25))
        self.embedder = ImageEmbedder(num_points, heatmap_size, norm=norm, **(embedder or {}))
        self.transformer = PairedFeaturePointTransformer(heatmap_size ** 2,
                                                         **(transformer or {}))
        self.motion = WeightedMotionEstimator(num_points, **motion)
        self.motion_down = AntiAliasInterpolation2d(3, self.motion_scale)
        self.dense_motion = DenseMotionNetwork(num_points, norm=norm, **(dense_motion or {}))
        self.generator = OcclusionAwareGenerator(3, norm=norm, **(generator or {}))

    # ----------------------------------------------------------------- pieces
    def feature_points(self, source: torch.Tensor, driving: torch.Tensor
                       ) -> dict[str, torch.Tensor]:
        """Paired feature points: (B, 3, H, W) x 2 -> dict with ``kp_source``/``kp_driving``
        (B, N, 2) normalized and ``heatmap_source``/``heatmap_driving`` (B, N, hm, hm)."""
        b = source.shape[0]
        emb = self.embedder(torch.cat([source, driving]))
        l_st, l_dt = self.transformer(emb[:b], emb[b:])
        hm = self.heatmap_size
        logits = torch.cat([l_st, l_dt]).reshape(2 * b, self.num_points, hm, hm)
        kp, prob = soft_argmax(logits.float(), self.temperature)
        return {"kp_source": kp[:b], "kp_driving": kp[b:], "heatmap_source": prob[:b],
                "heatmap_driving": prob[b:]}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        src, drv = batch_images(batch)
        out = self.feature_points(src, drv)
        k_s, k_d = out["kp_source"], out["kp_driving"]
        offset = batch.get("driving_point_offset")
        if offset is not None:
            if offset.shape != k_d.shape:
                raise ValueError(f"driving_point_offset must have shape {tuple(k_d.shape)}, "
                                 f"got {tuple(offset.shape)}")
            k_d = k_d + offset.to(k_d)
            out["kp_driving"] = k_d
        small = self.motion_down(src)
        h, w = small.shape[-2:]
        mot = self.motion(k_s, k_d, h, w)
        heat = (mot["heatmap_driving"] - mot["heatmap_source"]).to(small.dtype)
        dense = self.dense_motion(small, mot["flow"].to(small.dtype), heat)
        gen = self.generator(src, dense["deformation"], dense.get("occlusion"))
        out.update(prediction=gen["prediction"], deformed=gen["deformed"],
                   motion_M=mot["M"], motion_weights=mot["weights"], flow=mot["flow"],
                   **{k: v for k, v in dense.items() if k != "sparse_deformed"})
        return out

    def extra_losses(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        """The model's own terms of eq. (8): ``motion`` = L_m (eq. 7) and ``spread`` = L_f
        (feature-point spreading hinge on k_s and k_d). Scalars; the trainer weights them
        with the phase config (``losses: {motion: lambda_m, spread: lambda_f}``)."""
        from .losses import motion_loss, spreading_loss

        k_s, k_d = out["kp_source"], out["kp_driving"]
        lm = motion_loss(out["motion_M"], k_s, k_d, out["motion_weights"],
                         detach_points=self.motion_loss_detach_points)
        lf = 0.5 * (spreading_loss(k_s, self.spread_threshold)
                    + spreading_loss(k_d, self.spread_threshold))
        return {"motion": lm, "spread": lf}

    # The paired feature points of source and driving are co-attended (eq. 1): a driving
    # point has no meaning without its source partner, so the driver's points cannot be
    # re-based on its first frame. The model copies the driver's pose: absolute only.
    modes = ("absolute",)

    @property
    def num_keypoints(self) -> int:
        """The N learned feature points (``driving.keypoint_offset`` moves them)."""
        return self.num_points

    def _reenact(self, sources, driving, *, mode: str, return_all: bool = False):
        """First source image animated by ``driving.image`` (B, 3, S, S); the learned
        driving points move by ``driving.keypoint_offset`` (B, N, 2) when given. Returns
        (B, 3, S, S) (or the full output dict with ``return_all``)."""
        src = sources.image[:1].expand(len(driving), -1, -1, -1)
        batch = {"source": src, "driving": driving.get("image")}
        if driving.keypoint_offset is not None:
            batch["driving_point_offset"] = driving.keypoint_offset.to(src)
        out = self(batch)
        return out if return_all else out["prediction"]
