"""ICT-FaceKit converter: original FaceXModel/ files -> MorphableModel / native format."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from facegeo.morphable import (
    MorphableModel,
    convert_ict_facekit,
    ict_to_arkit_name,
    load_ict_facekit_dir,
    parse_ict_readme,
    read_obj,
)

EXPRS = ["jawOpen", "mouthSmile_L", "eyeBlink_L"]


@pytest.fixture(scope="module")
def src(assets_dir):
    return assets_dir / "3dmm" / "ict_facekit_source_subset" / "FaceXModel"


@pytest.fixture(scope="module")
def ref(assets_dir):
    with np.load(assets_dir / "3dmm" / "ict_facekit.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def converted(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("ict") / "ict_subset.npz"
    convert_ict_facekit(src, out, expressions=EXPRS)
    return MorphableModel.load(out)


def _fp16_close(got: np.ndarray, want16: np.ndarray) -> None:
    """``got`` (float32 from OBJ text) equals the float16-stored ``want16`` within float16
    rounding: |got - want| <= ulp16(|want|) / 2 (+ float32 slack)."""
    want = want16.astype(np.float64)
    tol = np.maximum(np.abs(want), 6.1e-5) * 2.0**-11 + 1e-6
    assert np.all(np.abs(got.astype(np.float64) - want) <= tol)


def test_converter_reproduces_shared_npz(converted, ref):
    m = converted
    assert (m.n_vertices, m.n_triangles, m.n_id, m.n_exp) == (11248, 22288, 2, 3)
    np.testing.assert_array_equal(m.mean.numpy(), ref["mean"])
    for k in range(2):
        _fp16_close(m.id_basis[k].numpy(), ref["id_basis"][k])
    names = list(ref["exp_names"])
    for j, name in enumerate(EXPRS):
        _fp16_close(m.exp_basis[j].numpy(), ref["exp_basis"][names.index(name)])
        assert m.exp_names_arkit[j] == ref["exp_names_arkit"][names.index(name)]
    np.testing.assert_array_equal(m.triangles.numpy(), ref["faces"])
    np.testing.assert_array_equal(m.landmarks68.numpy(), ref["landmarks68"])
    np.testing.assert_array_equal(m.contour["right"].numpy(), ref["jawline_right_extended"])
    np.testing.assert_array_equal(m.contour["left_short"].numpy(), ref["jawline_left"])
    np.testing.assert_array_equal(m.vertex_sets["rigid"].numpy(), ref["rigid_vertices"])
    np.testing.assert_array_equal(m.vertex_region.numpy(), ref["vertex_region"])
    assert m.region_names == list(ref["region_names"])
    np.testing.assert_array_equal(m.uv_coords.numpy(), ref["uv"])
    np.testing.assert_array_equal(m.faces_uv.numpy(), ref["faces_uv"])
    np.testing.assert_array_equal(m.uv.numpy(), ref["vertex_uv"])
    assert m.units == "cm" and m.exp_kind == "blendshape" and m.id_names == ["identity000",
                                                                             "identity001"]


def test_quad_split_against_obj_polygons(src, converted):
    """Independent check of the triangulation: every kept OBJ quad (a,b,c,d) gives
    triangles (a,b,c), (a,c,d) in order, and the winding is outward (+z on the face)."""
    _, _, polys, _ = read_obj(src / "generic_neutral_mesh.obj")
    quads = np.asarray(polys[:11144])
    assert quads.shape == (11144, 4)
    tri = converted.triangles.numpy()
    np.testing.assert_array_equal(tri[0::2], quads[:, [0, 1, 2]])
    np.testing.assert_array_equal(tri[1::2], quads[:, [0, 2, 3]])
    n = converted.face_normals(converted.mean)[0]
    face_tris = (converted.triangles < 9409).all(1)
    assert n[face_tris].sum(0)[2] > 0


def test_parse_readme_matches_json(src):
    rd = parse_ict_readme(src.parent / "ICT-FaceKit-README.md")
    info = json.loads((src / "vertex_indices.json").read_text())
    assert rd["landmarks68"] == info["idx_to_landmark_verts"]
    assert rd["geometries"]["Face"] == (0, 9408, 0, 9229)
    assert len(rd["geometries"]) == 17
    assert set(rd["jawline_right"]) <= set(rd["jawline_right_extended"])
    assert ict_to_arkit_name("cheekPuff_R") == "cheekPuff"
    assert ict_to_arkit_name("eyeBlink_R") == "eyeBlinkRight"


def test_missing_files(src, tmp_path):
    with pytest.raises(FileNotFoundError, match="generic_neutral_mesh"):
        load_ict_facekit_dir(tmp_path)
    # full expression list from vertex_indices.json: only 3 of 53 are in the subset
    with pytest.raises(FileNotFoundError, match="morph target missing"):
        load_ict_facekit_dir(src, identities=[])
    with pytest.raises(ValueError, match="unknown ICT geometries"):
        load_ict_facekit_dir(src, identities=[], expressions=[], keep_geometries=["Nose"])


def test_wrong_vertex_count_and_no_readme(src, tmp_path):
    d = tmp_path / "FaceXModel"
    d.mkdir()
    for f in ("generic_neutral_mesh.obj", "vertex_indices.json", "identity000.obj"):
        shutil.copy(src / f, d / f)
    lines = (src / "jawOpen.obj").read_text().splitlines(keepends=True)
    first_v = next(i for i, ln in enumerate(lines) if ln.startswith("v "))
    (d / "jawOpen.obj").write_text("".join(lines[:first_v] + lines[first_v + 1:]))
    with pytest.raises(ValueError, match="vertices"):
        load_ict_facekit_dir(d, expressions=["jawOpen"])
    # without a README: built-in face + head/neck ranges, no contour
    m = load_ict_facekit_dir(d, expressions=[])
    assert m.n_vertices == 11248 and m.contour == {} and m.n_id == 1


def test_keep_face_only(src):
    m = load_ict_facekit_dir(src, identities=["identity000"], expressions=[],
                             keep_geometries=["Face"])
    assert m.n_vertices == 9409 and m.n_triangles == 2 * 9230
    assert m.region_names == ["face_narrow", "face_outer"]
    full = MorphableModel.load()
    torch.testing.assert_close(m.vertices(torch.ones(1, 1)),
                               full.vertices(torch.eye(100)[:1])[:, :9409], atol=1e-3, rtol=0)
