"""Tests of facegeo.disentangle: synthetic landmark data, LD-Net networks/losses/training,
evaluation helpers and the public disentangle_landmarks entry point."""

import math

import numpy as np
import pytest
import torch

from facegeo import transforms as T
from facegeo.disentangle import (
    LandmarkSynth,
    LDNet,
    LDNetConfig,
    LDNetTrainer,
    denormalize_landmarks,
    disentangle_landmarks,
    load_inference_weights,
    normalize_landmarks,
    save_inference_weights,
)
from facegeo.disentangle.evaluate import latent_distances, make_lmtest, nme, pca_reduce
from facegeo.disentangle.ldnet import _neg_log_not
from facegeo.morphable import MorphableModel

TINY = {"hidden": 32, "n_hidden": 2, "pose_dim": 8, "id_dim": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small MLP steps are much slower with several threads on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model(assets_dir):
    return MorphableModel.load()


@pytest.fixture(scope="module")
def synth(model):
    return LandmarkSynth(model, n_identities=20, seed=3)


# ----------------------------------------------------------------------------- normalisation
def test_normalize_square_box_and_inverse():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 68, 2, generator=g) * torch.tensor([300.0, 120.0]) + 40
    n, c, h = normalize_landmarks(x)
    # the longer side (x here) spans exactly [-1, 1]; the shorter one is centred inside
    assert torch.allclose(n[..., 0].amin(1), torch.full((5,), -1.0), atol=1e-6)
    assert torch.allclose(n[..., 0].amax(1), torch.full((5,), 1.0), atol=1e-6)
    assert torch.allclose(n[..., 1].amin(1), -n[..., 1].amax(1), atol=1e-6)
    assert (n[..., 1].abs() < 1).all()
    assert torch.allclose(denormalize_landmarks(n, c, h), x, atol=1e-4)
    # invariant to scale + translation
    n2 = normalize_landmarks(3.5 * x - 17)[0]
    assert torch.allclose(n, n2, atol=1e-5)


def test_normalize_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        normalize_landmarks(torch.zeros(68, 2))
    with pytest.raises(ValueError, match="zero-size"):
        normalize_landmarks(torch.ones(1, 68, 2))


# ----------------------------------------------------------------------------- data generator
def test_synth_matches_full_mesh_projection(model, synth):
    """The fast 68-row generator equals: full mesh -> landmarks -> transforms.pinhole_project."""
    g = torch.Generator().manual_seed(1)
    b = synth.sample(6, generator=g)
    a = synth.id_coeffs[b.id_label]
    lm3 = model.landmarks(model.vertices(a, b.exp))
    R = T.euler_to_matrix(b.angles)
    t = torch.zeros(6, 3)
    t[:, 2] = b.distance
    ref = T.pinhole_project(lm3, R, t, 1000.0, (0.0, 0.0))
    ours = synth.project(a, b.exp, b.angles, b.distance)
    assert torch.allclose(1000 * ours, ref, atol=2e-3)
    assert torch.allclose(b.landmarks, normalize_landmarks(ref)[0], atol=1e-4)
    assert torch.equal(b.landmarks, b.clean)  # noise = 0


def test_synth_ranges_and_labels(synth):
    g = torch.Generator().manual_seed(2)
    b = synth.sample(4000, generator=g)
    assert b.exp.min() >= 0 and b.exp.max() <= 1
    # neutral, extreme and mild faces all occur
    assert (b.exp.sum(1) == 0).float().mean() > 0.05
    assert (b.exp.amax(1) >= 0.8).float().mean() > 0.25
    for i, lim in enumerate((60, 30, 30)):
        assert b.angles[:, i].abs().max() <= lim
        assert b.angles[:, i].abs().max() > 0.9 * lim
    assert set(b.id_label.tolist()) == set(range(20))
    assert b.landmarks.abs().max() <= 1 + 1e-6
    k = torch.arange(20)
    assert (synth.other_identity(k, g) != k).all()
    # yaw > 0 moves the nose tip (30) to the image right of the face centre
    lm, _ = synth.render(torch.zeros(2, dtype=torch.long), torch.zeros(2, synth.n_exp),
                         torch.tensor([[40.0, 0, 0], [-40.0, 0, 0]]), torch.tensor([100.0, 100]))
    assert lm[0, 30, 0] > lm[0, :, 0].mean() and lm[1, 30, 0] < lm[1, :, 0].mean()


