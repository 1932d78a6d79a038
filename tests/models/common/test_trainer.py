"""Trainer: phases, exact resume, checkpoints + model card, DDP gradient equality
(2 CPU processes, gloo), validation / samples / logging, and an overfit test on real
frames; the same for a task with two critics (multi-scale discriminator + a patch
classifier with its own loss), pixel-subsampled phases, and the default task's numbers
frozen from the single-discriminator trainer it replaced."""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from facegeo_models.common import checkpoint as ckpt
from facegeo_models.common.data import TensorVideoDataset
from facegeo_models.common.task import gather_pixels, sample_pixels
from facegeo_models.common.trainer import Trainer, load_config, merge_overrides

from _paths import REPO

CONFIG = REPO / "models" / "common" / "configs" / "tiny_test.yaml"


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
def real_videos(media_dir):
    """Two real face videos as (T, 3, 32, 32) tensors (centre crops)."""
    return [_decode(media_dir / "lp_d10.mp4", 32, step=10, frames=12),
            _decode(media_dir / "lp_d3.mp4", 32, step=10, frames=12)]


# tiny tensors: one intra-op thread is faster than two on a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**over) -> dict:
    cfg = load_config(CONFIG)
    cfg["train"]["progress"] = False
    return merge_overrides(cfg, [f"{k}={v}" for k, v in over.items()])


def _datasets(videos, augment=True):
    aug = {"flip": True, "jitter": {"brightness": .1, "contrast": .1, "saturation": .1,
                                    "hue": .1}} if augment else None
    return (TensorVideoDataset(videos, augment=aug, repeats=4),
            TensorVideoDataset(videos, repeats=1))


def _losses(records):
    return [(r["step"], r["loss/total"], r.get("loss/disc"), r.get("loss/pair_disc"))
            for r in records]


def _two_critics_cfg(**over) -> dict:
    """tiny_test with the ``_test_two_critics`` model: a phase without critics, then one
    training the discriminator (lsgan) and the pair classifier (hinge, own optimizer)."""
    cfg = _cfg(**{"model.name": "_test_two_critics", "train.val_every": 0,
                  "train.sample_every": 0, "train.ckpt_every": 3, **over})
    cfg["pair_classifier"] = {"gan_loss": "hinge", "block_expansion": 8, "num_blocks": 2,
                              "max_features": 16,
                              "optimizer": {"type": "adam", "lr": 1e-3, "betas": [0.5, 0.9]}}
    cfg["phases"] = [{"name": "recon", "steps": 2, "losses": {"l1": 1.0}},
                     {"name": "adv", "steps": 4, "losses": {"l1": 1.0, "gan": 0.1,
                                                           "feature_matching": 1.0,
                                                           "pair_gan": 0.1}}]
    return cfg


