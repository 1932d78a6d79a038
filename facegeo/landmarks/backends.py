"""Face detection + 68-point landmark backends behind one interface.

Every backend is a :class:`LandmarkDetector` whose ``detect(image)`` returns a list of
:class:`Face` (box, 68 iBUG landmarks, score), largest face first. Backends, by name:

========== ================================================================================
``dlib``       dlib HOG detector (CNN mmod fallback when HOG finds nothing) + the 68-point
               shape predictor of ``face_recognition_models``. Offline, CPU, the default.
``dlib_hog``   HOG detector only (fastest; frontal and moderate yaw).
``dlib_cnn``   CNN mmod detector only (handles larger yaw; ~1 s per 512^2 image on CPU).
``fan``        2D-FAN-4 landmarks (face-alignment's TorchScript weights, asset ``fan_2d``)
               in boxes from the dlib detector. Needs the weights file.
``mediapipe``  MediaPipe FaceMesh (optional extra ``mediapipe``), 478 points mapped to 68
               with :data:`~facegeo.landmarks.conventions.MEDIAPIPE_TO_68`.
========== ================================================================================

The functions that detect take the backend as ``detector=`` (a name above, ``"auto"``/None
or a :class:`LandmarkDetector`), the keyword used across facegeo (``backend=`` is the
deprecated spelling, and names the compute backend of the raster and MLS functions).
:func:`available_backends` lists the names that work here; :func:`backend_status` says why
the others do not.

``get_detector()`` / ``get_detector("auto")`` returns the best available backend in the
order ``fan`` > ``dlib`` (``mediapipe`` is never picked automatically: its 68-point jaw is
an approximation). A backend that cannot run raises :class:`BackendUnavailableError`
naming what to install or download.

Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates; landmarks are (68, 2) pixel (x, y)
with pixel centres at integers. Images may be (3, H, W) float tensors in [0, 1], (H, W, 3)
uint8/uint16/float arrays, grayscale (H, W), RGBA, or a file path.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facegeo._deprecation import warn_deprecated
from facegeo._optional import MissingExtraError, require
from facegeo.image_io import as_uint8_rgb

__all__ = [
    "Face",
    "NoFaceError",
    "BackendUnavailableError",
    "LandmarkDetector",
    "DlibDetector",
    "FANDetector",
    "MediaPipeDetector",
    "BACKENDS",
    "AUTO_ORDER",
    "available_backends",
    "backend_status",
    "get_detector",
    "detect",
    "detect_face",
    "detect_landmarks",
    "detect_batch",
    "box_from_landmarks",
    "MIN_IMAGE_SIZE",
]

#: images whose smaller side is below this many pixels are rejected (ValueError)
MIN_IMAGE_SIZE = 16

# dlib's HOG box relative to the bounding box of its own 68 landmarks (median over 128
# detections on the ../shared/media driving videos lp_d*.mp4, every 15th frame; reproduce
# with `python benchmarks/bench_landmarks.py --calibrate`):
# box centre = landmark-box centre + (DX * w, DY * h), side = S * (w + h) / 2.
HOG_BOX_DX, HOG_BOX_DY, HOG_BOX_S = -0.007, -0.070, 1.058

# dlib's rgb -> gray conversion, (r + g + b) // 3, as a cv2.transform matrix
_DLIB_GRAY = np.array([[1 / 3, 1 / 3, 1 / 3, -1 / 3]])


class NoFaceError(ValueError):
    """No face was found in an image (or the requested face index does not exist)."""


class BackendUnavailableError(RuntimeError):
    """A landmark backend cannot run here; the message says what to install or download."""


@dataclass
class Face:
    """One detected face.

    Attributes:
        box: (4,) float tensor ``(x0, y0, x1, y1)`` in pixels.
        landmarks: (68, 2) float tensor, iBUG order, pixel coordinates.
        score: detector confidence (backend specific scale; higher is better).
        backend: name of the backend that produced it.
    """

    box: torch.Tensor
    landmarks: torch.Tensor
    score: float
    backend: str
    extra: dict = field(default_factory=dict)

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        w, h = (self.box[2:] - self.box[:2]).tolist()
        return max(w, 0.0) * max(h, 0.0)


def box_from_landmarks(
    landmarks: torch.Tensor,
    dx: float = HOG_BOX_DX,
    dy: float = HOG_BOX_DY,
    s: float = HOG_BOX_S,
) -> torch.Tensor:
    """A square detector-style box from landmarks (the inverse of what the shape
    predictor expects; used to re-run it in a tracked box).

    Args:
        landmarks: (..., 68, 2).
        dx, dy, s: box centre offset (fractions of the landmark box width / height) and
            side (fraction of the mean landmark box side).

    Returns:
        (..., 4) boxes ``(x0, y0, x1, y1)``.
    """
    lo, hi = landmarks.amin(-2), landmarks.amax(-2)
    wh = hi - lo
    c = (lo + hi) / 2 + wh * torch.tensor([dx, dy], dtype=wh.dtype, device=wh.device)
    half = (s * wh.mean(-1, keepdim=True)) / 2
    return torch.cat([c - half, c + half], dim=-1)


def _check_image(img: np.ndarray) -> None:
    h, w = img.shape[:2]
    if min(h, w) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image is too small for face detection: {w}x{h} (need at least "
            f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels)"
        )


class LandmarkDetector:
    """Interface of a face + 68-landmark backend.

    Subclasses implement :meth:`_detect` on a (H, W, 3) uint8 RGB array; backends that can
    place landmarks in a given box (used by the tracker) implement :meth:`landmarks_in_box`.
    """

    name = "base"
    can_refine = False

    def detect(self, image) -> list[Face]:
        """Detect faces.

        Args:
            image: (3, H, W) float tensor in [0, 1], (H, W, 3) / (H, W) array, or a path.

        Returns:
            list of :class:`Face`, sorted by box area, largest first (empty if none).

        Raises:
            ValueError: image smaller than :data:`MIN_IMAGE_SIZE`, or malformed.
        """
        img = as_uint8_rgb(image)
        _check_image(img)
        faces = self._detect(img)
        return sorted(faces, key=lambda f: -f.area)

    def _detect(self, img: np.ndarray) -> list[Face]:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect_near(self, img: np.ndarray, box: torch.Tensor) -> list[Face]:
        """Faces near ``box`` (used by the tracker to re-detect); by default all faces."""
        return self.detect(img)

    def landmarks_in_box(self, img: np.ndarray, box: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 RGB image and a (4,) box -> (68, 2) landmarks in that box."""
        raise NotImplementedError(f"backend {self.name!r} cannot place landmarks in a box")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# ----------------------------------------------------------------------------- dlib
