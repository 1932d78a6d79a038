"""One reenactment pipeline for every method: conditioning computed once, frames streamed.

A *reenactor* (the training-free :class:`facegeo.reenact.GeometricReenactor`, or any neural
model of ``facegeo_models``, all subclasses of :class:`Reenactor`) declares what it needs;
:class:`ReenactmentPipeline` computes exactly that with the core and streams::

    source image(s), driving frames
      -> pass 1: track 68 landmarks over the driving clip (small: T x 68 x 2), crop boxes
      -> sources: crop, landmarks, 3DMM fit              -> reenactor.encode_source() once
      -> pass 2, per chunk of driving frames (frames decoded again, never all in memory):
         crops (``image``), landmarks in crop pixels (``landmarks68``), 3DMM fits with the
         clip's identity (``morphable_fit``), source identity + driving pose/expression
         landmarks (``disentangled_landmarks``)           -> reenactor.reenact(...)
      -> frames (crops, or pasted back into the source frame) to the caller / the writer

Conditioning names (:data:`CONDITIONING`) a reenactor may list in ``requires``:

* ``image``: driving face crops (B, 3, S, S) in [0, 1];
* ``landmarks68``: tracked, One-Euro smoothed 68 landmarks (B, 68, 2) in crop pixels;
* ``morphable_fit``: weak-perspective 3DMM fits (:class:`facegeo.reenact.FaceFit`, B rows,
  crop pixels; one identity for the whole clip);
* ``disentangled_landmarks``: (B, 68, 2) crop-pixel landmarks of the *source* identity with
  the driver's expression and pose (3DMM recombination; ``mode`` decides absolute pose or
  the driver's motion relative to its first frame applied to the source pose).

Sources always carry ``image``, ``landmarks68`` and ``morphable_fit`` (one detection and one
fit per source image, cheap). ``driving.reference`` holds the first good driving frame's
conditioning (for relative motion).

Memory: pass 1 keeps only the landmarks, pass 2 one chunk; the driving fit uses an identity
estimated on at most ``identity_frames`` frames, then fits chunks of frames with that
identity fixed (overlapping by ``fit_overlap`` frames so the temporal smoothing runs across
chunk borders). Peak memory therefore does not grow with the clip length
(``benchmarks/bench_pipeline_memory.py``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

__all__ = ["CONDITIONING", "MODES", "Conditioning", "Reenactor", "UnsupportedModeError",
           "InsufficientMemoryError", "NonFiniteOutputError", "ReenactmentPipeline", "Job",
           "FrameSource", "available_memory", "check_memory", "FacesJob", "VideoSourceJob"]

MODES = ("relative", "absolute")

CONDITIONING: dict[str, str] = {
    "image": "driving face crops (B, 3, S, S) in [0, 1]",
    "landmarks68": "tracked and smoothed 68 landmarks (B, 68, 2), crop pixels",
    "morphable_fit": "weak-perspective 3DMM fits (FaceFit, B rows; one identity per clip)",
    "disentangled_landmarks": "source identity with driving pose/expression, (B, 68, 2) "
                              "crop pixels (3DMM recombination, mode-dependent)",
}


class UnsupportedModeError(ValueError):
    """A reenactor was asked for a motion mode it cannot honour."""


class InsufficientMemoryError(ValueError):
    """A run would need more memory than the machine has available (raised before the work)."""


class NonFiniteOutputError(ValueError):
    """A reenactor produced NaN/inf pixels (broken weights or inputs)."""


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable`` of /proc/meminfo), or
    None where that is unknown (the memory guard is then off)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(need: int, what: str) -> None:
    """Raise :class:`InsufficientMemoryError` when ``need`` bytes exceed what is available."""
    avail = available_memory()
    if avail is not None and need > avail:
        raise InsufficientMemoryError(
            f"{what} needs about {need / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB of "
            "memory is available; use fewer frames (--max-frames), a smaller size, or stream "
            "the frames (facegeo.pipeline.Job.frames) instead of keeping them")


@dataclass
class Conditioning:
    """What the pipeline computed for B faces (a source set, or a chunk of driving frames).

    Attributes:
        image: (B, 3, S, S) face crops in [0, 1], or None when not required.
        landmarks68: (B, 68, 2) crop-pixel landmarks, or None.
        morphable_fit: :class:`facegeo.reenact.FaceFit` with B rows, or None.
        disentangled_landmarks: (B, 68, 2) crop pixels, or None (driving only).
        frame_index: (B,) int64 index of each row in its clip (sources: 0..B-1).
        good: (B,) bool, a face was found (rows without one hold the last good frame).
        reference: one-row :class:`Conditioning` of the first good driving frame (driving
            only; what relative motion is measured from).
        keypoint_offset: optional (B, K, 2) offsets for a model's learned keypoints
            (normalized units; the keypoint-robustness protocol).
        extra: anything else a caller attaches (not used by the pipeline).
    """

    image: torch.Tensor | None = None
    landmarks68: torch.Tensor | None = None
    morphable_fit: Any = None
    disentangled_landmarks: torch.Tensor | None = None
    frame_index: torch.Tensor | None = None
    good: torch.Tensor | None = None
    reference: Conditioning | None = None
    keypoint_offset: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        for x in (self.image, self.landmarks68, self.disentangled_landmarks, self.frame_index):
            if x is not None:
                return int(x.shape[0])
        if self.morphable_fit is not None:
            return len(self.morphable_fit)
        return 0

    def get(self, name: str):
        """The entry called ``name`` (one of :data:`CONDITIONING`), with a clear error when
        the pipeline did not compute it."""
        if name not in CONDITIONING:
            raise KeyError(f"unknown conditioning {name!r}; known: {', '.join(CONDITIONING)}")
        v = getattr(self, name)
        if v is None:
            raise ValueError(f"conditioning {name!r} was not computed (add it to the "
                             "reenactor's `requires`)")
        return v

    def to(self, device) -> Conditioning:
        """A copy with every tensor (and fit) on ``device``."""
        def mv(x):
            return x.to(device) if x is not None and hasattr(x, "to") else x
        return replace(self, image=mv(self.image), landmarks68=mv(self.landmarks68),
                       morphable_fit=mv(self.morphable_fit),
                       disentangled_landmarks=mv(self.disentangled_landmarks),
                       frame_index=mv(self.frame_index), good=mv(self.good),
                       reference=self.reference.to(device) if self.reference else None,
                       keypoint_offset=mv(self.keypoint_offset))

    @classmethod
    def from_images(cls, images: torch.Tensor) -> Conditioning:
        """Image-only conditioning of (B, 3, S, S) crops (or one (3, S, S) crop)."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() == 3:
            images = images[None]
        b = images.shape[0]
        return cls(image=images, frame_index=torch.arange(b),
                   good=torch.ones(b, dtype=torch.bool))


