"""Accuracy, temporal stability and speed of facegeo.landmarks.pupils (74-point landmarks).

    python benchmarks/bench_pupils.py                 # all parts (about 3 min on 1 core)
    python benchmarks/bench_pupils.py --frames 60 --videos 3      # quick

1. Synthetic eyes with a known iris centre (``render_synthetic_eyes``): random gaze
   offsets (x +-18 %, y +-5 % of the eye width), eye widths 20 / 30 / 45 px, noise
   0.02 / 0.05; error in px and in % of the eye width, with and without the sub-pixel
   refinement.
2. Real eyes, known iris shift: dlib 68 points on the media photos (256x256 face crops),
   the iris moved along the eye axis by 5 / 10 / 15 % of the eye width (``shift_iris``,
   lids fixed); error of the detection against ``pupil + shift`` (median / mean, % of the
   eye width, and px). Also the mirror-symmetry check (image and landmarks flipped).
3. Temporal stability on the media videos: tracked, One-Euro smoothed dlib landmarks
   (``LandmarkTracker``), pupils per frame on the full frames; SMS (S2D eq. 9, px: the L1
   norm over the 2 points x 2 coordinates, facegeo.metrics.sms) of the pupils, of the
   eye-contour centroids (the 68 points' own jitter, for reference) and of the gaze
   offset pupil - centroid, raw and after ``smooth_pupils`` (One-Euro on the gaze
   offset); also as % of the inter-ocular distance. Real gaze moves (saccades) count as
   jitter here too: the numbers bound the localiser's noise from above.
4. Speed: faces/s of ``landmarks74`` at batch 1 and 32 (1 thread).

Prints a JSON summary at the end (``--json PATH`` writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for var, sub in (("FACEGEO_ASSETS", "assets"), ("FACEGEO_MEDIA", "media")):
    if not os.environ.get(var) and (REPO.parent / "shared" / sub).is_dir():
        os.environ[var] = str(REPO.parent / "shared" / sub)

from facegeo.landmarks import conventions as conv  # noqa: E402
from facegeo.landmarks import pupils as pp  # noqa: E402

MEDIA = Path(os.environ.get("FACEGEO_MEDIA", REPO.parent / "shared" / "media"))


def synthetic(n: int = 64) -> dict:
    out = {}
    g = torch.Generator().manual_seed(0)
    for width in (20.0, 30.0, 45.0):
        for noise in (0.02, 0.05):
            off = (torch.rand(n, 2, 2, generator=g) - 0.5) * torch.tensor([0.36, 0.1])
            size = int(4.3 * width) // 4 * 4
            img, lm, gt = pp.render_synthetic_eyes(off, size=size, eye_width=width,
                                                   noise=noise, seed=int(width))
            e = (pp.locate_pupils(img, lm) - gt).norm(dim=-1)
            e0 = (pp.locate_pupils(img, lm, refine_steps=0) - gt).norm(dim=-1)
            key = f"w{int(width)}_n{noise}"
            out[key] = {"mean_px": e.mean().item(), "max_px": e.max().item(),
                        "mean_pct_width": 100 * e.mean().item() / width,
                        "mean_px_no_refine": e0.mean().item()}
            print(f"synthetic eye width {width:4.0f} px noise {noise}: error mean "
                  f"{e.mean():.3f} px ({100 * e.mean() / width:.2f} % of width), max "
                  f"{e.max():.3f}; without refinement {e0.mean():.3f} px")
    return out


def media_faces() -> tuple[torch.Tensor, torch.Tensor]:
    from facegeo.image_io import load_image
    from facegeo.landmarks import detect_face
    from facegeo.landmarks.crops import crop_images, face_boxes, points_to_crop

    xs, ls = [], []
    for p in sorted(MEDIA.glob("*.jpg")):
        if "emma" in p.name or "trump" in p.name:
            continue
        im = load_image(p)
        lm = detect_face(im).landmarks[None]
        box = face_boxes(lm)
        xs.append(crop_images(im[None], box, 256)[0])
        ls.append(points_to_crop(lm, box, 256)[0])
    return torch.stack(xs), torch.stack(ls)


def shifted(x: torch.Tensor, lm: torch.Tensor) -> dict:
    p = pp.locate_pupils(x, lm)
    _, axis, width = pp.eye_axes(lm)
    out = {"faces": len(x), "eye_width_px": width.mean().item()}
    for frac in (0.05, 0.10, 0.15):
        errs = []
        for sign in (-1.0, 1.0):
            s = sign * frac * width[..., None] * axis
            q = pp.locate_pupils(pp.shift_iris(x, lm, p, s), lm)
            errs.append((q - (p + s)).norm(dim=-1) / width)
        e = torch.stack(errs)
        px = e * width
        out[f"shift_{frac:.2f}"] = {"median_pct": 100 * e.median().item(),
                                    "mean_pct": 100 * e.mean().item(),
                                    "mean_px": px.mean().item(),
                                    "max_pct": 100 * e.max().item()}
        print(f"real eyes, iris moved {100 * frac:.0f} % of the eye width: error median "
              f"{100 * e.median():.2f} %, mean {100 * e.mean():.2f} % ({px.mean():.2f} px), "
              f"max {100 * e.max():.1f} %")
    a = pp.landmarks74(x, lm)
    b = conv.flip_landmarks74(pp.landmarks74(x.flip(-1), conv.flip_landmarks(lm, 256)), 256)
    out["mirror_max_px"] = (a - b).norm(dim=-1).max().item()
    print(f"mirror symmetry: max difference {out['mirror_max_px']:.2e} px")
    return out


def stability(frames: int, videos: int) -> dict:
    from facegeo.landmarks import LandmarkTracker
    from facegeo.metrics import sms as _sms
    from facegeo.video import read_video

    def sms(x):
        return float(_sms(x))

    rows = {}
    for path in sorted(MEDIA.glob("*.mp4"))[:videos]:
        arr, fps = read_video(path, max_frames=frames)
        tr = LandmarkTracker("dlib", fps=fps).track(arr)
        lm = tr.smoothed.float()
        pup = []
        for lo in range(0, len(arr), 16):
            x = torch.from_numpy(arr[lo:lo + 16]).permute(0, 3, 1, 2)
            pup.append(pp.locate_pupils(x, lm[lo:lo + 16]))
        pup = torch.cat(pup)                                          # (T, 2, 2)
        cen, _, width = pp.eye_axes(lm)
        iod = conv.inter_ocular_distance(lm).mean().item()
        pup_s = pp.smooth_pupils(pup, lm, fps)
        gaze = pup - cen
        r = {"frames": len(arr), "iod_px": iod,
             "sms_pupils_px": sms(pup), "sms_eye_centroids_px": sms(cen),
             "sms_gaze_offset_px": sms(gaze),
             "sms_pupils_one_euro_px": sms(pup_s),
             "sms_gaze_offset_one_euro_px": sms(pup_s - cen)}
        r["sms_pupils_pct_iod"] = 100 * r["sms_pupils_px"] / iod
        r["sms_gaze_offset_per_coord_px"] = r["sms_gaze_offset_px"] / 4
        rows[path.name] = r
        print(f"{path.name}: {len(arr)} frames, IOD {iod:.0f} px: SMS pupils "
              f"{r['sms_pupils_px']:.2f} px ({r['sms_pupils_pct_iod']:.2f} % IOD), eye "
              f"centroids {r['sms_eye_centroids_px']:.2f}, gaze offset "
              f"{r['sms_gaze_offset_px']:.2f}; One-Euro pupils "
              f"{r['sms_pupils_one_euro_px']:.2f}, gaze {r['sms_gaze_offset_one_euro_px']:.2f}")
    keys = [k for k in next(iter(rows.values())) if k.startswith("sms")]
    rows["mean"] = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
    print("mean over videos: " + ", ".join(f"{k} {v:.2f}" for k, v in rows["mean"].items()))
    return rows


def speed() -> dict:
    img, lm, _ = pp.render_synthetic_eyes(torch.zeros(32, 2, 2), size=256, eye_width=40.0)
    out = {}
    for b in (1, 32):
        pp.landmarks74(img[:b], lm[:b])
        reps = max(1, 64 // b)
        t = time.perf_counter()
        for _ in range(reps):
            pp.landmarks74(img[:b], lm[:b])
        dt = (time.perf_counter() - t) / (reps * b)
        out[f"batch{b}_faces_per_s"] = 1 / dt
        print(f"landmarks74 batch {b}: {1 / dt:.1f} faces/s ({1000 * dt:.1f} ms per face)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150, help="frames per media video")
    ap.add_argument("--videos", type=int, default=10, help="media videos used")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {"synthetic": synthetic()}
    x, lm = media_faces()
    res["real_shift"] = shifted(x, lm)
    res["stability"] = stability(args.frames, args.videos)
    res["speed"] = speed()
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
