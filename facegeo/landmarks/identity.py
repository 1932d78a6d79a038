"""Identity embeddings: dlib's 128-d face descriptor (ResNet-29, King 2017, trained with a
metric loss; 99.38 % on LFW) for identity-preservation metrics.

The descriptor is computed on a 150x150 chip aligned from the 68 landmarks (dlib's
``get_face_chip_details``, padding 0.25). Descriptors have unit-ish length; dlib's own
rule is "same person" when the Euclidean distance is below 0.6. For metrics facegeo uses
the cosine similarity :func:`facegeo.metrics.cosine_similarity` (1 = same direction).
"""

from __future__ import annotations

import torch

from facegeo import metrics as _metrics
from facegeo._deprecation import warn_deprecated
from facegeo.image_io import as_uint8_rgb
from facegeo.landmarks.backends import Face, _dlib_model, detect_face

__all__ = ["FaceEmbedder", "face_descriptor", "cosine_similarity", "SAME_PERSON_DISTANCE"]

#: dlib's recommended Euclidean-distance threshold for "same person"
SAME_PERSON_DISTANCE = 0.6


def _full_object_detection(landmarks: torch.Tensor):
    import dlib

    lm = landmarks.detach().float().cpu()
    if lm.shape not in ((68, 2), (5, 2)):
        raise ValueError(f"landmarks must be (68, 2) (or dlib (5, 2)), got {tuple(lm.shape)}")
    lo, hi = lm.amin(0), lm.amax(0)
    rect = dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]) + 1, int(hi[1]) + 1)
    pts = dlib.points()
    for x, y in lm.round().long().tolist():
        pts.append(dlib.point(x, y))
    return dlib.full_object_detection(rect, pts)


class FaceEmbedder:
    """dlib 128-d face descriptor.

    Args:
        num_jitters: number of randomly jittered chips averaged per face (0 = one chip;
            larger is slightly more accurate and that many times slower).
        detector: landmark backend (a name of
            :func:`facegeo.landmarks.available_backends` or a ``LandmarkDetector``) used
            when no landmarks are given. ``backend=`` is its deprecated name (removed in 0.3).
    """

    def __init__(self, num_jitters: int = 0, detector: str | None = "dlib", *,
                 backend: str | None = None) -> None:
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        if backend is not None:
            warn_deprecated("FaceEmbedder(backend=)", "FaceEmbedder(detector=)", stacklevel=3)
            detector = backend
        self.num_jitters = num_jitters
        self.detector = detector
        self._net = _dlib_model("rec")

    @property
    def backend(self):
        """Deprecated name of :attr:`detector` (removed in 0.3)."""
        warn_deprecated("FaceEmbedder.backend", "FaceEmbedder.detector", stacklevel=3)
        return self.detector

    def embed(self, image, landmarks: torch.Tensor | Face | None = None,
              index: int = 0) -> torch.Tensor:
        """Descriptor of one face.

        Args:
            image: (3, H, W) float in [0, 1], (H, W, 3) array or a path.
            landmarks: (68, 2) landmarks or a :class:`Face`; ``None`` detects the
                ``index``-th largest face (NoFaceError if there is none).

        Returns:
            (128,) float32 tensor.
        """
        img = as_uint8_rgb(image)
        if landmarks is None:
            landmarks = detect_face(img, index, self.detector)
        if isinstance(landmarks, Face):
            landmarks = landmarks.landmarks
        shape = _full_object_detection(landmarks)
        d = self._net.compute_face_descriptor(img, shape, self.num_jitters)
        return torch.tensor(list(d), dtype=torch.float32)

    def embed_batch(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Descriptors of a batch.

        Args:
            images: (B, 3, H, W) float in [0, 1].
            landmarks: (B, 68, 2).

        Returns:
            (B, 128) on the device of ``images``.
        """
        if images.ndim != 4 or landmarks.ndim != 3 or images.shape[0] != landmarks.shape[0]:
            raise ValueError(f"images (B,3,H,W) and landmarks (B,68,2) expected, got "
                             f"{tuple(images.shape)}, {tuple(landmarks.shape)}")
        imgs = [as_uint8_rgb(im) for im in images]
        import dlib

        shapes = []
        for lm in landmarks:
            one = dlib.full_object_detections()
            one.append(_full_object_detection(lm))
            shapes.append(one)
        ds = self._net.compute_face_descriptor(imgs, shapes, self.num_jitters)
        return torch.tensor([list(d[0]) for d in ds], dtype=torch.float32).to(images.device)


def face_descriptor(image, landmarks: torch.Tensor | Face | None = None,
                    index: int = 0) -> torch.Tensor:
    """(128,) dlib descriptor of a face (see :meth:`FaceEmbedder.embed`)."""
    return FaceEmbedder().embed(image, landmarks, index)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Deprecated (removed in 0.3): use :func:`facegeo.metrics.cosine_similarity`, the one
    cosine of facegeo ((..., D) x (..., D) -> (...), leading dimensions broadcast)."""
    warn_deprecated("facegeo.landmarks.identity.cosine_similarity",
                    "facegeo.metrics.cosine_similarity")
    return _metrics.cosine_similarity(a, b)
