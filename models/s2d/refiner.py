"""Landmark refiner for video: a DSNT heat-map network trained with supervision by
registration (S2D section 3.3, Table 5).

The paper improves its landmarks on video by (a) a heat-map network (FAN4) whose heat-maps
become coordinates through DSNT (Nibali et al. 2018, a parameter-free differentiable
expectation) and (b) fine-tuning it on videos with a registration loss (SBR, Dong et al.
CVPR 2018): a detection at frame t, carried to frame t+1 by optical flow, must agree with
the detection at t+1. Neither FAN4 weights nor WFLW are available here, so the refiner
starts from pseudo-labels: the tracked, One-Euro-smoothed dlib landmarks that
``apps/train.py preprocess`` stores with every corpus clip.

* :class:`LandmarkRefiner`: 128x128 face crop -> 68 normalized heat-maps (32x32, spatial
  softmax) -> DSNT coordinates (sub-pixel: an expectation over the map). Two stem
  DownBlock2d + a 3-level FOMM hourglass from :mod:`facegeo_models.common.blocks`.
* :meth:`LandmarkRefiner.refine`: (T, 3, H, W) frames + initial (T, 68, 2) landmarks (any
  detector or the tracker; they only place the crop box, smoothed over time) -> refined
  (T, 68, 2) image-pixel landmarks.
* Training: :func:`train_refiner` (``python apps/train.py refiner ...``): stage ``dsnt``
  regresses the pseudo-labels (Euclidean distance in normalized crop coordinates + the DSNT
  Jensen-Shannon regularizer, sigma one heat-map cell, weight 1 as Nibali et al.); stage
  ``sbr`` adds the registration loss on consecutive frame pairs, with forward and backward
  optical flow (OpenCV DIS) and the forward-backward check selecting the points whose
  flow is trusted (Dong et al. keep tracks with a small forward-backward error; threshold
  1 crop pixel here).
* Augmentations (the same for both frames of a pair): box shift +-5 % and scale +-10 % of
  the side, rotation +-15 deg, horizontal flip (landmark order mirrored), colour jitter.

Coordinates: crops follow :func:`facegeo.landmarks.crops.crop_matrix`; network outputs are
``grid_sample`` normalized crop coordinates (:mod:`facegeo.coords`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegeo.coords import normalized_to_pixel, pixel_to_normalized
from facegeo.landmarks.crops import (
    apply_affine,
    clip_boxes,
    crop_matrix,
    face_boxes,
    invert_affine,
    warp_affine,
)

from ..common.blocks import DownBlock2d, Hourglass, dsnt, dsnt_regularizer

__all__ = ["RefinerConfig", "LandmarkRefiner", "crop_transforms",
           "flow_pairs", "sbr_loss", "RefinerData", "relabel_corpus", "train_refiner",
           "load_refiner", "save_refiner"]

#: crop box around the initial landmarks (a tighter box than the 256 training crops: the
#: refiner sees the face, not the background)
BOX_MARGIN = 0.25
BOX_SHIFT_UP = 0.05


@dataclass
class RefinerConfig:
    """Network size: ``stem_blocks`` DownBlock2d halve the crop to the heat-map side
    ``crop_size / 2 ** stem_blocks``, which must be divisible by ``2 ** num_blocks``."""
    num_points: int = 68
    crop_size: int = 128
    stem_blocks: int = 2
    block_expansion: int = 32
    num_blocks: int = 3
    max_features: int = 128

    @property
    def heatmap_size(self) -> int:
        return self.crop_size // 2 ** self.stem_blocks


def crop_transforms(boxes: torch.Tensor, size: int, angles: torch.Tensor | None = None,
                    flip: torch.Tensor | None = None) -> torch.Tensor:
    """Image pixels -> crop pixels for (B, 3) boxes, optionally rotated by ``angles``
    (B,) radians about the crop centre and mirrored where ``flip`` (B,) bool. (B, 2, 3)."""
    m = crop_matrix(boxes, size)
    c = size / 2 - 0.5
    b = m.shape[0]
    r = torch.eye(3, dtype=m.dtype).repeat(b, 1, 1)
    if angles is not None:
        co, si = torch.cos(angles), torch.sin(angles)
        rot = torch.stack([torch.stack([co, -si], -1), torch.stack([si, co], -1)], -2)
        r[:, :2, :2] = rot
        r[:, :2, 2] = c - (rot @ torch.full((b, 2, 1), c, dtype=m.dtype))[..., 0]
    if flip is not None:
        fl = torch.eye(3, dtype=m.dtype).repeat(b, 1, 1)
        fl[flip, 0, 0] = -1
        fl[flip, 0, 2] = 2 * c
        r = fl @ r
    full = torch.cat([m, torch.tensor([[[0, 0, 1.0]]], dtype=m.dtype).expand(b, 1, 3)], 1)
    return (r @ full)[:, :2]


class LandmarkRefiner(nn.Module):
    """DSNT landmark network on face crops.

    ``forward(crops)``: (B, 3, S, S) in [0, 1] -> (heat-maps (B, K, h, h) with
    h = S / 2 ** stem_blocks, each summing to 1; points (B, K, 2) normalized crop
    coordinates)."""

    def __init__(self, config: RefinerConfig | None = None):
        super().__init__()
        self.config = c = config or RefinerConfig()
        if c.crop_size % 2 ** (c.stem_blocks + c.num_blocks):
            raise ValueError(f"crop_size {c.crop_size} must be divisible by "
                             f"2 ** (stem_blocks + num_blocks) = "
                             f"{2 ** (c.stem_blocks + c.num_blocks)}")
        chans = [3] + [max(8, c.block_expansion // 2 ** (c.stem_blocks - 1 - i))
                       for i in range(c.stem_blocks)]
        self.stem = nn.Sequential(*[DownBlock2d(chans[i], chans[i + 1])
                                    for i in range(c.stem_blocks)])
        self.hourglass = Hourglass(c.block_expansion, c.block_expansion, c.num_blocks,
                                   c.max_features)
        self.head = nn.Conv2d(self.hourglass.out_filters, c.num_points, 1)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.config.crop_size
        if crops.dim() != 4 or crops.shape[1:] != (3, s, s):
            raise ValueError(f"crops must be (B, 3, {s}, {s}), got {tuple(crops.shape)}")
        logits = self.head(self.hourglass(self.stem(crops * 2 - 1)))
        b, k, h, w = logits.shape
        prob = logits.flatten(2).softmax(-1).view(b, k, h, w)
        return prob, dsnt(prob)

    def boxes(self, landmarks: torch.Tensor, mode: str = "smooth",
              sigma: float = 2.0) -> torch.Tensor:
        """(T, 68, 2) initial landmarks -> (T, 3) crop boxes, smoothed over time
        (:func:`facegeo.landmarks.crops.clip_boxes`)."""
        return clip_boxes(face_boxes(landmarks, margin=BOX_MARGIN, shift_up=BOX_SHIFT_UP),
                          mode=mode, sigma=sigma)

    @torch.no_grad()
    def refine(self, frames, landmarks: torch.Tensor, *, box_mode: str = "smooth",
               sigma: float = 2.0, batch_size: int = 32) -> torch.Tensor:
        """Refined landmarks of a clip.

        Args:
            frames: the T frames: a (T, 3, H, W) float tensor in [0, 1], a (T, H, W, 3)
                uint8 tensor/array, or an iterable of (3, H, W) float tensors / (H, W, 3)
                uint8 arrays (read in chunks of ``batch_size``: a long video is never held
                in memory).
            landmarks: (T, 68, 2) initial image-pixel landmarks (detector or tracker);
                they only place the crop boxes.
            box_mode, sigma: temporal consistency of the boxes (``clip_boxes``).

        Returns:
            (T, 68, 2) image-pixel landmarks. The signature fits
            ``facegeo.pipeline.ReenactmentPipeline(refine_landmarks=...)``.
        """
        k = self.config.num_points
        if landmarks.dim() != 3 or landmarks.shape[1:] != (k, 2):
            raise ValueError(f"landmarks must be (T, {k}, 2), got {tuple(landmarks.shape)}")
        if not bool(torch.isfinite(landmarks).all()):
            raise ValueError("initial landmarks contain NaN/inf (frames without a face)")
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        s = self.config.crop_size
        n = landmarks.shape[0]
        m = crop_transforms(self.boxes(landmarks.float(), box_mode, sigma), s)
        out, t = [], 0
        for chunk in _chunks(frames, batch_size):
            if t + len(chunk) > n:
                raise ValueError(f"more frames than the {n} landmark rows")
            mm = m[t:t + len(chunk)]
            crops = warp_affine(chunk, mm, (s, s))
            _, pn = self(crops.to(dev))
            pc = normalized_to_pixel(pn.float().cpu(), (s, s))
            out.append(apply_affine(invert_affine(mm), pc))
            t += len(chunk)
        if t != n:
            raise ValueError(f"{t} frames for {n} landmark rows")
        self.train(was)
        return torch.cat(out)


def _as_frame(f) -> torch.Tensor:
    """(3, H, W) float tensor or (H, W, 3) uint8 array/tensor -> (3, H, W) float in [0, 1]."""
    x = torch.as_tensor(np.asarray(f) if not isinstance(f, torch.Tensor) else f)
    if x.dim() == 3 and x.shape[-1] == 3 and x.dtype == torch.uint8:
        return x.permute(2, 0, 1).float() / 255
    if x.dim() == 3 and x.shape[0] == 3 and x.is_floating_point():
        return x.float()
    raise ValueError(f"frames must be (3, H, W) float or (H, W, 3) uint8, got "
                     f"{tuple(x.shape)} {x.dtype}")


def _chunks(frames, size: int):
    """(B, 3, H, W) float batches of ``frames`` (a batch tensor/array or an iterable)."""
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        if frames.ndim != 4:
            raise ValueError(f"frames must be (T, 3, H, W) or (T, H, W, 3), got "
                             f"{tuple(frames.shape)}")
        frames = list(frames) if isinstance(frames, np.ndarray) else frames.unbind(0)
    buf = []
    for f in frames:
        buf.append(_as_frame(f))
        if len(buf) == size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)


# ----------------------------------------------------------------------------- SBR
def _dis():
    import cv2
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def flow_pairs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (a -> b) and backward (b -> a) optical flow of (B, 3, S, S) crops in [0, 1]
    (OpenCV DIS, medium preset, on 8-bit gray). Returns two (B, 2, S, S) flows in pixels
    (x, y): ``a(p) ~ b(p + forward(p))``."""
    dis = _dis()

    def gray(x):
        g = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).clamp(0, 1)
        return (g * 255).round().to(torch.uint8).numpy()

    ga, gb = gray(a), gray(b)
    fw, bw = [], []
    for x, y in zip(ga, gb):
        fw.append(dis.calc(x, y, None))
        bw.append(dis.calc(y, x, None))
    f = torch.from_numpy(np.stack(fw)).permute(0, 3, 1, 2).float()
    r = torch.from_numpy(np.stack(bw)).permute(0, 3, 1, 2).float()
    return f, r


