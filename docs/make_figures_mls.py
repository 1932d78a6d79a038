"""Figures and numbers for docs/mls.md: a portrait made to smile by moving its 68 landmarks.

    python docs/make_figures_mls.py

The portrait is scikit-image's public-domain astronaut (docs/figure_inputs.py: committed
figures may not show the dev media or the corpus).

Writes docs/img/mls_smile.png (before | after | deformed grid, cropped to the face) and
prints the coarse-grid shortcut errors and timings quoted in docs/mls.md. Landmarks come from
dlib's 68-point shape predictor (face_recognition_models) through facegeo.landmarks' dlib_hog
backend.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from facegeo import mls
from facegeo.assets import atomic_write
from facegeo.image_io import to_uint8_hwc

REPO = Path(__file__).resolve().parents[1]
SIZE = 512
sys.path.insert(0, str(REPO / "docs"))
from figure_inputs import astronaut  # noqa: E402


def detect_68(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (68, 2) float landmarks of the largest face: facegeo.landmarks'
    dlib HOG backend at one pyramid upsampling (dlib's detector(rgb, 1) + the 68-point
    predictor). NoFaceError when there is none."""
    from facegeo.landmarks import detect_face, get_detector

    face = detect_face(rgb, detector=get_detector("dlib_hog", upsample=1))
    return face.landmarks.double().numpy()


def smile(lms: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Targets for a smile: mouth corners up and out, the lips follow, the rest stays."""
    q = lms.copy()
    width = np.linalg.norm(lms[54] - lms[48])
    up, out = 0.16 * width * strength, 0.07 * width * strength
    centre_x = 0.5 * (lms[48, 0] + lms[54, 0])
    moves = {48: 1.0, 54: 1.0, 60: 0.9, 64: 0.9, 49: 0.55, 53: 0.55, 59: 0.6, 55: 0.6,
             67: 0.2, 65: 0.2, 58: 0.25, 56: 0.25, 50: 0.15, 52: 0.15}
    for i, f in moves.items():
        side = np.sign(lms[i, 0] - centre_x)
        q[i, 0] += side * out * f
        q[i, 1] -= up * f
    return q


def grid_image(h: int, w: int, step: int = 16) -> np.ndarray:
    img = np.ones((h, w, 3), np.float32)
    img[::step] = (0.1, 0.3, 0.9)
    img[:, ::step] = (0.1, 0.3, 0.9)
    return img


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def to_uint8(t: torch.Tensor) -> np.ndarray:
    arr = (t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def main() -> None:
    torch.set_num_threads(1)  # timings on a shared, oversubscribed 2-core machine
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", default="rigid")
    ap.add_argument("--out", default=str(REPO / "docs" / "img" / "mls_smile.png"))
    args = ap.parse_args()

    rgb = to_uint8_hwc(astronaut())
    # square crop around the face (from a first landmark pass), resized to SIZE x SIZE
    lm0 = detect_68(rgb)
    centre = 0.5 * (lm0.min(0) + lm0.max(0))
    half = 0.95 * (lm0.max(0) - lm0.min(0)).max()
    x0, y0 = (centre - half).astype(int)
    side = int(2 * half)
    pad = side
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    crop = padded[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    rgb = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    p = detect_68(rgb)
    q = smile(p)
    tp = torch.tensor(p, dtype=torch.float32)[None]
    tq = torch.tensor(q, dtype=torch.float32)[None]
    img = to_tensor(rgb.astype(np.float32) / 255)

    with torch.no_grad():
        t0 = time.perf_counter()
        out, src = mls.warp_image(img, tp, tq, args.kind, pin_border=True, return_grid=True)
        t_exact = time.perf_counter() - t0
        grid_out = mls.warp_image(to_tensor(grid_image(SIZE, SIZE)), tp, tq, args.kind,
                                  pin_border=True)
        print(f"astronaut: {SIZE}x{SIZE}, 68 dlib landmarks, kind={args.kind}, "
              f"pinned border; exact warp {t_exact * 1e3:.0f} ms")
        for kind in mls.KINDS:
            ex = mls.mls_grid(tq, tp, SIZE, SIZE, kind, pin_border=True)
            for step in (2, 4, 8):
                t0 = time.perf_counter()
                co = mls.mls_grid(tq, tp, SIZE, SIZE, kind, pin_border=True, grid_step=step)
                dt = time.perf_counter() - t0
                err = (co - ex).norm(dim=-1)
                print(f"  {kind:>10} grid_step={step}: map error max {err.max():.3f} px, "
                      f"mean {err.mean():.4f} px, 99.9% {err.flatten().quantile(0.999):.3f} px,"
                      f" {dt * 1e3:.0f} ms")

    # crop around the face
    lo = p.min(0) - np.array([40, 70])
    hi = p.max(0) + np.array([40, 30])
    x0, y0 = np.clip(lo, 0, SIZE - 1).astype(int)
    x1, y1 = np.clip(hi, 0, SIZE).astype(int)
    before = rgb.copy()
    for (ax, ay), (bx, by) in zip(p, q):
        cv2.circle(before, (int(round(ax)), int(round(ay))), 2, (0, 255, 0), -1, cv2.LINE_AA)
        if np.hypot(bx - ax, by - ay) > 0.5:
            cv2.arrowedLine(before, (int(round(ax)), int(round(ay))),
                            (int(round(bx)), int(round(by))), (255, 40, 40), 1, cv2.LINE_AA,
                            tipLength=0.3)
    after = to_uint8(out)
    grid = to_uint8(grid_out)
    for bx, by in q:
        cv2.circle(grid, (int(round(bx)), int(round(by))), 2, (220, 30, 30), -1, cv2.LINE_AA)
    panels = [im[y0:y1, x0:x1] for im in (before, after, grid)]
    sep = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    fig = np.concatenate([panels[0], sep, panels[1], sep, panels[2]], 1)
    scale = min(1.0, 840 / fig.shape[1])
    if scale < 1:
        fig = cv2.resize(fig, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(fig, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise SystemExit("PNG encoding failed")
    atomic_write(Path(args.out), lambda f: f.write_bytes(buf.tobytes()))
    print(f"wrote {args.out} ({len(buf) // 1024} KB, {fig.shape[1]}x{fig.shape[0]})")


if __name__ == "__main__":
    main()
