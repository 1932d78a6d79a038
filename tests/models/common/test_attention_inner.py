"""models/common/attention.py: the inner width (heads x head width != D) and bias-free
Q/K/V projections that FSRT's decoder uses, against a naive einsum reference; the
default arguments keep the former layout (same parameter names and shapes)."""

from __future__ import annotations

import math

import pytest
import torch

from facegeo_models.common.attention import MultiHeadAttention, TransformerBlock

pytestmark = pytest.mark.usefixtures("one_thread")


def _naive(att: MultiHeadAttention, q_in, kv_in):
    """Per-head attention written with explicit einsums over the projection weights."""
    h, dk = att.heads, att.d_k

    def proj(lin, x):
        y = torch.einsum("bld,ed->ble", x, lin.weight)
        return y if lin.bias is None else y + lin.bias

    q = proj(att.q_proj, q_in).unflatten(-1, (h, dk))
    k = proj(att.k_proj, kv_in).unflatten(-1, (h, dk))
    v = proj(att.v_proj, kv_in).unflatten(-1, (h, dk))
    w = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dk), dim=-1)
    o = torch.einsum("bhqk,bkhd->bqhd", w, v).flatten(-2)
    return proj(att.out_proj, o)


def test_inner_dim_cross_attention_matches_naive_reference():
    torch.manual_seed(0)
    att = MultiHeadAttention(20, heads=3, kv_dim=12, inner_dim=3 * 8, qkv_bias=False).eval()
    assert att.q_proj.weight.shape == (24, 20) and att.k_proj.weight.shape == (24, 12)
    assert att.q_proj.bias is None and att.out_proj.bias is not None
    assert att.out_proj.weight.shape == (20, 24)
    q, kv = torch.randn(2, 7, 20), torch.randn(2, 5, 12)
    torch.testing.assert_close(att(q, kv), _naive(att, q, kv), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="inner_dim"):
        MultiHeadAttention(20, heads=3, inner_dim=25)


def test_defaults_keep_the_former_layout():
    att = MultiHeadAttention(16, heads=4)
    assert att.d_k == 4 and att.inner_dim == 16 and att.q_proj.bias is not None
    assert {k: tuple(v.shape) for k, v in att.state_dict().items()} == {
        f"{p}_proj.{t}": (16, 16) if t == "weight" else (16,)
        for p in ("q", "k", "v", "out") for t in ("weight", "bias")}
    torch.manual_seed(1)
    x = torch.randn(1, 4, 16)
    torch.testing.assert_close(att(x, x), _naive(att, x, x), atol=1e-5, rtol=1e-5)


def test_cross_only_block_with_inner_dim():
    """x + CA(LN x, memory), then + FF(LN x): written out by hand."""
    torch.manual_seed(2)
    blk = TransformerBlock(10, heads=2, d_ff=14, self_attention=False, memory_dim=6,
                           inner_dim=2 * 5, qkv_bias=False).eval()
    assert blk.self_attn is None and blk.cross_attn.inner_dim == 10
    x, mem = torch.randn(3, 4, 10), torch.randn(3, 9, 6)
    h = x + _naive(blk.cross_attn, blk.norm_cross(x), mem)
    want = h + blk.ff(blk.norm_ff(h))
    torch.testing.assert_close(blk(x, mem), want, atol=1e-5, rtol=1e-5)
