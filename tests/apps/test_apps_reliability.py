"""Bad input to the command-line apps: one ``error:`` line and exit 2 before any work,
clean-up of interrupted writes (docs/reliability.md, "Apps")."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from facegeo_apps import _cli
from facegeo_apps import evaluate as eval_app
from facegeo_apps import interpolate as interp_app
from facegeo_apps import reenact as reenact_app
from facegeo_apps import train as train_app

from _paths import REPO

TINY_CONFIG = REPO / "models" / "common" / "configs" / "tiny_test.yaml"


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _one_error(capsys) -> str:
    err = _err(capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _interp(*args) -> int:
    return interp_app.main(["--device", "cpu", "--quiet", "--size", "64", *args])


def _reenact(*args) -> int:
    return reenact_app.main(["--device", "cpu", "--quiet", "--size", "64", *args])


# ----------------------------------------------------------------------------- item 1
def test_check_output_refuses_an_input(tmp_path, media_dir):
    drv = tmp_path / "d.mp4"
    shutil.copy(media_dir / "lp_d12.mp4", drv)
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.mp4"
    link.symlink_to(drv)
    for out in (drv, tmp_path / "sub" / ".." / "d.mp4", link):
        with pytest.raises(_cli.CLIError, match="same file"):
            _cli.check_output(out, _cli.VIDEO_SUFFIXES, inputs=[drv])
    # an input given through a symlink is the same file too
    with pytest.raises(_cli.CLIError, match="same file"):
        _cli.check_output(drv, _cli.VIDEO_SUFFIXES, inputs=[link])
    assert _cli.check_output(tmp_path / "o.mp4", _cli.VIDEO_SUFFIXES, inputs=[drv, None])


def test_reenact_output_is_an_input(tmp_path, media_dir, capsys):
    drv = tmp_path / "d.mp4"
    shutil.copy(media_dir / "lp_d12.mp4", drv)
    size = drv.stat().st_size
    (tmp_path / "sub").mkdir()
    src = str(media_dir / "lp_s12.jpg")
    for out in (drv, tmp_path / "sub" / ".." / "d.mp4"):
        assert _reenact("--source", src, "--driving", str(drv), "--output", str(out)) == 2
        assert "same file" in _one_error(capsys)
    assert drv.stat().st_size == size
    img = tmp_path / "d.jpg"
    shutil.copy(media_dir / "lp_d12.jpg", img)
    link = tmp_path / "o.jpg"
    link.symlink_to(img)
    assert _reenact("--source", src, "--driving", str(img), "--output", str(link)) == 2
    assert "same file" in _one_error(capsys)
    # the source image as output
    s = tmp_path / "s.jpg"
    shutil.copy(media_dir / "lp_s12.jpg", s)
    assert _reenact("--source", str(s), "--driving", str(img), "--output", str(s)) == 2
    assert "same file" in _one_error(capsys)


def test_evaluate_out_is_a_data_file(tmp_path, media_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "v.mp4").symlink_to(media_dir / "lp_d12.mp4")
    meta = data / "media.json"
    meta.write_text(json.dumps({"items": []}))
    assert eval_app.main(["--method", "static", "--data", str(data), "--out", str(meta),
                          "--max-frames", "2", "--size", "64", "--no-progress"]) == 2
    assert "same file" in _one_error(capsys)
    assert json.loads(meta.read_text()) == {"items": []}


# ----------------------------------------------------------------------------- item 5
@pytest.mark.parametrize("args,word", [
    (["--yaw", "nan"], "--yaw"), (["--yaw", "inf"], "--yaw"), (["--yaw", "1000"], "--yaw"),
    (["--yaw", "180"], "--yaw"), (["--pitch=-1e9"], "--pitch"), (["--roll", "91"], "--roll"),
    (["--yaw", "10", "--fps", "1e9"], "--fps"), (["--yaw", "10", "--fps", "1e-9"], "--fps"),
    (["--yaw", "10", "--fps", "nan"], "--fps"), (["--yaw", "10", "--frames", "10000000"],
                                                  "--frames"),
    (["--expression", "jawOpen=nan"], "jawOpen"),
])
def test_interpolate_ranges(tmp_path, media_dir, capsys, args, word):
    rc = _interp("--source", str(media_dir / "lp_s12.jpg"), "--output",
                 str(tmp_path / "o.mp4"), *args)
    assert rc == 2
    assert word in _one_error(capsys)
    assert not list(tmp_path.iterdir())


def test_reenact_frames_cap(tmp_path, capsys):
    assert _reenact("--demo", "--frames", "10000000", "--output", str(tmp_path / "o.mp4")) == 2
    assert "--frames" in _one_error(capsys)


# ----------------------------------------------------------------------------- item 8
def test_train_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACEGEO_DATA", str(tmp_path))
    assert train_app.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in _one_error(capsys)
    assert train_app.main(["--config", str(TINY_CONFIG), "--set", "nokey"]) == 2
    assert "nokey" in _one_error(capsys)
    assert train_app.main(["--config", str(TINY_CONFIG), "--out", str(tmp_path / "r"),
                           "--device", "cpu", "--set", "model.params.channels=abc"]) == 2
    msg = _one_error(capsys)
    assert "_test_tiny_warp" in msg and "channels" in msg
    assert train_app.main(["preprocess", str(tmp_path / "nothing.mp4"), "--out",
                           str(tmp_path / "ds")]) == 2
    assert "nothing.mp4" in _one_error(capsys)
    assert train_app.main(["bench-data", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in _one_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_device_cuda_without_cuda(tmp_path, capsys):
    assert train_app.main(["--config", str(TINY_CONFIG), "--device", "cuda"]) == 2
    assert "CUDA is not available" in _one_error(capsys)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_device_mps_unavailable(tmp_path, media_dir, capsys):
    assert _interp("--source", str(media_dir / "lp_s12.jpg"), "--yaw", "10", "--device",
                   "mps", "--output", str(tmp_path / "o.mp4")) == 2
    assert "MPS is not available" in _one_error(capsys)
    assert train_app.main(["--config", str(TINY_CONFIG), "--device", "mps"]) == 2
    assert "MPS is not available" in _one_error(capsys)


# ----------------------------------------------------------------------------- item 9
def test_input_kinds_named(tmp_path, media_dir, capsys):
    out = str(tmp_path / "o.mp4")
    assert _reenact("--source", str(tmp_path), "--driving", str(media_dir / "lp_d12.mp4"),
                    "--output", out) == 2
    assert "is a directory" in _one_error(capsys)
    assert _reenact("--source", str(media_dir / "lp_s12.jpg"), "--driving", "/dev/null",
                    "--output", out) == 2
    assert "not a regular file" in _one_error(capsys)
    assert _interp("--source", str(tmp_path), "--yaw", "5", "--output", out) == 2
    assert "is a directory" in _one_error(capsys)
    assert _reenact("--source", str(media_dir / "lp_s12.jpg"), "--driving",
                    str(tmp_path / "nope.mp4"), "--output", out) == 2
    assert "not found" in _one_error(capsys)


def test_output_folder_problems(tmp_path, media_dir, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    common = ["--source", str(media_dir / "lp_s12.jpg"), "--yaw", "5"]
    assert _interp(*common, "--output", str(f / "o.mp4")) == 2
    assert "not a directory" in _one_error(capsys)
    for folder in ("/proc", "/sys"):
        t0 = time.perf_counter()
        assert _interp(*common, "--output", f"{folder}/o.mp4") == 2
        msg = _one_error(capsys)
        assert "not writable" in msg and ".part" not in msg
        assert time.perf_counter() - t0 < 5   # refused before any work


def test_interpolate_target_without_face(tmp_path, media_dir, capsys):
    from facegeo.image_io import save_image

    blank = tmp_path / "blank.png"
    save_image(blank, torch.full((3, 96, 96), 0.5))
    assert _interp("--source", str(media_dir / "lp_s12.jpg"), "--target", str(blank),
                   "--frames", "2", "--output", str(tmp_path / "o.mp4")) == 2
    msg = _one_error(capsys)
    assert "target" in msg and "source" not in msg


def test_evaluate_bogus_method_names_installed(tmp_path, media_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "v.mp4").symlink_to(media_dir / "lp_d12.mp4")
    assert eval_app.main(["--method", "bogus", "--data", str(data), "--out",
                          str(tmp_path / "r.json"), "--no-progress"]) == 2
    msg = _one_error(capsys)
    assert "bogus" in msg and "geometric" in msg and "static" in msg


def test_evaluate_device_checked(tmp_path, media_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "v.mp4").symlink_to(media_dir / "lp_d12.mp4")
    assert eval_app.main(["--method", "static", "--data", str(data), "--out",
                          str(tmp_path / "r.json"), "--device", "bogus"]) == 2
    assert "--device" in _one_error(capsys)


def test_broken_model_card_names_file(tmp_path):
    from facegeo_models.common.checkpoint import read_model_card

    (tmp_path / "model_card.json").write_text("{not json")
    with pytest.raises(ValueError, match="model_card.json"):
        read_model_card(tmp_path)
    (tmp_path / "model_card.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="model_card.json"):
        read_model_card(tmp_path)


def test_build_model_bad_params_named():
    import facegeo_models.common.testing  # noqa: F401 - registers _test_tiny_warp
    from facegeo_models.common.registry import build_model

    with pytest.raises(ValueError, match=r"_test_tiny_warp.*channels"):
        build_model("_test_tiny_warp", {"channels": "abc"})
    with pytest.raises(ValueError, match="_test_tiny_warp"):
        build_model({"name": "_test_tiny_warp", "params": {"nonsense": 1}})


# ----------------------------------------------------------------------------- item 11
def test_several_faces_reported_and_face_index(tmp_path, media_dir, capsys):
    src = str(media_dir / "3ddfa_trump_hillary.jpg")
    drv = str(media_dir / "lp_d12.jpg")
    out = tmp_path / "o.png"
    assert _reenact("--source", src, "--driving", drv, "--output", str(out)) == 0
    err = _err(capsys)
    assert "2 faces" in err and "largest" in err and "--face-index" in err
    assert _reenact("--source", src, "--driving", drv, "--output", str(out),
                    "--face-index", "1") == 0
    assert "face 1" in _err(capsys)
    assert _reenact("--source", src, "--driving", drv, "--output", str(out),
                    "--face-index", "5") == 2
    assert "--face-index" in _one_error(capsys)
    assert _interp("--source", src, "--yaw", "5", "--frames", "2", "--face-index", "1",
                   "--output", str(tmp_path / "o.mp4")) == 0
    assert "face 1" in _err(capsys)


@pytest.mark.parametrize("expr", ["jawOpen=0.5,,mouthSmile_L=0.2", "jawOpen=0.5,jawOpen=0.2",
                                  ",", "jawOpen=0.5,"])
def test_expression_empty_or_duplicate(tmp_path, media_dir, capsys, expr):
    assert _interp("--source", str(media_dir / "lp_s12.jpg"), "--expression", expr,
                   "--output", str(tmp_path / "o.mp4")) == 2
    assert "--expression" in _one_error(capsys)


def test_absurd_threads(tmp_path, media_dir, capsys):
    n = str(max(257, 4 * (os.cpu_count() or 1) + 1))
    assert _interp("--source", str(media_dir / "lp_s12.jpg"), "--yaw", "5", "--threads", n,
                   "--output", str(tmp_path / "o.mp4")) == 2
    assert "--threads" in _one_error(capsys)
    with pytest.raises(_cli.CLIError, match="--threads"):
        _cli.pick_device("cpu", threads=100000)


def test_gray_source_gets_gray_mouth(media_dir):
    from facegeo.image_io import load_image
    from facegeo.reenact import FaceFit, GeometricReenactor, expression_from_names

    img = load_image(media_dir / "lp_s1.jpg")
    gray = img.mean(0, keepdim=True).expand(3, -1, -1).contiguous()
    rr = GeometricReenactor(_cli.load_model(), size=96)
    src = rr.fit_source(gray)
    sf = src.fit
    exp = expression_from_names(rr.model, {"jawOpen": 1.0}, sf.exp_coeffs.cpu())
    tgt = FaceFit(sf.rotation, sf.scale, sf.translation, sf.id_coeffs, exp.to(sf.exp_coeffs))
    out = rr.render(src.image, src.fit, tgt).frames
    assert (out.amax(1) - out.amin(1)).max() < 1e-4          # still a gray picture
    # a colour source keeps the coloured cavity
    csrc = rr.fit_source(img)
    cout = rr.render(csrc.image, csrc.fit, tgt).frames
    assert (cout.amax(1) - cout.amin(1)).max() > 0.05


# ----------------------------------------------------------------------------- item 12
_WRITER = """
import sys, time
from pathlib import Path
from facegeo.assets import atomic_write
def w(p):
    p.write_text("x")
    print("writing", flush=True)
    time.sleep(60)
atomic_write(Path(sys.argv[1]), w)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_atomic_write_cleans_up_on_signal(tmp_path, sig):
    out = tmp_path / "o.txt"
    # the child gets the default handler: under nohup SIGHUP is inherited as ignored, and
    # atomic_write rightly leaves an ignored signal ignored
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    assert p.stdout.readline().strip() == "writing"
    assert list(tmp_path.glob(".*.part"))
    p.send_signal(sig)
    p.wait(timeout=30)
    assert p.returncode != 0
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_app_sigterm_leaves_no_part_file(tmp_path, media_dir):
    out = tmp_path / "o.mp4"
    cmd = [sys.executable, str(REPO / "apps" / "interpolate.py"), "--source",
           str(media_dir / "lp_s12.jpg"), "--yaw", "20", "--frames", "5000", "--size", "64",
           "--device", "cpu", "--quiet", "--output", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not list(tmp_path.glob(".*.part")):
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < 120
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())
