"""models/common/equivariance.py: the random TPS against its analytic affine part, image
resampling consistent with the point map, and a zero loss for an equivariant detector."""

from __future__ import annotations

import pytest
import torch

from facegeo_models.common.blocks import coordinate_grid, keypoints_to_gaussian
from facegeo_models.common.equivariance import RandomTPS, equivariance_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_zero_sigmas_are_the_identity():
    t = RandomTPS(2, sigma_affine=0.0, sigma_tps=0.0)
    p = torch.rand(2, 6, 2) * 2 - 1
    torch.testing.assert_close(t.warp_coordinates(p), p)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(t.transform_frame(x), x, atol=1e-5, rtol=0)


def test_affine_part_and_tps_kernel():
    g = torch.Generator().manual_seed(0)
    t = RandomTPS(3, sigma_affine=0.1, sigma_tps=0.0, generator=g)
    p = torch.rand(3, 5, 2) * 2 - 1
    a, b = t.theta[:, :, :2], t.theta[:, :, 2]
    torch.testing.assert_close(t.warp_coordinates(p), torch.einsum("bij,bnj->bni", a, p)
                               + b[:, None])
    # TPS part: sum_i w_i r_i^2 log r_i with the L1 distance r_i to control point i
    t2 = RandomTPS(1, sigma_affine=0.0, sigma_tps=0.01, points_tps=3, generator=g)
    q = torch.tensor([[[0.3, -0.2]]])
    cp = t2.control_points
    r = (q[0, 0] - cp).abs().sum(-1)
    want = q + (t2.control_params[0] * r ** 2 * torch.log(r + 1e-6)).sum()
    torch.testing.assert_close(t2.warp_coordinates(q), want)


def _blob_centre(images: torch.Tensor) -> torch.Tensor:
    """An exactly equivariant 'detector': the intensity centroid of a single blob."""
    b, _, h, w = images.shape
    m = images[:, 0]
    grid = coordinate_grid(h, w)
    return (torch.einsum("bhw,hwc->bc", m, grid) / m.sum((1, 2))[:, None])[:, None]


def test_transform_frame_moves_content_by_the_inverse_map():
    """x'(p) = x(T(p)): a blob at c in x appears at q with T(q) = c in x'."""
    g = torch.Generator().manual_seed(3)
    c = torch.tensor([[[0.2, -0.1]], [[-0.3, 0.25]]])
    x = keypoints_to_gaussian(c, 64, 64, 0.08)
    t = RandomTPS(2, sigma_affine=0.05, sigma_tps=0.005, generator=g)
    q = _blob_centre(t.transform_frame(x))
    torch.testing.assert_close(t.warp_coordinates(q), c, atol=2e-3, rtol=0)
    loss = equivariance_loss(_blob_centre(x), q, t)
    assert loss.item() < 2e-3
    # a detector that ignores the image is not equivariant
    fixed = torch.zeros(2, 1, 2)
    assert equivariance_loss(fixed, fixed, t).item() > 1e-2
    with pytest.raises(ValueError):
        equivariance_loss(fixed, torch.zeros(2, 2, 2), t)