class Reenactor:
    """The interface between :class:`ReenactmentPipeline` and a reenactment method.

    Class attributes a subclass sets:
        name: registry name (``"geometric"``, ``"pfp_mls"``...).
        requires: the driving conditioning it consumes (names of :data:`CONDITIONING`).
        modes: motion modes it honours, the first is its default. ``"relative"`` = the
            driver's motion since its first frame applied to the source; ``"absolute"`` =
            the driver's pose (and framing) copied.
        max_sources: how many source images it uses (extra ones are an error).

    Instances have ``image_size`` (S: the crop side the pipeline prepares).

    Methods:
        encode_source(sources) -> state: work done once per source set (default: the
            sources themselves).
        reenact(sources, driving, *, mode) -> (B, 3, S, S) frames in [0, 1]; ``sources`` is
            a :class:`Conditioning` of N source crops (or the state of
            :meth:`encode_source`), ``driving`` a :class:`Conditioning` of B frames.
    """

    name: str = "reenactor"
    requires: frozenset[str] = frozenset()
    modes: tuple[str, ...] = MODES
    max_sources: int = 1
    image_size: int = 256
    #: number of learned keypoints whose driving positions ``keypoint_offset`` moves (the
    #: keypoint-robustness protocol); None: the protocol perturbs the 68 landmarks instead
    num_keypoints: int | None = None

    def check_mode(self, mode: str | None) -> str:
        """``mode`` validated against :attr:`modes` (None -> the default mode)."""
        if mode is None:
            return self.modes[0]
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode not in self.modes:
            raise UnsupportedModeError(
                f"{self.name} cannot reenact in {mode!r} mode (it supports: "
                f"{', '.join(self.modes)})")
        return mode

    def check_sources(self, sources: Conditioning | Sequence) -> None:
        n = len(sources)
        if n < 1:
            raise ValueError("at least one source image is needed")
        if n > self.max_sources:
            raise ValueError(f"{self.name} takes at most {self.max_sources} source image(s), "
                             f"got {n}")

    def encode_source(self, sources: Conditioning) -> Any:
        self.check_sources(sources)
        return sources

    def reenact(self, sources, driving: Conditioning, *, mode: str | None = None
                ) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


# ----------------------------------------------------------------------------- frames
class FrameSource:
    """Driving frames that can be iterated more than once without holding them all.

    ``frames`` is a video path (decoded again for each pass; a read that ends before the
    frames the container announces warns ``facegeo.video.VideoReadWarning``, or raises with
    ``strict``), an image path (one frame), a
    (T, 3, H, W) float tensor, a (T, H, W, 3) uint8 array, or a list of frames (tensors
    (3, H, W) / arrays (H, W, 3)). A one-shot iterator is materialised into a list (its
    frames are then in memory: pass a path or a tensor for long clips).

    Attributes:
        fps: frame rate (the file's, else the ``fps`` given, else 30).
        audio: the video path when it has an audio track, else None.
        length: number of frames when known (container metadata), else None.
    """

    def __init__(self, frames, fps: float | None = None, max_frames: int | None = None, *,
                 strict: bool = False):
        from facegeo.image_io import IMAGE_SUFFIXES
        from facegeo.video import video_info

        self.path: Path | None = None
        self.strict = strict
        self.audio = None
        self.max_frames = max_frames
        self.length: int | None = None
        self._frames = None
        if isinstance(frames, (str, os.PathLike)):
            self.path = Path(frames)
            if not self.path.is_file():
                raise FileNotFoundError(f"driving file not found: {self.path}")

            if self.path.suffix.lower() in IMAGE_SUFFIXES:
                from facegeo.image_io import load_image

                self._frames = [load_image(self.path, background=1.0)]
                self.path = None
                self.length = 1
            else:
                info = video_info(self.path)
                fps = info.fps or fps
                self.audio = self.path if info.has_audio else None
                self.length = info.frames or None
        else:
            if isinstance(frames, torch.Tensor) and frames.dim() == 3:
                frames = frames[None]
            if not isinstance(frames, (torch.Tensor, list, tuple)) and not hasattr(
                    frames, "__getitem__"):
                frames = list(frames)
            self._frames = frames
            self.length = len(frames)
        if self.length is not None and max_frames is not None:
            self.length = min(self.length, max_frames)
        self.fps = float(fps) if fps and fps > 0 else 30.0

    def __iter__(self) -> Iterator:
        if self.path is not None:
            from facegeo.video import iter_video

            return iter_video(self.path, max_frames=self.max_frames, strict=self.strict)
        n = len(self._frames) if self.max_frames is None else min(len(self._frames),
                                                                   self.max_frames)
        return (self._frames[i] for i in range(n))


