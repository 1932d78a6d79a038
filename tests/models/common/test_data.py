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
    det = detect_landmarks(item["driving"], detector="dlib")
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


# --------------------------------------------------------- preprocessed conditioning format
def _fake_folder(folder, t=4, s=16, version=1, items=("landmarks", "boxes", "fits"),
                 width=100, record_extra=None):
    """A preprocessed-looking video folder: t PNG frames of side s and the named items;
    ``version`` None writes no conditioning.json (an old folder)."""
    import cv2

    folder.mkdir(parents=True)
    g = np.random.default_rng(1)
    for i in range(t):
        cv2.imwrite(str(folder / f"{i:06d}.png"), (g.random((s, s, 3)) * 255).astype(np.uint8))
    rec_items = {}
    if "landmarks" in items:
        np.save(folder / "landmarks.npy", (g.random((t, 68, 2)) * (s - 1)).astype(np.float32))
        rec_items["landmarks"] = {"file": "landmarks.npy", "shape": [t, 68, 2],
                                  "frame": "crop_pixels"}
    if "boxes" in items:
        b = np.stack([40 + np.arange(t), 50 + np.arange(t), 30 + np.zeros(t)], 1)
        np.save(folder / "boxes.npy", b.astype(np.float32))
        rec_items["boxes"] = {"file": "boxes.npy", "shape": [t, 3], "frame": "source_pixels"}
    if "fits" in items:
        np.savez(folder / "fits.npz", angles=g.random((t, 3), np.float32),
                 rotation=np.tile(np.eye(3, dtype=np.float32), (t, 1, 1)),
                 translation=(g.random((t, 2)) * s).astype(np.float32),
                 scale=(1 + g.random(t)).astype(np.float32),
                 id_coeffs=g.random(5, np.float32), exp_coeffs=g.random((t, 7), np.float32),
                 rmse=np.ones(t, np.float32))
        rec_items["fits"] = {"file": "fits.npz", "frame": "crop_pixels",
                             "morphable_model": {"name": "fake", "n_id": 5, "n_exp": 7}}
    if version is not None:
        rec = {"format": D.CONDITIONING_FORMAT, "version": version, "frames": t,
               "image_size": s, "source": {"width": width, "height": 80}, "items": rec_items}
        rec.update(record_extra or {})
        (folder / "conditioning.json").write_text(json.dumps(rec))
    return folder


def test_conditioning_items_shapes_resize_and_flip(tmp_path):
    _fake_folder(tmp_path / "train" / "v", t=4, s=16)
    ds = D.VideoFolderDataset(tmp_path, "train", conditioning=["landmarks", "boxes", "fits"])
    it = ds[(0, 3)]
    fi = it["frame_index"].tolist()
    boxes = np.load(tmp_path / "train" / "v" / "boxes.npy")
    z = np.load(tmp_path / "train" / "v" / "fits.npz")
    assert it["driving_box"].shape == (3,) and it["source_box"].shape == (3,)
    torch.testing.assert_close(it["driving_box"], torch.from_numpy(boxes[fi[1]]))
    for k, shape in (("angles", (3,)), ("rotation", (3, 3)), ("translation", (2,)),
                     ("scale", ()), ("exp_coeffs", (7,))):
        assert it[f"source_{k}"].shape == shape and it[f"driving_{k}"].shape == shape, k
        torch.testing.assert_close(it[f"driving_{k}"], torch.as_tensor(z[k][fi[1]]))
    assert it["id_coeffs"].shape == (5,) and it["source_landmarks"].shape == (68, 2)
    assert ds.summary()["conditioning"] == ["landmarks", "boxes", "fits"]
    assert ds.summary()["conditioning_versions"] == [1]
    # n_src = 2: (n_src, ...) source entries; a collated batch stacks them
    ds2 = D.VideoFolderDataset(tmp_path, "train", n_src=2, conditioning=("boxes", "fits"))
    it2 = ds2[(0, 1)]
    assert it2["source_box"].shape == (2, 3) and it2["source_exp_coeffs"].shape == (2, 7)
    batch = torch.utils.data.default_collate([ds2[(0, s)] for s in range(3)])
    assert batch["driving_rotation"].shape == (3, 3, 3) and batch["id_coeffs"].shape == (3, 5)
    # resizing the crops 16 -> 32 moves the weak-perspective fit with the pixels
    big = D.VideoFolderDataset(tmp_path, "train", image_size=32, conditioning=["fits"])[(0, 3)]
    torch.testing.assert_close(big["driving_scale"], it["driving_scale"] * 2)
    torch.testing.assert_close(big["driving_translation"],
                               (it["driving_translation"] + 0.5) * 2 - 0.5)
    torch.testing.assert_close(big["driving_landmarks"], (it["driving_landmarks"] + 0.5) * 2 - 0.5)
    # flip: the landmarks mirror in the crop, the boxes in the source video (width 100)
    flip = D.VideoFolderDataset(tmp_path, "train", conditioning=["boxes"],
                                augment={"flip": True})
    plain = D.VideoFolderDataset(tmp_path, "train", conditioning=["boxes"])
    flipped = 0
    for s in range(12):
        a, b = flip[(0, s)], plain[(0, s)]
        if torch.equal(a["driving"], b["driving"].flip(-1)):
            flipped += 1
            torch.testing.assert_close(a["driving_box"][0], 99 - b["driving_box"][0])
            torch.testing.assert_close(a["driving_box"][1:], b["driving_box"][1:])
        else:
            assert torch.equal(a["driving_box"], b["driving_box"])
    assert 0 < flipped < 12
    with pytest.raises(ValueError, match="flip"):
        D.VideoFolderDataset(tmp_path, "train", conditioning=["fits"], augment={"flip": True})
    ds3 = D.build_dataset({"root": str(tmp_path), "conditioning": ["boxes"]}, "train")
    assert ds3.conditioning == ("boxes",) and "driving_box" in ds3[(0, 0)]


