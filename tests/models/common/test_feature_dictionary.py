"""NTM-style feature dictionary (models/common/feature_dictionary.py): eqs. 8-9 of FD-GAN
against brute-force loops over rows and locations, analytic cases, the modules' 1x1-conv
keys/values and residual read, the one-row ablation kinds, autocast and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from facegeo_models.common.feature_dictionary import (
    DictionaryReader,
    DictionaryWriter,
    dictionary_read,
    dictionary_write,
    mean_write,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_loop(tags, keys, values):
    """Eq. 8 written out: v_i = sum_n x_n e^{t_i.p_n} / sum_n e^{t_i.p_n}, float64 loops."""
    b, _, h, w = keys.shape
    n, mv = tags.shape[0], values.shape[1]
    out = torch.zeros(b, n, mv, dtype=torch.float64)
    for bi in range(b):
        for i in range(n):
            num = torch.zeros(mv, dtype=torch.float64)
            den = 0.0
            for y in range(h):
                for x in range(w):
                    e = math.exp(float(tags[i].double() @ keys[bi, :, y, x].double()))
                    num += e * values[bi, :, y, x].double()
                    den += e
            out[bi, i] = num / den
    return out


def _read_loop(tags, keys, dictionary):
    """Eq. 9 written out: y_j = sum_k v_k e^{u_k.q_j} / sum_k e^{u_k.q_j}, float64 loops."""
    b, _, h, w = keys.shape
    n, mv = dictionary.shape[1:]
    out = torch.zeros(b, mv, h, w, dtype=torch.float64)
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                es = [math.exp(float(tags[k].double() @ keys[bi, :, y, x].double()))
                      for k in range(n)]
                den = sum(es)
                out[bi, :, y, x] = sum(e * dictionary[bi, k].double()
                                       for k, e in enumerate(es)) / den
    return out


def test_write_matches_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    tags, keys = torch.randn(5, 4, generator=g), torch.randn(2, 4, 3, 6, generator=g)
    values = torch.randn(2, 7, 3, 6, generator=g)
    got = dictionary_write(tags, keys, values)
    assert got.shape == (2, 5, 7)
    torch.testing.assert_close(got.double(), _write_loop(tags, keys, values), atol=1e-5,
                               rtol=1e-5)


def test_read_matches_brute_force_loop():
    g = torch.Generator().manual_seed(1)
    tags, keys = torch.randn(6, 3, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    dic = torch.randn(2, 6, 8, generator=g)
    got = dictionary_read(tags, keys, dic)
    assert got.shape == (2, 8, 4, 5)
    torch.testing.assert_close(got.double(), _read_loop(tags, keys, dic), atol=1e-5,
                               rtol=1e-5)


def test_analytic_cases():
    # zero keys: uniform softmax -> the write is the spatial mean, the read the row mean
    values = torch.randn(2, 3, 4, 4)
    v = dictionary_write(torch.randn(5, 2), torch.zeros(2, 2, 4, 4), values)
    torch.testing.assert_close(v, values.mean((2, 3))[:, None].expand(2, 5, 3))
    torch.testing.assert_close(mean_write(values), values.mean((2, 3))[:, None])
    dic = torch.randn(2, 5, 3)
    y = dictionary_read(torch.randn(5, 2), torch.zeros(2, 2, 4, 4), dic)
    torch.testing.assert_close(y, dic.mean(1)[:, :, None, None].expand(2, 3, 4, 4))
    # a sharp key selects one location (write) / one row (read)
    tags = torch.eye(3) * 50
    keys = torch.zeros(1, 3, 2, 2)
    keys[0, 1, 1, 0] = 1.0                       # location (1, 0) matches row 1
    vals = torch.arange(8.0).reshape(1, 2, 2, 2)
    v = dictionary_write(tags, keys, vals)
    torch.testing.assert_close(v[0, 1], vals[0, :, 1, 0], atol=1e-6, rtol=0)
    dic = torch.randn(1, 3, 4)
    qk = torch.zeros(1, 3, 1, 1)
    qk[0, 2] = 1.0
    torch.testing.assert_close(dictionary_read(tags, qk, dic)[0, :, 0, 0], dic[0, 2],
                               atol=1e-6, rtol=0)


def test_writer_and_reader_modules():
    torch.manual_seed(0)
    wr = DictionaryWriter(6, rows=4, value_dim=5, tag_dim=3)
    rd = DictionaryReader(5, rows=4, tag_dim=3)
    x, z = torch.randn(2, 6, 4, 4), torch.randn(2, 5, 4, 4)
    dic = wr(x)
    assert dic.shape == (2, 4, 5)
    # write keys and values are 1x1 convolutions of the input
    torch.testing.assert_close(dic, dictionary_write(wr.tags, wr.key(x), wr.value(x)))
    # the read is added back to the input (residual), keys from a 1x1 conv
    torch.testing.assert_close(rd(z, dic) - z, dictionary_read(rd.tags, rd.key(z), dic),
                               atol=1e-6, rtol=1e-6)
    # gradients reach tags, keys and values
    rd(z, dic).square().sum().backward()
    for p in (wr.tags, wr.key.weight, wr.value.weight, rd.tags, rd.key.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # one sample's dictionary depends on that sample only
    x2 = x.clone()
    x2[1] += 1
    d2 = wr(x2)
    torch.testing.assert_close(d2[0], dic[0])
    assert (d2[1] - dic[1]).abs().max() > 1e-4


def test_one_row_kinds():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3)
    wm = DictionaryWriter(4, rows=9, value_dim=4, kind="mean")
    d = wm(x)
    assert d.shape == (2, 1, 4)
    torch.testing.assert_close(d[:, 0], wm.value(x).mean((2, 3)))
    rm = DictionaryReader(4, rows=9, kind="mean")
    torch.testing.assert_close(rm(x, d), x + d[:, 0, :, None, None])
    ra = DictionaryReader(4, rows=9, kind="adain")
    # zero-initialised affine map: plain instance normalization
    torch.testing.assert_close(ra(x, d), torch.nn.functional.instance_norm(x))
    with torch.no_grad():
        ra.affine.bias.copy_(torch.tensor([1.0, 0, 0, 0, 0.5, 0, 0, 0]))
    y = ra(x, d)
    xn = torch.nn.functional.instance_norm(x)
    torch.testing.assert_close(y[:, 0], 2 * xn[:, 0] + 0.5)


def test_bf16_autocast_and_errors():
    wr = DictionaryWriter(4, rows=3, value_dim=4, tag_dim=2)
    x = torch.randn(1, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = wr(x)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, wr(x), atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="channels"):
        wr(torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="dictionary must be"):
        DictionaryReader(4, rows=3, tag_dim=2)(x, torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="unknown dictionary kind"):
        DictionaryWriter(4, 3, 4, kind="nosuch")
    with pytest.raises(ValueError, match="share batch"):
        dictionary_write(torch.randn(3, 2), torch.randn(1, 2, 4, 4), torch.randn(2, 4, 4, 4))
