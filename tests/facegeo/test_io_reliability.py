"""Damaged and unusual input files: truncated videos, EXIF-oriented photos, corrupt model
and weight files (docs/reliability.md, "Files and decoding")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

# --------------------------------------------------------------------------- videos
N_FRAMES = 20


def _faststart_copy(src, dst):
    """Remux ``src`` with the moov atom (the index) before the media data."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format="mp4",
                                         options={"movflags": "faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for pk in i.demux(i.streams.video[0]):
            if pk.dts is None:
                continue
            pk.stream = s
            o.mux(pk)
    return dst


@pytest.fixture(scope="module")
def faststart_mp4(tmp_path_factory):
    from facegeo.video import write_video

    d = tmp_path_factory.mktemp("vid")
    frames = np.random.default_rng(0).integers(0, 255, (N_FRAMES, 32, 32, 3), dtype=np.uint8)
    src = write_video(d / "src.mp4", frames, 10)
    out = _faststart_copy(src, d / "fast.mp4")
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # index first
    return out


@pytest.fixture
def truncated_mp4(faststart_mp4, tmp_path):
    from facegeo.video import video_info

    data = faststart_mp4.read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: len(data) // 2])
    assert video_info(p).frames == N_FRAMES  # the container still announces all frames
    return p


def test_truncated_video_warns_with_counts(truncated_mp4):
    from facegeo.video import VideoReadWarning, iter_video, read_video

    with pytest.warns(VideoReadWarning) as rec:
        frames, _ = read_video(truncated_mp4)
    n = frames.shape[0]
    assert 0 < n < N_FRAMES
    w = rec[0].message
    assert w.frames_read == n and w.frames_expected == N_FRAMES
    assert f"{n} of {N_FRAMES}" in str(w) and "cut.mp4" in str(w)
    with pytest.warns(VideoReadWarning):
        assert len(list(iter_video(truncated_mp4))) == n


def test_truncated_video_strict_raises(truncated_mp4):
    from facegeo.video import VideoReadError, iter_video, read_video

    with pytest.raises(VideoReadError, match=f"of {N_FRAMES}"):
        read_video(truncated_mp4, strict=True)
    with pytest.raises(VideoReadError, match="cut.mp4"):
        list(iter_video(truncated_mp4, strict=True))
    # a selection that ends before the cut is complete: no warning, no error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames, _ = read_video(truncated_mp4, max_frames=2, strict=True)
    assert frames.shape[0] == 2


def test_pipeline_frame_source_passes_strict_through(truncated_mp4):
    """The reenactment pipeline reads driving videos through FrameSource: the partial read
    warns there too, and is an error with strict (apps: --strict)."""
    from facegeo.pipeline import FrameSource
    from facegeo.video import VideoReadError, VideoReadWarning

    with pytest.warns(VideoReadWarning):
        assert 0 < len(list(FrameSource(truncated_mp4))) < N_FRAMES
    with pytest.raises(VideoReadError, match=f"of {N_FRAMES}"):
        list(FrameSource(truncated_mp4, strict=True))


def test_reenact_app_strict_refuses_a_truncated_driving_video(truncated_mp4, tmp_path,
                                                              media_dir, capsys):
    from facegeo_apps import reenact as app

    out = tmp_path / "o.mp4"
    rc = app.main(["--source", str(media_dir / "lp_s12.jpg"), "--driving", str(truncated_mp4),
                   "--output", str(out), "--size", "64", "--quiet", "--strict"])
    err = capsys.readouterr().err
    assert rc == 2 and f"of {N_FRAMES}" in err and "cut.mp4" in err and not out.exists()


def test_intact_video_reads_silently(faststart_mp4):
    from facegeo.video import read_video

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames, _ = read_video(faststart_mp4, strict=True)
        assert frames.shape[0] == N_FRAMES
        assert read_video(faststart_mp4, start=3, step=4, strict=True)[0].shape[0] == 5


def test_decode_error_mid_stream(faststart_mp4, tmp_path):
    from facegeo.video import VideoReadError, VideoReadWarning, read_video

    data = bytearray(faststart_mp4.read_bytes())
    off = data.find(b"mdat") + len(data) // 2
    data[off: off + 3000] = np.random.default_rng(1).integers(0, 255, 3000, np.uint8).tobytes()
    p = tmp_path / "bad.mp4"
    p.write_bytes(bytes(data))
    with pytest.warns(VideoReadWarning, match=f"of {N_FRAMES}") as rec:
        frames, _ = read_video(p)
    assert 0 < frames.shape[0] < N_FRAMES == rec[0].message.frames_expected
    with pytest.raises(VideoReadError, match="bad.mp4"):
        read_video(p, strict=True)


# --------------------------------------------------------------------------- EXIF
H, W = 24, 40


def _pattern() -> np.ndarray:
    """(H, W, 3) uint8 with a red top-left quadrant and a green bottom-left one."""
    a = np.zeros((H, W, 3), np.uint8)
    a[: H // 2, : W // 2] = (255, 0, 0)
    a[H // 2:, : W // 2] = (0, 255, 0)
    return a


def _oriented_file(path, orientation: int):
    PIL = pytest.importorskip("PIL.Image")
    im = PIL.fromarray(_pattern())
    ex = PIL.Exif()
    ex[0x0112] = orientation
    fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix]
    opts = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    im.save(path, fmt, exif=ex.tobytes(), **opts)
    return path


def _viewer(path) -> np.ndarray:
    """What an EXIF-aware viewer shows (Pillow's exif_transpose), (H, W, 3) uint8."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_load_image_applies_exif_orientation(tmp_path, suffix):
    from facegeo.image_io import as_uint8_rgb, load_image

    p = _oriented_file(tmp_path / f"o6{suffix}", 6)
    x = load_image(p)
    # Orientation 6: shown rotated 90 degrees clockwise -> portrait, red quadrant top-right
    assert x.shape == (3, W, H)
    assert x[:, 2, -3].tolist() == pytest.approx([1, 0, 0], abs=0.05)
    assert x[:, 2, 2].tolist() == pytest.approx([0, 1, 0], abs=0.05)
    assert as_uint8_rgb(p).shape == (W, H, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_a_viewer(tmp_path, orientation):
    from facegeo.image_io import as_uint8_rgb

    p = _oriented_file(tmp_path / f"o{orientation}.png", orientation)
    np.testing.assert_array_equal(as_uint8_rgb(p), _viewer(p))


def test_dataset_frames_oriented_like_load_image(tmp_path):
    from facegeo.image_io import load_image
    from facegeo_models.common import data as D

    folder = tmp_path / "train" / "id1#a"
    folder.mkdir(parents=True)
    files = [_oriented_file(folder / "000000.jpg", 6), _oriented_file(folder / "000001.png", 8),
             _oriented_file(folder / "000002.webp", 3)]
    ds = D.VideoFolderDataset(tmp_path, "train")
    for i, f in enumerate(files):
        x = ds.load_frames(0, [i])[0]
        ref = torch.from_numpy(_viewer(f).copy()).permute(2, 0, 1).float() / 255
        assert x.shape == ref.shape
        torch.testing.assert_close(x, load_image(f), atol=1e-6, rtol=0)
        torch.testing.assert_close(x, ref, atol=0.02, rtol=0)


# --------------------------------------------------------------------------- model files
def _assert_corrupt_message(excinfo, name: str):
    msg = str(excinfo.value)
    assert name in msg, msg
    assert "corrupt" in msg or "truncated" in msg, msg
    e = excinfo.value  # what a traceback shows: the chained cause / unsuppressed context
    shown = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    text = msg + str(shown or "")
    assert "pickle" not in text.lower() and "unsafe" not in text.lower(), text


def _variants(tmp_path, data: bytes, suffix: str):
    """A truncated copy (half the bytes) and a file of garbage bytes."""
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(np.random.default_rng(3).bytes(4096))
    return [cut, junk]


def test_corrupt_ict_npz(tmp_path, assets_dir):
    from facegeo.morphable import MorphableModel

    src = assets_dir / "3dmm" / "ict_facekit.npz"
    if not src.is_file():
        pytest.skip("ict_facekit.npz not available")
    for p in _variants(tmp_path, src.read_bytes()[:400_000] * 2, ".npz"):
        for load in (MorphableModel.load, MorphableModel.from_ict_npz):
            with pytest.raises(ValueError) as e:
                load(p)
            _assert_corrupt_message(e, p.name)


def test_npz_with_damaged_member(tmp_path):
    from facegeo.morphable import MorphableModel

    p = tmp_path / "m.npz"
    np.savez(p, mean=np.arange(30000.0))
    data = bytearray(p.read_bytes())
    data[200:1200] = b"\x00" * 1000  # member data overwritten, zip index intact
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        MorphableModel.load(p)
    _assert_corrupt_message(e, "m.npz")


def test_corrupt_bfm_mat(tmp_path):
    import scipy.io

    from facegeo.morphable import load_bfm2009, load_bfm_front, load_bfm_mat

    good = tmp_path / "good.mat"
    scipy.io.savemat(good, {"shapeMU": np.zeros((3000, 1)), "tl": np.ones((10, 3))})
    for p in _variants(tmp_path, good.read_bytes(), ".mat"):
        for load in (load_bfm_mat, load_bfm2009, load_bfm_front):
            with pytest.raises(ValueError) as e:
                load(p)
            _assert_corrupt_message(e, p.name)


def test_corrupt_bfm_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    from facegeo.morphable import MorphableModel, load_bfm2017

    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f["shape/model/mean"] = np.zeros(30000)
    for p in _variants(tmp_path, good.read_bytes(), ".h5"):
        for load in (load_bfm2017, MorphableModel.load):
            with pytest.raises(ValueError) as e:
                load(p)
            _assert_corrupt_message(e, p.name)


def test_corrupt_3ddfa_files(tmp_path):
    import pickle

    from facegeo.morphable import load_3ddfa

    good = pickle.dumps({"u": np.zeros((3000, 1)), "w_shp": np.zeros((3000, 5))})
    for p in _variants(tmp_path, good, ".pkl"):
        with pytest.raises(ValueError) as e:
            load_3ddfa(p)
        assert p.name in str(e.value) and "corrupt" in str(e.value)
    npz = tmp_path / "m.npz"
    np.savez(npz, u=np.zeros((3000, 1)))
    for p in _variants(tmp_path, npz.read_bytes(), ".npz"):
        with pytest.raises(ValueError) as e:
            load_3ddfa(p)
        _assert_corrupt_message(e, p.name)


def test_corrupt_safetensors_weights(tmp_path):
    from facegeo_models.common.checkpoint import load_weights, save_weights

    good = save_weights(tmp_path / "good.safetensors", {"w": torch.ones(64, 64)})
    for p in _variants(tmp_path, good.read_bytes(), ".safetensors"):
        with pytest.raises(ValueError) as e:
            load_weights(p)
        _assert_corrupt_message(e, p.name)
        with pytest.raises(ValueError, match=p.name):
            load_weights(p, torch.nn.Linear(64, 64))


def test_corrupt_ldnet_weights(tmp_path):
    from facegeo.disentangle.ldnet import (
        LDNet,
        LDNetConfig,
        load_inference_weights,
        save_inference_weights,
    )

    cfg = LDNetConfig()
    good = save_inference_weights(LDNet(cfg), tmp_path / "good.safetensors")
    assert load_inference_weights(good) is not None
    for p in _variants(tmp_path, good.read_bytes(), ".safetensors"):
        with pytest.raises(ValueError) as e:
            load_inference_weights(p)
        _assert_corrupt_message(e, p.name)


def test_safetensors_with_damaged_header_json(tmp_path):
    from facegeo_models.common.checkpoint import load_weights

    hdr = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]'  # unclosed
    p = tmp_path / "h.safetensors"
    p.write_bytes(len(hdr).to_bytes(8, "little") + hdr + b"\0" * 8)
    with pytest.raises(ValueError) as e:
        load_weights(p)
    _assert_corrupt_message(e, "h.safetensors")

