"""Animate a portrait with a driving video (geometric by default: no network, CPU friendly).

Usage::

    python apps/reenact.py --source face.jpg --driving talk.mp4 --output out.mp4
        [--mode relative|absolute] [--size 256] [--crop | --no-crop] [--device auto]
        [--model geometric | <neural model> [--checkpoint DIR | W.safetensors --config C]]
    python apps/reenact.py --source face.jpg --driving other_face.jpg --output out.png
    python apps/reenact.py --demo [--output demo.mp4]        # bundled portrait + 3DMM motion
    python apps/reenact.py --source face.jpg --driving talk.mp4 --output out.mp4 \
        [--find-best-frame] [--only pose,expression,eyes,brows,mouth,nose] \
        [--expression-scale 1.0] [--motion-scale 1.0]
    python apps/reenact.py --source group.jpg --faces all --driving a.mp4 [--driving b.mp4]
    python apps/reenact.py --source clip.mp4 --driving talk.mp4 --output out.mp4  # video-to-video

``--mode relative`` (the geometric default) moves the source head by the driver's motion
relative to the first driving frame; ``absolute`` copies the driver's head pose and framing;
a neural model defaults to its own mode and refuses one it cannot honour. ``--crop``
(default) writes the S x S face crop; ``--no-crop`` pastes the animated crop back into the
full source frame. The driving video's frame rate is kept and its audio track copied. Driving
frames without a face hold the last good pose (their number is reported).

Controls (models that use 3DMM fits, e.g. geometric): ``--find-best-frame`` measures the
relative motion from the driving frame closest to the source's expression and head pose
instead of the first one; ``--only`` takes the listed parts from the driver and keeps the
source's for the rest (``pose``, ``expression`` = all blendshapes, or the blendshape groups
``eyes``, ``brows``, ``mouth``, ``nose``); ``--expression-scale`` / ``--motion-scale`` multiply
the expression change and the head motion (0 keeps the source's).

Several faces: ``--faces all`` (or ``--faces 0,2``, by size, 0 = the largest) animates each
chosen face of the source image, all by one ``--driving`` or one ``--driving`` per face; the
output is the full source image. A source *video* (video-to-video) keeps its own head motion
and everything outside the face, and takes the driver's expression (``--only`` defaults to
``expression``; add ``pose`` to put the driver's head motion on top); frames are paired by
index. See docs/reenact.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facegeo_apps._cli import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    CLIError,
    check_frames,
    check_input,
    check_output,
    check_range,
    demo_source,
    is_image_path,
    load_model,
    load_source_image,
    models_epilog,
    pick_device,
    pick_source_face,
    progress_bar,
    run_main,
)

__all__ = ["main", "build_parser"]

DEMO_OUTPUT = "facegeo_reenact_demo.mp4"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facegeo-reenact", description=__doc__,
                                epilog=models_epilog("--model"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append",
                   help="source portrait (image file); repeat for models that take several; "
                   "a video file: video-to-video")
    p.add_argument("--driving", action="append",
                   help="driving video, or one driving image (image-to-image); with --faces, "
                   "repeat it to give each face its own driver")
    p.add_argument("--output", help=f"output video ({'/'.join(VIDEO_SUFFIXES)}) or image "
                   f"(image-to-image: {'/'.join(IMAGE_SUFFIXES)})")
    p.add_argument("--mode", choices=("relative", "absolute"), default=None,
                   help="head pose: driver's motion applied to the source pose (relative), or "
                   "the driver's pose and framing (absolute); default: the model's default "
                   "(geometric: relative). A mode a model cannot honour is an error")
    p.add_argument("--model", default="geometric",
                   help="'geometric' (default, no network) or a neural model (list below)")
    p.add_argument("--checkpoint", help="weights of the neural --model: a checkpoint folder, "
                   "or a bare .safetensors file with --config (default: the shipped weights)")
    p.add_argument("--config", help="config of a bare .safetensors --checkpoint: a bundled "
                   "config name of the model (e.g. tiny, cpu128, paper) or a YAML path")
    p.add_argument("--size", type=int, default=None,
                   help="working resolution: the face crop side (default: 256 for geometric, "
                   "the model's image_size for neural models, which resize to it internally)")
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=None,
                   help="write the face crop (default) or paste it back into the full frame "
                   "(always the full frame with --faces or a video source)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1...")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the pipeline's many small tensor ops run "
                        "faster on one thread; 0 = torch's default)")
    p.add_argument("--demo", action="store_true",
                   help="bundled defaults: scikit-image's astronaut portrait as source and a "
                   "3DMM-synthesised driving performance unless --source/--driving are given")
    p.add_argument("--frames", type=int, default=90,
                   help="length of the synthesised demo performance (frames at 30 fps)")
    p.add_argument("--strict", action="store_true",
                   help="a truncated or damaged driving video is an error (default: a warning "
                   "with the number of frames read vs announced)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="use only the first N driving frames")
    p.add_argument("--relative-expression", action="store_true",
                   help="(geometric) add the driver's expression change to the source's "
                   "expression instead of copying the driver's expression")
    p.add_argument("--face-index", type=int, default=0, metavar="N",
                   help="which face of a source with several faces: 0 = the largest "
                   "(default; the choice is reported), 1 = the next...")
    p.add_argument("--faces", default=None, metavar="all|I,J",
                   help="animate several faces of the source image: 'all' or a comma list of "
                   "face indices by size (0 = the largest)")
    p.add_argument("--find-best-frame", action="store_true",
                   help="relative mode: measure the driver's motion from the driving frame "
                   "closest to the source's expression and head pose (default: the first)")
    p.add_argument("--only", default=None, metavar="LIST",
                   help="take only these from the driver, comma-separated: pose, expression, "
                   "eyes, brows, mouth, nose (default: pose and expression; a video source: "
                   "expression)")
    p.add_argument("--expression-scale", type=float, default=1.0, metavar="X",
                   help="multiply the driver's expression change, in [0, 3] (0 = the "
                   "source's expression)")
    p.add_argument("--motion-scale", type=float, default=1.0, metavar="X",
                   help="multiply the driver's head motion, in [0, 3] (0 = the source pose)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


#: --expression-scale / --motion-scale range (beyond 3 the 3DMM leaves its valid range)
SCALE_RANGE = (0.0, 3.0)


def _parse_faces(text: str | None) -> list[int] | None:
    """``"all"`` -> None (every face); ``"0,2"`` -> [0, 2]; absent -> None."""
    if text is None or text.strip() == "all":
        return None
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            i = int(item)
        except ValueError:
            raise CLIError(f"--faces: expected 'all' or face indices like 0,1, got "
                           f"{item!r}") from None
        if i < 0:
            raise CLIError(f"--faces: face indices are >= 0, got {i}")
        if i in out:
            raise CLIError(f"--faces: face {i} is given twice")
        out.append(i)
    return out


def _controls(a: argparse.Namespace, video_source: bool = False):
    """The --only / --expression-scale / --motion-scale controls (None when default)."""
    from facegeo.controls import Controls

    only = a.only if a.only is not None else ("expression" if video_source else None)
    c = Controls(only=only, expression_scale=a.expression_scale, motion_scale=a.motion_scale)
    return None if c.is_default and not video_source else c


def _validate(a: argparse.Namespace) -> None:
    from facegeo.controls import parse_regions
    from facegeo.video import VIDEO_SUFFIXES as READ_SUFFIXES

    drivings = a.driving or []
    a.video_source = bool(a.source) and any(
        Path(s).suffix.lower() in READ_SUFFIXES for s in a.source)
    check_range(a.expression_scale, "--expression-scale", *SCALE_RANGE)
    check_range(a.motion_scale, "--motion-scale", *SCALE_RANGE)
    if a.only is not None:
        try:
            parse_regions(a.only)
        except ValueError as e:
            raise CLIError(f"--only: {e}") from None
    a.face_list = _parse_faces(a.faces)
    if a.faces is not None and a.video_source:
        raise CLIError("--faces animates faces of a source image, not of a video")
    if len(drivings) > 1 and a.faces is None:
        raise CLIError("several --driving need --faces (one driver per face)")
    if a.face_list is not None and len(drivings) > 1 and len(drivings) != len(a.face_list):
        raise CLIError(f"{len(drivings)} --driving for {len(a.face_list)} --faces: give one "
                       "driver for all faces or one per face")
    full_frame = a.faces is not None or a.video_source
    if full_frame and a.crop:
        raise CLIError("--crop writes one face crop; --faces and a video source write the "
                       "full frame (drop --crop)")
    if a.crop is None:
        a.crop = not full_frame
    if a.find_best_frame and a.mode == "absolute" and not a.relative_expression:
        raise CLIError("--find-best-frame picks the reference of relative motion; absolute "
                       "mode uses none")
    if a.video_source and len(a.source) > 1:
        raise CLIError("a video --source is the only source (video-to-video)")
    if a.demo and (a.faces is not None or a.video_source or a.find_best_frame):
        if not drivings:
            raise CLIError("--faces, a video source and --find-best-frame need a real "
                           "--driving")
    if not a.demo:
        missing = [n for n in ("source", "driving", "output") if getattr(a, n) is None]
        if missing:
            raise CLIError("missing " + ", ".join(f"--{m}" for m in missing) +
                           " (or use --demo)")
    if a.output is None:
        a.output = DEMO_OUTPUT
    if a.size is not None and (a.size < 32 or a.size > 2048):
        raise CLIError(f"--size must be in [32, 2048], got {a.size}")
    check_frames(a.frames)
    if a.face_index < 0:
        raise CLIError(f"--face-index must be >= 0, got {a.face_index}")
    if a.max_frames is not None and a.max_frames < 1:
        raise CLIError(f"--max-frames must be >= 1, got {a.max_frames}")
    geometric = a.model == "geometric"
    if geometric and (a.checkpoint or a.config):
        raise CLIError("--checkpoint/--config are only used with a neural --model")
    if not geometric and a.relative_expression:
        raise CLIError("--relative-expression is an option of --model geometric")
    if a.config and not a.checkpoint:
        raise CLIError("--config describes a bare .safetensors --checkpoint; give one")
    if a.checkpoint and not Path(a.checkpoint).exists():
        raise FileNotFoundError(f"checkpoint not found: {a.checkpoint}")
    for src in a.source or []:
        check_input(src, "source file" if a.video_source else "source image")
        if not is_image_path(src) and not a.video_source:
            raise CLIError(f"--source must be an image ({', '.join(IMAGE_SUFFIXES)}) or a "
                           f"video, got {src}")
    for d in drivings:
        check_input(d, "driving file")
    out_image = Path(a.output).suffix.lower() in IMAGE_SUFFIXES
    drv_image = bool(drivings) and all(is_image_path(d) for d in drivings)
    if out_image and (not drv_image or a.video_source):
        raise CLIError("an image --output needs a single driving image (and a source "
                       f"image); use a video suffix ({', '.join(VIDEO_SUFFIXES)}) for a "
                       "driving video")
    check_output(a.output, VIDEO_SUFFIXES + IMAGE_SUFFIXES,
                 inputs=[*(a.source or []), *drivings, a.checkpoint, a.config])


def _reenactor(a: argparse.Namespace, device):
    """The --model as a :class:`facegeo.pipeline.Reenactor` (geometric or neural)."""
    from facegeo_models import list_models, load_reenactor

    if a.model not in list_models():
        raise CLIError(f"unknown --model {a.model!r}; installed models: "
                       f"{', '.join(list_models())}")
    if a.model == "geometric":
        return load_reenactor("geometric", device=device, model=load_model(),
                              size=a.size or 256, relative_expression=a.relative_expression)
    return load_reenactor(a.model, checkpoint=a.checkpoint, config=a.config, device=device)


def _run(a: argparse.Namespace) -> int:
    from facegeo.image_io import save_image
    from facegeo.pipeline import ReenactmentPipeline
    from facegeo.reenact import GeometricReenactor, synthetic_driving
    from facegeo.video import write_video

    _validate(a)
    device = pick_device(a.device, threads=a.threads)
    out = Path(a.output).expanduser()
    rr = _reenactor(a, device)
    mode = rr.check_mode(a.mode)          # a mode the model cannot honour fails here
    controls = _controls(a, a.video_source)
    reference = "best" if a.find_best_frame else None
    show = not a.quiet
    fps, audio = 30.0, None
    drivings = a.driving or []
    srcs = [] if a.video_source else (
        [demo_source()] if not a.source else [load_source_image(s) for s in a.source])
    if (controls is not None or reference) and drivings:
        pipe = ReenactmentPipeline(rr, device=device, size=a.size)
        if not pipe.needs_fit and controls is not None:
            raise CLIError(f"--model {a.model} uses no 3DMM fits: --only, --expression-scale, "
                           "--motion-scale and a video source need one that does (geometric)")
    if not drivings:  # demo: 3DMM-synthesised performance (geometric only)
        if not isinstance(rr, GeometricReenactor):
            raise CLIError(f"--model {a.model} needs a real --driving video")
        lm = pick_source_face(srcs[0], a.face_index, rr.detector)
        src = rr.fit_source(srcs[0], lm, crop=True)
        targets = synthetic_driving(src.fit, rr.model, a.frames)
        if controls is not None:
            targets = controls.apply(src.fit, targets, rr.model)
        n = len(targets)

        def gen(bar):
            yield from rr.render_stream(src, targets, paste=not a.crop, progress=bar.update)
    elif a.video_source:
        pipe = ReenactmentPipeline(rr, device=device, size=a.size)
        with progress_bar(None, "landmarks", show) as bar:
            vjob = pipe.prepare_video_source(a.source[0], drivings[0],
                                             max_frames=a.max_frames, strict=a.strict,
                                             progress=bar.update)
        fps, audio, n = vjob.fps, vjob.audio, vjob.n_frames
        if len(vjob.source_track) != vjob.job.n_frames:
            print(f"note: the source video has {len(vjob.source_track)} frames, the driver "
                  f"{vjob.job.n_frames}; writing {n}", file=sys.stderr)

        def gen(bar):
            yield from vjob.frames(mode=mode, controls=controls, reference=reference,
                                   progress=bar.update)
    elif a.faces is not None:
        pipe = ReenactmentPipeline(rr, device=device, size=a.size)
        with progress_bar(None, "landmarks", show) as bar:
            fjob = pipe.prepare_faces(srcs[0], drivings if len(drivings) > 1 else drivings[0],
                                      faces=a.face_list, max_frames=a.max_frames,
                                      strict=a.strict, progress=bar.update)
        print(f"note: animating faces {', '.join(map(str, fjob.faces))} of the source image "
              "(0 = the largest)", file=sys.stderr)
        if fjob.n_missing:
            print(f"warning: {fjob.n_missing} driving frames had no face; they hold the last "
                  "good pose", file=sys.stderr)
        fps, audio, n = fjob.fps, fjob.audio, fjob.n_frames

        def gen(bar):
            yield from fjob.frames(mode=mode, controls=controls, reference=reference,
                                   progress=bar.update)
    else:
        pipe = ReenactmentPipeline(rr, device=device, size=a.size)
        det = pipe.conditioner.detector
        lms = [pick_source_face(s, a.face_index, det) for s in srcs]
        with progress_bar(None, "landmarks", show) as bar:
            job = pipe.prepare(srcs, drivings[0], max_frames=a.max_frames, strict=a.strict,
                               progress=bar.update,
                               source_landmarks=lms)
        if job.n_missing:
            print(f"warning: {job.n_missing} of {job.n_frames} driving frames had no face; "
                  "they hold the last good pose", file=sys.stderr)
        fps, audio, n = job.fps, job.audio, job.n_frames
        if reference:
            print(f"note: relative motion measured from driving frame "
                  f"{job.reference_index(reference)} (the closest to the source)",
                  file=sys.stderr)

        def gen(bar):
            yield from job.frames(mode=mode, paste=not a.crop, progress=bar.update,
                                  controls=controls, reference=reference)

    with progress_bar(n, "rendering", show) as bar:
        if out.suffix.lower() in IMAGE_SUFFIXES:
            frame = next(iter(gen(bar)))
            save_image(out, frame.cpu())
        else:
            write_video(out, (f.cpu() for f in gen(bar)), fps, audio_from=audio)
    kind = "image" if out.suffix.lower() in IMAGE_SUFFIXES else f"{n} frames at {fps:g} fps"
    print(f"wrote {out.resolve()} ({kind}; model {rr.name}, {mode} mode)")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return run_main(lambda: _run(a))


if __name__ == "__main__":
    sys.exit(main())
