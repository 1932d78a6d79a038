"""Unit tests of facegeo.landmarks (conventions, crops, filters, FAN decoding): no media."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from facegeo.landmarks import backends, conventions, crops, tracking
from facegeo.landmarks.conventions import (
    ARCFACE_TEMPLATE_112,
    FLIP_PERMUTATION_68,
    GROUPS_68,
    MEDIAPIPE_TO_68,
)


def _random_face(seed: int = 0, n: int = 1) -> torch.Tensor:
    """A plausible (n, 68, 2) landmark set: a mirrored template + noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(68, 2, generator=g) * 100 + 50
    return base.expand(n, 68, 2) + torch.randn(n, 68, 2, generator=g)


# ------------------------------------------------------------------ conventions
def test_groups_partition_the_68_points():
    parts = ["jaw", "right_brow", "left_brow", "nose_bridge", "nose_lower", "right_eye",
             "left_eye", "outer_lips", "inner_lips"]
    idx = sorted(i for p in parts for i in GROUPS_68[p])
    assert idx == list(range(68))
    assert conventions.group_indices("eyes", "lips") == list(range(36, 48)) + list(range(48, 68))
    with pytest.raises(KeyError, match="unknown landmark group"):
        conventions.group_indices("ears")


def test_flip_permutation_is_an_involution_that_swaps_sides():
    p = torch.tensor(FLIP_PERMUTATION_68)
    assert torch.equal(p[p], torch.arange(68))
    fixed = set((p == torch.arange(68)).nonzero().flatten().tolist())
    # points on the symmetry axis: chin, nose bridge, subnasale, lip centres
    assert fixed == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
    assert all(p[i] in GROUPS_68["left_eye"] for i in GROUPS_68["right_eye"])
    assert all(p[i] in GROUPS_68["left_brow"] for i in GROUPS_68["right_brow"])


def test_flip_landmarks_matches_flipping_the_pixels():
    # points placed on distinct pixels of an image; flipping the image moves the marked
    # pixels exactly where flip_landmarks says (up to the permutation).
    w, h = 37, 29
    g = torch.Generator().manual_seed(1)
    pts = torch.stack([torch.randint(0, w, (68,), generator=g),
                       torch.randint(0, h, (68,), generator=g)], -1).float()
    img = np.zeros((h, w), np.int64) - 1
    for i, (x, y) in enumerate(pts.long().tolist()):
        img[y, x] = i
    flipped_img = img[:, ::-1]
    f = conventions.flip_landmarks(pts, w)
    perm = FLIP_PERMUTATION_68
    for i in range(68):
        x, y = f[i].long().tolist()
        j = perm[i]
        # the pixel at the flipped location holds the mark of the source point j
        # unless another point overwrote it (duplicate pixel)
        if (pts == pts[j]).all(-1).sum() == 1:
            assert flipped_img[y, x] == j
    assert torch.allclose(conventions.flip_landmarks(f, w), pts)
    with pytest.raises(ValueError):
        conventions.flip_landmarks(torch.zeros(5, 2), 10)


def test_inter_ocular_distance_and_five_points():
    lm = torch.zeros(2, 68, 2)
    lm[:, 36] = torch.tensor([10.0, 20.0])
    lm[:, 45] = torch.tensor([40.0, 60.0])
    lm[:, 36:42] += 0  # right eye at (10, 20)-ish
    lm[:, 37:42] = torch.tensor([12.0, 20.0])
    lm[:, 42:45] = torch.tensor([38.0, 60.0])
    lm[:, 46:48] = torch.tensor([38.0, 60.0])
    lm[:, 30] = torch.tensor([25.0, 50.0])
    lm[:, 48] = torch.tensor([15.0, 80.0])
    lm[:, 54] = torch.tensor([35.0, 80.0])
    assert torch.allclose(conventions.inter_ocular_distance(lm), torch.full((2,), 50.0))
    c = conventions.eye_centers(lm)
    assert torch.allclose(c[0, 0], torch.tensor([(10 + 5 * 12) / 6, 20.0]))
    pup = conventions.inter_ocular_distance(lm, "pupil")
    assert torch.allclose(pup, torch.linalg.vector_norm(c[:, 0] - c[:, 1], dim=-1))
    five = conventions.to_5_points(lm)
    assert five.shape == (2, 5, 2)
    assert torch.allclose(five[0, 2:], torch.tensor([[25.0, 50.0], [15.0, 80.0], [35.0, 80.0]]))
    with pytest.raises(ValueError):
        conventions.inter_ocular_distance(lm, "inner")


