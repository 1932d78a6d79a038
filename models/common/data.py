"""Video datasets of (source, driving) pairs for training the reenactment models.

Layouts (``root`` as in FOMM / FSRT's VoxCeleb):

* ``root/train/<video>/`` folders of frames (``*.png`` / ``*.jpg``, sorted by name), with
  optional ``landmarks.npy`` (T, 68, 2) float32 crop-pixel landmarks; the folders written by
  :func:`preprocess_video` hold the versioned *conditioning format*
  (``conditioning.json`` listing ``landmarks.npy``, ``boxes.npy``, ``fits.npz``; see
  :func:`read_conditioning` and docs/training.md "Preprocessed conditioning format");
* ``root/train/<video>.mp4`` (or any FFmpeg format), with optional
  ``<video>.landmarks.npy``;
* ``root/test/...`` likewise. Without ``train/`` and ``test/`` sub-folders, ``root`` is
  any folder of face videos and the split is made *by identity* (:func:`split_by_identity`).

Identities: VoxCeleb names ``id10001#<yt-id>#...`` use the part before the first ``#``;
otherwise ``root/identities.json`` (``{video name: identity}``) when present, else each
video is its own identity. ``identities=`` (config ``data.identities``) names another
mapping file: an ``identities.json`` or a corpus ``manifest.json`` (its ``items`` with
``file`` and ``identity``; see :func:`load_identity_map`). With ``with_identity`` each item
also holds ``identity``: the int64 index of its identity among the dataset's identities
sorted by name (labels for identity classifiers).

Each item is a dict::

    source             (3, S, S) or (n_src, 3, S, S) float in [0, 1]
    driving            (3, S, S)
    source_landmarks   (68, 2) or (n_src, 68, 2) pixel coordinates   (when cached)
    driving_landmarks  (68, 2)                                      (when cached)
    video_index        int;  frame_index (n_src + 1,) int64
    identity           int64 index of the video's identity (``with_identity``)
    source_box, driving_box            (3,) (cx, cy, side) source-video pixels  (requested)
    source_<fit>, driving_<fit>, id_coeffs   3DMM fit arrays (requested, see
                       :meth:`VideoFolderDataset.load_fits`)

Items are indexed by ``(index, seed)`` (see :mod:`~facegeo_models.common.sampling`): the
frame choice and the augmentation use only ``seed``, so batches are reproducible across
worker processes and resumes. A plain ``int`` index uses seed = index.

Augmentation (the same draw for every frame of an item, as FOMM): horizontal flip with
landmark mirroring (x -> S - 1 - x and left/right indices swapped), and color jitter
(brightness, contrast, saturation, hue; FSRT / FOMM use 0.1 each).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from facegeo.image_io import IMAGE_SUFFIXES
from facegeo.video import VIDEO_SUFFIXES

__all__ = [
    "color_jitter",
    "hflip_sample",
    "PairDataset",
    "TensorVideoDataset",
    "VideoFolderDataset",
    "identity_of",
    "load_identity_map",
    "split_by_identity",
    "parse_shard",
    "shard_of",
    "dataset_summary",
    "build_dataset",
    "CONDITIONING_FILE",
    "CONDITIONING_FORMAT",
    "CONDITIONING_ITEMS",
    "CONDITIONING_VERSION",
    "read_conditioning",
    "preprocess_video",
    "preprocess_folder",
]


#: Versioned record of what a preprocessed video folder holds (docs/training.md,
#: "Preprocessed conditioning format"). Folders without it are version 0.
CONDITIONING_FILE = "conditioning.json"
CONDITIONING_FORMAT = "facegeo-conditioning"
CONDITIONING_VERSION = 1
#: Items a dataset can be asked for (``conditioning=``); frames are always there.
CONDITIONING_ITEMS = ("landmarks", "boxes", "fits")
#: Per-frame arrays of ``fits.npz`` (besides the clip's ``id_coeffs`` and ``rmse``).
FIT_FRAME_ARRAYS = ("angles", "rotation", "translation", "scale", "exp_coeffs")
_DEFAULT_FILES = {"landmarks": "landmarks.npy", "boxes": "boxes.npy", "fits": "fits.npz"}


# -------------------------------------------------------------------------- augmentation
def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :])


def color_jitter(images: torch.Tensor, brightness: float = 1.0, contrast: float = 1.0,
                 saturation: float = 1.0, hue: float = 0.0) -> torch.Tensor:
    """Apply ONE colour transform to all images (..., 3, H, W) in [0, 1].

    brightness: multiply by b; contrast: blend with the mean gray level (per image) by c;
    saturation: blend with the grayscale image by s; hue: rotate the chroma (YIQ) by
    ``hue`` turns (hue in [-0.5, 0.5]). Factors 1 / hue 0 leave the image unchanged.
    Output clamped to [0, 1]."""
    x = images
    if brightness != 1.0:
        x = (x * brightness).clamp(0, 1)
    if contrast != 1.0:
        m = _gray(x).mean(dim=(-1, -2, -3), keepdim=True)
        x = (m + contrast * (x - m)).clamp(0, 1)
    if saturation != 1.0:
        g = _gray(x)
        x = (g + saturation * (x - g)).clamp(0, 1)
    if hue != 0.0:
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                               [0.211, -0.523, 0.312]], dtype=x.dtype)
        th = 2 * np.pi * hue
        rot = torch.tensor([[1, 0, 0], [0, np.cos(th), -np.sin(th)],
                            [0, np.sin(th), np.cos(th)]], dtype=x.dtype)
        m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
        x = torch.einsum("ij,...jhw->...ihw", m, x).clamp(0, 1)
    return x


def hflip_sample(images: torch.Tensor, landmarks: torch.Tensor | None):
    """Horizontal flip of (..., 3, H, W) images and (..., 68, 2) pixel landmarks
    (x -> W - 1 - x, left/right indices swapped via
    :func:`facegeo.landmarks.conventions.flip_landmarks`)."""
    images = images.flip(-1)
    if landmarks is not None:
        from facegeo.landmarks.conventions import flip_landmarks

        landmarks = flip_landmarks(landmarks, images.shape[-1])
    return images, landmarks


# ------------------------------------------------------------------------------ base
class PairDataset(Dataset):
    """(source, driving) pairs from videos. Subclasses implement :meth:`num_videos`,
    :meth:`num_frames`, :meth:`load_frames` and optionally :meth:`load_landmarks` and
    :meth:`identity`.

    Args:
        n_src: number of source frames per item (>1 for multi-source models).
        image_size: output side S (frames are resized if needed, landmarks scaled).
        augment: ``{"flip": bool, "jitter": {"brightness": .1, "contrast": .1,
            "saturation": .1, "hue": .1}}`` or None.
        repeats: items per video (per identity with ``id_sampling``) per epoch (FOMM's
            ``num_repeats``).
        max_gap: maximal frame distance between sources and driving (None: any).
        id_sampling: FOMM's identity sampling: an epoch visits every *identity* ``repeats``
            times and each item picks one of its videos at random (from the item seed), so
            identities with many videos are not over-represented.
        with_identity: add ``identity`` (int64, :meth:`identity_index`) to every item.
    """

    def __init__(self, n_src: int = 1, image_size: int | None = None,
                 augment: dict | None = None, repeats: int = 1, max_gap: int | None = None,
                 id_sampling: bool = False, with_identity: bool = False):
        if n_src < 1:
            raise ValueError(f"n_src must be >= 1, got {n_src}")
        self.n_src, self.image_size, self.repeats, self.max_gap = n_src, image_size, repeats, \
            max_gap
        self.augment = augment or {}
        self.id_sampling = id_sampling
        self.with_identity = bool(with_identity)
        self._groups: list[list[int]] | None = None
        self._id_names: list[str] | None = None

    # -- to implement
    def num_videos(self) -> int:
        raise NotImplementedError

    def num_frames(self, v: int) -> int:
        raise NotImplementedError

    def load_frames(self, v: int, idx: list[int]) -> torch.Tensor:
        """(len(idx), 3, H, W) float in [0, 1]."""
        raise NotImplementedError

    def load_landmarks(self, v: int, idx: list[int]) -> torch.Tensor | None:
        """(len(idx), 68, 2) pixel landmarks in the frames' resolution, or None."""
        return None

    def identity(self, v: int) -> str:
        return str(v)

    def video_name(self, v: int) -> str:
        return str(v)

    # -- common
    def identity_groups(self) -> list[list[int]]:
        """Video indices grouped by identity (sorted by identity name)."""
        if self._groups is None:
            groups: dict[str, list[int]] = {}
            for v in range(self.num_videos()):
                groups.setdefault(self.identity(v), []).append(v)
            self._groups = [groups[k] for k in sorted(groups)]
        return self._groups

    def identity_names(self) -> list[str]:
        """The dataset's identities, sorted by name (index = :meth:`identity_index`)."""
        if self._id_names is None:
            self._id_names = sorted({self.identity(v) for v in range(self.num_videos())})
        return self._id_names

    def identity_index(self, v: int) -> int:
        """Index of video ``v``'s identity in :meth:`identity_names`."""
        return self.identity_names().index(self.identity(v))

    def __len__(self) -> int:
        n = len(self.identity_groups()) if self.id_sampling else self.num_videos()
        return n * self.repeats

    def summary(self) -> dict:
        """Training-data summary for the model card."""
        nv = self.num_videos()
        return {"videos": nv, "frames": int(sum(self.num_frames(v) for v in range(nv))),
                "identities": len({self.identity(v) for v in range(nv)}),
                "n_src": self.n_src, "image_size": self.image_size,
                "augment": self.augment}

    def choose_frames(self, v: int, rng: np.random.Generator) -> list[int]:
        """n_src source indices then the driving index, distinct when the video allows."""
        t = self.num_frames(v)
        k = self.n_src + 1
        if t <= 0:
            raise ValueError(f"video {self.video_name(v)} has no frames")
        if self.max_gap is not None and t > self.max_gap + 1:
            start = int(rng.integers(0, t - self.max_gap))
            pool = np.arange(start, start + self.max_gap + 1)
        else:
            pool = np.arange(t)
        if len(pool) >= k:
            return [int(i) for i in rng.choice(pool, size=k, replace=False)]
        return [int(i) for i in rng.choice(pool, size=k, replace=True)]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = (key if isinstance(key, (tuple, list)) else (int(key), int(key)))
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = np.random.default_rng(int(seed))
        if self.id_sampling:
            group = self.identity_groups()[index % len(self.identity_groups())]
            v = group[int(rng.integers(len(group)))]
        else:
            v = index % self.num_videos()
        idx = self.choose_frames(v, rng)
        frames = self.load_frames(v, idx)
        lms = self.load_landmarks(v, idx)
        s = self.image_size
        resize = None
        if s is not None and frames.shape[-2:] != (s, s):
            h, w = frames.shape[-2:]
            resize = (s / w, s / h)
            frames = F.interpolate(frames, size=(s, s), mode="bilinear", align_corners=False,
                                   antialias=True).clamp(0, 1)
            if lms is not None:
                scale = torch.tensor(resize, dtype=lms.dtype)
                lms = (lms + 0.5) * scale - 0.5
        aug = self.augment
        flipped = bool(aug.get("flip") and rng.random() < 0.5)
        if flipped:
            frames, lms = hflip_sample(frames, lms)
        jit = aug.get("jitter")
        if jit:
            def f(name):
                a = float(jit.get(name, 0.0))
                return float(rng.uniform(max(0.0, 1 - a), 1 + a)) if a else 1.0
            b, c, sat = f("brightness"), f("contrast"), f("saturation")
            h = float(jit.get("hue", 0.0))
            hue = float(rng.uniform(-h, h)) if h else 0.0
            frames = color_jitter(frames, b, c, sat, hue)
        src = frames[:-1] if self.n_src > 1 else frames[0]
        item = {"source": src.contiguous(), "driving": frames[-1].contiguous(),
                "video_index": v, "frame_index": torch.tensor(idx)}
        if self.with_identity:
            item["identity"] = torch.tensor(self.identity_index(v), dtype=torch.int64)
        if lms is not None:
            item["source_landmarks"] = (lms[:-1] if self.n_src > 1 else lms[0]).float()
            item["driving_landmarks"] = lms[-1].float()
        item.update(self.extra_items(v, idx, flipped=flipped, resize=resize))
        return item

    def extra_items(self, v: int, idx: list[int], *, flipped: bool,
                    resize: tuple[float, float] | None) -> dict[str, torch.Tensor]:
        """Further per-item entries of frames ``idx`` of video ``v`` (a subclass hook):
        ``flipped`` says whether the item was mirrored, ``resize`` the (x, y) factors
        from the stored frames to ``image_size`` (None: not resized). Default: none."""
        return {}

    def _split_frames(self, name: str, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """``source_<name>`` / ``driving_<name>`` from an (n_src + 1, ...) array."""
        return {f"source_{name}": a[:-1] if self.n_src > 1 else a[0],
                f"driving_{name}": a[-1]}


class TensorVideoDataset(PairDataset):
    """In-memory videos: list of (T, 3, H, W) float tensors, optional (T, 68, 2)
    landmarks and identities."""

    def __init__(self, videos: list[torch.Tensor], landmarks: list[torch.Tensor] | None = None,
                 identities: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if not videos:
            raise ValueError("no videos given")
        for v in videos:
            if v.dim() != 4 or v.shape[1] != 3:
                raise ValueError(f"videos must be (T, 3, H, W), got {tuple(v.shape)}")
        self.videos, self.landmarks = videos, landmarks
        self.identities = identities

    def num_videos(self):
        return len(self.videos)

    def num_frames(self, v):
        return self.videos[v].shape[0]

    def load_frames(self, v, idx):
        return self.videos[v][idx].float()

    def load_landmarks(self, v, idx):
        return None if self.landmarks is None else self.landmarks[v][idx].float()

    def identity(self, v):
        return self.identities[v] if self.identities else str(v)


# ------------------------------------------------------------------------ disk layout
def identity_of(name: str, mapping: dict[str, str] | None = None) -> str:
    """Identity of a video name: ``mapping[name]``, else VoxCeleb's prefix before ``#``,
    else the name itself."""
    if mapping and name in mapping:
        return str(mapping[name])
    return name.split("#", 1)[0]


def load_identity_map(path: str | os.PathLike) -> dict[str, str]:
    """``{video name: identity}`` from ``path``: a JSON mapping (``identities.json``), or a
    corpus manifest (a dict with ``items``: ``[{"file": "a__b.mp4", "identity": "a"},
    ...]``; keyed by the file name and by its stem, the folder name
    :func:`preprocess_folder` gives the video).

    Raises:
        FileNotFoundError: no such file. ValueError: neither layout.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"identity map not found: {p}")
    try:
        rec = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    if isinstance(rec, dict) and isinstance(rec.get("items"), list):
        out: dict[str, str] = {}
        for it in rec["items"]:
            if isinstance(it, dict) and "file" in it and it.get("identity") is not None:
                out[str(it["file"])] = str(it["identity"])
                out[Path(str(it["file"])).stem] = str(it["identity"])
        if not out:
            raise ValueError(f"{p}: a manifest whose items name no file/identity pairs")
        return out
    if isinstance(rec, dict) and all(isinstance(v, str) for v in rec.values()):
        return dict(rec)
    raise ValueError(f"{p}: expected {{video name: identity}} or a manifest with 'items' "
                     "[{file, identity}]")


def split_by_identity(names: list[str], test_fraction: float = 0.2,
                      mapping: dict[str, str] | None = None, seed: int = 0
                      ) -> tuple[list[str], list[str]]:
    """Deterministic split of video names so no identity is in both parts. Identities
    are shuffled with ``seed`` and assigned to test until ``test_fraction`` of the videos
    is reached (at least one identity on each side when there are >= 2)."""
    ids = sorted({identity_of(n, mapping) for n in names})
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    test_ids: set[str] = set()
    target = test_fraction * len(names)
    count = 0
    for ident in order:
        if count >= target or len(test_ids) >= len(ids) - 1:
            break
        test_ids.add(ident)
        count += sum(identity_of(n, mapping) == ident for n in names)
    train = [n for n in names if identity_of(n, mapping) not in test_ids]
    test = [n for n in names if identity_of(n, mapping) in test_ids]
    return train, test


def _list_videos(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()):
            out.append(p)
        elif p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            out.append(p)
    return out


def read_conditioning(folder: str | os.PathLike) -> dict:
    """The conditioning record of a preprocessed video folder.

    ``folder/conditioning.json`` when present (format ``"facegeo-conditioning"``, checked
    version), else a version-0 record for folders written before the format existed:
    ``landmarks.npy`` and a ``fits.npz`` (same arrays as version 1, model unrecorded)
    when the files are there. Returns ``{"format", "version", "items": {name: {"file",
    ...}}, ...}`` (see docs/training.md, "Preprocessed conditioning format").

    Raises:
        ValueError: not JSON, another format, or a version that is unknown (not an
            integer >= 1) or newer than :data:`CONDITIONING_VERSION`.
    """
    folder = Path(folder)
    f = folder / CONDITIONING_FILE
    if not f.is_file():
        items = {k: {"file": n} for k, n in _DEFAULT_FILES.items()
                 if k != "boxes" and (folder / n).is_file()}
        return {"format": CONDITIONING_FORMAT, "version": 0, "items": items}
    try:
        rec = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(rec, dict) or rec.get("format") != CONDITIONING_FORMAT:
        fmt = rec.get("format") if isinstance(rec, dict) else None
        raise ValueError(f"{f}: unknown conditioning format {fmt!r} (expected "
                         f"{CONDITIONING_FORMAT!r})")
    ver = rec.get("version")
    if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
        raise ValueError(f"{f}: unknown conditioning version {ver!r} (this facegeo reads "
                         f"versions 0 to {CONDITIONING_VERSION})")
    if ver > CONDITIONING_VERSION:
        raise ValueError(f"{f}: conditioning version {ver} is newer than this facegeo reads "
                         f"(up to {CONDITIONING_VERSION}); update facegeo or re-run "
                         f"`apps/train.py preprocess`")
    if not isinstance(rec.get("items"), dict):
        raise ValueError(f"{f}: no 'items' mapping")
    return rec


class VideoFolderDataset(PairDataset):
    """Videos on disk (see the module docstring for the layouts).

    Args:
        root: dataset root.
        split: ``"train"`` or ``"test"``.
        test_fraction, split_seed: identity split used when ``root`` has no split folders.
        cache_videos: how many decoded video files to keep in memory per process.
        conditioning: items every video must provide and every item then holds, from
            :data:`CONDITIONING_ITEMS`: ``"landmarks"`` (``source_landmarks``,
            ``driving_landmarks``), ``"boxes"`` (``source_box``, ``driving_box``: crop
            boxes in source-video pixels), ``"fits"`` (``source_angles`` ...
            ``driving_exp_coeffs``, ``id_coeffs``; see :meth:`load_fits`). A requested item
            that a video lacks is a ``FileNotFoundError`` naming it; a folder with an
            unknown or too new ``conditioning.json`` a ``ValueError``. Landmarks are also
            returned unrequested when every video has them.
        require_landmarks: same as requesting ``"landmarks"``.
        with_fits: same as requesting ``"fits"`` (refused with flip augmentation: a mirrored
            image no longer matches its fit).
        identities: a mapping file (:func:`load_identity_map`: ``identities.json`` or a
            corpus ``manifest.json``) used instead of ``root/identities.json``.
        other keyword arguments: see :class:`PairDataset`.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *,
                 test_fraction: float = 0.2, split_seed: int = 0, cache_videos: int = 4,
                 conditioning: list[str] | tuple[str, ...] | None = None,
                 require_landmarks: bool = False, with_fits: bool = False,
                 identities: str | os.PathLike | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(conditioning, str):
            conditioning = [conditioning]
        requested = set(conditioning or ())
        unknown = requested - set(CONDITIONING_ITEMS)
        if unknown:
            raise ValueError(f"unknown conditioning item(s) {sorted(unknown)}; known: "
                             f"{list(CONDITIONING_ITEMS)}")
        if require_landmarks:
            requested.add("landmarks")
        if with_fits:
            requested.add("fits")
        if "fits" in requested and self.augment.get("flip"):
            # a flipped image no longer matches its fit
            raise ValueError("3DMM fits (with_fits / conditioning 'fits') cannot be "
                             "combined with flip augmentation")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {root}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root, self.split = root, split
        mp = root / "identities.json"
        self.id_map = json.loads(mp.read_text()) if mp.is_file() else None
        if identities is not None:
            self.id_map = load_identity_map(os.path.expandvars(str(identities)))
        if (root / "train").is_dir() or (root / "test").is_dir():
            if not (root / split).is_dir():
                raise FileNotFoundError(f"no {split}/ folder in {root}")
            self.items = _list_videos(root / split)
        else:
            allv = _list_videos(root)
            names = [p.name for p in allv]
            train, test = split_by_identity(names, test_fraction, self.id_map, split_seed)
            keep = set(train if split == "train" else test)
            self.items = [p for p in allv if p.name in keep]
        if not self.items:
            raise FileNotFoundError(f"no videos found for split {split!r} under {root}")
        self._frame_lists: dict[int, list[Path]] = {}
        self._lengths: dict[int, int] = {}
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.cache_videos = cache_videos
        self._lm_cache: dict[int, np.ndarray | None] = {}
        self._box_cache: dict[int, np.ndarray] = {}
        self._fits: dict[int, dict[str, np.ndarray]] = {}
        # version checks up front: a bad folder fails here, not in a worker mid-epoch
        self.records = [read_conditioning(p) if p.is_dir() else
                        {"format": CONDITIONING_FORMAT, "version": 0, "items": {}}
                        for p in self.items]
        hint = {"landmarks": "run `apps/train.py preprocess`",
                "boxes": "re-run `apps/train.py preprocess` (version >= 1 stores boxes)",
                "fits": "preprocess with --fit-3dmm"}
        for name in CONDITIONING_ITEMS:
            missing = [p for v, p in enumerate(self.items) if not self._has_item(v, name)]
            if name == "landmarks":
                # landmarks are returned only when every video has them (batches must agree)
                self.has_landmarks = not missing
            if missing and name in requested:
                what = "cached landmarks" if name == "landmarks" else (
                    "fits.npz" if name == "fits" else name)
                v0 = self.items.index(missing[0])
                raise FileNotFoundError(
                    f"conditioning {name!r} requested: no {what} for {len(missing)} "
                    f"video(s), e.g. {missing[0]} (conditioning version "
                    f"{self.records[v0]['version']}; {hint[name]})")
        if "boxes" in requested and self.augment.get("flip"):
            nowidth = [p for v, p in enumerate(self.items)
                       if not isinstance(self.records[v].get("source", {}).get("width"), int)]
            if nowidth:
                raise ValueError(f"flipping boxes needs the source video width, not recorded "
                                 f"for {nowidth[0]}")
        if "fits" in requested:
            models = {json.dumps(r["items"]["fits"].get("morphable_model"), sort_keys=True)
                      for r in self.records if r["version"] >= 1}
            if len(models) > 1:
                raise ValueError(f"the videos were fit with different morphable models: "
                                 f"{sorted(models)}")
        self.conditioning = tuple(n for n in CONDITIONING_ITEMS if n in requested)
        self.with_fits = "fits" in requested

    def num_videos(self):
        return len(self.items)

    def video_name(self, v):
        p = self.items[v]
        return p.name if p.is_dir() else p.stem

    def identity(self, v):
        return identity_of(self.items[v].name, self.id_map)

    def _item_file(self, v: int, name: str) -> Path | None:
        """The file of conditioning item ``name`` of video ``v`` per its record (None when
        the record does not list it)."""
        p = self.items[v]
        if not p.is_dir():
            return p.with_name(p.stem + ".landmarks.npy") if name == "landmarks" else None
        entry = self.records[v]["items"].get(name)
        if not isinstance(entry, dict):
            return None
        return p / str(entry.get("file", _DEFAULT_FILES[name]))

    def _has_item(self, v: int, name: str) -> bool:
        f = self._item_file(v, name)
        return f is not None and f.is_file()

    def _frames_of_dir(self, v) -> list[Path]:
        if v not in self._frame_lists:
            self._frame_lists[v] = sorted(q for q in self.items[v].iterdir()
                                          if q.suffix.lower() in IMAGE_SUFFIXES)
        return self._frame_lists[v]

    def num_frames(self, v):
        if v not in self._lengths:
            p = self.items[v]
            if p.is_dir():
                self._lengths[v] = len(self._frames_of_dir(v))
            else:
                lm = self._landmark_array(v)
                if lm is not None:
                    self._lengths[v] = len(lm)
                else:  # container metadata (no decoding); corrected when decoded
                    from facegeo.video import video_info

                    n = video_info(p).frames
                    self._lengths[v] = n if n > 0 else self._decode(v).shape[0]
        return self._lengths[v]

    def _decode(self, v) -> torch.Tensor:
        if v in self._cache:
            self._cache.move_to_end(v)
            return self._cache[v]
        from facegeo.video import read_video

        frames, _ = read_video(self.items[v])
        t = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # uint8
        self._cache[v] = t
        while len(self._cache) > max(1, self.cache_videos):
            self._cache.popitem(last=False)
        return t

    def load_frames(self, v, idx):
        p = self.items[v]
        if p.is_dir():
            # the reader of facegeo.image_io.load_image: EXIF orientation applied (oriented
            # as a viewer shows it), gray / 16-bit / alpha normalized the same way; a
            # missing or corrupt frame is an ImageReadError (ValueError) naming the file
            from facegeo.image_io import as_uint8_rgb

            files = self._frames_of_dir(v)
            out = [torch.from_numpy(as_uint8_rgb(files[i])) for i in idx]
            x = torch.stack(out).permute(0, 3, 1, 2)
        else:
            frames = self._decode(v)
            if self._landmark_array(v) is None:
                self._lengths[v] = frames.shape[0]
            if max(idx) >= frames.shape[0]:  # metadata over-counted the frames
                idx = [min(i, frames.shape[0] - 1) for i in idx]
            x = frames[idx]
        return x.float() / 255.0

    def _landmark_array(self, v) -> np.ndarray | None:
        if v not in self._lm_cache:
            f = self._item_file(v, "landmarks")
            a = None
            if f is not None and f.is_file():
                a = np.load(f, allow_pickle=False)
                if a.ndim != 3 or a.shape[1:] != (68, 2):
                    raise ValueError(f"{f}: landmarks must be (T, 68, 2), got {a.shape}")
            self._lm_cache[v] = a
        return self._lm_cache[v]

    def load_landmarks(self, v, idx):
        if not self.has_landmarks:
            return None
        a = self._landmark_array(v)
        return None if a is None else torch.from_numpy(a[idx].astype(np.float32))

    def load_boxes(self, v: int, idx: list[int]) -> torch.Tensor:
        """(len(idx), 3) crop boxes ``(cx, cy, side)`` of frames ``idx`` in source-video
        pixels (``boxes.npy``, conditioning version >= 1)."""
        if v not in self._box_cache:
            f = self._item_file(v, "boxes")
            if f is None or not f.is_file():
                raise FileNotFoundError(f"no boxes for {self.items[v]}")
            a = np.load(f, allow_pickle=False)
            if a.ndim != 2 or a.shape[1] != 3:
                raise ValueError(f"{f}: boxes must be (T, 3), got {a.shape}")
            self._box_cache[v] = a.astype(np.float32)
        return torch.from_numpy(self._box_cache[v][idx])

    def load_fits(self, v: int, idx: list[int]) -> dict[str, torch.Tensor]:
        """Per-frame 3DMM fit arrays of frames ``idx``: ``angles`` (n, 3), ``exp_coeffs``
        (n, K_exp), ``rotation`` (n, 3, 3), ``translation`` (n, 2), ``scale`` (n,), and the
        video's ``id_coeffs`` (K_id,); weak perspective in the stored crops' pixels."""
        if v not in self._fits:
            f = self._item_file(v, "fits")
            if f is None or not f.is_file():
                raise FileNotFoundError(f"no fits.npz for {self.items[v]}")
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            lacking = [k for k in (*FIT_FRAME_ARRAYS, "id_coeffs") if k not in arrays]
            if lacking:
                raise ValueError(f"{f}: missing arrays {lacking}")
            self._fits[v] = arrays
        f = self._fits[v]
        out = {k: torch.from_numpy(f[k][idx]) for k in FIT_FRAME_ARRAYS}
        out["id_coeffs"] = torch.from_numpy(f["id_coeffs"])
        return out

    def extra_items(self, v, idx, *, flipped, resize):
        out: dict[str, torch.Tensor] = {}
        if "boxes" in self.conditioning:
            b = self.load_boxes(v, idx).clone()
            if flipped:  # the box of the mirrored source video: cx -> W - 1 - cx
                b[:, 0] = self.records[v]["source"]["width"] - 1 - b[:, 0]
            out.update(self._split_frames("box", b))
        if "fits" in self.conditioning:
            f = self.load_fits(v, idx)
            if resize is not None:
                kx, ky = resize
                if abs(kx - ky) > 1e-9 * max(kx, ky):
                    raise ValueError(f"fits of {self.items[v]} cannot follow a non-square "
                                     f"resize ({kx:.4g} x {ky:.4g})")
                # u = s (R X)_x + t_u in stored-crop pixels -> (u + 0.5) k - 0.5
                f["scale"] = f["scale"] * kx
                f["translation"] = (f["translation"] + 0.5) * kx - 0.5
            for k in FIT_FRAME_ARRAYS:
                out.update(self._split_frames(k, f[k]))
            out["id_coeffs"] = f["id_coeffs"]
        return out

    def summary(self) -> dict:
        s = super().summary()
        s.update({"root": str(self.root), "split": self.split, "with_fits": self.with_fits,
                  "conditioning": list(self.conditioning),
                  "conditioning_versions": sorted({r["version"] for r in self.records})})
        return s


def build_dataset(cfg: dict, split: str = "train") -> PairDataset:
    """Dataset from a config ``data`` section: ``{root, image_size, n_src, augment,
    repeats, max_gap, test_fraction, split_seed, id_sampling, cache_videos, conditioning,
    require_landmarks, with_fits, with_identity, identities}``. The test split never
    augments."""
    if "root" not in cfg:
        raise ValueError("data config needs a 'root' folder")
    kw = {k: cfg[k] for k in ("image_size", "n_src", "repeats", "max_gap", "test_fraction",
                              "id_sampling",
                              "split_seed", "require_landmarks", "cache_videos",
                              "with_fits", "conditioning", "with_identity", "identities")
          if k in cfg}
    if split == "train":
        kw["augment"] = cfg.get("augment")
    else:
        kw["repeats"] = 1
        kw["id_sampling"] = False
    return VideoFolderDataset(os.path.expandvars(str(cfg["root"])), split, **kw)


# ----------------------------------------------------------------------- preprocessing
def preprocess_video(video: str | os.PathLike, out_dir: str | os.PathLike, *, size: int = 256,
                     detector: str = "dlib", margin: float = 0.4, shift_up: float = 0.1,
                     box_mode: str = "fixed", max_frames: int | None = None,
                     step: int = 1, fit_3dmm: str | None = None) -> dict:
    """Track the face through a video, crop FOMM-style, resize to ``size`` and write the
    conditioning format (version :data:`CONDITIONING_VERSION`, docs/training.md) into
    ``out_dir``:

    * ``%06d.png`` frames (T) of the crops, RGB;
    * ``landmarks.npy`` (T, 68, 2) float32 iBUG-68 landmarks in crop pixels (tracked and
      smoothed in the source video, mapped into each frame's crop);
    * ``boxes.npy`` (T, 3) float32 crop boxes ``(cx, cy, side)`` in source-video pixels;
    * with ``fit_3dmm`` (a morphable-model asset name such as ``"ict_facekit"`` or a path)
      ``fits.npz``: a :func:`facegeo.fitting.fit_video` weak-perspective fit of the crop
      landmarks (one identity shared by the clip, per-frame pose and expression) with
      arrays ``angles`` (T, 3) yaw/pitch/roll degrees, ``rotation`` (T, 3, 3),
      ``translation`` (T, 2) crop pixels, ``scale`` (T,) crop pixels per model unit,
      ``id_coeffs`` (K_id,), ``exp_coeffs`` (T, K_exp), ``rmse`` (T,) crop pixels;
    * ``meta.json`` (source, fps, box(es), lost frames; as before the format);
    * ``conditioning.json``, written last (a folder without it is incomplete or older):
      format, version, frame count, crop size, source video (path, width, height, fps,
      step), crop settings, and per item its file, shape, dtype and coordinate frame, for
      the fits also the morphable model.

    Frame t of the folder is frame ``t * step`` of the source video.
    Uses :func:`facegeo.landmarks.tracking.track_video` (detect once, then track),
    :func:`facegeo.landmarks.crops.face_boxes` / ``clip_boxes`` (``"fixed"``: one box
    holding the face in every frame, as FOMM's crop-video) and ``crop_images``.
    Returns the meta dict (with ``conditioning_version``)."""
    import re

    import cv2

    from facegeo.assets import atomic_write
    from facegeo.landmarks.crops import clip_boxes, crop_images, face_boxes, points_to_crop
    from facegeo.landmarks.tracking import track_video
    from facegeo.video import read_video

    frames, fps = read_video(video, max_frames=max_frames, step=step)
    t_count, height, width = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    track = track_video(list(frames), fps=fps, detector=detector)
    lms = track.smoothed.float()
    boxes = clip_boxes(face_boxes(lms, margin=margin, shift_up=shift_up), mode=box_mode)
    if boxes.dim() == 1:
        boxes = boxes.expand(len(frames), 3)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # until the new record is written last, the folder must not claim the old content
    (out_dir / CONDITIONING_FILE).unlink(missing_ok=True)
    for q in out_dir.iterdir():  # frames of an earlier, longer run
        if re.fullmatch(r"\d{6}\.png", q.name) and int(q.stem) >= t_count:
            q.unlink()
    crop_lms = points_to_crop(lms, boxes, size)
    chunk = 32
    for s in range(0, len(frames), chunk):
        x = torch.from_numpy(frames[s:s + chunk]).permute(0, 3, 1, 2).float() / 255
        crops = crop_images(x, boxes[s:s + chunk], size)
        arr = (crops.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, a in enumerate(arr):
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(a[:, :, ::-1]))
            if not ok:
                raise RuntimeError("PNG encoding failed")
            data = buf.tobytes()
            atomic_write(out_dir / f"{s + i:06d}.png", lambda t, d=data: t.write_bytes(d))

    def _save_npy(name, a):
        def write(t):
            with open(t, "wb") as f:  # a path ending in .part would get ".npy" appended
                np.save(f, a)
        atomic_write(out_dir / name, write)

    lm_np = crop_lms.numpy().astype(np.float32)
    box_np = boxes.contiguous().numpy().astype(np.float32)
    _save_npy("landmarks.npy", lm_np)
    _save_npy("boxes.npy", box_np)
    items: dict[str, Any] = {
        "frames": {"pattern": "%06d.png", "count": t_count, "shape": [size, size, 3],
                   "dtype": "uint8", "channels": "RGB"},
        "landmarks": {"file": "landmarks.npy", "shape": list(lm_np.shape), "dtype": "float32",
                      "frame": "crop_pixels", "points": "ibug68",
                      "source": f"facegeo.landmarks.tracking.track_video ({detector}), "
                                f"smoothed"},
        "boxes": {"file": "boxes.npy", "shape": list(box_np.shape), "dtype": "float32",
                  "frame": "source_pixels", "columns": ["cx", "cy", "side"],
                  "mode": box_mode},
    }
    if fit_3dmm:
        from facegeo.fitting import fit_video
        from facegeo.morphable import MorphableModel

        mm = MorphableModel.load(fit_3dmm)
        fit = fit_video(mm, crop_lms)
        arrays = {"angles": fit.angles, "rotation": fit.rotation,
                  "translation": fit.translation, "scale": fit.scale,
                  "id_coeffs": fit.id_coeffs[0], "exp_coeffs": fit.exp_coeffs,
                  "rmse": fit.rmse}
        arrays = {k: v.detach().cpu().float().numpy() for k, v in arrays.items()}

        def _write_fits(t):
            with open(t, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(out_dir / "fits.npz", _write_fits)
        items["fits"] = {
            "file": "fits.npz", "frame": "crop_pixels", "camera": fit.camera,
            "projection": "u = scale * (R X)_x + t_u, v = -scale * (R X)_y + t_v",
            "shared_identity": True,
            "arrays": {k: {"shape": list(a.shape), "dtype": "float32"}
                       for k, a in arrays.items()},
            "morphable_model": {"asset": str(fit_3dmm), "name": mm.name, "units": mm.units,
                                "exp_kind": mm.exp_kind, "n_vertices": int(mm.mean.shape[0]),
                                "n_id": int(arrays["id_coeffs"].shape[0]),
                                "n_exp": int(arrays["exp_coeffs"].shape[1])},
        }
    else:
        (out_dir / "fits.npz").unlink(missing_ok=True)  # of an earlier run: not this clip's
    meta = {"source": str(video), "frames": t_count, "fps": float(fps),
            "size": size, "detector": detector, "box_mode": box_mode,
            "boxes": boxes.tolist() if box_mode != "fixed" else boxes[0].tolist(),
            "lost_frames": int(track.lost.sum()), "fit_3dmm": fit_3dmm,
            "conditioning_version": CONDITIONING_VERSION}
    text = json.dumps(meta, indent=1)
    atomic_write(out_dir / "meta.json", lambda t: t.write_text(text))
    record = {"format": CONDITIONING_FORMAT, "version": CONDITIONING_VERSION,
              "frames": t_count, "image_size": size,
              "source": {"path": str(video), "width": width, "height": height,
                         "fps": float(fps), "step": step},
              "crop": {"detector": detector, "margin": margin, "shift_up": shift_up,
                       "box_mode": box_mode, "lost_frames": int(track.lost.sum())},
              "items": items}
    rtext = json.dumps(record, indent=1)
    atomic_write(out_dir / CONDITIONING_FILE, lambda t: t.write_text(rtext))
    return meta


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n); ``None`` -> (0, 1) (everything)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must be 'i/n' with integers, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def shard_of(name: str, num_shards: int) -> int:
    """The shard (0 .. n-1) a clip belongs to: CRC-32 of its name modulo n. Deterministic
    across processes and machines, independent of the order or number of inputs, so
    ``--shard i/n`` jobs need no coordination and together cover every clip once."""
    import zlib

    return zlib.crc32(name.encode("utf-8")) % int(num_shards)


def _done(folder: Path, size: int, fit_3dmm: str | None, step: int) -> bool:
    """A clip folder finished with these settings (its conditioning.json, written last)."""
    try:
        rec = read_conditioning(folder)
    except ValueError:
        return False
    return (rec.get("version", 0) >= 1 and rec.get("image_size") == size
            and (rec.get("source") or {}).get("step") == step
            and ("fits" in rec.get("items", {})) == bool(fit_3dmm)
            and (folder / "meta.json").is_file())


def _manifest_split(manifest: str | os.PathLike) -> dict[str, str]:
    """``{video stem: "train" | "test"}`` from a corpus manifest's identity split
    (``identities[<id>].split`` is ``train`` or ``val``; val -> test)."""
    rec = json.loads(Path(manifest).expanduser().read_text())
    ids = rec.get("identities") or {}
    out = {}
    for it in rec.get("items", []):
        ident = it.get("identity")
        sp = (ids.get(ident) or {}).get("split") if isinstance(ids, dict) else None
        if sp is None:
            raise ValueError(f"{manifest}: item {it.get('file')!r} has no identity split")
        out[Path(str(it["file"])).stem] = "test" if sp in ("val", "test") else "train"
    return out


def preprocess_folder(inputs: list[str | os.PathLike], out_root: str | os.PathLike, *,
                      split: str = "auto", test_fraction: float = 0.2,
                      manifest: str | os.PathLike | None = None,
                      shard: tuple[int, int] = (0, 1), resume: bool = True,
                      progress: bool = True, **kwargs) -> list[dict]:
    """Preprocess many videos into ``out_root/{train,test}/<name>/`` (see
    :func:`preprocess_video` for one clip).

    Args:
        inputs: video files or folders of videos (other files, e.g. photos, are ignored).
        out_root: dataset root.
        split: ``"train"``, ``"test"``, ``"auto"`` (by identity,
            :func:`split_by_identity`), or ``"manifest"`` (the identity-disjoint split of
            ``manifest``: its ``val`` identities go to ``test``).
        test_fraction: for ``"auto"``.
        manifest: a corpus ``manifest.json`` (identity labels and split); with it the
            ``auto`` split groups clips by the manifest's identities.
        shard: ``(i, n)``: process only the clips with :func:`shard_of` == i, so n
            processes (a job array, torchrun ranks) split the work without coordination.
        resume: skip clips whose folder is complete with the same settings (their
            ``conditioning.json`` is written last, so an interrupted clip is redone).
        progress: a tqdm bar over the clips.
        **kwargs: :func:`preprocess_video` options (size, detector, fit_3dmm, ...).
    Returns:
        one meta dict per clip of this shard, with ``split`` and ``status``: ``"done"``,
        ``"skipped"`` (resumed) or ``"failed"`` (with ``error``; a clip without a face does
        not stop the others). ``out_root/summary.json`` is rewritten from every finished
        clip folder (:func:`dataset_summary`).
    """
    from tqdm.auto import tqdm

    files: list[Path] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            files += [q for q in sorted(p.iterdir()) if q.suffix.lower() in VIDEO_SUFFIXES]
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not files:
        raise FileNotFoundError("no videos to preprocess")
    names = [f.stem for f in files]
    if len(set(names)) != len(names):
        raise ValueError("two input videos have the same name (stem): their folders would "
                         "collide")
    mapping = load_identity_map(manifest) if manifest is not None else None
    if split == "manifest":
        if manifest is None:
            raise ValueError("split='manifest' needs manifest=")
        by = _manifest_split(manifest)
        missing = [n for n in names if n not in by]
        if missing:
            raise ValueError(f"{len(missing)} videos are not in the manifest, e.g. "
                             f"{missing[0]!r}")
        where = {n: by[n] for n in names}
    elif split == "auto":
        train, _ = split_by_identity(names, test_fraction, mapping)
        where = {n: "train" if n in set(train) else "test" for n in names}
    elif split in ("train", "test"):
        where = {n: split for n in names}
    else:
        raise ValueError(f"split must be train, test, auto or manifest, got {split!r}")
    i, n = shard
    mine = [f for f in files if shard_of(f.stem, n) == i]
    size, step = int(kwargs.get("size", 256)), int(kwargs.get("step", 1))
    metas = []
    for f in tqdm(mine, desc=f"preprocess shard {i}/{n}", unit="clip", disable=not progress):
        out = Path(out_root) / where[f.stem] / f.stem
        if resume and _done(out, size, kwargs.get("fit_3dmm"), step):
            meta = json.loads((out / "meta.json").read_text())
            meta.update(split=where[f.stem], status="skipped")
            metas.append(meta)
            continue
        try:
            meta = preprocess_video(f, out, **kwargs)
            meta["status"] = "done"
        except (ValueError, RuntimeError, OSError) as e:  # no face, unreadable video, ...
            meta = {"source": str(f), "frames": 0, "lost_frames": 0,
                    "conditioning_version": CONDITIONING_VERSION, "status": "failed",
                    "error": f"{type(e).__name__}: {e}"}
        meta["split"] = where[f.stem]
        metas.append(meta)
    summary = dataset_summary(out_root, identities=mapping)
    text = json.dumps(summary, indent=1)
    from facegeo.assets import atomic_write

    atomic_write(Path(out_root) / "summary.json", lambda t: t.write_text(text))
    return metas


def dataset_summary(root: str | os.PathLike, *, identities: dict[str, str] | None = None
                    ) -> dict:
    """Identities, clips, frames and resolutions of a preprocessed dataset root.

    Counts every finished clip folder (with ``conditioning.json``) under
    ``root/{train,test}``; identities by :func:`identity_of` with ``identities`` (e.g. a
    manifest's :func:`load_identity_map`). Returns ``{"root", split: {"clips",
    "identities", "frames", "image_size", "source_resolutions", "lost_frames",
    "with_fits"}, "identity_overlap": [...]}`` (the overlap must be empty for an
    identity-disjoint split).
    """
    root = Path(root)
    out: dict[str, Any] = {"root": str(root)}
    seen: dict[str, set[str]] = {}
    for sp in ("train", "test"):
        d = root / sp
        clips = [c for c in sorted(d.iterdir()) if (c / CONDITIONING_FILE).is_file()] \
            if d.is_dir() else []
        frames = lost = fits = 0
        sizes: set[int] = set()
        res: dict[str, int] = {}
        ids: set[str] = set()
        for c in clips:
            rec = read_conditioning(c)
            frames += int(rec.get("frames", 0))
            lost += int((rec.get("crop") or {}).get("lost_frames", 0))
            fits += "fits" in rec.get("items", {})
            sizes.add(int(rec.get("image_size", 0)))
            src = rec.get("source") or {}
            key = f"{src.get('width')}x{src.get('height')}"
            res[key] = res.get(key, 0) + 1
            ids.add(identity_of(c.name, identities))
        seen[sp] = ids
        out[sp] = {"clips": len(clips), "identities": len(ids), "frames": frames,
                   "image_size": sorted(sizes), "source_resolutions": res,
                   "lost_frames": lost, "with_fits": fits}
    out["identity_overlap"] = sorted(seen["train"] & seen["test"])
    return out


def benchmark_loader(dataset: PairDataset, batch_size: int = 8, num_workers: int = 2,
                     batches: int = 20, warmup: int = 2) -> dict:
    """Time a DataLoader over ``dataset`` (as the trainer builds it). Returns
    ``{"num_workers", "batches", "items_per_s", "s_per_batch"}`` measured after
    ``warmup`` batches (which include worker start-up)."""
    import time

    from torch.utils.data import DataLoader

    from .sampling import StepBatchSampler

    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": 4}
    dl = DataLoader(dataset, batch_sampler=StepBatchSampler(len(dataset), batch_size, seed=0),
                    num_workers=num_workers, **kw)
    it = iter(dl)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    dt = time.perf_counter() - t0
    del it
    return {"num_workers": num_workers, "batches": batches,
            "items_per_s": batches * batch_size / dt, "s_per_batch": dt / batches}
