"""Benchmark: MLS warp of an image with 68 control points, facegeo.mls vs a numpy baseline.

The baseline is a straightforward vectorised numpy implementation of Schaefer et al. (2006)
written here (float64, all pixels x all control points at once, as the usual open-source
MLS scripts do). Both compute the backward map (MLS q -> p at every pixel centre) and sample
the image bilinearly; the time of the sampling step is included on both sides.

    python benchmarks/bench_mls.py                       # 512 and 256, all three kinds
    python benchmarks/bench_mls.py --sizes 512 --kinds rigid --threads 1

Prints, per size and kind: baseline time, facegeo time (exact per-pixel map) and the ratio,
the coarse-grid shortcut's time and its error against the exact map, and the largest
difference between the baseline map and ours.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from facegeo import mls

# --------------------------------------------------------------------------- baseline


def numpy_mls_map(p: np.ndarray, q: np.ndarray, h: int, w: int, kind: str,
                  alpha: float = 1.0) -> np.ndarray:
    """MLS deformation p -> q at every pixel centre, (H, W, 2); Schaefer's closed forms."""
    ys, xs = np.mgrid[0:h, 0:w]
    v = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)  # (M, 2)
    diff = p[None, :, :] - v[:, None, :]  # (M, N, 2)
    wts = 1.0 / np.sum(diff ** 2, axis=2) ** alpha  # (M, N)
    wsum = wts.sum(1)
    pstar = wts @ p / wsum[:, None]
    qstar = wts @ q / wsum[:, None]
    phat = p[None] - pstar[:, None]  # (M, N, 2)
    qhat = q[None] - qstar[:, None]
    vp = v - pstar  # (M, 2)
    if kind == "affine":
        a = np.einsum("mn,mni,mnj->mij", wts, phat, phat)
        b = np.einsum("mn,mni,mnj->mij", wts, phat, qhat)
        mat = np.linalg.solve(a, b)
        out = np.einsum("mi,mij->mj", vp, mat) + qstar
    else:
        # A_i = w_i [p^_i; -p^_i_perp] [v - p*; -(v - p*)_perp]^T, perp(x, y) = (-y, x)
        phat_perp = np.stack([-phat[..., 1], phat[..., 0]], -1)
        vp_perp = np.stack([-vp[:, 1], vp[:, 0]], -1)
        # fr = sum_i q^_i A_i, written out with the 2x2 blocks
        c1 = np.sum(phat * vp[:, None], -1)  # p^ . (v - p*)
        c2 = np.sum(phat * vp_perp[:, None], -1)  # p^ . (v - p*)_perp
        c3 = np.sum(phat_perp * vp[:, None], -1)
        c4 = np.sum(phat_perp * vp_perp[:, None], -1)
        fx = np.sum(wts * (qhat[..., 0] * c1 - qhat[..., 1] * c3), 1)
        fy = np.sum(wts * (qhat[..., 0] * c2 * -1 + qhat[..., 1] * c4), 1)
        # the expression above is Schaefer's eq. for sum_i q^_i A_i in row-vector form
        fvec = np.stack([fx, fy], -1)
        if kind == "similarity":
            mu = np.sum(wts * np.sum(phat ** 2, -1), 1)
            out = fvec / mu[:, None] + qstar
        else:
            norm_vp = np.linalg.norm(vp, axis=1)
            norm_f = np.linalg.norm(fvec, axis=1)
            out = norm_vp[:, None] * fvec / norm_f[:, None] + qstar
    return out.reshape(h, w, 2)


