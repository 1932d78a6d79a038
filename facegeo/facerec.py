"""Face-recognition embeddings for identity metrics (CSIM / ISIM).

* :class:`MobileFaceNet`: our definition of foamliu/MobileFaceNet's network (Chen et al.
  2018, MobileNetV2-style, trained with the ArcFace loss), with that repository's parameter
  names so its 307-key state dict (asset ``"mobilefacenet"``) loads strictly. Input
  (B, 3, 112, 112) RGB, ImageNet-normalised; output the 128-d embedding.
* :class:`ArcFaceEmbedder`: the whole pipeline for metrics: the 68 landmarks give the
  5 ArcFace points (eye centres, nose tip, mouth corners:
  :func:`facegeo.landmarks.conventions.to_5_points`), a least-squares similarity transform
  (Umeyama) maps them onto the standard 112x112 ArcFace template and the image is warped
  with ``grid_sample`` (:func:`facegeo.landmarks.crops.arcface_align`), then
  ``(x - mean) / std`` with ImageNet statistics, the network, and L2 normalisation.
* dlib's 128-d descriptor (:class:`facegeo.landmarks.identity.FaceEmbedder`) is the second,
  always-available identity measure; :func:`dlib_embeddings` wraps it with the same shapes.

CSIM of two faces is the cosine similarity of their unit embeddings
(:func:`facegeo.metrics.cosine_similarity`). On /work/shared/media the MobileFaceNet gives
0.5-0.95 for the same person and <= 0.33 for different people (tests/facegeo/test_facerec.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MobileFaceNet",
    "ArcFaceEmbedder",
    "load_mobilefacenet_state_dict",
    "dlib_embeddings",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOBILEFACENET_SETTING",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: (expansion t, output channels c, repeats n, first stride s), MobileFaceNet paper table 1
#: (the bottleneck rows between the depthwise conv and the 1x1 conv to 512 channels).
MOBILEFACENET_SETTING = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2),
                         (2, 128, 2, 1))
# indices into ``features`` whose outputs forward_features also returns
_TAPS = (4, 11, 14)


def _conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    # parameter names "<i>.weight" (conv, no bias) and "1.*" (batch norm)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class _DepthwiseSeparable(nn.Module):
    """3x3 depthwise + 1x1 pointwise, each followed by batch norm and ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pointwise = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.depthwise(x)))
        return F.relu(self.bn2(self.pointwise(x)))


class _GlobalDepthwise(nn.Module):
    """Global depthwise convolution (a k x k depthwise kernel over the whole map) + BN."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, k, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.depthwise(x))


class _Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise (stride), 1x1 linear."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            _conv_bn_relu6(cin, hidden, 1),
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """MobileFaceNet with foamliu/MobileFaceNet's parameter names (strict state-dict load).

    ``forward``: (B, 3, 112, 112) ImageNet-normalised RGB -> (B, 128) embedding (not
    normalised). ``forward_features`` also returns the activations
    [conv1 (B,64,56,56), dw_conv (B,64,56,56), block 4 (B,64,28,28), block 11 (B,128,14,14),
    block 14 (B,128,7,7), conv2 (B,512,7,7)]."""

    def __init__(self):
        super().__init__()
        self.conv1 = _conv_bn_relu6(3, 64, 3, 2)
        self.dw_conv = _DepthwiseSeparable(64)
        blocks: list[nn.Module] = []
        cin = 64
        for t, c, n, s in MOBILEFACENET_SETTING:
            for i in range(n):
                blocks.append(_Bottleneck(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*blocks)
        self.conv2 = _conv_bn_relu6(128, 512, 1)
        self.gdconv = _GlobalDepthwise(512, 7)
        self.conv3 = nn.Conv2d(512, 128, 1)
        self.bn = nn.BatchNorm2d(128)

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, 3, 112, 112) -> (list of 6 activations, (B, 128) embedding)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, 112, 112):
            raise ValueError(f"MobileFaceNet takes (B, 3, 112, 112), got {tuple(x.shape)}")
        feats = []
        x = self.conv1(x)
        feats.append(x)
        x = self.dw_conv(x)
        feats.append(x)
        for i, block in enumerate(self.features):
            x = block(x)
            if i in _TAPS:
                feats.append(x)
        x = self.conv2(x)
        feats.append(x)
        emb = self.bn(self.conv3(self.gdconv(x))).flatten(1)
        return feats, emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


def load_mobilefacenet_state_dict(path=None, *, download: bool = True) -> dict:
    """foamliu/MobileFaceNet's ``mobilefacenet.pt`` (a plain state dict) read with
    ``torch.load(weights_only=True)`` onto the CPU; ``path=None`` uses the asset resolver
    (``"mobilefacenet"``)."""
    from facegeo import assets

    p = assets.resolve("mobilefacenet", path=path, download=download)
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{p}: expected a MobileFaceNet state dict, got {type(sd).__name__}")
    return sd


class ArcFaceEmbedder(nn.Module):
    """Unit-length 128-d identity embeddings of faces given their 68 landmarks.

    Args:
        weights: state-dict path, or ``None`` for the ``"mobilefacenet"`` asset.
        state_dict: an already loaded state dict (wins over ``weights``; e.g. random weights
            in tests).
        device: where the network runs.
        batch: faces per network call.
    """

    def __init__(self, weights=None, *, state_dict: dict | None = None, device=None,
                 batch: int = 64):
        super().__init__()
        self.net = MobileFaceNet()
        sd = state_dict if state_dict is not None else load_mobilefacenet_state_dict(weights)
        self.net.load_state_dict(sd, strict=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.batch = int(batch)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        if device is not None:
            self.to(device)

    @staticmethod
    def align(images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] and (B, 68, 2) pixels -> (B, 3, 112, 112) aligned crops."""
        from facegeo.landmarks.crops import arcface_align

        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if landmarks.shape != (images.shape[0], 68, 2):
            raise ValueError(f"landmarks must be (B={images.shape[0]}, 68, 2), got "
                             f"{tuple(landmarks.shape)}")
        return arcface_align(images, landmarks, 112)

    @torch.no_grad()
    def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) aligned RGB crops in [0, 1] -> (B, 128) unit embeddings."""
        if crops.dim() != 4 or tuple(crops.shape[1:]) != (3, 112, 112):
            raise ValueError(f"aligned crops must be (B, 3, 112, 112), got {tuple(crops.shape)}")
        dev = self.mean.device
        out = []
        for i in range(0, crops.shape[0], self.batch):
            x = crops[i:i + self.batch].to(dev, torch.float32)
            out.append(F.normalize(self.net((x - self.mean) / self.std), dim=1))
        if not out:
            return crops.new_zeros(0, 128)
        return torch.cat(out).to(crops.device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], (B, 68, 2) -> (B, 128) unit embeddings."""
        return self.embed_aligned(self.align(images, landmarks))


def dlib_embeddings(images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """dlib's 128-d face descriptor, L2-normalised: (B, 3, H, W), (B, 68, 2) -> (B, 128)."""
    from facegeo.landmarks.identity import FaceEmbedder

    if images.shape[0] == 0:
        return images.new_zeros(0, 128)
    return F.normalize(FaceEmbedder().embed_batch(images, landmarks), dim=1)
