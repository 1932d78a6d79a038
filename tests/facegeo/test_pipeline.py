"""facegeo.pipeline: conditioning computed only for what a reenactor requires, streaming,
modes, the chunked driving fit, and the registry's view of every model."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from facegeo import transforms as T
from facegeo.morphable import MorphableModel
from facegeo.pipeline import (
    CONDITIONING,
    Conditioning,
    FrameSource,
    ReenactmentPipeline,
    Reenactor,
    UnsupportedModeError,
)
from facegeo.reenact import DrivingTrack, FaceConditioner, FaceFit, GeometricReenactor


@pytest.fixture(scope="module")
def model(assets_dir):
    return MorphableModel.load()


class Recorder(Reenactor):
    """A reenactor that returns its source crop and records what it was given."""

    name = "recorder"

    def __init__(self, requires=("image",), modes=("absolute",), size=64, max_sources=1):
        self.requires = frozenset(requires)
        self.modes = tuple(modes)
        self.image_size = size
        self.max_sources = max_sources
        self.calls: list[Conditioning] = []
        self.encoded = 0

    def encode_source(self, sources):
        self.encoded += 1
        return super().encode_source(sources)

    def reenact(self, sources, driving, *, mode=None):
        self.check_mode(mode)
        self.calls.append(driving)
        return sources.image[:1].expand(len(driving), -1, -1, -1)


# ----------------------------------------------------------------------------- synthetic
def _synthetic_clip(model, t: int, size: int = 128, seed: int = 0):
    """Landmarks (t, 68, 2) of one identity turning its head and moving its jaw, in a
    size x size frame, with the true angles (t, 3)."""
    g = torch.Generator().manual_seed(seed)
    ident = 0.5 * torch.randn(1, model.n_id, generator=g)
    u = torch.linspace(0, 1, t)
    ang = torch.stack([15 * torch.sin(2 * math.pi * u), 6 * torch.sin(4 * math.pi * u),
                       3 * torch.cos(2 * math.pi * u)], 1)
    exp = torch.zeros(t, model.n_exp)
    names = list(model.exp_names)
    exp[:, names.index("jawOpen")] = 0.4 * torch.sin(3 * math.pi * u).clamp_min(0)
    v = model.vertices(ident.expand(t, -1), exp)[:, model.landmarks68.long()]
    scale = torch.full((t,), size / 0.22 * 0.6 / (v[0, :, 0].max() - v[0, :, 0].min()) * 0.22)
    trans = torch.tensor([size / 2, size / 2]).expand(t, 2)
    lm = T.weak_perspective_project(v, T.euler_to_matrix(ang), trans, scale)
    return lm, ang


def test_fixed_identity_fit_recovers_pose_and_keeps_the_identity(model):
    from facegeo.fitting import fit_video

    lm, ang = _synthetic_clip(model, 20)
    joint = fit_video(model, lm, smooth_pose=0.5, smooth_exp=0.05)
    fixed = fit_video(model, lm, smooth_pose=0.5, smooth_exp=0.05,
                      id_coeffs=joint.id_coeffs[0])
    assert torch.equal(fixed.id_coeffs, joint.id_coeffs[:1].expand_as(fixed.id_coeffs))
    assert (fixed.angles - ang).abs().max() < 2.0
    assert fixed.rmse.max() < 1.0
    with pytest.raises(ValueError, match="id_coeffs"):
        fit_video(model, lm, id_coeffs=torch.zeros(3))


def test_a_short_blink_survives_the_driving_fit(model):
    """A 3-frame blink (eyeBlink 1) in a synthetic clip: the default driving fit
    (``smooth_eyes=0``: the eye blendshapes are not smoothed over time) closes the fitted
    eyes as far as the landmarks; smoothing them as the rest of the expression
    (``smooth_eyes=None``) leaves them open for most of it."""
    from facegeo.controls import expression_groups
    from facegeo.metrics import eye_opening

    t, size = 30, 128
    names = list(model.exp_names)
    exp = torch.zeros(t, model.n_exp)
    for side in ("L", "R"):
        exp[14:17, names.index(f"eyeBlink_{side}")] = 1.0
    v = model.vertices(torch.zeros(1, model.n_id).expand(t, -1), exp)[:, model.landmarks68.long()]
    scale = torch.full((t,), 0.6 * size / float(v[0, :, 0].max() - v[0, :, 0].min()))
    lm = T.weak_perspective_project(v, torch.eye(3).expand(t, 3, 3),
                                    torch.tensor([size / 2, size / 2]).expand(t, 2), scale)
    track = DrivingTrack(lm, torch.ones(t, dtype=torch.bool), (size, size), 30.0)
    box = torch.tensor([(size - 1) / 2, (size - 1) / 2, float(size)]).expand(t, 3)
    truth = eye_opening(lm)
    assert truth[15] < 0.25 * truth[0]

    def fitted_opening(cond):
        return eye_opening(_project(model, cond.fit_driving(track, box)))

    sharp = FaceConditioner(model, size=size)
    w = sharp.expression_smoothness()
    eyes = expression_groups(model)["eyes"]
    assert torch.equal(w[eyes], torch.zeros(int(eyes.sum())))
    assert torch.equal(w[~eyes], torch.full((int((~eyes).sum()),), 0.05))
    assert FaceConditioner(model, smooth_eyes=None).expression_smoothness() == 0.05
    e_sharp = fitted_opening(sharp)
    e_smooth = fitted_opening(FaceConditioner(model, size=size, smooth_eyes=None))
    assert (e_sharp[14:17] - truth[14:17]).abs().max() < 0.05
    assert e_smooth[14:17].mean() > truth[14:17].mean() + 0.05
    assert (e_sharp[:10] - truth[:10]).abs().max() < 0.03  # open frames unchanged


def _project(model, fit):
    """(T, 68, 2) crop-pixel landmarks of a FaceFit (weak perspective)."""
    v = model.vertices(fit.id_coeffs, fit.exp_coeffs)[:, model.landmarks68.long()]
    return T.weak_perspective_project(v, fit.rotation, fit.translation, fit.scale)


def test_chunked_driving_fit_matches_the_joint_fit(model):
    """A long clip fitted in chunks (identity estimated once, fixed) is as accurate as the
    joint fit of all frames, and has no jump at the chunk borders."""
    t, size = 150, 128
    lm, ang = _synthetic_clip(model, t, size)
    track = DrivingTrack(lm, torch.ones(t, dtype=torch.bool), (size, size), 30.0)
    box = torch.tensor([(size - 1) / 2, (size - 1) / 2, float(size)]).expand(t, 3)
    joint = FaceConditioner(model, size=size, fit_chunk=1000).fit_driving(track, box)
    chunked = FaceConditioner(model, size=size, fit_chunk=40, fit_overlap=6,
                              identity_frames=16).fit_driving(track, box)
    err_j = (joint.angles - ang).abs().max(1).values
    err_c = (chunked.angles - ang).abs().max(1).values
    assert err_c.median() < err_j.median() + 0.3
    assert err_c.max() < 3.0
    assert (chunked.angles - joint.angles).abs().max() < 1.5
    # frame-to-frame steps at the borders (40, 80, 120) are no larger than elsewhere
    step = (chunked.angles[1:] - chunked.angles[:-1]).abs().max(1).values
    truth = (ang[1:] - ang[:-1]).abs().max(1).values
    assert (step - truth).abs()[[39, 79, 119]].max() < 0.5


# ----------------------------------------------------------------------------- pipeline
def test_image_only_reenactor_gets_crops_and_nothing_else(media_dir):
    """Only the required conditioning is computed: an image-only model gets crops, no
    landmarks or fits, and no 3DMM is loaded; the source is encoded once per video."""
    rec = Recorder(requires=("image",), size=64)
    pipe = ReenactmentPipeline(rec, chunk_size=4)
    assert pipe.conditioner._model is None
    from facegeo.image_io import load_image

    job = pipe.prepare(load_image(media_dir / "lp_s12.jpg"), media_dir / "lp_d12.mp4",
                       max_frames=10)
    frames = list(job.frames())
    assert len(frames) == 10 and frames[0].shape == (3, 64, 64)
    assert pipe.conditioner._model is None and job.driving_fit is None
    assert rec.encoded == 1 and [len(c) for c in rec.calls] == [4, 4, 2]
    c = rec.calls[0]
    assert c.image.shape == (4, 3, 64, 64) and c.landmarks68 is None
    assert c.morphable_fit is None and c.disentangled_landmarks is None
    assert torch.equal(torch.cat([c.frame_index for c in rec.calls]), torch.arange(10))
    with pytest.raises(ValueError, match="was not computed"):
        c.get("morphable_fit")
    # the same crops as cropping the decoded frames with the job's boxes
    from facegeo.landmarks.crops import crop_images
    from facegeo.video import frames_to_tensor, read_video

    raw, _ = read_video(media_dir / "lp_d12.mp4", max_frames=4)
    want = crop_images(frames_to_tensor(raw), job.boxes[:4], 64)
    torch.testing.assert_close(c.image, want)
    # a second pass gives the same frames (the clip is decoded again, not kept)
    again = list(job.frames())
    assert all(torch.equal(a, b) for a, b in zip(frames, again))


def test_landmark_and_disentangled_conditioning(media_dir, model):
    """3DMM conditioning: per-frame fits of the clip, and disentangled landmarks = the source
    identity under the driver's expression and pose. Self-reenactment (the source is the
    first driving frame) in absolute mode reproduces the driving landmarks to a few pixels."""
    from facegeo.video import frames_to_tensor, read_video

    raw, _ = read_video(media_dir / "lp_d9.mp4", max_frames=8)
    clip = frames_to_tensor(raw)
    rec = Recorder(requires=("landmarks68", "morphable_fit", "disentangled_landmarks"),
                   modes=("absolute", "relative"), size=128)
    pipe = ReenactmentPipeline(rec, conditioner=FaceConditioner(model, size=128), crop=False)
    job = pipe.prepare(clip[0], clip)
    list(job.frames(mode="absolute"))
    c = rec.calls[0]
    assert len(c.morphable_fit) == 8 and c.reference is not None
    assert c.disentangled_landmarks.shape == (8, 68, 2)
    err = (c.disentangled_landmarks - c.landmarks68).norm(dim=-1)
    assert err.mean() < 3.0          # 128-px crops: fit + jawline sliding error only
    # relative mode: frame 0 is the reference, so its target is the source's pose and
    # identity with the driver's expression of frame 0
    rec.calls.clear()
    list(job.frames(mode="relative"))
    r = rec.calls[0]
    s = job.sources[0].fit
    want = pipe.conditioner.fit_landmarks68(FaceFit(
        s.rotation, s.scale, s.translation, s.id_coeffs, c.morphable_fit.exp_coeffs[:1]))
    torch.testing.assert_close(r.disentangled_landmarks[:1], want, rtol=0, atol=1e-3)


def test_refine_landmarks_hook_sees_every_frame_and_replaces_the_landmarks(media_dir):
    """``refine_landmarks``: called once with the source image and once with all driving
    frames (read again as an iterable) and their tracked landmarks; what it returns is what
    the reenactor gets (here a known +3 px shift, checked against a run without it)."""
    from facegeo.video import frames_to_tensor, read_video

    raw, _ = read_video(media_dir / "lp_d9.mp4", max_frames=6)
    clip = frames_to_tensor(raw)
    seen = []

    def shift(frames, landmarks):
        frames = list(frames)
        seen.append((len(frames), tuple(frames[0].shape), tuple(landmarks.shape)))
        return landmarks + 3.0

    runs = {}
    for name, hook in (("plain", None), ("shifted", shift)):
        rec = Recorder(requires=("landmarks68",), size=64)
        pipe = ReenactmentPipeline(rec, crop=False, refine_landmarks=hook)
        job = pipe.prepare(clip[0], clip)
        list(job.frames())
        runs[name] = (job, rec.calls[0].landmarks68, job.sources[0].landmarks)
    assert seen == [(1, (3, clip.shape[2], clip.shape[3]), (1, 68, 2)),
                    (6, (3, clip.shape[2], clip.shape[3]), (6, 68, 2))]
    (job0, d0, s0), (job1, d1, s1) = runs["plain"], runs["shifted"]
    torch.testing.assert_close(job1.track.landmarks, job0.track.landmarks + 3.0)
    scale = 64 / max(clip.shape[2], clip.shape[3])                 # crop=False: resized
    torch.testing.assert_close(d1, d0 + 3.0 * scale, atol=1e-4, rtol=0)
    torch.testing.assert_close(s1, s0 + 3.0 * scale, atol=1e-4, rtol=0)


def test_modes_sources_and_unknown_conditioning_are_errors_before_any_work(media_dir):
    from facegeo.image_io import load_image

    src = load_image(media_dir / "lp_s12.jpg")
    with pytest.raises(ValueError, match="unknown conditioning"):
        ReenactmentPipeline(Recorder(requires=("image", "pupils")))
    rec = Recorder(modes=("absolute",))
    pipe = ReenactmentPipeline(rec)
    with pytest.raises(ValueError, match="at most 1 source"):
        pipe.prepare([src, src], media_dir / "lp_d12.mp4", max_frames=2)
    job = pipe.prepare(src, media_dir / "lp_d12.mp4", max_frames=2)
    with pytest.raises(UnsupportedModeError, match="relative"):
        job.frames(mode="relative")      # raised at the call, before any frame is decoded
    with pytest.raises(ValueError, match="mode must be"):
        job.frames(mode="sideways")
    with pytest.raises(ValueError, match="no learned keypoints"):
        job.frames(perturb_keypoints=lambda k: k)
    assert rec.calls == []
    with pytest.raises(FileNotFoundError):
        FrameSource(media_dir / "nope.mp4")


def test_geometric_reenactor_through_the_pipeline_equals_its_renderer(media_dir, model):
    """The pipeline adds nothing to the geometric method: its frames equal rendering the
    target fits of the same conditioning directly."""
    from facegeo.video import frames_to_tensor, read_video

    raw, _ = read_video(media_dir / "lp_d12.mp4", max_frames=5)
    rr = GeometricReenactor(model, size=64)
    from facegeo.image_io import load_image

    job = ReenactmentPipeline(rr, chunk_size=3).prepare(load_image(media_dir / "lp_s12.jpg"),
                                                        frames_to_tensor(raw))
    got = torch.stack(list(job.frames(mode="relative")))
    src = job.sources[0]
    tfit = rr.target_fits(src.fit, job.driving_fit, "relative")
    want = rr.render(src.image, src.fit, tfit, source_landmarks=src.landmarks).frames
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert isinstance(job.driving_fit, FaceFit) and job.n_frames == 5


# ----------------------------------------------------------------------------- registry
def test_list_models_discovers_bundled_models_without_imports():
    code = ("from facegeo_models import list_models, model_info; print(list_models()); "
            "print(model_info('pfp_mls').requires, model_info('geometric').requires)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "'geometric'" in first and "'pfp_mls'" in first
    assert "image" in r.stdout and "morphable_fit" in r.stdout
    assert set(CONDITIONING) >= {"image", "landmarks68", "morphable_fit",
                                 "disentangled_landmarks"}


def test_load_reenactor_errors(monkeypatch):
    from facegeo_models import load_reenactor, model_info

    with pytest.raises(KeyError, match="installed models: .*geometric"):
        model_info("no_such_model")
    with pytest.raises(ValueError, match="no weights"):
        load_reenactor("geometric", checkpoint="x.safetensors")
    # a model without data/<name>/ (every model ships weights now: hide pfp_mls's)
    monkeypatch.setattr(model_info("pfp_mls").builder, "default_checkpoint",
                        classmethod(lambda cls: None))
    with pytest.raises(FileNotFoundError, match="ships no trained weights"):
        load_reenactor("pfp_mls")


# ----------------------------------------------------------------------------- reliability
def test_checkpoint_with_nan_weights_is_refused(tmp_path, media_dir, capsys):
    """A broken (diverged) checkpoint is an error on load, in the library and in the app,
    not an all-black video with exit 0."""
    from facegeo_apps import reenact as app
    from facegeo_models.common import checkpoint as ckpt
    from facegeo_models.pfp_mls import PFPMLS

    net = PFPMLS.from_config("tiny")
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("nan"))
    cfg = PFPMLS.load_config("tiny")
    ckpt.save_checkpoint(tmp_path / "ck", {"model": net}, ckpt.make_model_card(cfg["model"]))
    ckpt.save_weights(tmp_path / "w.safetensors", net)
    with pytest.raises(ValueError, match="NaN/inf"):
        PFPMLS.load_pretrained(tmp_path / "ck")
    with pytest.raises(ValueError, match="NaN/inf"):
        PFPMLS.load_pretrained(tmp_path / "w.safetensors", config="tiny")
    out = tmp_path / "o.mp4"
    rc = app.main(["--source", str(media_dir / "lp_s12.jpg"), "--driving",
                   str(media_dir / "lp_d12.mp4"), "--output", str(out), "--model", "pfp_mls",
                   "--checkpoint", str(tmp_path / "ck"), "--max-frames", "2", "--quiet"])
    assert rc == 2 and "NaN/inf" in capsys.readouterr().err and not out.exists()


def test_non_finite_output_names_the_model_and_frames(media_dir):
    from facegeo.image_io import load_image
    from facegeo.pipeline import NonFiniteOutputError

    class Broken(Recorder):
        def reenact(self, sources, driving, *, mode=None):
            out = super().reenact(sources, driving, mode=mode).clone()
            out[driving.frame_index == 2] = float("nan")
            return out

    job = ReenactmentPipeline(Broken(), chunk_size=2).prepare(
        load_image(media_dir / "lp_s12.jpg"), media_dir / "lp_d12.mp4", max_frames=4)
    it = job.frames()
    assert next(it).shape == (3, 64, 64) and next(it) is not None      # frames 0, 1 are fine
    with pytest.raises(NonFiniteOutputError, match=r"recorder .*frame\(s\) \[2\]"):
        next(it)


def test_memory_guard_refuses_before_the_work(media_dir, monkeypatch, model):
    """An estimate of the memory a run needs is checked against what the machine has, before
    any frame is rendered: the one-call API keeps every output frame, streaming does not."""
    from facegeo import pipeline as P
    from facegeo.image_io import load_image
    from facegeo.reenact import reenact

    rec = Recorder()
    job = ReenactmentPipeline(rec).prepare(load_image(media_dir / "lp_s12.jpg"),
                                           media_dir / "lp_d12.mp4", max_frames=3)
    stream, kept = job.memory_estimate(), job.memory_estimate(keep_frames=True)
    assert kept - stream == 3 * 3 * 64 * 64 * 4                  # three kept 64x64 outputs
    monkeypatch.setattr(P, "available_memory", lambda: stream + 1)
    list(job.frames())                                           # streaming fits
    with pytest.raises(P.InsufficientMemoryError, match="GiB"):
        job.frames(keep_frames=True)
    monkeypatch.setattr(P, "available_memory", lambda: 1024)
    rr = GeometricReenactor(model, size=64)
    calls = []
    monkeypatch.setattr(rr, "render", lambda *a, **k: calls.append(1))
    from facegeo.video import frames_to_tensor, read_video

    raw, _ = read_video(media_dir / "lp_d12.mp4", max_frames=2)
    with pytest.raises(P.InsufficientMemoryError, match="needs about"):
        reenact(load_image(media_dir / "lp_s12.jpg"), frames_to_tensor(raw), reenactor=rr)
    assert calls == []
