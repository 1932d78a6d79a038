"""Shared helpers of the command-line apps (reenact, interpolate).

* :func:`run_main`: runs an app's body, turns expected errors (bad input, missing files, no
  face...) into one ``error: ...`` line on stderr and exit status 2;
* :func:`check_output`: the output's folder exists and is writable, the suffix is known;
* :func:`pick_device`: ``auto`` / ``cpu`` / ``cuda[:i]`` with a clear error when unavailable;
* :func:`load_source_image`: reads a portrait, reporting (and compositing) an alpha channel;
* :func:`demo_source`: scikit-image's public-domain ``astronaut`` portrait.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from facegeo.image_io import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


class CLIError(ValueError):
    """A user-facing error (bad argument combination, bad path...)."""


def run_main(body: Callable[[], int | None]) -> int:
    """Run ``body``; expected errors -> ``error: ...`` on stderr and return 2. The torch
    thread count that ``--threads`` may change is restored afterwards (apps also run
    in-process, from tests and notebooks)."""
    from facegeo.assets import AssetNotFoundError

    threads = torch.get_num_threads()
    try:
        rc = body()
        return 0 if rc is None else int(rc)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError, AssetNotFoundError, ImportError, KeyError) as e:
        msg = str(e) if not isinstance(e, KeyError) else str(e.args[0] if e.args else e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
    """Validate an output path before any work is done.

    Raises:
        CLIError: unknown suffix, missing folder, folder not writable, path is a folder.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise CLIError(f"output {p}: unsupported suffix {p.suffix!r}; use one of "
                       f"{', '.join(suffixes)}")
    if p.is_dir():
        raise CLIError(f"output {p} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"output directory is not writable: {parent}")
    if p.exists() and not os.access(p, os.W_OK):
        raise CLIError(f"output file exists and is not writable: {p}")
    return p


def pick_device(name: str | None, threads: int | None = None) -> torch.device:
    """``None``/``"auto"`` -> cuda if available else cpu; validates explicit choices.

    ``threads`` (> 0) sets torch's intra-op CPU thread count. The geometric pipeline is made
    of many small tensor operations, for which one thread is faster than several: measured
    with ``benchmarks/bench_reenact.py`` on a 2-core machine, 47 frames/s end to end at
    256x256 with 1 thread against 15 frames/s with 2."""
    if threads is not None and threads < 0:
        raise CLIError(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise CLIError(f"bad --device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device {name}: use cpu, cuda[:i] or auto")
    return dev


def image_has_alpha(path: str | os.PathLike) -> bool:
    """True when the file decodes with 4 channels (RGBA / BGRA)."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return False
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return arr is not None and arr.ndim == 3 and arr.shape[2] == 4


def load_source_image(path: str | os.PathLike, what: str = "source") -> torch.Tensor:
    """(3, H, W) float RGB; an alpha channel is composited over white (with a notice)."""
    from facegeo.image_io import load_image

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} image not found: {p}")
    img = load_image(p, background=1.0)
    if image_has_alpha(p):
        print(f"note: {what} image {p.name} has an alpha channel; composited over white",
              file=sys.stderr)
    return img


def demo_source() -> torch.Tensor:
    """scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain): (3, 512, 512)."""
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("the demo portrait needs scikit-image (pip install scikit-image)") \
            from e
    a = np.ascontiguousarray(data.astronaut()[..., :3])
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255.0


_MODELS: dict = {}


def load_model(name: str = "ict_facekit"):
    """``MorphableModel.load(name)``, cached per process (apps called repeatedly in-process
    reuse the model and its cached landmark fitter)."""
    from facegeo.morphable import MorphableModel

    if name not in _MODELS:
        _MODELS[name] = MorphableModel.load(name)
    return _MODELS[name]


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (disabled when ``enabled`` is False)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def models_epilog(option: str) -> str:
    """The installed models, one line each (name, what it needs, its modes), for
    ``--help``; discovered by :func:`facegeo_models.list_models`."""
    try:
        from facegeo_models import list_models, model_info

        rows = [model_info(n).summary() for n in list_models()]
    except Exception as e:  # noqa: BLE001 - --help must work even with a broken plugin
        rows = [f"(the model list could not be read: {e})"]
    return f"models ({option}):\n" + "\n".join(f"  {r}" for r in rows)
