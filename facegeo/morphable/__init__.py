"""3D morphable face models: :class:`MorphableModel` and loaders / converters.

``MorphableModel.load()`` gives the project's default model (ICT-FaceKit, resolved through
:func:`facegeo.assets.resolve`). See ``docs/morphable.md`` for conventions and formats.
"""

from facegeo.morphable.model import FORMAT_VERSION, UNIT_TO_METRES, MorphableModel, unit_scale

__all__ = ["MorphableModel", "FORMAT_VERSION", "UNIT_TO_METRES", "unit_scale"]
