"""pfp_mls: one-shot reenactment with paired feature points and weighted MLS motion.

Common inference API (shared by all facegeo models, used by ``apps/reenact.py``)::

    from facegeo_models import pfp_mls
    model = pfp_mls.load_pretrained("runs/pfp/checkpoints/step_00100000", "cuda")
    frames = pfp_mls.reenact(source, driving, model=model)   # (B, 3, H, W) in [0, 1]

* :func:`load_pretrained` ``(checkpoint_path, device) -> model`` (eval mode).
* :func:`reenact` ``(source (B|1, 3, H, W), driving (B, 3, H, W), **kw) -> (B, 3, H, W)``.
* :func:`from_config` builds an untrained model from a YAML path or a dict.

The model is registered as ``"pfp_mls"`` in :mod:`facegeo_models.common.registry`, so
``apps/train.py --config models/pfp_mls/configs/paper.yaml`` builds it.
See docs/models/pfp_mls.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..common.registry import register_model
from .losses import motion_loss, perturb_one_point, spreading_loss, total_loss
from .network import PFPMLS

__all__ = [
    "PFPMLS",
    "CONFIG_DIR",
    "config_path",
    "from_config",
    "load_pretrained",
    "reenact",
    "motion_loss",
    "spreading_loss",
    "total_loss",
    "perturb_one_point",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def config_path(name: str = "paper") -> Path:
    """Path of a bundled config: ``"paper"`` (256x256, N = 10), ``"cpu128"`` (the paper
    architecture at 128x128 for training without a GPU) or ``"tiny"`` (CPU tests)."""
    p = CONFIG_DIR / f"{name}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise ValueError(f"unknown pfp_mls config {name!r}; bundled: {known}")
    return p


def _model_params(config) -> dict:
    if isinstance(config, (str, os.PathLike)):
        import yaml

        p = Path(config)
        if not p.is_file():
            p = config_path(str(config))
        config = yaml.safe_load(p.read_text())
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict or a YAML path, got {type(config).__name__}")
    if "model" in config:  # a full training config
        m = config["model"]
        if m.get("name") != "pfp_mls":
            raise ValueError(f"config is for model {m.get('name')!r}, not 'pfp_mls'")
        return dict(m.get("params") or {})
    return dict(config)


def from_config(config: dict | str | os.PathLike = "paper") -> PFPMLS:
    """Build a :class:`PFPMLS` from a training config (its ``model.params``), a params
    dict, a YAML path, or a bundled config name (``"paper"``, ``"tiny"``)."""
    return PFPMLS(**_model_params(config))


@register_model("pfp_mls")
def _build(params: dict) -> nn.Module:
    return PFPMLS(**params)


def load_pretrained(checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu",
                    *, config: dict | str | os.PathLike | None = None,
                    use_ema: bool = True) -> PFPMLS:
    """Load a trained model in eval mode.

    Args:
        checkpoint_path: a trainer checkpoint folder (``model_card.json`` +
            ``model.safetensors`` / ``ema.safetensors``; the EMA weights are preferred), or
            a bare ``.safetensors`` file together with ``config``.
        device: target device.
        config: model config for a bare weights file (see :func:`from_config`).
    """
    from ..common import checkpoint as ckpt

    p = Path(checkpoint_path)
    if p.is_dir():
        card = ckpt.read_model_card(p)
        if card["model"]["name"] != "pfp_mls":
            raise ValueError(f"{p} is a checkpoint of {card['model']['name']!r}, not pfp_mls")
        model, _ = ckpt.load_model(p, use_ema=use_ema, device=device)
        return model
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.suffix != ".safetensors":
        raise ValueError(f"{p}: expected a checkpoint folder or a .safetensors file")
    if config is None:
        raise ValueError("a bare .safetensors file needs config= (e.g. 'paper')")
    model = from_config(config)
    ckpt.load_weights(p, model)
    return model.to(device).eval()


def reenact(source: torch.Tensor, driving: torch.Tensor, *, model: PFPMLS | None = None,
            checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None,
            driving_point_offset: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """Animate ``source`` with the motion of ``driving``.

    Args:
        source: (B, 3, H, W) or (1, 3, H, W) images in [0, 1].
        driving: (B, 3, H, W) images in [0, 1].
        model: a loaded model (from :func:`load_pretrained`), or
        checkpoint: a checkpoint to load (with ``device``).
        driving_point_offset: optional (B, N, 2) offsets added to the driving feature
            points (normalized units), see :func:`perturb_one_point`.

    Returns:
        (B, 3, H, W) reenacted frames in [0, 1], on the driving frames' device.
    """
    if kw:
        raise TypeError(f"unexpected keyword arguments {sorted(kw)}")
    if model is None:
        if checkpoint is None:
            raise ValueError("reenact needs model= or checkpoint=")
        model = load_pretrained(checkpoint, device or driving.device)
    out = model.reenact(source, driving, driving_point_offset=driving_point_offset)
    return out.to(driving.device)
