"""Shipping a checkpoint: export_inference / ``apps/train.py export`` -> data/<model>/."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from facegeo_apps.train import main as train_main
from facegeo_models.common.checkpoint import export_inference, make_model_card, save_checkpoint
from facegeo_models.common.config import load_config
from facegeo_models.common.synthetic import synthetic_batch
from facegeo_models.pfp_mls import PFPMLS


@pytest.fixture
def trained(tmp_path):
    cfg = load_config(PFPMLS.config_path("tiny"))
    torch.manual_seed(0)
    model = PFPMLS.from_config("tiny").eval()
    ema = PFPMLS.from_config("tiny").eval()
    ema.load_state_dict(model.state_dict())
    with torch.no_grad():  # the EMA differs from the raw weights: export must take it
        for p in ema.parameters():
            p.add_(0.01)
    ck = save_checkpoint(tmp_path / "ckpt-000010", {"model": model, "ema": ema},
                         make_model_card(cfg["model"], config=cfg, step=10))
    return ck, ema


def test_export_fp16_ema_loads_as_pretrained(tmp_path, trained):
    ck, ema = trained
    out = export_inference(ck, tmp_path / "ship", training={"steps": 10})
    sd = load_file(str(out / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    card = json.loads((out / "model_card.json").read_text())
    assert card["exported"]["weights"] == "ema.safetensors" and card["step"] == 10
    assert card["training"] == {"steps": 10} and "model.safetensors" in card["files"]
    loaded = PFPMLS.load_pretrained(out)
    batch = synthetic_batch(loaded, 1, seed=3)
    with torch.no_grad():
        a, b = loaded(batch)["prediction"], ema(batch)["prediction"]
    assert (a - b).abs().max() < 0.02  # the EMA weights, rounded to fp16
    # no overwrite without asking; a size limit is enforced before anything is written
    with pytest.raises(FileExistsError):
        export_inference(ck, out)
    with pytest.raises(ValueError, match="MiB limit"):
        export_inference(ck, tmp_path / "small", max_bytes=1000)
    assert not (tmp_path / "small").exists()


def test_export_cli(tmp_path, trained, capsys):
    ck, _ = trained
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"evaluation": {"psnr": 20.0}}))
    out = tmp_path / "data" / "pfp_mls"
    assert train_main(["export", str(ck), "--out", str(out), "--card", str(extra)]) == 0
    assert str(out) in capsys.readouterr().out
    assert json.loads((out / "model_card.json").read_text())["evaluation"]["psnr"] == 20.0
    assert train_main(["export", str(ck), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert train_main(["export", str(ck), "--out", str(out), "--force"]) == 0


def test_load_with_overridden_params(tmp_path):
    """load_pretrained / load_reenactor options override the config's model.params: an
    inference switch changes, the weights stay the checkpoint's; an option that changes a
    weight shape is an error naming the file, an unknown one names the option."""
    from facegeo_models import load_reenactor
    from facegeo_models.ldnet_fdgan import LDNetFDGAN

    cfg = load_config(LDNetFDGAN.config_path("tiny"))
    torch.manual_seed(0)
    net = LDNetFDGAN.from_config("tiny").eval()
    ck = save_checkpoint(tmp_path / "ck", {"model": net}, make_model_card(cfg["model"], config=cfg))
    ref = net.state_dict()
    for m in (LDNetFDGAN.load_pretrained(ck, params={"front_end": "raw"}),
              load_reenactor("ldnet_fdgan", checkpoint=ck, front_end="raw"),
              LDNetFDGAN.load_pretrained(ck / "model.safetensors", config="tiny",
                                         params={"front_end": "raw"})):
        assert m.front_end == "raw"
        assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())
    assert LDNetFDGAN.load_pretrained(ck).front_end == cfg["model"]["params"]["front_end"]
    with pytest.raises(ValueError, match="does not fit"):
        LDNetFDGAN.load_pretrained(ck / "model.safetensors", config="tiny",
                                   params={"widths": [8, 8, 8, 8]})
    with pytest.raises(ValueError, match="front_endd"):
        load_reenactor("ldnet_fdgan", checkpoint=ck, front_endd="raw")
