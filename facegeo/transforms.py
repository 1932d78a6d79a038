"""Rotations, cameras and pose interpolation (batched, differentiable torch).

Coordinate systems (see ``docs/transforms.md`` for pictures in words)
--------------------------------------------------------------------
* **Model / head frame** (3DMMs: ICT-FaceKit, BFM): right-handed, **+x = the subject's left**,
  **+y = up**, **+z = out of the face** (towards a viewer who looks at the face).
* **Camera frame** (OpenCV): +x right, **+y down**, +z forward (away from the camera, into the
  scene). A model point ``X`` is mapped into the camera frame by

  ``X_cam = F @ R @ X + t``,  with the fixed flip ``F = diag(1, -1, -1)`` (:data:`MODEL_TO_CAMERA`).

  So with ``R = I`` the face looks straight into the camera, its top is at the top of the image,
  and the subject's left (+x) appears on the image *right* (as in a photo of a person facing you).
  ``t = (t_x, t_y, t_z)`` is the model origin in camera coordinates; ``t_z > 0`` is its distance.
* **Image**: pixel coordinates ``(u, v)``, u right, v down, pixel centres at integers (the
  convention of :mod:`facegeo.coords`).

Projections
-----------
* weak perspective (scaled orthographic): ``(u, v) = s * (F R X)[:2] + t2d``, i.e.
  ``u = s * (R X)_x + t_u``, ``v = -s * (R X)_y + t_v``; ``s`` is pixels per model unit and
  ``t2d`` is the pixel position of the model origin.
* pinhole: ``X_cam = F R X + t``; ``u = c_u + f * X_cam_x / X_cam_z``,
  ``v = c_v + f * X_cam_y / X_cam_z``.

Euler angles (degrees at the user boundary)
-------------------------------------------
``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``, rotations about the *model* axes, right-handed
(``scipy.spatial.transform.Rotation.from_euler("xyz", [pitch, yaw, roll], degrees=True)``,
lowercase = extrinsic). Angles are always given/returned in the order ``(yaw, pitch, roll)``.
Seen in the image:

* **yaw > 0**: the head turns towards the subject's left, the nose moves to the image *right*;
* **pitch > 0**: the head tilts down (nose moves *down* in the image, the forehead comes forward);
* **roll > 0**: the head tilts towards the subject's left shoulder; in the image the face turns
  *counter-clockwise* (its left side, on the image right, goes up).

Ranges returned by :func:`matrix_to_euler`: yaw in [-90, 90], pitch and roll in (-180, 180].

Quaternions are ``(w, x, y, z)`` (scalar first), unit norm; axis-angle vectors are radians.
"""

from __future__ import annotations

import math

import torch

from facegeo._deprecation import warn_deprecated

__all__ = [
    "MODEL_TO_CAMERA",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "euler_to_matrix",
    "matrix_to_euler",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "quaternion_multiply",
    "quaternion_conjugate",
    "slerp",
    "interpolate_pose",
    "orthonormalize",
    "rotation_angle",
    "weak_perspective_project",
    "pinhole_project",
    "model_to_camera",
]

#: The fixed flip from the model frame (+y up, +z towards viewer) to the OpenCV camera frame.
MODEL_TO_CAMERA = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


def _check_last(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[x.dim() - len(shape):]) != shape or x.dim() < len(shape):
        want = "(..., " + ", ".join(map(str, shape)) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {x.dtype}")
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} contains NaN or inf values")


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix [v]_x."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


# --------------------------------------------------------------------------- axis-angle


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. (..., 3) rotation vectors (radians) -> (..., 3, 3) rotation matrices.

    Smooth and differentiable everywhere (Taylor series for angles below 1e-4)."""
    _check_last(axis_angle, (3,), "axis_angle")
    theta2 = (axis_angle * axis_angle).sum(-1)
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def matrix_to_axis_angle(rotation: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors, angle in [0, pi] radians.

    Goes through the quaternion, so it is stable near 0 and near pi."""
    return quaternion_to_axis_angle(matrix_to_quaternion(rotation))


