"""Landmark tracking over video, temporal stabilization and the SMS smoothness metric.

Tracking (:class:`LandmarkTracker`): the detector runs on the first frame, whenever the
face is lost and every ``redetect_every`` frames (first in a region around the predicted
box, then in the whole frame). On every other frame 17 stable landmarks are moved by
pyramidal Lucas-Kanade optical flow (OpenCV, in a downscaled region around the face), a
similarity transform fitted to them moves all 68 previous points, a detector-style box is
placed around the moved points (with the box/landmark relation measured at the last
detection) and the backend's landmark predictor (dlib shape predictor or FAN) is re-run in
that box. The face counts as lost, and the detector runs again, when fewer than half of
the flow points are tracked, when the box leaves the frame or its size drifts by more than
``max_scale_change`` from the last detection, or when the new landmarks disagree with the
flow prediction by more than ``lost_threshold`` inter-ocular distances on average. While
no face is found the last landmarks are held (and flagged ``lost``).

Stabilization (:class:`OneEuroFilter`, Casiez et al., CHI 2012): per landmark, an
exponential smoother whose cut-off frequency rises with the speed of the point::

    alpha(fc) = 1 / (1 + fps / (2 pi fc))
    dx_t  = alpha(d_cutoff) * (x_t - xhat_{t-1}) * fps + (1 - alpha(d_cutoff)) * dx_{t-1}
    fc    = min_cutoff + beta * |dx_t|          (|.|: speed of the point, in units / s)
    xhat_t = alpha(fc) * x_t + (1 - alpha(fc)) * xhat_{t-1}

The tracker filters landmarks in units of the inter-ocular distance measured at the first
detection, so ``min_cutoff`` (Hz) and ``beta`` (s / IOD) do not depend on the face size.
``update()`` returns the causal (live) filter output; ``track()`` on a whole clip returns
the zero-phase version (forward then backward pass, no lag) by default.

SMS (eq. 9 of the S2D paper, ../shared/papers/s2d--sparse-to-dense-motion-transfer.txt)::

    SMS = 1/T sum_t | (D_{t-1} + D_{t+1}) / 2 - D_t |

with D_t the concatenated landmark vector of frame t and |.| the L1 norm (sum over all
68 x 2 coordinates, pixels), averaged over the T - 2 frames that have two neighbours.
:func:`facegeo.metrics.sms` computes it; ``per_coordinate=True`` divides by the number of
coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from facegeo import metrics as _metrics
from facegeo._deprecation import warn_deprecated
from facegeo.image_io import as_uint8_rgb
from facegeo.landmarks.backends import (
    Face,
    LandmarkDetector,
    NoFaceError,
    _iou,
    get_detector,
)

__all__ = [
    "OneEuroFilter",
    "one_euro_smooth",
    "sms",
    "LandmarkTracker",
    "TrackResult",
    "track_video",
    "detect_every_frame",
]


def _alpha(cutoff: torch.Tensor | float, fps: float) -> torch.Tensor | float:
    return 1.0 / (1.0 + fps / (2.0 * math.pi * cutoff))


class OneEuroFilter:
    """One-Euro filter for point sets (any shape (..., D); the speed is the norm over D).

    Args:
        fps: sampling rate (frames per second).
        min_cutoff: minimum cut-off frequency in Hz (lower = smoother at rest).
        beta: speed coefficient (higher = less lag on fast motion).
        d_cutoff: cut-off frequency of the derivative estimate in Hz.
    """

    def __init__(self, fps: float = 30.0, min_cutoff: float = 1.0, beta: float = 0.0,
                 d_cutoff: float = 1.0) -> None:
        if fps <= 0 or min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("need fps > 0, min_cutoff > 0, d_cutoff > 0, beta >= 0; got "
                             f"{fps}, {min_cutoff}, {d_cutoff}, {beta}")
        self.fps, self.min_cutoff, self.beta, self.d_cutoff = fps, min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the state (next call returns its input)."""
        self._x: torch.Tensor | None = None
        self._dx: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Filter one sample (..., D) (torch tensor or numpy array) and return the smoothed
        sample (same shape and type)."""
        is_np = isinstance(x, np.ndarray)
        copy = (lambda a: a.copy()) if is_np else (lambda a: a.clone())
        if self._x is None:
            self._x = copy(x)
            self._dx = np.zeros_like(x) if is_np else torch.zeros_like(x)
            return copy(x)
        if x.shape != self._x.shape:
            raise ValueError(f"sample shape changed from {tuple(self._x.shape)} to "
                             f"{tuple(x.shape)}; call reset() first")
        a_d = _alpha(self.d_cutoff, self.fps)
        dx = a_d * (x - self._x) * self.fps + (1 - a_d) * self._dx
        if is_np:
            speed = np.sqrt((dx * dx).sum(-1, keepdims=True))
        else:
            speed = torch.linalg.vector_norm(dx, dim=-1, keepdim=True)
        a = _alpha(self.min_cutoff + self.beta * speed, self.fps)
        self._x = a * x + (1 - a) * self._x
        self._dx = dx
        return copy(self._x)


def one_euro_smooth(seq: torch.Tensor, fps: float, min_cutoff: float = 1.0, beta: float = 0.0,
                    d_cutoff: float = 1.0, scale: float | torch.Tensor = 1.0,
                    zero_phase: bool = False) -> torch.Tensor:
    """Filter a whole sequence with a :class:`OneEuroFilter`.

    Args:
        seq: (T, ..., D) samples (e.g. (T, 68, 2) landmarks).
        fps: frame rate.
        scale: the filter runs on ``seq / scale`` (e.g. the inter-ocular distance, making
            ``beta`` size-independent); the result is scaled back.
        zero_phase: filter forwards, then filter the result backwards in time (like
            ``scipy.signal.filtfilt``): no lag, for offline use when the whole clip is
            known. Otherwise causal (usable live).

    Returns:
        (T, ..., D) filtered sequence.
    """
    f = OneEuroFilter(fps, min_cutoff, beta, d_cutoff)
    out = torch.stack([f(x / scale) * scale for x in seq])
    if zero_phase:
        f.reset()
        out = torch.stack([f(x / scale) * scale for x in out.flip(0)]).flip(0)
    return out


def sms(seq: torch.Tensor, per_coordinate: bool = False) -> float:
    """Deprecated (removed in 0.3): use :func:`facegeo.metrics.sms`, the one SMS, which
    returns a tensor (() for a (T, N, 2) sequence, (B,) for a batch). This old spelling
    still returns a float for one (T, N, 2) sequence."""
    warn_deprecated("facegeo.landmarks.tracking.sms (a float)",
                    "facegeo.metrics.sms (a tensor; float(...) for a number)")
    if seq.ndim != 3:
        raise ValueError(f"seq must be (T>=3, N, 2), got {tuple(seq.shape)}")
    return float(_metrics.sms(seq, per_coordinate=per_coordinate))


# stable points whose optical flow drives the box: brows (19, 24), nose (27-31, 33, 35),
# eye corners (36, 39, 42, 45), mouth corners and lip centres (48, 51, 54, 57)
_FLOW_POINTS = [19, 24, 27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45, 48, 51, 54, 57]


def _fit_similarity(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Least-squares 2D similarity q ~ s R p + t (closed form). Returns (2, 3)."""
    mp, mq = p.mean(0), q.mean(0)
    pc, qc = p - mp, q - mq
    den = max(float((pc * pc).sum()), 1e-9)
    a = float((pc * qc).sum()) / den
    b = float((pc[:, 0] * qc[:, 1] - pc[:, 1] * qc[:, 0]).sum()) / den
    r = np.array([[a, -b], [b, a]])
    return np.concatenate([r, (mq - r @ mp)[:, None]], 1)


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:, :2].T + m[:, 2]


