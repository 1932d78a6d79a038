"""Graph neural-network layers on a fixed mesh graph, over (B, V, C) features.

* :class:`ChebConv` - Chebyshev spectral convolution (Defferrard et al. 2016, as used by CoMA
  and the mesh-guided reenactment model): ``y = sum_k T_k(L~) x W_k + b`` with
  ``T_0 = x, T_1 = L~ x, T_k = 2 L~ T_{k-1} - T_{k-2}``. Numerically equal to
  ``torch_geometric.nn.ChebConv`` given the same weights (``lins[k].weight = W_k^T``) and the
  same ``lambda_max``, but the whole batch goes through one sparse product per order.
* :class:`GraphLinear` - per-vertex linear layer (Kolotouros et al. 2019, "GraphCMR").
* :class:`GraphResBlock` - the residual block of the mesh-guided motion net (section 3.2):
  ChebConv(K=3) -> InstanceNorm -> ReLU -> GraphLinear, plus a (GraphLinear) skip connection.
* :class:`SparsePool` - apply a fixed sparse matrix (CoMA down/up-sampling ``D`` / ``U``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from facegeo.mesh.operators import _csr, _mm, _SpMM, chebyshev_laplacian

__all__ = ["ChebConv", "GraphLinear", "GraphResBlock", "SparsePool"]


def _as_sparse_matrix(m: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(m, torch.Tensor) or m.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise TypeError(f"{name} must be a torch sparse (COO or CSR) tensor")
    if m.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(m.shape)}")
    if m.layout == torch.sparse_coo:
        m = m.coalesce()
    if not bool(torch.isfinite(m.values()).all()):  # once, at construction
        raise ValueError(f"{name} contains NaN or inf values")
    return m


def _apply(M, Mt, x2):
    """M @ x2 for x2 (V, N); differentiable w.r.t. x2 only."""
    if M.dtype != x2.dtype:
        M, Mt = M.to(x2.dtype), Mt.to(x2.dtype)
    return _SpMM.apply(x2, M, Mt)


def _cheb_forward_recursion(L: torch.Tensor, t0: torch.Tensor, K: int) -> list[torch.Tensor]:
    """[T_0(L) t0, ..., T_{K-1}(L) t0] for t0 (V, N) contiguous."""
    ts = [t0]
    if K > 1:
        ts.append(_mm(L, t0))
        for _ in range(2, K):
            ts.append(torch.addmm(ts[-2], L, ts[-1], beta=-1.0, alpha=2.0))
    return ts


def _clenshaw(L: torch.Tensor, cs: list[torch.Tensor]) -> torch.Tensor:
    """sum_k T_k(L) c_k for a list of K (V, N) tensors (Clenshaw's recurrence)."""
    K = len(cs)
    if K == 1:
        return cs[0].clone()
    b1, b2 = cs[K - 1], None
    for k in range(K - 2, 0, -1):
        nb = torch.addmm(cs[k], L, b1, alpha=2.0)
        if b2 is not None:
            nb.sub_(b2)
        b1, b2 = nb, b1
    out = torch.addmm(cs[0], L, b1)
    if b2 is not None:
        out.sub_(b2)
    return out


def _sparse_dtype(x: torch.Tensor) -> tuple[torch.dtype, torch.Tensor]:
    """(dtype to return, x to compute with): sparse products run in float32 at least.

    Half/bfloat16 sparse matrix products are missing on the CPU (MKL) and lose accuracy in
    the Chebyshev recursion; under ``torch.autocast`` the layer therefore computes in
    float32 (autocast disabled inside) and returns the input's dtype."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.dtype, x.float()
    return x.dtype, x


class _ChebFn(torch.autograd.Function):
    """Fused Chebyshev convolution y = sum_k T_k(L) x W_k + b for a constant symmetric L.

    x (B, V, Cin), W (K, Cin, Cout), b (Cout,) or None -> (B, V, Cout), returned as a
    transposed view of a (V, B, Cout) buffer so that a following layer needs no copy. One
    stacked GEMM per product and K-1 sparse products per direction; the recursion runs on
    min(Cin, Cout) channels."""

    @staticmethod
    def forward(ctx, x, W, bias, L):
        B, V, Cin = x.shape
        K, _, Cout = W.shape
        ctx.inputs_first = Cin <= Cout
        x2 = x.transpose(0, 1).reshape(V * B, Cin)
        if ctx.inputs_first:
            ts = _cheb_forward_recursion(L, x2.view(V, B * Cin), K)
            T = torch.stack([t.view(V * B, Cin) for t in ts], 1)  # (VB, K, Cin)
            if bias is None:
                out = T.view(V * B, K * Cin) @ W.reshape(K * Cin, Cout)
            else:
                out = torch.addmm(bias, T.view(V * B, K * Cin), W.reshape(K * Cin, Cout))
            ctx.save_for_backward(T, W)
        else:
            zs = [(x2 @ W[k]).view(V, B * Cout) for k in range(K)]
            out = _clenshaw(L, zs).view(V * B, Cout)
            if bias is not None:
                out.add_(bias)
            ctx.save_for_backward(x2, W)
        ctx.L, ctx.shape = L, (B, V, Cin, K, Cout)
        return out.view(V, B, Cout).transpose(0, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        B, V, Cin, K, Cout = ctx.shape
        L = ctx.L
        # contiguous() also materialises stride-0 (expanded) gradients once, not per GEMM
        gv = g.transpose(0, 1).reshape(V * B, Cout).contiguous()
        gx = gW = gb = None
        if ctx.needs_input_grad[2]:
            gb = gv.sum(0)
        if ctx.inputs_first:
            T, W = ctx.saved_tensors
            if ctx.needs_input_grad[1]:
                gW = (T.view(V * B, K * Cin).t() @ gv).view(K, Cin, Cout)
            if ctx.needs_input_grad[0]:
                # one contiguous (VB, Cin) product per order: no copies for the recursion
                cs = [(gv @ W[k].t()).view(V, B * Cin) for k in range(K)]
                gx = _clenshaw(L, cs).view(V, B, Cin).transpose(0, 1)
        else:
            x2, W = ctx.saved_tensors
            Wc = W.permute(1, 0, 2).reshape(Cin, K * Cout)
            gs = _cheb_forward_recursion(L, gv.view(V, B * Cout), K)
            gZ = torch.stack([t.view(V * B, Cout) for t in gs], 1).view(V * B, K * Cout)
            if ctx.needs_input_grad[1]:
                gW = (x2.t() @ gZ).view(Cin, K, Cout).permute(1, 0, 2)
            if ctx.needs_input_grad[0]:
                gx = (gZ @ Wc.t()).view(V, B, Cin).transpose(0, 1)
        return gx, gW, gb, None


class ChebConv(nn.Module):
    """Chebyshev graph convolution over a fixed graph.

    Args:
        in_channels, out_channels: C_in, C_out.
        K: number of Chebyshev terms (polynomial degree K - 1), K >= 1.
        laplacian: sparse (V, V) scaled Laplacian ``L~ = 2 L / lambda_max - I`` (e.g. from
            :func:`facegeo.mesh.chebyshev_laplacian`). Must be symmetric.
        bias: add a learnable bias.

    Shapes:
        forward(x): x (B, V, C_in) or (V, C_in) -> (B, V, C_out) or (V, C_out).

    Parameters: ``weight`` (K, C_in, C_out) (glorot init, like PyG), ``bias`` (C_out,).
    The Laplacian is a non-persistent buffer (it moves with ``.to(device)`` but is not in the
    state dict; it is rebuilt from the mesh). When ``C_out < C_in`` the recursion runs on the
    projected features (Clenshaw's algorithm), so the sparse products always use
    ``min(C_in, C_out)`` channels per sample.
    """

    def __init__(self, in_channels: int, out_channels: int, K: int, laplacian: torch.Tensor,
                 bias: bool = True):
        super().__init__()
        if K < 1:
            raise ValueError(f"K must be >= 1, got {K}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError("channel counts must be >= 1")
        L = _as_sparse_matrix(laplacian, "laplacian")
        if L.shape[0] != L.shape[1]:
            raise ValueError(f"laplacian must be square, got {tuple(L.shape)}")
        Lc = L if L.layout == torch.sparse_coo else L.to_sparse_coo().coalesce()
        asym = (Lc - Lc.t()).coalesce().values()
        if asym.numel() and float(asym.abs().max()) > 1e-6 * max(float(Lc.values().abs().max()),
                                                                 1e-30):
            raise ValueError("laplacian must be symmetric (the backward pass relies on it)")
        self.in_channels, self.out_channels, self.K = in_channels, out_channels, K
        self.num_vertices = L.shape[0]
        self.register_buffer("laplacian", _csr(L) if L.layout == torch.sparse_coo else L,
                             persistent=False)
        self.weight = nn.Parameter(torch.empty(K, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @classmethod
    def from_faces(cls, in_channels: int, out_channels: int, K: int, faces: torch.Tensor,
                   num_vertices: int | None = None, *, normalization: str = "sym",
                   bias: bool = True) -> ChebConv:
        """Build the layer for a mesh: ``L~`` from the normalized Laplacian of ``faces``
        (F, 3) with its computed largest eigenvalue."""
        L = chebyshev_laplacian(faces, num_vertices, normalization=normalization)
        return cls(in_channels, out_channels, K, L, bias=bias)

    def reset_parameters(self) -> None:
        bound = math.sqrt(6.0 / (self.in_channels + self.out_channels))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, K={self.K}, "
                f"num_vertices={self.num_vertices}, bias={self.bias is not None}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (2, 3) or x.shape[-1] != self.in_channels \
                or x.shape[-2] != self.num_vertices:
            raise ValueError(f"ChebConv expects (B, {self.num_vertices}, {self.in_channels}) "
                             f"features, got {tuple(x.shape)}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[None]
        dtype, x = _sparse_dtype(x)
        L = self.laplacian
        if L.dtype != x.dtype or L.device != x.device:
            L = L.to(device=x.device, dtype=x.dtype)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            out = _ChebFn.apply(x, self.weight.to(x.dtype), bias, L).to(dtype)
        return out[0] if unbatched else out


class GraphLinear(nn.Module):
    """Per-vertex linear layer ``y_v = W x_v + b`` (GraphCMR's GraphLinear, a 1x1 convolution
    over vertices).

    Shapes: x (B, V, C_in) or (V, C_in) -> (..., V, C_out). Parameters ``W`` (C_out, C_in),
    ``b`` (C_out,), initialised uniformly in ``+-1/(C_in * C_out)`` as in GraphCMR.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.W = nn.Parameter(torch.empty(out_channels, in_channels))
        self.b = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        s = 1.0 / (self.in_channels * self.out_channels)
        nn.init.uniform_(self.W, -s, s)
        nn.init.uniform_(self.b, -s, s)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"GraphLinear expects {self.in_channels} channels in the last "
                             f"dimension, got {tuple(x.shape)}")
        return torch.nn.functional.linear(x, self.W, self.b)


class GraphResBlock(nn.Module):
    """Spectral residual block of the mesh-guided motion net (paper section 3.2).

    ``y = skip(x) + GraphLinear(ReLU(InstanceNorm(ChebConv_K(x))))`` where ``skip`` is the
    identity when ``C_in == C_out`` and a :class:`GraphLinear` otherwise (GraphCMR's graph
    residual connection). Instance norm normalises each channel over the vertices of each
    sample (``nn.InstanceNorm1d`` on (B, C, V), affine).

    Args:
        in_channels, out_channels: C_in, C_out.
        laplacian: sparse (V, V) scaled Laplacian of the block's mesh level.
        K: Chebyshev order (3 in the paper).
    Shapes: x (B, V, C_in) -> (B, V, C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, laplacian: torch.Tensor,
                 K: int = 3, norm_affine: bool = True):
        super().__init__()
        self.conv = ChebConv(in_channels, out_channels, K, laplacian)
        self.norm = nn.InstanceNorm1d(out_channels, affine=norm_affine)
        self.lin = GraphLinear(out_channels, out_channels)
        self.skip = GraphLinear(in_channels, out_channels) if in_channels != out_channels \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"GraphResBlock expects (B, V, C) features, got {tuple(x.shape)}")
        h = self.conv(x)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        h = self.lin(torch.relu(h))
        return self.skip(x) + h


class SparsePool(nn.Module):
    """Apply a fixed sparse (W, V) matrix to vertex features: CoMA's down-sampling ``D`` or
    up-sampling ``U``.

    Shapes: x (B, V, C) or (V, C) -> (B, W, C) or (W, C).
    """

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        M = _as_sparse_matrix(matrix, "matrix")
        Mc = M if M.layout == torch.sparse_coo else M.to_sparse_coo().coalesce()
        self.register_buffer("matrix", _csr(Mc), persistent=False)
        self.register_buffer("matrix_t", _csr(Mc.t().coalesce()), persistent=False)
        self.out_vertices, self.in_vertices = M.shape

    def extra_repr(self) -> str:
        return f"{self.in_vertices} -> {self.out_vertices} vertices"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (2, 3) or x.shape[-2] != self.in_vertices:
            raise ValueError(f"SparsePool expects (B, {self.in_vertices}, C) features, got "
                             f"{tuple(x.shape)}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[None]
        dtype, x = _sparse_dtype(x)
        B, V, C = x.shape
        with torch.autocast(x.device.type, enabled=False):
            y = _apply(self.matrix, self.matrix_t, x.transpose(0, 1).reshape(V, B * C))
        y = y.view(self.out_vertices, B, C).transpose(0, 1).to(dtype)
        return y[0] if unbatched else y
