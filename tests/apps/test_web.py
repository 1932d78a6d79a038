"""The web app's callbacks (apps/web.py), without a browser: the real Gradio callbacks of
the page are called as the server would call them (tests/apps/test_web_browser.py drives them
through headless Chromium)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

try:
    import gradio as gr
except ImportError as e:  # part of the dev extra: a failure, never a silent skip
    pytest.fail(f"the web app needs gradio ({e}): pip install -e '.[dev]'", pytrace=False)

from facegeo.landmarks import detect_face  # noqa: E402
from facegeo.video import read_video, video_info  # noqa: E402
from facegeo_apps import web  # noqa: E402

from _paths import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

PORTRAIT = "lp_s12.jpg"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return web.WebApp(256, "cpu", max_frames=100, outdir=tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def page(app):
    """The Blocks and its callbacks by function name (``on_upload``, ``on_slide``...)."""
    demo = web.build_app(app)
    fns = {f.fn.__name__: f.fn for f in demo.fns.values()}
    return demo, fns


@pytest.fixture(scope="module")
def fitted(app, page, media_dir):
    """The outputs of on_upload for the portrait: (state, *slider values, preview,
    status, timing)."""
    _, fns = page
    return fns["on_upload"](str(media_dir / PORTRAIT))


def _landmarks(img: np.ndarray) -> torch.Tensor:
    """(68, 2) dlib landmarks of an (H, W, 3) uint8 image (an independent detection)."""
    return detect_face(torch.from_numpy(img).permute(2, 0, 1).float() / 255).landmarks


def _yaw(model, img: np.ndarray) -> float:
    """Yaw (degrees) of a fresh landmark fit of the image."""
    from facegeo.fitting import fit_landmarks

    return float(fit_landmarks(model, _landmarks(img)[None]).angles[0, 0])


def _nose_offset(img: np.ndarray) -> float:
    """Nose tip x minus the face-outline centre x, in units of the outline width."""
    lm = _landmarks(img)
    jaw = lm[:17, 0]
    return float((lm[30, 0] - (jaw.min() + jaw.max()) / 2) / (jaw.max() - jaw.min()))


def _values(app, state, **changes):
    v = dict(state.start)
    v.update(changes)
    return [v[k] for k in app.keys]


def test_fit_once_and_slider_updates_render_from_the_cache(app, page, media_dir,
                                                           monkeypatch):
    _, fns = page
    calls = {"fit": 0, "detect": 0}
    rr = app.geometric
    real_fit, real_pick = rr.fit_source, web.pick_source_face

    def fit_source(*a, **k):
        calls["fit"] += 1
        return real_fit(*a, **k)

    def pick(*a, **k):
        calls["detect"] += 1
        return real_pick(*a, **k)

    monkeypatch.setattr(rr, "fit_source", fit_source)
    monkeypatch.setattr(web, "pick_source_face", pick)
    out = fns["on_upload"](str(media_dir / PORTRAIT))
    state, vals, preview = out[0], list(out[1:-3]), out[-3]
    assert calls == {"fit": 1, "detect": 1}
    assert len(vals) == len(app.keys) and "fitted in" in out[-2]
    # the starting sliders are the fit: its angles, and the preview reproduces the crop
    assert vals[:3] == pytest.approx(state.source.fit.angles[0].tolist(), abs=0.5)
    crop = (state.source.image[0].permute(1, 2, 0) * 255).numpy()
    assert np.abs(preview.astype(float) - crop).mean() < 3.0
    previews = []
    for k in range(8):  # a slider dragged through 8 positions
        v = list(vals)
        v[0] += 2 * k
        img, timing = fns["on_slide"](state, *v, k % 2 == 1)
        previews.append(img)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert "cached fit" in timing
    assert calls == {"fit": 1, "detect": 1}  # no detection, no fitting per update
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in
             zip(previews, previews[1:])]
    assert min(diffs) > 0.5  # each update rendered something new


def test_yaw_slider_turns_the_head_the_right_way(app, page, fitted):
    """yaw +20 turns the nose to the image right, yaw -20 to the left: measured by an
    independent landmark detection + fit of the previews."""
    _, fns = page
    state = fitted[0]
    model = app.geometric.model
    y0 = state.start["yaw"]
    imgs = {d: fns["on_slide"](state, *_values(app, state, yaw=y0 + d), False)[0]
            for d in (-20, 0, 20)}
    yaw = {d: _yaw(model, im) for d, im in imgs.items()}
    nose = {d: _nose_offset(im) for d, im in imgs.items()}
    # a warped photo turns less than the mesh to a fresh fit (hair and ears stay), the more
    # so away from the camera: measured +13.5 deg (to yaw +10) and -8.3 deg (to yaw -30)
    assert 8 < yaw[20] - yaw[0] < 26, yaw
    assert 5 < yaw[0] - yaw[-20] < 26, yaw
    assert nose[20] > nose[0] + 0.04 and nose[-20] < nose[0] - 0.04, nose


def test_expression_sliders(app, page, fitted):
    """jaw open opens the mouth (outer-lip gap of fresh landmarks, measured 0.076 -> 0.142
    of the face height; the inner lips of the dark cavity are not found); the expression scale 0
    removes the photo's expression (back to neutral weights)."""
    _, fns = page
    state = fitted[0]
    base = fns["on_slide"](state, *_values(app, state), False)[0]
    jaw = fns["on_slide"](state, *_values(app, state, jaw_open=0.8), False)[0]

    def gap(img):
        lm = _landmarks(img)
        return float((lm[57, 1] - lm[51, 1]) / (lm[8, 1] - lm[27, 1]))

    assert gap(jaw) > gap(base) + 0.04
    f0 = app.target_fit(state, _values(app, state, scale=0.0))
    assert float(f0.exp_coeffs.abs().max()) == 0.0
    f2 = app.target_fit(state, _values(app, state, scale=2.0, smile_l=0.7))
    names = list(app.geometric.model.exp_names)
    assert float(f2.exp_coeffs[0, names.index("mouthSmile_L")]) == pytest.approx(1.0)
    assert float(f2.exp_coeffs[0, names.index("jawOpen")]) == pytest.approx(
        min(1.0, 2 * float(state.source.fit.exp_coeffs[0, names.index("jawOpen")])), abs=1e-5)
    # sliders at their start values leave the fit exactly as it is
    same = app.target_fit(state, _values(app, state))
    assert torch.allclose(same.exp_coeffs, state.source.fit.exp_coeffs)
    assert torch.allclose(same.rotation, state.source.fit.rotation, atol=1e-5)


