"""Evaluate LD-Net (and the baselines) on 3DMM-synthesised landmarks with exact ground truth.

    python benchmarks/eval_ldnet.py                 # print the tables
    python benchmarks/eval_ldnet.py --write         # also store them in data/ldnet/record.json
    python benchmarks/eval_ldnet.py --quick         # small sizes (smoke run)

Test identities are drawn with a different seed than the training identities (unseen).

1. Table 1 of the paper: an LMTest-like set (``--ids`` identities x ``--frames`` shared
   poses/expressions; the paper: 100 x 2000), E_I and E_P codes reduced to 8 dims by PCA, mean
   Euclidean distance of ``--pairs`` random pairs with the same identity / the same
   pose-expression / both different.
2. NME (% of sqrt(w h) of the ground-truth box) of "identity of A + pose/expression of B"
   against the exact recombined landmarks: LD-Net, the driver's landmarks as they are, the
   target's landmarks, and the 3DMM recombination (fit both with facegeo.fitting, swap
   identity); clean inputs and inputs with detector-like noise.
3. Identity usage: reconstruction error of G(E_P(l_S2), E_I(x)) with x of the same identity
   vs another identity (equal = G ignores E_I).
4. Timing of one LD-Net forward pass (batch 1 and 256) on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default=None, help="default: shipped data/ldnet weights")
    p.add_argument("--ids", type=int, default=100)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--pairs", type=int, default=100_000)
    p.add_argument("--nme-pairs", type=int, default=1000)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1000, help="test identity seed")
    p.add_argument("--no-3dmm", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--write", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.quick:
        a.ids, a.frames, a.pairs, a.nme_pairs = 20, 50, 5000, 100
    torch.set_num_threads(a.threads)
    os.environ.setdefault("FACEGEO_ASSETS", str(ROOT.parent / "shared" / "assets"))

    from facegeo.disentangle import LandmarkSynth, load_ldnet
    from facegeo.disentangle.evaluate import (
        identity_usage,
        latent_distances,
        make_lmtest,
        recombination_nme,
    )
    from facegeo.morphable import MorphableModel

    model = MorphableModel.load()
    net = load_ldnet(a.weights)
    print(f"weights: {a.weights or 'shipped'}; trained iterations: "
          f"{ {k: net.metadata.get(k) for k in ('iter1', 'iter2')} }")
    synth = LandmarkSynth(model, n_identities=a.ids, seed=a.seed)
    res: dict = {"command": "python benchmarks/eval_ldnet.py " + " ".join(sys.argv[1:]),
                 "test_identity_seed": a.seed, "unseen_identities": a.ids}

    t0 = time.time()
    lm = make_lmtest(synth, a.frames)
    tab = latent_distances(net, lm, n_pairs=a.pairs)
    res["table1"] = {"lmtest": f"{a.ids} ids x {a.frames} frames", "pairs": a.pairs, **tab}
    print(f"\nTable 1 analogue ({a.ids} unseen ids x {a.frames} frames, {a.pairs} pairs each, "
          f"PCA-8; {time.time() - t0:.1f}s)")
    print(f"{'sample by':<16}{'E_I space':>12}{'E_P space':>12}")
    for k, v in tab.items():
        print(f"{k:<16}{v['E_I']:>12.4f}{v['E_P']:>12.4f}")
    paper = {"same_identity": (2.0431, 3.5171), "same_pose_exp": (3.1793, 1.2730),
             "both_different": (3.8274, 3.6744)}
    print("paper:        " + "; ".join(f"{k} {v[0]:.2f}/{v[1]:.2f}" for k, v in paper.items()))

    use = identity_usage(net, synth)
    res["identity_usage"] = use
    print("\nidentity usage (per-point squared error of G(E_P(l_S2), E_I(x)) vs l_S2): "
          + ", ".join(f"x={k} {v:.5f}" for k, v in use.items()))

    methods = ("ldnet", "driver", "target") + (() if a.no_3dmm else ("3dmm",))
    res["nme"] = {}
    for noise in (0.0, a.noise):
        t0 = time.time()
        r = recombination_nme(net, synth, n_pairs=a.nme_pairs, noise=noise, methods=methods,
                              model=model)
        res["nme"][f"noise={noise}"] = r
        print(f"\nNME % vs exact recombination ({a.nme_pairs} cross-identity pairs, input noise "
              f"{noise}; {time.time() - t0:.1f}s)")
        for m, v in r.items():
            print(f"  {m:<8} mean {v['mean']:7.3f}   median {v['median']:7.3f}")

    x = torch.randn(256, 68, 2).clamp(-1, 1)
    timing = {}
    for b in (1, 256):
        with torch.no_grad():
            net(x[:b], x[:b])
            t0 = time.perf_counter()
            n = 20
            for _ in range(n):
                net(x[:b], x[:b])
        timing[f"batch{b}_ms"] = 1000 * (time.perf_counter() - t0) / n
    res["timing_cpu_1thread"] = timing
    print(f"\nLD-Net forward (CPU, {a.threads} thread, shared machine): "
          + ", ".join(f"{k} {v:.2f}" for k, v in timing.items()))
    if a.write:
        from facegeo.assets import atomic_write

        rec_path = ROOT / "data" / "ldnet" / "record.json"
        record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
        record["evaluation"] = res
        atomic_write(rec_path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        print(f"wrote {rec_path}")
    return res


if __name__ == "__main__":
    main()
