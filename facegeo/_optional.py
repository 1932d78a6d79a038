"""Optional dependencies: one table of which extra provides which module, one error.

``pip install facegeo`` installs the geometry core (torch, numpy, scipy, OpenCV, numba,
kornia, trimesh, ...). The heavy packages that only some features need are *extras*
(``pyproject.toml``, ``[project.optional-dependencies]``); a feature whose package is
missing raises :class:`MissingExtraError`, which names the feature, the package and the
``pip install "facegeo[EXTRA]"`` line that provides it. Standard library only, so that
importing this module costs nothing.

=====================  ==========================  ==============================
module                 extra                       needed for
=====================  ==========================  ==============================
``av`` (PyAV)          ``video``                   reading / writing video files
``dlib``               ``dlib``                    the dlib landmark backends, the
``face_recognition_``  ``dlib``                    dlib identity embedding
``models``
``open3d``             ``open3d``                  ``rasterize(backend="open3d")``
``h5py``               ``bfm2017``                 BFM2017/2019 ``.h5`` files
``skimage``            ``demo``                    the ``--demo`` portrait
``gradio``             ``web``                     ``apps/web.py``
=====================  ==========================  ==============================

``facegeo[apps]`` is everything the command-line apps need (``video``, ``dlib``,
``demo``); ``facegeo[all]`` every extra above.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "missing_extra_message", "require"]

#: importable module name -> (extra that provides it, the pip distribution name)
EXTRAS: dict[str, tuple[str, str]] = {
    "av": ("video", "av"),
    "dlib": ("dlib", "dlib-bin"),
    "face_recognition_models": ("dlib", "face_recognition_models"),
    "open3d": ("open3d", "open3d"),
    "h5py": ("bfm2017", "h5py"),
    "skimage": ("demo", "scikit-image"),
    "gradio": ("web", "gradio"),
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra to install."""


def missing_extra_message(module: str, purpose: str) -> str:
    """The one wording: ``"<package> is not installed (<purpose>): pip install ..."``."""
    extra, dist = EXTRAS[module]
    return (f"the optional package {dist!r} is not installed (needed for {purpose}): "
            f'pip install "facegeo[{extra}]"')


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional module or raise :class:`MissingExtraError` naming its extra.

    Args:
        module: a key of :data:`EXTRAS` (e.g. ``"av"``).
        purpose: what needs it, for the message (e.g. ``"reading video"``).
    Returns:
        the imported module.
    Raises:
        MissingExtraError: the module (or one it imports) is not installed.
    """
    if module not in EXTRAS:
        raise KeyError(f"{module!r} is not an optional dependency of facegeo")
    try:
        with warnings.catch_warnings():
            # face_recognition_models imports pkg_resources, deprecated in setuptools
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", "pkg_resources is deprecated")
            return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"{missing_extra_message(module, purpose)} ({e})") from e
