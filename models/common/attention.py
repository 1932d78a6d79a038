"""Attention blocks and positional encodings shared by the transformer models.

* :func:`sinusoidal_encoding` - Vaswani et al.'s token-index encoding (L, D).
* :func:`fourier_encoding` - NeRF / SRT-style encoding of continuous coordinates
  (pixel positions, ray directions): sines and cosines at octave frequencies.
* :class:`MultiHeadAttention` - scaled-dot-product attention with separate Q/K/V/out
  projections (keys and values may have another width, for cross-attention);
  :class:`PositionalAttention` adds a sinusoidal encoding to its inputs first (pfp_mls).
* :class:`PositionwiseFeedForward` - the per-token MLP (ReLU or GELU).
* :class:`EncoderLayer`, :class:`DecoderLayer` - the pfp_mls transformer layers
  (positional attention, pre-norm residual sub-layers, a final LayerNorm; the decoder's
  co-attention comes after its feed-forward sub-layer, as that paper describes it).
* :class:`TransformerBlock` - the plain pre-LayerNorm block (optional self-attention,
  optional cross-attention to a memory, feed-forward), as SRT / FSRT use.

All sequence tensors are batch first: (B, L, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "sinusoidal_encoding",
    "fourier_encoding",
    "MultiHeadAttention",
    "PositionalAttention",
    "PositionwiseFeedForward",
    "EncoderLayer",
    "DecoderLayer",
    "TransformerBlock",
]


# ----------------------------------------------------------------------- encodings
def sinusoidal_encoding(length: int, dim: int, *, device=None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal positional encoding of Vaswani et al.: (length, dim) with
    ``PE[p, 2i] = sin(p / 10000^(2i/dim))`` and ``PE[p, 2i+1] = cos(p / 10000^(2i/dim))``."""
    if length < 1 or dim < 2 or dim % 2:
        raise ValueError(f"need length >= 1 and an even dim >= 2, got {length}, {dim}")
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    inv = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(length, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe.to(device=device, dtype=dtype)


def fourier_encoding(x: torch.Tensor, num_octaves: int = 8, start_octave: int = 0
                     ) -> torch.Tensor:
    """NeRF / SRT positional encoding of continuous coordinates.

    (..., C) -> (..., 2 * C * L), L = ``num_octaves``: first the sines, then the cosines,
    each ordered coordinate-major: ``out[..., c*L + l] = sin(2^(start+l) * pi * x_c)`` and
    ``out[..., C*L + c*L + l] = cos(2^(start+l) * pi * x_c)``. With normalized pixel
    coordinates (:func:`~facegeo_models.common.blocks.coordinate_grid`) this is FSRT's
    pixel encoding.
    """
    if num_octaves < 1:
        raise ValueError(f"num_octaves must be >= 1, got {num_octaves}")
    octaves = torch.arange(start_octave, start_octave + num_octaves, device=x.device)
    freq = (2.0 ** octaves).to(x.dtype) * math.pi
    scaled = (x.unsqueeze(-1) * freq).flatten(-2)
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1)


