"""ldnet_fdgan: LD-Net landmark disentanglement + feature-dictionary GAN (model 4).

Xiang et al., "One-Shot Identity-Preserving Portrait Reenactment" (2020). Registered as
``"ldnet_fdgan"``; the interface is the common
:class:`~facegeo_models.common.model.ReenactmentModel`::

    from facegeo_models.ldnet_fdgan import LDNetFDGAN
    model = LDNetFDGAN.load_pretrained("runs/fdgan/checkpoints/step_00010000")
    # driven through facegeo.pipeline (it needs landmarks, not pixels, of the driver)

The new landmarks come from LD-Net (:mod:`facegeo.disentangle`, shipped weights), the exact
3DMM recombination of the pipeline, or the driver's raw landmarks (``front_end``). Bundled
configs (``configs/``): ``paper`` (256x256), ``cpu`` (128x128, narrower), ``tiny`` (tests).
See docs/models/ldnet_fdgan.md.
"""

from __future__ import annotations

from .network import (
    FDGAN,
    FRONT_ENDS,
    LANDMARK_ENCODINGS,
    FDGANSource,
    LDNetFDGAN,
    landmark_image,
    scale_landmarks,
)
from .task import FDGANTask

__all__ = ["LDNetFDGAN", "FDGAN", "FDGANSource", "FDGANTask", "FRONT_ENDS",
           "LANDMARK_ENCODINGS", "landmark_image", "scale_landmarks", "config_path",
           "from_config", "load_pretrained"]

config_path = LDNetFDGAN.config_path
from_config = LDNetFDGAN.from_config
load_pretrained = LDNetFDGAN.load_pretrained
