"""Evaluation protocols for face reenactment (self, cross, keypoint-noise robustness).

A *method* is a callable

    method(source, driving, *, mode="relative", perturb=None) -> frames

with ``source`` (1, 3, H, W), ``driving`` (T, 3, H_d, W_d) and ``frames`` (T, 3, H_o, W_o), all
floats in [0, 1]. ``mode`` is ``"relative"`` or ``"absolute"`` (methods without the notion
ignore it); ``perturb`` is an optional keypoint hook ``perturb(kp) -> kp`` on the method's
driving keypoints (T, K, 2) in [0, 1] image-normalised coordinates (x / W, y / H), applied
before they drive the output (used by :func:`noise_robustness`; methods without keypoints
ignore it). :func:`static_source` and :func:`copy_driving` are the two reference baselines.

Every generated, driving and source frame is analysed once by :class:`FaceAnalyzer`:
68 landmarks (dlib, the largest face), a weak-perspective 3DMM fit (:mod:`facegeo.fitting`,
ICT-FaceKit: yaw/pitch/roll in degrees and 53 expression blendshape weights), and identity
embeddings (ArcFace-loss MobileFaceNet, :mod:`facegeo.facerec`, and dlib's descriptor).

Metrics per video (:func:`video_metrics`; means over frames, NaN where undefined):

==================  ======================================================================
``l1 psnr ssim``    output vs ground truth (self-reenactment only), :mod:`facegeo.metrics`
``ms_ssim``         idem, when the frames are larger than 160 px
``akd mkr``         landmarks of output vs ground truth / driving frame (pixels), and the
                    fraction of frames with a driving face where the output has none
``csim``            cosine(MobileFaceNet(source), MobileFaceNet(output)) (ArcFace aligned)
``isim_dlib``       the same with dlib's 128-d descriptor
``prmse psim``      head pose of the output vs the driving frame (degrees / cosine)
``aucon esim ed``   fitted expression weights of the output vs the driving frame
``eye_r mouth_r``   eye and mouth following: Pearson r over the video of the output's and the
                    driving frames' eye / mouth opening (:func:`facegeo.metrics.eye_opening`,
                    :func:`~facegeo.metrics.mouth_opening` of the 68 landmarks; 0 for a still
                    output, NaN when the driver's opening does not change)
``gaze_r``          gaze following: correlation of the output's and the driving frames' pupil
                    displacements in the eye frame (:func:`facegeo.landmarks.pupils.gaze_following`
                    ``corr`` of the :func:`~facegeo.landmarks.pupils.gaze_offsets` of the
                    located pupils; 0 for a still output or a still driver gaze)
``sms``             S2D eq. 9 on the output landmarks over the evaluated frames (pixels)
``flicker``         mean |frame_t - frame_(t-1)| x 255 outside every frame's face box
==================  ======================================================================

The pose / expression comparisons are with the *driving* frame (in self-reenactment that is the
ground truth), as in the papers; in relative mode a faithful method moves the source by the
driving *motion*, so PRMSE against the driving pose includes the source-driving pose offset.
FID (:func:`dataset_fid`) compares all output frames of a method with all driving frames of the
run, with the pytorch-fid Inception (:class:`facegeo.metrics.InceptionFID`); when its weights
(asset ``inception_fid``) cannot be resolved the report says :data:`FID_SKIP`. LPIPS is computed
per video (self-reenactment) with :class:`facegeo.metrics.LPIPS` when its weights (assets
``alexnet_lpips``, ``lpips_alex_lin``) resolve, else the report says :data:`LPIPS_SKIP`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from facegeo import metrics as M

__all__ = [
    "FrameAnalysis",
    "FaceAnalyzer",
    "static_source",
    "copy_driving",
    "call_method",
    "keypoint_perturbation",
    "background_mask",
    "video_metrics",
    "self_reenactment",
    "cross_reenactment",
    "noise_robustness",
    "aggregate",
    "SKIPPED",
    "FID_SKIP",
    "LPIPS_SKIP",
    "lpips_network",
    "METRIC_KEYS",
    "fid_network",
    "dataset_fid",
]

#: Metrics this harness does not compute, with the reason written into every report.
SKIPPED: dict[str, str] = {}
FID_SKIP = "skipped: weights not available (asset inception_fid)"
LPIPS_SKIP = "skipped: weights not available (assets alexnet_lpips, lpips_alex_lin)"

#: Order of the metric columns in reports.
METRIC_KEYS = ("l1", "psnr", "ssim", "ms_ssim", "lpips", "akd", "mkr", "csim", "isim_dlib", "prmse",
               "psim", "aucon", "esim", "ed", "eye_r", "mouth_r", "gaze_r", "sms",
               "flicker")

Method = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------- analysis
@dataclass
class FrameAnalysis:
    """Per-frame measurements of T images.

    Attributes:
        landmarks: (T, 68, 2) pixels (NaN rows where no face was found).
        found: (T,) bool.
        angles: (T, 3) yaw/pitch/roll degrees (NaN rows where not found), or None.
        expression: (T, K) fitted expression weights (NaN rows where not found), or None.
        arcface: (T, 128) unit MobileFaceNet embeddings (NaN rows), or None.
        dlib: (T, 128) unit dlib descriptors (NaN rows), or None.
        size: (H, W) of the images.
        gaze: (T, 2, 2) :func:`facegeo.landmarks.pupils.gaze_offsets` of the located pupils
            (NaN rows), or None.
    """

    landmarks: torch.Tensor
    found: torch.Tensor
    angles: torch.Tensor | None
    expression: torch.Tensor | None
    arcface: torch.Tensor | None
    dlib: torch.Tensor | None
    size: tuple[int, int]
    gaze: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.landmarks.shape[0]

    def index(self, idx) -> FrameAnalysis:
        """Rows ``idx`` (an index tensor / list / slice) of every field."""
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return FrameAnalysis(self.landmarks[idx], self.found[idx], pick(self.angles),
                             pick(self.expression), pick(self.arcface), pick(self.dlib),
                             self.size, pick(self.gaze))


def _check_frames(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] < 1:
        raise ValueError(f"{name} must be (T>=1, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be float in [0, 1], got {x.dtype}")


class FaceAnalyzer:
    """Landmarks, 3DMM pose/expression and identity embeddings of frames.

    Args:
        detector: landmark backend name (``"dlib"``) or instance.
        model: morphable model for pose/expression (default ICT-FaceKit); ``False`` skips
            the fit.
        arcface: an :class:`facegeo.facerec.ArcFaceEmbedder`, ``True`` (load the default
            weights) or ``False``.
        dlib_identity: compute dlib's face descriptor too.
        pupils: locate the pupils (:func:`facegeo.landmarks.pupils.locate_pupils`) for the
            gaze channel.
        device: where the fit and the networks run.
    """

    #: frames per :func:`~facegeo.landmarks.pupils.locate_pupils` call (its memory grows
    #: with the batch: about 6 MB per frame)
    pupil_batch = 16

    def __init__(self, detector="dlib", *, model=None, arcface=True, dlib_identity: bool = True,
                 pupils: bool = True, device=None):
        from facegeo.landmarks.backends import get_detector

        self.detector = get_detector(detector)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if model is None:
            from facegeo.morphable import MorphableModel

            model = MorphableModel.load()
        self.model = model if model is not False else None
        if arcface is True:
            from facegeo.facerec import ArcFaceEmbedder

            arcface = ArcFaceEmbedder(device=self.device)
        self.arcface = arcface or None
        self.dlib_identity = bool(dlib_identity)
        self.pupils = bool(pupils)

    def landmarks(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, 3, H, W) -> landmarks (T, 68, 2) (NaN where no face) and found (T,) bool.
        The largest face of each frame is used."""
        _check_frames(frames, "frames")
        lms, found = [], []
        for f in frames:
            faces = self.detector.detect(f.detach().cpu())
            if faces:
                lms.append(faces[0].landmarks.float())
                found.append(True)
            else:
                lms.append(torch.full((68, 2), float("nan")))
                found.append(False)
        return torch.stack(lms), torch.tensor(found, dtype=torch.bool)

    def __call__(self, frames: torch.Tensor, landmarks: torch.Tensor | None = None,
                 found: torch.Tensor | None = None) -> FrameAnalysis:
        """Analyse (T, 3, H, W) frames (optionally with known landmarks (T, 68, 2) and
        found (T,) bool) -> :class:`FrameAnalysis`."""
        _check_frames(frames, "frames")
        if landmarks is None:
            landmarks, found = self.landmarks(frames)
        elif found is None:
            found = torch.isfinite(landmarks).flatten(1).all(1)
        t = frames.shape[0]
        idx = found.nonzero().squeeze(1)

        def scatter(values: torch.Tensor | None, dim: int) -> torch.Tensor:
            out = torch.full((t, dim), float("nan"))
            if values is not None and idx.numel():
                out[idx] = values.detach().float().cpu()
            return out

        angles = expression = arc = dl = gaze = None
        sub_frames, sub_lm = frames[idx], landmarks[idx].float()
        if self.model is not None:
            from facegeo.fitting import fit_landmarks

            k = self.model.n_exp if hasattr(self.model, "n_exp") else None
            res = (fit_landmarks(self.model, sub_lm.to(self.device), device=self.device)
                   if idx.numel() else None)
            if k is None:
                k = res.exp_coeffs.shape[1] if res is not None else 0
            angles = scatter(None if res is None else res.angles, 3)
            expression = scatter(None if res is None else res.exp_coeffs, k)
        if self.arcface is not None:
            arc = scatter(self.arcface(sub_frames.to(self.device), sub_lm.to(self.device))
                          if idx.numel() else None, 128)
        if self.dlib_identity:
            from facegeo.facerec import dlib_embeddings

            dl = scatter(dlib_embeddings(sub_frames.cpu(), sub_lm.cpu())
                         if idx.numel() else None, 128)
        if self.pupils:
            from facegeo.landmarks.pupils import gaze_offsets, locate_pupils

            n = self.pupil_batch
            g = [gaze_offsets(locate_pupils(sub_frames[i:i + n].cpu().float(),
                                            sub_lm[i:i + n].cpu()), sub_lm[i:i + n].cpu())
                 for i in range(0, idx.numel(), n)]
            gaze = scatter(torch.cat(g).flatten(1) if g else None, 4).view(t, 2, 2)
        return FrameAnalysis(landmarks.float().cpu(), found.cpu(), angles, expression, arc, dl,
                             (int(frames.shape[-2]), int(frames.shape[-1])), gaze)


