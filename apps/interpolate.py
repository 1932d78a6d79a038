"""Blend a portrait's head pose and expression towards a target, as a video.

Usage::

    python apps/interpolate.py --source face.jpg --target other.jpg --output blend.mp4
    python apps/interpolate.py --source face.jpg --yaw 25 --pitch -10 \\
        --expression jawOpen=0.6,mouthSmile_L=0.8 --output blend.mp4
        [--frames 30] [--fps 30] [--only pose,expression,eyes,brows,mouth,nose,identity]
        [--panel] [--size 256] [--crop | --no-crop] [--device auto]
    python apps/interpolate.py --source face.jpg --target-identity other.jpg \
        --meshes frames/ [--mesh-format obj|ply] --glb morph.glb [--output morph.mp4]
    python apps/interpolate.py --demo [--output demo.mp4]

The source is fitted once (3DMM: identity, expression, pose); the target pose/expression comes
from a fit of ``--target`` (its identity is ignored) or from ``--yaw/--pitch/--roll`` (absolute
head angles in degrees; angles not given keep the source's) and ``--expression`` (blendshape
weights, ICT or ARKit names). Over N frames alpha goes 0 -> 1: rotation by slerp, expression
and translation linearly, scale geometrically. ``--only pose`` keeps the source expression,
``--only expression`` keeps the source pose; ``--only`` also takes blendshape groups (eyes,
brows, mouth, nose) and ``identity``, comma-separated. ``--target-identity`` morphs the source's
face shape into the fitted identity of another photo. ``--panel`` adds the shaded target mesh
next to each frame.

Mesh output (the interpolation as 3D meshes of the whole 3DMM head, coloured from the source
photo where it shows the vertex, hidden vertices filled smoothly): ``--meshes DIR`` writes one
OBJ or PLY per frame, ``--glb FILE`` one animated glTF binary (morph targets); ``--output`` is
then optional. See docs/reenact.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from facegeo_apps._cli import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    CLIError,
    check_fps,
    check_frames,
    check_input,
    check_output,
    check_range,
    demo_source,
    is_image_path,
    load_model,
    load_source_image,
    pick_device,
    pick_source_face,
    progress_bar,
    run_main,
)

__all__ = ["main", "build_parser", "parse_expression", "parse_only", "ANGLE_LIMITS",
           "ONLY_CHOICES"]

#: --yaw/--pitch/--roll must lie in [-limit, limit] degrees (beyond, the face turns away
#: from the camera or the weak-perspective 3DMM fit has no meaning)
ANGLE_LIMITS = {"yaw": 90.0, "pitch": 60.0, "roll": 90.0}

DEMO_OUTPUT = "facegeo_interpolate_demo.mp4"

#: what --only may name (comma-separated): facegeo.controls.REGIONS plus the identity
ONLY_CHOICES = ("pose", "expression", "eyes", "brows", "mouth", "nose", "identity")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facegeo-interpolate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="source portrait (image file)")
    p.add_argument("--target", help="target image (its pose and expression are used)")
    p.add_argument("--yaw", type=float, help="target yaw in degrees, in [-90, 90] "
                   "(+ = nose to image right)")
    p.add_argument("--pitch", type=float, help="target pitch in degrees, in [-60, 60] "
                   "(+ = head down)")
    p.add_argument("--roll", type=float, help="target roll in degrees, in [-90, 90] "
                   "(+ = counter-clockwise)")
    p.add_argument("--expression", default=None,
                   help="target blendshapes as name=weight pairs, e.g. jawOpen=0.6,"
                   "mouthSmile_L=0.8 (weights in [0, 1]; other blendshapes keep the source's)")
    p.add_argument("--target-identity", metavar="IMAGE",
                   help="morph the source's face shape into the identity fitted to this photo "
                   "(adds 'identity' to --only)")
    p.add_argument("--output", help=f"output video ({'/'.join(VIDEO_SUFFIXES)}); optional "
                   "with --meshes/--glb")
    p.add_argument("--meshes", metavar="DIR",
                   help="write one mesh per frame into DIR (must not exist or be empty): the "
                   "whole 3DMM head, vertex-coloured from the source photo")
    p.add_argument("--mesh-format", choices=("obj", "ply"), default="obj",
                   help="file format of --meshes (default obj)")
    p.add_argument("--glb", metavar="FILE",
                   help="write the sequence as one animated glTF binary (.glb, morph targets)")
    p.add_argument("--frames", type=int, default=30,
                   help="number of frames N (alpha 0 -> 1), in [2, 18000]")
    p.add_argument("--fps", type=float, default=30.0, help="output frame rate, in [1, 240]")
    p.add_argument("--only", default=None, metavar="LIST",
                   help="blend only these, comma-separated: pose, expression, the blendshape "
                   "groups eyes, brows, mouth, nose, and identity (default: pose and expression)")
    p.add_argument("--panel", action="store_true",
                   help="side-by-side panel: result | result with the target mesh overlay")
    p.add_argument("--size", type=int, default=256, help="working resolution (default 256)")
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True,
                   help="write the face crop (default) or paste it back into the full frame")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1...")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the pipeline's many small tensor ops run "
                        "faster on one thread; 0 = torch's default)")
    p.add_argument("--demo", action="store_true",
                   help="scikit-image's astronaut portrait, turning to yaw 25 / pitch -10 "
                   "with an open, smiling mouth (unless a target is given)")
    p.add_argument("--face-index", type=int, default=0, metavar="N",
                   help="which face of a source with several faces: 0 = the largest "
                   "(default; the choice is reported; a target's largest face is used)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_expression(text: str | None) -> dict[str, float]:
    """``"jawOpen=0.6,mouthSmile_L=0.8"`` -> ``{"jawOpen": 0.6, "mouthSmile_L": 0.8}``.

    Raises:
        CLIError: an empty entry (``a=1,,b=1``, a trailing comma), a name given twice, a
        weight that is not a finite number.
    """
    out: dict[str, float] = {}
    if text is None:
        return out
    if not text.strip():
        raise CLIError("--expression is empty; give name=weight pairs")
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise CLIError(f"--expression {text!r}: empty entry (two commas in a row or a "
                           "trailing comma)")
        name, sep, val = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CLIError(f"--expression: expected name=weight, got {item!r}")
        if name in out:
            raise CLIError(f"--expression: {name!r} is given twice")
        try:
            w = float(val)
        except ValueError:
            raise CLIError(f"--expression: weight of {name!r} is not a number: "
                           f"{val!r}") from None
        if not math.isfinite(w):
            raise CLIError(f"--expression: weight of {name!r} must be a finite number in "
                           f"[0, 1], got {val.strip()!r}")
        out[name] = w
    return out


def parse_only(text: str | None) -> list[str] | None:
    """``"pose,eyes"`` -> ``["pose", "eyes"]`` (each in :data:`ONLY_CHOICES`, once).

    Raises:
        CLIError: an empty entry, an unknown name, a name twice.
    """
    if text is None:
        return None
    out: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise CLIError(f"--only {text!r}: empty entry; give a comma list of "
                           f"{', '.join(ONLY_CHOICES)}")
        if item not in ONLY_CHOICES:
            raise CLIError(f"--only: unknown {item!r}; choose from {', '.join(ONLY_CHOICES)}")
        if item in out:
            raise CLIError(f"--only: {item!r} is given twice")
        out.append(item)
    return out


def _check_mesh_dir(path: str, inputs) -> Path:
    """--meshes DIR: absent or an empty folder, in a writable folder, not an input."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise CLIError(f"--meshes {p} is a file; give a folder")
    if p.is_dir() and any(p.iterdir()):
        raise CLIError(f"--meshes folder {p} is not empty; give a new or empty folder")
    # the folder's parent must be writable: check it as check_output checks a file there
    check_output(p / "frame.obj" if p.is_dir() else p.parent / f"{p.name}.obj", (".obj",),
                 inputs=inputs)
    return p


