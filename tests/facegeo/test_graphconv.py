"""ChebConv / GraphLinear / GraphResBlock / SparsePool (facegeo.graphconv) against
torch_geometric.nn.ChebConv and dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from torch_geometric.nn import ChebConv as PygChebConv

import facegeo.assets
from facegeo import mesh as M
from facegeo.graphconv import ChebConv, GraphLinear, GraphResBlock, SparsePool


@pytest.fixture(scope="module")
def sphere_graph():
    s = trimesh.creation.icosphere(subdivisions=2)
    f = torch.from_numpy(np.asarray(s.faces))
    Ls, lam = M.chebyshev_laplacian(f, return_lambda=True)
    return f, Ls, lam


def pyg_reference(ours: ChebConv, faces, lam, x, normalization="sym"):
    """Run torch_geometric's ChebConv with our weights on the batch as a disjoint graph."""
    B, V, C = x.shape
    pyg = PygChebConv(ours.in_channels, ours.out_channels, ours.K,
                      normalization=normalization, bias=ours.bias is not None).to(x.dtype)
    with torch.no_grad():
        for k in range(ours.K):
            pyg.lins[k].weight.copy_(ours.weight[k].T)
        if ours.bias is not None:
            pyg.bias.copy_(ours.bias)
    e = M.edges(faces, V)
    ei = torch.cat([e, e.flip(1)]).T
    eib = torch.cat([ei + b * V for b in range(B)], 1)
    batch = torch.arange(B).repeat_interleave(V)
    out = pyg(x.reshape(B * V, C), eib, batch=batch,
              lambda_max=torch.full((B,), lam, dtype=x.dtype))
    return out.view(B, V, -1), pyg


