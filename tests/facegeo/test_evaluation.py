"""facegeo.evaluation protocols and apps/evaluate.py (baselines end-to-end on a tiny clip)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from facegeo import evaluation as E


# ----------------------------------------------------------------------------- helpers
def test_keypoint_perturbation_moves_exactly_one_point_per_frame():
    g = torch.Generator().manual_seed(3)
    hook = E.keypoint_perturbation(0.05, 0.5, generator=g)
    kp = torch.rand(50, 10, 2)
    out = hook(kp)
    d = (out - kp).abs()
    moved = (d.sum(-1) > 0)
    assert moved.sum(1).eq(1).all()
    assert torch.equal(moved.float().argmax(1), hook.last_index)
    per = d[torch.arange(50), hook.last_index]
    assert (per >= 0.05 - 1e-6).all() and (per <= 0.5 + 1e-6).all()
    assert torch.allclose(out[torch.arange(50), hook.last_index] - kp[torch.arange(50),
                                                                      hook.last_index],
                          hook.last_offset)
    # both signs occur
    assert (hook.last_offset > 0).any() and (hook.last_offset < 0).any()
    with pytest.raises(ValueError):
        E.keypoint_perturbation(0.5, 0.1)
    with pytest.raises(ValueError, match="keypoints"):
        hook(torch.rand(3, 2))


def test_baselines_and_call_method_checks():
    src, drv = torch.rand(1, 3, 20, 24), torch.rand(4, 3, 16, 16)
    s = E.call_method(E.static_source, src, drv)
    assert s.shape == (4, 3, 20, 24) and torch.equal(s[2], src[0])
    c = E.call_method(E.copy_driving, src, drv, mode="absolute")
    assert torch.equal(c, drv)

    seen = {}

    def only_two_args(source, driving):
        return driving

    def with_mode(source, driving, mode):
        seen["mode"] = mode
        return driving

    E.call_method(only_two_args, src, drv, mode="absolute")
    E.call_method(with_mode, src, drv, mode="absolute")
    assert seen["mode"] == "absolute"
    with pytest.raises(ValueError, match="perturbation"):
        E.call_method(only_two_args, src, drv, perturb=lambda k: k)
    with pytest.raises(ValueError, match="frames"):
        E.call_method(lambda s, d: d[:2], src, drv)
    with pytest.raises(ValueError, match="NaN"):
        E.call_method(lambda s, d: d * float("nan"), src, drv)
    with pytest.raises(ValueError, match="mode"):
        E.call_method(only_two_args, src, drv, mode="sideways")
    with pytest.raises(ValueError, match="driving"):
        E.static_source(src, torch.rand(3, 16, 16))
    with pytest.raises(TypeError):
        E.copy_driving(src, (drv * 255).to(torch.uint8))


def test_background_mask_is_outside_grown_boxes():
    lm = torch.zeros(2, 68, 2)
    lm[0, :, 0] = torch.linspace(10, 20, 68)     # x 10..20, y 10..20 -> grown 8..22
    lm[0, :, 1] = torch.linspace(10, 20, 68)
    lm[1] = float("nan")                         # ignored
    m = E.background_mask(lm, (30, 40), grow=0.2)
    ys, xs = torch.meshgrid(torch.arange(30), torch.arange(40), indexing="ij")
    inside = (xs >= 8) & (xs <= 22) & (ys >= 8) & (ys <= 22)
    assert torch.equal(m, ~inside)


def _analysis(lm, angles, expr, emb, size=(64, 64), found=None, gaze=None):
    t = lm.shape[0]
    found = torch.ones(t, dtype=torch.bool) if found is None else found
    return E.FrameAnalysis(lm, found, angles, expr, emb, emb, size, gaze)


def test_video_metrics_gaze_following():
    """gaze_r: 1 for the driver's own gaze or any positive multiple of its displacements,
    -1 for the mirrored displacements, 0 for a still gaze, the pupils module's
    gaze_following corr otherwise; NaN without pupils or with fewer than 3 frames."""
    from facegeo.landmarks.pupils import gaze_following

    torch.manual_seed(1)
    t = 6
    lm = torch.rand(t, 68, 2) * 50
    ang, exp_, emb = torch.zeros(t, 3), torch.rand(t, 53), torch.randn(t, 128)
    g_d = torch.randn(t, 2, 2) * 0.05

    def run(g_o, found=None):
        out = _analysis(lm, ang, exp_, emb, gaze=g_o, found=found)
        drv = _analysis(lm, ang, exp_, emb, gaze=g_d)
        src = _analysis(lm[:1], ang[:1], exp_[:1], emb[:1])
        return E.video_metrics(torch.rand(t, 3, 64, 64), out, drv, src)["gaze_r"]

    assert run(g_d) == pytest.approx(1.0)
    assert run(0.3 + 2.5 * (g_d - g_d[:1])) == pytest.approx(1.0)
    assert run(g_d[:1] - (g_d - g_d[:1])) == pytest.approx(-1.0)
    assert run(g_d[:1].expand(t, -1, -1)) == 0.0
    g_o = torch.randn(t, 2, 2) * 0.05
    assert run(g_o) == pytest.approx(gaze_following(g_d, g_o)["corr"], abs=1e-9)
    assert math.isnan(run(None))
    few = torch.tensor([True, True, False, False, False, False])
    assert math.isnan(run(g_d, found=few))
    # frames without an output face are left out (the remaining rows still follow)
    some = torch.tensor([True, False, True, True, False, True])
    assert run(g_d, found=some) == pytest.approx(1.0)


def test_video_metrics_known_answers():
    torch.manual_seed(0)
    t = 5
    lm_d = torch.rand(t, 68, 2) * 50
    ang_d = torch.tensor([[10.0, -5.0, 2.0]]).repeat(t, 1)
    exp_d = torch.rand(t, 53)
    emb_s = torch.nn.functional.normalize(torch.randn(1, 128), dim=1)
    # output: landmarks shifted by (3, 4) (AKD 5), yaw off by 6 deg (PRMSE 6/sqrt(3)),
    # expression +0.1 on 4 channels (ED 0.2), embedding at 60 degrees from the source (0.5)
    ortho = torch.randn(1, 128)
    ortho = torch.nn.functional.normalize(ortho - (ortho @ emb_s.T) * emb_s, dim=1)
    emb_o = (0.5 * emb_s + math.sqrt(0.75) * ortho).repeat(t, 1)
    exp_o = exp_d.clone()
    exp_o[:, :4] += 0.1
    out_an = _analysis(lm_d + torch.tensor([3.0, 4.0]), ang_d + torch.tensor([6.0, 0, 0]),
                       exp_o, emb_o)
    drv_an = _analysis(lm_d, ang_d, exp_d, emb_o)
    src_an = _analysis(lm_d[:1], ang_d[:1], exp_d[:1], emb_s)
    frames = torch.rand(t, 3, 64, 64)
    gt = (frames + 0.1).clamp(0, 1)
    r = E.video_metrics(frames, out_an, drv_an, src_an, ground_truth=gt)
    assert r["akd"] == pytest.approx(5.0, abs=1e-4)
    assert r["mkr"] == 0.0
    assert r["prmse"] == pytest.approx(6 / math.sqrt(3), abs=1e-4)
    assert r["ed"] == pytest.approx(0.2, abs=1e-5)
    assert r["csim"] == pytest.approx(0.5, abs=1e-5)
    assert r["isim_dlib"] == pytest.approx(0.5, abs=1e-5)
    assert r["l1"] == pytest.approx(float((frames - gt).abs().mean()), abs=1e-6)
    assert r["sms"] == pytest.approx(float(E.M.sms(out_an.landmarks)), abs=1e-6)
    assert math.isnan(r["ms_ssim"])           # 64 px is too small for 5 scales
    # identical pose / expression -> PSIM = ESIM = AUCON = 1
    r2 = E.video_metrics(frames, drv_an, drv_an, src_an)
    assert r2["psim"] == pytest.approx(1.0) and r2["esim"] == pytest.approx(1.0)
    assert r2["aucon"] == 1.0 and r2["akd"] == 0.0 and math.isnan(r2["l1"])
    # eye / mouth following: 1 for the driver's own landmarks, 0 for a still face, the
    # metrics module's Pearson r of the openings otherwise
    assert r2["eye_r"] == pytest.approx(1.0) and r2["mouth_r"] == pytest.approx(1.0)
    still = _analysis(lm_d[:1].expand(t, -1, -1), ang_d, exp_o, emb_o)
    r_still = E.video_metrics(frames, still, drv_an, src_an)
    assert r_still["eye_r"] == 0.0 and r_still["mouth_r"] == 0.0
    lm_o = lm_d + torch.randn(t, 68, 2)
    r5 = E.video_metrics(frames, _analysis(lm_o, ang_d, exp_o, emb_o), drv_an, src_an)
    assert r5["eye_r"] == pytest.approx(float(E.M.pearson(E.M.eye_opening(lm_o),
                                                          E.M.eye_opening(lm_d))), abs=1e-6)
    # a missing output face counts in MKR and is left out of AKD
    miss = _analysis(out_an.landmarks, out_an.angles, exp_o, emb_o,
                     found=torch.tensor([True, False, True, True, True]))
    r3 = E.video_metrics(frames, miss, drv_an, src_an)
    assert r3["mkr"] == pytest.approx(0.2) and r3["akd"] == pytest.approx(5.0, abs=1e-4)
    # a static video has no flicker
    r4 = E.video_metrics(frames[:1].expand(t, -1, -1, -1), out_an, drv_an, src_an)
    assert r4["flicker"] == 0.0


def test_aggregate_ignores_nan():
    rows = [{"akd": 1.0, "psnr": float("nan")}, {"akd": 3.0, "psnr": 20.0}, {"akd": float("nan")}]
    a = E.aggregate(rows, keys=("akd", "psnr", "csim"))
    assert a["videos"] == 3 and a["akd"] == 2.0 and a["psnr"] == 20.0 and math.isnan(a["csim"])


class _CodeAnalyzer:
    """Fake analyzer: the landmarks of a frame are a fixed set shifted by 10 x (green value
    at pixel (0, 0)) in x and y."""

    base = torch.rand(68, 2, generator=torch.Generator().manual_seed(1)) * 30 + 10

    def landmarks(self, frames):
        v = frames[:, 1, 0, 0]
        return self.base + 10 * v[:, None, None], torch.ones(len(frames), dtype=torch.bool)


class _FlatAnalyzer:
    """Fake analyzer: the same landmarks in every frame, no fit or embeddings."""

    def __call__(self, frames, landmarks=None, found=None):
        t = frames.shape[0]
        return E.FrameAnalysis(_CodeAnalyzer.base.expand(t, -1, -1).clone(),
                               torch.ones(t, dtype=torch.bool), None, None, None, None,
                               tuple(frames.shape[-2:]))


def test_self_reenactment_two_sources_paper_frames():
    """num_sources=2 (FSRT "2-Src"): the method gets frames 0 and T-1 as sources, and only
    the driven frames at least ``every`` frames from both are scored (T = 31, every 10:
    frames 10 and 20; with one source 10, 20 and 30)."""
    torch.manual_seed(0)
    clip = torch.rand(31, 3, 16, 16)
    got = []

    def method(source, driving):
        got.append(source)
        out = driving.clone()
        out[-1] = 0.0                   # wrong on frame 30 only
        return out

    r2 = E.self_reenactment(method, clip, _FlatAnalyzer(), every=10, num_sources=2)
    torch.testing.assert_close(got[-1], clip[[0, 30]])
    assert r2["frames"] == 2 and r2["l1"] == 0.0
    r1 = E.self_reenactment(method, clip, _FlatAnalyzer(), every=10)
    assert got[-1].shape[0] == 1 and r1["frames"] == 3
    assert r1["l1"] == pytest.approx(float(clip[30].mean()) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="both sources"):
        E.self_reenactment(method, clip[:15], _FlatAnalyzer(), every=10, num_sources=2)
    with pytest.raises(ValueError, match="num_sources"):
        E.self_reenactment(method, clip, _FlatAnalyzer(), every=10, num_sources=3)


def test_noise_robustness_relative_change_known_answer():
    """A method whose output landmark error is 0.1 + |offset of the perturbed keypoint|_1
    (in the fake analyzer's units): the clean error is 10 sqrt(2) 0.1 px, the noisy error
    10 sqrt(2) (0.1 + s_t) per frame."""
    log = []

    def method(source, driving, *, perturb=None):
        kp = torch.full((driving.shape[0], 10, 2), 0.5)
        s = (perturb(kp) - kp).abs().sum((1, 2)) if perturb is not None else torch.zeros(
            driving.shape[0])
        log.append(s)
        out = driving.clone()
        out[:, 1, 0, 0] = driving[:, 1, 0, 0] + (0.1 + s) / 10
        return out

    clip = torch.rand(9, 3, 8, 8)
    clip[:, 1, 0, 0] = 0.0
    r = E.noise_robustness(method, clip, _CodeAnalyzer(), every=2, low=0.05, high=0.5, seed=0)
    s = log[1]
    assert len(s) == 5 and (s >= 0.1 - 1e-6).all() and (s <= 1.0 + 1e-6).all()
    k = 10 * math.sqrt(2) / 10
    assert r["akd_clean"] == pytest.approx(k * 0.1, rel=1e-4)
    assert r["akd_noisy"] == pytest.approx(float((k * (0.1 + s)).mean()), rel=1e-4)
    assert r["change"] == pytest.approx(float(s.mean()) / 0.1, rel=1e-3)
    # a method without keypoints is unaffected
    r0 = E.noise_robustness(E.copy_driving, clip, _CodeAnalyzer(), every=2)
    assert r0["akd_clean"] == 0.0 and r0["change"] == 0.0


# ----------------------------------------------------------------------------- real media
@pytest.fixture(scope="module")
def analyzer():
    return E.FaceAnalyzer()


@pytest.mark.integration
def test_analyzer_pose_flips_with_the_image(analyzer, media_dir):
    """Mirroring a face negates yaw and roll and keeps pitch (a property of the fit)."""
    from facegeo.image_io import load_image
    from facegeo.landmarks.backends import detect_landmarks
    from facegeo.landmarks.crops import crop_images, face_boxes

    img = load_image(media_dir / "lp_d12.jpg")  # head turned: yaw about -21, pitch -17
    lm = detect_landmarks(img, detector="dlib")
    crop = crop_images(img[None], face_boxes(lm[None]), 256)
    a = analyzer(torch.cat([crop, crop.flip(-1)]))
    assert a.found.all() and a.expression.shape == (2, 53)
    yaw, pitch, roll = a.angles[0]
    assert abs(yaw) > 8
    assert a.angles[1, 0] == pytest.approx(-float(yaw), abs=4)
    assert a.angles[1, 1] == pytest.approx(float(pitch), abs=4)
    assert a.angles[1, 2] == pytest.approx(-float(roll), abs=4)
    # mirrored face: still the same person for the recognition network
    assert float((a.arcface[0] * a.arcface[1]).sum()) > 0.5


@pytest.mark.integration
def test_analyzer_gaze_follows_a_known_iris_shift(analyzer, media_dir):
    """The analyzer's gaze channel on a real face whose irises are moved by known amounts
    (facegeo.landmarks.pupils.shift_iris, lids fixed): the along-axis offset tracks the
    shift, and gaze_r of the moved sequence against its mirror image in time is -1."""
    from facegeo.image_io import load_image
    from facegeo.landmarks.backends import detect_landmarks
    from facegeo.landmarks.crops import crop_images, face_boxes
    from facegeo.landmarks.pupils import locate_pupils, shift_iris

    img = load_image(media_dir / "lp_s12.jpg")
    lm = detect_landmarks(img, detector="dlib")
    crop = crop_images(img[None], face_boxes(lm[None]), 256)
    lm = analyzer.landmarks(crop)[0]
    shifts = torch.tensor([-3.0, -1.5, 0.0, 1.5, 3.0])      # pixels, image x
    t = len(shifts)
    frames = shift_iris(crop.expand(t, -1, -1, -1), lm.expand(t, -1, -1),
                        locate_pupils(crop, lm).expand(t, -1, -1),
                        torch.stack([shifts, torch.zeros(t)], -1)[:, None].expand(-1, 2, -1))
    a = analyzer(frames, lm.expand(t, -1, -1))
    assert a.gaze.shape == (t, 2, 2) and torch.isfinite(a.gaze).all()
    along = a.gaze[..., 0]                                   # (T, 2) in eye widths
    for e in range(2):
        assert float(E.M.pearson(along[:, e], shifts)) > 0.95
    flipped = a.index(torch.arange(t - 1, -1, -1))
    r = E.video_metrics(frames, a, flipped, a.index([0]))
    assert r["gaze_r"] == pytest.approx(-1.0, abs=0.05)
    assert E.video_metrics(frames, a, a, a.index([0]))["gaze_r"] == pytest.approx(1.0)


@pytest.mark.integration
def test_app_self_protocol_with_baselines(media_dir, tmp_path, monkeypatch):
    from facegeo_apps import evaluate as app

    monkeypatch.setattr(E, "fid_network", lambda device=None: _TinyFeatures())

    out = tmp_path / "report.json"
    rc = app.main(["--method", "static", "--data", str(media_dir), "--videos", "lp_d11.mp4",
                   "--max-frames", "9", "--every", "4", "--size", "128", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    rep = json.loads(out.read_text())
    rows = {r["method"]: r for r in rep["rows"]}
    assert set(rows) == {"static source", "copy driving"}
    cp, st = rows["copy driving"]["aggregate"], rows["static source"]["aggregate"]
    assert cp["l1"] == 0.0 and cp["akd"] == 0.0 and cp["psnr"] == 100.0 and cp["prmse"] == 0.0
    assert st["flicker"] == 0.0 and st["sms"] == 0.0
    assert st["csim"] == pytest.approx(1.0, abs=1e-4)
    assert st["l1"] > 0 and st["akd"] > 0
    assert rows["copy driving"]["videos"][0]["frames"] == 2      # frames 4 and 8
    assert cp["fid"] == pytest.approx(0.0, abs=1e-6) and st["fid"] > 0   # stand-in network
    assert "lpips" in rep["skipped"]
    md = out.with_suffix(".md").read_text()
    assert "| static source | relative | 1 |" in md and "skipped" in md


def test_app_reads_preprocessed_frame_folders(media_dir, tmp_path, monkeypatch):
    """A sub-folder of already-cropped frames (the layout apps/train.py preprocess writes)
    is a clip: its frames are used as they are (only resized), never re-cropped."""
    import cv2

    from facegeo.video import read_video
    from facegeo_apps import evaluate as app

    monkeypatch.setattr(E, "fid_network", lambda device=None: None)
    frames, _ = read_video(media_dir / "lp_d11.mp4", max_frames=9)
    clip = tmp_path / "test" / "lp_d11"
    clip.mkdir(parents=True)
    for i, f in enumerate(frames):      # 512x512 video -> 96x96 "crops"
        small = cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(clip / f"{i:06d}.png"), small[:, :, ::-1])
    (tmp_path / "test" / "empty").mkdir()   # no frames: not a clip
    out = tmp_path / "report.json"
    rc = app.main(["--method", "static", "--data", str(tmp_path / "test"), "--max-frames", "9",
                   "--every", "4", "--size", "64", "--out", str(out), "--no-progress"])
    assert rc == 0
    rep = json.loads(out.read_text())
    rows = {r["method"]: r for r in rep["rows"]}
    assert [v["video"] for v in rows["static source"]["videos"]] == ["lp_d11"]
    cp = rows["copy driving"]["aggregate"]
    assert cp["l1"] == 0.0 and rows["copy driving"]["videos"][0]["frames"] == 2
    # the clip is the whole folder resized (no detection crop): same pixels as a resize
    x = app.load_frame_folder(clip, 9, 64)
    assert x.shape == (9, 3, 64, 64)
    ref = torch.nn.functional.interpolate(app.load_frame_folder(clip, 1, 96), size=(64, 64),
                                          mode="bilinear", antialias=True)
    assert torch.allclose(x[:1], ref.clamp(0, 1), atol=1e-6)
    with pytest.raises(app.EvalError, match="no frames"):
        app.load_frame_folder(tmp_path / "test" / "empty", 9, 64)


def test_app_bad_input_exits_2(tmp_path, media_dir, capsys):
    from facegeo_apps import evaluate as app

    assert app.main(["--method", "static", "--data", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "r.json")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert app.main(["--method", "static", "--data", str(media_dir),
                     "--out", str(tmp_path / "r.txt")]) == 2
    assert ".json" in capsys.readouterr().err
    assert app.main(["--method", "static", "--data", str(tmp_path),
                     "--out", str(tmp_path / "r.json")]) == 2
    assert "no videos" in capsys.readouterr().err
    assert app.main(["--method", "static", "--data", str(media_dir), "--videos", "x.mp4",
                     "--out", str(tmp_path / "r.json")]) == 2
    assert "x.mp4" in capsys.readouterr().err
    assert app.main(["--method", "nosuchmodel", "--checkpoint", str(tmp_path),
                     "--data", str(media_dir), "--videos", "lp_d11.mp4",
                     "--out", str(tmp_path / "r.json")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.integration
def test_app_compares_several_methods_in_one_run(media_dir, tmp_path, monkeypatch):
    """--method A B with --checkpoint NAME=PATH: one report, every method on the same
    frames, each row identical to the method evaluated alone; frames/s per row."""
    from facegeo_apps import evaluate as app
    from facegeo_models import pfp_mls, s2d
    from facegeo_models.common import checkpoint as ckpt
    from facegeo_models.common.config import load_config

    monkeypatch.setattr(E, "fid_network", lambda device=None: None)
    torch.manual_seed(0)
    cks = {}
    for name, mod in (("pfp_mls", pfp_mls), ("s2d", s2d)):
        cks[name] = tmp_path / name
        ckpt.save_checkpoint(cks[name], {"model": mod.from_config("tiny")},
                             ckpt.make_model_card(load_config(mod.config_path("tiny"))["model"]))
    common = ["--data", str(media_dir), "--videos", "lp_d11.mp4", "--max-frames", "5",
              "--every", "4", "--size", "64", "--no-progress"]
    both = tmp_path / "both.json"
    assert app.main(["--method", "pfp_mls", "s2d", "--checkpoint", f"pfp_mls={cks['pfp_mls']}",
                     "--checkpoint", f"s2d={cks['s2d']}", "--out", str(both), *common]) == 0
    rows = {r["method"]: r for r in json.loads(both.read_text())["rows"]}
    assert list(rows) == ["pfp_mls", "s2d", "static source", "copy driving"]
    assert all(r["aggregate"]["fps"] > 0 for r in rows.values())
    alone = tmp_path / "alone.json"
    assert app.main(["--method", "s2d", "--checkpoint", str(cks["s2d"]), "--out", str(alone),
                     *common]) == 0
    ref = {r["method"]: r for r in json.loads(alone.read_text())["rows"]}["s2d"]
    for k in ("l1", "psnr", "ssim", "akd"):
        assert rows["s2d"]["aggregate"][k] == pytest.approx(ref["aggregate"][k], rel=1e-6)
    assert "| fps |" in both.with_suffix(".md").read_text()
    # a bare checkpoint is ambiguous with two neural methods; a method named twice
    bad = tmp_path / "bad.json"
    assert app.main(["--method", "pfp_mls", "s2d", "--checkpoint", str(cks["s2d"]),
                     "--out", str(bad), *common]) == 2
    assert app.main(["--method", "s2d", "s2d", "--out", str(bad), *common]) == 2
    assert app.main(["--method", "s2d", "--checkpoint", f"static={cks['s2d']}",
                     "--out", str(bad), *common]) == 2
    assert not bad.exists()


def test_method_labels_and_options_parsing():
    """NAME@LABEL specs and --set METHOD.KEY=VALUE (YAML values; a bare KEY=VALUE with a
    single neural method); malformed entries are errors naming the entry."""
    from facegeo_apps import evaluate as app

    assert app.model_name("ldnet_fdgan@raw") == "ldnet_fdgan" and app.model_name("s2d") == "s2d"
    for bad in ("@x", "s2d@", "s2d@a.b"):
        with pytest.raises(app.EvalError, match="NAME@LABEL"):
            app.model_name(bad)
    ms = ["static", "ldnet_fdgan", "ldnet_fdgan@raw"]
    got = app.method_options(["ldnet_fdgan@raw.front_end=raw", "ldnet_fdgan.line_thickness=2.5",
                              "ldnet_fdgan@raw.widths=[1, 2]"], ms)
    assert got == {"ldnet_fdgan@raw": {"front_end": "raw", "widths": [1, 2]},
                   "ldnet_fdgan": {"line_thickness": 2.5}}
    assert app.method_options(["front_end=3dmm"], ["static", "ldnet_fdgan"]) == \
        {"ldnet_fdgan": {"front_end": "3dmm"}}
    for bad, msg in ((["front_end=3dmm"], "METHOD.KEY"), (["nosuch.k=1"], "METHOD.KEY"),
                     (["static.k=1"], "baseline"), (["ldnet_fdgan.1x=1"], "option name"),
                     (["ldnet_fdgan.front_end"], "METHOD.KEY=VALUE")):
        with pytest.raises(app.EvalError, match=msg):
            app.method_options(bad, ms)


@pytest.mark.integration
def test_app_rows_of_one_model_with_overridden_options(media_dir, tmp_path, monkeypatch):
    """--method ldnet_fdgan ldnet_fdgan@3dmm --set ldnet_fdgan@3dmm.front_end=3dmm: two rows
    of the shipped weights; the 3dmm front end honours relative motion (the LD-Net one
    does not), and the two front ends give different outputs; a misspelt option is an
    error (exit 2) and writes nothing."""
    from facegeo_apps import evaluate as app

    monkeypatch.setattr(E, "fid_network", lambda device=None: None)
    common = ["--data", str(media_dir), "--videos", "lp_d11.mp4", "--sources", "lp_s12.jpg",
              "--protocol", "cross", "--max-frames", "9", "--every", "4", "--size", "64",
              "--no-progress"]
    out = tmp_path / "fe.json"
    assert app.main(["--method", "ldnet_fdgan", "ldnet_fdgan@3dmm", "--set",
                     "ldnet_fdgan@3dmm.front_end=3dmm", "--out", str(out), *common]) == 0
    rep = json.loads(out.read_text())
    rows = {(r["method"], r["mode"]): r["aggregate"] for r in rep["rows"]}
    assert ("ldnet_fdgan@3dmm", "relative") in rows and ("ldnet_fdgan", "relative") not in rows
    assert "ldnet_fdgan / relative" in rep["skipped"]
    a, b = rows[("ldnet_fdgan", "absolute")], rows[("ldnet_fdgan@3dmm", "absolute")]
    assert a["akd"] != pytest.approx(b["akd"], rel=1e-6)
    bad = tmp_path / "bad.json"
    assert app.main(["--method", "ldnet_fdgan", "--set", "front_endd=3dmm", "--out", str(bad),
                     *common]) == 2
    assert not bad.exists()


@pytest.mark.integration
def test_app_two_source_rows(media_dir, tmp_path, monkeypatch):
    """--num-sources 2: fsrt (shipped weights, several sources) is evaluated with the
    clip's first and last frames as sources on the frames 10 frames from both; a
    one-source model is listed as skipped; the cross protocol refuses the flag."""
    from facegeo_apps import evaluate as app

    monkeypatch.setattr(E, "fid_network", lambda device=None: None)
    common = ["--data", str(media_dir), "--videos", "lp_d11.mp4", "--max-frames", "21",
              "--every", "10", "--size", "64", "--no-progress"]
    out = tmp_path / "two.json"
    assert app.main(["--method", "fsrt", "s2d", "--num-sources", "2", "--out", str(out),
                     *common]) == 0
    rep = json.loads(out.read_text())
    rows = {r["method"]: r for r in rep["rows"]}
    assert set(rows) == {"fsrt", "static source", "copy driving"}
    assert rows["fsrt"]["videos"][0]["frames"] == 1                # frame 10 only
    assert "s2d / 2 sources" in rep["skipped"] and rep["settings"]["num_sources"] == 2
    assert math.isfinite(rows["fsrt"]["aggregate"]["l1"])
    assert app.main(["--method", "fsrt", "--num-sources", "2", "--protocol", "cross",
                     "--out", str(tmp_path / "bad.json"), *common]) == 2


@pytest.mark.integration
def test_app_landmark_sources(media_dir, tmp_path, monkeypatch):
    """--landmarks: s2d (landmark-driven) changes with the landmark source, the
    landmark-free baselines do not; the source is recorded; a bad source is exit 2 with
    nothing written."""
    from pathlib import Path

    from facegeo_apps import evaluate as app

    monkeypatch.setattr(E, "fid_network", lambda device=None: None)
    refiner = Path(__file__).resolve().parents[2] / "data" / "s2d" / "refiner.safetensors"
    common = ["--method", "s2d", "--data", str(media_dir), "--videos", "lp_d11.mp4",
              "--max-frames", "9", "--every", "4", "--size", "64", "--no-progress"]
    reps = {}
    for lm in ("tracker", "per-frame", str(refiner)):
        out = tmp_path / f"{len(reps)}.json"
        assert app.main([*common, "--landmarks", lm, "--out", str(out)]) == 0
        rep = json.loads(out.read_text())
        assert rep["settings"]["landmarks"] == lm
        reps[lm] = {r["method"]: r["aggregate"] for r in rep["rows"]}
    a, b, c = reps.values()
    assert a["static source"]["l1"] == b["static source"]["l1"] == c["static source"]["l1"]
    assert a["s2d"]["l1"] != pytest.approx(b["s2d"]["l1"], rel=1e-6)
    assert a["s2d"]["l1"] != pytest.approx(c["s2d"]["l1"], rel=1e-6)
    for bad in ("nosuch", str(tmp_path / "missing.safetensors")):
        out = tmp_path / "bad.json"
        assert app.main([*common, "--landmarks", bad, "--out", str(out)]) == 2
        assert not out.exists()
    # one refiner per weights file and run, shared by every method
    assert app.landmark_source(str(refiner))[1].__self__ is \
        app.landmark_source(str(refiner))[1].__self__


class _TinyFeatures(torch.nn.Module):
    """Stand-in for the FID network: 4 features per image (channel means and contrast)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.std((1, 2, 3))[:, None]], 1) * self.w


