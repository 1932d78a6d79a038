"""meshg: mesh-guided one-shot face reenactment with graph convolutional networks.

Yao, Yuan, Shao, Zhou (ACM MM 2020). Registered as ``"meshg"``
(:mod:`facegeo_models.common.registry`) on the common
:class:`~facegeo_models.common.model.ReenactmentModel` interface; it consumes the
pipeline's 3DMM fits (``requires = {"morphable_fit", "image"}``)::

    from facegeo_models.meshg import MeshG
    model = MeshG.load_pretrained("runs/meshg/checkpoints/step_00010000", "cpu")
    # sources / driving: facegeo.pipeline.Conditioning with morphable_fit (the pipeline's)

Bundled configs (``configs/``): ``paper`` (256x256, the full ICT-FaceKit mesh), ``cpu``
(128x128, trainable on a 2-core CPU), ``tiny`` (tests). See docs/models/meshg.md.
"""

from __future__ import annotations

from .losses import CoefficientRegressor, MeshGTask, coefficient_loss, coefficient_targets
from .network import MeshG, MeshMotionEncoder, MeshRegression, fits_from_batch, mesh_topology

__all__ = ["MeshG", "MeshRegression", "MeshMotionEncoder", "MeshGTask",
           "CoefficientRegressor", "coefficient_loss", "coefficient_targets",
           "fits_from_batch", "mesh_topology", "config_path", "from_config",
           "load_pretrained"]

config_path = MeshG.config_path
from_config = MeshG.from_config
load_pretrained = MeshG.load_pretrained