@pytest.mark.parametrize("cin,cout,K", [(3, 8, 1), (3, 8, 2), (4, 6, 3), (9, 5, 3), (6, 2, 5)])
def test_chebconv_matches_pyg_forward_and_backward(sphere_graph, cin, cout, K):
    f, Ls, lam = sphere_graph
    torch.manual_seed(cin * 10 + K)
    conv = ChebConv(cin, cout, K, Ls)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(3, Ls.shape[0], cin, requires_grad=True)
    y = conv(x)
    ref, pyg = pyg_reference(conv, f, lam, x)
    assert y.shape == (3, Ls.shape[0], cout)
    torch.testing.assert_close(y, ref, atol=2e-5, rtol=1e-5)
    g = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, [x, conv.weight, conv.bias], g)
    rx, *rw, rb = torch.autograd.grad(ref, [x, *[lin.weight for lin in pyg.lins], pyg.bias], g)
    torch.testing.assert_close(gx, rx, atol=2e-5, rtol=1e-5)
    for k in range(K):
        torch.testing.assert_close(gw[k], rw[k].T, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(gb, rb, atol=1e-3, rtol=1e-4)


def test_chebconv_unnormalized_laplacian_matches_pyg(sphere_graph):
    f, _, _ = sphere_graph
    Ls, lam = M.chebyshev_laplacian(f, normalization="none", return_lambda=True,
                                    dtype=torch.float64)
    conv = ChebConv(3, 4, 3, Ls).double()
    x = torch.randn(2, Ls.shape[0], 3, dtype=torch.float64)
    ref, _ = pyg_reference(conv, f, lam, x, normalization=None)
    torch.testing.assert_close(conv(x), ref, atol=1e-10, rtol=1e-10)


def test_chebconv_ict_graph_matches_pyg():
    d = np.load(facegeo.assets.resolve("ict_facekit"))
    f = torch.from_numpy(d["faces"].astype(np.int64))
    conv = ChebConv.from_faces(4, 5, 3, f)
    Ls, lam = M.chebyshev_laplacian(f, return_lambda=True)
    diff = (conv.laplacian.to_sparse_coo() - Ls).coalesce().values()
    assert float(diff.abs().max()) == 0.0
    x = torch.randn(2, 11248, 4)
    ref, _ = pyg_reference(conv, f, lam, x)
    torch.testing.assert_close(conv(x), ref, atol=2e-5, rtol=1e-5)


def test_chebconv_dense_recursion_and_shapes(sphere_graph):
    _, Ls, _ = sphere_graph
    conv = ChebConv(2, 3, 4, Ls, bias=False).double()
    x = torch.randn(Ls.shape[0], 2, dtype=torch.float64)
    L = Ls.to_dense().double()
    T = [x, L @ x]
    for _ in range(2):
        T.append(2 * L @ T[-1] - T[-2])
    ref = sum(T[k] @ conv.weight[k] for k in range(4))
    torch.testing.assert_close(conv(x), ref)  # unbatched (V, C) input
    with pytest.raises(ValueError, match="expects"):
        conv(torch.randn(1, Ls.shape[0] + 1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="K must be"):
        ChebConv(2, 3, 0, Ls)
    with pytest.raises(TypeError, match="sparse"):
        ChebConv(2, 3, 2, Ls.to_dense())
    assert "laplacian" not in conv.state_dict()  # rebuilt from the mesh, not saved
    assert set(conv.state_dict()) == {"weight"}


def test_graph_linear_and_res_block(sphere_graph):
    _, Ls, _ = sphere_graph
    V = Ls.shape[0]
    lin = GraphLinear(4, 6)
    x = torch.randn(2, V, 4)
    torch.testing.assert_close(lin(x), torch.einsum("oc,bvc->bvo", lin.W, x) + lin.b)
    assert float(lin.W.detach().abs().max()) <= 1 / 24

    blk = GraphResBlock(4, 8, Ls)
    y = blk(x)
    assert y.shape == (2, V, 8)
    # manual composition: skip(x) + lin(relu(instancenorm(cheb(x))))
    h = blk.conv(x)
    h = (h - h.mean(1, keepdim=True)) / torch.sqrt(h.var(1, unbiased=False, keepdim=True) + 1e-5)
    h = h * blk.norm.weight + blk.norm.bias
    ref = blk.skip(x) + blk.lin(torch.relu(h))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    y.sum().backward()
    assert all(p.grad is not None for p in blk.parameters())
    # identity skip when the channel count is unchanged: zero residual branch -> y == x
    blk2 = GraphResBlock(4, 4, Ls)
    with torch.no_grad():
        blk2.lin.W.zero_()
        blk2.lin.b.zero_()
    torch.testing.assert_close(blk2(x), x)


def test_sparse_pool(sphere_graph):
    _, Ls, _ = sphere_graph
    V = Ls.shape[0]
    g = torch.Generator().manual_seed(0)
    D = torch.rand(10, V, generator=g) * (torch.rand(10, V, generator=g) > 0.95)
    pool = SparsePool(D.to_sparse())
    x = torch.randn(3, V, 2, requires_grad=True)
    y = pool(x)
    torch.testing.assert_close(y, torch.einsum("wv,bvc->bwc", D, x))
    (gx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(gx, D.sum(0)[None, :, None].expand_as(x))
    torch.testing.assert_close(pool(x[0]), y[0])
    with pytest.raises(ValueError, match="SparsePool expects"):
        pool(torch.randn(V + 1, 2))


@pytest.mark.parametrize("cin,cout,K", [(2, 3, 3), (3, 2, 4), (2, 2, 1)])
def test_chebconv_gradcheck(cin, cout, K):
    s = trimesh.creation.icosphere(subdivisions=0)
    f = torch.from_numpy(np.asarray(s.faces))
    conv = ChebConv.from_faces(cin, cout, K, f).double()
    x = torch.randn(2, 12, cin, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: torch.func.functional_call(
        conv, {"weight": w, "bias": b}, (x,)), (x, conv.weight, conv.bias))


def test_chebconv_rejects_asymmetric_operator():
    A = torch.tensor([[0.0, 1.0], [0.0, 0.0]]).to_sparse()
    with pytest.raises(ValueError, match="symmetric"):
        ChebConv(1, 1, 2, A)


@pytest.mark.parametrize("cin,cout", [(4, 6), (6, 3)])
def test_graph_layers_under_bf16_autocast(sphere_graph, cin, cout):
    """Under torch.autocast(bfloat16) (the trainer's AMP) the sparse products run in float32
    (bf16 sparse matmul has no CPU kernel) and the layers return the input's dtype; the
    result equals the float32 layer on the same bf16-representable input."""
    faces, Ls, lam = sphere_graph
    V = Ls.shape[0]
    torch.manual_seed(0)
    conv = GraphResBlock(cin, cout, Ls, K=3)
    pool = SparsePool((torch.rand(10, V) * (torch.rand(10, V) > 0.9)).to_sparse())
    x = torch.randn(2, V, cin).bfloat16().float().requires_grad_(True)
    ref = pool(conv(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = pool(conv.conv(x.bfloat16()))  # a bf16 input as autocast hands it on
        z = pool(conv(x))
    assert y.dtype == torch.bfloat16 and z.shape == ref.shape
    assert torch.isfinite(z.float()).all()
    ref_conv = pool(conv.conv(x))
    torch.testing.assert_close(y.float(), ref_conv, atol=0.02 * ref_conv.abs().max().item(),
                               rtol=0.02)
    (gx,) = torch.autograd.grad(z.float().sum(), x)
    (gref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.isfinite(gx).all()
    assert torch.nn.functional.cosine_similarity(gx.flatten(), gref.flatten(), 0) > 0.99
