"""s2d: sparse-to-dense motion transfer from 74 landmarks (68 + pupils), with gaze.

Registered as ``"s2d"`` (:mod:`facegeo_models.common.registry`); the interface is the
common :class:`~facegeo_models.common.model.ReenactmentModel`::

    from facegeo_models.s2d import S2D
    model = S2D.load_pretrained("runs/s2d/checkpoints/step_00010000", "cpu")

It requires the pipeline's ``image`` and ``landmarks68`` and completes the 68 points to 74
with :func:`facegeo.landmarks.pupils.landmarks74` on the crops. Bundled configs
(``configs/``): ``paper`` (256x256), ``cpu`` (128x128, trainable on 2 CPU cores),
``tiny`` (tests). See docs/models/s2d.md.
"""

from __future__ import annotations

from .losses import PARSING_LABELS, landmark_parsing, parsing_loss, parsing_mismatch
from .network import (
    REGIONS,
    S2D,
    AddMotion,
    MotionBranch,
    ResidualGenerator,
    SparseToDenseMotion,
)

__all__ = ["S2D", "REGIONS", "AddMotion", "MotionBranch", "SparseToDenseMotion",
           "ResidualGenerator", "PARSING_LABELS", "landmark_parsing", "parsing_loss",
           "parsing_mismatch", "config_path", "from_config", "load_pretrained"]

config_path = S2D.config_path
from_config = S2D.from_config
load_pretrained = S2D.load_pretrained
