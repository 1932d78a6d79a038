"""Perceptual losses: VGG-19 layout/loading (synthetic torchvision-format file), the
MobileFaceNet substitute on the real weights, and the config builder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facegeo import assets
from facegeo_models.common import perceptual as P

# tiny tensors: one intra-op thread is faster than two on a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def _fake_torchvision_vgg19(path):
    """A state dict with torchvision's VGG-19 key names and shapes for ``features`` (tiny
    classifier tensors: only key names matter for the loader)."""
    net = P.VGG19Features()
    sd = {k: torch.randn_like(v) * 0.05 for k, v in net.state_dict().items()}
    for i in (0, 3, 6):
        sd[f"classifier.{i}.weight"] = torch.zeros(2, 2)
        sd[f"classifier.{i}.bias"] = torch.zeros(2)
    torch.save(sd, path)
    return sd


def test_vgg19_layout_matches_torchvision_names():
    sd = P.VGG19Features().state_dict()
    convs = sorted({int(k.split(".")[1]) for k in sd})
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert sd["features.0.weight"].shape == (64, 3, 3, 3)
    assert sd["features.34.weight"].shape == (512, 512, 3, 3)
    assert sum(v.numel() for v in sd.values()) == 20024384  # torchvision vgg19 features


def test_vgg_perceptual_loads_torchvision_file(tmp_path):
    p = tmp_path / "vgg19-dcbb9e9d.pth"
    sd = _fake_torchvision_vgg19(p)
    loss = P.VGGPerceptualLoss(weights=str(p), scales=(1, 0.5))
    torch.testing.assert_close(loss.vgg.features[34].weight, sd["features.34.weight"])
    assert not any(q.requires_grad for q in loss.parameters())
    loss.train()
    assert not loss.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    assert loss(x.detach(), x.detach()) == 0
    val = loss(x, torch.rand(1, 3, 32, 32))
    val.backward()
    assert val > 0 and x.grad.abs().sum() > 0
    # features at each level have the documented shapes
    feats = loss.vgg(torch.rand(1, 3, 32, 32))
    assert [f.shape[1:] for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8),
                                            (512, 4, 4), (512, 2, 2)]


def test_vgg_rejects_foreign_state_dict(tmp_path):
    p = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "fc.weight": torch.zeros(1)}, p)
    with pytest.raises(ValueError, match="not a torchvision VGG-19"):
        P.load_vgg19_state_dict(str(p))


def test_vgg_missing_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGEO_ASSETS", str(tmp_path))
    monkeypatch.setenv("FACEGEO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(assets.AssetNotFoundError, match="vgg19"):
        P.build_perceptual({"type": "vgg19", "download": False})


@pytest.fixture(scope="module")
def face_loss(assets_dir):
    return P.FacePerceptualLoss()


def test_mobilefacenet_strict_load_and_shapes(face_loss, assets_dir):
    sd = P.load_mobilefacenet_state_dict()
    assert len(sd) == 307
    net = face_loss.net
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {
        k: tuple(v.shape) for k, v in sd.items()}
    feats, emb = net.forward_features(torch.rand(2, 3, 112, 112))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 56, 56), (64, 56, 56), (64, 28, 28),
                                                   (128, 14, 14), (128, 7, 7), (512, 7, 7)]
    assert emb.shape == (2, 128)
    with pytest.raises(ValueError):
        net(torch.rand(1, 3, 96, 96))


def _face_crops(media_dir):
    """Centre face crops (3, 256, 256) of frames: two of the same video, one of another."""
    from facegeo.video import frames_to_tensor, read_video

    def frames(name, step, n):
        return list(frames_to_tensor(read_video(media_dir / name, step=step, max_frames=n)[0]))

    a0, a1 = frames("lp_d10.mp4", 40, 2)
    (b0,) = frames("lp_d3.mp4", 1, 1)

    def crop(x):
        return F.interpolate(x[None], size=(256, 256), mode="bilinear", antialias=True)

    return crop(a0), crop(a1), crop(b0)


def test_face_loss_properties_on_real_frames(face_loss, media_dir):
    a0, a1, b0 = _face_crops(media_dir)
    assert face_loss(a0, a0) < 1e-5
    same, other = face_loss(a1, a0), face_loss(b0, a0)
    assert same < other  # a later frame of the same person is closer than another person
    # the loss grows with corruption strength
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(a0.shape, generator=g)
    vals = [face_loss((a0 + s * noise).clamp(0, 1), a0).item() for s in (0.02, 0.1, 0.3)]
    assert vals[0] < vals[1] < vals[2]
    x = a1.clone().requires_grad_(True)
    face_loss(x, a0).backward()
    assert x.grad.abs().sum() > 0


def test_build_perceptual(face_loss):
    assert P.build_perceptual("none") is None
    assert P.build_perceptual(None) is None
    assert isinstance(P.build_perceptual({"type": "face", "identity_weight": 0.5}),
                      P.FacePerceptualLoss)
    with pytest.raises(ValueError, match="unknown perceptual"):
        P.build_perceptual("lpips")


@pytest.mark.integration
def test_mobilefacenet_verifies_identities(face_loss, media_dir):
    """Our MobileFaceNet definition reproduces a working face-recognition model: on
    ArcFace-aligned crops of real frames, same-person cosine similarity is high and
    different-person similarity low (README of the weights: same 0.50-0.95, different
    <= 0.33). A wrong layer (activation, residual rule, stride) would break this."""
    from facegeo.landmarks.backends import detect_landmarks
    from facegeo.landmarks.crops import arcface_align
    from facegeo.video import frames_to_tensor, read_video

    def frames(name, step, n):
        return list(frames_to_tensor(read_video(media_dir / name, step=step, max_frames=n)[0]))

    imgs = frames("lp_d10.mp4", 100, 2) + frames("lp_s18.mp4", 100, 2) + \
        frames("lp_d3.mp4", 1, 1)
    crops = torch.stack([arcface_align(im[None], detect_landmarks(im, detector="dlib")[None],
                                       112)[0] for im in imgs])
    with torch.no_grad():
        e = F.normalize(face_loss.net((crops - face_loss.mean) / face_loss.std), dim=1)
    sim = e @ e.T
    assert sim[0, 1] > 0.5 and sim[2, 3] > 0.5
    different = [sim[i, j] for i in range(5) for j in range(5)
                 if i < j and (i, j) not in ((0, 1), (2, 3))]
    assert max(different) < 0.33
