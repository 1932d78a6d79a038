"""Perceptual losses: VGG-19 multi-scale (the papers' loss) and a face-feature substitute.

* :class:`VGG19Features` is our own definition of torchvision's ``vgg19().features`` (same
  parameter names ``features.<i>.weight``), loaded from a torchvision-format state dict
  found with ``facegeo.assets.resolve("vgg19")``. :class:`VGGPerceptualLoss` is the
  FOMM/FSRT loss: for each scale of an anti-aliased pyramid, sum over relu1_1 ... relu5_1 of
  ``w_l * mean |phi_l(x) - phi_l(y)|`` (ImageNet-normalized input).
* :class:`MobileFaceNet` (defined in :mod:`facegeo.facerec`, re-exported here) is our own
  definition of foamliu/MobileFaceNet's ``MobileFaceNet`` (an ArcFace-loss
  face-recognition network, 307-key state dict, strict load).
  :class:`FacePerceptualLoss` compares its intermediate activations (56x56 ... 7x7) and the
  cosine distance of its 128-d embeddings. It is the substitute used where VGG-19 weights
  are unavailable (see docs/training.md).

:func:`build_perceptual` makes either from a config entry (or ``None`` for ``"none"``).
Both losses are frozen (no trainable parameters, always in eval mode) and take images
(B, 3, H, W) in [0, 1], returning a scalar.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facegeo import assets
from facegeo.facerec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MobileFaceNet,
    load_mobilefacenet_state_dict,
)

from .blocks import ImagePyramid

__all__ = [
    "VGG19Features",
    "VGGPerceptualLoss",
    "MobileFaceNet",
    "FacePerceptualLoss",
    "build_perceptual",
    "load_vgg19_state_dict",
    "load_mobilefacenet_state_dict",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

# torchvision VGG-19 "E" configuration: channels, "M" = 2x2 max pool.
_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
# Index (in ``features``) just after the ReLU of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
_VGG_SLICES = (2, 7, 12, 21, 30)


class _Frozen(nn.Module):
    """A module whose parameters never train and which stays in eval mode."""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # noqa: D102 - always eval
        return super().train(False)


class VGG19Features(nn.Module):
    """torchvision ``vgg19().features`` layout: 16 conv3x3 (+ReLU), 5 max pools, 37 modules.

    forward(x) with x (B, 3, H, W) *ImageNet-normalized* returns the list of the 5 feature
    maps relu1_1 (B, 64, H, W), relu2_1 (B, 128, H/2, W/2), relu3_1 (B, 256, H/4, W/4),
    relu4_1 (B, 512, H/8, W/8), relu5_1 (B, 512, H/16, W/16)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        start = 0
        for end in _VGG_SLICES:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs


def load_vgg19_state_dict(path: str | None = None, *, download: bool = True) -> dict:
    """Read a torchvision VGG-19 state dict (``vgg19-dcbb9e9d.pth``) safely and return only
    its ``features.*`` tensors. The file must contain exactly the torchvision keys
    (features + ``classifier.{0,3,6}.{weight,bias}``); anything else is a ValueError.
    Missing file: :class:`facegeo.assets.AssetNotFoundError` saying where to get it."""
    p = assets.resolve("vgg19", path=path, download=download)
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{p}: expected a torchvision VGG-19 state dict, got {type(sd)}")
    feats = {k: v for k, v in sd.items() if k.startswith("features.")}
    rest = set(sd) - set(feats)
    allowed = {f"classifier.{i}.{n}" for i in (0, 3, 6) for n in ("weight", "bias")}
    if not rest <= allowed:
        raise ValueError(f"{p}: not a torchvision VGG-19 state dict (unexpected keys "
                         f"{sorted(rest - allowed)[:5]})")
    return feats


class VGGPerceptualLoss(_Frozen):
    """Multi-scale VGG-19 perceptual loss (FOMM / FSRT).

    loss(x, y) = sum_s sum_l w_l * mean |phi_l(P_s x) - phi_l(P_s y)|, with P_s the
    anti-aliased pyramid level at scale s and phi_l(y) detached. x, y (B, 3, H, W) in [0, 1].

    Args:
        weights: path of a torchvision state dict, or None to resolve asset ``"vgg19"``
            (raises AssetNotFoundError if absent: there is no silent fallback), or
            ``"random"``: the same network with its random initialisation, for speed and
            memory measurements only (``benchmarks/gpu_check.py`` uses it where the VGG-19
            weights are absent; its loss values mean nothing).
        scales: pyramid scales (FOMM: 1, 0.5, 0.25, 0.125).
        layer_weights: 5 weights for relu1_1 ... relu5_1 (FOMM: 10 each).
        download: allow downloading the weights into the cache.
    """

    def __init__(self, weights: str | None = None, scales=(1.0, 0.5, 0.25, 0.125),
                 layer_weights=(10.0, 10.0, 10.0, 10.0, 10.0), download: bool = True):
        super().__init__()
        if len(layer_weights) != 5:
            raise ValueError(f"layer_weights needs 5 entries, got {len(layer_weights)}")
        self.vgg = VGG19Features()
        if weights != "random":
            self.vgg.load_state_dict(load_vgg19_state_dict(weights, download=download),
                                     strict=True)
        self.pyramid = ImagePyramid(list(scales), 3)
        self.layer_weights = [float(w) for w in layer_weights]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.freeze()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y)
        px, py = self.pyramid(x), self.pyramid(y)
        total = x.new_zeros(())
        for s in px:
            fx = self.vgg((px[s] - self.mean) / self.std)
            with torch.no_grad():
                fy = self.vgg((py[s] - self.mean) / self.std)
            for w, a, b in zip(self.layer_weights, fx, fy):
                total = total + w * (a - b.detach()).abs().mean()
        return total


