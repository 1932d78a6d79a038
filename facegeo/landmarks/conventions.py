"""Conventions of the 68-point iBUG / 300-W landmark scheme (the dlib / FAN order).

Index groups (0-based; "right"/"left" are the *subject's* sides, so the subject's right
eye appears on the image's left in a frontal photo)::

    jaw          0-16   from the right ear (image left) along the chin (8) to the left ear
    right_brow  17-21   outer -> inner        left_brow   22-26   inner -> outer
    nose_bridge 27-30   top -> tip            nose_lower  31-35   right alar -> left alar
    right_eye   36-41   outer corner 36, inner corner 39, clockwise in the image
    left_eye    42-47   inner corner 42, outer corner 45
    outer_lips  48-59   right corner 48, top centre 51, left corner 54, bottom centre 57
    inner_lips  60-67   right corner 60, top centre 62, left corner 64, bottom centre 66

Mirroring (horizontal flip of the image) maps x -> (W - 1) - x in pixel coordinates
(pixel centres at integers) and swaps the sides: :data:`FLIP_PERMUTATION_68` is the index
permutation so that ``flipped[i] = mirrored[FLIP_PERMUTATION_68[i]]``; it is an involution.

Inter-ocular distance: ``"outer"`` is the distance between the outer eye corners 36 and 45
(the 300-W normalisation); ``"pupil"`` between the centroids of the two eye contours.

5-point (ArcFace / InsightFace) order: image-left eye centre (subject's right eye, mean
of 36-41), image-right eye centre (mean of 42-47), nose tip (30), mouth corners 48 and 54.
:data:`ARCFACE_TEMPLATE_112` holds the standard destination for a 112x112 aligned crop.

MediaPipe FaceMesh (468 points, 478 with refined irises): :data:`MEDIAPIPE_TO_68` picks one
mesh vertex per iBUG point (table in docs/landmarks.md). The mesh has no exact iBUG
counterparts on the jaw line and the nostrils, so treat the mapped jaw as approximate
(a few percent of the face size). The table is left/right symmetric by construction.
"""

from __future__ import annotations

import torch

__all__ = [
    "NUM_LANDMARKS",
    "GROUPS_68",
    "FLIP_PERMUTATION_68",
    "MEDIAPIPE_TO_68",
    "ARCFACE_TEMPLATE_112",
    "group_indices",
    "flip_landmarks",
    "eye_centers",
    "inter_ocular_distance",
    "to_5_points",
    "mediapipe_to_68",
    "similarity_transform",
    "NUM_LANDMARKS_74",
    "GROUPS_74",
    "FLIP_PERMUTATION_74",
    "flip_landmarks74",
]

NUM_LANDMARKS = 68

GROUPS_68: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)),
    "chin": (8,),
    "right_brow": tuple(range(17, 22)),
    "left_brow": tuple(range(22, 27)),
    "brows": tuple(range(17, 27)),
    "nose_bridge": tuple(range(27, 31)),
    "nose_lower": tuple(range(31, 36)),
    "nose": tuple(range(27, 36)),
    "right_eye": tuple(range(36, 42)),
    "left_eye": tuple(range(42, 48)),
    "eyes": tuple(range(36, 48)),
    "outer_lips": tuple(range(48, 60)),
    "inner_lips": tuple(range(60, 68)),
    "lips": tuple(range(48, 68)),
}


def _flip_permutation() -> tuple[int, ...]:
    pairs = [(i, 16 - i) for i in range(17)]                       # jaw
    pairs += [(17 + i, 26 - i) for i in range(10)]                 # brows
    pairs += [(i, i) for i in range(27, 31)]                       # bridge
    pairs += [(31 + i, 35 - i) for i in range(5)]                  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48 + i, 54 - i) for i in range(7)]                  # upper outer lip
    pairs += [(55 + i, 59 - i) for i in range(5)]                  # lower outer lip
    pairs += [(60 + i, 64 - i) for i in range(5)]                  # upper inner lip
    pairs += [(65, 67), (66, 66), (67, 65)]                        # lower inner lip
    perm = [-1] * 68
    for a, b in pairs:
        perm[a], perm[b] = b, a
    assert -1 not in perm
    return tuple(perm)