def test_conditioning_version_errors(tmp_path):
    cases = [({"version": 99}, "newer than this facegeo reads"),
             ({"version": 0}, "unknown conditioning version 0"),
             ({"version": "1"}, "unknown conditioning version '1'"),
             ({"version": True}, "unknown conditioning version"),
             ({"format": "something-else"}, "unknown conditioning format 'something-else'"),
             ({"items": []}, "items")]
    for i, (extra, match) in enumerate(cases):
        root = tmp_path / f"r{i}"
        _fake_folder(root / "train" / "v", record_extra=extra)
        with pytest.raises(ValueError, match=match):
            D.read_conditioning(root / "train" / "v")
        with pytest.raises(ValueError, match=match):  # the dataset checks at construction
            D.VideoFolderDataset(root, "train")
    root = tmp_path / "bad"
    _fake_folder(root / "train" / "v")
    (root / "train" / "v" / "conditioning.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        D.VideoFolderDataset(root, "train")
    rec = D.read_conditioning(_fake_folder(tmp_path / "ok"))
    assert rec["version"] == D.CONDITIONING_VERSION == 1


def test_conditioning_missing_item_errors(tmp_path):
    _fake_folder(tmp_path / "train" / "v", items=("landmarks",))
    ds = D.VideoFolderDataset(tmp_path, "train", conditioning=["landmarks"])
    assert "driving_landmarks" in ds[(0, 0)] and "driving_box" not in ds[(0, 0)]
    with pytest.raises(FileNotFoundError, match=r"'boxes' requested: no boxes for 1 video"):
        D.VideoFolderDataset(tmp_path, "train", conditioning=["boxes"])
    with pytest.raises(FileNotFoundError, match="fits.npz"):
        D.VideoFolderDataset(tmp_path, "train", with_fits=True)
    with pytest.raises(ValueError, match="unknown conditioning item"):
        D.VideoFolderDataset(tmp_path, "train", conditioning=["depth"])
    # an item the record lists but whose file is gone is missing too
    root = tmp_path / "gone"
    _fake_folder(root / "train" / "v")
    (root / "train" / "v" / "boxes.npy").unlink()
    with pytest.raises(FileNotFoundError, match="boxes"):
        D.VideoFolderDataset(root, "train", conditioning=["boxes"])
    # a file the record does not list is not used (e.g. left over by another tool)
    root = tmp_path / "unlisted"
    _fake_folder(root / "train" / "v", items=("landmarks",))
    _fake_folder(tmp_path / "tmp_fits", items=("fits",), version=None)
    (tmp_path / "tmp_fits" / "fits.npz").rename(root / "train" / "v" / "fits.npz")
    with pytest.raises(FileNotFoundError, match="fits"):
        D.VideoFolderDataset(root, "train", with_fits=True)
    # videos fit with different morphable models do not batch
    root = tmp_path / "mixed"
    _fake_folder(root / "train" / "a")
    _fake_folder(root / "train" / "b")
    rec = json.loads((root / "train" / "b" / "conditioning.json").read_text())
    rec["items"]["fits"]["morphable_model"]["name"] = "other"
    (root / "train" / "b" / "conditioning.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="different morphable models"):
        D.VideoFolderDataset(root, "train", with_fits=True)


def test_version0_folder_reads_landmarks_only(tmp_path):
    """A folder written before the format (no conditioning.json) is version 0: landmarks
    (and a legacy fits.npz) are read, boxes are not available."""
    folder = _fake_folder(tmp_path / "train" / "old", items=("landmarks", "boxes"),
                          version=None)
    rec = D.read_conditioning(folder)
    assert rec["version"] == 0 and set(rec["items"]) == {"landmarks"}
    ds = D.VideoFolderDataset(tmp_path, "train")
    it = ds[(0, 2)]
    fi = it["frame_index"].tolist()
    lm = np.load(folder / "landmarks.npy")
    torch.testing.assert_close(it["driving_landmarks"], torch.from_numpy(lm[fi[1]]))
    assert "driving_box" not in it and ds.summary()["conditioning_versions"] == [0]
    D.VideoFolderDataset(tmp_path, "train", require_landmarks=True)
    with pytest.raises(FileNotFoundError, match="conditioning version 0"):
        D.VideoFolderDataset(tmp_path, "train", conditioning=["boxes"])
    legacy = _fake_folder(tmp_path / "legacy" / "train" / "v", items=("landmarks", "fits"),
                          version=None)
    assert set(D.read_conditioning(legacy)["items"]) == {"landmarks", "fits"}
    item = D.VideoFolderDataset(tmp_path / "legacy", "train", with_fits=True)[(0, 0)]
    assert item["driving_exp_coeffs"].shape == (7,)


@pytest.mark.integration
def test_preprocess_conditioning_round_trip(tmp_path, media_dir, assets_dir):
    """apps/train.py preprocess on 6 frames of a real clip with a 3DMM fit -> a version-1
    folder -> dataset items: the record lists every file with its shape, the boxes crop
    the source video to the stored frames, the fit reprojects onto the landmarks (also
    after resizing the crops)."""
    from facegeo.landmarks.crops import crop_images
    from facegeo.morphable import MorphableModel
    from facegeo.transforms import weak_perspective_project
    from facegeo.video import read_video
    from facegeo_apps.train import main as train_main

    root = tmp_path / "faces"
    assert train_main(["preprocess", str(media_dir / "lp_d9.mp4"), "--out", str(root),
                       "--split", "train", "--size", "64", "--max-frames", "6",
                       "--fit-3dmm", "ict_facekit"]) == 0
    folder = root / "train" / "lp_d9"
    rec = D.read_conditioning(folder)
    assert rec["format"] == "facegeo-conditioning" and rec["version"] == 1
    assert rec["frames"] == 6 and rec["image_size"] == 64
    assert (rec["source"]["width"], rec["source"]["height"]) == (512, 480)
    assert set(rec["items"]) == {"frames", "landmarks", "boxes", "fits"}
    assert rec["items"]["landmarks"]["shape"] == [6, 68, 2]
    assert rec["items"]["boxes"]["shape"] == [6, 3]
    assert rec["items"]["boxes"]["frame"] == "source_pixels"
    fits = rec["items"]["fits"]
    assert fits["morphable_model"]["name"] == "ict_facekit"
    assert fits["arrays"]["exp_coeffs"]["shape"] == [6, fits["morphable_model"]["n_exp"]]
    assert fits["arrays"]["id_coeffs"]["shape"] == [fits["morphable_model"]["n_id"]]
    assert len(list(folder.glob("*.png"))) == 6
    lm = np.load(folder / "landmarks.npy")
    boxes = np.load(folder / "boxes.npy")
    assert lm.shape == (6, 68, 2) and boxes.shape == (6, 3) and boxes.dtype == np.float32
    # the boxes are in source-video pixels: cropping the source frame reproduces the PNG
    src, _ = read_video(media_dir / "lp_d9.mp4", max_frames=6)
    x = torch.from_numpy(src[[0, 5]]).permute(0, 3, 1, 2).float() / 255
    crops = crop_images(x, torch.from_numpy(boxes[[0, 5]]), 64)
    ds = D.VideoFolderDataset(root, "train", conditioning=["landmarks", "boxes", "fits"])
    for j, t in enumerate((0, 5)):
        stored = ds.load_frames(0, [t])[0]
        assert (crops[j].clamp(0, 1) - stored).abs().max() <= 1.0 / 255 + 1e-4
    # the fit, as the dataset yields it, reprojects onto the cached landmarks
    mm = MorphableModel.load("ict_facekit")

    def project(item):
        verts = mm.vertices(item["id_coeffs"][None], item["driving_exp_coeffs"][None])
        return weak_perspective_project(mm.landmarks(verts), item["driving_rotation"][None],
                                        item["driving_translation"][None],
                                        item["driving_scale"][None])[0]

    it = ds[(0, 4)]
    fi = it["frame_index"].tolist()
    torch.testing.assert_close(it["driving_landmarks"], torch.from_numpy(lm[fi[1]]))
    torch.testing.assert_close(it["driving_box"], torch.from_numpy(boxes[fi[1]]))
    inner = slice(17, 68)  # the jawline points slide along the silhouette in the fit
    err = (project(it)[inner] - it["driving_landmarks"][inner]).norm(dim=-1).mean()
    assert err < 1.0, float(err)  # pixels in a 64 crop (measured 0.21)
    half = D.VideoFolderDataset(root, "train", image_size=32, conditioning=["fits"])[(0, 4)]
    torch.testing.assert_close(project(half), (project(it) + 0.5) * 0.5 - 0.5,
                               atol=1e-3, rtol=0)
    err32 = (project(half)[inner] - half["driving_landmarks"][inner]).norm(dim=-1).mean()
    assert err32 < 0.5, float(err32)
    # re-running without a fit rewrites the record and drops the old fit
    assert train_main(["preprocess", str(media_dir / "lp_d9.mp4"), "--out", str(root),
                       "--split", "train", "--size", "64", "--max-frames", "3"]) == 0
    rec = D.read_conditioning(folder)
    assert "fits" not in rec["items"] and not (folder / "fits.npz").exists()
    assert len(list(folder.glob("*.png"))) == 3 and rec["frames"] == 3
