"""Checkpoint I/O and the model registry."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from torch import nn

from facegeo_models.common import checkpoint as ckpt
from facegeo_models.common import registry


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def _model():
    return registry.build_model({"name": "_test_tiny_warp", "params": {"channels": 4}})


def test_roundtrip_card_and_latest(tmp_path):
    m = _model()
    card = ckpt.make_model_card({"name": "_test_tiny_warp", "params": {"channels": 4}},
                                config={"a": 1}, data={"videos": 3},
                                metrics={"val/l1": torch.tensor(0.5)}, step=7)
    state = {"step": 7, "opt": torch.optim.Adam(m.parameters()).state_dict(),
             "rng": torch.get_rng_state()}
    d = ckpt.save_checkpoint(tmp_path / "ck" / "step_7", {"model": m}, card, state,
                             run_dir=tmp_path / "ck")
    assert ckpt.latest_checkpoint(tmp_path / "ck") == d
    c = ckpt.read_model_card(d)
    assert c["metrics"] == {"val/l1": 0.5} and c["data"] == {"videos": 3}
    assert set(c["files"]) == {"model.safetensors", "training_state.pt"}
    m2, _ = ckpt.load_model(d, verify=True)
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    st = ckpt.load_training_state(d)
    assert st["step"] == 7 and torch.equal(st["rng"], state["rng"])
    # overwrite in place
    with torch.no_grad():
        next(m.parameters()).add_(1)
    ckpt.save_checkpoint(d, {"model": m}, card)
    m3, _ = ckpt.load_model(d)
    assert torch.equal(next(m3.parameters()), next(m.parameters()))
    assert not (d / "training_state.pt").exists()
    assert [p.name for p in d.parent.iterdir() if p.name.startswith(".")] == []


def test_tampered_weights_and_unsafe_state_rejected(tmp_path):
    m = _model()
    card = ckpt.make_model_card({"name": "_test_tiny_warp", "params": {"channels": 4}})
    d = ckpt.save_checkpoint(tmp_path / "c", {"model": m}, card)
    other = registry.build_model("_test_tiny_warp", {"channels": 4})
    ckpt.save_weights(d / "model.safetensors", other)
    with pytest.raises(ValueError, match="sha256"):
        ckpt.load_model(d, verify=True)
    # a training state holding an arbitrary pickled object is refused
    torch.save({"step": 1, "x": _Evil()}, d / ckpt.TRAIN_STATE_NAME)
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_training_state(d)
    # not a checkpoint
    with pytest.raises(FileNotFoundError):
        ckpt.read_model_card(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / ckpt.CARD_NAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError):
        ckpt.read_model_card(tmp_path / "x")


def test_failed_save_leaves_nothing(tmp_path):
    card = ckpt.make_model_card({"name": "_test_tiny_warp"})
    with pytest.raises(ValueError):
        ckpt.save_checkpoint(tmp_path / "c", {"model": _model(), "bad/name": nn.Linear(1, 1)},
                             card)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="'model'"):
        ckpt.save_checkpoint(tmp_path / "c", {"ema": _model()}, card)


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown model"):
        registry.build_model("no_such_model_xyz")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model("_test_tiny_warp")(lambda cfg: nn.Linear(1, 1))
    registry.register_model("_test_not_module", overwrite=True)(lambda cfg: 3)
    with pytest.raises(TypeError, match="not nn.Module"):
        registry.build_model("_test_not_module")
    assert "_test_tiny_warp" in registry.registered_models()
    with pytest.raises(ValueError):
        registry.build_model({"params": {}})