def numpy_bilinear(img: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) img at (H, W, 2) pixel positions, border clamp."""
    h, w = img.shape[:2]
    x = np.clip(src[..., 0], 0, w - 1)
    y = np.clip(src[..., 1], 0, h - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    return ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x0 + 1])
            + fy * ((1 - fx) * img[y0 + 1, x0] + fx * img[y0 + 1, x0 + 1]))


def numpy_warp(img, p, q, kind):
    src = numpy_mls_map(q, p, img.shape[0], img.shape[1], kind)
    return numpy_bilinear(img, src), src


# --------------------------------------------------------------------------- inputs


def controls(size: int, seed: int = 0):
    """68 face-like control points (jittered ellipse + inner grid) and a smooth motion."""
    rng = np.random.default_rng(seed)
    s = size / 512.0
    t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    ring = np.stack([256 + 150 * np.cos(t), 270 + 190 * np.sin(t)], 1)
    gy, gx = np.mgrid[0:5, 0:8]
    inner = np.stack([150 + gx.ravel() * 30, 180 + gy.ravel() * 45], 1)
    p = np.concatenate([ring, inner], 0)[:68] * s + rng.uniform(-3, 3, (68, 2)) * s
    p += 0.37  # keep control points off the pixel centres (the baseline divides by zero there)
    q = p + rng.normal(0, 6 * s, (68, 2)) + np.array([4.0, -3.0]) * s
    img = rng.random((size, size, 3))
    return p, q, img


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(best wall-clock seconds, best process CPU seconds) over ``repeats`` calls."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 256])
    ap.add_argument("--kinds", nargs="+", default=list(mls.KINDS))
    ap.add_argument("--repeats", type=int, default=5, help="repeats for facegeo (best of)")
    ap.add_argument("--baseline-repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                    help="torch thread counts to time facegeo with (0 = torch default)")
    ap.add_argument("--backends", nargs="+", default=["eager", "inductor"])
    ap.add_argument("--grid-step", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, device {dev}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; numpy baseline float64, facegeo float32; "
          f"times are best of {args.repeats} (baseline: {args.baseline_repeats})")
    print("wall = wall-clock time, cpu = process CPU time (all threads; less sensitive to other "
          "load on the machine); ratio = numpy / ours")
    print(f"{'size':>5} {'kind':>10} {'numpy s':>8} {'cpu s':>6} {'backend':>8} {'thr':>3} "
          f"{'ours ms':>8} {'cpu ms':>7} {'ratio':>6} {'cpu':>5} {'coarse ms':>9} {'ratio':>6} "
          f"{'coarse err max/mean px':>23} {'|ours-np| px':>12}")
    for size in args.sizes:
        p, q, img = controls(size)
        tp = torch.tensor(p, dtype=torch.float32, device=dev)[None]
        tq = torch.tensor(q, dtype=torch.float32, device=dev)[None]
        timg = torch.tensor(img, dtype=torch.float32, device=dev).permute(2, 0, 1)[None]
        for kind in args.kinds:
            res = {}

            def run_np(kind=kind, p=p, q=q, img=img, res=res):
                res["np"] = numpy_warp(img, p, q, kind)

            def run_ours(step, backend, kind=kind, tp=tp, tq=tq, timg=timg, res=res):
                with torch.no_grad():
                    res[step] = mls.warp_image(timg, tp, tq, kind, grid_step=step,
                                               return_grid=True, backend=backend)
                sync()

            t_np, c_np = best_time(run_np, args.baseline_repeats)
            for backend in args.backends:
                for threads in args.threads:
                    torch.set_num_threads(threads or default_threads)
                    run_ours(1, backend)  # warm-up (and compilation for inductor)
                    t_ours, c_ours = best_time(lambda b=backend: run_ours(1, b), args.repeats)
                    run_ours(args.grid_step, backend)
                    t_coarse, _ = best_time(lambda b=backend: run_ours(args.grid_step, b),
                                         args.repeats)
                    exact = res[1][1][0].double().cpu()
                    err = (res[args.grid_step][1][0].double().cpu() - exact).norm(dim=-1)
                    diff = (exact - torch.from_numpy(res["np"][1])).norm(dim=-1).max().item()
                    print(f"{size:>5} {kind:>10} {t_np:>8.3f} {c_np:>6.2f} {backend:>8} "
                          f"{torch.get_num_threads():>3} {t_ours * 1e3:>8.1f} "
                          f"{c_ours * 1e3:>7.1f} {t_np / t_ours:>5.0f}x {c_np / c_ours:>4.0f}x "
                          f"{t_coarse * 1e3:>9.1f} "
                          f"{t_np / t_coarse:>5.0f}x {err.max().item():>11.3f} / "
                          f"{err.mean().item():<9.4f} {diff:>12.2e}", flush=True)
            torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
