"""The one interface of the neural reenactment models: :class:`ReenactmentModel`.

Every model of ``facegeo_models`` subclasses it (and registers with
:func:`~facegeo_models.common.registry.register_model`); what it inherits:

* the :class:`facegeo.pipeline.Reenactor` protocol the apps and the evaluator drive
  (``requires``, ``modes``, ``max_sources``, ``image_size``, :meth:`encode_source`,
  :meth:`reenact`), so a model never detects faces or fits a 3DMM itself;
* config handling: :meth:`config_path`, :meth:`from_config` (bundled name, YAML path with
  ``_base_`` inheritance, training config or params dict);
* :meth:`load_pretrained`: a checkpoint folder (safetensors + model card), a bare
  ``.safetensors`` with a config, or, with no argument, the weights shipped in
  ``data/<name>/``.

A subclass implements ``forward(batch) -> {"prediction": (B, 3, S, S), ...}`` (training)
and ``_reenact(sources, driving, *, mode, **kw) -> (B, 3, S, S)`` (inference, sources
being what :meth:`encode_source` returned); for training it may add ``extra_losses`` and
choose its :class:`~facegeo_models.common.task.TrainingTask` with :meth:`training_task`.
See docs/adding_a_model.md.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from facegeo.pipeline import Conditioning, Reenactor

if TYPE_CHECKING:
    from .task import TrainingTask

__all__ = ["ReenactmentModel", "check_images", "check_finite_weights", "resize_images",
           "batch_images"]


def check_images(x, name: str, *, channels: int = 3) -> None:
    """Raise a clear error unless ``x`` is a float (B, C, H, W) tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor in [0, 1], got {x.dtype}")


