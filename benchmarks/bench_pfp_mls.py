"""pfp_mls inference speed (paper config, 256x256, batch 1) and parameter count.

Reference in the same run: a FOMM-shaped pipeline of the same size class built from
``facegeo_models.common`` blocks (keypoint detector on both frames, hourglass dense-motion
network with K+1 motions, occlusion-aware generator), i.e. the model the paper builds on.

    python benchmarks/bench_pfp_mls.py [--device cpu|cuda] [--repeats 10] [--threads N]
        [--config paper|cpu128|tiny|PATH]

The reference is FOMM's vox-256 shape, so with a config other than ``paper`` it is still
timed at 256x256 while the model runs at its own resolution (printed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facegeo_models import pfp_mls
from facegeo_models.common.blocks import (
    AntiAliasInterpolation2d,
    Hourglass,
    KeypointDetector,
    OcclusionAwareGenerator,
    identity_grid,
    keypoints_to_gaussian,
)

from _timing import apply_threads, model_bench_parser, param_millions, time_fns


class FommShaped(nn.Module):
    """Cost reference: FOMM vox-256 sizes (10 keypoints, no Jacobians)."""

    def __init__(self, num_kp: int = 10):
        super().__init__()
        self.kp = KeypointDetector(num_kp, 3, 32, 1024, 5, 0.1, scale_factor=0.25)
        self.down = AntiAliasInterpolation2d(3, 0.25)
        self.hourglass = Hourglass(64, (num_kp + 1) * 4, 5, 1024)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, 7, padding=3)
        self.occ = nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3)
        self.gen = OcclusionAwareGenerator(3, 64, 512, 2, 6)

    def forward(self, src, drv):
        ks, kd = self.kp(src)["value"], self.kp(drv)["value"]
        small = self.down(src)
        b, _, h, w = small.shape
        heat = keypoints_to_gaussian(kd, h, w, 0.1) - keypoints_to_gaussian(ks, h, w, 0.1)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], 1)
        ident = identity_grid(b, h, w, device=src.device)
        grids = ident[:, None] - kd[:, :, None, None] + ks[:, :, None, None]
        grids = torch.cat([ident[:, None], grids], 1)  # (B, K+1, h, w, 2)
        k1 = grids.shape[1]
        deformed = F.grid_sample(small.repeat_interleave(k1, 0), grids.flatten(0, 1),
                                 align_corners=False).view(b, k1, 3, h, w)
        feat = self.hourglass(torch.cat([heat[:, :, None], deformed], 2).flatten(1, 2))
        mask = F.softmax(self.mask(feat), 1)
        grid = (mask[..., None] * grids).sum(1)
        return self.gen(src, grid, torch.sigmoid(self.occ(feat)))["prediction"]


def main() -> None:
    args = model_bench_parser(__doc__, "pfp_mls").parse_args()
    apply_threads(args)
    dev = args.device
    torch.manual_seed(0)
    ours = pfp_mls.from_config(args.config).to(dev).eval()
    ref = FommShaped().to(dev).eval()
    size = ours.image_size
    src = torch.rand(1, 3, size, size, device=dev)
    drv = torch.rand(1, 3, size, size, device=dev)
    r_src, r_drv = torch.rand(1, 3, 256, 256, device=dev), torch.rand(1, 3, 256, 256, device=dev)
    print(f"device {dev}, threads {torch.get_num_threads()}, pfp_mls {size}x{size} "
          f"(reference 256x256), batch 1, best of {args.repeats}")
    print(f"parameters: pfp_mls {args.config} config {param_millions(ours):.2f} M "
          f"(" + ", ".join(f"{k} {param_millions(m):.2f} M"
                           for k, m in ours.named_children()) + f"); "
          f"FOMM-shaped reference {param_millions(ref):.2f} M")
    hm = round(size * ours.motion_scale)
    t = time_fns({"ref": lambda: ref(r_src, r_drv), "ours": lambda: ours.reenact(src, drv),
               "pts": lambda: ours.feature_points(src, drv),
               "gen": lambda: ours.generator(src, torch.zeros(1, hm, hm, 2, device=dev),
                                             torch.ones(1, 1, hm, hm, device=dev))},
              args.repeats, dev)
    t_ref, t_ours, t_pts = t["ref"], t["ours"], t["pts"]
    print(f"reference (FOMM-shaped): {t_ref * 1e3:8.1f} ms  {1 / t_ref:6.2f} frames/s")
    print(f"pfp_mls (full reenact):  {t_ours * 1e3:8.1f} ms  {1 / t_ours:6.2f} frames/s")
    print(f"  of which embedder + transformer + points: {t_pts * 1e3:.1f} ms, "
          f"occlusion-aware generator (shared with the reference): {t['gen'] * 1e3:.1f} ms")
    print(f"ratio pfp_mls / reference time: {t_ours / t_ref:.2f}")


if __name__ == "__main__":
    main()