def test_synth_recombination_ground_truth(synth):
    g = torch.Generator().manual_seed(4)
    a = synth.sample(8, generator=g)
    b = synth.sample(8, synth.other_identity(a.id_label, g), generator=g)
    gt = synth.recombine(a, b)
    assert torch.allclose(synth.recombine(b, b), b.clean, atol=1e-6)
    # the ground truth is B's motion with A's shape: independent evaluation
    ref = synth.project(synth.id_coeffs[a.id_label], b.exp, b.angles, b.distance)
    assert torch.allclose(gt, normalize_landmarks(ref)[0], atol=1e-6)
    assert not torch.allclose(gt, b.landmarks, atol=1e-3)


def test_synth_noise(model):
    s = LandmarkSynth(model, n_identities=5, seed=0, noise=0.01)
    b = s.sample(2000, generator=torch.Generator().manual_seed(0))
    d = b.landmarks - b.clean
    # jaw points (0-16) noisier than inner points; inner point noise ~ 0.01 + jitter
    inner = d[:, 17:].std().item()
    jaw = d[:, :17].std().item()
    assert 0.007 < inner < 0.03 and jaw > 1.5 * inner
    with pytest.raises(ValueError):
        LandmarkSynth(model, n_identities=0)
    with pytest.raises(ValueError):
        LandmarkSynth(model, noise=-1.0)


# ----------------------------------------------------------------------------- networks
def test_paper_sizes_parameter_count():
    net = LDNet(LDNetConfig())
    lin = [m for m in net.E_P if isinstance(m, torch.nn.Linear)]
    assert len(lin) == 11 and all(m.out_features == 512 for m in lin[:-1])
    assert lin[-1].out_features == 64
    assert net.E_I[-1].out_features == 128 and net.G[0].in_features == 192

    def count(i, o):  # 10 hidden layers of 512 -> 11 linear layers
        return i * 512 + 512 + 9 * (512 * 512 + 512) + 512 * o + o

    n = sum(p.numel() for p in net.parameters())
    assert n == count(136, 64) + count(136, 128) + count(192, 136)
    out = net(torch.zeros(3, 68, 2), torch.zeros(3, 68, 2))
    assert out.shape == (3, 68, 2)
    with pytest.raises(ValueError):
        net(torch.zeros(3, 68, 2), torch.zeros(2, 68, 2))


def test_neg_log_not_matches_direct():
    z = torch.randn(7, 11, dtype=torch.float64)
    k = torch.randint(0, 11, (7,))
    p = torch.softmax(z, 1).gather(1, k[:, None]).squeeze(1)
    assert torch.allclose(_neg_log_not(z, k), -torch.log1p(-p))


def test_weights_roundtrip(tmp_path):
    cfg = LDNetConfig(**TINY)
    net = LDNet(cfg)
    p = save_inference_weights(net, tmp_path / "w.safetensors", {"note": "x"})
    back = load_inference_weights(p)
    assert back.config.to_dict() == cfg.to_dict() and back.metadata == {"note": "x"}
    x, y = torch.randn(4, 68, 2), torch.randn(4, 68, 2)
    assert torch.allclose(back(x, y), net(x, y), atol=5e-2, rtol=5e-2)
    sd = net.state_dict()
    for k, v in back.state_dict().items():
        assert torch.equal(v, sd[k].half().float())
    with pytest.raises(FileNotFoundError):
        load_inference_weights(tmp_path / "missing.safetensors")


