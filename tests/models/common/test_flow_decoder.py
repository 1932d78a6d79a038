"""models/common/flow_decoder.py: the residual up-sampling block against a functional
re-implementation, and the latent -> flow decoder (shapes, identity warp at
initialisation, bounded displacements, errors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facegeo_models.common.blocks import warp_grid as warp
from facegeo_models.common.flow_decoder import LatentFlowDecoder, UpResBlock2d

pytestmark = pytest.mark.usefixtures("one_thread")


def _bn_eval(x, bn):
    return ((x - bn.running_mean[None, :, None, None])
            / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps)
            * bn.weight[None, :, None, None] + bn.bias[None, :, None, None])


@pytest.mark.parametrize("cin,cout", [(6, 4), (5, 5)])
def test_up_res_block_against_functional_reference(cin, cout):
    """main = relu(bn(conv(relu(bn(conv(up(x))))))), shortcut = up(x) (1x1 conv when the
    width changes), summed; written with F.conv2d and explicit BN statistics."""
    torch.manual_seed(0)
    blk = UpResBlock2d(cin, cout).eval()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for bn in (blk.norm1, blk.norm2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    x = torch.randn(2, cin, 5, 7)
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)   # nearest x2 by hand
    h = F.relu(_bn_eval(F.conv2d(up, blk.conv1.weight, blk.conv1.bias, padding=1), blk.norm1))
    h = F.relu(_bn_eval(F.conv2d(h, blk.conv2.weight, blk.conv2.bias, padding=1), blk.norm2))
    sc = up if cin == cout else F.conv2d(up, blk.shortcut.weight, blk.shortcut.bias)
    with torch.no_grad():
        got = blk(x)
    assert got.shape == (2, cout, 10, 14)
    torch.testing.assert_close(got, h + sc, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="B, C, H, W"):
        blk(torch.randn(cin, 5, 7))


def test_decoder_starts_at_the_identity_warp():
    torch.manual_seed(1)
    dec = LatentFlowDecoder(12, channels=(16, 8, 8), base_size=4, num_res_blocks=1)
    assert dec.out_size == 16
    z = torch.randn(3, 12)
    d = dec(z)
    assert d.shape == (3, 2, 16, 16)
    assert float(d.detach().abs().max()) == 0.0     # zero-initialised last layer
    grid = dec.grid(z)
    assert grid.shape == (3, 16, 16, 2)
    # identity grid: pixel centres (2 i + 1) / n - 1, x in channel 0
    c = (torch.arange(16) * 2 + 1) / 16 - 1
    torch.testing.assert_close(grid[0, 5, :, 0], c)
    torch.testing.assert_close(grid[0, :, 7, 1], c)
    x = torch.rand(3, 4, 16, 16)
    torch.testing.assert_close(warp(x, grid), x, atol=1e-6, rtol=0)   # identity flow
    # a trained (perturbed) last layer moves the grid, by at most max_displacement
    dec2 = LatentFlowDecoder(12, channels=(16, 8), base_size=2, max_displacement=0.1)
    with torch.no_grad():
        dec2.final.weight.normal_(0, 0.05)
    d2 = dec2(z)
    assert d2.shape == (3, 2, 4, 4) and 0 < float(d2.detach().abs().max()) <= 0.1 + 1e-6
    d2.sum().backward()
    assert dec2.fc.weight.grad.abs().sum() > 0


def test_decoder_errors():
    with pytest.raises(ValueError, match="channels"):
        LatentFlowDecoder(8, channels=())
    dec = LatentFlowDecoder(8, channels=(8, 4))
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        dec(torch.randn(2, 7))
    with pytest.raises(ValueError, match="mode"):
        UpResBlock2d(2, 2, mode="cubic")
