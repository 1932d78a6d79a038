"""An independent head-pose estimator: the 3DDFA_V2 MobileNet regressor (Guo et al. 2020).

Used to check that an image *shows* a given head pose without going through facegeo's own
3DMM fit (:mod:`facegeo.fitting`), e.g. the pose fidelity of the geometric reenactment
(``benchmarks/bench_pose_fidelity.py``). Our definition of 3DDFA_V2's MobileNet-V1
(width 0.5, 62 outputs) with that repository's parameter names, so its checkpoint (asset
``"3ddfa_v2_mb05"``) loads strictly. Only the 12 pose parameters are used: they form a
3 x 4 affine camera ``P = [s R | t]`` (row-major) after de-normalisation with the
parameter mean / std (``param_mean_std_62d_120x120.pkl`` next to the checkpoint); the
40 shape and 10 expression coefficients need the BFM basis, which is not shipped.

Input preparation as in 3DDFA_V2 (``parse_roi_box_from_landmark``): the square whose side
is the diagonal of the landmarks' bounding square, centred on it, zero-padded where it
leaves the image, resized to 120 x 120, BGR, ``(x - 127.5) / 128``.

The rotation is returned in facegeo's model frame convention (x to the subject's left,
y up, z toward the viewer, as :func:`facegeo.transforms.euler_to_matrix`); the BFM frame of
3DDFA_V2 uses the same axes, which tests/facegeo/test_headpose.py checks against facegeo's fit on
a turning head.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facegeo import transforms as T

__all__ = ["TDDFAMobileNet", "HeadPoseEstimator", "roi_from_landmarks"]

# (output channels / 0.5-width base, stride) of the 13 depthwise-separable blocks
_BLOCKS = (("dw2_1", 64, 1), ("dw2_2", 128, 2), ("dw3_1", 128, 1), ("dw3_2", 256, 2),
           ("dw4_1", 256, 1), ("dw4_2", 512, 2), ("dw5_1", 512, 1), ("dw5_2", 512, 1),
           ("dw5_3", 512, 1), ("dw5_4", 512, 1), ("dw5_5", 512, 1), ("dw5_6", 1024, 2),
           ("dw6", 1024, 1))


class _DepthwiseBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_dw(self.conv_dw(x)))
        return F.relu(self.bn_sep(self.conv_sep(x)))


class TDDFAMobileNet(nn.Module):
    """MobileNet-V1 regressor: (B, 3, 120, 120) -> (B, 62) normalised 3DMM parameters
    (plus a 136-d landmark head ``fc_lm`` present in the checkpoint, unused)."""

    def __init__(self, width: float = 0.5, n_params: int = 62):
        super().__init__()
        c = int(32 * width)
        self.conv1 = nn.Conv2d(3, c, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        for name, cout, stride in _BLOCKS:
            setattr(self, name, _DepthwiseBlock(c, int(cout * width), stride))
            c = int(cout * width)
        self.fc_param = nn.Linear(c, n_params)
        self.fc_lm = nn.Linear(c, 136)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for name, _, _ in _BLOCKS:
            x = getattr(self, name)(x)
        return self.fc_param(x.mean((2, 3)))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain numpy arrays / dicts (the parameter statistics file)."""

    _OK = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self._OK:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def roi_from_landmarks(landmarks: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) pixel landmarks -> (B, 4) square boxes ``(x0, y0, x1, y1)`` (3DDFA_V2's
    landmark ROI: side = the diagonal of the landmarks' bounding square)."""
    lo, hi = landmarks.amin(1), landmarks.amax(1)
    c = (lo + hi) / 2
    side = (hi - lo).amax(-1) * 2 ** 0.5
    return torch.cat([c - side[:, None] / 2, c + side[:, None] / 2], -1)


class HeadPoseEstimator:
    """3DDFA_V2 head pose of faces given their 68 landmarks (for the crop only).

    Args:
        weights: checkpoint path (default: the ``"3ddfa_v2_mb05"`` asset); the parameter
            statistics ``param_mean_std_62d_120x120.pkl`` are read from its folder.
        device: torch device.
    """

    size = 120

    def __init__(self, weights: str | Path | None = None, device=None):
        from facegeo import assets

        p = assets.resolve("3ddfa_v2_mb05", path=weights)
        sd = torch.load(p, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd)
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        self.net = TDDFAMobileNet()
        self.net.load_state_dict(sd, strict=True)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.net.eval().to(self.device)
        stats = Path(p).parent / "param_mean_std_62d_120x120.pkl"
        if not stats.is_file():
            raise FileNotFoundError(f"3DDFA_V2 parameter statistics {stats} not found next to "
                                    "the checkpoint (configs/param_mean_std_62d_120x120.pkl "
                                    "of cleardusk/3DDFA_V2)")
        with open(stats, "rb") as fh:
            d = _ArrayUnpickler(fh).load()
        self.mean = torch.as_tensor(d["mean"], dtype=torch.float32)[:12]
        self.std = torch.as_tensor(d["std"], dtype=torch.float32)[:12]

    def crops(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] + (B, 68, 2) -> (B, 3, 120, 120) network input."""
        from facegeo.coords import pixel_grid, pixel_to_normalized

        B, _, H, W = images.shape
        box = roi_from_landmarks(landmarks.float())
        n = self.size
        g = pixel_grid(n, n, dtype=torch.float32)  # (n, n, 2) pixel centres
        side = (box[:, 2:] - box[:, :2])
        xy = box[:, None, None, :2] + (g[None] + 0.5) / n * side[:, None, None] - 0.5
        grid = pixel_to_normalized(xy, (H, W))
        x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        x = x.flip(1) * 255.0  # BGR, 0-255
        return (x - 127.5) / 128.0

    @torch.no_grad()
    def rotation(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1], (B, 68, 2) landmarks -> (B, 3, 3) head rotations."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if landmarks.shape != (images.shape[0], 68, 2):
            raise ValueError(f"landmarks must be ({images.shape[0]}, 68, 2), got "
                             f"{tuple(landmarks.shape)}")
        out = self.net(self.crops(images, landmarks).to(self.device)).cpu()
        P = (out[:, :12] * self.std + self.mean).view(-1, 3, 4)
        r1 = F.normalize(P[:, 0, :3], dim=-1)
        r2 = F.normalize(P[:, 1, :3], dim=-1)
        R = torch.stack([r1, r2, torch.linalg.cross(r1, r2)], 1)
        return T.orthonormalize(R)

    def angles(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 3) (yaw, pitch, roll) degrees in :func:`facegeo.transforms.matrix_to_euler`'s
        convention."""
        return T.matrix_to_euler(self.rotation(images, landmarks))