def test_tiny_training_learns(model):
    """Stage 1 reconstruction drops, Stage 2 learns an identity encoder, E_P stays frozen."""
    torch.manual_seed(0)
    s = LandmarkSynth(model, n_identities=10, seed=0)
    cfg = LDNetConfig(n_identities=10, hidden=64, n_hidden=2, pose_dim=16, id_dim=16,
                      lr1=1e-3, lr2=1e-3)
    tr = LDNetTrainer(cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    s2, _, t = s.triplets(256, generator=g)
    first = tr.stage1_step(s2.landmarks, s2.id_label, t.id_label)["rec"]
    for _ in range(150):
        s2, _, t = s.triplets(32)
        tr.stage1_step(s2.landmarks, s2.id_label, t.id_label)
    s2, _, t = s.triplets(256, generator=g)
    with torch.no_grad():
        pose = tr.net.E_P(s2.landmarks.reshape(256, -1))
        rec = tr.net.generate(pose, tr.N_I(torch.nn.functional.one_hot(s2.id_label, 10).float()))
    after = ((rec - s2.landmarks) ** 2).sum(-1).mean().item()
    assert after < 0.3 * first
    ep = [p.clone() for p in tr.net.E_P.parameters()]
    s1, s2, t = s.triplets(256, generator=g)
    with torch.no_grad():
        before2 = ((tr.net(s1.landmarks, s2.landmarks) - s2.landmarks) ** 2).sum(-1).mean()
    for _ in range(100):
        b1, b2, bt = s.triplets(32)
        out = tr.stage2_step(b1.landmarks, b2.landmarks, bt.landmarks, bt.id_label)
        assert all(math.isfinite(v) for v in out.values())
    with torch.no_grad():
        after2 = ((tr.net(s1.landmarks, s2.landmarks) - s2.landmarks) ** 2).sum(-1).mean()
    assert after2 < before2
    assert all(torch.equal(a, b) for a, b in zip(ep, tr.net.E_P.parameters()))
    assert tr.iter1 == 151 and tr.iter2 == 100


def test_checkpoint_resume(tmp_path, model):
    s = LandmarkSynth(model, n_identities=4, seed=0)
    cfg = LDNetConfig(n_identities=4, **TINY)
    tr = LDNetTrainer(cfg, seed=0)
    tr.train(s, iters1=3, iters2=2, checkpoint=tmp_path / "ck.pt",
             weights_out=tmp_path / "w.safetensors", log_every=1, log=lambda *_: None)
    tr2 = LDNetTrainer(cfg, seed=1)
    tr2.load_checkpoint(tmp_path / "ck.pt")
    assert (tr2.iter1, tr2.iter2) == (3, 2) and len(tr2.history) == 5
    for a, b in zip(tr.net.parameters(), tr2.net.parameters()):
        assert torch.equal(a, b)
    w = load_inference_weights(tmp_path / "w.safetensors")
    assert w.metadata["iter2"] == 2
    # resuming with larger budgets continues Stage 2 only (Stage 1 is over once Stage 2 began)
    tr2.train(s, iters1=10, iters2=4, checkpoint=tmp_path / "ck.pt", log_every=1,
              log=lambda *_: None)
    assert (tr2.iter1, tr2.iter2) == (3, 4)
    with pytest.raises(ValueError, match="identities"):
        LDNetTrainer(LDNetConfig(n_identities=5, **TINY)).train(s, iters1=1, iters2=0)


# ----------------------------------------------------------------------------- evaluation
def test_pca_reduce_matches_numpy_svd():
    x = torch.randn(200, 12, dtype=torch.float64) @ torch.randn(12, 12, dtype=torch.float64)
    z = pca_reduce(x, 3).numpy()
    xc = x.numpy() - x.numpy().mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:3].T
    assert np.allclose(np.abs(z), np.abs(ref), atol=1e-8)  # up to the sign of each axis


class _Oracle(torch.nn.Module):
    """Ideal disentangler for the synthetic data: codes from the generating factors."""

    def __init__(self, s, lmtest, ids, motion):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.table = {v.numpy().tobytes(): (ids[i], motion[i])
                      for i, v in enumerate(lmtest.reshape(len(ids), -1))}

    def _look(self, lm, j):
        return torch.stack([self.table[v.numpy().tobytes()][j]
                            for v in lm.reshape(lm.shape[0], -1)])

    def id_code(self, lm):
        return self._look(lm, 0)

    def pose_code(self, lm):
        return self._look(lm, 1)


