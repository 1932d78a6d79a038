"""Accuracy and speed of facegeo.fitting, against eos, on synthetic and real faces.

    python benchmarks/bench_fitting.py                    # full run (batch 256, 1 thread)
    python benchmarks/bench_fitting.py --batch 64 --eos-faces 16 --no-real   # quick
    python benchmarks/bench_fitting.py --figure           # docs/img/fitting_overlay.png only

1. Synthetic ground truth: random ICT identity (standard normal), sparse random blendshape
   weights in [0, 1], pose (yaw +-40, pitch +-20, roll +-15 deg), weak-perspective projection into
   a 512 x 512 image (face ~ 300 px wide), Gaussian noise 0 / 1 / 2 px per coordinate.
   Reports landmark RMSE (px, against the noisy input points), rotation error (deg), mean vertex
   error of the recovered mesh (cm), and time per face for the whole batch.
2. eos (C++ reference, ``pip install eos-py``): an eos MorphableModel built from the same ICT
   arrays (identity basis as a PCA model with unit eigenvalues, the 53 blendshapes), landmarks
   mapped to the same 68 vertices, ``fit_shape_and_pose(..., num_iterations=5)`` per face; same
   metrics and time per face, in the same run (the first ``--eos-faces`` faces).
3. Real photos: dlib 68-point landmarks (``facegeo.landmarks.detect(..., detector="dlib")``) on
   every face of ../shared/media/*.jpg, fit with the sliding jawline; reports the
   median reprojection error in % of the outer-eye-corner distance.
4. ``--figure``: the overlay image of docs/fitting.md (``docs/img/fitting_overlay.png``), the
   same fit on redistributable faces only (docs/figure_inputs.py: scikit-image's public-domain
   astronaut, its mirrored smaller copy in ``two_faces()`` and frames of its 3DMM-scripted
   performance ``driving_frames(150)``); the dev media are measured, never shown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if not os.environ.get("FACEGEO_ASSETS") and (REPO.parent / "shared" / "assets").is_dir():
    os.environ["FACEGEO_ASSETS"] = str(REPO.parent / "shared" / "assets")

from facegeo import fitting  # noqa: E402
from facegeo import transforms as T  # noqa: E402
from facegeo.morphable import MorphableModel  # noqa: E402


def synth(model, n, seed, noise):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, model.n_id, generator=g)
    e = torch.rand(n, model.n_exp, generator=g) * (torch.rand(n, model.n_exp, generator=g) < 0.2)
    ang = torch.stack([(torch.rand(n, generator=g) * 2 - 1) * 40,
                       (torch.rand(n, generator=g) * 2 - 1) * 20,
                       (torch.rand(n, generator=g) * 2 - 1) * 15], 1)
    R = T.euler_to_matrix(ang)
    s = 15 + 5 * torch.rand(n, generator=g)
    t = 256 + 20 * torch.randn(n, 2, generator=g)
    verts = model.vertices(a, e)
    x = T.weak_perspective_project(model.landmarks(verts), R, t, s)
    x = x + noise * torch.randn(x.shape, generator=g)
    return x, R, verts


def eos_model(model):
    import eos

    mean = model.mean.numpy().reshape(-1).astype(np.float32)
    idb = model.id_basis.numpy().reshape(model.n_id, -1).T.astype(np.float32).copy()
    shape = eos.morphablemodel.PcaModel(mean, idb, np.ones(model.n_id, np.float32),
                                        model.triangles.numpy().tolist())
    bs = [eos.morphablemodel.Blendshape(nm, model.exp_basis[k].numpy().reshape(-1)
                                        .astype(np.float32))
          for k, nm in enumerate(model.exp_names)]
    return eos, eos.morphablemodel.MorphableModel(shape, bs, eos.morphablemodel.PcaModel())


def run_eos(eos, mm, model, x, R_true, verts_true, size=512):
    lmk = model.landmarks68.numpy()
    mapper = eos.core.LandmarkMapper()
    rmse, rot, verr = [], [], []
    t0 = time.perf_counter()
    out = []
    for b in range(x.shape[0]):
        # identity mapper: landmark names are the model vertex ids
        lms = [eos.core.Landmark(str(int(lmk[i])), [float(x[b, i, 0]), float(x[b, i, 1])])
               for i in range(68)]
        out.append(eos.fitting.fit_shape_and_pose(mm, lms, mapper, size, size, num_iterations=5))
    dt = (time.perf_counter() - t0) / x.shape[0]
    for b, (mesh, rp, _, _) in enumerate(out):
        P = eos.fitting.get_3x4_affine_camera_matrix(rp, size, size)
        v = np.asarray(mesh.vertices)
        p = (P @ np.c_[v[lmk], np.ones(68)].T).T[:, :2]
        rmse.append(math.sqrt(((p - x[b].numpy()) ** 2).sum(1).mean()))
        Re = torch.from_numpy(np.asarray(rp.get_modelview())[:3, :3].astype(np.float64))
        rot.append(T.rotation_angle(Re[None], R_true[b:b + 1].double()).item())
        verr.append(np.linalg.norm(v - verts_true[b].numpy(), axis=1).mean())
    return dict(rmse_px=float(np.median(rmse)), rmse_px_mean=float(np.mean(rmse)),
                rot_deg=float(np.median(rot)), vertex_cm=float(np.median(verr)),
                ms_per_face=dt * 1000)


def run_ours(model, fitter, x, R_true, verts_true, repeats=3, **kw):
    fitter.fit(x[:8], **kw)  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = fitter.fit(x, **kw)
        best = min(best, time.perf_counter() - t0)
    rot = T.rotation_angle(r.rotation.double(), R_true.double())
    verr = (r.vertices(model) - verts_true).norm(dim=-1).mean(1)
    return r, dict(rmse_px=r.rmse.median().item(), rmse_px_mean=r.rmse.mean().item(),
                   rot_deg=rot.median().item(), vertex_cm=verr.median().item(),
                   ms_per_face=best / x.shape[0] * 1000)


def detect_all(images):
    """``images``: (name, (H, W, 3) uint8 RGB) pairs -> dlib landmarks (N, 68, 2) of every
    face and one (name, index in the image, image) per face."""
    from facegeo import landmarks as L

    pts, crops = [], []
    for name, img in images:
        for k, face in enumerate(L.detect(img, detector="dlib")):
            pts.append(face.landmarks.float())
            crops.append((name, k, img))
    return torch.stack(pts), crops


def reprojection_error_pct(r, x: torch.Tensor) -> torch.Tensor:
    """(N, 68) distances of the fitted to the detected (N, 68, 2) landmarks, in % of each
    face's outer-eye-corner distance."""
    iod = (x[:, 36] - x[:, 45]).norm(dim=-1)
    return (r.landmarks2d - x).norm(dim=-1) / iod[:, None] * 100


