import pytest
import torch
import torch.nn.functional as F

from facegeo.coords import normalized_grid, normalized_to_pixel, pixel_grid, pixel_to_normalized


def test_round_trip_and_edges():
    pts = torch.tensor([[-0.5, -0.5], [9.5, 4.5], [3.0, 2.0]])
    n = pixel_to_normalized(pts, (5, 10))  # (H, W): a 5-row, 10-column image
    assert torch.allclose(n[0], torch.tensor([-1.0, -1.0]))
    assert torch.allclose(n[1], torch.tensor([1.0, 1.0]))
    assert torch.allclose(normalized_to_pixel(n, (5, 10)), pts)


def test_grid_sample_identity_at_pixel_centres():
    # sampling an image at its own pixel centres with the converted grid is the identity
    img = torch.rand(1, 3, 5, 7)
    grid = pixel_to_normalized(pixel_grid(5, 7), img.shape[-2:])[None]
    out = F.grid_sample(img, grid, align_corners=False)
    assert torch.allclose(out, img, atol=1e-6)
    assert pixel_grid(5, 7)[2, 3].tolist() == [3.0, 2.0]


def test_bad_shapes():
    with pytest.raises(ValueError):
        pixel_to_normalized(torch.zeros(3, 3), (4, 4))
    with pytest.raises(ValueError, match="positive"):
        normalized_to_pixel(torch.zeros(3, 2), (4, 0))
    with pytest.raises(TypeError, match=r"\(H, W\)"):
        pixel_to_normalized(torch.zeros(3, 2), 4)  # one int: not a size
    with pytest.raises(TypeError, match="once"):
        pixel_to_normalized(torch.zeros(3, 2), (4, 5), width=5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (64, 48), (129, 3)])
def test_normalized_grid_is_the_normalized_pixel_grid(hw, dtype):
    from facegeo_models.common.blocks import coordinate_grid, identity_grid

    h, w = hw
    g = normalized_grid(h, w, dtype=dtype)
    assert g.shape == (h, w, 2) and g.dtype == dtype
    ref = pixel_to_normalized(pixel_grid(h, w, dtype=dtype), (h, w))
    assert torch.allclose(g, ref, atol=0, rtol=1e-6)
    assert torch.equal(coordinate_grid(h, w, dtype=dtype), g)  # blocks' grid is this one
    assert torch.equal(identity_grid(2, h, w, dtype=dtype)[1], g)
    # it is grid_sample's identity (align_corners=False)
    x = torch.rand(1, 2, h, w, dtype=dtype)
    y = F.grid_sample(x, g[None], mode="bilinear", align_corners=False)
    assert torch.allclose(y, x, atol=1e-5)


def test_size_is_height_width_on_a_non_square_image():
    """(H, W) = (3, 8): x is scaled by W = 8, y by H = 3 (independent formula)."""
    pts = torch.tensor([[1.0, 2.0], [7.5, -0.5]], dtype=torch.float64)
    n = pixel_to_normalized(pts, (3, 8))
    ref = torch.stack([(2 * pts[:, 0] + 1) / 8 - 1, (2 * pts[:, 1] + 1) / 3 - 1], -1)
    torch.testing.assert_close(n, ref, atol=0, rtol=0)
    torch.testing.assert_close(normalized_to_pixel(n, torch.Size([3, 8])), pts)
    # a (3, 8) image sampled at its own pixel centres through the conversion is unchanged
    img = torch.rand(1, 2, 3, 8)
    grid = pixel_to_normalized(pixel_grid(3, 8), img.shape[-2:])[None]
    torch.testing.assert_close(F.grid_sample(img, grid, align_corners=False), img)


@pytest.mark.parametrize("fn", [pixel_to_normalized, normalized_to_pixel])
def test_old_width_height_spellings_warn_and_agree(fn):
    """The pre-0.2 (points, width, height) forms still give the (H, W) result, with a
    DeprecationWarning; the sizes are never silently transposed."""
    pts = torch.rand(4, 2) * 6
    new = fn(pts, (3, 8))
    with pytest.warns(DeprecationWarning, match=r"\(height, width\)"):
        old_pos = fn(pts, 8, 3)
    with pytest.warns(DeprecationWarning, match="removed in facegeo 0.3"):
        old_kw = fn(pts, width=8, height=3)
    with pytest.warns(DeprecationWarning):
        old_mixed = fn(pts, 8, height=3)
    for old in (old_pos, old_kw, old_mixed):
        torch.testing.assert_close(old, new, atol=0, rtol=0)
    assert not torch.allclose(fn(pts, (8, 3)), new)  # the sizes matter: non-square case
