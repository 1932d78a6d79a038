"""Generic trainer for the reenactment models (config-driven, resumable, DDP-ready).

A model is any ``nn.Module`` built by the registry whose ``forward(batch)`` returns a dict
with ``"prediction"``. What a training step computes belongs to the model's
:class:`~facegeo_models.common.task.TrainingTask` (``model.training_task(config)``; the
default task when the model has no such method): its critics (discriminators,
classifiers, each with an optimizer and a loss), its target, its weighted terms (through
the :class:`~facegeo_models.common.losses.LossComposer`), pixel sub-sampling. The trainer
owns the rest: phases, optimizers and LR schedules of every network, AMP, EMA of the
generator, gradient clipping, DDP, validation, sample grids, logs and checkpoints.

See docs/training.md for the config format. Summary::

    model: {name: fsrt, params: {...}}
    data: {root: ..., image_size: 256, batch_size: 16, num_workers: 2, ...}
    perceptual: vgg19 | face | none | {type: ..., ...}
    discriminator: {scales: [1], gan_loss: lsgan|hinge|wgan-gp, gp_weight: 10, ...,
                    optimizer: {...}}
    train: {seed, optimizer, scheduler, amp, grad_clip, ema, log_every, val_every,
            sample_every, ckpt_every, keep_last}
    phases: [{name: mse, steps: 1000, losses: {mse: 1}, pixels: 4096}, ...]
    validation: {metrics: [l1, psnr], num_batches: 1, batch_size: 4}

Exact resume: the checkpoint holds the weights of the model, the EMA and every critic,
the state of every optimizer and scheduler, the step and the torch / numpy / python RNG
states; batches come from :class:`~facegeo_models.common.sampling.StepBatchSampler`, a
pure function of (seed, step). Validation and sample grids run under a forked RNG, so they
do not change the training stream either.

Multi-process: run under ``torchrun``; the trainer initializes ``torch.distributed``
(NCCL on GPU, gloo on CPU), wraps the model and every critic in DistributedDataParallel,
splits the global batch over the ranks and lets rank 0 log, validate and write
checkpoints.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import importlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from facegeo.assets import atomic_write

from . import checkpoint as ckpt
from .config import load_config, merge_overrides
from .registry import build_model
from .sampling import StepBatchSampler
from .task import Critic, TrainingTask, first_source, unwrap

__all__ = [
    "Trainer",
    "register_metric",
    "VALIDATION_METRICS",
    "build_optimizer",
    "build_scheduler",
    "get_rng_state",
    "set_rng_state",
    "load_config",
    "merge_overrides",
    "make_grid",
]


# ----------------------------------------------------------------------------- metrics
def _metric_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().flatten(1).mean(1)


def _metric_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from facegeo.metrics import psnr

    return psnr(pred, target, max_db=100)  # MSE clamped at 1e-10: at most 100 dB


def _metric_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from facegeo.metrics import ssim

    return ssim(pred, target)


def _metric_ms_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from facegeo.metrics import ms_ssim

    return ms_ssim(pred, target)


# l1 / psnr: per image; psnr with the MSE clamped at 1e-10 (<= 100 dB, never inf);
# ssim / ms_ssim: the evaluation harness (facegeo.metrics).
VALIDATION_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": _metric_l1,
    "psnr": _metric_psnr,
    "ssim": _metric_ssim,
    "ms_ssim": _metric_ms_ssim,
}


def register_metric(name: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                    ) -> None:
    """Add a validation metric ``fn(pred (B,3,H,W), target (B,3,H,W)) -> (B,) or scalar``.
    Configs may also name any importable function as ``"package.module:function"``."""
    if not callable(fn):
        raise TypeError("metric must be callable")
    VALIDATION_METRICS[name] = fn


def _resolve_metric(name: str):
    if name in VALIDATION_METRICS:
        return VALIDATION_METRICS[name]
    if ":" in name:
        mod, fn = name.split(":", 1)
        return getattr(importlib.import_module(mod), fn)
    raise ValueError(f"unknown validation metric {name!r}; known: {sorted(VALIDATION_METRICS)}"
                     " (or use 'module:function')")


# ------------------------------------------------------------------------ optimization
def build_optimizer(params, cfg: dict | None) -> torch.optim.Optimizer:
    """Optimizer from ``{type: adam|adamw|sgd|rmsprop, lr, betas, weight_decay, momentum,
    eps, alpha}``."""
    cfg = dict(cfg or {})
    kind = cfg.pop("type", "adam").lower()
    lr = float(cfg.pop("lr", 2e-4))
    if kind in ("adam", "adamw"):
        betas = tuple(cfg.pop("betas", (0.9, 0.999)))
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=betas, **{k: float(v) for k, v in cfg.items()})
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, **{k: float(v) for k, v in cfg.items()})
    if kind == "rmsprop":   # torch defaults: alpha 0.99, eps 1e-8, momentum 0
        return torch.optim.RMSprop(params, lr=lr, **{k: float(v) for k, v in cfg.items()})
    raise ValueError(f"unknown optimizer {kind!r}; expected adam, adamw, sgd or rmsprop")


def build_scheduler(opt: torch.optim.Optimizer, cfg: dict | None, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR schedule: ``{type: constant|multistep|cosine|linear, warmup: steps,
    milestones: [steps], gamma, min_factor}``."""
    cfg = dict(cfg or {})
    kind = cfg.get("type", "constant")
    warmup = int(cfg.get("warmup", 0))
    gamma = float(cfg.get("gamma", 0.1))
    milestones = sorted(int(m) for m in cfg.get("milestones", []))
    min_factor = float(cfg.get("min_factor", 0.0))
    if kind not in ("constant", "multistep", "cosine", "linear"):
        raise ValueError(f"unknown scheduler {kind!r}")

    def factor(step: int) -> float:
        f = 1.0
        if warmup and step < warmup:
            f = (step + 1) / warmup
        if kind == "multistep":
            f *= gamma ** sum(step >= m for m in milestones)
        elif kind in ("cosine", "linear"):
            t = min(1.0, max(0.0, (step - warmup) / max(1, total_steps - warmup)))
            g = 0.5 * (1 + math.cos(math.pi * t)) if kind == "cosine" else 1 - t
            f *= min_factor + (1 - min_factor) * g
        return f

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# -------------------------------------------------------------------------------- RNG
def get_rng_state() -> dict:
    """torch (CPU + CUDA), numpy and python RNG states as a weights_only-safe dict."""
    np_state = np.random.get_state()  # noqa: NPY002
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32),  # noqa: NPY002
                         n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@contextlib.contextmanager
