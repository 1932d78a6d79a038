"""The only pictures the committed figures (docs/img) may show.

The dev media ($FACEGEO_MEDIA, media.json: "use them only for internal testing; do not
redistribute") and the training corpus ($FACEGEO_CORPUS, its README: "do not ship pictures
of it in the docs") are for tests, benchmarks and training only. A figure that goes into
docs/img is made from:

* :func:`astronaut`: scikit-image's ``astronaut`` (Eileen Collins, NASA; public domain), the
  portrait ``apps/reenact.py --demo`` uses;
* what facegeo synthesises from it: :func:`driving_frames` / :func:`driving_video` (the
  astronaut animated by :func:`facegeo.reenact.synthetic_driving`, a 3DMM-scripted
  performance: head turns, jaw open, smile, a blink, raised brows) and
  :func:`two_faces` (two copies in one picture, for multi-face detection);
* renders of the ICT-FaceKit model (MIT, its licence in data/ict_facekit).

docs/img/CREDITS.md lists each figure with its inputs. Benchmarks and tests keep using the
dev media and the corpus; their numbers may be quoted, their frames may not be shown.

    from docs.figure_inputs import astronaut, driving_frames   # or: sys.path + import
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "out" / "figure_inputs"  # ignored by git
CREDIT = ("scikit-image's astronaut (Eileen Collins, NASA, public domain), animated by "
          "facegeo's 3DMM-scripted performance")


def astronaut() -> torch.Tensor:
    """scikit-image's public-domain ``astronaut``: (3, 512, 512) float RGB in [0, 1]."""
    from skimage import data

    a = np.ascontiguousarray(data.astronaut()[..., :3])
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255.0


def two_faces(scale: float = 0.75) -> torch.Tensor:
    """The astronaut and a mirrored copy scaled by ``scale``, side by side on a grey canvas:
    (3, 512, 512 + round(512 * scale)), two faces of different sizes (the larger first)."""
    import torch.nn.functional as F

    a = astronaut()
    s = round(512 * scale)
    b = F.interpolate(a.flip(-1)[None], size=(s, s), mode="bilinear", antialias=True,
                      align_corners=False)[0]
    out = torch.full((3, 512, 512 + s), 0.5)
    out[:, :, :512] = a
    out[:, 512 - s:, 512:] = b
    return out


@lru_cache(maxsize=4)
def driving_frames(n_frames: int = 90, full: bool = True) -> torch.Tensor:
    """The astronaut animated by :func:`facegeo.reenact.synthetic_driving` with the default
    geometric renderer: (T, 3, 512, 512) full frames (``full``) or (T, 3, 256, 256) face
    crops, float in [0, 1]. Cached in out/figure_inputs (the render takes about 10 s)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"astronaut_driving_{n_frames}_{'full' if full else 'crop'}.npy"
    if f.exists():
        return torch.from_numpy(np.load(f)).float() / 255.0
    from facegeo.reenact import GeometricReenactor, synthetic_driving

    torch.manual_seed(0)
    rr = GeometricReenactor(size=256)
    src = rr.fit_source(astronaut())
    targets = synthetic_driving(src.fit, rr.model, n_frames)
    frames = torch.stack(list(rr.render_stream(src, targets, paste=full)))
    u8 = (frames.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    tmp = f.with_suffix(".tmp.npy")
    np.save(tmp, u8)
    tmp.replace(f)
    return torch.from_numpy(u8).float() / 255.0


def driving_video(n_frames: int = 90, fps: float = 30.0) -> Path:
    """:func:`driving_frames` (full frames) written as an H.264 file in out/figure_inputs,
    for figures that go through a video path (the apps, the web app): its path."""
    from facegeo.video import write_video

    path = CACHE / f"astronaut_driving_{n_frames}.mp4"
    if not path.exists():
        write_video(path, driving_frames(n_frames, full=True), fps)
    return path


def source_image() -> Path:
    """:func:`astronaut` as a PNG in out/figure_inputs (for figures that need a file)."""
    from PIL import Image

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "astronaut.png"
    if not path.exists():
        from facegeo.image_io import to_uint8_hwc

        Image.fromarray(to_uint8_hwc(astronaut())).save(path)
    return path
