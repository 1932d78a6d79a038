"""Animate a portrait with a driving video (geometric by default: no network, CPU friendly).

Usage::

    python apps/reenact.py --source face.jpg --driving talk.mp4 --output out.mp4
        [--mode relative|absolute] [--size 256] [--crop | --no-crop] [--device auto]
        [--model geometric | <neural model name> --checkpoint PATH]
    python apps/reenact.py --source face.jpg --driving other_face.jpg --output out.png
    python apps/reenact.py --demo [--output demo.mp4]        # bundled portrait + 3DMM motion

``--mode relative`` (default) moves the source head by the driver's motion relative to the
first driving frame; ``absolute`` copies the driver's head pose and framing. ``--crop``
(default) writes the S x S face crop; ``--no-crop`` pastes the animated crop back into the
full source frame. The driving video's frame rate is kept and its audio track copied. Driving
frames without a face hold the last good pose (their number is reported). See docs/reenact.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from facegeo_apps._cli import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    CLIError,
    check_output,
    demo_source,
    is_image_path,
    load_model,
    load_source_image,
    pick_device,
    progress_bar,
    run_main,
)

__all__ = ["main", "build_parser"]

DEMO_OUTPUT = "facegeo_reenact_demo.mp4"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facegeo-reenact", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="source portrait (image file)")
    p.add_argument("--driving", help="driving video, or one driving image (image-to-image)")
    p.add_argument("--output", help=f"output video ({'/'.join(VIDEO_SUFFIXES)}) or image "
                   f"(image-to-image: {'/'.join(IMAGE_SUFFIXES)})")
    p.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                   help="head pose: driver's motion applied to the source pose (relative), or "
                   "the driver's pose and framing (absolute)")
    p.add_argument("--model", default="geometric",
                   help="'geometric' (default, no network) or a neural model name "
                   "(e.g. pfp_mls) together with --checkpoint")
    p.add_argument("--checkpoint", help="checkpoint of the neural --model")
    p.add_argument("--size", type=int, default=256, help="working resolution (default 256)")
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
    p.add_argument("--max-frames", type=int, default=None,
                   help="use only the first N driving frames")
    p.add_argument("--relative-expression", action="store_true",
                   help="add the driver's expression change to the source's expression "
                   "instead of copying the driver's expression")
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
    if a.size < 32 or a.size > 2048:
        raise CLIError(f"--size must be in [32, 2048], got {a.size}")
    if a.frames < 2:
        raise CLIError(f"--frames must be >= 2, got {a.frames}")
    if a.max_frames is not None and a.max_frames < 1:
        raise CLIError(f"--max-frames must be >= 1, got {a.max_frames}")
    if a.model != "geometric" and not a.checkpoint:
        raise CLIError(f"--model {a.model} needs --checkpoint PATH")
    if a.model == "geometric" and a.checkpoint:
        raise CLIError("--checkpoint is only used with a neural --model")
    if a.checkpoint and not Path(a.checkpoint).exists():
        raise FileNotFoundError(f"checkpoint not found: {a.checkpoint}")
    if a.source is not None and not Path(a.source).is_file():
        raise FileNotFoundError(f"source image not found: {a.source}")
    if a.driving is not None and not Path(a.driving).is_file():
        raise FileNotFoundError(f"driving file not found: {a.driving}")
    if a.source is not None and not is_image_path(a.source):
        raise CLIError(f"--source must be an image ({', '.join(IMAGE_SUFFIXES)}), got "
                       f"{a.source}")
    out_image = Path(a.output).suffix.lower() in IMAGE_SUFFIXES
    drv_image = a.driving is not None and is_image_path(a.driving)
    if out_image and not drv_image:
        raise CLIError("an image --output needs a single driving image; use a video suffix "
                       f"({', '.join(VIDEO_SUFFIXES)}) for a driving video")
    check_output(a.output, VIDEO_SUFFIXES + IMAGE_SUFFIXES)


def _neural(name: str, checkpoint: str, device):
    """Load a neural model package's ``load_pretrained`` / ``reenact`` pair."""
    try:
        mod = importlib.import_module(f"facegeo_models.{name}")
    except ModuleNotFoundError as e:
        from facegeo_models.common.registry import registered_models

        raise CLIError(f"unknown --model {name!r} ({e}); registered models: "
                       f"{', '.join(registered_models()) or '(none)'}") from None
    if not hasattr(mod, "load_pretrained") or not hasattr(mod, "reenact"):
        raise CLIError(f"model package {name!r} has no load_pretrained/reenact entry point")
    return mod, mod.load_pretrained(checkpoint, device)