# ----------------------------------------------------------------------------- methods
def static_source(source: torch.Tensor, driving: torch.Tensor, **_) -> torch.Tensor:
    """Baseline "static source": every output frame is the source image.
    (1, 3, H, W), (T, 3, ., .) -> (T, 3, H, W)."""
    _check_frames(source, "source")
    _check_frames(driving, "driving")
    return source[:1].expand(driving.shape[0], -1, -1, -1).clone()


def copy_driving(source: torch.Tensor, driving: torch.Tensor, **_) -> torch.Tensor:
    """Baseline "copy driving": every output frame is the driving frame.
    (1, 3, ., .), (T, 3, H, W) -> (T, 3, H, W)."""
    _check_frames(source, "source")
    _check_frames(driving, "driving")
    return driving.clone()


def call_method(method: Method, source: torch.Tensor, driving: torch.Tensor, *,
                mode: str = "relative", perturb=None) -> torch.Tensor:
    """Run ``method``, passing ``mode`` / ``perturb`` only if its signature takes them, and
    check its output: (T, 3, H_o, W_o) float, T = len(driving), finite."""
    if mode not in ("relative", "absolute"):
        raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
    try:
        params = inspect.signature(method).parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, var_kw = {}, True
    kwargs = {}
    if var_kw or "mode" in params:
        kwargs["mode"] = mode
    if perturb is not None:
        if not (var_kw or "perturb" in params):
            raise ValueError("this method takes no keypoint perturbation hook (perturb=...)")
        kwargs["perturb"] = perturb
    out = method(source, driving, **kwargs)
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[1] != 3:
        raise ValueError(f"method output must be a (T, 3, H, W) tensor, got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    if out.shape[0] != driving.shape[0]:
        raise ValueError(f"method returned {out.shape[0]} frames for {driving.shape[0]} "
                         "driving frames")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("method output contains NaN/inf")
    return out.float().clamp(0, 1)


def keypoint_perturbation(low: float = 0.05, high: float = 0.5, *,
                          generator: torch.Generator | None = None) -> Callable:
    """The PFP-MLS Table 2 perturbation: in each frame one keypoint, chosen uniformly, is
    moved by a uniform random offset of magnitude in [low, high] per coordinate (random sign)
    in [0, 1] normalised image coordinates.

    Returns:
        ``perturb(kp)``: (T, K, 2) -> (T, K, 2) (a new tensor). It records the chosen indices
        in ``perturb.last_index`` (T,) and offsets in ``perturb.last_offset`` (T, 2).
    """
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got {low}, {high}")

    def perturb(kp: torch.Tensor) -> torch.Tensor:
        if kp.dim() != 3 or kp.shape[-1] != 2:
            raise ValueError(f"keypoints must be (T, K, 2), got {tuple(kp.shape)}")
        t, k, _ = kp.shape
        idx = torch.randint(k, (t,), generator=generator)
        mag = low + (high - low) * torch.rand(t, 2, generator=generator)
        sign = torch.randint(2, (t, 2), generator=generator) * 2 - 1
        off = (mag * sign).to(kp)
        out = kp.clone()
        out[torch.arange(t), idx.to(kp.device)] += off
        perturb.last_index, perturb.last_offset = idx, off
        return out

    return perturb


# ----------------------------------------------------------------------------- metrics
def background_mask(landmarks: torch.Tensor, size: tuple[int, int],
                    grow: float = 0.2) -> torch.Tensor:
    """(H, W) bool: pixels outside every frame's face box (landmark bounding box grown by
    ``grow`` x its size on each side). ``landmarks`` (T, 68, 2); NaN rows are ignored."""
    h, w = size
    mask = torch.ones(h, w, dtype=torch.bool)
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    for lm in landmarks:
        if not bool(torch.isfinite(lm).all()):
            continue
        lo, hi = lm.amin(0), lm.amax(0)
        d = (hi - lo) * grow
        lo, hi = lo - d, hi + d
        inside = (xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])
        mask &= ~inside
    return mask


