"""ldnet_fdgan inference speed (paper config, 256x256, batch 1) and parameter count.

What the paper times (supplement sec. 8): the dictionary (and LD-Net identity code) once per
target, then per frame LD-Net (0.02 s on a TITAN X) and FD-GAN (0.08 s). Timed here:

* per target: ``encode_source`` (FD-GAN extractor -> 4 dictionaries, LD-Net identity code);
* per frame: LD-Net landmarks (``driving_landmarks``), the landmark image
  (facegeo.raster), the FD-GAN translator, and the whole ``reenact`` call.

    OMP_NUM_THREADS=1 python benchmarks/bench_ldnet_fdgan.py [--device cpu|cuda]
        [--repeats 5] [--threads N] [--config paper|cpu|tiny|PATH] [--amp fp16|bf16]

Untrained weights (speed does not depend on them); random images, synthetic landmarks.
"""

from __future__ import annotations

import contextlib

import torch

from facegeo.pipeline import Conditioning
from facegeo_models.ldnet_fdgan import LDNetFDGAN

from _timing import apply_threads, model_bench_parser, time_fns


def _face(size: int, b: int = 1) -> torch.Tensor:
    """(b, 68, 2) landmarks of a face filling the centre of an S x S crop."""
    from facegeo.disentangle import LandmarkSynth

    g = torch.Generator().manual_seed(0)
    return LandmarkSynth(n_identities=4, seed=0).sample(b, generator=g).landmarks * (
        0.3 * size) + size / 2


def main() -> None:
    ap = model_bench_parser(__doc__, "ldnet_fdgan")
    ap.set_defaults(repeats=5)
    ap.add_argument("--amp", default=None, choices=[None, "fp16", "bf16"],
                    help="autocast dtype for the FD-GAN parts (CUDA)")
    args = ap.parse_args()
    apply_threads(args)
    dev = args.device
    torch.manual_seed(0)
    model = LDNetFDGAN.from_config(args.config).to(dev).eval()
    s = model.image_size
    src = Conditioning(image=torch.rand(1, 3, s, s, device=dev), landmarks68=_face(s).to(dev))
    drv = Conditioning(landmarks68=_face(s).to(dev) + 1.5)
    amp = (torch.autocast(dev.split(":")[0], dtype={"fp16": torch.float16,
                                                     "bf16": torch.bfloat16}[args.amp])
           if args.amp else contextlib.nullcontext())
    n = sum(p.numel() for p in model.parameters())
    net = model.ldnet()
    n_ld = sum(p.numel() for p in net.parameters())
    print(f"device {dev}, threads {torch.get_num_threads()}, config {args.config} "
          f"({s}x{s}), batch 1, amp {args.amp}, best of {args.repeats}")
    print(f"parameters: FD-GAN {n / 1e6:.3f} M ({n} ; " + ", ".join(
        f"{k} {sum(p.numel() for p in m.parameters()) / 1e6:.2f} M"
        for k, m in model.fdgan.named_children()) + f"), LD-Net (shipped) {n_ld / 1e6:.2f} M")
    with torch.no_grad(), amp:
        state = model.encode_source(src)
        lm = model.driving_landmarks(state, drv)
        limg = model.landmark_image(lm)
        fns = {
            "target": lambda: model.encode_source(src),
            "ldnet": lambda: model.driving_landmarks(state, drv),
            "raster": lambda: model.landmark_image(lm),
            "translate": lambda: model.fdgan.translate(limg, state.dictionaries),
            "frame": lambda: model.reenact(state, drv),
        }
        t = time_fns(fns, args.repeats, dev)
    print(f"per target  encode_source (extractor + LD-Net id code): {t['target'] * 1e3:8.1f} ms")
    print(f"per frame   LD-Net landmarks:                           {t['ldnet'] * 1e3:8.1f} ms")
    print(f"            landmark image (facegeo.raster lines):      {t['raster'] * 1e3:8.1f} ms")
    print(f"            FD-GAN translator:                          {t['translate'] * 1e3:8.1f} ms")
    print(f"            whole reenact call:                         {t['frame'] * 1e3:8.1f} ms"
          f"  {1 / t['frame']:6.2f} frames/s")
    print("paper (TITAN X): FD-GAN 80 ms + LD-Net 20 ms per frame")


if __name__ == "__main__":
    main()
