"""YAML configs with inheritance (``_base_``) and ``key.sub=value`` overrides.

A config file may name one or more bases, resolved relative to its own folder (or, for a
bare name such as ``trainer/default``, in the shared folder ``models/common/configs/``)::

    # models/pfp_mls/configs/cpu128.yaml
    _base_: [../../common/configs/trainer/default.yaml, base.yaml]
    model:
      params: {image_size: 128}

Merge order: the bases from first to last, then the file itself; a later value replaces an
earlier one, mappings merge key by key, lists and scalars are replaced whole. A mapping
value ``{_replace_: true, ...}`` replaces the inherited mapping instead of merging into it
(the marker is dropped). Missing bases and inheritance cycles are errors that name the
chain of files. :func:`load_config` returns a plain dict without ``_base_`` keys.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

__all__ = ["COMMON_CONFIG_DIR", "load_config", "merge_configs", "merge_overrides"]

COMMON_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BASE_KEY = "_base_"
REPLACE_KEY = "_replace_"


def merge_configs(base: dict, over: dict) -> dict:
    """Deep merge: a copy of ``base`` updated by ``over`` (mappings merge recursively,
    everything else is replaced; ``{_replace_: true}`` mappings replace)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and v.get(REPLACE_KEY):
            out[k] = {kk: copy.deepcopy(vv) for kk, vv in v.items() if kk != REPLACE_KEY}
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_configs(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _strip_markers(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip_markers(v) for k, v in x.items() if k != REPLACE_KEY}
    if isinstance(x, list):
        return [_strip_markers(v) for v in x]
    return x


def _resolve_base(name: str, here: Path) -> Path:
    p = Path(os.path.expandvars(name)).expanduser()
    if not p.suffix:
        p = p.with_suffix(".yaml")
    cands = [p] if p.is_absolute() else [here / p, COMMON_CONFIG_DIR / p]
    for c in cands:
        if c.is_file():
            return c.resolve()
    raise FileNotFoundError(f"base config {name!r} not found (looked at "
                            f"{', '.join(str(c) for c in cands)})")


def _load(path: Path, chain: tuple[Path, ...]) -> dict:
    import yaml

    if path in chain:
        cyc = " -> ".join(str(p) for p in (*chain, path))
        raise ValueError(f"config inheritance cycle: {cyc}")
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
        try:
            bp = _resolve_base(b, path.parent)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{path}: {e}") from None
        merged = merge_configs(merged, _load(bp, (*chain, path)))
    return merge_configs(merged, cfg)


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config (``yaml.safe_load``) and resolve its ``_base_`` chain.

    Raises:
        FileNotFoundError: the file or one of its bases is missing.
        ValueError: not a mapping, bad ``_base_`` entry, or an inheritance cycle.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    return _strip_markers(_load(p.resolve(), ()))


def merge_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a copy of ``cfg``."""
    import yaml

    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is not a mapping")
        node[parts[-1]] = yaml.safe_load(value)
    return cfg
