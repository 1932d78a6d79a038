"""Benchmark: the geometric reenactment pipeline, frames/s per stage.

    python benchmarks/bench_reenact.py [--video lp_d3.mp4] [--seconds 10] [--sizes 256 512]
                                       [--threads 1] [--source lp_s12.jpg] [--legacy]

A 10-second driving clip from $FACEGEO_MEDIA (default ../shared/media) animates a source
portrait. Stages (each timed over the whole clip, wall clock and process CPU time):

* ``decode``    PyAV decoding of the driving frames (reported, not part of end-to-end);
* ``landmarks`` source detection + driving landmark tracking (dlib, One-Euro);
* ``fit``       source fit + driving fit with shared identity (facegeo.fitting.fit_video);
* ``raster``    target rasterization + barycentric transfer to the source mesh;
* ``warp``      head-proxy flow (v1 ``--legacy``: MLS), blending, grid_sample, stretch
  softening, eyelid and inner-mouth fills.

End to end = landmarks + fit + raster + warp (no encoding). The reference for the raster
stage is :func:`facegeo.raster.mesh_flow` (rasterizes the source mesh again for every frame,
plus its occlusion test); the end-to-end reference is the issue's target of 15 frames/s at
256 x 256. The machine's load average is printed: with other jobs running, wall-clock rates
are lower than on an idle machine; process CPU time (all threads) is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from facegeo.image_io import load_image
from facegeo.raster import mesh_flow
from facegeo.reenact import GeometricReenactor, track_driving
from facegeo.video import read_video

TARGET_FPS = 15.0
REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default="lp_d3.mp4")
    p.add_argument("--source", default="lp_s12.jpg")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest on a machine shared with other jobs)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--legacy", action="store_true",
                   help="the v1 renderer (head_proxy=False, hole_fill=False), for comparison")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    media = Path(os.environ.get("FACEGEO_MEDIA", str(REPO.parent / "shared" / "media")))
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"torch threads {torch.get_num_threads()}")
    c = Clock()
    probe, fps = read_video(media / a.video, max_frames=1)
    n = int(round(a.seconds * fps))
    frames, fps = read_video(media / a.video, max_frames=n)
    t_dec = c.stop()
    n = frames.shape[0]
    print(f"driving {a.video}: {n} frames {frames.shape[2]}x{frames.shape[1]} at {fps:g} fps "
          f"({n / fps:.1f} s); source {a.source}")
    src_img = load_image(media / a.source)
    rows = []
    for size in a.sizes:
        rr = GeometricReenactor(size=size, **(dict(head_proxy=False, hole_fill=False, map_size=None)
                                               if a.legacy else {}))
        rr.fit_source(src_img)  # warm-up: detector, fitter caches
        track_driving(frames[:2], fps)
        c = Clock()
        src = rr.fit_source(src_img)
        track = track_driving(frames, fps)
        t_lm = c.stop()
        c = Clock()
        dfit = rr.fit_driving(track)
        tfit = rr.target_fits(src.fit, dfit, "relative")
        t_fit = c.stop()
        timings: dict = {}
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        for i in range(0, n, a.batch):
            rr.render(src.image, src.fit, tfit.index(slice(i, i + a.batch)),
                      source_landmarks=src.landmarks, timings=timings)
        t_render = (time.perf_counter() - wall0, time.process_time() - cpu0)
        # CPU split of rendering follows the wall split of the two stages
        share = timings["raster"] / (timings["raster"] + timings["warp"])
        t_raster = (timings["raster"], t_render[1] * share)
        t_warp = (timings["warp"], t_render[1] * (1 - share))
        # reference for the raster stage: facegeo.raster.mesh_flow per batch
        c = Clock()
        sv = rr.image_vertices(src.fit)
        for i in range(0, n, a.batch):
            tv = rr.image_vertices(tfit.index(slice(i, i + a.batch)))
            mesh_flow(sv.expand(tv.shape[0], -1, -1), tv, rr.faces, size, size,
                      cull_backfaces=True)
        t_ref = c.stop()
        total = tuple(x + y + z + w for x, y, z, w in zip(t_lm, t_fit, t_raster, t_warp))
        rows.append((size, t_lm, t_fit, t_raster, t_warp, total, t_ref))
        print(f"\n== size {size}x{size}, {n} frames, load average now "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'stage':<12}{'wall s':>9}{'wall fps':>10}{'cpu s':>9}{'cpu fps':>9}")
        for name, t in (("decode", t_dec), ("landmarks", t_lm), ("fit", t_fit),
                        ("raster", t_raster), ("warp", t_warp), ("end-to-end", total)):
            print(f"{name:<12}{t[0]:9.2f}{n / t[0]:10.1f}{t[1]:9.2f}{n / t[1]:9.1f}")
        print(f"raster stage: reference facegeo.raster.mesh_flow {t_ref[0]:.2f} s wall, ours "
              f"{t_raster[0]:.2f} s, ratio ours/reference {t_raster[0] / t_ref[0]:.2f}")
        print(f"end to end: target {TARGET_FPS:g} fps, ours {n / total[0]:.1f} fps wall "
              f"(ratio {n / total[0] / TARGET_FPS:.2f}), {n / total[1]:.1f} fps per CPU-second "
              f"(ratio {n / total[1] / TARGET_FPS:.2f})")


if __name__ == "__main__":
    main()
