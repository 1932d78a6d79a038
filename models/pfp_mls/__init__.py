"""pfp_mls: one-shot reenactment with paired feature points and weighted MLS motion.

Registered as ``"pfp_mls"`` (:mod:`facegeo_models.common.registry`); the interface is the
common :class:`~facegeo_models.common.model.ReenactmentModel`::

    from facegeo_models.pfp_mls import PFPMLS
    model = PFPMLS.load_pretrained("runs/pfp/checkpoints/step_00100000", "cuda")
    frames = model.reenact(source, driving)        # (1, 3, H, W), (B, 3, H, W) in [0, 1]

Bundled configs (``configs/``): ``paper`` (256x256, N = 10), ``cpu128`` (the paper
architecture at 128x128 for training without a GPU), ``cpu`` (cpu128 with 16x16 heat-maps:
the shipped weights, 5.3 M parameters), ``tiny`` (CPU tests).
See docs/models/pfp_mls.md.
"""

from __future__ import annotations

from .losses import motion_loss, perturb_one_point, spreading_loss, total_loss
from .network import PFPMLS

__all__ = ["PFPMLS", "config_path", "from_config", "load_pretrained", "motion_loss",
           "spreading_loss", "perturb_one_point", "total_loss"]

config_path = PFPMLS.config_path
from_config = PFPMLS.from_config
load_pretrained = PFPMLS.load_pretrained