def test_dataset_fid_plumbing_and_skip_message(monkeypatch):
    torch.manual_seed(0)
    a = [torch.rand(5, 3, 16, 16), torch.rand(4, 3, 8, 8)]
    net = _TinyFeatures()
    assert E.dataset_fid(a, a, net, batch=3) == pytest.approx(0.0, abs=1e-6)
    b = [x * 0.5 for x in a]
    direct = E.M.fid_from_features(torch.cat([net(x) for x in a]).detach(),
                                   torch.cat([net(x) for x in b]).detach())
    assert E.dataset_fid(a, b, net) == pytest.approx(direct, rel=1e-9) and direct > 0
    # without the asset: None (the report then says FID_SKIP)
    monkeypatch.setenv("FACEGEO_ASSETS", "/nonexistent")
    monkeypatch.setenv("FACEGEO_CACHE", "/nonexistent")
    assert E.fid_network() is None
    assert "inception_fid" in E.FID_SKIP


def test_video_metrics_lpips_when_given_a_network():
    torch.manual_seed(0)
    t = 3
    lm = torch.rand(t, 68, 2) * 50
    an = _analysis(lm, torch.zeros(t, 3), torch.zeros(t, 5), torch.randn(t, 128), size=(48, 48))
    src = an.index(slice(0, 1))
    x, y = torch.rand(t, 3, 48, 48), torch.rand(t, 3, 48, 48)
    net = E.M.LPIPS().eval()
    r = E.video_metrics(x, an, an, src, ground_truth=y, lpips_net=net)
    with torch.no_grad():
        assert r["lpips"] == pytest.approx(float(net(x, y).mean()), rel=1e-5)
    assert math.isnan(E.video_metrics(x, an, an, src, ground_truth=y)["lpips"])


