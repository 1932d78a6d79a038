"""Figure for docs/evaluation.md: self-reenactment on the astronaut driving clip.

The clip is docs/figure_inputs.py's ``driving_video(90)``: scikit-image's public-domain
astronaut animated by facegeo's 3DMM-scripted performance (committed figures may not show
the dev media or the corpus). Rows: the clip's frames (ground truth; frame 0 is the
source), the geometric method, the static source and copy-driving baselines, each frame
labelled with its PSNR / AKD. Writes docs/img/evaluation_self.png.

    python docs/make_figures_evaluation.py

Reads the assets from $FACEGEO_ASSETS (default ../shared/assets next to the repository).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))
from figure_inputs import driving_video  # noqa: E402


def main() -> None:
    from PIL import Image, ImageDraw

    from facegeo import evaluation as E
    from facegeo import metrics as M
    from facegeo.assets import atomic_write
    from facegeo.landmarks.backends import get_detector
    from facegeo_apps.evaluate import PipelineMethod, load_clip

    clip = load_clip(driving_video(90), 90, 256, 0.4, get_detector("dlib"))
    every = 15
    analyzer = E.FaceAnalyzer(dlib_identity=False)
    drv = clip[::every]
    ref = analyzer.landmarks(drv)
    rows = [("driving clip", drv)]
    for label, method in (("geometric", PipelineMethod("geometric")),
                          ("static source", E.static_source), ("copy driving", E.copy_driving)):
        rows.append((label, E.call_method(method, clip[:1], drv)))
    tile = 128
    pad = 18
    w = tile * drv.shape[0]
    canvas = Image.new("RGB", (w + 110, len(rows) * (tile + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, frames) in enumerate(rows):
        y = r * (tile + pad)
        draw.text((4, y + tile // 2), label, fill="black")
        small = torch.nn.functional.interpolate(frames, size=(tile, tile), mode="bilinear",
                                                antialias=True, align_corners=False)
        lm, found = analyzer.landmarks(frames) if r else ref
        for t in range(frames.shape[0]):
            arr = (small[t].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
            canvas.paste(Image.fromarray(arr), (110 + t * tile, y))
            if r and t:
                p = float(M.psnr(frames[t:t + 1], drv[t:t + 1]).clamp(max=99))
                a, _ = M.akd(torch.nan_to_num(lm[t:t + 1]), torch.nan_to_num(ref[0][t:t + 1]),
                             found[t:t + 1], ref[1][t:t + 1])
                draw.text((112 + t * tile, y + tile + 2), f"{p:.1f} dB  {float(a):.1f} px",
                          fill="black")
            elif not r:
                draw.text((112 + t * tile, y + tile + 2),
                          "source" if t == 0 else f"frame {t * every}", fill="black")
    out = Path(__file__).parent / "img" / "evaluation_self.png"
    canvas = canvas.quantize(colors=192, method=Image.Quantize.MEDIANCUT)  # keep it < 300 KB
    atomic_write(out, lambda p: canvas.save(p, format="PNG", optimize=True))
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
