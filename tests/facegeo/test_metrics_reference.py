"""facegeo.metrics' LPIPS and FID Inception-v3 against the reference packages' own model
definitions (``lpips`` 0.1.4, ``pytorch-fid`` 0.3.0), loaded with the same weights: random
backbones (the ImageNet / FID weights are not on this machine) and, for LPIPS, the
authors' trained linear layers that the ``lpips`` package ships."""

from __future__ import annotations

import pytest
import torch

from facegeo import metrics as M

from _reference_packages import import_torchvision

# torchvision's own deprecation note about lpips' pretrained=False call
pytestmark = pytest.mark.filterwarnings("ignore:Arguments other than a weight enum")


@pytest.fixture(scope="module")
def reference_packages():
    import_torchvision()
    import lpips
    import pytorch_fid.inception

    return lpips, pytorch_fid.inception


def test_lpips_equals_the_lpips_package(reference_packages):
    lpips, _ = reference_packages
    torch.manual_seed(0)
    ref = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True,
                      verbose=False).eval()
    ours = M.LPIPS().eval()
    # the package's slices hold torchvision's alexnet().features modules under their index
    backbone = {f"features.{k.split('.', 1)[1]}": v for k, v in ref.net.state_dict().items()}
    ours.load_backbone(backbone)
    lin = {f"lin{i}.model.1.weight": ref.state_dict()[f"lin{i}.model.1.weight"]
           for i in range(5)}
    assert len(lin) == 5 and all((v >= 0).all() for v in lin.values())   # trained weights
    ours.load_linear(lin)
    # the input scaling layer: the same constants
    torch.testing.assert_close(ours.shift, ref.scaling_layer.shift)
    torch.testing.assert_close(ours.scale, ref.scaling_layer.scale)
    x, y = torch.rand(3, 3, 64, 72), torch.rand(3, 3, 64, 72)
    y[0] = x[0]
    with torch.no_grad():
        want = ref(x, y, normalize=True).flatten()     # [0, 1] inputs, as ours take
        got = ours(x, y)
    assert want[0] == 0 and got[0] == 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert (got[1:] > 0).all()


def test_inception_fid_equals_pytorch_fid(reference_packages, monkeypatch):
    _, inception = reference_packages
    torch.manual_seed(0)
    ours = M.InceptionFID().eval()
    with torch.no_grad():   # BN statistics away from (0, 1) so they matter
        for m in ours.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    sd = ours.state_dict()
    # pytorch-fid downloads the FID weights; give it ours: the key names must match exactly
    monkeypatch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: sd)
    ref = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
                                resize_input=True, normalize_input=True,
                                use_fid_inception=True).eval()
    x = torch.rand(2, 3, 80, 64)
    with torch.no_grad():
        want = ref(x)[0].flatten(1)
        got = ours(x)
    assert got.shape == want.shape == (2, 2048)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # and FID of the two feature sets is the same number either way
    assert M.fid_from_features(got[:, :8], got[:, 8:16]) == pytest.approx(
        M.fid_from_features(want[:, :8], want[:, 8:16]), rel=1e-4)
