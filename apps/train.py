"""Train a reenactment model, or preprocess videos into a training set.

Usage::

    # train (single process)
    python apps/train.py --config models/<name>/configs/<cfg>.yaml [--out runs/x]
                         [--resume auto|none|<checkpoint dir>] [--set train.seed=1 ...]
    # multi-GPU / multi-node: the same command under torchrun
    torchrun --nproc_per_node 8 apps/train.py --config ...

    # inference weights of a checkpoint (EMA, fp16, <= 16 MiB) + model card, e.g. shipped
    python apps/train.py export runs/x/ckpt-003000 --out data/<name> [--card extra.json]

    # data-loading throughput of a config's dataset for several worker counts
    python apps/train.py bench-data --config ... [--workers 0 1 2] [--batches 20]

    # preprocess face videos into root/{train,test}/<video>/: 256 crops, landmarks.npy,
    # boxes.npy, optional fits.npz, conditioning.json (format version 1)
    python apps/train.py preprocess VIDEO_OR_FOLDER ... --out ROOT [--split auto]
                         [--size 256] [--detector dlib] [--max-frames N]
                         [--fit-3dmm ict_facekit] [--manifest corpus/manifest.json]
                         [--split manifest] [--shard I/N] [--no-resume]
    # resumable (finished clips are skipped), one tqdm bar; N shard jobs split the clips
    # by a hash of their names; ROOT/summary.json: identities, clips, frames, resolutions

    # the s2d landmark refiner (DSNT heat-maps; stage sbr adds supervision by registration)
    python apps/train.py refiner --data ROOT --out DIR [--stage dsnt|sbr] [--init W]
                         [--steps 1500] [--batch 16] [--max-frames N]

Bad input (a missing config, a bad ``--set``, an unavailable ``--device``...) prints one
``error: ...`` line and exits with status 2. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "build_preprocess_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facegeo-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML training config")
    p.add_argument("--out", default=None, help="run folder (default: train.out_dir or "
                   "runs/<config name>)")
    p.add_argument("--resume", default="auto",
                   help="'auto' (resume from <out>/latest.json if present), 'none', or a "
                   "checkpoint folder")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config entry (value in YAML)")
    p.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: auto)")
    p.add_argument("--until-step", type=int, default=None,
                   help="stop after this global step (a checkpoint is written)")
    return p


def build_preprocess_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facegeo-train preprocess",
        description="Track, crop (FOMM-style) and cache the conditioning of each video: "
        "frames, landmarks, crop boxes and optionally a 3DMM fit, described by a versioned "
        "conditioning.json (docs/training.md, 'Preprocessed conditioning format').")
    p.add_argument("inputs", nargs="+", help="video files or folders of videos")
    p.add_argument("--out", required=True, help="dataset root to write")
    p.add_argument("--split", default="auto", choices=["auto", "train", "test", "manifest"],
                   help="auto: identity-disjoint (by --manifest identities when given); "
                   "manifest: the manifest's own train/val split (val -> test)")
    p.add_argument("--manifest", default=None,
                   help="corpus manifest.json: identity labels (and the split for "
                   "--split manifest)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process only shard I of N (clips assigned by a hash of their name: "
                   "N jobs cover every clip once, without coordination)")
    p.add_argument("--no-resume", action="store_true",
                   help="redo clips whose folder is already complete")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--detector", default="dlib")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--step", type=int, default=1, help="keep every step-th frame")
    p.add_argument("--box-mode", default="fixed", choices=["fixed", "smooth", "none"])
    p.add_argument("--fit-3dmm", default=None, metavar="MODEL",
                   help="also cache a 3DMM fit per video (fits.npz: one identity per "
                   "clip, per-frame pose and expression), e.g. ict_facekit; off by default")
    return p


def _run_main(body) -> int:
    from facegeo_apps._cli import run_main

    return run_main(body)


def _device(name: str | None) -> str | None:
    """``--device`` checked like the other apps; a bare ``cuda`` is this process's GPU,
    ``cuda:<LOCAL_RANK>`` (the trainer needs an index)."""
    import os

    from facegeo_apps._cli import pick_device

    if name is None:
        return None
    dev = pick_device(name)
    if dev.type == "cuda" and dev.index is None:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return str(dev)


def preprocess_main(argv: list[str]) -> int:
    a = build_preprocess_parser().parse_args(argv)
    return _run_main(lambda: _preprocess(a))


def _preprocess(a: argparse.Namespace) -> int:
    import time

    from facegeo_models.common.data import parse_shard, preprocess_folder

    t0 = time.perf_counter()
    metas = preprocess_folder(a.inputs, a.out, split=a.split, test_fraction=a.test_fraction,
                              manifest=a.manifest, shard=parse_shard(a.shard),
                              resume=not a.no_resume, size=a.size, detector=a.detector,
                              max_frames=a.max_frames, step=a.step, box_mode=a.box_mode,
                              fit_3dmm=a.fit_3dmm)
    for m in metas:
        print(json.dumps({k: m.get(k) for k in ("source", "split", "status", "frames",
                                                "lost_frames", "error") if k in m}))
    done = [m for m in metas if m["status"] == "done"]
    failed = [m for m in metas if m["status"] == "failed"]
    hours = (time.perf_counter() - t0) / 3600
    summary = Path(a.out) / "summary.json"
    print(f"{len(done)} clips preprocessed, {len(metas) - len(done) - len(failed)} already "
          f"done, {len(failed)} failed"
          + (f"; {len(done) / hours:.1f} clips/hour" if done and hours > 0 else "")
          + f"\ndataset summary: {json.dumps(json.loads(summary.read_text()))}"
          + f"\nwrote {Path(a.out)} (summary in {summary})")
    return 1 if failed and not done and len(failed) == len(metas) else 0


def bench_data_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="facegeo-train bench-data")
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=20)
    a = p.parse_args(argv)
    return _run_main(lambda: _bench_data(a))


def _bench_data(a: argparse.Namespace) -> int:
    from facegeo_models.common.data import benchmark_loader, build_dataset
    from facegeo_models.common.trainer import load_config, merge_overrides

    cfg = merge_overrides(load_config(a.config), a.overrides)
    ds = build_dataset(cfg["data"], "train")
    for w in a.workers:
        r = benchmark_loader(ds, int(cfg["data"].get("batch_size", 8)), w, a.batches)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
    return 0


def export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="facegeo-train export",
        description="Write a checkpoint's inference weights (EMA, fp16 safetensors, at most "
        "16 MiB) with its model card into a folder such as data/<model>/, the default "
        "checkpoint of apps/reenact.py --model <model>.")
    p.add_argument("checkpoint", help="a training checkpoint folder (model_card.json)")
    p.add_argument("--out", required=True, help="destination folder (e.g. data/s2d)")
    p.add_argument("--card", default=None, metavar="JSON",
                   help="a JSON file whose keys are added to the model card (training and "
                   "evaluation summaries)")
    p.add_argument("--fp32", action="store_true", help="keep float32 (no 16 MiB limit)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    a = p.parse_args(argv)
    return _run_main(lambda: _export(a))


def _export(a: argparse.Namespace) -> int:
    import torch

    from facegeo_models.common.checkpoint import export_inference

    extra = {}
    if a.card:
        extra = json.loads(Path(a.card).read_text())
        if not isinstance(extra, dict):
            raise ValueError(f"{a.card}: the card extras must be a JSON object")
    out = export_inference(a.checkpoint, a.out, dtype=torch.float32 if a.fp32 else
                           torch.float16, overwrite=a.force,
                           max_bytes=None if a.fp32 else 16 * 2 ** 20, **extra)
    print(f"wrote {out} (model.safetensors + model_card.json)")
    return 0


def build_refiner_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facegeo-train refiner",
        description="Train the s2d landmark refiner (models/s2d/refiner.py) on a "
        "preprocessed set: stage 'dsnt' regresses the stored tracker landmarks, stage 'sbr' "
        "fine-tunes (--init) with the registration loss on consecutive frames.")
    p.add_argument("--data", required=True, help="preprocessed root (ROOT/train/<clip>/)")
    p.add_argument("--out", required=True, help="output folder (refiner.safetensors, "
                   "log.jsonl, card.json)")
    p.add_argument("--stage", choices=("dsnt", "sbr"), default="dsnt")
    p.add_argument("--init", default=None, help="refiner.safetensors to start from")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16, help="frames per step (sbr: pairs x 2)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--sbr-weight", type=float, default=1.0)
    p.add_argument("--max-frames", type=int, default=None, help="frames per clip to load")
    p.add_argument("--seed", type=int, default=0)
    return p


def refiner_main(argv: list[str]) -> int:
    a = build_refiner_parser().parse_args(argv)

    def body() -> int:
        from facegeo_models.s2d.refiner import RefinerData, train_refiner

        if a.steps < 1 or a.batch < 2:
            raise ValueError(f"--steps must be >= 1 and --batch >= 2, got {a.steps}, "
                             f"{a.batch}")
        if a.stage == "sbr" and not a.init:
            raise ValueError("--stage sbr fine-tunes a trained refiner: give --init")
        data = RefinerData(a.data, "train", max_frames=a.max_frames)
        train_refiner(data, a.out, stage=a.stage, steps=a.steps, batch_size=a.batch, lr=a.lr,
                      sbr_weight=a.sbr_weight, init=a.init, seed=a.seed)
        print(f"wrote {Path(a.out) / 'refiner.safetensors'} ({len(data)} frames, "
              f"{data.num_clips} clips)")
        return 0

    return _run_main(body)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "preprocess":
        return preprocess_main(argv[1:])
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    if argv and argv[0] == "bench-data":
        return bench_data_main(argv[1:])
    if argv and argv[0] == "refiner":
        return refiner_main(argv[1:])
    a = build_parser().parse_args(argv)
    return _run_main(lambda: _train(a))


def _train(a: argparse.Namespace) -> int:
    from facegeo_models.common.trainer import Trainer, load_config, merge_overrides

    device = _device(a.device)
    cfg = merge_overrides(load_config(a.config), a.overrides)
    out = a.out or cfg.get("train", {}).get("out_dir") or str(Path("runs") /
                                                               Path(a.config).stem)
    resume = None if a.resume in ("none", "no", "false") else a.resume
    trainer = Trainer(cfg, out_dir=out, device=device, resume=resume)
    trainer.fit(until_step=a.until_step)
    if a.until_step is not None and trainer.step < trainer.total_steps:
        trainer.save()
    if trainer.is_main:
        print(json.dumps({"step": trainer.step, "out_dir": str(trainer.out_dir),
                          **trainer.metrics}))
    if trainer.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
