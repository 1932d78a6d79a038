import pytest
import torch
import torch.nn.functional as F

from facegeo.coords import normalized_grid, normalized_to_pixel, pixel_grid, pixel_to_normalized


def test_round_trip_and_edges():
    pts = torch.tensor([[-0.5, -0.5], [9.5, 4.5], [3.0, 2.0]])
    n = pixel_to_normalized(pts, width=10, height=5)
    assert torch.allclose(n[0], torch.tensor([-1.0, -1.0]))
    assert torch.allclose(n[1], torch.tensor([1.0, 1.0]))
    assert torch.allclose(normalized_to_pixel(n, 10, 5), pts)


def test_grid_sample_identity_at_pixel_centres():
    # sampling an image at its own pixel centres with the converted grid is the identity
    img = torch.rand(1, 3, 5, 7)
    grid = pixel_to_normalized(pixel_grid(5, 7), 7, 5)[None]
    out = F.grid_sample(img, grid, align_corners=False)
    assert torch.allclose(out, img, atol=1e-6)
    assert pixel_grid(5, 7)[2, 3].tolist() == [3.0, 2.0]


def test_bad_shapes():
    with pytest.raises(ValueError):
        pixel_to_normalized(torch.zeros(3, 3), 4, 4)
    with pytest.raises(ValueError):
        normalized_to_pixel(torch.zeros(3, 2), 0, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (64, 48), (129, 3)])
def test_normalized_grid_is_the_normalized_pixel_grid(hw, dtype):
    from models.common.blocks import coordinate_grid, identity_grid

    h, w = hw
    g = normalized_grid(h, w, dtype=dtype)
    assert g.shape == (h, w, 2) and g.dtype == dtype
    ref = pixel_to_normalized(pixel_grid(h, w, dtype=dtype), w, h)
    assert torch.allclose(g, ref, atol=0, rtol=1e-6)
    assert torch.equal(coordinate_grid(h, w, dtype=dtype), g)  # blocks' grid is this one
    assert torch.equal(identity_grid(2, h, w, dtype=dtype)[1], g)
    # it is grid_sample's identity (align_corners=False)
    x = torch.rand(1, 2, h, w, dtype=dtype)
    y = F.grid_sample(x, g[None], mode="bilinear", align_corners=False)
    assert torch.allclose(y, x, atol=1e-5)