FLIP_PERMUTATION_68: tuple[int, ...] = _flip_permutation()

# One FaceMesh vertex per iBUG landmark (see module docstring and docs/landmarks.md).
MEDIAPIPE_TO_68: tuple[int, ...] = (
    # jaw 0-16 (right ear -> chin 152 -> left ear)
    127, 234, 93, 132, 58, 172, 136, 149, 152, 378, 365, 397, 288, 361, 323, 454, 356,
    # right brow 17-21, left brow 22-26
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, lower nose 31-35
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # right eye 36-41, left eye 42-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67
    78, 81, 13, 311, 308, 402, 14, 178,
)

# InsightFace/ArcFace 112x112 alignment template (x, y), same order as to_5_points.
ARCFACE_TEMPLATE_112 = torch.tensor([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])


def group_indices(*names: str) -> list[int]:
    """Indices of the union of named groups, in order of appearance, e.g.
    ``group_indices("eyes", "lips")``. Raises KeyError listing the known names."""
    out: list[int] = []
    for n in names:
        if n not in GROUPS_68:
            raise KeyError(f"unknown landmark group {n!r}; known: {sorted(GROUPS_68)}")
        out += [i for i in GROUPS_68[n] if i not in out]
    return out


def _check68(points: torch.Tensor) -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if points.ndim < 2 or points.shape[-2] != 68 or points.shape[-1] not in (2, 3):
        raise ValueError(f"expected 68-point landmarks (..., 68, 2|3), got {tuple(points.shape)}")


def flip_landmarks(points: torch.Tensor, width: int) -> torch.Tensor:
    """Landmarks of the horizontally flipped image.

    Args:
        points: (..., 68, 2) pixel coordinates (extra columns, e.g. z, are kept).
        width: image width W in pixels.

    Returns:
        (..., 68, 2) with x -> W - 1 - x and the left/right indices swapped.
    """
    _check68(points)
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    out = points[..., list(FLIP_PERMUTATION_68), :].clone()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def eye_centers(points: torch.Tensor) -> torch.Tensor:
    """(..., 68, 2) -> (..., 2, 2): centroid of the right eye (36-41), then the left (42-47)."""
    _check68(points)
    return torch.stack([points[..., 36:42, :2].mean(-2), points[..., 42:48, :2].mean(-2)], -2)


def inter_ocular_distance(points: torch.Tensor, kind: str = "outer") -> torch.Tensor:
    """Inter-ocular distance in pixels.

    Args:
        points: (..., 68, 2).
        kind: ``"outer"`` (outer eye corners 36-45) or ``"pupil"`` (eye centroids).

    Returns:
        (...,) distances.
    """
    _check68(points)
    if kind == "outer":
        a, b = points[..., 36, :2], points[..., 45, :2]
    elif kind == "pupil":
        c = eye_centers(points)
        a, b = c[..., 0, :], c[..., 1, :]
    else:
        raise ValueError(f"kind must be 'outer' or 'pupil', got {kind!r}")
    return torch.linalg.vector_norm(a - b, dim=-1)


def to_5_points(points: torch.Tensor) -> torch.Tensor:
    """68 -> 5 points in the ArcFace order (eyes, nose tip, mouth corners).

    Args:
        points: (..., 68, 2).

    Returns:
        (..., 5, 2).
    """
    _check68(points)
    eyes = eye_centers(points)
    return torch.cat([eyes, points[..., [30, 48, 54], :2]], dim=-2)


