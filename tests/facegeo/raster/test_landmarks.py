"""Tests for facegeo.raster.landmarks: heat-maps, anti-aliased lines, part maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegeo.raster import PARTS_68, draw_landmark_lines, heatmaps, part_maps, part_segments


def _face68(scale: float = 1.0, shift=(0.0, 0.0)) -> torch.Tensor:
    """A plausible frontal 68-point layout (pixels, 64 x 64 image)."""
    t = np.linspace(-1, 1, 17)
    jaw = np.stack([32 + 24 * t, 30 + 26 * np.sqrt(1 - 0.8 * t**2) * 0.9], 1)
    rb = np.stack([np.linspace(14, 28, 5), [22, 20, 19, 20, 21]], 1)
    lb = np.stack([64 - rb[::-1, 0], rb[::-1, 1]], 1)
    nb = np.stack([[32] * 4, np.linspace(24, 36, 4)], 1)
    nl = np.stack([np.linspace(27, 37, 5), [38, 39, 40, 39, 38]], 1)
    ang = np.linspace(np.pi, -np.pi, 7)[:-1]
    re = np.stack([21 + 5 * np.cos(ang), 26 + 2 * np.sin(ang)], 1)
    le = np.stack([43 + 5 * np.cos(ang), 26 + 2 * np.sin(ang)], 1)
    a12 = np.linspace(np.pi, -np.pi, 13)[:-1]
    ol = np.stack([32 + 10 * np.cos(a12), 47 + 4 * np.sin(a12)], 1)
    a8 = np.linspace(np.pi, -np.pi, 9)[:-1]
    il = np.stack([32 + 7 * np.cos(a8), 47 + 1.5 * np.sin(a8)], 1)
    p = np.concatenate([jaw, rb, lb, nb, nl, re, le, ol, il]) * scale + np.array(shift)
    assert p.shape == (68, 2)
    return torch.tensor(p, dtype=torch.float64)[None]


def test_parts_cover_all_68_points_once():
    idx = sorted(i for ids, _ in PARTS_68.values() for i in ids)
    assert idx == list(range(68))
    segs = part_segments()
    assert segs["right_eye"].shape == (6, 2) and segs["jaw"].shape == (16, 2)
    assert segs["outer_lips"][-1].tolist() == [59, 48]  # closed contour


def test_heatmaps_formula_peak_and_gradient():
    pts = torch.tensor([[[3.0, 4.0], [7.25, 1.5], [float("nan"), 2.0]]], dtype=torch.float64)
    hm = heatmaps(pts, 8, 10, sigma=1.5, missing="skip")
    assert hm.shape == (1, 3, 8, 10)
    ys, xs = np.mgrid[0:8, 0:10]
    ref = np.exp(-((xs - 7.25) ** 2 + (ys - 1.5) ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(hm[0, 1].numpy(), ref, atol=1e-12)
    assert hm[0, 0, 4, 3] == 1.0 and hm[0, 0].argmax() == 4 * 10 + 3
    assert (hm[0, 2] == 0).all()
    hn = heatmaps(pts[:, :2], 8, 10, sigma=1.5, normalize=True)
    torch.testing.assert_close(hn.sum((-2, -1)), torch.ones(1, 2, dtype=torch.float64))
    p = pts[:, :2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: heatmaps(q, 6, 7, sigma=1.2), (p,))


@pytest.mark.parametrize("thickness", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("y0", [5.0, 5.3, 5.5, 5.85])
def test_line_coverage_conserves_thickness(thickness, y0):
    # a long horizontal segment: each column's total intensity equals the line width
    pts = torch.zeros(1, 68, 2, dtype=torch.float64)
    pts[0, :17, 0] = torch.linspace(-5, 30, 17)
    pts[0, :17, 1] = y0
    pts[0, 17:] = float("nan")  # other parts missing
    m = part_maps(pts, 12, 20, thickness=thickness, missing="skip")
    assert m.shape == (1, 9, 12, 20)
    torch.testing.assert_close(m[0, 0].sum(0), torch.full((20,), thickness, dtype=torch.float64))
    assert m[0, 1:].abs().sum() == 0
    # brute-force reference: distance from each pixel centre to the line y = y0
    ys = torch.arange(12, dtype=torch.float64)[:, None].expand(12, 20)
    ref = (thickness / 2 + 0.5 - (ys - y0).abs()).clamp(0, 1)
    torch.testing.assert_close(m[0, 0], ref)


def test_segment_end_caps_and_diagonal_distance():
    pts = torch.full((1, 68, 2), float("nan"), dtype=torch.float64)
    pts[0, 27] = torch.tensor([2.0, 2.0])
    pts[0, 28] = torch.tensor([8.0, 8.0])
    pts[0, 29] = torch.tensor([8.0, 8.0])
    pts[0, 30] = torch.tensor([8.0, 8.0])
    m = part_maps(pts, 12, 12, thickness=2.0, missing="skip")[0, 3]  # nose bridge
    ys, xs = np.mgrid[0:12, 0:12].astype(float)
    # distance to the segment (2,2)-(8,8), computed independently
    t = np.clip(((xs - 2) + (ys - 2)) / 72.0 * 6, 0, 1)
    d = np.hypot(xs - (2 + 6 * t), ys - (2 + 6 * t))
    np.testing.assert_allclose(m.numpy(), np.clip(1.5 - d, 0, 1), atol=1e-12)


def test_landmark_image_colors_and_parts():
    pts = _face68()
    img = draw_landmark_lines(pts, 64, 64)
    maps = part_maps(pts, 64, 64)
    assert img.shape == (1, 3, 64, 64) and img.min() >= 0 and img.max() <= 1
    # every part is drawn, and near its own points only
    for k, (name, (idx, _)) in enumerate(PARTS_68.items()):
        ch = maps[0, k]
        assert ch.max() > 0.5, name
        yy, xx = torch.nonzero(ch > 0, as_tuple=True)
        p = pts[0, list(idx)]
        lo, hi = p.min(0).values - 1.5, p.max(0).values + 1.5
        assert (xx >= lo[0]).all() and (xx <= hi[0]).all() and (yy >= lo[1]).all()
    # eyes are green, lips red-ish: pixel on the right-eye contour
    x, y = pts[0, 36].round().long().tolist()
    torch.testing.assert_close(img[0, :, y, x], torch.tensor([0.0, 1.0, 0.2], dtype=torch.float64))
    # nothing is drawn far from the face
    assert img[0, :, :2].sum() == 0
    # batched: second item shifted by (5, 3) gives the shifted image
    pts2 = torch.cat([pts, pts + torch.tensor([5.0, 3.0], dtype=torch.float64)])
    img2 = draw_landmark_lines(pts2, 64, 64)
    torch.testing.assert_close(img2[1, :, 3:, 5:], img2[0, :, :-3, :-5])


def test_landmark_validation():
    with pytest.raises(ValueError, match="68"):
        part_maps(torch.zeros(1, 10, 2), 8, 8)
    with pytest.raises(ValueError, match=r"\(B, N, 2\)"):
        heatmaps(torch.zeros(10, 2), 8, 8)
    with pytest.raises(ValueError, match="sigma"):
        heatmaps(torch.zeros(1, 10, 2), 8, 8, sigma=0)
    with pytest.raises(ValueError, match="background"):
        draw_landmark_lines(_face68(), 16, 16, background=torch.zeros(1, 3, 8, 8))
