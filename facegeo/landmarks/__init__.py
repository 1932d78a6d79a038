"""Face detection, 68-point landmarks, tracking, crops and identity embeddings.

Sub-modules:

* :mod:`~facegeo.landmarks.backends`    detectors (dlib HOG/CNN, FAN, MediaPipe), ``detect``
* :mod:`~facegeo.landmarks.conventions` iBUG-68 index groups, mirroring, 5-point, MediaPipe map
* :mod:`~facegeo.landmarks.tracking`    video tracker, One-Euro filter, SMS smoothness metric
* :mod:`~facegeo.landmarks.crops`       square face crops, inverse warp, feathered paste-back
* :mod:`~facegeo.landmarks.identity`    dlib 128-d face descriptor, cosine similarity
* :mod:`~facegeo.landmarks.pupils`      pupil localisation, 74-point landmarks (68 + gaze)

See docs/landmarks.md.
"""

from facegeo.landmarks.backends import (
    BackendUnavailableError,
    Face,
    LandmarkDetector,
    NoFaceError,
    available_backends,
    backend_status,
    detect,
    detect_batch,
    detect_face,
    detect_landmarks,
    get_detector,
)
from facegeo.landmarks.conventions import (
    FLIP_PERMUTATION_68,
    FLIP_PERMUTATION_74,
    GROUPS_68,
    GROUPS_74,
    flip_landmarks,
    flip_landmarks74,
    group_indices,
    inter_ocular_distance,
    to_5_points,
)
from facegeo.landmarks.pupils import landmarks74, locate_pupils
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
    "backend_status",
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
    "FLIP_PERMUTATION_74",
    "GROUPS_74",
    "flip_landmarks74",
    "landmarks74",
    "locate_pupils",
]
