"""pfp_mls (paired feature points + weighted MLS motion): unit tests of each piece against
independent references (brute-force loops, analytic cases; its attention blocks are tested
in tests/models/common/test_attention.py), the registry / trainer / checkpoint / inference
API, numbers frozen before the move onto the common blocks / task / composer, and a CPU
overfit test on real frames.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegeo_models import pfp_mls
from facegeo_models.common import checkpoint as ckpt
from facegeo_models.common.registry import build_model
from facegeo_models.pfp_mls.network import (
    PairedFeaturePointTransformer,
    WeightedMotionEstimator,
)

# tiny tensors: one intra-op thread is faster than two on a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(seed: int = 0) -> pfp_mls.PFPMLS:
    torch.manual_seed(seed)
    return pfp_mls.from_config("tiny")


# ------------------------------------------------------------------------ transformer
def test_shared_blocks_are_the_common_ones():
    """pfp_mls imports its attention and dense-motion blocks from models/common (the old
    names stay importable from pfp_mls.network, as the same objects, not copies)."""
    from facegeo_models.common import attention, blocks
    from facegeo_models.pfp_mls import network

    for name in ("sinusoidal_encoding", "PositionalAttention", "PositionwiseFeedForward",
                 "EncoderLayer", "DecoderLayer"):
        assert getattr(network, name) is getattr(attention, name), name
    assert network.DenseMotionUNet is blocks.DenseMotionNetwork
    m = _tiny()
    assert type(m.dense_motion) is blocks.DenseMotionNetwork
    assert type(m.transformer.decoder) is attention.DecoderLayer


def test_transformer_residual_form_and_pairing():
    torch.manual_seed(0)
    t = PairedFeaturePointTransformer(dim=64, heads=4, d_ff=96).eval()
    l_s, l_d = torch.randn(3, 10, 64), torch.randn(3, 10, 64)
    l_st, l_dt = t(l_s, l_d)
    # eq. 1: l_st = l_s + T(l_s, l_d), l_dt = l_d + T(l_d, l_s), one T both ways
    torch.testing.assert_close(l_st, l_s + t.transform(l_s, l_d), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l_dt, l_d + t.transform(l_d, l_s), atol=1e-5, rtol=1e-5)
    b_st, b_dt = t(l_d, l_s)
    torch.testing.assert_close(b_st, l_dt, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b_dt, l_st, atol=1e-5, rtol=1e-5)
    # co-attention: the source embedding depends on the driving input (paired points),
    # and per sample only (no mixing across the batch)
    l_d2 = l_d.clone()
    l_d2[0] += torch.randn(10, 64)
    c_st, _ = t(l_s, l_d2)
    assert (c_st[0] - l_st[0]).abs().max() > 1e-3
    torch.testing.assert_close(c_st[1:], l_st[1:], atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- points
def test_feature_points_are_heatmap_means():
    m = _tiny().eval()
    x = torch.rand(2, 3, 64, 64)
    y = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = m.feature_points(x, y)
    hm = out["heatmap_source"]
    assert hm.shape == (2, 10, 16, 16)
    torch.testing.assert_close(hm.sum((2, 3)), torch.ones(2, 10))
    # brute-force mean in pixel units of the 16x16 map -> normalized coordinates
    h = hm.numpy().astype(np.float64)
    for b in range(2):
        for n in range(10):
            ys, xs = np.mgrid[0:16, 0:16]
            mx = (h[b, n] * xs).sum()
            my = (h[b, n] * ys).sum()
            want = np.array([(2 * mx + 1) / 16 - 1, (2 * my + 1) / 16 - 1])
            np.testing.assert_allclose(out["kp_source"][b, n].numpy(), want, atol=1e-5)


def test_weighted_motion_against_brute_force():
    """At initialisation M = I, so f_x = x - k_d* + k_s* with the eq.-4 weights."""
    torch.manual_seed(1)
    est = WeightedMotionEstimator(num_points=5, alpha=0.8)
    k_s = torch.rand(2, 5, 2) * 1.6 - 0.8
    k_d = torch.rand(2, 5, 2) * 1.6 - 0.8
    with torch.no_grad():
        out = est(k_s, k_d, 6, 7)
    assert out["M"].shape == (2, 6, 7, 2, 2)
    torch.testing.assert_close(out["M"], torch.eye(2).expand(2, 6, 7, 2, 2))
    ks, kd = k_s.double().numpy(), k_d.double().numpy()
    for b in range(2):
        for i in range(6):
            for j in range(7):
                x = np.array([(2 * j + 1) / 7 - 1, (2 * i + 1) / 6 - 1])
                w = 1.0 / np.sum((kd[b] - x) ** 2, axis=1) ** 0.8
                kd_star = (w[:, None] * kd[b]).sum(0) / w.sum()
                ks_star = (w[:, None] * ks[b]).sum(0) / w.sum()
                np.testing.assert_allclose(out["weights"][b, i, j].numpy(), w / w.sum(),
                                           rtol=1e-4, atol=1e-6)
                np.testing.assert_allclose(out["flow"][b, i, j].numpy(),
                                           x - kd_star + ks_star, atol=1e-5)
    # the single convolution sees the weights and both heat-maps: a perturbed kernel
    # changes M, and M reaches f through eq. 5: (x - k_d*) M + k_s*
    with torch.no_grad():
        est.conv.weight.normal_(0, 0.05)
        out = est(k_s, k_d, 6, 7)
    assert (out["M"] - torch.eye(2)).abs().max() > 1e-3
    grid = torch.stack(torch.meshgrid((torch.arange(6) * 2 + 1) / 6 - 1,
                                      (torch.arange(7) * 2 + 1) / 7 - 1, indexing="ij")[::-1],
                       -1)
    want = ((grid - out["k_d_star"]).unsqueeze(-2) @ out["M"]).squeeze(-2) + out["k_s_star"]
    torch.testing.assert_close(out["flow"], want)


def test_translation_moves_every_pixel_by_the_translation():
    """k_s = k_d + t with M = I gives f_x = x + t everywhere (any weights)."""
    est = WeightedMotionEstimator(num_points=4)
    k_d = torch.tensor([[[-0.5, -0.4], [0.3, -0.6], [0.1, 0.5], [-0.7, 0.2]]])
    t = torch.tensor([0.1, -0.05])
    out = est(k_d + t, k_d, 8, 8)
    grid = torch.stack(torch.meshgrid((torch.arange(8) * 2 + 1) / 8 - 1,
                                      (torch.arange(8) * 2 + 1) / 8 - 1, indexing="ij")[::-1],
                       -1)
    torch.testing.assert_close(out["flow"][0], grid + t, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- losses
def test_motion_loss_zero_for_exact_affine_and_detach():
    torch.manual_seed(2)
    k_d = torch.rand(2, 6, 2) * 2 - 1
    a = torch.tensor([[1.1, 0.2], [-0.1, 0.9]])
    k_s = k_d @ a + torch.tensor([0.05, -0.1])
    est = WeightedMotionEstimator(6)
    w = est(k_s, k_d, 5, 5)["weights"]
    m_true = a.expand(2, 5, 5, 2, 2).clone().requires_grad_(True)
    assert pfp_mls.motion_loss(m_true, k_s, k_d, w).item() < 1e-10
    # brute force of eq. 7 for M = I
    m_id = torch.eye(2).expand(2, 5, 5, 2, 2).clone().requires_grad_(True)
    got = pfp_mls.motion_loss(m_id, k_s, k_d, w)
    wn = w.double()
    ks_star = torch.einsum("bhwn,bnc->bhwc", wn, k_s.double())
    kd_star = torch.einsum("bhwn,bnc->bhwc", wn, k_d.double())
    res = (k_d.double()[:, None, None] - kd_star[..., None, :]) - (
        k_s.double()[:, None, None] - ks_star[..., None, :])
    want = (wn * res.square().sum(-1)).sum(-1).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # with detach_points only M gets a gradient
    kp = k_s.clone().requires_grad_(True)
    pfp_mls.motion_loss(m_id, kp, k_d, w).backward()
    assert kp.grad is None and m_id.grad is not None and m_id.grad.abs().sum() > 0
    kp2 = k_s.clone().requires_grad_(True)
    pfp_mls.motion_loss(m_id, kp2, k_d, w, detach_points=False).backward()
    assert kp2.grad.abs().sum() > 0


def test_spreading_loss_brute_force():
    torch.manual_seed(3)
    k = torch.rand(2, 5, 2) * 0.6 - 0.3
    got = pfp_mls.spreading_loss(k, 0.25)
    tot, cnt = 0.0, 0
    for b in range(2):
        for i in range(5):
            for j in range(5):
                if i != j:
                    tot += max(0.0, 0.25 - float((k[b, i] - k[b, j]).norm()))
                    cnt += 1
    assert got.item() == pytest.approx(tot / cnt, rel=1e-5)
    far = torch.tensor([[[-0.8, -0.8], [0.8, -0.8], [0.0, 0.8]]])
    assert pfp_mls.spreading_loss(far, 0.5).item() == 0.0
    same = torch.zeros(1, 3, 2, requires_grad=True)
    loss = pfp_mls.spreading_loss(same, 0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.2, abs=1e-5) and torch.isfinite(same.grad).all()
    with pytest.raises(ValueError):
        pfp_mls.spreading_loss(torch.zeros(2, 3), 0.2)


def test_perturb_one_point():
    g = torch.Generator().manual_seed(0)
    off = pfp_mls.perturb_one_point(64, 10, generator=g)
    assert off.shape == (64, 10, 2)
    nz = (off.abs().sum(-1) > 0).sum(1)
    assert (nz == 1).all()
    mags = off.abs()[off.abs() > 0]
    assert mags.min() >= 0.1 - 1e-6 and mags.max() <= 1.0 + 1e-6  # [0.05, 0.5] x 2


# ---------------------------------------------------------------------------- model
def test_forward_outputs_losses_and_gradients():
    m = _tiny()
    src, drv = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    batch = {"source": src[:, None], "driving": drv}  # (B, n_src, 3, H, W) accepted
    out = m(batch)
    assert out["prediction"].shape == (2, 3, 64, 64)
    assert 0 <= out["prediction"].min() and out["prediction"].max() <= 1
    assert out["kp_source"].shape == out["kp_driving"].shape == (2, 10, 2)
    assert out["deformation"].shape == (2, 32, 32, 2) and out["occlusion"].shape == (
        2, 1, 32, 32)
    torch.testing.assert_close(out["mask"].sum(1), torch.ones(2, 32, 32))
    total, terms = pfp_mls.total_loss(m, batch, out,
                                      weights={"l1": 1.0, "motion": 10.0, "spread": 10.0})
    assert set(terms) == {"l1", "motion", "spread"}
    assert total.item() == pytest.approx(sum(
        w * terms[k].item() for k, w in (("l1", 1), ("motion", 10), ("spread", 10))), rel=1e-5)
    total.backward()
    for name in ("embedder.head.weight", "transformer.decoder.co_attn.q_proj.weight",
                 "transformer.encoder.self_attn.k_proj.weight", "motion.conv.weight",
                 "dense_motion.mask.weight", "generator.final.weight"):
        g = dict(m.named_parameters())[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    with pytest.raises(ValueError):
        m({"source": torch.rand(2, 1, 64, 64), "driving": drv})
    with pytest.raises(ValueError):
        m({"source": torch.rand(2, 3, 32, 32), "driving": drv})
    with pytest.raises(ValueError, match="unknown loss"):
        pfp_mls.total_loss(m, batch, out, weights={"nope": 1.0})


def test_driving_point_offset_moves_one_point_only():
    m = _tiny().eval()
    src, drv = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    off = torch.zeros(1, 10, 2)
    off[0, 3] = torch.tensor([0.4, -0.2])
    with torch.no_grad():
        a = m({"source": src, "driving": drv})
        b = m({"source": src, "driving": drv, "driving_point_offset": off})
    torch.testing.assert_close(b["kp_driving"], a["kp_driving"] + off)
    torch.testing.assert_close(b["kp_source"], a["kp_source"])
    assert (a["flow"] - b["flow"]).abs().max() > 1e-3


def test_source_points_depend_on_driving_and_bf16_autocast():
    """Paired points: k_s moves when only the driving frame changes (co-attention); under
    bf16 autocast the weighted motion stays float32 and everything is finite."""
    m = _tiny().eval()
    src = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = m.feature_points(src, torch.rand(1, 3, 64, 64))
        b = m.feature_points(src, torch.rand(1, 3, 64, 64))
        assert (a["kp_source"] - b["kp_source"]).abs().max() > 1e-4
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m({"source": src, "driving": torch.rand(1, 3, 64, 64)})
    assert out["motion_M"].dtype == torch.float32 and out["flow"].dtype == torch.float32
    assert all(torch.isfinite(v.float()).all() for v in out.values())


def test_paper_config_shapes_and_parameter_count():
    torch.manual_seed(0)
    m = pfp_mls.from_config("paper").eval()
    n = sum(p.numel() for p in m.parameters())
    assert 60e6 < n < 75e6  # 66.6 M (docs/models/pfp_mls.md)
    assert m.transformer.encoder.self_attn.heads == 4
    assert m.embedder.heatmap_size ** 2 == 1024 and m.num_points == 10
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        emb = m.embedder(x)
        pts = m.feature_points(x, x.flip(-1))
    assert emb.shape == (1, 10, 1024)
    assert pts["heatmap_source"].shape == (1, 10, 32, 32)
    assert pts["kp_driving"].abs().max() <= 1


def test_cpu_config_is_the_paper_architecture_at_128():
    """configs/cpu128.yaml (the media-video CPU run of docs/models/pfp_mls.md): the paper's
    N, heat-map size and heads at 128x128, 20.3 M parameters, losses of eq. 8 with the face
    perceptual substitute, the adversarial term in its last phase."""
    cfg = pfp_mls.PFPMLS.load_config("cpu128")
    m = pfp_mls.from_config(cfg).eval()
    n = sum(p.numel() for p in m.parameters())
    assert 19e6 < n < 22e6
    assert m.image_size == 128 and m.num_points == 10 and m.embedder.heatmap_size == 32
    assert m.transformer.encoder.self_attn.heads == 4
    with torch.no_grad():
        out = m({"source": torch.rand(1, 3, 128, 128), "driving": torch.rand(1, 3, 128, 128)})
    assert out["prediction"].shape == (1, 3, 128, 128)
    assert cfg["perceptual"]["type"] == "face"
    losses = [set(ph["losses"]) for ph in cfg["phases"]]
    assert all({"perceptual", "motion", "spread"} <= ls for ls in losses)
    assert "gan" not in losses[0] and "gan" in losses[-1]


# ------------------------------------------------------------- registry / io / inference
def test_registry_checkpoint_and_reenact(tmp_path):
    cfg = pfp_mls.PFPMLS.load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    assert isinstance(model, pfp_mls.PFPMLS)
    model.eval()
    card = ckpt.make_model_card(cfg["model"], config=cfg)
    ckpt.save_checkpoint(tmp_path / "ck", {"model": model}, card)
    loaded = pfp_mls.load_pretrained(tmp_path / "ck", "cpu")
    assert not loaded.training
    src, drv = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    want = model.reenact(src, drv)
    got = loaded.reenact(src, drv)
    assert got.shape == (3, 3, 64, 64)
    torch.testing.assert_close(got, want)
    # bare weights file + config; other resolutions are resized in and out
    ckpt.save_weights(tmp_path / "w.safetensors", model)
    m2 = pfp_mls.load_pretrained(tmp_path / "w.safetensors", "cpu", config="tiny")
    out = m2.reenact(F.interpolate(src, size=(80, 96)), F.interpolate(drv, size=(80, 96)))
    assert out.shape == (3, 3, 80, 96)
    with pytest.raises(ValueError):
        pfp_mls.load_pretrained(tmp_path / "w.safetensors", "cpu")
    from facegeo.pipeline import UnsupportedModeError

    with pytest.raises(UnsupportedModeError, match="relative"):
        model.reenact(src, drv, mode="relative")   # co-attended points: absolute only
    with pytest.raises(ValueError, match="at most 1 source"):
        model.reenact(torch.rand(2, 3, 64, 64), drv)
    with pytest.raises(ValueError):
        pfp_mls.from_config({"model": {"name": "fsrt", "params": {}}})


def _decode(path, size: int, *, step: int, frames: int) -> torch.Tensor:
    """``frames`` frames (every ``step``-th from the first) as (T, 3, size, size) centre
    squares: facegeo.video decoding, facegeo.landmarks.crops cropping."""
    from facegeo.landmarks.crops import crop_images
    from facegeo.video import frames_to_tensor, read_video

    x = frames_to_tensor(read_video(path, step=step, max_frames=frames)[0])
    h, w = x.shape[-2:]
    s = min(h, w)
    box = torch.tensor([(w - s) // 2 + (s - 1) / 2, (h - s) // 2 + (s - 1) / 2, s])
    return crop_images(x, box.expand(len(x), 3), size)


@pytest.fixture(scope="module")
def real_frames(media_dir):
    a = _decode(media_dir / "lp_d9.mp4", 64, step=10, frames=4)
    b = _decode(media_dir / "lp_s18.mp4", 64, step=10, frames=4)
    return torch.cat([a[:2], b[:2]]), torch.cat([a[2:], b[2:]])


def test_trainer_runs_tiny_config(tmp_path, real_frames):
    """The trainer builds the model from tiny.yaml and trains it with the model's own
    losses (motion, spread) and the GAN phase."""
    from facegeo_models.common.data import TensorVideoDataset
    from facegeo_models.common.trainer import Trainer

    cfg = pfp_mls.PFPMLS.load_config("tiny")
    cfg["phases"] = [{"name": "recon", "steps": 1, "losses": {"l1": 1, "motion": 10,
                                                              "spread": 10}},
                     {"name": "gan", "steps": 1, "losses": {"l1": 1, "motion": 10,
                                                            "spread": 10, "gan": 0.1}}]
    cfg["train"]["progress"] = False
    cfg["train"]["tensorboard"] = False
    src, drv = real_frames
    ds = TensorVideoDataset([torch.stack([src[0], drv[0], src[1], drv[1]]),
                             torch.stack([src[2], drv[2], src[3], drv[3]])], image_size=64)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=ds, device="cpu", resume=None)
    rec = t.fit()
    assert [r["phase"] for r in rec] == ["recon", "gan"]
    for r in rec:
        assert all(np.isfinite(r[k]) for k in ("loss/l1", "loss/motion", "loss/spread"))
    assert "loss/gan" in rec[1] and "loss/disc" in rec[1]
    m = pfp_mls.load_pretrained(ckpt.latest_checkpoint(tmp_path), "cpu")
    assert isinstance(m, pfp_mls.PFPMLS)


def test_overfits_real_frames(real_frames):
    """CPU overfit on a fixed batch of 4 real (source, driving) pairs at 64x64: the
    reconstruction loss must fall well below its start (the paper's loss with L1 in place
    of VGG, plus L_m and L_f)."""
    src, drv = real_frames
    batch = {"source": src, "driving": drv}
    m = _tiny(0)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3, betas=(0.5, 0.999))
    weights = {"l1": 1.0, "motion": 10.0, "spread": 10.0}
    hist = []
    for _ in range(60):
        out = m(batch)
        total, terms = pfp_mls.total_loss(m, batch, out, weights=weights)
        opt.zero_grad()
        total.backward()
        opt.step()
        hist.append(terms["l1"].item())
        assert math.isfinite(total.item())
    first, last = hist[0], float(np.mean(hist[-5:]))
    assert last < 0.35 * first, (first, last)
    assert terms["spread"].item() < 0.01


# ------------------------------------------------------------ numbers frozen before the port
# Recorded with the code of commit 3258feb (pfp_mls with its own attention / dense-motion
# blocks, pfp_mls.losses.total_loss, the single-discriminator Trainer), one torch thread,
# torch 2.13 CPU. The port onto models/common (attention, DenseMotionNetwork,
# LossComposer, TrainingTask) must reproduce them (bit-identical here; compared to 1e-6).
_FROZEN_EVAL = {"pred_sum": 12302.560234606266, "pred_wsum": 36906.200463593006,
                "kp_s": 22.008480325341225, "kp_d": 169.3284008949995,
                "pred_px": [0.49851733446121216, 0.5013831853866577, 0.5020394921302795]}
_FROZEN_TERMS = {"l1": 0.25683829188346863, "motion": 0.17121997475624084,
                 "spread": 0.005062364973127842, "total": 2.0196616649627686}
_FROZEN_TRAIN = [  # loss/total, l1, motion, spread, gan, feature_matching, disc, |g|, |d|
    (1.4461480379104614, 0.18312162160873413, 0.12357550114393234, 0.0027271434664726257,
     None, None, None, 4.5873308181762695, None),
    (1.1637357473373413, 0.18192021548748016, 0.08581504970788956, 0.01236650999635458,
     None, None, None, 8.420389175415039, None),
    (3.0282986164093018, 0.17876629531383514, 0.25354671478271484, 0.03140652924776077,
     None, None, None, 12.23251724243164, None),
    (3.0675323009490967, 0.169693723320961, 0.238557368516922, 0.005481528118252754,
     1.1423094272613525, 0.3432186543941498, 1.2011405229568481, 7.812222003936768,
     8.025777816772461),
    (3.6018476486206055, 0.18250280618667603, 0.291805237531662, 0.0027703698724508286,
     1.0403435230255127, 0.36955422163009644, 1.1518915891647339, 6.577216625213623,
     7.884252548217773),
    (2.138612985610962, 0.17498008906841278, 0.13926643133163452, 0.013828611001372337,
     1.0458269119262695, 0.32809978723526, 1.107479453086853, 3.6655640602111816,
     6.987519264221191),
]
_FROZEN_SUMS = (2178.1299897188774, 2227.519982990615)  # trained params, EMA params
_TRAIN_KEYS = ("loss/total", "loss/l1", "loss/motion", "loss/spread", "loss/gan",
               "loss/feature_matching", "loss/disc", "grad_norm/g", "grad_norm/d")


def _smooth_videos(size: int, n: int = 2, t: int = 4, seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n * t, 3, size // 8, size // 8, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return list(x.reshape(n, t, 3, size, size))


def _close(got, want, what):
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9), what


def test_numbers_unchanged_by_the_port_onto_common(tmp_path):
    """Same weights and inputs -> the outputs of the old code; same seed -> the old
    training losses (3 reconstruction steps, then 3 steps with GAN + feature matching and
    discriminator steps, EMA) through the Trainer's default TrainingTask and the
    LossComposer; total_loss gives the old terms."""
    from facegeo_models.common.data import TensorVideoDataset
    from facegeo_models.common.trainer import Trainer

    m = _tiny(0)
    g = torch.Generator().manual_seed(123)
    src, drv = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    m.eval()
    with torch.no_grad():
        o = m({"source": src, "driving": drv})
    pred = o["prediction"].double()
    w = torch.arange(pred.numel(), dtype=torch.float64).reshape(pred.shape) % 7
    got = {"pred_sum": pred.sum().item(), "pred_wsum": (pred * w).sum().item(),
           "kp_s": o["kp_source"].double().sum().item(),
           "kp_d": (o["kp_driving"].double() * torch.arange(20).view(1, 10, 2)).sum().item(),
           "pred_px": o["prediction"][1, :, 10, 20].tolist()}
    for k, v in _FROZEN_EVAL.items():
        _close(got[k], v, k)
    m.train()
    batch = {"source": src, "driving": drv}
    out = m(batch)
    total, terms = pfp_mls.total_loss(m, batch, out,
                                      weights={"l1": 1.0, "motion": 10.0, "spread": 10.0})
    for k, v in {**terms, "total": total}.items():
        _close(v.item(), _FROZEN_TERMS[k], k)

    cfg = pfp_mls.PFPMLS.load_config("tiny")
    cfg["phases"] = [{"name": "recon", "steps": 3,
                      "losses": {"l1": 1, "motion": 10, "spread": 10}},
                     {"name": "gan", "steps": 3,
                      "losses": {"l1": 1, "motion": 10, "spread": 10, "gan": 0.1,
                                 "feature_matching": 1}}]
    cfg["train"].update(progress=False, tensorboard=False, ema={"decay": 0.9})
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=TensorVideoDataset(
        _smooth_videos(64), image_size=64), device="cpu", resume=None)
    rec = t.fit()
    assert len(rec) == len(_FROZEN_TRAIN)
    for r, want in zip(rec, _FROZEN_TRAIN):
        for k, v in zip(_TRAIN_KEYS, want):
            if v is None:
                assert k not in r, (r["step"], k)
            else:
                _close(r[k], v, (r["step"], k))
    _close(sum(p.double().sum().item() for p in t.raw_model.parameters()), _FROZEN_SUMS[0],
           "params")
    _close(sum(p.double().sum().item() for p in t.ema.parameters()), _FROZEN_SUMS[1], "ema")