def test_latent_distances_oracle(synth):
    lm = make_lmtest(synth, 12)
    assert lm.shape == (20, 12, 68, 2)
    ids = synth.id_coeffs[:, None].expand(20, 12, -1).reshape(240, -1)
    gen = torch.Generator().manual_seed(1)  # make_lmtest's motion, rebuilt
    exp = synth.sample_expressions(12, gen)
    ang = synth.sample_poses(12, gen)
    motion = torch.cat([exp, ang / 30], 1)[None].expand(20, 12, -1).reshape(240, -1)
    res = latent_distances(_Oracle(synth, lm, ids, motion), lm, n_pairs=2000, k=8)
    assert res["same_identity"]["E_I"] < 1e-4 and res["same_pose_exp"]["E_P"] < 1e-4
    assert res["same_pose_exp"]["E_I"] > 1 and res["same_identity"]["E_P"] > 0.3
    assert res["both_different"]["E_I"] > 1 and res["both_different"]["E_P"] > 0.3


def test_nme_definition():
    gt = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [0.0, 1.0]]])
    pred = gt + torch.tensor([0.0, 2.0])
    assert torch.allclose(nme(pred, gt), torch.tensor([100.0 * 2 / 2]))


# ----------------------------------------------------------------------------- public API
def test_disentangle_frame_and_validation(synth):
    net = LDNet(LDNetConfig(**TINY)).eval()
    g = torch.Generator().manual_seed(5)
    a = synth.sample(4, generator=g).landmarks * 80 + torch.tensor([200.0, 150.0])
    b = synth.sample(4, generator=g).landmarks * 30 + 60
    out = disentangle_landmarks(a, b, net=net)
    assert out.shape == (4, 68, 2)
    # the output's square box is the target's square box
    _, c_o, h_o = normalize_landmarks(out)
    _, c_a, h_a = normalize_landmarks(a)
    assert torch.allclose(c_o, c_a, atol=1e-3) and torch.allclose(h_o, h_a, atol=1e-3)
    # equivariant to the target's similarity, invariant to the driver's scale/translation
    out2 = disentangle_landmarks(2 * a + 7, 0.5 * b - 3, net=net)
    assert torch.allclose(out2, 2 * out + 7, atol=1e-3)
    # batch-1 target broadcasts over the driving batch
    o1 = disentangle_landmarks(a[:1], b, net=net)
    assert torch.allclose(o1, disentangle_landmarks(a[:1].expand(4, 68, 2), b, net=net))
    with pytest.raises(ValueError, match="method"):
        disentangle_landmarks(a, b, method="nope", net=net)
    with pytest.raises(ValueError, match="batch"):
        disentangle_landmarks(a[:3], b[:2], net=net)
    with pytest.raises(ValueError, match="shape"):
        disentangle_landmarks(a[:, :60], b[:, :60], net=net)
    with pytest.raises(TypeError):
        disentangle_landmarks(a.numpy(), b, net=net)
    with pytest.raises(ValueError, match="NaN"):
        disentangle_landmarks(a * float("nan"), b, net=net)


def test_3dmm_recombination_beats_driver_baseline(model):
    """Fit + identity swap recovers the exact recombination far better than the driver's
    landmarks (near-orthographic synthetic faces, fixed jawline vertices as in the data)."""
    s = LandmarkSynth(model, n_identities=30, seed=11, distance=(2000.0, 2000.0), max_yaw=30,
                      max_pitch=15, max_roll=15)
    g = torch.Generator().manual_seed(0)
    a = s.sample(6, generator=g)
    b = s.sample(6, s.other_identity(a.id_label, g), generator=g)
    gt = s.recombine(a, b)
    ta, tb = 120 * a.landmarks + 300, 90 * b.landmarks + 200
    out = disentangle_landmarks(ta, tb, "3dmm", model=model, fit_kwargs={"contour": "fixed"})
    # back to the normalised frame of the target box = the ground truth's frame
    r = normalize_landmarks(out)[0]
    err = nme(r, gt)
    base = nme(b.landmarks, gt)
    assert err.mean() < 0.75 * base.mean() and err.max() < 2.0
    # in pixels: the output's square box is the target's
    _, c, h = normalize_landmarks(ta)
    assert torch.allclose(normalize_landmarks(out)[1], c, atol=1e-3)


