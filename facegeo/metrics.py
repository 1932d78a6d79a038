"""Evaluation metrics shared by the five reenactment papers (batched torch).

Every function takes batched tensors and returns one value per item (shape (B,)) unless it
says otherwise, so callers can aggregate per video and over a data set as they wish.

Images are (B, C, H, W) floats in [0, 1]. Landmarks are (B, 68, 2) pixel coordinates.

* L1, PSNR, SSIM, MS-SSIM: :func:`l1`, :func:`psnr`, :func:`ssim`, :func:`ms_ssim`
* AKD and the missing-keypoint rate: :func:`akd`
* CSIM / ISIM: :func:`cosine_similarity` of face-recognition embeddings
* PRMSE, PSIM: :func:`pose_rmse`, :func:`pose_similarity`
* AUCON, ESIM, ED analogues on fitted expression weights: :func:`expression_agreement`,
  :func:`cosine_similarity`, :func:`expression_distance`
* FID: :func:`frechet_distance` of :func:`gaussian_statistics` of Inception features
* SMS (S2D eq. 9) and flicker: :func:`sms`, :func:`flicker`
* eye and mouth following: :func:`eye_opening`, :func:`mouth_opening` of 68 landmarks and
  their :func:`pearson` correlation over a clip (output vs driver)
* the FID network: :class:`InceptionFID` (pytorch-fid compatible), :func:`fid_from_features`
* LPIPS (AlexNet, v0.1): :class:`LPIPS` (backbone weights through the resolver)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "l1",
    "psnr",
    "ssim",
    "ms_ssim",
    "akd",
    "cosine_similarity",
    "pose_rmse",
    "pose_similarity",
    "expression_agreement",
    "expression_distance",
    "frechet_distance",
    "gaussian_statistics",
    "sms",
    "flicker",
    "eye_opening",
    "mouth_opening",
    "pearson",
    "MS_SSIM_WEIGHTS",
    "InceptionFID",
    "fid_from_features",
    "LPIPS",
]

#: Per-scale exponents of MS-SSIM (Wang, Simoncelli and Bovik 2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() != 4:
        raise ValueError(f"{name}: expected images (B, C, H, W), got {tuple(pred.shape)}")


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image. (B, C, H, W) x2 -> (B,)."""
    _pair(pred, target, "l1")
    return (pred - target).abs().flatten(1).mean(1)


