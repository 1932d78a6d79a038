"""fsrt inference speed (paper configs, 256x256, batch 1, one source) and parameter counts.

    OMP_NUM_THREADS=1 python benchmarks/bench_fsrt.py [--device cpu|cuda] [--repeats 2]
        [--threads N] [--configs paper,paper_small] [--slice 1024]

Per config: the set-latent (``encode_source``, once per source set) and one frame
(driving keypoints + expression, all 256^2 pixel queries decoded in chunks of
``max_pixels_per_chunk``), best of ``--repeats``.

Reference in the same run: the decoder written out straightforwardly (explicit
``softmax(Q K^T / sqrt(d)) V`` einsums per head instead of the fused scaled-dot-product
attention, the whole slice at once) on a ``--slice``-pixel slice of the frame, with its
largest difference to ours and the time ratio.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from facegeo_models import fsrt
from facegeo_models.common.blocks import coordinate_grid


def _time(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Best wall time of each function, interleaved per repeat (shared machines)."""
    best = {k: float("inf") for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(repeats):
            for k, fn in fns.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                best[k] = min(best[k], time.perf_counter() - t)
    return best


def naive_decoder(dec, latent, coords, kp, expression):
    """PixelDecoder.render with the attention written as explicit einsums (reference)."""
    def lin(layer, x):
        y = torch.einsum("bpd,ed->bpe", x, layer.weight)
        return y if layer.bias is None else y + layer.bias

    x = dec.input_mlp(dec.queries(coords, kp, expression))
    for blk in dec.blocks:
        att = blk.cross_attn
        h, dk = att.heads, att.d_k
        y = blk.norm_cross(x)
        q = lin(att.q_proj, y).unflatten(-1, (h, dk))
        k = lin(att.k_proj, latent).unflatten(-1, (h, dk))
        v = lin(att.v_proj, latent).unflatten(-1, (h, dk))
        w = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dk), -1)
        x = x + lin(att.out_proj, torch.einsum("bhqk,bkhd->bqhd", w, v).flatten(-2))
        x = x + blk.ff(blk.norm_ff(x))
    return dec.render_mlp(x)


def bench_config(name: str, args: argparse.Namespace, dev: str) -> None:
    """Time and print one config."""
    torch.manual_seed(0)
    m = fsrt.from_config(name).to(dev).eval()
    s = m.image_size
    src = torch.rand(1, 3, s, s, device=dev)
    drv = torch.rand(1, 3, s, s, device=dev)
    parts = {k: sum(p.numel() for p in getattr(m, k).parameters()) / 1e6
             for k in ("kpnet", "encoder", "decoder")}
    n = sum(p.numel() for p in m.parameters()) / 1e6
    print(f"\n[{name}] {s}x{s}, parameters {n:.2f} M (" + ", ".join(
        f"{k} {v:.2f} M" for k, v in parts.items()) + ")")
    state = m.encode_source(src)
    with torch.no_grad():
        d = m.describe(drv)
    coords = coordinate_grid(s, s, device=dev).reshape(1, -1, 2)[:, :args.slice]
    lat = state["latent"]
    t = _time({"encode": lambda: m.encode_source(src),
               "frame": lambda: m.reenact(state, drv),
               "slice_ours": lambda: m.decoder(lat, coords, d["kp"], d["expression"]),
               "slice_ref": lambda: naive_decoder(m.decoder, lat, coords, d["kp"],
                                                  d["expression"])},
              args.repeats, dev)
    with torch.no_grad():
        diff = (m.decoder(lat, coords, d["kp"], d["expression"])
                - naive_decoder(m.decoder, lat, coords, d["kp"], d["expression"])
                ).abs().max().item()
    print(f"set-latent (encode_source): {t['encode'] * 1e3:9.1f} ms (once per source set)")
    print(f"frame (keypoints + {s * s} queries): {t['frame'] * 1e3:9.1f} ms  "
          f"{1 / t['frame']:.3f} frames/s")
    print(f"decoder on {args.slice} pixels: ours {t['slice_ours'] * 1e3:.1f} ms, "
          f"reference (explicit einsum attention) {t['slice_ref'] * 1e3:.1f} ms, "
          f"ratio ours/reference {t['slice_ours'] / t['slice_ref']:.2f}, "
          f"max |diff| {diff:.2e}")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--configs", default="paper,paper_small")
    ap.add_argument("--slice", type=int, default=1024, help="pixels of the reference run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    print(f"device {dev}, threads {torch.get_num_threads()}, batch 1, one source, best of "
          f"{args.repeats}")
    for name in args.configs.split(","):
        bench_config(name, args, dev)

if __name__ == "__main__":
    main()
