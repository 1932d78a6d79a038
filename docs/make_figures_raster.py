"""Figures for docs/raster.md: a shaded ICT mesh over a photo, a mesh-flow reenactment.

    python docs/make_figures_raster.py

The photo is scikit-image's public-domain astronaut (docs/figure_inputs.py: committed figures
may not show the dev media or the corpus).
The ICT-FaceKit mean mesh is placed over the photo with a 2D similarity (scale, in-plane
rotation, translation) fitted to a few dlib landmarks (eyes, nose, mouth corners): a rough
placement only, not a 3DMM fit (no identity, expression or yaw/pitch). Writes
docs/img/raster_overlay.png (photo | landmark image | shaded mesh over the photo |
triangle ids) and docs/img/raster_flow.png (source mesh over the photo | driving mesh,
jaw open + smile + yaw | backward flow colour-coded, occluded in grey | photo warped by
the flow inside the face). Landmarks come from dlib's 68-point predictor
(face_recognition_models) through facegeo.landmarks' dlib_hog backend; the script does not
depend on facegeo.morphable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

import facegeo.assets
from facegeo.assets import atomic_write
from facegeo.image_io import to_uint8_hwc
from facegeo.raster import (
    draw_landmark_lines,
    flow_to_color,
    mesh_flow,
    rasterize,
    shade_lambert,
    warp_flow,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))
from figure_inputs import astronaut  # noqa: E402

SIZE = 320
FIT_POINTS = [27, 30, 31, 33, 35, 36, 39, 42, 45, 48, 54]


def detect_68(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (68, 2) landmarks of the largest face: facegeo.landmarks'
    dlib HOG backend at one pyramid upsampling (dlib's detector(rgb, 1) + the 68-point
    predictor). NoFaceError when there is none."""
    from facegeo.landmarks import detect_face, get_detector

    face = detect_face(rgb, detector=get_detector("dlib_hog", upsample=1))
    return face.landmarks.double().numpy()


def similarity_2d(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R (2x2), t with dst ~ s R src + t (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = float((S * np.diag(D)).sum() / (a**2).sum())
    return s, R, md - s * R @ ms


def yaw_matrix(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def to_image_space(v_cm: np.ndarray, s: float, R2: np.ndarray, t: np.ndarray) -> torch.Tensor:
    """Model (x, y up, z to viewer) -> image (x right, y down, z = depth away from camera)."""
    xy = np.stack([v_cm[:, 0], -v_cm[:, 1]], 1) @ (s * R2).T + t
    return torch.tensor(np.concatenate([xy, -s * v_cm[:, 2:3]], 1), dtype=torch.float32)[None]


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(
        (t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    )


def save_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(
        ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]
    )
    assert ok
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outdir", default=str(REPO / "docs" / "img"))
    args = ap.parse_args()
    out = Path(args.outdir)

    rgb = to_uint8_hwc(astronaut())
    lm0 = detect_68(rgb)
    centre = 0.5 * (lm0.min(0) + lm0.max(0)) - [0, 0.15 * np.ptp(lm0[:, 1])]
    half = 0.95 * np.ptp(lm0, 0).max()
    x0, y0 = (centre - half).astype(int)
    side = int(2 * half)
    pad = side
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    crop = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    rgb = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    lms = detect_68(rgb)
    photo = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255

    d = np.load(facegeo.assets.resolve("ict_facekit"))
    mean = d["mean"].astype(np.float64)
    faces = torch.tensor(d["faces"].astype(np.int64))
    lm_idx = d["landmarks68"]
    model_lm = np.stack([mean[lm_idx, 0], -mean[lm_idx, 1]], 1)
    s, R2, t = similarity_2d(model_lm[FIT_POINTS], lms[FIT_POINTS])
    src = to_image_space(mean, s, R2, t)
    err = np.linalg.norm((src[0, lm_idx, :2].numpy() - lms)[FIT_POINTS], axis=1)
    print(
        f"similarity fit on {len(FIT_POINTS)} landmarks: scale {s:.2f} px/cm, "
        f"rms {np.sqrt((err**2).mean()):.1f} px"
    )

    # --- figure 1: overlay
    fr = rasterize(src, faces, SIZE, SIZE, cull_backfaces=True)
    shaded = shade_lambert(src, faces, fr, light_dir=(0.3, -0.4, -1.0), ambient=0.25, diffuse=0.75)
    alpha = 0.7 * fr.mask[:, None].float()
    overlay = photo * (1 - alpha) + shaded * alpha
    land = draw_landmark_lines(
        torch.tensor(lms, dtype=torch.float32)[None], SIZE, SIZE, thickness=1.5
    )
    ids = fr.face_id[0]
    # colour by triangle index (hue): ICT numbers neighbouring quads consecutively
    hue = torch.linspace(0, 1, faces.shape[0]) * 7 % 1.0
    palette = flow_to_color(
        torch.stack([torch.cos(2 * np.pi * hue), torch.sin(2 * np.pi * hue)], -1)[None, None]
    )
    palette = palette[0, :, 0].T * 0.85
    idimg = torch.where(fr.mask[0, ..., None], palette[ids.clamp(min=0)], torch.zeros(3))
    idimg = idimg.permute(2, 0, 1)[None]
    panels = [to_uint8(x) for x in (photo, land, overlay, idimg)]
    save_png(out / "raster_overlay.png", np.concatenate(panels, 1))

    # --- figure 2: flow from a driving mesh (jaw open + smile, turned) back to the photo
    names = list(d["exp_names"])
    w = {
        "jawOpen": 0.45,
        "mouthSmile_L": 0.7,
        "mouthSmile_R": 0.7,
        "browInnerUp_L": 0.5,
        "browInnerUp_R": 0.5,
    }
    drv_cm = mean.copy()
    for k, a in w.items():
        drv_cm += a * d["exp_basis"][names.index(k)].astype(np.float64)
    c = mean[d["landmarks68"]].mean(0)
    drv_cm = (drv_cm - c) @ yaw_matrix(18.0).T + c
    drv = to_image_space(drv_cm, s, R2, t)
    res = mesh_flow(src, drv, faces, SIZE, SIZE, cull_backfaces=True)
    frd = res.driving
    shaded_d = shade_lambert(
        drv, faces, frd, light_dir=(0.3, -0.4, -1.0), ambient=0.25, diffuse=0.75
    )
    col = flow_to_color(res.flow * res.valid[..., None])
    col = torch.where(res.occluded[:, None], torch.full_like(col, 0.45), col)
    col = torch.where(res.valid[:, None], col, torch.ones_like(col))
    warped = warp_flow(photo, res.flow)
    # paste the warped face into the photo where the driving mesh is visible in the source
    vis = res.visible[:, None].float()
    vis = torch.nn.functional.avg_pool2d(vis, 5, 1, 2) * vis  # soften the seam a little
    composite = photo * (1 - vis) + warped * vis
    panels = [to_uint8(x) for x in (overlay, shaded_d, col, composite)]
    save_png(out / "raster_flow.png", np.concatenate(panels, 1))
    print(
        f"flow: {int(res.valid.sum())} valid driving pixels, {int(res.occluded.sum())} occluded in "
        f"the source, max |flow| {float(res.flow.norm(dim=-1).max()):.1f} px"
    )


if __name__ == "__main__":
    main()
