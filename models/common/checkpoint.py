"""Checkpoint I/O: safetensors weights, a separate training-state file and a model card.

A checkpoint is a folder::

    step_00001000/
        model.safetensors          generator / full model weights (state_dict)
        ema.safetensors            EMA weights (optional)
        discriminator.safetensors  (optional; any other named module likewise)
        training_state.pt          optimizers, schedulers, step, RNG and sampler states
                                   (torch.save of tensors / numbers / strings only)
        model_card.json            model name + config, training-data summary, metrics,
                                   step, file list with sha256

Every file is written atomically, and the folder itself is assembled under a temporary
name and renamed into place, so a crash never leaves a half-written checkpoint. A run
folder's ``latest.json`` names its newest checkpoint.

Loading never unpickles arbitrary objects: weights come from safetensors and the training
state from ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from facegeo.assets import atomic_write, sha256_file

from .registry import build_model

__all__ = [
    "SHIP_MAX_BYTES",
    "export_inference",
    "CARD_NAME",
    "TRAIN_STATE_NAME",
    "state_dict_for_save",
    "save_weights",
    "load_weights",
    "save_checkpoint",
    "read_model_card",
    "load_training_state",
    "load_model",
    "latest_checkpoint",
    "make_model_card",
]

CARD_NAME = "model_card.json"
TRAIN_STATE_NAME = "training_state.pt"
CARD_VERSION = 1


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") and isinstance(module.module,
                                                                      nn.Module) else module


def state_dict_for_save(module: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, non-aliased copy of a module's state dict (DDP wrapper removed)."""
    return {k: v.detach().to("cpu").contiguous().clone()
            for k, v in _unwrap(module).state_dict().items()}


