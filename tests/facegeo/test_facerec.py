"""facegeo.facerec: MobileFaceNet definition vs the published weights, ArcFace alignment,
and identity verification on real media."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facegeo import facerec
from facegeo.landmarks.conventions import ARCFACE_TEMPLATE_112


@pytest.fixture(scope="module")
def embedder():
    return facerec.ArcFaceEmbedder()


def test_state_dict_keys_and_shapes_match_weights():
    sd = facerec.load_mobilefacenet_state_dict()
    ours = facerec.MobileFaceNet().state_dict()
    assert len(sd) == 307
    assert set(sd) == set(ours)
    for k, v in sd.items():
        assert tuple(v.shape) == tuple(ours[k].shape), k
    # parameter count documented by the weights README: 1.02 M
    n = sum(v.numel() for k, v in sd.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert 0.98e6 < n < 1.06e6


def test_forward_shapes_and_bad_input():
    net = facerec.MobileFaceNet().eval()
    feats, emb = net.forward_features(torch.rand(2, 3, 112, 112))
    assert emb.shape == (2, 128)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 56, 56), (64, 56, 56), (64, 28, 28),
                                                   (128, 14, 14), (128, 7, 7), (512, 7, 7)]
    with pytest.raises(ValueError, match="112"):
        net(torch.rand(1, 3, 64, 64))
    e = facerec.ArcFaceEmbedder(state_dict=net.state_dict())
    with pytest.raises(ValueError, match="landmarks"):
        e(torch.rand(2, 3, 64, 64), torch.rand(2, 5, 2))


def _landmarks_at_template(scale: float, shift: tuple[float, float]) -> torch.Tensor:
    """68 points whose eye centres / nose / mouth corners are the ArcFace template mapped by
    x -> scale * x + shift (other points anywhere)."""
    lm = torch.rand(68, 2) * 100
    t = ARCFACE_TEMPLATE_112 * scale + torch.tensor(shift)
    lm[36:42] = t[0]
    lm[42:48] = t[1]
    lm[30], lm[48], lm[54] = t[2], t[3], t[4]
    return lm


def test_alignment_inverts_a_known_similarity():
    """An image that is the 112 crop scaled by 2 and shifted: aligning it with the
    correspondingly moved landmarks gives the crop back."""
    torch.manual_seed(0)
    crop = F.interpolate(torch.rand(1, 3, 14, 14), size=(112, 112), mode="bilinear",
                         align_corners=False)
    big = torch.zeros(1, 3, 300, 300)
    up = F.interpolate(crop, size=(224, 224), mode="bilinear", align_corners=False)
    big[:, :, 40:264, 30:254] = up
    # crop pixel p (centre convention) -> big pixel 2 (p + 0.5) - 0.5 + (30, 40)
    lm = _landmarks_at_template(2.0, (30 + 0.5, 40 + 0.5))
    out = facerec.ArcFaceEmbedder.align(big, lm[None])
    assert out.shape == (1, 3, 112, 112)
    assert (out - crop)[..., 4:-4, 4:-4].abs().max() < 0.03


def test_embeddings_unit_norm_and_scale_invariant(embedder, media_dir):
    from facegeo.image_io import load_image
    from facegeo.landmarks.backends import detect_landmarks

    img = load_image(media_dir / "lp_s12.jpg")
    lm = detect_landmarks(img, detector="dlib")
    e1 = embedder(img[None], lm[None])
    big = F.interpolate(img[None], scale_factor=2, mode="bilinear", align_corners=False)
    e2 = embedder(big, (lm[None] + 0.5) * 2 - 0.5)
    assert torch.allclose(e1.norm(dim=1), torch.ones(1), atol=1e-5)
    assert float((e1 * e2).sum()) > 0.95


@pytest.mark.integration
def test_same_person_scores_higher_than_different_people(embedder, media_dir):
    """README of the weights: same person 0.50-0.95, different people <= 0.33."""
    from facegeo.image_io import load_image
    from facegeo.landmarks.backends import detect_landmarks
    from facegeo.video import frames_to_tensor, read_video

    def video_frame(name, i):
        frames, _ = read_video(media_dir / name, start=i, max_frames=1)
        return frames_to_tensor(frames)[0]

    imgs = [load_image(media_dir / "lp_s11.jpg"), video_frame("lp_d11.mp4", 60),
            load_image(media_dir / "3ddfa_JianzhuGuo.jpg"), video_frame("lp_d9.mp4", 0),
            load_image(media_dir / "lp_s1.jpg"), load_image(media_dir / "lp_s12.jpg")]
    e = torch.cat([embedder(im[None], detect_landmarks(im, detector="dlib")[None])
                   for im in imgs])
    sim = e @ e.T
    same = [(0, 1), (2, 3)]
    for i, j in same:
        assert 0.5 < sim[i, j] < 0.99
    diff = [float(sim[i, j]) for i in range(6) for j in range(i + 1, 6) if (i, j) not in same]
    assert max(diff) < 0.33
    # the dlib descriptor agrees on the ranking
    d = torch.cat([facerec.dlib_embeddings(im[None], detect_landmarks(im, detector="dlib")[None])
                   for im in imgs])
    ds = d @ d.T
    assert min(ds[i, j] for i, j in same) > max(ds[i, j] for i in range(6)
                                                for j in range(i + 1, 6) if (i, j) not in same)