# ----------------------------------------------------------------------- attention
class MultiHeadAttention(nn.Module):
    """Multi-head scaled-dot-product attention (Vaswani et al.): separate linear projections
    of Q, K, V into ``heads`` heads of ``dim // heads``, softmax(QK^T / sqrt(d_k)) V per head,
    heads concatenated and mixed by ``out_proj``. Equal to ``torch.nn.MultiheadAttention``
    with the same weights (tested).

    Args:
        dim: query / output width D.
        heads: number of heads (divides D).
        dropout: attention dropout (training only).
        kv_dim: width of keys and values (default D), for cross-attention to a memory of
            another width.
        bias: biases of the four projections.
        inner_dim: width of the projected Q, K, V (heads x head width; default D), e.g.
            FSRT's decoder: queries of width 480 attend in 12 heads of 64 (768).
        qkv_bias: biases of the Q, K, V projections (default: ``bias``); SRT / FSRT use
            none there and a biased output projection.

    forward(query (B, Lq, D), key (B, Lk, D_kv), value (B, Lk, D_kv) = key) -> (B, Lq, D).
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0, *,
                 kv_dim: int | None = None, bias: bool = True, inner_dim: int | None = None,
                 qkv_bias: bool | None = None):
        super().__init__()
        inner = dim if inner_dim is None else int(inner_dim)
        if inner % heads:
            raise ValueError(f"{'dim' if inner_dim is None else 'inner_dim'} {inner} must be "
                             f"divisible by heads {heads}")
        kv_dim = dim if kv_dim is None else kv_dim
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.dim, self.kv_dim, self.heads, self.d_k = dim, kv_dim, heads, inner // heads
        self.inner_dim = inner
        self.q_proj = nn.Linear(dim, inner, bias=qkv_bias)
        self.k_proj = nn.Linear(kv_dim, inner, bias=qkv_bias)
        self.v_proj = nn.Linear(kv_dim, inner, bias=qkv_bias)
        self.out_proj = nn.Linear(inner, dim, bias=bias)
        self.dropout = dropout

    def _check(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        if (query.dim() != 3 or query.shape[-1] != self.dim or key.shape[-1] != self.kv_dim
                or value.shape != key.shape or key.shape[0] != query.shape[0]):
            raise ValueError(f"attention inputs must be (B, Lq, {self.dim}), (B, Lk, "
                             f"{self.kv_dim}) x 2, got {tuple(query.shape)}, "
                             f"{tuple(key.shape)}, {tuple(value.shape)}")

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
               ) -> torch.Tensor:
        """The attention of already checked (and encoded) inputs."""
        b, lq, _ = query.shape
        lk, d = key.shape[1], self.inner_dim
        q = self.q_proj(query).view(b, lq, self.heads, self.d_k).transpose(1, 2)
        k = self.k_proj(key).view(b, lk, self.heads, self.d_k).transpose(1, 2)
        v = self.v_proj(value).view(b, lk, self.heads, self.d_k).transpose(1, 2)
        att = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(att.transpose(1, 2).reshape(b, lq, d))

    def forward(self, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor | None = None) -> torch.Tensor:
        value = key if value is None else value
        self._check(query, key, value)
        return self.attend(query, key, value)


class PositionalAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` applied to position-encoded inputs, pfp_mls eq. (2):
    ``A(Q, K, V) = softmax(P(Q) P(K)^T / sqrt(d_k)) P(V)`` with ``P(X) = X + PE``
    (:func:`sinusoidal_encoding` over the token index), per head.

    forward(query (B, Lq, D), key (B, Lk, D), value (B, Lk, D) = key) -> (B, Lq, D);
    Lq, Lk <= ``max_len``.
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0, max_len: int = 256):
        super().__init__(dim, heads, dropout)
        self.register_buffer("pe", sinusoidal_encoding(max_len, dim), persistent=False)

    def forward(self, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor | None = None) -> torch.Tensor:
        value = key if value is None else value
        self._check(query, key, value)
        lq, lk = query.shape[1], key.shape[1]
        if max(lq, lk) > self.pe.shape[0]:
            raise ValueError(f"sequence longer than max_len={self.pe.shape[0]}")
        pe = self.pe.to(query.dtype)
        return self.attend(query + pe[:lq], key + pe[:lk], value + pe[:lk])


class PositionwiseFeedForward(nn.Module):
    """Linear(D, d_ff) -> activation (``relu`` or ``gelu``) -> dropout -> Linear(d_ff, D),
    applied to every token. (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        acts = {"relu": nn.ReLU, "gelu": nn.GELU}
        if activation not in acts:
            raise ValueError(f"unknown activation {activation!r}; expected {sorted(acts)}")
        self.net = nn.Sequential(nn.Linear(dim, d_ff), acts[activation](), nn.Dropout(dropout),
                                 nn.Linear(d_ff, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# -------------------------------------------------------------------------- layers
class EncoderLayer(nn.Module):
    """Positional self-attention and feed-forward sub-layers, each
    ``x + drop(sub(LayerNorm(x)))``, followed by a final LayerNorm. (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, d_ff: int, dropout: float = 0.0,
                 max_len: int = 256):
        super().__init__()
        self.self_attn = PositionalAttention(dim, heads, dropout, max_len)
        self.ff = PositionwiseFeedForward(dim, d_ff, dropout)
        self.norm1, self.norm2, self.norm_out = (nn.LayerNorm(dim) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, h))
        x = x + self.drop(self.ff(self.norm2(x)))
        return self.norm_out(x)


class DecoderLayer(nn.Module):
    """Positional self-attention, feed-forward, then co-attention whose query is the output
    of those first two sub-layers and whose key and value are the encoder output
    (``memory``), as pfp_mls describes its decoder; pre-norm residual sub-layers and a
    final LayerNorm.

    forward(x (B, L, D), memory (B, Lm, D)) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, d_ff: int, dropout: float = 0.0,
                 max_len: int = 256):
        super().__init__()
        self.self_attn = PositionalAttention(dim, heads, dropout, max_len)
        self.ff = PositionwiseFeedForward(dim, d_ff, dropout)
        self.co_attn = PositionalAttention(dim, heads, dropout, max_len)
        self.norm1, self.norm2, self.norm3, self.norm_out = (nn.LayerNorm(dim)
                                                             for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, h))
        x = x + self.drop(self.ff(self.norm2(x)))
        x = x + self.drop(self.co_attn(self.norm3(x), memory, memory))
        return self.norm_out(x)


class TransformerBlock(nn.Module):
    """Plain pre-LayerNorm transformer block (SRT / FSRT)::

        x = x + SelfAttn(LN(x))              (self_attention)
        x = x + CrossAttn(LN(x), memory)     (memory_dim given)
        x = x + FF(LN(x))

    Args:
        dim: token width D; heads; d_ff: hidden width of the feed-forward part.
        self_attention: include the self-attention sub-layer (FSRT's decoder has none).
        memory_dim: width of the memory for a cross-attention sub-layer (None: no
            cross-attention).
        activation: of the feed-forward part (``gelu`` as SRT).
        inner_dim, qkv_bias: of both attentions (:class:`MultiHeadAttention`; defaults:
            D and biased, as before).

    forward(x (B, L, D), memory (B, Lm, memory_dim) | None) -> (B, L, D).
    """

    def __init__(self, dim: int, heads: int = 8, d_ff: int | None = None,
                 dropout: float = 0.0, *, self_attention: bool = True,
                 memory_dim: int | None = None, activation: str = "gelu",
                 inner_dim: int | None = None, qkv_bias: bool | None = None):
        super().__init__()
        if not self_attention and memory_dim is None:
            raise ValueError("a TransformerBlock needs self-attention or a memory_dim")
        kw = {"inner_dim": inner_dim, "qkv_bias": qkv_bias}
        self.self_attn = (MultiHeadAttention(dim, heads, dropout, **kw) if self_attention
                          else None)
        self.norm_self = nn.LayerNorm(dim) if self_attention else None
        self.cross_attn = (MultiHeadAttention(dim, heads, dropout, kv_dim=memory_dim, **kw)
                           if memory_dim is not None else None)
        self.norm_cross = nn.LayerNorm(dim) if memory_dim is not None else None
        self.ff = PositionwiseFeedForward(dim, d_ff or 4 * dim, dropout, activation)
        self.norm_ff = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        if self.self_attn is not None:
            h = self.norm_self(x)
            x = x + self.drop(self.self_attn(h, h, h))
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this TransformerBlock cross-attends: pass a memory")
            x = x + self.drop(self.cross_attn(self.norm_cross(x), memory, memory))
        elif memory is not None:
            raise ValueError("this TransformerBlock has no cross-attention (memory_dim=None)")
        return x + self.drop(self.ff(self.norm_ff(x)))
