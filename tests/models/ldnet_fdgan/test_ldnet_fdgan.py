"""ldnet_fdgan (LD-Net + feature-dictionary GAN): the FD-GAN U-Nets against a functional
re-implementation and the supplement's structure, the landmark images, the three front
ends (LD-Net with a cached identity code against facegeo.disentangle, 3DMM, raw), the
once-per-target dictionary, the training task (patch discriminator + identity classifier)
through the trainer, an overfit test on real frames, and apps/reenact.py on a real clip.
The dictionary operations themselves: tests/models/common/test_feature_dictionary.py."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facegeo.pipeline import Conditioning
from facegeo_models import ldnet_fdgan
from facegeo_models.common import checkpoint as ckpt
from facegeo_models.common.feature_dictionary import DictionaryReader, DictionaryWriter
from facegeo_models.ldnet_fdgan import FDGAN, LDNetFDGAN, landmark_image, scale_landmarks

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(seed: int = 0, **kw) -> LDNetFDGAN:
    torch.manual_seed(seed)
    cfg = LDNetFDGAN.model_params("tiny")
    cfg.update(kw)
    return LDNetFDGAN(**cfg)


@functools.lru_cache(maxsize=1)
def _synth():
    from facegeo.disentangle import LandmarkSynth

    return LandmarkSynth(n_identities=8, seed=0)


def _face_points(b: int, size: int, seed: int = 0) -> torch.Tensor:
    """(b, 68, 2) plausible landmarks (ICT-FaceKit faces of random identity, expression and
    pose, :class:`facegeo.disentangle.LandmarkSynth`) in the centre of an S x S image."""
    g = torch.Generator().manual_seed(seed)
    base = _synth().sample(b, generator=g).landmarks.float()     # normalised, [-1, 1]
    return base * size * 0.3 + size / 2 + torch.randn(b, 1, 2, generator=g)


# ------------------------------------------------------------------ structure
def test_fdgan_structure_is_the_supplements():
    m = LDNetFDGAN.from_config("paper")
    fd = m.fdgan
    assert fd.widths == (32, 64, 128, 256) and fd.rows == (512, 256, 128, 64)
    for down in (fd.extractor_down, fd.translator_down):
        convs = [c for c in down.modules() if isinstance(c, nn.Conv2d)]
        assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
            k for w in (32, 64, 128, 256) for k in (((4, 4), (2, 2), w), ((3, 3), (1, 1), w))]
    for i, (w, r) in enumerate(zip((32, 64, 128, 256), (512, 256, 128, 64))):
        wr, rd = fd.writers[i], fd.readers[i]
        assert isinstance(wr, DictionaryWriter) and isinstance(rd, DictionaryReader)
        assert wr.tags.shape == (r, 32) and rd.tags.shape == (r, 32)
        assert wr.key.kernel_size == (1, 1) and wr.value.kernel_size == (1, 1)
        assert wr.value.out_channels == w and rd.key.kernel_size == (1, 1)
        up = fd.translator_up[i]
        assert up.conv.kernel_size == (3, 3)
        assert (up.up.kernel_size, up.up.stride) == ((4, 4), (2, 2))
        assert up.up.out_channels == (3 if i == 0 else (32, 64, 128)[i - 1])
    n = sum(p.numel() for p in m.parameters())
    assert n == 6_072_707      # the figure in docs/models/ldnet_fdgan.md
    # the cpu config is the same network (at 128x128): the same parameters
    assert sum(p.numel() for p in LDNetFDGAN.from_config("cpu").parameters()) == n
    assert n * 2 <= 16 * 2 ** 20      # fp16 weights fit the 16 MiB budget


def _ref_fdgan(fd: FDGAN, x, l, l2):
    """The FD-GAN forward written functionally from the parameters (eqs. 8-9 with explicit
    exp / sum, the U-Net wiring of the supplement), to compare with the modules."""
    def act(t, norm):    # affine instance norm (the configs' norm), then LeakyReLU
        return F.leaky_relu(F.instance_norm(t, weight=norm.weight, bias=norm.bias), 0.2)

    def down(path, inp):
        feats = []
        for lev in path.levels:
            c1, n1, c2, n2 = lev[0], lev[1], lev[3], lev[4]
            inp = act(F.conv2d(inp, c1.weight, c1.bias, stride=2, padding=1), n1)
            inp = act(F.conv2d(inp, c2.weight, c2.bias, padding=1), n2)
            feats.append(inp)
        return feats

    def up(u, h, last):
        h = act(F.conv2d(h, u.conv.weight, u.conv.bias, padding=1), u.norm)
        h = F.conv_transpose2d(h, u.up.weight, u.up.bias, stride=2, padding=1)
        return h if last else act(h, u.up_norm)

    def write(wr, h):
        p = F.conv2d(h, wr.key.weight, wr.key.bias).flatten(2)        # (B, m_T, N)
        v = F.conv2d(h, wr.value.weight, wr.value.bias).flatten(2)    # (B, m_V, N)
        e = torch.exp(torch.einsum("im,bmn->bin", wr.tags, p).double())
        return (e @ v.double().transpose(1, 2)) / e.sum(-1, keepdim=True)

    def read(rd, g, dic):
        q = F.conv2d(g, rd.key.weight, rd.key.bias)
        e = torch.exp(torch.einsum("km,bmhw->bhwk", rd.tags, q).double())
        y = torch.einsum("bhwk,bkv->bvhw", e, dic) / e.sum(-1)[:, None]
        return g + y.float()

    d = down(fd.extractor_down, torch.cat([x, l], 1))
    dicts, h = {}, d[3]
    for i in (3, 2, 1, 0):
        if i < 3:
            h = h + d[i]
        dicts[i] = write(fd.writers[i], h)
        if i:
            h = up(fd.extractor_up[i], h, False)
    e = down(fd.translator_down, l2)
    g = e[3]
    for i in (3, 2, 1, 0):
        if i < 3:
            g = g + e[i]
        g = up(fd.translator_up[i], read(fd.readers[i], g, dicts[i]), i == 0)
    return torch.tanh(g)


def test_fdgan_matches_functional_reference_and_dictionary_is_per_target():
    m = _tiny(0)
    fd = m.fdgan
    assert isinstance(fd.extractor_down.levels[0][1], nn.InstanceNorm2d)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    lm, lm2 = _face_points(2, 64, 1), _face_points(2, 64, 2)
    l, l2 = m.landmark_image(lm), m.landmark_image(lm2)
    with torch.no_grad():
        out = fd(x, l, l2)
        torch.testing.assert_close(out, _ref_fdgan(fd, x, l, l2), atol=2e-5, rtol=1e-4)
        dicts = fd.extract(x, l)
        assert [tuple(d.shape) for d in dicts] == [(2, 64, 8), (2, 32, 16), (2, 16, 32),
                                                    (2, 8, 64)]
        # translate with the stored dictionaries = the full forward; a one-row batch of
        # dictionaries broadcasts over the frames
        torch.testing.assert_close(fd.translate(l2, dicts), out)
        one = fd.translate(l2, [d[:1] for d in dicts])
        torch.testing.assert_close(one[0], out[0])
        # the appearance reaches the translator only through the dictionaries: another
        # target image changes the output, other new landmarks do not change the dictionary
        other = fd(x.flip(0), l.flip(0), l2)
        assert (other - out).abs().max() > 1e-4
        assert all(torch.equal(a, b) for a, b in zip(fd.extract(x, l), dicts))


@pytest.mark.parametrize("kind", ["mean", "adain"])
def test_table3_ablation_switches(kind):
    m = _tiny(0, dictionary=kind)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    l = m.landmark_image(_face_points(1, 64))
    with torch.no_grad():
        dicts = m.fdgan.extract(x, l)
        assert all(d.shape[1] == 1 for d in dicts)       # one-row dictionaries
        assert m.fdgan(x, l, l).shape == (1, 3, 64, 64)


def test_landmark_images():
    pts = _face_points(2, 64)
    for enc, ch in (("lines", 3), ("parts", 9), ("heatmaps", 68)):
        img = landmark_image(pts, 64, enc)
        assert img.shape == (2, ch, 64, 64)
        assert img.min() >= -1 and img.max() <= 1
    # rasterized in the points' box only: the same image as facegeo.raster on the full
    # frame (points near and beyond the border too)
    from facegeo.raster.landmarks import draw_landmark_lines, part_maps

    for q in (pts, pts * 1.6 - 20):
        torch.testing.assert_close(landmark_image(q, 64, "lines", thickness=2.0),
                                   draw_landmark_lines(q, 64, 64, thickness=2.0) * 2 - 1,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(landmark_image(q, 64, "parts"),
                                   part_maps(q, 64, 64) * 2 - 1, atol=1e-5, rtol=0)
    img = landmark_image(pts, 64, "lines")
    # a line passes through every landmark: the pixel at a jaw point is lit, far away dark
    x, y = pts[0, 8].round().long().tolist()
    # (a 1 px line covers > half of the nearest pixel: > 0 in [-1, 1])
    assert img[0, :, y, x].max() > 0.0
    assert (img[0, :, 0, 0] == -1).all()
    # NaN landmarks are left out instead of raising
    bad = pts.clone()
    bad[0, 30] = float("nan")
    assert torch.isfinite(landmark_image(bad, 64)).all()
    with pytest.raises(ValueError, match="encoding"):
        landmark_image(pts, 64, "dots")
    # pixel-centre scaling between crop sizes, and back
    p = torch.tensor([[0.0, 0.0], [63.0, 31.5]])
    torch.testing.assert_close(scale_landmarks(p, 64, 128), torch.tensor([[0.5, 0.5],
                                                                          [126.5, 63.5]]))
    torch.testing.assert_close(scale_landmarks(scale_landmarks(p, 64, 96), 96, 64), p)


# ------------------------------------------------------------------ front ends / inference
def _source(m, size=64, seed=0):
    return Conditioning(image=torch.rand(1, 3, size, size), landmarks68=_face_points(1, size, seed),
                        frame_index=torch.arange(1), good=torch.ones(1, dtype=torch.bool))


def test_ldnet_front_end_matches_disentangle_with_cached_identity_code():
    from facegeo.disentangle import disentangle_landmarks

    m = _tiny(0).eval()
    src = _source(m, size=96, seed=4)           # crops of 96 px, the model works at 64
    drv = _face_points(3, 96, 7)
    state = m.encode_source(src)
    assert state.id_code is not None and state.crop_size == 96
    got = m.driving_landmarks(state, Conditioning(landmarks68=drv))
    want = disentangle_landmarks(src.landmarks68.expand(3, 68, 2), drv, "ldnet")
    torch.testing.assert_close(got, scale_landmarks(want, 96, 64), atol=2e-4, rtol=1e-4)
    # the other front ends pass their landmarks through (scaled to the model's pixels)
    raw = m.driving_landmarks(state, Conditioning(landmarks68=drv), "raw")
    torch.testing.assert_close(raw, scale_landmarks(drv, 96, 64))
    tdm = m.driving_landmarks(state, Conditioning(disentangled_landmarks=drv), "3dmm")
    torch.testing.assert_close(tdm, scale_landmarks(drv, 96, 64))
    out = m.reenact(state, Conditioning(landmarks68=drv))
    assert out.shape == (3, 3, 96, 96) and out.min() >= 0 and out.max() <= 1


def test_requires_modes_and_chunked_reenactment():
    m = _tiny(0)
    assert m.requires == {"landmarks68"} and m.modes == ("absolute",)
    m3 = _tiny(0, front_end="3dmm")
    assert m3.requires == {"disentangled_landmarks"} and m3.modes == ("absolute", "relative")
    assert _tiny(0, front_end="raw").requires == {"landmarks68"}
    from facegeo_models.common.registry import model_info

    assert model_info("ldnet_fdgan").requires == {"landmarks68"}
    m.eval()
    src = _source(m)
    drv = Conditioning(landmarks68=_face_points(4, 64, 9))
    state = m.encode_source(src)
    whole = m.reenact(state, drv)
    parts = torch.cat([m.reenact(state, Conditioning(landmarks68=drv.landmarks68[i:i + 2]))
                       for i in (0, 2)])
    torch.testing.assert_close(parts, whole)
    # from the Conditioning directly = through the encoded state
    torch.testing.assert_close(m.reenact(src, drv), whole)
    from facegeo.pipeline import UnsupportedModeError

    with pytest.raises(UnsupportedModeError):
        m.reenact(state, drv, mode="relative")
    with pytest.raises(ValueError, match="landmarks68"):
        m.reenact(state, torch.rand(2, 3, 64, 64))          # images only: no landmarks
    with pytest.raises(TypeError, match="Conditioning"):
        m.reenact(torch.rand(1, 3, 64, 64), drv)
    with pytest.raises(ValueError, match="front_end"):
        _tiny(0, front_end="nosuch")
    with pytest.raises(ValueError, match="divisible"):
        _tiny(0, image_size=60)


def test_forward_losses_and_gradients():
    m = _tiny(0)
    b = {"source": torch.rand(2, 3, 64, 64), "driving": torch.rand(2, 3, 64, 64),
         "source_landmarks": _face_points(2, 64, 1), "driving_landmarks": _face_points(2, 64, 2)}
    out = m(b)
    assert out["prediction"].shape == (2, 3, 64, 64)
    rec = m.extra_losses(b, out)["rec"]
    # [-1, 1] pixels: 4x the [0, 1] mean squared error
    torch.testing.assert_close(rec, 4 * F.mse_loss(out["prediction"], b["driving"]))
    rec.backward()
    assert all(p.grad is not None for n, p in m.named_parameters()), \
        [n for n, p in m.named_parameters() if p.grad is None]
    with pytest.raises(ValueError, match="source_landmarks"):
        m({"source": b["source"], "driving": b["driving"]})


# ------------------------------------------------------------------ real frames
@pytest.fixture(scope="module")
def real_root(media_dir, tmp_path_factory):
    """Two real clips preprocessed at 64 px (tracked landmarks, crops) as a dataset root
    with one identity per clip."""
    from facegeo_models.common.data import preprocess_video

    root = tmp_path_factory.mktemp("fdgan_data")
    for name in ("lp_d12", "lp_d10"):     # two people, quick to track
        preprocess_video(media_dir / f"{name}.mp4", root / "train" / name, size=64,
                         max_frames=6, step=8)
    return root


def _dataset(root):
    from facegeo_models.common.data import build_dataset

    return build_dataset({"root": str(root), "image_size": 64, "require_landmarks": True,
                          "with_identity": True, "augment": {"flip": True}}, "train")


def test_trainer_runs_tiny_config_with_both_critics(tmp_path, real_root):
    from facegeo_models.common.trainer import Trainer

    cfg = LDNetFDGAN.load_config("tiny")
    cfg["phases"] = [{"name": "rec", "steps": 1, "losses": {"rec": 50}},
                     {"name": "full", "steps": 2, "losses": {"rec": 50, "patch_gan": 1,
                                                             "identity_adv": 1}}]
    cfg["train"].update(progress=False, tensorboard=False)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=_dataset(real_root), device="cpu",
                resume=None)
    assert set(t.critics) == {"patch_discriminator", "identity_classifier"}
    assert isinstance(t.optimizers["model"], torch.optim.RMSprop)
    assert isinstance(t.optimizers["identity_classifier"], torch.optim.RMSprop)
    rec = t.fit()
    assert [r["phase"] for r in rec] == ["rec", "full", "full"]
    assert "loss/disc" not in rec[0]
    for k in ("loss/rec", "loss/patch_gan", "loss/identity_adv", "loss/disc", "loss/id_cls",
              "grad_norm/d", "grad_norm/c"):
        assert np.isfinite(rec[-1][k]), k
    path = ckpt.latest_checkpoint(tmp_path)
    assert (path / "identity_classifier.safetensors").is_file()
    m = ldnet_fdgan.load_pretrained(path, "cpu")
    assert isinstance(m, LDNetFDGAN) and not m.training
    # labels beyond the classifier's classes are a clear error
    cfg2 = LDNetFDGAN.load_config("tiny")
    cfg2["identity_classifier"]["num_identities"] = 1
    with pytest.raises(ValueError, match="num_identities"):
        Trainer(cfg2, out_dir=tmp_path / "b", train_dataset=_dataset(real_root),
                device="cpu", resume=None)


def test_overfits_real_frames(real_root):
    """CPU overfit on a fixed batch of 4 real (target, driving) pairs at 64x64 (tracked
    landmarks), RMSprop as the paper: the eq. 12 reconstruction term falls below 0.2 of
    its start in 40 steps (measured 0.329 -> 0.036)."""
    from torch.utils.data import default_collate

    ds = _dataset(real_root)
    ds.augment = {}
    batch = default_collate([ds[(i % 2, 10 + i)] for i in range(4)])
    m = _tiny(0)
    # the landmarks of the fixed batch do not change: rasterize them once
    batch["landmark_image_source"] = m.landmark_image(batch["source_landmarks"])
    batch["landmark_image_driving"] = m.landmark_image(batch["driving_landmarks"])
    opt = torch.optim.RMSprop(m.parameters(), lr=1e-3)
    hist = []
    for _ in range(40):
        rec = m.extra_losses(batch, m(batch))["rec"]
        opt.zero_grad()
        (50 * rec).backward()
        opt.step()
        hist.append(rec.item())
        assert math.isfinite(hist[-1])
    first, last = hist[0], float(np.mean(hist[-5:]))
    assert last < 0.2 * first, (first, last)


@pytest.mark.parametrize("front_end", ["ldnet", "3dmm"])
def test_reenact_app_on_a_real_clip(tmp_path, media_dir, capsys, front_end):
    """apps/reenact.py --model ldnet_fdgan --checkpoint <tiny checkpoint>: both front ends
    (the checkpoint's config decides) run end to end on a real photo and clip."""
    from facegeo.video import read_video, video_info
    from facegeo_apps import reenact as reenact_app

    cfg = LDNetFDGAN.load_config("tiny")
    cfg["model"]["params"]["front_end"] = front_end
    net = _tiny(0, front_end=front_end).eval()
    ckpt.save_checkpoint(tmp_path / "ck", {"model": net},
                         ckpt.make_model_card(cfg["model"], config=cfg))
    out = tmp_path / "out.mp4"
    rc = reenact_app.main(["--source", str(media_dir / "lp_s12.jpg"), "--driving",
                           str(media_dir / "lp_d12.mp4"), "--output", str(out), "--model",
                           "ldnet_fdgan", "--checkpoint", str(tmp_path / "ck"), "--size",
                           "64", "--max-frames", "3", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    info = video_info(out)
    assert info.frames == 3 and (info.width, info.height) == (64, 64)
    frames, _ = read_video(out)
    assert frames.std() > 1          # not a blank video
    if front_end == "3dmm":          # the pipeline's recombination honours relative motion
        rc = reenact_app.main(["--source", str(media_dir / "lp_s12.jpg"), "--driving",
                               str(media_dir / "lp_d12.mp4"), "--output", str(out),
                               "--model", "ldnet_fdgan", "--checkpoint", str(tmp_path / "ck"),
                               "--size", "64", "--max-frames", "3", "--mode", "relative",
                               "--quiet"])
        assert rc == 0, capsys.readouterr().err
    else:                            # LD-Net copies the driver's pose: absolute only
        rc = reenact_app.main(["--source", str(media_dir / "lp_s12.jpg"), "--driving",
                               str(media_dir / "lp_d12.mp4"), "--output", str(out),
                               "--model", "ldnet_fdgan", "--checkpoint", str(tmp_path / "ck"),
                               "--size", "64", "--max-frames", "3", "--mode", "relative",
                               "--quiet"])
        assert rc == 2 and "relative" in capsys.readouterr().err
