"""Landmark tracking benchmark on the driving videos of ../shared/media.

For every driving video (``lp_d*.mp4``, all frames unless ``--max-frames``):

* reference: the full detector on every frame (dlib HOG + 68-point shape predictor);
* ours: :class:`facegeo.landmarks.tracking.LandmarkTracker` (detect once / on loss /
  every 60 frames, otherwise optical flow + shape predictor in the tracked box), with
  its One-Euro stabilization;
* time per frame (wall clock and process CPU time; the two are called alternately on the
  same frames so both see the same machine load), speed-up,
  mean / median / 95th-percentile landmark distance between tracked and per-frame
  landmarks (pixels and % of the inter-ocular distance), the SMS smoothness metric
  (S2D eq. 9, L1 over the 136 coordinates, pixels) of per-frame detection, raw tracking
  and smoothed tracking, and the error the smoothing introduces (smoothed vs raw track).

``--sweep`` adds a One-Euro parameter sweep (SMS vs smoothing error) on the raw tracks;
``--figures`` only writes docs/img/landmarks_overlay.png and docs/img/landmarks_tracking.png,
from the redistributable inputs of docs/figure_inputs.py (the media are never shown);
``--synthetic`` measures accuracy against a known ground truth (photos moved by a smooth
random similarity transform); ``--calibrate`` re-measures the HOG-box / landmark-box
relation used by ``facegeo.landmarks.backends.box_from_landmarks``.

Run: ``python benchmarks/bench_landmarks.py [--max-frames N] [--sweep] [--figures]``
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

from facegeo import metrics
from facegeo.image_io import to_uint8_hwc
from facegeo.landmarks import get_detector, inter_ocular_distance
from facegeo.landmarks.tracking import LandmarkTracker, TrackResult, one_euro_smooth
from facegeo.video import read_video

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FACEGEO_MEDIA", REPO.parent / "shared" / "media"))


def sms(track: torch.Tensor) -> float:
    """S2D SMS of one (T, 68, 2) track as a number (facegeo.metrics.sms)."""
    return float(metrics.sms(track))


def per_frame(frames: np.ndarray, det) -> torch.Tensor:
    """Detector on every frame -> (T, 68, 2), NaN where no face was found."""
    out = torch.full((len(frames), 68, 2), float("nan"))
    for t, f in enumerate(frames):
        faces = det.detect(f)
        if faces:
            out[t] = faces[0].landmarks
    return out


def interleaved(frames: np.ndarray, fps: float, det, **kw):
    """Run per-frame detection and the tracker on the same frames, alternating call by call
    (so both see the same machine load), timing every call (wall and process CPU time).

    Returns (reference (T, 68, 2) with NaN where no face, TrackResult, timings dict in s).
    """
    tr = LandmarkTracker("dlib", fps=fps, **kw)
    tr.reset()
    ref = torch.full((len(frames), 68, 2), float("nan"))
    outs = []
    calls: dict[str, list[float]] = {"ref": [], "track": []}
    for t, f in enumerate(frames):
        w0, c0 = time.perf_counter(), time.process_time()
        faces = det.detect(f)
        w1, c1 = time.perf_counter(), time.process_time()
        outs.append(tr.update(f))
        w2, c2 = time.perf_counter(), time.process_time()
        calls["ref"].append((w1 - w0, c1 - c0))
        calls["track"].append((w2 - w1, c2 - c1))
        if faces:
            ref[t] = faces[0].landmarks
    raw = torch.stack([o["landmarks"] for o in outs])
    res = TrackResult(
        landmarks=raw,
        # what LandmarkTracker.track() returns: the lag-free forward-backward filter
        smoothed=one_euro_smooth(raw, fps, *tr.filter_args, scale=tr._scale, zero_phase=True),
        boxes=torch.stack([o["box"] for o in outs]),
        detected=torch.tensor([o["detected"] for o in outs]),
        lost=torch.tensor([o["lost"] for o in outs]), fps=fps)
    res.causal = torch.stack([o["smoothed"] for o in outs])  # live (update()) output
    tm = {}
    for k, v in calls.items():
        a = np.array(v)
        tm[f"{k}_wall"], tm[f"{k}_cpu"] = a.mean(0)
        tm[f"{k}_wall_median"], tm[f"{k}_cpu_median"] = np.median(a, 0)
    return ref, res, tm


def run(videos: list[str], max_frames: int | None, sweep: bool) -> dict:
    det = get_detector("dlib_hog")
    rows = []
    raw_tracks = {}
    for name in videos:
        frames, fps = read_video(MEDIA / name, max_frames=max_frames)
        ref, res, tm = interleaved(frames, fps, det)
        ref_wall, ref_cpu, tr_wall, tr_cpu = (tm["ref_wall"], tm["ref_cpu"], tm["track_wall"],
                                              tm["track_cpu"])
        ok = ~torch.isnan(ref).any(-1).any(-1)
        d = (res.landmarks[ok] - ref[ok]).norm(dim=-1)           # (T', 68)
        iod = inter_ocular_distance(ref[ok])
        dsm = (res.smoothed - res.landmarks).norm(dim=-1)
        dca = (res.causal - res.landmarks).norm(dim=-1)
        # SMS over the longest run of frames where the reference found a face
        ref_sms = sms(ref[ok]) if bool(ok.all()) else float("nan")
        row = {
            "video": name, "frames": len(frames), "size": f"{frames.shape[2]}x{frames.shape[1]}",
            "fps": fps, "ref_ms": 1e3 * ref_wall, "track_ms": 1e3 * tr_wall,
            "ref_cpu_ms": 1e3 * ref_cpu, "track_cpu_ms": 1e3 * tr_cpu,
            "speedup_wall": ref_wall / tr_wall, "speedup_cpu": ref_cpu / tr_cpu,
            "ref_cpu_median_ms": 1e3 * tm["ref_cpu_median"],
            "track_cpu_median_ms": 1e3 * tm["track_cpu_median"],
            "ref_missing": int((~ok).sum()), "detections": int(res.detected.sum()),
            "lost": int(res.lost.sum()),
            "diff_mean_px": float(d.mean()), "diff_median_px": float(d.median()),
            "diff_p95_px": float(d.quantile(0.95)),
            "diff_mean_pct_iod": float((d.mean(-1) / iod).mean() * 100),
            "iod_px": float(iod.mean()),
            "sms_per_frame": ref_sms, "sms_track": sms(res.landmarks),
            "sms_smoothed": sms(res.smoothed), "sms_causal": sms(res.causal),
            "smooth_err_px": float(dsm.mean()), "smooth_err_pct_iod":
                float((dsm.mean(-1) / inter_ocular_distance(res.landmarks)).mean() * 100),
            "causal_err_px": float(dca.mean()),
        }
        rows.append(row)
        raw_tracks[name] = (res.landmarks, fps, float(inter_ocular_distance(res.landmarks[0])))
        print(f"{name:12s} {row['size']:>9s} T={row['frames']:4d}  per-frame {row['ref_ms']:6.1f} "
              f"ms  track {row['track_ms']:5.1f} ms  x{row['speedup_wall']:4.1f} "
              f"(cpu x{row['speedup_cpu']:4.1f}; median per-call cpu {row['ref_cpu_median_ms']:.1f}"
              f" / {row['track_cpu_median_ms']:.1f} ms)  diff {row['diff_mean_px']:5.2f} px "
              f"({row['diff_mean_pct_iod']:4.2f}% iod)  SMS det {row['sms_per_frame']:6.1f} "
              f"track {row['sms_track']:6.1f} zero-phase {row['sms_smoothed']:6.1f} causal "
              f"{row['sms_causal']:6.1f}  smoothing moves points by {row['smooth_err_px']:4.2f}"
              f" / {row['causal_err_px']:4.2f} px  det {row['detections']} "
              f"lost {row['lost']} miss {row['ref_missing']}", flush=True)
    summary = {}
    for k in ("ref_ms", "track_ms", "ref_cpu_ms", "track_cpu_ms", "ref_cpu_median_ms",
              "track_cpu_median_ms", "diff_mean_px",
              "diff_mean_pct_iod", "sms_per_frame", "sms_track", "sms_smoothed",
              "sms_causal", "smooth_err_px", "smooth_err_pct_iod", "causal_err_px"):
        w = np.array([r["frames"] for r in rows], float)
        summary[k] = float(np.nansum(np.array([r[k] for r in rows]) * w) / w.sum())
    summary["speedup_wall"] = summary["ref_ms"] / summary["track_ms"]
    summary["speedup_cpu"] = summary["ref_cpu_ms"] / summary["track_cpu_ms"]
    print("frame-weighted mean: per-frame {ref_ms:.1f} ms, tracking {track_ms:.1f} ms -> "
          "x{speedup_wall:.1f} wall (x{speedup_cpu:.1f} CPU; median per-call CPU "
          "{ref_cpu_median_ms:.1f} / {track_cpu_median_ms:.1f} ms); tracked vs per-frame "
          "{diff_mean_px:.2f} px ({diff_mean_pct_iod:.2f}% IOD); SMS per-frame "
          "{sms_per_frame:.1f} / tracked {sms_track:.1f} / zero-phase {sms_smoothed:.1f} / "
          "causal {sms_causal:.1f}; smoothing moves points by {smooth_err_px:.2f} px "
          "({smooth_err_pct_iod:.2f}% IOD) zero-phase, {causal_err_px:.2f} px causal".format(
              **summary))
    out = {"videos": rows, "summary": summary}
    syn_rows, syn_tracks = synthetic(SYNTHETIC_PHOTOS)
    out["synthetic"] = syn_rows
    if sweep:
        out["sweep"] = one_euro_sweep(raw_tracks, syn_tracks)
    return out


def one_euro_sweep(raw_tracks: dict, syn_tracks: list) -> list[dict]:
    """SMS and error of the One-Euro filter for a grid of parameters, causal and zero-phase:
    on the real videos (SMS, and how far smoothing moves the points from the raw track) and
    on the synthetic sequences (error against the known ground truth, and SMS)."""
    print("\nOne-Euro sweep (landmarks in IOD units). real: frame-weighted over the driving "
          "videos; synthetic: mean over the photos")
    print(f"{'mode':>10s} {'min_cut':>7s} {'beta':>5s} | {'real SMS':>8s} {'moved px':>8s} | "
          f"{'syn err px':>10s} {'syn SMS':>7s}")
    s_raw = sum(sms(lm) * lm.shape[0] for lm, _, _ in raw_tracks.values())
    n_raw = sum(lm.shape[0] for lm, _, _ in raw_tracks.values())
    e_syn = np.mean([float((lm - gt).norm(dim=-1).mean()) for lm, gt, _ in syn_tracks])
    print(f"{'raw':>10s} {'':>7s} {'':>5s} | {s_raw / n_raw:8.1f} {0.0:8.2f} | {e_syn:10.2f} "
          f"{np.mean([sms(lm) for lm, _, _ in syn_tracks]):7.1f}   (ground truth SMS "
          f"{np.mean([sms(gt) for _, gt, _ in syn_tracks]):.1f})")
    rows = []
    for zp in (False, True):
        for mc in (1.0, 2.0, 4.0, 8.0):
            for beta in (0.0, 5.0, 20.0):
                s1 = e = 0.0
                for lm, fps, iod in raw_tracks.values():
                    sm = one_euro_smooth(lm, fps, mc, beta, scale=iod, zero_phase=zp)
                    s1 += sms(sm) * lm.shape[0]
                    e += float((sm - lm).norm(dim=-1).mean()) * lm.shape[0]
                syn = [(one_euro_smooth(lm, 30.0, mc, beta, scale=iod, zero_phase=zp), gt)
                       for lm, gt, iod in syn_tracks]
                r = {"zero_phase": zp, "min_cutoff": mc, "beta": beta,
                     "real_sms": s1 / n_raw, "real_moved_px": e / n_raw,
                     "syn_err_px": float(np.mean([float((a - g).norm(dim=-1).mean())
                                                  for a, g in syn])),
                     "syn_sms": float(np.mean([sms(a) for a, _ in syn]))}
                rows.append(r)
                print(f"{'zero-phase' if zp else 'causal':>10s} {mc:7.1f} {beta:5.1f} | "
                      f"{r['real_sms']:8.1f} {r['real_moved_px']:8.2f} | {r['syn_err_px']:10.2f} "
                      f"{r['syn_sms']:7.1f}", flush=True)
    return rows


def calibrate(videos: list[str]) -> None:
    det = get_detector("dlib_hog")
    rel = []
    for name in videos:
        frames, _ = read_video(MEDIA / name, step=15, max_frames=20)
        for f in frames:
            for face in det.detect(f):
                lm, b = face.landmarks, face.box
                lo, hi = lm.amin(0), lm.amax(0)
                wh = hi - lo
                c = (b[:2] + b[2:]) / 2 - (lo + hi) / 2
                rel.append([float(c[0] / wh[0]), float(c[1] / wh[1]),
                            float((b[2] - b[0]) / wh.mean())])
    r = np.median(np.array(rel), 0)
    print(f"{len(rel)} detections: DX={r[0]:.3f} DY={r[1]:.3f} S={r[2]:.3f} (median)")


SYNTHETIC_PHOTOS = ["lp_s1.jpg", "lp_d12.jpg", "lp_s11.jpg", "3ddfa_JianzhuGuo.jpg", "lp_d30.jpg"]


def synthetic_sequence(name: str, n: int, rng: np.random.Generator, det=None):
    """One synthetic-motion sequence: the photo ``name`` of $FACEGEO_MEDIA (longer side
    <= 512) moved by a smooth random similarity transform (shift up to +-12 % of the face
    box, rotation +-10 deg, scale +-10 %). Ground truth = landmarks detected (dlib HOG) on
    the untransformed photo, mapped by the same transform.

    Returns (frames (n, H, W, 3) uint8, ground truth (n, 68, 2) float32)."""
    import cv2

    from facegeo.image_io import as_uint8_rgb, load_image

    det = det or get_detector("dlib_hog")
    img = as_uint8_rgb(load_image(MEDIA / name))
    h, w = img.shape[:2]
    s0 = min(1.0, 512 / max(h, w))
    img = cv2.resize(img, (round(w * s0), round(h * s0)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    face = det.detect(img)[0]
    lm0 = face.landmarks.numpy()
    size = float((face.box[2:] - face.box[:2]).mean())
    c = lm0.mean(0)
    t = np.arange(n) / 30.0
    ph = rng.uniform(0, 2 * np.pi, 4)
    fr = rng.uniform(0.3, 0.8, 4)
    dx = 0.12 * size * np.sin(2 * np.pi * fr[0] * t + ph[0])
    dy = 0.12 * size * np.sin(2 * np.pi * fr[1] * t + ph[1])
    ang = 10.0 * np.sin(2 * np.pi * fr[2] * t + ph[2])
    sc = 1.0 + 0.1 * np.sin(2 * np.pi * fr[3] * t + ph[3])
    frames, gt = [], []
    for k in range(n):
        m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), float(ang[k]), float(sc[k]))
        m[:, 2] += (dx[k], dy[k])
        frames.append(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
        gt.append(lm0 @ m[:, :2].T + m[:, 2])
    return np.stack(frames), torch.from_numpy(np.stack(gt)).float()


def synthetic(photos: list[str], n: int = 90, seed: int = 0) -> tuple[list[dict], list]:
    """Accuracy against a known ground truth (:func:`synthetic_sequence`): per-frame
    detection and tracking are both compared with it."""
    det = get_detector("dlib_hog")
    rng = np.random.default_rng(seed)
    rows, tracks = [], []
    print("\nSynthetic motion (ground truth known): mean px error vs ground truth")
    for name in photos:
        frames, gt_t = synthetic_sequence(name, n, rng, det)
        ref = per_frame(frames, det)
        tr = LandmarkTracker("dlib", fps=30.0)
        res = tr.track(frames)
        ok = ~torch.isnan(ref).any(-1).any(-1)
        iod = float(inter_ocular_distance(gt_t).mean())
        e_ref = float((ref[ok] - gt_t[ok]).norm(dim=-1).mean())
        e_tr = float((res.landmarks - gt_t).norm(dim=-1).mean())
        e_sm = float((res.smoothed - gt_t).norm(dim=-1).mean())
        causal = tr.track(frames, zero_phase=False).smoothed
        e_ca = float((causal - gt_t).norm(dim=-1).mean())
        tracks.append((res.landmarks, gt_t, float(inter_ocular_distance(res.landmarks[0]))))
        row = {"photo": name, "frames": n, "iod_px": iod, "err_per_frame_px": e_ref,
               "err_track_px": e_tr, "err_smoothed_px": e_sm, "err_causal_px": e_ca,
               "ref_missing": int((~ok).sum()),
               "sms_gt": sms(gt_t), "sms_per_frame": sms(ref) if bool(ok.all()) else None,
               "sms_track": sms(res.landmarks), "sms_smoothed": sms(res.smoothed),
               "sms_causal": sms(causal)}
        rows.append(row)
        print(f"{name:22s} IOD {iod:5.1f}px  error: per-frame {e_ref:5.2f}  tracked {e_tr:5.2f}"
              f"  zero-phase {e_sm:5.2f}  causal {e_ca:5.2f}   SMS: gt {row['sms_gt']:6.1f} "
              f"per-frame {row['sms_per_frame'] or float('nan'):6.1f} tracked "
              f"{row['sms_track']:6.1f} zero-phase {row['sms_smoothed']:6.1f} causal "
              f"{row['sms_causal']:6.1f}", flush=True)
    keys = ("err_per_frame_px", "err_track_px", "err_smoothed_px", "err_causal_px", "sms_gt",
            "sms_track", "sms_smoothed", "sms_causal")
    print("mean: " + ", ".join(f"{k} {np.mean([r[k] for r in rows]):.2f}" for k in keys))
    return rows, tracks


# ----------------------------------------------------------------------------- figures
def _draw(img: np.ndarray, lm: torch.Tensor, color, r: int = 2) -> None:
    import cv2

    from facegeo.landmarks.conventions import GROUPS_68

    pts = lm.numpy()
    closed = {"right_eye", "left_eye", "outer_lips", "inner_lips"}
    for g in ("jaw", "right_brow", "left_brow", "nose_bridge", "nose_lower", "right_eye",
              "left_eye", "outer_lips", "inner_lips"):
        p = pts[list(GROUPS_68[g])].round().astype(np.int32)
        cv2.polylines(img, [p], g in closed, color, max(1, r // 2), cv2.LINE_AA)
    for x, y in pts:
        cv2.circle(img, (round(x), round(y)), r, color, -1, cv2.LINE_AA)


OVERLAY_FRAME = 37  # of driving_frames(150): head turned, jaw still partly open


def figures() -> None:
    """docs/img/landmarks_overlay.png and landmarks_tracking.png from redistributable inputs
    only (docs/figure_inputs.py: scikit-image's public-domain astronaut and her 3DMM-scripted
    performance); the dev media are measured above, never shown."""
    import cv2

    from facegeo.image_io import as_uint8_rgb, save_image
    from facegeo.landmarks import detect
    from facegeo.landmarks.crops import crop_images, face_boxes, points_to_crop

    sys.path.insert(0, str(REPO / "docs"))
    from figure_inputs import driving_frames, two_faces

    out_dir = REPO / "docs" / "img"
    out_dir.mkdir(parents=True, exist_ok=True)
    # 1) overlay: two faces of different sizes + a driving frame with its 256 crop
    img = as_uint8_rgb(two_faces()).copy()
    for i, f in enumerate(detect(img)):
        x0, y0, x1, y1 = f.box.round().int().tolist()
        cv2.rectangle(img, (x0, y0), (x1, y1), (255, 220, 0), 2)
        cv2.putText(img, f"#{i} score {f.score:.2f}", (x0, max(y0 - 8, 14)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 220, 0), 2, cv2.LINE_AA)
        _draw(img, f.landmarks, (0, 255, 0), 2)
    h = 320
    left = cv2.resize(img, (round(img.shape[1] * h / img.shape[0]), h), cv2.INTER_AREA)
    frame = OVERLAY_FRAME
    fr = as_uint8_rgb(driving_frames(150, full=True)[frame]).copy()
    face = detect(fr)[0]
    box = face_boxes(face.landmarks[None])
    t = torch.from_numpy(fr).permute(2, 0, 1)[None].float() / 255
    crop = as_uint8_rgb(crop_images(t, box, 256)[0]).copy()
    _draw(crop, points_to_crop(face.landmarks[None], box, 256)[0], (0, 255, 0), 2)
    cx, cy, s = box[0].tolist()
    cv2.rectangle(fr, (round(cx - s / 2), round(cy - s / 2)), (round(cx + s / 2),
                  round(cy + s / 2)), (255, 80, 80), 2)
    _draw(fr, face.landmarks, (0, 255, 0), 2)
    fr = cv2.resize(fr, (h, h), cv2.INTER_AREA)
    crop = cv2.resize(crop, (h, h), cv2.INTER_LINEAR)
    canvas = np.concatenate([left, fr, crop], 1)
    save_image(out_dir / "landmarks_overlay.png", cv2.resize(
        canvas, (canvas.shape[1] * 2 // 3, canvas.shape[0] * 2 // 3), cv2.INTER_AREA))
    # 2) trajectories over the 256x256 face crops of the driving clip (jaw open, smile,
    # blink): vertical distances, so that the scripted expressions, not the head's pitch,
    # dominate: nose bridge (27) to chin (8), inner lips (62 -> 66), eyelids (37, 38 -> 41, 40)
    frames = to_uint8_hwc(driving_frames(150, full=False))
    fps = 30.0
    ref = per_frame(frames, get_detector("dlib_hog"))
    res = LandmarkTracker("dlib", fps=fps).track(frames)
    panels = (
        (lambda lm: lm[:, 8, 1] - lm[:, 27, 1], "nose bridge to chin (jaw)"),
        (lambda lm: lm[:, 66, 1] - lm[:, 62, 1], "mouth opening (inner lips)"),
        (lambda lm: (lm[:, [41, 40], 1] - lm[:, [37, 38], 1]).mean(1),
         "right eye opening (eyelids)"),
    )
    W, H, pad, legend = 900, 150 * len(panels) + 30, 40, 200
    plot = np.full((H, W, 3), 255, np.uint8)
    series = [(ref, (200, 60, 60), "per-frame detection"),
              (res.landmarks, (60, 60, 220), "tracked (raw)"),
              (res.smoothed, (30, 160, 30), "tracked + One-Euro (0-phase)")]
    for k, (measure, label) in enumerate(panels):
        ys = torch.cat([measure(s[0]) for s in series])
        ys = ys[~ys.isnan()]  # frames without a detection
        lo, hi = float(ys.min()) - 2, float(ys.max()) + 2
        top = pad // 2 + k * 150
        hh = 150 - pad
        cv2.putText(plot, f"{label}, px: {lo + 2:.0f} (bottom) to {hi - 2:.0f} (top)",
                    (5, top + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for s, col, _ in series:
            y = measure(s).numpy()
            xs = pad + np.arange(len(y)) * (W - 2 * pad - legend) / (len(y) - 1)
            yy = top + 15 + (hi - y) / (hi - lo) * (hh - 15)
            cv2.polylines(plot, [np.stack([xs, yy], 1).round().astype(np.int32)], False, col,
                          1, cv2.LINE_AA)
    for i, (_, col, label) in enumerate(series):
        cv2.putText(plot, label, (W - legend, 40 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    col, 1, cv2.LINE_AA)
    cv2.putText(plot, "astronaut driving clip (256x256 face crops), frames 0-149",
                (pad, H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    save_image(out_dir / "landmarks_tracking.png", plot)
    for p in ("landmarks_overlay.png", "landmarks_tracking.png"):
        print(f"wrote docs/img/{p} ({(out_dir / p).stat().st_size // 1024} KB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", nargs="*", default=None,
                    help="file names in $FACEGEO_MEDIA (default: all lp_d*.mp4)")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--figures", action="store_true")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--synthetic", action="store_true",
                    help="only the synthetic-motion accuracy test on the photos")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args(argv)
    videos = a.videos or sorted(p.name for p in MEDIA.glob("lp_d*.mp4"))
    torch.set_num_threads(1)
    if a.calibrate:
        calibrate(videos)
        return 0
    if a.figures:
        figures()
        return 0
    if a.synthetic:
        rows, _ = synthetic(SYNTHETIC_PHOTOS)
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
        return 0
    res = run(videos, a.max_frames, a.sweep)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
