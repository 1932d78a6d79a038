"""fsrt: unit tests of each block against independent references (explicit formulas of
the paper's equations, brute-force loops, analytic heat-maps), properties the architecture
guarantees (chunked == full rendering, a set-latent whose decoding ignores the order of
the sources), the training task and trainer, the app, and a CPU overfit test on real
frames. The attention blocks are tested in tests/models/common/test_attention*.py, the
keypoint and equivariance helpers in tests/models/common/test_keypoints.py /
tests/models/common/test_equivariance.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facegeo.pipeline import Conditioning, UnsupportedModeError
from facegeo_models import fsrt
from facegeo_models.common import checkpoint as ckpt
from facegeo_models.common.blocks import coordinate_grid
from facegeo_models.common.registry import build_model
from facegeo_models.common.task import gather_pixels
from facegeo_models.fsrt.network import keypoint_encoding, pixel_encoding
from facegeo_models.fsrt.task import subgrid_index

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(seed: int = 0, **params) -> fsrt.FSRT:
    torch.manual_seed(seed)
    cfg = fsrt.FSRT.model_params("tiny")
    for k, v in params.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return fsrt.from_config(cfg)


def _landmarks(b: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 4 + torch.rand(b, 68, 2, generator=g) * (size - 8)


# ----------------------------------------------------------------------- encodings
def test_positional_encodings_are_eq_3_to_5():
    """gamma_key / gamma_pix against a loop over eq. 3 (sin, cos of 2^m pi p for
    m = s .. s + O - 1), in the authors' layout: all sines then all cosines, each
    coordinate-major (x_1, y_1, x_2, ...)."""
    kp = torch.tensor([[[0.3, -0.7], [1.5, -1.9]]])
    got = keypoint_encoding(kp, 4, -1)
    coords = [0.3, -0.7, 1.5, -1.9]
    sines = [math.sin(2.0 ** m * math.pi * c) for c in coords for m in range(-1, 3)]
    coses = [math.cos(2.0 ** m * math.pi * c) for c in coords for m in range(-1, 3)]
    np.testing.assert_allclose(got[0].numpy(), sines + coses, atol=1e-6)
    assert got.shape == (1, 4 * 2 * 4)
    pe = pixel_encoding(torch.tensor([0.25, -0.5]), 3, 0)
    r = math.sqrt(0.5)   # x = 1/4 at pi, 2 pi, 4 pi; y = -1/2 likewise
    np.testing.assert_allclose(pe.numpy(), [r, 1, 0, -1, 0, 0, r, 0, -1, 0, -1, 1],
                               atol=1e-6)
    # start octave -1: the lowest octave (sin, cos)(pi x / 2) tells x from x + 2, so
    # keypoints in (-2, 2) (out of the frame) stay distinguishable
    a, b = keypoint_encoding(torch.tensor([[[-0.5, 0.0]]]), 4, -1), keypoint_encoding(
        torch.tensor([[[1.5, 0.0]]]), 4, -1)
    assert (a - b).abs().max() > 1.0
    a0, b0 = keypoint_encoding(torch.tensor([[[-0.5, 0.0]]]), 4, 0), keypoint_encoding(
        torch.tensor([[[1.5, 0.0]]]), 4, 0)
    torch.testing.assert_close(a0, b0, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------- keypoints
def test_learned_keypoints_are_heatmap_means_of_a_temperature_softmax():
    """An analytic logit map (a paraboloid with its maximum at c) through the detector
    head's soft-argmax at temperature 0.1 gives c; the detector's keypoints are the
    heat-map expectations (brute force)."""
    m = _tiny().eval()
    det = m.kpnet.detector
    assert det.temperature == 0.1 and det.jacobian is None and det.num_kp == 10
    from facegeo_models.common.blocks import soft_argmax

    grid = coordinate_grid(33, 33)
    c = torch.tensor([0.25, -0.4])
    logits = -((grid - c) ** 2).sum(-1) * 2.0
    kp, prob = soft_argmax(logits[None, None], 0.1)
    torch.testing.assert_close(kp[0, 0], c, atol=2e-3, rtol=0)
    with torch.no_grad():
        out = m.kpnet(torch.rand(2, 3, 32, 32))
    h = out["heatmap"].double()
    assert h.shape == (2, 10, 16, 16)
    torch.testing.assert_close(h.sum((2, 3)), torch.ones(2, 10, dtype=torch.float64))
    ys, xs = np.mgrid[0:16, 0:16]
    for b in range(2):
        for k in (0, 7):
            mx, my = (h[b, k].numpy() * xs).sum(), (h[b, k].numpy() * ys).sum()
            np.testing.assert_allclose(out["kp"][b, k].numpy(),
                                       [(2 * mx + 1) / 16 - 1, (2 * my + 1) / 16 - 1],
                                       atol=1e-5)


def test_expression_is_eq_8_to_10_brute_force():
    m = _tiny(1).eval()
    net = m.kpnet
    with torch.no_grad():
        x = torch.rand(1, 3, 32, 32)
        out = net(x)
        f = net.expression_conv(out["features"])[0]              # (K * n_f, h, w)
        k, nf = net.num_kp, net.features_per_kp
        pooled = []
        for i in range(k):
            for c in range(nf):
                pooled.append(float((out["heatmap"][0, i] * f[i * nf + c]).sum()))
        want = net.expression_mlp(torch.tensor(pooled)[None])
    torch.testing.assert_close(out["expression"], want, atol=1e-5, rtol=1e-5)
    assert out["expression"].shape == (1, m.expression_size)
    n_linear = sum(isinstance(layer, torch.nn.Linear) for layer in net.expression_mlp)
    assert n_linear == 4                                         # [paper] 4-layer MLP


def test_landmark_keypoints_and_gaussian_heatmaps():
    m = _tiny(keypoints={"source": "landmarks", "landmark_subset": "ten"}).eval()
    assert m.requires == {"image", "landmarks68"} and m.kpnet.detector is None
    lm = _landmarks(2)
    with torch.no_grad():
        out = m.kpnet(torch.rand(2, 3, 32, 32), lm)
    from facegeo_models.common.keypoints import LANDMARK_SUBSETS

    idx = list(LANDMARK_SUBSETS["ten"])
    torch.testing.assert_close(out["kp"], (2 * lm[:, idx] + 1) / 32 - 1)
    # the heat-maps are normalized Gaussians centred on the keypoints (centroid = kp
    # for points away from the border)
    h = out["heatmap"]
    torch.testing.assert_close(h.sum((2, 3)), torch.ones(2, 10))
    grid = coordinate_grid(*h.shape[-2:])
    centroid = torch.einsum("bkhw,hwc->bkc", h, grid)
    inner = (out["kp"].abs() < 0.5).all(-1)
    assert inner.any()
    torch.testing.assert_close(centroid[inner], out["kp"][inner], atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="landmarks"):
        m.kpnet(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="68 points, num_kp is 10"):
        _tiny(keypoints={"source": "landmarks", "landmark_subset": "all68"})
    m68 = _tiny(num_kp=68, keypoints={"source": "landmarks", "landmark_subset": "all68"})
    with torch.no_grad():
        assert m68.kpnet(torch.rand(1, 3, 32, 32), lm[:1])["kp"].shape == (1, 68, 2)


# ------------------------------------------------------------------- encoder, decoder
def test_encoder_tokens_and_input_representation():
    m = _tiny().eval()
    enc = m.encoder
    # eq. 6: 3 + 4 O_pix + 4 K O_key + E channels
    assert enc.in_channels == 3 + 4 * 4 + 4 * 10 * 2 + 16
    x, kp, e = torch.rand(2, 3, 3, 32, 32), torch.rand(2, 3, 10, 2) - 0.5, torch.randn(2, 3, 16)
    with torch.no_grad():
        z = enc(x, kp, e)
        rep = enc.input_representation(x[0], kp[0], e[0])
    assert z.shape == (2, 3 * 4 * 4, 32)                         # (H/8)(W/8) per source
    torch.testing.assert_close(rep[:, :3], x[0])
    grid = coordinate_grid(32, 32)
    torch.testing.assert_close(rep[1, 3:19].permute(1, 2, 0), pixel_encoding(grid, 4, -1))
    torch.testing.assert_close(rep[2, 19:99, 5, 7], keypoint_encoding(kp[0, 2:3], 2, -1)[0])
    torch.testing.assert_close(rep[0, 99:, 30, 1], e[0, 0])
    with pytest.raises(ValueError, match="divisible"):
        enc(torch.rand(1, 1, 3, 20, 20), kp[:1, :1], e[:1, :1])


def test_chunked_rendering_equals_full_rendering():
    m = _tiny(2).eval()
    lat = torch.randn(2, 16, 32)
    kp, e = torch.rand(2, 10, 2) - 0.5, torch.randn(2, 16)
    with torch.no_grad():
        full = m.render(lat, kp, e, max_pixels_per_chunk=10 ** 6)
        for chunk in (1000, 37):
            torch.testing.assert_close(m.render(lat, kp, e, max_pixels_per_chunk=chunk),
                                       full, atol=1e-6, rtol=0)
        # a pixel subset renders exactly those pixels of the full image
        idx = torch.tensor([[0, 5, 1023], [77, 78, 500]])
        torch.testing.assert_close(m.render(lat, kp, e, idx), gather_pixels(full, idx),
                                   atol=1e-6, rtol=0)
    assert full.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="max_pixels_per_chunk"):
        m.render(lat, kp, e, max_pixels_per_chunk=-1)
    dec = m.decoder
    assert all(b.self_attn is None and b.cross_attn is not None for b in dec.blocks)
    assert len(dec.blocks) == 2


def test_multi_source_set_latent_ignores_source_order():
    """Tokens of several sources concatenate into one set-latent, computed once
    (encode_source); without source-index embeddings the decoder's cross-attention is
    invariant to the order of the sources."""
    m = _tiny(3).eval()
    g = torch.Generator().manual_seed(0)
    srcs = torch.rand(3, 3, 32, 32, generator=g)
    drv = torch.rand(2, 3, 32, 32, generator=g)
    st = m.encode_source(srcs)
    assert st["latent"].shape == (1, 3 * 16, 32) and st["num_sources"] == 3
    a = m.reenact(st, drv)
    b = m.reenact(m.encode_source(srcs[[2, 0, 1]]), drv)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    one = m.reenact(srcs[:1], drv)
    assert (one - a).abs().max() > 1e-4                        # the other sources matter
    assert a.shape == (2, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match="at most 4 source"):
        m.reenact(torch.rand(5, 3, 32, 32), drv)


# ------------------------------------------------------------------------- losses
def test_regularisers_against_numpy():
    g = torch.Generator().manual_seed(4)
    e = torch.randn(7, 5, generator=g)
    en = e.double().numpy()
    cov = np.cov(en, rowvar=False)
    assert fsrt.covariance_loss(e).item() == pytest.approx((cov ** 2).sum() / 5, rel=1e-5)
    var = en.var(axis=1, ddof=1)
    want = np.maximum(0, 1 - np.sqrt(var + 1e-4)).mean()
    assert fsrt.variance_hinge_loss(e).item() == pytest.approx(want, rel=1e-5)
    assert fsrt.variance_hinge_loss(e * 10).item() == 0.0        # spread features: no penalty
    assert fsrt.variance_hinge_loss(torch.zeros(3, 4)).item() == pytest.approx(1 - 0.01)
    e2 = e + 0.1
    assert fsrt.expression_distance(e, e2).item() == pytest.approx(0.01, rel=1e-4)
    with pytest.raises(ValueError):
        fsrt.covariance_loss(e[:1])
    with pytest.raises(ValueError):
        fsrt.expression_distance(e, e[:, :3])


def test_keypoint_aware_crop_keeps_the_keypoints_and_their_pixels():
    m = _tiny()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 32, 32, generator=g)
    kp = torch.rand(3, 10, 2, generator=g) * 1.2 - 0.6
    crop, box = m.keypoint_aware_crop(x, kp)
    inside = (kp - box[:, None, 0]) / box[:, None, 1]
    assert crop.shape == x.shape and inside.abs().max() <= 1 + 1e-5
    # the crop at its pixel centres samples the image at centre + half * p
    grid = coordinate_grid(32, 32)
    src = box[:, None, None, 0] + box[:, None, None, 1] * grid
    want = torch.nn.functional.grid_sample(x, src, align_corners=False,
                                           padding_mode="border")
    torch.testing.assert_close(crop, want)


def test_subgrid_index_is_strided_slicing():
    x = torch.rand(2, 3, 8, 12)
    for off in ((0, 0), (1, 0), (1, 1)):
        idx = subgrid_index(2, 8, 12, 2, off)
        torch.testing.assert_close(gather_pixels(x, idx).view(2, 3, 4, 6),
                                   x[:, :, off[0]::2, off[1]::2])
    with pytest.raises(ValueError):
        subgrid_index(1, 8, 12, 3, (0, 0))


# --------------------------------------------------------------------------- model
def test_forward_training_terms_and_frozen_detector():
    m = _tiny(6)
    m.train()
    g = torch.Generator().manual_seed(1)
    batch = {"source": torch.rand(2, 2, 3, 32, 32, generator=g),
             "driving": torch.rand(2, 3, 32, 32, generator=g),
             "pixel_index": torch.randint(0, 1024, (2, 50), generator=g)}
    out = m(batch)
    assert out["prediction"].shape == (2, 3, 50)
    assert out["kp_source"].shape == (2, 2, 10, 2) and out["expression_driving"].shape == (2, 16)
    terms = m.extra_losses(batch, out)
    assert set(terms) == {"expression_aug", "expression_cov", "expression_var"}
    (out["prediction"].square().mean() + sum(terms.values())).backward()
    params = dict(m.named_parameters())
    # frozen detector (outside the detector stage): no gradient; the expression network
    # on its features, the encoder and the decoder train
    assert params["kpnet.detector.kp.weight"].grad is None
    for name in ("kpnet.expression_conv.weight", "kpnet.expression_mlp.0.weight",
                 "encoder.per_patch.weight", "encoder.blocks.0.self_attn.q_proj.weight",
                 "decoder.blocks.1.cross_attn.k_proj.weight", "decoder.render_mlp.0.weight"):
        gr = params[name].grad
        assert gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0, name
    # the detector stage: equivariance term, gradients into the detector
    m.zero_grad()
    m.train_detector = True
    out = m(batch)
    terms = m.extra_losses(batch, out)
    assert "equivariance" in terms
    (out["prediction"].square().mean() + terms["equivariance"]).backward()
    assert params["kpnet.detector.kp.weight"].grad.abs().sum() > 0
    # eval: deterministic, full image, no regulariser terms
    m.eval()
    with torch.no_grad():
        a = m({"source": batch["source"], "driving": batch["driving"]})
        b = m({"source": batch["source"], "driving": batch["driving"]})
    torch.testing.assert_close(a["prediction"], b["prediction"])
    assert a["prediction"].shape == (2, 3, 32, 32) and not m.extra_losses(batch, a)
    with pytest.raises(ValueError, match="32x32"):
        m({"source": torch.rand(1, 3, 16, 16), "driving": torch.rand(1, 3, 16, 16)})


def test_landmark_model_trains_and_reenacts_with_conditioning():
    m = _tiny(7, keypoints={"source": "landmarks"})
    m.train()
    lm_s, lm_d = _landmarks(2, seed=1), _landmarks(2, seed=2)
    batch = {"source": torch.rand(2, 3, 32, 32), "driving": torch.rand(2, 3, 32, 32),
             "source_landmarks": lm_s, "driving_landmarks": lm_d}
    out = m(batch)
    assert set(m.extra_losses(batch, out)) == {"expression_aug", "expression_cov",
                                               "expression_var"}
    out["prediction"].mean().backward()
    assert m.kpnet.features.encoder.down_blocks[0].conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="driving_landmarks"):
        m({"source": batch["source"], "driving": batch["driving"]})
    # landmarks at another resolution are rescaled with their images
    src = Conditioning(image=torch.rand(1, 3, 64, 64), landmarks68=lm_s[:1] * 2 + 0.5)
    drv = Conditioning(image=torch.rand(2, 3, 64, 64), landmarks68=lm_d * 2 + 0.5)
    res = m.reenact(src, drv)
    assert res.shape == (2, 3, 64, 64)
    small = m.reenact(Conditioning(image=torch.nn.functional.interpolate(
        src.image, size=32, mode="bilinear", antialias=True), landmarks68=lm_s[:1]),
        Conditioning(image=torch.nn.functional.interpolate(
            drv.image, size=32, mode="bilinear", antialias=True), landmarks68=lm_d))
    st = m.encode_source(src)
    torch.testing.assert_close(st["kp"], (2 * lm_s[:1][:, list(
        fsrt.network.LANDMARK_SUBSETS["ten"])] + 1) / 32 - 1, atol=1e-5, rtol=0)
    assert small.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="landmarks68"):
        m.reenact(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_relative_mode_and_keypoint_offset():
    m = _tiny(8).eval()
    g = torch.Generator().manual_seed(2)
    src, drv = torch.rand(1, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    st = m.encode_source(src)
    ref = Conditioning.from_images(drv[:1])
    cond = Conditioning.from_images(drv)
    cond.reference = ref
    rel = m._reenact(st, cond, mode="relative", return_all=True)
    # the reference frame itself is rendered with the source's keypoints
    torch.testing.assert_close(rel["kp_driving"][0], st["kp"][0], atol=1e-5, rtol=0)
    ab = m._reenact(st, cond, mode="absolute", return_all=True)
    assert (rel["kp_driving"] - ab["kp_driving"]).abs().max() > 1e-4
    # the expression is always the driver's own (absolute), as the paper does
    torch.testing.assert_close(rel["expression_driving"], ab["expression_driving"])
    assert m.reenact(src, drv, mode="relative").shape == (3, 3, 32, 32)
    off = torch.zeros(3, 10, 2)
    off[:, 4] = 0.3
    cond.keypoint_offset = off
    moved = m._reenact(st, cond, mode="absolute", return_all=True)
    torch.testing.assert_close(moved["kp_driving"], ab["kp_driving"] + off)
    assert m.num_keypoints == 10 and m.modes == ("absolute", "relative")


def test_paper_configs_shapes_and_parameter_count():
    """paper.yaml: 12 heads x 64 in both transformers, 5 encoder and 2 decoder blocks,
    queries of 480 = 64 + 160 + 256, 61.8 M parameters (14.1 M of them the FOMM detector,
    which the authors load pretrained); paper_small.yaml: 52.5 M."""
    torch.manual_seed(0)
    m = fsrt.from_config("paper")
    n = sum(p.numel() for p in m.parameters())
    assert 61.5e6 < n < 62.1e6, n
    enc, dec = m.encoder, m.decoder
    assert len(enc.blocks) == 5 and len(dec.blocks) == 2 and dec.query_dim == 480
    att = enc.blocks[0].self_attn
    assert (att.heads, att.d_k, att.dim) == (12, 64, 768)
    assert enc.blocks[0].ff.net[0].out_features == 1536
    assert dec.blocks[0].cross_attn.inner_dim == 768 and dec.blocks[0].cross_attn.kv_dim == 768
    assert [layer.out_features for layer in dec.render_mlp if hasattr(layer, "out_features")
            ] == [1536, 1536, 1536, 1536, 3]
    assert m.kpnet.expression_size == 256
    with torch.no_grad():
        z = enc(torch.rand(1, 1, 3, 256, 256), torch.zeros(1, 1, 10, 2), torch.zeros(1, 1, 256))
    assert z.shape == (1, 32 * 32, 768)
    small = fsrt.from_config("paper_small")
    ns = sum(p.numel() for p in small.parameters())
    assert 52.2e6 < ns < 52.8e6, ns
    assert small.decoder.blocks[0].cross_attn.heads == 6


def test_cpu_config_fits_the_shipping_budget():
    for name in ("cpu", "cpu_landmarks"):
        cfg = fsrt.FSRT.load_config(name)
        m = fsrt.from_config(cfg)
        n = sum(p.numel() for p in m.parameters())
        assert n * 2 <= 16 * 2 ** 20, (name, n)                   # fp16 <= 16 MiB
        assert m.image_size == 64 and len(m.encoder.blocks) == 3
        assert [p["name"] for p in cfg["phases"]][-1] == "phase2_perceptual"
    assert fsrt.FSRT.load_config("cpu")["phases"][0]["losses"]["equivariance"] > 0


# ------------------------------------------------------------- registry / trainer / app
def test_registry_checkpoint_and_bare_weights(tmp_path):
    cfg = fsrt.FSRT.load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg["model"]).eval()
    assert isinstance(model, fsrt.FSRT) and model.max_sources == 4
    ckpt.save_checkpoint(tmp_path / "ck", {"model": model},
                         ckpt.make_model_card(cfg["model"], config=cfg))
    loaded = fsrt.load_pretrained(tmp_path / "ck", "cpu")
    src, drv = torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded.reenact(src, drv), model.reenact(src, drv))
    ckpt.save_weights(tmp_path / "w.safetensors", model)
    m2 = fsrt.load_pretrained(tmp_path / "w.safetensors", "cpu", config="tiny")
    out = m2.reenact(src, torch.rand(3, 3, 48, 40))
    assert out.shape == (3, 3, 48, 40)
    with pytest.raises(ValueError, match="sideways"):
        model.reenact(src, drv, mode="sideways")
    assert not issubclass(ValueError, UnsupportedModeError)   # both modes are honoured
    assert model.reenact(src, drv, mode="relative").shape == (3, 3, 32, 32)


def _real_clip_frames(media_dir, size: int, count: int) -> torch.Tensor:
    """Every 10th frame of lp_d9.mp4 as centre-square crops, (count, 3, size, size)."""
    from facegeo.landmarks.crops import crop_images
    from facegeo.video import frames_to_tensor, read_video

    x = frames_to_tensor(read_video(media_dir / "lp_d9.mp4", step=10, max_frames=count)[0])
    h, w = x.shape[-2:]
    s = min(h, w)
    box = torch.tensor([(w - s) // 2 + (s - 1) / 2, (h - s) // 2 + (s - 1) / 2, s])
    return crop_images(x, box.expand(len(x), 3), size)


def test_trainer_runs_every_phase_kind(tmp_path, media_dir):
    """tiny.yaml through the common Trainer: the detector stage (equivariance), phase I
    on sampled pixels, and a GAN phase on the strided sub-grid with its discriminator."""
    from facegeo_models.common.data import TensorVideoDataset
    from facegeo_models.common.trainer import Trainer

    cfg = fsrt.FSRT.load_config("tiny")
    cfg["train"].update(progress=False, tensorboard=False)
    frames = _real_clip_frames(media_dir, 32, 6)
    ds = TensorVideoDataset([frames[:3], frames[3:]], image_size=32)
    torch.manual_seed(0)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=ds, device="cpu", resume=None)
    rec = t.fit()
    assert [r["phase"] for r in rec] == ["keypoints"] * 2 + ["phase1_mse"] * 2 + [
        "phase3_gan"] * 2
    assert all("loss/equivariance" in r for r in rec[:2])
    assert not any("loss/equivariance" in r for r in rec[2:])
    assert all("loss/gan" in r and "loss/disc" in r for r in rec[4:])
    for r in rec:
        assert all(np.isfinite(r[k]) for k in ("loss/mse", "loss/expression_cov",
                                                "loss/expression_var", "loss/total"))
    m = fsrt.load_pretrained(ckpt.latest_checkpoint(tmp_path), "cpu")
    assert isinstance(m, fsrt.FSRT)


def test_trainer_two_sources(tmp_path, media_dir):
    """data.n_src: 2 (the paper's 2-Src training): batches of (B, 2, 3, S, S) sources go
    through the task and the set-latent holds both sources' tokens."""
    from facegeo_models.common.data import TensorVideoDataset
    from facegeo_models.common.trainer import Trainer

    cfg = fsrt.FSRT.load_config("tiny")
    cfg["train"].update(progress=False, tensorboard=False)
    cfg["data"]["n_src"] = 2
    cfg["phases"] = cfg["phases"][1:2]
    cfg["phases"][0]["steps"] = 1
    frames = _real_clip_frames(media_dir, 32, 6)
    ds = TensorVideoDataset([frames[:3], frames[3:]], image_size=32, n_src=2)
    assert ds[0]["source"].shape == (2, 3, 32, 32)
    torch.manual_seed(0)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=ds, device="cpu", resume=None)
    rec = t.fit()
    assert len(rec) == 1 and np.isfinite(rec[0]["loss/mse"])
    assert fsrt.FSRT.load_config("paper_2src")["data"]["n_src"] == 2