def test_neural_method_from_checkpoint_with_perturbation_hook(tmp_path):
    """apps/evaluate.py drives a facegeo_models model from a checkpoint folder through the
    pipeline; the keypoint hook reaches the model as driving.keypoint_offset (one point per
    frame, x2 units); a mode the model cannot honour is an error, not silence."""
    from facegeo.pipeline import UnsupportedModeError
    from facegeo_apps.evaluate import PipelineMethod
    from facegeo_models import pfp_mls
    from facegeo_models.common import checkpoint as ckpt
    from facegeo_models.common.config import load_config

    torch.manual_seed(0)
    cfg = load_config(pfp_mls.config_path("tiny"))["model"]
    model = pfp_mls.from_config("tiny")
    ckpt.save_checkpoint(tmp_path / "ck", {"model": model}, ckpt.make_model_card(cfg))
    method = PipelineMethod("pfp_mls", str(tmp_path / "ck"), size=64)
    assert method.reenactor.num_keypoints == cfg["params"]["num_points"]
    assert method.modes == ("absolute",)
    src, drv = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with pytest.raises(UnsupportedModeError):
        E.call_method(method, src, drv, mode="relative")
    clean = E.call_method(method, src, drv, mode="absolute")
    # the same frames as the model called directly: the pipeline adds nothing on ready crops
    torch.testing.assert_close(clean, model.eval().reenact(src, drv))
    assert clean.shape == (3, 3, 64, 64)
    hook = E.keypoint_perturbation(0.3, 0.5, generator=torch.Generator().manual_seed(1))
    noisy = E.call_method(method, src, drv, perturb=hook, mode="absolute")
    assert hook.last_offset.shape == (3, 2)
    assert (noisy - clean).abs().max() > 1e-4
    again = E.call_method(method, src, drv, mode="absolute")
    assert torch.allclose(again, clean)