def save_weights(path: str | os.PathLike, module_or_state: nn.Module | dict,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write weights to a ``.safetensors`` file atomically. Returns the path."""
    sd = (state_dict_for_save(module_or_state) if isinstance(module_or_state, nn.Module)
          else {k: v.detach().cpu().contiguous().clone() for k, v in module_or_state.items()})
    return atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata=metadata))


def load_weights(path: str | os.PathLike, module: nn.Module | None = None, *,
                 strict: bool = True, device: str | torch.device = "cpu"):
    """Read a ``.safetensors`` file; with ``module``, load it (strict by default) and return
    the module, else return the state dict. A truncated or damaged file raises a
    ``ValueError`` naming it."""
    from safetensors import SafetensorError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        sd = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: corrupt or truncated weights file (.safetensors) "
                         f"({type(e).__name__}: {e}); replace it with an intact copy") from e
    if module is None:
        return sd
    _unwrap(module).load_state_dict(sd, strict=strict)
    return module


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def make_model_card(model_config: dict, *, config: dict | None = None,
                    data: dict | None = None, metrics: dict | None = None,
                    step: int | None = None, **extra: Any) -> dict:
    """A model card dict: ``model`` ({"name", "params"}), full training ``config``,
    ``data`` summary (e.g. {"root", "videos", "frames", "identities"}), ``metrics``,
    ``step`` and anything in ``extra``."""
    if "name" not in model_config:
        raise ValueError("model_config needs a 'name'")
    card = {
        "format": "facegeo-checkpoint",
        "version": CARD_VERSION,
        "model": {"name": model_config["name"],
                  "params": dict(model_config.get("params") or {})},
        "config": config or {},
        "data": data or {},
        "metrics": metrics or {},
        "step": step,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card.update(extra)
    return card


def save_checkpoint(directory: str | os.PathLike, modules: dict[str, nn.Module | dict],
                    card: dict, train_state: dict | None = None, *,
                    run_dir: str | os.PathLike | None = None) -> Path:
    """Write a checkpoint folder atomically.

    Args:
        directory: destination folder (replaced if it exists).
        modules: ``{"model": generator, "ema": ..., "discriminator": ...}``; each becomes
            ``<name>.safetensors``. ``"model"`` is required.
        card: the model card (see :func:`make_model_card`); a ``files`` entry with sha256
            digests is added.
        train_state: optional dict of tensors / numbers / strings / lists / dicts, saved as
            ``training_state.pt``.
        run_dir: if given, ``run_dir/latest.json`` is updated to point at ``directory``.
    """
    if "model" not in modules:
        raise ValueError("modules must contain 'model'")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".part",
                                dir=directory.parent))
    try:
        files = {}
        for name, mod in modules.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"bad module name {name!r}")
            p = save_weights(tmp / f"{name}.safetensors", mod,
                             metadata={"format": "pt", "module": name})
            files[p.name] = sha256_file(p)
        if train_state is not None:
            p = atomic_write(tmp / TRAIN_STATE_NAME, lambda t: torch.save(train_state, t))
            files[p.name] = sha256_file(p)
        card = dict(card)
        card["files"] = files
        text = json.dumps(card, indent=2, default=_json_default, sort_keys=False)
        atomic_write(tmp / CARD_NAME, lambda t: t.write_text(text))
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if run_dir is not None:
        run_dir = Path(run_dir)
        rel = os.path.relpath(directory, run_dir)
        payload = json.dumps({"checkpoint": rel, "step": card.get("step")})
        atomic_write(run_dir / "latest.json", lambda t: t.write_text(payload))
    return directory


def read_model_card(directory: str | os.PathLike) -> dict:
    """The model card of a checkpoint folder (ValueError if it is not one)."""
    p = Path(directory) / CARD_NAME
    if not p.is_file():
        raise FileNotFoundError(f"{directory} is not a facegeo checkpoint (no {CARD_NAME})")
    try:
        card = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError is a ValueError
        raise ValueError(f"{p}: broken model card, not valid JSON ({e})") from None
    if not isinstance(card, dict) or card.get("format") != "facegeo-checkpoint":
        raise ValueError(f"{p}: not a facegeo model card")
    return card


def load_training_state(directory: str | os.PathLike, device: str | torch.device = "cpu"
                        ) -> dict:
    """The training state of a checkpoint, read with ``torch.load(weights_only=True)``."""
    p = Path(directory) / TRAIN_STATE_NAME
    if not p.is_file():
        raise FileNotFoundError(f"no training state in {directory} ({TRAIN_STATE_NAME})")
    return torch.load(p, map_location=device, weights_only=True)


def load_model(directory: str | os.PathLike, *, use_ema: bool = True,
               device: str | torch.device = "cpu", verify: bool = False,
               params: dict | None = None) -> tuple[nn.Module, dict]:
    """Build the model named in a checkpoint's card through the registry and load its
    weights (the EMA weights when present and ``use_ema``). Returns (model in eval mode on
    ``device``, card). ``verify`` checks the sha256 of the weights file against the card.
    ``params`` overrides entries of the card's ``model.params`` (options that leave the
    weights' shapes alone, e.g. an inference front end); the returned card is the file's."""
    directory = Path(directory)
    card = read_model_card(directory)
    model = build_model(card["model"]["name"],
                        {**(card["model"].get("params") or {}), **(params or {})})
    name = "ema.safetensors" if use_ema and (directory / "ema.safetensors").is_file() \
        else "model.safetensors"
    if verify:
        expected = card.get("files", {}).get(name)
        if expected is None or sha256_file(directory / name) != expected:
            raise ValueError(f"{directory / name}: sha256 does not match the model card")
    load_weights(directory / name, model)
    return model.to(device).eval(), card


#: the size limit of weights shipped in the repository (``data/<model>/``)
SHIP_MAX_BYTES = 16 * 2 ** 20


def export_inference(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
                     dtype: torch.dtype = torch.float16, use_ema: bool = True,
                     overwrite: bool = False, max_bytes: int | None = SHIP_MAX_BYTES,
                     **card_extra: Any) -> Path:
    """Inference weights of a training checkpoint, as shipped in ``data/<model>/``.

    Writes ``out_dir/model.safetensors`` (the EMA weights when present and ``use_ema``,
    floating-point tensors cast to ``dtype``) and ``out_dir/model_card.json`` (the
    checkpoint's card: model, config, data, step, plus ``exported`` = {from, weights,
    dtype} and ``card_extra``, e.g. ``training=`` / ``evaluation=`` summaries), atomically
    (:func:`save_checkpoint`). :meth:`ReenactmentModel.load_pretrained` loads the folder.

    Raises:
        FileExistsError: ``out_dir`` holds files and ``overwrite`` is False.
        ValueError: the weights exceed ``max_bytes`` (nothing is written).
    """
    src = Path(checkpoint)
    card = read_model_card(src)
    name = "ema.safetensors" if use_ema and (src / "ema.safetensors").is_file() \
        else "model.safetensors"
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty (pass overwrite=True / --force)")
    sd = load_weights(src / name)
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    size = sum(v.numel() * v.element_size() for v in sd.values())
    if max_bytes is not None and size > max_bytes:
        raise ValueError(f"{size / 2 ** 20:.1f} MiB of weights exceed the "
                         f"{max_bytes / 2 ** 20:.0f} MiB limit of shipped weights")
    card = {k: v for k, v in card.items() if k != "files"}
    card["exported"] = {"from": str(src), "weights": name, "dtype": str(dtype),
                        "bytes": size}
    card.update(card_extra)
    keep = [p for p in out.iterdir() if p.name == "__init__.py"] if out.exists() else []
    saved = {p.name: p.read_bytes() for p in keep}  # the package marker of data/<model>/
    save_checkpoint(out, {"model": sd}, card)
    for fname, data in saved.items():
        (out / fname).write_bytes(data)
    return out


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``run_dir/latest.json``, or None if there is none."""
    p = Path(run_dir) / "latest.json"
    if not p.is_file():
        return None
    ck = Path(run_dir) / json.loads(p.read_text())["checkpoint"]
    return ck if (ck / CARD_NAME).is_file() else None