def real_images(fitter, media: Path):
    import cv2

    x, crops = detect_all((f.name, cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB))
                          for f in sorted(media.glob("*.jpg")))
    r = fitter.fit(x)
    err = reprojection_error_pct(r, x)
    per_face = err.median(1).values
    res = dict(faces=len(crops), median_err_pct_iod=err.median().item(),
               mean_err_pct_iod=err.mean().item(),
               per_face_median_pct_iod={f"{n}#{k}": round(v, 2) for (n, k, _), v in
                                        zip(crops, per_face.tolist())},
               yaw_pitch_roll_deg={f"{n}#{k}": [round(a, 1) for a in ang] for (n, k, _), ang in
                                   zip(crops, r.angles.tolist())})
    return res


FIGURE_FRAMES = (26, 37, 60, 72, 112, 127)  # jaw open, turned, smile, blink, turned, brows


def figure(model, fitter, out_png: Path) -> dict:
    """docs/img/fitting_overlay.png from docs/figure_inputs.py's redistributable faces: the
    astronaut, her mirrored smaller copy (two_faces) and FIGURE_FRAMES of the driving clip."""
    sys.path.insert(0, str(REPO / "docs"))
    from figure_inputs import astronaut, driving_frames, two_faces

    from facegeo.image_io import to_uint8_hwc as u8

    drv = driving_frames(150, full=True)
    images = [("astronaut", u8(astronaut())), ("two_faces", u8(two_faces()))]
    images += [(f"driving frame {i}", u8(drv[i])) for i in FIGURE_FRAMES]
    x, crops = detect_all(images)
    keep = [b for b, (n, k, _) in enumerate(crops) if n != "two_faces" or k == 1]
    x, crops = x[keep], [crops[b] for b in keep]  # two_faces: its small mirrored copy
    r = fitter.fit(x)
    err = reprojection_error_pct(r, x)
    draw_overlay(model, r, x, crops, out_png)
    res = dict(faces=[f"{n}#{k}" for n, k, _ in crops],
               per_face_median_pct_iod=[round(v, 2) for v in err.median(1).values.tolist()],
               overlay=str(out_png))
    print(f"figure: {len(crops)} faces {res['faces']}, per face median reprojection error "
          f"(% IOD) {res['per_face_median_pct_iod']}; wrote {out_png} "
          f"({out_png.stat().st_size // 1024} KB)")
    return res


