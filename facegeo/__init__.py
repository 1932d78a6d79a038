"""facegeo: a geometry toolkit for 3D faces.

The geometry core (this package) never imports from ``facegeo_models`` (the reenactment
models, folder ``models/``) or ``facegeo_apps`` (command-line programs, folder ``apps/``);
``tests/project/test_layering.py`` enforces it.

Every public sub-module is an attribute of the package: ``import facegeo`` then
``facegeo.mls.warp_image(...)`` works. ``assets`` (standard library only) is imported
eagerly; the others import torch and are loaded on first attribute access (PEP 562), so
``import facegeo`` stays fast and pulls in neither torch nor the heavy optional
dependencies (open3d, dlib, numba, PyAV, kornia, ...). ``tests/project/test_package.py`` checks it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import assets as assets  # standard library only: cheap

__version__ = "0.2.0"

# the public sub-modules loaded on first access (each imports torch)
_LAZY_SUBMODULES = (
    "coords", "morphable", "transforms", "fitting", "mesh", "mls", "raster", "landmarks",
    "disentangle", "video", "image_io", "facerec", "metrics", "evaluation", "reenact",
    "pipeline", "graphconv", "controls", "geometric", "headpose",
)
SUBMODULES = ("assets",) + _LAZY_SUBMODULES

__all__ = ["__version__", *SUBMODULES]

if TYPE_CHECKING:  # static analysers and IDEs see the sub-modules as attributes
    from . import (  # noqa: F401
        controls,
        coords,
        disentangle,
        evaluation,
        facerec,
        fitting,
        geometric,
        graphconv,
        headpose,
        image_io,
        landmarks,
        mesh,
        metrics,
        mls,
        morphable,
        pipeline,
        raster,
        reenact,
        transforms,
        video,
    )


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # import_module already binds it; later look-ups skip this
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBMODULES))
