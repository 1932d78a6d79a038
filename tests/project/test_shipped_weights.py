"""The trained weights shipped in data/<model>/: what `apps/reenact.py --model NAME` uses
on a fresh install (MODELS.md): fp16 safetensors <= 16 MiB with a model card that records
the data, the training and the evaluation, loadable and animating a real clip."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from facegeo.video import read_video, video_info
from facegeo_apps import reenact as reenact_app
from facegeo_models.common.checkpoint import SHIP_MAX_BYTES, read_model_card
from facegeo_models.common.registry import list_models, model_info

from _paths import REPO

DATA = REPO / "data"
SHIPPED = sorted(d.name for d in DATA.iterdir() if (d / "model_card.json").is_file())


def test_every_shipped_folder_is_a_registered_model_default():
    models = set(list_models())
    for name in SHIPPED:
        assert name in models, f"data/{name}/ holds a model card of no registered model"
        assert model_info(name).builder.default_checkpoint() == DATA / name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_card_size_and_dtype(name):
    d = DATA / name
    card = read_model_card(d)
    assert card["model"]["name"] == name
    for key in ("data", "training", "evaluation"):
        assert card.get(key), f"data/{name}/model_card.json lacks {key!r}"
    sd = load_file(str(d / "model.safetensors"))
    assert sum(v.numel() * v.element_size() for v in sd.values()) <= SHIP_MAX_BYTES
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    assert (d / "model.safetensors").stat().st_size <= SHIP_MAX_BYTES


@pytest.mark.parametrize("name", SHIPPED)
def test_reenact_app_uses_the_shipped_weights(name, tmp_path, media_dir, capsys):
    out = tmp_path / "out.mp4"
    rc = reenact_app.main(["--source", str(media_dir / "lp_s12.jpg"), "--driving",
                           str(media_dir / "lp_d12.mp4"), "--model", name, "--max-frames",
                           "3", "--output", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert video_info(out).frames == 3
    frames, _ = read_video(out)
    assert frames.std() > 5  # a picture, not a flat or broken output
