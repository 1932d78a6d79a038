"""Corpus preprocessing (#26 item 1): shards, resume, failures, manifest split, summary."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from facegeo.video import write_video
from facegeo_apps.train import main as train_main
from facegeo_models.common import data as D


def test_shards_partition_the_clips_deterministically():
    names = [f"clip_{k:03d}" for k in range(500)]
    for n in (1, 3, 8):
        parts = [{x for x in names if D.shard_of(x, n) == i} for i in range(n)]
        assert set().union(*parts) == set(names)
        assert sum(len(p) for p in parts) == len(names)  # disjoint
        assert all(len(p) > len(names) / n / 2 for p in parts)  # roughly balanced
    # independent of the order and number of the other inputs
    assert [D.shard_of(x, 5) for x in names] == [D.shard_of(x, 5) for x in names[::-1]][::-1]
    assert D.parse_shard("2/4") == (2, 4) and D.parse_shard(None) == (0, 1)
    for bad in ("4/4", "-1/2", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            D.parse_shard(bad)


@pytest.fixture
def clips(tmp_path, media_dir):
    """Two real face clips and one without a face (noise), as a corpus folder."""
    d = tmp_path / "corpus"
    d.mkdir()
    shutil.copy(media_dir / "lp_d10.mp4", d / "alice__a.mp4")
    shutil.copy(media_dir / "lp_d3.mp4", d / "bob__b.mp4")
    rng = np.random.default_rng(0)
    write_video(d / "noise__n.mp4", rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), 25)
    manifest = {"items": [{"file": "alice__a.mp4", "identity": "alice"},
                          {"file": "bob__b.mp4", "identity": "bob"},
                          {"file": "noise__n.mp4", "identity": "noise"}],
                "identities": {"alice": {"split": "train"}, "bob": {"split": "val"},
                               "noise": {"split": "train"}}}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_sharded_resumable_preprocessing_with_manifest_split(tmp_path, clips):
    root = tmp_path / "ds"
    kw = dict(split="manifest", manifest=clips / "manifest.json", size=64, max_frames=4,
              progress=False)
    metas = []
    for i in range(2):  # two "jobs"
        metas += D.preprocess_folder([clips], root, shard=(i, 2), **kw)
    by = {m["source"].rsplit("/", 1)[-1]: m for m in metas}
    assert sorted(by) == ["alice__a.mp4", "bob__b.mp4", "noise__n.mp4"]  # each once
    assert by["alice__a.mp4"]["status"] == "done" and by["alice__a.mp4"]["split"] == "train"
    assert by["bob__b.mp4"]["status"] == "done" and by["bob__b.mp4"]["split"] == "test"
    assert by["noise__n.mp4"]["status"] == "failed" and "error" in by["noise__n.mp4"]
    assert (root / "train" / "alice__a" / "conditioning.json").is_file()
    assert (root / "test" / "bob__b" / "conditioning.json").is_file()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["train"]["clips"] == 1 and summary["test"]["clips"] == 1
    assert summary["train"]["frames"] == 4 and summary["train"]["image_size"] == [64]
    assert summary["identity_overlap"] == []
    # resume: the finished clips are not redone (files untouched), the failed one is retried
    stamp = (root / "train" / "alice__a" / "landmarks.npy").stat().st_mtime_ns
    again = D.preprocess_folder([clips], root, **kw)
    status = {m["source"].rsplit("/", 1)[-1]: m["status"] for m in again}
    assert status == {"alice__a.mp4": "skipped", "bob__b.mp4": "skipped",
                      "noise__n.mp4": "failed"}
    assert (root / "train" / "alice__a" / "landmarks.npy").stat().st_mtime_ns == stamp
    # other settings are not "done": a new size redoes the clip
    redo = D.preprocess_folder([clips / "alice__a.mp4"], root, size=48, max_frames=2,
                               split="train", progress=False)
    assert redo[0]["status"] == "done"


def test_cli_shard_and_summary(tmp_path, clips, capsys):
    root = tmp_path / "ds"
    args = ["preprocess", str(clips / "alice__a.mp4"), str(clips / "bob__b.mp4"), "--out",
            str(root), "--size", "64", "--max-frames", "3", "--manifest",
            str(clips / "manifest.json"), "--split", "manifest"]
    assert train_main([*args, "--shard", "0/1"]) == 0
    out = capsys.readouterr().out
    assert "2 clips preprocessed" in out and "dataset summary" in out and str(root) in out
    assert train_main([*args]) == 0
    assert "0 clips preprocessed, 2 already done" in capsys.readouterr().out
    assert train_main([*args, "--shard", "3/2"]) != 0
    assert "shard" in capsys.readouterr().err


def test_real_corpus_manifest_split_is_identity_disjoint(corpus_dir):
    """The corpus's own split, as ``--split manifest`` reads it: every video listed exists,
    the identities of train and test are disjoint, and both sides have videos."""
    manifest = corpus_dir / "manifest.json"
    split = D._manifest_split(manifest)
    ids = D.load_identity_map(manifest)
    videos = [p.stem for p in corpus_dir.iterdir() if p.suffix.lower() in D.VIDEO_SUFFIXES]
    assert videos and all(v in split for v in videos)
    train = {ids[v] for v in videos if split[v] == "train"}
    test = {ids[v] for v in videos if split[v] == "test"}
    assert train and test and not (train & test)
