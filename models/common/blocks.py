"""Convolutional building blocks shared by the reenactment models (FOMM family).

Every block takes and returns (B, C, H, W) feature maps. Keypoint helpers use the
``grid_sample`` *normalized* convention (``align_corners=False``, see :mod:`facegeo.coords`):
-1 and +1 are the outer edges of the border pixels; use
:func:`facegeo.coords.normalized_to_pixel` to get pixel coordinates.

Contents:

* :class:`SameBlock2d`, :class:`DownBlock2d`, :class:`UpBlock2d`, :class:`ResBlock2d`
* :class:`Encoder`, :class:`Decoder`, :class:`Hourglass` (FOMM-style U-Net)
* :class:`AntiAliasInterpolation2d` (Gaussian blur + subsampling), :class:`ImagePyramid`
* :func:`coordinate_grid`, :func:`soft_argmax`, :func:`heatmap_to_keypoints`,
  :func:`dsnt`, :func:`dsnt_regularizer`, :func:`keypoints_to_gaussian`
* :class:`KeypointDetector` (hourglass -> heat-maps -> soft-argmax keypoints, optional
  per-keypoint 2x2 Jacobians)
* :func:`warp_grid`, :func:`identity_grid`, :class:`OcclusionAwareGenerator`
* :class:`DenseMotionNetwork` (FOMM's dense-motion hourglass: K sparse motions plus the
  background -> softmax mask -> dense warp + occlusion)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facegeo._deprecation import warn_deprecated
from facegeo.coords import normalized_grid

__all__ = [
    "make_norm",
    "SameBlock2d",
    "DownBlock2d",
    "UpBlock2d",
    "ResBlock2d",
    "Encoder",
    "Decoder",
    "Hourglass",
    "AntiAliasInterpolation2d",
    "ImagePyramid",
    "coordinate_grid",
    "soft_argmax",
    "heatmap_to_keypoints",
    "dsnt",
    "dsnt_regularizer",
    "keypoints_to_gaussian",
    "KeypointDetector",
    "identity_grid",
    "warp_grid",
    "warp",
    "OcclusionAwareGenerator",
    "DenseMotionNetwork",
]


def _check_4d(x: torch.Tensor, name: str = "input") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalization layer by name: ``"batch"``, ``"instance"`` (affine), ``"group"``
    (8 groups or fewer) or ``"none"``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        groups = math.gcd(8, channels)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected batch, instance, group or none")


class SameBlock2d(nn.Module):
    """conv(k) -> norm -> ReLU, same resolution. (B, Cin, H, W) -> (B, Cout, H, W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3,
                 norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size,
                              padding=kernel_size // 2)
        self.norm = make_norm(norm, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(SameBlock2d):
    """conv3x3 -> norm -> ReLU -> 2x2 average pool. (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class UpBlock2d(nn.Module):
    """2x nearest upsampling -> conv3x3 -> norm -> ReLU. (B, Cin, H, W) -> (B, Cout, 2H, 2W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3,
                 norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size,
                              padding=kernel_size // 2)
        self.norm = make_norm(norm, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: x + conv(relu(norm(conv(relu(norm(x)))))).
    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, features: int, kernel_size: int = 3, norm: str = "batch"):
        super().__init__()
        p = kernel_size // 2
        self.norm1 = make_norm(norm, features)
        self.conv1 = nn.Conv2d(features, features, kernel_size, padding=p)
        self.norm2 = make_norm(norm, features)
        self.conv2 = nn.Conv2d(features, features, kernel_size, padding=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out


class Encoder(nn.Module):
    """Hourglass encoder: ``num_blocks`` DownBlock2d. Returns the list of all scales
    ``[x, d1, ..., dn]`` with ``d_i`` of shape (B, min(max_features, E * 2**i), H/2**i, W/2**i)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3,
                 max_features: int = 256, norm: str = "batch"):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_features if i == 0 else min(max_features, block_expansion * 2 ** i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(DownBlock2d(cin, cout, norm=norm))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder with skip connections (concatenation). Takes the Encoder's list
    and returns (B, block_expansion + in_features, H, W); ``out_filters`` holds that count."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3,
                 max_features: int = 256, norm: str = "batch"):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features,
                                                           block_expansion * 2 ** (i + 1))
            cout = min(max_features, block_expansion * 2 ** i)
            blocks.append(UpBlock2d(cin, cout, norm=norm))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = list(feats)
        out = feats.pop()
        for block in self.up_blocks:
            out = block(out)
            skip = feats.pop()
            out = torch.cat([out, skip], dim=1)
        return out


class Hourglass(nn.Module):
    """FOMM-style hourglass (U-Net). (B, in_features, H, W) ->
    (B, block_expansion + in_features, H, W). H and W must be divisible by 2**num_blocks."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3,
                 max_features: int = 256, norm: str = "batch"):
        super().__init__()
        self.num_blocks = num_blocks
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d(x)
        m = 2 ** self.num_blocks
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"Hourglass with {self.num_blocks} blocks needs H, W divisible "
                             f"by {m}, got {tuple(x.shape[-2:])}")
        return self.decoder(self.encoder(x))


# ----------------------------------------------------------------------------- pyramid
def gaussian_kernel1d(sigma: float, radius: int | None = None) -> torch.Tensor:
    """Normalized 1D Gaussian (2r+1,) with r = ceil(4 sigma) by default (sums to 1)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = int(math.ceil(4 * sigma)) if radius is None else radius
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian low-pass then subsampling by the integer factor ``1/scale`` (as FOMM).

    sigma = (1/scale - 1) / 2; reflect padding, so a constant image stays constant.
    Output pixel (i, j) is the blurred input at pixel (i*f + o, j*f + o) with
    o = (f - 1) // 2, i.e. close to the centre of each f x f cell.
    (B, C, H, W) -> (B, C, H // f, W // f); scale 1 is the identity.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        inv = 1.0 / scale
        if abs(inv - round(inv)) > 1e-6:
            raise ValueError(f"1/scale must be an integer, got scale={scale}")
        self.factor = int(round(inv))
        self.channels = channels
        self.scale = scale
        if self.factor > 1:
            k1 = gaussian_kernel1d((inv - 1) / 2)
            k2 = torch.outer(k1, k1)
            self.register_buffer("weight", k2.expand(channels, 1, *k2.shape).clone(),
                                 persistent=False)
            self.pad = k1.numel() // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d(x)
        if self.factor == 1:
            return x
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[1]}")
        p = self.pad
        mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
        y = F.conv2d(F.pad(x, (p, p, p, p), mode=mode), self.weight.to(x.dtype),
                     groups=self.channels)
        f = self.factor
        o = (f - 1) // 2
        h, w = x.shape[-2] // f, x.shape[-1] // f
        return y[:, :, o::f, o::f][:, :, :h, :w]


class ImagePyramid(nn.Module):
    """Anti-aliased image pyramid: returns ``{scale: (B, C, H*scale, W*scale)}``."""

    def __init__(self, scales: list[float], channels: int = 3):
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.downs = nn.ModuleDict(
            {str(s).replace(".", "-"): AntiAliasInterpolation2d(channels, s) for s in self.scales}
        )

    def forward(self, x: torch.Tensor) -> dict[float, torch.Tensor]:
        return {s: self.downs[str(s).replace(".", "-")](x) for s in self.scales}


# --------------------------------------------------------------------------- keypoints
def coordinate_grid(height: int, width: int, *, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalized (align_corners=False) pixel-centre coordinates, (H, W, 2) as (x, y):
    :func:`facegeo.coords.normalized_grid`."""
    return normalized_grid(height, width, device=device, dtype=dtype)


def soft_argmax(logits: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """Spatial softmax + expectation of the coordinates.

    Args:
        logits: (B, K, H, W) unnormalized heat-maps.
        temperature: softmax temperature (FOMM uses 0.1).

    Returns:
        keypoints (B, K, 2) normalized (x, y) and the probability maps (B, K, H, W).
    """
    _check_4d(logits, "logits")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, k, h, w = logits.shape
    prob = F.softmax(logits.reshape(b, k, h * w).float() / temperature, dim=-1).view(b, k, h, w)
    return heatmap_to_keypoints(prob), prob


def heatmap_to_keypoints(prob: torch.Tensor) -> torch.Tensor:
    """Expectation of the normalized coordinates under (B, K, H, W) probability maps
    (each map should sum to 1) -> (B, K, 2) normalized (x, y)."""
    _check_4d(prob, "prob")
    grid = coordinate_grid(prob.shape[2], prob.shape[3], device=prob.device, dtype=prob.dtype)
    return torch.einsum("bkhw,hwc->bkc", prob, grid)


def dsnt(heatmap: torch.Tensor) -> torch.Tensor:
    """Differentiable spatial to numerical transform (Nibali et al. 2018).

    ``heatmap`` (B, K, H, W) must already be normalized (non-negative, summing to 1, e.g. a
    spatial softmax); returns the expected normalized coordinates (B, K, 2). DSNT differs
    from a plain soft-argmax by its training regularizer, :func:`dsnt_regularizer`."""
    _check_4d(heatmap, "heatmap")
    s = heatmap.sum(dim=(2, 3))
    if not torch.allclose(s, torch.ones_like(s), atol=1e-3):
        raise ValueError("dsnt needs normalized heat-maps (each summing to 1); apply a "
                         "spatial softmax first")
    return heatmap_to_keypoints(heatmap)


def keypoints_to_gaussian(kp: torch.Tensor, height: int, width: int,
                          sigma: float) -> torch.Tensor:
    """Unnormalized Gaussian blobs exp(-|p - kp|^2 / (2 sigma^2)) at normalized keypoints.

    kp: (B, K, 2) normalized; sigma in normalized units. Returns (B, K, H, W)."""
    if kp.dim() != 3 or kp.shape[-1] != 2:
        raise ValueError(f"kp must have shape (B, K, 2), got {tuple(kp.shape)}")
    grid = coordinate_grid(height, width, device=kp.device, dtype=kp.dtype)
    d2 = ((grid[None, None] - kp[:, :, None, None, :]) ** 2).sum(-1)
    return torch.exp(-0.5 * d2 / sigma ** 2)


def dsnt_regularizer(heatmap: torch.Tensor, target: torch.Tensor, sigma: float = 0.05,
                     kind: str = "js") -> torch.Tensor:
    """DSNT heat-map regularizer, mean over batch and keypoints (scalar).

    Args:
        heatmap: (B, K, H, W) normalized heat-maps.
        target: (B, K, 2) normalized target keypoints.
        sigma: target Gaussian width (normalized units).
        kind: ``"js"`` Jensen-Shannon divergence to a normalized Gaussian at the target,
            or ``"var"`` squared difference between the heat-map variance and sigma^2.
    """
    _check_4d(heatmap, "heatmap")
    b, k, h, w = heatmap.shape
    if kind == "js":
        g = keypoints_to_gaussian(target, h, w, sigma)
        g = g / g.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        m = 0.5 * (heatmap + g)
        eps = 1e-12

        def kl(p, q):
            return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(dim=(2, 3))

        return (0.5 * kl(heatmap, m) + 0.5 * kl(g, m)).mean()
    if kind == "var":
        grid = coordinate_grid(h, w, device=heatmap.device, dtype=heatmap.dtype)
        mean = heatmap_to_keypoints(heatmap)
        var = torch.einsum("bkhw,bkhwc->bkc", heatmap,
                           (grid[None, None] - mean[:, :, None, None]) ** 2)
        return ((var - sigma ** 2) ** 2).sum(-1).mean()
    raise ValueError(f"unknown DSNT regularizer {kind!r}; expected 'js' or 'var'")


class KeypointDetector(nn.Module):
    """FOMM keypoint detector: hourglass -> conv -> spatial softmax -> keypoints.

    Input (B, C, H, W) image in [0, 1]; it is first resized by ``scale_factor`` (with
    anti-aliasing). Output dict: ``"value"`` (B, K, 2) normalized keypoints, ``"heatmap"``
    (B, K, h, w) probabilities, and with ``estimate_jacobian`` ``"jacobian"`` (B, K, 2, 2)
    (initialized to the identity).
    """

    def __init__(self, num_kp: int = 10, num_channels: int = 3, block_expansion: int = 32,
                 max_features: int = 1024, num_blocks: int = 5, temperature: float = 0.1,
                 estimate_jacobian: bool = False, scale_factor: float = 1.0,
                 norm: str = "batch"):
        super().__init__()
        self.num_kp = num_kp
        self.temperature = temperature
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features, norm)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, 7, padding=3)
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor)
        self.jacobian = None
        if estimate_jacobian:
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * num_kp, 7, padding=3)
            nn.init.zeros_(self.jacobian.weight)
            with torch.no_grad():
                self.jacobian.bias.copy_(torch.tensor([1.0, 0, 0, 1] * num_kp))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_4d(x, "image")
        feat = self.predictor(self.down(x))
        kp, prob = soft_argmax(self.kp(feat), self.temperature)
        out = {"value": kp, "heatmap": prob}
        if self.jacobian is not None:
            j = self.jacobian(feat)
            b, _, h, w = j.shape
            j = j.view(b, self.num_kp, 4, h, w)
            j = (j * prob[:, :, None]).sum(dim=(3, 4))
            out["jacobian"] = j.view(b, self.num_kp, 2, 2)
        return out


