"""Model registry: every reenactment method by name, with its configs and metadata.

A model package registers its class when imported::

    from facegeo_models.common.model import ReenactmentModel
    from facegeo_models.common.registry import register_model

    @register_model("fsrt", paper="FSRT (Rochow et al., CVPR 2024)")
    class FSRT(ReenactmentModel): ...

The bundled configs are the package's ``configs/*.yaml`` (found next to the class's module),
and shipped weights are ``data/<name>/model.safetensors`` + ``model_card.json``.

:func:`list_models` discovers the bundled models on its own: it imports every sub-package
of ``facegeo_models`` (and any ``facegeo.models`` entry point of other distributions), so
callers never import model packages by hand. ``geometric`` (the training-free
:class:`facegeo.reenact.GeometricReenactor`) is registered here as one more model.

A config's ``model`` section may name ``module:`` (a module to import that registers the
name), so models outside ``facegeo_models`` build from their configs and checkpoints too.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelInfo", "register_model", "list_models", "model_info", "build_model",
           "load_reenactor", "registered_models"]


@dataclass
class ModelInfo:
    """A registered model.

    Attributes:
        name: registry name.
        builder: the model class (called as ``cls(**params)``) or a function
            ``builder(params dict) -> model``.
        config_dir: folder of its bundled configs (``paper.yaml``, ``cpu.yaml``, ``tiny.yaml``
            ...), or None.
        paper: the paper it implements.
        description: one line.
        trainable: False for methods without weights (geometric).
        loader: ``loader(checkpoint, config, device, **options) -> reenactor`` used by
            :func:`load_reenactor` (default: the class's ``load_pretrained``).
    """

    name: str
    builder: Callable[[dict], Any]
    config_dir: Path | None = None
    paper: str = ""
    description: str = ""
    trainable: bool = True
    loader: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def requires(self) -> frozenset[str]:
        return frozenset(getattr(self.builder, "requires", ()) or ())

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(getattr(self.builder, "modes", ()) or ())

    def configs(self) -> list[str]:
        """Names of the bundled configs."""
        return bundled_configs(self.config_dir)

    def summary(self) -> str:
        """One line for ``--help`` texts and error messages."""
        bits = [self.description or self.paper]
        if self.requires:
            bits.append("needs " + ", ".join(sorted(self.requires)))
        if self.modes:
            bits.append("modes " + "/".join(self.modes))
        return f"{self.name}: " + "; ".join(b for b in bits if b)


def bundled_configs(config_dir: Path | None) -> list[str]:
    """The runnable configs of a config folder (``base.yaml`` and ``_*.yaml`` are bases)."""
    if config_dir is None or not config_dir.is_dir():
        return []
    return sorted(p.stem for p in config_dir.glob("*.yaml")
                  if not p.stem.startswith("_") and p.stem != "base")


_MODELS: dict[str, ModelInfo] = {}
_DISCOVERED = False


def register_model(name: str, *, configs: str | Path | None = "configs", paper: str = "",
                   description: str = "", trainable: bool = True, loader=None,
                   overwrite: bool = False):
    """Decorator registering a model class (or a ``builder(params) -> model`` function)
    under ``name``. ``configs`` is the config folder, relative to the decorated object's
    module (default ``configs``; None for none). The class gets ``name`` and ``config_dir``
    attributes."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def deco(obj):
        if not callable(obj):
            raise TypeError(f"builder for {name!r} is not callable")
        old = _MODELS.get(name)
        if old is not None and not overwrite and old.builder is not obj:
            raise ValueError(f"model {name!r} is already registered")
        cdir = None
        if configs is not None:
            mod = importlib.import_module(obj.__module__)
            cdir = (Path(mod.__file__).resolve().parent / configs) if not Path(
                configs).is_absolute() else Path(configs)
        if isinstance(obj, type):
            obj.name = name
            obj.config_dir = cdir
        _MODELS[name] = ModelInfo(name, obj, cdir, paper, description, trainable, loader)
        return obj

    return deco


def _discover() -> None:
    """Import every model package of facegeo_models once (and entry points)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import facegeo_models

    for m in pkgutil.iter_modules(facegeo_models.__path__):
        if m.ispkg and m.name != "common" and not m.name.startswith("_"):
            importlib.import_module(f"facegeo_models.{m.name}")
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="facegeo.models"):
            ep.load()
    except Exception as e:  # noqa: BLE001 - a broken third-party plugin must say so
        raise ImportError(f"loading a facegeo.models entry point failed: {e}") from e


def list_models() -> list[str]:
    """Names of every installed model (bundled ones are discovered automatically)."""
    _discover()
    return sorted(n for n in _MODELS if not n.startswith("_"))


def registered_models() -> list[str]:
    """Every registered name, including test-only ones (``_...``)."""
    _discover()
    return sorted(_MODELS)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; ``KeyError`` naming the known models."""
    if name not in _MODELS:
        _discover()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; installed models: {', '.join(list_models())}")
    return _MODELS[name]


def build_model(name_or_config: str | dict[str, Any], config: dict | None = None):
    """Build a model: ``build_model("fsrt", params)`` or ``build_model({"name": "fsrt",
    "params": {...}, "module": optional})`` (the ``model`` section of a training config)."""
    if isinstance(name_or_config, dict):
        if "name" not in name_or_config:
            raise ValueError("model config needs a 'name'")
        name = name_or_config["name"]
        if name_or_config.get("module"):
            importlib.import_module(str(name_or_config["module"]))
        config = dict(name_or_config.get("params") or {}) if config is None else config
    else:
        name = name_or_config
    info = model_info(name)
    from torch import nn

    params = dict(config or {})
    try:
        model = info.builder(**params) if isinstance(info.builder, type) \
            else info.builder(params)
    except (TypeError, ValueError) as e:   # a bad or misspelled value in model.params
        raise ValueError(f"cannot build model {name!r} with params {params}: "
                         f"{type(e).__name__}: {e}") from e
    if info.trainable and not isinstance(model, nn.Module):
        raise TypeError(f"builder for {name!r} returned {type(model).__name__}, not nn.Module")
    return model


def load_reenactor(name: str, *, checkpoint=None, config=None, device="cpu", **options):
    """A ready-to-run reenactor: ``geometric`` (options: its constructor's, ``size``...),
    or a neural model loaded from ``checkpoint`` (a checkpoint folder, or a bare
    ``.safetensors`` with ``config``: a bundled config name or a YAML path; default: the
    shipped weights in ``data/<name>/``), whose options override its config's
    ``model.params`` (those that keep the weights' shapes, e.g. ``front_end="3dmm"``).
    Raises ``KeyError`` for unknown names, ``ValueError`` for bad combinations or options,
    ``FileNotFoundError`` for missing files."""
    info = model_info(name)
    if info.loader is not None:
        return info.loader(checkpoint, config, device, **options)
    return info.builder.load_pretrained(checkpoint, device, config=config,
                                        params=options or None)


def _load_geometric(checkpoint, config, device, **options):
    if checkpoint is not None or config is not None:
        raise ValueError("the geometric method has no weights: drop --checkpoint/--config")
    from facegeo.reenact import GeometricReenactor

    try:
        return GeometricReenactor(device=device, **options)
    except TypeError as e:   # an option the constructor does not take
        raise ValueError(f"geometric: {e}") from e


def _register_geometric() -> None:
    from facegeo.reenact import GeometricReenactor

    register_model("geometric", configs=None, trainable=False, loader=_load_geometric,
                   paper="training-free: 3DMM fit -> mesh flow + MLS warp (facegeo.reenact)",
                   description="training-free 3DMM mesh flow + MLS warp (no weights)")(
        GeometricReenactor)


_register_geometric()
