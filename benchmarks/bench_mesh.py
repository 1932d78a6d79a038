"""Benchmark of facegeo's mesh operators on the ICT face model (11,248 vertices).

Run: ``python benchmarks/bench_mesh.py [--device cpu|cuda] [--repeats N] [--skip-sampling]``

Prints, measured in the same run (minimum, or ``--stat median``, over interleaved repeats,
so machine load affects both sides alike):

1. Laplacian build time: ours vs torch_geometric ``get_laplacian``, scipy ``csgraph.laplacian``
   and libigl ``cotmatrix``/``massmatrix``;
2. Chebyshev convolution (K=3, 16->32 and 32->16, batch 16) forward and forward+backward:
   ``facegeo.graphconv.ChebConv`` vs ``torch_geometric.nn.ChebConv`` (batch as a disjoint
   graph), with the max output difference;
3. quadric down-sampling: build time of the (4, 4, 4, 4) hierarchy (D and U matrices), and the
   symmetric Hausdorff distance of each coarse mesh to the original, ours vs open3d's
   ``simplify_quadric_decimation`` at (nearly) the same vertex count, both measured with
   open3d's exact point-to-mesh distance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import facegeo.assets
from facegeo import mesh as M
from facegeo.graphconv import ChebConv


def timeit(fns: dict, repeats: int, sync=lambda: None) -> dict:
    """Seconds of each callable (the minimum over repeats, robust to a loaded machine; see
    ``--stat``), calls interleaved round-robin after one warm-up."""
    for fn in fns.values():
        fn()
        sync()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            ts[k].append(time.perf_counter() - t)
    agg = min if STAT == "min" else statistics.median
    return {k: agg(v) for k, v in ts.items()}


STAT = "min"


def load_ict():
    shared = Path(__file__).resolve().parents[2] / "shared" / "assets"
    if not os.environ.get("FACEGEO_ASSETS") and shared.is_dir():
        os.environ["FACEGEO_ASSETS"] = str(shared)
    d = np.load(facegeo.assets.resolve("ict_facekit"))
    return d["mean"].astype(np.float64), d["faces"].astype(np.int64)


def bench_laplacians(v, f, repeats):
    import igl
    import scipy.sparse as sp
    import scipy.sparse.csgraph as csgraph
    from torch_geometric.data import Data
    from torch_geometric.transforms import FaceToEdge
    from torch_geometric.utils import get_laplacian

    ft = torch.from_numpy(f)
    vt = torch.from_numpy(v)
    V = len(v)
    e = M.edges(ft).numpy()
    ei = torch.from_numpy(np.concatenate([e, e[:, ::-1]]).T.copy())
    A = sp.coo_matrix((np.ones(2 * len(e)), (ei[0].numpy(), ei[1].numpy())), shape=(V, V))

    print(f"\n== Laplacian build (ICT, V={V}, F={len(f)}) ==")
    r = timeit({
        "ours normalized_laplacian(faces)": lambda: M.normalized_laplacian(ft),
        "pyg get_laplacian(edge_index, sym)": lambda: get_laplacian(ei, normalization="sym",
                                                                    num_nodes=V),
        "pyg FaceToEdge + get_laplacian (faces)": lambda: get_laplacian(
            FaceToEdge()(Data(face=ft.T.contiguous(), num_nodes=V)).edge_index,
            normalization="sym", num_nodes=V),
        "scipy csgraph.laplacian(A, normed)": lambda: csgraph.laplacian(A.tocsr(), normed=True),
        "ours uniform_laplacian(faces)": lambda: M.uniform_laplacian(ft),
        "ours chebyshev_laplacian (+lambda_max)": lambda: M.chebyshev_laplacian(ft),
        "ours cotangent_laplacian(V, F)": lambda: M.cotangent_laplacian(vt, ft),
        "igl cotmatrix(V, F)": lambda: igl.cotmatrix(v, f),
        "ours mass_matrix voronoi": lambda: M.mass_matrix(vt, ft),
        "igl massmatrix voronoi": lambda: igl.massmatrix(v, f),
    }, repeats)
    for k, t in r.items():
        print(f"  {k:42s} {1e3 * t:9.2f} ms")
    ours = r["ours normalized_laplacian(faces)"]
    print(f"  ratio normalized from faces: pyg/ours = "
          f"{r['pyg FaceToEdge + get_laplacian (faces)'] / ours:.2f}; from a ready edge list / "
          f"matrix: pyg/ours = {r['pyg get_laplacian(edge_index, sym)'] / ours:.2f}, "
          f"scipy/ours = {r['scipy csgraph.laplacian(A, normed)'] / ours:.2f}")
    print(f"  ratio cotangent: igl/ours = "
          f"{r['igl cotmatrix(V, F)'] / r['ours cotangent_laplacian(V, F)']:.2f}, mass: igl/ours = "
          f"{r['igl massmatrix voronoi'] / r['ours mass_matrix voronoi']:.2f}")


def bench_chebconv(f, device, repeats, B=16):
    from torch_geometric.nn import ChebConv as PygChebConv

    ft = torch.from_numpy(f)
    V = int(ft.max()) + 1
    Ls, lam = M.chebyshev_laplacian(ft, return_lambda=True)
    e = M.edges(ft)
    ei = torch.cat([e, e.flip(1)]).T
    eib = torch.cat([ei + b * V for b in range(B)], 1).to(device)
    batch = torch.arange(B).repeat_interleave(V).to(device)
    lm = torch.full((B,), lam, device=device)
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    print(f"\n== ChebConv K=3, batch {B}, ICT graph V={V}, device={device}, "
          f"torch threads={torch.get_num_threads()} ==")
    for cin, cout in [(16, 32), (32, 16)]:
        torch.manual_seed(0)
        ours = ChebConv(cin, cout, 3, Ls).to(device)
        pyg = PygChebConv(cin, cout, 3).to(device)
        with torch.no_grad():
            for k in range(3):
                pyg.lins[k].weight.copy_(ours.weight[k].T)
            pyg.bias.copy_(ours.bias)
        x = torch.randn(B, V, cin, device=device, requires_grad=True)

        def run_pyg(pyg=pyg, x=x, cin=cin):
            return pyg(x.reshape(B * V, cin), eib, batch=batch, lambda_max=lm)

        def run_ours(ours=ours, x=x):
            return ours(x)

        with torch.no_grad():
            diff = float((run_pyg().view(B, V, cout) - run_ours()).abs().max())

        def fwd(fn):
            def g():
                with torch.no_grad():
                    fn()
            return g

        def fwdbwd(fn):
            def g():
                fn().sum().backward()
            return g

        r = timeit({"pyg fwd": fwd(run_pyg), "ours fwd": fwd(run_ours),
                    "pyg fwd+bwd": fwdbwd(run_pyg), "ours fwd+bwd": fwdbwd(run_ours)},
                   repeats, sync)
        print(f"  {cin:2d}->{cout:2d}  forward: pyg {1e3 * r['pyg fwd']:8.1f} ms  ours "
              f"{1e3 * r['ours fwd']:7.1f} ms  speed-up x{r['pyg fwd'] / r['ours fwd']:.1f}   "
              f"fwd+bwd: pyg {1e3 * r['pyg fwd+bwd']:8.1f} ms  ours "
              f"{1e3 * r['ours fwd+bwd']:7.1f} ms  speed-up "
              f"x{r['pyg fwd+bwd'] / r['ours fwd+bwd']:.1f}   max|diff| {diff:.1e}")


def bench_sampling(v, f):
    import open3d as o3d

    print("\n== Quadric down-sampling (ICT, factors (4, 4, 4, 4)) ==")
    t = time.perf_counter()
    h = M.mesh_hierarchy(v, f, (4, 4, 4, 4), cache=False)
    t_build = time.perf_counter() - t
    print(f"  ours: hierarchy with D and U built in {t_build:.2f} s, vertices "
          f"{h.num_vertices}, faces {[int(x.shape[0]) for x in h.faces]}")
    t = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        M.mesh_hierarchy(v, f, (4, 4, 4, 4), cache_dir=td)
        t_store = time.perf_counter() - t
        t = time.perf_counter()
        M.mesh_hierarchy(v, f, (4, 4, 4, 4), cache_dir=td)
        t_load = time.perf_counter() - t
    print(f"  cache: build+store {t_store:.2f} s, load {1e3 * t_load:.1f} ms")

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v),
                                     o3d.utility.Vector3iVector(f.astype(np.int32)))

    def o3d_at(nv):
        """open3d decimation with the triangle budget tuned to give ~nv vertices."""
        lo, hi = 1, len(f)
        best = None
        for _ in range(14):
            mid = (lo + hi) // 2
            s = mesh.simplify_quadric_decimation(target_number_of_triangles=mid)
            s.remove_unreferenced_vertices()
            n = len(s.vertices)
            if best is None or abs(n - nv) < abs(len(best.vertices) - nv):
                best = s
            if n == nv:
                break
            lo, hi = (mid + 1, hi) if n < nv else (lo, mid - 1)
            if lo > hi:
                break
        return best

    def dist(pts, vv, ff):
        sc = o3d.t.geometry.RaycastingScene()
        sc.add_triangles(o3d.core.Tensor(np.asarray(vv, np.float32)),
                         o3d.core.Tensor(np.asarray(ff, np.uint32)))
        return sc.compute_distance(o3d.core.Tensor(np.asarray(pts, np.float32))).numpy()

    def hausdorff(vv, ff):
        pa = np.concatenate([v, M.sample_surface(v, f, 100000, 0)])
        pb = np.concatenate([vv, M.sample_surface(vv, ff, 100000, 1)])
        return max(dist(pa, vv, ff).max(), dist(pb, v, f).max()), \
            float(np.mean(dist(pa, vv, ff)))

    print("  symmetric Hausdorff distance to the original surface (cm; mean one-sided "
          "distance in brackets), measured with open3d RaycastingScene:")
    for lvl in range(1, h.num_levels + 1):
        nv = h.num_vertices[lvl]
        t = time.perf_counter()
        s = mesh.simplify_quadric_decimation(target_number_of_triangles=int(h.faces[lvl].shape[0]))
        t_o3d = time.perf_counter() - t
        s = o3d_at(nv)
        hv, hm = hausdorff(h.vertices[lvl].double().numpy(), h.faces[lvl].numpy())
        ov, om = hausdorff(np.asarray(s.vertices), np.asarray(s.triangles))
        print(f"    level {lvl}: ours V={nv:5d}  H={hv:.3f} ({hm:.4f})   open3d V="
              f"{len(s.vertices):5d}  H={ov:.3f} ({om:.4f})   open3d time {t_o3d:.2f} s "
              "(from the full mesh, free vertex placement)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--skip-sampling", action="store_true")
    ap.add_argument("--stat", choices=["min", "median"], default="min",
                    help="statistic over the interleaved repeats")
    ap.add_argument("--only", choices=["laplacian", "chebconv", "sampling"], default=None)
    a = ap.parse_args()
    global STAT
    STAT = a.stat
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, device {a.device}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, "
          f"statistic: {STAT} of {a.repeats} interleaved repeats")
    v, f = load_ict()
    if a.only in (None, "laplacian"):
        bench_laplacians(v, f, a.repeats)
    if a.only in (None, "chebconv"):
        bench_chebconv(f, a.device, a.repeats)
    if a.only in (None, "sampling") and not a.skip_sampling:
        bench_sampling(v, f)


if __name__ == "__main__":
    main()