def batch_images(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The first source and the driving frame of a training batch, checked.

    Args:
        batch: ``{"source": (B, 3, S, S) or (B, n, 3, S, S), "driving": (B, 3, S, S), ...}``.
    Returns:
        (source (B, 3, S, S), driving (B, 3, S, S)).
    Raises:
        TypeError / ValueError: not float image tensors, or different shapes.
    """
    src, drv = batch["source"], batch["driving"]
    if isinstance(src, torch.Tensor) and src.dim() == 5:
        src = src[:, 0]
    check_images(src, "source")
    check_images(drv, "driving")
    if src.shape != drv.shape:
        raise ValueError(f"source {tuple(src.shape)} and driving {tuple(drv.shape)} "
                         "must have the same shape")
    return src, drv


def check_finite_weights(model: nn.Module, where) -> nn.Module:
    """``model``, after checking every floating-point parameter and buffer is finite;
    ValueError naming ``where`` (the checkpoint) and the first bad tensors otherwise."""
    bad = [k for k, v in model.state_dict().items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{where}: {len(bad)} weight tensor(s) hold NaN/inf, e.g. "
                         f"{', '.join(bad[:3])}: the checkpoint is broken (a diverged run?)")
    return model


def resize_images(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w) (bilinear, anti-aliased when shrinking); unchanged when
    the size already matches."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)


class ReenactmentModel(Reenactor, nn.Module):
    """Base class of the neural reenactment models (see the module docstring).

    Class attributes (set by the subclass; ``name`` / ``config_dir`` by the registry):
        requires: driving conditioning (default ``{"image"}``).
        modes: honoured motion modes, default first (default ``("absolute",)``).
        max_sources: source images used (default 1).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"image"})
    modes: ClassVar[tuple[str, ...]] = ("absolute",)
    config_dir: ClassVar[Path | None] = None

    # ------------------------------------------------------------------ configs
    @classmethod
    def config_path(cls, name: str = "paper") -> Path:
        """Path of a bundled config (``paper``, ``cpu``..., ``tiny``)."""
        d = cls.config_dir
        p = d / f"{name}.yaml" if d is not None else None
        if p is None or not p.is_file():
            raise ValueError(f"unknown {cls.name} config {name!r}; bundled: {cls._bundled()}")
        return p

    @classmethod
    def load_config(cls, config: str | os.PathLike | dict = "paper") -> dict:
        """A full config dict: ``config`` itself, or the YAML file / bundled config it
        names (``_base_`` resolved)."""
        if isinstance(config, dict):
            return config
        if not isinstance(config, (str, os.PathLike)):
            raise TypeError(f"config must be a dict, a YAML path or a bundled config name, "
                            f"got {type(config).__name__}")
        from .config import load_config

        p = Path(config).expanduser()
        if not p.is_file():
            if p.suffix in (".yaml", ".yml") or os.sep in str(config):
                raise FileNotFoundError(f"config file not found: {p}")
            p = cls.config_path(str(config))
        return load_config(p)

    @classmethod
    def model_params(cls, config: str | os.PathLike | dict = "paper") -> dict:
        """The constructor arguments in ``config``: its ``model.params`` (a training
        config, whose ``model.name`` must be this model) or the dict itself."""
        cfg = cls.load_config(config)
        if "model" in cfg:
            m = cfg["model"]
            if m.get("name") != cls.name:
                raise ValueError(f"config is for model {m.get('name')!r}, not {cls.name!r}")
            return dict(m.get("params") or {})
        return dict(cfg)

    @classmethod
    def from_config(cls, config: str | os.PathLike | dict = "paper") -> ReenactmentModel:
        """An untrained model from a bundled config name, YAML path, training config or
        params dict. A parameter the constructor does not take (or a bad value) is a
        ``ValueError`` naming it, as in :func:`~facegeo_models.common.registry.build_model`."""
        params = cls.model_params(config)
        try:
            return cls(**params)
        except TypeError as e:
            raise ValueError(f"cannot build model {cls.name!r} with params {params}: "
                             f"{type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ weights
    @classmethod
    def default_checkpoint(cls) -> Path | None:
        """The shipped cpu-config weights ``data/<name>/`` when present, else None."""
        from facegeo.assets import data_path

        try:
            d = data_path(cls.name)
        except FileNotFoundError:
            return None
        return d if (d / "model_card.json").is_file() else None

    @classmethod
    def load_pretrained(cls, checkpoint: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu", *,
                        config: str | os.PathLike | dict | None = None,
                        use_ema: bool = True, params: dict | None = None
                        ) -> ReenactmentModel:
        """A trained model in eval mode on ``device``.

        Args:
            checkpoint: a checkpoint folder (``model_card.json`` + ``model.safetensors`` /
                ``ema.safetensors``; EMA preferred with ``use_ema``), a bare
                ``.safetensors`` file (needs ``config``), or None for the shipped weights.
            config: the config of a bare weights file (bundled name, YAML path or dict).
            params: overrides of the config's ``model.params`` that keep the weights'
                shapes (inference options such as ``ldnet_fdgan``'s ``front_end``).

        Raises:
            FileNotFoundError: no such checkpoint / no shipped weights.
            ValueError: a checkpoint of another model, a bare file without config, weights
                that do not fit the config.
        """
        from . import checkpoint as ckpt

        if checkpoint is None:
            checkpoint = cls.default_checkpoint()
            if checkpoint is None:
                raise FileNotFoundError(
                    f"{cls.name} ships no trained weights yet (data/{cls.name}/); pass a "
                    "checkpoint folder, or a .safetensors file with a config")
        p = Path(checkpoint).expanduser()
        if p.is_dir():
            card = ckpt.read_model_card(p)
            if card["model"]["name"] != cls.name:
                raise ValueError(f"{p} is a checkpoint of {card['model']['name']!r}, not "
                                 f"{cls.name}")
            if config is not None:
                raise ValueError(f"{p} is a checkpoint folder (its model card holds the "
                                 "config); --config is only for a bare .safetensors file")
            model, _ = ckpt.load_model(p, use_ema=use_ema, device=device, params=params)
            return check_finite_weights(model, p)
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint not found: {p}")
        if p.suffix != ".safetensors":
            raise ValueError(f"{p}: expected a checkpoint folder or a .safetensors file")
        if config is None:
            raise ValueError(f"{p} is a bare weights file: give its config (a bundled name "
                             f"such as {cls.name}'s {', '.join(cls._bundled()) or 'paper'}, "
                             "or a YAML path)")
        model = cls.from_config({**cls.model_params(config), **(params or {})})
        try:
            ckpt.load_weights(p, model)
        except RuntimeError as e:
            raise ValueError(f"{p} does not fit the config: {str(e).splitlines()[0]}") from None
        return check_finite_weights(model, p).to(device).eval()

    @classmethod
    def _bundled(cls) -> list[str]:
        from .registry import bundled_configs

        return bundled_configs(cls.config_dir)

    # ------------------------------------------------------------------ inference
    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _as_conditioning(self, x, name: str) -> Conditioning:
        if isinstance(x, Conditioning):
            return x
        check_images(x, name)
        return Conditioning.from_images(x)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, S, S) at ``image_size`` on the model's device and dtype."""
        p = next(self.parameters())
        return resize_images(images, self.image_size).to(p)

    @torch.no_grad()
    def encode_source(self, sources) -> Any:
        """Work done once per source set; default: the sources' conditioning with the
        images resized to ``image_size``. ``sources``: a :class:`Conditioning` or
        (N, 3, H, W) images."""
        sources = self._as_conditioning(sources, "sources")
        self.check_sources(sources)
        if sources.image is not None:
            sources = replace(sources, image=self.prepare_images(sources.image))
        return sources

    def reenact(self, sources, driving, *, mode: str | None = None, **kw) -> torch.Tensor:
        """Animate the sources with the driving frames.

        Args:
            sources: (N, 3, H, W) source images, a :class:`Conditioning`, or the state
                :meth:`encode_source` returned (reused across chunks of a video).
            driving: (B, 3, H_d, W_d) images or a :class:`Conditioning` of B frames.
            mode: ``"relative"`` / ``"absolute"`` (None: the model's default); a mode the
                model cannot honour is an :class:`~facegeo.pipeline.UnsupportedModeError`.
            kw: model-specific options of ``_reenact``.

        Returns:
            (B, 3, H_d, W_d) frames in [0, 1] (at the driving images' size; ``image_size``
            when the driving conditioning has no images). Runs under ``no_grad`` in eval
            mode and restores the training flag.
        """
        mode = self.check_mode(mode)
        drv = self._as_conditioning(driving, "driving")
        state = sources
        if isinstance(sources, (torch.Tensor, Conditioning)):
            state = self.encode_source(sources)
        size = tuple(drv.image.shape[-2:]) if drv.image is not None else None
        if drv.image is not None:
            drv = replace(drv, image=self.prepare_images(drv.image))
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self._reenact(state, drv, mode=mode, **kw)
        finally:
            self.train(was)
        if isinstance(out, torch.Tensor) and size is not None and tuple(out.shape[-2:]) != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def _reenact(self, sources, driving: Conditioning, *, mode: str, **kw) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement _reenact")

    # ------------------------------------------------------------------ training
    def training_task(self, config: dict) -> TrainingTask:
        """The :class:`~facegeo_models.common.task.TrainingTask` the trainer runs for this
        model under the full training ``config``. Default: one generator (this model),
        the config's optional multi-scale discriminator, target ``batch["driving"]``, the
        loss composer's built-in terms plus :meth:`extra_losses`. Override (returning a
        subclass) to declare other critics, targets or terms; see docs/training.md."""
        from .task import TrainingTask

        return TrainingTask(config)

    def extra_losses(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        """The model's own loss terms ``{name: scalar}`` for ``forward(batch) -> out``; a
        phase uses each with the weight it gives the name. Default: none."""
        return {}
