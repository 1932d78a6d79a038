"""The GPU check: every core op and every registered model on a CUDA device, in one command.

    python benchmarks/gpu_check.py                    # full check on cuda (H100-class: minutes)
    python benchmarks/gpu_check.py --quick            # < 4 minutes on an H100-class GPU
    python benchmarks/gpu_check.py --device cpu --tiny   # what CI runs
                                                         # (tests/benchmarks/test_gpu_check.py)
    python benchmarks/gpu_check.py --models fsrt,meshg --skip-core --out check.json

Needs only PyTorch, numpy, scipy, PyYAML, safetensors and tqdm (no dlib, open3d, PyAV, media
or network): inputs are synthetic (:mod:`facegeo_models.common.synthetic`: random ICT-FaceKit
faces with consistent fits and landmarks; the ICT model ships with the package).

1. **Core, device vs CPU.** The same inputs on the device and on the CPU: rasterizer
   (``face_id`` agreement, barycentric difference; the CPU reference is the default CPU
   backend, numba where installed; with ``--device cpu`` the torch backend is compared
   with it), MLS image warp, batched landmark fitting, Chebyshev
   graph convolution, mesh flow, landmark heat-maps. Speed on the device: raster 256/512 at
   B = 1/16, MLS 512, fitting B = 256/4096, ChebConv B = 16 (``--tiny``: small sizes).
2. **Geometric renderer** (``GeometricReenactor.render``: raster + warp of fitted faces) at
   256 and 512, frames/s at batch 16 (target on the GPU: 300 frames/s at 256).
3. **Every registered neural model**, its ``paper`` config (``--tiny``: ``tiny``): one
   :class:`~facegeo_models.common.trainer.Trainer` step (forward + backward + optimizer,
   critics included) with bf16 autocast and without; a run of training steps on one
   repeated synthetic batch (the loss must stay finite and fall); inference frames/s at the
   config's resolution for batch 1 and 16, fp32 and bf16, eager and ``torch.compile`` (the
   error is recorded where compile fails); peak GPU memory; parameter count. Where the VGG-19
   weights of a perceptual loss are absent, the loss runs with random VGG weights (same cost;
   recorded as ``perceptual_weights: random``).

Writes one JSON (``--out``; default ``$OUT/gpu_check.json`` when ``$OUT`` is set, else
``gpu_check.json``) and prints a table. Exit status 1 when a check failed (agreement out of
tolerance, non-finite or non-falling loss, an exception in a model), so a broken path
cannot pass unnoticed; every failure is listed in ``failures`` of the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# sizes per mode: (full, quick, tiny)
SIZES = {
    "raster": {"full": [(256, 1), (256, 16), (512, 1), (512, 16)],
               "quick": [(256, 1), (256, 16), (512, 1), (512, 16)],
               "tiny": [(64, 1), (64, 2)]},
    "mls": {"full": 512, "quick": 512, "tiny": 64},
    "fitting": {"full": [256, 4096], "quick": [256, 4096], "tiny": [8]},
    "chebconv": {"full": 16, "quick": 16, "tiny": 2},
    "render": {"full": [256, 512], "quick": [256], "tiny": [64]},
}
# the loss must fall over a run of >= 6 steps; the tiny CPU mode only checks it is finite
TRAIN_STEPS = {"full": 300, "quick": 60, "tiny": 3}
INFER_BATCHES = {"full": [1, 16], "quick": [1, 16], "tiny": [1, 2]}
REPEATS = {"full": 20, "quick": 8, "tiny": 2}


# ----------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds (device synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return None


class Report:
    """Collects results and failures; ``check`` records a pass/fail condition."""

    def __init__(self):
        self.data: dict = {"core": {}, "render": {}, "models": {}}
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok

    def guard(self, section: str, name: str):
        report = self

        class _Guard(contextlib.AbstractContextManager):
            def __exit__(self, et, ev, tb):
                if ev is None:
                    return False
                msg = f"{section}/{name}: {et.__name__}: {ev}"
                report.failures.append(msg)
                report.data[section].setdefault(name, {})["error"] = "".join(
                    traceback.format_exception(et, ev, tb))[-4000:]
                print(f"  FAILED {msg}", flush=True)
                return True  # keep going with the other checks

        return _Guard()


# ----------------------------------------------------------------------------- core
def _faces(n: int, size: int, seed: int = 0):
    from facegeo_models.common.synthetic import synthetic_faces

    return synthetic_faces(n, size, generator=torch.Generator().manual_seed(seed))


def _image_vertices(model, faces: dict, n: int) -> torch.Tensor:
    """(n, V, 3) image-space vertices of the synthetic faces' meshes, posed by their fits
    (:func:`facegeo.geometric.facemesh.posed_vertices`: the rasterizer's convention)."""
    from facegeo.geometric.facemesh import posed_vertices

    v = model.vertices(faces["id_coeffs"][:n], faces["exp_coeffs"][:n])
    return posed_vertices(v, faces["rotation"][:n], faces["scale"][:n],
                          faces["translation"][:n])


def check_core(rep: Report, device: torch.device, mode: str) -> None:
    from facegeo import fitting, graphconv, mesh, mls, raster
    from facegeo.morphable import MorphableModel

    cpu = torch.device("cpu")
    reps = REPEATS[mode]
    model = MorphableModel.load()
    tri = model.triangles
    core = rep.data["core"]

    # --- rasterizer
    with rep.guard("core", "raster"):
        out = core.setdefault("raster", {"runs": []})
        for size, b in SIZES["raster"][mode]:
            faces = _faces(b, size)
            v = _image_vertices(model, faces, b)
            ref = raster.rasterize(v, tri, size, size)  # CPU default backend
            vd, td = v.to(device), tri.to(device)
            # on the CPU the check compares the torch backend with the default (numba)
            kind = "torch" if device.type == "cpu" else "auto"
            got = raster.rasterize(vd, td, size, size, backend=kind)
            same = (got.face_id.cpu() == ref.face_id)
            agree = float(same.float().mean())
            both = same & ref.mask
            bary = float((got.bary.cpu() - ref.bary)[both].abs().max()) if both.any() else 0.0
            ms = timed(lambda vd=vd, td=td, size=size, kind=kind: raster.rasterize(
                vd, td, size, size, backend=kind), device, reps)
            out["runs"].append({"size": size, "batch": b, "face_id_agreement": agree,
                                "bary_max_abs_diff": bary, "ms": ms,
                                "frames_per_s": b * 1000 / ms})
            rep.check(agree > 0.999 and bary < 1e-3,
                      f"core/raster {size} B={b}: face_id agreement {agree:.5f}, "
                      f"bary diff {bary:.2e}")

    # --- MLS image warp
    with rep.guard("core", "mls"):
        size = SIZES["mls"][mode]
        g = torch.Generator().manual_seed(1)
        img = torch.rand(1, 3, size, size, generator=g)
        p = torch.rand(1, 68, 2, generator=g) * (size * 0.6) + size * 0.2
        q = p + torch.randn(1, 68, 2, generator=g) * size * 0.01
        ref = mls.warp_image(img, p, q)
        got = mls.warp_image(img.to(device), p.to(device), q.to(device))
        diff = float((got.cpu() - ref).abs().max())
        ms = timed(lambda: mls.warp_image(img.to(device), p.to(device), q.to(device)), device,
                   reps)
        core["mls"] = {"size": size, "max_abs_diff": diff, "ms": ms}
        rep.check(diff < 1e-3, f"core/mls: max diff {diff:.2e}")

    # --- batched landmark fitting
    with rep.guard("core", "fitting"):
        out = core.setdefault("fitting", {"runs": []})
        n_ref = 16 if mode != "tiny" else 4
        for b in SIZES["fitting"][mode]:
            faces = _faces(b, 512, seed=2)
            x = faces["landmarks"]
            ref = fitting.fit_landmarks(model, x[:n_ref], device=cpu)
            md = model.to(device)
            got = fitting.fit_landmarks(md, x.to(device), device=device)
            d_rmse = float((got.rmse[:n_ref].cpu() - ref.rmse).abs().max())
            d_ang = float((got.angles[:n_ref].cpu() - ref.angles).abs().max())
            ms = timed(lambda md=md, x=x: fitting.fit_landmarks(md, x.to(device),
                                                                device=device), device,
                       max(2, reps // 4), warmup=1)
            out["runs"].append({"batch": b, "rmse_px_median": float(got.rmse.median()),
                                "rmse_max_abs_diff_vs_cpu": d_rmse,
                                "angle_max_abs_diff_deg_vs_cpu": d_ang, "ms": ms,
                                "faces_per_s": b * 1000 / ms})
            rep.check(d_rmse < 0.05 and d_ang < 0.5 and bool(torch.isfinite(got.rmse).all()),
                      f"core/fitting B={b}: rmse diff {d_rmse:.3g} px, angle diff "
                      f"{d_ang:.3g} deg")

    # --- Chebyshev graph convolution on the ICT mesh
    with rep.guard("core", "chebconv"):
        b = SIZES["chebconv"][mode]
        lap = mesh.scaled_laplacian(mesh.chebyshev_laplacian(tri, model.n_vertices))
        torch.manual_seed(3)
        conv = graphconv.ChebConv(16, 32, 3, lap)
        torch.manual_seed(3)  # the same initial weights, built a second time for the device
        convd = graphconv.ChebConv(16, 32, 3, lap).to(device)
        x = torch.randn(b, model.n_vertices, 16)
        ref = conv(x)
        got = convd(x.to(device))
        diff = float((got.cpu() - ref).abs().max() / ref.abs().max())
        ms = timed(lambda: convd(x.to(device)), device, reps)
        core["chebconv"] = {"batch": b, "vertices": model.n_vertices, "rel_max_diff": diff,
                            "ms": ms}
        rep.check(diff < 1e-4, f"core/chebconv: relative diff {diff:.2e}")

    # --- mesh flow between two posed meshes
    with rep.guard("core", "mesh_flow"):
        size = SIZES["raster"][mode][-1][0]
        f2 = _faces(2, size, seed=4)
        v = _image_vertices(model, f2, 2)
        src, drv = v[:1], v[1:]
        ref = raster.mesh_flow(src, drv, tri, size, size)
        got = raster.mesh_flow(src.to(device), drv.to(device), tri.to(device), size, size)
        both = ref.valid & got.valid.cpu()
        agree = float((ref.valid == got.valid.cpu()).float().mean())
        diff = float((got.flow.cpu() - ref.flow)[both].abs().max()) if both.any() else 0.0
        core["mesh_flow"] = {"size": size, "valid_agreement": agree, "flow_max_abs_diff_px":
                             diff}
        rep.check(agree > 0.999 and diff < 1e-2,
                  f"core/mesh_flow: valid agreement {agree:.5f}, flow diff {diff:.2e} px")

    # --- landmark heat-maps
    with rep.guard("core", "heatmaps"):
        size = SIZES["mls"][mode] // 4
        pts = _faces(4, size, seed=5)["landmarks"]
        ref = raster.heatmaps(pts, size, size)
        got = raster.heatmaps(pts.to(device), size, size)
        diff = float((got.cpu() - ref).abs().max())
        core["heatmaps"] = {"size": size, "max_abs_diff": diff}
        rep.check(diff < 1e-5, f"core/heatmaps: max diff {diff:.2e}")


# ----------------------------------------------------------------------------- renderer
def check_render(rep: Report, device: torch.device, mode: str) -> None:
    from facegeo.reenact import FaceFit, GeometricReenactor
    from facegeo_models.common.synthetic import _images

    reps = max(2, REPEATS[mode] // 2)
    batch = 16 if mode != "tiny" else 2
    for size in SIZES["render"][mode]:
        with rep.guard("render", f"geometric_{size}"):
            rr = GeometricReenactor(size=size, device=device)
            f = _faces(batch + 1, size, seed=6)
            fit = FaceFit(f["rotation"], f["scale"], f["translation"], f["id_coeffs"][:1]
                          .expand(batch + 1, -1), f["exp_coeffs"]).to(device)
            src_img = _images(f["landmarks"][:1], size, torch.Generator().manual_seed(7))
            src_img = src_img.to(device)  # (1, 3, S, S)
            lm = f["landmarks"][:1].to(device)  # (1, 68, 2)
            tgt = fit.index(slice(1, batch + 1))

            def run(rr=rr, src_img=src_img, fit=fit, tgt=tgt, lm=lm):
                return rr.render(src_img, fit.index(0), tgt, source_landmarks=lm)

            out = run()
            frames = getattr(out, "frames", out)
            finite = bool(torch.isfinite(torch.as_tensor(frames).float()).all())
            _peak_reset(device)
            ms = timed(run, device, reps)
            rep.data["render"][f"geometric_{size}"] = {
                "size": size, "batch": batch, "ms": ms, "frames_per_s": batch * 1000 / ms,
                "finite": finite, "peak_mib": _peak_mib(device)}
            rep.check(finite, f"render/geometric_{size}: non-finite output")


# ----------------------------------------------------------------------------- models
def _config(info, name: str, mode: str) -> tuple[dict, str]:
    """The model's full training config for the check (``paper``, or ``tiny``)."""
    from facegeo_models.common.config import load_config

    wanted = "tiny" if mode == "tiny" else "paper"
    path = Path(info.config_dir) / f"{wanted}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"model {name!r} has no {wanted}.yaml in {info.config_dir}")
    return load_config(path), wanted


def _vgg_available() -> bool:
    from facegeo import assets

    try:
        assets.resolve("vgg19", download=False)
        return True
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return False


def _prepare(cfg: dict, steps: int, batch: int, bf16: bool, vgg: bool) -> tuple[dict, dict]:
    cfg = copy.deepcopy(cfg)
    notes: dict = {}
    first = dict((cfg.get("phases") or [{"name": "train", "losses": {"l1": 1.0}}])[0])
    first["steps"] = max(steps, 1)
    cfg["phases"] = [first]
    train = cfg.setdefault("train", {})
    train["amp"] = "bf16" if bf16 else "none"
    train.pop("ema", None)
    cfg.setdefault("data", {})["batch_size"] = batch
    cfg["validation"] = {"enabled": False}
    per = cfg.get("perceptual")
    kind = per.get("type") if isinstance(per, dict) else per
    if kind == "vgg19" and not vgg:
        cfg["perceptual"] = {**(per if isinstance(per, dict) else {}), "type": "vgg19",
                             "weights": "random"}
        notes["perceptual_weights"] = "random"
    return cfg, notes


def check_model(rep: Report, name: str, device: torch.device, mode: str,
                compile_: bool) -> None:
    from facegeo_models.common.registry import model_info
    from facegeo_models.common.synthetic import synthetic_batch
    from facegeo_models.common.trainer import Trainer

    info = model_info(name)
    out = rep.data["models"].setdefault(name, {})
    base, cfg_name = _config(info, name, mode)
    out["config"] = cfg_name
    vgg = _vgg_available()
    train_batch = int((base.get("data") or {}).get("batch_size", 4))
    if mode == "tiny":
        train_batch = min(train_batch, 2)
    n_src = int((base.get("data") or {}).get("num_sources", 1))
    steps = TRAIN_STEPS[mode]
    reps = REPEATS[mode]
    with tempfile.TemporaryDirectory() as tmp:
        for bf16 in (True, False):
            key = "train_bf16" if bf16 else "train_fp32"
            if bf16 and device.type == "cpu" and mode != "tiny":
                continue
            cfg, notes = _prepare(base, steps if bf16 or mode == "tiny" else 3, train_batch,
                                  bf16, vgg)
            out.update(notes)
            torch.manual_seed(0)
            tr = Trainer(cfg, out_dir=Path(tmp) / key, train_dataset=[None],
                         val_dataset=None, device=str(device), resume=None)
            net = tr.raw_model
            out["parameters"] = sum(p.numel() for p in net.parameters())
            out["image_size"] = int(net.image_size)
            batch = synthetic_batch(net, train_batch, num_sources=n_src, seed=0,
                                    device=device)
            _peak_reset(device)
            losses, times = [], []
            for _ in range(cfg["phases"][0]["steps"]):
                t0 = time.perf_counter()
                logs = tr.train_step(batch)
                _sync(device)
                times.append((time.perf_counter() - t0) * 1000)
                losses.append(logs["loss/total"])
            k = max(1, len(losses) // 10)
            first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
            finite = all(math.isfinite(v) for v in losses)
            falling = last < first
            out[key] = {"steps": len(losses), "batch": train_batch,
                        "step_ms": statistics.median(times[1:] or times),
                        "loss_first": first, "loss_last": last, "finite": finite,
                        "falling": falling, "peak_mib": _peak_mib(device)}
            rep.check(finite, f"models/{name} {key}: non-finite loss")
            if len(losses) >= 6:
                rep.check(falling, f"models/{name} {key}: loss did not fall "
                                   f"({first:.4g} -> {last:.4g})")
            del tr
        # inference: forward of the eval model on synthetic batches
        net = net.eval()
        infer = out.setdefault("inference", [])
        for b in INFER_BATCHES[mode]:
            batch = synthetic_batch(net, b, num_sources=n_src, seed=1, device=device)
            for bf16 in (False, True):
                if bf16 and device.type == "cpu" and mode != "tiny":
                    continue

                def fwd(net=net, batch=batch, bf16=bf16):
                    with torch.no_grad(), _autocast(device, bf16):
                        return net(batch)["prediction"]

                pred = fwd()
                finite = bool(torch.isfinite(pred.float()).all())
                _peak_reset(device)
                ms = timed(fwd, device, reps)
                infer.append({"batch": b, "dtype": "bf16" if bf16 else "fp32",
                              "compiled": False, "ms": ms, "frames_per_s": b * 1000 / ms,
                              "finite": finite, "peak_mib": _peak_mib(device)})
                rep.check(finite, f"models/{name} inference B={b} bf16={bf16}: non-finite")
        if compile_:
            try:
                cnet = torch.compile(net)
                batch = synthetic_batch(net, INFER_BATCHES[mode][-1], num_sources=n_src,
                                        seed=1, device=device)

                def cfwd(batch=batch):
                    with torch.no_grad(), _autocast(device, True):
                        return cnet(batch)["prediction"]

                cfwd()
                ms = timed(cfwd, device, reps)
                b = INFER_BATCHES[mode][-1]
                infer.append({"batch": b, "dtype": "bf16", "compiled": True, "ms": ms,
                              "frames_per_s": b * 1000 / ms})
            except Exception as e:  # noqa: BLE001 - recorded: compile is best effort
                out["compile_error"] = f"{type(e).__name__}: {str(e)[:500]}"


# ----------------------------------------------------------------------------- main
def print_table(rep: Report) -> None:
    core = rep.data["core"]
    print("\n== core (device vs CPU)")
    for r in core.get("raster", {}).get("runs", []):
        print(f"raster {r['size']:>4} B={r['batch']:<3} {r['ms']:8.2f} ms  "
              f"{r['frames_per_s']:9.1f} frames/s  id agree {r['face_id_agreement']:.5f}")
    for k in ("mls", "chebconv"):
        if "ms" in core.get(k, {}):
            print(f"{k:<14} {core[k]['ms']:8.2f} ms")
    for r in core.get("fitting", {}).get("runs", []):
        print(f"fitting B={r['batch']:<5} {r['ms']:8.1f} ms  {r['faces_per_s']:9.1f} faces/s")
    for k, r in rep.data["render"].items():
        if "ms" in r:
            print(f"{k:<14} B={r['batch']:<3} {r['frames_per_s']:9.1f} frames/s")
    print("\n== models")
    print(f"{'model':<14}{'params':>12}{'res':>5}{'train ms (bf16/fp32)':>24}"
          f"{'fps B1 fp32':>12}{'fps B1 bf16':>12}{'fps B16 bf16':>13}{'peak MiB':>10}")
    for name, m in rep.data["models"].items():
        inf = {(r["batch"], r["dtype"], r["compiled"]): r for r in m.get("inference", [])}

        def fps(b, dt, m=inf):
            r = m.get((b, dt, False))
            return f"{r['frames_per_s']:.1f}" if r else "-"

        tb, tf = m.get("train_bf16", {}), m.get("train_fp32", {})
        tr = f"{tb.get('step_ms', float('nan')):.1f}/{tf.get('step_ms', float('nan')):.1f}"
        peak = max([r.get("peak_mib") or 0 for r in m.get("inference", [])] + [0])
        big = max([b for b, _, _ in inf] or [1])
        print(f"{name:<14}{m.get('parameters', 0):>12,}{m.get('image_size', 0):>5}{tr:>24}"
              f"{fps(1, 'fp32'):>12}{fps(1, 'bf16'):>12}{fps(big, 'bf16'):>13}{peak:>10.0f}"
              + ("  ERROR" if "error" in m else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (< 4 min)")
    p.add_argument("--tiny", action="store_true",
                   help="tiny configs and sizes (CPU smoke mode for CI)")
    p.add_argument("--models", default=None, help="comma list (default: every registered)")
    p.add_argument("--skip-core", action="store_true")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--out", default=None, help="JSON path")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    mode = "tiny" if a.tiny else ("quick" if a.quick else "full")
    out_path = Path(a.out) if a.out else (Path(os.environ["OUT"]) / "gpu_check.json"
                                         if os.environ.get("OUT") else Path("gpu_check.json"))

    from facegeo_models.common.registry import list_models

    rep = Report()
    rep.data["meta"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine()),
        "device_type": device.type, "mode": mode, "torch": torch.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None
                                                        else sys.argv[1:])]),
    }
    t0 = time.perf_counter()
    if not a.skip_core:
        print(f"core ({mode}) on {device} ...", flush=True)
        check_core(rep, device, mode)
        check_render(rep, device, mode)
    if not a.skip_models:
        names = a.models.split(",") if a.models else [
            n for n in list_models() if n != "geometric" and not n.startswith("_")]
        for name in names:
            print(f"model {name} ...", flush=True)
            with rep.guard("models", name):
                check_model(rep, name, device, mode,
                            compile_=not a.no_compile and device.type == "cuda")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    rep.data["meta"]["seconds"] = time.perf_counter() - t0
    rep.data["failures"] = rep.failures
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(json.dumps(rep.data, indent=1, default=str))
    tmp.replace(out_path)
    print_table(rep)
    print(f"\n{len(rep.failures)} failure(s){': ' if rep.failures else ''}"
          + "; ".join(rep.failures))
    print(f"wrote {out_path} ({rep.data['meta']['seconds']:.0f} s)")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
