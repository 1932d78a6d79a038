"""The S2D Table 5 analogue: landmark detectors on video, dlib vs tracker vs the DSNT
refiner with and without supervision by registration (models/s2d/refiner.py).

Two measurements, the same detectors in both:

* **held-out corpus clips** (``$FACEGEO_CORPUS`` preprocessed to ``--data ROOT``, its
  ``test`` split: identities never seen in training): SMS (S2D eq. 9, pixels of the 256
  crops; lower = smoother) and the mean distance to per-frame dlib (agreement, not
  accuracy: real videos have no ground truth);
* **synthetic motion with known ground truth** (the media photos moved by smooth
  similarity transforms, ``bench_landmarks.synthetic_sequence``): mean error in pixels and
  % of the inter-ocular distance, and SMS next to the ground truth's own SMS.

Detectors: ``dlib`` (HOG + shape predictor on every frame), ``tracker`` (LandmarkTracker
raw), ``tracker+1euro`` (its zero-phase One-Euro output, what facegeo uses), and one row
per ``--weights LABEL=PATH`` refiner (boxes placed by the raw tracker, smoothed over
time), and ``LABEL+1euro`` (the same One-Euro filter on the refiner's output).

Run::

    python benchmarks/bench_refiner.py --data /path/corpus256 \\
        --weights dsnt=runs/refiner_dsnt/refiner.safetensors \\
        --weights dsnt+sbr=runs/refiner_sbr/refiner.safetensors [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_landmarks import SYNTHETIC_PHOTOS, per_frame, synthetic_sequence  # noqa: E402

from facegeo import metrics  # noqa: E402
from facegeo.landmarks import get_detector, inter_ocular_distance  # noqa: E402
from facegeo.landmarks.tracking import LandmarkTracker, one_euro_smooth  # noqa: E402


def detector_tracks(frames: np.ndarray, fps: float, det, refiners: dict) -> dict:
    """All detectors on one clip -> {name: (T, 68, 2)} (dlib rows NaN where it missed)."""
    tr = LandmarkTracker("dlib", fps=fps)
    res = tr.track(frames)
    out = {"dlib": per_frame(frames, det), "tracker": res.landmarks.float(),
           "tracker+1euro": res.smoothed.float()}
    x = torch.from_numpy(np.ascontiguousarray(frames))
    for label, model in refiners.items():
        lm = model.refine(x, res.landmarks.float())
        out[label] = lm
        out[f"{label}+1euro"] = one_euro_smooth(lm, fps, *tr.filter_args, scale=tr._scale,
                                                zero_phase=True).float()
    return out


def _mean_rows(rows: list[dict], keys: list[str]) -> dict:
    w = np.array([r["frames"] for r in rows], float)
    return {k: float(np.nansum([r[k] * wi for r, wi in zip(rows, w)]) / w.sum()) for k in keys}


def corpus_rows(root: Path, det, refiners: dict, max_frames: int | None) -> list[dict]:
    import cv2

    rows = []
    clips = sorted(p for p in (root / "test").iterdir() if (p / "landmarks.npy").is_file())
    if not clips:
        raise FileNotFoundError(f"no preprocessed test clips under {root / 'test'}")
    for c in clips:
        meta = json.loads((c / "conditioning.json").read_text())
        fps = float(meta["source"]["fps"]) / int(meta["source"].get("step", 1))
        n = meta["frames"] if max_frames is None else min(meta["frames"], max_frames)
        frames = np.stack([cv2.imread(str(c / f"{t:06d}.png"))[:, :, ::-1] for t in range(n)])
        tracks = detector_tracks(frames, fps, det, refiners)
        ref = tracks["dlib"]
        ok = ~torch.isnan(ref).any(-1).any(-1)
        iod = float(inter_ocular_distance(ref[ok]).mean())
        row = {"clip": c.name, "frames": n, "fps": fps, "dlib_missing": int((~ok).sum())}
        for name, lm in tracks.items():
            good = ~torch.isnan(lm).any(-1).any(-1)
            # SMS needs consecutive frames: dlib's misses are filled by its previous frame
            filled = lm.clone()
            for t in range(1, n):
                if not bool(good[t]):
                    filled[t] = filled[t - 1]
            row[f"sms/{name}"] = float(metrics.sms(filled)) if bool(good[0]) else float("nan")
            d = (lm[ok] - ref[ok]).norm(dim=-1).mean()
            row[f"to_dlib_px/{name}"] = float(d)
            row[f"to_dlib_pct_iod/{name}"] = float(d) / iod * 100
        rows.append(row)
        print(f"{c.name:40s} T={n:4d} " + "  ".join(
            f"{k}: SMS {row[f'sms/{k}']:.2f} d {row[f'to_dlib_px/{k}']:.2f}" for k in tracks),
            flush=True)
    return rows


def synthetic_rows(det, refiners: dict, n: int = 90, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for name in SYNTHETIC_PHOTOS:
        frames, gt = synthetic_sequence(name, n, rng, det)
        tracks = detector_tracks(frames, 30.0, det, refiners)
        iod = float(inter_ocular_distance(gt).mean())
        row = {"photo": name, "frames": n, "iod_px": iod, "sms/ground_truth":
               float(metrics.sms(gt))}
        for k, lm in tracks.items():
            ok = ~torch.isnan(lm).any(-1).any(-1)
            e = float((lm[ok] - gt[ok]).norm(dim=-1).mean())
            row[f"err_px/{k}"] = e
            row[f"err_pct_iod/{k}"] = e / iod * 100
            row[f"sms/{k}"] = float(metrics.sms(lm)) if bool(ok.all()) else float("nan")
        rows.append(row)
        print(f"{name:24s} IOD {iod:5.1f}  " + "  ".join(
            f"{k}: err {row[f'err_px/{k}']:.2f} SMS {row[f'sms/{k}']:.2f}" for k in tracks),
            flush=True)
    return rows


def table(corpus: dict, synth: dict, names: list[str]) -> str:
    lines = ["| detector | held-out SMS (px) | to per-frame dlib (% IOD) | synthetic error "
             "(% IOD) | synthetic SMS (px) |", "| --- | --- | --- | --- | --- |"]
    for k in names:
        lines.append(f"| {k} | {corpus[f'sms/{k}']:.2f} | {corpus[f'to_dlib_pct_iod/{k}']:.2f}"
                     f" | {synth[f'err_pct_iod/{k}']:.2f} | {synth[f'sms/{k}']:.2f} |")
    lines.append(f"| (ground truth) | | | 0 | {synth['sms/ground_truth']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from facegeo_models.s2d.refiner import load_refiner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True,
                    help="preprocessed corpus root with a test/ split")
    ap.add_argument("--weights", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--max-frames", type=int, default=None, help="per held-out clip")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    refiners = {}
    for spec in a.weights:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            ap.error(f"--weights wants LABEL=PATH, got {spec!r}")
        refiners[label] = load_refiner(path)
    det = get_detector("dlib_hog")
    print("held-out corpus clips (256 crops)")
    crows = corpus_rows(a.data, det, refiners, a.max_frames)
    print("synthetic motion (ground truth known)")
    srows = synthetic_rows(det, refiners)
    names = ["dlib", "tracker", "tracker+1euro"] + [
        x for k in refiners for x in (k, f"{k}+1euro")]
    ck = [f"{m}/{k}" for k in names for m in ("sms", "to_dlib_px", "to_dlib_pct_iod")]
    sk = [f"{m}/{k}" for k in names for m in ("err_px", "err_pct_iod", "sms")]
    csum = _mean_rows(crows, ck)
    ssum = {k: float(np.mean([r[k] for r in srows])) for k in sk + ["sms/ground_truth"]}
    print("\nframe-weighted means\n" + table(csum, ssum, names))
    if a.json:
        a.json.write_text(json.dumps({"corpus": crows, "corpus_mean": csum,
                                      "synthetic": srows, "synthetic_mean": ssum,
                                      "weights": dict(s.partition("=")[::2]
                                                      for s in a.weights)}, indent=1))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
