"""FSRT networks: keypoints + expression, the set-latent encoder, the pixel decoder, the model.

Rochow, Schwarz, Behnke: "FSRT: Facial Scene Representation Transformer for Face
Reenactment from Factorized Appearance, Head-pose, and Facial Expression Features"
(CVPR 2024). Section numbers below are the paper's; values the paper leaves open follow
the authors' public code (andrerochow/fsrt, read, not copied) and are marked [code].

* :class:`KeypointExpressionNet` - keypoints ``k`` (B, K, 2) normalized, from the FOMM
  hourglass detector (:class:`~facegeo_models.common.blocks.KeypointDetector`, heat-map
  softmax at temperature 0.1, no Jacobians) or from the facegeo landmarks, and the latent
  expression vector ``e`` (B, E): a 7x7 conv of the hourglass features, pooled under each
  keypoint's heat-map (eq. 8-9), a 4-layer MLP (eq. 10).
* :class:`SetLatentEncoder` - per-pixel input ``[rgb, gamma_pix(p), gamma_key(k_S), e_S]``
  (eq. 6), the patch CNN (3 blocks halving H, W), a 1x1 conv, (H/8)(W/8) tokens per source,
  pre-LN self-attention blocks; several sources concatenate their tokens (one set-latent).
* :class:`PixelDecoder` - per-pixel query ``[gamma_key(k_D), gamma_pix(q), e_D]`` (eq. 7),
  a 2-layer input MLP, cross-attention blocks (no self-attention) over the set-latent, the
  render MLP to RGB; rendered in chunks of ``max_pixels_per_chunk`` queries.
* :class:`FSRT` - the registered :class:`~facegeo_models.common.model.ReenactmentModel`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from facegeo.pipeline import Conditioning
from facegeo_models.common.attention import TransformerBlock, fourier_encoding
from facegeo_models.common.blocks import (
    AntiAliasInterpolation2d,
    Hourglass,
    KeypointDetector,
    coordinate_grid,
    keypoints_to_gaussian,
    soft_argmax,
)
from facegeo_models.common.data import color_jitter
from facegeo_models.common.equivariance import RandomTPS, equivariance_loss
from facegeo_models.common.keypoints import (
    LANDMARK_SUBSETS,
    landmark_keypoints,
    relative_keypoints,
    to_normalized,
    to_pixels,
)
from facegeo_models.common.model import ReenactmentModel, check_images
from facegeo_models.common.registry import register_model

from .losses import covariance_loss, expression_distance, variance_hinge_loss

__all__ = ["KeypointExpressionNet", "SetLatentEncoder", "PixelDecoder", "FSRT",
           "keypoint_encoding", "pixel_encoding"]

KEYPOINT_SOURCES = ("learned", "landmarks")


def keypoint_encoding(kp: torch.Tensor, octaves: int, start_octave: int) -> torch.Tensor:
    """gamma_key (eq. 4): (B, K, 2) normalized keypoints -> (B, 4 K octaves), the NeRF
    encoding (:func:`~facegeo_models.common.attention.fourier_encoding`) of the 2K
    coordinates (x_1, y_1, x_2, ...) at octaves ``start_octave ..``."""
    return fourier_encoding(kp.flatten(-2), octaves, start_octave)


def pixel_encoding(coords: torch.Tensor, octaves: int, start_octave: int) -> torch.Tensor:
    """gamma_pix (eq. 5): (..., 2) normalized pixel coordinates -> (..., 4 octaves)."""
    return fourier_encoding(coords, octaves, start_octave)


def relu_mlp(widths) -> nn.Sequential:
    """Linear layers ``widths[0] -> widths[1] -> ...`` with ReLU between them and a linear
    output (the expression MLP X_M and the render MLP; Linear layers at the even indices
    0, 2, 4, ... as the authors' ``nn.Sequential``). (..., widths[0]) -> (..., widths[-1])."""
    widths = [int(w) for w in widths]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ------------------------------------------------------------------ keypoints, expression
class KeypointExpressionNet(nn.Module):
    """Keypoints and the latent expression vector of face images (sec. 3.1).

    Args:
        num_kp: K (paper: 10; with landmark keypoints the subset's size).
        source: ``"learned"`` (the FOMM hourglass detector, trained by our own
            self-supervised stage) or ``"landmarks"`` (facegeo's 68 landmarks, the
            ``landmark_subset``; the hourglass then only feeds the expression network and
            the heat-maps are Gaussians at the landmarks).
        landmark_subset: a name of :data:`~facegeo_models.common.keypoints.LANDMARK_SUBSETS`.
        landmark_sigma: std of those Gaussian heat-maps (normalized units; [FOMM]
            kp_variance 0.01 -> 0.1).
        detector: kwargs of the hourglass (block_expansion, max_features, num_blocks,
            scale_factor, norm; temperature for the learned detector; ``fomm_head: true``
            gives FOMM's exact conventions, for the authors' weights: 7x7 heads without
            padding (heat-maps 58x58 at 64x64), keypoints as heat-map means over FOMM's
            ``linspace(-1, 1)`` grid, anti-aliased down-sampling with zero padding sampled
            at offset 0).
        expression_size: E (paper: 256).
        features_per_kp: n_f, channels of the 7x7 conv per keypoint ([code] 32).
        mlp_hidden: hidden widths of the 4-layer MLP X_M ([code] 640, 1280, 640).
        detector_weights: a pretrained FOMM detector (file or asset name; the authors'
            ``kp_detector.pt`` or a FOMM checkpoint), loaded at construction: the switch
            to the paper's pretrained detector where those weights exist (use it with
            ``detector.fomm_head: true`` and without the detector stage).

    forward(images (B, 3, H, W), landmarks (B, 68, 2) pixels | None, detector_grad=True)
    -> dict: ``kp`` (B, K, 2), ``heatmap`` (B, K, h, w), ``expression`` (B, E).
    """

    def __init__(self, num_kp: int = 10, source: str = "learned", landmark_subset: str = "ten",
                 landmark_sigma: float = 0.1, detector: dict | None = None,
                 expression_size: int = 256, features_per_kp: int = 32,
                 mlp_hidden: tuple[int, ...] | list[int] = (640, 1280, 640),
                 detector_weights: str | None = None):
        super().__init__()
        if source not in KEYPOINT_SOURCES:
            raise ValueError(f"keypoint source must be one of {KEYPOINT_SOURCES}, got "
                             f"{source!r}")
        det = {"block_expansion": 32, "max_features": 1024, "num_blocks": 5,
               "scale_factor": 0.25, "norm": "batch", "temperature": 0.1, "fomm_head": False,
               **(detector or {})}
        self.fomm_head = bool(det["fomm_head"])
        if self.fomm_head and source != "learned":
            raise ValueError("detector.fomm_head is for the learned detector (the authors' "
                             "FOMM weights), not for landmark keypoints")
        if source == "landmarks":
            if landmark_subset not in LANDMARK_SUBSETS:
                raise ValueError(f"unknown landmark subset {landmark_subset!r}; expected "
                                 f"{sorted(LANDMARK_SUBSETS)}")
            n = len(LANDMARK_SUBSETS[landmark_subset])
            if num_kp != n:
                raise ValueError(f"landmark subset {landmark_subset!r} has {n} points, "
                                 f"num_kp is {num_kp}")
        self.num_kp, self.source = num_kp, source
        self.landmark_subset, self.landmark_sigma = landmark_subset, float(landmark_sigma)
        self.expression_size, self.features_per_kp = expression_size, features_per_kp
        if source == "learned":
            self.detector = KeypointDetector(
                num_kp=num_kp, num_channels=3, block_expansion=det["block_expansion"],
                max_features=det["max_features"], num_blocks=det["num_blocks"],
                temperature=det["temperature"], scale_factor=det["scale_factor"],
                norm=det["norm"])
            predictor, self.down = self.detector.predictor, self.detector.down
            if self.fomm_head:
                self.detector.kp.padding = (0, 0)
            if detector_weights:
                from .convert import read_detector_weights

                self.detector.load_state_dict(read_detector_weights(detector_weights))
        elif detector_weights:
            raise ValueError("detector_weights are for the learned detector")
        else:
            self.detector = None
            self.features = Hourglass(det["block_expansion"], 3, det["num_blocks"],
                                      det["max_features"], det["norm"])
            self.down = AntiAliasInterpolation2d(3, det["scale_factor"])
            predictor = self.features
        # X_C: 7x7 conv, same padding ([code] pads 0 as FOMM's detector head; ours pads 3
        # as the common detector's head, so feature and heat-map grids coincide)
        self.expression_conv = nn.Conv2d(predictor.out_filters, num_kp * features_per_kp, 7,
                                         padding=0 if self.fomm_head else 3)
        self.expression_mlp = relu_mlp([num_kp * features_per_kp, *mlp_hidden,
                                        expression_size])

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fomm_head or self.down.factor == 1:
            return self.down(x)
        # FOMM's AntiAliasInterpolation2d: zero padding, samples at offset 0 of each cell
        p, f = self.down.pad, self.down.factor
        y = F.conv2d(F.pad(x, (p, p, p, p)), self.down.weight.to(x.dtype), groups=x.shape[1])
        return y[:, :, ::f, ::f]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        trunk = self.detector.predictor if self.detector is not None else self.features
        return trunk(self._downsample(x))

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Learned detector only: (B, 3, H, W) -> ``kp`` (B, K, 2), ``heatmap``
        (B, K, h, w), ``features`` (B, F, h, w)."""
        if self.detector is None:
            raise ValueError("this network takes its keypoints from landmarks")
        feat = self._features(images)
        kp, prob = soft_argmax(self.detector.kp(feat), self.detector.temperature)
        if self.fomm_head:
            h, w = prob.shape[-2:]
            ys, xs = torch.linspace(-1, 1, h, device=prob.device), torch.linspace(
                -1, 1, w, device=prob.device)
            kp = torch.stack([torch.einsum("bkhw,w->bk", prob, xs.to(prob.dtype)),
                              torch.einsum("bkhw,h->bk", prob, ys.to(prob.dtype))], -1)
        return {"kp": kp, "heatmap": prob, "features": feat}

    def pool_expression(self, features: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        """eq. 8-10: (B, F, h, w) features, (B, K, h, w) heat-maps -> (B, E)."""
        f = self.expression_conv(features)
        b, _, h, w = f.shape
        f = f.view(b, self.num_kp, self.features_per_kp, h, w)
        pooled = torch.einsum("bkchw,bkhw->bkc", f, heatmap.to(f.dtype))
        return self.expression_mlp(pooled.reshape(b, -1))

    def landmark_heatmaps(self, kp: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, K, 2) normalized -> (B, K, h, w) Gaussians summing to 1 per keypoint."""
        g = keypoints_to_gaussian(kp, height, width, self.landmark_sigma)
        return g / g.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None, *,
                detector_grad: bool = True) -> dict[str, torch.Tensor]:
        check_images(images, "images")
        if self.source == "learned":
            if detector_grad:
                det = self.detect(images)
            else:   # frozen detector (as the paper's pretrained one): eval mode, no grad
                was = self.detector.training
                self.detector.eval()
                try:
                    with torch.no_grad():
                        det = self.detect(images)
                finally:
                    self.detector.train(was)
            kp, heat, feat = det["kp"], det["heatmap"], det["features"]
        else:
            if landmarks is None:
                raise ValueError("keypoints come from landmarks: pass (B, 68, 2) landmarks")
            if landmarks.shape != (images.shape[0], 68, 2):
                raise ValueError(f"landmarks must have shape ({images.shape[0]}, 68, 2), got "
                                 f"{tuple(landmarks.shape)}")
            h, w = images.shape[-2:]
            kp = landmark_keypoints(landmarks.to(images.device), w, h, self.landmark_subset)
            feat = self._features(images)
            heat = self.landmark_heatmaps(kp, *feat.shape[-2:])
        return {"kp": kp.float(), "heatmap": heat, "features": feat,
                "expression": self.pool_expression(feat, heat)}