def _batch(frames: list) -> torch.Tensor:
    """List of (H, W, 3) uint8 arrays / (3, H, W) tensors -> (B, 3, H, W) float in [0, 1]."""
    from facegeo.image_io import as_uint8_rgb

    out = []
    for f in frames:
        if isinstance(f, torch.Tensor) and f.is_floating_point():
            out.append(f.float())
        else:
            a = as_uint8_rgb(f)
            out.append(torch.from_numpy(a).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out)


# ----------------------------------------------------------------------------- pipeline
class ReenactmentPipeline:
    """Computes what a :class:`Reenactor` ``requires`` with the core and streams frames.

    Args:
        reenactor: the method (``facegeo.reenact.GeometricReenactor`` or a neural model).
        conditioner: the :class:`facegeo.reenact.FaceConditioner` that detects and fits
            (default: the reenactor itself when it is one, else a new one at the
            reenactor's ``image_size``; its morphable model is loaded only when a 3DMM
            conditioning is required).
        device: where conditioning and the reenactor run (default: the conditioner's).
        size: crop side S of the conditioning (default: the reenactor's ``image_size``; a
            neural model resizes to its own resolution and back).
        crop: True (default): detect the face and crop FOMM-style boxes (one box for the
            whole driving clip); False: the inputs already are face crops, only resized.
        chunk_size: driving frames per reenactor call.
        tracker_kwargs: extra :class:`facegeo.landmarks.tracking.LandmarkTracker` arguments.
        refine_landmarks: optional ``f(frames, landmarks) -> landmarks`` run on the tracked
            driving landmarks and the detected source landmarks before anything uses them
            (boxes, fits, ``landmarks68``): ``frames`` an iterable of the T frames ((H, W, 3)
            uint8 arrays or (3, H, W) float tensors; the driving clip is read again, not
            held in memory), ``landmarks`` (T, 68, 2) image pixels; returns (T, 68, 2).
            E.g. the s2d landmark refiner
            (``facegeo_models.s2d.refiner.LandmarkRefiner.refine``).

    Use :meth:`prepare` (sources + pass 1) and then :meth:`Job.frames` (pass 2)::

        job = ReenactmentPipeline(model).prepare(source_image, "talk.mp4")
        write_video("out.mp4", job.frames(mode="relative"), job.fps, audio_from=job.audio)
    """

    def __init__(self, reenactor: Reenactor, *, conditioner=None, device=None,
                 size: int | None = None, crop: bool = True, chunk_size: int = 16,
                 tracker_kwargs: dict | None = None,
                 refine_landmarks: Callable | None = None):
        from facegeo.reenact import FaceConditioner

        unknown = set(reenactor.requires) - set(CONDITIONING)
        if unknown:
            raise ValueError(f"{reenactor.name} requires unknown conditioning "
                             f"{sorted(unknown)}; the pipeline computes {', '.join(CONDITIONING)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.reenactor = reenactor
        if conditioner is None:
            conditioner = reenactor if isinstance(reenactor, FaceConditioner) else \
                FaceConditioner(size=size or reenactor.image_size, device=device)
        if size is not None and conditioner.size != size:
            raise ValueError(f"size={size} differs from the conditioner's size "
                             f"{conditioner.size} (the geometric reenactor renders at its own "
                             "size: build it with that size)")
        self.conditioner = conditioner
        self.device = torch.device(device) if device is not None else conditioner.device
        self.crop = crop
        self.chunk_size = chunk_size
        self.tracker_kwargs = tracker_kwargs
        self.refine_landmarks = refine_landmarks
        req = set(reenactor.requires)
        self.needs_fit = bool(req & {"morphable_fit", "disentangled_landmarks"})
        # landmarks are tracked for the crops and for every landmark-based conditioning; an
        # image-only reenactor on ready crops (crop=False) needs no face detection at all
        # (its landmarks are NaN, never zeros)
        self.needs_landmarks = crop or self.needs_fit or "landmarks68" in req

    @property
    def size(self) -> int:
        return self.conditioner.size

    # -- sources ------------------------------------------------------------------------
    def prepare_sources(self, images, landmarks=None) -> list:
        """Detect, crop (unless ``crop=False``) and, when needed, fit each source image.

        Args:
            images: one (3, H, W) image or a list of them (float in [0, 1]).
            landmarks: optional (68, 2) landmarks per image (detected when None).

        Returns:
            list of :class:`facegeo.reenact.SourceState`.
        """
        if isinstance(images, torch.Tensor) and images.dim() in (3, 4) and not (
                images.dim() == 4 and images.shape[0] > 1):
            images = [images]
        images = list(images)
        lms = list(landmarks) if landmarks is not None else [None] * len(images)
        if not self.needs_landmarks:
            lms = [torch.full((68, 2), float("nan")) for _ in images]
        elif self.refine_landmarks is not None:
            lms = [self._refined_source(im, lm) for im, lm in zip(images, lms)]
        self.reenactor.check_sources(images)
        return [self.conditioner.fit_source(im, lm, crop=self.crop, fit=self.needs_fit)
                for im, lm in zip(images, lms)]

    def _refined_source(self, image, landmarks):
        from facegeo.reenact import _as_image

        if landmarks is None:
            landmarks = self.conditioner.detect_source(image)
        img = _as_image(image, "source")[0].cpu()
        out = self.refine_landmarks([img], landmarks.reshape(1, 68, 2).float())
        return out.reshape(68, 2)

    def source_conditioning(self, sources: list) -> Conditioning:
        """The :class:`Conditioning` of prepared sources (N rows)."""
        from facegeo.reenact import FaceFit

        fits = [s.fit for s in sources]
        fit = FaceFit.cat(fits) if all(f is not None for f in fits) else None
        n = len(sources)
        return Conditioning(image=torch.cat([s.image for s in sources]).to(self.device),
                            landmarks68=torch.cat([s.landmarks for s in sources]).to(self.device),
                            morphable_fit=fit.to(self.device) if fit is not None else None,
                            frame_index=torch.arange(n), good=torch.ones(n, dtype=torch.bool))

    # -- pass 1 -------------------------------------------------------------------------
    def prepare(self, sources, driving, *, fps: float | None = None,
                max_frames: int | None = None, strict: bool = False, source_landmarks=None,
                perturb_landmarks: Callable | None = None,
                progress: Callable[[int], None] | None = None) -> Job:
        """Sources, then pass 1 over the driving frames (landmarks, boxes, 3DMM fits).

        Args:
            sources: one source image (3, H, W) or a list of them.
            driving: anything :class:`FrameSource` takes (video path, tensor, list...).
            fps: frame rate of in-memory frames.
            max_frames: use only the first N driving frames.
            strict: a truncated or damaged driving video is an error (default: a warning
                with the number of frames read vs announced).
            perturb_landmarks: optional ``f(lm (T, 68, 2) in [0, 1] frame units) -> lm``
                applied to the tracked driving landmarks before fitting (robustness tests).
            progress: called with 1 per tracked frame.

        Returns:
            :class:`Job`.
        """
        t0 = time.perf_counter()
        src = self.prepare_sources(sources, source_landmarks)
        frames, track, boxes, dfit, timings = self._pass1(
            driving, fps=fps, max_frames=max_frames, strict=strict,
            perturb_landmarks=perturb_landmarks, progress=progress, t0=t0)
        return Job(self, src, frames, track, boxes, dfit, timings=timings)

    def _pass1(self, driving, *, fps=None, max_frames=None, strict=False,
               perturb_landmarks=None, progress=None, t0=None):
        """Pass 1 over driving frames: (FrameSource, DrivingTrack, (T, 3) boxes, T-row fit or
        None, timings)."""
        from facegeo.reenact import driving_boxes, track_driving

        t0 = time.perf_counter() if t0 is None else t0
        frames = driving if isinstance(driving, FrameSource) else FrameSource(
            driving, fps, max_frames, strict=strict)
        track = track_driving(iter(frames), frames.fps, detector=self.conditioner.detector,
                              progress=progress, tracker_kwargs=self.tracker_kwargs,
                              track=self.needs_landmarks)
        if perturb_landmarks is not None:
            h, w = track.frame_size
            scale = torch.tensor([float(w), float(h)])
            track.landmarks = perturb_landmarks(track.landmarks / scale) * scale
        if self.refine_landmarks is not None and self.needs_landmarks:
            refined = self.refine_landmarks(iter(frames), track.landmarks).float()
            # frames without a face keep the held landmarks of the last good frame
            track.landmarks = torch.where(track.good[:, None, None], refined, track.landmarks)
        if self.crop:
            boxes = driving_boxes(track)
        else:
            h, w = track.frame_size
            boxes = torch.tensor([(w - 1) / 2, (h - 1) / 2, float(max(h, w))]).expand(
                len(track), 3).clone()
        t1 = time.perf_counter()
        dfit = self.conditioner.fit_driving(track, boxes) if self.needs_fit else None
        t2 = time.perf_counter()
        return frames, track, boxes, dfit, {"landmarks": t1 - t0, "fit": t2 - t1}

    def prepare_faces(self, image, driving, *, faces: Sequence[int] | None = None,
                      face_landmarks: Sequence[torch.Tensor] | None = None,
                      fps: float | None = None, max_frames: int | None = None,
                      strict: bool = False,
                      progress: Callable[[int], None] | None = None) -> FacesJob:
        """Several faces of one source image, each animated (pass 1 included).

        Args:
            image: (3, H, W) source image in [0, 1].
            driving: one driver (every face follows it) or a list of drivers, one per face
                (anything :class:`FrameSource` takes). A driver shared by several faces is
                tracked and fitted once.
            faces: which detected faces, by size (0 = the largest); None = all of them.
            face_landmarks: (68, 2) landmarks per face instead of detecting (then ``faces``
                indexes this list).
            fps, max_frames, strict, progress: as :meth:`prepare`.

        Returns:
            :class:`FacesJob` (one :class:`Job` per face).

        Raises:
            NoFaceError: no face; ValueError: a face index that does not exist, a number of
            drivers that is neither 1 nor the number of faces, a face picked twice.
        """
        from facegeo.landmarks.backends import NoFaceError, detect

        if isinstance(image, torch.Tensor) and image.dim() == 4:
            if image.shape[0] != 1:
                raise ValueError("prepare_faces takes one source image")
            image = image[0]
        if face_landmarks is None:
            found = detect(image.cpu(), self.conditioner.detector)
            if not found:
                raise NoFaceError("no face found in the source image")
            face_landmarks = [f.landmarks for f in found]
        lms = list(face_landmarks)
        idx = list(range(len(lms))) if faces is None else [int(i) for i in faces]
        if not idx:
            raise ValueError("no face selected")
        bad = [i for i in idx if not 0 <= i < len(lms)]
        if bad:
            raise ValueError(f"face index {bad[0]}: the source image has {len(lms)} face(s) "
                             "(0 = the largest)")
        if len(set(idx)) != len(idx):
            raise ValueError(f"a face is selected twice: {idx}")
        drivers = list(driving) if isinstance(driving, (list, tuple)) else [driving]
        if len(drivers) not in (1, len(idx)):
            raise ValueError(f"{len(drivers)} drivers for {len(idx)} faces: give one driver "
                             "for all faces or one per face")
        if len(drivers) == 1:
            drivers = drivers * len(idx)
        jobs: list[Job] = []
        seen: dict[int, Job] = {}
        for i, drv in zip(idx, drivers):
            if id(drv) in seen:   # the same driver object: track and fit it once
                jobs.append(replace(seen[id(drv)],
                                    sources=self.prepare_sources(image, [lms[i]]),
                                    timings={}))
                continue
            job = self.prepare(image, drv, fps=fps, max_frames=max_frames, strict=strict,
                               source_landmarks=[lms[i]], progress=progress)
            seen[id(drv)] = job
            jobs.append(job)
        return FacesJob(jobs, image[None].to(self.device), idx)

    def prepare_video_source(self, source, driving, *, fps: float | None = None,
                             max_frames: int | None = None, strict: bool = False,
                             progress: Callable[[int], None] | None = None
                             ) -> VideoSourceJob:
        """A source *video* (video-to-video): every source frame is re-rendered with the
        driver's expression, its own head motion (and everything outside the face) kept.

        The source clip is tracked and fitted like a driving clip (One-Euro smoothed
        landmarks, one crop box for the clip, one identity, temporally smoothed fits), so
        its fits are as steady as a driver's. Frames are paired by index; the result has
        ``min(T_source, T_driving)`` frames.

        Args:
            source: the source video (anything :class:`FrameSource` takes, >= 1 frame).
            driving: the driver (anything :class:`FrameSource` takes).
            fps, max_frames, strict, progress: as :meth:`prepare` (for both clips).

        Returns:
            :class:`VideoSourceJob`.

        Raises:
            ValueError: the reenactor uses no 3DMM fits (keeping the source's motion needs
            them); NoFaceError: no face in the source or the driving clip.
        """
        from facegeo.reenact import SourceState

        if not self.needs_fit:
            raise ValueError(f"{self.reenactor.name} uses no 3DMM fits; a video source keeps "
                             "the source's head motion through them (use a reenactor that "
                             "requires morphable_fit or disentangled_landmarks)")
        t0 = time.perf_counter()
        sframes, strack, sboxes, sfit, stimes = self._pass1(
            source, fps=fps, max_frames=max_frames, strict=strict, progress=progress, t0=t0)
        frames, track, boxes, dfit, timings = self._pass1(
            driving, fps=fps, max_frames=max_frames, strict=strict, progress=progress)
        from facegeo.landmarks.crops import crop_images, points_to_crop

        first = next(iter(sframes))
        full = _batch([first]).to(self.device)
        lm0 = points_to_crop(strack.landmarks[:1].float(), sboxes[:1], self.size)
        src0 = SourceState(crop_images(full, sboxes[:1].to(full), self.size), full, sboxes[0],
                           lm0.to(self.device), sfit.index(0))
        job = Job(self, [src0], frames, track, boxes, dfit,
                  timings={k: timings[k] + stimes[k] for k in timings})
        return VideoSourceJob(job, sframes, strack, sboxes, sfit)

@dataclass
class Job:
    """One prepared reenactment: sources, the driving clip's landmarks, boxes and fits.

    Attributes:
        pipeline: the :class:`ReenactmentPipeline`.
        sources: list of :class:`facegeo.reenact.SourceState`.
        driving: the :class:`FrameSource` (decoded again by :meth:`frames`).
        track: :class:`facegeo.reenact.DrivingTrack` (landmarks only, T x 68 x 2).
        boxes: (T, 3) crop boxes in driving-frame pixels.
        driving_fit: T-row :class:`facegeo.reenact.FaceFit` (crop pixels) or None.
        timings: seconds per stage (``landmarks``, ``fit``, then ``render``).
    """

    pipeline: ReenactmentPipeline
    sources: list
    driving: FrameSource
    track: Any
    boxes: torch.Tensor
    driving_fit: Any = None
    timings: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.track)

    @property
    def n_missing(self) -> int:
        return self.track.n_missing

    @property
    def fps(self) -> float:
        return self.driving.fps

    @property
    def audio(self):
        return self.driving.audio

    def memory_estimate(self, *, paste: bool = False, keep_frames: bool = False) -> int:
        """Bytes of working memory pass 2 adds (beyond the loaded models): a chunk of
        decoded frames, its crops and about 16 S x S float maps per frame for the
        reenactor's intermediates, the outputs of a chunk, and, with ``keep_frames``, every
        output frame of the clip (what :func:`facegeo.reenact.reenact` stacks)."""
        p = self.pipeline
        h, w = self.track.frame_size
        s = p.size
        out_px = (self.sources[0].full.shape[-2] * self.sources[0].full.shape[-1]
                  if paste else s * s)
        f32 = 4
        chunk = p.chunk_size * f32 * (3 * h * w + (3 + 16) * s * s + 3 * out_px)
        kept = self.n_frames * 3 * out_px * f32 if keep_frames else 0
        return int(chunk + kept)

    def _crop(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        from facegeo.landmarks.crops import crop_images

        return crop_images(x, self.boxes[idx], self.pipeline.size)

    def _conditioning(self, x: torch.Tensor | None, idx: torch.Tensor, mode: str,
                      source: Conditioning, ref: Conditioning | None,
                      offsets: torch.Tensor | None, driving_fit=None) -> Conditioning:
        from facegeo.landmarks.crops import points_to_crop

        dfit = self.driving_fit if driving_fit is None else driving_fit
        p = self.pipeline
        req = p.reenactor.requires
        dev = p.device
        c = Conditioning(frame_index=idx, good=self.track.good[idx], reference=ref)
        if "image" in req:
            c.image = self._crop(x, idx).to(dev)
        if "landmarks68" in req:
            c.landmarks68 = points_to_crop(self.track.landmarks[idx].float(), self.boxes[idx],
                                           p.size).to(dev)
        if dfit is not None:
            c.morphable_fit = dfit.index(idx.to(dfit.rotation.device))
        if "disentangled_landmarks" in req:
            cond = p.conditioner
            rfit = ref.morphable_fit if ref is not None else None
            tfit = cond.target_fits(source.morphable_fit.index(0), c.morphable_fit, mode,
                                    reference=rfit)
            c.disentangled_landmarks = cond.fit_landmarks68(tfit).to(dev)
        if offsets is not None:
            c.keypoint_offset = offsets[idx].to(dev)
        return c

    # -- controls (facegeo.controls) ----------------------------------------------------
    def _fits_for_controls(self, what: str):
        """(source fit, driving fit), fitting on demand for a reenactor that needs none."""
        p = self.pipeline
        if self.driving_fit is None:
            self.driving_fit = p.conditioner.fit_driving(self.track, self.boxes)
        src = self.sources[0]
        if src.fit is None:
            if not torch.isfinite(src.landmarks).all():
                raise ValueError(f"{what} needs the source's landmarks (crop=True)")
            src.fit = p.conditioner.fit_landmarks(src.landmarks)
        return src.fit, self.driving_fit

    def reference_index(self, reference: int | str | None = None) -> int:
        """The driving frame relative motion is measured from.

        Args:
            reference: None / ``"first"``: the first good frame; ``"best"``: the good frame
                closest to the source's expression and head rotation
                (:func:`facegeo.controls.best_reference_frame`, FOMM's ``--find_best_frame``);
                an int: that frame (it must have a face).
        """
        good = self.track.good
        if reference is None or reference == "first":
            return int(good.nonzero()[0, 0])
        if reference == "best":
            from facegeo.controls import best_reference_frame

            sfit, dfit = self._fits_for_controls("the best reference frame")
            return best_reference_frame(sfit, dfit, good)
        if isinstance(reference, bool) or not isinstance(reference, int):
            raise ValueError(f"reference must be None, 'first', 'best' or a frame index, got "
                             f"{reference!r}")
        if not 0 <= reference < self.n_frames:
            raise ValueError(f"reference frame {reference} is outside the clip "
                             f"(0..{self.n_frames - 1})")
        if not bool(good[reference]):
            raise ValueError(f"reference frame {reference} has no face")
        return reference

    def controlled_fit(self, controls, mode: str, reference_index: int, source_fit=None):
        """The T-row driving fit with :class:`facegeo.controls.Controls` applied (what the
        reenactor then receives); the plain driving fit without controls."""
        if controls is None or controls.is_default:
            return self.driving_fit
        r = self.pipeline.reenactor
        if not (self.pipeline.needs_fit or self.driving_fit is not None):
            raise ValueError(f"{r.name} uses no 3DMM fits, so region control and the "
                             "expression/motion multipliers cannot reach it")
        sfit, dfit = self._fits_for_controls("controls")
        sfit = sfit if source_fit is None else source_fit
        ref = dfit.index(reference_index)
        return controls.driving_fits(sfit, dfit, ref, mode, self.pipeline.conditioner.model,
                                     relative_expression=bool(getattr(
                                         r, "relative_expression", False)))

    def frames(self, *, mode: str | None = None, paste: bool = False,
               perturb_keypoints: Callable | None = None,
               progress: Callable[[int], None] | None = None,
               keep_frames: bool = False, controls=None,
               reference: int | str | None = None) -> Iterator[torch.Tensor]:
        """Pass 2: yield the T result frames one by one, (3, S, S) crops, or (3, H, W)
        pasted back into the first source image with ``paste``.

        Args:
            mode: motion mode (None: the reenactor's default); checked before any work.
            paste: paste the crop back into the full source frame (feathered).
            perturb_keypoints: optional ``f(kp (T, K, 2)) -> kp`` in [0, 1] units for a
                reenactor with learned keypoints (``num_keypoints``); the offsets reach it
                as ``driving.keypoint_offset`` (x2: normalized units).
            progress: called with the number of frames finished.
            keep_frames: the caller keeps every frame (e.g. stacks them): the memory guard
                counts them too.
            controls: optional :class:`facegeo.controls.Controls` (region control,
                expression and motion multipliers) for reenactors that use 3DMM fits.
            reference: the relative-mode reference frame (:meth:`reference_index`:
                None = the first good frame, ``"best"``, or an index).

        Raises (at the call, before any work):
            UnsupportedModeError, InsufficientMemoryError (:meth:`memory_estimate` above
            the available memory), ValueError.
        Raises while streaming: NonFiniteOutputError naming the model and the frames.
        """
        r = self.pipeline.reenactor
        mode = r.check_mode(mode)
        check_memory(self.memory_estimate(paste=paste, keep_frames=keep_frames),
                     f"reenacting {self.n_frames} frames with {r.name}")
        offsets = None
        if perturb_keypoints is not None:
            if not r.num_keypoints:
                raise ValueError(f"{r.name} has no learned keypoints to perturb")
            offsets = 2.0 * perturb_keypoints(torch.zeros(self.n_frames, r.num_keypoints, 2))
        first = self.reference_index(reference)
        dfit = self.controlled_fit(controls, mode, first)
        return self._stream(mode, paste, offsets, progress, first, dfit)

    def _stream(self, mode, paste, offsets, progress, first=None,
                dfit=None) -> Iterator[torch.Tensor]:
        p = self.pipeline
        r = p.reenactor
        source = p.source_conditioning(self.sources)
        state = r.encode_source(source)
        # the reference: the first good driving frame unless chosen (frames before it hold it)
        if first is None:
            first = int(self.track.good.nonzero()[0, 0])
        ref_idx = torch.tensor([first])
        needs_image = "image" in r.requires
        ref_img = None
        if needs_image:
            for t, f in enumerate(self.driving):
                if t == first:
                    ref_img = _batch([f])
                    break
        ref = self._conditioning(ref_img, ref_idx, mode, source, None, offsets, dfit)
        main = self.sources[0]
        n = self.n_frames
        t_render = 0.0

        def render(lo: int, items: list) -> torch.Tensor:
            nonlocal t_render
            idx = torch.arange(lo, lo + len(items))
            x = _batch(items) if needs_image else None
            t0 = time.perf_counter()
            out = _checked(r.reenact(state, self._conditioning(x, idx, mode, source, ref,
                                                               offsets, dfit), mode=mode),
                           r.name, idx)
            if paste:
                from facegeo.landmarks.crops import paste_back

                k = out.shape[0]
                out = paste_back(main.full.expand(k, -1, -1, -1).to(out), out,
                                 main.box[None].expand(k, 3).to(out), feather=0.1)
            t_render += time.perf_counter() - t0
            return out

        it = iter(self.driving) if needs_image else iter(range(n))
        for lo in range(0, n, p.chunk_size):
            want = min(p.chunk_size, n - lo)
            items = list(itertools.islice(it, want))
            if len(items) < want:
                raise ValueError(f"the driving clip ended after {lo + len(items)} frames on "
                                 f"the second pass (the first pass tracked {n})")
            out = render(lo, items)
            yield from out
            if progress is not None:
                progress(out.shape[0])
        self.timings["render"] = self.timings.get("render", 0.0) + t_render


def _checked(out: torch.Tensor, name: str, idx: torch.Tensor) -> torch.Tensor:
    """``out`` clamped to [0, 1]; NonFiniteOutputError naming the frames when not finite."""
    bad = ~torch.isfinite(out.flatten(1)).all(1)
    if bad.any():
        frames = idx[bad.cpu()].tolist()
        raise NonFiniteOutputError(
            f"{name} produced NaN/inf pixels for driving frame(s) {frames[:10]}"
            f"{' ...' if len(frames) > 10 else ''} (broken weights or inputs); nothing was "
            "written")
    return out.clamp(0, 1)


@dataclass
class FacesJob:
    """Several faces of one source image, each with its driver
    (:meth:`ReenactmentPipeline.prepare_faces`).

    Attributes:
        jobs: one :class:`Job` per face (jobs of one driver share its track and fits).
        image: (1, 3, H, W) the source image.
        faces: the detected-face index of each job (0 = the largest face).
    """

    jobs: list
    image: torch.Tensor
    faces: list

    @property
    def n_frames(self) -> int:
        """The longest driver's length (faces whose driver ended hold its last frame)."""
        return max(j.n_frames for j in self.jobs)

    @property
    def n_missing(self) -> int:
        return sum(j.n_missing for j in {id(j.track): j for j in self.jobs}.values())

    @property
    def fps(self) -> float:
        return self.jobs[0].fps

    @property
    def audio(self):
        return self.jobs[0].audio

    def frames(self, *, mode: str | None = None, controls=None,
               reference: int | str | None = None,
               progress: Callable[[int], None] | None = None) -> Iterator[torch.Tensor]:
        """Yield (3, H, W) source-image frames with every selected face animated (each
        face's crop pasted back, feathered, in the order of :attr:`faces`).

        ``mode``, ``controls``, ``reference``: as :meth:`Job.frames`, for every face.
        """
        from facegeo.landmarks.crops import paste_back

        streams = [j.frames(mode=mode, controls=controls, reference=reference)
                   for j in self.jobs]
        boxes = [j.sources[0].box[None].to(self.image) for j in self.jobs]
        last: list = [None] * len(streams)
        for _ in range(self.n_frames):
            frame = self.image
            for k, it in enumerate(streams):
                crop = next(it, None)
                if crop is None:
                    crop = last[k]
                last[k] = crop
                frame = paste_back(frame, crop[None].to(frame), boxes[k], feather=0.1)
            yield frame[0]
            if progress is not None:
                progress(1)


@dataclass
class VideoSourceJob:
    """A source video re-rendered with a driver's expression
    (:meth:`ReenactmentPipeline.prepare_video_source`).

    Attributes:
        job: the driving :class:`Job` (its ``sources`` hold the first source frame).
        source_frames: :class:`FrameSource` of the source video (decoded again by :meth:`frames`).
        source_track: :class:`facegeo.reenact.DrivingTrack` of the source video.
        source_boxes: (T_s, 3) crop boxes in source-frame pixels (one box for the clip).
        source_fit: T_s-row fits of the source video (crop pixels).
    """

    job: Job
    source_frames: FrameSource
    source_track: Any
    source_boxes: torch.Tensor
    source_fit: Any

    @property
    def n_frames(self) -> int:
        return min(len(self.source_track), self.job.n_frames)

    @property
    def fps(self) -> float:
        return self.job.fps

    @property
    def audio(self):
        return self.job.audio

    def frames(self, *, mode: str | None = None, controls=None,
               reference: int | str | None = None,
               progress: Callable[[int], None] | None = None) -> Iterator[torch.Tensor]:
        """Yield ``n_frames`` (3, H_s, W_s) source frames with the face re-rendered.

        Args:
            mode: motion mode (None: the reenactor's default).
            controls: :class:`facegeo.controls.Controls`; default ``only="expression"``:
                the driver's expression, the source video's own head motion. Add ``pose``
                to put the driver's head motion on top (relative mode).
            reference: the driving reference frame (:meth:`Job.reference_index`).
            progress: called with 1 per frame.
        """
        from facegeo.controls import Controls
        from facegeo.landmarks.crops import crop_images, paste_back, points_to_crop

        job, p = self.job, self.job.pipeline
        r = p.reenactor
        mode = r.check_mode(mode)
        controls = Controls(only="expression") if controls is None else controls
        n = self.n_frames
        first = job.reference_index(reference)
        rows = torch.arange(n)
        sfit = self.source_fit.index(rows.to(self.source_fit.rotation.device))
        dall = job.driving_fit
        dcut = dall.index(rows.to(dall.rotation.device))
        # the controls act row by row: source frame t (its own pose and expression) with
        # driving frame t, measured from the driving reference frame
        ctrl = controls.driving_fits(sfit, dcut, dall.index(first), mode, p.conditioner.model,
                                     relative_expression=bool(getattr(
                                         r, "relative_expression", False)))
        needs_image = "image" in r.requires
        src0 = p.source_conditioning([job.sources[0]])
        ref_img = None
        if needs_image:
            for t, f in enumerate(job.driving):
                if t == first:
                    ref_img = _batch([f])
                    break
        # the reference is the driver's own frame (controls leave its pose unchanged)
        ref = job._conditioning(ref_img, torch.tensor([first]), mode, src0, None, None, dall)
        slm = self.source_track.landmarks
        drv_iter = iter(job.driving) if needs_image else None
        for t, sframe in enumerate(self.source_frames):
            if t >= n:
                break
            full = _batch([sframe]).to(p.device)
            box = self.source_boxes[t:t + 1]
            crop = crop_images(full, box.to(full), p.size)
            lm = points_to_crop(slm[t:t + 1].float(), box, p.size).to(p.device)
            scond = Conditioning(image=crop, landmarks68=lm,
                                 morphable_fit=self.source_fit.index(t).to(p.device),
                                 frame_index=torch.tensor([t]),
                                 good=self.source_track.good[t:t + 1])
            state = r.encode_source(scond)
            x = _batch([next(drv_iter)]) if needs_image else None
            idx = torch.tensor([t])
            c = job._conditioning(x, idx, mode, scond, ref, None, ctrl)
            out = _checked(r.reenact(state, c, mode=mode), r.name, idx)
            if self.source_track.good[t]:
                full = paste_back(full, out.to(full), box.to(full), feather=0.1)
            yield full[0]
            if progress is not None:
                progress(1)