# ----------------------------------------------------------------------------- shipped weights
def test_shipped_weights_transfer_pose_expression(model):
    """The shipped LD-Net has the paper's sizes, fits the size budget, and moves the target's
    landmarks to the driver's pose/expression (far closer to the exact recombination than the
    target's own landmarks) and beats copying the driver's landmarks. Its E_P space separates
    pose/expression and its E_I space identity (Table 1)."""
    from facegeo.assets import data_path
    from facegeo.disentangle import load_ldnet
    from facegeo.disentangle.evaluate import recombination_nme

    path = data_path("ldnet/ldnet.safetensors")
    assert path.stat().st_size < 15 * 2**20
    net = load_ldnet()
    c = net.config
    assert (c.hidden, c.n_hidden, c.pose_dim, c.id_dim) == (512, 10, 64, 128)
    assert net.metadata["iter1"] > 0 and net.metadata["iter2"] > 0
    s = LandmarkSynth(model, n_identities=10, seed=1234)  # unseen identities
    r = recombination_nme(net, s, n_pairs=200, methods=("ldnet", "target", "driver"))
    assert r["ldnet"]["mean"] < 0.3 * r["target"]["mean"]
    assert r["ldnet"]["mean"] < r["driver"]["mean"]  # adds identity (docs: 2.66 vs 2.97 %)
    tab = latent_distances(net, make_lmtest(s, 20), n_pairs=3000)
    assert tab["same_pose_exp"]["E_P"] < 0.5 * tab["same_identity"]["E_P"]
    assert tab["same_pose_exp"]["E_P"] < 0.5 * tab["both_different"]["E_P"]
    # E_I separates identity (Table 1, E_I column): same identity clearly smallest
    assert tab["same_identity"]["E_I"] < 0.6 * tab["same_pose_exp"]["E_I"]
    assert tab["same_identity"]["E_I"] < 0.6 * tab["both_different"]["E_I"]


def test_identity_usage_detects_ignored_identity_code(synth):
    """A generator that ignores its identity input (copies the pose code, which here is the
    landmarks themselves) gives equal errors for same / other identity codes (all 0), while the
    identity change it would have to make is clearly non-zero."""
    from facegeo.disentangle.evaluate import identity_usage

    class CopyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def pose_code(self, lm):
            return lm.reshape(lm.shape[0], -1)

        def id_code(self, lm):
            return lm.reshape(lm.shape[0], -1)[:, :4] * 0

        def generate(self, p, i):
            return p.reshape(p.shape[0], 68, 2)

    u = identity_usage(CopyNet(), synth, n=64)
    assert u["same_identity"] == u["other_identity"] == u["self"] == 0.0
    assert u["identity_change"] > 1e-4


def test_stage1_identity_embedding_init_option():
    """extra={"ni_init": "normal"}: N_I is an embedding with N(0, 1) entries, zero bias;
    the default keeps nn.Linear's init (|w| <= 1/sqrt(K)); other values are rejected."""
    tr = LDNetTrainer(LDNetConfig(n_identities=200, hidden=32, n_hidden=1), seed=0)
    assert tr.N_I.weight.abs().max() <= 1 / math.sqrt(200)
    tr = LDNetTrainer(LDNetConfig(n_identities=200, hidden=32, n_hidden=1,
                                  extra={"ni_init": "normal"}), seed=0)
    w = tr.N_I.weight
    assert w.shape == (128, 200)
    assert abs(w.std().item() - 1.0) < 0.05 and abs(w.mean().item()) < 0.05
    assert torch.count_nonzero(tr.N_I.bias) == 0
    with pytest.raises(ValueError, match="ni_init"):
        LDNetTrainer(LDNetConfig(n_identities=4, hidden=8, n_hidden=1,
                                 extra={"ni_init": "xavier"}))