def test_overfits_real_frames(media_dir):
    """CPU overfit of the tiny config on 4 real (source, driving) pairs at 32x32 with
    the phase-I objective (MSE on sampled pixels + the regularisers), 60 steps: the MSE
    falls to a fifth of its start and to half of what the best constant colour per image
    scores (so the renderer learned image structure, not only the mean colour)."""
    from facegeo_models.common.task import sample_pixels

    frames = _real_clip_frames(media_dir, 32, 8)
    batch = {"source": frames[0::2], "driving": frames[1::2]}
    drv = batch["driving"]
    flat_colour = (drv - drv.mean((2, 3), keepdim=True)).square().mean().item()
    m = _tiny(0)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=4e-3)
    w = {"expression_aug": 1.0, "expression_cov": 1.0, "expression_var": 0.2}
    hist = []
    torch.manual_seed(0)
    for _ in range(60):
        idx = sample_pixels(4, 32, 32, 256)
        out = m({**batch, "pixel_index": idx})
        mse = (out["prediction"] - gather_pixels(drv, idx)).square().mean()
        terms = m.extra_losses(batch, out)
        total = mse + sum(w[k] * v for k, v in terms.items())
        opt.zero_grad()
        total.backward()
        opt.step()
        hist.append(mse.item())
        assert math.isfinite(total.item())
    first, last = float(np.mean(hist[:3])), float(np.mean(hist[-5:]))
    assert last < 0.2 * first, (first, last)
    assert last < 0.5 * flat_colour, (last, flat_colour)


def test_reenact_app_two_sources_on_a_real_clip(tmp_path, media_dir, capsys):
    """apps/reenact.py --model fsrt --checkpoint <tiny> with two --source images on a
    real clip (the face pipeline runs; the set-latent holds both sources)."""
    from facegeo.video import video_info
    from facegeo_apps import reenact as reenact_app

    cfg = fsrt.FSRT.load_config("tiny")
    torch.manual_seed(0)
    net = build_model(cfg["model"]).eval()
    ckpt.save_checkpoint(tmp_path / "ck", {"model": net},
                         ckpt.make_model_card(cfg["model"], config=cfg))
    out = tmp_path / "o.mp4"
    rc = reenact_app.main(["--source", str(media_dir / "lp_s12.jpg"), "--source",
                           str(media_dir / "lp_s1.jpg"), "--driving",
                           str(media_dir / "lp_d12.mp4"), "--output", str(out), "--model",
                           "fsrt", "--checkpoint", str(tmp_path / "ck"), "--size", "64",
                           "--max-frames", "3", "--mode", "relative", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    info = video_info(out)
    assert info.frames == 3 and (info.width, info.height) == (64, 64)
