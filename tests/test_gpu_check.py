"""benchmarks/gpu_check.py in its CPU mode (``--device cpu --tiny``), so it cannot rot.

Every registered model takes a training step with and without bf16 autocast on synthetic
batches and runs inference; the core comparisons run; the JSON lists no failure.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from facegeo_models.common.registry import list_models

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" /
                                                  "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_cpu_tiny_mode(tmp_path, capsys):
    out = tmp_path / "check.json"
    rc = _load().main(["--device", "cpu", "--tiny", "--out", str(out)])
    data = json.loads(out.read_text())
    assert rc == 0, data["failures"]
    assert data["failures"] == [] and data["meta"]["mode"] == "tiny"
    models = [n for n in list_models() if n != "geometric"]
    assert sorted(data["models"]) == sorted(models)
    for name, m in data["models"].items():
        assert m["parameters"] > 0 and m["train_fp32"]["finite"], name
        assert m["train_bf16"]["finite"], name
        assert {r["dtype"] for r in m["inference"]} == {"fp32", "bf16"}, name
    core = data["core"]
    assert core["raster"]["runs"][0]["face_id_agreement"] > 0.999
    assert core["mls"]["max_abs_diff"] < 1e-3 and core["chebconv"]["rel_max_diff"] < 1e-4
    assert data["render"]["geometric_64"]["finite"]
    assert "wrote" in capsys.readouterr().out