def test_phases_checkpoint_card_and_exact_resume(tmp_path, real_videos):
    cfg = _cfg()
    tr, va = _datasets(real_videos)
    full = Trainer(cfg, out_dir=tmp_path / "a", train_dataset=tr, val_dataset=va, device="cpu")
    rec_full = full.fit()
    assert len(rec_full) == 12
    assert [r["phase"] for r in rec_full] == ["recon"] * 4 + ["recon+reg"] * 4 + ["gan"] * 4
    assert "loss/flow_smoothness" in rec_full[5] and "loss/flow_smoothness" not in rec_full[1]
    assert "loss/disc" in rec_full[9] and "loss/gan" in rec_full[9]
    assert rec_full[0]["lr"] == 2e-3 and rec_full[9]["lr"] == 1e-3  # multistep at 8

    # interrupted run: stop after step 6 (last checkpoint at 4), resume in a new Trainer
    b_dir = tmp_path / "b"
    part = Trainer(cfg, out_dir=b_dir, train_dataset=tr, val_dataset=va, device="cpu")
    part.fit(until_step=6)
    del part
    resumed = Trainer(cfg, out_dir=b_dir, train_dataset=tr, val_dataset=va, device="cpu")
    assert resumed.step == 4
    rec_res = resumed.fit()
    assert _losses(rec_res) == _losses(rec_full[4:])  # bit-identical loss curve
    for (k, a), b in zip(full.raw_model.state_dict().items(),
                         resumed.raw_model.state_dict().values()):
        assert torch.equal(a, b), k
    # the log was truncated at the resume point, so every step appears once
    steps = [json.loads(x)["step"] for x in (b_dir / "log.jsonl").read_text().splitlines()
             if "loss/total" in json.loads(x)]
    assert steps == list(range(1, 13))

    # checkpoint folder: safetensors + training state + model card; keep_last=2
    last = ckpt.latest_checkpoint(b_dir)
    assert last is not None and last.name == "step_00000012"
    assert sorted(p.name for p in (b_dir / "checkpoints").iterdir()) == [
        "step_00000008", "step_00000012"]
    names = sorted(p.name for p in last.iterdir())
    assert names == ["discriminator.safetensors", "ema.safetensors", "model.safetensors",
                     "model_card.json", "training_state.pt"]
    card = ckpt.read_model_card(last)
    assert card["model"]["name"] == "_test_tiny_warp" and card["step"] == 12
    assert card["data"]["videos"] == 2 and card["data"]["identities"] == 2
    assert set(card["metrics"]) == {"val/l1", "val/psnr"}
    assert card["config"]["phases"][2]["name"] == "gan"
    model, card2 = ckpt.load_model(last, verify=True)
    for a, b in zip(model.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    assert sorted((b_dir / "samples").glob("*.png"))


def test_validation_metrics_match_direct_computation(tmp_path, real_videos):
    cfg = _cfg(**{"train.ema": "null"})
    tr, va = _datasets(real_videos)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=tr, val_dataset=va, device="cpu")
    m = t.validate()
    batch = next(iter(t._val_batches()))
    with torch.no_grad():
        t.raw_model.eval()
        pred = t.raw_model(batch)["prediction"]
    d = pred - batch["driving"]
    assert m["val/l1"] == pytest.approx(d.abs().mean().item(), rel=1e-5)
    psnr = (10 * torch.log10(1 / (d ** 2).flatten(1).mean(1))).mean().item()
    assert m["val/psnr"] == pytest.approx(psnr, rel=1e-5)
    # the harness' SSIM, and a pluggable metric by import path
    from facegeo.metrics import ssim

    t.config["validation"]["metrics"] = ["ssim", "torch.nn.functional:mse_loss"]
    m2 = t.validate()
    assert m2["val/ssim"] == pytest.approx(ssim(pred, batch["driving"]).mean().item(),
                                           rel=1e-5)
    assert m2["val/torch.nn.functional:mse_loss"] == pytest.approx((d ** 2).mean().item(),
                                                                   rel=1e-5)
    # an unknown loss name in a phase is an error
    bad = _cfg()
    bad["phases"][0]["losses"]["nonexistent"] = 1.0
    t2 = Trainer(bad, out_dir=tmp_path / "bad", train_dataset=tr, device="cpu")
    with pytest.raises(ValueError, match="unknown losses"):
        t2.fit(until_step=1)


def test_wgan_gp_and_hinge_phases_run(tmp_path, real_videos):
    tr, va = _datasets(real_videos)
    for kind in ("wgan-gp", "hinge"):
        cfg = _cfg(**{"discriminator.gan_loss": kind, "train.ckpt_every": 0,
                      "train.val_every": 0, "train.sample_every": 0})
        cfg["phases"] = [{"name": "gan", "steps": 2, "losses": {"l1": 1, "gan": 1}}]
        t = Trainer(cfg, out_dir=tmp_path / kind, train_dataset=tr, device="cpu")
        rec = t.fit()
        assert all(np.isfinite(r["loss/disc"]) for r in rec)
        assert ("loss/gp" in rec[0]) == (kind == "wgan-gp")


