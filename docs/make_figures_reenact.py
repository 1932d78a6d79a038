"""Figures of docs/reenact.md (geometric reenactment and interpolation strips).

    python docs/make_figures_reenact.py [--tile 128] [--only v2]

Every picture comes from docs/figure_inputs.py (scikit-image's public-domain astronaut, the
astronaut animated by facegeo's 3DMM-scripted performance, renders of the ICT-FaceKit
model); nothing of the dev media. Writes:

* docs/img/reenact_pairs.png: top block, the astronaut driven by the driving video
  ``figure_inputs.driving_video`` (itself the astronaut animated by ``synthetic_driving``,
  so this is self-reenactment through tracking and fitting) in relative mode; bottom block,
  the astronaut driven by an ICT 3DMM performance of another identity (random, 1.5 sigma)
  in another pose and framing (yaw -20, pitch +8, the face 0.75 times as large, 22 px left
  and 18 px down), fitted from
  its 68 projected landmarks, in relative and absolute mode.
* docs/img/reenact_identity.png: two ICT drivers of very different identities (1.5 sigma
  random) doing the same expression and pose; per row the driver render, the driver's own
  fitted mesh, the relative-mode result for the astronaut and its target mesh.
* docs/img/reenact_interpolate.png: the astronaut blended towards yaw 25 deg, pitch -10 deg
  and a smiling open mouth (pose + expression, pose only, expression only, target mesh).

Renderer v2 (issue #24; ``--only v2`` writes just these): docs/img/reenact_pose_v1_v2.png
(the astronaut at requested yaw -30/-15/0/+15/+30 and pitch -20/+20, v1 row above the v2
row), docs/img/reenact_eyes_v1_v2.png (eyes closed / jaw open in the target, v1 vs v2) and
docs/img/reenact_stages.png (the stages of facegeo.geometric.render for one turn).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegeo import transforms as T
from facegeo.geometric.facemesh import posed_vertices
from facegeo.geometric.state import DrivingTrack
from facegeo.landmarks.crops import crop_images
from facegeo.reenact import (
    FaceFit,
    GeometricReenactor,
    driving_boxes,
    expression_from_names,
    interpolate_fits,
    synthetic_driving,
    track_driving,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_inputs import astronaut, driving_frames  # noqa: E402

OUT = Path(__file__).resolve().parent / "img"
N_FRAMES = 90  # the performance: jaw open ~ frame 16, smile + blink ~ 43, brows ~ 73


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


def shaded_head(rr, fits: FaceFit, size: int) -> torch.Tensor:
    """(B, 3, size, size) Lambert-shaded render of the whole ICT head of ``fits`` (crop
    pixels) on a grey background: what a 3DMM driver "looks like"."""
    from facegeo.raster import rasterize, shade_lambert

    m = rr.model
    v = m.vertices(fits.id_coeffs.to(m.mean), fits.exp_coeffs.to(m.mean)).float()
    v = posed_vertices(v, fits.rotation.float(), fits.scale.float(), fits.translation.float())
    faces = m.triangles.long()
    frag = rasterize(v, faces, size, size, cull_backfaces=True)
    color = v.new_tensor([0.85, 0.78, 0.72]).expand(v.shape[1], 3)
    shaded = shade_lambert(v, faces, frag, colors=color).clamp(0, 1)
    mask = frag.mask[:, None].float()
    return shaded * mask + 0.45 * (1 - mask)


def ict_driver(rr, src: FaceFit, seed: int, pose=(0.0, 0.0, 0.0), scale: float = 1.0,
               shift=(0.0, 0.0)) -> FaceFit:
    """The scripted performance (``synthetic_driving``) done by an ICT head of a random
    identity (1.5 sigma, ``seed``), turned by ``pose`` (yaw, pitch, roll) from the astronaut's
    pose, its face ``scale`` times the astronaut's and moved by ``shift`` crop pixels."""
    g = torch.Generator().manual_seed(seed)
    ident = torch.randn(1, rr.model.n_id, generator=g) * 1.5
    base = FaceFit(T.euler_to_matrix(torch.tensor([pose])) @ src.rotation, src.scale * scale,
                   src.translation + torch.tensor([shift]), ident,
                   torch.zeros_like(src.exp_coeffs))
    return synthetic_driving(base, rr.model, N_FRAMES)


