"""Floating-point operations of one training step of every model's ``paper`` config, and
what a paper-scale run would take on one H100-class GPU at a stated utilisation.

One batch-1 step of the real training loop (``Trainer.train_step`` on a synthetic batch:
generator, losses, perceptual network, discriminators, backward passes and optimiser
updates) runs on the CPU under ``torch.utils.flop_counter.FlopCounterMode``, which counts
the matrix products and convolutions (2 FLOPs per multiply-add; element-wise work is not
counted, so the figures are lower bounds). The reference in the same run is the FLOP
count of the forward pass alone of the same network, so ``step / forward`` checks the
usual ~3x of forward + backward plus what the losses add.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_flops.py [--models s2d meshg ...]
        [--peak-tflops 989] [--mfu 0.3] [--json out.json]

The estimate: hours = steps x batch x FLOPs-per-sample / (peak x MFU), with the paper
config's own steps and batch (``phases`` and ``data.batch_size``), bf16 dense peak 989
TFLOP/s (H100 / H200 SXM) and two utilisations: 0.3 (what large convolutions and
attention reach) and 0.05 (these generators are small and spend much of a step in
memory-bound element-wise work, grid sampling and normalisation, which the count leaves
out). ``benchmarks/gpu_check.py`` measures the real step time where a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check import _config, _prepare, _vgg_available  # noqa: E402


def count(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def measure(name: str) -> dict:
    from facegeo_models.common.registry import model_info
    from facegeo_models.common.synthetic import synthetic_batch
    from facegeo_models.common.trainer import Trainer

    info = model_info(name)
    base, _ = _config(info, name, "paper")
    steps = sum(int(p.get("steps", 0)) for p in base.get("phases") or [])
    batch = int((base.get("data") or {}).get("batch_size", 1))
    n_src = int((base.get("data") or {}).get("num_sources", 1))
    # the last phase holds every loss term of the full objective
    cfg, notes = _prepare({**base, "phases": [(base.get("phases") or [{}])[-1]]}, 1, 1,
                          False, _vgg_available())
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        tr = Trainer(cfg, out_dir=Path(tmp), train_dataset=[None], val_dataset=None,
                     device="cpu", resume=None)
        net = tr.raw_model
        data = synthetic_batch(net, 1, num_sources=n_src, seed=0)
        t0 = time.perf_counter()
        step = count(lambda: tr.train_step(data))
        secs = time.perf_counter() - t0
        net.train()
        with torch.no_grad():
            fwd = count(lambda: net(data))
    return {"model": name, "phase": cfg["phases"][0].get("name"), "paper_steps": steps,
            "paper_batch": batch, "image_size": int(net.image_size),
            "parameters": sum(p.numel() for p in net.parameters()),
            "step_gflop_per_sample": step / 1e9, "forward_gflop": fwd / 1e9,
            "step_over_forward": step / fwd if fwd else float("nan"),
            "cpu_step_s": secs, **notes}


def main(argv: list[str] | None = None) -> int:
    from facegeo_models import list_models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", help="default: every neural model")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="bf16 dense peak of the GPU (H100/H200 SXM: 989)")
    p.add_argument("--mfu", type=float, nargs="+", default=[0.3, 0.05],
                   help="assumed model FLOP utilisations (one hours column each)")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = a.models or [m for m in list_models() if m != "geometric"
                         and not m.startswith("_")]
    rows = []
    print("| model | paper steps x batch | GFLOP / sample (step) | forward GFLOP | "
          "step / forward | " + " | ".join(f"H100 hours at MFU {m}" for m in a.mfu) + " |")
    print("|---|---|---|---|---|" + "---|" * len(a.mfu))
    for name in names:
        r = measure(name)
        work = r["paper_steps"] * r["paper_batch"] * r["step_gflop_per_sample"] * 1e9
        r["h100_hours"] = {str(m): work / (a.peak_tflops * 1e12 * m) / 3600 for m in a.mfu}
        rows.append(r)
        print(f"| {name} | {r['paper_steps']:,} x {r['paper_batch']} | "
              f"{r['step_gflop_per_sample']:.1f} | {r['forward_gflop']:.1f} | "
              f"{r['step_over_forward']:.2f} | "
              + " | ".join(f"{h:.1f}" for h in r["h100_hours"].values()) + " |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"peak_tflops": a.peak_tflops, "mfu": a.mfu,
                                            "rows": rows}, indent=1))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