def _sample(flow: torch.Tensor, pn: torch.Tensor) -> torch.Tensor:
    """(B, 2, S, S) flow at (B, K, 2) normalized points -> (B, K, 2) pixels (bilinear,
    differentiable in the points)."""
    return F.grid_sample(flow, pn[:, :, None, :], mode="bilinear", padding_mode="border",
                         align_corners=False)[..., 0].transpose(1, 2)


def sbr_loss(p0: torch.Tensor, p1: torch.Tensor, forward: torch.Tensor,
             backward: torch.Tensor, fb_threshold: float = 1.0) -> tuple[torch.Tensor, float]:
    """Registration loss of two detections of consecutive crops.

    Args:
        p0, p1: (B, K, 2) predicted points in frames t and t+1, crop pixels.
        forward, backward: (B, 2, S, S) flows t -> t+1 and t+1 -> t (:func:`flow_pairs`).
        fb_threshold: forward-backward error (crop pixels) above which a point's flow is
            not trusted (it is left out of the loss).

    Returns:
        (loss: mean over the trusted terms |p1 - (p0 + F(p0))| and |p0 - (p1 + B(p1))|,
        in normalized units (pixels / (S / 2)); fraction of the terms trusted).
    """
    s = forward.shape[-1]
    size = (s, s)
    n0, n1 = pixel_to_normalized(p0, size), pixel_to_normalized(p1, size)
    q1 = p0 + _sample(forward, n0)                          # t carried to t+1
    q0 = p1 + _sample(backward, n1)                         # t+1 carried to t
    with torch.no_grad():
        back = q1 + _sample(backward, pixel_to_normalized(q1, size))
        fwd = q0 + _sample(forward, pixel_to_normalized(q0, size))
        ok0 = ((back - p0).norm(dim=-1) < fb_threshold).float()
        ok1 = ((fwd - p1).norm(dim=-1) < fb_threshold).float()
    e = ((p1 - q1).norm(dim=-1) * ok0 + (p0 - q0).norm(dim=-1) * ok1) / (s / 2)
    n = (ok0 + ok1).sum().clamp_min(1.0)
    return e.sum() / n, float((ok0.mean() + ok1.mean()) / 2)


