"""BFM loaders on files written in the published layouts from the REAL BFM topology / index
files (../shared/assets/3dmm/bfm) with synthetic basis values.

The synthetic mean shape is real BFM geometry up to a per-axis affine map: 3DDFA_V2's
``ncc_code`` (the bfm_noneck_v3 mean, min-max normalised per axis) mapped per axis onto the
metric 68 mean-face landmarks of ``similarity_Lm3D_all.mat`` (decimetres). A positive
per-axis scale keeps triangle orientation, so winding checks are meaningful.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from facegeo.morphable import (
    MorphableModel,
    load_3ddfa,
    load_bfm2009,
    load_bfm2017,
    load_bfm_front,
    orient_outward,
    restricted_pickle_load,
)

K_ID, K_EXP, K_TEX = 3, 2, 2


def _outward_fraction(mean: np.ndarray, tri: np.ndarray) -> float:
    a, b, c = mean[tri[:, 0]], mean[tri[:, 1]], mean[tri[:, 2]]
    n = np.cross(b - a, c - a)
    return float(((n * ((a + b + c) / 3 - mean.mean(0))).sum(1) > 0).mean())


@pytest.fixture(scope="module")
def geo(assets_dir):
    """Real BFM topology/indices + a realistic synthetic mean (dm) on each vertex set."""
    bdir = assets_dir / "3dmm" / "bfm"
    info = scipy.io.loadmat(bdir / "facemodel_info.mat")
    select_id = scipy.io.loadmat(bdir / "select_vertex_id.mat")["select_id"].reshape(-1)
    idx = scipy.io.loadmat(bdir / "BFM_front_idx.mat")["idx"].reshape(-1).astype(np.int64)
    lm_dm = scipy.io.loadmat(bdir / "similarity_Lm3D_all.mat")["lm"].astype(np.float64)
    aux = np.load(bdir / "3ddfa_v2_bfm_noneck_aux.npz")
    v53215 = aux["vertex_indices_53215"].astype(np.int64)  # noneck -> 53,215 set
    pos = {int(v): i for i, v in enumerate(v53215)}
    front_in_noneck = np.array([pos[int(i) - 1] for i in idx])  # front -> noneck row
    kp_front = info["keypoints"].reshape(-1).astype(np.int64) - 1
    ncc = aux["ncc_code"].astype(np.float64)
    # per-axis affine ncc -> metric landmarks (decimetres)
    x = ncc[front_in_noneck[kp_front]]
    mean_noneck = np.empty_like(ncc)
    for c in range(3):
        s, t = np.polyfit(x[:, c], lm_dm[:, c], 1)
        assert s > 0
        mean_noneck[:, c] = s * ncc[:, c] + t
    return dict(
        bdir=bdir, info=info, select_id=select_id, aux=aux, kp_front=kp_front,
        front_in_noneck=front_in_noneck, mean_noneck_dm=mean_noneck,
        mean_front_dm=mean_noneck[front_in_noneck], lm_dm=lm_dm,
    )


def _rng(seed=0):
    return np.random.default_rng(seed)


def _write_front(geo, path, *, flip=False):
    n = geo["mean_front_dm"].shape[0]
    r = _rng(1)
    d = {k: v for k, v in geo["info"].items() if not k.startswith("__")}  # real topology
    if flip:
        d["tri"] = d["tri"][:, [0, 2, 1]]
    d.update(
        meanshape=geo["mean_front_dm"].reshape(1, -1).astype(np.float32),
        idBase=(r.standard_normal((3 * n, K_ID)) * 1e-3).astype(np.float32),
        exBase=(r.standard_normal((3 * n, K_EXP)) * 1e-3).astype(np.float32),
        meantex=r.uniform(0, 255, (1, 3 * n)).astype(np.float32),
        texBase=r.standard_normal((3 * n, K_TEX)).astype(np.float32),
    )
    scipy.io.savemat(path, d)
    return d


def test_deep3d_front(geo, tmp_path):
    d = _write_front(geo, tmp_path / "BFM_model_front.mat")
    m = MorphableModel.load(tmp_path / "BFM_model_front.mat")  # dispatch on the content
    n = 35709
    assert (m.name, m.units, m.exp_kind, m.n_vertices, m.n_id, m.n_exp, m.n_tex) == (
        "bfm_front", "cm", "pca", n, K_ID, K_EXP, K_TEX)
    # units: decimetres -> centimetres; interleaved xyz
    np.testing.assert_allclose(m.mean.numpy(), d["meanshape"].reshape(-1, 3) * 10, rtol=1e-6)
    np.testing.assert_allclose(m.id_basis[1].numpy(), d["idBase"][:, 1].reshape(-1, 3) * 10,
                               rtol=1e-6)
    np.testing.assert_allclose(m.exp_basis[0, 5].numpy(), d["exBase"][15:18, 0] * 10,
                               rtol=1e-6)
    np.testing.assert_allclose(m.tex_mean.numpy(), d["meantex"].reshape(-1, 3) / 255,
                               rtol=1e-6)
    # 1-based -> 0-based, real landmarks land on the real 3D mean-face landmarks
    tri = d["tri"].astype(np.int64) - 1
    np.testing.assert_array_equal(m.triangles.numpy(), tri)  # already CCW: kept
    np.testing.assert_array_equal(m.landmarks68.numpy(), geo["kp_front"])
    lm = m.landmarks()[0].numpy()
    assert np.abs(lm - geo["lm_dm"] * 10).max() < 0.6  # per-axis affine fit residual, cm
    iod = np.linalg.norm(lm[36] - lm[45])
    assert 7.5 < iod < 10.5  # outer eye corners ~ 8.6 cm
    # winding: outward, and the face looks to +z
    assert _outward_fraction(m.mean.numpy(), m.triangles.numpy()) > 0.9
    assert m.face_normals(m.mean)[0].sum(0)[2] > 0
    assert m.vertex_normals(m.mean)[0, int(m.landmarks68[30]), 2] > 0.5  # nose tip
    # masks
    np.testing.assert_array_equal(
        m.vertex_sets["frontmask2"].numpy(), d["frontmask2_idx"].reshape(-1).astype(int) - 1)
    assert m.vertex_sets["skin"].numel() == int(d["skinmask"].sum())
    # std: bases are pre-scaled
    assert torch.equal(m.id_std, torch.ones(K_ID))
    # texture model: linear in the coefficients, 0-255 -> [0, 1]
    c = torch.tensor([[0.5, -2.0]])
    ref = (d["meantex"].reshape(-1, 3) + 0.5 * d["texBase"][:, 0].reshape(-1, 3)
           - 2.0 * d["texBase"][:, 1].reshape(-1, 3)) / 255
    np.testing.assert_allclose(m.texture(c)[0].numpy(), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tex_coeffs"):
        m.texture(torch.zeros(1, 3))
    # PCA expression model against eos-py's reconstruction of the same arrays
    a, e = torch.tensor([[1.0, -0.5, 2.0]]), torch.tensor([[0.3, -1.2]])
    ref = np.asarray(m.to_eos().draw_sample(a[0].tolist(), e[0].tolist(), []).vertices)
    np.testing.assert_allclose(m.vertices(a, e)[0].numpy(), ref, atol=1e-4)


def test_deep3d_front_flipped_winding_and_units(geo, tmp_path):
    _write_front(geo, tmp_path / "f.mat", flip=True)
    ref_tri = geo["info"]["tri"].astype(np.int64) - 1
    m = load_bfm_front(tmp_path / "f.mat")
    np.testing.assert_array_equal(m.triangles.numpy(), ref_tri)  # flipped back to CCW
    keep = load_bfm_front(tmp_path / "f.mat", winding="keep")
    np.testing.assert_array_equal(keep.triangles.numpy(), ref_tri[:, [0, 2, 1]])
    dm = load_bfm_front(tmp_path / "f.mat", units="dm", n_id=1, recenter=True)
    assert dm.units == "dm" and dm.n_id == 1
    np.testing.assert_allclose(dm.mean.mean(0).numpy(), 0, atol=1e-5)
    with pytest.raises(ValueError, match="src_units"):
        load_bfm_front(tmp_path / "f.mat", src_units="um")


def test_deep3d_front_bad_point_buf(geo, tmp_path):
    d = _write_front(geo, tmp_path / "f.mat")
    d["point_buf"] = d["point_buf"] - 1  # pretend it was 0-based: wrong triangles
    d["point_buf"][d["point_buf"] < 0] = 0
    scipy.io.savemat(tmp_path / "bad.mat", d)
    with pytest.raises(ValueError, match="point_buf"):
        load_bfm_front(tmp_path / "bad.mat")


def test_bfm2009(geo, tmp_path):
    n09 = 53490
    r = _rng(2)
    sel = geo["select_id"].astype(np.int64) - 1  # front -> BFM09 (0-based)
    mean_um = np.zeros((n09, 3))
    mean_um[:] = geo["mean_front_dm"].mean(0) * 1e5
    mean_um[sel] = geo["mean_front_dm"] * 1e5  # dm -> um
    tl = geo["select_id"][geo["info"]["tri"].astype(np.int64) - 1].astype(np.float64)
    pc = np.linalg.qr(r.standard_normal((3 * n09, K_ID)))[0]
    ev = np.array([[4e4], [3e4], [2e4]])
    d = dict(shapeMU=mean_um.reshape(-1, 1).astype(np.float32), shapePC=pc.astype(np.float32),
             shapeEV=ev, texMU=r.uniform(0, 255, (3 * n09, 1)), texPC=pc[:, :K_TEX],
             texEV=ev[:K_TEX], tl=tl)
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", d)
    m = load_bfm2009(tmp_path / "01_MorphableModel.mat", landmark_dir=geo["bdir"])
    assert (m.name, m.units, m.n_vertices, m.n_id, m.n_exp) == ("bfm2009", "cm", n09, 3, 0)
    np.testing.assert_allclose(m.mean.numpy(), mean_um * 1e-4, rtol=1e-5)
    np.testing.assert_allclose(m.id_basis[2].numpy(), pc[:, 2].reshape(-1, 3) * 2e4 * 1e-4,
                               rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(m.triangles.numpy(), tl.astype(np.int64) - 1)
    # landmarks derived through select_id agree with the front model's landmarks
    np.testing.assert_array_equal(m.landmarks68.numpy(), sel[geo["kp_front"]])
    np.testing.assert_allclose(m.landmarks()[0].numpy(),
                               geo["mean_front_dm"][geo["kp_front"]] * 10, rtol=1e-5)
    # the front submesh of the 2009 model is the front model's geometry
    sub = m.submesh(torch.as_tensor(sel))
    np.testing.assert_array_equal(sub.triangles.numpy(),
                                  geo["info"]["tri"].astype(np.int64) - 1)
    assert _outward_fraction(sub.mean.numpy(), sub.triangles.numpy()) > 0.9
    # without the Deep3D index files next to it there are no landmarks
    assert load_bfm2009(tmp_path / "01_MorphableModel.mat").landmarks68 is None


def _noneck_arrays(geo, seed=3):
    r = _rng(seed)
    n = geo["mean_noneck_dm"].shape[0]
    kp_noneck = geo["front_in_noneck"][geo["kp_front"]]
    keypoints = (3 * kp_noneck[:, None] + np.arange(3)).reshape(-1)
    return dict(
        u=(geo["mean_noneck_dm"] * 1e5).reshape(-1, 1).astype(np.float32),  # um
        w_shp=(r.standard_normal((3 * n, K_ID)) * 1e3).astype(np.float32),
        w_exp=(r.standard_normal((3 * n, K_EXP)) * 1e3).astype(np.float32),
        keypoints=keypoints.astype(np.int64),
    ), kp_noneck


def test_3ddfa_pkl_with_tri_pkl(geo, tmp_path):
    d, kp_noneck = _noneck_arrays(geo)
    with open(tmp_path / "bfm_noneck_v3.pkl", "wb") as f:
        pickle.dump(d, f, protocol=2)
    tri_inward = geo["aux"]["tri"].astype(np.int64)  # 3DDFA_V2 configs/tri.pkl, 0-based
    with open(tmp_path / "tri.pkl", "wb") as f:
        pickle.dump(np.ascontiguousarray(tri_inward.T), f)  # stored (3, F)
    assert _outward_fraction(geo["mean_noneck_dm"], tri_inward) < 0.1  # really inward
    m = MorphableModel.load(tmp_path / "bfm_noneck_v3.pkl")
    assert (m.n_vertices, m.n_id, m.n_exp, m.units) == (38365, K_ID, K_EXP, "cm")
    np.testing.assert_array_equal(m.triangles.numpy(), tri_inward[:, [0, 2, 1]])
    assert _outward_fraction(m.mean.numpy(), m.triangles.numpy()) > 0.9
    np.testing.assert_allclose(m.mean.numpy(), geo["mean_noneck_dm"] * 10, rtol=1e-5)
    np.testing.assert_allclose(m.exp_basis[1].numpy(), d["w_exp"][:, 1].reshape(-1, 3) * 1e-4,
                               rtol=1e-5)
    np.testing.assert_array_equal(m.landmarks68.numpy(), kp_noneck)
    assert m.id_std is None
    # the .npz form of the same keys (tri inside, 1-based -> detected)
    np.savez(tmp_path / "noneck.npz", tri=tri_inward.T + 1, **d)
    m2 = MorphableModel.load(tmp_path / "noneck.npz")
    assert torch.equal(m2.triangles, m.triangles) and torch.equal(m2.mean, m.mean)


def test_3ddfa_bad_keypoints_and_missing_tri(geo, tmp_path):
    d, _ = _noneck_arrays(geo)
    np.savez(tmp_path / "notri.npz", **d)
    with pytest.raises(ValueError, match="tri"):
        load_3ddfa(tmp_path / "notri.npz")
    d["keypoints"] = d["keypoints"][::-1].copy()
    np.savez(tmp_path / "badkp.npz", tri=geo["aux"]["tri"], **d)
    with pytest.raises(ValueError, match="keypoints"):
        load_3ddfa(tmp_path / "badkp.npz")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler(tmp_path):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"u": _Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        restricted_pickle_load(tmp_path / "evil.pkl")
    with pytest.raises(pickle.UnpicklingError):
        load_3ddfa(tmp_path / "evil.pkl")
    good = {"a": np.arange(5, dtype=np.int32), "b": [1.5, "x"], "c": np.float64(2.0),
            "d": np.ones((2, 3), dtype=np.float32).T}
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        with open(tmp_path / "good.pkl", "wb") as f:
            pickle.dump(good, f, protocol=proto)
        out = restricted_pickle_load(tmp_path / "good.pkl")
        np.testing.assert_array_equal(out["a"], good["a"])
        np.testing.assert_array_equal(out["d"], good["d"])
        assert out["b"] == [1.5, "x"] and out["c"] == 2.0


def test_bfm2017_h5(geo, tmp_path):
    """statismo layout (BFM2017 topology is not available: the real front topology is used)."""
    r = _rng(4)
    mean_mm = geo["mean_front_dm"] * 100
    n = mean_mm.shape[0]
    tri0 = geo["info"]["tri"].astype(np.int64) - 1
    U = np.linalg.qr(r.standard_normal((3 * n, K_ID + K_EXP + K_TEX)))[0]
    var = np.array([400.0, 100.0, 25.0])
    exp_mean = r.standard_normal(3 * n) * 0.1
    with h5py.File(tmp_path / "model2017-1_face12_nomouth.h5", "w") as f:
        for group, mean, basis, v in (
            ("shape", mean_mm.reshape(-1), U[:, :K_ID], var),
            ("expression", exp_mean, U[:, K_ID:K_ID + K_EXP], var[:K_EXP]),
            ("color", r.uniform(0, 1, 3 * n), U[:, -K_TEX:], var[:K_TEX] * 1e-4),
        ):
            f[f"{group}/model/mean"] = mean.astype(np.float32)
            f[f"{group}/model/pcaBasis"] = basis.astype(np.float32)
            f[f"{group}/model/pcaVariance"] = v.astype(np.float32)
            f[f"{group}/representer/cells"] = tri0.T.astype(np.uint32)
            f[f"{group}/representer/points"] = mean_mm.T.astype(np.float32)
    m = MorphableModel.load(tmp_path / "model2017-1_face12_nomouth.h5",
                            landmarks68=geo["kp_front"])
    assert (m.name, m.units, m.n_id, m.n_exp, m.n_tex) == ("bfm2017", "cm", K_ID, K_EXP, K_TEX)
    np.testing.assert_allclose(m.mean.numpy(), (mean_mm + exp_mean.reshape(-1, 3)) * 0.1,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.id_basis[0].numpy(), U[:, 0].reshape(-1, 3) * 20 * 0.1,
                               rtol=1e-4, atol=1e-8)
    np.testing.assert_array_equal(m.triangles.numpy(), tri0)
    assert torch.equal(m.landmarks68, torch.as_tensor(geo["kp_front"]))
    # Gaussian check: coefficient 1 moves the mesh by one standard deviation (RMS over xyz
    # rows of an orthonormal column = 1 / sqrt(3N)), in cm
    disp = (m.vertices(torch.tensor([[1.0, 0, 0]])) - m.mean).norm()
    assert disp.item() == pytest.approx(20 * 0.1, rel=1e-4)
    nolm = load_bfm2017(tmp_path / "model2017-1_face12_nomouth.h5")
    with pytest.raises(ValueError, match="no 68-point"):
        nolm.landmarks()


def test_orient_outward_tetrahedron():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    tri, flipped = orient_outward(v, out[:, [0, 2, 1]])
    np.testing.assert_array_equal(tri, out)
    assert flipped
    assert not orient_outward(v, out)[1]
    with pytest.raises(ValueError):
        orient_outward(v, out, winding="cw")


def test_bfm2009_matlab_v73(tmp_path):
    """MATLAB v7.3 (HDF5) .mat files are read through h5py (column-major -> transposed)."""
    v_um = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]) * 1e5  # 10 cm tetrahedron
    tl = np.array([[1, 3, 2], [1, 2, 4], [1, 4, 3], [2, 3, 4]], dtype=np.float64)  # outward
    pc = np.linalg.qr(_rng(5).standard_normal((12, 2)))[0]
    arrays = dict(shapeMU=v_um.reshape(-1, 1), shapePC=pc, shapeEV=np.array([[2.0], [1.0]]),
                  tl=tl)
    path = tmp_path / "01_MorphableModel.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, a in arrays.items():
            f[k] = a.T  # MATLAB writes column-major: h5py sees the transpose
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM")
    with pytest.raises(NotImplementedError):
        scipy.io.loadmat(path)  # really a v7.3 file
    m = load_bfm2009(path)
    np.testing.assert_allclose(m.mean.numpy(), v_um * 1e-4, atol=1e-6)
    np.testing.assert_array_equal(m.triangles.numpy(), tl.astype(int) - 1)
    np.testing.assert_allclose(m.id_basis[0].numpy(), pc[:, 0].reshape(4, 3) * 2e-4, atol=1e-7)
    assert m.landmarks68 is None and m.n_exp == 0
