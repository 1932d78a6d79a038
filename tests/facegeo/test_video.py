"""Tests of facegeo.video (PyAV reading/writing) and facegeo.image_io."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from facegeo.image_io import as_uint8_rgb, from_uint8_hwc, load_image, save_image, to_uint8_hwc
from facegeo.video import (
    VideoReadError,
    frames_to_tensor,
    iter_video,
    read_video,
    video_info,
    write_video,
)


def _moving_square(t: int = 12, h: int = 48, w: int = 64) -> np.ndarray:
    f = np.zeros((t, h, w, 3), np.uint8)
    f[..., 2] = 60
    for i in range(t):
        f[i, 10:26, 4 + 3 * i: 20 + 3 * i] = (230, 200, 40)
    return f


def test_write_read_roundtrip(tmp_path):
    frames = _moving_square()
    p = write_video(tmp_path / "a.mp4", frames, 25.0, crf=10)
    got, fps = read_video(p)
    assert fps == pytest.approx(25.0)
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - frames).mean() < 3.0
    info = video_info(p)
    assert (info.frames, info.width, info.height, info.has_audio) == (12, 64, 48, False)
    assert info.duration == pytest.approx(12 / 25, abs=0.05)
    # no temporary files left behind
    assert [q.name for q in tmp_path.iterdir()] == ["a.mp4"]


def test_write_tensor_and_iterable_frames_odd_size(tmp_path):
    frames = _moving_square(5, 31, 45)
    t = from_uint8_hwc(frames)
    assert t.shape == (5, 3, 31, 45)
    write_video(tmp_path / "t.mp4", t, 30)
    write_video(tmp_path / "i.mp4", iter(list(frames)), 30000 / 1001)
    a, _ = read_video(tmp_path / "t.mp4")
    b, fps = read_video(tmp_path / "i.mp4")
    assert a.shape == b.shape == (5, 32, 46, 3)  # padded to even size for yuv420p
    assert fps == pytest.approx(29.97, abs=1e-2)
    assert np.abs(a[:, :31, :45].astype(int) - frames).mean() < 4.0
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "e.mp4", [], 30)
    with pytest.raises(ValueError, match="size"):
        write_video(tmp_path / "s.mp4", [frames[0], frames[0, :-2]], 30)
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "x.gif", frames, 30)
    assert not (tmp_path / "s.mp4").exists()


def test_frame_selection_and_streaming(media_dir):
    p = media_dir / "lp_d3.mp4"
    full, fps = read_video(p, max_frames=9)
    sel, fps2 = read_video(p, start=2, step=3, max_frames=3)
    assert np.array_equal(sel, full[[2, 5, 8]])
    assert fps2 == pytest.approx(fps / 3)
    it, _ = read_video(p, max_frames=4, stream=True)
    assert np.array_equal(np.stack(list(it)), full[:4])
    assert frames_to_tensor(full[:2]).shape == (2, 3, 512, 512)


def test_info_matches_media_json(media_dir):
    meta = json.loads((media_dir / "media.json").read_text())
    for m in meta["items"]:
        if m["kind"] != "video":
            continue
        info = video_info(media_dir / m["file"])
        w, h = (int(v) for v in m["resolution"].split("x"))
        assert (info.width, info.height) == (w, h)
        assert info.fps == pytest.approx(m["fps"])
        assert info.frames == m["frames"]


def test_audio_is_copied_and_trimmed(media_dir, tmp_path):
    src = media_dir / "lp_d3.mp4"
    assert video_info(src).has_audio
    frames, fps = read_video(src, max_frames=15)
    out = write_video(tmp_path / "v.mp4", frames, fps, audio_from=src)
    info = video_info(out)
    assert info.has_audio and info.frames == 15
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        n = sum(1 for _ in c.decode(a))
        assert n > 0
        dur = float(a.duration * a.time_base) if a.duration else None
    if dur is not None:
        assert dur <= 15 / fps + 0.1
    # copying from a written file works again; a source without audio gives a silent video
    again = write_video(tmp_path / "s.mp4", frames[:3], fps, audio_from=out)
    assert video_info(again).has_audio and video_info(again).frames == 3
    silent_src = write_video(tmp_path / "q.mp4", frames[:3], fps)
    silent = write_video(tmp_path / "n.mp4", frames[:3], fps, audio_from=silent_src)
    assert not video_info(silent).has_audio


def test_unreadable_videos(tmp_path):
    with pytest.raises(VideoReadError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(VideoReadError):
        read_video(tmp_path / "junk.mp4")
    # an audio-only file has no video stream
    with av.open(str(tmp_path / "a.m4a"), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                        layout="mono")
        fr.sample_rate = 16000
        for pk in s.encode(fr):
            c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    with pytest.raises(VideoReadError, match="no video stream"):
        video_info(tmp_path / "a.m4a")
    with pytest.raises(ValueError):
        list(iter_video(tmp_path / "a.m4a", step=0))


def test_image_io_conversions(tmp_path):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 20, 30, generator=g)
    p = save_image(tmp_path / "x.png", img)
    back = load_image(p)
    assert back.shape == (3, 20, 30)
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6
    u8 = to_uint8_hwc(img)
    assert u8.shape == (20, 30, 3) and np.array_equal(as_uint8_rgb(img), u8)
    assert np.array_equal(as_uint8_rgb(u8.astype(np.float32) / 255), u8)
    assert np.array_equal(as_uint8_rgb(u8.astype(np.uint16) * 257), u8)
    assert as_uint8_rgb(img[0]).shape == (20, 30, 3)
    assert as_uint8_rgb(np.concatenate([u8, u8[..., :1]], 2)).shape == (20, 30, 3)
    with pytest.raises(ValueError, match="batch"):
        as_uint8_rgb(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError):
        as_uint8_rgb(np.zeros((4, 4, 5)))
