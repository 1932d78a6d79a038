"""Shared helpers of the benchmark scripts (imported as ``_timing``: a script's own folder
is on ``sys.path``): wall-clock timing of several functions on a shared machine, the
common command-line options of the model benchmarks, parameter counts."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["sync", "time_fns", "model_bench_parser", "apply_threads", "param_millions"]


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fns(fns: dict[str, Callable[[], object]], repeats: int, device="cpu", *,
             reduce: str = "min", warmup: int = 1, no_grad: bool = True) -> dict[str, float]:
    """Seconds per call of each function.

    The functions are interleaved in every repeat, so that load changes on a shared machine
    hit all of them alike; ``warmup`` untimed calls of each first.

    Args:
        fns: name -> function of no arguments.
        repeats: timed calls per function.
        device: synchronised around every call (CUDA).
        reduce: ``"min"`` (best time: the usual figure on a loaded CPU) or ``"median"``.
        no_grad: run under ``torch.no_grad()``.
    Returns:
        name -> seconds.
    """
    if reduce not in ("min", "median"):
        raise ValueError(f"reduce must be min or median, got {reduce!r}")
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad() if no_grad else torch.enable_grad():
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                sync(device)
                t = time.perf_counter()
                fn()
                sync(device)
                times[k].append(time.perf_counter() - t)
    pick = min if reduce == "min" else statistics.median
    return {k: pick(v) for k, v in times.items()}


def model_bench_parser(doc: str, model: str, default_config: str = "paper"
                       ) -> argparse.ArgumentParser:
    """The options every model benchmark takes: --device, --repeats, --threads, --config."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--config", default=default_config,
                    help=f"{model} config name or YAML path")
    return ap


def apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads(args.threads)`` when given (0 keeps torch's default)."""
    if args.threads:
        torch.set_num_threads(args.threads)


def param_millions(module: nn.Module) -> float:
    """Parameters of a module, in millions."""
    return sum(p.numel() for p in module.parameters()) / 1e6
