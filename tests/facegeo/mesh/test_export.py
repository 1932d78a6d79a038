"""facegeo.mesh.export: OBJ / PLY / animated GLB files load back in trimesh and open3d
with the right vertices, triangles and colours; photo colours where the mesh is visible."""

from __future__ import annotations

import json
import struct

import numpy as np
import open3d as o3d
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from facegeo.mesh.export import (
    srgb_to_linear,
    vertex_colors,
    write_glb,
    write_mesh,
    write_mesh_sequence,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _grid_mesh(n=6, seed=0):
    """A bumpy n x n grid (V = n^2, F = 2 (n-1)^2), counter-clockwise seen from +z."""
    g = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    v = np.stack([x.ravel(), y.ravel(), 0.1 * g.normal(size=n * n)], 1)
    f = []
    for i in range(n - 1):
        for j in range(n - 1):
            a = i * n + j
            f += [[a, a + 1, a + n + 1], [a, a + n + 1, a + n]]
    return v, np.array(f), g.random((n * n, 3))


def _match(om, v, f) -> np.ndarray:
    """open3d's readers may reorder the vertices: match them by position and check the
    vertex count and the triangles; returns perm with ``om.vertices[i] = v[perm[i]]``."""
    ov = np.asarray(om.vertices)
    assert ov.shape == v.shape
    dist, perm = cKDTree(v).query(ov)
    assert dist.max() < 1e-5 and len(set(perm.tolist())) == len(v)
    tri = {tuple(sorted(t)) for t in perm[np.asarray(om.triangles)].tolist()}
    assert tri == {tuple(sorted(t)) for t in f.tolist()} and len(om.triangles) == len(f)
    return perm


def _read_glb(path):
    """Independent GLB reader: the JSON and BIN chunks, accessors as numpy arrays."""
    data = path.read_bytes()
    magic, version, total = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2 and total == len(data)
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A and jlen % 4 == 0
    gltf = json.loads(data[20:20 + jlen])
    blen, btype = struct.unpack_from("<II", data, 20 + jlen)
    assert btype == 0x004E4942
    binary = data[28 + jlen:28 + jlen + blen]
    assert gltf["buffers"][0]["byteLength"] == blen
    comp = {5126: np.float32, 5125: np.uint32}
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}

    def acc(i):
        a = gltf["accessors"][i]
        view = gltf["bufferViews"][a["bufferView"]]
        arr = np.frombuffer(binary, comp[a["componentType"]], a["count"] * width[a["type"]],
                            view["byteOffset"])
        return arr.reshape(a["count"], -1) if width[a["type"]] > 1 else arr

    return gltf, acc


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_obj_ply_load_back_in_trimesh_and_open3d(tmp_path, suffix):
    v, f, c = _grid_mesh()
    p = write_mesh(tmp_path / f"m{suffix}", v, f, c)
    want = np.round(c * 255).astype(np.uint8)
    tm = trimesh.load(p, process=False, force="mesh")
    assert tm.vertices.shape == v.shape and np.abs(tm.vertices - v).max() < 1e-5
    assert np.array_equal(tm.faces, f)
    assert np.array_equal(tm.visual.vertex_colors[:, :3], want)
    om = o3d.io.read_triangle_mesh(str(p))
    perm = _match(om, v, f)
    assert np.abs(np.asarray(om.vertex_colors) - want[perm] / 255.0).max() < 1e-5
    # without colours
    q = write_mesh(tmp_path / f"n{suffix}", v, f)
    assert trimesh.load(q, process=False, force="mesh").vertices.shape == v.shape


def test_glb_animation_loads_back_and_reconstructs_every_frame(tmp_path):
    v0, f, c = _grid_mesh()
    t = np.linspace(0, 1, 4)[:, None, None]
    frames = v0[None] + t * np.array([0.0, 0.0, 1.0]) + t ** 2 * v0[None] * 0.1   # (4, V, 3)
    p = write_glb(tmp_path / "a.glb", frames, f, c, fps=10, unit_scale=0.01)
    # trimesh: the base mesh (frame 0), its triangles and the linear colours
    scene = trimesh.load(p, process=False)
    (tm,) = scene.geometry.values()
    assert tm.vertices.shape == v0.shape
    assert np.abs(tm.vertices - 0.01 * frames[0]).max() < 1e-6
    assert np.array_equal(tm.faces, f)
    assert np.abs(tm.visual.vertex_attributes["color"][:, :3] - srgb_to_linear(c)).max() < 1e-6
    # open3d (tinygltf) reads the same mesh and colours
    om = o3d.io.read_triangle_mesh(str(p))
    perm = _match(om, 0.01 * frames[0], f)
    assert np.abs(np.asarray(om.vertex_colors) - srgb_to_linear(c)[perm]).max() < 1e-6
    # the animation: base + one-hot morph weights at each key time reproduce each frame
    gltf, acc = _read_glb(p)
    prim = gltf["meshes"][0]["primitives"][0]
    base = acc(prim["attributes"]["POSITION"])
    targets = [acc(tg["POSITION"]) for tg in prim["targets"]]
    assert len(targets) == 3
    (anim,) = gltf["animations"]
    sampler = anim["samplers"][0]
    times, weights = acc(sampler["input"]), acc(sampler["output"]).reshape(4, 3)
    assert np.allclose(times, [0, 0.1, 0.2, 0.3])
    assert anim["channels"][0]["target"] == {"node": 0, "path": "weights"}
    for k in range(4):
        got = base + sum(w * d for w, d in zip(weights[k], targets))
        assert np.abs(got - 0.01 * frames[k]).max() < 1e-6, k
    pos = gltf["accessors"][prim["attributes"]["POSITION"]]
    assert np.allclose(pos["min"], base.min(0)) and np.allclose(pos["max"], base.max(0))
    # a one-frame GLB has no animation
    one = write_glb(tmp_path / "b.glb", frames[:1], f)
    gltf, _ = _read_glb(one)
    assert "animations" not in gltf and "targets" not in gltf["meshes"][0]["primitives"][0]