def fit_from_landmarks(rr, true: FaceFit) -> FaceFit:
    """The driver fit facegeo computes from the driver's 68 landmarks (projected from its
    mesh, as a tracker would give them), through the real video fit."""
    lm = rr.fit_landmarks68(true)
    n = lm.shape[0]
    track = DrivingTrack(lm, torch.ones(n, dtype=torch.bool), (rr.size, rr.size), 30.0)
    c = (rr.size - 1) / 2
    return rr.fit_driving(track, torch.tensor([[c, c, float(rr.size)]]).expand(n, 3))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--only", choices=["v2"], help="only the renderer-v2 figures")
    a = p.parse_args()
    torch.manual_seed(0)
    OUT.mkdir(exist_ok=True)
    v2_figures(a.tile)
    if a.only == "v2":
        return
    from facegeo_apps.interpolate import _mesh_overlay

    rr = GeometricReenactor(size=256)
    src = rr.fit_source(astronaut())
    tile = a.tile
    blank = torch.ones(3, tile, tile)

    def render(tgt):
        return rr.render(src.image, src.fit, tgt, source_landmarks=src.landmarks).frames

    # pairs, top block: the driving video (tracked and fitted), relative mode
    picks = [0, 16, 43, 73]
    idx = torch.tensor(picks)
    frames = driving_frames(N_FRAMES, full=True)
    u8 = (frames.permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).numpy()
    track = track_driving(u8, 30.0)
    dfit = rr.fit_driving(track)
    drv = crop_images(frames[idx], driving_boxes(track)[idx], rr.size)
    rows = [torch.cat([resize(src.image, tile)[0]] + list(resize(drv, tile)), 2)]
    out = render(rr.target_fits(src.fit, dfit, "relative").index(idx))
    rows.append(torch.cat([blank] + list(resize(out, tile)), 2))
    rows.append(torch.ones(3, 6, 5 * tile))
    # pairs, bottom block: an ICT performance of another identity, pose and framing
    true = ict_driver(rr, src.fit, seed=3, pose=(-20.0, 8.0, 0.0), scale=0.75,
                      shift=(-22.0, 18.0))
    dfit = fit_from_landmarks(rr, true)
    drv = shaded_head(rr, true.index(idx), rr.size)
    rows.append(torch.cat([resize(src.image, tile)[0]] + list(resize(drv, tile)), 2))
    for mode in ("relative", "absolute"):
        out = render(rr.target_fits(src.fit, dfit, mode).index(idx))
        rows.append(torch.cat([blank] + list(resize(out, tile)), 2))
    save_png(OUT / "reenact_pairs.png", torch.cat(rows, 1))

    # identity: two ICT drivers of very different identities, same motion (frame 16:
    # jaw open, head turned); the driver's own fitted mesh vs the target mesh
    rows = []
    pick = 16
    for seed in (3, 4):
        true = ict_driver(rr, src.fit, seed=seed)
        dfit = fit_from_landmarks(rr, true)
        drv = shaded_head(rr, true.index(pick), rr.size)
        tgt = rr.target_fits(src.fit, dfit, "relative").index(pick)
        out = render(tgt)
        tiles = [drv, _mesh_overlay(rr, dfit.index(pick), drv), out, _mesh_overlay(rr, tgt, out)]
        rows.append(torch.cat([resize(t, tile)[0] for t in tiles], 2))
    save_png(OUT / "reenact_identity.png", torch.cat(rows, 1))

    # interpolation strip on the astronaut
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
        rows.append(torch.cat(list(resize(render(fits), tile)), 2))
    fits = interpolate_fits(sf, tgt, alpha)
    rows.append(torch.cat(list(resize(_mesh_overlay(rr, fits, render(fits)), tile)), 2))
    save_png(OUT / "reenact_interpolate.png", torch.cat(rows, 1))


def v2_figures(tile: int) -> None:
    """The before/after figures of the v2 renderer (module docstring), on the astronaut."""
    from facegeo.geometric.render import compose, head_flow, silhouette_weight

    v1 = GeometricReenactor(size=256, head_proxy=False, hole_fill=False)
    v2 = GeometricReenactor(size=256)
    image = astronaut()
    grid = [(-30, 0), (-15, 0), (0, 0), (15, 0), (30, 0), (0, -20), (0, 20)]
    rows = []
    for rr in (v1, v2):
        src = rr.fit_source(image)
        e = T.euler_to_matrix(torch.tensor([[float(y), float(p), 0.0] for y, p in grid]))
        f = src.fit
        tgt = FaceFit(e @ f.rotation, f.scale.expand(len(grid)),
                      f.translation.expand(len(grid), -1), f.id_coeffs.expand(len(grid), -1),
                      f.exp_coeffs.expand(len(grid), -1))
        out = rr.render(src.image, f, tgt, source_landmarks=src.landmarks).frames
        rows.append(torch.cat(list(resize(out, tile)), 2))
    save_png(OUT / "reenact_pose_v1_v2.png", torch.cat(rows, 1))
    rows = []
    for rr in (v1, v2):
        src = rr.fit_source(image)
        f = src.fit
        exps = [f.exp_coeffs]
        for w in ({"eyeBlink_L": 0.6, "eyeBlink_R": 0.6},
                  {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}, {"jawOpen": 0.5}):
            exps.append(expression_from_names(rr.model, w, f.exp_coeffs))
        n = len(exps)
        tgt = FaceFit(f.rotation.expand(n, -1, -1), f.scale.expand(n),
                      f.translation.expand(n, -1), f.id_coeffs.expand(n, -1), torch.cat(exps))
        out = rr.render(src.image, f, tgt, source_landmarks=src.landmarks).frames
        rows.append(torch.cat(list(resize(out[:, :, 48:208, 48:208], tile)), 2))
    save_png(OUT / "reenact_eyes_v1_v2.png", torch.cat(rows, 1))
    # stages for one turn (yaw +25) of the astronaut
    src = v2.fit_source(image)
    f = src.fit
    tf = FaceFit(T.euler_to_matrix(torch.tensor([[25.0, 0.0, 0.0]])) @ f.rotation, f.scale,
                 f.translation, f.id_coeffs, f.exp_coeffs)
    xy, cov = v2._mesh_flow(v2.image_vertices(f), v2.image_vertices(tf), 256, 256)[:2]
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
