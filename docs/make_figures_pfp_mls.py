"""Figures for docs/models/pfp_mls.md.

The frames are docs/figure_inputs.py's astronaut driving clip: scikit-image's public-domain
astronaut animated by facegeo's 3DMM-scripted performance (committed figures may not show
the dev media or the corpus).

``overfit`` (default): the tiny pfp_mls model overfitted on CPU to four (source, driving)
pairs of the clip's face crops at 64x64 (the setting of tests/models/pfp_mls/test_pfp_mls.py,
longer, other frames). Rows: one pair each. Columns: source with k_s, driving with k_d,
source warped by the dense motion, prediction, occlusion map. Also prints the loss curve.

``self-run``: a trained checkpoint (default: the shipped weights, data/pfp_mls) and an
untrained model of its config on the clip (self-reenactment: source = frame 0, the harness
crop of apps/evaluate.py at the checkpoint's size). The astronaut is not in the training
data, so this is a held-out identity. Writes pfp_mls_self.png (rows: driving frames;
columns: source with k_s, driving with k_d, untrained output, trained output, source
warped by the trained dense motion, trained occlusion map).

    python docs/make_figures_pfp_mls.py                     # ~1 min on one CPU core
    python docs/make_figures_pfp_mls.py self-run [--checkpoint RUN/checkpoints/step_N] \
        [--init INIT/checkpoints/step_00000000]             # ~30 s
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegeo.assets import atomic_write
from facegeo.coords import normalized_to_pixel
from facegeo_models import pfp_mls

OUT = Path(__file__).resolve().parent / "img" / "pfp_mls_overfit.png"
sys.path.insert(0, str(OUT.parents[1]))
from figure_inputs import driving_frames, driving_video  # noqa: E402

CLIP = 150  # frames of the driving clip
COLORS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                   [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                   [210, 245, 60], [250, 190, 190]], dtype=np.uint8)


def crops(indices: list[int], size: int) -> torch.Tensor:
    """Frames ``indices`` of the driving clip's (T, 3, 256, 256) face crops, resized to
    (len(indices), 3, size, size)."""
    x = driving_frames(CLIP, full=False)[indices]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


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
    a = crops([0, 40, 80, 120], 64)
    b = crops([20, 60, 100, 140], 64)
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


def self_run(args) -> None:
    from facegeo.landmarks.backends import get_detector
    from facegeo_apps.evaluate import load_clip

    torch.set_num_threads(1)
    trained = pfp_mls.load_pretrained(args.checkpoint)
    if args.init:
        init = pfp_mls.load_pretrained(args.init)
    else:  # an untrained model of the same config and seed
        from facegeo_models.common import checkpoint as ckpt

        card = ckpt.read_model_card(Path(args.checkpoint or pfp_mls.PFPMLS.default_checkpoint()))
        torch.manual_seed(int(card["config"].get("train", {}).get("seed", 0)))
        init = pfp_mls.from_config(card["config"]).eval()
    size = trained.image_size
    frames = load_clip(driving_video(CLIP), CLIP, size, 0.4, get_detector("dlib"))
    src, drv = frames[:1], frames[args.frames]
    with torch.no_grad():
        out = trained.reenact(src, drv, return_all=True)
        out0 = init.reenact(src, drv)
    l1 = (out["prediction"] - drv).abs().mean(dim=(1, 2, 3))
    l1_static = (src - drv).abs().mean(dim=(1, 2, 3))
    print("frames", args.frames, "L1 trained", [round(float(v), 3) for v in l1],
          "static source", [round(float(v), 3) for v in l1_static])
    rows = []
    for i in range(drv.shape[0]):
        ks = normalized_to_pixel(out["kp_source"][i], (size, size)).numpy()
        kd = normalized_to_pixel(out["kp_driving"][i], (size, size)).numpy()
        occ = F.interpolate(out["occlusion"][i:i + 1], size=(size, size), mode="bilinear")[0]
        cols = [draw_points(to_uint8(src[0], 1), ks), draw_points(to_uint8(drv[i], 1), kd),
                to_uint8(out0[i], 1), to_uint8(out["prediction"][i], 1),
                to_uint8(out["deformed"][i], 1), to_uint8(occ, 1)]
        rows.append(np.concatenate([pad(c) for c in cols], 1))
    write_png(OUT.with_name("pfp_mls_self.png"), np.concatenate(rows, 0))


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("overfit")
    m = sub.add_parser("self-run")
    m.add_argument("--checkpoint", default=None,
                   help="trained checkpoint folder (default: the shipped weights)")
    m.add_argument("--init", default=None, help="checkpoint of the untrained model (default: "
                   "the checkpoint's config, freshly initialised with its seed)")
    m.add_argument("--frames", type=int, nargs="+", default=[25, 72, 120],
                   help="driving frames of the 150-frame clip (jaw open, smile + blink, "
                   "raised brows)")
    args = p.parse_args()
    if args.cmd == "self-run":
        self_run(args)
    else:
        overfit()


if __name__ == "__main__":
    main()
