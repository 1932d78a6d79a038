"""models/common/keypoints.py: convex hull areas against scipy and analytic polygons,
FOMM relative motion, landmark keypoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

from facegeo_models.common.keypoints import (
    LANDMARK_SUBSETS,
    convex_hull_area,
    landmark_keypoints,
    relative_keypoints,
)


def test_hull_area_analytic_and_scipy():
    sq = torch.tensor([[[-1.0, -1], [1, -1], [1, 1], [-1, 1], [0, 0], [0.5, -0.2]]])
    assert convex_hull_area(sq).item() == pytest.approx(4.0)
    n = 7
    ang = torch.arange(n) * 2 * math.pi / n
    poly = torch.stack([ang.cos(), ang.sin()], -1)[None]
    assert convex_hull_area(poly).item() == pytest.approx(0.5 * n * math.sin(2 * math.pi / n))
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(5, 10, 2, generator=g) * 2 - 1
    want = [ConvexHull(p.numpy().astype(np.float64)).volume for p in pts]
    np.testing.assert_allclose(convex_hull_area(pts).numpy(), want, rtol=1e-5)
    line = torch.tensor([[[0.0, 0], [1, 1], [2, 2]]])
    assert convex_hull_area(line).item() == 0.0


def test_relative_keypoints():
    g = torch.Generator().manual_seed(1)
    src = torch.rand(1, 10, 2, generator=g) - 0.5
    ref = torch.rand(1, 10, 2, generator=g) - 0.5
    drv = ref + 0.1 * torch.randn(3, 10, 2, generator=g)
    # the reference frame itself maps onto the source
    torch.testing.assert_close(relative_keypoints(src, ref, ref), src)
    # without scale adaptation: plain displacement
    torch.testing.assert_close(relative_keypoints(src, drv, ref, adapt_scale=False),
                               src + (drv - ref))
    # a source twice the reference's size moves twice as far (area ratio 4 -> scale 2)
    big = 2 * ref
    torch.testing.assert_close(relative_keypoints(big, drv, ref), big + 2 * (drv - ref),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="kp_source"):
        relative_keypoints(src[:, :5], drv, ref)


def test_landmark_keypoints_subsets():
    lm = torch.rand(2, 68, 2) * 63
    kp = landmark_keypoints(lm, 64, 64, "ten")
    assert kp.shape == (2, 10, 2)
    idx = list(LANDMARK_SUBSETS["ten"])
    torch.testing.assert_close(kp, (2 * lm[:, idx] + 1) / 64 - 1)
    assert landmark_keypoints(lm, 64, 64, "all68").shape == (2, 68, 2)
    assert len(set(idx)) == 10
    with pytest.raises(ValueError, match="subset"):
        landmark_keypoints(lm, 64, 64, "nine")
    with pytest.raises(ValueError, match="68, 2"):
        landmark_keypoints(lm[:, :60], 64, 64)
