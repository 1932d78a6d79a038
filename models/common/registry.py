"""Model registry: model name -> builder ``(config dict) -> nn.Module``.

Each model package registers itself when imported::

    from facegeo_models.common.registry import register_model

    @register_model("fsrt")
    def build(config: dict) -> nn.Module: ...

:func:`build_model` imports ``facegeo_models.<name>`` on first use, so apps can build any
model by name without importing the packages themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["register_model", "build_model", "registered_models", "get_builder"]

Builder = Callable[[dict], nn.Module]
_BUILDERS: dict[str, Builder] = {}


def register_model(name: str, *, overwrite: bool = False) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(config) -> nn.Module`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def deco(builder: Builder) -> Builder:
        if not callable(builder):
            raise TypeError(f"builder for {name!r} is not callable")
        if name in _BUILDERS and not overwrite and _BUILDERS[name] is not builder:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return deco


def registered_models() -> list[str]:
    """Names registered so far (model packages register when imported)."""
    return sorted(_BUILDERS)


def get_builder(name: str) -> Builder:
    """The builder for ``name``, importing ``facegeo_models.<name>`` if needed."""
    if name not in _BUILDERS:
        head = name.split(".")[0]
        if head.isidentifier() and not head.startswith("_"):
            try:
                importlib.import_module(f"facegeo_models.{head}")
            except ModuleNotFoundError as e:
                if e.name != f"facegeo_models.{head}":
                    raise
        if name not in _BUILDERS and name.startswith("_test"):
            importlib.import_module("facegeo_models.common.testing")
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; registered models: "
                       f"{', '.join(registered_models()) or '(none)'}")
    return _BUILDERS[name]


def build_model(name_or_config: str | dict[str, Any], config: dict | None = None) -> nn.Module:
    """Build a model: ``build_model("fsrt", cfg)`` or ``build_model({"name": "fsrt",
    "params": {...}})`` (the ``model`` section of a training config); the builder receives
    the ``params`` dict (or ``config``)."""
    if isinstance(name_or_config, dict):
        if "name" not in name_or_config:
            raise ValueError("model config needs a 'name'")
        name = name_or_config["name"]
        config = dict(name_or_config.get("params") or {}) if config is None else config
    else:
        name = name_or_config
    model = get_builder(name)(dict(config or {}))
    if not isinstance(model, nn.Module):
        raise TypeError(f"builder for {name!r} returned {type(model).__name__}, not nn.Module")
    return model
