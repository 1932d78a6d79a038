"""NTM-style feature dictionary: content-addressed write and read of a memory matrix.

The feature dictionary of FD-GAN (Xiang et al., "One-Shot Identity-Preserving Portrait
Reenactment", sec. 3.2, eqs. 8-9), a memory bank as in the Neural Turing Machine (Graves et
al. 2014). A dictionary has ``n`` rows; row ``i`` has a learnable *write tag* ``t_i`` and
*read tag* ``u_i`` (length ``m_T``) and a *value* ``v_i`` (length ``m_V``) computed from an
image:

* write (eq. 8), a softmax over the spatial locations ``N`` for each row::

      v_i = sum_n x_n exp(t_i . p_n) / sum_n exp(t_i . p_n)

  with write keys ``p_n`` (m_T) and write values ``x_n`` (m_V) at each location ``n``;
* read (eq. 9), a softmax over the rows for each location::

      y_j = sum_k v_k exp(u_k . q_j) / sum_k exp(u_k . q_j)

  with read keys ``q_j`` (m_T) at each location ``j``.

Functions (:func:`dictionary_write`, :func:`dictionary_read`) and modules
(:class:`DictionaryWriter`: keys and values from 1x1 convolutions; :class:`DictionaryReader`:
read keys from a 1x1 convolution, the read values added back to the input as in a residual
block, as the FD-GAN supplement specifies). The one-row variants of the paper's Table 3
ablations (FD-GAN-1: the value is the mean feature; AdaIN: the mean feature gives AdaIN
parameters) are :func:`mean_write`, and :class:`DictionaryReader` ``kind="adain"``.

Logits are computed in float32 (also under autocast): the softmaxes run over up to
128 x 128 locations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["dictionary_write", "dictionary_read", "mean_write", "DictionaryWriter",
           "DictionaryReader", "DICTIONARY_KINDS"]

#: ``full``: the paper's n-row dictionary; ``mean``: FD-GAN-1 (one row, the mean feature,
#: read back everywhere); ``adain``: one row (the mean feature) mapped to AdaIN parameters.
DICTIONARY_KINDS = ("full", "mean", "adain")


def _check_map(x: torch.Tensor, name: str, channels: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got {x.shape[1]}")


def dictionary_write(tags: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
                     ) -> torch.Tensor:
    """Eq. 8: each row's value is the softmax(t_i . p_n over locations n)-weighted mean of
    the write values.

    Args:
        tags: (n, m_T) write tags.
        keys: (B, m_T, H, W) write keys p.
        values: (B, m_V, H, W) write values x.

    Returns:
        (B, n, m_V) dictionary values (float32 when the inputs are half precision).
    """
    _check_map(keys, "keys", tags.shape[-1] if tags.dim() == 2 else None)
    _check_map(values, "values")
    if tags.dim() != 2:
        raise ValueError(f"tags must be (n, m_T), got {tuple(tags.shape)}")
    if keys.shape[0] != values.shape[0] or keys.shape[-2:] != values.shape[-2:]:
        raise ValueError(f"keys {tuple(keys.shape)} and values {tuple(values.shape)} must "
                         "share batch and spatial size")
    with torch.autocast(keys.device.type, enabled=False):
        p = keys.float().flatten(2)                        # (B, m_T, N)
        x = values.float().flatten(2)                      # (B, m_V, N)
        logits = torch.einsum("im,bmn->bin", tags.float(), p)   # (B, n, N)
        w = logits.softmax(dim=-1)                         # over locations, per row
        return torch.einsum("bin,bvn->biv", w, x)          # (B, n, m_V)


def dictionary_read(tags: torch.Tensor, keys: torch.Tensor, dictionary: torch.Tensor
                    ) -> torch.Tensor:
    """Eq. 9: each location reads the softmax(u_k . q_j over rows k)-weighted mean of the
    rows.

    Args:
        tags: (n, m_T) read tags.
        keys: (B, m_T, H, W) read keys q.
        dictionary: (B, n, m_V) values written by :func:`dictionary_write`.

    Returns:
        (B, m_V, H, W) read values (float32).
    """
    _check_map(keys, "keys", tags.shape[-1] if tags.dim() == 2 else None)
    if tags.dim() != 2:
        raise ValueError(f"tags must be (n, m_T), got {tuple(tags.shape)}")
    if dictionary.dim() != 3 or dictionary.shape[1] != tags.shape[0] or \
            dictionary.shape[0] != keys.shape[0]:
        raise ValueError(f"dictionary must be (B={keys.shape[0]}, n={tags.shape[0]}, m_V), "
                         f"got {tuple(dictionary.shape)}")
    b, _, h, w = keys.shape
    with torch.autocast(keys.device.type, enabled=False):
        q = keys.float().flatten(2)                        # (B, m_T, N)
        logits = torch.einsum("km,bmn->bnk", tags.float(), q)   # (B, N, n)
        a = logits.softmax(dim=-1)                         # over rows, per location
        y = torch.einsum("bnk,bkv->bvn", a, dictionary.float())
    return y.reshape(b, -1, h, w)


def mean_write(values: torch.Tensor) -> torch.Tensor:
    """The one-row dictionary of FD-GAN-1 / AdaIN: the spatial mean of the write values.
    (B, m_V, H, W) -> (B, 1, m_V)."""
    _check_map(values, "values")
    return values.float().mean(dim=(2, 3))[:, None, :]


class DictionaryWriter(nn.Module):
    """Write keys and values from 1x1 convolutions of the input, then eq. 8.

    Args:
        in_channels: C of the input feature map.
        rows: n (``kind="full"``; the one-row kinds ignore it).
        value_dim: m_V (FD-GAN: the level's width).
        tag_dim: m_T (FD-GAN: 32).
        kind: one of :data:`DICTIONARY_KINDS`; ``mean`` / ``adain`` write the spatial mean
            of the 1x1-convolved values (no keys, no tags).

    forward(x (B, C, H, W)) -> (B, n, m_V) (n = 1 for the one-row kinds).

    Tags are initialised N(0, 1/m_T) so that the initial logits t . p have the spread of
    one key entry; the equations use no temperature (none is written in the paper).
    """

    def __init__(self, in_channels: int, rows: int, value_dim: int, tag_dim: int = 32,
                 kind: str = "full"):
        super().__init__()
        if kind not in DICTIONARY_KINDS:
            raise ValueError(f"unknown dictionary kind {kind!r}; expected {DICTIONARY_KINDS}")
        if rows < 1 or value_dim < 1 or tag_dim < 1:
            raise ValueError(f"rows, value_dim and tag_dim must be >= 1, got {rows}, "
                             f"{value_dim}, {tag_dim}")
        self.kind, self.rows = kind, rows if kind == "full" else 1
        self.value = nn.Conv2d(in_channels, value_dim, 1)
        if kind == "full":
            self.key = nn.Conv2d(in_channels, tag_dim, 1)
            self.tags = nn.Parameter(torch.randn(rows, tag_dim) / math.sqrt(tag_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_map(x, "writer input", self.value.in_channels)
        if self.kind != "full":
            return mean_write(self.value(x))
        return dictionary_write(self.tags, self.key(x), self.value(x))


class DictionaryReader(nn.Module):
    """Read keys from a 1x1 convolution of the input, eq. 9, the read values added back to
    the input (residual).

    Args:
        in_channels: C of the input feature map (= m_V of the dictionary it reads, for the
            residual sum).
        rows: n of the dictionary (``kind="full"``).
        tag_dim: m_T.
        kind: ``full`` (eq. 9), ``mean`` (one row: the value is added at every location),
            ``adain`` (one row: a linear map of the value gives a per-channel scale and
            shift of the instance-normalised input, which replaces it:
            ``IN(x) (1 + g) + b``, Huang & Belongie 2017; no residual sum).

    forward(x (B, C, H, W), dictionary (B, n, C)) -> (B, C, H, W):
    ``x + read(x, dictionary)`` (full, mean) or the AdaIN output (adain).
    """

    def __init__(self, in_channels: int, rows: int, tag_dim: int = 32, kind: str = "full"):
        super().__init__()
        if kind not in DICTIONARY_KINDS:
            raise ValueError(f"unknown dictionary kind {kind!r}; expected {DICTIONARY_KINDS}")
        self.kind, self.rows, self.channels = kind, rows if kind == "full" else 1, in_channels
        if kind == "full":
            self.key = nn.Conv2d(in_channels, tag_dim, 1)
            self.tags = nn.Parameter(torch.randn(rows, tag_dim) / math.sqrt(tag_dim))
        elif kind == "adain":
            self.affine = nn.Linear(in_channels, 2 * in_channels)
            nn.init.zeros_(self.affine.weight)
            nn.init.zeros_(self.affine.bias)

    def read(self, x: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
        """The read values alone (before the residual sum; adain: its output):
        (B, C, H, W)."""
        _check_map(x, "reader input", self.channels)
        if dictionary.dim() != 3 or dictionary.shape[1:] != (self.rows, self.channels):
            raise ValueError(f"dictionary must be (B, {self.rows}, {self.channels}), got "
                             f"{tuple(dictionary.shape)}")
        if self.kind == "full":
            return dictionary_read(self.tags, self.key(x), dictionary).to(x.dtype)
        v = dictionary[:, 0].to(x.dtype)                     # (B, C)
        if self.kind == "mean":
            return v[:, :, None, None].expand_as(x)
        g, b = self.affine(v).chunk(2, dim=1)
        return F.instance_norm(x) * (1 + g[:, :, None, None]) + b[:, :, None, None]

    def forward(self, x: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
        y = self.read(x, dictionary)
        return y if self.kind == "adain" else x + y
