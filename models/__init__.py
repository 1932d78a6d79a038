"""The neural reenactment models (imported as ``facegeo_models``).

Each model is a sub-package (today ``pfp_mls``; planned: ``meshg``, ``fsrt``,
``ldnet_fdgan``, ``s2d``), found by :func:`list_models` without being imported by hand;
pieces shared between models live in ``facegeo_models.common``. A model may import
``facegeo`` (the geometry core), ``facegeo_models.common`` and its own sub-package, never
another model's modules (``tests/project/test_layering.py``).
"""

from .common.registry import list_models, load_reenactor, model_info

__all__ = ["list_models", "model_info", "load_reenactor"]
