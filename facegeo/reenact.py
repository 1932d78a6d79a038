"""Training-free geometric face reenactment (3DMM fit -> mesh flow + MLS -> warp).

The "mesh regression" of the mesh-guided reenactment paper (section 3.1), rendered analytically
instead of learned. For a source portrait and a driving video:

1. landmarks: the source is detected once, the driving video is tracked
   (:class:`facegeo.landmarks.tracking.LandmarkTracker`, One-Euro stabilised). Driving frames
   without a face (tracker lost / nothing detected) are *held*: they reuse the parameters of
   the last good frame and are counted (:attr:`DrivingTrack.n_missing`).
2. fit (:mod:`facegeo.fitting`, weak perspective): the source gets identity ``a_s``,
   expression ``e_s`` and pose ``(R_s, s_s, t_s)``; the driving frames get one shared identity
   ``a_d`` and per-frame ``e_t``, ``(R_t, s_t, t_t)`` (:func:`facegeo.fitting.fit_video`).
3. target mesh ``X_t = mean + B_id a_s + B_exp e_t`` (the driver's identity ``a_d`` is never
   used: its face shape cannot leak), posed by

   * ``mode="absolute"``: the driving pose ``(R_t, s_t, t_t)`` (both images are face crops of
     the same size, so the driver's framing is reproduced);
   * ``mode="relative"`` (default): the source pose composed with the driving motion relative
     to the first driving frame: ``R = R_t R_0^T R_s``, ``s = s_s s_t / s_0``,
     ``t = t_s + (s_s / s_0)(t_t - t_0)``.

   ``relative_expression=True`` additionally uses ``clamp(e_s + e_t - e_0, 0, 1)`` instead of
   ``e_t`` (the source keeps its own expression where the driver does not move).
4. render (the stages of :mod:`facegeo.geometric`, docs/reenact.md): image-space
   vertices ``(u, v, z) = (s (RX)_x + t_u, -s (RX)_y + t_v, -s (RX)_z)`` of the face region
   of the mesh, its eye and mouth holes capped (:class:`facegeo.geometric.FaceMesh`); the
   target mesh is rasterized (back faces culled) and each covered pixel's barycentrics are
   transferred to the source mesh (the backward flow of :func:`facegeo.raster.mesh_flow`).
   Outside the face (hair, ears, outline, the background next to the head) the motion is
   the head proxy's (:class:`facegeo.geometric.HeadEllipsoid`, analytic, faded to none
   beyond 1.4 x its outline), so the whole head turns by the requested angle. The two are
   blended with a mask that ramps from 0 on the mesh silhouette to 1 a few pixels inside,
   the source is warped, strongly magnified strips are softened, closing eyelids that
   would still show the source's eyeball get the source's lid skin, and target
   mouth-opening pixels that come from outside the source's mouth opening are painted as a
   dark cavity. ``head_proxy=False, hole_fill=False`` is the v1 renderer (an MLS field from
   face-boundary and landmark controls with the image border pinned) for comparison.

Everything after the fit is batched torch (any device). Main entry points:
:func:`reenact` (whole job, through :class:`facegeo.pipeline.ReenactmentPipeline` like every
other model), :class:`GeometricReenactor` (the parts; a :class:`facegeo.pipeline.Reenactor`),
:class:`FaceConditioner` (detection, crops and fits shared by all models),
:func:`track_driving`, :func:`interpolate_fits`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from facegeo import transforms as T
from facegeo.geometric.facemesh import FaceMesh, posed_vertices
from facegeo.geometric.state import DrivingTrack, FaceFit, RenderOutput, SourceState
from facegeo.landmarks.backends import NoFaceError, detect_face
from facegeo.landmarks.crops import (
    clip_boxes,
    crop_images,
    face_boxes,
    paste_back,
    points_to_crop,
)
from facegeo.pipeline import MODES, Reenactor

__all__ = [
    "FaceFit",
    "DrivingTrack",
    "SourceState",
    "RenderOutput",
    "ReenactResult",
    "GeometricReenactor",
    "track_driving",
    "interpolate_fits",
    "posed_vertices",
    "reenact",
    "expression_from_names",
    "synthetic_driving",
    "driving_boxes",
    "MODES",
    "FaceConditioner",
]


# ----------------------------------------------------------------------------- data classes
@dataclass
class ReenactResult:
    """Output of :func:`reenact`.

    Attributes:
        frames: (T, 3, H, W) result frames in [0, 1] (crop size, or the full source frame
            with ``crop=False``).
        fps: frame rate (the driving video's).
        n_missing: driving frames without a face (held).
        source_fit, driving_fit, target_fit: :class:`FaceFit` (crop pixels).
        timings: seconds per stage: ``landmarks``, ``fit``, ``raster``, ``warp``.
    """

    frames: torch.Tensor
    fps: float
    n_missing: int
    source_fit: FaceFit
    driving_fit: FaceFit
    target_fit: FaceFit
    timings: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers
def _as_image(x, name: str) -> torch.Tensor:
    """(3, H, W) / (1, 3, H, W) float tensor or (H, W, 3|4) uint8 array -> (1, 3, H, W)."""
    import numpy as np

    if isinstance(x, np.ndarray):
        if x.ndim != 3 or x.shape[2] not in (3, 4):
            raise ValueError(f"{name}: arrays must be (H, W, 3), got {x.shape}")
        if x.shape[2] == 4:
            raise ValueError(f"{name}: image has an alpha channel; composite or drop it first "
                             "(facegeo.image_io.load_image does)")
        x = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).float() / 255.0
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"{name} must be (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 4:
        raise ValueError(f"{name}: image has an alpha channel (4 channels); composite or drop "
                         "it first (facegeo.image_io.load_image does)")
    if x.shape[1] != 3:
        raise ValueError(f"{name} must have 3 channels, got {x.shape[1]}")
    if not x.is_floating_point():
        x = x.float() / 255.0
    return x


def _visible(pts: torch.Tensor, depth: torch.Tensor, covered: torch.Tensor,
             tol: float) -> torch.Tensor:
    """(B, N) bool: image-space points (B, N, 3) not hidden behind the rasterized surface
    (depth (B, H, W), covered (B, H, W)) by more than ``tol`` at their nearest pixel."""
    B, H, W = depth.shape
    ix = pts[..., 0].round().clamp(0, W - 1).long()
    iy = pts[..., 1].round().clamp(0, H - 1).long()
    b = torch.arange(B, device=pts.device)[:, None].expand_as(ix)
    d = depth[b, iy, ix]
    c = covered[b, iy, ix]
    return ~c | (pts[..., 2] <= d + tol)


def track_driving(frames: Iterable, fps: float = 30.0, *, detector="dlib",
                  progress: Callable[[int], None] | None = None,
                  tracker_kwargs: dict | None = None, track: bool = True) -> DrivingTrack:
    """Track 68 landmarks over a driving sequence, holding frames without a face.

    Args:
        frames: iterable of (H, W, 3) uint8 arrays or (3, H, W) float tensors (all one size),
            or a (T, 3, H, W) tensor.
        fps: frame rate (One-Euro filter, and stored in the result).
        detector: landmark backend with box refinement (``"dlib"``, ``"fan"``).
        progress: called with 1 after each frame.
        tracker_kwargs: extra :class:`~facegeo.landmarks.tracking.LandmarkTracker` arguments.
        track: False only counts the frames and checks their sizes (for a method that needs
            no faces): the landmarks are NaN and every frame counts as good.

    Returns:
        :class:`DrivingTrack`.

    Raises:
        ValueError: no frames; NoFaceError: no face in any frame.
    """
    from facegeo.image_io import as_uint8_rgb
    from facegeo.landmarks.tracking import LandmarkTracker

    tracker = LandmarkTracker(detector, fps=fps if fps and fps > 0 else 30.0,
                              **(tracker_kwargs or {})) if track else None
    nan = torch.full((68, 2), float("nan"))
    lms, good = [], []
    size = None
    for t, f in enumerate(frames):
        img = as_uint8_rgb(f)
        if size is None:
            size = img.shape[:2]
        elif img.shape[:2] != size:
            raise ValueError(f"driving frame {t} has size {img.shape[:2]}, expected {size}")
        if tracker is None:
            lms.append(nan)
            good.append(True)
            if progress is not None:
                progress(1)
            continue
        try:
            out = tracker.update(img)
            lm, ok = out["smoothed"], not out["lost"]
        except NoFaceError:
            tracker.reset()
            lm, ok = None, False
        if not ok:
            # the tracker lost the face: start over with a detection on the next frame
            tracker.reset()
        lms.append(lm)
        good.append(ok)
        if progress is not None:
            progress(1)
    if size is None:
        raise ValueError("the driving sequence has no frames")
    if not any(good):
        raise NoFaceError(f"no face found in any of the {len(lms)} driving frames")
    first = good.index(True)
    last = lms[first]
    filled = []
    for lm, ok in zip(lms, good):
        if ok:
            last = lm
        filled.append(last)
    landmarks = torch.stack(filled).float()
    good_t = torch.tensor(good)
    return DrivingTrack(landmarks, good_t, (int(size[0]), int(size[1])), float(fps))


def driving_boxes(track: DrivingTrack) -> torch.Tensor:
    """(T, 3) one FOMM-style crop box for the whole clip (contains every good frame's box)."""
    boxes = face_boxes(track.landmarks[track.good])
    return clip_boxes(boxes, "fixed")[:1].expand(len(track), 3).clone()


def interpolate_fits(a: FaceFit, b: FaceFit, alpha: torch.Tensor | float,
                     only: str | None = None) -> FaceFit:
    """Blend two fits: slerp rotation, linear translation and expression, geometric scale.

    Args:
        a, b: one-row (or B-row) fits; ``a``'s identity is kept.
        alpha: float or (N,) weights in [0, 1]; the result has N (or B) rows.
        only: ``None`` (pose and expression), ``"pose"`` (expression stays ``a``'s) or
            ``"expression"`` (pose stays ``a``'s).

    Returns:
        :class:`FaceFit`.
    """
    if only not in (None, "pose", "expression"):
        raise ValueError(f"only must be None, 'pose' or 'expression', got {only!r}")
    w = torch.as_tensor(alpha, dtype=a.rotation.dtype, device=a.rotation.device).reshape(-1)
    n = max(w.shape[0], len(a), len(b))
    w = w.expand(n) if w.shape[0] == 1 else w

    def rows(x):
        return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x

    ra, rb = rows(a.rotation), rows(b.rotation)
    ta, tb = rows(a.translation), rows(b.translation)
    sa, sb = rows(a.scale), rows(b.scale)
    ea, eb = rows(a.exp_coeffs), rows(b.exp_coeffs)
    wp = w if only != "expression" else torch.zeros_like(w)
    we = w if only != "pose" else torch.zeros_like(w)
    rot, trans, scale = T.interpolate_pose(ra, rb, wp, ta, tb, sa, sb)
    exp = ea + we[:, None] * (eb - ea)
    return FaceFit(rot, scale, trans, rows(a.id_coeffs), exp)


# ----------------------------------------------------------------------------- the renderer
class FaceConditioner:
    """Detects, crops and fits faces with a 3DMM: the conditioning every reenactor shares.

    :class:`facegeo.pipeline.ReenactmentPipeline` computes sources and driving fits with it;
    :class:`GeometricReenactor` is one (and adds the renderer).

    Args:
        model: a :class:`~facegeo.morphable.MorphableModel` with ``landmarks68`` (default:
            ICT-FaceKit, ``MorphableModel.load()``).
        size: working resolution S (square face crops).
        device: where fitting (and rendering) runs.
        fit_iterations: Levenberg-Marquardt iterations for the driving fit.
        smooth_pose, smooth_exp: temporal smoothness of the driving fit.
        smooth_eyes: the smoothness weight of the eye blendshapes instead (the ``eyes``
            group of :func:`facegeo.controls.expression_groups`: blink, squint, wide, look).
            Default 0: a blink lasts 3-5 frames, and ``smooth_exp`` on the lids halves it
            (on four media pairs the eye opening of the fitted target follows the
            driver's with Pearson r 0.89 at 0.05 and 0.97 at 0, the rendered output's
            0.60 and 0.78; 0.685 and 0.728 on four other pairs; docs/reenact.md).
            ``None`` = ``smooth_exp`` for them too. Models without named blendshapes use
            ``smooth_exp`` throughout.
        identity_frames, fit_chunk, fit_overlap: the chunked driving fit of long clips
            (:meth:`fit_driving`).
        detector: landmark backend.
    """

    def __init__(self, model=None, *, size: int = 256, device=None, fit_iterations: int = 10,
                 smooth_pose: float = 0.5, smooth_exp: float = 0.05,
                 smooth_eyes: float | None = 0.0, identity_frames: int = 32,
                 fit_chunk: int = 128, fit_overlap: int = 8, detector: str = "dlib"):
        if not isinstance(size, int) or size < 32:
            raise ValueError(f"size must be an integer >= 32, got {size!r}")
        if identity_frames < 2 or fit_chunk < 2 or not 0 <= fit_overlap < fit_chunk:
            raise ValueError("need identity_frames >= 2, fit_chunk >= 2 and "
                             "0 <= fit_overlap < fit_chunk")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if model is not None and getattr(model, "landmarks68", None) is None:
            raise ValueError("the morphable model has no 68-point landmarks")
        self._model = model
        self.size = size
        self.fit_iterations = fit_iterations
        self.smooth_pose = smooth_pose
        self.smooth_exp = smooth_exp
        self.smooth_eyes = smooth_eyes
        self.identity_frames, self.fit_chunk, self.fit_overlap = (identity_frames, fit_chunk,
                                                                  fit_overlap)
        self.detector = detector

    @property
    def model(self):
        """The morphable model (the default ICT-FaceKit one is loaded on first use, so a
        pipeline that needs no 3DMM never reads it)."""
        if self._model is None:
            from facegeo.morphable import MorphableModel

            self._model = MorphableModel.load()
        return self._model

    # -- fitting ------------------------------------------------------------------------
    def fit_landmarks(self, landmarks: torch.Tensor) -> FaceFit:
        """Independent weak-perspective fits of (B, 68, 2) landmarks -> :class:`FaceFit`."""
        from facegeo.fitting import fit_landmarks

        res = fit_landmarks(self.model, landmarks.float(), device=self.device)
        return FaceFit.from_result(res)

    def detect_source(self, image, face_index: int = 0) -> torch.Tensor:
        """(68, 2) image-pixel landmarks of face ``face_index`` (0 = the largest) of a
        (3, H, W) / (1, 3, H, W) source image. Raises NoFaceError naming the source."""
        img = _as_image(image, "source")[0].cpu()
        try:
            return detect_face(img, face_index, self.detector).landmarks
        except NoFaceError as e:
            raise NoFaceError(f"no face found in the source image ({e})") from None

    def fit_source(self, image, landmarks: torch.Tensor | None = None, *,
                   crop: bool = True, fit: bool = True, face_index: int = 0) -> SourceState:
        """Detect, crop and fit the source portrait.

        Args:
            image: (3, H, W) float in [0, 1] (or (1, 3, H, W)).
            landmarks: optional (68, 2) landmarks in image pixels (detected when None).
            crop: crop a square face box (FOMM style); otherwise the whole image is resized
                to S x S (non-square images are padded by replicating the border).
            face_index: which detected face when ``landmarks`` is None: 0 = the largest.

        Raises:
            NoFaceError: no face in the source (or no face ``face_index``).
        """
        img = _as_image(image, "source").to(self.device)
        if landmarks is None:
            landmarks = self.detect_source(img, face_index)
        lm = landmarks.reshape(1, 68, 2).float().to(self.device)
        H, W = img.shape[-2:]
        if crop:
            box = face_boxes(lm)[0]
        else:
            side = float(max(H, W))
            box = torch.tensor([(W - 1) / 2, (H - 1) / 2, side], device=self.device)
        crop_img = crop_images(img, box[None], self.size)
        lm_c = points_to_crop(lm, box[None], self.size)
        return SourceState(crop_img, img, box, lm_c, self.fit_landmarks(lm_c) if fit else None)

    def expression_smoothness(self) -> float | torch.Tensor:
        """The driving fit's ``smooth_exp``: one number, or (K_exp,) weights with
        ``smooth_eyes`` on the eye blendshapes (named-blendshape models)."""
        if self.smooth_eyes is None or self.smooth_eyes == self.smooth_exp:
            return self.smooth_exp
        from facegeo.controls import expression_groups

        try:
            eyes = expression_groups(self.model)["eyes"]
        except ValueError:  # a PCA expression basis: no eye group
            return self.smooth_exp
        return torch.where(eyes, float(self.smooth_eyes), float(self.smooth_exp))

    def fit_driving(self, track: DrivingTrack, boxes: torch.Tensor | None = None) -> FaceFit:
        """Fit the driving frames (one identity for the clip) in crop pixels; held frames
        copy the last good frame's parameters.

        Up to ``fit_chunk`` good frames are fitted jointly (:func:`facegeo.fitting.fit_video`:
        shared identity, temporal smoothing). Longer clips keep memory bounded: the identity
        is estimated on ``identity_frames`` evenly spaced good frames, then chunks of
        ``fit_chunk`` frames are fitted with that identity fixed, each chunk starting
        ``fit_overlap`` frames early so the smoothing runs across the chunk border (the
        overlap rows are dropped).

        Args:
            track: :class:`DrivingTrack` with T frames.
            boxes: (T, 3) crop boxes (default :func:`driving_boxes`).

        Returns:
            T-row :class:`FaceFit`.
        """
        from facegeo.fitting import fit_landmarks, fit_video

        if boxes is None:
            boxes = driving_boxes(track)
        lm = points_to_crop(track.landmarks.float(), boxes.float(), self.size).to(self.device)
        good = track.good.to(self.device)
        gidx = good.nonzero().squeeze(1)
        kw = dict(device=self.device, iterations=self.fit_iterations,
                  smooth_pose=self.smooth_pose, smooth_exp=self.expression_smoothness())
        n = gidx.numel()
        if n == 1:
            fit = FaceFit.from_result(fit_landmarks(self.model, lm[gidx], device=self.device))
        elif n <= self.fit_chunk:
            fit = FaceFit.from_result(fit_video(self.model, lm[gidx], **kw))
        else:
            pick = torch.linspace(0, n - 1, min(n, self.identity_frames)).round().long()
            ident = fit_video(self.model, lm[gidx[pick]], device=self.device,
                              iterations=self.fit_iterations).id_coeffs[0]
            parts = []
            for lo in range(0, n, self.fit_chunk):
                a = max(0, lo - self.fit_overlap)
                hi = min(n, lo + self.fit_chunk)
                res = FaceFit.from_result(fit_video(self.model, lm[gidx[a:hi]],
                                                    id_coeffs=ident, **kw))
                parts.append(res.index(slice(lo - a, None)))
            fit = FaceFit.cat(parts)
        # frame t -> the last good frame at or before t (the first good frame for leading ones)
        pos = torch.cumsum(good.long(), 0) - 1
        return fit.index(pos.clamp_min(0))

    def fit_landmarks68(self, fit: FaceFit) -> torch.Tensor:
        """(B, 68, 2) image positions of the model's 68 landmark vertices under ``fit``
        (weak perspective, crop pixels)."""
        from facegeo.morphable import linear_shape

        f = fit.to(self.device)
        mean, idb, exb = (x.to(self.device, torch.float32) for x in self.model.landmark_bases())
        v = linear_shape(mean, idb, exb, f.id_coeffs.float(), f.exp_coeffs.float())
        return posed_vertices(v, f.rotation.float(), f.scale.float(),
                              f.translation.float())[..., :2]

    def target_fits(self, source: FaceFit, driving: FaceFit, mode: str = "relative", *,
                    relative_expression: bool = False,
                    reference: FaceFit | None = None) -> FaceFit:
        """Combine the source identity with the driving expression and pose.

        Args:
            source: one-row source fit; driving: T-row driving fit.
            mode: ``"relative"`` or ``"absolute"`` (module docstring).
            relative_expression: ``e_s + e_t - e_0`` (clamped for blendshapes) instead of e_t.
            reference: the driving frame the relative motion is measured from (default the
                first driving frame).

        Returns:
            T-row :class:`FaceFit` (identity = the source's).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        n = len(driving)
        ref = driving.index(0) if reference is None else reference
        src = source.to(driving.rotation.device)
        ident = src.id_coeffs.expand(n, -1)
        exp = driving.exp_coeffs
        if relative_expression:
            exp = src.exp_coeffs + (driving.exp_coeffs - ref.exp_coeffs)
            if self.model.exp_kind == "blendshape":
                exp = exp.clamp(0.0, 1.0)
        if mode == "absolute":
            return FaceFit(driving.rotation, driving.scale, driving.translation, ident, exp)
        rot = driving.rotation @ ref.rotation.transpose(-1, -2) @ src.rotation
        ratio = src.scale / ref.scale
        scale = driving.scale * ratio
        trans = src.translation + ratio[:, None] * (driving.translation - ref.translation)
        return FaceFit(rot, scale, trans, ident, exp)


class GeometricReenactor(FaceConditioner, Reenactor):
    """The training-free geometric reenactment (module docstring): a
    :class:`FaceConditioner` plus the renderer, and a :class:`facegeo.pipeline.Reenactor`
    (``requires = {"morphable_fit"}``, modes relative and absolute, one source), so the
    pipeline, the apps and the evaluator drive it like any neural model.

    The renderer chains the stages of :mod:`facegeo.geometric` (docs/reenact.md):
    the face mesh flow (:class:`facegeo.geometric.FaceMesh`, eye and mouth holes capped),
    the head proxy flow outside it (:class:`facegeo.geometric.HeadEllipsoid`), the
    silhouette blend, one ``grid_sample`` and the mouth cavity.

    Args:
        model, size, device, fit_iterations, smooth_pose, smooth_exp, identity_frames,
            fit_chunk, fit_overlap, detector: see :class:`FaceConditioner`.
        regions: model regions used as the "face" mesh (``vertex_region`` names); default the
            ICT front face (``face_narrow``: no ears, neck or back of the head, whose
            fitted position rarely matches the image).
        head_proxy: move everything outside the face mesh with the head ellipsoid
            (default); ``False`` = the v1 renderer's MLS field (face-boundary and landmark
            controls, border pinned), kept for comparison.
        hole_fill: cap the mesh's eye and mouth holes, so eyelids and lips are carried by
            the mesh flow (default); ``False`` = v1 (holes filled by the outer motion).
        proxy_step: the head flow is evaluated every ``proxy_step`` pixels of the map
            and upsampled (default ``max(4, map size // 64)``).
        head_fade: silhouette radius (1 = the ellipsoid's outline) at which the head motion
            has faded to none.
        head_inflate: ellipsoid radii over the fitted head's (room for the hair).
        n_boundary: number of face-boundary vertices used as MLS control points (v1).
        mls_kind: ``"rigid"``, ``"similarity"`` or ``"affine"`` (v1).
        mls_step: the MLS field is evaluated every ``mls_step`` pixels and upsampled (v1).
        map_size: the backward map (face flow, head flow and their blend weight) is
            computed at ``min(size, map_size)`` pixels and upsampled bilinearly; the source
            is always sampled at full resolution (``None``: the map at full size). Dense
            motion at a lower resolution than the image, as FOMM (64 px) and LivePortrait
            do; 256 keeps every triangle of the face mesh a few pixels wide. At 512 it
            cuts the render time by a third; mean absolute difference to the full-size
            map 0.0006 (docs/reenact.md).
        blend_px: width (pixels at size S) of the ramp from the outer motion to the mesh
            flow inside the face silhouette.
        mouth_color: RGB painted into the target's mouth opening where the source's mouth is
            closed (a warp cannot invent teeth; ``None`` = off).
        relative_expression: see :meth:`target_fits` (used by :meth:`reenact`).
        gaze: transfer the driver's gaze (:meth:`transfer_gaze`): the pupils of the source
            and of every driving frame are located (:mod:`facegeo.landmarks.pupils`) and
            the output's irises are moved by the driver's gaze change (relative) or to the
            driver's gaze (absolute), in eye-frame units; the driving crops and landmarks
            are then required too. Off by default (about 20 ms per 256 px frame on one
            CPU core).
        max_gaze_shift: largest iris move, in eye widths (keeps the iris inside the eye
            when a pupil is mislocated).
    """

    name = "geometric"
    requires = frozenset({"morphable_fit"})
    modes = MODES

    def __init__(self, model=None, *, size: int = 256, device=None,
                 regions: tuple[str, ...] | None = ("face_narrow",),
                 head_proxy: bool = True, hole_fill: bool = True, proxy_step: int | None = None,
                 head_fade: float = 1.4, head_inflate: float = 1.08,
                 n_boundary: int = 48, mls_kind: str = "rigid", mls_step: int = 8,
                 map_size: int | None = 256, blend_px: float | None = None,
                 mouth_color: tuple[float, float, float] | None = (0.16, 0.06, 0.06),
                 relative_expression: bool = False, gaze: bool = False,
                 max_gaze_shift: float = 0.2, **fit_options):
        super().__init__(model, size=size, device=device, **fit_options)
        self.gaze, self.max_gaze_shift = bool(gaze), float(max_gaze_shift)
        if self.gaze:   # the pupils are located on the driving crops
            self.requires = frozenset({"morphable_fit", "image", "landmarks68"})
        if map_size is not None and map_size < 16:
            raise ValueError(f"map_size must be >= 16 or None, got {map_size}")
        self.map_size = size if map_size is None else min(size, int(map_size))
        if proxy_step is None:  # the head flow is smooth: a 64 x 64 grid (at least every 4 px)
            proxy_step = max(4, self.map_size // 64)
        if mls_step < 1 or proxy_step < 1:
            raise ValueError("mls_step and proxy_step must be >= 1")
        if not head_fade > 1:
            raise ValueError(f"head_fade must be > 1, got {head_fade}")
        self.head_proxy, self.hole_fill = bool(head_proxy), bool(hole_fill)
        self.proxy_step, self.head_fade, self.head_inflate = proxy_step, head_fade, head_inflate
        self.mls_kind = mls_kind
        self.mls_step = mls_step
        self.blend_px = blend_px if blend_px is not None else max(2.0, size / 40)  # at size
        self.mouth_color = mouth_color
        self.relative_expression = relative_expression
        self.timings: dict | None = None  # when a dict, render() adds raster/warp seconds
        self._setup_mesh(regions, n_boundary)
        self._head_cache: tuple | None = None

    @property
    def image_size(self) -> int:
        return self.size

    # -- the Reenactor protocol ---------------------------------------------------------
    def reenact(self, sources, driving, *, mode: str | None = None) -> torch.Tensor:
        """Render B driving frames: ``sources`` a one-row
        :class:`~facegeo.pipeline.Conditioning` (image, landmarks68, morphable_fit of the
        source crop), ``driving`` its ``morphable_fit`` (B rows) and ``reference`` (first
        driving frame, for relative mode). Returns (B, 3, S, S)."""
        mode = self.check_mode(mode)
        self.check_sources(sources)
        dfit = driving.get("morphable_fit")
        ref = driving.reference.get("morphable_fit") if driving.reference is not None else None
        if mode == "relative" and ref is None:
            raise ValueError("relative mode needs driving.reference (the first driving frame)")
        tfit = self.target_fits(sources.get("morphable_fit"), dfit, mode,
                                relative_expression=self.relative_expression, reference=ref)
        out = self.render(sources.get("image"), sources.morphable_fit, tfit,
                          source_landmarks=sources.landmarks68, timings=self.timings)
        if not self.gaze:
            return out.frames
        reference = driving.reference
        return self.transfer_gaze(
            out.frames, out.target_landmarks, sources.get("image"), sources.get("landmarks68"),
            self.image_vertices(sources.morphable_fit)[:, self.lm_rows, :2],
            driving.get("image"), driving.get("landmarks68"), mode,
            reference_image=reference.image if reference is not None else None,
            reference_landmarks=reference.landmarks68 if reference is not None else None)

    def transfer_gaze(self, frames, target_landmarks, source_image, source_landmarks,
                      source_model_landmarks, driving_images, driving_landmarks,
                      mode: str = "relative", *, reference_image=None,
                      reference_landmarks=None) -> torch.Tensor:
        """Move the irises of rendered frames so their gaze follows the driver's.

        Gaze is a pupil's offset in its eye's frame (:func:`facegeo.landmarks.pupils.
        gaze_offsets`: along / across the corner-to-corner axis, in eye widths). The warp
        carries the source iris with the source *model* eye to the target model eye, so
        the rendered pupil sits at the source's offset in the target model eye; it is
        moved (:func:`~facegeo.landmarks.pupils.shift_iris`, lids fixed) by the driver's
        offset change from the reference frame (relative) or by driver minus source
        offset (absolute), at most ``max_gaze_shift`` eye widths. Eyes found closed
        (no pupil: in the source, a driving frame or the reference) are left as rendered.

        Args:
            frames: (B, 3, S, S) rendered crops; target_landmarks: (B, 68, 2) the target
                model landmarks of the render (:class:`RenderOutput`).
            source_image: (1, 3, S, S); source_landmarks: (1, 68, 2) detected;
                source_model_landmarks: (1, 68, 2) of the source fit (crop pixels).
            driving_images: (B, 3, S_d, S_d) driving crops; driving_landmarks: (B, 68, 2).
            mode: ``relative`` (needs ``reference_image`` (1, 3, S_d, S_d) and
                ``reference_landmarks`` (1, 68, 2)) or ``absolute``.

        Returns:
            (B, 3, S, S).
        """
        from facegeo.landmarks.pupils import eye_axes, gaze_offsets, locate_pupils, shift_iris

        def offsets(img, lm):
            lm = lm.float().to(self.device)
            p, det = locate_pupils(img.float().to(self.device), lm, return_details=True)
            return gaze_offsets(p, lm), det["valid"], p

        o_s, ok_s, p_s = offsets(source_image, source_landmarks)
        # where the warp puts the source pupil: its offset in the source *model* eye
        o_m = gaze_offsets(p_s, source_model_landmarks.float().to(self.device))
        o_d, ok, _ = offsets(driving_images, driving_landmarks)
        if mode == "relative":
            if reference_image is None or reference_landmarks is None:
                raise ValueError("relative gaze transfer needs the reference frame's crop and "
                                 "landmarks")
            o_r, ok_r, _ = offsets(reference_image, reference_landmarks)
            delta, ok = o_d - o_r, ok & ok_r
        else:
            delta = o_d - o_s
        # only the along-axis (horizontal) component: the across one of a located pupil
        # mostly follows the lids (blinks, squints), which the mesh already carries
        along = torch.where(ok & ok_s, delta[..., 0], 0.0).clamp(-self.max_gaze_shift,
                                                                  self.max_gaze_shift)
        tl = target_landmarks.float().to(self.device)
        cen, axis, width = eye_axes(tl)                               # (B, 2, 2), (B, 2)
        normal = torch.stack([-axis[..., 1], axis[..., 0]], -1)
        o_m = o_m.expand_as(delta)
        p_out = cen + (o_m[..., :1] * axis + o_m[..., 1:] * normal) * width[..., None]
        return shift_iris(frames, tl, p_out, (along * width)[..., None] * axis).clamp(0, 1)

    # -- mesh ---------------------------------------------------------------------------
    def _setup_mesh(self, regions, n_boundary):
        fm = FaceMesh.from_model(self.model, regions, caps=self.hole_fill, device=self.device)
        self.mesh = fm
        self.vertex_ids = fm.vertex_ids
        self.faces = fm.faces
        self.lm_rows = fm.landmark_rows
        self.boundary_all = fm.outline.to(self.device)
        k = min(n_boundary, fm.outline.numel())
        sel = torch.linspace(0, fm.outline.numel() - 1, k + 1)[:-1].round().long()
        self.boundary_rows = fm.outline[sel].to(self.device)
        self.control_rows = torch.cat([self.boundary_rows, self.lm_rows])

    def face_vertices(self, fit: FaceFit) -> torch.Tensor:
        """(B, V_face, 3) model-frame vertices of the face mesh for ``fit``'s coefficients."""
        return self.mesh.vertices(fit.id_coeffs.to(self.device, torch.float32),
                                  fit.exp_coeffs.to(self.device, torch.float32))

    def image_vertices(self, fit: FaceFit, face: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V_face, 3) image-space face mesh of ``fit`` (see :func:`posed_vertices`);
        ``face``: its model-frame vertices when already computed (:meth:`face_vertices`)."""
        f = fit.to(self.device)
        face = self.face_vertices(f) if face is None else face
        return posed_vertices(face, f.rotation.float(), f.scale.float(), f.translation.float())

    def head_ellipsoid(self, fit: FaceFit):
        """The head proxy of a one-row fit (:meth:`facegeo.geometric.HeadEllipsoid.
        from_vertices` on the whole fitted model head above the chin landmark); cached
        for the last fit seen."""
        from facegeo.geometric.headproxy import HeadEllipsoid
        from facegeo.landmarks.conventions import GROUPS_68

        f = fit.index(0)
        key = (f.id_coeffs, f.exp_coeffs)
        c = self._head_cache
        if c is not None and all(torch.equal(a, b) for a, b in zip(c[0], key)):
            return c[1]
        m = self.model
        v = m.vertices(f.id_coeffs.to(m.mean), f.exp_coeffs.to(m.mean)).float()
        lm = m.landmarks68.long()
        chin = v[:, lm[GROUPS_68["chin"][0]], 1]
        jaw = list(GROUPS_68["jaw"])
        jaw = v[:, lm[jaw[:4] + jaw[-4:]]]  # the sides of the face outline (not the chin)
        head = HeadEllipsoid.from_vertices(v.cpu(), chin.cpu(), jaw.cpu(),
                                           inflate=self.head_inflate)
        head = HeadEllipsoid(head.center.to(self.device), head.radii.to(self.device))
        self._head_cache = ((f.id_coeffs.clone(), f.exp_coeffs.clone()), head)
        return head

    # -- rendering ----------------------------------------------------------------------
    def _mesh_flow(self, src_v: torch.Tensor, tgt_v: torch.Tensor, H: int, W: int):
        """Backward source coordinates of the target mesh's pixels
        (:func:`facegeo.geometric.render.face_flow`).

        Returns:
            src_xy (B, H, W, 2), covered (B, H, W) bool, depth (B, H, W).
        """
        from facegeo.geometric.render import face_flow

        return face_flow(self.faces, src_v, tgt_v, H, W)

    def _mls_flow(self, src_v, tgt_v, S):
        """The v1 outer motion: MLS from face-boundary and landmark controls (border
        pinned). Control points hidden by the face itself in the source view do not show
        what they claim to: they are dropped (the 51 inner-face landmarks are kept)."""
        from facegeo.landmarks.conventions import GROUPS_68
        from facegeo.mls import mls_grid
        from facegeo.raster import rasterize

        B = tgt_v.shape[0]
        sfrag = rasterize(src_v, self.faces, S, S, cull_backfaces=True)
        vis_s = _visible(src_v[:, self.control_rows], sfrag.depth, sfrag.mask, 0.03 * S)
        keep = vis_s.expand(B, -1).clone()
        n_jaw = len(GROUPS_68["jaw"])
        keep[:, self.boundary_rows.numel() + n_jaw:] = True
        p = tgt_v[:, self.control_rows, :2]
        q = src_v[:, self.control_rows, :2].expand(B, -1, -1)
        # break exact ties between control points with a fixed, deterministic jitter
        jit = torch.arange(p.shape[1] * 2, device=p.device, dtype=p.dtype).view(1, -1, 2)
        p = p + 1e-3 * torch.sin(jit * 12.9898)
        return torch.cat([
            mls_grid(p[b:b + 1, keep[b]].contiguous(), q[b:b + 1, keep[b]].contiguous(), S, S,
                     self.mls_kind, grid_step=self.mls_step, pin_border=9, validate=False)
            for b in range(B)])

    @staticmethod
    def _lid_skin(img: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
        """(1, 2, 3) upper-lid skin colour of each source eye: the mean of the source at
        40 % of the way from the upper-lid landmarks to the brow above them."""
        from facegeo.coords import pixel_to_normalized
        from facegeo.landmarks.conventions import GROUPS_68

        re, le = GROUPS_68["right_eye"], GROUPS_68["left_eye"]
        rb, lb = GROUPS_68["right_brow"], GROUPS_68["left_brow"]
        pairs = [((re[1], rb[2]), (re[2], rb[3])), ((le[1], lb[1]), (le[2], lb[2]))]
        cols = []
        for eye in pairs:
            pts = torch.stack([lm[0, a] + 0.4 * (lm[0, b] - lm[0, a]) for a, b in eye])
            g = pixel_to_normalized(pts, tuple(img.shape[-2:])).view(1, 1, -1, 2)
            cols.append(F.grid_sample(img[:1], g.to(img), align_corners=False)[0, :, 0].mean(-1))
        return torch.stack(cols)[None]

    def render(self, source_image: torch.Tensor, source: FaceFit, targets: FaceFit, *,
               source_landmarks: torch.Tensor | None = None,
               timings: dict | None = None) -> RenderOutput:
        """Warp the source crop into the target geometry.

        Args:
            source_image: (1, 3, S, S) source crop.
            source: one-row source fit; targets: B-row target fits (crop pixels).
            source_landmarks: optional (1, 68, 2) detected source landmarks (crop pixels);
                they outline the source's mouth opening (default: the fitted model's).
            timings: optional dict; ``raster`` and ``warp`` seconds are added to it.

        Returns:
            :class:`RenderOutput` with (B, 3, S, S) frames.
        """
        from facegeo.geometric.render import (
            compose,
            eyelid_fill,
            head_flow,
            mouth_fill,
            silhouette_weight,
            soften_stretched,
        )
        from facegeo.landmarks.conventions import GROUPS_68

        t0 = time.perf_counter()
        img = source_image.to(self.device)
        S = img.shape[-1]
        src_f, tgt_f = self.face_vertices(source), self.face_vertices(targets)
        src_v, tgt_v = self.image_vertices(source, src_f), self.image_vertices(targets, tgt_f)
        h = min(S, self.map_size)  # the backward map's size
        k = h / S
        sm, tm = (source, targets) if h == S else (source.resized(k), targets.resized(k))
        src_vm, tgt_vm = ((src_v, tgt_v) if h == S else
                          (self.image_vertices(sm, src_f), self.image_vertices(tm, tgt_f)))
        xy, cov = self._mesh_flow(src_vm, tgt_vm, h, h)[:2]
        t1 = time.perf_counter()
        if self.head_proxy:
            sf, tf = sm.to(self.device), tm.to(self.device)
            outer, _ = head_flow(self.head_ellipsoid(source),
                                 (tf.rotation.float(), tf.scale.float(), tf.translation.float()),
                                 (sf.rotation.float(), sf.scale.float(), sf.translation.float()),
                                 h, h, step=self.proxy_step, fade=self.head_fade,
                                 with_rho=False)
        else:
            outer = self._mls_flow(src_vm, tgt_vm, h)
        m = silhouette_weight(cov, self.blend_px * k)
        out, src_xy, grid = compose(img, xy, outer, m)
        if h != S:
            m = F.interpolate(m[:, None], size=(S, S), mode="bilinear",
                              align_corners=False)[:, 0]
        if self.head_proxy:
            out = soften_stretched(out, img, src_xy, grid)
        src_lm = (source_landmarks.to(tgt_v).reshape(1, 68, 2) if source_landmarks
                  is not None else src_v[:, self.lm_rows, :2])
        if self.hole_fill:
            eyes = [list(GROUPS_68["right_eye"]), list(GROUPS_68["left_eye"])]
            tgt_lm = tgt_v[:, self.lm_rows, :2]
            out = eyelid_fill(out, grid, torch.stack([tgt_lm[:, i] for i in eyes], 1),
                              torch.stack([src_lm[:, i] for i in eyes], 1),
                              self._lid_skin(img, src_lm))
        if self.mouth_color is not None:
            inner = list(GROUPS_68["inner_lips"])
            out = mouth_fill(out, grid, tgt_v[:, self.lm_rows[inner], :2], src_lm[:, inner],
                             self.mouth_color, source_image=img)
        t2 = time.perf_counter()
        if timings is not None:
            timings["raster"] = timings.get("raster", 0.0) + (t1 - t0)
            timings["warp"] = timings.get("warp", 0.0) + (t2 - t1)
        lm = tgt_v[:, self.lm_rows, :2]
        return RenderOutput(out.clamp(0, 1), src_xy, m, lm)

    def render_stream(self, source: SourceState, targets: FaceFit, *, batch: int = 16,
                      paste: bool = False, timings: dict | None = None,
                      progress: Callable[[int], None] | None = None) -> Iterator[torch.Tensor]:
        """Render targets in chunks; yields (3, S, S) crops, or full frames with ``paste``."""
        for i in range(0, len(targets), batch):
            out = self.render(source.image, source.fit, targets.index(slice(i, i + batch)),
                              source_landmarks=source.landmarks, timings=timings).frames
            if paste:
                n = out.shape[0]
                out = paste_back(source.full.expand(n, -1, -1, -1), out,
                                 source.box[None].expand(n, 3), feather=0.1)
            yield from out
            if progress is not None:
                progress(out.shape[0])


# ----------------------------------------------------------------------------- one call
def reenact(source, driving, *, fps: float = 30.0, mode: str = "relative", size: int = 256,
            crop: bool = True, device=None, relative_expression: bool = False,
            reenactor: GeometricReenactor | None = None, batch: int = 16,
            progress: Callable[[int], None] | None = None) -> ReenactResult:
    """Animate a source portrait with a driving sequence, geometrically (no network).

    Args:
        source: (3, H, W) float image in [0, 1] (or (1, 3, H, W), or (H, W, 3) uint8).
        driving: (T, 3, H_d, W_d) float tensor, (T, H_d, W_d, 3) uint8 array, an iterable of
            frames, or one image (3, H_d, W_d) (image-to-image).
        fps: driving frame rate (kept in the result).
        mode: ``"relative"`` (default) or ``"absolute"``.
        size: working resolution S.
        crop: work on a face crop and return crops (S x S); ``False`` pastes the animated
            crop back into the full source frame (output H x W).
        device: torch device for rendering.
        relative_expression: see :meth:`GeometricReenactor.target_fits`.
        reenactor: reuse a configured :class:`GeometricReenactor` (its size wins).
        batch: frames rendered per batch.
        progress: called with the number of frames finished (tracking and rendering).

    Returns:
        :class:`ReenactResult`; ``frames`` is (T, 3, S, S) (crop) or (T, 3, H, W).

    Raises:
        NoFaceError: no face in the source, or in none of the driving frames.
        ValueError: empty driving sequence, bad mode, alpha-channel images.
    """
    from facegeo.pipeline import ReenactmentPipeline

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rr = reenactor or GeometricReenactor(size=size, device=device)
    pipe = ReenactmentPipeline(rr, chunk_size=batch)
    job = pipe.prepare(_as_image(source, "source")[0], driving, fps=fps, progress=progress)
    timings: dict = {}
    saved = rr.relative_expression
    rr.timings, rr.relative_expression = timings, relative_expression
    try:
        frames = torch.stack(list(job.frames(mode=mode, paste=not crop, progress=progress,
                                             keep_frames=True)))
    finally:
        rr.timings, rr.relative_expression = None, saved
    if job.n_missing:
        warnings.warn(f"{job.n_missing} of {job.n_frames} driving frames had no face; they "
                      "hold the last good pose/expression", stacklevel=2)
    src, dfit = job.sources[0], job.driving_fit
    tfit = rr.target_fits(src.fit, dfit, mode, relative_expression=relative_expression)
    timings = {"landmarks": job.timings["landmarks"], "fit": job.timings["fit"], **timings}
    return ReenactResult(frames, job.fps, job.n_missing, src.fit, dfit, tfit, timings)


# ----------------------------------------------------------------------------- parameters
def expression_from_names(model, weights: dict[str, float],
                          base: torch.Tensor | None = None) -> torch.Tensor:
    """Expression coefficients with named blendshapes set.

    Args:
        model: the morphable model (``exp_names``, optionally ``exp_names_arkit``).
        weights: name -> weight (ICT names such as ``jawOpen``, ``mouthSmile_L``, or ARKit
            names such as ``mouthSmileLeft``); blendshape weights must lie in [0, 1].
        base: (B, K_exp) coefficients to start from (default zeros, B = 1).

    Returns:
        (B, K_exp) copy of ``base`` with the named entries replaced.

    Raises:
        ValueError: unknown name or weight out of range.
    """
    names = list(model.exp_names or [])
    arkit = list(getattr(model, "exp_names_arkit", None) or [])
    out = (torch.zeros(1, model.n_exp) if base is None else base).clone()
    for name, w in weights.items():
        if name in names:
            k = names.index(name)
        elif name in arkit:
            k = arkit.index(name)
        else:
            raise ValueError(f"unknown expression name {name!r}; known: {', '.join(names)}")
        w = float(w)
        if not math.isfinite(w) or (model.exp_kind == "blendshape" and not 0.0 <= w <= 1.0):
            raise ValueError(f"expression weight {name}={w} must be in [0, 1]")
        out[:, k] = w
    return out


def synthetic_driving(source: FaceFit, model, n_frames: int = 90) -> FaceFit:
    """A scripted driving performance for demos (no video needed).

    Head turns (yaw +-20 deg, pitch +-8 deg, roll +-5 deg, applied on top of the source pose)
    and expressions (jaw open, smile, blinks, raised brows) as smooth bumps over time.

    Args:
        source: one-row source fit (identity, base expression and pose are kept).
        model: the morphable model (expression names).
        n_frames: sequence length T (>= 2).

    Returns:
        T-row :class:`FaceFit`.
    """
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    src = source.index(0)
    dev, dt = src.rotation.device, src.rotation.dtype
    t = torch.linspace(0.0, 1.0, n_frames, device=dev, dtype=dt)
    ang = torch.stack([20 * torch.sin(2 * math.pi * t), 8 * torch.sin(4 * math.pi * t),
                       5 * torch.sin(2 * math.pi * t + 1.0)], -1)

    def bump(a, b):
        x = ((t - a) / (b - a)).clamp(0, 1)
        return torch.sin(math.pi * x) ** 2

    exp = src.exp_coeffs.expand(n_frames, -1).clone()
    names = list(model.exp_names or [])
    script = {"jawOpen": 0.6 * bump(0.05, 0.3), "mouthSmile_L": 0.8 * bump(0.35, 0.65),
              "mouthSmile_R": 0.8 * bump(0.35, 0.65), "eyeBlink_L": bump(0.45, 0.52),
              "eyeBlink_R": bump(0.45, 0.52), "browInnerUp_L": 0.7 * bump(0.7, 0.95),
              "browInnerUp_R": 0.7 * bump(0.7, 0.95), "mouthFunnel": 0.5 * bump(0.75, 0.95)}
    for name, w in script.items():
        if name in names:
            k = names.index(name)
            exp[:, k] = torch.maximum(exp[:, k], w)
    rot = T.euler_to_matrix(ang) @ src.rotation
    return FaceFit(rot, src.scale.expand(n_frames), src.translation.expand(n_frames, -1),
                   src.id_coeffs.expand(n_frames, -1), exp)