# --------------------------------------------------------------------------- quaternions


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), normalised internally -> (..., 3, 3)."""
    _check_last(quaternion, (4,), "quaternion")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    m = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Uses the best-conditioned of the four classical formulas per matrix (no NaN, smooth)."""
    _check_last(rotation, (3, 3), "rotation")
    m = rotation
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4*q_i^2 for i = w, x, y, z
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    r = sq.clamp_min(1e-12).sqrt()  # 2*|q_i|
    d21, d12 = m[..., 2, 1], m[..., 1, 2]
    d02, d20 = m[..., 0, 2], m[..., 2, 0]
    d10, d01 = m[..., 1, 0], m[..., 0, 1]
    # candidate quaternions (times 2|q_i|), one per row
    cands = torch.stack(
        [
            torch.stack([sq[..., 0], d21 - d12, d02 - d20, d10 - d01], -1),
            torch.stack([d21 - d12, sq[..., 1], d10 + d01, d02 + d20], -1),
            torch.stack([d02 - d20, d10 + d01, sq[..., 2], d21 + d12], -1),
            torch.stack([d10 - d01, d02 + d20, d21 + d12, sq[..., 3]], -1),
        ],
        dim=-2,
    ) / (2.0 * r[..., None])
    best = sq.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors (radians) -> (..., 4) unit quaternions (w, x, y, z)."""
    _check_last(axis_angle, (3,), "axis_angle")
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    theta = torch.where(small, torch.ones_like(theta2), theta2).sqrt()
    half_sinc = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(theta / 2) / theta)
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(theta / 2))
    return torch.cat([w, axis_angle * half_sinc], dim=-1)


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z) -> (..., 3) rotation vectors, angle in [0, pi]."""
    _check_last(quaternion, (4,), "quaternion")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[..., :1] < 0, -q, q)
    w, xyz = q[..., :1], q[..., 1:]
    s2 = (xyz * xyz).sum(-1, keepdim=True)
    small = s2 < 1e-12
    s = torch.where(small, torch.ones_like(s2), s2).sqrt()
    angle = 2.0 * torch.atan2(s, w)
    taylor = 2.0 / w.clamp_min(1e-12) * (1.0 - s2 / (3.0 * w * w).clamp_min(1e-12))
    factor = torch.where(small, taylor, angle / s)
    return xyz * factor


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a*b of (..., 4) quaternions (w, x, y, z); R(a*b) = R(a) @ R(b)."""
    _check_last(a, (4,), "a")
    _check_last(b, (4,), "b")
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quaternion_conjugate(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> (..., 4) conjugate (the inverse rotation for unit quaternions)."""
    _check_last(q, (4,), "q")
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def slerp(q0: torch.Tensor, q1: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
    """Spherical linear interpolation along the shorter arc.

    q0, q1: (..., 4) unit quaternions (w, x, y, z); weight: float or tensor broadcastable to
    (...) (0 -> q0, 1 -> q1; values outside [0, 1] extrapolate). Returns (..., 4) unit quaternions.
    """
    _check_last(q0, (4,), "q0")
    _check_last(q1, (4,), "q1")
    q0 = q0 / q0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q1 = q1 / q1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w = torch.as_tensor(weight, dtype=q0.dtype, device=q0.device)[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    near = dot > 0.9995
    omega = torch.acos(torch.where(near, torch.zeros_like(dot), dot))
    so = torch.sin(omega)
    so = torch.where(near, torch.ones_like(so), so)
    c0 = torch.where(near, 1.0 - w, torch.sin((1.0 - w) * omega) / so)
    c1 = torch.where(near, w, torch.sin(w * omega) / so)
    out = c0 * q0 + c1 * q1
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def interpolate_pose(
    rotation0: torch.Tensor,
    rotation1: torch.Tensor,
    weight: torch.Tensor | float,
    translation0: torch.Tensor | None = None,
    translation1: torch.Tensor | None = None,
    scale0: torch.Tensor | None = None,
    scale1: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Blend two poses: slerp for the rotation, linear for translation, geometric for scale.

    rotation0/1: (..., 3, 3); weight: float or tensor broadcastable to (...);
    translation0/1: (..., D) or None; scale0/1: (...) positive or None.
    Returns (rotation (..., 3, 3), translation (..., D) or None, scale (...) or None).
    """
    q = slerp(matrix_to_quaternion(rotation0), matrix_to_quaternion(rotation1), weight)
    rot = quaternion_to_matrix(q)
    w = torch.as_tensor(weight, dtype=rotation0.dtype, device=rotation0.device)
    trans = None
    if translation0 is not None and translation1 is not None:
        trans = translation0 + w[..., None] * (translation1 - translation0)
    scale = None
    if scale0 is not None and scale1 is not None:
        if (scale0 <= 0).any() or (scale1 <= 0).any():
            raise ValueError("scales must be positive to interpolate them")
        scale = torch.exp(torch.log(scale0) + w * (torch.log(scale1) - torch.log(scale0)))
    return rot, trans, scale


# --------------------------------------------------------------------------- Euler


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) angles (yaw, pitch, roll) in DEGREES -> (..., 3, 3) rotation matrices.

    ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (see the module docstring for the signs)."""
    _check_last(angles, (3,), "angles")
    rad = angles * (math.pi / 180.0)
    yaw, pitch, roll = rad.unbind(-1)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    m = torch.stack(
        [
            cr * cy, cr * sy * sp - sr * cp, cr * sy * cp + sr * sp,
            sr * cy, sr * sy * sp + cr * cp, sr * sy * cp - cr * sp,
            -sy, cy * sp, cy * cp,
        ],
        dim=-1,
    )
    return m.reshape(angles.shape[:-1] + (3, 3))


def matrix_to_euler(rotation: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) (yaw, pitch, roll) in DEGREES.

    Inverse of :func:`euler_to_matrix`: yaw in [-90, 90], pitch, roll in (-180, 180]. At gimbal
    lock (|yaw| = 90) roll is set to 0 and the whole in-plane angle is given to pitch."""
    _check_last(rotation, (3, 3), "rotation")
    m = rotation
    cy = torch.sqrt(m[..., 0, 0] ** 2 + m[..., 1, 0] ** 2)
    yaw = torch.atan2(-m[..., 2, 0], cy)
    lock = cy < 1e-6
    pitch = torch.where(
        lock,
        torch.atan2(-m[..., 1, 2], m[..., 1, 1]),
        torch.atan2(m[..., 2, 1], m[..., 2, 2]),
    )
    roll = torch.where(lock, torch.zeros_like(yaw), torch.atan2(m[..., 1, 0], m[..., 0, 0]))
    return torch.stack([yaw, pitch, roll], dim=-1) * (180.0 / math.pi)


# --------------------------------------------------------------------------- helpers


def orthonormalize(matrix: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (Frobenius norm) to each (..., 3, 3) matrix, via SVD with det = +1."""
    _check_last(matrix, (3, 3), "matrix")
    u, _, vh = torch.linalg.svd(matrix)
    d = torch.det(u @ vh)
    fix = torch.ones(matrix.shape[:-2] + (3,), dtype=matrix.dtype, device=matrix.device)
    fix[..., 2] = d.sign().where(d != 0, torch.ones_like(d))
    return u @ (fix[..., None] * vh)


def rotation_angle(rotation0: torch.Tensor, rotation1: torch.Tensor | None = None) -> torch.Tensor:
    """Geodesic angle in DEGREES of (..., 3, 3) ``rotation0`` (or of ``rotation0^T rotation1``)."""
    _check_last(rotation0, (3, 3), "rotation0")
    rel = rotation0 if rotation1 is None else rotation0.transpose(-1, -2) @ rotation1
    aa = matrix_to_axis_angle(rel)
    return aa.norm(dim=-1) * (180.0 / math.pi)


def model_to_camera(
    points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor
) -> torch.Tensor:
    """``F R X + t``: points (B, N, 3), rotation (B, 3, 3), translation (B, 3) -> (B, N, 3).

    The result is in OpenCV camera coordinates (x right, y down, z forward)."""
    _check_last(points, (3,), "points")
    _check_last(rotation, (3, 3), "rotation")
    _check_last(translation, (3,), "translation")
    flip = MODEL_TO_CAMERA.to(points.dtype).to(points.device)
    return points @ (flip @ rotation).transpose(-1, -2) + translation[..., None, :]


def weak_perspective_project(
    points: torch.Tensor,
    rotation: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
    scale: torch.Tensor | float | None = None,
    *,
    translation2d: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled orthographic projection ``s * (F R X)[:2] + t2d``.

    The arguments come in the order of :func:`pinhole_project`: points, the extrinsics
    (rotation, translation), then the intrinsics (here the scale).

    Args:
        points: (B, N, 3) model coordinates.
        rotation: (B, 3, 3).
        translation: (B, 2) pixel position of the model origin.
        scale: (B,) (or a float) pixels per model unit.
        translation2d: old name of ``translation`` (deprecated, removed in 0.3).

    Returns:
        (B, N, 2) pixels (x right, y down).

    The pre-0.2 order ``(points, scale, rotation, translation2d)`` is recognised by the
    shapes (the rotation is the argument that is (..., 3, 3)) and still works, with a
    ``DeprecationWarning``.
    """
    if translation2d is not None:
        if translation is not None:
            raise TypeError("weak_perspective_project: pass translation only once "
                            "(translation2d is its deprecated name)")
        warn_deprecated("weak_perspective_project(..., translation2d=)",
                        "weak_perspective_project(points, rotation, translation, scale)")
        translation = translation2d
    if (isinstance(translation, torch.Tensor) and translation.dim() >= 2
            and tuple(translation.shape[-2:]) == (3, 3)
            and not (isinstance(rotation, torch.Tensor) and rotation.dim() >= 2)):
        # old positional order (points, scale, rotation, translation2d)
        warn_deprecated("weak_perspective_project(points, scale, rotation, translation2d)",
                        "weak_perspective_project(points, rotation, translation, scale)")
        rotation, translation, scale = translation, scale, rotation
    for name, val in (("rotation", rotation), ("translation", translation), ("scale", scale)):
        if val is None:
            raise TypeError(f"weak_perspective_project: missing argument {name!r}")
    _check_last(points, (3,), "points")
    _check_last(rotation, (3, 3), "rotation")
    _check_last(translation, (2,), "translation")
    if not isinstance(scale, torch.Tensor):
        scale = torch.as_tensor(scale, dtype=points.dtype, device=points.device)
    flip = MODEL_TO_CAMERA[:2].to(points.dtype).to(points.device)
    proj = flip @ rotation  # (B, 2, 3)
    return scale[..., None, None] * (points @ proj.transpose(-1, -2)) + translation[..., None, :]


def pinhole_project(
    points: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    focal: torch.Tensor | float,
    principal_point: torch.Tensor | tuple[float, float],
    *,
    return_depth: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection of model points.

    points (B, N, 3); rotation (B, 3, 3); translation (B, 3) OpenCV camera coordinates of the model
    origin (t_z > 0 in front of the camera); focal: float or (B,) in pixels; principal_point:
    (c_u, c_v) or (B, 2) pixels. Returns (B, N, 2) pixels, plus (B, N) depth if ``return_depth``.
    Points at depth <= 0 (behind the camera) raise no error but project meaninglessly: check depth.
    """
    cam = model_to_camera(points, rotation, translation)
    f = torch.as_tensor(focal, dtype=points.dtype, device=points.device)
    c = torch.as_tensor(principal_point, dtype=points.dtype, device=points.device)
    if f.dim() == 1:
        f = f[:, None, None]
    if c.dim() == 2:
        c = c[:, None, :]
    depth = cam[..., 2]
    safe = torch.where(depth.abs() < 1e-12, torch.full_like(depth, 1e-12), depth)
    uv = f * cam[..., :2] / safe[..., None] + c
    if return_depth:
        return uv, depth
    return uv