def _nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else float("nan")


def video_metrics(output: torch.Tensor, out_an: FrameAnalysis, drv_an: FrameAnalysis,
                  src_an: FrameAnalysis, *, ground_truth: torch.Tensor | None = None,
                  lpips_net=None) -> dict:
    """All metrics of one generated video.

    Args:
        output: (T, 3, H, W) generated frames.
        out_an, drv_an: analyses of the output and of the driving frames (T rows each).
        src_an: analysis of the source image (1 row).
        ground_truth: (T, 3, H, W) target frames (self-reenactment) or None.
        lpips_net: a :class:`facegeo.metrics.LPIPS` (or None: ``lpips`` is NaN).

    Returns:
        dict metric name -> float (NaN where undefined), plus ``frames`` and
        ``output_faces`` (frames where the output has a face).
    """
    t = output.shape[0]
    if len(out_an) != t or len(drv_an) != t or len(src_an) != 1:
        raise ValueError("analyses must have T, T and 1 rows")
    r: dict = {"frames": t, "output_faces": int(out_an.found.sum())}
    nan = float("nan")
    if ground_truth is not None:
        if ground_truth.shape != output.shape:
            raise ValueError(f"ground truth {tuple(ground_truth.shape)} vs output "
                             f"{tuple(output.shape)}")
        gt = ground_truth.float()
        r["l1"] = float(M.l1(output, gt).mean())
        r["psnr"] = float(M.psnr(output, gt, max_db=100).mean())  # identical frames: 100 dB
        r["ssim"] = float(M.ssim(output, gt).mean())
        r["ms_ssim"] = float(M.ms_ssim(output, gt).mean()) if min(output.shape[-2:]) > 160 \
            else nan
        if lpips_net is not None:
            dev = next(lpips_net.parameters()).device
            with torch.no_grad():
                r["lpips"] = float(torch.cat([lpips_net(output[i:i + 8].to(dev),
                                                        gt[i:i + 8].to(dev)).cpu()
                                              for i in range(0, t, 8)]).mean())
        else:
            r["lpips"] = nan
    else:
        r.update(l1=nan, psnr=nan, ssim=nan, ms_ssim=nan, lpips=nan)
    # keypoints: only meaningful when output and driving frames share a frame of reference
    if out_an.size == drv_an.size:
        a, m = M.akd(torch.nan_to_num(out_an.landmarks), torch.nan_to_num(drv_an.landmarks),
                     out_an.found, drv_an.found)
        r["akd"], r["mkr"] = float(a), float(m)
    else:
        r["akd"] = nan
        r["mkr"] = float((drv_an.found & ~out_an.found).sum() / drv_an.found.sum().clamp_min(1))
    both = out_an.found & drv_an.found
    for key, emb in (("csim", "arcface"), ("isim_dlib", "dlib")):
        e_o, e_s = getattr(out_an, emb), getattr(src_an, emb)
        if e_o is None or e_s is None or not bool(src_an.found[0]) or not out_an.found.any():
            r[key] = nan
        else:
            e = e_o[out_an.found]
            r[key] = float(M.cosine_similarity(e, e_s.expand_as(e)).mean())
    if out_an.angles is not None and drv_an.angles is not None and both.any():
        po, pd = out_an.angles[both], drv_an.angles[both]
        r["prmse"] = float(M.pose_rmse(po, pd).mean())
        r["psim"] = float(M.pose_similarity(po, pd).mean())
        eo, ed = out_an.expression[both], drv_an.expression[both]
        r["aucon"] = float(M.expression_agreement(eo, ed).mean())
        r["esim"] = _nanmean(M.cosine_similarity(eo, ed))
        r["ed"] = float(M.expression_distance(eo, ed).mean())
    else:
        r.update(prmse=nan, psim=nan, aucon=nan, esim=nan, ed=nan)
    for key, opening in (("eye_r", M.eye_opening), ("mouth_r", M.mouth_opening)):
        # NaN for fewer than 3 frames with both faces: pearson's own rule
        r[key] = float(M.pearson(opening(out_an.landmarks[both]),
                                 opening(drv_an.landmarks[both])))
    if out_an.gaze is not None and drv_an.gaze is not None and int(both.sum()) >= 3:
        from facegeo.landmarks.pupils import gaze_following

        r["gaze_r"] = gaze_following(drv_an.gaze[both], out_an.gaze[both])["corr"]
    else:
        r["gaze_r"] = nan
    lm = out_an.landmarks
    if t >= 3 and bool(out_an.found.all()):
        r["sms"] = float(M.sms(lm))
    else:
        r["sms"] = nan
    mask = background_mask(torch.cat([out_an.landmarks, drv_an.landmarks])
                           if out_an.size == drv_an.size else out_an.landmarks, out_an.size)
    r["flicker"] = float(M.flicker(output, mask)) * 255 if t >= 2 and bool(mask.any()) else nan
    return r


