"""Benchmark: facegeo.raster.rasterize vs open3d RaycastingScene on the ICT face mesh.

    python benchmarks/bench_raster.py [--reps N] [--threads T] [--sizes 256 512] [--batches 1 16]

The ICT mean mesh (11,248 vertices, 22,288 triangles) is placed in image space (90 % of the
image height, orthographic, depth = -z). open3d is timed two ways per image:
``build+cast`` (build the Embree scene for this pose, then cast one orthographic ray per
pixel centre: what a posed mesh that changes every frame costs) and ``cast`` (scene built
beforehand). facegeo is timed for the full :func:`rasterize` call (z-buffer, face ids,
dense barycentrics and depth) with the default backend (``"auto"``: the compiled numba
z-buffer on the CPU when numba is installed) and, for comparison, ``backend="torch"``;
"cull" is the default backend with ``cull_backfaces=True`` (open3d has no culling; for a
closed mesh the result is the same). Every configuration is called once before timing, so
numba's JIT compilation (or loading its on-disk cache) is not in the timings; the first
call's time is printed separately. Times are the median of ``--reps`` runs in this process
(wall clock, and process CPU time summed over threads); the ratios are ``facegeo (default
backend) / open3d`` per image (< 1 = facegeo faster). Also printed: the triangle-id
agreement with open3d on covered pixels. A CUDA figure is added when a GPU is present.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch

import facegeo.assets
from facegeo.raster import rasterize


def ict_image_space(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = np.load(facegeo.assets.resolve("ict_facekit"))
    v = torch.tensor(d["mean"], dtype=torch.float32)
    f = torch.tensor(d["faces"].astype(np.int64))
    s = size * 0.9 / float(v[:, 1].max() - v[:, 1].min())
    cy = float(v[:, 1].max() + v[:, 1].min()) / 2
    img = torch.stack(
        [v[:, 0] * s + size / 2 + 0.37, -(v[:, 1] - cy) * s + size / 2 + 0.21, -v[:, 2] * s], 1
    )
    return img, f


def timeit(fn, reps: int, sync=None) -> tuple[float, float]:
    """Median wall-clock and median process CPU time (all threads) of ``fn()``, seconds."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        if sync:
            sync()
        t, c = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def o3d_build_cast(o3d, verts_np, faces_np, rays):
    out = []
    for v in verts_np:
        sc = o3d.t.geometry.RaycastingScene()
        sc.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(faces_np))
        out.append(sc.cast_rays(rays))
    return out


def o3d_cast(scenes, rays):
    return [sc.cast_rays(rays) for sc in scenes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import open3d as o3d

    from facegeo.raster import available_backends

    backend = "numba" if "numba" in available_backends() else "torch"
    extra = ""
    if backend == "numba":
        import numba

        extra = f", numba {numba.__version__}"
        # first call in this process: JIT compilation, or loading numba's on-disk cache
        v, f = ict_image_space(64)
        t = time.perf_counter()
        rasterize(v[None], f, 64, 64)
        first = time.perf_counter() - t
        t = time.perf_counter()
        rasterize(v[None], f, 64, 64)
        second = time.perf_counter() - t
        print(
            f"numba first call {first:.2f} s (compile or cache load), second {second * 1e3:.1f} ms"
        )
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"open3d {o3d.__version__}{extra}; default backend on the CPU: {backend}"
    )
    print(
        "ms per image, wall clock / CPU time (process, all threads); "
        f"ratio = facegeo ({backend}) / open3d"
    )
    cols = ["o3d build+cast", "o3d cast", "facegeo torch", f"facegeo {backend}", f"{backend} cull"]
    hdr = f"{'size':>5} {'B':>3} | " + " | ".join(f"{c:>15}" for c in cols)
    print(hdr + " | ratio vs b+c (wall/cpu) | ratio vs cast (wall/cpu) | id agree")
    for size in args.sizes:
        v, f = ict_image_space(size)
        fn = f.numpy().astype(np.uint32)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        z0 = float(v[:, 2].min()) - 1.0
        rays = np.stack([xs, ys, np.full_like(xs, z0), 0 * xs, 0 * xs, 1 + 0 * xs], -1)
        rays_t = o3d.core.Tensor(rays)
        for B in args.batches:
            vb = v[None].repeat(B, 1, 1).contiguous()
            verts_np = [vb[b].numpy() for b in range(B)]

            scenes = []
            for b in range(B):
                sc = o3d.t.geometry.RaycastingScene()
                sc.add_triangles(o3d.core.Tensor(verts_np[b]), o3d.core.Tensor(fn))
                scenes.append(sc)
            run_bc = partial(o3d_build_cast, o3d, verts_np, fn, rays_t)
            run_c = partial(o3d_cast, scenes, rays_t)
            run_torch = partial(rasterize, vb, f, size, size, backend="torch")
            run_ours = partial(rasterize, vb, f, size, size)
            run_cull = partial(rasterize, vb, f, size, size, cull_backfaces=True)
            t_bc = [x / B for x in timeit(run_bc, args.reps)]
            t_c = [x / B for x in timeit(run_c, args.reps)]
            t_torch = [x / B for x in timeit(run_torch, args.reps)]
            t_ours = [x / B for x in timeit(run_ours, args.reps)]
            t_cull = [x / B for x in timeit(run_cull, args.reps)]
            hit = run_c()[0]
            ref = hit["primitive_ids"].numpy().astype(np.int64)
            ref_mask = np.isfinite(hit["t_hit"].numpy())
            fr = run_ours()
            both = ref_mask & fr.mask[0].numpy()
            agree = (fr.face_id[0].numpy()[both] == ref[both]).mean()
            cells = " | ".join(
                f"{w * 1e3:7.2f}/{c * 1e3:7.2f}" for w, c in (t_bc, t_c, t_torch, t_ours, t_cull)
            )
            r_bc = f"{t_ours[0] / t_bc[0]:.2f}/{t_ours[1] / t_bc[1]:.2f}"
            r_c = f"{t_ours[0] / t_c[0]:.2f}/{t_ours[1] / t_c[1]:.2f}"
            print(f"{size:>5} {B:>3} | {cells} | {r_bc:>23} | {r_c:>24} | {agree:.4f}")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        print(f"CUDA: {torch.cuda.get_device_name(dev)}")
        for size in args.sizes:
            v, f = ict_image_space(size)
            for B in args.batches:
                vb = v[None].repeat(B, 1, 1).to(dev)
                fd = f.to(dev)
                run = partial(rasterize, vb, fd, size, size)
                t, _ = timeit(run, args.reps, torch.cuda.synchronize)
                print(f"{size:>5} {B:>3} | cuda {t * 1e3:8.2f} ms/batch {t / B * 1e3:.3f} ms/image")


if __name__ == "__main__":
    main()