# --------------------------------------------------------------------------- encoder
class SetLatentEncoder(nn.Module):
    """Source images -> set-latent (sec. 3.1 "Patch CNN", "Encoder").

    Args:
        num_kp, expression_size: K, E of the conditioning.
        pix_octaves, pix_start_octave, kp_octaves, kp_start_octave: of eq. 3-5
            ([code] 16, -1, 4, -1; the paper sets the keypoint start octave to -1).
        conv_blocks: patch-CNN blocks (paper: 3 -> H/8, W/8); each is conv3x3 -> ReLU ->
            conv3x3 stride 2 doubling the width -> ReLU ([code], no biases).
        conv_hidden: width of the first block's first conv ([code] 96 -> 192 -> 384 -> 768).
        dim: token width (paper: 768); heads, head_dim, mlp_dim, depth: of the pre-LN
            transformer (paper: 12 x 64, 1536, 5 blocks, GELU).
        use_expression: condition the input on e_S ([code] encode_with_expression).

    forward(images (B, N, 3, H, W), kp (B, N, K, 2), expression (B, N, E)) -> (B, N T, dim)
    with T = (H/2^c)(W/2^c) tokens per source (no source-index embedding [OSRT], so the
    set-latent is a set: its decoding does not depend on the order of the sources).
    """

    def __init__(self, num_kp: int = 10, expression_size: int = 256, *, pix_octaves: int = 16,
                 pix_start_octave: int = -1, kp_octaves: int = 4, kp_start_octave: int = -1,
                 conv_blocks: int = 3, conv_hidden: int = 96, dim: int = 768, heads: int = 12,
                 head_dim: int = 64, mlp_dim: int = 1536, depth: int = 5,
                 use_expression: bool = True):
        super().__init__()
        self.pix = (pix_octaves, pix_start_octave)
        self.key = (kp_octaves, kp_start_octave)
        self.use_expression = use_expression
        cin = 3 + 4 * pix_octaves + 4 * num_kp * kp_octaves + (
            expression_size if use_expression else 0)
        self.in_channels = cin
        blocks: list[nn.Module] = []
        hid = conv_hidden
        for _ in range(conv_blocks):
            blocks += [nn.Conv2d(cin, hid, 3, padding=1, bias=False), nn.ReLU(),
                       nn.Conv2d(hid, 2 * hid, 3, stride=2, padding=1, bias=False), nn.ReLU()]
            cin, hid = 2 * hid, 2 * hid
        self.conv = nn.Sequential(*blocks)
        self.stride = 2 ** conv_blocks
        self.per_patch = nn.Conv2d(cin, dim, 1)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_dim, inner_dim=heads * head_dim, qkv_bias=False)
            for _ in range(depth))
        self.dim = dim

    def input_representation(self, images: torch.Tensor, kp: torch.Tensor,
                             expression: torch.Tensor | None) -> torch.Tensor:
        """eq. 6: (M, 3, H, W), (M, K, 2), (M, E) -> (M, C_in, H, W)."""
        m, _, h, w = images.shape
        grid = coordinate_grid(h, w, device=images.device, dtype=images.dtype)
        pix = pixel_encoding(grid, *self.pix).permute(2, 0, 1).expand(m, -1, -1, -1)
        key = keypoint_encoding(kp.to(images.dtype), *self.key)[:, :, None, None]
        parts = [images, pix, key.expand(-1, -1, h, w)]
        if self.use_expression:
            parts.append(expression.to(images.dtype)[:, :, None, None].expand(-1, -1, h, w))
        return torch.cat(parts, 1)

    def forward(self, images: torch.Tensor, kp: torch.Tensor,
                expression: torch.Tensor | None = None) -> torch.Tensor:
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must have shape (B, N, 3, H, W), got "
                             f"{tuple(images.shape)}")
        b, n, _, h, w = images.shape
        if h % self.stride or w % self.stride:
            raise ValueError(f"image size {h}x{w} must be divisible by {self.stride}")
        x = self.input_representation(images.flatten(0, 1), kp.flatten(0, 1),
                                      None if expression is None else expression.flatten(0, 1))
        x = self.per_patch(self.conv(x))                      # (B N, D, H/s, W/s)
        x = x.flatten(2).transpose(1, 2).reshape(b, -1, self.dim)
        for blk in self.blocks:
            x = blk(x)
        return x


