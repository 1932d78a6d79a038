"""facegeo.transforms against scipy.spatial.transform.Rotation and analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from facegeo import transforms as T


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def rots() -> Rotation:
    r = Rotation.random(200, random_state=0)
    # add edge cases: identity, 180 deg turns, tiny angles
    extra = Rotation.from_rotvec(
        [[0, 0, 0], [math.pi, 0, 0], [0, math.pi, 0], [0, 0, math.pi], [1e-9, 0, 0],
         [1e-5, -2e-5, 3e-6], [math.pi / math.sqrt(2), -math.pi / math.sqrt(2), 0]]
    )
    return Rotation.concatenate([r, extra])


def test_axis_angle_matches_scipy(rots):
    rv = torch.from_numpy(rots.as_rotvec())
    m = T.axis_angle_to_matrix(rv)
    np.testing.assert_allclose(m.numpy(), rots.as_matrix(), atol=1e-12)
    back = T.matrix_to_axis_angle(m)
    # rotation vectors are unique except at angle pi (v and -v): compare the matrices then
    np.testing.assert_allclose(T.axis_angle_to_matrix(back).numpy(), rots.as_matrix(), atol=1e-10)
    ang = rots.magnitude()
    ok = ang < math.pi - 1e-6
    np.testing.assert_allclose(back.numpy()[ok], rots.as_rotvec()[ok], atol=1e-9)


def test_quaternion_matches_scipy(rots):
    q_scipy = rots.as_quat()  # x, y, z, w
    q = T.matrix_to_quaternion(torch.from_numpy(rots.as_matrix()))
    ref = np.concatenate([q_scipy[:, 3:], q_scipy[:, :3]], 1)
    ref = ref * np.where(ref[:, :1] < 0, -1, 1)
    # sign ambiguity only when w == 0
    agree = np.minimum(np.abs(q.numpy() - ref).max(1), np.abs(q.numpy() + ref).max(1))
    assert agree.max() < 1e-10
    np.testing.assert_allclose(T.quaternion_to_matrix(q).numpy(), rots.as_matrix(), atol=1e-12)
    aq = T.axis_angle_to_quaternion(torch.from_numpy(rots.as_rotvec()))
    np.testing.assert_allclose(T.quaternion_to_matrix(aq).numpy(), rots.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(
        T.axis_angle_to_matrix(T.quaternion_to_axis_angle(aq)).numpy(), rots.as_matrix(), atol=1e-10
    )


def test_quaternion_multiply_composes(rots):
    a, b = rots[:100], rots[100:200]
    qa = T.matrix_to_quaternion(torch.from_numpy(a.as_matrix()))
    qb = T.matrix_to_quaternion(torch.from_numpy(b.as_matrix()))
    m = T.quaternion_to_matrix(T.quaternion_multiply(qa, qb))
    np.testing.assert_allclose(m.numpy(), (a * b).as_matrix(), atol=1e-12)
    inv = T.quaternion_to_matrix(T.quaternion_conjugate(qa))
    np.testing.assert_allclose(inv.numpy(), a.inv().as_matrix(), atol=1e-12)


def test_euler_matches_scipy_convention():
    rng = np.random.default_rng(1)
    ypr = np.stack(
        [rng.uniform(-89, 89, 300), rng.uniform(-179, 179, 300), rng.uniform(-179, 179, 300)], 1
    )
    ref = Rotation.from_euler("xyz", ypr[:, [1, 0, 2]], degrees=True).as_matrix()
    m = T.euler_to_matrix(torch.from_numpy(ypr))
    np.testing.assert_allclose(m.numpy(), ref, atol=1e-12)
    back = T.matrix_to_euler(m).numpy()
    np.testing.assert_allclose(back, ypr, atol=1e-8)
    # scipy's own inverse agrees
    sp = Rotation.from_matrix(ref).as_euler("xyz", degrees=True)[:, [1, 0, 2]]
    np.testing.assert_allclose(back, sp, atol=1e-8)


def test_euler_gimbal_lock_roundtrip():
    ypr = torch.tensor([[90.0, 20.0, 0.0], [-90.0, -35.0, 0.0], [90.0, 10.0, 30.0]])
    m = T.euler_to_matrix(ypr)
    back = T.matrix_to_euler(m)
    assert torch.isfinite(back).all()
    np.testing.assert_allclose(T.euler_to_matrix(back).numpy(), m.numpy(), atol=1e-7)


def test_euler_signs_in_image():
    """yaw>0: nose to image right; pitch>0: nose down; roll>0: face turns counter-clockwise."""
    nose = torch.tensor([[[0.0, 0.0, 10.0]]])
    left_eye = torch.tensor([[[4.0, 3.0, 5.0]]])
    s, t = torch.tensor([1.0]), torch.zeros(1, 2)

    def proj(p, ypr):
        return T.weak_perspective_project(p, T.euler_to_matrix(torch.tensor([ypr])), t, s)[0, 0]

    assert proj(nose, [30.0, 0.0, 0.0])[0] > 1.0
    assert proj(nose, [0.0, 30.0, 0.0])[1] > 1.0
    # frontal: subject's left eye is on the image right and above the origin (y down)
    p0 = proj(left_eye, [0.0, 0.0, 0.0])
    assert p0[0] == pytest.approx(4.0) and p0[1] == pytest.approx(-3.0)
    # counter-clockwise as seen in the image (y down) = the eye moves up (smaller v)
    p1 = proj(left_eye, [0.0, 0.0, 20.0])
    assert p1[1] < p0[1] - 1.0


def test_slerp_matches_scipy():
    key = Rotation.random(2, random_state=3)
    w = np.linspace(0, 1, 11)
    ref = Slerp([0, 1], key)(w).as_matrix()
    q = T.matrix_to_quaternion(torch.from_numpy(key.as_matrix()))
    out = T.slerp(q[:1].expand(11, 4), q[1:].expand(11, 4), torch.from_numpy(w))
    np.testing.assert_allclose(T.quaternion_to_matrix(out).numpy(), ref, atol=1e-10)
    # constant angular speed
    ang = T.rotation_angle(torch.from_numpy(ref[:1]), T.quaternion_to_matrix(out))
    total = (key[0].inv() * key[1]).magnitude() * 180 / math.pi
    np.testing.assert_allclose(ang.numpy(), w * total, atol=1e-8)


def test_interpolate_pose():
    r0 = T.euler_to_matrix(torch.tensor([[10.0, 0, 0]]))
    r1 = T.euler_to_matrix(torch.tensor([[50.0, 0, 0]]))
    r, t, s = T.interpolate_pose(r0, r1, 0.25, torch.zeros(1, 2), torch.tensor([[4.0, 8.0]]),
                                 torch.tensor([1.0]), torch.tensor([4.0]))
    np.testing.assert_allclose(T.matrix_to_euler(r).numpy(), [[20.0, 0, 0]], atol=1e-9)
    np.testing.assert_allclose(t.numpy(), [[1.0, 2.0]])
    np.testing.assert_allclose(s.numpy(), [math.sqrt(2.0)])
    with pytest.raises(ValueError):
        T.interpolate_pose(r0, r1, 0.5, scale0=torch.tensor([0.0]), scale1=torch.tensor([1.0]))


def test_orthonormalize_and_angle():
    r = torch.from_numpy(Rotation.random(20, random_state=5).as_matrix())
    noisy = 2.0 * (r + 1e-3 * torch.randn(20, 3, 3, generator=torch.Generator().manual_seed(0)))
    o = T.orthonormalize(noisy)
    assert torch.allclose(o @ o.transpose(1, 2), torch.eye(3).expand(20, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(o), torch.ones(20))
    assert T.rotation_angle(o, r).max() < 0.5
    reflect = torch.diag(torch.tensor([1.0, 1.0, -1.0]))[None]
    assert torch.det(T.orthonormalize(reflect)) > 0
    rz = T.euler_to_matrix(torch.tensor([[0.0, 0.0, 37.0]]))
    assert T.rotation_angle(rz).item() == pytest.approx(37.0)


def test_projections_analytic():
    pts = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 0.5, -2.0]]])
    rot = torch.eye(3)[None]
    wp = T.weak_perspective_project(pts, rot, torch.tensor([[100.0, 50.0]]), torch.tensor([2.0]))
    np.testing.assert_allclose(wp[0].numpy(), [[102, 46], [100, 50], [98, 49]])
    # pinhole: model origin 50 units in front, OpenCV camera; +y up in the model is -v
    uv, depth = T.pinhole_project(pts, rot, torch.tensor([[0.0, 0.0, 50.0]]), 500.0, (256.0, 256.0),
                                  return_depth=True)
    np.testing.assert_allclose(depth[0].numpy(), [47.0, 50.0, 52.0])
    np.testing.assert_allclose(uv[0].numpy(), [[256 + 500 / 47, 256 - 1000 / 47], [256, 256],
                                               [256 - 500 / 52, 256 - 250 / 52]], rtol=1e-12)
    # pinhole -> weak perspective when far away (scale f/d)
    far = T.pinhole_project(pts, rot, torch.tensor([[0.0, 0.0, 1e7]]), 1e7, (0.0, 0.0))
    wp1 = T.weak_perspective_project(pts, rot, torch.zeros(1, 2), torch.tensor([1.0]))
    np.testing.assert_allclose(far.numpy(), wp1.numpy(), atol=1e-5)


def test_gradients_finite_at_identity_and_gradcheck():
    v = torch.zeros(2, 3, requires_grad=True)
    T.axis_angle_to_matrix(v).sum().backward()
    assert torch.isfinite(v.grad).all()
    v = torch.tensor([[0.3, -0.2, 0.5], [1e-6, 2e-6, 0.0]], requires_grad=True)
    assert torch.autograd.gradcheck(T.axis_angle_to_matrix, (v,))
    e = torch.tensor([[10.0, -20.0, 30.0]], requires_grad=True)
    assert torch.autograd.gradcheck(T.euler_to_matrix, (e,))
    m = T.euler_to_matrix(torch.tensor([[10.0, -20.0, 30.0], [0.0, 0.0, 0.0]])).requires_grad_()
    assert torch.autograd.gradcheck(T.matrix_to_quaternion, (m,))


def test_bad_input():
    with pytest.raises(ValueError):
        T.axis_angle_to_matrix(torch.zeros(4, 2))
    with pytest.raises(ValueError):
        T.matrix_to_euler(torch.zeros(3, 4))
    with pytest.raises(TypeError):
        T.euler_to_matrix(np.zeros(3))
    with pytest.raises(TypeError):
        T.euler_to_matrix(torch.zeros(3, dtype=torch.int64))


def test_weak_perspective_argument_order_matches_pinhole_and_old_order_warns():
    """(points, rotation, translation, intrinsics) for both projections; the pre-0.2 order
    (points, scale, rotation, translation2d) is recognised by shape, warns, and agrees."""
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    rot = T.euler_to_matrix(torch.randn(3, 3, generator=g, dtype=torch.float64) * 20)
    t2, s = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
    new = T.weak_perspective_project(pts, rot, t2, s)
    # independent formula: u = s (R X)_x + t_u, v = -s (R X)_y + t_v
    y = torch.einsum("bij,bnj->bni", rot, pts)
    ref = torch.stack([y[..., 0], -y[..., 1]], -1) * s[:, None, None] + t2[:, None]
    torch.testing.assert_close(new, ref)
    with pytest.warns(DeprecationWarning, match="rotation, translation, scale"):
        old = T.weak_perspective_project(pts, s, rot, t2)
    with pytest.warns(DeprecationWarning, match="translation2d"):
        old_kw = T.weak_perspective_project(pts, scale=s, rotation=rot, translation2d=t2)
    torch.testing.assert_close(old, new, atol=0, rtol=0)
    torch.testing.assert_close(old_kw, new, atol=0, rtol=0)
    assert torch.equal(T.weak_perspective_project(pts, rot, t2, scale=2.0),
                       T.weak_perspective_project(pts, rot, t2, torch.full((3,), 2.0,
                                                                          dtype=torch.float64)))
    with pytest.raises(TypeError, match="scale"):
        T.weak_perspective_project(pts, rot, t2)
