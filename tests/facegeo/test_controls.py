"""facegeo.controls: region control, multipliers, best reference frame, identity morphing and
meshes of fits, as properties of the recombined target fits (tiny, no media)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facegeo import transforms as T
from facegeo.controls import (
    Controls,
    best_reference_frame,
    blend_fits,
    expression_groups,
    fit_meshes,
    frame_distance,
    interpolate_regions,
    parse_regions,
)
from facegeo.morphable import MorphableModel
from facegeo.reenact import FaceConditioner, FaceFit, interpolate_fits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(assets_dir):
    return MorphableModel.load()


@pytest.fixture(scope="module")
def cond(model):
    return FaceConditioner(model, size=64)


def _fits(model, n, seed=0, max_deg=20.0):
    g = torch.Generator().manual_seed(seed)
    ang = (torch.rand(n, 3, generator=g) * 2 - 1) * max_deg
    return FaceFit(T.euler_to_matrix(ang), 3.0 + torch.rand(n, generator=g),
                   20 + 10 * torch.rand(n, 2, generator=g),
                   torch.randn(n, model.n_id, generator=g),
                   0.8 * torch.rand(n, model.n_exp, generator=g))


def _close_rot(a, b, tol=1e-3):
    return float(T.rotation_angle(a, b).max()) < tol


# ----------------------------------------------------------------------------- groups
def test_expression_groups_partition_the_ict_blendshapes(model):
    g = expression_groups(model)
    stack = torch.stack(list(g.values()))
    assert bool((stack.sum(0) == 1).all())  # every blendshape in exactly one group
    names = model.exp_names
    pick = {k: [names[i] for i in v.nonzero().flatten()] for k, v in g.items()}
    assert {"eyeBlink_L", "eyeBlink_R", "eyeLookUp_L", "eyeWide_R"} <= set(pick["eyes"])
    assert {"jawOpen", "mouthSmile_L", "mouthFunnel", "cheekPuff_L"} <= set(pick["mouth"])
    assert {"browInnerUp_L", "browDown_R"} <= set(pick["brows"])
    assert not any(n.startswith(("eye", "brow")) for n in pick["mouth"])
    # ARKit names group the same way
    arkit = MorphableModel(model.mean, model.triangles, exp_basis=model.exp_basis,
                           exp_kind="blendshape", exp_names=model.exp_names_arkit)
    ga = expression_groups(arkit)
    assert all(torch.equal(ga[k], g[k]) for k in g)


def test_groups_and_regions_refuse_bad_input(model):
    pca = MorphableModel(model.mean, model.triangles, exp_basis=model.exp_basis[:3],
                         exp_kind="pca")
    with pytest.raises(ValueError, match="named blendshapes"):
        expression_groups(pca)
    with pytest.raises(ValueError, match="unknown region 'nostril'"):
        parse_regions("pose,nostril")
    with pytest.raises(ValueError, match="empty entry"):
        parse_regions("pose,,eyes")
    assert parse_regions(" pose , eyes") == {"pose", "eyes"}
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError, match="expression_scale"):
            Controls(expression_scale=bad)
        with pytest.raises(ValueError, match="motion_scale"):
            Controls(motion_scale=bad)


# ----------------------------------------------------------------------------- blending
def test_blend_fits_endpoints_and_slerp_midpoint(model):
    a, b = _fits(model, 1, 1), _fits(model, 1, 2)
    f0 = blend_fits(a, b, 0.0, 0.0, 0.0)
    assert _close_rot(f0.rotation, a.rotation) and torch.allclose(f0.exp_coeffs, a.exp_coeffs)
    f1 = blend_fits(a, b, 1.0, 1.0, 1.0)
    assert _close_rot(f1.rotation, b.rotation)
    assert torch.allclose(f1.scale, b.scale) and torch.allclose(f1.translation, b.translation)
    assert torch.allclose(f1.exp_coeffs, b.exp_coeffs, atol=1e-6)
    assert torch.allclose(f1.id_coeffs, b.id_coeffs, atol=1e-6)
    h = blend_fits(a, b, 0.5, 0.0, 0.0)
    full = float(T.rotation_angle(a.rotation, b.rotation))
    assert float(T.rotation_angle(a.rotation, h.rotation)) == pytest.approx(full / 2, abs=1e-3)
    assert float(T.rotation_angle(h.rotation, b.rotation)) == pytest.approx(full / 2, abs=1e-3)
    assert float(h.scale) == pytest.approx(math.sqrt(float(a.scale * b.scale)), rel=1e-5)
    with pytest.raises(ValueError, match="finite"):
        blend_fits(a, b, float("nan"))


def test_interpolate_regions_equals_interpolate_fits_and_morphs_identity(model):
    a, b = _fits(model, 1, 3), _fits(model, 1, 4)
    alpha = torch.linspace(0, 1, 5)
    for only in (None, "pose", "expression"):
        ref = interpolate_fits(a, b, alpha, only=only)
        got = interpolate_regions(a, b, alpha, only=only, model=model)
        assert _close_rot(got.rotation, ref.rotation, 1e-3)
        for k in ("scale", "translation", "exp_coeffs", "id_coeffs"):
            assert torch.allclose(getattr(got, k), getattr(ref, k), atol=1e-5), (only, k)
    m = interpolate_regions(a, b, alpha, only="identity", model=model)
    for i, w in enumerate(alpha.tolist()):
        assert torch.allclose(m.id_coeffs[i], a.id_coeffs[0] + w * (b.id_coeffs[0]
                                                                   - a.id_coeffs[0]), atol=1e-5)
    assert torch.allclose(m.exp_coeffs, a.exp_coeffs.expand(5, -1))
    assert _close_rot(m.rotation, a.rotation.expand(5, 3, 3))
    # a blendshape group moves only its coefficients
    eyes = expression_groups(model)["eyes"]
    e = interpolate_regions(a, b, alpha, only="eyes", model=model)
    assert torch.allclose(e.exp_coeffs[-1, eyes], b.exp_coeffs[0, eyes])
    assert torch.allclose(e.exp_coeffs[:, ~eyes], a.exp_coeffs[:, ~eyes].expand(5, -1))


# ----------------------------------------------------------------------------- controls
@pytest.mark.parametrize("mode", ["relative", "absolute"])
@pytest.mark.parametrize("rel_exp", [False, True])
def test_expression_scale_zero_and_only_pose_keep_the_source_expression(model, cond, mode,
                                                                        rel_exp):
    src, drv = _fits(model, 1, 5), _fits(model, 6, 6)
    ref = drv.index(0)
    plain = cond.target_fits(src, drv, mode, relative_expression=rel_exp, reference=ref)
    for c in (Controls(expression_scale=0.0), Controls(only="pose")):
        d2 = c.driving_fits(src, drv, ref, mode, model, relative_expression=rel_exp)
        tgt = cond.target_fits(src, d2, mode, relative_expression=rel_exp, reference=ref)
        assert torch.allclose(tgt.exp_coeffs, src.exp_coeffs.expand(6, -1), atol=1e-6)
        # the pose is the driver's as without controls
        assert _close_rot(tgt.rotation, plain.rotation)
        assert torch.allclose(tgt.translation, plain.translation, atol=1e-4)
        assert torch.equal(tgt.id_coeffs, src.id_coeffs.expand(6, -1))


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_only_expression_keeps_the_source_pose_and_motion_scale_scales_the_turn(model, cond,
                                                                                mode):
    src, drv = _fits(model, 1, 7, 8.0), _fits(model, 5, 8, 8.0)
    ref = drv.index(2)
    plain = cond.target_fits(src, drv, mode, reference=ref)
    d2 = Controls(only="expression").driving_fits(src, drv, ref, mode, model)
    tgt = cond.target_fits(src, d2, mode, reference=ref)
    assert _close_rot(tgt.rotation, src.rotation.expand(5, 3, 3))
    assert torch.allclose(tgt.scale, src.scale.expand(5), rtol=1e-5)
    assert torch.allclose(tgt.translation, src.translation.expand(5, 2), atol=1e-4)
    assert torch.allclose(tgt.exp_coeffs, plain.exp_coeffs)
    full = T.rotation_angle(src.rotation.expand(5, 3, 3), plain.rotation)
    for k in (0.5, 2.0):
        d3 = Controls(motion_scale=k).driving_fits(src, drv, ref, mode, model)
        t3 = cond.target_fits(src, d3, mode, reference=ref)
        got = T.rotation_angle(src.rotation.expand(5, 3, 3), t3.rotation)
        assert torch.allclose(got, k * full, atol=1e-2), (k, got, full)
        # the motion is scaled along the same rotation axis
        ax_full = T.matrix_to_axis_angle(plain.rotation @ src.rotation.transpose(-1, -2))
        ax_got = T.matrix_to_axis_angle(t3.rotation @ src.rotation.transpose(-1, -2))
        assert torch.allclose(ax_got, k * ax_full, atol=1e-3)
        assert torch.allclose(t3.exp_coeffs, plain.exp_coeffs)


def test_region_eyes_and_expression_scale(model, cond):
    src, drv = _fits(model, 1, 9), _fits(model, 4, 10)
    ref = drv.index(0)
    eyes = expression_groups(model)["eyes"]
    mouth = expression_groups(model)["mouth"]
    d2 = Controls(only="eyes,mouth").driving_fits(src, drv, ref, "relative", model)
    tgt = cond.target_fits(src, d2, "relative", reference=ref)
    sel = eyes | mouth
    assert torch.allclose(tgt.exp_coeffs[:, sel], drv.exp_coeffs[:, sel])
    assert torch.allclose(tgt.exp_coeffs[:, ~sel], src.exp_coeffs[:, ~sel].expand(4, -1))
    assert _close_rot(tgt.rotation, src.rotation.expand(4, 3, 3))  # no pose selected
    # multiplier: the change from the source expression scales, clamped to [0, 1]
    d3 = Controls(expression_scale=1.5).driving_fits(src, drv, ref, "relative", model)
    t3 = cond.target_fits(src, d3, "relative", reference=ref)
    want = (src.exp_coeffs + 1.5 * (drv.exp_coeffs - src.exp_coeffs)).clamp(0, 1)
    assert torch.allclose(t3.exp_coeffs, want, atol=1e-6)
    # relative expression: the driver's change since the reference is scaled
    d4 = Controls(expression_scale=0.5).driving_fits(src, drv, ref, "relative", model,
                                                    relative_expression=True)
    t4 = cond.target_fits(src, d4, "relative", relative_expression=True, reference=ref)
    want = (src.exp_coeffs + 0.5 * (drv.exp_coeffs - ref.exp_coeffs)).clamp(0, 1)
    assert torch.allclose(t4.exp_coeffs, want, atol=1e-6)
    assert Controls().driving_fits(src, drv, ref, "relative", model) is drv


# ----------------------------------------------------------------------------- best frame
def _quat_angle(r0, r1):
    """Independent geodesic angle (radians) through unit-quaternion dot products."""
    q0 = T.matrix_to_quaternion(r0).numpy()
    q1 = T.matrix_to_quaternion(r1).numpy()
    return 2 * np.arccos(np.clip(np.abs((q0 * q1).sum(-1)), 0, 1))


def test_best_reference_frame_picks_the_known_closest_frame(model):
    src = _fits(model, 1, 11)
    drv = _fits(model, 9, 12)
    # frame 6: the source's expression and rotation, slightly perturbed (another identity,
    # scale and translation: they do not matter)
    rot = T.euler_to_matrix(torch.tensor([[1.0, -0.5, 0.3]])) @ src.rotation
    drv.rotation[6] = rot[0]
    drv.exp_coeffs[6] = src.exp_coeffs[0] + 0.01
    assert best_reference_frame(src, drv) == 6
    # without frame 6 (no face there) the brute-force nearest of the others wins
    good = torch.ones(9, dtype=torch.bool)
    good[6] = False
    d = [np.linalg.norm((drv.exp_coeffs[t] - src.exp_coeffs[0]).numpy())
         + 2.0 * _quat_angle(src.rotation[0], drv.rotation[t]) for t in range(9)]
    want = min((t for t in range(9) if t != 6), key=lambda t: d[t])
    assert best_reference_frame(src, drv, good) == want
    assert np.allclose(frame_distance(src, drv).numpy(), d, atol=1e-3)
    with pytest.raises(ValueError, match="no driving frame"):
        best_reference_frame(src, drv, torch.zeros(9, dtype=torch.bool))


# ----------------------------------------------------------------------------- meshes
def test_fit_meshes_project_to_the_fitted_landmarks(model, cond):
    fits = _fits(model, 3, 13)
    v = fit_meshes(model, fits)
    assert v.shape == (3, model.n_vertices, 3)
    lm = v[:, model.landmarks68.long()]
    proj = torch.stack([fits.scale[:, None] * lm[..., 0] + fits.translation[:, None, 0],
                        -fits.scale[:, None] * lm[..., 1] + fits.translation[:, None, 1]], -1)
    assert torch.allclose(proj, cond.fit_landmarks68(fits), atol=1e-3)
    flat = fit_meshes(model, fits, pose=False)
    assert torch.allclose(flat, model.vertices(fits.id_coeffs, fits.exp_coeffs))