@dataclass
class TrackResult:
    """Output of :meth:`LandmarkTracker.track`.

    Attributes:
        landmarks: (T, 68, 2) raw tracked landmarks.
        smoothed: (T, 68, 2) One-Euro filtered landmarks: forward-backward (lag-free) by
            default, causal with ``track(..., zero_phase=False)``; equal to ``landmarks``
            when smoothing is off.
        boxes: (T, 4) boxes ``(x0, y0, x1, y1)`` the predictor ran in.
        detected: (T,) bool, True where the detector ran (first frame, re-detections).
        lost: (T,) bool, True where the face was lost and not re-detected; the last
            landmarks are held on those frames.
        fps: frame rate used for the filter.
    """

    landmarks: torch.Tensor
    smoothed: torch.Tensor
    boxes: torch.Tensor
    detected: torch.Tensor
    lost: torch.Tensor
    fps: float


class LandmarkTracker:
    """Detect once, then track 68 landmarks frame to frame (see module docstring).

    Args:
        detector: backend name or instance; it must support ``landmarks_in_box``
            (``dlib``, ``dlib_hog``, ``dlib_cnn``, ``fan``).
        index: which face to follow at the first detection (0 = largest).
        fps: frame rate for the One-Euro filter.
        smooth: apply the One-Euro filter to the output.
        min_cutoff, beta, d_cutoff: One-Euro parameters (landmarks in IOD units); the
            defaults were chosen from the synthetic-motion (known ground truth)
            sweep of benchmarks/bench_landmarks.py (see docs/landmarks.md).
        lost_threshold: re-detect when the predictor's landmarks differ from the flow
            prediction by more than this many inter-ocular distances (mean over points).
        redetect_every: also re-detect every this many frames (``None``: only on loss).
        max_scale_change: re-detect when the tracked box side differs from the side at
            the last detection by more than this (as ``|log(ratio)|``); guards against
            the slow scale drift of the box -> predictor -> box feedback loop.
        flow_window: Lucas-Kanade window side in pixels (of the downscaled region).
        flow_face_px: the flow runs on a region around the face downscaled so that the
            face is at most this many pixels wide.
    """

    def __init__(
        self,
        detector: str | LandmarkDetector | None = "dlib",
        *,
        index: int = 0,
        fps: float = 30.0,
        smooth: bool = True,
        min_cutoff: float = 4.0,
        beta: float = 5.0,
        d_cutoff: float = 1.0,
        lost_threshold: float = 0.15,
        redetect_every: int | None = 60,
        max_scale_change: float = 0.2,
        flow_window: int = 15,
        flow_face_px: float = 96.0,
    ) -> None:
        self.detector = get_detector(detector)
        if not self.detector.can_refine:
            raise ValueError(f"backend {self.detector.name!r} cannot re-run its landmark "
                             "predictor in a box; use 'dlib' or 'fan' for tracking")
        if redetect_every is not None and redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
        self.index = index
        self.fps = fps
        self.smooth = smooth
        self.filter_args = (min_cutoff, beta, d_cutoff)
        self.lost_threshold = lost_threshold
        self.redetect_every = redetect_every
        self.max_scale_change = max_scale_change
        self.flow_window = flow_window
        self.flow_face_px = flow_face_px
        self.reset()

    def reset(self) -> None:
        """Forget the tracked face (the next frame runs the detector)."""
        # per-frame state is kept in small numpy arrays: the hot path works on 68 points
        # on the CPU (dlib, OpenCV), where torch's per-op overhead would dominate.
        self._prev_gray: np.ndarray | None = None
        self._prev_lm: np.ndarray | None = None
        self._rel: tuple[float, float, float] = (0.0, 0.0, 1.0)
        self._scale: float = 1.0
        self._since_detect = 0
        self._lost_streak = 0
        self._det_side = 1.0
        self._frame = 0
        self._filter = OneEuroFilter(self.fps, *self.filter_args)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _relation(box: np.ndarray, lm: np.ndarray) -> tuple[float, float, float]:
        lo, hi = lm.min(0), lm.max(0)
        wh = np.maximum(hi - lo, 1e-3)
        off = ((box[:2] + box[2:]) / 2 - (lo + hi) / 2) / wh
        side = float((box[2:] - box[:2]).mean() / wh.mean())
        return float(off[0]), float(off[1]), side

    def _box_for(self, lm: np.ndarray) -> np.ndarray:
        """Detector-style box for landmarks, with the relation of the last detection
        (same formula as :func:`facegeo.landmarks.backends.box_from_landmarks`)."""
        dx, dy, s = self._rel
        lo, hi = lm.min(0), lm.max(0)
        wh = hi - lo
        c = (lo + hi) / 2 + wh * np.array([dx, dy], np.float32)
        half = s * wh.mean() / 2
        return np.concatenate([c - half, c + half]).astype(np.float32)

    def _accept_detection(self, face: Face) -> np.ndarray:
        box, lm = face.box.numpy(), face.landmarks.numpy()
        self._rel = self._relation(box, lm)
        self._det_side = float((box[2:] - box[:2]).mean())
        self._since_detect = 0
        return lm.astype(np.float32)

    @staticmethod
    def _iod(lm: np.ndarray) -> float:
        return max(float(np.hypot(*(lm[36] - lm[45]))), 1.0)

    def _refine(self, img: np.ndarray, box: np.ndarray) -> np.ndarray:
        fast = getattr(self.detector, "landmarks_in_box_np", None)
        if fast is not None:
            return fast(img, box)
        return self.detector.landmarks_in_box(img, torch.from_numpy(box)).numpy()

    def _detect(self, img: np.ndarray, near: np.ndarray | None) -> Face | None:
        if near is not None:
            # re-detection: first in a region around the predicted box (cheap), then in
            # the whole frame
            near_t = torch.from_numpy(near)
            # while the face stays lost, the full-frame pass (which may fall back to the
            # slow CNN detector) runs only every 10th frame
            full = self._lost_streak % 10 == 0
            for faces in (self.detector.detect_near(img, near_t), None):
                if faces is None:
                    if not full:
                        break
                    faces = self.detector.detect(img)
                ious = [_iou(f.box, near_t) for f in faces]
                if ious and max(ious) > 0.1:
                    return faces[int(np.argmax(ious))]
            return None
        faces = self.detector.detect(img)
        if not faces:
            return None
        if near is None:
            if not -len(faces) <= self.index < len(faces):
                raise NoFaceError(f"frame {self._frame}: face index {self.index} requested but "
                                  f"only {len(faces)} face(s) found")
            return faces[self.index]
        return None

    def _flow(self, gray: np.ndarray) -> tuple[np.ndarray, float]:
        """Move the previous landmarks to this frame: pyramidal Lucas-Kanade flow of 17
        stable points, computed in a region around the face downscaled so the face is at
        most ``flow_face_px`` pixels wide, and the similarity transform fitted to them
        (applied to all 68 points; the flow only has to place the box)."""
        import cv2

        prev = self._prev_lm
        h, w = gray.shape
        lo, hi = prev.min(0), prev.max(0)
        size = float((hi - lo).max())
        c = (lo + hi) / 2
        half = 0.8 * size + 2 * self.flow_window
        x0, y0 = max(int(c[0] - half), 0), max(int(c[1] - half), 0)
        x1, y1 = min(int(c[0] + half) + 1, w), min(int(c[1] + half) + 1, h)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return prev.copy(), 0.0
        s = min(1.0, self.flow_face_px / max(size, 1.0))
        a = self._prev_gray[y0:y1, x0:x1]
        b = gray[y0:y1, x0:x1]
        if s < 1.0:
            dsize = (max(int((x1 - x0) * s), 8), max(int((y1 - y0) * s), 8))
            a = cv2.resize(a, dsize, interpolation=cv2.INTER_LINEAR)
            b = cv2.resize(b, dsize, interpolation=cv2.INTER_LINEAR)
            scale = np.array([dsize[0] / (x1 - x0), dsize[1] / (y1 - y0)], np.float32)
        else:
            scale = np.ones(2, np.float32)
        off = np.array([x0, y0], np.float32)
        # pixel-centre convention: u = (x - x0 + 0.5) * s - 0.5
        sub = prev[_FLOW_POINTS]
        p0 = ((sub - off + 0.5) * scale - 0.5).reshape(-1, 1, 2)
        win = self.flow_window
        p1, st, _ = cv2.calcOpticalFlowPyrLK(
            a, b, p0, None, winSize=(win, win), maxLevel=2,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.05))
        ok = st.reshape(-1).astype(bool)
        p1 = (p1.reshape(-1, 2) + 0.5) / scale - 0.5 + off
        frac = float(ok.mean())
        if ok.sum() < 3:
            return prev.copy(), frac
        # similarity transform of the tracked subset (one round of outlier rejection),
        # applied to all 68 points
        m = _fit_similarity(sub[ok], p1[ok])
        res = np.linalg.norm(_apply(m, sub[ok]) - p1[ok], axis=1)
        keep = res <= max(3.0 * float(np.median(res)), 1.0)
        if keep.sum() >= 3:
            m = _fit_similarity(sub[ok][keep], p1[ok][keep])
        if abs(math.log(max(float(np.hypot(m[0, 0], m[1, 0])), 1e-6))) > 0.2:
            return prev.copy(), 0.0  # implausible zoom between two frames: flow failed
        return _apply(m, prev).astype(np.float32), frac

    # -- main API ------------------------------------------------------------------------
    def update(self, frame) -> dict:
        """Process the next frame.

        Args:
            frame: (3, H, W) float tensor in [0, 1] or (H, W, 3) uint8 array.

        Returns:
            dict with ``landmarks`` (68, 2) raw, ``smoothed`` (68, 2), ``box`` (4,)
            (float32 tensors), ``detected`` (bool) and ``lost`` (bool).

        Raises:
            NoFaceError: no face on the first frame (nothing to track yet).
        """
        import cv2

        img = as_uint8_rgb(frame)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)  # for the optical flow only
        h, w = gray.shape
        detected = lost = False
        if self._prev_lm is None:
            face = self._detect(img, None)
            if face is None:
                raise NoFaceError(f"frame {self._frame}: no face found to start tracking")
            lm = self._accept_detection(face)
            self._scale = self._iod(lm)
            box, detected = face.box.numpy(), True
        else:
            pred, frac_ok = self._flow(gray)
            box = self._box_for(pred)
            cx, cy = (box[:2] + box[2:]) / 2
            side = float((box[2:] - box[:2]).mean())
            ok = (frac_ok >= 0.5 and 0 <= cx < w and 0 <= cy < h
                  and abs(math.log(side / self._det_side)) <= self.max_scale_change)
            lm = None
            if ok:
                lm = self._refine(img, box)
                err = float(np.linalg.norm(lm - pred, axis=1).mean()) / self._iod(pred)
                if err > self.lost_threshold:
                    lm = None
            due = self.redetect_every is not None and self._since_detect >= self.redetect_every
            if lm is None or due:
                face = self._detect(img, box)
                if face is not None:
                    lm, box, detected = self._accept_detection(face), face.box.numpy(), True
                elif lm is None:
                    lm, lost = self._prev_lm.copy(), True  # hold the last landmarks
        self._lost_streak = self._lost_streak + 1 if lost else 0
        self._since_detect += 1
        self._frame += 1
        self._prev_gray, self._prev_lm = gray, lm
        sm = self._filter(lm / self._scale) * self._scale if self.smooth else lm.copy()
        return {"landmarks": torch.from_numpy(lm), "smoothed": torch.from_numpy(sm.astype(
            np.float32)), "box": torch.from_numpy(box).float(), "detected": detected,
            "lost": lost}

    def track(self, frames: Iterable, zero_phase: bool = True) -> TrackResult:
        """Track over a sequence of frames ((T, H, W, 3) uint8 array, (T, 3, H, W) tensor,
        or any iterable of frames). Resets first.

        Args:
            zero_phase: ``smoothed`` is the forward-backward (lag-free) One-Euro filter of
                the raw track, computed once the clip is complete; ``False`` keeps the
                causal (live) filter output of :meth:`update`.
        """
        self.reset()
        outs = [self.update(f) for f in frames]
        if not outs:
            raise ValueError("track: no frames given")
        raw = torch.stack([o["landmarks"] for o in outs])
        if self.smooth and zero_phase:
            smoothed = one_euro_smooth(raw, self.fps, *self.filter_args, scale=self._scale,
                                       zero_phase=True)
        else:
            smoothed = torch.stack([o["smoothed"] for o in outs])
        return TrackResult(
            landmarks=raw,
            smoothed=smoothed,
            boxes=torch.stack([o["box"] for o in outs]),
            detected=torch.tensor([o["detected"] for o in outs]),
            lost=torch.tensor([o["lost"] for o in outs]),
            fps=self.fps,
        )


def track_video(frames: Iterable, fps: float = 30.0, detector: str | LandmarkDetector = "dlib",
                **kwargs) -> TrackResult:
    """Convenience: ``LandmarkTracker(detector, fps=fps, **kwargs).track(frames)``."""
    return LandmarkTracker(detector, fps=fps, **kwargs).track(frames)


def detect_every_frame(frames: Iterable, detector: str | LandmarkDetector = "dlib",
                       index: int = 0) -> torch.Tensor:
    """Reference: run the full detector on every frame.

    Returns:
        (T, 68, 2); raises NoFaceError naming the first frame without a face.
    """
    det = get_detector(detector)
    out = []
    for t, f in enumerate(frames):
        faces = det.detect(f)
        if len(faces) <= index:
            raise NoFaceError(f"frame {t}: no face (index {index}) found")
        out.append(faces[index].landmarks)
    return torch.stack(out)
