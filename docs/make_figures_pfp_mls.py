"""Figures for docs/models/pfp_mls.md.

``overfit`` (default): the tiny pfp_mls model overfitted on CPU to four real (source,
driving) pairs at 64x64 (same setting as tests/models/pfp_mls/test_pfp_mls.py, longer).
Rows: one pair each. Columns: source with k_s, driving with k_d, source warped by the dense motion,
prediction, occlusion map. Also prints the loss curve.

``media-run``: a trained checkpoint (and its untrained initialisation) on held-out clips
(self-reenactment: source = frame 0 of the clip) and on source portraits of other
identities driven by those clips (cross-reenactment). Writes pfp_mls_media_self.png (rows:
driving frames; columns: source with k_s, driving with k_d, untrained output, trained
output, source warped by the trained dense motion, trained occlusion map) and
pfp_mls_media_cross.png (rows: source portraits; columns: the portrait, then the
reenactment for each driving frame, whose real frame heads the column).

    python docs/make_figures_pfp_mls.py                     # ~1 min on one CPU core
    python docs/make_figures_pfp_mls.py media-run --checkpoint RUN/checkpoints/step_N \
        --init INIT/checkpoints/step_00000000 --data ROOT/test \
        --portraits lp_s1.jpg lp_s12.jpg lp_d30.jpg          # ~30 s
    # training identities (a folder linking some train clips): pfp_mls_media_self_seen.png
    python docs/make_figures_pfp_mls.py media-run ... --data SEEN --tag _seen
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegeo.assets import atomic_write
from facegeo.coords import normalized_to_pixel
from facegeo_models import pfp_mls

OUT = Path(__file__).resolve().parent / "img" / "pfp_mls_overfit.png"
MEDIA = Path(os.environ.get("FACEGEO_MEDIA", Path(__file__).resolve().parents[2] / "shared"
                            / "media"))
COLORS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                   [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                   [210, 245, 60], [250, 190, 190]], dtype=np.uint8)


def decode(path, size: int, *, step: int, frames: int) -> torch.Tensor:
    """``frames`` frames (every ``step``-th from the first) as (T, 3, size, size) centre
    squares: facegeo.video decoding, facegeo.landmarks.crops cropping."""
    from facegeo.landmarks.crops import crop_images
    from facegeo.video import frames_to_tensor, read_video

    x = frames_to_tensor(read_video(path, step=step, max_frames=frames)[0])
    h, w = x.shape[-2:]
    s = min(h, w)
    box = torch.tensor([(w - s) // 2 + (s - 1) / 2, (h - s) // 2 + (s - 1) / 2, s])
    return crop_images(x, box.expand(len(x), 3), size)


def to_uint8(x: torch.Tensor, scale: int) -> np.ndarray:
    x = F.interpolate(x[None], scale_factor=scale, mode="nearest")[0]
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy().copy()


def draw_points(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    for n, (x, y) in enumerate(pts):
        xi, yi = int(round(x)), int(round(y))
        img[max(0, yi - 2):yi + 3, max(0, xi - 2):xi + 3] = COLORS[n % len(COLORS)]
    return img


def overfit() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    a = decode(MEDIA / "lp_d9.mp4", 64, step=40, frames=4)
    b = decode(MEDIA / "lp_s18.mp4", 64, step=40, frames=4)
    batch = {"source": torch.cat([a[:2], b[:2]]), "driving": torch.cat([a[2:], b[2:]])}
    model = pfp_mls.from_config("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    weights = {"l1": 1.0, "motion": 10.0, "spread": 10.0}
    copy_l1 = (batch["source"] - batch["driving"]).abs().mean().item()
    for it in range(200):
        out = model(batch)
        total, terms = pfp_mls.total_loss(model, batch, out, weights=weights)
        opt.zero_grad()
        total.backward()
        opt.step()
        if it % 25 == 0 or it == 199:
            print(f"step {it:3d} " + " ".join(f"{k} {v.item():.4f}" for k, v in terms.items()))
    print(f"L1 of copying the source: {copy_l1:.4f}")
    model.eval()
    with torch.no_grad():
        out = model(batch)
    print(f"eval-mode L1: {(out['prediction'] - batch['driving']).abs().mean().item():.4f}")
    s = 2
    rows = []
    for i in range(4):
        ks = normalized_to_pixel(out["kp_source"][i], (64 * s, 64 * s)).numpy()
        kd = normalized_to_pixel(out["kp_driving"][i], (64 * s, 64 * s)).numpy()
        cols = [draw_points(to_uint8(batch["source"][i], s), ks),
                draw_points(to_uint8(batch["driving"][i], s), kd),
                to_uint8(out["deformed"][i], s), to_uint8(out["prediction"][i], s),
                to_uint8(F.interpolate(out["occlusion"][i:i + 1], size=(64, 64),
                                       mode="bilinear")[0], s)]
        rows.append(np.concatenate([pad(c) for c in cols], 1))
    write_png(OUT, np.concatenate(rows, 0))


def write_png(path: Path, grid: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", grid[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    atomic_write(path, lambda t: t.write_bytes(buf.tobytes()))
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def pad(img: np.ndarray) -> np.ndarray:
    return np.pad(img, ((2, 2), (2, 2), (0, 0)), constant_values=255)


def media_run(args) -> None:
    from facegeo.landmarks.backends import get_detector
    from facegeo_apps.evaluate import load_frame_folder, load_source

    torch.set_num_threads(1)
    trained = pfp_mls.load_pretrained(args.checkpoint)
    init = pfp_mls.load_pretrained(args.init)
    size = trained.image_size
    data = Path(args.data)
    clips = sorted(p for p in data.iterdir() if p.is_dir())
    rows, drivers = [], []
    for clip in clips:
        frames = load_frame_folder(clip, max(args.frames) + 1, size)
        src, drv = frames[:1], frames[args.frames]
        drivers.append(drv[:2])
        with torch.no_grad():
            out = trained.reenact(src, drv, return_all=True)
            out0 = init.reenact(src, drv)
        for i in range(drv.shape[0]):
            ks = normalized_to_pixel(out["kp_source"][i], (size, size)).numpy()
            kd = normalized_to_pixel(out["kp_driving"][i], (size, size)).numpy()
            occ = F.interpolate(out["occlusion"][i:i + 1], size=(size, size),
                                mode="bilinear")[0]
            cols = [draw_points(to_uint8(src[0], 1), ks), draw_points(to_uint8(drv[i], 1), kd),
                    to_uint8(out0[i], 1), to_uint8(out["prediction"][i], 1),
                    to_uint8(out["deformed"][i], 1), to_uint8(occ, 1)]
            rows.append(np.concatenate([pad(c) for c in cols], 1))
    write_png(OUT.with_name(f"pfp_mls_media_self{args.tag}.png"), np.concatenate(rows, 0))
    if not args.portraits:
        return
    det = get_detector("dlib")
    drv = torch.cat(drivers)
    header = [np.full((size + 4, size + 4, 3), 255, np.uint8)]
    header += [pad(to_uint8(d, 1)) for d in drv]
    rows = [np.concatenate(header, 1)]
    for name in args.portraits:
        src = load_source(Path(args.portrait_dir) / name, size, 0.4, det)
        with torch.no_grad():
            res = trained.reenact(src, drv)
        rows.append(np.concatenate([pad(to_uint8(src[0], 1))]
                                   + [pad(to_uint8(r, 1)) for r in res], 1))
    write_png(OUT.with_name("pfp_mls_media_cross.png"), np.concatenate(rows, 0))


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("overfit")
    m = sub.add_parser("media-run")
    m.add_argument("--checkpoint", required=True, help="trained checkpoint folder")
    m.add_argument("--init", required=True, help="checkpoint of the untrained model")
    m.add_argument("--data", required=True, help="folder of preprocessed test clips")
    m.add_argument("--frames", type=int, nargs="+", default=[40, 90, 150])
    m.add_argument("--portraits", nargs="*", default=[])
    m.add_argument("--portrait-dir", default=str(MEDIA))
    m.add_argument("--tag", default="", help="suffix of the self-reenactment figure's name")
    args = p.parse_args()
    if args.cmd == "media-run":
        media_run(args)
    else:
        overfit()


if __name__ == "__main__":
    main()