def _validate(a: argparse.Namespace) -> None:
    has_params = (any(v is not None for v in (a.yaw, a.pitch, a.roll))
                  or a.expression is not None)
    if a.demo and a.target is None and not has_params:
        a.yaw, a.pitch, a.expression = 25.0, -10.0, "jawOpen=0.35,mouthSmile_L=0.8," \
                                                    "mouthSmile_R=0.8"
        has_params = True
    if not a.demo and a.source is None:
        raise CLIError("missing --source (or use --demo)")
    if a.target is not None and has_params:
        raise CLIError("give either --target or --yaw/--pitch/--roll/--expression, not both")
    only = parse_only(a.only)
    if a.target is None and not has_params and a.target_identity is None:
        raise CLIError("give a --target image, target parameters "
                       "(--yaw/--pitch/--roll/--expression) or a --target-identity")
    if only is not None and "identity" in only and a.target is None and \
            a.target_identity is None:
        raise CLIError("--only identity needs a --target or --target-identity image")
    meshes = a.meshes is not None or a.glb is not None
    if a.output is None:
        if a.demo and not meshes:
            a.output = DEMO_OUTPUT
        elif not meshes:
            raise CLIError("missing --output (or --meshes / --glb)")
    check_frames(a.frames)
    check_fps(a.fps)
    for name, limit in ANGLE_LIMITS.items():
        check_range(getattr(a, name), f"--{name}", -limit, limit, " degrees")
    parse_expression(a.expression)
    if a.face_index < 0:
        raise CLIError(f"--face-index must be >= 0, got {a.face_index}")
    if a.size < 32 or a.size > 2048:
        raise CLIError(f"--size must be in [32, 2048], got {a.size}")
    for name in ("source", "target", "target_identity"):
        v = getattr(a, name)
        opt = "--" + name.replace("_", "-")
        if v is not None:
            check_input(v, f"{opt[2:]} image")
            if not is_image_path(v):
                raise CLIError(f"{opt} must be an image ({', '.join(IMAGE_SUFFIXES)})")
    inputs = [a.source, a.target, a.target_identity]
    if a.output is not None:
        check_output(a.output, VIDEO_SUFFIXES, inputs=inputs)
    if a.glb is not None:
        check_output(a.glb, (".glb",), inputs=inputs)
    if a.meshes is not None:
        _check_mesh_dir(a.meshes, inputs)
    outs = [Path(x).expanduser().resolve() for x in (a.output, a.glb, a.meshes) if x]
    if len(set(outs)) != len(outs):
        raise CLIError("--output, --glb and --meshes must be different paths")


