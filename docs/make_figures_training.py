"""Make docs/img/training_samples.png: the trainer's own sample grid after a short CPU run.

Preprocesses 60 frames of two real videos (tracking + FOMM crop, 64 px), trains the tiny
test model (``_test_tiny_warp``) for 300 steps with the L1 + flow-smoothness phases of
``models/common/configs/tiny_test.yaml`` and copies the last sample grid (columns: source,
driving, prediction, warped source). Run: ``python docs/make_figures_training.py``
(about 1-2 minutes on a laptop CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from facegeo_models.common.data import preprocess_folder
from facegeo_models.common.trainer import Trainer, load_config

HERE = Path(__file__).resolve().parent
MEDIA = Path(os.environ.get("FACEGEO_MEDIA", HERE.parent.parent / "shared" / "media"))


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        preprocess_folder([MEDIA / "lp_d10.mp4", MEDIA / "lp_s18.mp4"], root, split="train",
                          size=64, max_frames=60, step=2)
        preprocess_folder([MEDIA / "lp_d3.mp4"], root, split="test", size=64, max_frames=30,
                          step=2)
        cfg = load_config(HERE.parent / "models" / "common" / "configs" / "tiny_test.yaml")
        cfg["data"].update({"root": str(root), "image_size": 64, "batch_size": 8})
        cfg["model"]["params"] = {"channels": 16, "num_down_blocks": 2, "bottleneck": 2}
        cfg["train"].update({"progress": False, "sample_every": 300, "val_every": 100,
                             "ckpt_every": 0, "scheduler": {"type": "cosine"}})
        cfg["phases"] = [{"name": "recon", "steps": 300,
                          "losses": {"l1": 1.0, "flow_smoothness": 0.1}}]
        t = Trainer(cfg, out_dir=Path(tmp) / "run", resume=None)
        t.fit()
        logs = [json.loads(x) for x in (t.out_dir / "log.jsonl").read_text().splitlines()]
        first = next(r for r in logs if "loss/l1" in r)["loss/l1"]
        last = [r for r in logs if "loss/l1" in r][-1]["loss/l1"]
        val = [r for r in logs if "val/psnr" in r]
        print(f"train L1 {first:.4f} -> {last:.4f}; validation (unseen identity) "
              f"{val[0]['val/psnr']:.2f} -> {val[-1]['val/psnr']:.2f} dB PSNR")
        (HERE / "img").mkdir(exist_ok=True)
        shutil.copy(t.out_dir / "samples" / "step_00000300.png",
                    HERE / "img" / "training_samples.png")


if __name__ == "__main__":
    main()