# ----------------------------------------------------------------------------- warping
def identity_grid(batch: int, height: int, width: int, *, device=None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Identity sampling grid (B, H, W, 2) in the grid_sample convention."""
    return coordinate_grid(height, width, device=device, dtype=dtype).expand(
        batch, height, width, 2)


def warp_grid(x: torch.Tensor, grid: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Backward warp with a sampling grid: out[b, :, i, j] = x[b, :, grid[b, i, j]]
    (bilinear, *normalized* absolute coordinates, align_corners=False). If the grid's
    resolution differs from the output wanted, it is resized to x's resolution first.
    (A pixel displacement field goes to :func:`facegeo.raster.warp_flow` instead.)

    x: (B, C, H, W); grid: (B, h, w, 2). Returns (B, C, H, W)."""
    _check_4d(x)
    if grid.dim() != 4 or grid.shape[-1] != 2 or grid.shape[0] != x.shape[0]:
        raise ValueError(f"grid must have shape (B, h, w, 2) with B={x.shape[0]}, got "
                         f"{tuple(grid.shape)}")
    if grid.shape[1:3] != x.shape[2:]:
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=x.shape[2:], mode="bilinear",
                             align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


def warp(x: torch.Tensor, grid: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Deprecated name of :func:`warp_grid` (removed in facegeo 0.3)."""
    warn_deprecated("facegeo_models.common.blocks.warp", "warp_grid (a normalized grid; a "
                    "pixel flow goes to facegeo.raster.warp_flow)")
    return warp_grid(x, grid, padding_mode)


class OcclusionAwareGenerator(nn.Module):
    """Encoder -> feature warping -> occlusion masking -> residual bottleneck -> decoder.

    forward(source, deformation=None, occlusion=None):
        source (B, C, H, W) in [0, 1]; deformation (B, h, w, 2) backward sampling grid
        (normalized) from the output frame into the source, any resolution (resized to the
        feature map); occlusion (B, 1, h, w) in [0, 1] (resized too), 1 = visible.
    Returns a dict with ``"prediction"`` (B, C, H, W) in [0, 1] (sigmoid) and
    ``"deformed"`` (the source image warped by ``deformation``, for visualization).
    H, W must be divisible by 2**num_down_blocks.
    """

    def __init__(self, num_channels: int = 3, block_expansion: int = 64,
                 max_features: int = 512, num_down_blocks: int = 2,
                 num_bottleneck_blocks: int = 6, norm: str = "batch"):
        super().__init__()
        self.num_down_blocks = num_down_blocks
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, norm=norm)
        down = []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * 2 ** i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            down.append(DownBlock2d(cin, cout, norm=norm))
        self.down_blocks = nn.ModuleList(down)
        up = []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * 2 ** (num_down_blocks - i))
            cout = min(max_features, block_expansion * 2 ** (num_down_blocks - i - 1))
            up.append(UpBlock2d(cin, cout, norm=norm))
        self.up_blocks = nn.ModuleList(up)
        c = min(max_features, block_expansion * 2 ** num_down_blocks)
        self.bottleneck = nn.Sequential(*[ResBlock2d(c, norm=norm)
                                          for _ in range(num_bottleneck_blocks)])
        self.final = nn.Conv2d(block_expansion, num_channels, 7, padding=3)

    def forward(self, source: torch.Tensor, deformation: torch.Tensor | None = None,
                occlusion: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        _check_4d(source, "source")
        m = 2 ** self.num_down_blocks
        if source.shape[-1] % m or source.shape[-2] % m:
            raise ValueError(f"source H, W must be divisible by {m}, got "
                             f"{tuple(source.shape[-2:])}")
        out = self.first(source)
        for block in self.down_blocks:
            out = block(out)
        result: dict[str, torch.Tensor] = {}
        if deformation is not None:
            out = warp_grid(out, deformation)
            result["deformed"] = warp_grid(source, deformation)
        if occlusion is not None:
            if occlusion.dim() != 4 or occlusion.shape[1] != 1:
                raise ValueError(f"occlusion must have shape (B, 1, h, w), got "
                                 f"{tuple(occlusion.shape)}")
            if occlusion.shape[2:] != out.shape[2:]:
                occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear",
                                          align_corners=False)
            out = out * occlusion
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        result["prediction"] = torch.sigmoid(self.final(out))
        return result


class DenseMotionNetwork(nn.Module):
    """FOMM's dense-motion network: an hourglass combines K sparse motions and the
    background (identity) motion into one dense backward warp and an occlusion map.

    Input of the hourglass, concatenated on channels: the caller's ``features`` (F channels,
    e.g. heat-map differences), the source and the source warped by each motion
    ((K + 1) * C), and, with ``displacement``, each motion minus the identity (2K).
    A conv7x7 of its output gives a softmax mask over the K + 1 motions (index 0 the
    background), ``deformation = sum_k mask_k * motion_k``; another conv7x7 + sigmoid the
    occlusion map (1 = visible).

    Args:
        feature_channels: F; num_motions: K; num_channels: C of the source.
        block_expansion, num_blocks, max_features, norm: of the :class:`Hourglass`.
        occlusion: predict the occlusion map.
        displacement: feed the displacements ``motion_k - x`` to the hourglass.

    forward(source (B, C, h, w), motions (B, K, h, w, 2) sampling grids (or (B, h, w, 2)
    when K = 1), features (B, F, h, w)) -> dict with ``deformation`` (B, h, w, 2), ``mask``
    (B, K + 1, h, w), ``sparse_deformed`` (B, K + 1, C, h, w) and ``occlusion``
    (B, 1, h, w) when enabled.
    """

    def __init__(self, feature_channels: int, num_motions: int = 1, num_channels: int = 3,
                 block_expansion: int = 64, num_blocks: int = 5, max_features: int = 1024,
                 norm: str = "batch", occlusion: bool = True, displacement: bool = True):
        super().__init__()
        self.num_motions, self.displacement = num_motions, displacement
        cin = feature_channels + (num_motions + 1) * num_channels + (
            2 * num_motions if displacement else 0)
        self.hourglass = Hourglass(block_expansion, cin, num_blocks, max_features, norm)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_motions + 1, 7, padding=3)
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3)
                          if occlusion else None)

    def forward(self, source: torch.Tensor, motions: torch.Tensor, features: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        _check_4d(source, "source")
        if motions.dim() == 4:
            motions = motions[:, None]
        b, _, h, w = source.shape
        if motions.shape != (b, self.num_motions, h, w, 2):
            raise ValueError(f"motions must have shape {(b, self.num_motions, h, w, 2)}, got "
                             f"{tuple(motions.shape)}")
        ident = identity_grid(b, h, w, device=motions.device, dtype=motions.dtype)
        warped = [warp_grid(source, motions[:, k]) for k in range(self.num_motions)]
        parts = [features, source, *warped]
        if self.displacement:
            parts += [(motions[:, k] - ident).permute(0, 3, 1, 2)
                      for k in range(self.num_motions)]
        feat = self.hourglass(torch.cat(parts, 1))
        mask = F.softmax(self.mask(feat), dim=1)
        grid = mask[:, 0, :, :, None] * ident
        for k in range(self.num_motions):
            grid = grid + mask[:, k + 1, :, :, None] * motions[:, k]
        out = {"deformation": grid, "mask": mask,
               "sparse_deformed": torch.stack([source, *warped], 1)}
        if self.occlusion is not None:
            out["occlusion"] = torch.sigmoid(self.occlusion(feat))
        return out
