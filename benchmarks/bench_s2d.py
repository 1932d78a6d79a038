"""Inference speed and size of s2d (untrained weights: speed does not depend on them).

    python benchmarks/bench_s2d.py                          # CPU, paper + cpu configs
    python benchmarks/bench_s2d.py --device cuda --amp      # GPU: fp32, fp16 and bf16 autocast

Per config: parameter count (whole model, global branch, local branches, generator),
frames/s at batch 1 of the network alone (74 landmarks given), and of the full frame
step with the pupil localisation (68 -> 74 points on the crops) included, plus the share
of the local branches. Prints a JSON summary (``--json PATH`` writes it).

``--gaze-experiment STEPS`` (CPU, about 6 minutes for 250 steps on a loaded core): the
paper's claim that the local branches are what moves the eyes (sec. 3.2, Table 4 /
Fig. 5), on synthetic faces with a known gaze (``render_synthetic_eyes``, 64x64, eye width
14 px; source and driving are the same face with different horizontal gaze, +-18 % of the
eye width). The tiny config is trained for STEPS steps (batch 8, Adam 2e-3, L1 + parsing
prior, 64 training pairs, ground-truth 74 points) with and without the local branches
(``motion.use_local``; ``--ablations full no_local no_adain no_add_motion`` adds the
paper's other two Table 4 switches); on 24 held-out pairs, the pupils located on the
outputs give the gaze displacement source -> output, compared with source -> driving
(Pearson correlation and least-squares gain of the along-axis component), plus L1 and the
static-source L1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from _timing import time_fns

REPO = Path(__file__).resolve().parents[1]


def bench(config: str, device: str, reps: int, amp: bool) -> dict:
    from facegeo.landmarks.pupils import render_synthetic_eyes
    from facegeo_models.s2d import S2D

    torch.manual_seed(0)
    m = S2D.from_config(config).to(device).eval()
    s = m.image_size
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    row = {"params": n(m), "params_global": n(m.motion.global_branch),
           "params_local": n(m.motion.local_branches), "params_generator": n(m.generator),
           "image_size": s}
    img, lm68, _ = render_synthetic_eyes(torch.zeros(2, 2, 2), size=s, eye_width=0.12 * s)
    img, lm68 = img.to(device), lm68.to(device)
    lm74 = m.landmarks74(img, lm68)
    src, s74, d74 = img[:1], lm74[:1], lm74[1:]
    dtypes = [("fp32", None)]
    if amp and device.startswith("cuda"):
        dtypes += [("fp16", torch.float16), ("bf16", torch.bfloat16)]
    for name, dt in dtypes:
        def net(dt=dt):
            with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dt,
                                                 enabled=dt is not None):
                return m.animate(src, s74, d74)["prediction"]

        out = net()
        assert torch.isfinite(out.float()).all(), f"{config} {name}: non-finite output"
        dt_net = time_fns({"net": net}, reps, device, reduce="median")["net"]
        row[f"fps_network_{name}"] = 1 / dt_net
        print(f"{config} ({s}x{s}, {row['params'] / 1e6:.2f} M params) {device} {name}: "
              f"network {1 / dt_net:.2f} frames/s ({1000 * dt_net:.1f} ms)")

    def full():
        with torch.no_grad():
            d = m.landmarks74(img[1:], lm68[1:])
            return m.animate(src, s74, d)["prediction"]

    dt_full = time_fns({"full": full}, reps, device, reduce="median")["full"]
    row["fps_with_pupils_fp32"] = 1 / dt_full
    m.motion.use_local = False
    dt_glob = time_fns({"g": lambda: m.animate(src, s74, d74)}, reps, device,
                       reduce="median")["g"]
    m.motion.use_local = True
    row["local_share"] = 1 - dt_glob / (1 / row["fps_network_fp32"])
    print(f"{config}: with the pupil localisation {1 / dt_full:.2f} frames/s; local "
          f"branches {100 * row['local_share']:.0f} % of the network time")
    return row


def _gaze_pairs(n: int, seed: int):
    from facegeo.landmarks import pupils as pp

    g = torch.Generator().manual_seed(seed)
    offs = [((torch.rand(n, 1, 2, generator=g) - 0.5) * torch.tensor([0.36, 0.06]))
            .expand(n, 2, 2).contiguous() for _ in range(2)]
    # the same seed renders the same faces; only the irises differ
    a, lm, pa = pp.render_synthetic_eyes(offs[0], size=64, eye_width=14.0, seed=seed,
                                         noise=0.01)
    b, _, pb = pp.render_synthetic_eyes(offs[1], size=64, eye_width=14.0, seed=seed,
                                        noise=0.01)
    la = torch.cat([lm, pp.iris_points(lm, pa)], 1)
    lb = torch.cat([lm, pp.iris_points(lm, pb)], 1)
    return a, b, lm, la, lb, pa, pb


#: the paper's Table 4 settings as motion switches
ABLATIONS = {"full": {}, "no_local": {"use_local": False}, "no_adain": {"adain": False},
             "no_add_motion": {"add_motion": False}}


def gaze_experiment(steps: int, variant: str = "full", seed: int = 0) -> dict:
    from facegeo.landmarks import pupils as pp
    from facegeo_models.s2d import S2D

    torch.manual_seed(seed)
    params = S2D.model_params("tiny")
    params["motion"].update(ABLATIONS[variant])
    m = S2D(**params)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3, betas=(0.5, 0.999))
    a, b, _, la, lb, _, _ = _gaze_pairs(64, 1)
    t = time.perf_counter()
    for _ in range(steps):
        i = torch.randint(0, len(a), (8,))
        batch = {"source": a[i], "driving": b[i], "source_landmarks": la[i],
                 "driving_landmarks": lb[i]}
        out = m(batch)
        loss = (out["prediction"] - b[i]).abs().mean() + m.extra_losses(batch, out)["parsing"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    a2, b2, lm2, la2, lb2, pa2, pb2 = _gaze_pairs(24, 7)
    with torch.no_grad():
        out = m.animate(a2, la2, lb2)["prediction"]
    q = pp.locate_pupils(out, lm2)
    gs, gd, go = (pp.gaze_offsets(p, lm2) for p in (pa2, pb2, q))
    dd, do = (gd - gs)[..., 0].flatten(), (go - gs)[..., 0].flatten()
    row = {"variant": variant, "steps": steps,
           "corr": float(torch.corrcoef(torch.stack([dd, do]))[0, 1]),
           "gain": float((dd * do).sum() / (dd * dd).sum()),
           "l1": float((out - b2).abs().mean()), "l1_static": float((a2 - b2).abs().mean()),
           "pupil_error_px": float((q - pb2).norm(dim=-1).mean()),
           "train_s": time.perf_counter() - t}
    print(f"gaze experiment, {variant}: gaze "
          f"correlation {row['corr']:.2f}, gain {row['gain']:.2f}, output pupils "
          f"{row['pupil_error_px']:.2f} px from the driver's, L1 {row['l1']:.4f} (static "
          f"source {row['l1_static']:.4f}), {row['train_s']:.0f} s")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--configs", nargs="+", default=["paper", "cpu"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--amp", action="store_true", help="also fp16 / bf16 autocast (CUDA)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--gaze-experiment", type=int, default=0, metavar="STEPS",
                    help="train tiny with / without local branches on synthetic gaze pairs")
    ap.add_argument("--ablations", nargs="+", default=["full", "no_local"],
                    choices=sorted(ABLATIONS), help="variants of --gaze-experiment")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {"device": args.device, "threads": args.threads,
           "torch": torch.__version__}
    if args.device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)
    if args.gaze_experiment:
        res["gaze_experiment"] = [gaze_experiment(args.gaze_experiment, v)
                                  for v in args.ablations]
        args.configs = [c for c in args.configs if c not in ("paper", "cpu")] \
            if "--configs" not in (argv or sys.argv) else args.configs
    for c in args.configs:
        res[c] = bench(c, args.device, args.reps, args.amp)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
