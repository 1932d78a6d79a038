"""The reference packages the metric tests compare against (``lpips``, ``pytorch-fid``)
import torchvision for its model definitions only. The torchvision wheel matching the
pinned CPU torch is a CUDA build whose compiled ops (``_C``) cannot load without CUDA
torch; its import then stops at registering fake kernels for ``torchvision::nms`` and
``qnms``. :func:`import_torchvision` declares those two operator schemas first (the
kernels are never called: AlexNet and Inception-v3 use no torchvision op), so the Python
model definitions import. Where ``_C`` loads (a CUDA torch), nothing is patched."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIB = []   # keeps the torch.library.Library alive (its definitions vanish with it)


def import_torchvision():
    """``import torchvision`` with the compiled ops optional (see the module docstring)."""
    import torch

    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        if spec is None or spec.origin is None:
            raise ImportError("torchvision is not installed (pip install -e '.[dev]')")
        ext = sorted(Path(spec.origin).parent.glob("_C*.so"))
        try:
            if not ext:
                raise OSError("no _C extension")
            torch.ops.load_library(str(ext[0]))
        except OSError:
            lib = torch.library.Library("torchvision", "DEF")
            for s in _SCHEMAS:
                lib.define(s)
            _LIB.append(lib)
    import torchvision

    return torchvision