# ------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: dict, videos, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    tr, _ = _datasets(videos)
    t = Trainer(cfg, out_dir=Path(out) / "ddp", train_dataset=tr, device="cpu", resume=None)
    t.fit(until_step=1)
    grads, params = _grads_and_params(t)
    # WGAN-GP under DDP: the double backward through one DDP forward must run
    gp_cfg = copy.deepcopy(cfg)
    gp_cfg["model"]["name"] = "_test_tiny_warp"
    gp_cfg["phases"][0]["losses"].pop("pair_gan")
    gp_cfg["discriminator"]["gan_loss"] = "wgan-gp"
    gp = Trainer(gp_cfg, out_dir=Path(out) / "gp", train_dataset=tr, device="cpu",
                 resume=None)
    gp_rec = gp.fit(until_step=1)
    torch.save({"grads": grads, "params": params,
                "gp": torch.tensor([gp_rec[0]["loss/gp"], gp_rec[0]["loss/disc"]])},
               Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _grads_and_params(t: Trainer) -> tuple[dict, dict]:
    """Gradients and weights of every network of the task, ``"<net>.<param>"``."""
    nets = {"model": t.raw_model, **{n: c.network for n, c in t.critics.items()}}
    grads = {f"{k}.{n}": p.grad.detach().clone() for k, m in nets.items()
             for n, p in m.named_parameters()}
    params = {f"{k}.{n}": v.clone() for k, m in nets.items() for n, v in m.state_dict().items()}
    return grads, params


def test_ddp_two_processes_match_single_process(tmp_path, real_videos):
    """One step of the two-critic task (generator with l1 + gan + feature matching +
    pair_gan, then the discriminator and the pair classifier steps) on 2 gloo processes:
    gradients and updated weights of all three networks equal one process on the global
    batch."""
    sgd = "{type: sgd, lr: 0.1}"
    # SGD: the update is lr * grad, so parameters compare as tightly as grads
    # (Adam's g / sqrt(v) amplifies round-off where grads are ~0)
    cfg = _two_critics_cfg(**{"train.ckpt_every": 0, "train.grad_clip": "null",
                              "train.ema": "null", "train.optimizer": sgd,
                              "discriminator.optimizer": sgd})
    cfg["pair_classifier"]["optimizer"] = {"type": "sgd", "lr": 0.05}
    cfg["phases"] = [{"name": "all", "steps": 1, "losses": {
        "l1": 1, "gan": 0.5, "feature_matching": 1, "pair_gan": 0.5}}]
    single = Trainer(copy.deepcopy(cfg), out_dir=tmp_path / "single",
                     train_dataset=_datasets(real_videos)[0], device="cpu", resume=None)
    single.total_steps = 2  # avoid the end-of-training checkpoint in this comparison
    rec = single.fit(until_step=1)
    assert {"loss/pair_gan", "loss/disc", "loss/pair_disc", "grad_norm/d",
            "grad_norm/pair"} <= set(rec[0])
    ref_grads, ref_params = _grads_and_params(single)
    assert {k.split(".")[0] for k in ref_grads} == {"model", "discriminator",
                                                    "pair_classifier"}
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, real_videos, str(tmp_path)), nprocs=2,
             join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert set(got["grads"]) == set(ref_grads)
        for n, g in ref_grads.items():
            torch.testing.assert_close(got["grads"][n], g, rtol=1e-4, atol=1e-6, msg=n)
        for n, p in ref_params.items():
            torch.testing.assert_close(got["params"][n], p, rtol=1e-4, atol=1e-6, msg=n)
        assert torch.isfinite(got["gp"]).all() and got["gp"][0] > 0
    # the checkpoint holds every rank's RNG state (different streams per rank)
    st = ckpt.load_training_state(ckpt.latest_checkpoint(tmp_path / "ddp"))
    assert st["world"] == 2 and len(st["rng_per_rank"]) == 2
    assert not torch.equal(st["rng_per_rank"][0]["torch"], st["rng_per_rank"][1]["torch"])