def test_exports(app, page, fitted):
    _, fns = page
    state = fitted[0]
    vals = _values(app, state, yaw=state.start["yaw"] + 15, jaw_open=0.5)
    png = fns["on_frame"](state, *vals, False, True)
    from facegeo.image_io import load_image

    full = load_image(png)
    assert tuple(full.shape[-2:]) == tuple(state.source.full.shape[-2:])  # pasted back
    mp4 = fns["on_video"](state, *vals, False, False, 6, 12, progress=lambda *a, **k: None)
    info = video_info(mp4)
    assert info.frames == 6 and info.fps == pytest.approx(12) and info.width == 256
    frames, _ = read_video(mp4)
    first = fns["on_slide"](state, *_values(app, state), False)[0]
    last = fns["on_slide"](state, *vals, False)[0]
    # alpha 0 = the photo as fitted, alpha 1 = the current setting (H.264 at crf 18)
    assert np.abs(frames[0].astype(float) - first).mean() < 4
    assert np.abs(frames[-1].astype(float) - last).mean() < 4
    assert np.abs(frames[-1].astype(float) - first).mean() > 4


def _error(fn, *args, **kw) -> str:
    with pytest.raises(gr.Error) as e:
        fn(*args, **kw)
    return e.value.message


def test_bad_input_is_a_page_error_with_the_cli_message(app, page, media_dir, tmp_path,
                                                        capsys):
    from facegeo_apps import reenact as reenact_app

    _, fns = page
    blank = tmp_path / "blank.png"
    from facegeo.image_io import save_image

    save_image(blank, torch.full((3, 120, 100), 0.6))
    msg = _error(fns["on_upload"], str(blank))
    assert "no face found in the source image" in msg
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 4000, np.uint8).tobytes())
    noop = lambda *a, **k: None  # noqa: E731
    src = str(media_dir / PORTRAIT)
    msg = _error(fns["on_reenact"], src, str(bad), "relative", False, "geometric", "", "", 0,
                 progress=noop)
    assert msg.startswith("cannot open video broken.mp4")
    assert str(tmp_path) not in msg  # the server's upload folders are not shown
    # the command-line app says the same
    rc = reenact_app.main(["--source", src, "--driving", str(bad), "--output",
                           str(tmp_path / "o.mp4"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.removeprefix("error: ").replace(str(bad), bad.name) == msg
    # too long a clip (the app under test accepts 100 frames; lp_d12 has 183)
    msg = _error(fns["on_reenact"], src, str(media_dir / "lp_d12.mp4"), "relative", False,
                 "geometric", "", "", 0, progress=noop)
    assert "too long: 183 frames" in msg and "at most 100" in msg
    msg = _error(fns["on_reenact"], src, str(media_dir / "lp_d12.mp4"), "relative", False,
                 "geometric", "", "", 500, progress=noop)
    assert "[1, 100]" in msg
    msg = _error(fns["on_reenact"], None, None, "relative", False, "geometric", "", "", 0,
                 progress=noop)
    assert "source portrait" in msg
    msg = _error(fns["on_reenact"], src, str(media_dir / "lp_d12.jpg"), "relative", False,
                 "geometric", str(tmp_path), "", 0, progress=noop)
    assert "only used with a neural model" in msg
    msg = _error(fns["on_slide"], None, *([0.0] * len(app.keys)), False)
    assert "upload a portrait first" in msg


def test_reenact_with_a_driving_image_and_progress(app, page, media_dir):
    _, fns = page
    seen = []
    out = fns["on_reenact"](str(media_dir / PORTRAIT), str(media_dir / "lp_d12.jpg"),
                            "absolute", False, "geometric", "", "", 0,
                            progress=lambda p, desc=None, unit=None: seen.append((p, desc)))
    image_update, path, info = out[1], out[2], out[3]
    assert path.endswith(".png") and image_update["visible"] is True
    assert "1 frames" in info and "absolute" in info
    assert {d for _, d in seen} == {"tracking the driving face", "rendering"}
    from facegeo.image_io import load_image

    assert tuple(load_image(path).shape) == (3, 256, 256)


def test_main_defaults_to_localhost_and_says_how_to_expose(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(web, "serve", lambda app, host, port, size, block: seen.update(
        host=host, port=port, size=size, block=block))
    monkeypatch.setattr(web, "load_model", lambda: None)
    assert web.main(["--port", "7999", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert seen == {"host": "127.0.0.1", "port": 7999, "size": "20mb", "block": True}
    assert "http://127.0.0.1:7999" in out and "--host 0.0.0.0" in out and "ssh -L" in out
    assert web.main(["--port", "0"]) == 2
    assert "--port must be in" in capsys.readouterr().err
    assert web.main(["--max-file-size", "lots"]) == 2
    assert "--max-file-size" in capsys.readouterr().err


def test_reenact_with_a_neural_checkpoint_matches_the_cli(app, page, media_dir, tmp_path,
                                                           capsys):
    """A registered neural model (an untrained tiny pfp_mls checkpoint) through the page
    gives the same image as ``facegeo-reenact`` with the same checkpoint and inputs; its
    mode limits come back as the model's message."""
    from facegeo.image_io import load_image
    from facegeo_apps import reenact as reenact_app
    from facegeo_models import pfp_mls
    from facegeo_models.common import checkpoint as ckpt
    from facegeo_models.common.config import load_config
    from facegeo_models.common.registry import build_model

    cfg = load_config(pfp_mls.config_path("tiny"))
    torch.manual_seed(0)
    net = build_model(cfg["model"]).eval()
    ck = tmp_path / "ck"
    ckpt.save_checkpoint(ck, {"model": net}, ckpt.make_model_card(cfg["model"], config=cfg))
    _, fns = page
    src, drv = str(media_dir / PORTRAIT), str(media_dir / "lp_d12.jpg")
    noop = lambda *a, **k: None  # noqa: E731
    out = fns["on_reenact"](src, drv, "absolute", False, "pfp_mls", str(ck), "", 0,
                            progress=noop)
    assert "model pfp_mls" in out[3]
    cli = tmp_path / "cli.png"
    rc = reenact_app.main(["--source", src, "--driving", drv, "--output", str(cli), "--model",
                           "pfp_mls", "--checkpoint", str(ck), "--mode", "absolute",
                           "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert torch.equal(load_image(out[2]), load_image(cli))
    msg = _error(fns["on_reenact"], src, drv, "relative", False, "pfp_mls", str(ck), "", 0,
                 progress=noop)
    assert "relative" in msg
    msg = _error(fns["on_reenact"], src, drv, "absolute", False, "pfp_mls",
                 str(tmp_path / "missing"), "", 0, progress=noop)
    assert "checkpoint not found" in msg


def test_script_help():
    import subprocess
    import sys

    script = REPO / "apps" / "web.py"
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "facegeo-web" in r.stdout and "--max-file-size" in r.stdout
