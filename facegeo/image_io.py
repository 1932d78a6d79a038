"""Image loading and conversion helpers.

facegeo images are float tensors in [0, 1], RGB, channels first: (3, H, W) for one image,
(B, 3, H, W) for a batch. Libraries such as dlib, OpenCV and PyAV use ``uint8`` arrays of
shape (H, W, 3); :func:`to_uint8_hwc` and :func:`from_uint8_hwc` convert between the two.

:func:`load_image` reads any format OpenCV reads (PNG, JPEG, TIFF, BMP, WebP...) and
normalizes the common variants:

* grayscale (H, W) -> replicated to three channels;
* RGBA / BGRA -> alpha composited over a white or black background (``background=``) or
  dropped (``background=None``);
* 16-bit (``uint16``) -> divided by 65535; 32-bit float images are clipped to [0, 1];
* EXIF orientation (a phone photo's ``Orientation`` tag, JPEG / PNG / WebP) is applied, so
  the image is oriented as a viewer shows it (TIFF: OpenCV's TIFF decoder already does);
* a missing, empty or corrupt file -> :class:`ImageReadError` (a ``ValueError``) naming
  the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "exif_orientation",
    "load_image",
    "save_image",
    "to_uint8_hwc",
    "from_uint8_hwc",
    "as_uint8_rgb",
]


#: file suffixes read as still images (by the apps, the pipeline and the datasets)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file is missing, empty, corrupt or in an unsupported layout."""


def _normalize_array(arr: np.ndarray, what: str, background: float | None) -> np.ndarray:
    """Decoded array (H, W) / (H, W, 1|2|3|4), colour in BGR(A) order -> float32 (H, W, 3) RGB."""
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    elif arr.dtype in (np.float32, np.float64):
        x = np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0)
    else:
        raise ImageReadError(f"{what}: unsupported pixel type {arr.dtype}")
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{what}: unsupported image shape {arr.shape}")
    c = x.shape[2]
    if c in (1, 2):  # gray (+ alpha)
        color, alpha = np.repeat(x[:, :, :1], 3, axis=2), x[:, :, 1:] if c == 2 else None
    else:  # BGR (+ alpha)
        color, alpha = x[:, :, 2::-1], x[:, :, 3:] if c == 4 else None
    if alpha is not None and background is not None:
        color = color * alpha + float(background) * (1.0 - alpha)
    return np.ascontiguousarray(color, dtype=np.float32)


def _tiff_orientation(t: bytes) -> int:
    """Orientation tag (0x0112) of IFD0 of a TIFF-structured EXIF block (1 when absent)."""
    if len(t) < 8 or t[:2] not in (b"II", b"MM"):
        return 1
    e = "little" if t[:2] == b"II" else "big"
    ifd = int.from_bytes(t[4:8], e)
    if ifd + 2 > len(t):
        return 1
    n = int.from_bytes(t[ifd:ifd + 2], e)
    for k in range(n):
        o = ifd + 2 + 12 * k
        if o + 12 > len(t):
            break
        if int.from_bytes(t[o:o + 2], e) == 0x0112:
            v = int.from_bytes(t[o + 8:o + 10], e)  # SHORT, left-justified in the value field
            return v if 1 <= v <= 8 else 1
    return 1


def _strip_exif_header(b: bytes) -> bytes:
    return b[6:] if b[:6] == b"Exif\x00\x00" else b


def exif_orientation(data: bytes) -> int:
    """EXIF ``Orientation`` (1-8; 1 = as stored, also when absent or unreadable) of an
    encoded JPEG, PNG (``eXIf`` chunk) or WebP (``EXIF`` chunk) file's bytes."""
    data = bytes(data)
    try:
        if data[:2] == b"\xff\xd8":  # JPEG: segments up to the start of scan
            i = 2
            while i + 4 <= len(data) and data[i] == 0xFF:
                marker = data[i + 1]
                if marker in (0xD9, 0xDA):
                    break
                if marker == 0x01 or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                size = int.from_bytes(data[i + 2:i + 4], "big")
                seg = data[i + 4:i + 2 + size]
                if marker == 0xE1 and seg[:6] == b"Exif\x00\x00":
                    return _tiff_orientation(seg[6:])
                i += 2 + size
            return 1
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            i = 8
            while i + 8 <= len(data):
                size = int.from_bytes(data[i:i + 4], "big")
                kind = data[i + 4:i + 8]
                if kind == b"eXIf":
                    return _tiff_orientation(_strip_exif_header(data[i + 8:i + 8 + size]))
                if kind == b"IEND":
                    break
                i += 12 + size
            return 1
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            i = 12
            while i + 8 <= len(data):
                kind, size = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
                if kind == b"EXIF":
                    return _tiff_orientation(_strip_exif_header(data[i + 8:i + 8 + size]))
                i += 8 + size + (size & 1)
            return 1
    except (IndexError, ValueError):
        return 1
    return 1


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded (H, W[, C]) array as stored into the array a viewer shows."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, -1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


