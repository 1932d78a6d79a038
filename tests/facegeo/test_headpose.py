"""facegeo.headpose: the 3DDFA_V2 pose regressor (an independent check of head pose)."""

from __future__ import annotations

import pytest
import torch

from facegeo.landmarks.conventions import flip_landmarks
from facegeo.video import frames_to_tensor, read_video


@pytest.fixture(scope="module")
def clip(media_dir):
    from facegeo.reenact import track_driving

    frames, fps = read_video(media_dir / "lp_d11.mp4", max_frames=150, step=10)
    track = track_driving(frames, fps)
    return frames_to_tensor(frames), track.landmarks


@pytest.fixture(scope="module")
def hp(assets_dir):
    from facegeo.headpose import HeadPoseEstimator

    return HeadPoseEstimator()


def test_yaw_follows_facegeo_fit_on_a_turning_head(hp, clip):
    from facegeo.fitting import fit_landmarks
    from facegeo.morphable import MorphableModel

    images, lm = clip
    a = hp.angles(images, lm)
    b = fit_landmarks(MorphableModel.load(), lm).angles
    assert float(b[:, 0].max() - b[:, 0].min()) > 8  # the head really turns
    r = torch.corrcoef(torch.stack([a[:, 0], b[:, 0]]))[0, 1]
    assert float(r) > 0.9, float(r)  # measured 0.99 (45 frames)
    assert float((a[:, 0] - b[:, 0]).abs().median()) < 3.0


def test_mirrored_image_reads_the_opposite_yaw_and_roll(hp, clip):
    images, lm = clip
    W = images.shape[-1]
    a = hp.angles(images, lm)
    m = hp.angles(images.flip(-1), flip_landmarks(lm, W))
    # the regressor is not exactly mirror-symmetric: measured differences up to 3.0 deg
    torch.testing.assert_close(m[:, 0], -a[:, 0], atol=4.0, rtol=0)
    torch.testing.assert_close(m[:, 2], -a[:, 2], atol=4.0, rtol=0)
    torch.testing.assert_close(m[:, 1], a[:, 1], atol=4.0, rtol=0)


def test_bad_input_is_named(hp):
    with pytest.raises(ValueError, match="images must be"):
        hp.rotation(torch.zeros(3, 8, 8), torch.zeros(1, 68, 2))
    with pytest.raises(ValueError, match="landmarks must be"):
        hp.rotation(torch.zeros(1, 3, 8, 8), torch.zeros(1, 5, 2))