def test_mediapipe_table():
    t = torch.tensor(MEDIAPIPE_TO_68)
    assert t.numel() == 68 and t.unique().numel() == 68
    assert int(t.min()) >= 0 and int(t.max()) < 468
    assert MEDIAPIPE_TO_68[8] == 152 and MEDIAPIPE_TO_68[51] == 0  # chin, upper-lip centre
    mesh = torch.arange(478 * 3, dtype=torch.float32).view(478, 3)
    out = conventions.mediapipe_to_68(mesh[None])
    assert out.shape == (1, 68, 3) and torch.equal(out[0, :, 0], t.float() * 3)
    with pytest.raises(ValueError):
        conventions.mediapipe_to_68(torch.zeros(100, 2))


@pytest.mark.parametrize("reflect", [False, True])
def test_similarity_transform_recovers_known_map(reflect):
    g = torch.Generator().manual_seed(3)
    src = torch.randn(4, 7, 2, generator=g) * 30
    ang = torch.rand(4, generator=g) * 6.28
    s = 0.5 + torch.rand(4, generator=g)
    r = torch.stack([torch.stack([ang.cos(), -ang.sin()], -1),
                     torch.stack([ang.sin(), ang.cos()], -1)], -2)
    t = torch.randn(4, 2, generator=g) * 10
    dst = s[:, None, None] * src @ r.transpose(1, 2) + t[:, None]
    if reflect:  # a reflection cannot be represented: result must stay a rotation
        dst = dst * torch.tensor([-1.0, 1.0])
    m = conventions.similarity_transform(src, dst)
    a = m[..., :2]
    assert torch.all(torch.linalg.det(a) > 0)
    if not reflect:
        assert torch.allclose(a, s[:, None, None] * r, atol=1e-4)
        assert torch.allclose(m[..., 2], t, atol=1e-3)
    # compare with OpenCV's least-squares partial affine (no outliers -> same solution)
    if not reflect:
        ref, _ = cv2.estimateAffinePartial2D(src[0].numpy(), dst[0].numpy(), method=cv2.LMEDS)
        assert np.allclose(ref, m[0].numpy(), atol=1e-3)


# ------------------------------------------------------------------ crops
def test_face_boxes_geometry():
    lm = torch.tensor([[[0.0, 0.0], [100.0, 0.0], [0.0, 50.0], [100.0, 50.0]]])
    b = crops.face_boxes(lm, margin=0.5, shift_up=0.1)
    assert torch.allclose(b, torch.tensor([[50.0, 25.0 - 20.0, 200.0]]))


def test_points_crop_roundtrip_and_matrix():
    boxes = torch.tensor([[100.0, 80.0, 64.0], [10.0, 20.0, 300.0]])
    pts = torch.rand(2, 5, 2) * 200
    u = crops.points_to_crop(pts, boxes, 32)
    assert torch.allclose(crops.points_from_crop(u, boxes, 32), pts, atol=1e-4)
    # the box corners map to the crop's outer pixel edges
    corner = boxes[:, None, :2] - boxes[:, None, 2:] / 2
    assert torch.allclose(crops.points_to_crop(corner, boxes, 32), torch.full((2, 1, 2), -0.5))


