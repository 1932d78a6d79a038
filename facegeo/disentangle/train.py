"""Train LD-Net on 3DMM-synthesised landmarks and write the inference weights.

Usage (the shipped weights were made with the command recorded in
``data/ldnet/record.json``)::

    python -m facegeo.disentangle.train --out data/ldnet --checkpoint runs/ldnet/ckpt.pt \
        --minutes 20 --n-identities 500 --seed 0 --noise 0.005

Defaults are the paper's networks, loss weights, optimisers and batch size; ``--iters1`` /
``--iters2`` default to the paper's 4e5 / 1e6 iterations, ``--minutes`` bounds the wall time
(Stage 1 gets ``--stage1-fraction`` of it). A checkpoint and the inference weights are written
every ``--checkpoint-every`` seconds, so a run that is stopped early still leaves weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from facegeo.disentangle.data import LandmarkSynth
from facegeo.disentangle.ldnet import LDNetConfig, LDNetTrainer

WEIGHTS_NAME = "ldnet.safetensors"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/ldnet", help="folder for weights + record.json")
    p.add_argument("--checkpoint", default="runs/ldnet/ckpt.pt")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument("--stage1-fraction", type=float, default=0.3)
    p.add_argument("--iters1", type=int, default=None)
    p.add_argument("--iters2", type=int, default=None)
    p.add_argument("--n-identities", type=int, default=500)
    p.add_argument("--seed", type=int, default=0, help="data seed (identities and sampling)")
    p.add_argument("--init-seed", type=int, default=0, help="network initialisation seed")
    p.add_argument("--noise", type=float, default=0.005, help="detector-like noise (normalised)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--n-hidden", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--ni-init", choices=("linear", "normal"), default="linear",
                   help="N_I initialisation (paper: unspecified); see docs/disentangle.md")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint-every", type=float, default=120.0)
    p.add_argument("--log-every", type=int, default=100)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = LDNetConfig(n_identities=a.n_identities, hidden=a.hidden, n_hidden=a.n_hidden,
                      extra={} if a.ni_init == "linear" else {"ni_init": a.ni_init})
    synth = LandmarkSynth(n_identities=a.n_identities, seed=a.seed, noise=a.noise,
                          device=a.device)
    trainer = LDNetTrainer(cfg, device=a.device, seed=a.init_seed)
    command = "python -m facegeo.disentangle.train " + " ".join(
        shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    meta = {"command": command, "data_seed": a.seed, "noise": a.noise,
            "n_identities": a.n_identities, "model": "ict_facekit"}
    t0 = time.time()
    hist = trainer.train(synth, iters1=a.iters1, iters2=a.iters2,
                         time_limit_s=None if a.minutes is None else 60 * a.minutes,
                         stage1_fraction=a.stage1_fraction, checkpoint=a.checkpoint,
                         weights_out=out / WEIGHTS_NAME, checkpoint_every_s=a.checkpoint_every,
                         log_every=a.log_every, metadata=meta)
    rec_path = out / "record.json"
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    record["training"] = {
        **meta,
        "config": cfg.to_dict(),
        "init_seed": a.init_seed,
        "data": {"generator": "facegeo.disentangle.LandmarkSynth", "seed": a.seed,
                 "n_identities": a.n_identities, "noise": a.noise, "max_yaw": 60,
                 "max_pitch": 30, "max_roll": 30, "distance_cm": [60, 200]},
        "iterations_done": {"stage1": trainer.iter1, "stage2": trainer.iter2},
        "iterations_paper": {"stage1": 400_000, "stage2": 1_000_000},
        "wall_time_s_this_call": round(time.time() - t0, 1),
        "device": a.device, "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "loss_history": hist,
    }
    from facegeo.assets import atomic_write

    atomic_write(rec_path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    return record


if __name__ == "__main__":
    main()
