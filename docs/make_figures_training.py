"""Make docs/img/training_samples.png: the trainer's own sample grid after a short CPU run.

The data is docs/figure_inputs.py's ``driving_frames(150)``: scikit-image's public-domain
astronaut animated by facegeo's 3DMM-scripted performance (committed figures may not show
the dev media or the corpus). Its first 100 frames are written as the training video, the
last 50 as the test video (held-out frames of the same, only, identity), both cut to the
352x352 around the head and shoulders. Both are preprocessed (tracking + FOMM crop, 64 px,
every 2nd frame), the tiny test model
(``_test_tiny_warp``) is trained for 300 steps with the L1 + flow-smoothness phases of
``models/common/configs/tiny_test.yaml`` and the last sample grid is copied (columns:
source, driving, prediction, warped source). Run: ``python docs/make_figures_training.py``
(about 1-2 minutes on a laptop CPU).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from facegeo_models.common.data import preprocess_folder
from facegeo_models.common.trainer import Trainer, load_config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from figure_inputs import driving_frames  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        from facegeo.video import write_video

        root = Path(tmp) / "data"
        # the upper-left 352x352 of the frames: the head and shoulders without the mission
        # patch, which dlib takes for a face in some frames
        clip = driving_frames(150, full=True)[:, :, :352, 40:392]
        write_video(Path(tmp) / "astronaut_a.mp4", clip[:100], 30.0)
        write_video(Path(tmp) / "astronaut_b.mp4", clip[100:], 30.0)
        preprocess_folder([Path(tmp) / "astronaut_a.mp4"], root, split="train", size=64,
                          max_frames=50, step=2)
        preprocess_folder([Path(tmp) / "astronaut_b.mp4"], root, split="test", size=64,
                          max_frames=25, step=2)
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
        print(f"train L1 {first:.4f} -> {last:.4f}; validation (held-out frames) "
              f"{val[0]['val/psnr']:.2f} -> {val[-1]['val/psnr']:.2f} dB PSNR")
        (HERE / "img").mkdir(exist_ok=True)
        shutil.copy(t.out_dir / "samples" / "step_00000300.png",
                    HERE / "img" / "training_samples.png")


if __name__ == "__main__":
    main()