# --------------------------------------------------------------------------- decoder
class PixelDecoder(nn.Module):
    """Set-latent + per-pixel query -> RGB (sec. 3.1 "Decoder").

    Args:
        num_kp, expression_size, pix_/kp_octaves, pix_/kp_start_octave: of the query.
        latent_dim: width of the set-latent (768).
        heads, head_dim, mlp_dim, depth: cross-attention blocks ([code] full: 12 x 64,
            1536, 2; small: 6 x 64, 768, 2), no self-attention, queries of width
            Q = 4 pix_octaves + 4 K kp_octaves + E (480 for the paper).
        input_hidden: hidden width of the 2-layer input MLP ([OSRT], [code] 720).
        render_hidden: widths of the render MLP's hidden layers ([code] full: 4 x 1536, a
            5-layer MLP; small: 1536, 768).
        max_pixels_per_chunk: queries decoded at once at inference (memory bound; the
            result does not depend on it).

    forward(latent (B, L, latent_dim), coords (B, P, 2) normalized, kp (B, K, 2),
    expression (B, E)) -> (B, P, 3) colours (linear output, as [code]).
    """

    def __init__(self, num_kp: int = 10, expression_size: int = 256, *, pix_octaves: int = 16,
                 pix_start_octave: int = -1, kp_octaves: int = 4, kp_start_octave: int = -1,
                 latent_dim: int = 768, heads: int = 12, head_dim: int = 64,
                 mlp_dim: int = 1536, depth: int = 2, input_hidden: int = 720,
                 render_hidden: tuple[int, ...] | list[int] = (1536,) * 4,
                 max_pixels_per_chunk: int = 16384):
        super().__init__()
        if max_pixels_per_chunk < 1:
            raise ValueError(f"max_pixels_per_chunk must be >= 1, got {max_pixels_per_chunk}")
        self.pix = (pix_octaves, pix_start_octave)
        self.key = (kp_octaves, kp_start_octave)
        q = 4 * pix_octaves + 4 * num_kp * kp_octaves + expression_size
        self.query_dim = q
        self.input_mlp = nn.Sequential(nn.Linear(q, input_hidden), nn.ReLU(),
                                       nn.Linear(input_hidden, q))
        self.blocks = nn.ModuleList(
            TransformerBlock(q, heads, mlp_dim, self_attention=False, memory_dim=latent_dim,
                             inner_dim=heads * head_dim, qkv_bias=False)
            for _ in range(depth))
        self.render_mlp = relu_mlp([q, *render_hidden, 3])
        self.max_pixels_per_chunk = int(max_pixels_per_chunk)

    def queries(self, coords: torch.Tensor, kp: torch.Tensor,
                expression: torch.Tensor | None) -> torch.Tensor:
        """eq. 7: (B, P, 2), (B, K, 2), (B, E) -> (B, P, Q) (before the input MLP)."""
        b, p, _ = coords.shape
        key = keypoint_encoding(kp.to(coords.dtype), *self.key)[:, None].expand(-1, p, -1)
        parts = [key, pixel_encoding(coords, *self.pix)]
        if expression is not None:
            parts.append(expression.to(coords.dtype)[:, None].expand(-1, p, -1))
        return torch.cat(parts, -1)

    def render(self, latent: torch.Tensor, coords: torch.Tensor, kp: torch.Tensor,
               expression: torch.Tensor | None) -> torch.Tensor:
        """One chunk: (B, L, D), (B, P, 2), (B, K, 2), (B, E) -> (B, P, 3)."""
        x = self.input_mlp(self.queries(coords, kp, expression))
        for blk in self.blocks:
            x = blk(x, latent)
        return self.render_mlp(x)

    def forward(self, latent: torch.Tensor, coords: torch.Tensor, kp: torch.Tensor,
                expression: torch.Tensor | None = None, *,
                max_pixels_per_chunk: int | None = None) -> torch.Tensor:
        if coords.dim() != 3 or coords.shape[-1] != 2 or coords.shape[0] != latent.shape[0]:
            raise ValueError(f"coords must have shape ({latent.shape[0]}, P, 2), got "
                             f"{tuple(coords.shape)}")
        chunk = int(max_pixels_per_chunk or self.max_pixels_per_chunk)
        if chunk < 1:
            raise ValueError(f"max_pixels_per_chunk must be >= 1, got {chunk}")
        p = coords.shape[1]
        if p <= chunk:
            return self.render(latent, coords, kp, expression)
        return torch.cat([self.render(latent, coords[:, i:i + chunk], kp, expression)
                          for i in range(0, p, chunk)], 1)


