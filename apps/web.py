"""A local web app (Gradio): edit a portrait's head pose and expression live, or reenact it.

Usage::

    facegeo-web [--host 127.0.0.1] [--port 7860] [--size 256] [--device auto]
                [--max-file-size 20mb] [--max-frames 300] [--threads 1]
    python apps/web.py ...                 # the same, from a checkout

Then open http://127.0.0.1:7860 in a browser. Two tabs:

* **Edit**: upload a portrait; it is detected and fitted once (3DMM: identity, expression,
  pose), and every slider move re-renders the geometric warp from that cached fit. Sliders:
  head yaw / pitch / roll (absolute degrees, starting at the fitted pose), the main ICT
  blendshapes (jaw open, smile L/R, blink L/R, brows up / down, gaze; starting at the fitted
  weights) and an expression scale. A mesh-overlay toggle; export of the current frame (PNG)
  or of an interpolation video from the uploaded photo as fitted to the current setting (the
  blend of ``facegeo-interpolate``: slerp rotation, linear expression).
* **Reenact**: a source portrait and a driving video (or one driving image) -> a video (or
  image) with a progress bar; relative / absolute mode, crop or paste-back, the model
  (``geometric`` by default, or a registered neural model with an optional checkpoint).

Bad input (no face, an unreadable video, a clip longer than ``--max-frames``...) is shown in
the page as the same one-line message the command-line apps print; uploads larger than
``--max-file-size`` are refused by the server. It listens on 127.0.0.1 (this machine only)
unless ``--host`` says otherwise. See docs/web.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import math
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facegeo_apps._cli import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    CLIError,
    check_fps,
    check_frames,
    check_input,
    is_image_path,
    load_model,
    load_source_image,
    pick_device,
    pick_source_face,
    run_main,
)

__all__ = ["main", "build_parser", "build_app", "serve", "WebApp", "EditState", "SLIDERS",
           "USER_ERRORS"]

#: errors shown to the user as one line (the same classes the CLI's run_main reports)
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError,
    NotADirectoryError, ImportError, KeyError)

DEFAULT_PORT = 7860
#: uploads above this are refused by the server (Gradio's max_file_size)
DEFAULT_MAX_FILE_SIZE = "20mb"
#: driving clips longer than this are refused (rendering cost grows with the length; 300 =
#: 10 s at 30 fps, about 10-20 s of work on a 2-core CPU)
DEFAULT_MAX_FRAMES = 300


@dataclass(frozen=True)
class Slider:
    """An Edit-tab expression slider.

    ``names`` maps ICT blendshape names to a sign: the slider value ``v`` sets
    ``w[name] = max(0, sign * v)`` (a signed slider drives two opposite blendshapes, e.g.
    gaze left / right). Its starting value is the mean of ``sign * w[name]`` over the
    names of the fitted source (positive and negative parts combined).
    """

    key: str
    label: str
    names: dict[str, float]
    low: float = 0.0
    high: float = 1.0


#: the Edit tab's expression sliders (ICT-FaceKit names; a slider whose blendshapes the
#: loaded 3DMM lacks is left out). ICT's _L / _R are the subject's left / right.
SLIDERS: tuple[Slider, ...] = (
    Slider("jaw_open", "jaw open", {"jawOpen": 1.0}),
    Slider("smile_l", "smile left", {"mouthSmile_L": 1.0}),
    Slider("smile_r", "smile right", {"mouthSmile_R": 1.0}),
    Slider("blink_l", "blink left", {"eyeBlink_L": 1.0}),
    Slider("blink_r", "blink right", {"eyeBlink_R": 1.0}),
    Slider("brows_up", "brows up", {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0,
                                    "browOuterUp_L": 1.0, "browOuterUp_R": 1.0}),
    Slider("brows_down", "brows down", {"browDown_L": 1.0, "browDown_R": 1.0}),
    # + = the eyes look to the subject's left: the left eye looks out, the right eye in
    Slider("gaze_h", "gaze (+ subject's left)", {"eyeLookOut_L": 1.0, "eyeLookIn_R": 1.0,
                                                 "eyeLookIn_L": -1.0, "eyeLookOut_R": -1.0},
           -1.0, 1.0),
    Slider("gaze_v", "gaze (+ up)", {"eyeLookUp_L": 1.0, "eyeLookUp_R": 1.0,
                                     "eyeLookDown_L": -1.0, "eyeLookDown_R": -1.0},
           -1.0, 1.0),
)

#: head-angle sliders: (key, label, limit in degrees); the limits of facegeo-interpolate
POSE = (("yaw", "yaw (+ nose to image right)", 90.0), ("pitch", "pitch (+ head down)", 60.0),
        ("roll", "roll (+ counter-clockwise)", 90.0))
#: expression scale range (multiplies every blendshape weight, clamped to [0, 1])
SCALE_RANGE = (0.0, 2.0)
#: the preview's encoding: JPEG, 4 ms for 256 x 256 against 60-80 ms for PNG or WebP
#: (Gradio's encoders, measured); the exports are lossless PNG and H.264 at crf 18
PREVIEW_FORMAT = "jpeg"
#: slider steps: head angles (degrees) and blendshape weights; the starting values are the
#: fitted ones rounded to these steps, and a slider left at its start keeps the exact fit
POSE_STEP, EXP_STEP = 1.0, 0.01
#: a slider counts as moved when it differs from its (rounded) start by more than this
_MOVED = 1e-4


class UserError(ValueError):
    """A bad-input message for the page (raised as gr.Error by the UI wrappers)."""


# ----------------------------------------------------------------------------- edit state
@dataclass
class EditState:
    """The cached fit of one uploaded portrait (one per browser session).

    Attributes:
        source: :class:`facegeo.reenact.SourceState` (crop (1, 3, S, S), fit, box...).
        start: starting slider values (key -> value): the fitted angles and weights,
            rounded to the slider steps (a slider at its start keeps the exact fit).
        name: the uploaded file's name.
        fit_seconds: time of detection + fit.
        notes: notices of the fit (several faces, alpha channel), for the page.
    """

    source: object
    start: dict[str, float]
    name: str = ""
    fit_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _snap(x: float, step: float) -> float:
    """``x`` rounded to a multiple of ``step`` (as the page's slider shows it)."""
    return round(round(float(x) / step) * step, 6)


def _clean(msg: str, paths=()) -> str:
    """One line for the page: upload temp folders replaced by the file name."""
    for p in paths:
        if p:
            msg = msg.replace(str(p), Path(p).name)
    return msg.strip().replace("\n", " ")


@contextlib.contextmanager
def user_errors(*paths):
    """Turn the errors the CLI reports as ``error: ...`` into :class:`UserError` (the same
    message, without the server's temporary upload folders). ``FACEGEO_TRACEBACK=1``
    re-raises them unchanged, as in the CLI."""
    from facegeo.assets import AssetNotFoundError

    try:
        yield
    except UserError:
        raise
    except (*USER_ERRORS, AssetNotFoundError) as e:
        if os.environ.get("FACEGEO_TRACEBACK"):
            raise
        msg = str(e) if not isinstance(e, KeyError) else str(e.args[0] if e.args else e)
        raise UserError(_clean(msg, paths)) from None


class WebApp:
    """The callbacks of the web app, independent of Gradio (unit-testable).

    Args:
        size: working resolution S of the Edit tab and of the geometric reenactor.
        device: torch device (``auto``, ``cpu``, ``cuda``...).
        max_frames: longest driving clip accepted (frames).
        outdir: where exported files are written (default: a new temporary folder).
    """

    def __init__(self, size: int = 256, device: str | None = "auto",
                 max_frames: int = DEFAULT_MAX_FRAMES, outdir: str | os.PathLike | None = None):
        if not isinstance(size, int) or not 32 <= size <= 2048:
            raise CLIError(f"--size must be in [32, 2048], got {size}")
        check_frames(max_frames, "--max-frames", low=1)
        self.size = size
        self.device = pick_device(device)
        self.max_frames = max_frames
        self.outdir = Path(outdir) if outdir else Path(tempfile.mkdtemp(prefix="facegeo-web-"))
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._reenactors: dict = {}
        self._lock = threading.Lock()
        self.last_render_ms: float | None = None

    # -- models -------------------------------------------------------------------------
    @property
    def geometric(self):
        """The shared :class:`facegeo.reenact.GeometricReenactor` (size S)."""
        return self.reenactor("geometric")

    def reenactor(self, name: str = "geometric", checkpoint: str | None = None,
                  config: str | None = None):
        """A :class:`facegeo.pipeline.Reenactor` by registry name, cached per
        (name, checkpoint, config)."""
        from facegeo_models import list_models, load_reenactor

        key = (name, checkpoint or None, config or None)
        with self._lock:
            if key not in self._reenactors:
                if name != "geometric" and name not in list_models():
                    raise CLIError(f"unknown model {name!r}; installed models: "
                                   f"{', '.join(list_models())}")
                if name == "geometric":
                    if checkpoint or config:
                        raise CLIError("a checkpoint/config is only used with a neural model")
                    rr = load_reenactor("geometric", device=self.device, model=load_model(),
                                        size=self.size)
                else:
                    if config and not checkpoint:
                        raise CLIError("a config describes a bare .safetensors checkpoint; "
                                       "give one")
                    if checkpoint and not Path(checkpoint).expanduser().exists():
                        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
                    rr = load_reenactor(name, checkpoint=checkpoint or None,
                                        config=config or None, device=self.device)
                self._reenactors[key] = rr
            return self._reenactors[key]

    @property
    def sliders(self) -> tuple[Slider, ...]:
        """The expression sliders whose blendshapes the 3DMM has."""
        names = set(load_model().exp_names or [])
        return tuple(s for s in SLIDERS if set(s.names) <= names)

    @property
    def keys(self) -> list[str]:
        """Slider keys in the order of :meth:`render` arguments: pose, expression, scale."""
        return [k for k, _, _ in POSE] + [s.key for s in self.sliders] + ["scale"]

    # -- Edit tab -----------------------------------------------------------------------
    def fit(self, path: str | os.PathLike) -> EditState:
        """Detect and fit an uploaded portrait once -> :class:`EditState`.

        Raises:
            UserError: unreadable image, no face... (the CLI's messages).
        """
        if path is None:
            raise UserError("upload a portrait first")
        with user_errors(path):
            p = check_input(path, "source image")
            if not is_image_path(p):
                raise CLIError(f"the source must be an image ({', '.join(IMAGE_SUFFIXES)}), "
                               f"got {p.name}")
            rr = self.geometric
            notes = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(notes):
                img = load_source_image(p)
                lm = pick_source_face(img, 0, rr.detector)
            src = rr.fit_source(img, lm, crop=True)
            secs = time.perf_counter() - t0
        model = load_model()
        names = list(model.exp_names or [])
        w = src.fit.exp_coeffs[0].cpu()
        start = {k: _snap(a, POSE_STEP) for (k, _, _), a in zip(POSE,
                                                                  src.fit.angles[0].tolist())}
        for s in self.sliders:
            vals = [sign * float(w[names.index(n)]) for n, sign in s.names.items()]
            start[s.key] = _snap(np.clip(np.mean(vals) * (2 if s.low < 0 else 1), s.low,
                                         s.high), EXP_STEP)
        start["scale"] = 1.0
        lines = [ln.strip().removeprefix("note: ") for ln in notes.getvalue().splitlines()
                 if ln.strip()]
        state = EditState(src, start, Path(path).name, secs, [_clean(x, [p]) for x in lines])
        self.render(state, [start[k] for k in self.keys])  # warm-up (the first one compiles)
        return state

    def target_fit(self, state: EditState, values):
        """The one-row :class:`facegeo.reenact.FaceFit` of the slider ``values`` (in
        :attr:`keys` order): moved sliders replace the fitted angles / weights; the
        expression scale multiplies every weight (clamped to [0, 1])."""
        from facegeo import transforms as T
        from facegeo.reenact import FaceFit, expression_from_names

        v = dict(zip(self.keys, (float(x) for x in values)))
        if len(v) != len(self.keys) or not all(math.isfinite(x) for x in v.values()):
            raise UserError(f"expected {len(self.keys)} finite slider values")
        sf = state.source.fit
        ang = sf.angles.clone()
        for k, (key, _, limit) in enumerate(POSE):
            if abs(v[key] - state.start[key]) > _MOVED:
                ang[:, k] = float(np.clip(v[key], -limit, limit))
        weights: dict[str, float] = {}
        for s in self.sliders:
            if abs(v[s.key] - state.start[s.key]) > _MOVED:
                x = float(np.clip(v[s.key], s.low, s.high))
                weights.update({n: max(0.0, sign * x) for n, sign in s.names.items()})
        exp = expression_from_names(load_model(), weights, sf.exp_coeffs.cpu())
        scale = float(np.clip(v["scale"], *SCALE_RANGE))
        if abs(scale - 1.0) > 1e-6:
            exp = (exp * scale).clamp(0.0, 1.0)
        rot = T.euler_to_matrix(ang.to(sf.rotation)).to(sf.rotation)
        return FaceFit(rot, sf.scale, sf.translation, sf.id_coeffs, exp.to(sf.exp_coeffs))

    def _frames(self, state: EditState, fits, overlay: bool, paste: bool) -> torch.Tensor:
        """(B, 3, S, S) renders of B target fits (with the mesh overlay), or pasted back
        into the full photo (B, 3, H, W)."""
        from facegeo.landmarks.crops import paste_back
        from facegeo_apps.interpolate import _mesh_overlay

        rr, src = self.geometric, state.source
        out = rr.render(src.image, src.fit, fits, source_landmarks=src.landmarks).frames
        if overlay:
            out = _mesh_overlay(rr, fits, out)
        if paste:
            n = out.shape[0]
            out = paste_back(src.full.expand(n, -1, -1, -1), out, src.box[None].expand(n, 3),
                             feather=0.1)
        return out

    def render(self, state: EditState | None, values, overlay: bool = False) -> np.ndarray:
        """The preview: (S, S, 3) uint8 of the current slider values, from the cached fit
        (no detection, no fitting)."""
        if state is None:
            raise UserError("upload a portrait first")
        t0 = time.perf_counter()
        with torch.no_grad():
            frame = self._frames(state, self.target_fit(state, values), overlay, False)[0]
        out = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        self.last_render_ms = 1000 * (time.perf_counter() - t0)
        return out

    def export_frame(self, state: EditState | None, values, overlay: bool = False,
                     paste: bool = False) -> Path:
        """Write the current frame as PNG (the S x S crop, or pasted into the full photo)."""
        from facegeo.image_io import save_image

        if state is None:
            raise UserError("upload a portrait first")
        with torch.no_grad():
            frame = self._frames(state, self.target_fit(state, values), overlay, paste)[0]
        out = self.outdir / f"{Path(state.name).stem or 'frame'}_edit_{uuid.uuid4().hex[:6]}.png"
        return save_image(out, frame.cpu())

    def export_video(self, state: EditState | None, values, overlay: bool = False,
                     paste: bool = False, n_frames: int = 30, fps: float = 30.0,
                     progress=None) -> Path:
        """Write an interpolation video: alpha 0 -> 1 from the uploaded photo as fitted to
        the current setting (:func:`facegeo.reenact.interpolate_fits`, as
        ``facegeo-interpolate``). ``progress(done, total)`` is called per chunk."""
        from facegeo.reenact import interpolate_fits
        from facegeo.video import write_video

        if state is None:
            raise UserError("upload a portrait first")
        with user_errors():
            check_frames(int(n_frames), "frames")
            check_fps(float(fps), "fps")
        n_frames = int(n_frames)
        sf = state.source.fit
        tgt = self.target_fit(state, values)
        alpha = torch.linspace(0.0, 1.0, n_frames, device=sf.rotation.device)
        fits = interpolate_fits(sf, tgt, alpha)

        def frames():
            for i in range(0, n_frames, 16):
                with torch.no_grad():
                    res = self._frames(state, fits.index(slice(i, i + 16)), overlay, paste)
                yield from res.cpu()
                if progress is not None:
                    progress(min(n_frames, i + 16), n_frames)

        out = self.outdir / f"{Path(state.name).stem or 'edit'}_blend_{uuid.uuid4().hex[:6]}.mp4"
        return write_video(out, frames(), float(fps))

    # -- Reenact tab --------------------------------------------------------------------
    def reenact(self, source: str | None, driving: str | None, mode: str = "relative",
                paste: bool = False, model: str = "geometric", checkpoint: str | None = None,
                config: str | None = None, max_frames: int | None = None,
                progress=None) -> Path:
        """Animate ``source`` with ``driving`` (video, or one image) -> the output file (an
        .mp4, or a .png for a driving image). ``progress(done, total, stage)`` is called
        while tracking and rendering.

        Raises:
            UserError: missing input, no face, unreadable or too long a video, a mode the
            model cannot honour... (the CLI's messages).
        """
        from facegeo.image_io import save_image
        from facegeo.pipeline import ReenactmentPipeline
        from facegeo.video import video_info, write_video

        if source is None:
            raise UserError("upload a source portrait")
        if driving is None:
            raise UserError("upload a driving video (or a driving image)")
        with user_errors(source, driving, checkpoint, config):
            src_p = check_input(source, "source image")
            drv_p = check_input(driving, "driving file")
            if not is_image_path(src_p):
                raise CLIError(f"the source must be an image ({', '.join(IMAGE_SUFFIXES)}), "
                               f"got {src_p.name}")
            drv_image = is_image_path(drv_p)
            if not drv_image and drv_p.suffix.lower() not in _video_suffixes():
                raise CLIError(f"the driving file must be a video ({', '.join(VIDEO_SUFFIXES)}"
                               f"...) or an image, got {drv_p.name}")
            limit = self.max_frames
            if max_frames:
                max_frames = int(max_frames)
                if not 1 <= max_frames <= limit:
                    raise CLIError(f"use only the first N frames: N must be in [1, {limit}], "
                                   f"got {max_frames}")
            if not drv_image:
                n = video_info(drv_p).frames  # raises VideoReadError when unreadable
                if n and n > limit and not max_frames:
                    raise CLIError(f"the driving video {drv_p.name} is too long: {n} frames; "
                                   f"this server renders at most {limit} (use only the first "
                                   f"N frames, or start it with --max-frames)")
            rr = self.reenactor(model, checkpoint or None, config or None)
            mode = rr.check_mode(mode or None)
            pipe = ReenactmentPipeline(rr, device=self.device,
                                       size=self.size if model == "geometric" else None)
            img = load_source_image(src_p)
            lm = pick_source_face(img, 0, pipe.conditioner.detector)
            total = 1 if drv_image else (min(n, max_frames or n) if n else None)
            done = [0]

            def tracked(k):
                done[0] += k
                if progress is not None:
                    progress(done[0], total, "tracking the driving face")

            # one frame more than the limit: a clip whose length the container does not
            # say is refused once it proves too long
            job = pipe.prepare(img, str(drv_p), max_frames=max_frames or limit + 1,
                               progress=tracked, source_landmarks=[lm])
            if job.n_frames > limit:
                raise CLIError(f"the driving video {drv_p.name} is too long: more than "
                               f"{limit} frames (use only the first N frames, or start the "
                               "server with --max-frames)")
            if not job.track.good.any():
                raise CLIError(f"no face found in any frame of the driving file {drv_p.name}")
            n_out = job.n_frames
            done[0] = 0

            def rendered(k):
                done[0] += k
                if progress is not None:
                    progress(done[0], n_out, "rendering")

            stem = f"{src_p.stem}_by_{drv_p.stem}_{uuid.uuid4().hex[:6]}"
            frames = job.frames(mode=mode, paste=paste, progress=rendered)
            if drv_image:
                out = save_image(self.outdir / f"{stem}.png", next(iter(frames)).cpu())
                rendered(1)  # the generator reports after the chunk; it is not resumed
            else:
                out = write_video(self.outdir / f"{stem}.mp4", (f.cpu() for f in frames),
                                  job.fps, audio_from=job.audio)
        self.last_reenact = {"frames": n_out, "missing": job.n_missing, "fps": job.fps,
                             "mode": mode, "model": rr.name}
        return out


def _video_suffixes() -> tuple[str, ...]:
    from facegeo.video import VIDEO_SUFFIXES as READ

    return tuple(READ)


# ----------------------------------------------------------------------------- the page
def build_app(app: WebApp):
    """The Gradio Blocks of ``app`` (element ids ``edit-*`` / ``reenact-*`` for tests).

    Raises:
        MissingExtraError: gradio is not installed (``pip install "facegeo[web]"``).
    """
    from facegeo._optional import require

    gr = require("gradio", "the web app (apps/web.py)")

    def guard(fn):
        """Run a callback; :class:`UserError` -> ``gr.Error`` (shown in the page)."""
        @functools.wraps(fn)  # keeps the signature: Gradio finds gr.Progress parameters in it
        def wrapped(*args, **kw):
            try:
                return fn(*args, **kw)
            except UserError as e:
                raise gr.Error(str(e), print_exception=False) from None

        return wrapped

    from facegeo_models import list_models

    keys = app.keys
    with gr.Blocks(title="facegeo", analytics_enabled=False) as demo:
        gr.Markdown("## facegeo: disentangled head pose and expression, on a CPU, no training")
        with gr.Tab("Edit", id="edit"):
            state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1):
                    src = gr.Image(type="filepath", label="portrait", elem_id="edit-source",
                                   sources=["upload", "clipboard"], height=300)
                    status = gr.Markdown("Upload a portrait: it is fitted once, then every "
                                         "slider move re-renders from that fit.",
                                         elem_id="edit-status")
                with gr.Column(scale=1):
                    preview = gr.Image(type="numpy", format=PREVIEW_FORMAT, label="preview",
                                       elem_id="edit-preview", interactive=False, height=300)
                    timing = gr.Markdown("", elem_id="edit-timing")
            with gr.Row():
                with gr.Column():
                    pose = [gr.Slider(-limit, limit, 0.0, step=POSE_STEP, label=label,
                                      elem_id=f"edit-{key}") for key, label, limit in POSE]
                with gr.Column():
                    exps = [gr.Slider(s.low, s.high, 0.0, step=EXP_STEP, label=s.label,
                                      elem_id=f"edit-{s.key}") for s in app.sliders]
            with gr.Row():
                scale = gr.Slider(*SCALE_RANGE, 1.0, step=0.05, label="expression scale",
                                  elem_id="edit-scale")
                overlay = gr.Checkbox(False, label="mesh overlay", elem_id="edit-overlay")
                paste = gr.Checkbox(False, label="exports: paste back into the full photo",
                                    elem_id="edit-paste")
                reset = gr.Button("reset to the photo", elem_id="edit-reset")
            with gr.Row():
                n_frames = gr.Number(30, label="video frames", precision=0, minimum=2,
                                     maximum=600, elem_id="edit-frames")
                fps = gr.Number(30, label="fps", minimum=1, maximum=240, elem_id="edit-fps")
                b_frame = gr.Button("export frame (PNG)", elem_id="edit-export-frame")
                b_video = gr.Button("export video: photo -> current setting",
                                    elem_id="edit-export-video")
            exported = gr.File(label="exported file", elem_id="edit-file", interactive=False)
            sliders = [*pose, *exps, scale]  # the order of app.keys

            def on_upload(path):
                if path is None:
                    return (None, *[gr.update() for _ in keys], None,
                            "Upload a portrait.", "")
                st = app.fit(path)
                vals = [st.start[k] for k in keys]
                a = st.source.fit.angles[0].tolist()
                msg = (f"**{st.name}**: fitted in {st.fit_seconds:.2f} s (once); yaw "
                       f"{a[0]:.1f}, pitch {a[1]:.1f}, roll {a[2]:.1f} deg.")
                if st.notes:
                    msg += " " + "; ".join(st.notes) + "."
                return (st, *vals, app.render(st, vals), msg,
                        f"render {app.last_render_ms:.0f} ms")

            def on_slide(st, *args):
                *vals, ov = args
                img = app.render(st, vals, bool(ov))
                return img, f"render {app.last_render_ms:.0f} ms (from the cached fit)"

            def on_reset(st):
                if st is None:
                    raise UserError("upload a portrait first")
                vals = [st.start[k] for k in keys]
                return (*vals, app.render(st, vals), f"render {app.last_render_ms:.0f} ms")

            def on_frame(st, *args):
                *vals, ov, pb = args
                return str(app.export_frame(st, vals, bool(ov), bool(pb)))

            def on_video(st, *args, progress=gr.Progress()):  # noqa: B008
                *vals, ov, pb, n, f = args
                return str(app.export_video(
                    st, vals, bool(ov), bool(pb), int(n or 30), float(f or 30),
                    progress=lambda d, t: progress((d, t), desc="rendering", unit="frames")))

            src.change(guard(on_upload), src, [state, *sliders, preview, status, timing],
                       show_progress="minimal")
            for ctl in [*sliders, overlay]:
                ctl.input(guard(on_slide), [state, *sliders, overlay], [preview, timing],
                          trigger_mode="always_last", show_progress="hidden")
            reset.click(guard(on_reset), state, [*sliders, preview, timing])
            b_frame.click(guard(on_frame), [state, *sliders, overlay, paste], exported)
            b_video.click(guard(on_video), [state, *sliders, overlay, paste, n_frames, fps],
                          exported)

        with gr.Tab("Reenact", id="reenact"):
            with gr.Row():
                r_src = gr.Image(type="filepath", label="source portrait",
                                 elem_id="reenact-source", height=260)
                r_drv = gr.File(label="driving video (or one driving image)",
                                elem_id="reenact-driving",
                                file_types=list(_video_suffixes()) + list(IMAGE_SUFFIXES))
            with gr.Row():
                r_mode = gr.Radio(["relative", "absolute"], value="relative", label="mode",
                                  elem_id="reenact-mode",
                                  info="relative: the driver's motion applied to the source "
                                       "pose; absolute: the driver's pose and framing")
                r_paste = gr.Checkbox(False, label="paste back into the full photo "
                                      "(default: the face crop)", elem_id="reenact-paste")
                r_max = gr.Number(0, label=f"use only the first N frames (0 = all, at most "
                                  f"{app.max_frames})", precision=0, minimum=0,
                                  maximum=app.max_frames, elem_id="reenact-max-frames")
            with gr.Row():
                r_model = gr.Dropdown(list_models(), value="geometric", label="model",
                                      elem_id="reenact-model")
                r_ckpt = gr.Textbox("", label="checkpoint (neural models: a folder or a "
                                    ".safetensors path on the server; empty = shipped weights)",
                                    elem_id="reenact-checkpoint")
                r_cfg = gr.Textbox("", label="config (of a bare .safetensors)",
                                   elem_id="reenact-config")
            r_run = gr.Button("reenact", variant="primary", elem_id="reenact-run")
            with gr.Row():
                r_video = gr.Video(label="result", elem_id="reenact-video", interactive=False,
                                   height=360)
                r_image = gr.Image(label="result (driving image)", elem_id="reenact-image",
                                   interactive=False, visible=False, height=360)
            r_file = gr.File(label="download", elem_id="reenact-file", interactive=False)
            r_info = gr.Markdown("", elem_id="reenact-info")

            def on_reenact(s, d, mode, pb, model, ckpt, cfg, nmax,
                           progress=gr.Progress()):  # noqa: B008
                def prog(done, total, stage):
                    progress((done, total) if total else None, desc=stage, unit="frames")

                out = app.reenact(s, d, mode, bool(pb), model, ckpt or None, cfg or None,
                                  int(nmax or 0) or None, progress=prog)
                r = app.last_reenact
                info = (f"{r['frames']} frames at {r['fps']:g} fps; model {r['model']}, "
                        f"{r['mode']} mode")
                if r["missing"]:
                    info += (f"; {r['missing']} driving frames had no face (they hold the "
                             "last good pose)")
                if out.suffix == ".png":
                    return (gr.update(value=None, visible=False),
                            gr.update(value=str(out), visible=True), str(out), info)
                return (gr.update(value=str(out), visible=True),
                        gr.update(value=None, visible=False), str(out), info)

            r_run.click(guard(on_reenact),
                        [r_src, r_drv, r_mode, r_paste, r_model, r_ckpt, r_cfg, r_max],
                        [r_video, r_image, r_file, r_info], concurrency_limit=1)
    return demo


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(app: WebApp, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          max_file_size: str | int = DEFAULT_MAX_FILE_SIZE, block: bool = True):
    """Launch the page; returns the Gradio Blocks (``block=False``: in a background
    thread; stop it with ``.close()``)."""
    demo = build_app(app)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, max_file_size=max_file_size,
                prevent_thread_lock=not block, quiet=True, ssr_mode=False,
                allowed_paths=[str(app.outdir)], show_error=True, footer_links=[])
    return demo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facegeo-web", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0 = every network interface)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default 7860)")
    p.add_argument("--size", type=int, default=256, help="working resolution (default 256)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1...")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1, as the other apps; 0 = torch's default)")
    p.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE,
                   help="largest upload accepted, e.g. 20mb, 500kb (default 20mb)")
    p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                   help="longest driving clip accepted, in frames (default 300)")
    return p