def _forked_rng():
    st = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(st)


# ---------------------------------------------------------------------------- helpers
def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _png_bytes(image: torch.Tensor) -> bytes:
    import cv2

    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr.permute(1, 2, 0).cpu().numpy()[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def make_grid(columns: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Tile image batches: ``columns`` is a list of (B, 3, H, W); returns (3, B*(H+pad),
    len(columns)*(W+pad)) with one row per sample."""
    b, _, h, w = columns[0].shape
    grid = torch.ones(3, b * (h + pad), len(columns) * (w + pad))
    for j, col in enumerate(columns):
        col = col.detach().float().cpu()
        if col.shape[1] == 1:
            col = col.expand(-1, 3, -1, -1)
        if col.shape[-2:] != (h, w):
            col = F.interpolate(col, size=(h, w), mode="bilinear", align_corners=False)
        for i in range(b):
            grid[:, i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = col[i]
    return grid


# ---------------------------------------------------------------------------- trainer
class Trainer:
    """Config-driven trainer. See the module docstring and docs/training.md.

    Args:
        config: the full config dict (see docs/training.md).
        out_dir: run folder (checkpoints, log.jsonl, samples); default ``train.out_dir``.
        train_dataset / val_dataset: datasets accepting ``ds[(index, seed)]`` and returning
            dicts of tensors; built from ``config["data"]`` with
            :func:`facegeo_models.common.data.build_dataset` when omitted.
        device: default ``cuda:LOCAL_RANK`` when available, else CPU.
        resume: ``"auto"`` (resume from ``out_dir/latest.json`` if present), ``None``/
            ``False`` (start fresh) or a checkpoint folder.
    """

    def __init__(self, config: dict, *, out_dir: str | os.PathLike | None = None,
                 train_dataset=None, val_dataset=None, device: str | None = None,
                 resume: str | os.PathLike | bool | None = "auto"):
        self.config = copy.deepcopy(config)
        cfg = self.config
        tcfg = cfg.setdefault("train", {})
        self.phases = cfg.get("phases") or [{"name": "train", "steps": int(tcfg.get(
            "steps", 1000)), "losses": {"l1": 1.0}}]
        for ph in self.phases:
            if int(ph.get("steps", 0)) <= 0:
                raise ValueError(f"phase {ph.get('name')!r} needs steps > 0")
            if not ph.get("losses"):
                raise ValueError(f"phase {ph.get('name')!r} needs a 'losses' mapping")
        self.total_steps = sum(int(p["steps"]) for p in self.phases)
        self.out_dir = Path(out_dir or tcfg.get("out_dir") or "runs/default")

        # --- distributed
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0

        # --- model, task and critics (same init on every rank: seed before building)
        self.seed = int(tcfg.get("seed", 0))
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2 ** 32)  # noqa: NPY002
        random.seed(self.seed)
        self.model = build_model(cfg["model"]).to(self.device)
        make_task = getattr(self.model, "training_task", None)
        self.task: TrainingTask = make_task(cfg) if callable(make_task) else TrainingTask(cfg)
        uses = {k for ph in self.phases for k, w in ph["losses"].items() if float(w) != 0}
        self.critics: dict[str, Critic] = self.task.build(self.model, uses, self.device)
        for c in self.critics.values():
            c.network.to(self.device)

        self.ema = None
        ema_cfg = tcfg.get("ema")
        self.ema_decay = float(ema_cfg.get("decay", 0.999)) if isinstance(ema_cfg, dict) else (
            float(ema_cfg) if ema_cfg else None)
        if self.ema_decay:
            self.ema = copy.deepcopy(self.model).eval()
            for p in self.ema.parameters():
                p.requires_grad_(False)

        # one optimizer and one LR schedule per network ("model" = the generator)
        self.optimizers = {"model": build_optimizer(
            [p for p in self.model.parameters() if p.requires_grad], tcfg.get("optimizer"))}
        for name, c in self.critics.items():
            self.optimizers[name] = build_optimizer(c.network.parameters(),
                                                    c.optimizer or tcfg.get("optimizer"))
        self.schedulers = {name: build_scheduler(opt, tcfg.get("scheduler"), self.total_steps)
                           for name, opt in self.optimizers.items()}
        # per-rank training randomness (model init above is identical on every rank);
        # rank 0 of a multi-process run uses the same stream as a single process
        rank_seed = (self.seed + 7919 * self.rank) % 2 ** 32
        torch.manual_seed(rank_seed)
        np.random.seed(rank_seed)  # noqa: NPY002
        random.seed(rank_seed)

        amp = str(tcfg.get("amp", "auto")).lower()
        if amp not in ("auto", "bf16", "none", "false", "off"):
            raise ValueError(f"amp must be auto, bf16 or none, got {amp!r}")
        self.amp = (amp == "bf16" or (amp == "auto" and self.device.type == "cuda"))
        self.grad_clip = tcfg.get("grad_clip")

        # the networks as the steps call them (DDP-wrapped when multi-process)
        self.nets: dict[str, nn.Module] = {"model": self.model,
                                           **{n: c.network for n, c in self.critics.items()}}
        if self.world > 1:
            ddp_kw = {"find_unused_parameters": bool(tcfg.get("ddp_find_unused", False))}
            if self.device.type == "cuda":
                ddp_kw["device_ids"] = [self.device.index]
            self.nets = {n: nn.parallel.DistributedDataParallel(m, **ddp_kw)
                         for n, m in self.nets.items()}
            self.model = self.nets["model"]

        # --- data
        if train_dataset is None:
            from .data import build_dataset

            train_dataset = build_dataset(cfg["data"], "train")
            if val_dataset is None and cfg.get("validation", {}).get("enabled", True):
                try:
                    val_dataset = build_dataset(cfg["data"], "test")
                except FileNotFoundError:
                    val_dataset = None
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        dl = cfg.get("data", {})
        self.batch_size = int(dl.get("batch_size", 8))
        self.num_workers = int(dl.get("num_workers", 2))

        self.step = 0
        self.metrics: dict[str, float] = {}
        self.log_path = self.out_dir / "log.jsonl"
        self._tb = None
        if resume:
            path = ckpt.latest_checkpoint(self.out_dir) if resume == "auto" else Path(resume)
            if path is not None:
                self.load(path)

    # ------------------------------------------------------------------ properties
    @property
    def raw_model(self) -> nn.Module:
        """The model without its DDP wrapper."""
        return unwrap(self.model)

    @property
    def perceptual(self) -> nn.Module | None:
        """The task's perceptual loss (None for ``perceptual: none``)."""
        return self.task.perceptual

    def phase_at(self, step: int) -> dict:
        """The phase config active at ``step`` (0-based)."""
        s = 0
        for ph in self.phases:
            s += int(ph["steps"])
            if step < s:
                return ph
        return self.phases[-1]

    # ------------------------------------------------------------------ data
    def _loader(self, start_step: int) -> DataLoader:
        sampler = StepBatchSampler(len(self.train_dataset), self.batch_size, seed=self.seed,
                                   rank=self.rank, world=self.world, start_step=start_step)
        kw: dict[str, Any] = {}
        if self.num_workers > 0:
            kw = {"persistent_workers": True, "prefetch_factor": 4}
        return DataLoader(self.train_dataset, batch_sampler=sampler,
                          num_workers=self.num_workers,
                          pin_memory=self.device.type == "cuda", **kw)

    def _val_batches(self):
        vcfg = self.config.get("validation") or {}
        if self.val_dataset is None:
            return
        bs = int(vcfg.get("batch_size", min(4, len(self.val_dataset))))
        n = int(vcfg.get("num_batches", 1))
        sampler = StepBatchSampler(len(self.val_dataset), bs, seed=int(vcfg.get("seed", 1)),
                                   shuffle=bool(vcfg.get("shuffle", True)))
        for i in range(n):
            items = sampler.batch_at(i)
            yield torch.utils.data.default_collate([self.val_dataset[it] for it in items])

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _clip(self, params) -> float:
        params = [p for p in params if p.grad is not None]
        if self.grad_clip:
            return float(torch.nn.utils.clip_grad_norm_(params, float(self.grad_clip)))
        return float(torch.linalg.vector_norm(torch.stack(
            [p.grad.detach().float().norm() for p in params]))) if params else 0.0

    def active_critics(self, phase: dict) -> list[str]:
        """The critics trained in ``phase``: those with a term it weights (non-zero)."""
        w = phase["losses"]
        return [n for n, c in self.critics.items() if any(float(w.get(t, 0)) for t in c.terms)]

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimization step: the generator (the task's weighted terms), then each
        critic the phase trains, in declaration order. Returns the logged scalars."""
        phase = self.phase_at(self.step)
        batch = _to_device(batch, self.device)
        for net in self.nets.values():
            net.train()
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        with self._autocast():
            out, total, losses = self.task.generator_losses(self.nets, batch, phase)
        total.backward()
        gnorm = self._clip(self.model.parameters())
        opt.step()
        self.schedulers["model"].step()
        if self.ema is not None:
            self._update_ema()
        logs = {f"loss/{k}": float(v.detach()) for k, v in losses.items()}
        logs["loss/total"] = float(total.detach())
        logs["grad_norm/g"] = gnorm
        logs["lr"] = opt.param_groups[0]["lr"]
        for name in self.active_critics(phase):
            logs.update(self._critic_step(name, batch, out))
        self.step += 1
        return logs

    def _critic_step(self, name: str, batch: dict, out: dict) -> dict[str, float]:
        opt, sched = self.optimizers[name], self.schedulers[name]
        opt.zero_grad(set_to_none=True)
        with self._autocast():
            loss, terms = self.task.critic_loss(name, self.nets, batch, out)
        loss.backward()
        logs = {f"loss/{k}": float(v) for k, v in terms.items()}
        critic = self.critics[name]
        logs[f"grad_norm/{critic.log_name or name}"] = self._clip(critic.network.parameters())
        # a critic's schedule follows the global step (it only trains in some phases)
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base * sched.lr_lambdas[0](self.step)
        opt.step()
        return logs

    @torch.no_grad()
    def _update_ema(self) -> None:
        src = self.raw_model
        for pe, p in zip(self.ema.parameters(), src.parameters()):
            pe.lerp_(p.detach(), 1.0 - self.ema_decay)
        for be, b in zip(self.ema.buffers(), src.buffers()):
            be.copy_(b)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Metrics (``validation.metrics``, default l1 + psnr) on the held-out batches,
        using the EMA model when there is one. Does not disturb the training RNG."""
        names = (self.config.get("validation") or {}).get("metrics", ["l1", "psnr"])
        fns = {n: _resolve_metric(n) for n in names}
        model = self.ema if self.ema is not None else self.raw_model
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {n: 0.0 for n in names}
        count = 0
        with _forked_rng():
            for batch in self._val_batches():
                batch = _to_device(batch, self.device)
                with self._autocast():
                    pred = model(batch)["prediction"].float()
                tgt = self.task.target(batch).float()
                for n, fn in fns.items():
                    v = torch.as_tensor(fn(pred, tgt), dtype=torch.float64)
                    sums[n] += float(v.sum()) if v.dim() else float(v) * pred.shape[0]
                count += pred.shape[0]
        model.train(was_training)
        if count == 0:
            return {}
        return {f"val/{n}": s / count for n, s in sums.items()}

    @torch.no_grad()
    def save_samples(self, batch: dict | None = None) -> Path | None:
        """Write ``samples/step_XXXXXXXX.png`` (columns: source, target (the driving
        frame), prediction [, deformed]) from the first validation batch (or ``batch``)."""
        if batch is None:
            batch = next(iter(self._val_batches()), None)
        if batch is None:
            return None
        batch = _to_device(batch, self.device)
        model = self.ema if self.ema is not None else self.raw_model
        was_training = model.training
        model.eval()
        with _forked_rng(), self._autocast():
            out = model(batch)
        model.train(was_training)
        cols = [first_source(batch), self.task.target(batch), out["prediction"]]
        if "deformed" in out:
            cols.append(out["deformed"])
        cols = [c[:4] for c in cols]
        (self.out_dir / "samples").mkdir(parents=True, exist_ok=True)
        data = _png_bytes(make_grid(cols))
        path = self.out_dir / "samples" / f"step_{self.step:08d}.png"
        return atomic_write(path, lambda t: t.write_bytes(data))

    # ------------------------------------------------------------------ logging
    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is None and self.config["train"].get("tensorboard", True):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, record["step"])

    # ------------------------------------------------------------------ checkpoints
    def data_summary(self) -> dict:
        """The training dataset's ``summary()`` (computed once), for the model card."""
        if getattr(self, "_data_summary", None) is None:
            fn = getattr(self.train_dataset, "summary", None)
            self._data_summary = fn() if callable(fn) else {"items": len(self.train_dataset)}
        return self._data_summary

    def train_state(self, rng_per_rank: list | None = None) -> dict:
        """The resumable state besides the weights: step, every optimizer and scheduler
        (by network name), RNG states, world size, seed."""
        st = {
            "step": self.step,
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "rng": get_rng_state(),
            "world": self.world,
            "seed": self.seed,
        }
        if rng_per_rank is not None:
            st["rng_per_rank"] = rng_per_rank
        return st

    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write a checkpoint (rank 0 only) to ``path`` or ``out_dir/checkpoints/step_N``:
        ``model``, ``ema`` and every critic as ``<name>.safetensors``, the training state and
        the model card; updates ``latest.json`` and prunes old ones (``train.keep_last``,
        default 3)."""
        path = Path(path) if path else self.out_dir / "checkpoints" / f"step_{self.step:08d}"
        rng_all = None
        if self.world > 1:  # every rank's RNG state goes into the checkpoint
            rng_all = [None] * self.world
            dist.all_gather_object(rng_all, get_rng_state())
        if self.is_main:
            modules = {"model": self.raw_model}
            if self.ema is not None:
                modules["ema"] = self.ema
            modules.update({n: c.network for n, c in self.critics.items()})
            card = ckpt.make_model_card(self.config["model"], config=self.config,
                                        data=self.data_summary(), metrics=self.metrics,
                                        step=self.step, phase=self.phase_at(
                                            max(0, self.step - 1)).get("name"))
            ckpt.save_checkpoint(path, modules, card, self.train_state(rng_all),
                                 run_dir=self.out_dir)
            keep = int(self.config["train"].get("keep_last", 3))
            olds = sorted((self.out_dir / "checkpoints").glob("step_*"))
            for old in olds[:-keep] if keep > 0 else []:
                if old.resolve() != path.resolve():
                    import shutil

                    shutil.rmtree(old, ignore_errors=True)
        if self.world > 1:
            dist.barrier()
        return path if self.is_main else None

    def load(self, path: str | os.PathLike) -> None:
        """Resume from a checkpoint folder (weights of the model, EMA and critics,
        optimizers, schedulers, step, RNG). Checkpoints of the earlier single-discriminator
        trainer (``opt_g`` / ``opt_d`` states) load too."""
        path = Path(path)
        ckpt.load_weights(path / "model.safetensors", self.raw_model)
        if self.ema is not None:
            if (path / "ema.safetensors").is_file():
                ckpt.load_weights(path / "ema.safetensors", self.ema)
            else:  # checkpoint from a run without EMA: start the average at the weights
                self.ema.load_state_dict(self.raw_model.state_dict())
        for name, c in self.critics.items():
            if (path / f"{name}.safetensors").is_file():
                ckpt.load_weights(path / f"{name}.safetensors", c.network)
        st = ckpt.load_training_state(path)
        self.step = int(st["step"])
        opts, scheds = st.get("optimizers"), st.get("schedulers")
        if opts is None:  # legacy layout
            opts = {"model": st["opt_g"], "discriminator": st.get("opt_d")}
            scheds = {"model": st["sched_g"], "discriminator": st.get("sched_d")}
        for name, opt in self.optimizers.items():
            if opts.get(name) is not None:
                opt.load_state_dict(opts[name])
                self.schedulers[name].load_state_dict(scheds[name])
        if int(st.get("world", 1)) == self.world:
            per_rank = st.get("rng_per_rank")
            set_rng_state(per_rank[self.rank] if per_rank else st["rng"])
        self.metrics = dict(ckpt.read_model_card(path).get("metrics") or {})
        if self.is_main and self.log_path.is_file():
            keep = [ln for ln in self.log_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= self.step]
            text = "".join(ln + "\n" for ln in keep)
            atomic_write(self.log_path, lambda t: t.write_text(text))

    # ------------------------------------------------------------------ main loop
    def fit(self, until_step: int | None = None) -> list[dict]:
        """Train from the current step to ``until_step`` (default: the end of the last
        phase). Returns the per-step log records of this call (the last
        ``train.keep_records``, default 10000, to bound memory on long runs)."""
        end = self.total_steps if until_step is None else min(until_step, self.total_steps)
        tcfg = self.config["train"]
        every = {k: int(tcfg.get(f"{k}_every", 0) or 0)
                 for k in ("log", "val", "sample", "ckpt")}
        records: collections.deque = collections.deque(
            maxlen=int(tcfg.get("keep_records", 10000)))
        if self.step >= end:
            return list(records)
        loader = self._loader(self.step)
        it = iter(loader)
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=self.step, disable=not self.is_main or not tcfg.get(
            "progress", True), desc="train", dynamic_ncols=True)
        t0 = time.time()
        try:
            while self.step < end:
                batch = next(it)
                logs = self.train_step(batch)
                rec = {"step": self.step, "phase": self.phase_at(self.step - 1).get("name"),
                       **logs, "time": round(time.time() - t0, 3)}
                records.append(rec)
                if every["log"] == 0 or self.step % every["log"] == 0 or self.step == end:
                    self._log(rec)
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss/total']:.4f}")
                if self.is_main and every["val"] and self.step % every["val"] == 0:
                    self.metrics = self.validate()
                    if self.metrics:
                        self._log({"step": self.step, **self.metrics})
                if self.is_main and every["sample"] and self.step % every["sample"] == 0:
                    self.save_samples()
                if (every["ckpt"] and self.step % every["ckpt"] == 0) or (
                        self.step == self.total_steps):
                    self.save()
        finally:
            bar.close()
            del it
        return list(records)
