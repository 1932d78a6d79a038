"""s2d (sparse-to-dense motion transfer): blocks against independent references, the model
on the common interface, training and an overfit on real frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegeo.coords import normalized_to_pixel
from facegeo.landmarks.pupils import render_synthetic_eyes
from facegeo_models import s2d
from facegeo_models.common import checkpoint as ckpt
from facegeo_models.common.blocks import identity_grid
from facegeo_models.common.registry import build_model
from facegeo_models.s2d import losses as L
from facegeo_models.s2d import network as N

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(seed: int = 0, **over) -> s2d.S2D:
    torch.manual_seed(seed)
    params = s2d.S2D.model_params("tiny")
    for k, v in over.items():
        params.setdefault(k, {}).update(v) if isinstance(v, dict) else params.update({k: v})
    return s2d.S2D(**params)


@pytest.fixture(scope="module")
def synth():
    """Two synthetic 64x64 faces with known 68 points (eyes looking left / right)."""
    off = torch.tensor([[[-0.12, 0.0], [-0.12, 0.0]], [[0.12, 0.0], [0.12, 0.0]]])
    img, lm, pupils = render_synthetic_eyes(off, size=64, eye_width=10.0, seed=2)
    return img, lm, pupils


# ------------------------------------------------------------------------------ blocks
def test_add_motion_zero_motion_adds_nothing_and_is_linear():
    torch.manual_seed(0)
    layer = N.AddMotion(10, 6, hidden=3, grid=4)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    h = torch.randn(2, 6, 8, 8)
    torch.testing.assert_close(layer(h, torch.zeros(2, 10)), h)       # exactly h
    m1, m2 = torch.randn(2, 10), torch.randn(2, 10)
    d = lambda m: layer(h, m) - h  # noqa: E731
    torch.testing.assert_close(d(m1 + m2), d(m1) + d(m2), atol=1e-5, rtol=1e-5)
    assert d(m1).abs().max() > 1e-3
    # a coarser feature map: the motion map is pooled to it, still exact at zero motion
    h2 = torch.randn(2, 6, 2, 2)
    torch.testing.assert_close(layer(h2, torch.zeros(2, 10)), h2)


def test_motion_branch_identity_at_init_and_ablation_switches():
    torch.manual_seed(0)
    br = N.MotionBranch(5, block_expansion=4, num_blocks=2, max_features=8, style_dim=8,
                        mask=True)
    x, p = torch.rand(2, 3, 16, 16), torch.rand(2, 5, 2) * 2 - 1
    out = br(x, p, p + 0.1)
    torch.testing.assert_close(out["flow"], identity_grid(2, 16, 16))
    assert out["mask"].shape == (2, 1, 16, 16)
    kinds = {type(m).__name__ for m in br.modules()}
    assert "AdaIN" in kinds and "AddMotion" in kinds
    no = N.MotionBranch(5, block_expansion=4, num_blocks=2, max_features=8, style_dim=8,
                        adain=False, add_motion=False)
    kinds = {type(m).__name__ for m in no.modules()}
    assert "AdaIN" not in kinds and "AddMotion" not in kinds
    with pytest.raises(ValueError, match="divisible by 4"):
        br(torch.rand(2, 3, 10, 10), p, p)
    with pytest.raises(ValueError, match=r"\(B=2, 5, 2\)"):
        br(x, p[:, :4], p[:, :4])


def test_crop_regions_at_known_landmark_positions():
    """An image whose pixels hold their own coordinates: each patch must hold the
    coordinates c + u * half_side of the box around the region centroid."""
    s = 32
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    img = torch.stack([xx, yy, xx * 0]).float()[None] / s              # x/s, y/s ramps
    pts = torch.zeros(1, 74, 2)
    want_centres = torch.tensor([[-0.4, -0.2], [0.4, -0.25], [0.0, 0.5]])
    for r, idx in enumerate(N.REGIONS.values()):
        k = torch.arange(len(idx), dtype=torch.float32)
        spread = torch.stack([torch.cos(k), torch.sin(k)], -1) * 0.05
        pts[0, list(idx)] = want_centres[r] + spread - spread.mean(0)
    c = N.region_boxes(pts, 0.25)
    torch.testing.assert_close(c[0], want_centres, atol=1e-6, rtol=0)
    patches = N.crop_regions(img, c, 0.25, 8)                          # (1, 3, 3, 8, 8)
    g = identity_grid(1, 8, 8)[0]
    for r in range(3):
        pos = normalized_to_pixel(want_centres[r] + 0.25 * g, (s, s))    # image pixels
        torch.testing.assert_close(patches[0, r, 0], pos[..., 0] / s, atol=1e-5, rtol=0)
        torch.testing.assert_close(patches[0, r, 1], pos[..., 1] / s, atol=1e-5, rtol=0)


def test_paste_local_motion_against_a_pixel_loop():
    torch.manual_seed(1)
    b, h, r, p, hs = 1, 12, 2, 6, 0.3
    gflow = identity_grid(b, h, h) + 0.05 * torch.randn(b, h, h, 2)
    lflow = identity_grid(b * r, p, p).view(b, r, p, p, 2) + 0.1 * torch.randn(b, r, p, p, 2)
    lmask = torch.rand(b, r, 1, p, p)
    cs = torch.tensor([[[-0.3, 0.1], [0.35, -0.2]]])
    cd = torch.tensor([[[-0.25, 0.05], [0.3, -0.3]]])
    got = N.paste_local_motion(gflow, lflow, lmask, cs, cd, hs)
    ident = identity_grid(1, h, h)[0]
    pgrid = identity_grid(1, p, p)[0]
    want = gflow[0].clone()
    for i in range(h):
        for j in range(h):
            for k in range(r):
                u = (ident[i, j] - cd[0, k]) / hs
                if u.abs().max() > 1:
                    continue
                # bilinear lookup of the patch maps at u (align_corners=False pixel coords)
                px = normalized_to_pixel(u, (p, p))
                x0, y0 = math.floor(px[0]), math.floor(px[1])
                fx, fy = float(px[0] - x0), float(px[1] - y0)
                taps = [((1 - fx) * (1 - fy), y0, x0), (fx * (1 - fy), y0, x0 + 1),
                        ((1 - fx) * fy, y0 + 1, x0), (fx * fy, y0 + 1, x0 + 1)]
                m = torch.zeros(())
                d = torch.zeros(2)
                for wgt, y, x in taps:
                    if 0 <= x < p and 0 <= y < p:       # mask: zero padding
                        m = m + wgt * lmask[0, k, 0, y, x]
                    yc, xc = min(max(y, 0), p - 1), min(max(x, 0), p - 1)   # border
                    d = d + wgt * (lflow[0, k, yc, xc] - pgrid[yc, xc])
                want[i, j] = want[i, j] * (1 - m) + (cs[0, k] + hs * (u + d)) * m
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)


def test_identity_motion_at_init_for_equal_landmarks(synth):
    """Untrained model, driving landmarks = source landmarks: the global flow is the
    identity (zero-initialised head) and every local branch maps its box onto itself, so
    F is the identity grid and E_I the source itself, whatever the masks."""
    img, lm, _ = synth
    m = _tiny()
    out = m({"source": img, "driving": img, "source_landmarks": lm, "driving_landmarks": lm})
    torch.testing.assert_close(out["deformation"], identity_grid(2, 64, 64), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(out["deformed"], img, atol=1e-4, rtol=0)
    assert out["local_mask"].shape == (2, 3, 1, 16, 16)
    assert out["source_landmarks74"].shape == (2, 74, 2)
    # driving lips moved by t: inside the mouth box F = identity - m t (global identity,
    # local f^ = c_s + (p - c_d) = p - t mixed in with the mask m in (0, 1))
    t = torch.tensor([3.0, -2.0])
    lm2 = lm.clone()
    lm2[:, 48:68] += t
    out = m({"source": img, "driving": img, "source_landmarks": lm,
             "driving_landmarks": lm2})
    shift = 2 * t / 64
    c = out["drv_centres"][0, 2]                                       # mouth box centre
    ij = ((c + 1) * 32 - 0.5).round().long()
    d = out["deformation"][0, ij[1], ij[0]] - identity_grid(1, 64, 64)[0, ij[1], ij[0]]
    ratio = -d / shift
    assert 0.05 < ratio[0].item() < 0.95
    assert ratio[0].item() == pytest.approx(ratio[1].item(), abs=1e-3)


def test_landmark_parsing_and_parsing_loss(synth):
    img, lm, pupils = synth
    m = _tiny()
    l74 = m.landmarks74(img, lm)
    lab = L.landmark_parsing(l74, 64, 64)
    assert lab.shape == (2, 64, 64) and lab.dtype == torch.long
    for b in range(2):
        for e in range(2):
            x, y = pupils[b, e].round().long().tolist()
            assert lab[b, y, x] == L.PARSING_LABELS.index("irises")
    assert lab[0, 0, 0] == 0 and lab[0, 40, 32] == L.PARSING_LABELS.index("face")
    ident = identity_grid(2, 64, 64)
    assert L.parsing_mismatch(ident, l74, l74, 64, 64).max() == 0
    assert L.parsing_loss(ident, l74, l74, 64, 64).item() == pytest.approx(0, abs=1e-6)
    # driving = source moved by 4 px; the matching translation warp explains it
    t = torch.tensor([4.0, 0.0])
    shifted = ident - 2 * t / 64
    assert L.parsing_mismatch(shifted, l74, l74 + t, 64, 64).max() < 0.01
    wrong = L.parsing_mismatch(ident, l74, l74 + t, 64, 64)
    assert wrong.min() > 0.02
    # bilinear surrogate = eq. (7) for whole-pixel shifts, and it has a gradient
    g = shifted.clone().requires_grad_(True)
    lo = L.parsing_loss(g, l74, l74 + t, 64, 64)
    assert lo.item() == pytest.approx(L.parsing_mismatch(shifted, l74, l74 + t, 64, 64)
                                      .mean().item(), abs=2e-3)
    g2 = (ident + 0.01).requires_grad_(True)
    L.parsing_loss(g2, l74, l74 + t, 64, 64).backward()
    assert g2.grad.abs().sum() > 0


def test_ablation_switches_build_the_ablated_models():
    full = _tiny()
    no_local = _tiny(motion={"use_local": False})
    no_adain = _tiny(motion={"adain": False})
    no_am = _tiny(motion={"add_motion": False})
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert len(no_local.motion.local_branches) == 0 and n(no_local) < n(full)
    assert not any(type(x).__name__ == "AdaIN" for x in no_adain.modules())
    assert not any(type(x).__name__ == "AddMotion" for x in no_am.modules())
    x = torch.rand(1, 3, 64, 64)
    lm = torch.rand(1, 74, 2) * 30 + 17
    out = no_local.animate(x, lm, lm)
    assert "local_flow" not in out and out["prediction"].shape == (1, 3, 64, 64)


def test_configs_parameter_counts():
    """paper: 22.1 M parameters (the paper gives none); cpu: 2.7 M (5.2 MiB in fp16)."""
    counts = {c: sum(p.numel() for p in s2d.S2D.from_config(c).parameters())
              for c in ("paper", "cpu", "tiny")}
    assert 20e6 < counts["paper"] < 25e6
    assert counts["cpu"] * 2 <= 16 * 2**20
    assert counts["tiny"] < 0.3e6
    cfg = s2d.S2D.load_config("paper")
    assert cfg["phases"][0]["losses"] == {"perceptual": 1.0, "l1": 1.0, "gan": 1.0,
                                          "parsing": 1.0}
    assert cfg["discriminator"]["gan_loss"] == "lsgan"
    assert cfg["model"]["params"]["motion"]["local_fraction"] == 0.25
    assert cfg["data"]["require_landmarks"] is True


# -------------------------------------------------------------- interface / checkpoints
def test_registry_checkpoint_and_reenact(tmp_path, synth):
    from facegeo.pipeline import Conditioning

    img, lm, _ = synth
    cfg = s2d.S2D.load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    assert isinstance(model, s2d.S2D) and model.requires == {"image", "landmarks68"}
    model.eval()
    ckpt.save_checkpoint(tmp_path / "ck", {"model": model},
                         ckpt.make_model_card(cfg["model"], config=cfg))
    loaded = s2d.load_pretrained(tmp_path / "ck", "cpu")
    src = Conditioning(image=img[:1], landmarks68=lm[:1])
    drv = Conditioning(image=img, landmarks68=lm, reference=Conditioning(image=img[:1],
                                                                        landmarks68=lm[:1]))
    want = model.reenact(src, drv)
    got = loaded.reenact(src, drv)
    assert got.shape == (2, 3, 64, 64)
    torch.testing.assert_close(got, want)
    # crops of another size: images resized, landmarks rescaled with them
    big = F.interpolate(img, size=(128, 128), mode="bilinear", align_corners=False)
    lm_big = (lm + 0.5) * 2 - 0.5
    out = model.reenact(Conditioning(image=big[:1], landmarks68=lm_big[:1]),
                        Conditioning(image=big, landmarks68=lm_big))
    assert out.shape == (2, 3, 128, 128)
    small = F.interpolate(out, size=(64, 64), mode="bilinear", align_corners=False,
                          antialias=True)
    assert (small - want).abs().mean() < 0.05
    # relative: driving reference = the source -> the same as absolute
    rel = model.reenact(src, drv, mode="relative")
    assert rel.shape == (2, 3, 64, 64)
    torch.testing.assert_close(rel[:1], want[:1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sideways"):
        model.reenact(src, drv, mode="sideways")
    with pytest.raises(ValueError, match="landmarks68"):
        model.reenact(src, Conditioning.from_images(img))
    with pytest.raises(ValueError, match="source_landmarks"):
        model({"source": img, "driving": img})
    with pytest.raises(ValueError, match="68 or 74"):
        model({"source": img, "driving": img, "source_landmarks": lm[:, :60],
               "driving_landmarks": lm})


# --------------------------------------------------------------------- real frames
@pytest.fixture(scope="module")
def real_clips(media_dir):
    from facegeo_models.common.testing import tracked_face_clip

    return [tracked_face_clip(media_dir / name, 64, frames=12)
            for name in ("lp_d3.mp4", "lp_d6.mp4")]


def test_trainer_runs_tiny_config(tmp_path, real_clips):
    """apps/train.py's trainer builds s2d from tiny.yaml and trains it with the parsing
    prior and the LSGAN phase."""
    from facegeo_models.common.data import TensorVideoDataset
    from facegeo_models.common.trainer import Trainer

    cfg = s2d.S2D.load_config("tiny")
    cfg["phases"] = [{"name": "recon", "steps": 1, "losses": {"l1": 1, "parsing": 1}},
                     {"name": "gan", "steps": 1, "losses": {"l1": 1, "parsing": 1,
                                                            "gan": 1}}]
    cfg["train"]["progress"] = False
    cfg["train"]["tensorboard"] = False
    ds = TensorVideoDataset([x for x, _ in real_clips], [lm for _, lm in real_clips],
                            image_size=64)
    rec = Trainer(cfg, out_dir=tmp_path, train_dataset=ds, device="cpu", resume=None).fit()
    assert [r["phase"] for r in rec] == ["recon", "gan"]
    for r in rec:
        assert all(np.isfinite(r[k]) for k in ("loss/l1", "loss/parsing"))
    assert "loss/gan" in rec[1] and "loss/disc" in rec[1]
    assert isinstance(s2d.load_pretrained(ckpt.latest_checkpoint(tmp_path), "cpu"), s2d.S2D)


def test_overfits_real_frames(real_clips):
    """CPU overfit on a fixed batch of 4 real (source, driving) pairs at 64x64 (tiny
    config, L1 + parsing prior): L1 must fall below 0.6x its start (measured 0.104 ->
    0.046 in 40 steps; the parsing prior 0.054 -> 0.029)."""
    (xa, la), (xb, lb) = real_clips
    batch = {"source": torch.stack([xa[0], xa[2], xb[0], xb[2]]),
             "driving": torch.stack([xa[11], xa[8], xb[11], xb[8]]),
             "source_landmarks": torch.stack([la[0], la[2], lb[0], lb[2]]),
             "driving_landmarks": torch.stack([la[11], la[8], lb[11], lb[8]])}
    m = _tiny(0)
    with torch.no_grad():     # the pupils do not change: compute the 74 points once
        batch["source_landmarks"] = m.landmarks74(batch["source"], batch["source_landmarks"])
        batch["driving_landmarks"] = m.landmarks74(batch["driving"],
                                                   batch["driving_landmarks"])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3, betas=(0.5, 0.999))
    hist = []
    for _ in range(40):
        out = m(batch)
        l1 = (out["prediction"] - batch["driving"]).abs().mean()
        total = l1 + m.extra_losses(batch, out)["parsing"]
        opt.zero_grad()
        total.backward()
        opt.step()
        hist.append(l1.item())
        assert math.isfinite(total.item())
    first, last = hist[0], float(np.mean(hist[-5:]))
    assert last < 0.6 * first, (first, last)


def test_reenact_app_with_a_tiny_checkpoint(tmp_path, media_dir, capsys):
    """apps/reenact.py --model s2d --checkpoint: a tiny checkpoint animates a real photo
    with a real clip through the pipeline (tracked landmarks + pupils), both modes."""
    from facegeo.video import read_video, video_info
    from facegeo_apps import reenact as reenact_app

    cfg = s2d.S2D.load_config("tiny")
    torch.manual_seed(0)
    net = build_model(cfg["model"]).eval()
    ckpt.save_checkpoint(tmp_path / "ck", {"model": net},
                         ckpt.make_model_card(cfg["model"], config=cfg))
    args = ["--source", str(media_dir / "lp_s12.jpg"), "--driving",
            str(media_dir / "lp_d12.mp4"), "--model", "s2d", "--checkpoint",
            str(tmp_path / "ck"), "--size", "64", "--max-frames", "3", "--quiet"]
    for mode in ("absolute", "relative"):
        out = tmp_path / f"{mode}.mp4"
        rc = reenact_app.main(args + ["--output", str(out), "--mode", mode])
        assert rc == 0, capsys.readouterr().err
        info = video_info(out)
        assert info.frames == 3 and (info.width, info.height) == (64, 64)
        frames, _ = read_video(out)
        assert frames.std() > 1
