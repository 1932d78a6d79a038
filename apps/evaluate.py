"""Evaluate a face-reenactment method on a folder of videos (and images).

    python -m facegeo_apps.evaluate --method geometric --data DIR --protocol self \\
        --out report.json [--every 10 --max-frames 60 --size 256]

Several ``--method`` names compare them in one run, on the same clips, frames and crops
(``--checkpoint NAME=PATH`` per neural model), with frames/s of each row. ``NAME@LABEL``
evaluates model NAME under its own row label, so one model can appear in several rows
(e.g. two checkpoints, or ``--set ldnet_fdgan@3dmm.front_end=3dmm``: an option of the
model's config overridden for that row). Methods: any
installed model (``geometric``, the training-free 3DMM + mesh flow + MLS, or a
neural model of ``facegeo_models`` such as ``pfp_mls`` with ``--checkpoint`` [and
``--config`` for a bare .safetensors]; all run through :mod:`facegeo.pipeline`), ``static``
(output = source image) or ``copy`` (output = driving frame). The two baselines are always
evaluated in the same run as reference rows. Without ``--mode`` every method runs in its
own default mode (cross: in each mode it honours); a mode a method cannot honour is
listed under "Skipped", never run silently in another mode.

Protocols (:mod:`facegeo.evaluation`):

* ``self``: every video of DIR; the first frame is the source, every ``--every``-th frame of
  the first ``--max-frames`` is reconstructed and compared with the real frame.
* ``cross``: each video drives a source image of DIR of another identity (identities from
  DIR/media.json when present, else the file name; images with role "source" there are
  preferred), in ``--mode`` relative/absolute/both.
* ``noise``: self-reenactment with one driving keypoint perturbed per frame (PFP-MLS
  Table 2); reports the relative change of the landmark error.

Frames are cropped FOMM-style: one square box per clip around the first frame's
landmarks (``--margin``), resized to ``--size``. A sub-folder of DIR holding image
frames (the clips ``apps/train.py preprocess`` writes, e.g. ``--data ROOT/test``) is
a clip that is already cropped: its frames are only resized to ``--size``, so a model is
evaluated on exactly the crops of its test split. The report is written atomically as JSON
(per-video and aggregate metrics) and as a Markdown table beside it (``report.md``).
Exit status 2 with one ``error: ...`` line on bad input.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from facegeo.image_io import IMAGE_SUFFIXES
from facegeo.video import VIDEO_SUFFIXES

BASELINES = {"static": "static source", "copy": "copy driving"}


class EvalError(ValueError):
    """User-facing error."""


# ----------------------------------------------------------------------------- methods
class PipelineMethod:
    """Any installed model (``geometric`` or a neural one) as an evaluation method, run
    through :class:`facegeo.pipeline.ReenactmentPipeline` like the app runs it: source
    (1, 3, S, S), driving (T, 3, S, S) -> (T, 3, S, S). The harness's inputs already are face
    crops (``crop=False``: only resized). ``perturb`` moves the model's learned keypoints
    (``num_keypoints``) or, for landmark-driven methods, the tracked driving landmarks."""

    def __init__(self, name: str, checkpoint: str | None = None, config: str | None = None,
                 size: int = 256, device="cpu", options: dict | None = None,
                 landmarks: str = "tracker"):
        from facegeo.pipeline import ReenactmentPipeline
        from facegeo_models import list_models, load_reenactor

        if name not in list_models():
            raise EvalError(f"unknown method {name!r}; use static, copy or an installed model "
                            f"({', '.join(list_models())})")
        if checkpoint is not None and not Path(checkpoint).exists():
            raise EvalError(f"checkpoint not found: {checkpoint}")
        opts = {"size": size} if name == "geometric" else {}
        self.reenactor = load_reenactor(name, checkpoint=checkpoint, config=config,
                                        device=device, **opts, **(options or {}))
        tracker_kwargs, refine = landmark_source(landmarks)
        self.pipeline = ReenactmentPipeline(self.reenactor, device=device, crop=False,
                                            size=size, tracker_kwargs=tracker_kwargs,
                                            refine_landmarks=refine)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.reenactor.modes)

    @property
    def max_sources(self) -> int:
        return int(self.reenactor.max_sources)

    @torch.no_grad()
    def __call__(self, source, driving, *, mode="relative", perturb=None):
        """source (N, 3, S, S) (N <= max_sources), driving (T, 3, S, S) -> (T, 3, S, S)."""
        keypoints = perturb is not None and bool(self.reenactor.num_keypoints)
        job = self.pipeline.prepare(list(source), driving,
                                    perturb_landmarks=None if keypoints else perturb)
        frames = job.frames(mode=mode, perturb_keypoints=perturb if keypoints else None)
        return torch.stack([f.cpu() for f in frames])


#: ``--landmarks`` choices: LandmarkTracker arguments of each named source
LANDMARK_SOURCES = {
    "tracker": {},                                          # tracked + One-Euro (default)
    "raw": {"smooth": False},                               # tracked, not smoothed
    "per-frame": {"smooth": False, "redetect_every": 1},    # dlib detection on every frame
}


@functools.lru_cache(maxsize=2)
def _load_refiner(path: str):
    """One refiner per weights file and run (every method of a run shares it)."""
    from facegeo_models.s2d.refiner import load_refiner

    return load_refiner(path)


def landmark_source(spec: str):
    """``--landmarks`` -> (tracker kwargs, refine_landmarks callable or None): a name of
    :data:`LANDMARK_SOURCES` or a landmark refiner ``.safetensors`` (s2d's DSNT refiner,
    boxes from the tracker)."""
    if spec in LANDMARK_SOURCES:
        return dict(LANDMARK_SOURCES[spec]), None
    if spec.endswith(".safetensors"):
        if not Path(spec).is_file():
            raise EvalError(f"--landmarks: refiner weights not found: {spec}")
        return {}, _load_refiner(str(Path(spec).resolve())).refine
    raise EvalError(f"--landmarks {spec!r}: expected {', '.join(LANDMARK_SOURCES)} or a "
                    "refiner .safetensors file")


def make_method(spec: str, checkpoint: str | None, size: int, device, config=None,
                options: dict | None = None, landmarks: str = "tracker"):
    """``spec`` = ``static`` | ``copy`` | ``NAME`` | ``NAME@LABEL`` -> a method."""
    from facegeo import evaluation as E

    if spec in BASELINES:
        if checkpoint or config or options:
            raise EvalError(f"the {spec} baseline takes no checkpoint, config or options")
        return E.static_source if spec == "static" else E.copy_driving
    return PipelineMethod(model_name(spec), checkpoint, config, size, device, options,
                          landmarks)


def model_name(spec: str) -> str:
    """The model of a ``--method`` entry: ``NAME@LABEL`` -> ``NAME``."""
    name, _, label = spec.partition("@")
    if not name or (spec.count("@") and not label) or "." in label:
        raise EvalError(f"--method {spec!r}: expected NAME or NAME@LABEL (a label without "
                        "dots)")
    return name


def method_options(values: list[str], methods: list[str]) -> dict[str, dict]:
    """``--set METHOD.KEY=VALUE`` values -> ``{method: {key: value}}`` (VALUE read as
    YAML: numbers, booleans, lists); a bare ``KEY=VALUE`` is allowed when exactly one
    non-baseline method is given."""
    import yaml

    neural = [m for m in methods if m not in BASELINES]
    out: dict[str, dict] = {}
    for v in values:
        lhs, sep, val = v.partition("=")
        spec, dot, key = lhs.partition(".")
        if not sep or not lhs:
            raise EvalError(f"--set {v!r}: expected METHOD.KEY=VALUE")
        if not (dot and spec in methods):
            if len(neural) != 1 or dot:
                raise EvalError(f"--set {v!r}: write --set METHOD.KEY=VALUE with METHOD one of "
                                f"{', '.join(neural) or 'the methods'}")
            spec, key = neural[0], lhs
        if spec in BASELINES:
            raise EvalError(f"--set {v!r}: the {spec} baseline takes no options")
        if not key.isidentifier():
            raise EvalError(f"--set {v!r}: {key!r} is not an option name")
        try:
            out.setdefault(spec, {})[key] = yaml.safe_load(val) if val else val
        except yaml.YAMLError as e:
            raise EvalError(f"--set {v!r}: cannot read the value ({e})") from None
    return out


def per_method(values: list[str], methods: list[str], flag: str) -> dict[str, str]:
    """``--checkpoint`` / ``--config`` values -> ``{method: value}``. ``NAME=VALUE`` names
    its method; a bare value is allowed when exactly one non-baseline method is given."""
    neural = [m for m in methods if m not in BASELINES]
    out: dict[str, str] = {}
    for v in values:
        name, sep, rest = v.partition("=")
        if sep and name in methods:
            key, val = name, rest
        elif len(neural) == 1:
            key, val = neural[0], v
        else:
            raise EvalError(f"{flag} {v!r}: with several methods write {flag} NAME=VALUE "
                            f"(NAME one of {', '.join(neural) or 'the methods'})")
        if key in BASELINES:
            raise EvalError(f"{flag} {v!r}: the {key} baseline takes no {flag}")
        if key in out:
            raise EvalError(f"{flag} given twice for {key}")
        out[key] = val
    return out


def method_modes(method) -> tuple[str, ...]:
    """The modes a method honours (the baselines: both), its default first."""
    return tuple(getattr(method, "modes", ("relative", "absolute")))


# ----------------------------------------------------------------------------- data
def _media_info(data: Path) -> tuple[dict[str, str], set[str]]:
    """From DIR/media.json (when present): identity per file, and the files whose role is
    a source portrait (preferred as cross-reenactment sources)."""
    meta = data / "media.json"
    if not meta.is_file():
        return {}, set()
    try:
        items = json.loads(meta.read_text()).get("items", [])
        ident = {it["file"]: str(it.get("identity") or it["file"]) for it in items}
        sources = {it["file"] for it in items if str(it.get("role", "")) == "source"}
        return ident, sources
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        raise EvalError(f"{meta}: cannot read identities ({e})") from None


def _crop_clip(frames: torch.Tensor, size: int, margin: float, detector) -> torch.Tensor:
    """(T, 3, H, W) -> (T, 3, size, size): one FOMM-style square box per clip around the
    first frame with a face (searched in the first 10 frames)."""
    from facegeo.landmarks.crops import crop_images, face_boxes

    for f in frames[:10]:
        faces = detector.detect(f)
        if faces:
            box = face_boxes(faces[0].landmarks[None].float(), margin=margin)
            return crop_images(frames, box.expand(frames.shape[0], 3), size)
    raise EvalError("no face in the first 10 frames")


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_frame_folder(path: Path, max_frames: int, size: int) -> torch.Tensor:
    """A folder of already-cropped frames (sorted by name) -> (T, 3, size, size)."""
    import torch.nn.functional as F

    from facegeo.image_io import load_image

    files = _frame_files(path)[:max_frames]
    if not files:
        raise EvalError(f"no frames ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    try:
        frames = torch.stack([load_image(f) for f in files])
    except Exception as e:  # noqa: BLE001 - unreadable or differently sized frames
        raise EvalError(f"cannot read the frames of {path}: {e}") from None
    if frames.shape[-2:] != (size, size):
        frames = F.interpolate(frames, size=(size, size), mode="bilinear",
                               align_corners=False, antialias=True).clamp(0, 1)
    return frames


def load_clip(path: Path, max_frames: int, size: int, margin: float, detector) -> torch.Tensor:
    from facegeo.video import frames_to_tensor, read_video

    if path.is_dir():
        return load_frame_folder(path, max_frames, size)
    try:
        frames, _ = read_video(path, max_frames=max_frames)
    except Exception as e:  # noqa: BLE001 - any decoder failure is bad input here
        raise EvalError(f"cannot read video {path}: {e}") from None
    return _crop_clip(frames_to_tensor(frames), size, margin, detector)


def load_source(path: Path, size: int, margin: float, detector) -> torch.Tensor:
    from facegeo.image_io import load_image

    try:
        img = load_image(path)
    except Exception as e:  # noqa: BLE001
        raise EvalError(f"cannot read image {path}: {e}") from None
    return _crop_clip(img[None], size, margin, detector)


# ----------------------------------------------------------------------------- report
def _fmt(v) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def _clean(x):
    """JSON-safe copy (NaN/inf -> None, tensors dropped)."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def markdown(report: dict) -> str:
    from facegeo.evaluation import METRIC_KEYS

    lines = [f"# Evaluation: protocol `{report['protocol']}`", "",
             f"Command: `{report['command']}`", "",
             f"Settings: {json.dumps(report['settings'])}", ""]
    if report["protocol"] == "noise":
        lines += ["| method | AKD clean (px) | AKD noisy (px) | change | videos |",
                  "|---|---|---|---|---|"]
        for row in report["rows"]:
            a = row["aggregate"]
            ch = a.get("change")
            lines.append(f"| {row['method']} | {_fmt(a.get('akd_clean'))} | "
                         f"{_fmt(a.get('akd_noisy'))} | "
                         f"{'–' if ch is None or not math.isfinite(ch) else f'{100 * ch:.1f}%'}"
                         f" | {a.get('videos')} |")
    else:
        keys = [k for k in (*METRIC_KEYS, "fid", "fps")
                if any(isinstance(r["aggregate"].get(k), float)
                       and math.isfinite(r["aggregate"][k]) for r in report["rows"])]
        lines += ["| method | mode | videos | " + " | ".join(keys) + " |",
                  "|---|---|---|" + "---|" * len(keys)]
        for row in report["rows"]:
            a = row["aggregate"]
            lines.append(f"| {row['method']} | {row['mode']} | {a['videos']} | "
                         + " | ".join(_fmt(a.get(k)) for k in keys) + " |")
    if report["skipped"]:
        lines += ["", "Skipped metrics:", ""]
        lines += [f"- {k}: {v}" for k, v in report["skipped"].items()]
    if report.get("failures"):
        lines += ["", "Failures:", ""] + [f"- {f}" for f in report["failures"]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> Path:
    from facegeo.assets import atomic_write

    def writer(text: str):
        def write(p: Path) -> None:
            p.write_text(text)
            p.chmod(0o644)          # the temporary file is created private
        return write

    atomic_write(out, writer(json.dumps(_clean(report), indent=1)))
    md = out.with_suffix(".md")
    atomic_write(md, writer(markdown(report)))
    return md


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from facegeo_apps._cli import models_epilog

    p = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n\n")[0],
                                epilog=models_epilog("--method, besides static and copy"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, nargs="+",
                   help="geometric | static | copy | <facegeo_models model name>, each "
                        "optionally NAME@LABEL (its row label, so one model can have several "
                        "rows); several compare them in one run (same clips, frames, crops)")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="checkpoint of a neural model (folder, or a bare .safetensors with "
                        "--config; default: its shipped weights); with several methods "
                        "NAME=PATH, repeated")
    p.add_argument("--config", action="append", default=[],
                   help="config of a bare .safetensors checkpoint (bundled name or YAML "
                        "path); with several methods NAME=CONFIG, repeated")
    p.add_argument("--set", action="append", default=[], dest="options",
                   metavar="METHOD.KEY=VALUE",
                   help="override an option of a method's model config (model.params, e.g. "
                        "ldnet_fdgan@3dmm.front_end=3dmm; geometric: its constructor's), "
                        "repeated")
    p.add_argument("--data", required=True, help="folder with videos (and source images)")
    p.add_argument("--protocol", choices=("self", "cross", "noise"), default="self")
    p.add_argument("--mode", choices=("relative", "absolute", "both"), default=None,
                   help="motion transfer mode (default: each method's own default for "
                        "self/noise, every mode a method honours for cross)")
    p.add_argument("--out", required=True, help="report .json (a .md table is written beside)")
    p.add_argument("--videos", nargs="*", help="only these video file names of DIR")
    p.add_argument("--sources", nargs="*", help="only these image file names (cross)")
    p.add_argument("--max-frames", type=int, default=60, help="frames read per video")
    p.add_argument("--every", type=int, default=10, help="evaluate every k-th frame")
    p.add_argument("--num-sources", type=int, choices=(1, 2), default=1,
                   help="self protocol: 2 adds each clip's last frame as a second source "
                        "(FSRT's 2-Src rows; methods taking one source are skipped)")
    p.add_argument("--landmarks", default="tracker",
                   help="landmarks of the methods' conditioning: tracker (tracked + One-Euro, "
                   "default), raw (tracked, unsmoothed), per-frame (dlib on every frame) or "
                   "a landmark refiner .safetensors (data/s2d/refiner.safetensors)")
    p.add_argument("--size", type=int, default=256, help="crop size")
    p.add_argument("--margin", type=float, default=0.4, help="crop margin around the face")
    p.add_argument("--noise-low", type=float, default=0.05)
    p.add_argument("--noise-high", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def _check_args(a) -> tuple[Path, Path, list[Path], list[Path]]:
    from facegeo_apps._cli import check_output, pick_device

    data = Path(a.data).expanduser()
    if not data.is_dir():
        raise EvalError(f"--data {data} is not a directory")
    out = Path(a.out).expanduser()
    if out.suffix.lower() != ".json":
        raise EvalError(f"--out {out}: the report must be a .json file")
    if a.max_frames < 1 or a.every < 1 or a.size < 64:
        raise EvalError("--max-frames and --every must be >= 1 and --size >= 64")
    if a.num_sources != 1 and a.protocol != "self":
        raise EvalError("--num-sources 2 belongs to the self protocol")
    a.device = str(pick_device(a.device))
    videos = sorted(p for p in data.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES
                    or (p.is_dir() and _frame_files(p)))
    images = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if a.videos:
        missing = [v for v in a.videos if not (data / v).exists()]
        if missing:
            raise EvalError(f"videos not found in {data}: {', '.join(missing)}")
        videos = [data / v for v in a.videos]
    if a.sources:
        missing = [v for v in a.sources if not (data / v).is_file()]
        if missing:
            raise EvalError(f"images not found in {data}: {', '.join(missing)}")
        images = [data / v for v in a.sources]
    if not videos:
        raise EvalError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders in {data}")
    if a.protocol == "cross" and not images:
        raise EvalError(f"the cross protocol needs source images in {data}")
    # the report (and the .md beside it) must not replace a data file (media.json, a clip)
    if len(set(a.method)) != len(a.method):
        raise EvalError(f"--method names a method twice: {' '.join(a.method)}")
    for spec in a.method:
        model_name(spec)
    a.checkpoints = per_method(a.checkpoint, a.method, "--checkpoint")
    a.configs = per_method(a.config, a.method, "--config")
    a.method_options = method_options(a.options, a.method)
    inputs = [*data.iterdir(), *videos, *images, *a.checkpoints.values(), *a.configs.values()]
    check_output(out, (".json",), inputs=inputs)
    check_output(out.with_suffix(".md"), (".md",), inputs=inputs)
    return data, out, videos, images


def run(a) -> dict:
    from tqdm.auto import tqdm

    from facegeo import evaluation as E
    from facegeo.landmarks.backends import get_detector

    data, out, videos, images = _check_args(a)
    requested = ([a.mode] if a.mode and a.mode != "both" else
                 ["relative", "absolute"] if (a.mode == "both" or a.protocol == "cross")
                 else None)   # None: each method's default mode
    names = list(a.method) + [b for b in BASELINES if b not in a.method]
    methods = {n: make_method(n, a.checkpoints.get(n), a.size, a.device, a.configs.get(n),
                              a.method_options.get(n), a.landmarks)
               for n in names}
    label = {n: BASELINES.get(n, n) for n in names}
    skipped = {}
    pairs = []   # (method, mode) rows of the report
    for n in names:
        if getattr(methods[n], "max_sources", a.num_sources) < a.num_sources:
            skipped[f"{label[n]} / {a.num_sources} sources"] = (
                f"{n} takes {methods[n].max_sources} source image(s)")
            continue
        honoured = method_modes(methods[n])
        for m in (requested or honoured[:1]):
            if m in honoured:
                pairs.append((n, m))
            else:
                skipped[f"{label[n]} / {m}"] = (f"{n} cannot reenact in {m} mode (it "
                                                f"supports {', '.join(honoured)})")
    modes = sorted({m for _, m in pairs}, key=["relative", "absolute"].index)
    analyzer = E.FaceAnalyzer(device=a.device)
    det = get_detector("dlib")
    ident, portraits = _media_info(data)
    if a.protocol == "cross" and not a.sources and any(p.name in portraits for p in images):
        images = [p for p in images if p.name in portraits]
    rows = {pair: [] for pair in pairs}
    skipped = {**E.SKIPPED, **skipped}
    lpips_net = E.lpips_network(a.device) if a.protocol == "self" else None
    if a.protocol == "self" and lpips_net is None:
        skipped["lpips"] = E.LPIPS_SKIP
    failures: list[str] = []
    bar = tqdm(videos, desc=f"{a.protocol}", disable=a.no_progress)
    for vpath in bar:
        try:
            clip = load_clip(vpath, a.max_frames, a.size, a.margin, det)
        except (EvalError, ValueError) as e:
            failures.append(f"{vpath.name}: {e}")
            continue
        if a.protocol == "cross":
            vid_id = ident.get(vpath.name, vpath.stem)
            cands = [p for p in images if ident.get(p.name, p.stem) != vid_id]
            if not cands:
                failures.append(f"{vpath.name}: no source image of another identity")
                continue
            spath = cands[videos.index(vpath) % len(cands)]
            try:
                source = load_source(spath, a.size, a.margin, det)
            except (EvalError, ValueError) as e:
                failures.append(f"{spath.name}: {e}")
                continue
            driving = clip[::a.every]
            s_an, d_an = analyzer(source), analyzer(driving)
        else:
            c_an = analyzer(clip[::a.every])
        for n, m in pairs:
            bar.set_postfix_str(f"{vpath.name} {label[n]} {m}")
            t0 = time.perf_counter()
            try:
                if a.protocol == "self":
                    r = E.self_reenactment(methods[n], clip, analyzer, every=a.every,
                                           mode=m, clip_analysis=c_an,
                                           lpips_net=lpips_net, num_sources=a.num_sources)
                    r["video"] = vpath.name
                    r["_driving"] = clip[::a.every]
                elif a.protocol == "cross":
                    r = E.cross_reenactment(methods[n], source, driving, analyzer, mode=m,
                                            source_analysis=s_an, driving_analysis=d_an)
                    r["video"], r["source"] = vpath.name, spath.name
                    r["_driving"] = driving
                else:
                    r = E.noise_robustness(methods[n], clip, analyzer, every=a.every,
                                           mode=m,
                                           low=a.noise_low, high=a.noise_high,
                                           seed=a.seed, clip_analysis=c_an)
                    r["video"] = vpath.name
            except (ValueError, RuntimeError) as e:
                failures.append(f"{vpath.name} / {label[n]} / {m}: {e}")
                continue
            r["seconds"] = time.perf_counter() - t0
            rows[(n, m)].append(r)
    fid_refs = {}
    if a.protocol != "noise":
        net = E.fid_network(a.device)
        if net is None:
            skipped["fid"] = E.FID_SKIP
        else:
            for (n, m), rs in rows.items():
                outs = [r["_output"] for r in rs]
                refs = [r["_driving"] for r in rs]
                if sum(o.shape[0] for o in outs) >= 2:
                    fid_refs[(n, m)] = E.dataset_fid(outs, refs, net)
    keys = (("akd_clean", "akd_noisy", "change", "mkr_clean", "mkr_noisy")
            if a.protocol == "noise" else E.METRIC_KEYS + ("fid",))
    report = {
        "command": "python -m facegeo_apps.evaluate " + " ".join(
            shlex.quote(x) for x in (a.argv if a.argv is not None else sys.argv[1:])),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "protocol": a.protocol,
        "settings": {"every": a.every, "max_frames": a.max_frames, "size": a.size,
                     "num_sources": a.num_sources, "landmarks": a.landmarks,
                     "margin": a.margin, "modes": modes, "data": str(data)},
        "skipped": skipped,
        "failures": failures,
        "rows": [{"method": label[n], "mode": m, "aggregate": E.aggregate(rows[(n, m)], keys),
                  "videos": rows[(n, m)]} for n, m in pairs],
    }
    for row in report["rows"]:   # throughput of the whole call (fit/analysis included)
        frames = sum(int(r.get("frames", 0)) for r in row["videos"])
        secs = sum(float(r["seconds"]) for r in row["videos"])
        row["aggregate"]["fps"] = frames / secs if secs > 0 and frames else float("nan")
    for row, key in zip(report["rows"], pairs):
        if key in fid_refs:
            row["aggregate"]["fid"] = fid_refs[key]
    if a.protocol == "noise":
        for row in report["rows"]:   # relative change of the mean errors over videos
            agg = row["aggregate"]
            c, z = agg["akd_clean"], agg["akd_noisy"]
            agg["change"] = (z - c) / c if c and math.isfinite(c) and c > 0 else (
                0.0 if c == z else float("nan"))
    if not any(rows.values()):
        raise EvalError("nothing could be evaluated:\n  " + "\n  ".join(failures))
    md = write_report(out, report)
    print(markdown(report))
    print(f"wrote {out} and {md}")
    return report


def main(argv: list[str] | None = None) -> int:
    from facegeo_apps._cli import run_main

    args = build_parser().parse_args(argv)
    args.argv = argv

    def body() -> int:
        run(args)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
