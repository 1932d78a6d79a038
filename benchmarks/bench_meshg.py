"""meshg inference speed (paper config, 256x256, batch 1), its Table-5 breakdown and
parameter counts.

Reference in the same run: the training-free geometric renderer
(:class:`facegeo.reenact.GeometricReenactor.render`) on the same source image and fits: the
analytic mesh flow + MLS warp that meshg replaces with a learned motion net and generator.

    python benchmarks/bench_meshg.py [--device cpu|cuda] [--repeats 10] [--threads N]
        [--config paper|cpu|tiny|PATH]

Components timed as the paper's Table 5 (inference at 256x256 on a 2080 Ti): mesh
regression (ours: the 3DMM fit of 68 landmarks with facegeo.fitting -- the paper runs a
CNN regressor -- plus evaluating and posing both meshes), motion net (GCN encoder + CNN
flow decoder), occlusion net, generator encoder, generator decoder (warp, occlusion,
bottleneck, up-sampling; the full generator minus its encoder). Landmark detection is not
included (the pipeline's tracker runs it for every method).
"""

from __future__ import annotations

import torch

from facegeo import transforms as T
from facegeo.reenact import FaceFit, GeometricReenactor
from facegeo_models import meshg

from _timing import apply_threads, model_bench_parser, time_fns


def _fits(m, size: int, device) -> tuple[FaceFit, FaceFit]:
    g = torch.Generator().manual_seed(0)

    def one(yaw):
        ang = torch.tensor([[yaw, 5.0, -3.0]])
        return FaceFit(T.euler_to_matrix(ang), torch.tensor([size / 28.0]),
                       torch.tensor([[size / 2, size / 2 + 4]]),
                       0.5 * torch.randn(1, m.num_id, generator=g),
                       0.3 * torch.rand(1, m.num_exp, generator=g)).to(device)
    return one(-10.0), one(15.0)


def main() -> None:
    args = model_bench_parser(__doc__, "meshg").parse_args()
    apply_threads(args)
    dev = args.device
    torch.manual_seed(0)
    m = meshg.from_config(args.config).to(dev).eval()
    S = m.image_size
    src_fit, drv_fit = _fits(m, S, dev)
    tgt = m.conditioner.target_fits(src_fit, drv_fit, "absolute")
    img = torch.rand(1, 3, S, S, device=dev)
    geo = GeometricReenactor(size=S, device=dev)
    lm68 = geo.fit_landmarks68(drv_fit)
    stacked = m.motion_input(src_fit, tgt, S)
    mot = m.motion(stacked)
    small = m.flow_down(img)
    dm = m.occlusion_net(small, mot["flow"], small.new_zeros(1, 0, *small.shape[-2:]))
    gen = m.generator

    def gen_encoder():
        x = gen.first(img)
        for blk in gen.down_blocks:
            x = blk(x)
        return x

    fns = {
        "geometric": lambda: geo.render(img, src_fit, tgt),
        "meshg": lambda: m.generate(img, src_fit, tgt, S),
        "fit": lambda: geo.fit_landmarks(lm68),
        "mesh": lambda: m.motion_input(src_fit, tgt, S),
        "motion": lambda: m.motion(stacked),
        "occlusion": lambda: m.occlusion_net(small, mot["flow"],
                                             small.new_zeros(1, 0, *small.shape[-2:])),
        "gen_encoder": gen_encoder,
        "generator": lambda: gen(img, dm["deformation"], dm["occlusion"]),
    }
    t = time_fns(fns, args.repeats, dev)
    n = sum(p.numel() for p in m.parameters())
    print(f"device {dev}, threads {torch.get_num_threads()}, meshg {args.config} config "
          f"{S}x{S}, mesh {m.topology.num_vertices[0]} vertices, batch 1, best of "
          f"{args.repeats}")
    print(f"parameters: {n / 1e6:.2f} M (" + ", ".join(
        f"{k} {sum(p.numel() for p in mod.parameters()) / 1e6:.2f} M"
        for k, mod in m.named_children() if sum(1 for _ in mod.parameters())) + ")")
    ms = {k: v * 1e3 for k, v in t.items()}
    print(f"geometric renderer (reference): {ms['geometric']:8.1f} ms "
          f"{1e3 / ms['geometric']:6.2f} frames/s")
    print(f"meshg (fits -> frame):          {ms['meshg']:8.1f} ms "
          f"{1e3 / ms['meshg']:6.2f} frames/s")
    print(f"ratio meshg / geometric time: {ms['meshg'] / ms['geometric']:.2f}")
    print("Table 5 breakdown (paper, 2080 Ti: 64 / 37 / 10 / 7 / 12 ms):")
    print(f"  mesh regression: fit {ms['fit']:.1f} ms + meshes {ms['mesh']:.1f} ms")
    print(f"  motion net:      {ms['motion']:.1f} ms")
    print(f"  occlusion net:   {ms['occlusion']:.1f} ms")
    print(f"  encoder:         {ms['gen_encoder']:.1f} ms")
    print(f"  decoder:         {ms['generator'] - ms['gen_encoder']:.1f} ms")


if __name__ == "__main__":
    main()