# ----------------------------------------------------------------------------- protocols
def self_reenactment(method: Method, clip: torch.Tensor, analyzer: FaceAnalyzer, *,
                     every: int = 1, mode: str = "relative", clip_analysis=None,
                     lpips_net=None, num_sources: int = 1) -> dict:
    """FOMM/FSRT self-reenactment: the first frame of ``clip`` is the source, every
    ``every``-th frame (0, k, 2k, ...) is driven and compared with the real frame. Frame 0
    (the source itself) drives too (it is the reference of relative motion) but is left out
    of the metrics when there are other frames (its PSNR would be infinite for a perfect
    method), except SMS, which runs over all output frames. PSNR is capped at 100 dB per frame.
    With ``num_sources=2`` the last frame of the clip is a second source (FSRT sec. 4.1,
    "2-Src") and the driven frames closer than ``every`` frames to it are left out of the
    metrics too, so every evaluated frame is at least ``every`` frames from both sources.

    Args:
        method: see the module docstring.
        clip: (T, 3, H, W) frames of one video.
        analyzer: :class:`FaceAnalyzer`.
        every: frame stride k.
        mode: passed to the method.
        clip_analysis: optional precomputed ``analyzer(clip[::every])`` (shared by methods).
        lpips_net: optional :class:`facegeo.metrics.LPIPS`.
        num_sources: 1 (frame 0) or 2 (frames 0 and T-1); the method gets (N, 3, H, W).

    Returns:
        dict of :func:`video_metrics` (``output`` frames under key ``"_output"``).
    """
    _check_frames(clip, "clip")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if num_sources not in (1, 2):
        raise ValueError(f"num_sources must be 1 or 2, got {num_sources}")
    t = clip.shape[0]
    driving = clip[::every]
    source = clip[[0, t - 1]] if num_sources == 2 else clip[:1]
    drv_an = clip_analysis if clip_analysis is not None else analyzer(driving)
    src_an = drv_an.index(slice(0, 1))
    out = call_method(method, source, driving, mode=mode)
    if out.shape != driving.shape:
        raise ValueError(f"self-reenactment output {tuple(out.shape)} must match the driving "
                         f"frames {tuple(driving.shape)}")
    out_an = analyzer(out)
    frame = torch.arange(driving.shape[0]) * every
    ok = frame >= every if driving.shape[0] > 1 else torch.ones(1, dtype=torch.bool)
    if num_sources == 2:
        ok &= (t - 1 - frame) >= every
    if not bool(ok.any()):
        raise ValueError(f"no frame of the {t}-frame clip is {every} frames from both sources")
    keep = ok.nonzero().squeeze(1)
    r = video_metrics(out[keep], out_an.index(keep), drv_an.index(keep), src_an,
                      ground_truth=driving[keep], lpips_net=lpips_net)
    # temporal smoothness over every output frame (frame 0 included)
    r["sms"] = (float(M.sms(out_an.landmarks)) if len(out_an) >= 3 and bool(out_an.found.all())
                else float("nan"))
    r["_output"] = out
    return r


