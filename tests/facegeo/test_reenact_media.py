"""Integration tests of the geometric renderer on real portraits (issue #24): the head turns
by the requested angle as measured by an independent estimator (3DDFA_V2's pose
regressor, facegeo.headpose), and closing the eyes in the target closes them in the image
(dlib's eye landmarks on the output)."""

from __future__ import annotations

import sys

import pytest
import torch

from facegeo.image_io import load_image
from facegeo.reenact import FaceFit, GeometricReenactor, expression_from_names

from _paths import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_pose_fidelity import measure, relative_angles, turned  # noqa: E402
from eval_reenact_eyes_mouth import detect_all, eye_opening  # noqa: E402


@pytest.fixture(scope="module")
def rr(assets_dir):
    return GeometricReenactor(size=256)


@pytest.fixture(scope="module")
def portrait(rr, media_dir):
    return rr.fit_source(load_image(media_dir / "lp_s11.jpg"))


def test_head_turns_by_the_requested_angle(rr, portrait, assets_dir):
    from facegeo.headpose import HeadPoseEstimator

    hp = HeadPoseEstimator()
    src = portrait
    grid = [(-20.0, 0.0), (20.0, 0.0), (0.0, 15.0)]
    tgt = FaceFit.cat([turned(src.fit, y, p) for y, p in grid])
    out = rr.render(src.image, src.fit, tgt, source_landmarks=src.landmarks).frames
    r3, _ = measure(rr, hp, torch.cat([src.image, out]))
    got = relative_angles(r3[1:], r3[0])
    # measured (3DDFA, 256 px): yaw -18.7 / +21.5, pitch +15.6 (v1 renderer: ~70 %)
    for (y, p), g in zip(grid, got):
        k = 0 if y else 1
        req = (y, p)[k]
        assert abs(float(g[k]) - req) <= max(0.15 * abs(req), 2.0), (req, g.tolist())
    # the v1 renderer (hair and outline held by the MLS field) under-turns: the check
    # discriminates
    v1 = GeometricReenactor(size=256, head_proxy=False, hole_fill=False)
    out1 = v1.render(src.image, src.fit, tgt.index(1),
                     source_landmarks=src.landmarks).frames
    r1, _ = measure(v1, hp, torch.cat([src.image, out1]))
    assert float(relative_angles(r1[1:], r1[0])[0, 0]) < 0.85 * 20


def _dark_fraction(frames: torch.Tensor, eyes: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S), (2, 6, 2) eye contours -> (B,) fraction of the pixels inside the eye
    contours darker than half the median luminance of the frame's face (iris, pupil and
    lashes of an open eye; a closed lid is skin)."""
    from facegeo.geometric.render import polygon_mask

    S = frames.shape[-1]
    m = (polygon_mask(eyes, S).amax(0) > 0.5)
    lum = (frames * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    ref = lum[:, S // 4:3 * S // 4, S // 4:3 * S // 4].flatten(1).median(1).values
    return (lum[:, m] < 0.5 * ref[:, None]).float().mean(1)


def test_closed_eyes_in_the_target_close_in_the_image(rr, portrait):
    from facegeo.landmarks.conventions import GROUPS_68

    src = portrait
    shut = expression_from_names(rr.model, {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
                                 src.fit.exp_coeffs.cpu())
    tgt = FaceFit.cat([src.fit, FaceFit(src.fit.rotation, src.fit.scale, src.fit.translation,
                                        src.fit.id_coeffs, shut.to(src.fit.exp_coeffs))])
    eyes = torch.stack([src.landmarks[0, list(GROUPS_68[g])] for g in ("right_eye", "left_eye")])
    out = rr.render(src.image, src.fit, tgt, source_landmarks=src.landmarks).frames
    # dlib's eye landmarks on the output: the eye aspect ratio drops
    lm, ok = detect_all(out, rr.detector)
    assert bool(ok.all())
    ear = eye_opening(lm)
    assert float(ear[1]) < 0.9 * float(ear[0]), ear.tolist()
    # the eyeball is hidden: the dark pixels (iris, pupil) inside the source's eye contours
    # are gone; the v1 renderer squashed the open eye and kept them
    dark = _dark_fraction(out, eyes)
    v1 = GeometricReenactor(size=256, head_proxy=False, hole_fill=False)
    dark1 = _dark_fraction(v1.render(src.image, src.fit, tgt.index(1),
                                     source_landmarks=src.landmarks).frames, eyes)
    # measured (lp_s11, 256): EAR 0.445 -> 0.363; dark fraction 0.51 open, 0.18 closed (v2),
    # 0.57 closed (v1)
    assert float(dark[1]) < 0.5 * float(dark[0]), dark.tolist()
    assert float(dark[1]) < 0.5 * float(dark1[0]), (dark.tolist(), dark1.tolist())


@pytest.mark.integration
def test_gaze_option_moves_only_the_irises(media_dir, assets_dir):
    """GeometricReenactor(gaze=True) through the pipeline on a real clip: it asks for the
    driving crops and landmarks, the reference frame is unchanged, and the frames differ
    from the gaze-free render only inside the eyes (pixels within 0.6 eye widths of the
    rendered eye centres)."""
    from facegeo.landmarks.pupils import eye_axes
    from facegeo.pipeline import ReenactmentPipeline
    from facegeo.video import read_video

    fr, _ = read_video(media_dir / "lp_d9.mp4", max_frames=40)
    x = torch.from_numpy(fr).permute(0, 3, 1, 2).float() / 255
    outs = []
    for gaze in (False, True):
        r = GeometricReenactor(size=128, gaze=gaze)
        assert ({"image", "landmarks68"} <= r.requires) == gaze
        job = ReenactmentPipeline(r, size=128).prepare(x[0], x[::8])
        outs.append(torch.stack(list(job.frames(mode="relative"))))
        if gaze:
            src = job.sources[0]
            tl = r.render(src.image, src.fit, r.target_fits(
                src.fit, job.driving_fit, "relative",
                reference=job.driving_fit.index(slice(0, 1)))).target_landmarks
    diff = (outs[1] - outs[0]).abs().amax(1)                     # (T, S, S)
    assert diff[0].max() < 1e-6 and diff.max() > 0.05
    cen, _, width = eye_axes(tl)
    ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    near = torch.zeros_like(diff, dtype=torch.bool)
    for e in range(2):
        d = ((xs - cen[:, e, 0, None, None]) ** 2 + (ys - cen[:, e, 1, None, None]) ** 2).sqrt()
        near |= d < 0.6 * width[:, e, None, None]
    assert diff[~near].max() < 1e-6
