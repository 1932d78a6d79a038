"""apps/train.py end to end: preprocess a real video, train on it from the YAML config,
stop, resume, and load the result through the registry."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from facegeo_apps import train as app
from facegeo_models.common import checkpoint as ckpt

from _paths import REPO

CONFIG = REPO / "models" / "common" / "configs" / "tiny_test.yaml"


@pytest.mark.integration
def test_preprocess_then_train_and_resume(tmp_path, media_dir, capsys):
    root = tmp_path / "data"
    assert app.main(["preprocess", str(media_dir / "lp_d10.mp4"), "--out", str(root),
                     "--split", "train", "--size", "64", "--max-frames", "6"]) == 0
    assert app.main(["preprocess", str(media_dir / "lp_d3.mp4"), "--out", str(root),
                     "--split", "test", "--size", "64", "--max-frames", "3"]) == 0
    assert len(list((root / "train" / "lp_d10").glob("*.png"))) == 6
    run = tmp_path / "run"
    common = ["--config", str(CONFIG), "--out", str(run), "--device", "cpu",
              "--set", f"data.root={root}", "--set", "train.progress=false",
              "--set", "data.require_landmarks=true"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert app.main([*common, "--until-step", "5"]) == 0
        card = ckpt.read_model_card(ckpt.latest_checkpoint(run))
        assert card["step"] == 5 and card["data"]["root"] == str(root)
        assert app.main(common) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out.strip().splitlines()[-1]
    res = json.loads(out)
    assert res["step"] == 12 and "val/psnr" in res
    model, card = ckpt.load_model(ckpt.latest_checkpoint(run))
    assert card["step"] == 12
    x = torch.rand(1, 3, 32, 32)
    assert model({"source": x, "driving": x})["prediction"].shape == (1, 3, 32, 32)
    logs = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss/total" in r] == list(range(1, 13))


def test_cli_help_and_bad_config(tmp_path, capsys):
    r = subprocess.run([sys.executable, str(REPO / "apps" / "train.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--config" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    # user errors: one "error:" line and exit status 2 (apps/_cli.run_main)
    assert app.main(["--config", str(bad)]) == 2
    assert "error:" in (err := capsys.readouterr().err) and "mapping" in err
    assert app.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
