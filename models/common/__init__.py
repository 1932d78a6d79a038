"""Neural building blocks, losses, dataset and trainer shared by all reenactment models.

Sub-modules (imported lazily by the apps; import them directly):

* :mod:`.blocks` - down/up/res blocks, hourglass, anti-aliased pyramid, keypoint detector
  (soft-argmax, DSNT), warping, occlusion-aware generator
* :mod:`.attention` - positional / Fourier encodings, multi-head attention, transformer blocks
* :mod:`.losses` - the loss composer (weighted named terms from the phase config)
* :mod:`.task` - :class:`TrainingTask`: a model's own training step (networks, critics, targets)
* :mod:`.discriminator` - multi-scale patch discriminator, LSGAN / hinge / WGAN-GP losses,
  gradient penalty, feature matching
* :mod:`.perceptual` - VGG-19 multi-scale perceptual loss, MobileFaceNet face-feature loss
* :mod:`.model` - :class:`ReenactmentModel`, the one interface of the neural models
* :mod:`.config` - YAML configs with ``_base_`` inheritance and overrides
* :mod:`.registry` - model name -> class, configs, metadata; ``list_models()``
* :mod:`.checkpoint` - safetensors checkpoints with model card, safe loading
* :mod:`.sampling` - deterministic resumable rank-sharded batch sampler
* :mod:`.data` - (source, driving) video datasets, augmentation, preprocessing
* :mod:`.trainer` - config-driven trainer (phases, AMP, EMA, GAN, DDP, exact resume)
* :mod:`.testing` - tiny test-only model (``_test_tiny_warp``)

See docs/training.md.
"""

from .checkpoint import load_model, save_checkpoint
from .model import ReenactmentModel
from .registry import build_model, list_models, load_reenactor, model_info, register_model

__all__ = ["ReenactmentModel", "build_model", "register_model", "list_models", "model_info",
           "load_reenactor", "load_model", "save_checkpoint"]