def cross_reenactment(method: Method, source: torch.Tensor, driving: torch.Tensor,
                      analyzer: FaceAnalyzer, *, mode: str = "relative",
                      source_analysis=None, driving_analysis=None) -> dict:
    """Cross-identity reenactment: source image (1, 3, H, W) of one person, driving frames
    (T, 3, H_d, W_d) of another; no ground truth (pixel metrics NaN). Returns the
    :func:`video_metrics` dict (output frames under ``"_output"``)."""
    _check_frames(source, "source")
    _check_frames(driving, "driving")
    if source.shape[0] != 1:
        raise ValueError(f"source must be one image (1, 3, H, W), got {tuple(source.shape)}")
    src_an = source_analysis if source_analysis is not None else analyzer(source)
    drv_an = driving_analysis if driving_analysis is not None else analyzer(driving)
    out = call_method(method, source, driving, mode=mode)
    r = video_metrics(out, analyzer(out), drv_an, src_an)
    r["_output"] = out
    return r


def noise_robustness(method: Method, clip: torch.Tensor, analyzer: FaceAnalyzer, *,
                     every: int = 1, low: float = 0.05, high: float = 0.5, seed: int = 0,
                     clip_analysis=None, mode: str = "relative") -> dict:
    """PFP-MLS Table 2: self-reenactment with and without one perturbed driving keypoint per
    frame (:func:`keypoint_perturbation`); the score is the mean landmark difference (AKD,
    pixels) between output and driving frames.

    Returns:
        dict ``akd_clean``, ``akd_noisy``, ``change`` (relative, (noisy - clean) / clean),
        ``mkr_clean``, ``mkr_noisy``.
    """
    _check_frames(clip, "clip")
    driving = clip[::every]
    if clip_analysis is not None:
        lm_d, f_d = clip_analysis.landmarks, clip_analysis.found
    else:
        lm_d, f_d = analyzer.landmarks(driving)
    res = {}
    gen = torch.Generator().manual_seed(seed)
    for tag, hook in (("clean", None), ("noisy", keypoint_perturbation(low, high,
                                                                         generator=gen))):
        out = call_method(method, clip[:1], driving, perturb=hook, mode=mode)
        lm_o, f_o = analyzer.landmarks(out)
        a, m = M.akd(torch.nan_to_num(lm_o), torch.nan_to_num(lm_d), f_o, f_d)
        res[f"akd_{tag}"], res[f"mkr_{tag}"] = float(a), float(m)
    c = res["akd_clean"]
    res["change"] = (res["akd_noisy"] - c) / c if c > 0 else (0.0 if res["akd_noisy"] == c
                                                              else float("inf"))
    return res