def test_crop_images_matches_opencv_warp():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 60, 80, generator=g)
    img = torch.nn.functional.avg_pool2d(img, 3, 1, 1)  # smooth enough for cv2's fixed point
    box = torch.tensor([[41.3, 27.8, 40.0]])
    out = crops.crop_images(img, box, 64, antialias=False)
    m = crops.crop_matrix(box, 64)[0].numpy()
    ref = cv2.warpAffine(img[0].permute(1, 2, 0).numpy(), m, (64, 64), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(out[0].permute(1, 2, 0).numpy() - ref).max() < 2e-2
    assert np.abs(out[0].permute(1, 2, 0).numpy() - ref).mean() < 2e-3


def test_crop_antialias_suppresses_aliasing():
    # a fine checkerboard shrunk 8x must come out as (nearly uniform) gray
    y, x = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    img = ((x + y) % 2).float().expand(1, 3, 256, 256).contiguous()
    box = torch.tensor([[128.0, 128.0, 256.0]])  # samples fall on pixel centres
    aa = crops.crop_images(img, box, 32)
    assert (aa - 0.5).abs().max() < 0.05
    noaa = crops.crop_images(img, box, 32, antialias=False)
    assert (noaa - 0.5).abs().max() > 0.3


def test_paste_back_roundtrip_and_untouched_outside():
    g = torch.Generator().manual_seed(2)
    frame = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 90, 120, generator=g), 5, 1, 2)
    boxes = torch.tensor([[60.0, 45.0, 50.0], [30.0, 40.0, 40.0]])
    c = crops.crop_images(frame, boxes, 128)  # upsampling crop: pasting back ~ identity
    out = crops.paste_back(frame, c, boxes, feather=0.1)
    assert (out - frame).abs().max() < 0.03
    # a white crop: inside the non-feathered core the result is white, outside untouched
    white = torch.ones_like(c)
    out = crops.paste_back(frame, white, boxes, feather=0.2)
    x0, y0 = int(60 - 25), int(45 - 25)
    assert torch.equal(out[0, :, :, :x0 - 1], frame[0, :, :, :x0 - 1])
    assert torch.equal(out[0, :, : y0 - 1], frame[0, :, : y0 - 1])
    assert torch.allclose(out[0, :, 40:50, 55:65], torch.ones(3, 10, 10))
    m = crops.feather_mask(64, 0.25)
    assert float(m[32, 32]) == 1.0 and float(m[0, 0]) < 0.01
    assert torch.all(m[32, 1:33] >= m[32, :32])  # monotone ramp towards the centre


def test_clip_boxes_modes():
    g = torch.Generator().manual_seed(4)
    b = torch.tensor([100.0, 100.0, 50.0]) + torch.randn(20, 3, generator=g) * 3
    fixed = crops.clip_boxes(b, "fixed")
    assert torch.allclose(fixed, fixed[:1].expand(20, 3))
    lo_f, hi_f = fixed[0, :2] - fixed[0, 2] / 2, fixed[0, :2] + fixed[0, 2] / 2
    assert torch.all(b[:, :2] - b[:, 2:] / 2 >= lo_f - 1e-4)
    assert torch.all(b[:, :2] + b[:, 2:] / 2 <= hi_f + 1e-4)
    sm = crops.clip_boxes(b, "smooth", sigma=3)
    assert sm.shape == b.shape and sm.std(0).max() < b.std(0).max()
    const = torch.tensor([[5.0, 6.0, 7.0]]).expand(9, 3)
    assert torch.allclose(crops.clip_boxes(const, "smooth"), const)
    with pytest.raises(ValueError):
        crops.clip_boxes(b, "median")


def test_arcface_align_maps_points_onto_template():
    # landmarks whose 5 points are a similarity image of the template: the aligned crop of
    # an image with dots at those points has the dots at the template positions.
    lm = torch.zeros(1, 68, 2)
    ang, s, t = 0.3, 2.0, torch.tensor([60.0, 40.0])
    r = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    tmpl = ARCFACE_TEMPLATE_112 * s @ r.T + t
    lm[0, 36:42], lm[0, 42:48], lm[0, 30], lm[0, 48], lm[0, 54] = tmpl
    img = torch.zeros(1, 3, 400, 400)
    for x, y in tmpl.round().long().tolist():
        img[0, :, y - 2:y + 3, x - 2:x + 3] = 1.0
    out = crops.arcface_align(img, lm, 112)[0, 0]
    for tx, ty in ARCFACE_TEMPLATE_112.tolist():
        assert out[round(ty), round(tx)] > 0.5
    assert float(out[5, 5]) == 0.0 and float(out[56, 20]) == 0.0


