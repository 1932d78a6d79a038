"""The authors' published FSRT checkpoint -> this implementation's state dict.

The authors (andrerochow/fsrt) distribute two files: ``kp_detector.pt``, the state dict of
FOMM's keypoint detector (``predictor.encoder.down_blocks.{i}.{conv,norm}``,
``predictor.decoder.up_blocks.{i}.{conv,norm}``, ``kp``, the anti-aliasing buffer
``down.weight``), and a model checkpoint (e.g. ``vox256.pt``) holding the state dicts
``encoder``, ``decoder`` and ``expression_encoder`` (plus training scalars). Their
transformer layers are ViT-style: ``transformer.layers.{l}.0`` = pre-norm attention with
fused ``to_qkv`` (self) or ``to_q`` + ``to_kv`` (cross) projections and ``to_out.0``,
``transformer.layers.{l}.1`` = pre-norm feed-forward ``fn.net.{0,3}``.

:func:`convert_official_state_dict` maps them onto :class:`~.network.FSRT` built from
``configs/paper_official.yaml`` (the paper config with FOMM's detector conventions,
``detector.fomm_head``): fused projections are split into Q / K / V, and the first patch-CNN
convolution's input channels are reordered (theirs: ``[rgb, gamma_key, gamma_pix, e]``,
ours: ``[rgb, gamma_pix, gamma_key, e]``, eq. 6). Their pixel grid is the pixel-centre grid
ours uses. :func:`load_official` reads the two files (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
import re

import torch

__all__ = ["convert_official_state_dict", "load_official", "read_detector_weights"]

_DETECTOR_DROP = ("down.weight",)      # FOMM's persistent anti-aliasing kernel (ours: buffer)


def read_detector_weights(path: str | os.PathLike) -> dict:
    """A FOMM keypoint-detector state dict from ``path`` (an asset name or file, resolved
    by :func:`facegeo.assets.resolve` without download; ``torch.load(weights_only=True)``):
    the authors' ``kp_detector.pt``, or a FOMM checkpoint holding ``kp_detector``. FOMM's
    Jacobian head (``jacobian.*``) and anti-aliasing buffer are dropped (FSRT uses
    neither). Returns ``{name: tensor}`` for ``KeypointDetector.load_state_dict``."""
    from facegeo import assets

    p = assets.resolve(path, download=False)
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "kp_detector" in sd:
        sd = sd["kp_detector"]
    if not isinstance(sd, dict) or "kp.weight" not in sd:
        raise ValueError(f"{p}: not a FOMM keypoint-detector state dict (no 'kp.weight')")
    return {k: v for k, v in sd.items()
            if not k.startswith("jacobian.") and k not in _DETECTOR_DROP}


def _need(sd: dict, key: str, where: str) -> torch.Tensor:
    if key not in sd:
        raise KeyError(f"{where}: missing {key!r} (not the authors' FSRT layout?)")
    return sd[key]


def _transformer(sd: dict, prefix: str, ours: str, *, cross: bool, where: str) -> dict:
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(m.group(1)) for k in sd
                     if (m := re.match(re.escape(prefix) + r"layers\.(\d+)\.", k))})
    if not layers:
        raise KeyError(f"{where}: no {prefix}layers.* keys")
    for li in layers:
        a, f = f"{prefix}layers.{li}.0.", f"{prefix}layers.{li}.1."
        blk = f"{ours}.{li}."
        att = "cross_attn" if cross else "self_attn"
        norm = "norm_cross" if cross else "norm_self"
        for t in ("weight", "bias"):
            out[f"{blk}{norm}.{t}"] = _need(sd, f"{a}norm.{t}", where)
            out[f"{blk}{att}.out_proj.{t}"] = _need(sd, f"{a}fn.to_out.0.{t}", where)
            out[f"{blk}norm_ff.{t}"] = _need(sd, f"{f}norm.{t}", where)
            out[f"{blk}ff.net.0.{t}"] = _need(sd, f"{f}fn.net.0.{t}", where)
            out[f"{blk}ff.net.3.{t}"] = _need(sd, f"{f}fn.net.3.{t}", where)
        if cross:
            q = _need(sd, f"{a}fn.to_q.weight", where)
            k, v = _need(sd, f"{a}fn.to_kv.weight", where).chunk(2, 0)
        else:
            q, k, v = _need(sd, f"{a}fn.to_qkv.weight", where).chunk(3, 0)
        out[f"{blk}{att}.q_proj.weight"] = q
        out[f"{blk}{att}.k_proj.weight"] = k
        out[f"{blk}{att}.v_proj.weight"] = v
    return out


def convert_official_state_dict(model: dict, kp_detector: dict, *, num_kp: int = 10,
                                pix_octaves: int = 16, kp_octaves: int = 4) -> dict:
    """Our FSRT state dict from the authors' ``{"encoder", "decoder", "expression_encoder"}``
    checkpoint dict and their ``kp_detector`` state dict.

    Args:
        model: the authors' checkpoint (the three sub-dicts; other entries are ignored).
        kp_detector: their FOMM detector state dict.
        num_kp, pix_octaves, kp_octaves: of the checkpoint's config (vox256: 10, 16, 4),
            for the channel layout of the encoder's input.

    Returns:
        ``{name: tensor}`` for ``FSRT.load_state_dict(strict=True)`` of
        ``configs/paper_official.yaml``.

    Raises:
        KeyError: a missing entry or an unmapped key (another layout).
    """
    for part in ("encoder", "decoder", "expression_encoder"):
        if part not in model:
            raise KeyError(f"checkpoint has no {part!r} state dict; keys: {sorted(model)}")
    enc, dec, exp = model["encoder"], model["decoder"], model["expression_encoder"]
    out: dict[str, torch.Tensor] = {}
    # keypoint detector (FOMM): same module names as the common Hourglass / KeypointDetector
    for k, v in kp_detector.items():
        if k in _DETECTOR_DROP:
            continue
        if not (k.startswith("predictor.") or k.startswith("kp.")):
            raise KeyError(f"kp_detector: unexpected key {k!r}")
        out[f"kpnet.detector.{k}"] = v
    # expression network
    for t in ("weight", "bias"):
        out[f"kpnet.expression_conv.{t}"] = _need(exp, f"expression.{t}", "expression_encoder")
    for k, v in exp.items():
        if k.startswith("expression_mlp."):
            out[f"kpnet.{k}"] = v
        elif not k.startswith("expression."):
            raise KeyError(f"expression_encoder: unexpected key {k!r}")
    # encoder: patch CNN (conv_blocks.{i}.layers.{0,2} -> conv.{4i, 4i + 2}), 1x1, blocks
    blocks = sorted({int(m.group(1)) for k in enc
                     if (m := re.match(r"conv_blocks\.(\d+)\.", k))})
    for i in blocks:
        for j in (0, 2):
            out[f"encoder.conv.{4 * i + j}.weight"] = _need(
                enc, f"conv_blocks.{i}.layers.{j}.weight", "encoder")
    w = out["encoder.conv.0.weight"]
    nk, npx = 4 * num_kp * kp_octaves, 4 * pix_octaves
    if w.shape[1] < 3 + nk + npx:
        raise KeyError(f"encoder: first conv has {w.shape[1]} input channels, fewer than "
                       f"3 + {nk} + {npx}")
    out["encoder.conv.0.weight"] = torch.cat(
        [w[:, :3], w[:, 3 + nk:3 + nk + npx], w[:, 3:3 + nk], w[:, 3 + nk + npx:]], 1)
    for t in ("weight", "bias"):
        out[f"encoder.per_patch.{t}"] = _need(enc, f"per_patch_linear.{t}", "encoder")
    out.update(_transformer(enc, "transformer.", "encoder.blocks", cross=False,
                            where="encoder"))
    # decoder
    at = "allocation_transformer."
    for j in (0, 2):
        for t in ("weight", "bias"):
            out[f"decoder.input_mlp.{j}.{t}"] = _need(dec, f"{at}input_mlp.{j}.{t}",
                                                      "decoder")
    out.update(_transformer(dec, f"{at}transformer.", "decoder.blocks", cross=True,
                            where="decoder"))
    for k, v in dec.items():
        if k.startswith("render_mlp."):
            out[f"decoder.{k}"] = v
    known = ("render_mlp.", f"{at}input_mlp.", f"{at}transformer.")
    extra = [k for k in dec if not k.startswith(known)]
    if extra:
        raise KeyError(f"decoder: unexpected keys {extra[:5]}")
    return out


def load_official(checkpoint: str | os.PathLike, kp_detector: str | os.PathLike,
                  device: str | torch.device = "cpu"):
    """An :class:`~.network.FSRT` (``paper_official`` config, eval mode) with the authors'
    weights from their checkpoint file and ``kp_detector.pt``."""
    from .network import FSRT

    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    kp = torch.load(kp_detector, map_location="cpu", weights_only=True)
    model = FSRT.from_config("paper_official")
    model.load_state_dict(convert_official_state_dict(ck, kp), strict=True)
    return model.to(device).eval()