def test_sequence_is_all_or_nothing_and_bad_input(tmp_path):
    v0, f, c = _grid_mesh()
    frames = np.stack([v0, v0 + 1.0, v0 + 2.0])
    paths = write_mesh_sequence(tmp_path / "seq", frames, f, c, fmt="ply")
    assert [p.name for p in paths] == ["frame_0000.ply", "frame_0001.ply", "frame_0002.ply"]
    for k, p in enumerate(paths):
        assert np.abs(trimesh.load(p, process=False).vertices - frames[k]).max() < 1e-5
    # a non-empty folder is refused, nothing written
    with pytest.raises(ValueError, match="not an empty folder"):
        write_mesh_sequence(tmp_path / "seq", frames, f)
    # a failure in the middle leaves neither the folder nor a temporary one
    bad = frames.copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_mesh_sequence(tmp_path / "broken", bad, f)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]
    with pytest.raises(ValueError, match="suffix"):
        write_mesh(tmp_path / "m.stl", v0, f)
    with pytest.raises(ValueError, match=r"colors must be \(36, 3\)"):
        write_mesh(tmp_path / "m.obj", v0, f, c[:5])
    with pytest.raises(ValueError, match="faces index"):
        write_mesh(tmp_path / "m.obj", v0, f + 100)
    with pytest.raises(ValueError, match=".glb"):
        write_glb(tmp_path / "m.gltf", frames, f)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_vertex_colors_sample_visible_vertices_and_fill_hidden_ones():
    """Two parallel squares, the far one hidden behind the near one except its right half:
    visible vertices take the image colour at their pixel, hidden ones the fill."""
    H = W = 32
    img = torch.zeros(3, H, W)
    img[0] = torch.linspace(0, 1, W)[None].expand(H, W)      # red ramp along x
    img[2] = 0.5
    # near square covers [2, 18] x [2, 30]; far square [4, 28] x [4, 28] (z larger = farther)
    near = [[2, 2, 1.0], [18, 2, 1.0], [18, 30, 1.0], [2, 30, 1.0]]
    far = [[4, 4, 5.0], [28, 4, 5.0], [28, 28, 5.0], [4, 28, 5.0], [16, 16, 5.0]]
    v = torch.tensor(near + far)
    # triangles counter-clockwise on screen (image y down): (0, 3, 2), (0, 2, 1)
    f = torch.tensor([[0, 3, 2], [0, 2, 1], [4, 7, 8], [7, 6, 8], [6, 5, 8], [5, 4, 8]])
    kw = dict(min_facing=0.5, depth_tol=1.0)
    cols, vis = vertex_colors(img, v, f, fill=(0.0, 1.0, 0.0), **kw)
    # near corners visible; the far square's corners at x=4 and its centre are behind it
    assert vis.tolist() == [True, True, True, True, False, True, True, False, False]
    for i in torch.nonzero(vis).flatten().tolist():
        x = int(v[i, 0].clamp(0, W - 1))
        assert torch.allclose(cols[i], img[:, int(v[i, 1]), x], atol=1e-5), i
    assert torch.allclose(cols[~vis], torch.tensor([0.0, 1.0, 0.0]))
    mean, _ = vertex_colors(img, v, f, fill="mean", **kw)
    assert torch.allclose(mean[~vis], cols[vis].mean(0).expand(int((~vis).sum()), 3))
    # harmonic fill: between the visible neighbours' colours
    harm, _ = vertex_colors(img, v, f, **kw)
    lo, hi = cols[vis].min(0).values, cols[vis].max(0).values
    assert bool(((harm[~vis] >= lo - 1e-6) & (harm[~vis] <= hi + 1e-6)).all())
    with pytest.raises(ValueError, match="fill"):
        vertex_colors(img, v, f, fill="purple")
    with pytest.raises(ValueError, match="no vertex"):
        vertex_colors(img, v + torch.tensor([100.0, 0.0, 0.0]), f)
    # turned away from the viewer (mirrored winding): nothing faces it
    with pytest.raises(ValueError, match="no vertex"):
        vertex_colors(img, v, f[:, [0, 2, 1]], **kw)