def draw_overlay(model, r, x, crops, out_png: Path) -> None:
    """Up to 8 tiles, 4 per row: each face's crop with its dlib landmarks (green), fitted
    landmarks (red) and the fitted mesh's front-facing face triangles (blue wireframe)."""
    import cv2

    verts = r.vertices(model)
    proj = r.project(verts)
    region = model.vertex_region
    tri = model.triangles
    if region is not None:
        tri = tri[(region[tri] <= 1).all(1)]  # face regions only
    tiles = []
    for b, (_, _, img) in enumerate(crops):
        lo = x[b].min(0).values
        hi = x[b].max(0).values
        c = (lo + hi) / 2
        half = (hi - lo).max().item() * 0.75
        x0, y0 = int(c[0] - half), int(c[1] - half)
        side = int(2 * half)
        pad = cv2.copyMakeBorder(img, side, side, side, side, cv2.BORDER_CONSTANT)
        tile = pad[y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side].copy()
        k = 256.0 / side
        tile = np.ascontiguousarray(cv2.resize(tile, (256, 256)))
        # front-facing triangles of the fitted mesh as a light wireframe
        q = ((proj[b] - torch.tensor([x0, y0])) * k).numpy()
        a, bb, cc = q[tri[:, 0]], q[tri[:, 1]], q[tri[:, 2]]
        cross = (bb[:, 0] - a[:, 0]) * (cc[:, 1] - a[:, 1]) - (bb[:, 1] - a[:, 1]) * (
            cc[:, 0] - a[:, 0])
        front = tri[torch.from_numpy(cross < 0)][::2]  # y down: CCW in model -> CW here
        layer = tile.copy()
        polys = [np.round(q[t]).astype(np.int32) for t in front.tolist()]
        cv2.polylines(layer, polys, True, (80, 170, 255), 1, cv2.LINE_AA)
        tile = cv2.addWeighted(layer, 0.35, tile, 0.65, 0)
        for p in x[b].tolist():
            cv2.circle(tile, (int((p[0] - x0) * k), int((p[1] - y0) * k)), 2, (0, 255, 0), -1)
        for p in r.landmarks2d[b].tolist():
            cv2.circle(tile, (int((p[0] - x0) * k), int((p[1] - y0) * k)), 2, (255, 40, 40),
                       -1)
        tiles.append(tile)
    cols = 4
    tiles = [cv2.resize(t, (160, 160), interpolation=cv2.INTER_AREA) for t in tiles[:8]]
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
    grid = np.concatenate(rows, 0)
    grid = (grid // 8) * 8 + 4  # 5 bits per channel: a much smaller PNG (< 300 KB)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    from facegeo.assets import atomic_write

    def write(tmp: Path) -> None:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_PNG_COMPRESSION, 9])
        tmp.write_bytes(buf.tobytes())

    atomic_write(out_png, write)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eos-faces", type=int, default=64, help="faces fitted with eos (timed)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (eos is 1 thread)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--no-eos", action="store_true")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--media", default=os.environ.get("FACEGEO_MEDIA",
                                                      str(REPO.parent / "shared" / "media")))
    ap.add_argument("--figure", nargs="?", const=str(REPO / "docs" / "img" /
                                                     "fitting_overlay.png"), default=None,
                    help="only write the overlay figure (default docs/img/fitting_overlay.png)"
                         " from the redistributable faces of docs/figure_inputs.py")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = MorphableModel.load()
    fitter = fitting.LandmarkFitter(model)
    if args.figure:
        res = figure(model, fitter, Path(args.figure))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    results = {"batch": args.batch, "threads": args.threads, "synthetic": {}}
    eos = mm = None
    if not args.no_eos:
        eos, mm = eos_model(model)
    print(f"model: {model}\nbatch {args.batch}, torch threads {args.threads}")
    hdr = (f"{'noise':>5} {'method':<22} {'RMSE px med':>11} {'(mean)':>7} {'rot deg':>8} "
           f"{'vertex cm':>9} {'ms/face':>8}")
    print(hdr)
    for noise in (0.0, 1.0, 2.0):
        x, R, verts = synth(model, args.batch, seed=100 + int(noise), noise=noise)
        row = {}
        for name, kw in (("facegeo (fixed jaw)", dict(contour="fixed")),
                         ("facegeo (sliding jaw)", dict(contour="slide"))):
            _, row[name] = run_ours(model, fitter, x, R, verts, **kw)
        if eos is not None:
            n = min(args.eos_faces, args.batch)
            row["eos fit_shape_and_pose"] = run_eos(eos, mm, model, x[:n], R[:n], verts[:n])
            _, row[f"facegeo (fixed jaw), same {n} faces"] = run_ours(
                model, fitter, x[:n], R[:n], verts[:n], repeats=1, contour="fixed")
        for name, m in row.items():
            print(f"{noise:5.1f} {name:<22} {m['rmse_px']:11.3f} {m['rmse_px_mean']:7.3f} "
                  f"{m['rot_deg']:8.3f} {m['vertex_cm']:9.3f} {m['ms_per_face']:8.2f}")
        results["synthetic"][f"noise_{noise:g}px"] = row
    if eos is not None:
        # throughput: interleave eos and facegeo timings so that machine load hits both alike
        x, R, verts = synth(model, args.batch, seed=101, noise=1.0)
        n = min(args.eos_faces, args.batch)
        t_eos, t_ours = [], []
        for _ in range(args.rounds):
            t_eos.append(run_eos(eos, mm, model, x[:n], R[:n], verts[:n])["ms_per_face"])
            t_ours.append(run_ours(model, fitter, x, R, verts, repeats=1,
                                   contour="fixed")[1]["ms_per_face"])
        me, mo = float(np.median(t_eos)), float(np.median(t_ours))
        results["throughput"] = dict(eos_ms_per_face=t_eos, facegeo_ms_per_face=t_ours,
                                     ratio_of_medians=me / mo)
        print(f"throughput ({args.rounds} interleaved rounds, 1 px noise): eos {me:.1f} ms/face "
              f"(one face at a time), facegeo {mo:.2f} ms/face (batch {args.batch}) -> "
              f"{me / mo:.1f}x eos")
        print(f"  per round eos {[round(t, 1) for t in t_eos]}, "
              f"facegeo {[round(t, 2) for t in t_ours]}")
    if not args.no_real:
        real = real_images(fitter, Path(args.media))
        results["real"] = real
        print(f"real photos: {real['faces']} faces, median reprojection error "
              f"{real['median_err_pct_iod']:.2f}% of the outer-eye-corner distance "
              f"(mean {real['mean_err_pct_iod']:.2f}%)")
        print("  per face median %:", real["per_face_median_pct_iod"])
        print("  yaw/pitch/roll deg:", real["yaw_pitch_roll_deg"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