def mediapipe_to_68(mesh: torch.Tensor) -> torch.Tensor:
    """MediaPipe FaceMesh points -> 68 iBUG points.

    Args:
        mesh: (..., 468 or 478, D) mesh landmarks (any D, e.g. 2 or 3).

    Returns:
        (..., 68, D).
    """
    if not isinstance(mesh, torch.Tensor):
        raise TypeError(f"mesh must be a torch.Tensor, got {type(mesh).__name__}")
    if mesh.ndim < 2 or mesh.shape[-2] not in (468, 478):
        raise ValueError(f"expected a (..., 468|478, D) FaceMesh, got {tuple(mesh.shape)}")
    return mesh[..., list(MEDIAPIPE_TO_68), :]


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst
    (Umeyama 1991), batched.

    Args:
        src: (..., N, 2) points, N >= 2.
        dst: (..., N, 2) points.

    Returns:
        (..., 2, 3) matrices M with ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    if src.shape != dst.shape or src.shape[-1] != 2 or src.shape[-2] < 2:
        raise ValueError(f"src and dst must both be (..., N>=2, 2), got {src.shape}, {dst.shape}")
    mu_s, mu_d = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    n = src.shape[-2]
    cov = d.transpose(-1, -2) @ s / n                      # (..., 2, 2)
    u, sig, vh = torch.linalg.svd(cov)
    det = torch.linalg.det(u @ vh)
    e = torch.ones_like(sig)
    e[..., 1] = torch.where(det < 0, -1.0, 1.0)
    r = u @ torch.diag_embed(e) @ vh
    var_s = (s**2).sum((-1, -2)) / n
    scale = (sig * e).sum(-1) / var_s.clamp_min(1e-12)
    a = scale[..., None, None] * r
    t = mu_d.squeeze(-2) - (a @ mu_s.transpose(-1, -2)).squeeze(-1)
    return torch.cat([a, t[..., None]], dim=-1)


# ------------------------------------------------------------------ 74-point convention
# S2D (Zhao, Wu, Guo 2021, sec. 3.3): 68 iBUG points + the pupils and their neighbours.
# The paper does not list its six extra points; ours (docs/landmarks.md, "Pupils and the
# 74-point convention"), per eye the pupil and two iris-edge points on the corner-to-corner
# axis, computed by facegeo.landmarks.pupils.landmarks74:
#   68 right pupil   69 right iris, outer side (towards 36)   70 right iris, inner (39)
#   71 left pupil    72 left iris, outer side (towards 45)    73 left iris, inner (42)
NUM_LANDMARKS_74 = 74

GROUPS_74: dict[str, tuple[int, ...]] = {
    **GROUPS_68,
    "right_pupil": (68,),
    "left_pupil": (71,),
    "pupils": (68, 71),
    "right_iris": (68, 69, 70),
    "left_iris": (71, 72, 73),
    "irises": tuple(range(68, 74)),
    "right_eye_gaze": tuple(range(36, 42)) + (68, 69, 70),
    "left_eye_gaze": tuple(range(42, 48)) + (71, 72, 73),
}

#: ``flipped[i] = mirrored[FLIP_PERMUTATION_74[i]]`` for 74-point landmarks (involution).
FLIP_PERMUTATION_74: tuple[int, ...] = FLIP_PERMUTATION_68 + (71, 72, 73, 68, 69, 70)


def flip_landmarks74(points: torch.Tensor, width: int) -> torch.Tensor:
    """:func:`flip_landmarks` for 74-point landmarks.

    Args:
        points: (..., 74, 2) pixel coordinates.
        width: image width W in pixels.

    Returns:
        (..., 74, 2) with x -> W - 1 - x and the sides swapped (pupils and irises too).
    """
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if points.ndim < 2 or points.shape[-2] != 74 or points.shape[-1] not in (2, 3):
        raise ValueError(f"expected 74-point landmarks (..., 74, 2|3), got "
                         f"{tuple(points.shape)}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    out = points[..., list(FLIP_PERMUTATION_74), :].clone()
    out[..., 0] = (width - 1) - out[..., 0]
    return out