class _StubAnalyzer:
    """Deterministic analysis from pixel content: landmarks shifted by 20 x mean intensity,
    yaw = 30 x mean red, embeddings = the per-channel means (padded), expression = the
    per-channel means."""

    base = torch.rand(68, 2, generator=torch.Generator().manual_seed(2)) * 20 + 5

    def __call__(self, frames):
        m = frames.mean((2, 3))                                      # (T, 3)
        t = frames.shape[0]
        lm = self.base + 20 * m.mean(1)[:, None, None]
        ang = torch.stack([30 * m[:, 0], torch.zeros(t), torch.zeros(t)], 1)
        emb = torch.nn.functional.normalize(torch.cat([m, torch.ones(t, 1)], 1), dim=1)
        return _analysis(lm, ang, m, emb, size=tuple(frames.shape[-2:]))


def test_cross_reenactment_baselines_bound_the_metrics():
    torch.manual_seed(0)
    src, drv = torch.rand(1, 3, 32, 32) * 0.5, torch.rand(4, 3, 32, 32) * 0.5 + 0.5
    st = E.cross_reenactment(E.static_source, src, drv, _StubAnalyzer(), mode="absolute")
    cp = E.cross_reenactment(E.copy_driving, src, drv, _StubAnalyzer())
    assert st["csim"] == pytest.approx(1.0) and st["flicker"] == 0.0 and st["sms"] == 0.0
    assert cp["akd"] == 0.0 and cp["prmse"] == 0.0 and cp["ed"] == 0.0 and cp["aucon"] == 1.0
    assert cp["csim"] < 1.0 and st["akd"] > 0 and st["prmse"] > 0
    for r in (st, cp):
        assert all(math.isnan(r[k]) for k in ("l1", "psnr", "ssim", "ms_ssim", "lpips"))
        assert r["_output"].shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="one image"):
        E.cross_reenactment(E.copy_driving, drv, drv, _StubAnalyzer())
