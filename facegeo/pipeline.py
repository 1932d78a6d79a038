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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

__all__ = ["CONDITIONING", "MODES", "Conditioning", "Reenactor", "UnsupportedModeError"]

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
