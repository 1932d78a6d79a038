"""Face detection, 68-point landmarks, tracking, crops and identity embeddings.

Sub-modules:

* :mod:`~facegeo.landmarks.backends`    detectors (dlib HOG/CNN, FAN, MediaPipe), ``detect``
* :mod:`~facegeo.landmarks.conventions` iBUG-68 index groups, mirroring, 5-point, MediaPipe map
* :mod:`~facegeo.landmarks.tracking`    video tracker, One-Euro filter, SMS smoothness metric
* :mod:`~facegeo.landmarks.crops`       square face crops, inverse warp, feathered paste-back
* :mod:`~facegeo.landmarks.identity`    dlib 128-d face descriptor, cosine similarity

See docs/landmarks.md.
"""

from facegeo.landmarks.backends import (
    BackendUnavailableError,
    Face,
    LandmarkDetector,
    NoFaceError,
    available_backends,
    detect,
    detect_batch,
    detect_face,
    detect_landmarks,
    get_detector,
)
from facegeo.landmarks.conventions import (
    FLIP_PERMUTATION_68,
    GROUPS_68,
    flip_landmarks,
    group_indices,
    inter_ocular_distance,
    to_5_points,
)
from facegeo.landmarks.tracking import LandmarkTracker, OneEuroFilter, TrackResult, sms

__all__ = [
    "LandmarkTracker",
    "OneEuroFilter",
    "TrackResult",
    "sms",
    "BackendUnavailableError",
    "Face",
    "LandmarkDetector",
    "NoFaceError",
    "available_backends",
    "detect",
    "detect_batch",
    "detect_face",
    "detect_landmarks",
    "get_detector",
    "FLIP_PERMUTATION_68",
    "GROUPS_68",
    "flip_landmarks",
    "group_indices",
    "inter_ocular_distance",
    "to_5_points",
]