def _check_size(text: str) -> str:
    import re

    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(b|kb|mb|gb)?\s*", str(text).lower()):
        raise CLIError(f"--max-file-size: expected a size such as 20mb or 500kb, got {text!r}")
    return str(text).lower().replace(" ", "")


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)

    def body():
        if not 1 <= a.port <= 65535:
            raise CLIError(f"--port must be in [1, 65535], got {a.port}")
        size = _check_size(a.max_file_size)
        pick_device(None, threads=a.threads)
        app = WebApp(a.size, a.device, a.max_frames)
        load_model()  # read the 3DMM before the first upload
        url = f"http://{'127.0.0.1' if a.host in ('0.0.0.0', '::') else a.host}:{a.port}"
        print(f"facegeo web app: {url}  (uploads up to {size}, clips up to {a.max_frames} "
              "frames; Ctrl-C stops it)")
        if a.host in ("127.0.0.1", "localhost", "::1"):
            print("  listening on this machine only. To open it from another machine: an SSH "
                  f"tunnel (ssh -L {a.port}:127.0.0.1:{a.port} this-host), or --host 0.0.0.0 "
                  "(anyone who can reach the port can use it and upload files; there is no "
                  "login)")
        else:
            print(f"  listening on {a.host}: anyone who can reach port {a.port} can use it "
                  "(no login); keep it on a trusted network", file=sys.stderr)
        try:
            serve(app, a.host, a.port, size, block=True)
        except OSError as e:
            raise CLIError(f"cannot listen on {a.host}:{a.port}: {e}") from None
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