# ------------------------------------------------------------------ filters / metric
def test_sms_old_spelling_warns_and_returns_the_metrics_value_as_float():
    """tracking.sms is the deprecated float spelling of facegeo.metrics.sms (the one SMS,
    a tensor; analytic cases in test_metrics)."""
    from facegeo import metrics

    t = torch.arange(10, dtype=torch.float32)
    e = 0.7
    jitter = (e * (-1.0) ** t)[:, None, None].expand(10, 68, 2)
    for per_coordinate in (False, True):
        new = metrics.sms(jitter, per_coordinate=per_coordinate)
        assert isinstance(new, torch.Tensor) and new.shape == ()
        with pytest.warns(DeprecationWarning, match="facegeo.metrics.sms"):
            old = tracking.sms(jitter, per_coordinate=per_coordinate)
        assert type(old) is float and old == float(new)
    assert float(metrics.sms(jitter)) == pytest.approx(2 * e * 68 * 2, rel=1e-5)
    with pytest.raises(ValueError), pytest.warns(DeprecationWarning):
        tracking.sms(torch.zeros(2, 68, 2))


def test_one_euro_is_a_first_order_lowpass_when_beta_is_zero():
    fps, fc = 30.0, 2.0
    f = tracking.OneEuroFilter(fps, min_cutoff=fc, beta=0.0)
    a = 1 / (1 + fps / (2 * math.pi * fc))
    assert torch.equal(f(torch.zeros(3, 2)), torch.zeros(3, 2))
    for n in range(1, 6):
        y = f(torch.ones(3, 2))
        assert torch.allclose(y, torch.full((3, 2), 1 - (1 - a) ** n))
    # constant input stays constant; larger beta follows a ramp with less lag
    ramp = torch.arange(60, dtype=torch.float32)[:, None, None].expand(60, 1, 2) * 3
    slow = tracking.one_euro_smooth(ramp, fps, 1.0, 0.0)
    fast = tracking.one_euro_smooth(ramp, fps, 1.0, 1.0)
    assert (ramp[-1] - fast[-1]).abs().max() < (ramp[-1] - slow[-1]).abs().max()
    const = torch.full((5, 4, 2), 3.0)
    assert torch.allclose(tracking.one_euro_smooth(const, fps), const)
    # zero-phase (forward-backward) has no lag on a ramp away from the ends, the causal
    # filter lags behind
    zp = tracking.one_euro_smooth(ramp, fps, 1.0, 0.0, zero_phase=True)
    mid = slice(25, 35)
    assert (zp[mid] - ramp[mid]).abs().max() < 0.05 * (slow[mid] - ramp[mid]).abs().max()
    # numpy and torch inputs give the same result
    g = torch.Generator().manual_seed(5)
    seq = torch.randn(20, 6, 2, generator=g).cumsum(0)
    ft, fn = tracking.OneEuroFilter(fps, 1.0, 2.0), tracking.OneEuroFilter(fps, 1.0, 2.0)
    for x in seq:
        yt, yn = ft(x), fn(x.double().numpy())
        assert isinstance(yn, np.ndarray) and np.allclose(yt.numpy(), yn, atol=1e-5)
    with pytest.raises(ValueError):
        tracking.OneEuroFilter(fps, min_cutoff=0)


# ------------------------------------------------------------------ FAN decoding / plumbing
def test_fan_heatmap_decoding_subpixel():
    h = w = 64
    y, x = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    true = torch.tensor([[10.3, 20.0], [40.0, 33.8], [5.0, 60.0]])
    hm = torch.stack([torch.exp(-((x - px) ** 2 + (y - py) ** 2) / 2) for px, py in true])[None]
    pts = backends.fan_heatmaps_to_points(hm)[0]
    assert torch.allclose(pts, torch.tensor([[10.25, 20.0], [40.0, 33.75], [5.0, 60.0]]))


