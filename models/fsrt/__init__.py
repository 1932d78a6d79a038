"""fsrt: the Facial Scene Representation Transformer (Rochow et al., CVPR 2024).

Registered as ``"fsrt"``; the interface is the common
:class:`~facegeo_models.common.model.ReenactmentModel`::

    from facegeo_models.fsrt import FSRT
    model = FSRT.load_pretrained("runs/fsrt/checkpoints/step_00010000")
    state = model.encode_source(sources)            # (N, 3, H, W): one set-latent
    frames = model.reenact(state, driving)          # (B, 3, H, W) in [0, 1]

Bundled configs (``configs/``): ``paper`` (256x256, the paper's widths), ``paper_small``
(the small decoder), ``paper_2src`` (two sources per sample), ``paper_landmarks``
(keypoints from the facegeo landmarks),
``paper_official`` (FOMM's detector conventions, for the authors' weights:
:func:`load_official`), ``cpu``
(the same architecture, narrow, 64x64, for a CPU run), ``cpu_landmarks``, ``tiny`` (tests).
See docs/models/fsrt.md.
"""

from __future__ import annotations

from .convert import convert_official_state_dict, load_official
from .losses import covariance_loss, expression_distance, variance_hinge_loss
from .network import FSRT, KeypointExpressionNet, PixelDecoder, SetLatentEncoder
from .task import FSRTTask

__all__ = ["FSRT", "FSRTTask", "KeypointExpressionNet", "SetLatentEncoder", "PixelDecoder",
           "covariance_loss", "expression_distance", "variance_hinge_loss",
           "convert_official_state_dict", "load_official", "config_path",
           "from_config", "load_pretrained"]

config_path = FSRT.config_path
from_config = FSRT.from_config
load_pretrained = FSRT.load_pretrained
