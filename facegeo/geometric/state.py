"""The fitting state of the geometric pipeline: what a fit produced, in crop pixels.

* :class:`FaceFit`: weak-perspective 3DMM parameters of B faces (pose, identity,
  expression);
* :class:`DrivingTrack`: tracked 68-point landmarks of a driving sequence;
* :class:`SourceState`: a fitted source portrait (crop, box, landmarks, fit);
* :class:`RenderOutput`: what the renderer returns for B target faces.

Re-exported by :mod:`facegeo.reenact` (their historical home).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from facegeo import transforms as T

__all__ = ["FaceFit", "DrivingTrack", "SourceState", "RenderOutput"]


@dataclass
class FaceFit:
    """Weak-perspective 3DMM parameters of B faces.

    Attributes:
        rotation: (B, 3, 3) head rotation (model frame, :mod:`facegeo.transforms`).
        scale: (B,) pixels per model unit.
        translation: (B, 2) pixel position of the model origin.
        id_coeffs: (B, K_id) identity coefficients.
        exp_coeffs: (B, K_exp) expression coefficients (ICT: blendshape weights in [0, 1]).
    """

    rotation: torch.Tensor
    scale: torch.Tensor
    translation: torch.Tensor
    id_coeffs: torch.Tensor
    exp_coeffs: torch.Tensor

    def __len__(self) -> int:
        return self.rotation.shape[0]

    @property
    def angles(self) -> torch.Tensor:
        """(B, 3) (yaw, pitch, roll) in degrees."""
        return T.matrix_to_euler(self.rotation)

    def index(self, idx) -> FaceFit:
        """Select rows (an int, slice or (N,) index tensor) -> FaceFit."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return FaceFit(self.rotation[idx], self.scale[idx], self.translation[idx],
                       self.id_coeffs[idx], self.exp_coeffs[idx])

    def expand(self, n: int) -> FaceFit:
        """Repeat a one-row fit n times."""
        if len(self) != 1:
            raise ValueError(f"expand needs a one-row fit, got {len(self)} rows")
        return FaceFit(*(x.expand(n, *x.shape[1:]) for x in (
            self.rotation, self.scale, self.translation, self.id_coeffs, self.exp_coeffs)))

    def resized(self, k: float) -> FaceFit:
        """The same faces in the image resized by ``k`` (pixel centres at integers:
        ``x' = (x + 0.5) k - 0.5``): scale times k, translation moved accordingly."""
        return FaceFit(self.rotation, self.scale * k, (self.translation + 0.5) * k - 0.5,
                       self.id_coeffs, self.exp_coeffs)

    def to(self, device) -> FaceFit:
        return FaceFit(*(x.to(device) for x in (
            self.rotation, self.scale, self.translation, self.id_coeffs, self.exp_coeffs)))

    @classmethod
    def cat(cls, fits: Sequence[FaceFit]) -> FaceFit:
        """Concatenate fits along the rows (B_1 + B_2 + ... rows)."""
        return cls(*(torch.cat([getattr(f, k) for f in fits]) for k in (
            "rotation", "scale", "translation", "id_coeffs", "exp_coeffs")))

    @classmethod
    def from_result(cls, res) -> FaceFit:
        """From a weak-perspective :class:`facegeo.fitting.FitResult`."""
        if res.camera != "weak_perspective":
            raise ValueError(f"need a weak-perspective fit, got camera={res.camera!r}")
        return cls(res.rotation, res.scale, res.translation, res.id_coeffs, res.exp_coeffs)


@dataclass
class DrivingTrack:
    """Landmarks of a driving sequence (see :func:`track_driving`).

    Attributes:
        landmarks: (T, 68, 2) frame pixel coordinates (rows of missing frames are copies of
            the nearest earlier good frame, or the first good frame for leading ones).
        good: (T,) bool, a face was detected / tracked in that frame.
        frame_size: (H, W) of the driving frames.
        fps: frame rate.
    """

    landmarks: torch.Tensor
    good: torch.Tensor
    frame_size: tuple[int, int]
    fps: float

    @property
    def n_missing(self) -> int:
        return int((~self.good).sum())

    def __len__(self) -> int:
        return self.landmarks.shape[0]


@dataclass
class SourceState:
    """A fitted source portrait.

    Attributes:
        image: (1, 3, S, S) the face crop (or the resized full image without cropping).
        full: (1, 3, H, W) the full source image.
        box: (3,) crop box ``(cx, cy, side)`` in full-image pixels.
        landmarks: (1, 68, 2) landmarks in crop pixels.
        fit: one-row :class:`FaceFit` in crop pixels.
    """

    image: torch.Tensor
    full: torch.Tensor
    box: torch.Tensor
    landmarks: torch.Tensor
    fit: FaceFit


@dataclass
class RenderOutput:
    """Output of :meth:`GeometricReenactor.render` for B target faces.

    Attributes:
        frames: (B, 3, S, S) warped source images.
        src_xy: (B, S, S, 2) source pixel sampled by each output pixel.
        face_mask: (B, S, S) float blend weight of the mesh flow (1 = face).
        target_landmarks: (B, 68, 2) projected target model landmarks.
    """

    frames: torch.Tensor
    src_xy: torch.Tensor
    face_mask: torch.Tensor
    target_landmarks: torch.Tensor