def _decode_file(p: Path) -> np.ndarray:
    """Decode an image file with OpenCV (``IMREAD_UNCHANGED``: depth and alpha kept) and
    apply its EXIF orientation. BGR(A) channel order."""
    import cv2

    if not p.is_file():
        raise ImageReadError(f"image file does not exist: {p}")
    data = np.fromfile(p, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"image file is empty: {p}")
    # IMREAD_UNCHANGED never applies EXIF orientation (other flags do, but drop alpha), so
    # it is applied here, the same way for every format and OpenCV version
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise ImageReadError(f"cannot decode image (corrupt or unsupported format): {p}")
    return _apply_orientation(arr, exif_orientation(data.tobytes()))


def load_image(
    path: str | os.PathLike,
    *,
    background: float | None = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Read an image file as a float RGB tensor.

    Args:
        path: image file.
        background: gray level in [0, 1] used to composite transparent pixels (RGBA);
            ``None`` drops the alpha channel.
        device: torch device of the result.

    Returns:
        (3, H, W) float32 tensor, RGB, values in [0, 1].

    Raises:
        ImageReadError: missing, empty or corrupt file, or an unsupported layout.

    The file's EXIF orientation is applied (the result is what an image viewer shows).
    """
    p = Path(path)
    arr = _decode_file(p)
    x = _normalize_array(arr, str(p), background)
    return torch.from_numpy(x).permute(2, 0, 1).contiguous().to(device)


def save_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> Path:
    """Write an image atomically (format from the suffix: .png, .jpg, ...).

    Args:
        path: destination; its folder must exist.
        image: (3, H, W) float in [0, 1] RGB tensor, or (H, W, 3) uint8 RGB array.

    Returns:
        The written path.
    """
    import cv2

    from facegeo.assets import atomic_write

    arr = to_uint8_hwc(image) if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"save_image expects (3,H,W) float or (H,W,3) uint8, got {arr.shape}")
    suffix = Path(path).suffix or ".png"

    def write(tmp: Path) -> None:
        ok, buf = cv2.imencode(suffix, np.ascontiguousarray(arr[:, :, ::-1]))
        if not ok:
            raise ValueError(f"cannot encode image as {suffix}")
        tmp.write_bytes(buf.tobytes())

    return atomic_write(path, write)


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (B, 3, H, W) float [0, 1] tensor -> (H, W, 3) / (B, H, W, 3) uint8 array."""
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected (3,H,W) or (B,3,H,W), got {tuple(image.shape)}")
    x = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(x.movedim(-3, -1).cpu().numpy())


def from_uint8_hwc(array: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W, 3) / (T, H, W, 3) uint8 array -> (3, H, W) / (T, 3, H, W) float [0, 1] tensor."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"expected uint8 (H,W,3) or (T,H,W,3), got {a.dtype} {a.shape}")
    return torch.from_numpy(a).to(device).movedim(-1, -3).float() / 255.0


def as_uint8_rgb(image: torch.Tensor | np.ndarray | str | os.PathLike) -> np.ndarray:
    """Convert any supported image input to a contiguous (H, W, 3) uint8 RGB array.

    Accepts a path; a torch tensor (3, H, W), (1, 3, H, W) or (H, W) float in [0, 1]
    (or uint8); a numpy array (H, W), (H, W, 3) or (H, W, 4) in uint8 / uint16 / float
    [0, 1] (RGB order, alpha dropped).
    """
    if isinstance(image, (str, os.PathLike)):
        return to_uint8_hwc(load_image(image))
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"expected a single image, got a batch of {t.shape[0]}")
            t = t[0]
        if t.ndim == 2:
            t = t[None].expand(3, -1, -1)
        if t.ndim != 3:
            raise ValueError(f"expected an image tensor (3,H,W), got {tuple(image.shape)}")
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        elif t.shape[0] == 4:
            t = t[:3]
        if t.shape[0] != 3:
            raise ValueError(f"expected (3,H,W) channels first, got {tuple(image.shape)}")
        if t.dtype == torch.uint8:
            return np.ascontiguousarray(t.permute(1, 2, 0).cpu().numpy())
        return to_uint8_hwc(t)
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H,W,3) image array, got shape {a.shape}")
    a = a[:, :, :3] if a.shape[2] == 4 else np.repeat(a, 3, 2) if a.shape[2] == 1 else a
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return np.ascontiguousarray((a.astype(np.float32) / 257.0).round().astype(np.uint8))
    if np.issubdtype(a.dtype, np.floating):
        return np.ascontiguousarray((np.clip(a, 0, 1) * 255.0).round().astype(np.uint8))
    raise ValueError(f"unsupported image dtype {a.dtype}")
