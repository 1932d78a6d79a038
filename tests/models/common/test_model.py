"""models/common/model.py helpers shared by every model's forward."""

from __future__ import annotations

import pytest
import torch

from facegeo_models.common.model import batch_images


def test_batch_images_first_source_and_checks():
    src = torch.rand(2, 3, 3, 8, 8)
    drv = torch.rand(2, 3, 8, 8)
    s, d = batch_images({"source": src, "driving": drv})
    assert torch.equal(s, src[:, 0]) and d is drv
    s, d = batch_images({"source": src[:, 1], "driving": drv})
    assert torch.equal(s, src[:, 1])
    with pytest.raises(ValueError, match="same shape"):
        batch_images({"source": torch.rand(2, 3, 8, 8), "driving": torch.rand(2, 3, 4, 4)})
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        batch_images({"source": torch.rand(2, 1, 8, 8), "driving": drv})
    with pytest.raises(TypeError, match="floating point"):
        batch_images({"source": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "driving": drv})
