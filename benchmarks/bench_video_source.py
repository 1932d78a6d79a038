"""Temporal stability of video-to-video reenactment (a source video, its expression replaced).

For a source video and a driver, the geometric reenactor re-renders each source frame with
the driver's expression (``ReenactmentPipeline.prepare_video_source``, default controls
``only="expression"``: the source's head motion kept). Printed, for the source video and the
output alike:

* SMS (S2D eq. 9, ``facegeo.metrics.sms``, per coordinate, pixels): the landmark
  "acceleration" of 68 points detected independently in every frame (dlib, no tracking or
  smoothing, so the detector's own jitter counts in both);
* flicker (``facegeo.metrics.flicker``, 8-bit levels): mean absolute frame-to-frame
  difference outside the face (pixels farther than one face size from the union of the
  detected face boxes);
* the mouth opening's correlation with the driver's (inner lips over the inter-ocular
  distance), showing that the expression was replaced.

Usage::

    python benchmarks/bench_video_source.py [--source lp_s18.mp4] [--driving lp_d3.mp4]
        [--frames 60] [--size 256]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

MEDIA = Path(os.environ.get("FACEGEO_MEDIA", Path(__file__).resolve().parents[1].parent
                            / "shared" / "media"))


def _landmarks(frames: torch.Tensor):
    from facegeo.landmarks import detect_face

    lms, boxes = [], []
    for f in frames:
        face = detect_face(f)
        lms.append(face.landmarks)
        boxes.append(face.box)
    return torch.stack(lms), torch.stack(boxes)


def _mouth(lm: torch.Tensor) -> np.ndarray:
    return ((lm[:, 66, 1] - lm[:, 62, 1]) / (lm[:, 45, 0] - lm[:, 36, 0])).numpy()


def main() -> None:
    from facegeo.metrics import flicker, sms
    from facegeo.pipeline import ReenactmentPipeline
    from facegeo.reenact import GeometricReenactor
    from facegeo.video import read_video

    p = argparse.ArgumentParser()
    p.add_argument("--source", default="lp_s18.mp4")
    p.add_argument("--driving", default="lp_d3.mp4")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", type=int, default=256)
    a = p.parse_args()
    torch.set_num_threads(1)
    src, drv = MEDIA / a.source, MEDIA / a.driving
    pipe = ReenactmentPipeline(GeometricReenactor(size=a.size))
    t0 = time.perf_counter()
    job = pipe.prepare_video_source(src, drv, max_frames=a.frames)
    t1 = time.perf_counter()
    out = torch.stack(list(job.frames()))
    t2 = time.perf_counter()
    n = out.shape[0]
    s_frames, _ = read_video(src, max_frames=n)
    d_frames, _ = read_video(drv, max_frames=n)

    def tens(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255

    s_t, d_t = tens(s_frames), tens(d_frames)
    lm_s, box_s = _landmarks(s_t)
    lm_o, _ = _landmarks(out)
    lm_d, _ = _landmarks(d_t)
    h, w = s_t.shape[-2:]
    mask = torch.ones(h, w, dtype=torch.bool)
    x0, y0 = box_s[:, :2].min(0).values.tolist()
    x1, y1 = box_s[:, 2:].max(0).values.tolist()
    side = max(x1 - x0, y1 - y0)
    mask[max(0, int(y0 - side)):int(y1 + side), max(0, int(x0 - side)):int(x1 + side)] = False
    print(f"source {a.source} ({w}x{h}), driver {a.driving}, {n} frames, size {a.size}; "
          f"pass 1 {t1 - t0:.1f} s, rendering {n / (t2 - t1):.1f} frames/s")
    print(f"outside-face mask: {int(mask.sum())} of {h * w} pixels")
    print("| clip | SMS (px per coordinate) | flicker outside the face (8-bit levels) |")
    print("| --- | --- | --- |")
    print(f"| source video | {float(sms(lm_s, per_coordinate=True)):.3f} | "
          f"{255 * float(flicker(s_t, mask)):.3f} |")
    print(f"| output | {float(sms(lm_o, per_coordinate=True)):.3f} | "
          f"{255 * float(flicker(out, mask)):.3f} |")
    print(f"| driver | {float(sms(lm_d, per_coordinate=True)):.3f} | - |")
    diff = 255 * float((out[:, :, mask] - s_t[:, :, mask]).abs().mean())
    print(f"output vs source outside the face: mean abs difference {diff:.3f} levels")
    ms, mo, md = _mouth(lm_s), _mouth(lm_o), _mouth(lm_d)
    print(f"mouth opening correlation with the driver: output {np.corrcoef(mo, md)[0, 1]:.2f}, "
          f"source video {np.corrcoef(ms, md)[0, 1]:.2f}")


if __name__ == "__main__":
    main()
