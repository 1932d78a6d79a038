"""The s2d landmark refiner (DSNT + supervision by registration): crop geometry against
marked pixels, the registration loss against analytic flows, DIS flow against a known
shift, save/load, training on a real preprocessed clip, the CLI, and the shipped weights
on a real media clip against per-frame dlib."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facegeo_models.s2d import refiner as R

REPO = Path(__file__).resolve().parents[3]
TINY = R.RefinerConfig(crop_size=32, stem_blocks=1, block_expansion=8, num_blocks=2,
                       max_features=16)


def _marked(points: torch.Tensor, size: int = 256) -> torch.Tensor:
    """(1, 1, 3, size, size) black image with a red 7x7 square at points[36] and a green
    one at points[45] (the outer eye corners)."""
    img = torch.zeros(1, 1, 3, size, size)
    for k, c in ((36, 0), (45, 1)):
        x, y = points[k].round().long()
        img[0, 0, c, y - 3:y + 4, x - 3:x + 4] = 1
    return img


@pytest.mark.parametrize("seed", range(6))
def test_augment_moves_labels_with_the_pixels(seed):
    torch.manual_seed(seed)
    lm = torch.rand(68, 2) * 100 + 78
    crops, clm, m = R.augment(_marked(lm), lm[None, None], 128, np.random.default_rng(seed))
    flipped = bool(m[0, 0, 0] * m[0, 1, 1] - m[0, 0, 1] * m[0, 1, 0] < 0)
    for k, colour in ((36, 0), (45, 1)):
        x, y = clm[0, 0, k].round().long()
        px = crops[0, 0, :, y, x]
        # after a mirror the point named 36 is the old 45 (FLIP_PERMUTATION_68): green
        want = 1 - colour if flipped else colour
        assert int(px.argmax()) == want and float(px.max()) > 0.6, (k, px, flipped)


def test_crop_transforms_plain_rotation_and_flip():
    from facegeo.landmarks.crops import apply_affine, crop_matrix

    boxes = torch.tensor([[120.0, 100.0, 80.0], [60.0, 70.0, 50.0]])
    torch.testing.assert_close(R.crop_transforms(boxes, 64), crop_matrix(boxes, 64))
    c = torch.tensor([[31.5, 31.5]])                 # crop centre stays put
    m = R.crop_transforms(boxes, 64, angles=torch.tensor([0.3, -1.0]),
                          flip=torch.tensor([True, False]))
    for i in range(2):
        centre = apply_affine(crop_matrix(boxes[i:i + 1], 64)[:, :, :],
                                    boxes[i:i + 1, None, :2])
        torch.testing.assert_close(centre, c[None])
        torch.testing.assert_close(apply_affine(m[i:i + 1], boxes[i:i + 1, None, :2]),
                                   c[None])
    # a similarity: determinant +-(64/side)^2, negative where mirrored
    det = torch.linalg.det(m[:, :, :2])
    torch.testing.assert_close(det, torch.tensor([-(64 / 80) ** 2, (64 / 50) ** 2]))


class _RedDot(R.LandmarkRefiner):
    """Answers every point with the centroid of the red channel: refine() must map it back
    to the dot's image position whatever the boxes are."""

    def forward(self, crops):
        from facegeo.coords import pixel_to_normalized

        s = crops.shape[-1]
        w = crops[:, 0]
        ys, xs = torch.meshgrid(torch.arange(s, dtype=w.dtype), torch.arange(s, dtype=w.dtype),
                                indexing="ij")
        tot = w.sum((1, 2))
        p = torch.stack([(w * xs).sum((1, 2)) / tot, (w * ys).sum((1, 2)) / tot], -1)
        pn = pixel_to_normalized(p, (s, s))[:, None].expand(-1, 68, 2)
        return None, pn


def test_refine_maps_crop_answers_back_to_image_pixels():
    torch.manual_seed(0)
    t, h, w = 5, 180, 240
    dots = torch.tensor([[100.0, 90.0], [104.0, 88.0], [110.5, 95.0], [98.0, 80.0],
                         [120.0, 100.0]])
    frames = torch.zeros(t, 3, h, w)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    for i, (x, y) in enumerate(dots):
        frames[i, 0] = torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0 ** 2))
    init = dots[:, None] + torch.randn(t, 68, 2) * 25          # boxes around the dot
    out = _RedDot().refine(frames, init)
    assert out.shape == (t, 68, 2)
    torch.testing.assert_close(out[:, 0], dots, atol=0.35, rtol=0)
    # the same from an iterable of uint8 frames, read in chunks of 2
    u8 = [(f.permute(1, 2, 0) * 255).round().byte().numpy() for f in frames]
    out2 = _RedDot().refine(iter(u8), init, batch_size=2)
    torch.testing.assert_close(out2[:, 0], dots, atol=0.5, rtol=0)


