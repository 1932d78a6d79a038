"""YAML configs with inheritance (``_base_``), derived defaults and ``key.sub=value``
overrides.

A config file may name one or more bases, resolved relative to its own folder or, when not
found there, in the shared folder ``models/common/configs/`` (so a bare name such as
``trainer/default`` finds ``models/common/configs/trainer/default.yaml``; ``.yaml`` is
appended when the name has no ``.yaml`` / ``.yml`` suffix; ``$VARS`` and ``~`` expand)::

    # models/pfp_mls/configs/cpu128.yaml
    _base_: base.yaml            # -> data/video, trainer/default, discriminator/multiscale
    model:
      params: {image_size: 128}

Merge order: the bases from first to last, then the file itself. Think of the result as
the layers ``L(base_1) + ... + L(base_n) + [file]`` (each base expanded the same way)
applied one after the other: a later value replaces an earlier one, mappings merge key by
key, lists and scalars are replaced whole. A mapping value ``{_replace_: true, ...}``
replaces whatever the earlier layers put under that key instead of merging into it (also
when the marker sits in a base listed after other bases); the marker is dropped from the
result. Missing bases and inheritance cycles (``a -> b -> a``, a file naming itself) are
errors that name the chain of files.

Derived defaults (:func:`resolve_config`, run by :func:`load_config`): a value that must
agree with another one is written once. ``data.image_size``, when absent, is taken from
``model.params.image_size`` (the side of the crops the dataset yields is the side the
model works at). Writing ``data.image_size`` explicitly still wins.
:func:`merge_overrides` keeps derived values in step: ``--set model.params.image_size=128``
also moves ``data.image_size`` when it equalled the old model value and is not overridden
itself. The list of derived keys is :data:`DERIVED_DEFAULTS`.

:func:`load_config` returns a plain dict without ``_base_`` / ``_replace_`` keys.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

__all__ = ["COMMON_CONFIG_DIR", "DERIVED_DEFAULTS", "load_config", "merge_configs",
           "merge_overrides", "resolve_config"]

COMMON_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BASE_KEY = "_base_"
REPLACE_KEY = "_replace_"

#: (target, source) dotted keys: ``target`` defaults to the value at ``source``.
DERIVED_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("data.image_size", "model.params.image_size"),
)


def _merge(base: dict, over: dict) -> dict:
    """Deep merge keeping ``_replace_`` markers, so that a merged layer still replaces
    when it is merged onto earlier layers (see the module docstring)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and v.get(REPLACE_KEY):
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif isinstance(v, dict) and k in out:
            # a mapping replacing a scalar / list: it must not merge into an even earlier
            # mapping when this result is itself merged onto earlier layers
            out[k] = {**copy.deepcopy(v), REPLACE_KEY: True}
        else:
            out[k] = copy.deepcopy(v)
    return out


def _strip_markers(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip_markers(v) for k, v in x.items() if k != REPLACE_KEY}
    if isinstance(x, list):
        return [_strip_markers(v) for v in x]
    return x


def merge_configs(base: dict, over: dict) -> dict:
    """Deep merge: a copy of ``base`` updated by ``over`` (mappings merge recursively,
    everything else is replaced; ``{_replace_: true}`` mappings replace). The result has
    no ``_replace_`` markers."""
    return _strip_markers(_merge(base, over))


def _chain_text(chain: tuple[Path, ...]) -> str:
    return " -> ".join(str(p) for p in chain)


def _resolve_base(name: str, here: Path, chain: tuple[Path, ...]) -> Path:
    p = Path(os.path.expandvars(name)).expanduser()
    if p.suffix.lower() not in (".yaml", ".yml"):
        p = p.with_name(p.name + ".yaml")
    cands = [p] if p.is_absolute() else [here / p, COMMON_CONFIG_DIR / p]
    for c in cands:
        if c.is_file():
            return c.resolve()
    raise FileNotFoundError(f"base config {name!r} not found (looked at "
                            f"{', '.join(str(c) for c in cands)}); inheritance chain: "
                            f"{_chain_text(chain)}")


def _load(path: Path, chain: tuple[Path, ...]) -> dict:
    import yaml

    chain = (*chain, path)
    if path in chain[:-1]:
        raise ValueError(f"config inheritance cycle: {_chain_text(chain)}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from None
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    bases = cfg.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"{path}: {BASE_KEY} must be a file name or a list of them")
    merged: dict = {}
    for b in bases:
        merged = _merge(merged, _load(_resolve_base(b, path.parent, chain), chain))
    return _merge(merged, cfg)


def _get(cfg: dict, dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def resolve_config(cfg: dict) -> dict:
    """Fill the derived defaults (:data:`DERIVED_DEFAULTS`) of a merged config: a copy of
    ``cfg`` where each absent ``target`` takes the value at ``source`` (when that exists
    and the target's parent, e.g. ``data``, is a mapping; no section is created).
    Idempotent."""
    cfg = copy.deepcopy(cfg)
    for target, source in DERIVED_DEFAULTS:
        has_src, value = _get(cfg, source)
        if not has_src or _get(cfg, target)[0]:
            continue
        parent, _, leaf = target.rpartition(".")
        has_parent, node = _get(cfg, parent) if parent else (True, cfg)
        if has_parent and isinstance(node, dict):
            node[leaf] = copy.deepcopy(value)
    return cfg


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config (``yaml.safe_load``), resolve its ``_base_`` chain and fill the
    derived defaults (:func:`resolve_config`).

    Raises:
        FileNotFoundError: the file or one of its bases is missing (the message names
            the chain of files).
        ValueError: invalid YAML, not a mapping, bad ``_base_`` entry, or an inheritance
            cycle.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    return resolve_config(_strip_markers(_load(p.resolve(), ())))


def merge_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a copy of ``cfg``.

    A value replaces the entry whole (``--set data.augment={flip: false}`` drops the
    jitter). Integer parts index lists (``phases.0.steps=10``). Missing mappings on the
    way are created. Derived values follow their source (see the module docstring).
    """
    import yaml

    cfg = copy.deepcopy(cfg)
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise ValueError(f"override {item!r}: empty key part")
        parsed.append((key, parts, yaml.safe_load(value)))
    set_keys = {k for k, _, _ in parsed}
    for key, parts, value in parsed:
        old = _get(cfg, key)
        _set(cfg, parts, value, key)
        for target, source in DERIVED_DEFAULTS:
            if source == key and target not in set_keys and old[0] \
                    and _get(cfg, target) == (True, old[1]):
                _set(cfg, target.split("."), copy.deepcopy(value), target)
    return cfg


def _set(cfg: dict, parts: list[str], value: Any, item: str) -> None:
    node: Any = cfg
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                j = int(part)
                node[j]  # noqa: B018 - bounds check
            except (ValueError, IndexError):
                raise ValueError(f"override {item!r}: {part!r} is not an index of the "
                                 f"list at {'.'.join(parts[:i]) or '<root>'} (length "
                                 f"{len(node)})") from None
            if last:
                node[j] = value
            else:
                node = node[j]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ValueError(f"override {item!r}: {'.'.join(parts[:i])} is not a mapping "
                             f"or a list")
