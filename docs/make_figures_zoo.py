"""Frame strips for docs/models/zoo.md: every method on the same two pairs of held-out
identities, through the evaluation harness's own crops and pipeline.

Pair 1 is a self-reenactment (frame 0 of a held-out clip reconstructs its later frames,
the top row), pair 2 a cross-reenactment (a portrait of another identity driven by the
same frames, in relative mode where the method has it). One row per method, the source
first in each half; each output of pair 1 is labelled with its PSNR against the real
frame. Writes the PNG to ``--out``, which belongs outside the committed tree (e.g. the
ignored ``out/``): the strip shows frames of the corpus / media, and those are never
committed (their licences do not allow it).

    python docs/make_figures_zoo.py --data DIR --video CLIP --source IMAGE \\
        --method geometric s2d meshg ... [--checkpoint NAME=DIR ...] [--frames 10 30 50] \\
        --out out/zoo_strip.png

DIR is the evaluation folder of the held-out clips (``apps/evaluate.py --data``); a method
without ``--checkpoint`` uses its shipped weights, as in ``apps/evaluate.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, 7 * len(text) + 4, 12], fill=(0, 0, 0))
    d.text((2, 0), text, fill=(255, 255, 255))
    return np.asarray(im)


def pad(img: np.ndarray) -> np.ndarray:
    return np.pad(img, ((2, 2), (2, 2), (0, 0)), constant_values=255)


def main(argv: list[str] | None = None) -> None:
    from facegeo import metrics as M
    from facegeo.assets import atomic_write
    from facegeo.landmarks.backends import get_detector
    from facegeo_apps.evaluate import (
        BASELINES,
        build_parser,
        load_clip,
        load_source,
        make_method,
        per_method,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of the held-out clips and portraits")
    p.add_argument("--video", required=True, help="clip of DIR driving both pairs")
    p.add_argument("--source", required=True, help="portrait of DIR (another identity)")
    p.add_argument("--method", nargs="+", required=True)
    p.add_argument("--checkpoint", action="append", default=[], help="NAME=DIR")
    p.add_argument("--frames", type=int, nargs="+", default=[10, 30, 50])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", required=True,
                   help="PNG path, outside the committed tree (the strip shows corpus frames)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    data, det = Path(a.data), get_detector("dlib")
    margin = build_parser().get_default("margin")   # the evaluation's crops
    clip = load_clip(data / a.video, max(a.frames) + 1, a.size, margin, det)
    portrait = load_source(data / a.source, a.size, margin, det)
    self_src, drv = clip[:1], clip[a.frames]
    cks = per_method(a.checkpoint, a.method, "--checkpoint")
    blank = np.full((a.size, a.size, 3), 255, np.uint8)
    rows = [[label(blank, "driving")] + [to_uint8(f) for f in drv]
            + [blank] + [to_uint8(f) for f in drv]]
    for name in a.method:
        if name in BASELINES:
            raise SystemExit(f"error: {name} is a baseline; the strip shows its inputs already")
        method = make_method(name, cks.get(name), a.size, "cpu")
        mode = method.modes[0]
        with torch.no_grad():
            own = method(self_src, drv, mode=mode)
            other = method(portrait, drv, mode="relative" if "relative" in method.modes
                           else mode)
        psnr = [float(M.psnr(o[None], d[None])[0]) for o, d in zip(own, drv)]
        rows.append([label(to_uint8(self_src[0]), name)]
                    + [label(to_uint8(o), f"{v:.1f} dB") for o, v in zip(own, psnr)]
                    + [to_uint8(portrait[0])] + [to_uint8(o) for o in other])
        print(f"{name}: mode {mode}, self PSNR " + ", ".join(f"{v:.2f}" for v in psnr))
    grid = np.concatenate([np.concatenate([pad(c) for c in r], 1) for r in rows], 0)

    import cv2

    ok, buf = cv2.imencode(".png", grid[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise SystemExit("error: PNG encoding failed")
    out = Path(a.out)
    atomic_write(out, lambda t: t.write_bytes(buf.tobytes()))
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
