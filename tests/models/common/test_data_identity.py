"""What ldnet_fdgan added to the shared training code: identity labels in the datasets
(``with_identity``, identity maps from a corpus manifest) and the RMSprop optimizer."""

from __future__ import annotations

import json

import pytest
import torch

from facegeo_models.common.data import (
    TensorVideoDataset,
    VideoFolderDataset,
    build_dataset,
    load_identity_map,
)
from facegeo_models.common.trainer import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_identity_labels_in_items():
    vids = [torch.rand(3, 3, 8, 8) for _ in range(4)]
    ds = TensorVideoDataset(vids, identities=["bob", "al", "bob", "cy"], with_identity=True)
    assert ds.identity_names() == ["al", "bob", "cy"]
    labels = [int(ds[(i, i)]["identity"]) for i in range(4)]
    assert labels == [1, 0, 1, 2]
    assert ds[0]["identity"].dtype == torch.int64
    assert "identity" not in TensorVideoDataset(vids)[0]   # opt-in only


def _write_videos(root, names):
    import cv2
    import numpy as np

    for n in names:
        d = root / n
        d.mkdir(parents=True)
        for t in range(2):
            cv2.imwrite(str(d / f"{t:06d}.png"), np.full((8, 8, 3), 40 * t, np.uint8))


def test_identity_map_from_corpus_manifest(tmp_path):
    man = {"set": "train", "items": [
        {"file": "anna__clip_1.mp4", "identity": "anna", "kind": "video"},
        {"file": "anna__clip_2.mp4", "identity": "anna", "kind": "video"},
        {"file": "ben__x.mp4", "identity": "ben", "kind": "video"},
        {"file": "cat.jpg", "identity": "cat", "kind": "image"}]}
    mf = tmp_path / "manifest.json"
    mf.write_text(json.dumps(man))
    m = load_identity_map(mf)
    assert m["anna__clip_2"] == "anna" and m["ben__x.mp4"] == "ben"
    root = tmp_path / "data"
    _write_videos(root / "train", ["anna__clip_1", "anna__clip_2", "ben__x"])
    ds = build_dataset({"root": str(root), "identities": str(mf), "with_identity": True},
                       "train")
    assert isinstance(ds, VideoFolderDataset)
    assert ds.identity_names() == ["anna", "ben"]
    assert [int(ds[(v, 0)]["identity"]) for v in range(3)] == [0, 0, 1]
    # a plain {name: identity} file works too; bad files are clear errors
    (tmp_path / "ids.json").write_text(json.dumps({"ben__x": "zed"}))
    assert load_identity_map(tmp_path / "ids.json") == {"ben__x": "zed"}
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected"):
        load_identity_map(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="identity map"):
        load_identity_map(tmp_path / "nosuch.json")


def test_rmsprop_optimizer():
    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([p], {"type": "rmsprop", "lr": 0.1, "alpha": 0.9})
    assert isinstance(opt, torch.optim.RMSprop)
    assert opt.defaults["lr"] == 0.1 and opt.defaults["alpha"] == 0.9
    # one step by hand: v = (1 - alpha) g^2, p -= lr g / (sqrt(v) + eps)
    p.grad = torch.full((3,), 2.0)
    opt.step()
    want = 1 - 0.1 * 2 / ((0.1 * 4) ** 0.5 + 1e-8)
    torch.testing.assert_close(p.detach(), torch.full((3,), want))
    with pytest.raises(ValueError, match="rmsprop"):
        build_optimizer([p], {"type": "lion"})