# --------------------------------------------------------------------------- overfit
@pytest.mark.integration
def test_overfit_fixed_batch_of_real_frames(tmp_path, real_videos):
    """A tiny warping generator overfits 4 real (source, driving) pairs: L1 drops >= 5x
    within 300 steps (seeded: it takes 77 steps; about 3 s on a 2-core CPU)."""
    vids = [v[:2] for v in real_videos] * 2  # 4 videos of 2 frames: fixed pairs
    ds = TensorVideoDataset(vids)
    cfg = _cfg(**{"train.ckpt_every": 0, "train.val_every": 0, "train.sample_every": 0,
                  "train.ema": "null", "train.scheduler.milestones": "[]",
                  "train.optimizer.lr": 3e-3, "model.params.channels": 16,
                  "model.params.num_down_blocks": 1})
    cfg["phases"] = [{"name": "overfit", "steps": 1000, "losses": {"l1": 1.0}}]
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=ds, device="cpu", resume=None)
    first = t.train_step(torch.utils.data.default_collate([ds[(i, 0)] for i in range(4)]))
    it = iter(t._loader(t.step))
    best = first["loss/l1"]
    # a step budget, not a wall-clock one: the outcome must not depend on machine speed
    while t.step < 300 and best > first["loss/l1"] / 5.5:
        best = min(best, t.train_step(next(it))["loss/l1"])
    assert best <= first["loss/l1"] / 5, (first["loss/l1"], best, t.step)


def test_bf16_autocast_path_on_cpu(tmp_path, real_videos):
    """amp: bf16 runs the forward under autocast (conv outputs in bfloat16) and still
    trains (finite losses, parameters stay float32)."""
    cfg = _cfg(**{"train.amp": "bf16", "train.ckpt_every": 0, "train.val_every": 0,
                  "train.sample_every": 0})
    cfg["phases"] = [{"name": "gan", "steps": 2, "losses": {"l1": 1, "gan": 1,
                                                           "feature_matching": 1}}]
    tr, _ = _datasets(real_videos)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=tr, device="cpu", resume=None)
    assert t.amp
    seen = []
    h = t.raw_model.generator.final.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    rec = t.fit()
    h.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert all(np.isfinite(r["loss/total"]) and np.isfinite(r["loss/disc"]) for r in rec)
    assert all(p.dtype == torch.float32 for p in t.raw_model.parameters())


def test_face_perceptual_phase(tmp_path, real_videos, assets_dir):
    """The documented VGG substitute plugs into a phase: the logged perceptual loss equals
    FacePerceptualLoss evaluated on the same prediction."""
    from facegeo_models.common.perceptual import FacePerceptualLoss

    cfg = _cfg(**{"perceptual": "{type: face, identity_weight: 1.0}", "train.ckpt_every": 0,
                  "train.val_every": 0, "train.sample_every": 0, "train.ema": "null"})
    cfg["phases"] = [{"name": "perc", "steps": 1, "losses": {"l1": 1, "perceptual": 1}}]
    tr, _ = _datasets(real_videos)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=tr, device="cpu", resume=None)
    assert isinstance(t.perceptual, FacePerceptualLoss)
    batch = torch.utils.data.default_collate([tr[it] for it in
                                             t._loader(0).batch_sampler.batch_at(0)])
    with torch.no_grad():
        t.raw_model.train()
        expect = t.perceptual(t.raw_model(batch)["prediction"], batch["driving"]).item()
    rec = t.fit()
    assert rec[0]["loss/perceptual"] == pytest.approx(expect, rel=1e-5)
    bad = _cfg()
    bad["phases"][0]["losses"]["perceptual"] = 1.0
    with pytest.raises(ValueError, match="perceptual is 'none'"):
        Trainer(bad, out_dir=tmp_path / "bad", train_dataset=tr, device="cpu")


