"""Combine the identity of one face with the pose and expression of another, on 68 landmarks.

Two methods (see ``docs/disentangle.md``):

* ``"ldnet"``: the landmark disentanglement network of the LD-Net/FD-GAN paper (sec. 3.1),
  trained on landmarks synthesised from the ICT-FaceKit 3DMM (:mod:`.data`, :mod:`.ldnet`,
  :mod:`.train`); shipped weights ``data/ldnet/ldnet.safetensors``;
* ``"3dmm"``: exact model-based recombination: fit both faces with :mod:`facegeo.fitting`, keep
  the target's identity coefficients, take the driver's expression and pose (:mod:`.recombine`).

Entry point: :func:`disentangle_landmarks`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facegeo.disentangle.data import (
    LandmarkSynth,
    SynthBatch,
    check_landmarks,
    denormalize_landmarks,
    normalize_landmarks,
)
from facegeo.disentangle.ldnet import (
    MLP,
    LDNet,
    LDNetConfig,
    LDNetTrainer,
    load_inference_weights,
    save_inference_weights,
)
from facegeo.disentangle.recombine import recombine_3dmm

__all__ = [
    "disentangle_landmarks",
    "load_ldnet",
    "LandmarkSynth",
    "SynthBatch",
    "normalize_landmarks",
    "denormalize_landmarks",
    "check_landmarks",
    "LDNet",
    "LDNetConfig",
    "LDNetTrainer",
    "MLP",
    "load_inference_weights",
    "save_inference_weights",
    "recombine_3dmm",
    "DEFAULT_WEIGHTS",
]

#: path of the shipped weights, relative to the project's data folder.
DEFAULT_WEIGHTS = "ldnet/ldnet.safetensors"

_CACHE: dict = {}


def load_ldnet(path: str | Path | None = None, device: str | torch.device = "cpu") -> LDNet:
    """The trained LD-Net (``E_P``, ``E_I``, ``G``), cached per (path, device).

    ``path=None`` loads the shipped weights (``facegeo.assets.data_path(DEFAULT_WEIGHTS)``).
    The returned module is in eval mode with gradients disabled; ``net.metadata`` holds the
    training record written into the file."""
    from facegeo.assets import data_path

    p = Path(path) if path is not None else data_path(DEFAULT_WEIGHTS)
    key = (str(p.resolve()), str(torch.device(device)))
    if key not in _CACHE:
        _CACHE[key] = load_inference_weights(p, device=device)
    return _CACHE[key]


def disentangle_landmarks(target_lm: torch.Tensor, driving_lm: torch.Tensor,
                          method: str = "ldnet", *, net: LDNet | None = None,
                          weights: str | Path | None = None, model=None,
                          fit_kwargs: dict | None = None) -> torch.Tensor:
    """Landmarks with the identity of ``target_lm`` and the pose/expression of ``driving_lm``.

    Args:
        target_lm: (B, 68, 2) (or (1, 68, 2), broadcast over the driving batch) pixel landmarks
            of the target (identity) faces, iBUG-68 order, x right, y down.
        driving_lm: (B, 68, 2) pixel landmarks of the driving faces (their own image frame).
        method: ``"ldnet"`` (learned, on normalised landmarks) or ``"3dmm"`` (fit both faces
            with :func:`facegeo.fitting.fit_landmarks`, swap identity).
        net: an :class:`LDNet` to use instead of the shipped one; ``weights``: path of another
            weight file.
        model: :class:`~facegeo.morphable.MorphableModel` for ``"3dmm"`` (default ICT).
        fit_kwargs: extra arguments of :func:`facegeo.fitting.fit_landmarks` (``"3dmm"``).

    Returns:
        (B, 68, 2) landmarks in the TARGET image's pixel frame, defined exactly as: the result
        ``r`` in the normalised frame (square bounding box -> [-1, 1], see
        :func:`normalize_landmarks`) is mapped with the target's own box,
        ``out = c_T + h_T * r`` where ``(c_T, h_T)`` are the centre and half-side of
        ``target_lm``'s square bounding box. So the output's square bounding box equals the
        target's (both methods: the result is re-normalised before the mapping), and the
        driver's head translation and scale in its own image are not transferred (only its
        rotation, expression and perspective).

    Raises:
        ValueError: bad shapes / batch sizes, NaN, unknown method. TypeError: non-tensor input.
    """
    t = check_landmarks(target_lm, "target_lm")
    d = check_landmarks(driving_lm, "driving_lm")
    if t.shape[0] == 1 and d.shape[0] > 1:
        t = t.expand(d.shape[0], 68, 2)
    if t.shape[0] != d.shape[0]:
        raise ValueError(f"target_lm has batch {t.shape[0]} but driving_lm has {d.shape[0]} "
                         "(target may have batch 1)")
    if t.device != d.device:
        raise ValueError(f"target_lm is on {t.device} but driving_lm on {d.device}")
    t_n, c_t, h_t = normalize_landmarks(t)
    if method == "ldnet":
        if net is None:
            net = load_ldnet(weights, device=t.device)
        pdt = next(net.parameters()).dtype
        d_n = normalize_landmarks(d)[0]
        with torch.no_grad():
            r = net(t_n.to(pdt), d_n.to(pdt)).to(t.dtype)
        # re-normalise so that the output box is exactly the target's box
        r = normalize_landmarks(r)[0]
    elif method == "3dmm":
        r = recombine_3dmm(t, d, model, **(fit_kwargs or {}))
        r = normalize_landmarks(r.to(t.dtype))[0]
    else:
        raise ValueError(f"method must be 'ldnet' or '3dmm', got {method!r}")
    return denormalize_landmarks(r, c_t, h_t)