def _run(a: argparse.Namespace) -> int:
    import torch

    from facegeo.image_io import save_image
    from facegeo.reenact import GeometricReenactor, synthetic_driving, track_driving
    from facegeo.video import read_video, video_info, write_video

    _validate(a)
    device = pick_device(a.device, threads=a.threads)
    out = Path(a.output).expanduser()
    src_img = demo_source() if a.source is None else load_source_image(a.source)
    rr = GeometricReenactor(load_model(), size=a.size, device=device)
    src = rr.fit_source(src_img, crop=True)
    show = not a.quiet
    neural = a.model != "geometric"
    fps, audio, track = 30.0, None, None
    if a.driving is None:  # demo: 3DMM-synthesised performance
        if neural:
            raise CLIError("a neural --model needs a real --driving video")
        targets = synthetic_driving(src.fit, rr.model, a.frames)
    else:
        if is_image_path(a.driving):
            frames = [load_source_image(a.driving, "driving")]
            n_total = 1
        else:
            info = video_info(a.driving)
            fps = info.fps or 30.0
            frames, _ = read_video(a.driving, stream=True, max_frames=a.max_frames)
            n_total = info.frames if a.max_frames is None else min(info.frames or a.max_frames,
                                                                    a.max_frames)
            audio = a.driving if info.has_audio else None
        with progress_bar(n_total or None, "landmarks", show) as bar:
            track = track_driving(frames, fps, detector=rr.detector,
                                  keep_crops=a.size if neural else None, progress=bar.update)
        if track.n_missing:
            print(f"warning: {track.n_missing} of {len(track)} driving frames had no face; "
                  "they hold the last good pose", file=sys.stderr)
        targets = None
        if not neural:
            dfit = rr.fit_driving(track)
            targets = rr.target_fits(src.fit, dfit, a.mode,
                                     relative_expression=a.relative_expression)
    n = len(targets) if targets is not None else len(track)

    def geometric_frames(bar):
        yield from rr.render_stream(src, targets, paste=not a.crop, progress=bar.update)

    def neural_frames(bar):
        from facegeo.landmarks.crops import paste_back

        mod, net = _neural(a.model, a.checkpoint, device)
        for i in range(0, n, 8):
            drv = track.frames[i:i + 8].to(device)
            with torch.no_grad():
                res = mod.reenact(src.image.expand(drv.shape[0], -1, -1, -1), drv, model=net)
            if not a.crop:
                k = res.shape[0]
                res = paste_back(src.full.expand(k, -1, -1, -1), res.to(src.full),
                                 src.box[None].expand(k, 3))
            yield from res.clamp(0, 1)
            bar.update(res.shape[0])

    gen = neural_frames if neural else geometric_frames
    with progress_bar(n, "rendering", show) as bar:
        if out.suffix.lower() in IMAGE_SUFFIXES:
            frame = next(iter(gen(bar)))
            save_image(out, frame.cpu())
        else:
            write_video(out, (f.cpu() for f in gen(bar)), fps, audio_from=audio)
    kind = "image" if out.suffix.lower() in IMAGE_SUFFIXES else f"{n} frames at {fps:g} fps"
    print(f"wrote {out.resolve()} ({kind})")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return run_main(lambda: _run(a))


if __name__ == "__main__":
    sys.exit(main())
