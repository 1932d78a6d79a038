"""Figures of docs/reenact.md (geometric reenactment and interpolation strips).

    python docs/make_figures_reenact.py [--media $FACEGEO_MEDIA] [--tile 128]

Writes docs/img/reenact_identity.png (driver frame with the driver's own fitted mesh, result
with the target mesh = source identity + driver expression/pose, for two drivers of
different people), docs/img/reenact_pairs.png (two source/driver pairs of different people: driving
frames, relative-mode results, absolute-mode results for the first pair) and
docs/img/reenact_interpolate.png (scikit-image's astronaut blended towards yaw 25 deg,
pitch -10 deg and a smiling open mouth: pose + expression, pose only, expression only, and
the target mesh overlay).

Renderer v2 (issue #24; ``--only v2`` writes just these): docs/img/reenact_pose_v1_v2.png
(requested yaw -30/-15/+15/+30 and pitch -20/+20 on two portraits, v1 renderer rows above
v2 rows), docs/img/reenact_eyes_v1_v2.png (eyes closed / jaw open in the target, v1 vs
v2) and docs/img/reenact_stages.png (the stages of facegeo.geometric.render for one turn).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegeo import transforms as T
from facegeo.image_io import load_image
from facegeo.landmarks.crops import crop_images
from facegeo.reenact import (
    FaceFit,
    GeometricReenactor,
    driving_boxes,
    expression_from_names,
    interpolate_fits,
    track_driving,
)
from facegeo.video import read_video

OUT = Path(__file__).resolve().parent / "img"
REPO_SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def save_png(path: Path, img: torch.Tensor) -> None:
    """(3, H, W) -> palette PNG (adaptive 256 colours, keeps the file small)."""
    from PIL import Image

    a = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(a).quantize(256, method=Image.Quantize.MEDIANCUT, dither=1)
    tmp = path.with_suffix(".tmp.png")
    im.save(tmp, optimize=True)
    os.replace(tmp, path)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def resize(x: torch.Tensor, s: int) -> torch.Tensor:
    return F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)


def pair_rows(rr, media: Path, source: str, video: str, picks, tile: int, absolute: bool):
    frames, fps = read_video(media / video, max_frames=max(picks) + 1)
    src = rr.fit_source(load_image(media / source))
    track = track_driving(frames, fps)
    dfit = rr.fit_driving(track)
    boxes = driving_boxes(track)
    idx = torch.tensor(picks)
    imgs = torch.from_numpy(frames[picks]).permute(0, 3, 1, 2).float() / 255
    drv = crop_images(imgs, boxes[idx], rr.size)
    rows = [torch.cat([resize(src.image, tile)[0]] + list(resize(drv, tile)), 2)]
    modes = ("relative", "absolute") if absolute else ("relative",)
    for mode in modes:
        tgt = rr.target_fits(src.fit, dfit, mode).index(idx)
        out = rr.render(src.image, src.fit, tgt, source_landmarks=src.landmarks).frames
        blank = torch.ones(3, tile, tile)
        rows.append(torch.cat([blank] + list(resize(out, tile)), 2))
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--media", default=os.environ.get("FACEGEO_MEDIA", str(REPO_SHARED / "media")))
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--only", choices=["v2"], help="only the renderer-v2 figures")
    a = p.parse_args()
    media = Path(a.media)
    v2_figures(media, a.tile)
    if a.only == "v2":
        return
    OUT.mkdir(exist_ok=True)
    rr = GeometricReenactor(size=256)
    gap = torch.ones(3, 6, 5 * a.tile)
    rows = pair_rows(rr, media, "lp_s12.jpg", "lp_d12.mp4", [0, 40, 60, 100], a.tile, True)
    rows += [gap]
    rows += pair_rows(rr, media, "lp_s1.jpg", "lp_d3.mp4", [0, 60, 150, 250], a.tile, False)
    save_png(OUT / "reenact_pairs.png", torch.cat(rows, 1))

    # identity: the driver's own fitted mesh vs the target mesh (source identity)
    from facegeo_apps.interpolate import _mesh_overlay

    src = rr.fit_source(load_image(media / "lp_s12.jpg"))
    rows = []
    for video, pick in (("lp_d12.mp4", 40), ("lp_d3.mp4", 150)):
        frames, fps = read_video(media / video, max_frames=pick + 1)
        track = track_driving(frames, fps)
        dfit = rr.fit_driving(track)
        boxes = driving_boxes(track)
        img = torch.from_numpy(frames[pick:pick + 1]).permute(0, 3, 1, 2).float() / 255
        drv = crop_images(img, boxes[pick:pick + 1], rr.size)
        d1 = dfit.index(pick)
        tgt = rr.target_fits(src.fit, dfit, "relative").index(pick)
        out = rr.render(src.image, src.fit, tgt, source_landmarks=src.landmarks).frames
        tiles = [drv, _mesh_overlay(rr, d1, drv), out, _mesh_overlay(rr, tgt, out)]
        rows.append(torch.cat([resize(t, a.tile)[0] for t in tiles], 2))
    save_png(OUT / "reenact_identity.png", torch.cat(rows, 1))

    # interpolation strip on the public-domain astronaut
    from skimage import data

    astro = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).float() / 255
    src = rr.fit_source(astro)
    sf = src.fit
    ang = sf.angles.clone()
    ang[:, 0], ang[:, 1] = 25.0, -10.0
    exp = expression_from_names(rr.model, {"jawOpen": 0.35, "mouthSmile_L": 0.8,
                                           "mouthSmile_R": 0.8, "browInnerUp_L": 0.5,
                                           "browInnerUp_R": 0.5}, sf.exp_coeffs)
    tgt = FaceFit(T.euler_to_matrix(ang), sf.scale, sf.translation, sf.id_coeffs, exp)
    alpha = torch.linspace(0, 1, 5)
    rows = []
    for only in (None, "pose", "expression"):
        fits = interpolate_fits(sf, tgt, alpha, only=only)
        out = rr.render(src.image, sf, fits, source_landmarks=src.landmarks).frames
        rows.append(torch.cat(list(resize(out, a.tile)), 2))
    fits = interpolate_fits(sf, tgt, alpha)
    out = rr.render(src.image, sf, fits, source_landmarks=src.landmarks).frames
    rows.append(torch.cat(list(resize(_mesh_overlay(rr, fits, out), a.tile)), 2))
    save_png(OUT / "reenact_interpolate.png", torch.cat(rows, 1))


def v2_figures(media: Path, tile: int) -> None:
    """The before/after figures of the v2 renderer (module docstring)."""
    from facegeo.geometric.render import compose, head_flow, silhouette_weight

    v1 = GeometricReenactor(size=256, head_proxy=False, hole_fill=False)
    v2 = GeometricReenactor(size=256)
    grid = [(-30, 0), (-15, 0), (0, 0), (15, 0), (30, 0), (0, -20), (0, 20)]
    rows = []
    for name in ("lp_s1.jpg", "3ddfa_JianzhuGuo.jpg"):
        for rr in (v1, v2):
            src = rr.fit_source(load_image(media / name))
            e = T.euler_to_matrix(torch.tensor([[float(y), float(p), 0.0] for y, p in grid]))
            f = src.fit
            tgt = FaceFit(e @ f.rotation, f.scale.expand(len(grid)),
                          f.translation.expand(len(grid), -1), f.id_coeffs.expand(len(grid), -1),
                          f.exp_coeffs.expand(len(grid), -1))
            out = rr.render(src.image, f, tgt, source_landmarks=src.landmarks).frames
            rows.append(torch.cat(list(resize(out, tile)), 2))
    save_png(OUT / "reenact_pose_v1_v2.png", torch.cat(rows, 1))
    rows = []
    for name in ("lp_s11.jpg", "lp_s12.jpg"):
        for rr in (v1, v2):
            src = rr.fit_source(load_image(media / name))
            f = src.fit
            exps = [f.exp_coeffs]
            for w in ({"eyeBlink_L": 0.6, "eyeBlink_R": 0.6},
                      {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}, {"jawOpen": 0.5}):
                exps.append(expression_from_names(rr.model, w, f.exp_coeffs))
            n = len(exps)
            tgt = FaceFit(f.rotation.expand(n, -1, -1), f.scale.expand(n),
                          f.translation.expand(n, -1), f.id_coeffs.expand(n, -1), torch.cat(exps))
            out = rr.render(src.image, f, tgt, source_landmarks=src.landmarks).frames
            rows.append(torch.cat(list(resize(out[:, :, 48:176, 48:208], tile)), 2))
    save_png(OUT / "reenact_eyes_v1_v2.png", torch.cat(rows, 1))
    # stages for one turn (yaw +25) of lp_s1
    src = v2.fit_source(load_image(media / "lp_s1.jpg"))
    f = src.fit
    tf = FaceFit(T.euler_to_matrix(torch.tensor([[25.0, 0.0, 0.0]])) @ f.rotation, f.scale,
                 f.translation, f.id_coeffs, f.exp_coeffs)
    xy, cov = v2._face_flow(v2.image_vertices(f), v2.image_vertices(tf), 256)
    outer, _ = head_flow(v2.head_ellipsoid(f), (tf.rotation, tf.scale, tf.translation),
                         (f.rotation, f.scale, f.translation), 256, 256, step=v2.proxy_step)
    m = silhouette_weight(cov, v2.blend_px)
    face_only = compose(src.image, xy, xy, torch.ones_like(m))[0] * cov[:, None]
    head_only = compose(src.image, outer, outer, torch.zeros_like(m))[0]
    final = v2.render(src.image, f, tf, source_landmarks=src.landmarks).frames
    tiles = [src.image, face_only, head_only, m[:, None].expand(-1, 3, -1, -1), final]
    save_png(OUT / "reenact_stages.png", torch.cat([resize(t, tile)[0] for t in tiles], 2))


if __name__ == "__main__":
    main()
