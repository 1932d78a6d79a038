"""Qualitative figure for docs/disentangle.md: LD-Net and 3DMM recombination on photo landmarks.

    python docs/make_figures_disentangle.py      # writes docs/img/disentangle_real.png

Only redistributable pictures (docs/figure_inputs.py): the targets are scikit-image's
public-domain astronaut and the astronaut warped by facegeo's geometric renderer to another
face shape (a random ICT identity, 1.5 sigma, seed 4); the drivers are three frames of the
scripted performance (``synthetic_driving``: jaw open, smile + blink, raised brows with a
head turn) rendered with a third face shape (seed 3), so the three identities differ.

Top row: driving images with their dlib landmarks. Left column: target images with their
landmarks. Other cells: the target image with, in its frame (see disentangle_landmarks),
blue = the driver's landmarks as they are (naive, mapped to the target's box), red = LD-Net,
yellow = 3DMM recombination.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_inputs import astronaut  # noqa: E402

CELL = 150
# iBUG-68 polylines: (start, end, closed)
PARTS = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
         (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]
TARGETS = ["astronaut", "astronaut, identity seed 4"]
DRIVERS = ["frame 16", "frame 43", "frame 73"]  # of a 90-frame performance, identity seed 3
N_FRAMES = 90
# BGR (OpenCV)
COLORS = {"target": (40, 200, 40), "naive": (255, 120, 60), "ldnet": (40, 40, 255),
          "3dmm": (0, 220, 255)}


def crop_box(lm: np.ndarray, scale: float = 1.7):
    lo, hi = lm.min(0), lm.max(0)
    c = (lo + hi) / 2
    h = scale * (hi - lo).max() / 2
    return c[0] - h, c[1] - h, c[0] + h, c[1] + h


def cell(img: np.ndarray, box, sets):
    """Crop ``box`` of the BGR ``img`` to CELL x CELL and draw the landmark ``sets``
    [(pts (68, 2), color)]."""
    x0, y0, x1, y1 = box
    s = CELL / (x1 - x0)
    M = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], dtype=np.float64)
    im = cv2.warpAffine(img, M, (CELL, CELL), flags=cv2.INTER_AREA,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
    for pts, col in sets:
        q = np.round((pts - np.array([x0, y0])) * s * 4).astype(np.int32)  # 2 fractional bits
        for a, b, closed in PARTS:
            cv2.polylines(im, [q[a:b]], closed, col, 1, cv2.LINE_AA, shift=2)
    return im


def other_identity(rr, src, fits, seed: int) -> torch.Tensor:
    """``fits`` with a random ICT identity (1.5 sigma, ``seed``), rendered from the
    astronaut by the geometric renderer and pasted into the full photo: (B, 3, 512, 512)."""
    g = torch.Generator().manual_seed(seed)
    ident = torch.randn(1, rr.model.n_id, generator=g).to(fits.id_coeffs) * 1.5
    fits.id_coeffs = ident.expand(len(fits), -1)
    return torch.stack(list(rr.render_stream(src, fits, paste=True)))


def inputs() -> dict[str, torch.Tensor]:
    """The TARGETS and DRIVERS pictures, (3, 512, 512) float RGB each."""
    from facegeo.reenact import GeometricReenactor, synthetic_driving

    torch.manual_seed(0)
    rr = GeometricReenactor(size=256)
    img = astronaut()
    src = rr.fit_source(img)
    perf = synthetic_driving(src.fit, rr.model, N_FRAMES)
    drv = other_identity(rr, src, perf.index(torch.tensor([16, 43, 73])), seed=3)
    tgt = other_identity(rr, src, src.fit.index(slice(0, 1)), seed=4)
    return dict(zip(TARGETS + DRIVERS, [img, tgt[0], *drv]))


def main():
    os.environ.setdefault("FACEGEO_ASSETS", str(ROOT.parent / "shared" / "assets"))
    from facegeo.disentangle import denormalize_landmarks, disentangle_landmarks
    from facegeo.disentangle.data import normalize_landmarks
    from facegeo.image_io import to_uint8_hwc
    from facegeo.landmarks import detect_landmarks

    imgs, lms = {}, {}
    for name, arr in inputs().items():
        imgs[name] = np.ascontiguousarray(to_uint8_hwc(arr)[:, :, ::-1])  # BGR (OpenCV)
        lms[name] = detect_landmarks(arr).float()
    W = CELL * (1 + len(DRIVERS))
    H = CELL * (1 + len(TARGETS))
    fig = np.full((H, W, 3), 255, np.uint8)
    for k, (txt, col) in enumerate([("input", (0, 150, 0)), ("driver as is", COLORS["naive"]),
                                    ("LD-Net", COLORS["ldnet"]), ("3DMM", COLORS["3dmm"])]):
        cv2.putText(fig, txt, (8, 24 + 24 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.55, col, 2,
                    cv2.LINE_AA)
    for j, dn in enumerate(DRIVERS):
        lm = lms[dn].numpy()
        fig[:CELL, CELL * (j + 1):CELL * (j + 2)] = cell(imgs[dn], crop_box(lm),
                                                         [(lm, COLORS["target"])])
    for i, tn in enumerate(TARGETS):
        tl = lms[tn]
        box = crop_box(tl.numpy())
        rows = slice(CELL * (i + 1), CELL * (i + 2))
        fig[rows, :CELL] = cell(imgs[tn], box, [(tl.numpy(), COLORS["target"])])
        drv = torch.stack([lms[dn] for dn in DRIVERS])
        tgt = tl[None].expand(len(DRIVERS), 68, 2)
        out_ld = disentangle_landmarks(tgt, drv, "ldnet")
        out_3d = disentangle_landmarks(tgt, drv, "3dmm")
        _, c, h = normalize_landmarks(tgt)
        naive = denormalize_landmarks(normalize_landmarks(drv)[0], c, h)
        for j in range(len(DRIVERS)):
            sets = [(naive[j].numpy(), COLORS["naive"]), (out_3d[j].numpy(), COLORS["3dmm"]),
                    (out_ld[j].numpy(), COLORS["ldnet"])]
            fig[rows, CELL * (j + 1):CELL * (j + 2)] = cell(imgs[tn], box, sets)
    out = ROOT / "docs" / "img" / "disentangle_real.png"
    from facegeo.assets import atomic_write

    ok, buf = cv2.imencode(".png", fig, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write(out, lambda tmp: tmp.write_bytes(buf.tobytes()))
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