def _frm_path(fn: str) -> str:
    try:
        frm = require("face_recognition_models", "the dlib backends' model files")
    except MissingExtraError as e:
        raise BackendUnavailableError(str(e)) from e
    return getattr(frm, fn)()


@functools.cache
def _dlib_model(kind: str):
    try:
        dlib = require("dlib", "the dlib backends")
    except MissingExtraError as e:
        raise BackendUnavailableError(str(e)) from e
    if kind == "hog":
        return dlib.get_frontal_face_detector()
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(_frm_path("cnn_face_detector_model_location"))
    if kind == "sp68":
        return dlib.shape_predictor(_frm_path("pose_predictor_model_location"))
    if kind == "sp5":
        return dlib.shape_predictor(_frm_path("pose_predictor_five_point_model_location"))
    if kind == "rec":
        return dlib.face_recognition_model_v1(_frm_path("face_recognition_model_location"))
    raise ValueError(kind)


class DlibDetector(LandmarkDetector):
    """dlib detectors + 68-point shape predictor (Kazemi & Sullivan 2014 regression trees).

    Args:
        detector: ``"hog"``, ``"cnn"`` or ``"hog+cnn"`` (HOG, then CNN when HOG finds
            no face).
        upsample: number of 2x pyramid upsamplings for the detector; ``None`` chooses
            0 / 1 / 2 when the image's smaller side is >= 300 / >= 150 / below 150 px
            (dlib's HOG finds faces of >= 80 px at upsample 0).
        max_side: detection runs on a copy downscaled so its longer side is at most this
            (landmarks are always predicted at full resolution); CNN uses ``cnn_max_side``.
        min_score: HOG detections with a score below this are dropped (CNN: confidence).
    """

    can_refine = True

    def __init__(
        self,
        detector: str = "hog+cnn",
        *,
        upsample: int | None = None,
        max_side: int = 1280,
        cnn_max_side: int = 640,
        min_score: float = 0.0,
    ) -> None:
        if detector not in ("hog", "cnn", "hog+cnn"):
            raise ValueError(f"detector must be 'hog', 'cnn' or 'hog+cnn', got {detector!r}")
        self.detector = detector
        self.name = {"hog": "dlib_hog", "cnn": "dlib_cnn", "hog+cnn": "dlib"}[detector]
        self.upsample = upsample
        self.max_side = max_side
        self.cnn_max_side = cnn_max_side
        self.min_score = min_score
        self._sp = _dlib_model("sp68")
        self._hog = _dlib_model("hog") if "hog" in detector else None
        self._cnn = None  # loaded on first use (50 MB of weights)

    def _prepare(self, img: np.ndarray, max_side: int) -> tuple[np.ndarray, float, int]:
        import cv2

        h, w = img.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        small = img if scale == 1.0 else cv2.resize(
            img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        up = self.upsample
        if up is None:
            m = min(small.shape[:2])
            up = 0 if m >= 300 else 1 if m >= 150 else 2
        return small, scale, up

    def detect_boxes(self, img: np.ndarray) -> list[tuple[torch.Tensor, float, str]]:
        """Run only the detector: list of ((4,) box in full-image pixels, score, kind)."""
        out: list[tuple[torch.Tensor, float, str]] = []
        if self._hog is not None:
            small, scale, up = self._prepare(img, self.max_side)
            rects, scores, _ = self._hog.run(small, up, self.min_score)
            for r, sc in zip(rects, scores):
                b = torch.tensor([r.left(), r.top(), r.right(), r.bottom()], dtype=torch.float32)
                out.append(((b + 0.5) / scale - 0.5, float(sc), "hog"))
        if not out and "cnn" in self.detector:
            if self._cnn is None:
                self._cnn = _dlib_model("cnn")
            small, scale, up = self._prepare(img, self.cnn_max_side)
            for d in self._cnn(small, up):
                if d.confidence < self.min_score:
                    continue
                r = d.rect
                b = torch.tensor([r.left(), r.top(), r.right(), r.bottom()], dtype=torch.float32)
                out.append(((b + 0.5) / scale - 0.5, float(d.confidence), "cnn"))
        return out

    def detect_near(self, img: np.ndarray, box: torch.Tensor, face_px: float = 320.0,
                    ) -> list[Face]:
        """HOG detection restricted to a region around ``box`` (twice its size; the origin is
        aligned to dlib's 8-pixel HOG cells so the result matches a full-frame pass),
        downscaled only when the face is wider than ``face_px``. Much cheaper than a
        full-frame pass on large frames. Returns faces in full-image coordinates."""
        import cv2

        if self._hog is None:
            return self.detect(img)
        h, w = img.shape[:2]
        side = float((box[2:] - box[:2]).mean())
        cx, cy = ((box[:2] + box[2:]) / 2).tolist()
        x0, y0 = max(int(cx - side) // 8 * 8, 0), max(int(cy - side) // 8 * 8, 0)
        x1, y1 = min(int(cx + side) + 1, w), min(int(cy + side) + 1, h)
        if min(x1 - x0, y1 - y0) < MIN_IMAGE_SIZE:
            return []
        roi = np.ascontiguousarray(img[y0:y1, x0:x1])  # dlib ignores numpy strides
        s = min(1.0, face_px / max(side, 1.0))
        if s < 1.0:
            roi = cv2.resize(roi, (max(round((x1 - x0) * s), 1), max(round((y1 - y0) * s), 1)),
                             interpolation=cv2.INTER_AREA)
        up = 0 if side * s >= 90 else 1 if side * s >= 45 else 2
        rects, scores, _ = self._hog.run(roi, up, self.min_score)
        faces = []
        off = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        for r, sc in zip(rects, scores):
            bb = torch.tensor([r.left(), r.top(), r.right(), r.bottom()], dtype=torch.float32)
            bb = (bb + 0.5) / s - 0.5 + off
            faces.append(Face(box=bb, landmarks=self.landmarks_in_box(img, bb), score=float(sc),
                              backend=self.name, extra={"detector": "hog"}))
        return sorted(faces, key=lambda f: -f.area)

    def landmarks_in_box(self, img: np.ndarray, box: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 RGB (or (H, W) gray) + (4,) HOG-style box -> (68, 2) landmarks."""
        return torch.from_numpy(self.landmarks_in_box_np(img, box.detach().cpu().numpy()))

    def landmarks_in_box_np(self, img: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Same as :meth:`landmarks_in_box` with numpy in and out ((4,) -> (68, 2) float32).

        The predictor reads pixel intensities only; for an RGB image dlib converts each
        sampled pixel to ``(r + g + b) // 3``. Converting a region around the box (the box
        plus 50 % of its side on each side) once with exactly that formula and running on
        the gray region gives identical landmarks (tested) and is ~15 % faster.
        """
        import cv2
        import dlib

        x0, y0, x1, y1 = (round(float(v)) for v in box)
        if img.ndim == 3:
            h, w = img.shape[:2]
            m = max(x1 - x0, y1 - y0) // 2 + 8
            rx0, ry0 = max(min(x0, x1) - m, 0), max(min(y0, y1) - m, 0)
            rx1, ry1 = min(max(x0, x1) + m + 1, w), min(max(y0, y1) + m + 1, h)
            if rx1 - rx0 >= 2 and ry1 - ry0 >= 2:
                # round(s / 3 - 1 / 3) == s // 3 for integer s (fractions are 0, 1/3, 2/3)
                gray = cv2.transform(img[ry0:ry1, rx0:rx1], _DLIB_GRAY)
                shape = self._sp(np.ascontiguousarray(gray),
                                 dlib.rectangle(x0 - rx0, y0 - ry0, x1 - rx0, y1 - ry0))
                pts = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
                return pts + np.array([rx0, ry0], np.float32)
        shape = self._sp(np.ascontiguousarray(img), dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def _detect(self, img: np.ndarray) -> list[Face]:
        faces = []
        for box, score, kind in self.detect_boxes(img):
            lm = self.landmarks_in_box(img, box)
            if kind == "cnn":
                # the predictor was trained on HOG boxes: re-run it in the HOG-style box of
                # its first estimate (the mmod box is tighter and lower).
                lm = self.landmarks_in_box(img, box_from_landmarks(lm))
            faces.append(Face(box=box, landmarks=lm, score=score, backend=self.name,
                              extra={"detector": kind}))
        return faces


# ----------------------------------------------------------------------------- FAN
def fan_heatmaps_to_points(heatmaps: torch.Tensor) -> torch.Tensor:
    """Decode FAN heat-maps: arg-max with the quarter-pixel shift towards the larger
    neighbour (Bulat & Tzimiropoulos 2017).

    Args:
        heatmaps: (B, N, h, w).

    Returns:
        (B, N, 2) positions (x, y) in heat-map pixel coordinates (pixel centres at integers).
    """
    b, n, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, n, -1)
    idx = flat.argmax(-1)
    x = (idx % w).long()
    y = (idx // w).long()
    hm = heatmaps.reshape(b * n, h, w)
    xf, yf = x.reshape(-1), y.reshape(-1)
    ar = torch.arange(b * n, device=heatmaps.device)
    xr, xl = (xf + 1).clamp(max=w - 1), (xf - 1).clamp(min=0)
    yd, yu = (yf + 1).clamp(max=h - 1), (yf - 1).clamp(min=0)
    dx = torch.sign(hm[ar, yf, xr] - hm[ar, yf, xl]) * 0.25
    dy = torch.sign(hm[ar, yd, xf] - hm[ar, yu, xf]) * 0.25
    pts = torch.stack([xf.float() + dx, yf.float() + dy], -1)
    return pts.reshape(b, n, 2)


def fan_crop_params(box: torch.Tensor) -> tuple[torch.Tensor, float]:
    """FAN's crop for a detector box: centre shifted up by 12 % of the height and a side
    of ``200 * (w + h) / 195`` pixels. Returns ((2,) centre, side)."""
    x0, y0, x1, y1 = box.tolist()
    c = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2 - 0.12 * (y1 - y0)])
    return c, 200.0 * ((x1 - x0) + (y1 - y0)) / 195.0


class FANDetector(LandmarkDetector):
    """2D-FAN-4 landmarks (TorchScript weights of face-alignment, asset ``fan_2d``) placed
    in dlib detector boxes. The weights are resolved with ``facegeo.assets.resolve("fan_2d")``
    (explicit ``weights=`` path first).

    Args:
        weights: path of ``2DFAN4-*.zip``; ``None`` resolves the ``fan_2d`` asset.
        device: torch device for the network.
        download: allow the asset resolver to download the weights.
    """

    name = "fan"
    can_refine = True

    def __init__(self, weights: str | os.PathLike | None = None, *,
                 device: str | torch.device = "cpu", download: bool = False) -> None:
        from facegeo.assets import AssetNotFoundError, resolve

        try:
            path = resolve("fan_2d", path=weights, download=download)
        except AssetNotFoundError as e:
            raise BackendUnavailableError(
                "the 'fan' landmark backend needs the face-alignment 2D-FAN-4 weights "
                "(asset 'fan_2d', 2DFAN4-cd938726ad.zip from "
                "https://www.adrianbulat.com/downloads/python-fan/). Details:\n" + str(e)
            ) from e
        try:
            self.net = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            raise BackendUnavailableError(f"cannot load FAN weights {path}: {e}") from e
        self.device = torch.device(device)
        self._boxes = DlibDetector("hog+cnn")

    @torch.no_grad()
    def landmarks_in_box(self, img: np.ndarray, box: torch.Tensor) -> torch.Tensor:
        from facegeo.landmarks.crops import crop_images, points_from_crop

        c, side = fan_crop_params(box)
        t = torch.from_numpy(img).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        boxes = torch.tensor([[c[0], c[1], side]], device=self.device)
        crop = crop_images(t, boxes, size=256)
        hm = self.net(crop)
        if isinstance(hm, (list, tuple)):
            hm = hm[-1]
        pts = fan_heatmaps_to_points(hm.float())              # (1, 68, 2) heat-map pixels
        res = hm.shape[-1]
        pts_crop = (pts + 0.5) * (256 / res) - 0.5            # -> 256x256 crop pixels
        xy = points_from_crop(pts_crop, boxes, 256)[0]
        return xy.cpu()

    def _detect(self, img: np.ndarray) -> list[Face]:
        return [Face(box=b, landmarks=self.landmarks_in_box(img, b), score=s, backend=self.name,
                     extra={"detector": k}) for b, s, k in self._boxes.detect_boxes(img)]


# ----------------------------------------------------------------------------- mediapipe
class MediaPipeDetector(LandmarkDetector):
    """MediaPipe FaceMesh (legacy ``mediapipe.solutions.face_mesh`` API, refined irises),
    478 points mapped to 68. ``Face.extra["mesh"]`` keeps the full (478, 3) mesh (x, y in
    pixels, z in MediaPipe's relative units). FaceMesh gives no per-face confidence, so
    ``score`` is 1.0.

    Args:
        max_faces: maximum number of faces to return.
        min_confidence: detection confidence threshold passed to FaceMesh.
    """

    name = "mediapipe"

    def __init__(self, max_faces: int = 5, min_confidence: float = 0.5) -> None:
        try:
            import mediapipe as mp
            face_mesh = mp.solutions.face_mesh
        except (ImportError, AttributeError) as e:
            raise BackendUnavailableError(
                "the 'mediapipe' landmark backend needs the optional extra: "
                "pip install 'facegeo[mediapipe]' (mediapipe>=0.10 with the "
                f"mediapipe.solutions.face_mesh API) ({e})"
            ) from e
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                        refine_landmarks=True,
                                        min_detection_confidence=min_confidence)

    def _detect(self, img: np.ndarray) -> list[Face]:
        from facegeo.landmarks.conventions import mediapipe_to_68

        h, w = img.shape[:2]
        res = self._mesh.process(img)
        faces = []
        for fl in res.multi_face_landmarks or []:
            # MediaPipe normalises by the image size with 0 / 1 at the outer pixel edges.
            mesh = torch.tensor([[p.x * w - 0.5, p.y * h - 0.5, p.z * w] for p in fl.landmark])
            lm = mediapipe_to_68(mesh)[:, :2].contiguous()
            box = torch.cat([mesh[:, :2].amin(0), mesh[:, :2].amax(0)])
            faces.append(Face(box=box, landmarks=lm, score=1.0, backend=self.name,
                              extra={"mesh": mesh}))
        return faces


# ----------------------------------------------------------------------------- registry
BACKENDS = {
    "dlib": lambda **kw: DlibDetector("hog+cnn", **kw),
    "dlib_hog": lambda **kw: DlibDetector("hog", **kw),
    "dlib_cnn": lambda **kw: DlibDetector("cnn", **kw),
    "fan": lambda **kw: FANDetector(**kw),
    "mediapipe": lambda **kw: MediaPipeDetector(**kw),
}
AUTO_ORDER = ("fan", "dlib")


def backend_status() -> dict[str, str | None]:
    """Try every backend: ``{name: None if it works, else the reason it does not}``."""
    out: dict[str, str | None] = {}
    for name in BACKENDS:
        try:
            get_detector(name)
            out[name] = None
        except BackendUnavailableError as e:
            out[name] = str(e).splitlines()[0]
    return out


class _BackendNames(list):
    """The list :func:`available_backends` returns. Until 0.3 it also answers the old
    ``{name: reason}`` dict look-ups (``[name]``, ``.items()``, ``.get()``...) with a
    deprecation warning, from :func:`backend_status`."""

    def __init__(self, status: dict[str, str | None]):
        super().__init__(n for n, why in status.items() if why is None)
        self._status = status

    def _old(self, what: str) -> dict[str, str | None]:
        warn_deprecated(f"available_backends(){what} (the old dict return type)",
                        "backend_status() for {name: reason}; available_backends() is the "
                        "list of names that work", stacklevel=4)
        return self._status

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._old("[name]")[key]
        return super().__getitem__(key)

    def items(self):
        return self._old(".items()").items()

    def keys(self):
        return self._old(".keys()").keys()

    def values(self):
        return self._old(".values()").values()

    def get(self, key, default=None):
        return self._old(".get()").get(key, default)


def available_backends() -> list[str]:
    """Names of the landmark backends that work here, in :data:`BACKENDS` order, e.g.
    ``["dlib", "dlib_hog", "dlib_cnn", "fan"]``: the return type of every
    ``available_backends`` of facegeo (:func:`facegeo.raster.available_backends` too).
    :func:`backend_status` gives the reason for each one that does not work.

    (Before 0.2 this returned ``{name: None or reason}``; dict-style use still works with a
    deprecation warning until 0.3.)"""
    return _BackendNames(backend_status())


def _detector_kw(detector, backend, fn: str):
    if backend is not None:
        if detector is not None:
            raise TypeError(f"{fn}: pass the landmark backend once, as detector= "
                            "(backend= is its deprecated name)")
        warn_deprecated(f"{fn}(backend=)", f"{fn}(detector=)", stacklevel=4)
        return backend
    return detector


@functools.lru_cache(maxsize=16)
def _cached(name: str) -> LandmarkDetector:
    return BACKENDS[name]()


def get_detector(name: str | LandmarkDetector | None = None, **kwargs) -> LandmarkDetector:
    """A landmark backend by name (instances are cached when no options are given).

    Args:
        name: one of :data:`BACKENDS`, ``"auto"``/``None`` (best available, see
            :data:`AUTO_ORDER`), or a :class:`LandmarkDetector` (returned as is).
        **kwargs: options of the backend class (disables caching).

    Raises:
        ValueError: unknown name.
        BackendUnavailableError: the named backend cannot run here (message says why).
    """
    if isinstance(name, LandmarkDetector):
        return name
    if name is None or name == "auto":
        reasons = []
        for n in AUTO_ORDER:
            try:
                return get_detector(n, **kwargs)
            except BackendUnavailableError as e:
                reasons.append(f"{n}: {str(e).splitlines()[0]}")
        raise BackendUnavailableError("no landmark backend is available:\n" + "\n".join(reasons))
    if name not in BACKENDS:
        raise ValueError(f"unknown landmark backend {name!r}; choose from {sorted(BACKENDS)}")
    return BACKENDS[name](**kwargs) if kwargs else _cached(name)


def detect(image, detector: str | LandmarkDetector | None = None, *,
           backend: str | LandmarkDetector | None = None) -> list[Face]:
    """All faces in an image, largest first (see :meth:`LandmarkDetector.detect`).

    ``detector``: a backend name (:func:`available_backends`), ``"auto"``/None or a
    :class:`LandmarkDetector`; ``backend=`` is its deprecated name (removed in 0.3)."""
    detector = _detector_kw(detector, backend, "detect")
    return get_detector(detector).detect(image)


def detect_face(image, index: int = 0, detector: str | LandmarkDetector | None = None, *,
                backend: str | LandmarkDetector | None = None) -> Face:
    """One face: the ``index``-th largest (0 = largest). ``detector`` as in :func:`detect`.

    Raises:
        NoFaceError: no face found, or fewer than ``index + 1`` faces.
    """
    detector = _detector_kw(detector, backend, "detect_face")
    faces = detect(image, detector)
    what = f" in {image}" if isinstance(image, (str, Path)) else ""
    if not faces:
        raise NoFaceError(f"no face found{what}")
    if not -len(faces) <= index < len(faces):
        raise NoFaceError(f"face index {index} requested but only {len(faces)} face(s) "
                          f"found{what}")
    return faces[index]


def detect_landmarks(image, index: int = 0,
                     detector: str | LandmarkDetector | None = None, *,
                     backend: str | LandmarkDetector | None = None) -> torch.Tensor:
    """(68, 2) landmarks of the ``index``-th largest face (NoFaceError if absent);
    ``detector`` as in :func:`detect`."""
    detector = _detector_kw(detector, backend, "detect_landmarks")
    return detect_face(image, index, detector).landmarks


def detect_batch(images: torch.Tensor, index: int = 0,
                 detector: str | LandmarkDetector | None = None, *,
                 backend: str | LandmarkDetector | None = None) -> torch.Tensor:
    """Landmarks for a batch of images (one face each).

    Args:
        images: (B, 3, H, W) float in [0, 1].
        index: which face per image (0 = largest).
        detector: as in :func:`detect` (``backend=``: deprecated name).

    Returns:
        (B, 68, 2) on the device of ``images``.

    Raises:
        NoFaceError: naming the first batch element without a face.
    """
    detector = _detector_kw(detector, backend, "detect_batch")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    det = get_detector(detector)
    out = []
    for i, im in enumerate(images):
        try:
            out.append(detect_face(im, index, det).landmarks)
        except NoFaceError as e:
            raise NoFaceError(f"batch element {i}: {e}") from None
    return torch.stack(out).to(images.device, images.dtype)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    lo = torch.maximum(a[:2], b[:2])
    hi = torch.minimum(a[2:], b[2:])
    inter = (hi - lo).clamp(min=0).prod().item()
    area = lambda x: float((x[2:] - x[:2]).clamp(min=0).prod())  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0