# ------------------------------------------------------------------------------ model
@register_model("fsrt", paper="Rochow, Schwarz, Behnke: FSRT, Facial Scene Representation "
                "Transformer for Face Reenactment (CVPR 2024)",
                description="set-latent transformer rendering each pixel from keypoints and "
                            "a latent expression vector; several sources")
class FSRT(ReenactmentModel):
    """FSRT reenactment model (see the module docstring).

    Args (the configs in ``configs/*.yaml`` give the values):
        image_size: S (paper: 256).
        num_kp: K keypoints (paper: 10).
        keypoints: kwargs of :class:`KeypointExpressionNet` other than num_kp /
            expression_size (``source: learned | landmarks``, ``landmark_subset``,
            ``detector: {...}``, ``features_per_kp``, ``mlp_hidden``).
        expression_size: E (paper: 256).
        encoding: {pix_octaves, pix_start_octave, kp_octaves, kp_start_octave}.
        encoder: kwargs of :class:`SetLatentEncoder`.
        decoder: kwargs of :class:`PixelDecoder` (the ``small`` preset with
            ``small: true``: 6 heads, MLP 768, render MLP 1536, 768).
        max_sources: sources one set-latent holds at inference.
        regularization: training augmentations of sec. 3.2: ``jitter`` (brightness,
            contrast, saturation, hue amplitudes of the two source colour jitters),
            ``crop_min`` (fraction of the margin around the keypoints' box the crop always
            keeps, :meth:`keypoint_aware_crop`),
            ``crop_decode_prob`` (decoder gets e of the cropped driver; paper 0.75),
            ``enabled``.
        equivariance: kwargs of :class:`~facegeo_models.common.equivariance.RandomTPS`
            for the detector's self-supervised stage.

    forward(batch): ``source`` (B, 3, S, S) or (B, n, 3, S, S), ``driving`` (B, 3, S, S);
    with landmark keypoints ``source_landmarks`` (B, [n,] 68, 2) and ``driving_landmarks``
    (B, 68, 2) pixels; optional ``pixel_index`` (B, P) flat indices (only those pixels are
    rendered) and ``driving_kp_offset`` (B, K, 2). Returns ``prediction`` (B, 3, S, S) or
    (B, 3, P), ``kp_source`` (B, n, K, 2), ``kp_driving`` (B, K, 2), ``expression_source``
    (B, n, E), ``expression_driving`` (B, E) and, in training, the regulariser terms.
    """

    requires = frozenset({"image"})
    modes = ("absolute", "relative")

    def __init__(self, image_size: int = 256, num_kp: int = 10, keypoints: dict | None = None,
                 expression_size: int = 256, encoding: dict | None = None,
                 encoder: dict | None = None, decoder: dict | None = None,
                 max_sources: int = 4, regularization: dict | None = None,
                 equivariance: dict | None = None):
        super().__init__()
        self.image_size, self.num_kp, self.expression_size = image_size, num_kp, expression_size
        enc = {"pix_octaves": 16, "pix_start_octave": -1, "kp_octaves": 4,
               "kp_start_octave": -1, **(encoding or {})}
        self.kpnet = KeypointExpressionNet(num_kp=num_kp, expression_size=expression_size,
                                           **(keypoints or {}))
        self.encoder = SetLatentEncoder(num_kp, expression_size, **enc, **(encoder or {}))
        dec = dict(decoder or {})
        if dec.pop("small", False):
            dec = {"heads": 6, "mlp_dim": 768, "render_hidden": (1536, 768), **dec}
        self.decoder = PixelDecoder(num_kp, expression_size, latent_dim=self.encoder.dim,
                                    **enc, **dec)
        if max_sources < 1:
            raise ValueError(f"max_sources must be >= 1, got {max_sources}")
        self.max_sources = int(max_sources)
        reg = {"enabled": True, "jitter": {"brightness": 0.1, "contrast": 0.1,
                                           "saturation": 0.1, "hue": 0.1},
               "crop_min": 0.0, "crop_decode_prob": 0.75, **(regularization or {})}
        self.regularization = reg
        self.equivariance = dict(equivariance or {})
        #: the detector trains (self-supervised stage); set per phase by FSRTTask
        self.train_detector = False
        if self.kpnet.source == "landmarks":
            self.requires = frozenset({"image", "landmarks68"})

    # ----------------------------------------------------------------- pieces
    @property
    def num_keypoints(self) -> int:
        """K keypoints (``driving.keypoint_offset`` moves the driving ones)."""
        return self.num_kp

    @property
    def uses_landmarks(self) -> bool:
        return self.kpnet.source == "landmarks"

    def _detector_grad(self) -> bool:
        return self.uses_landmarks or (self.train_detector and self.training)

    def describe(self, images: torch.Tensor, landmarks: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
        """Keypoints + expression of (B, 3, S, S) images (and (B, 68, 2) landmarks):
        :class:`KeypointExpressionNet` output."""
        return self.kpnet(images, landmarks, detector_grad=self._detector_grad())

    def encode(self, images: torch.Tensor, kp: torch.Tensor,
               expression: torch.Tensor) -> torch.Tensor:
        """Set-latent of (B, n, 3, S, S) sources with (B, n, K, 2) keypoints and (B, n, E)
        expressions -> (B, n T, D)."""
        return self.encoder(images, kp, expression)

    def render(self, latent: torch.Tensor, kp: torch.Tensor, expression: torch.Tensor,
               pixel_index: torch.Tensor | None = None, *,
               max_pixels_per_chunk: int | None = None) -> torch.Tensor:
        """Decode (B, L, D) latents with driving (B, K, 2) keypoints and (B, E) expressions:
        the full (B, 3, S, S) image, or (B, 3, P) at the flat ``pixel_index`` (B, P)."""
        b, s = latent.shape[0], self.image_size
        grid = coordinate_grid(s, s, device=latent.device).reshape(-1, 2)   # fp32 encodings
        if pixel_index is None:
            coords = grid.expand(b, -1, -1)
        else:
            coords = grid[pixel_index.long()]
        rgb = self.decoder(latent, coords, kp, expression,
                           max_pixels_per_chunk=max_pixels_per_chunk).transpose(1, 2)
        return rgb if pixel_index is not None else rgb.reshape(b, 3, s, s)

    # ----------------------------------------------------------------- augmentation
    def _jitter(self, images: torch.Tensor) -> torch.Tensor:
        """Per-sample random colour jitter (torch RNG) of (B, 3, H, W) in [0, 1]."""
        j = self.regularization.get("jitter") or {}
        if not j:
            return images

        def u(a: float) -> float:
            return float(1 + (2 * torch.rand(()) - 1) * a) if a else 1.0

        out = []
        for x in images:
            hue = float((2 * torch.rand(()) - 1) * float(j.get("hue", 0)))
            out.append(color_jitter(x, u(float(j.get("brightness", 0))),
                                    u(float(j.get("contrast", 0))),
                                    u(float(j.get("saturation", 0))), hue))
        return torch.stack(out)

    def keypoint_aware_crop(self, images: torch.Tensor, kp: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Omega (sec. 3.2): a random axis-aligned box holding every keypoint, scaled back
        to the full size (aspect ratio may change). Each side of the box is drawn
        uniformly between the keypoints' extreme and the image border (a fraction
        ``crop_min`` of that margin is always kept). (B, 3, H, W), (B, K, 2) normalized ->
        cropped images (B, 3, H, W) and the boxes (B, 2, 2) as (centre, half size), both
        (x, y) normalized: a point p of the image is at (p - centre) / half in the crop."""
        b = images.shape[0]
        lo = kp.detach().amin(1).clamp(-1, 1)
        hi = kp.detach().amax(1).clamp(-1, 1)
        keep = float(self.regularization.get("crop_min", 0.0))
        r1, r2 = torch.rand(b, 2, device=kp.device), torch.rand(b, 2, device=kp.device)
        left = -1 + (lo + 1) * (1 - keep) * r1
        right = 1 - (1 - hi) * (1 - keep) * r2
        centre, half = (left + right) / 2, ((right - left) / 2).clamp_min(1e-3)
        theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
        theta[:, 0, 0], theta[:, 1, 1] = half[:, 0], half[:, 1]
        theta[:, :, 2] = centre
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        crops = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                              align_corners=False)
        return crops, torch.stack([centre, half], 1)

    # ----------------------------------------------------------------- training
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        src, drv = batch["source"], batch["driving"]
        if not isinstance(src, torch.Tensor):
            raise TypeError("batch['source'] must be a tensor")
        if src.dim() == 4:
            src = src[:, None]
        check_images(drv, "driving")
        if src.dim() != 5 or src.shape[2] != 3 or src.shape[0] != drv.shape[0] or tuple(
                src.shape[-2:]) != tuple(drv.shape[-2:]):
            raise ValueError(f"source must be (B, [n,] 3, H, W) matching driving "
                             f"{tuple(drv.shape)}, got {tuple(batch['source'].shape)}")
        if tuple(drv.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"images must be {self.image_size}x{self.image_size}, got "
                             f"{tuple(drv.shape[-2:])}")
        b, n = src.shape[:2]
        lm_s = lm_d = None
        if self.uses_landmarks:
            lm_s, lm_d = batch.get("source_landmarks"), batch.get("driving_landmarks")
            if lm_s is None or lm_d is None:
                raise ValueError("fsrt with landmark keypoints needs source_landmarks and "
                                 "driving_landmarks in the batch (apps/train.py preprocess)")
            lm_s = lm_s.reshape(b * n, 68, 2)
        reg = self.training and bool(self.regularization.get("enabled", True))
        flat = src.flatten(0, 1)
        out: dict[str, torch.Tensor] = {}
        if reg:
            # sec. 3.2: two colour jitters of the sources; the encoder sees RGB of A1 and
            # the expression of A2; e of the driver from its A version and from the
            # keypoint-aware crop of a third jitter
            a1, a2 = self._jitter(flat), self._jitter(flat)
            s1 = self.describe(a1, lm_s)
            s2 = self.describe(a2, lm_s)
            d_a = self.describe(self._jitter(drv), lm_d)
            crop, box = self.keypoint_aware_crop(self._jitter(drv), d_a["kp"])
            lm_crop = None
            if self.uses_landmarks:   # the landmarks follow the crop's affine map
                sz = self.image_size
                lm = (to_normalized(lm_d.float(), sz, sz) - box[:, None, 0]) / box[:, None, 1]
                lm_crop = to_pixels(lm, sz, sz)
            d_c = self.describe(crop, lm_crop)
            rgb_src, kp_s = a1, s1["kp"]
            e_s = s2["expression"]
            use_crop = (torch.rand(b, 1, device=drv.device)
                        < float(self.regularization.get("crop_decode_prob", 0.75)))
            e_d = torch.where(use_crop, d_c["expression"], d_a["expression"])
            kp_d = d_a["kp"]
            out["expression_aug"] = 0.5 * (
                expression_distance(s1["expression"], s2["expression"])
                + expression_distance(d_a["expression"], d_c["expression"]))
            e1 = torch.cat([s1["expression"].view(b, n, -1), d_a["expression"][:, None]], 1)
            e2 = torch.cat([s2["expression"].view(b, n, -1), d_c["expression"][:, None]], 1)
            e1, e2 = e1.flatten(0, 1), e2.flatten(0, 1)
            out["expression_cov"] = covariance_loss(e1) + covariance_loss(e2)
            out["expression_var"] = variance_hinge_loss(e1) + variance_hinge_loss(e2)
        else:
            s1 = self.describe(flat, lm_s)
            d_a = self.describe(drv, lm_d)
            rgb_src, kp_s, e_s = flat, s1["kp"], s1["expression"]
            kp_d, e_d = d_a["kp"], d_a["expression"]
        if self.training and self.train_detector and not self.uses_landmarks:
            tps = RandomTPS(b, device=drv.device, dtype=drv.dtype, **self.equivariance)
            kp_t = self.kpnet.detect(tps.transform_frame(drv))["kp"]
            out["equivariance"] = equivariance_loss(d_a["kp"], kp_t, tps)
        offset = batch.get("driving_kp_offset")
        if offset is not None:
            kp_d = kp_d + offset.to(kp_d)
        latent = self.encode(rgb_src.view(b, n, 3, *drv.shape[-2:]),
                             kp_s.view(b, n, self.num_kp, 2), e_s.view(b, n, -1))
        pred = self.render(latent, kp_d, e_d, batch.get("pixel_index"))
        out.update(prediction=pred, kp_source=kp_s.view(b, n, self.num_kp, 2),
                   kp_driving=kp_d, expression_source=e_s.view(b, n, -1),
                   expression_driving=e_d)
        return out

    def extra_losses(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        """The paper's regularisers (eq. 11-16) and the detector's equivariance term:
        ``expression_aug`` = (L_aug + L_aug,D) / 2, ``expression_cov`` = L_Cov,
        ``expression_var`` = L_Var (each over both augmented variants E1, E2), and
        ``equivariance`` (FOMM, the detector's self-supervised stage). Present only when
        computed (training with regularization / detector training)."""
        return {k: out[k] for k in ("expression_aug", "expression_cov", "expression_var",
                                    "equivariance") if k in out}

    def training_task(self, config: dict):
        from .task import FSRTTask

        return FSRTTask(config)

    # ----------------------------------------------------------------- inference
    def _scaled(self, cond: Conditioning) -> Conditioning:
        """Landmarks of ``cond`` rescaled from its images' pixels to ``image_size``."""
        if cond.landmarks68 is None or cond.image is None:
            return cond
        h, w = cond.image.shape[-2:]
        s = self.image_size
        if (h, w) == (s, s):
            return cond
        f = torch.tensor([s / w, s / h], dtype=cond.landmarks68.dtype,
                         device=cond.landmarks68.device)
        return replace(cond, landmarks68=(cond.landmarks68 + 0.5) * f - 0.5)

    def _landmarks(self, cond: Conditioning) -> torch.Tensor | None:
        if not self.uses_landmarks:
            return None
        if cond.landmarks68 is None:
            raise ValueError("fsrt with landmark keypoints needs landmarks68 conditioning "
                             "(run it through the pipeline, or pass a Conditioning)")
        return cond.landmarks68.to(self.device)

    @torch.no_grad()
    def encode_source(self, sources) -> dict:
        """The set-latent of the source set, once per video. ``sources``: (N, 3, H, W)
        images or a :class:`Conditioning` of N sources (with landmarks68 for landmark
        keypoints). Returns ``{"latent": (1, N T, D), "kp": (N, K, 2), "expression":
        (N, E)}``."""
        cond = self._as_conditioning(sources, "sources")
        self.check_sources(cond)
        cond = self._scaled(cond)
        was = self.training
        self.eval()
        try:
            img = self.prepare_images(cond.image)
            d = self.describe(img, self._landmarks(cond))
            latent = self.encode(img[None], d["kp"][None], d["expression"][None])
        finally:
            self.train(was)
        return {"latent": latent, "kp": d["kp"], "expression": d["expression"],
                "num_sources": img.shape[0]}

    def reenact(self, sources, driving, *, mode: str | None = None, **kw) -> torch.Tensor:
        if isinstance(driving, Conditioning):
            ref = driving.reference
            driving = self._scaled(driving)
            if ref is not None:
                driving = replace(driving, reference=self._scaled(ref))
        return super().reenact(sources, driving, mode=mode, **kw)

    def _reenact(self, sources, driving: Conditioning, *, mode: str,
                 max_pixels_per_chunk: int | None = None, adapt_scale: bool = True,
                 return_all: bool = False):
        """Render (B, 3, S, S) frames from the encoded sources and ``driving.image``.
        ``relative``: source keypoints moved by the driver's motion since
        ``driving.reference`` (the first driving frame of the batch when absent), scaled
        by the keypoint hulls (FOMM); the expression vector is always the driver's own
        (absolute), as the paper does. ``driving.keypoint_offset`` (B, K, 2) moves the
        driving keypoints."""
        if not isinstance(sources, dict) or "latent" not in sources:
            raise TypeError("sources must be what encode_source returned")
        img = driving.get("image")
        d = self.describe(img, self._landmarks(driving))
        kp_d, e_d = d["kp"], d["expression"]
        if mode == "relative":
            ref = driving.reference
            if ref is not None and ref.image is not None:
                r = self.describe(self.prepare_images(ref.image), self._landmarks(ref))["kp"]
            else:
                r = kp_d[:1]
            kp_d = relative_keypoints(sources["kp"][:1], kp_d, r, adapt_scale=adapt_scale)
        if driving.keypoint_offset is not None:
            kp_d = kp_d + driving.keypoint_offset.to(kp_d)
        b = img.shape[0]
        latent = sources["latent"].expand(b, -1, -1)
        pred = self.render(latent, kp_d, e_d, max_pixels_per_chunk=max_pixels_per_chunk)
        pred = pred.clamp(0, 1)
        if return_all:
            return {"prediction": pred, "kp_driving": kp_d, "expression_driving": e_d}
        return pred