def test_fan_backend_with_a_scripted_network(tmp_path):
    # A TorchScript stand-in for 2D-FAN-4 whose heat-map peaks sit at known 64x64 cells:
    # the backend must map them to image coordinates through FAN's crop convention.
    class Fake(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hm = torch.zeros(x.shape[0], 68, 64, 64)
            for k in range(68):
                hm[:, k, 8 + (k // 10) * 6, 5 + (k % 10) * 5] = 1.0
            return hm

    path = tmp_path / "fan.zip"
    torch.jit.save(torch.jit.script(Fake()), str(path))
    det = backends.FANDetector(weights=path)
    img = np.full((300, 400, 3), 128, np.uint8)
    box = torch.tensor([100.0, 50.0, 260.0, 210.0])
    lm = det.landmarks_in_box(img, box)
    c, side = backends.fan_crop_params(box)
    assert side == pytest.approx(200 * 320 / 195)
    assert float(c[1]) == pytest.approx(130 - 0.12 * 160)
    k = torch.arange(68)
    cell = torch.stack([5 + (k % 10) * 5, 8 + (k // 10) * 6], -1).float()
    # heat-map cell centre -> 256 crop pixel -> image (box of side `side` around c)
    u256 = (cell + 0.5) * 4 - 0.5
    expect = c + (u256 + 0.5) * side / 256 - side / 2 - 0.5 + 0.5
    assert torch.allclose(lm, expect, atol=1e-3)


def test_fan_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGEO_ASSETS", str(tmp_path / "none"))
    monkeypatch.setenv("FACEGEO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(backends.BackendUnavailableError, match="fan_2d") as e:
        backends.FANDetector(download=False)
    assert "2DFAN4" in str(e.value)


def test_get_detector_errors_and_auto():
    with pytest.raises(ValueError, match="unknown landmark backend"):
        backends.get_detector("openface")
    det = backends.get_detector()
    assert det.name in backends.AUTO_ORDER
    try:
        backends.get_detector("mediapipe")
    except backends.BackendUnavailableError as e:
        assert "pip install" in str(e)


# ------------------------------------------------------------------ API spellings
class _StubDetector(backends.LandmarkDetector):
    """Two faces at fixed places (no dlib): checks the keyword plumbing only."""

    name = "stub"

    def _detect(self, img):
        h, w = img.shape[:2]
        out = []
        for k, side in enumerate((10.0, 20.0)):
            lm = torch.full((68, 2), float(k)) + torch.tensor([w / 2, h / 2])
            box = torch.tensor([0.0, 0.0, side, side])
            out.append(backends.Face(box=box, landmarks=lm, score=1.0, backend=self.name))
        return out


def test_detector_keyword_and_deprecated_backend_keyword():
    img = torch.zeros(3, 24, 40)  # non-square
    det = _StubDetector()
    new = backends.detect_landmarks(img, 1, detector=det)
    assert torch.equal(new, torch.full((68, 2), 0.0) + torch.tensor([20.0, 12.0]))
    assert torch.equal(backends.detect_landmarks(img, 1, det), new)  # positional: unchanged
    for fn, args in ((backends.detect_landmarks, (img, 1)), (backends.detect_face, (img, 1)),
                     (backends.detect, (img,))):
        with pytest.warns(DeprecationWarning, match=rf"{fn.__name__}\(detector=\)"):
            old = fn(*args, backend=det)
        ref = fn(*args, detector=det)
        if isinstance(ref, torch.Tensor):
            assert torch.equal(old, ref)
        else:
            assert repr(old) == repr(ref)
    with pytest.warns(DeprecationWarning):
        old_b = backends.detect_batch(img[None].expand(2, -1, -1, -1), backend=det)
    assert torch.equal(old_b, backends.detect_batch(img[None].expand(2, -1, -1, -1),
                                                    detector=det))
    with pytest.raises(TypeError, match="once"):
        backends.detect(img, detector=det, backend=det)


def test_available_backends_is_a_list_and_old_dict_use_warns(monkeypatch):
    status = {"dlib": None, "dlib_hog": None, "dlib_cnn": "no cnn", "fan": "no weights",
              "mediapipe": None}
    monkeypatch.setattr(backends, "backend_status", lambda: dict(status))
    names = backends.available_backends()
    assert isinstance(names, list) and names == ["dlib", "dlib_hog", "mediapipe"]
    assert names[0] == "dlib" and names[-1] == "mediapipe" and "fan" not in names
    with pytest.warns(DeprecationWarning, match="backend_status"):
        assert names["fan"] == "no weights"
    with pytest.warns(DeprecationWarning):
        assert dict(names.items()) == status
    with pytest.warns(DeprecationWarning):
        assert names.get("dlib_cnn") == "no cnn"
    # the real one: the same type as facegeo.raster.available_backends
    from facegeo import raster

    real = backends.available_backends()
    assert type(raster.available_backends()) is list and isinstance(real, list)
    assert all(isinstance(n, str) and n in backends.BACKENDS for n in real)