# ------------------------------------------------------------------------ MobileFaceNet
# One definition in the core (facegeo.facerec, also used for the CSIM metric): our own
# module with foamliu/MobileFaceNet's parameter names, loaded strictly, weights_only.
# forward_features -> [conv1 56², dw_conv 56², block 4 28², block 11 14², block 14 7²,
# conv2 7² x 512] and the (B, 128) embedding.


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"perceptual loss takes (B, 3, H, W) images, got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")


class FacePerceptualLoss(_Frozen):
    """Face-feature perceptual loss on the ArcFace-type MobileFaceNet (VGG substitute).

    The (optionally cropped) images are resized to 112x112 (bilinear, anti-aliased) and
    ImageNet-normalized; then

        loss = sum_l w_l * mean |f_l(x) - f_l(y)|  +  w_id * (1 - cos(e(x), e(y)))

    over the 6 activations of :meth:`MobileFaceNet.forward_features` (y detached).

    Args:
        weights: path of the state dict or None for asset ``"mobilefacenet"``.
        layer_weights: 6 weights for the activations (default 1 each).
        identity_weight: weight of the embedding cosine term.
        crop: (x0, y0, x1, y1) fractions of the image to keep before resizing (default
            the whole image; FOMM-style 256 crops hold the face in about the centre 80%).
    """

    def __init__(self, weights: str | None = None, layer_weights=(1.0,) * 6,
                 identity_weight: float = 1.0, crop=(0.0, 0.0, 1.0, 1.0),
                 download: bool = True):
        super().__init__()
        if len(layer_weights) != 6:
            raise ValueError(f"layer_weights needs 6 entries, got {len(layer_weights)}")
        self.net = MobileFaceNet()
        self.net.load_state_dict(load_mobilefacenet_state_dict(weights, download=download),
                                 strict=True)
        self.layer_weights = [float(w) for w in layer_weights]
        self.identity_weight = float(identity_weight)
        if not (0 <= crop[0] < crop[2] <= 1 and 0 <= crop[1] < crop[3] <= 1):
            raise ValueError(f"crop must be fractions x0 < x1, y0 < y1 in [0, 1], got {crop}")
        self.crop = tuple(float(c) for c in crop)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.freeze()

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x0, y0, x1, y1 = self.crop
        x = x[:, :, int(round(y0 * h)):int(round(y1 * h)), int(round(x0 * w)):int(round(x1 * w))]
        x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y)
        fx, ex = self.net.forward_features(self._prep(x))
        with torch.no_grad():
            fy, ey = self.net.forward_features(self._prep(y))
        total = x.new_zeros(())
        for w, a, b in zip(self.layer_weights, fx, fy):
            total = total + w * (a - b).abs().mean()
        cos = F.cosine_similarity(ex, ey, dim=1)
        return total + self.identity_weight * (1 - cos).mean()


def build_perceptual(cfg: Any) -> nn.Module | None:
    """Perceptual loss from a config entry.

    ``cfg`` is ``"none"``/None (returns None), ``"vgg19"``, ``"face"``, or a dict
    ``{"type": "vgg19" | "face" | "none", **kwargs}`` whose other keys go to
    :class:`VGGPerceptualLoss` / :class:`FacePerceptualLoss`."""
    if cfg is None:
        return None
    if isinstance(cfg, str):
        cfg = {"type": cfg}
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ValueError(f"perceptual config must be a name or a dict with 'type', got {cfg!r}")
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    kind = cfg["type"]
    if kind == "none":
        return None
    if kind == "vgg19":
        return VGGPerceptualLoss(**kwargs)
    if kind in ("face", "mobilefacenet"):
        return FacePerceptualLoss(**kwargs)
    raise ValueError(f"unknown perceptual loss {kind!r}; expected vgg19, face or none")