def psnr(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0,
         max_db: float | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, 10 log10(max^2 / MSE).
    (B, C, H, W) x2 -> (B,); identical images give +inf.

    ``max_db`` (default None: no cap) bounds the result by clamping the MSE from below at
    ``max_val**2 * 10**(-max_db / 10)``, so identical images give ``max_db`` instead of +inf
    (the training validation metric uses ``max_db=100``, i.e. MSE clamped at 1e-10 for
    ``max_val=1``). NaN MSEs stay NaN."""
    _pair(pred, target, "psnr")
    mse = (pred - target).pow(2).flatten(1).mean(1)
    if max_db is not None:
        mse = mse.clamp_min(max_val**2 * 10 ** (-max_db / 10))
    return 10.0 * torch.log10(max_val**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.view(1, 1, 1, size).expand(channels, 1, 1, size)


def _blur(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    # separable 'valid' Gaussian filter, per channel
    c = x.shape[1]
    x = F.conv2d(x, win, groups=c)
    return F.conv2d(x, win.transpose(2, 3), groups=c)


def _ssim_maps(
    x: torch.Tensor, y: torch.Tensor, win: torch.Tensor, max_val: float, k1: float, k2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    mu_x, mu_y = _blur(x, win), _blur(y, win)
    sxx = _blur(x * x, win) - mu_x**2
    syy = _blur(y * y, win) - mu_y**2
    sxy = _blur(x * y, win) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return lum * cs, cs


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    max_val: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, Gaussian window (11, sigma 1.5),
    valid filtering (no padding), averaged over channels and positions.
    (B, C, H, W) x2 -> (B,). Needs H, W >= window."""
    _pair(pred, target, "ssim")
    if min(pred.shape[-2:]) < window:
        raise ValueError(f"ssim: images must be at least {window}x{window}")
    win = _gaussian_window(window, sigma, pred.shape[1], pred)
    s, _ = _ssim_maps(pred, target, win, max_val, k1, k2)
    return s.flatten(1).mean(1)


def ms_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    max_val: float = 1.0,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003): contrast-structure terms at the finer scales and
    the full SSIM at the coarsest, combined as prod_j cs_j^w_j * ssim_M^w_M, with 2x average
    pooling between scales. Negative per-scale values are clamped to 0 (the usual guard
    against NaN from fractional powers). Each channel is scored on its own and the channel
    scores are averaged (as pytorch-msssim does). (B, C, H, W) x2 -> (B,).
    Needs min(H, W) > (window - 1) * 2^(scales - 1) (160 px for the defaults)."""
    _pair(pred, target, "ms_ssim")
    n = len(weights)
    need = (window - 1) * 2 ** (n - 1)
    if min(pred.shape[-2:]) <= need:
        raise ValueError(f"ms_ssim: images must be larger than {need} px for {n} scales")
    win = _gaussian_window(window, sigma, pred.shape[1], pred)
    w = torch.tensor(weights, dtype=pred.dtype, device=pred.device)
    values = []
    x, y = pred, target
    for j in range(n):
        s, cs = _ssim_maps(x, y, win, max_val, 0.01, 0.03)
        values.append((s if j == n - 1 else cs).flatten(2).mean(2).clamp_min(0))  # (B, C)
        if j < n - 1:
            pad = [0, x.shape[-1] % 2, 0, x.shape[-2] % 2]
            x = F.avg_pool2d(F.pad(x, pad, mode="replicate"), 2)
            y = F.avg_pool2d(F.pad(y, pad, mode="replicate"), 2)
    v = torch.stack(values, dim=-1)  # (B, C, n)
    return torch.prod(v**w, dim=-1).mean(1)


def akd(
    pred: torch.Tensor,
    target: torch.Tensor,
    pred_found: torch.Tensor | None = None,
    target_found: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average keypoint distance and missing-keypoint rate (FOMM/FSRT protocol).

    Args:
        pred: (B, N, 2) landmarks detected on the generated frames (pixels).
        target: (B, N, 2) landmarks detected on the ground-truth frames.
        pred_found, target_found: (B,) bool, whether a face was found in each frame
            (default: all True).

    Returns:
        (akd, mkr): scalar tensors. ``akd`` is the mean Euclidean distance in pixels over the
        landmarks of frames where both faces were found (NaN when there is none); ``mkr`` is
        the fraction of frames with a ground-truth face where the generated frame has none.
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(f"akd: expected two (B, N, 2) tensors, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    b = pred.shape[0]
    ones = torch.ones(b, dtype=torch.bool, device=pred.device)
    pf = ones if pred_found is None else pred_found.to(torch.bool)
    tf = ones if target_found is None else target_found.to(torch.bool)
    both = pf & tf
    dist = (pred - target).norm(dim=-1).mean(-1)
    value = dist[both].mean() if both.any() else torch.tensor(float("nan"), device=pred.device)
    mkr = (tf & ~pf).sum() / tf.sum().clamp_min(1)
    return value, mkr.to(pred.dtype)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of embeddings along the last dimension: (..., D) x (..., D) -> (...).

    The one cosine of facegeo: CSIM/ISIM use it on face-recognition embeddings (MobileFaceNet
    or dlib descriptors) of the source and generated faces; ESIM (analogue) on expression
    vectors; PSIM on rotation-angle vectors. Leading dimensions broadcast; a zero vector
    gives 0. Values in [-1, 1]."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("cosine_similarity expects two tensors, got "
                        f"{type(a).__name__}, {type(b).__name__}")
    if a.dim() == 0 or b.dim() == 0 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"expected two (..., D) tensors with the same D, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    try:
        torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except RuntimeError as e:
        raise ValueError(f"leading dimensions do not broadcast: {tuple(a.shape)}, "
                         f"{tuple(b.shape)}") from e
    return F.cosine_similarity(a, b, dim=-1, eps=1e-12)


def _angles(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[-1] != 3:
        raise ValueError(f"expected (B, 3) yaw/pitch/roll, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")


def pose_rmse(pred_deg: torch.Tensor, target_deg: torch.Tensor) -> torch.Tensor:
    """PRMSE: root mean squared error of (yaw, pitch, roll) in degrees, per item.
    (B, 3) x2 -> (B,). (MeshG reports the mean of this over frames.)"""
    _angles(pred_deg, target_deg)
    return (pred_deg - target_deg).pow(2).mean(-1).sqrt()


def pose_similarity(pred_deg: torch.Tensor, target_deg: torch.Tensor) -> torch.Tensor:
    """PSIM: cosine similarity between the head-rotation angle vectors in radians (as the
    FD-GAN and PFP-MLS papers define it with OpenFace angles; here from our 3DMM fit).
    (B, 3) x2 -> (B,). Undefined (0) when one vector is all zeros."""
    _angles(pred_deg, target_deg)
    return cosine_similarity(torch.deg2rad(pred_deg), torch.deg2rad(target_deg))


def expression_agreement(
    pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.2
) -> torch.Tensor:
    """AUCON analogue: the fraction of expression channels whose activation (value above
    ``threshold``) agrees between generated and driving faces.

    The original AUCON counts agreeing OpenFace action-unit activations. Here the channels are
    the fitted 3DMM expression blendshape weights (ICT: 53 ARKit-style shapes in [0, 1]),
    which are FACS-inspired but not action units; the threshold plays the role of OpenFace's
    AU presence classifier. (B, K) x2 -> (B,)."""
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"expected two (B, K) tensors, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")
    return ((pred > threshold) == (target > threshold)).to(pred.dtype).mean(-1)


def expression_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ED analogue: L2 distance between expression vectors (fitted blendshape weights in
    place of OpenFace action-unit intensities). (B, K) x2 -> (B,)."""
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"expected two (B, K) tensors, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")
    return (pred - target).norm(dim=-1)


