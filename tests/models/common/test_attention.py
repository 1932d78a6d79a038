"""models/common/attention.py against independent references: the encodings' formulas,
torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer / TransformerDecoderLayer
(pre-norm, GELU)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facegeo_models.common.attention import (
    MultiHeadAttention,
    PositionalAttention,
    TransformerBlock,
    fourier_encoding,
    sinusoidal_encoding,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sinusoidal_encoding_formula():
    pe = sinusoidal_encoding(7, 12, dtype=torch.float64)
    for p in range(7):
        for i in range(6):
            a = p / 10000 ** (2 * i / 12)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(a), abs=1e-12)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(a), abs=1e-12)
    with pytest.raises(ValueError):
        sinusoidal_encoding(3, 5)


def test_fourier_encoding_formula():
    x = torch.tensor([[0.25, -0.5, 0.1], [0.0, 1.0, -0.3]], dtype=torch.float64)
    enc = fourier_encoding(x, num_octaves=4, start_octave=-1)
    assert enc.shape == (2, 2 * 3 * 4)
    for b in range(2):
        for c in range(3):
            for j, octave in enumerate(range(-1, 3)):
                a = 2.0 ** octave * math.pi * x[b, c].item()
                assert enc[b, c * 4 + j].item() == pytest.approx(math.sin(a), abs=1e-12)
                assert enc[b, 12 + c * 4 + j].item() == pytest.approx(math.cos(a), abs=1e-12)
    # any leading shape: a (H, W, 2) pixel grid
    assert fourier_encoding(torch.zeros(4, 5, 2), 3).shape == (4, 5, 12)
    with pytest.raises(ValueError):
        fourier_encoding(x, 0)


def _copy_mha(att: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        if ref._qkv_same_embed_dim:
            ref.in_proj_weight.copy_(torch.cat([att.q_proj.weight, att.k_proj.weight,
                                                att.v_proj.weight]))
        else:
            ref.q_proj_weight.copy_(att.q_proj.weight)
            ref.k_proj_weight.copy_(att.k_proj.weight)
            ref.v_proj_weight.copy_(att.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]))
        ref.out_proj.weight.copy_(att.out_proj.weight)
        ref.out_proj.bias.copy_(att.out_proj.bias)


def test_attention_matches_torch_mha_including_cross_attention():
    torch.manual_seed(0)
    d, h = 32, 4
    att = MultiHeadAttention(d, h).eval()
    ref = nn.MultiheadAttention(d, h, batch_first=True).eval()
    _copy_mha(att, ref)
    q, k, v = torch.randn(2, 5, d), torch.randn(2, 6, d), torch.randn(2, 6, d)
    torch.testing.assert_close(att(q, k, v), ref(q, k, v, need_weights=False)[0],
                               atol=1e-5, rtol=1e-5)
    # keys / values of another width (kv_dim)
    att2 = MultiHeadAttention(d, h, kv_dim=20).eval()
    ref2 = nn.MultiheadAttention(d, h, kdim=20, vdim=20, batch_first=True).eval()
    _copy_mha(att2, ref2)
    mem = torch.randn(2, 9, 20)
    torch.testing.assert_close(att2(q, mem), ref2(q, mem, mem, need_weights=False)[0],
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        att2(q, k)


def test_positional_attention_matches_torch_mha():
    """pfp_mls eq. 2 with 4 heads == torch's MultiheadAttention applied to P(Q), P(K),
    P(V)."""
    torch.manual_seed(0)
    d, h = 32, 4
    att = PositionalAttention(d, h).eval()
    ref = nn.MultiheadAttention(d, h, batch_first=True).eval()
    _copy_mha(att, ref)
    q, k, v = torch.randn(2, 5, d), torch.randn(2, 6, d), torch.randn(2, 6, d)
    pe = sinusoidal_encoding(6, d)
    got = att(q, k, v)
    want = ref(q + pe[:5], k + pe, v + pe, need_weights=False)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the positional encoding makes attention order-aware: permuting the tokens of K, V
    # changes the output (it would not without P)
    perm = torch.tensor([1, 0, 2, 3, 4, 5])
    assert (att(q, k[:, perm], v[:, perm]) - got).abs().max() > 1e-3
    plain = MultiHeadAttention(d, h).eval()
    plain.load_state_dict(att.state_dict())
    torch.testing.assert_close(plain(q, k[:, perm], v[:, perm]), plain(q, k, v),
                               atol=1e-6, rtol=1e-6)


def _copy_block(blk: TransformerBlock, ref: nn.Module) -> None:
    _copy_mha(blk.self_attn, ref.self_attn)
    with torch.no_grad():
        ref.linear1.load_state_dict(blk.ff.net[0].state_dict())
        ref.linear2.load_state_dict(blk.ff.net[3].state_dict())
        ref.norm1.load_state_dict(blk.norm_self.state_dict())
        last = ref.norm2
        if blk.cross_attn is not None:
            _copy_mha(blk.cross_attn, ref.multihead_attn)
            ref.norm2.load_state_dict(blk.norm_cross.state_dict())
            last = ref.norm3
        last.load_state_dict(blk.norm_ff.state_dict())


def test_transformer_block_matches_torch_pre_norm_layers():
    torch.manual_seed(1)
    d, h, ff = 24, 4, 40
    x, mem = torch.randn(2, 7, d), torch.randn(2, 5, d)
    enc = TransformerBlock(d, h, ff).eval()
    for p in enc.parameters():  # non-trivial LayerNorm parameters too
        nn.init.normal_(p, 0, 0.3)
    ref = nn.TransformerEncoderLayer(d, h, ff, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=True).eval()
    _copy_block(enc, ref)
    torch.testing.assert_close(enc(x), ref(x), atol=1e-5, rtol=1e-5)
    dec = TransformerBlock(d, h, ff, memory_dim=d).eval()
    for p in dec.parameters():
        nn.init.normal_(p, 0, 0.3)
    ref = nn.TransformerDecoderLayer(d, h, ff, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=True).eval()
    _copy_block(dec, ref)
    torch.testing.assert_close(dec(x, mem), ref(x, mem), atol=1e-5, rtol=1e-5)
    # cross-attention only (FSRT's decoder): the output depends on the memory, per sample
    xa = TransformerBlock(d, h, ff, self_attention=False, memory_dim=16).eval()
    m = torch.randn(2, 5, 16)
    y = xa(x, m)
    m2 = m.clone()
    m2[0] += 1
    y2 = xa(x, m2)
    assert (y2[0] - y[0]).abs().max() > 1e-4 and torch.equal(y2[1], y[1])
    with pytest.raises(ValueError):
        xa(x)
    with pytest.raises(ValueError):
        enc(x, mem)
    with pytest.raises(ValueError):
        TransformerBlock(d, h, self_attention=False)
