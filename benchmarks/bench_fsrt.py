"""fsrt inference speed (paper configs, 256x256, batch 1, one source) and parameter counts.

    OMP_NUM_THREADS=1 python benchmarks/bench_fsrt.py [--device cpu|cuda] [--repeats 2]
        [--threads N] [--config paper,paper_small] [--slice 1024]

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

import torch

from facegeo_models import fsrt
from facegeo_models.common.blocks import coordinate_grid

from _timing import apply_threads, model_bench_parser, param_millions, time_fns


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
    parts = {k: param_millions(getattr(m, k)) for k in ("kpnet", "encoder", "decoder")}
    n = param_millions(m)
    print(f"\n[{name}] {s}x{s}, parameters {n:.2f} M (" + ", ".join(
        f"{k} {v:.2f} M" for k, v in parts.items()) + ")")
    state = m.encode_source(src)
    with torch.no_grad():
        d = m.describe(drv)
    coords = coordinate_grid(s, s, device=dev).reshape(1, -1, 2)[:, :args.slice]
    lat = state["latent"]
    t = time_fns({"encode": lambda: m.encode_source(src),
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
    ap = model_bench_parser(__doc__, "fsrt", "paper,paper_small")
    ap.set_defaults(repeats=2)
    ap.add_argument("--slice", type=int, default=1024, help="pixels of the reference run")
    args = ap.parse_args()
    apply_threads(args)
    dev = args.device
    print(f"device {dev}, threads {torch.get_num_threads()}, batch 1, one source, best of "
          f"{args.repeats}")
    for name in args.config.split(","):
        bench_config(name, args, dev)

if __name__ == "__main__":
    main()
