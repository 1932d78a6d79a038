"""Video pair datasets: augmentation, determinism, identity split, disk layouts, worker
processes, preprocessing of a real video."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facegeo_models.common import data as D
from facegeo_models.common.sampling import StepBatchSampler

# tiny tensors: one intra-op thread is faster than two on a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def test_color_jitter_known_cases():
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(D.color_jitter(x, 1, 1, 1, 0), x)
    torch.testing.assert_close(D.color_jitter(x, 1, 1, 1, 1.0), x, atol=1e-5, rtol=0)
    g = D.color_jitter(x, 1, 1, 0.0, 0)  # saturation 0 -> gray
    torch.testing.assert_close(g[:, 0], g[:, 1])
    torch.testing.assert_close(D.color_jitter(x * 0.5, 1.5, 1, 1, 0), x * 0.75)
    # hue rotation keeps the luma (Y of YIQ) where nothing clips
    y = torch.full((1, 3, 1, 1), 0.5) + 0.1 * torch.randn(1, 3, 1, 1)
    luma = D._gray(y)
    torch.testing.assert_close(D._gray(D.color_jitter(y, hue=0.2)), luma, atol=1e-5, rtol=0)


def test_hflip_mirrors_landmarks():
    w = 20
    img = torch.zeros(1, 3, 10, w)
    lm = torch.rand(1, 68, 2) * torch.tensor([w - 1, 9])
    lm[0, 36] = torch.tensor([3.0, 4.0])  # right eye outer corner
    img[0, :, 4, 3] = 1
    fimg, flm = D.hflip_sample(img, lm)
    # the old point 36 is now point 45 (left eye outer corner), at x = W - 1 - 3
    torch.testing.assert_close(flm[0, 45], torch.tensor([w - 1 - 3.0, 4.0]))
    assert fimg[0, 0, 4, w - 1 - 3] == 1
    img2, lm2 = D.hflip_sample(fimg, flm)
    assert torch.equal(img2, img)
    torch.testing.assert_close(lm2, lm)


def _toy_videos(n=3, t=7, s=16):
    g = torch.Generator().manual_seed(0)
    vids = [torch.rand(t, 3, s, s, generator=g) for _ in range(n)]
    lms = [torch.rand(t, 68, 2, generator=g) * (s - 1) for _ in range(n)]
    return vids, lms


def test_pair_sampling_deterministic_and_distinct():
    vids, lms = _toy_videos()
    ds = D.TensorVideoDataset(vids, lms, n_src=2, augment={"flip": True, "jitter": {
        "brightness": .1, "hue": .1}}, repeats=2)
    assert len(ds) == 6
    a, b = ds[(4, 123)], ds[(4, 123)]
    for k in a:
        assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k
    assert a["source"].shape == (2, 3, 16, 16) and a["driving"].shape == (3, 16, 16)
    assert a["source_landmarks"].shape == (2, 68, 2)
    assert len(set(a["frame_index"].tolist())) == 3  # distinct frames
    assert a["video_index"] == 1
    # without augmentation the items are exactly the stored frames / landmarks
    plain = D.TensorVideoDataset(vids, lms, n_src=1)
    it = plain[(2, 7)]
    fi = it["frame_index"]
    assert torch.equal(it["source"], vids[2][fi[0]]) and torch.equal(it["driving"],
                                                                      vids[2][fi[1]])
    torch.testing.assert_close(it["driving_landmarks"], lms[2][fi[1]])
    seen = {tuple(plain[(0, s)]["frame_index"].tolist()) for s in range(20)}
    assert len(seen) > 5
    gap = D.TensorVideoDataset([torch.rand(50, 3, 4, 4)], max_gap=3)
    for s in range(20):
        f = gap[(0, s)]["frame_index"]
        assert f.max() - f.min() <= 3


def test_resize_scales_landmarks():
    vids, lms = _toy_videos(1, 3, 16)
    ds = D.TensorVideoDataset(vids, lms, image_size=32)
    it = ds[(0, 0)]
    assert it["driving"].shape == (3, 32, 32)
    fi = it["frame_index"]
    # pixel centres: x32 = (x16 + 0.5) * 2 - 0.5
    torch.testing.assert_close(it["driving_landmarks"], (lms[0][fi[1]] + 0.5) * 2 - 0.5)


def test_split_by_identity():
    names = [f"id{i % 5:05d}#vid{i}" for i in range(20)]
    train, test = D.split_by_identity(names, 0.2, seed=3)
    assert set(train) | set(test) == set(names) and not set(train) & set(test)
    ids_tr = {D.identity_of(n) for n in train}
    ids_te = {D.identity_of(n) for n in test}
    assert ids_tr and ids_te and not ids_tr & ids_te
    assert D.split_by_identity(names, 0.2, seed=3) == (train, test)
    mapping = {"a": "p", "b": "p", "c": "q"}
    tr, te = D.split_by_identity(["a", "b", "c"], 0.3, mapping)
    assert {mapping[n] for n in tr}.isdisjoint({mapping[n] for n in te})


@pytest.fixture(scope="module")
def disk_root(tmp_path_factory, media_dir):
    """root/train/<frames folder> (PNG + landmarks.npy) and root/train|test/<video>.mp4
    symlinks to the real media."""
    import cv2

    root = tmp_path_factory.mktemp("vox")
    (root / "train" / "id1#a").mkdir(parents=True)
    (root / "test").mkdir()
    g = np.random.default_rng(0)
    for i in range(5):
        img = (g.random((24, 24, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(root / "train" / "id1#a" / f"{i:06d}.png"), img)
    np.save(root / "train" / "id1#a" / "landmarks.npy",
            (g.random((5, 68, 2)) * 23).astype(np.float32))
    (root / "train" / "id2#b.mp4").symlink_to(media_dir / "lp_d12.mp4")
    (root / "test" / "id3#c.mp4").symlink_to(media_dir / "lp_d11.mp4")
    return root


def test_video_folder_dataset_layouts(disk_root):
    tr = D.VideoFolderDataset(disk_root, "train", image_size=24)
    te = D.VideoFolderDataset(disk_root, "test", image_size=24)
    assert tr.num_videos() == 2 and te.num_videos() == 1
    assert [tr.num_frames(0), tr.num_frames(1)] == [5, 183]
    s = tr.summary()
    assert s["identities"] == 2 and s["frames"] == 188
    a = tr[(0, 1)]
    # one video has no landmark cache -> no landmarks at all (batches must agree)
    assert a["driving"].shape == (3, 24, 24) and "driving_landmarks" not in a
    # folder frames are read back exactly (PNG, BGR -> RGB)
    import cv2

    fi = int(a["frame_index"][1])
    ref = cv2.imread(str(disk_root / "train" / "id1#a" / f"{fi:06d}.png"))[:, :, ::-1]
    torch.testing.assert_close(a["driving"], torch.from_numpy(ref.copy()).permute(2, 0, 1)
                               .float() / 255)
    b = tr[(1, 5)]
    assert b["driving"].shape == (3, 24, 24) and "driving_landmarks" not in b
    with pytest.raises(FileNotFoundError, match="landmarks"):
        D.VideoFolderDataset(disk_root, "train", require_landmarks=True)
    with pytest.raises(FileNotFoundError):
        D.VideoFolderDataset(disk_root / "nope")
    ds = D.build_dataset({"root": str(disk_root), "image_size": 24,
                          "augment": {"flip": True}}, "test")
    assert ds.augment in ({}, None)


def test_flat_folder_split_by_identity(tmp_path, media_dir):
    for n in ("lp_d3", "lp_d6", "lp_d10", "lp_d12"):
        (tmp_path / f"{n}.mp4").symlink_to(media_dir / f"{n}.mp4")
    (tmp_path / "identities.json").write_text(json.dumps(
        {"lp_d3.mp4": "x", "lp_d6.mp4": "x", "lp_d10.mp4": "y", "lp_d12.mp4": "z"}))
    tr = D.VideoFolderDataset(tmp_path, "train", test_fraction=0.25)
    te = D.VideoFolderDataset(tmp_path, "test", test_fraction=0.25)
    assert tr.num_videos() + te.num_videos() == 4
    assert {tr.identity(i) for i in range(tr.num_videos())}.isdisjoint(
        {te.identity(i) for i in range(te.num_videos())})


def test_dataloader_workers_reproduce_batches(disk_root):
    ds = D.VideoFolderDataset(disk_root, "train", image_size=24, repeats=4,
                              augment={"flip": True, "jitter": {"brightness": 0.1}})

    def batches(workers):
        sampler = StepBatchSampler(len(ds), 4, seed=5)
        kw = {"num_workers": workers}
        if workers:
            kw["multiprocessing_context"] = "fork"
        dl = torch.utils.data.DataLoader(ds, batch_sampler=sampler, **kw)
        it = iter(dl)
        out = [next(it) for _ in range(3)]
        del it
        return out

    b0, b2 = batches(0), batches(2)
    for x, y in zip(b0, b2):
        assert torch.equal(x["driving"], y["driving"])
        assert torch.equal(x["frame_index"], y["frame_index"])


def test_step_sampler_shards_and_resumes():
    s = StepBatchSampler(10, 4, seed=1)
    full = [s.batch_at(i) for i in range(6)]
    r0 = StepBatchSampler(10, 4, seed=1, rank=0, world=2)
    r1 = StepBatchSampler(10, 4, seed=1, rank=1, world=2)
    for i in range(6):
        assert r0.batch_at(i) + r1.batch_at(i) == full[i]
    it = iter(StepBatchSampler(10, 4, seed=1, start_step=3))
    assert next(it) == full[3]
    # every item appears once per epoch
    flat = [i for b in full[:5] for i, _ in b]  # 20 items = 2 epochs
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    with pytest.raises(ValueError):
        StepBatchSampler(10, 3, world=2)


@pytest.mark.integration
def test_preprocess_real_video(tmp_path, media_dir):
    """Tracking + FOMM crop + landmark cache on 4 frames of a real video; the cached
    landmarks agree with a fresh detection on the written crop."""
    from facegeo.landmarks.backends import detect_landmarks

    meta = D.preprocess_video(media_dir / "lp_d10.mp4", tmp_path / "train" / "d10",
                              size=128, max_frames=4)
    assert meta["frames"] == 4
    files = sorted((tmp_path / "train" / "d10").glob("*.png"))
    assert len(files) == 4
    lm = np.load(tmp_path / "train" / "d10" / "landmarks.npy")
    assert lm.shape == (4, 68, 2) and lm.dtype == np.float32
    assert (lm > 0).all() and (lm < 127).all()
    ds = D.VideoFolderDataset(tmp_path, "train", require_landmarks=True)
    item = ds[(0, 0)]
    det = detect_landmarks(item["driving"], backend="dlib")
    err = (det.reshape(68, 2) - item["driving_landmarks"]).norm(dim=-1).mean()
    assert err < 4.0, float(err)  # pixels in a 128 crop


@pytest.mark.integration
def test_preprocess_with_3dmm_fit(tmp_path, media_dir, assets_dir):
    """fit_3dmm caches a video fit whose reprojected landmarks match the cached ones."""
    D.preprocess_video(media_dir / "lp_s18.mp4", tmp_path / "train" / "s18", size=128,
                       max_frames=2, fit_3dmm="ict_facekit")
    ds = D.VideoFolderDataset(tmp_path, "train", with_fits=True)
    item = ds[(0, 0)]
    assert item["driving_angles"].shape == (3,) and item["id_coeffs"].dim() == 1
    z = np.load(tmp_path / "train" / "s18" / "fits.npz")
    assert z["exp_coeffs"].shape[0] == 2 and (z["rmse"] < 4.0).all()  # px in a 128 crop
    assert abs(z["angles"][:, 0].mean()) < 45
    with pytest.raises(ValueError, match="flip"):
        D.VideoFolderDataset(tmp_path, "train", with_fits=True, augment={"flip": True})
    with pytest.raises(FileNotFoundError, match="fits"):
        D.VideoFolderDataset(_no_fit_root(tmp_path, media_dir), "train", with_fits=True)


def _no_fit_root(tmp_path, media_dir):
    root = tmp_path / "nofit"
    (root / "train").mkdir(parents=True)
    (root / "train" / "v.mp4").symlink_to(media_dir / "lp_d12.mp4")
    return root


def test_identity_sampling():
    vids = [torch.full((3, 3, 4, 4), float(i)) for i in range(3)]
    ds = D.TensorVideoDataset(vids, identities=["a", "a", "b"], id_sampling=True, repeats=3)
    assert len(ds) == 6 and ds.identity_groups() == [[0, 1], [2]]
    from_a = {ds[(0, s)]["video_index"] for s in range(30)}
    assert from_a == {0, 1}
    assert {ds[(1, s)]["video_index"] for s in range(10)} == {2}
    assert {ds[(5, s)]["video_index"] for s in range(10)} == {2}  # 5 % 2 -> identity b