# ----------------------------------------------------------------------------- data
class RefinerData:
    """Random frames (or consecutive pairs) and pseudo-label landmarks of a preprocessed
    corpus split: a sampler over :class:`facegeo_models.common.data.VideoFolderDataset`
    (``root/<split>/<clip>/`` folders from ``apps/train.py preprocess``, with their
    conditioning-version checks), reading the frames it draws from disk.

    Args:
        root: the preprocessed root.
        split: ``"train"`` or ``"test"``.
        max_frames: use only the first ``max_frames`` frames of each clip.

    Raises:
        FileNotFoundError: no such split, or a clip without cached landmarks.
    """

    def __init__(self, root: str | Path, split: str = "train", max_frames: int | None = None):
        from ..common.data import VideoFolderDataset

        if not (Path(root) / split).is_dir():
            raise FileNotFoundError(f"no {split!r} split under {root} (expected "
                                    f"{Path(root) / split}/<clip>/ folders from "
                                    "apps/train.py preprocess)")
        self.dataset = VideoFolderDataset(root, split, conditioning=["landmarks"])
        ds = self.dataset
        self.names = [ds.video_name(v) for v in range(ds.num_videos())]
        self.lengths = [ds.num_frames(v) if max_frames is None else
                        min(ds.num_frames(v), max_frames) for v in range(ds.num_videos())]

    @property
    def num_clips(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return sum(self.lengths)

    def sample(self, batch: int, rng: np.random.Generator, pairs: bool = False):
        """Random frames (or consecutive pairs) -> (images (B, F, 3, H, W) float in [0, 1],
        landmarks (B, F, 68, 2) crop pixels) with F = 2 for pairs, else 1."""
        nf = 2 if pairs else 1
        imgs, lms = [], []
        for _ in range(batch):
            v = int(rng.integers(self.num_clips))
            t = int(rng.integers(self.lengths[v] - (nf - 1)))
            idx = list(range(t, t + nf))
            imgs.append(self.dataset.load_frames(v, idx))
            lms.append(self.dataset.load_landmarks(v, idx))
        return torch.stack(imgs), torch.stack(lms)


def relabel_corpus(src: str | Path, dst: str | Path, weights: str | Path,
                   splits: tuple[str, ...] = ("train", "test")) -> Path:
    """A copy of a preprocessed corpus whose landmarks are the refiner's, for training s2d
    on the landmarks it is run with (the paper's Table 5): every other file of each clip
    folder is a symbolic link to the original; ``conditioning.json`` names the new
    landmark source. Clips are read by
    :class:`facegeo_models.common.data.VideoFolderDataset` (its conditioning checks: a clip
    without cached landmarks is a FileNotFoundError naming it). Resumable (finished clips
    are skipped); shows progress.

    Args:
        src: root written by ``apps/train.py preprocess`` (``<split>/<clip>/``).
        dst: new root (created).
        weights: refiner ``.safetensors``.
        splits: the split folders of ``src`` to copy (absent ones are skipped).

    Returns:
        ``dst``.
    """
    import os

    from tqdm import tqdm

    from ..common.data import VideoFolderDataset

    src, dst = Path(src), Path(dst)
    ref = load_refiner(weights)
    for split in splits:
        if not (src / split).is_dir():
            continue
        ds = VideoFolderDataset(src, split, conditioning=["landmarks"])
        for v in tqdm(range(ds.num_videos()), desc=f"relabel {split}", unit="clip"):
            c = ds.items[v]
            o = dst / split / c.name
            if (o / "conditioning.json").is_file():
                continue
            rec = json.loads(json.dumps(ds.records[v]))     # a copy to edit
            entry = rec.setdefault("items", {}).setdefault("landmarks", {})
            lm_name = str(entry.get("file", "landmarks.npy"))
            o.mkdir(parents=True, exist_ok=True)
            for f in c.iterdir():
                keep = f.name not in (lm_name, "conditioning.json")
                if keep and not (o / f.name).exists():
                    os.symlink(f.resolve(), o / f.name)
            n = ds.num_frames(v)
            frames = (ds.load_frames(v, [t])[0] for t in range(n))
            lm = ds.load_landmarks(v, list(range(n)))
            np.save(o / lm_name, ref.refine(frames, lm).numpy().astype(np.float32))
            entry["source"] = (f"facegeo_models.s2d.refiner ({Path(weights).name}) on: "
                               f"{entry.get('source')}")
            tmp = o / "conditioning.json.tmp"
            tmp.write_text(json.dumps(rec, indent=1))
            tmp.replace(o / "conditioning.json")  # last: marks the clip done
    for f in src.iterdir():
        if f.is_file() and not (dst / f.name).exists():
            dst.mkdir(parents=True, exist_ok=True)
            os.symlink(f.resolve(), dst / f.name)
    return dst


def augment(images: torch.Tensor, landmarks: torch.Tensor, size: int,
            rng: np.random.Generator, strength: float = 1.0):
    """Random crops of (B, F, 3, H, W) frames (one transform per sample, shared by its F
    frames): box from the first frame's landmarks, shift +-5 %, scale +-10 %, rotation
    +-15 deg, flip 50 %, colour jitter. Returns (crops (B, F, 3, S, S), crop-pixel
    landmarks (B, F, 68, 2), matrices (B, 2, 3))."""
    from facegeo.landmarks.conventions import FLIP_PERMUTATION_68

    from ..common.data import color_jitter

    b, nf = images.shape[:2]
    box = face_boxes(landmarks[:, 0], margin=BOX_MARGIN, shift_up=BOX_SHIFT_UP)
    u = torch.from_numpy(rng.uniform(-1, 1, (b, 4))).float() * strength
    box = torch.stack([box[:, 0] + 0.05 * u[:, 0] * box[:, 2],
                       box[:, 1] + 0.05 * u[:, 1] * box[:, 2],
                       box[:, 2] * (1 + 0.1 * u[:, 2])], -1)
    flip = torch.from_numpy(rng.random(b) < 0.5 * strength)
    m = crop_transforms(box, size, angles=u[:, 3] * math.radians(15), flip=flip)
    crops = warp_affine(images.flatten(0, 1), m.repeat_interleave(nf, 0), (size, size))
    crops = crops.view(b, nf, 3, size, size)
    lm = apply_affine(m.repeat_interleave(nf, 0), landmarks.flatten(0, 1))
    lm = lm.view(b, nf, -1, 2)
    perm = torch.tensor(FLIP_PERMUTATION_68)
    lm = torch.where(flip[:, None, None, None], lm[:, :, perm], lm)
    if strength > 0:
        jit = rng.uniform(0.8, 1.2, (b, 3))
        crops = torch.stack([color_jitter(crops[i], *map(float, jit[i])) for i in range(b)])
    return crops, lm, m


# ----------------------------------------------------------------------------- training
def save_refiner(model: LandmarkRefiner, path: str | Path, card: dict | None = None,
                 half: bool = True) -> Path:
    """fp16 (default) safetensors with the config (and an optional card) as metadata."""
    from safetensors.torch import save_file

    from facegeo.assets import atomic_write

    path = Path(path)
    sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
          for k, v in model.state_dict().items()}
    meta = {"format": "facegeo-landmark-refiner", "config": json.dumps(asdict(model.config)),
            "card": json.dumps(card or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda t: save_file(sd, str(t), metadata=meta))
    return path


def load_refiner(path: str | Path, device: str | torch.device = "cpu") -> LandmarkRefiner:
    """Load a refiner written by :func:`save_refiner` (safetensors only)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no refiner weights at {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "facegeo-landmark-refiner":
        raise ValueError(f"{path} is not a facegeo landmark refiner (metadata format "
                         f"{meta.get('format')!r})")
    model = LandmarkRefiner(RefinerConfig(**json.loads(meta["config"])))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    model.load_state_dict(sd)
    return model.to(device).eval()


def _loss(model, crops, lm, cfg: RefinerConfig, reg_weight: float):
    """Regression (+ DSNT regularizer) on (N, 3, S, S) crops and (N, 68, 2) crop-px labels.
    Returns (loss, points in crop pixels)."""
    s = cfg.crop_size
    prob, pn = model(crops)
    target = pixel_to_normalized(lm, (s, s))
    euclid = (pn - target).norm(dim=-1).mean()
    reg = dsnt_regularizer(prob, target, sigma=2.0 / cfg.heatmap_size)
    return euclid + reg_weight * reg, normalized_to_pixel(pn, (s, s)), euclid


def train_refiner(data: RefinerData, out: str | Path, *, stage: str = "dsnt", steps: int = 1000,
                  batch_size: int = 16, lr: float = 5e-4, sbr_weight: float = 1.0,
                  reg_weight: float = 1.0, init: str | Path | None = None,
                  config: RefinerConfig | None = None, seed: int = 0,
                  log_every: int = 25) -> LandmarkRefiner:
    """Train (stage ``"dsnt"``) or fine-tune with registration (stage ``"sbr"``, pairs of
    consecutive frames; half the batch size in pairs so the frame count matches).

    Writes ``out/refiner.safetensors`` (fp16) and ``out/log.jsonl`` (losses every
    ``log_every`` steps); shows a tqdm bar. Adam, cosine decay to 0.1 ``lr``."""
    from tqdm import tqdm

    if stage not in ("dsnt", "sbr"):
        raise ValueError(f"stage must be 'dsnt' or 'sbr', got {stage!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = load_refiner(init) if init else LandmarkRefiner(config)
    model.train()
    cfg = model.config
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    pairs = stage == "sbr"
    t0 = time.time()
    with open(out / "log.jsonl", "w") as log:
        bar = tqdm(range(1, steps + 1), desc=f"refiner {stage}", unit="step")
        for step in bar:
            x, lm = data.sample(batch_size // 2 if pairs else batch_size, rng, pairs=pairs)
            crops, clm, _ = augment(x, lm, cfg.crop_size, rng)
            loss, pts, euclid = _loss(model, crops.flatten(0, 1), clm.flatten(0, 1), cfg,
                                      reg_weight)
            rec = {"step": step, "loss/regression": euclid.item()}
            if pairs:
                fw, bw = flow_pairs(crops[:, 0], crops[:, 1])
                pts = pts.view(crops.shape[0], 2, -1, 2)
                reg, trusted = sbr_loss(pts[:, 0], pts[:, 1], fw, bw)
                loss = loss + sbr_weight * reg
                rec.update({"loss/sbr": reg.item(), "sbr_trusted": trusted})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % log_every == 0 or step == steps:
                rec.update({"loss/total": loss.item(), "lr": sched.get_last_lr()[0],
                            "time": round(time.time() - t0, 1)})
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{loss.item():.4f}")
    card = {"stage": stage, "steps": steps, "batch_size": batch_size, "lr": lr,
            "sbr_weight": sbr_weight if pairs else 0.0, "init": str(init) if init else None,
            "clips": data.num_clips, "frames": len(data), "seconds": round(time.time() - t0)}
    save_refiner(model, out / "refiner.safetensors", card)
    (out / "card.json").write_text(json.dumps(card, indent=1))
    return model.eval()
