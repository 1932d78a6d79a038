"""Reading and writing videos (PyAV / FFmpeg).

* :func:`read_video` -> ``(frames, fps)`` with ``frames`` a uint8 array (T, H, W, 3) RGB, or
  an iterator of (H, W, 3) arrays with ``stream=True`` (constant memory for long clips).
* :func:`video_info` -> :class:`VideoInfo` (fps, frame count, size, audio presence).
* :func:`write_video` writes H.264 (yuv420p) MP4 atomically (temporary file + rename),
  optionally copying the audio track of another file (``audio_from=``), trimmed to the
  video's duration.
* :func:`frames_to_tensor` converts uint8 frames to the facegeo image convention
  (T, 3, H, W) float in [0, 1].

Unreadable files, files without a video stream and videos without decodable frames raise
:class:`VideoReadError` (a ``ValueError``) naming the file.

Damaged files: when decoding stops before the number of frames the container announces
(a truncated download: index intact, data cut) or FFmpeg reports a decoding error after
some frames, the frames read so far are kept and a :class:`VideoReadWarning` names the
file and both counts (``frames_read`` / ``frames_expected``); with ``strict=True``
(:func:`iter_video`, :func:`read_video`) it is a :class:`VideoReadError` instead. A file
whose container does not announce a frame count (e.g. some MKV) is only checked for
decoding errors.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from facegeo._optional import require

__all__ = [
    "VideoReadError",
    "VideoReadWarning",
    "VideoInfo",
    "video_info",
    "read_video",
    "iter_video",
    "write_video",
    "frames_to_tensor",
]

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: suffixes :func:`write_video` writes
WRITE_SUFFIXES = tuple(_FORMATS)
#: suffixes read as videos (by the apps, the evaluator and the training datasets; FFmpeg
#: reads more, these are the ones a folder listing picks up)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".gif")


class VideoReadError(ValueError):
    """A video file is missing, unreadable, has no video stream or no decodable frame (or,
    with ``strict=True``, is incomplete: see :class:`VideoReadWarning`)."""


class VideoReadWarning(UserWarning):
    """A video was read only in part: fewer frames decoded than the container announces,
    or a decoding error after some frames (truncated or corrupt file).

    Attributes:
        path: the file.
        frames_read: frames decoded from the file (from its start, before any selection).
        frames_expected: frames the container announces (0 when it does not say).
    """

    def __init__(self, message: str, *, path: str = "", frames_read: int = 0,
                 frames_expected: int = 0):
        super().__init__(message)
        self.path, self.frames_read, self.frames_expected = path, frames_read, frames_expected


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about a video file.

    Attributes:
        fps: average frame rate (frames per second).
        frames: number of frames reported by the container (0 when unknown).
        width, height: frame size in pixels.
        has_audio: whether the file has at least one audio stream.
        duration: duration in seconds (``frames / fps`` when the container does not say).
    """

    fps: float
    frames: int
    width: int
    height: int
    has_audio: bool
    duration: float