def gaussian_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, in float64 (for FID)."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features,
                   dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between two Gaussians (the FID formula):
    |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Computed in float64 with scipy's matrix square root; if the product is singular, a small
    ``eps`` is added to the diagonals (as pytorch-fid does). Inputs (D,), (D, D) x2."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError("frechet_distance: inconsistent shapes")
    import warnings

    with warnings.catch_warnings():
        # singular products are expected with fewer samples than dimensions; the result is
        # checked for finiteness below (as pytorch-fid does with disp=False)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            off = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def sms(landmarks: torch.Tensor, per_coordinate: bool = False) -> torch.Tensor:
    """Landmark temporal smoothness, S2D eq. 9:
    SMS = 1/T sum_t |(D^{t-1} + D^{t+1}) / 2 - D^t|.

    ``|.|`` is the L1 norm of the whole (N, 2) landmark array (the sum of the absolute
    deviations of all 2N coordinates, which gives S2D's magnitudes: dlib about 92 on 256-px
    VoxCeleb), and the mean runs over the T - 2 frames that have both neighbours. Units are
    pixels; lower is smoother. A trajectory moving at constant velocity scores 0.

    Args:
        landmarks: (T, N, 2) or (B, T, N, 2) landmark tracks, T >= 3.
        per_coordinate: divide by 2N: the mean absolute deviation of one coordinate (px).
    Returns:
        () or (B,).
    """
    x = landmarks if landmarks.dim() == 4 else landmarks.unsqueeze(0)
    if x.dim() != 4 or x.shape[-1] != 2 or x.shape[1] < 3:
        raise ValueError(f"sms: expected (T>=3, N, 2) or (B, T>=3, N, 2), got "
                         f"{tuple(landmarks.shape)}")
    accel = 0.5 * (x[:, :-2] + x[:, 2:]) - x[:, 1:-1]  # (B, T-2, N, 2)
    out = accel.abs().sum(dim=(2, 3)).mean(dim=1)
    if per_coordinate:
        out = out / (2 * x.shape[2])
    return out if landmarks.dim() == 4 else out[0]


def _landmarks68(lm: torch.Tensor, name: str) -> None:
    if lm.dim() != 3 or lm.shape[1] < 68 or lm.shape[2] != 2:
        raise ValueError(f"{name}: expected (B, 68, 2) landmarks, got {tuple(lm.shape)}")


def eye_opening(landmarks: torch.Tensor) -> torch.Tensor:
    """Eye opening: the eye aspect ratio (Soukupova and Cech 2016) of 68-point landmarks,
    (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) per eye, averaged over both eyes; about 0.3 for
    an open eye, near 0 for a closed one. (B, 68, 2) (74-point arrays too: their first 68
    rows) -> (B,)."""
    from facegeo.landmarks.conventions import GROUPS_68

    _landmarks68(landmarks, "eye_opening")
    out = 0
    for g in ("right_eye", "left_eye"):
        p = landmarks[:, list(GROUPS_68[g])]
        v = (p[:, 1] - p[:, 5]).norm(dim=-1) + (p[:, 2] - p[:, 4]).norm(dim=-1)
        out = out + v / (2 * (p[:, 0] - p[:, 3]).norm(dim=-1)).clamp_min(1e-6)
    return out / 2