def test_grad_clipping_and_schedules(tmp_path, real_videos):
    cfg = _cfg(**{"train.grad_clip": 1e-3, "train.ckpt_every": 0, "train.val_every": 0,
                  "train.sample_every": 0, "train.ema": "null"})
    cfg["phases"] = [{"name": "a", "steps": 2, "losses": {"l1": 1}}]
    tr, _ = _datasets(real_videos)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=tr, device="cpu", resume=None)
    t.total_steps = 3  # no final checkpoint
    rec = t.fit(until_step=1)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in
                                                 t.raw_model.parameters()]))
    assert rec[0]["grad_norm/g"] > 1e-2  # logged norm is the one before clipping
    assert norm.item() == pytest.approx(1e-3, rel=1e-3)

    from facegeo_models.common.trainer import build_scheduler

    def lrs(cfg_s, n=10):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        s = build_scheduler(opt, cfg_s, n)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        return out

    assert lrs({"type": "multistep", "milestones": [3, 6], "gamma": 0.5})[2:8] == [
        1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert lrs({"type": "constant", "warmup": 4})[:5] == [0.25, 0.5, 0.75, 1, 1]
    cos = lrs({"type": "cosine"})
    assert cos[0] == 1 and cos[5] == pytest.approx(0.5) and cos[9] == pytest.approx(
        0.5 * (1 + np.cos(np.pi * 0.9)))
    assert lrs({"type": "linear", "min_factor": 0.5})[5] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        lrs({"type": "exponential"})


def test_ema_multisource_and_worker_processes(tmp_path, real_videos):
    """EMA = decay * ema + (1 - decay) * weights after each step; n_src = 2 items train;
    2 DataLoader worker processes give exactly the losses of the in-process loader."""
    cfg = _cfg(**{"train.ema.decay": 0.75, "train.ckpt_every": 0, "train.val_every": 0,
                  "train.sample_every": 0})
    cfg["phases"] = [{"name": "a", "steps": 2, "losses": {"l1": 1}}]
    tr = TensorVideoDataset(real_videos, n_src=2, repeats=4,
                            augment={"flip": True, "jitter": {"hue": 0.1}})
    runs = {}
    for workers in (0, 2):
        cfg["data"]["num_workers"] = workers
        t = Trainer(cfg, out_dir=tmp_path / str(workers), train_dataset=tr, device="cpu",
                    resume=None)
        t.total_steps = 3
        init = copy.deepcopy(t.raw_model.state_dict())
        rec = t.fit(until_step=1)
        for n, p in t.ema.named_parameters():
            expect = 0.75 * init[n] + 0.25 * t.raw_model.state_dict()[n]
            torch.testing.assert_close(p, expect, rtol=1e-6, atol=1e-7)
        rec += t.fit(until_step=2)
        runs[workers] = [r["loss/total"] for r in rec]
    assert runs[0] == runs[2]


# ------------------------------------------------------------------ two critics, tasks
def test_two_critics_exact_resume_and_checkpoint(tmp_path, real_videos):
    """A task with two critics (multi-scale discriminator + pair classifier, own loss and
    optimizer each): stopping after step 5 and resuming from the step-3 checkpoint gives
    the uninterrupted run's losses and weights of every network bit for bit; the
    checkpoint holds every network and optimizer."""
    cfg = _two_critics_cfg()
    tr, va = _datasets(real_videos)
    full = Trainer(cfg, out_dir=tmp_path / "a", train_dataset=tr, val_dataset=va, device="cpu")
    rec_full = full.fit()
    assert set(full.critics) == {"discriminator", "pair_classifier"}
    assert "loss/pair_disc" not in rec_full[1]
    for r in rec_full[2:]:
        assert {"loss/gan", "loss/pair_gan", "loss/disc", "loss/pair_disc", "grad_norm/d",
                "grad_norm/pair"} <= set(r)
    part = Trainer(cfg, out_dir=tmp_path / "b", train_dataset=tr, val_dataset=va,
                   device="cpu")
    part.fit(until_step=5)
    del part
    resumed = Trainer(cfg, out_dir=tmp_path / "b", train_dataset=tr, val_dataset=va,
                      device="cpu")
    assert resumed.step == 3
    rec_res = resumed.fit()
    assert _losses(rec_res) == _losses(rec_full[3:])
    for name in ("model", "discriminator", "pair_classifier"):
        a, b = full.nets[name].state_dict(), resumed.nets[name].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    last = ckpt.latest_checkpoint(tmp_path / "b")
    assert sorted(p.name for p in last.iterdir()) == [
        "discriminator.safetensors", "ema.safetensors", "model.safetensors",
        "model_card.json", "pair_classifier.safetensors", "training_state.pt"]
    st = ckpt.load_training_state(last)
    assert set(st["optimizers"]) == set(st["schedulers"]) == {"model", "discriminator",
                                                              "pair_classifier"}
    assert tuple(st["optimizers"]["pair_classifier"]["param_groups"][0]["betas"]) == (0.5, 0.9)


# Recorded with the single-discriminator Trainer of commit 3258feb (one torch thread):
# (loss/total, loss/disc, grad_norm/g, grad_norm/d) of tiny_test.yaml on _smooth_videos.
_FROZEN_TINY = [
    (0.19999681413173676, None, 0.4446903169155121, None),
    (0.1899522989988327, None, 0.3445139229297638, None),
    (0.17838065326213837, None, 0.21821299195289612, None),
    (0.18426989018917084, None, 0.31943708658218384, None),
    (0.17328126728534698, None, 0.22793281078338623, None),
    (0.1947888731956482, None, 0.31612420082092285, None),
    (0.19383978843688965, None, 0.24064020812511444, None),
    (0.1935061514377594, None, 0.22411319613456726, None),
    (0.7049924731254578, 1.805471658706665, 0.9594077467918396, 7.758500099182129),
    (0.6542130708694458, 1.7298537492752075, 0.8658473491668701, 7.066023826599121),
    (0.6774559617042542, 1.7671259641647339, 1.3232206106185913, 7.394493103027344),
    (0.6716101765632629, 1.738746166229248, 0.7297849059104919, 6.981583595275879),
]


def _smooth_videos(size: int, n: int = 2, t: int = 4, seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n * t, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear",
                                        align_corners=False)
    return list(x.reshape(n, t, 3, size, size))


def test_default_task_reproduces_the_single_discriminator_trainer(tmp_path):
    cfg = _cfg(**{"train.val_every": 0, "train.sample_every": 0, "train.ckpt_every": 0,
                  "train.tensorboard": "false"})
    t = Trainer(cfg, out_dir=tmp_path, resume=None, device="cpu", train_dataset=(
        TensorVideoDataset(_smooth_videos(32), augment={"flip": True}, repeats=2)))
    rec = t.fit()
    got = [(r["loss/total"], r.get("loss/disc"), r["grad_norm/g"], r.get("grad_norm/d"))
           for r in rec]
    assert len(got) == len(_FROZEN_TINY)
    for g, w in zip(got, _FROZEN_TINY):
        assert (g[1] is None) == (w[1] is None)
        assert [x for x in g if x is not None] == pytest.approx(
            [x for x in w if x is not None], rel=1e-6)


def test_pixel_subsampled_phase(tmp_path, real_videos):
    """``pixels: P``: the mse of the phase is the mse at P random pixels per sample (drawn
    from the training RNG, so resumable), which the model also receives as
    ``batch["pixel_index"]``."""
    cfg = _cfg(**{"train.val_every": 0, "train.sample_every": 0, "train.ckpt_every": 0,
                  "train.ema": "null"})
    cfg["phases"] = [{"name": "px", "steps": 1, "losses": {"mse": 1.0}, "pixels": 100}]
    tr, _ = _datasets(real_videos)
    t = Trainer(cfg, out_dir=tmp_path, train_dataset=tr, device="cpu", resume=None)
    t.total_steps = 2
    batch = torch.utils.data.default_collate([tr[it] for it in
                                             t._loader(0).batch_sampler.batch_at(0)])
    seen = []
    t.raw_model.register_forward_pre_hook(lambda m, a: seen.append(a[0].get("pixel_index")))
    with torch.no_grad():
        pred = t.raw_model(batch)["prediction"]
    rec = t.fit(until_step=1)
    idx = seen[-1]
    assert idx.shape == (4, 100) and all(len(set(row.tolist())) == 100 for row in idx)
    assert int(idx.min()) >= 0 and int(idx.max()) < 32 * 32
    want = ((gather_pixels(pred, idx) - gather_pixels(batch["driving"], idx)) ** 2).mean()
    assert rec[0]["loss/mse"] == pytest.approx(want.item(), rel=1e-6)
    torch.manual_seed(3)
    a = sample_pixels(2, 8, 8, 10)
    torch.manual_seed(3)
    assert torch.equal(sample_pixels(2, 8, 8, 10), a)  # a function of the RNG state
    full = ((pred - batch["driving"]) ** 2).mean().item()
    assert rec[0]["loss/mse"] != pytest.approx(full, rel=1e-6)
    img = torch.arange(2 * 3 * 4 * 5.).reshape(2, 3, 4, 5)
    torch.testing.assert_close(gather_pixels(img, torch.tensor([[0, 7], [19, 5]])),
                               torch.stack([img[0, :, [0, 1], [0, 2]],
                                            img[1, :, [3, 1], [4, 0]]]))
