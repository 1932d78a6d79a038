"""Shared helpers of the command-line apps (reenact, interpolate, evaluate, train).

* :func:`run_main`: runs an app's body, turns expected errors (bad input, missing files, no
  face...) into one ``error: ...`` line on stderr and exit status 2;
* :func:`check_output`: the output's folder exists and is writable, the suffix is known,
  the output is none of the inputs; :func:`check_input`: an input is an existing regular file;
* :func:`check_range`, :func:`check_fps`, :func:`check_frames`: numeric options in range;
* :func:`pick_device`: ``auto`` / ``cpu`` / ``cuda[:i]`` / ``mps`` with a clear error when
  unavailable, ``--threads`` within reason;
* :func:`pick_source_face`: the source face (the largest, or ``--face-index``), reported
  when there are several;
* :func:`load_source_image`: reads a portrait, reporting (and compositing) an alpha channel;
* :func:`demo_source`: scikit-image's public-domain ``astronaut`` portrait.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from facegeo._optional import require
from facegeo.image_io import IMAGE_SUFFIXES
from facegeo.video import WRITE_SUFFIXES

#: the video files the apps write (facegeo.video.write_video's formats)
VIDEO_SUFFIXES = WRITE_SUFFIXES

class CLIError(ValueError):
    """A user-facing error (bad argument combination, bad path...)."""


#: --threads above this (or above 4 x the CPU count) is refused as a typo
MAX_THREADS = 256
#: frame rates the video writer encodes faithfully (facegeo.video.write_video: a rate
#: below 1 fps rounds to 0 and is written as 24 fps, huge ones make undecodable files)
FPS_RANGE = (1.0, 240.0)
#: upper cap of a frame count (--frames): 10 minutes at 30 fps
MAX_FRAMES = 18000


def run_main(body: Callable[[], int | None]) -> int:
    """Run ``body``; expected errors -> ``error: ...`` on stderr and return 2. The torch
    thread count that ``--threads`` may change is restored afterwards (apps also run
    in-process, from tests and notebooks). SIGTERM / SIGHUP during an output write
    (:func:`facegeo.assets.atomic_write` removes its temporary file) return 128 + signal
    (143 / 129), Ctrl-C 130. ``FACEGEO_TRACEBACK=1`` in the environment re-raises the
    error instead (its traceback, for bug reports)."""
    from facegeo.assets import AssetNotFoundError, WriteInterrupted

    threads = torch.get_num_threads()
    try:
        rc = body()
        return 0 if rc is None else int(rc)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError,
            IsADirectoryError, NotADirectoryError, AssetNotFoundError, ImportError,
            KeyError) as e:
        msg = str(e) if not isinstance(e, KeyError) else str(e.args[0] if e.args else e)
        msg = msg.strip().replace("\n", "\n  ")
        if os.environ.get("FACEGEO_TRACEBACK"):
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except WriteInterrupted as e:
        print(f"terminated ({e}); the partial output was removed", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)


def check_input(path: str | os.PathLike, what: str) -> Path:
    """An input file that must exist and be a regular file (not a folder or a device).

    Raises:
        FileNotFoundError: missing; CLIError: a directory or not a regular file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    if p.is_dir():
        raise CLIError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise CLIError(f"{what} {p} is not a regular file")
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...],
                 inputs=()) -> Path:
    """Validate an output path before any work is done.

    ``inputs``: the files the command reads (``None`` entries are skipped); an output that
    is one of them (same file through a symlink, ``..``, a hard link) is refused.

    Raises:
        CLIError: unknown suffix, the output is an input, missing folder, folder not
        writable (checked by creating and removing a temporary file there), path is a
        folder.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise CLIError(f"output {p}: unsupported suffix {p.suffix!r}; use one of "
                       f"{', '.join(suffixes)}")
    for inp in inputs:
        if inp is not None and _same_file(p, Path(inp).expanduser()):
            raise CLIError(f"output {p} is the same file as the input {inp}; choose another "
                           "output name")
    if p.is_dir():
        raise CLIError(f"output {p} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        missing = parent
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        if missing.parent.exists() and not missing.parent.is_dir():
            raise CLIError(f"output folder {missing.parent} is not a directory (a file)")
        raise CLIError(f"output directory does not exist: {parent}")
    if not parent.is_dir():
        raise CLIError(f"output folder {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"output directory is not writable: {parent}")
    import tempfile

    try:   # os.access says yes for root even on /proc, /sys, read-only mounts: try it
        fd, probe = tempfile.mkstemp(prefix=".facegeo-write-check.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CLIError(f"output directory is not writable: {parent} "
                       f"({e.strerror or e})") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise CLIError(f"output file exists and is not writable: {p}")
    return p


def check_range(value: float | int | None, option: str, low: float, high: float,
                what: str = "") -> None:
    """``low <= value <= high`` and finite (None passes)."""
    if value is None:
        return
    if not math.isfinite(value) or not low <= value <= high:
        raise CLIError(f"{option} must be a finite number in [{low:g}, {high:g}]"
                       f"{what}, got {value:g}")


def check_fps(fps: float, option: str = "--fps") -> None:
    check_range(fps, option, *FPS_RANGE, " (frames per second the video writer honours)")


def check_frames(n: int, option: str = "--frames", low: int = 2) -> None:
    if not low <= n <= MAX_FRAMES:
        raise CLIError(f"{option} must be in [{low}, {MAX_FRAMES}], got {n}")


def pick_device(name: str | None, threads: int | None = None) -> torch.device:
    """``None``/``"auto"`` -> cuda if available else cpu; validates explicit choices.

    ``threads`` (> 0) sets torch's intra-op CPU thread count. The geometric pipeline is made
    of many small tensor operations, for which one thread is faster than several: measured
    with ``benchmarks/bench_reenact.py`` on a 2-core machine, 47 frames/s end to end at
    256x256 with 1 thread against 15 frames/s with 2."""
    if threads is not None and threads < 0:
        raise CLIError(f"--threads must be >= 0, got {threads}")
    cap = min(MAX_THREADS, 4 * (os.cpu_count() or 1))
    if threads is not None and threads > cap:
        raise CLIError(f"--threads {threads} is more than {cap} (4 x the {os.cpu_count()} "
                       f"CPUs of this machine, at most {MAX_THREADS}); 0 = torch's default")
    if threads:
        torch.set_num_threads(threads)
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise CLIError(f"bad --device {name!r}: {e}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device {name}: use cpu, cuda[:i], mps or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {name}: CUDA is not available on this machine")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise CLIError(f"--device {name}: this machine has {n} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise CLIError(f"--device {name}: MPS is not available on this machine "
                       "(Apple silicon with an MPS-enabled torch); use cpu or auto")
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

    p = check_input(path, f"{what} image")
    img = load_image(p, background=1.0)
    if image_has_alpha(p):
        print(f"note: {what} image {p.name} has an alpha channel; composited over white",
              file=sys.stderr)
    return img


def demo_source() -> torch.Tensor:
    """scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain): (3, 512, 512)."""
    require("skimage", "the demo portrait (scikit-image's astronaut)")
    from skimage import data
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


def pick_source_face(image: torch.Tensor, index: int = 0, detector=None,
                     what: str = "source", option: str | None = "--face-index") -> torch.Tensor:
    """(68, 2) landmarks of the ``index``-th largest face of ``image`` (3, H, W); when the
    image has several faces, which one is used is said on stderr.

    Raises:
        NoFaceError (a ValueError): no face, or no face ``index``.
    """
    from facegeo.landmarks.backends import NoFaceError, detect

    faces = detect(image, detector)
    if not faces:
        raise NoFaceError(f"no face found in the {what} image")
    if not 0 <= index < len(faces):
        raise NoFaceError(f"{option or 'face index'} {index}: the {what} image has "
                          f"{len(faces)} face(s) (0 = the largest)")
    if len(faces) > 1:
        which = "the largest (face 0)" if index == 0 else f"face {index} by size"
        hint = f"; choose another with {option} N (0 = largest)" if option else ""
        print(f"note: {len(faces)} faces in the {what} image; using {which}{hint}",
              file=sys.stderr)
    return faces[index].landmarks