def mouth_opening(landmarks: torch.Tensor) -> torch.Tensor:
    """Mouth opening: inner-lip height (points 62-66, the middle of the inner lips) over the
    mouth width (outer corners 48-54). (B, 68, 2) -> (B,)."""
    from facegeo.landmarks.conventions import GROUPS_68

    _landmarks68(landmarks, "mouth_opening")
    inner, outer = GROUPS_68["inner_lips"], GROUPS_68["outer_lips"]
    h = (landmarks[:, inner[2]] - landmarks[:, inner[6]]).norm(dim=-1)
    w = (landmarks[:, outer[0]] - landmarks[:, outer[6]]).norm(dim=-1)
    return h / w.clamp_min(1e-6)


def pearson(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of a series with the one it should follow: (T,) x2 -> ().
    NaN when T < 3 or ``target`` is constant (nothing to follow); 0 when only ``pred`` is
    constant (a still output follows nothing: the static-source baseline scores 0)."""
    if pred.shape != target.shape or pred.dim() != 1:
        raise ValueError(f"pearson: expected two (T,) series, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")
    a = pred.double() - pred.double().mean()
    b = target.double() - target.double().mean()
    if a.numel() < 3 or float(b.norm()) < 1e-9:
        return torch.tensor(float("nan"))
    if float(a.norm()) < 1e-9:
        return torch.tensor(0.0)
    return ((a * b).sum() / (a.norm() * b.norm())).float()


def flicker(frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Temporal flicker: mean absolute frame-to-frame difference inside ``mask`` (e.g. the
    static background: pixels away from the face in every frame).

    Args:
        frames: (T, C, H, W) in [0, 1], T >= 2.
        mask: (H, W) bool, or None for the whole frame.
    Returns:
        () tensor, in intensity units (x255 for 8-bit levels).
    """
    if frames.dim() != 4 or frames.shape[0] < 2:
        raise ValueError(f"flicker: expected (T>=2, C, H, W), got {tuple(frames.shape)}")
    diff = (frames[1:] - frames[:-1]).abs().mean(1)  # (T-1, H, W)
    if mask is None:
        return diff.mean()
    if mask.shape != frames.shape[-2:]:
        raise ValueError(f"flicker: mask {tuple(mask.shape)} vs frames {tuple(frames.shape)}")
    m = mask.to(torch.bool)
    if not m.any():
        raise ValueError("flicker: empty mask")
    return diff[:, m].mean()



# ------------------------------------------------------------------------------------ FID net
class _BasicConv(torch.nn.Module):
    """conv (no bias) + batch norm (eps 1e-3) + ReLU; parameter names ``conv.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, k, stride: int = 1, padding=0):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, stride, padding, bias=False)
        self.bn = torch.nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # the TF graph's average pooling ignores the zero padding
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class _BlockA(torch.nn.Module):
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = _BasicConv(cin, 64, 1)
        self.branch5x5_1 = _BasicConv(cin, 48, 1)
        self.branch5x5_2 = _BasicConv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = _BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv(96, 96, 3, padding=1)
        self.branch_pool = _BasicConv(cin, pool, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class _BlockB(torch.nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _BasicConv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = _BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, 2)], 1)


class _BlockC(torch.nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _BasicConv(cin, 192, 1)
        self.branch7x7_1 = _BasicConv(cin, c7, 1)
        self.branch7x7_2 = _BasicConv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _BasicConv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BasicConv(cin, c7, 1)
        self.branch7x7dbl_2 = _BasicConv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BasicConv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BasicConv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BasicConv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _BasicConv(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _BlockD(torch.nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _BasicConv(cin, 192, 1)
        self.branch3x3_2 = _BasicConv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _BasicConv(cin, 192, 1)
        self.branch7x7x3_2 = _BasicConv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _BasicConv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _BasicConv(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class _BlockE(torch.nn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _BasicConv(cin, 320, 1)
        self.branch3x3_1 = _BasicConv(cin, 384, 1)
        self.branch3x3_2a = _BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _BasicConv(cin, 448, 1)
        self.branch3x3dbl_2 = _BasicConv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _BasicConv(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        a = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        p = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), a, d, self.branch_pool(p)], 1)


class InceptionFID(torch.nn.Module):
    """Inception-v3 of the FID reference (TF graph 2015-12-05, as ported by pytorch-fid):
    parameter names of torchvision's ``Inception3`` without the auxiliary head and with a
    1008-way ``fc``, so the ``pt_inception-2015-12-05`` state dict (asset
    ``"inception_fid"``) loads strictly. The blocks follow the TF graph where it differs from
    torchvision: average pools ignore padding, and the last block max-pools.

    ``forward``: (B, 3, H, W) in [0, 1] -> (B, 2048) pool features (input resized to
    299x299 bilinearly and scaled to [-1, 1], as pytorch-fid does)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = _BasicConv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = _BasicConv(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = torch.nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"InceptionFID takes (B, 3, H, W), got {tuple(x.shape)}")
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, 2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    @classmethod
    def pretrained(cls, path=None, *, download: bool = False) -> InceptionFID:
        """Load the FID weights through the asset resolver (``"inception_fid"``); raises
        :class:`facegeo.assets.AssetNotFoundError` when they are not available."""
        from facegeo import assets

        p = assets.resolve("inception_fid", path=path, download=download)
        net = cls()
        net.load_state_dict(torch.load(p, map_location="cpu", weights_only=True), strict=True)
        return net.eval()


def fid_from_features(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """FID between two feature sets (N_a, D), (N_b, D): Fréchet distance of their Gaussian
    statistics (:func:`gaussian_statistics`, :func:`frechet_distance`)."""
    return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))