def _open(path: str | os.PathLike):
    av = require("av", "reading and writing video files")

    p = Path(path)
    if not p.is_file():
        raise VideoReadError(f"video file does not exist: {p}")
    if p.stat().st_size == 0:
        raise VideoReadError(f"video file is empty: {p}")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError) as e:  # type: ignore[attr-defined]
        raise VideoReadError(f"cannot open video {p}: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"file has no video stream: {p}")
    return container


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count, size and audio presence of a video file."""
    with _open(path) as c:
        v = c.streams.video[0]
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = float(rate) if rate else 0.0
        n = int(v.frames or 0)
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        elif c.duration is not None:
            duration = c.duration / 1e6
        else:
            duration = n / fps if fps else 0.0
        return VideoInfo(fps=fps, frames=n, width=v.codec_context.width,
                         height=v.codec_context.height, has_audio=bool(c.streams.audio),
                         duration=duration)


def iter_video(
    path: str | os.PathLike, *, start: int = 0, max_frames: int | None = None, step: int = 1,
    strict: bool = False,
) -> Iterator[np.ndarray]:
    """Yield decoded frames as (H, W, 3) uint8 RGB arrays.

    Args:
        path: video file.
        start: index of the first frame to yield.
        max_frames: stop after this many yielded frames (``None``: to the end).
        step: yield every ``step``-th frame.
        strict: an incomplete read (decoding ends before the frame count the container
            announces, or fails after some frames) raises :class:`VideoReadError` instead
            of issuing a :class:`VideoReadWarning` after the last frame. Either way the
            message names the file and gives frames read vs announced. A selection that
            is complete before the damage (``max_frames``) is not an incomplete read.

    Raises:
        VideoReadError: unreadable file, a decoding error before the first frame, or an
            incomplete read with ``strict=True``.
    """
    av = require("av", "reading and writing video files")

    if start < 0 or step < 1 or (max_frames is not None and max_frames < 0):
        raise ValueError(f"bad frame range start={start} step={step} max_frames={max_frames}")
    container = _open(path)
    decoded = 0  # frames decoded from the start of the file
    error: Exception | None = None
    try:
        count = 0
        stream = container.streams.video[0]
        expected = int(stream.frames or 0)
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                if max_frames is not None and count >= max_frames:
                    return
                decoded = i + 1
                if i < start or (i - start) % step:
                    continue
                yield frame.to_ndarray(format="rgb24")
                count += 1
        except av.error.FFmpegError as e:  # type: ignore[attr-defined]
            if decoded == 0:
                raise VideoReadError(f"error while decoding {path}: {e}") from e
            error = e
        if max_frames is not None and count >= max_frames:
            return  # everything asked for was read
        if error is None and (expected <= 0 or decoded >= expected):
            return
        how = f"decoding error after frame {decoded}: {error}" if error is not None else \
            "decoding ended early"
        announced = f"{expected}" if expected > 0 else "an unknown number of"
        msg = (f"incomplete video {path}: read {decoded} of {announced} frames ({how}); "
               "the file is truncated or corrupt")
        if strict:
            raise VideoReadError(msg) from error
        warnings.warn(VideoReadWarning(msg, path=str(path), frames_read=decoded,
                                       frames_expected=expected), stacklevel=2)
    finally:
        container.close()


def read_video(
    path: str | os.PathLike,
    *,
    start: int = 0,
    max_frames: int | None = None,
    step: int = 1,
    stream: bool = False,
    strict: bool = False,
) -> tuple[np.ndarray | Iterator[np.ndarray], float]:
    """Decode a video.

    Args:
        path: video file (anything FFmpeg reads).
        start, max_frames, step: frame selection (see :func:`iter_video`).
        stream: return an iterator of frames instead of one array.
        strict: raise :class:`VideoReadError` on an incomplete read (truncated or corrupt
            file: fewer frames decoded than the container announces, or a decoding error
            mid-stream) instead of warning (:class:`VideoReadWarning`, with the frames read
            and announced) and returning the frames read. With ``stream=True`` the
            warning / error comes when the iterator reaches the end of what was readable.

    Returns:
        ``(frames, fps)``: frames is (T, H, W, 3) uint8 RGB (or an iterator of (H, W, 3)
        arrays with ``stream=True``); fps is the frame rate of the file divided by ``step``.

    Raises:
        VideoReadError: missing/corrupt file, no video stream, no frame decoded, or an
            incomplete read with ``strict=True``.

    Warns:
        VideoReadWarning: an incomplete read (``strict=False``).
    """
    info = video_info(path)
    fps = info.fps / step
    it = iter_video(path, start=start, max_frames=max_frames, step=step, strict=strict)
    if stream:
        return it, fps
    frames = list(it)
    if not frames:
        raise VideoReadError(f"no frames decoded from {path} (start={start})")
    return np.stack(frames), fps


def frames_to_tensor(frames: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 3, H, W) float32 in [0, 1]."""
    from facegeo.image_io import from_uint8_hwc

    return from_uint8_hwc(frames, device)


def _frame_to_uint8(frame) -> np.ndarray:
    if isinstance(frame, torch.Tensor):
        from facegeo.image_io import to_uint8_hwc

        if frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"tensor frames must be (3, H, W), got {tuple(frame.shape)}")
        return to_uint8_hwc(frame) if frame.dtype != torch.uint8 else \
            np.ascontiguousarray(frame.permute(1, 2, 0).cpu().numpy())
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"array frames must be (H, W, 3), got {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"array frames must be uint8 or float in [0, 1], got {a.dtype}")
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def _iter_frames(frames) -> Iterator[np.ndarray]:
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frame tensor must be (T, 3, H, W), got {tuple(frames.shape)}")
        for f in frames:
            yield _frame_to_uint8(f)
    elif isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"frame array must be (T, H, W, 3), got {frames.shape}")
        for f in frames:
            yield _frame_to_uint8(f)
    else:
        for f in frames:
            yield _frame_to_uint8(f)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | torch.Tensor | Iterable,
    fps: float,
    *,
    audio_from: str | os.PathLike | None = None,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Encode frames as H.264 and write the file atomically.

    Args:
        path: output (.mp4, .mov, .mkv); its folder must exist.
        frames: (T, H, W, 3) uint8 (or float [0, 1]) array, (T, 3, H, W) float tensor in
            [0, 1], or an iterable of per-frame (H, W, 3) arrays / (3, H, W) tensors.
            Odd sizes are padded by one replicated row/column (yuv420p needs even sizes).
        fps: frame rate (> 0).
        audio_from: copy the first audio stream of this file (if it has one), cut at the
            video's duration.
        crf, preset: libx264 quality settings.

    Returns:
        The written path.

    Raises:
        ValueError: no frames, inconsistent frame sizes, bad fps or an unknown suffix.
    """
    av = require("av", "reading and writing video files")

    from facegeo.assets import atomic_write

    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unsupported video suffix {path.suffix!r}; use one of {list(_FORMATS)}")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)

    def write(tmp: Path) -> None:
        it = _iter_frames(frames)
        first = next(it, None)
        if first is None:
            raise ValueError("write_video: no frames given")
        h, w = first.shape[:2]
        with av.open(str(tmp), mode="w", format=fmt) as out:
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height = w + w % 2, h + h % 2
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset}
            src = _open(audio_from) if audio_from is not None else None
            try:
                ain = src.streams.audio[0] if src is not None and src.streams.audio else None
                aout = out.add_stream_from_template(ain) if ain is not None else None
                n = 0
                for a in _chain(first, it):
                    if a.shape[:2] != (h, w):
                        raise ValueError(f"frame {n} has size {a.shape[:2]}, expected {(h, w)}")
                    if h % 2 or w % 2:
                        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                    for packet in vs.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                        out.mux(packet)
                    n += 1
                for packet in vs.encode():
                    out.mux(packet)
                if ain is not None:
                    duration = n / float(rate)
                    for packet in src.demux(ain):
                        if packet.dts is None:
                            continue
                        if packet.pts is not None and float(packet.pts * ain.time_base) >= duration:
                            break
                        packet.stream = aout
                        out.mux(packet)
            finally:
                if src is not None:
                    src.close()

    return atomic_write(path, write)


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
