"""FD-GAN (feature-dictionary GAN) and the full LD-Net + FD-GAN reenactment model.

Xiang, Sun, Li, Chen, Chen, Yu, Fu, Lin, "One-Shot Identity-Preserving Portrait
Reenactment" (2020): sec. 3.2 and supplement sec. 6-8. See docs/models/ldnet_fdgan.md for
the choices the paper leaves open.

Data flow (images and landmark images in [-1, 1] inside the network, supplement sec. 7)::

    x_T (B,3,S,S), l_T = raster(lm_T) (B,L,S,S) --extractor down path--> d_0..d_3
        extractor up path, deepest level first: h_3 = d_3, h_i = up_i + d_i
        writer_i(h_i) -> dictionary_i (B, rows_i, width_i)            (eq. 8)
        up_{i-1} = tconv4x4s2(act(conv3x3(h_i)))
    l'_T = raster(lm'_T) (B,L,S,S) --translator down path--> e_0..e_3
        g_3 = e_3, g_i = up_i + e_i;  g_i <- g_i + read_i(g_i, dictionary_i)   (eq. 9)
        up_{i-1} = tconv4x4s2(act(conv3x3(g_i)));  level 0: tconv -> 3 channels, tanh
    y = (out + 1) / 2  (B,3,S,S) in [0, 1]

The dictionaries depend on (x_T, l_T) only: :meth:`FDGAN.extract` runs once per target
and :meth:`FDGAN.translate` once per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facegeo.pipeline import Conditioning

from ..common.blocks import make_norm
from ..common.feature_dictionary import DICTIONARY_KINDS, DictionaryReader, DictionaryWriter
from ..common.model import ReenactmentModel, check_images, resize_images
from ..common.patch_critic import ConvDownPath
from ..common.registry import register_model

__all__ = ["LANDMARK_ENCODINGS", "FRONT_ENDS", "landmark_image", "landmark_channels",
           "scale_landmarks", "FDGAN", "FDGANSource", "LDNetFDGAN"]

#: landmark image encodings (facegeo.raster): coloured part lines (the paper's drawings),
#: one line channel per part, one Gaussian heat-map per landmark
LANDMARK_ENCODINGS = {"lines": 3, "parts": 9, "heatmaps": 68}
#: where the new landmarks come from at inference: LD-Net (paper), the exact 3DMM
#: recombination of the pipeline, or the driver's raw landmarks (identity-leak baseline)
FRONT_ENDS = ("ldnet", "3dmm", "raw")


def landmark_channels(encoding: str) -> int:
    """Channels of a landmark image encoding (lines 3, parts 9, heatmaps 68)."""
    if encoding not in LANDMARK_ENCODINGS:
        raise ValueError(f"unknown landmark encoding {encoding!r}; expected one of "
                         f"{sorted(LANDMARK_ENCODINGS)}")
    return LANDMARK_ENCODINGS[encoding]


def landmark_image(points: torch.Tensor, size: int, encoding: str = "lines", *,
                   thickness: float = 1.0, sigma: float = 2.0) -> torch.Tensor:
    """Rasterize (B, 68, 2) pixel landmarks of an S x S image with :mod:`facegeo.raster`
    into (B, L, S, S) in [-1, 1] (L = :func:`landmark_channels`): ``lines``
    (:func:`~facegeo.raster.landmarks.draw_landmark_lines`, black background), ``parts``
    (:func:`~facegeo.raster.landmarks.part_maps`), ``heatmaps``
    (:func:`~facegeo.raster.landmarks.heatmaps`, peak 1). NaN landmarks are left out."""
    from facegeo.raster.landmarks import draw_landmark_lines, heatmaps, part_maps

    ch = landmark_channels(encoding)
    if points.dim() != 3 or points.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (B, 68, 2), got {tuple(points.shape)}")
    p = points.float()
    with torch.autocast(p.device.type, enabled=False):
        if encoding == "heatmaps":
            return heatmaps(p, size, size, sigma=sigma, missing="skip") * 2 - 1
        # lines cover nothing farther than thickness / 2 + 0.5 from a segment: rasterize
        # only the box around the points (the same pixels, a fraction of the work)
        fin = p[torch.isfinite(p).all(-1)]
        img = p.new_zeros(p.shape[0], ch, size, size)
        if fin.numel() == 0:
            return img * 2 - 1
        pad = thickness / 2 + 1.0
        lo = (fin.amin(0) - pad).floor().clamp(0, size - 1).long().tolist()
        hi = (fin.amax(0) + pad).ceil().clamp(0, size - 1).long().tolist()
        if hi[0] >= lo[0] and hi[1] >= lo[1]:
            h, w = hi[1] - lo[1] + 1, hi[0] - lo[0] + 1
            q = p - p.new_tensor([float(lo[0]), float(lo[1])])
            draw = draw_landmark_lines if encoding == "lines" else part_maps
            img[:, :, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = draw(q, h, w, thickness=thickness,
                                                                missing="skip")
    return img * 2 - 1


def scale_landmarks(points: torch.Tensor, from_size: int, to_size: int) -> torch.Tensor:
    """Pixel landmarks of an ``from_size`` square crop in a ``to_size`` one (pixel centres
    at integers: ``(p + 0.5) to / from - 0.5``). (..., 2) -> (..., 2)."""
    if from_size == to_size:
        return points
    return (points + 0.5) * (to_size / from_size) - 0.5


class _UpLevel(nn.Module):
    """``conv3x3 -> norm -> act -> tconv4x4 s2 (-> norm -> act)`` of one up level."""

    def __init__(self, width: int, out: int, norm: str, slope: float, last: bool):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.norm = make_norm(norm, width)
        self.up = nn.ConvTranspose2d(width, out, 4, stride=2, padding=1)
        self.up_norm = nn.Identity() if last else make_norm(norm, out)
        self.slope, self.last = slope, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm(self.conv(x)), self.slope)
        x = self.up(x)
        return x if self.last else F.leaky_relu(self.up_norm(x), self.slope)


class FDGAN(nn.Module):
    """Extractor-translator of FD-GAN (supplement sec. 6).

    Args:
        widths: features (= dictionary row length) per level, highest resolution first
            (paper: (32, 64, 128, 256)).
        rows: dictionary rows per level (paper: (512, 256, 128, 64)).
        tag_dim: read/write tag length (paper: 32).
        landmark_channels: L, channels of a landmark image.
        dictionary: ``full`` (the paper), ``mean`` (FD-GAN-1) or ``adain`` (Table 3).
        norm: normalization after each convolution (the paper names none).
        slope: LeakyReLU slope.

    The extractor's level-0 conv3x3 and transposed conv would feed nothing (the extractor
    ends in its last writer) and are not built.

    forward(image (B,3,S,S) in [-1,1], landmarks (B,L,S,S), new_landmarks (B,L,S,S))
    -> (B,3,S,S) in [-1,1]; S divisible by 2^len(widths).
    """

    def __init__(self, widths=(32, 64, 128, 256), rows=(512, 256, 128, 64), tag_dim: int = 32,
                 landmark_channels: int = 3, dictionary: str = "full", norm: str = "none",
                 slope: float = 0.2):
        super().__init__()
        widths, rows = tuple(int(w) for w in widths), tuple(int(r) for r in rows)
        if len(widths) != len(rows) or not widths:
            raise ValueError(f"widths {widths} and rows {rows} need one entry per level")
        if dictionary not in DICTIONARY_KINDS:
            raise ValueError(f"unknown dictionary {dictionary!r}; expected {DICTIONARY_KINDS}")
        self.widths, self.rows, self.tag_dim = widths, rows, int(tag_dim)
        self.landmark_channels, self.dictionary = int(landmark_channels), dictionary
        n = len(widths)
        self.extractor_down = ConvDownPath(3 + self.landmark_channels, widths, norm, slope)
        self.translator_down = ConvDownPath(self.landmark_channels, widths, norm, slope)
        self.writers = nn.ModuleList(DictionaryWriter(w, r, w, tag_dim, dictionary)
                                     for w, r in zip(widths, rows))
        self.readers = nn.ModuleList(DictionaryReader(w, r, tag_dim, dictionary)
                                     for w, r in zip(widths, rows))
        # extractor up levels 1..n-1 (level 0 ends with its writer)
        self.extractor_up = nn.ModuleList(
            [nn.Identity()] + [_UpLevel(widths[i], widths[i - 1], norm, slope, False)
                               for i in range(1, n)])
        self.translator_up = nn.ModuleList(
            _UpLevel(widths[i], widths[i - 1] if i else 3, norm, slope, i == 0)
            for i in range(n))

    @property
    def levels(self) -> int:
        return len(self.widths)

    def extract(self, image: torch.Tensor, landmarks: torch.Tensor) -> list[torch.Tensor]:
        """The feature dictionaries of a target: (B,3,S,S), (B,L,S,S) in [-1, 1] -> list
        (highest resolution first) of (B, rows_i, widths_i) (one row for mean / adain)."""
        if image.shape[0] != landmarks.shape[0] or image.shape[-2:] != landmarks.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape)} and landmark image "
                             f"{tuple(landmarks.shape)} must share batch and size")
        d = self.extractor_down(torch.cat([image, landmarks.to(image)], 1))
        dicts: list[torch.Tensor | None] = [None] * self.levels
        h = d[-1]
        for i in reversed(range(self.levels)):
            if i < self.levels - 1:
                h = h + d[i]
            dicts[i] = self.writers[i](h)
            if i > 0:
                h = self.extractor_up[i](h)
        return dicts

    def translate(self, new_landmarks: torch.Tensor, dictionaries: list[torch.Tensor]
                  ) -> torch.Tensor:
        """(B,L,S,S) landmark image + :meth:`extract`'s dictionaries (batch B, or 1 to
        broadcast) -> (B,3,S,S) in [-1, 1]."""
        if len(dictionaries) != self.levels:
            raise ValueError(f"need {self.levels} dictionaries, got {len(dictionaries)}")
        b = new_landmarks.shape[0]
        e = self.translator_down(new_landmarks)
        g = e[-1]
        for i in reversed(range(self.levels)):
            if i < self.levels - 1:
                g = g + e[i]
            dic = dictionaries[i]
            if dic.shape[0] == 1 and b > 1:
                dic = dic.expand(b, -1, -1)
            g = self.readers[i](g, dic)
            g = self.translator_up[i](g)
        return torch.tanh(g)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor,
                new_landmarks: torch.Tensor) -> torch.Tensor:
        return self.translate(new_landmarks, self.extract(image, landmarks))


@dataclass
class FDGANSource:
    """What :meth:`LDNetFDGAN.encode_source` computes once per target.

    Attributes:
        dictionaries: per level (1, rows_i, widths_i).
        landmarks: (1, 68, 2) target landmarks in ``image_size`` pixels.
        crop_size: side of the caller's crops (outputs are returned at it; driving
            landmarks are read in its pixels).
        id_code: (1, 128) LD-Net identity code of the target (front end ``ldnet``), else None.
        center, half: the target landmarks' square box (LD-Net normalisation), or None.
        conditioning: the source :class:`~facegeo.pipeline.Conditioning`.
    """

    dictionaries: list[torch.Tensor]
    landmarks: torch.Tensor
    crop_size: int
    id_code: torch.Tensor | None = None
    center: torch.Tensor | None = None
    half: torch.Tensor | None = None
    conditioning: Any = None


@register_model("ldnet_fdgan", paper="Xiang et al., One-Shot Identity-Preserving Portrait "
                "Reenactment (2020)",
                description="LD-Net landmark disentanglement + feature-dictionary GAN (model 4)")
class LDNetFDGAN(ReenactmentModel):
    """LD-Net (shipped :mod:`facegeo.disentangle` weights, not trained here) or the exact
    3DMM recombination, then FD-GAN.

    Args (the configs in ``configs/*.yaml`` give the values):
        image_size: S (paper 256).
        widths, rows, tag_dim, dictionary, norm, slope: :class:`FDGAN`.
        landmark_encoding: ``lines`` | ``parts`` | ``heatmaps`` (:func:`landmark_image`).
        line_thickness: line width in pixels at S (None: max(1, S / 128)).
        heatmap_sigma: Gaussian sigma in pixels at S (``heatmaps``).
        front_end: ``ldnet`` | ``3dmm`` | ``raw`` (:data:`FRONT_ENDS`): decides
            :attr:`requires` (``landmarks68`` for ldnet/raw, ``disentangled_landmarks`` for
            3dmm) and :attr:`modes` (3dmm: absolute and relative, computed by the pipeline;
            ldnet, raw: absolute).
        ldnet_weights: LD-Net weights file (None: the shipped ``data/ldnet``). LD-Net is
            loaded on first use and is not part of this model's state dict.

    forward(batch): ``source`` (B,3,S,S) (or (B,n,3,S,S): the first), ``driving``
    (B,3,S,S) (only for its shape), ``source_landmarks`` (B,68,2) (or (B,n,68,2)),
    ``driving_landmarks`` (B,68,2), pixels of S; optional ``landmark_image_source`` /
    ``landmark_image_driving`` (B,L,S,S) replace the rasterization of those landmarks
    (e.g. cached for a fixed batch). Returns ``prediction`` (B,3,S,S) in [0, 1],
    ``landmark_image_source`` / ``landmark_image_driving`` (B,L,S,S) in [-1, 1].
    """

    requires = frozenset({"landmarks68"})
    modes = ("absolute",)

    def __init__(self, image_size: int = 256, widths=(32, 64, 128, 256),
                 rows=(512, 256, 128, 64), tag_dim: int = 32, dictionary: str = "full",
                 norm: str = "none", slope: float = 0.2, landmark_encoding: str = "lines",
                 line_thickness: float | None = None, heatmap_sigma: float = 2.0,
                 front_end: str = "ldnet", ldnet_weights: str | None = None):
        super().__init__()
        self.image_size = int(image_size)
        if self.image_size % 2 ** len(widths):
            raise ValueError(f"image_size {image_size} must be divisible by "
                             f"{2 ** len(widths)} ({len(widths)} levels)")
        self.landmark_encoding = landmark_encoding
        self.line_thickness = float(line_thickness) if line_thickness is not None else max(
            1.0, self.image_size / 128)
        self.heatmap_sigma = float(heatmap_sigma)
        self.fdgan = FDGAN(widths, rows, tag_dim, landmark_channels(landmark_encoding),
                           dictionary, norm, slope)
        self.ldnet_weights = ldnet_weights
        self.set_front_end(front_end)

    # ----------------------------------------------------------------- front end
    def set_front_end(self, front_end: str) -> LDNetFDGAN:
        """Choose where the new landmarks come from (:data:`FRONT_ENDS`); updates
        :attr:`requires` and :attr:`modes`. Returns self."""
        if front_end not in FRONT_ENDS:
            raise ValueError(f"unknown front_end {front_end!r}; expected one of {FRONT_ENDS}")
        self.front_end = front_end
        if front_end == "3dmm":
            self.requires = frozenset({"disentangled_landmarks"})
            self.modes = ("absolute", "relative")
        else:
            self.requires = frozenset({"landmarks68"})
            self.modes = ("absolute",)
        return self

    def ldnet(self):
        """The LD-Net (:func:`facegeo.disentangle.load_ldnet`, cached, frozen) on this
        model's device."""
        from facegeo.disentangle import load_ldnet

        return load_ldnet(self.ldnet_weights, device=self.device)

    # ----------------------------------------------------------------- pieces
    def landmark_image(self, points: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) pixels of S -> (B, L, S, S) in [-1, 1] (this model's encoding)."""
        return landmark_image(points, self.image_size, self.landmark_encoding,
                              thickness=self.line_thickness, sigma=self.heatmap_sigma)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        src, drv = batch["source"], batch["driving"]
        lm_s, lm_d = batch.get("source_landmarks"), batch.get("driving_landmarks")
        if lm_s is None or lm_d is None:
            raise ValueError("ldnet_fdgan trains on landmarks: the batch needs "
                             "'source_landmarks' and 'driving_landmarks' (data.require_"
                             "landmarks: true, preprocessed with `apps/train.py preprocess`)")
        if src.dim() == 5:
            src = src[:, 0]
        if lm_s.dim() == 4:
            lm_s = lm_s[:, 0]
        check_images(src, "source")
        check_images(drv, "driving")
        s = self.image_size
        if src.shape[-2:] != (s, s) or drv.shape[-2:] != (s, s):
            raise ValueError(f"source {tuple(src.shape)} and driving {tuple(drv.shape)} must "
                             f"be {s} x {s} (data.image_size = model image_size)")
        l_s, l_d = batch.get("landmark_image_source"), batch.get("landmark_image_driving")
        l_s = self.landmark_image(lm_s) if l_s is None else l_s
        l_d = self.landmark_image(lm_d) if l_d is None else l_d
        out = self.fdgan(src * 2 - 1, l_s.to(src), l_d.to(src))
        return {"prediction": (out + 1) / 2, "landmark_image_source": l_s,
                "landmark_image_driving": l_d}

    def extra_losses(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        """``rec``: eq. 12's ``|T(x_T, l_T, l'_T) - x'_T|^2`` on [-1, 1] pixels (mean over
        pixels and channels, 4x the mse of [0, 1] images)."""
        pred, target = out["prediction"].float(), batch["driving"].float()
        return {"rec": ((pred - target) * 2).pow(2).mean()}

    def training_task(self, config: dict):
        from .task import FDGANTask

        return FDGANTask(config)

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def encode_source(self, sources) -> FDGANSource:
        """The target's dictionaries (and LD-Net identity code): once per target.
        ``sources``: a :class:`~facegeo.pipeline.Conditioning` with ``image`` (1, 3, H, H)
        and ``landmarks68`` (1, 68, 2) crop pixels (or an :class:`FDGANSource`, returned
        as is)."""
        if isinstance(sources, FDGANSource):
            return sources
        if not isinstance(sources, Conditioning):
            raise TypeError("ldnet_fdgan needs the source's landmarks: pass a Conditioning "
                            "with image and landmarks68 (the pipeline computes them)")
        self.check_sources(sources)
        img = sources.get("image")
        check_images(img, "source image")
        if img.shape[-1] != img.shape[-2]:
            raise ValueError(f"source crops must be square, got {tuple(img.shape[-2:])}")
        crop = int(img.shape[-1])
        lm = scale_landmarks(sources.get("landmarks68")[:1].float(), crop, self.image_size)
        lm = lm.to(self.device)
        was = self.training
        self.eval()
        try:
            x = self.prepare_images(img[:1]) * 2 - 1
            dicts = self.fdgan.extract(x, self.landmark_image(lm).to(x))
        finally:
            self.train(was)
        state = FDGANSource(dicts, lm, crop, conditioning=sources)
        if self.front_end == "ldnet":
            from facegeo.disentangle import normalize_landmarks

            net = self.ldnet()
            t_n, state.center, state.half = normalize_landmarks(lm)
            state.id_code = net.id_code(t_n.to(next(net.parameters()).dtype))
        return state

    def driving_landmarks(self, state: FDGANSource, driving: Conditioning,
                          front_end: str | None = None) -> torch.Tensor:
        """The new landmarks lm'_T (B, 68, 2) in pixels of S from the front end."""
        fe = front_end or self.front_end
        if fe not in FRONT_ENDS:
            raise ValueError(f"unknown front_end {fe!r}; expected one of {FRONT_ENDS}")
        c = state.crop_size
        if fe == "3dmm":
            return scale_landmarks(driving.get("disentangled_landmarks").float(), c,
                                   self.image_size).to(self.device)
        d = scale_landmarks(driving.get("landmarks68").float(), c, self.image_size)
        d = d.to(self.device)
        if fe == "raw":
            return d
        from facegeo.disentangle import denormalize_landmarks, normalize_landmarks

        net = self.ldnet()
        if state.id_code is None:   # encoded under another front end
            t_n, state.center, state.half = normalize_landmarks(state.landmarks)
            state.id_code = net.id_code(t_n.to(next(net.parameters()).dtype))
        dt = state.id_code.dtype
        b = d.shape[0]
        r = net.generate(net.pose_code(normalize_landmarks(d)[0].to(dt)),
                         state.id_code.expand(b, -1)).float()
        r = normalize_landmarks(r)[0]     # the output box is exactly the target's
        return denormalize_landmarks(r, state.center.expand(b, 2), state.half.expand(b))

    def _reenact(self, sources: FDGANSource, driving: Conditioning, *, mode: str,
                 front_end: str | None = None, return_all: bool = False):
        """Frames (B, 3, c, c) at the source crop size c (or a dict with ``prediction``,
        ``landmarks`` (B, 68, 2) pixels of S, ``landmark_image`` with ``return_all``)."""
        lm = self.driving_landmarks(sources, driving, front_end)
        limg = self.landmark_image(lm)
        p = next(self.parameters())
        out = (self.fdgan.translate(limg.to(p), sources.dictionaries) + 1) / 2
        out = resize_images(out, sources.crop_size).clamp(0, 1)
        if return_all:
            return {"prediction": out, "landmarks": lm, "landmark_image": limg}
        return out

    def reenact(self, sources, driving, *, mode: str | None = None, **kw) -> torch.Tensor:
        """As :meth:`ReenactmentModel.reenact`; ``driving`` must be a
        :class:`~facegeo.pipeline.Conditioning` with the front end's landmarks (the model
        reads no driving pixels)."""
        if isinstance(driving, Conditioning) and driving.image is not None:
            driving = replace(driving, image=None)   # unused: not resized
        return super().reenact(sources, driving, mode=mode, **kw)
