"""Tests of the MorphableModel core (ICT-FaceKit default model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from facegeo.assets import AssetNotFoundError
from facegeo.morphable import FORMAT_VERSION, MorphableModel, unit_scale


def _obj_vertices(path) -> np.ndarray:
    """Independent reference parser: the ``v`` lines of an OBJ file, float64."""
    rows = [ln.split()[1:4] for ln in open(path) if ln.startswith("v ")]
    return np.asarray(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def ict(assets_dir) -> MorphableModel:
    return MorphableModel.load()


@pytest.fixture(scope="module")
def ict_src(assets_dir):
    return assets_dir / "3dmm" / "ict_facekit_source_subset" / "FaceXModel"


@pytest.fixture
def tiny() -> MorphableModel:
    """A tetrahedron (outward CCW winding) with 2 identity and 1 expression vectors."""
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    tri = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    lm = torch.arange(68) % 4
    return MorphableModel(mean, tri, torch.randn(2, 4, 3, generator=g) * 0.1,
                          torch.randn(1, 4, 3, generator=g) * 0.1, id_std=[1.0, 1.0],
                          exp_kind="blendshape", landmarks68=lm,
                          contour={"right": [0, 1], "left": [2, 3]}, name="tet")


def test_default_model_is_ict(ict):
    assert ict.name == "ict_facekit" and ict.units == "cm" and ict.exp_kind == "blendshape"
    assert (ict.n_vertices, ict.n_id, ict.n_exp) == (11248, 100, 53)
    assert ict.triangles.dtype == torch.int64 and ict.triangles.shape == (22288, 3)
    assert ict.landmarks68.shape == (68,) and ict.landmarks68.dtype == torch.int64
    assert ict.mean.dtype == torch.float32 and ict.id_basis.dtype == torch.float32
    assert set(ict.contour) >= {"right", "left"} and ict.contour["right"].shape == (17,)
    assert torch.equal(ict.id_std, torch.ones(100))
    assert ict.exp_names[ict.exp_names.index("jawOpen")] == "jawOpen"


def test_reconstruction_matches_obj(ict, ict_src):
    """mean + id_basis[k] == identityNNN.obj and mean + exp_basis[j] == <exp>.obj on the
    kept vertices, within float16 rounding of the stored bases."""
    V = ict.n_vertices
    neutral = _obj_vertices(ict_src / "generic_neutral_mesh.obj")[:V]
    np.testing.assert_allclose(ict.mean.numpy(), neutral, atol=1e-5)
    for k in (0, 1):
        a = torch.zeros(1, ict.n_id)
        a[0, k] = 1.0
        ref = _obj_vertices(ict_src / f"identity{k:03d}.obj")[:V]
        got = ict.vertices(a)[0].double().numpy()
        np.testing.assert_allclose(got, ref, atol=1e-3)
    for name in ("jawOpen", "mouthSmile_L", "eyeBlink_L"):
        e = torch.zeros(1, ict.n_exp)
        e[0, ict.exp_names.index(name)] = 1.0
        ref = _obj_vertices(ict_src / f"{name}.obj")[:V]
        np.testing.assert_allclose(ict.vertices(exp_coeffs=e)[0].double().numpy(), ref,
                                   atol=2e-3)


def test_vertices_is_linear_and_batched(ict):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, ict.n_id, generator=g)
    e = torch.rand(3, ict.n_exp, generator=g)
    v = ict.vertices(a, e)
    assert v.shape == (3, ict.n_vertices, 3)
    ref = (ict.mean.double() + torch.einsum("bk,kvc->bvc", a.double(), ict.id_basis.double())
           + torch.einsum("bk,kvc->bvc", e.double(), ict.exp_basis.double()))
    torch.testing.assert_close(v.double(), ref, atol=1e-4, rtol=0)
    assert torch.equal(ict.vertices(), ict.mean[None])
    assert ict.vertices(exp_coeffs=e).shape[0] == 3
    assert ict.vertices(a[0]).shape == (1, ict.n_vertices, 3)
    # landmark bases agree with gathering from the full mesh
    m, il, el = ict.landmark_bases()
    lm_fast = m + torch.einsum("bk,kvc->bvc", a, il) + torch.einsum("bk,kvc->bvc", e, el)
    torch.testing.assert_close(lm_fast, ict.landmarks(v), atol=1e-4, rtol=0)
    torch.testing.assert_close(ict.landmarks(v)[:, 30], v[:, int(ict.landmarks68[30])])


def test_vertices_differentiable(tiny):
    a = torch.zeros(2, 2, requires_grad=True)
    e = torch.zeros(2, 1, requires_grad=True)
    tiny.vertices(a, e).sum().backward()
    torch.testing.assert_close(a.grad[0], tiny.id_basis.sum(dim=(1, 2)))
    torch.testing.assert_close(e.grad[1], tiny.exp_basis.sum(dim=(1, 2)))


def test_bad_coefficients(tiny):
    with pytest.raises(ValueError, match="id_coeffs"):
        tiny.vertices(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="exp_coeffs"):
        tiny.vertices(exp_coeffs=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="batch"):
        tiny.vertices(torch.zeros(2, 2), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="NaN"):
        tiny.vertices(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        tiny.vertices(exp_coeffs=torch.tensor([[float("inf")]]))
    with pytest.raises(ValueError, match="shape"):
        tiny.vertices(torch.zeros(1, 1, 2))
    with pytest.raises(TypeError):
        tiny.vertices(torch.zeros(1, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="vertices"):
        tiny.landmarks(torch.zeros(1, 5, 3))


def test_bad_construction():
    mean = torch.zeros(4, 3)
    tri = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="triangles"):
        MorphableModel(mean, torch.tensor([[0, 1, 4]]))
    with pytest.raises(ValueError, match="mean"):
        MorphableModel(torch.zeros(4, 2), tri)
    with pytest.raises(ValueError, match="id_basis"):
        MorphableModel(mean, tri, torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="NaN"):
        MorphableModel(mean, tri, torch.full((1, 4, 3), float("nan")))
    with pytest.raises(ValueError, match="landmarks68"):
        MorphableModel(mean, tri, landmarks68=torch.zeros(67, dtype=torch.long))
    with pytest.raises(ValueError, match="exp_kind"):
        MorphableModel(mean, tri, exp_kind="linear")
    with pytest.raises(TypeError, match="triangles"):
        MorphableModel(mean, torch.tensor([[0.0, 1.5, 2.0]]))
    with pytest.raises(ValueError, match="units"):
        MorphableModel(mean, tri, units="inch")


def test_vertex_normals_match_trimesh(ict):
    v = ict.vertices(torch.randn(2, ict.n_id, generator=torch.Generator().manual_seed(2)))
    n = ict.vertex_normals(v)
    assert n.shape == v.shape
    for b in range(2):
        mesh = trimesh.Trimesh(v[b].double().numpy(), ict.triangles.numpy(), process=False)
        # trimesh's own default is angle-weighted; build its area-weighted variant from
        # trimesh's face normals / areas and its sparse vertex-face incidence
        ref = trimesh.geometry.mean_vertex_normals(
            len(mesh.vertices), mesh.faces, mesh.face_normals * mesh.area_faces[:, None])
        ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        cos = (n[b].double().numpy() * ref).sum(-1)
        assert cos.min() > 1 - 1e-4
        # and close to trimesh's angle-weighted normals on this smooth mesh (median)
        assert np.median((n[b].double().numpy() * mesh.vertex_normals).sum(-1)) > 0.999
    # outward: the face looks towards +z, the normal at the nose tip points forward
    assert n[0, int(ict.landmarks68[30]), 2] > 0.9


def test_vertex_normals_tetrahedron_outward(tiny):
    n = tiny.vertex_normals(tiny.mean)
    centroid = tiny.mean.mean(0)
    assert ((tiny.mean - centroid) * n[0]).sum(-1).min() > 0
    torch.testing.assert_close(n[0, 0], -torch.ones(3) / 3**0.5)  # analytic: corner at origin


def test_vertex_normals_gradcheck(tiny):
    m = tiny.to(dtype=torch.float64)
    v = (m.mean + 0.05 * torch.randn(4, 3, dtype=torch.float64)).unsqueeze(0)
    assert torch.autograd.gradcheck(m.vertex_normals, (v.requires_grad_(),))


def test_normals_are_the_raster_normals_with_eps(tiny):
    # one implementation: MorphableModel.{face,vertex}_normals call facegeo.raster's, keeping
    # their defaults (unnormalised face normals; unit vertex normals, eps 1e-12)
    from facegeo.raster import face_normals, vertex_normals

    v = (tiny.mean + 0.05 * torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(tiny.face_normals(v), face_normals(v, tiny.triangles, normalize=False))
    assert torch.equal(tiny.vertex_normals(v), vertex_normals(v, tiny.triangles))
    torch.testing.assert_close(tiny.vertex_normals(v).norm(dim=-1), torch.ones(3, 4))
    # eps clamps the length of the summed normal; an unused vertex gets a zero vector
    m5 = torch.cat([tiny.mean, torch.tensor([[5.0, 5, 5]])]).unsqueeze(0)
    n = vertex_normals(m5, tiny.triangles, eps=1e-12)
    assert torch.equal(n[0, 4], torch.zeros(3))
    big = vertex_normals(m5, tiny.triangles, eps=1e3)  # every |sum| < 1e3: divided by 1e3
    assert big.shape == (1, 5, 3) and 0 < big[0, :4].norm(dim=-1).min() < 1e-2
    assert torch.equal(tiny.vertex_normals(tiny.mean, eps=1e3), big[:, :4])


def test_to_device_dtype(ict, tiny):
    m64 = tiny.to(dtype=torch.float64)
    assert m64.mean.dtype == torch.float64 and m64.triangles.dtype == torch.int64
    assert tiny.mean.dtype == torch.float32  # original unchanged
    a = torch.randn(2, 2, dtype=torch.float64)
    torch.testing.assert_close(m64.vertices(a), tiny.vertices(a.float()).double(), atol=1e-6,
                               rtol=0)
    assert m64.to(device="cpu").device == torch.device("cpu")
    if torch.cuda.is_available():
        g = ict.to("cuda")
        a = torch.randn(2, ict.n_id)
        torch.testing.assert_close(g.vertices(a.cuda()).cpu(), ict.vertices(a), atol=1e-4,
                                   rtol=0)
        torch.testing.assert_close(g.vertex_normals(g.mean).cpu(), ict.vertex_normals(ict.mean),
                                   atol=1e-4, rtol=0)
        with pytest.raises(ValueError, match="device"):
            g.vertices(a)


def test_truncate(ict):
    t = ict.truncate(n_id=10, n_exp=5)
    assert (t.n_id, t.n_exp, len(t.exp_names), t.id_std.shape[0]) == (10, 5, 5, 10)
    a = torch.randn(1, 10)
    full = torch.cat([a, torch.zeros(1, 90)], 1)
    torch.testing.assert_close(t.vertices(a), ict.vertices(full))
    with pytest.raises(ValueError):
        ict.truncate(n_id=101)


def test_submesh(ict):
    ids = torch.arange(9409)  # the face region of ICT
    s = ict.submesh(ids)
    assert s.n_vertices == 9409
    a = torch.randn(2, ict.n_id)
    torch.testing.assert_close(s.vertices(a), ict.vertices(a)[:, :9409])
    # triangles: exactly those with all corners < 9409, same order
    keep = (ict.triangles < 9409).all(1)
    assert torch.equal(s.triangles, ict.triangles[keep])
    assert torch.equal(s.landmarks68, ict.landmarks68)
    assert torch.equal(s.faces_uv, ict.faces_uv[keep])
    # permuted subset: geometry of each triangle is preserved
    g = torch.Generator().manual_seed(3)
    perm = torch.randperm(ict.n_vertices, generator=g)
    p = ict.submesh(perm)
    torch.testing.assert_close(p.landmarks(p.vertices(a)), ict.landmarks(ict.vertices(a)))
    torch.testing.assert_close(p.vertex_normals(p.mean)[0], ict.vertex_normals(ict.mean)[0, perm])
    torch.testing.assert_close(p.mean[p.contour["left"]], ict.mean[ict.contour["left"]])
    # dropping a landmark vertex
    mask = torch.ones(ict.n_vertices, dtype=torch.bool)
    mask[ict.landmarks68[30]] = False
    with pytest.raises(ValueError, match="landmarks \\[30\\]"):
        ict.submesh(mask)
    d = ict.submesh(mask, missing_landmarks="drop")
    assert d.landmarks68 is None and d.n_vertices == ict.n_vertices - 1
    with pytest.raises(ValueError, match="no 68-point"):
        d.landmarks()
    with pytest.raises(ValueError, match="duplicates"):
        ict.submesh(torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="vertex_ids"):
        ict.submesh(torch.tensor([0, ict.n_vertices]))


@pytest.mark.parametrize("ext", ["obj", "ply"])
def test_export_roundtrip(ict, tmp_path, ext):
    v = ict.vertices(torch.randn(1, ict.n_id), torch.rand(1, ict.n_exp))
    out = ict.export(tmp_path / f"face.{ext}", v)
    mesh = trimesh.load(out, process=False)
    np.testing.assert_allclose(mesh.vertices, v[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(mesh.faces, ict.triangles.numpy())
    with pytest.raises(ValueError, match="one mesh"):
        ict.export(tmp_path / "x.obj", v.expand(2, -1, -1))


def test_native_save_load_roundtrip(ict, tmp_path):
    p = ict.save(tmp_path / "ict_native.npz")
    with np.load(p, allow_pickle=False) as z:  # never needs pickle
        assert int(z["format_version"]) == FORMAT_VERSION
        assert z["id_basis"].dtype == np.float16
    m = MorphableModel.load(p)
    a, e = torch.randn(2, ict.n_id), torch.rand(2, ict.n_exp)
    # the ICT bases were fp16 already: the round trip is exact
    torch.testing.assert_close(m.vertices(a, e), ict.vertices(a, e), atol=0, rtol=0)
    assert m.exp_names == ict.exp_names and m.exp_names_arkit == ict.exp_names_arkit
    for k in ict.contour:
        assert torch.equal(m.contour[k], ict.contour[k])
    assert torch.equal(m.vertex_sets["fitting"], ict.vertex_sets["fitting"])
    assert torch.equal(m.faces_uv, ict.faces_uv) and torch.equal(m.uv, ict.uv)
    assert (m.units, m.exp_kind, m.name) == (ict.units, ict.exp_kind, ict.name)
    # fp32 storage keeps arbitrary values exactly
    t = MorphableModel(torch.rand(5, 3), [[0, 1, 2]], torch.rand(2, 5, 3) * 1e-3, units="mm")
    t2 = MorphableModel.load(t.save(tmp_path / "t.npz", basis_dtype="float32"))
    assert torch.equal(t2.id_basis, t.id_basis) and t2.units == "mm" and t2.n_exp == 0


def test_newer_format_version_rejected(tiny, tmp_path):
    d = tiny.to_numpy_dict()
    d["format_version"] = np.array(FORMAT_VERSION + 1)
    np.savez(tmp_path / "future.npz", **d)
    with pytest.raises(ValueError, match="format_version"):
        MorphableModel.load(tmp_path / "future.npz")


def test_missing_bfm_says_where_to_register(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEGEO_ASSETS", str(tmp_path))
    monkeypatch.setenv("FACEGEO_CACHE", str(tmp_path / "cache"))
    for name in ("bfm2009", "bfm_front", "bfm2017"):
        with pytest.raises(AssetNotFoundError, match="faces.dmi.unibas.ch"):
            MorphableModel.load(name)


def test_matches_eos_draw_sample(ict):
    """Independent reference: eos-py builds the same model and draws the same sample."""
    small = ict.truncate(n_id=20)
    em = small.to_eos()
    g = torch.Generator().manual_seed(5)
    a, e = torch.randn(1, 20, generator=g), torch.rand(1, ict.n_exp, generator=g)
    mesh = em.draw_sample(a[0].tolist(), e[0].tolist(), [])
    ref = np.asarray(mesh.vertices)
    np.testing.assert_allclose(small.vertices(a, e)[0].numpy(), ref, atol=2e-4)
    assert np.array_equal(np.asarray(mesh.tvi), ict.triangles.numpy())


def test_unit_scale():
    assert unit_scale("dm", "cm") == pytest.approx(10.0)
    assert unit_scale("um", "cm") == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        unit_scale("inch", "cm")


def test_linear_shape_is_the_one_evaluation():
    """linear_shape (used by MorphableModel.vertices, the geometric reenactor's face mesh,
    its landmark projection and the LD-Net synthesiser) against a per-vertex loop, with
    leading-component truncation."""
    from facegeo.morphable import linear_shape

    g = torch.Generator().manual_seed(0)
    mean, idb, exb = (torch.randn(*s, generator=g, dtype=torch.float64)
                      for s in ((7, 3), (5, 7, 3), (4, 7, 3)))
    a, e = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(
        2, 4, generator=g, dtype=torch.float64)
    want = torch.stack([torch.stack([mean[v] + sum(a[b, k] * idb[k, v] for k in range(3))
                                     + sum(e[b, k] * exb[k, v] for k in range(4))
                                     for v in range(7)]) for b in range(2)])
    torch.testing.assert_close(linear_shape(mean, idb, exb, a, e), want)
    torch.testing.assert_close(linear_shape(mean, idb, exb), mean[None])
    with pytest.raises(ValueError, match="6 coefficients"):
        linear_shape(mean, idb, exb, torch.zeros(1, 6))


def test_load_dispatches_through_the_loader_registry(tiny, tmp_path, monkeypatch):
    import facegeo.morphable.model as mm
    from facegeo.morphable import register_loader, registered_loaders

    monkeypatch.setattr(mm, "_LOADERS", dict(mm._LOADERS))
    monkeypatch.setattr(mm, "_NPZ_LAYOUTS", dict(mm._NPZ_LAYOUTS))
    assert {".mat", ".h5", ".hdf5", ".pkl", ".npz", "npz:native", "npz:ict",
            "npz:3ddfa"} <= set(registered_loaders())
    # unknown formats name the registered ones
    (tmp_path / "m.dummy").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown model file type '\.dummy'.*\.mat.*\.pkl"):
        MorphableModel.load(tmp_path / "m.dummy")
    # a new format is one registration; load passes device, dtype and the options through
    calls = []

    def dummy(path, *, device=None, dtype=torch.float32, **kwargs):
        calls.append((path.name, dtype, kwargs))
        return tiny
    register_loader(".DUMMY", dummy)
    assert ".dummy" in registered_loaders()
    assert MorphableModel.load(tmp_path / "m.dummy", dtype=torch.float64, units="mm") is tiny
    assert calls == [("m.dummy", torch.float64, {"units": "mm"})]
    # .npz layouts: tried in order by the arrays they hold; unknown ones list the layouts
    np.savez(tmp_path / "odd.npz", foo=np.zeros(3))
    with pytest.raises(ValueError, match=r"unrecognised \.npz.*'native', 'ict', '3ddfa'"):
        MorphableModel.load(tmp_path / "odd.npz")
    register_loader("foo", lambda p, d, **kw: (calls.append(sorted(d)), tiny)[1],
                    npz_keys=("foo",))
    assert MorphableModel.load(tmp_path / "odd.npz") is tiny and calls[-1] == ["foo"]
    assert "npz:foo" in registered_loaders()
    with pytest.raises(ValueError, match="suffix"):
        register_loader("mat", dummy)
    with pytest.raises(TypeError):
        register_loader(".x", None)


def test_model_module_does_not_import_the_bfm_loaders():
    # the loaders register themselves; model.py dispatches without importing bfm.py
    import inspect

    import facegeo.morphable.model as mm

    assert "morphable.bfm" not in inspect.getsource(mm)
    assert "import bfm" not in inspect.getsource(mm)
