"""Animate a portrait with a driving video (geometric by default: no network, CPU friendly).

Usage::

    python apps/reenact.py --source face.jpg --driving talk.mp4 --output out.mp4
        [--mode relative|absolute] [--size 256] [--crop | --no-crop] [--device auto]
        [--model geometric | <neural model> [--checkpoint DIR | W.safetensors --config C]]
    python apps/reenact.py --source face.jpg --driving other_face.jpg --output out.png
    python apps/reenact.py --demo [--output demo.mp4]        # bundled portrait + 3DMM motion

``--mode relative`` (the geometric default) moves the source head by the driver's motion
relative to the first driving frame; ``absolute`` copies the driver's head pose and framing;
a neural model defaults to its own mode and refuses one it cannot honour. ``--crop``
(default) writes the S x S face crop; ``--no-crop`` pastes the animated crop back into the
full source frame. The driving video's frame rate is kept and its audio track copied. Driving
frames without a face hold the last good pose (their number is reported). See docs/reenact.md.
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
                   help="source portrait (image file); repeat for models that take several")
    p.add_argument("--driving", help="driving video, or one driving image (image-to-image)")
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
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True,
                   help="write the face crop (default) or paste it back into the full frame")
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
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _validate(a: argparse.Namespace) -> None:
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
        check_input(src, "source image")
        if not is_image_path(src):
            raise CLIError(f"--source must be an image ({', '.join(IMAGE_SUFFIXES)}), got "
                           f"{src}")
    if a.driving is not None:
        check_input(a.driving, "driving file")
    out_image = Path(a.output).suffix.lower() in IMAGE_SUFFIXES
    drv_image = a.driving is not None and is_image_path(a.driving)
    if out_image and not drv_image:
        raise CLIError("an image --output needs a single driving image; use a video suffix "
                       f"({', '.join(VIDEO_SUFFIXES)}) for a driving video")
    check_output(a.output, VIDEO_SUFFIXES + IMAGE_SUFFIXES,
                 inputs=[*(a.source or []), a.driving, a.checkpoint, a.config])


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
    srcs = [demo_source()] if not a.source else [load_source_image(s) for s in a.source]
    show = not a.quiet
    fps, audio = 30.0, None
    if a.driving is None:  # demo: 3DMM-synthesised performance (geometric only)
        if not isinstance(rr, GeometricReenactor):
            raise CLIError(f"--model {a.model} needs a real --driving video")
        lm = pick_source_face(srcs[0], a.face_index, rr.detector)
        src = rr.fit_source(srcs[0], lm, crop=True)
        targets = synthetic_driving(src.fit, rr.model, a.frames)
        n = len(targets)

        def gen(bar):
            yield from rr.render_stream(src, targets, paste=not a.crop, progress=bar.update)
    else:
        pipe = ReenactmentPipeline(rr, device=device, size=a.size)
        det = pipe.conditioner.detector
        lms = [pick_source_face(s, a.face_index, det) for s in srcs]
        with progress_bar(None, "landmarks", show) as bar:
            job = pipe.prepare(srcs, a.driving, max_frames=a.max_frames, strict=a.strict,
                               progress=bar.update,
                               source_landmarks=lms)
        if job.n_missing:
            print(f"warning: {job.n_missing} of {job.n_frames} driving frames had no face; "
                  "they hold the last good pose", file=sys.stderr)
        fps, audio, n = job.fps, job.audio, job.n_frames

        def gen(bar):
            yield from job.frames(mode=mode, paste=not a.crop, progress=bar.update)

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
