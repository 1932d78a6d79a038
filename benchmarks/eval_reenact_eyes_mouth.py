"""Evaluation: do the eyes and the mouth of the geometric reenactment follow the driver?

    python benchmarks/eval_reenact_eyes_mouth.py [--size 256] [--frames 90] [--step 2]
                                                 [--legacy] [--smoothed-eyes]
                                                 [--pairs S:D,...] [--json out.json]

For each (source portrait, driving clip) pair of $FACEGEO_MEDIA (default ../shared/media),
relative mode: the driver's tracked 68 landmarks give per frame the eye opening (mean over
both eyes of the eye aspect ratio, (|p37-p41| + |p38-p40|) / (2 |p36-p39|), Soukupova &
Cech 2016) and the mouth opening (inner-lip height |p62-p66| over the mouth width
|p48-p54|); the same two numbers are measured on a fresh dlib detection of every output
frame. Printed per pair: Pearson correlation of output vs driver for eyes and mouth, and
identity: the mean dlib cosine (facegeo.facerec.dlib_embeddings) of the output frames to
the source crop. ``--legacy`` renders with the v1 settings (``head_proxy=False,
hole_fill=False``) for the before/after comparison; ``--smoothed-eyes`` fits the driver
with the eye blendshapes smoothed like the rest (``smooth_eyes=None``, the fit before
2026-12-03). ``--pairs`` replaces the four default pairs (``source:driving`` file names in
$FACEGEO_MEDIA), e.g. the second set of docs/reenact.md:
``lp_d8.jpg:lp_d11.mp4,lp_d30.jpg:lp_d13.mp4,3ddfa_emma.jpg:lp_d9.mp4,lp_d12.jpg:lp_s20.mp4``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from facegeo.facerec import dlib_embeddings
from facegeo.image_io import load_image
from facegeo.landmarks.backends import NoFaceError, detect_face
from facegeo.metrics import eye_opening, mouth_opening, pearson
from facegeo.reenact import GeometricReenactor, track_driving
from facegeo.video import read_video

REPO = Path(__file__).resolve().parents[1]
PAIRS = [("lp_s12.jpg", "lp_d3.mp4"), ("lp_s1.jpg", "lp_d6.mp4"),
         ("3ddfa_JianzhuGuo.jpg", "lp_d10.mp4"), ("lp_s11.jpg", "lp_d12.mp4")]


def detect_all(frames: torch.Tensor, detector: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 3, S, S) -> (T, 68, 2) landmarks, (T,) found."""
    lms, ok = [], []
    for f in frames:
        try:
            lms.append(detect_face(f, 0, detector).landmarks)
            ok.append(True)
        except NoFaceError:
            lms.append(torch.zeros(68, 2))
            ok.append(False)
    return torch.stack(lms).float(), torch.tensor(ok)


def evaluate_pair(rr: GeometricReenactor, source: Path, driving: Path, n_frames: int,
                  step: int) -> dict:
    frames, fps = read_video(driving, max_frames=n_frames * step)
    frames = frames[::step]
    track = track_driving(frames, fps / step)
    src = rr.fit_source(load_image(source))
    dfit = rr.fit_driving(track)
    tfit = rr.target_fits(src.fit, dfit, "relative")
    out = torch.stack(list(rr.render_stream(src, tfit, batch=16)))
    lm, ok = detect_all(out, rr.detector)
    dl = track.landmarks[ok]
    e_d, m_d = eye_opening(dl), mouth_opening(dl)
    e_o, m_o = eye_opening(lm[ok]), mouth_opening(lm[ok])
    emb_s = dlib_embeddings(src.image.cpu(), src.landmarks.cpu())
    pick = ok.nonzero().squeeze(1)[::4]
    emb_o = dlib_embeddings(out[pick], lm[pick])
    ident = float((emb_o @ emb_s.T).mean())
    return dict(source=source.name, driving=driving.name, frames=int(ok.sum()),
                eye_corr=float(pearson(e_o, e_d)), mouth_corr=float(pearson(m_o, m_d)),
                identity=ident,
                eye_range_driver=[float(e_d.min()), float(e_d.max())],
                eye_range_output=[float(e_o.min()), float(e_o.max())])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--step", type=int, default=2)
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--smoothed-eyes", action="store_true")
    ap.add_argument("--pairs", help="comma-separated source:driving file names")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    media = Path(os.environ.get("FACEGEO_MEDIA", str(REPO.parent / "shared" / "media")))
    opts = dict(head_proxy=False, hole_fill=False) if a.legacy else {}
    if a.smoothed_eyes:
        opts["smooth_eyes"] = None
    pairs = PAIRS
    if a.pairs:
        pairs = [tuple(x.split(":")) for x in a.pairs.split(",")]
        if any(len(p) != 2 for p in pairs):
            ap.error("--pairs: expected source:driving,source:driving...")
    rr = GeometricReenactor(size=a.size, **opts)
    rows = []
    print(f"{'source':<22}{'driving':<12}{'frames':>7}{'eye r':>8}{'mouth r':>9}{'identity':>10}")
    for s, d in pairs:
        r = evaluate_pair(rr, media / s, media / d, a.frames, a.step)
        rows.append(r)
        print(f"{s:<22}{d:<12}{r['frames']:7d}{r['eye_corr']:8.3f}{r['mouth_corr']:9.3f}"
              f"{r['identity']:10.3f}", flush=True)
    for k in ("eye_corr", "mouth_corr", "identity"):
        print(f"mean {k}: {sum(r[k] for r in rows) / len(rows):.3f}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
