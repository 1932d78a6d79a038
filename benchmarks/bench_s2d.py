"""Inference speed and size of s2d (untrained weights: speed does not depend on them).

    python benchmarks/bench_s2d.py                          # CPU, paper + cpu configs
    python benchmarks/bench_s2d.py --device cuda --amp      # GPU: fp32, fp16 and bf16 autocast

Per config: parameter count (whole model, global branch, local branches, generator),
frames/s at batch 1 of the network alone (74 landmarks given), and of the full frame
step with the pupil localisation (68 -> 74 points on the crops) included, plus the share
of the local branches. Prints a JSON summary (``--json PATH`` writes it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _time(fn, reps: int, sync) -> float:
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t) / reps


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
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
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
        dt_net = _time(net, reps, sync)
        row[f"fps_network_{name}"] = 1 / dt_net
        print(f"{config} ({s}x{s}, {row['params'] / 1e6:.2f} M params) {device} {name}: "
              f"network {1 / dt_net:.2f} frames/s ({1000 * dt_net:.1f} ms)")

    def full():
        with torch.no_grad():
            d = m.landmarks74(img[1:], lm68[1:])
            return m.animate(src, s74, d)["prediction"]

    dt_full = _time(full, reps, sync)
    row["fps_with_pupils_fp32"] = 1 / dt_full
    m.motion.use_local = False
    dt_glob = _time(lambda: m.animate(src, s74, d74), reps, sync)
    m.motion.use_local = True
    row["local_share"] = 1 - dt_glob / (1 / row["fps_network_fp32"])
    print(f"{config}: with the pupil localisation {1 / dt_full:.2f} frames/s; local "
          f"branches {100 * row['local_share']:.0f} % of the network time")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--configs", nargs="+", default=["paper", "cpu"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--amp", action="store_true", help="also fp16 / bf16 autocast (CUDA)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {"device": args.device, "threads": args.threads,
           "torch": torch.__version__}
    if args.device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)
    for c in args.configs:
        res[c] = bench(c, args.device, args.reps, args.amp)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