def _mesh_overlay(rr, fits, frames):
    """Frames (B, 3, S, S) with the shaded target face mesh blended on top."""
    from facegeo.raster import rasterize, shade_lambert

    v = rr.image_vertices(fits)
    S = frames.shape[-1]
    frag = rasterize(v, rr.faces, S, S, cull_backfaces=True)
    color = v.new_tensor([0.55, 0.75, 1.0]).expand(v.shape[1], 3)
    shaded = shade_lambert(v, rr.faces, frag, colors=color)
    m = frag.mask[:, None].to(frames.dtype) * 0.65
    return frames * (1 - m) + shaded.clamp(0, 1).to(frames) * m


def _write_meshes(a: argparse.Namespace, rr, src, fits) -> None:
    """--meshes / --glb: the whole-model meshes of ``fits``, coloured from the source."""
    from facegeo.controls import fit_meshes, photo_vertex_colors
    from facegeo.mesh.export import write_glb, write_mesh_sequence
    from facegeo.morphable import unit_scale

    m = rr.model
    colors, visible = photo_vertex_colors(m, src.fit, src.full[0], src.box, rr.size)
    verts = fit_meshes(m, fits).cpu()
    faces = m.triangles.cpu()
    if a.meshes is not None:
        paths = write_mesh_sequence(a.meshes, verts, faces, colors, fmt=a.mesh_format)
        print(f"wrote {len(paths)} {a.mesh_format.upper()} meshes into "
              f"{Path(a.meshes).expanduser().resolve()} ({m.n_vertices} vertices, "
              f"{int(visible.sum())} coloured from the photo)")
    if a.glb is not None:
        out = write_glb(Path(a.glb).expanduser(), verts, faces, colors, fps=a.fps,
                        unit_scale=unit_scale(m.units, "m"))
        print(f"wrote {out.resolve()} ({len(fits)} frames, {m.n_vertices} vertices)")


