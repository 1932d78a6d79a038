"""models/common/config.py: ``_base_`` inheritance (order, ``_replace_``, bare names in the
common folder, missing bases, cycles), derived defaults (data.image_size), overrides, and
the bundled configs resolving to exactly what they were before the restructuring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facegeo_models.common import config as C

from _paths import REPO, TEST_DATA

EXPECTED = TEST_DATA / "configs" / "expected_resolved.json"


def _write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_override_order_bases_then_file(tmp_path):
    _write(tmp_path, "a.yaml", "x: {p: 1, q: 1, lst: [1, 2]}\nonly_a: 1\nk: a\n")
    _write(tmp_path, "b.yaml", "x: {q: 2, r: 2, lst: [3]}\nk: b\n")
    top = _write(tmp_path, "top.yaml", "_base_: [a.yaml, b]\nx: {r: 3}\nk: top\n")
    cfg = C.load_config(top)
    # a, then b over a (mappings merge, lists replace), then the file itself
    assert cfg == {"x": {"p": 1, "q": 2, "r": 3, "lst": [3]}, "only_a": 1, "k": "top"}
    # the other order: a over b
    top2 = _write(tmp_path, "top2.yaml", "_base_: [b, a]\n")
    assert C.load_config(top2)["x"] == {"p": 1, "q": 1, "r": 2, "lst": [1, 2]}
    # a single base may be a string; a scalar over a mapping and back replace whole
    _write(tmp_path, "c.yaml", "_base_: a.yaml\nx: none\n")
    assert C.load_config(tmp_path / "c.yaml")["x"] == "none"
    d = _write(tmp_path, "d.yaml", "_base_: [a, c]\nx: {z: 1}\n")
    assert C.load_config(d)["x"] == {"z": 1}  # c's scalar removed a's mapping
    assert "_base_" not in cfg


def test_nested_bases_and_diamond(tmp_path):
    _write(tmp_path, "root.yaml", "v: 0\nm: {a: 0}\n")
    _write(tmp_path, "l.yaml", "_base_: root\nv: 1\nm: {l: 1}\n")
    _write(tmp_path, "r.yaml", "_base_: root\nm: {r: 1}\n")
    top = _write(tmp_path, "top.yaml", "_base_: [l, r]\n")
    # r re-applies root's v = 0 after l: the layers are root, l, root, r, top
    assert C.load_config(top) == {"v": 0, "m": {"a": 0, "l": 1, "r": 1}}


def test_replace_marker(tmp_path):
    _write(tmp_path, "base.yaml", "aug: {flip: true, jitter: {b: 0.1}}\nd: {sn: true, w: 1}\n")
    top = _write(tmp_path, "top.yaml",
                 "_base_: base\naug: {_replace_: true, flip: false}\nd: {_replace_: false}\n")
    cfg = C.load_config(top)
    assert cfg == {"aug": {"flip": False}, "d": {"sn": True, "w": 1}}
    # a _replace_ in a LATER base replaces what the earlier bases set
    _write(tmp_path, "small.yaml", "d: {_replace_: true, w: 2}\n")
    top2 = _write(tmp_path, "top2.yaml", "_base_: [base, small]\nd: {x: 3}\n")
    assert C.load_config(top2)["d"] == {"w": 2, "x": 3}
    # ... also through one more level of inheritance
    _write(tmp_path, "mid.yaml", "_base_: small\n")
    top3 = _write(tmp_path, "top3.yaml", "_base_: [base, mid]\n")
    assert C.load_config(top3)["d"] == {"w": 2}
    # markers never reach the result, also inside lists
    top4 = _write(tmp_path, "top4.yaml", "l: [{_replace_: true, a: 1}]\n")
    assert C.load_config(top4) == {"l": [{"a": 1}]}
    assert C.merge_configs({"a": {"b": 1}}, {"a": {"_replace_": True, "c": 2}}) == \
        {"a": {"c": 2}}


def test_bare_name_found_in_common_folder(tmp_path):
    top = _write(tmp_path, "top.yaml", "_base_: [trainer/default, discriminator/multiscale]\n"
                 "train: {seed: 7}\n")
    cfg = C.load_config(top)
    assert cfg["train"]["seed"] == 7 and cfg["train"]["grad_clip"] == 10.0
    assert cfg["discriminator"]["gan_loss"] == "lsgan"
    # a file next to the config wins over the common folder
    _write(tmp_path, "trainer/default.yaml", "train: {local: true}\n")
    assert C.load_config(top)["train"] == {"local": True, "seed": 7}
    # explicit relative path and .yaml suffix
    sub = _write(tmp_path, "sub/x.yaml", "_base_: ../trainer/default.yaml\n")
    assert C.load_config(sub) == {"train": {"local": True}}
    for name in ("data/video", "trainer/default", "trainer/smoke", "discriminator/multiscale",
                 "discriminator/tiny"):
        assert (C.COMMON_CONFIG_DIR / f"{name}.yaml").is_file()


def test_missing_base_names_the_chain(tmp_path):
    _write(tmp_path, "mid.yaml", "_base_: [nope/missing]\n")
    top = _write(tmp_path, "top.yaml", "_base_: mid\n")
    with pytest.raises(FileNotFoundError) as e:
        C.load_config(top)
    msg = str(e.value)
    assert "'nope/missing'" in msg and "missing.yaml" in msg
    assert f"{top.resolve()} -> {(tmp_path / 'mid.yaml').resolve()}" in msg
    with pytest.raises(FileNotFoundError, match="config file not found"):
        C.load_config(tmp_path / "absent.yaml")


def test_cycles_are_errors(tmp_path):
    a = _write(tmp_path, "a.yaml", "_base_: b\nx: 1\n")
    b = _write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ValueError, match="cycle") as e:
        C.load_config(a)
    assert str(e.value).count(" -> ") == 2 and str(b.resolve()) in str(e.value)
    s = _write(tmp_path, "self.yaml", "_base_: [self]\n")
    with pytest.raises(ValueError, match=f"cycle: {s.resolve()} -> {s.resolve()}"):
        C.load_config(s)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="mapping"):
        C.load_config(_write(tmp_path, "l.yaml", "- 1\n- 2\n"))
    with pytest.raises(ValueError, match="_base_"):
        C.load_config(_write(tmp_path, "b.yaml", "_base_: {a: 1}\n"))
    with pytest.raises(ValueError, match="invalid YAML"):
        C.load_config(_write(tmp_path, "y.yaml", "a: [1\n"))
    assert C.load_config(_write(tmp_path, "e.yaml", "")) == {}


def test_image_size_derived_from_model(tmp_path):
    _write(tmp_path, "base.yaml", "model: {params: {image_size: 256}}\ndata: {root: r}\n")
    top = _write(tmp_path, "top.yaml", "_base_: base\nmodel: {params: {image_size: 128}}\n")
    assert C.load_config(top)["data"] == {"root": "r", "image_size": 128}
    # explicit data.image_size wins
    ex = _write(tmp_path, "ex.yaml", "_base_: base\ndata: {image_size: 64}\n")
    assert C.load_config(ex)["data"]["image_size"] == 64
    # no data section: none is created; no model size: nothing derived
    assert C.resolve_config({"model": {"params": {"image_size": 8}}}) == \
        {"model": {"params": {"image_size": 8}}}
    assert C.resolve_config({"data": {"root": "r"}}) == {"data": {"root": "r"}}
    cfg = {"model": {"params": {"image_size": 8}}, "data": {}}
    r = C.resolve_config(cfg)
    assert r["data"] == {"image_size": 8} and cfg["data"] == {}  # a copy
    assert C.resolve_config(r) == r


def test_image_size_written_once_in_bundled_configs():
    import yaml

    for f in sorted((REPO / "models" / "pfp_mls" / "configs").glob("*.yaml")):
        raw = yaml.safe_load(f.read_text())
        assert "image_size" not in (raw.get("data") or {}), f
    for name in ("paper", "cpu128", "tiny"):
        cfg = C.load_config(REPO / "models" / "pfp_mls" / "configs" / f"{name}.yaml")
        assert cfg["data"]["image_size"] == cfg["model"]["params"]["image_size"]


def test_merge_overrides():
    cfg = {"train": {"seed": 0, "optimizer": {"lr": 1e-3}}, "phases": [{"steps": 4}],
           "model": {"params": {"image_size": 64}}, "data": {"image_size": 64}}
    out = C.merge_overrides(cfg, ["train.seed=3", "train.optimizer.betas=[0.5, 0.9]",
                                  "new.sub.key=hello", "phases.0.steps=9", "x=null"])
    assert out["train"] == {"seed": 3, "optimizer": {"lr": 1e-3, "betas": [0.5, 0.9]}}
    assert out["new"] == {"sub": {"key": "hello"}} and out["x"] is None
    assert out["phases"] == [{"steps": 9}] and cfg["phases"] == [{"steps": 4}]  # a copy
    # a mapping value replaces the entry whole
    assert C.merge_overrides(cfg, ["train={seed: 1}"])["train"] == {"seed": 1}
    # the derived data.image_size follows the model's ...
    o = C.merge_overrides(cfg, ["model.params.image_size=128"])
    assert o["data"]["image_size"] == 128
    # ... unless it is overridden too or differed already
    o = C.merge_overrides(cfg, ["model.params.image_size=128", "data.image_size=32"])
    assert o["data"]["image_size"] == 32
    cfg2 = C.merge_overrides(cfg, ["data.image_size=48"])
    assert C.merge_overrides(cfg2, ["model.params.image_size=128"])["data"]["image_size"] == 48
    for bad, match in (("novalue", "key.sub=value"), ("a..b=1", "empty"),
                       ("phases.5.steps=1", "index"), ("phases.x=1", "index"),
                       ("train.seed.deeper=1", "not a mapping")):
        with pytest.raises(ValueError, match=match):
            C.merge_overrides(cfg, [bad])


def test_bundled_configs_resolve_as_before():
    """HARD requirement of the restructuring: every bundled config resolves to exactly the
    dict its single file held before (stored in tests/data/configs/)."""
    expected = json.loads(EXPECTED.read_text())
    names = [k for k in expected if not k.startswith("_")]
    assert len(names) == 4
    for name in names:
        e = expected[name]
        got = C.load_config(REPO / e["path"])
        assert got == e["config"], name
        raw = (REPO / e["path"]).read_text()
        assert "_base_" in raw, f"{e['path']} should use the shared bases"


def test_model_load_config_uses_bases():
    from facegeo_models import pfp_mls

    cfg = pfp_mls.PFPMLS.load_config("tiny")
    assert cfg["model"]["params"]["num_points"] == 10 and cfg["data"]["image_size"] == 64
    assert pfp_mls.PFPMLS.model_params("cpu128")["image_size"] == 128