# ------------------------------------------------------------------------------------ LPIPS
from facegeo import assets as _assets  # noqa: E402

#: LPIPS input scaling layer (applied to images in [-1, 1]): (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
#: AlexNet ``features`` indices after the 5 ReLUs LPIPS compares, and their channels.
_ALEX_TAPS = (1, 4, 7, 9, 11)
_ALEX_CHANNELS = (64, 192, 384, 256, 256)


def _alexnet_features() -> torch.nn.Sequential:
    """torchvision ``alexnet().features`` (parameter names ``features.<i>.*``)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )


class LPIPS(torch.nn.Module):
    """LPIPS v0.1, AlexNet variant (Zhang et al. 2018):

        d(x, y) = sum_l mean_hw  w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2

    with f_l the 5 ReLU outputs of AlexNet (unit-normalised along channels, eps 1e-10) on
    the scaled input ``(2 x - 1 - shift) / scale``, and w_l the learned non-negative 1x1
    weights. Backbone: torchvision AlexNet state dict (asset ``"alexnet_lpips"``; keys
    ``features.*``, the classifier is ignored). Linear weights: the LPIPS authors'
    ``weights/v0.1/alex.pth`` (asset ``"lpips_alex_lin"``; keys ``lin<l>.model.1.weight``).

    ``forward``: (B, 3, H, W) x2 in [0, 1] -> (B,) distances (H, W >= 32)."""

    def __init__(self):
        super().__init__()
        self.features = _alexnet_features()
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(c, 1, 1, bias=False)
                                        for c in _ALEX_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1),
                             persistent=False)

    def load_backbone(self, state_dict: dict) -> None:
        """Strictly load the ``features.*`` entries of a torchvision AlexNet state dict."""
        feats = {k[len("features."):]: v for k, v in state_dict.items()
                 if k.startswith("features.")}
        self.features.load_state_dict(feats, strict=True)

    def load_linear(self, state_dict: dict) -> None:
        """Strictly load an lpips ``alex.pth`` (``lin<l>.model.1.weight``)."""
        want = {f"lin{i}.model.1.weight" for i in range(5)}
        if set(state_dict) != want:
            raise ValueError(f"expected LPIPS linear weights {sorted(want)}, got "
                             f"{sorted(state_dict)}")
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(state_dict[f"lin{i}.model.1.weight"])

    @classmethod
    def pretrained(cls, path=None, *, linear_path=None, download: bool = False) -> LPIPS:
        """Backbone (asset ``"alexnet_lpips"``) and linear weights (asset
        ``"lpips_alex_lin"``) through the resolver; AssetNotFoundError when missing."""
        p = _assets.resolve("alexnet_lpips", path=path, download=download)
        lin = _assets.resolve("lpips_alex_lin", path=linear_path, download=download)
        net = cls()
        net.load_backbone(torch.load(p, map_location="cpu", weights_only=True))
        net.load_linear(torch.load(lin, map_location="cpu", weights_only=True))
        return net.eval()

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> the 5 unit-normalised activations."""
        h = (2 * x - 1 - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _ALEX_TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _pair(x, y, "lpips")
        if x.shape[1] != 3 or min(x.shape[-2:]) < 32:
            raise ValueError(f"lpips: needs (B, 3, H>=32, W>=32), got {tuple(x.shape)}")
        total = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lins, self.layers(x), self.layers(y)):
            total = total + lin((a - b) ** 2).mean((1, 2, 3))
        return total