def aggregate(rows: list[dict], keys=METRIC_KEYS) -> dict:
    """Mean of each metric over videos (NaNs ignored; NaN if none is finite), plus
    ``videos`` (count)."""
    out: dict = {"videos": len(rows)}
    for k in keys:
        vals = [r[k] for r in rows if k in r and isinstance(r[k], (int, float))
                and math.isfinite(r[k])]
        out[k] = sum(vals) / len(vals) if vals else float("nan")
    return out


def fid_network(device=None):
    """The FID Inception with the resolver's ``inception_fid`` weights (no download), or
    ``None`` when they are not available (the caller reports :data:`FID_SKIP`)."""
    from facegeo.assets import AssetNotFoundError

    try:
        net = M.InceptionFID.pretrained(download=False)
    except AssetNotFoundError:
        return None
    return net.to(device) if device is not None else net


@torch.no_grad()
def dataset_fid(outputs: list[torch.Tensor], references: list[torch.Tensor], net,
                batch: int = 16) -> float:
    """FID between two sets of frames: lists of (T_i, 3, H, W) tensors (sizes may differ
    between lists and items; each frame is resized to 299 by the network). Needs >= 2 frames
    per set; with fewer frames than feature dimensions (2048) the covariances are singular
    and the value is only indicative."""
    def feats(frames):
        dev = next(net.parameters()).device
        out = [net(f[i:i + batch].to(dev)).cpu() for f in frames
               for i in range(0, f.shape[0], batch)]
        return torch.cat(out).double()

    return M.fid_from_features(feats(outputs), feats(references))


def lpips_network(device=None):
    """:meth:`facegeo.metrics.LPIPS.pretrained` (no download), or ``None`` when its weights
    are not available (the caller reports :data:`LPIPS_SKIP`)."""
    from facegeo.assets import AssetNotFoundError

    try:
        net = M.LPIPS.pretrained(download=False)
    except (AssetNotFoundError, FileNotFoundError):
        return None
    return net.to(device) if device is not None else net
