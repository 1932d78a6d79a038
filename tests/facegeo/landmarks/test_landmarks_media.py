"""Integration tests of facegeo.landmarks on the real photos and videos of ../shared/media."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from facegeo.image_io import ImageReadError, as_uint8_rgb, load_image
from facegeo.landmarks import (
    LandmarkDetector,
    NoFaceError,
    detect,
    detect_batch,
    detect_face,
    flip_landmarks,
    get_detector,
    inter_ocular_distance,
)
from facegeo.landmarks import crops as fcrops
from facegeo.landmarks.identity import FaceEmbedder
from facegeo.landmarks.tracking import LandmarkTracker, detect_every_frame
from facegeo.metrics import cosine_similarity, sms
from facegeo.video import read_video

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def media(media_dir):
    return json.loads((media_dir / "media.json").read_text())


def _photos(media):
    return [m["file"] for m in media["items"] if m["kind"] == "image"]


def _check_geometry(lm: torch.Tensor, h: int, w: int) -> None:
    eyes_y = lm[36:48, 1].mean()
    mouth_y = lm[48:68, 1].mean()
    nose_y = lm[30, 1]
    assert eyes_y < nose_y < mouth_y, "eyes above nose above mouth"
    assert lm[8, 1] > mouth_y, "chin below the mouth"
    # the subject's right eye is on the image left (no photo is upside down / mirrored)
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()
    iod = float(inter_ocular_distance(lm))
    assert 10 < iod < w
    assert float(lm[:, 0].min()) > -0.1 * w and float(lm[:, 0].max()) < 1.1 * w
    assert float(lm[:, 1].min()) > -0.1 * h and float(lm[:, 1].max()) < 1.1 * h


def test_landmarks_on_every_photo(media, media_dir):
    det = get_detector("dlib")
    for name in _photos(media):
        img = load_image(media_dir / name)
        faces = det.detect(img)
        assert faces, f"no face in {name}"
        for f in faces:
            _check_geometry(f.landmarks, img.shape[1], img.shape[2])
            # the box contains the inner face (brows, eyes, nose, mouth)
            inner = f.landmarks[17:]
            assert torch.all(inner >= f.box[:2] - 0.15 * (f.box[2] - f.box[0]))
            assert torch.all(inner <= f.box[2:] + 0.15 * (f.box[2] - f.box[0]))
        areas = [f.area for f in faces]
        assert areas == sorted(areas, reverse=True)


def test_several_faces_largest_first_and_index(media_dir):
    path = media_dir / "3ddfa_trump_hillary.jpg"
    img = load_image(path)
    faces = detect(img)
    assert len(faces) == 2
    # the two faces are side by side: their boxes do not overlap
    a, b = faces
    assert a.area >= b.area
    assert a.box[2] < b.box[0] or b.box[2] < a.box[0]
    second = detect_face(img, index=1)
    assert torch.equal(second.landmarks, b.landmarks)
    with pytest.raises(NoFaceError, match="index 2"):
        detect_face(img, index=2)


def test_cnn_detector_finds_all_three_faces_in_the_collage(media_dir):
    img = load_image(media_dir / "3ddfa_emma.jpg")
    faces = get_detector("dlib_cnn").detect(img)
    assert len(faces) == 3
    xs = sorted(float(f.box[0]) for f in faces)
    assert xs[1] - xs[0] > 500 and xs[2] - xs[1] > 500  # three separate photos
    for f in faces:
        _check_geometry(f.landmarks, img.shape[1], img.shape[2])


def test_no_face_and_tiny_images(media_dir):
    blank = torch.full((3, 512, 512), 0.5)
    hog = get_detector("dlib_hog")  # (the default would also try the slow CNN detector)
    assert hog.detect(blank) == []
    with pytest.raises(NoFaceError, match="no face"):
        detect_face(blank, detector=hog)
    fr, _ = read_video(media_dir / "lp_d3.mp4", max_frames=1)
    face = torch.from_numpy(fr[0]).permute(2, 0, 1).float() / 255
    with pytest.raises(NoFaceError, match="batch element 1"):
        detect_batch(torch.stack([face, blank]), detector=hog)
    with pytest.raises(ValueError, match="too small"):
        detect(torch.zeros(3, 10, 40))


def test_detect_batch_matches_single(media_dir):
    fr, _ = read_video(media_dir / "lp_d3.mp4", max_frames=2)
    x = torch.from_numpy(fr).permute(0, 3, 1, 2).float() / 255
    lm = detect_batch(x)
    assert lm.shape == (2, 68, 2)
    assert torch.allclose(lm[1], detect_face(fr[1]).landmarks)


def test_flip_consistency_on_a_photo(media_dir):
    img = as_uint8_rgb(load_image(media_dir / "lp_s12.jpg"))
    lm = detect_face(img).landmarks
    lm_f = detect_face(np.ascontiguousarray(img[:, ::-1])).landmarks
    d = (flip_landmarks(lm_f, img.shape[1]) - lm).norm(dim=-1).mean()
    assert float(d) < 0.05 * float(inter_ocular_distance(lm))


def test_grayscale_rgba_16bit_and_corrupt_files(media_dir, tmp_path):
    bgr = cv2.imread(str(media_dir / "lp_s12.jpg"))
    ref = detect_face(load_image(media_dir / "lp_s12.jpg")).landmarks
    iod = float(inter_ocular_distance(ref))
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 255
    rgba[:20, :20, 3] = 0  # transparent corner -> composited over white
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    cv2.imwrite(str(tmp_path / "w.png"), bgr.astype(np.uint16) * 257)
    g = load_image(tmp_path / "g.png")
    a = load_image(tmp_path / "a.png")
    w16 = load_image(tmp_path / "w.png")
    assert g.shape == a.shape == w16.shape == (3, *bgr.shape[:2])
    assert torch.equal(g[0], g[2])
    assert torch.allclose(a[:, :20, :20], torch.ones(3, 20, 20))
    assert torch.allclose(w16, load_image(tmp_path / "a.png")[:, 30:, 30:].new_tensor(
        bgr[..., ::-1].copy()).permute(2, 0, 1) / 255, atol=1e-6)
    for im in (g, a, w16):
        d = (detect_face(im).landmarks - ref).norm(dim=-1).mean()
        assert float(d) < 0.05 * iod
    # 16-bit numpy input and a (H, W) grayscale tensor work too
    detect_face(bgr[..., ::-1].astype(np.uint16) * 257)
    detect_face(g[0])
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        detect(str(tmp_path / "bad.jpg"))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_tracking_close_to_per_frame_detection_and_smoother(media_dir):
    frames, fps = read_video(media_dir / "lp_d3.mp4", max_frames=40)
    ref = detect_every_frame(frames, "dlib_hog")
    res = LandmarkTracker("dlib_hog", fps=fps).track(frames)
    assert res.landmarks.shape == res.smoothed.shape == (40, 68, 2)
    assert bool(res.detected[0]) and not bool(res.lost.any())
    assert int(res.detected.sum()) < 10  # tracked, not re-detected every frame
    iod = float(inter_ocular_distance(ref).mean())
    diff = float((res.landmarks - ref).norm(dim=-1).mean())
    assert diff < 3.0 and diff < 0.03 * iod
    # stabilization: smoother trajectories, small deviation from the raw track
    assert sms(res.smoothed) < 0.7 * sms(res.landmarks)
    assert float((res.smoothed - res.landmarks).norm(dim=-1).mean()) < 0.03 * iod


def test_tracker_without_face_raises():
    frames = np.full((3, 64, 64, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="frame 0"):
        LandmarkTracker("dlib_hog").track(frames)
    with pytest.raises(ValueError, match="cannot re-run"):
        LandmarkTracker(_NoRefine())


class _NoRefine(LandmarkDetector):
    name = "norefine"

    def _detect(self, img):
        return []


def test_crop_and_paste_back_on_a_real_frame(media_dir):
    frames, _ = read_video(media_dir / "lp_d10.mp4", max_frames=1)
    frame = torch.from_numpy(frames[0]).permute(2, 0, 1).float()[None] / 255
    lm = detect_face(frames[0]).landmarks
    box = fcrops.face_boxes(lm[None])
    crop = fcrops.crop_images(frame, box, 256)
    # landmarks found in the crop map back onto the full-frame landmarks
    lm_c = detect_face(crop[0]).landmarks
    back = fcrops.points_from_crop(lm_c[None], box, 256)[0]
    iod = float(inter_ocular_distance(lm))
    assert float((back - lm).norm(dim=-1).mean()) < 0.05 * iod
    # the crop is centred on the face: eyes in the upper half, face width ~ half the crop
    pts = fcrops.points_to_crop(lm[None], box, 256)[0]
    assert 0.3 * 256 < float(pts[:, 0].max() - pts[:, 0].min()) < 0.75 * 256
    assert float(pts[36:48, 1].mean()) < 128
    out = fcrops.paste_back(frame, crop, box)
    assert float((out - frame).abs().mean()) < 5e-3


def test_identity_embedding_same_person_more_similar(media, media_dir):
    ids = {m["file"]: m["identity"] for m in media["items"]}
    emb = FaceEmbedder()
    vecs: dict[str, list[torch.Tensor]] = {}
    for name in ("lp_d3.mp4", "lp_d10.mp4", "lp_d12.mp4", "lp_d11.mp4"):
        frames, _ = read_video(media_dir / name, step=60, max_frames=2)
        vecs[name] = list(emb.embed_batch(
            torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255,
            torch.stack([detect_face(f).landmarks for f in frames])))
    vecs["lp_s11.jpg"] = [emb.embed(load_image(media_dir / "lp_s11.jpg"))]
    same, diff = [], []
    names = list(vecs)
    for i, a in enumerate(names):
        for b in names[i:]:
            for x in vecs[a]:
                for y in vecs[b]:
                    if x is y:
                        continue
                    s = float(cosine_similarity(x, y))
                    (same if ids[a] == ids[b] else diff).append(s)
    assert len(same) >= 5 and len(diff) >= 10
    assert min(same) > max(diff)
    # dlib's own rule: same person when the Euclidean distance is < 0.6
    d = (vecs["lp_d11.mp4"][0] - vecs["lp_s11.jpg"][0]).norm()
    assert float(d) < 0.6


def test_region_redetection_matches_full_frame(media_dir):
    frames, _ = read_video(media_dir / "lp_d9.mp4", max_frames=1)
    det = get_detector("dlib_hog")
    full = det.detect(frames[0])[0]
    # a box shifted by 13 px (as a tracker prediction would be) still finds the same face
    near = det.detect_near(frames[0], full.box + torch.tensor([13.0, -7.0, 13.0, -7.0]))
    assert len(near) >= 1
    assert float((near[0].box - full.box).abs().max()) <= 1.0
    assert float((near[0].landmarks - full.landmarks).norm(dim=-1).mean()) < 1.0
    # a region without a face gives nothing
    assert det.detect_near(frames[0], torch.tensor([0.0, 0.0, 40.0, 40.0])) == []


def test_tracker_loss_and_recovery(media_dir):
    frames, fps = read_video(media_dir / "lp_d3.mp4", max_frames=12)
    frames = frames.copy()
    frames[4:8] = 128  # the face disappears for four frames, then comes back
    res = LandmarkTracker("dlib_hog", fps=fps).track(frames)
    assert res.lost[4:8].all() and not res.lost[:4].any() and not res.lost[8:].any()
    assert bool(res.detected[8])  # re-detected when the face is back
    ref = detect_every_frame(frames[8:], "dlib_hog")
    assert float((res.landmarks[8:] - ref).norm(dim=-1).mean()) < 3.0


def test_gray_region_predictor_matches_dlib_on_rgb(media_dir):
    import dlib

    frames, _ = read_video(media_dir / "lp_d10.mp4", max_frames=6)
    det = get_detector("dlib_hog")
    box = det.detect(frames[0])[0].box.numpy()
    g = np.random.default_rng(0)
    for f in frames:
        for shift in ([0, 0], g.uniform(-40, 40, 2), [-box[0] - 30, 0], [0, 480 - box[3]]):
            b = box + np.tile(np.asarray(shift, np.float32), 2)  # incl. boxes off the image
            x0, y0, x1, y1 = (round(float(v)) for v in b)
            ref = det._sp(f, dlib.rectangle(x0, y0, x1, y1))
            ref = np.array([(p.x, p.y) for p in ref.parts()], np.float32)
            assert np.array_equal(det.landmarks_in_box_np(f, b), ref)