def test_refine_rejects_bad_input():
    m = R.LandmarkRefiner(TINY)
    lm2 = torch.rand(2, 68, 2) * 40 + 10
    with pytest.raises(ValueError, match="frames must be"):
        m.refine(torch.zeros(2, 64, 64), lm2)
    with pytest.raises(ValueError, match="landmarks must be"):
        m.refine(torch.zeros(2, 3, 64, 64), torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="3 frames for 2 landmark rows|more frames"):
        m.refine(torch.zeros(3, 3, 64, 64), lm2)
    with pytest.raises(ValueError, match="1 frames for 2 landmark rows"):
        m.refine([np.zeros((64, 64, 3), np.uint8)], lm2)
    lm = torch.rand(2, 68, 2) * 40 + 10
    lm[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m.refine(torch.zeros(2, 3, 64, 64), lm)
    with pytest.raises(ValueError, match="crops must be"):
        m(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="divisible"):
        R.LandmarkRefiner(R.RefinerConfig(crop_size=100))


def _constant_flow(b, s, d):
    return torch.tensor(d, dtype=torch.float32).view(1, 2, 1, 1).expand(b, 2, s, s).clone()


def test_sbr_loss_analytic():
    s, b, k = 32, 2, 68
    p0 = torch.rand(b, k, 2) * 20 + 6
    fw, bw = _constant_flow(b, s, (3.0, -2.0)), _constant_flow(b, s, (-3.0, 2.0))
    shift = torch.tensor([3.0, -2.0])
    loss, trusted = R.sbr_loss(p0, p0 + shift, fw, bw)
    assert float(loss) < 1e-5 and trusted == 1.0
    e = torch.tensor([0.6, -0.8])                            # |e| = 1 px
    p1 = (p0 + shift + e).requires_grad_()
    loss, _ = R.sbr_loss(p0, p1, fw, bw)
    torch.testing.assert_close(loss, torch.tensor(1.0 / (s / 2)))
    loss.backward()
    assert p1.grad.abs().sum() > 0
    # flows that disagree (forward-backward error 4 px > 1) are not trusted
    loss, trusted = R.sbr_loss(p0, p0 + shift + e, fw, _constant_flow(b, s, (1.0, 2.0)))
    assert trusted == 0.0 and float(loss) == 0.0


def test_flow_pairs_recovers_a_known_shift():
    rng = np.random.default_rng(0)
    import cv2

    tex = cv2.GaussianBlur(rng.random((96, 96)).astype(np.float32), (0, 0), 1.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    a = torch.from_numpy(tex)[None, None].expand(1, 3, 96, 96)
    b = torch.roll(a, shifts=(2, 3), dims=(2, 3))            # content moves +3 x, +2 y
    fw, bw = R.flow_pairs(a, b)
    inner = (slice(None), slice(None), slice(16, 80), slice(16, 80))
    torch.testing.assert_close(fw[inner].mean((0, 2, 3)), torch.tensor([3.0, 2.0]),
                               atol=0.25, rtol=0)
    torch.testing.assert_close(bw[inner].mean((0, 2, 3)), torch.tensor([-3.0, -2.0]),
                               atol=0.25, rtol=0)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = R.LandmarkRefiner(TINY).eval()
    p = R.save_refiner(m, tmp_path / "r.safetensors", {"steps": 3})
    m2 = R.load_refiner(p)
    assert m2.config == TINY
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(m2(x)[1], m(x)[1], atol=2e-2, rtol=0)   # fp16 weights
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a facegeo landmark refiner"):
        R.load_refiner(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        R.load_refiner(tmp_path / "missing.safetensors")


@pytest.fixture(scope="module")
def clip_root(media_dir, tmp_path_factory):
    """A real media clip preprocessed as the corpus is (apps/train.py preprocess)."""
    from facegeo_models.common.data import preprocess_video

    root = tmp_path_factory.mktemp("refiner_root")
    preprocess_video(media_dir / "lp_d10.mp4", root / "train" / "d10", size=96, max_frames=12)
    return root


def test_training_lowers_the_losses_on_a_real_clip(clip_root, tmp_path):
    data = R.RefinerData(clip_root, "train")
    assert len(data) == 12 and data.num_clips == 1
    x, lm = data.sample(3, np.random.default_rng(0), pairs=True)
    assert x.shape == (3, 2, 3, 96, 96) and lm.shape == (3, 2, 68, 2)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    rng = np.random.default_rng(0)  # the same draws: clip 0, then the pair's first frame
    rng.integers(1)
    t = int(rng.integers(11))
    clip = clip_root / "train" / "d10"
    assert torch.equal(lm[0, 0], torch.from_numpy(np.load(clip / "landmarks.npy")[t]).float())
    from facegeo.image_io import load_image

    assert torch.allclose(x[0, 1], load_image(clip / f"{t + 1:06d}.png"), atol=1e-6)
    assert len(R.RefinerData(clip_root, "train", max_frames=5)) == 5
    with pytest.raises(FileNotFoundError, match="no 'test' split"):
        R.RefinerData(clip_root, "test")
    import json

    torch.manual_seed(0)
    R.train_refiner(data, tmp_path / "a", steps=200, batch_size=8, lr=3e-3, config=TINY,
                    log_every=10)
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss/regression"] < 0.6 * log[0]["loss/regression"]
    w = tmp_path / "a" / "refiner.safetensors"
    R.train_refiner(data, tmp_path / "b", stage="sbr", steps=10, batch_size=8, init=w,
                    log_every=5)
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert all(0 <= r["sbr_trusted"] <= 1 and r["loss/sbr"] >= 0 for r in log)
    assert log[-1]["sbr_trusted"] > 0.5          # neighbouring frames: most flow trusted
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert card["stage"] == "sbr" and card["init"] == str(w)


def test_cli(clip_root, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "apps" / "train.py"), "refiner",
                               *map(str, args)], capture_output=True, text=True, cwd=REPO)

    r = run("--data", clip_root, "--out", tmp_path / "x", "--stage", "sbr")
    assert r.returncode == 2 and "--init" in r.stderr
    r = run("--data", tmp_path / "nothing", "--out", tmp_path / "x")
    assert r.returncode == 2 and "no 'train' split" in r.stderr
    assert not (tmp_path / "x" / "refiner.safetensors").exists()
    r = run("--data", clip_root, "--out", tmp_path / "x", "--steps", "2", "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and (tmp_path / "x" / "refiner.safetensors").is_file()


def test_shipped_refiner_on_a_real_clip(media_dir):
    """The shipped weights on a media clip (not in the corpus): close to per-frame dlib
    (an independent detector) and smoother than it."""
    from facegeo import metrics
    from facegeo.landmarks import LandmarkTracker, get_detector, inter_ocular_distance
    from facegeo.video import read_video

    frames, fps = read_video(media_dir / "lp_d12.mp4", max_frames=40)
    det = get_detector("dlib_hog")
    ref = torch.stack([det.detect(f)[0].landmarks for f in frames]).float()
    track = LandmarkTracker("dlib", fps=fps).track(frames).landmarks.float()
    model = R.load_refiner(REPO / "data" / "s2d" / "refiner.safetensors")
    out = model.refine(torch.from_numpy(frames), track)
    iod = float(inter_ocular_distance(ref).mean())
    d = float((out - ref).norm(dim=-1).mean()) / iod
    assert d < 0.06, d                                 # within 6 % of the eye distance
    assert metrics.sms(out) < metrics.sms(ref)


def test_relabel_corpus_writes_refiner_landmarks_and_links_the_rest(clip_root, tmp_path):
    """The relabelled copy loads as a dataset, its landmarks are the refiner's on the same
    frames, everything else is the original's."""
    from facegeo_models.common.data import VideoFolderDataset

    weights = Path(__file__).resolve().parents[3] / "data" / "s2d" / "refiner.safetensors"
    dst = R.relabel_corpus(clip_root, tmp_path / "relabelled", weights)
    c0, c1 = clip_root / "train" / "d10", dst / "train" / "d10"
    lm0 = torch.from_numpy(np.load(c0 / "landmarks.npy")).float()
    from facegeo.image_io import load_image

    want = R.load_refiner(weights).refine([load_image(c0 / f"{t:06d}.png")
                                           for t in range(len(lm0))], lm0)
    assert torch.allclose(torch.from_numpy(np.load(c1 / "landmarks.npy")), want, atol=1e-4)
    assert (c1 / "000003.png").is_symlink() and (c1 / "000003.png").resolve() == \
        (c0 / "000003.png").resolve()
    assert "refiner" in json.loads((c1 / "conditioning.json").read_text())["items"][
        "landmarks"]["source"]
    ds = VideoFolderDataset(dst, "train", conditioning=["landmarks"])
    assert ds.num_frames(0) == len(lm0)
    assert R.relabel_corpus(clip_root, dst, weights) == dst  # resumable: nothing redone
