"""Benchmark: does the geometric reenactment turn the head by the requested angle?

    python benchmarks/bench_pose_fidelity.py [--size 256] [--sources ...] [--json out.json]
                                             [--yaw -30 -20 -10 10 20 30]
                                             [--pitch -20 -10 10 20] [--legacy]

Each portrait in $FACEGEO_MEDIA (default ../shared/media) is fitted once; its pose is then
changed by a requested (yaw, pitch) (``R = E(yaw, pitch, 0) R_s``, as
``apps/interpolate.py --yaw/--pitch`` does) and rendered by
:class:`facegeo.reenact.GeometricReenactor`. The change actually shown by the output is
measured twice, relative to the same measurement on the unchanged source crop
(``R_out R_src^T`` -> yaw, pitch):

* ``3ddfa``: the 3DDFA_V2 MobileNet pose regressor (:class:`facegeo.headpose.
  HeadPoseEstimator`, independent of facegeo's 3DMM and fit; dlib landmarks give its crop);
* ``fit``: dlib landmarks on the output fitted by facegeo's own weak-perspective fit.

A row passes when the independent measurement of the requested axis is within 15 % of the
request or 2 degrees (the issue's target); the other axis's reading (should stay 0) is
summarised separately. ``--legacy`` renders with the v1 renderer settings
(``head_proxy=False, hole_fill=False``) for the before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from facegeo import transforms as T
from facegeo.headpose import HeadPoseEstimator
from facegeo.image_io import load_image
from facegeo.landmarks.backends import NoFaceError, detect_face
from facegeo.reenact import FaceFit, GeometricReenactor

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["3ddfa_JianzhuGuo.jpg", "lp_s1.jpg", "lp_s11.jpg", "lp_s12.jpg", "lp_d8.jpg"]


def turned(fit: FaceFit, yaw: float, pitch: float) -> FaceFit:
    """The one-row fit with its rotation changed by (yaw, pitch) degrees."""
    e = T.euler_to_matrix(torch.tensor([[float(yaw), float(pitch), 0.0]]))
    return FaceFit(e @ fit.rotation, fit.scale, fit.translation, fit.id_coeffs,
                   fit.exp_coeffs)


def relative_angles(r_out: torch.Tensor, r_src: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3), (3, 3) -> (B, 2) (yaw, pitch) of ``R_out R_src^T`` in degrees."""
    return T.matrix_to_euler(r_out @ r_src.transpose(-1, -2))[:, :2]


def measure(rr: GeometricReenactor, hp: HeadPoseEstimator, images: torch.Tensor):
    """(B, 3, S, S) -> (B, 3, 3) 3DDFA rotations, (B, 3, 3) facegeo-fit rotations (NaN rows
    where dlib finds no face)."""
    lms, ok = [], []
    for im in images:
        try:
            lms.append(detect_face(im, 0, rr.detector).landmarks)
            ok.append(True)
        except NoFaceError:
            lms.append(torch.zeros(68, 2))
            ok.append(False)
    lm = torch.stack(lms).float()
    r3 = hp.rotation(images, lm)
    rf = rr.fit_landmarks(lm).rotation.cpu()
    bad = ~torch.tensor(ok)
    r3[bad] = float("nan")
    rf[bad] = float("nan")
    return r3, rf


def run(size: int, sources: list[str], grid: list[tuple[float, float]], media: Path,
        legacy: bool = False, rr: GeometricReenactor | None = None,
        hp: HeadPoseEstimator | None = None) -> list[dict]:
    """Rows ``{source, yaw, pitch, yaw_3ddfa, pitch_3ddfa, yaw_fit, pitch_fit, ok}``."""
    opts = dict(head_proxy=False, hole_fill=False) if legacy else {}
    rr = rr or GeometricReenactor(size=size, **opts)
    hp = hp or HeadPoseEstimator()
    rows = []
    for name in sources:
        src = rr.fit_source(load_image(media / name))
        tgt = FaceFit.cat([turned(src.fit, y, p) for y, p in grid])
        out = torch.cat([rr.render(src.image, src.fit, tgt.index(slice(i, i + 8)),
                                   source_landmarks=src.landmarks).frames
                         for i in range(0, len(tgt), 8)]).cpu()
        r3, rf = measure(rr, hp, torch.cat([src.image.cpu(), out]))
        m3 = relative_angles(r3[1:], r3[0])
        mf = relative_angles(rf[1:], rf[0])
        for (y, p), a, b in zip(grid, m3.tolist(), mf.tolist()):
            k = 0 if y else 1  # the requested axis
            req = (y, p)[k]
            ok = abs(a[k] - req) <= max(0.15 * abs(req), 2.0)
            rows.append(dict(source=name, yaw=y, pitch=p, yaw_3ddfa=a[0], pitch_3ddfa=a[1],
                             yaw_fit=b[0], pitch_fit=b[1], ok=bool(ok),
                             cross_3ddfa=abs(a[1 - k])))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--sources", nargs="+", default=SOURCES)
    ap.add_argument("--yaw", type=float, nargs="+", default=[-30, -20, -10, 10, 20, 30])
    ap.add_argument("--pitch", type=float, nargs="+", default=[-20, -10, 10, 20])
    ap.add_argument("--legacy", action="store_true", help="the v1 renderer (before)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    media = Path(os.environ.get("FACEGEO_MEDIA", str(REPO.parent / "shared" / "media")))
    grid = [(y, 0.0) for y in a.yaw] + [(0.0, p) for p in a.pitch]
    rows = run(a.size, a.sources, grid, media, legacy=a.legacy)
    print(f"{'source':<24}{'req yaw':>8}{'pitch':>7} | {'3ddfa yaw':>9}{'pitch':>7} | "
          f"{'fit yaw':>8}{'pitch':>7} | ok")
    for r in rows:
        print(f"{r['source']:<24}{r['yaw']:8.0f}{r['pitch']:7.0f} | {r['yaw_3ddfa']:9.1f}"
              f"{r['pitch_3ddfa']:7.1f} | {r['yaw_fit']:8.1f}{r['pitch_fit']:7.1f} | "
              f"{'yes' if r['ok'] else 'NO'}")
    print("\nmean measured / requested (3ddfa, fit), per requested angle over the sources:")
    for y, p in grid:
        sel = [r for r in rows if r["yaw"] == y and r["pitch"] == p]
        k = "yaw" if y else "pitch"
        req = y if y else p
        m3 = sum(r[f"{k}_3ddfa"] for r in sel) / len(sel)
        mf = sum(r[f"{k}_fit"] for r in sel) / len(sel)
        print(f"  {k} {req:+5.0f}: 3ddfa {m3:+6.1f} ({m3 / req:4.2f})   fit {mf:+6.1f} "
              f"({mf / req:4.2f})")
    n_ok = sum(r["ok"] for r in rows)
    print(f"\nrequested axis within 15 % or 2 deg (3ddfa): {n_ok} / {len(rows)}")
    cross = sorted(r["cross_3ddfa"] for r in rows)
    print(f"other axis (should stay 0), 3ddfa: median {cross[len(cross) // 2]:.1f} deg, "
          f"max {cross[-1]:.1f} deg")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