def _run(a: argparse.Namespace) -> int:
    import torch

    from facegeo import transforms as T
    from facegeo.controls import interpolate_regions
    from facegeo.landmarks.crops import paste_back
    from facegeo.reenact import FaceFit, GeometricReenactor, expression_from_names
    from facegeo.video import write_video

    _validate(a)
    only = parse_only(a.only)
    weights = parse_expression(a.expression)
    device = pick_device(a.device, threads=a.threads)
    out = Path(a.output).expanduser() if a.output is not None else None
    src_img = demo_source() if a.source is None else load_source_image(a.source)
    rr = GeometricReenactor(load_model(), size=a.size, device=device)
    src = rr.fit_source(src_img, pick_source_face(src_img, a.face_index, rr.detector),
                        crop=True)
    sf = src.fit
    if a.target is not None:
        tgt_img = load_source_image(a.target, "target")
        lm = pick_source_face(tgt_img, 0, rr.detector, what=f"target ({Path(a.target).name})",
                              option=None)
        tgt = rr.fit_source(tgt_img, lm, crop=True).fit  # its identity: only with --only identity
    else:
        ang = sf.angles.clone()
        for k, v in enumerate((a.yaw, a.pitch, a.roll)):
            if v is not None:
                ang[:, k] = v
        rot = T.euler_to_matrix(ang)
        exp = expression_from_names(rr.model, weights, sf.exp_coeffs.cpu()).to(sf.exp_coeffs)
        tgt = FaceFit(rot, sf.scale, sf.translation, sf.id_coeffs, exp)
    if a.target_identity is not None:
        idimg = load_source_image(a.target_identity, "target-identity")
        lm = pick_source_face(idimg, 0, rr.detector,
                              what=f"target-identity ({Path(a.target_identity).name})",
                              option=None)
        tgt.id_coeffs = rr.fit_source(idimg, lm, crop=True).fit.id_coeffs.to(tgt.id_coeffs)
        if only is None:
            only = ["pose", "expression"] if (a.target is not None or a.yaw is not None or
                                              a.pitch is not None or a.roll is not None or
                                              a.expression is not None) else []
        if "identity" not in only:
            only = [*only, "identity"]
    alpha = torch.linspace(0.0, 1.0, a.frames)
    fits = interpolate_regions(sf, tgt.to(sf.rotation.device), alpha.to(sf.rotation.device),
                               only=only, model=rr.model)
    if a.meshes is not None or a.glb is not None:
        _write_meshes(a, rr, src, fits)
    if a.output is None:
        return 0

    def frames(bar):
        for i in range(0, a.frames, 16):
            chunk = fits.index(slice(i, i + 16))
            res = rr.render(src.image, sf, chunk).frames
            if a.panel:
                res = torch.cat([res, _mesh_overlay(rr, chunk, res)], -1)
            elif not a.crop:
                k = res.shape[0]
                res = paste_back(src.full.expand(k, -1, -1, -1), res, src.box[None].expand(k, 3))
            yield from res.cpu()
            bar.update(res.shape[0])

    if a.panel and not a.crop:
        print("note: --panel writes face crops (--no-crop is ignored)", file=sys.stderr)
    with progress_bar(a.frames, "rendering", not a.quiet) as bar:
        write_video(out, frames(bar), a.fps)
    print(f"wrote {out.resolve()} ({a.frames} frames at {a.fps:g} fps)")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return run_main(lambda: _run(a))


if __name__ == "__main__":
    sys.exit(main())
