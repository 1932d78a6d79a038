"""Mesh files with vertex colours: OBJ / PLY per frame, an animated glTF binary (GLB), and
per-vertex colours sampled from a photo where the vertex is visible.

* :func:`write_mesh` writes one mesh as ``.obj`` (ASCII, ``v x y z r g b`` colour
  extension read by MeshLab, trimesh, open3d, Blender) or ``.ply`` (binary little-endian,
  ``uchar`` red/green/blue); :func:`write_mesh_sequence` writes T of them into a folder,
  all or nothing (a temporary folder renamed at the end).
* :func:`write_glb` writes a T-frame animation as one GLB: frame 0 is the base mesh, frames
  1..T-1 are morph targets (POSITION offsets) and one animation moves the morph weights
  one-hot from key to key (``LINEAR``: between keys the vertices move linearly, which is how
  the frames were made). ``COLOR_0`` holds the vertex colours converted to linear RGB (glTF
  colours are linear; a photo is sRGB); the material is white and unlit
  (``KHR_materials_unlit``), so a viewer shows the photo's colours. Written with numpy,
  ``struct`` and ``json`` only (trimesh's GLB exporter has no morph-target animation).
* :func:`vertex_colors` samples a (3, H, W) image at the image-space vertices that the
  z-buffer shows (:func:`facegeo.raster.rasterize`, back faces culled); hidden vertices get
  a fill: ``"harmonic"`` (the smooth continuation of the visible colours over the mesh:
  uniform-Laplacian interpolation, visible colours fixed), ``"mean"`` or an RGB triple.

Every writer is atomic (:func:`facegeo.assets.atomic_write`): a failed write leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["MESH_SUFFIXES", "write_mesh", "write_obj", "write_ply", "write_mesh_sequence",
           "write_glb", "vertex_colors", "srgb_to_linear"]

#: the per-frame mesh formats of :func:`write_mesh`
MESH_SUFFIXES = (".obj", ".ply")


def _np(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check(vertices, faces, colors, batched: bool = False):
    v = _np(vertices, np.float64)
    f = _np(faces, np.int64)
    want = 3 if batched else 2
    if v.ndim != want or v.shape[-1] != 3:
        shape = "(T, V, 3)" if batched else "(V, 3)"
        raise ValueError(f"vertices must be {shape}, got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("vertices contain NaN or inf")
    n = v.shape[-2]
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= n):
        raise ValueError(f"faces index vertices in [{f.min()}, {f.max()}], the mesh has {n}")
    c = None
    if colors is not None:
        c = _np(colors, np.float64)
        if c.shape != (n, 3):
            raise ValueError(f"colors must be ({n}, 3) RGB in [0, 1], got {c.shape}")
        if not np.isfinite(c).all():
            raise ValueError("colors contain NaN or inf")
        c = np.clip(c, 0.0, 1.0)
    return v, f, c


def _u8(c: np.ndarray) -> np.ndarray:
    return np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)


def write_obj(path: str | os.PathLike, vertices, faces, colors=None) -> Path:
    """One mesh as ASCII OBJ (1-based faces; colours as ``v x y z r g b`` in [0, 1],
    quantised to 8 bits like PLY so both formats carry the same colours).

    Args:
        vertices: (V, 3); faces: (F, 3) int; colors: optional (V, 3) RGB in [0, 1].

    Returns:
        the path written.
    """
    from facegeo.assets import atomic_write

    v, f, c = _check(vertices, faces, colors)

    def write(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            fh.write("# facegeo mesh\n")
            if c is None:
                np.savetxt(fh, v, fmt="v %.6f %.6f %.6f")
            else:
                q = _u8(c) / 255.0
                np.savetxt(fh, np.hstack([v, q]), fmt="v %.6f %.6f %.6f %.6f %.6f %.6f")
            np.savetxt(fh, f + 1, fmt="f %d %d %d")

    return atomic_write(path, write)


def write_ply(path: str | os.PathLike, vertices, faces, colors=None) -> Path:
    """One mesh as binary little-endian PLY (float xyz, uchar red/green/blue, int32 faces).

    Args / Returns: as :func:`write_obj`.
    """
    from facegeo.assets import atomic_write

    v, f, c = _check(vertices, faces, colors)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if c is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(len(v), dtype=fields)
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if c is not None:
        q = _u8(c)
        vert["red"], vert["green"], vert["blue"] = q[:, 0], q[:, 1], q[:, 2]
    face = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, f
    props = "".join(f"property {'float' if t == '<f4' else 'uchar'} {n}\n" for n, t in fields)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment facegeo mesh\n"
              f"element vertex {len(v)}\n{props}element face {len(f)}\n"
              "property list uchar int vertex_indices\nend_header\n")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(vert.tobytes())
            fh.write(face.tobytes())

    return atomic_write(path, write)


def write_mesh(path: str | os.PathLike, vertices, faces, colors=None) -> Path:
    """One mesh; the suffix (:data:`MESH_SUFFIXES`) picks :func:`write_obj` or
    :func:`write_ply`. Raises ValueError for another suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".obj":
        return write_obj(path, vertices, faces, colors)
    if suffix == ".ply":
        return write_ply(path, vertices, faces, colors)
    raise ValueError(f"mesh file {path}: unsupported suffix {suffix!r}; use one of "
                     f"{', '.join(MESH_SUFFIXES)}")


def write_mesh_sequence(folder: str | os.PathLike, vertices, faces, colors=None, *,
                        fmt: str = "obj", prefix: str = "frame") -> list[Path]:
    """T meshes ``<prefix>_0000.<fmt>`` ... into ``folder``, all or nothing.

    The files are written into a temporary folder beside ``folder`` that is renamed at the
    end, so an error (or Ctrl-C) leaves no partial sequence.

    Args:
        folder: the output folder; it must not exist or be empty (its parent must exist).
        vertices: (T, V, 3); faces: (F, 3); colors: optional (V, 3) or (T, V, 3) RGB.
        fmt: ``"obj"`` or ``"ply"``.

    Returns:
        the T paths, in frame order.
    """
    folder = Path(folder)
    if fmt not in ("obj", "ply"):
        raise ValueError(f"fmt must be 'obj' or 'ply', got {fmt!r}")
    v = _np(vertices, np.float64)
    if v.ndim != 3:
        raise ValueError(f"vertices must be (T, V, 3), got {v.shape}")
    c = None if colors is None else _np(colors, np.float64)
    if c is not None and c.ndim == 2:
        c = np.broadcast_to(c, (v.shape[0], *c.shape))
    if c is not None and c.shape[0] != v.shape[0]:
        raise ValueError(f"colors for {c.shape[0]} frames, vertices for {v.shape[0]}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"mesh folder {folder} exists and is not an empty folder")
    if not folder.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {folder.parent}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        digits = max(4, len(str(v.shape[0] - 1)))
        names = [f"{prefix}_{t:0{digits}d}.{fmt}" for t in range(v.shape[0])]
        for t, name in enumerate(names):
            write_mesh(tmp / name, v[t], faces, None if c is None else c[t])
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)   # mkdtemp makes it private (0700)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [folder / n for n in names]


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] -> linear RGB (IEC 61966-2-1)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def write_glb(path: str | os.PathLike, vertices, faces, colors=None, *, fps: float = 30.0,
              unit_scale: float = 1.0, name: str = "face") -> Path:
    """An animated mesh as one glTF 2.0 binary (module docstring).

    Args:
        path: the ``.glb`` file.
        vertices: (T, V, 3) frames (T >= 1) in the model's frame (+y up, +z towards the
            viewer, as glTF).
        faces: (F, 3) triangles, counter-clockwise seen from outside.
        colors: optional (V, 3) sRGB colours in [0, 1] (stored linear in ``COLOR_0``).
        fps: key frames per second of the animation.
        unit_scale: multiplies the coordinates (glTF units are metres: 0.01 for cm).
        name: mesh / node name.

    Returns:
        the path written.
    """
    from facegeo.assets import atomic_write

    v, f, c = _check(vertices, faces, colors, batched=True)
    if Path(path).suffix.lower() != ".glb":
        raise ValueError(f"{path}: a glTF binary needs the .glb suffix")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if not (np.isfinite(unit_scale) and unit_scale > 0):
        raise ValueError(f"unit_scale must be a positive number, got {unit_scale}")
    v = (v * unit_scale).astype(np.float32)
    n_frames, n_vert = v.shape[:2]
    blob = bytearray()
    views: list[dict] = []
    accessors: list[dict] = []

    def add(arr: np.ndarray, *, target: int | None, comp: int, kind: str,
            minmax: bool = False) -> int:
        while len(blob) % 4:
            blob.append(0)
        data = np.ascontiguousarray(arr).tobytes()
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        views.append(view)
        blob.extend(data)
        acc = {"bufferView": len(views) - 1, "componentType": comp,
               "count": int(arr.shape[0]), "type": kind}
        if minmax:
            flat = arr.reshape(arr.shape[0], -1)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        accessors.append(acc)
        return len(accessors) - 1

    ARRAY, ELEMENT, FLOAT, UINT = 34962, 34963, 5126, 5125
    idx = add(f.astype(np.uint32).reshape(-1), target=ELEMENT, comp=UINT, kind="SCALAR")
    attrs = {"POSITION": add(v[0], target=ARRAY, comp=FLOAT, kind="VEC3", minmax=True)}
    if c is not None:
        attrs["COLOR_0"] = add(srgb_to_linear(c).astype(np.float32), target=ARRAY,
                               comp=FLOAT, kind="VEC3")
    targets = [{"POSITION": add(v[t] - v[0], target=ARRAY, comp=FLOAT, kind="VEC3",
                                minmax=True)} for t in range(1, n_frames)]
    primitive = {"attributes": attrs, "indices": idx, "material": 0, "mode": 4}
    mesh = {"name": name, "primitives": [primitive]}
    gltf: dict = {
        "asset": {"version": "2.0", "generator": "facegeo.mesh.export"},
        "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "materials": [{"name": "vertex_colors", "doubleSided": False,
                       "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                                                "metallicFactor": 0.0,
                                                "roughnessFactor": 1.0},
                       "extensions": {"KHR_materials_unlit": {}}}],
        "extensionsUsed": ["KHR_materials_unlit"],
        "meshes": [mesh],
    }
    if targets:
        primitive["targets"] = targets
        mesh["weights"] = [0.0] * len(targets)
        mesh["extras"] = {"targetNames": [f"frame_{t}" for t in range(1, n_frames)]}
        times = (np.arange(n_frames, dtype=np.float32) / np.float32(fps))[:, None]
        w = np.zeros((n_frames, len(targets)), dtype=np.float32)
        w[np.arange(1, n_frames), np.arange(len(targets))] = 1.0
        t_acc = add(times, target=None, comp=FLOAT, kind="SCALAR", minmax=True)
        accessors[t_acc]["min"], accessors[t_acc]["max"] = ([float(times.min())],
                                                            [float(times.max())])
        w_acc = add(w.reshape(-1), target=None, comp=FLOAT, kind="SCALAR")
        gltf["animations"] = [{"name": "interpolation",
                               "samplers": [{"input": t_acc, "output": w_acc,
                                             "interpolation": "LINEAR"}],
                               "channels": [{"sampler": 0,
                                             "target": {"node": 0, "path": "weights"}}]}]
    while len(blob) % 4:
        blob.append(0)
    gltf["buffers"] = [{"byteLength": len(blob)}]
    gltf["bufferViews"] = views
    gltf["accessors"] = accessors
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(blob)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<III", 0x46546C67, 2, total))       # 'glTF', version 2
            fh.write(struct.pack("<II", len(js), 0x4E4F534A))         # 'JSON'
            fh.write(js)
            fh.write(struct.pack("<II", len(blob), 0x004E4942))       # 'BIN\0'
            fh.write(bytes(blob))

    del n_vert
    return atomic_write(path, write)


def vertex_colors(image: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, *,
                  fill: str | Sequence[float] = "harmonic", depth_tol: float | None = None,
                  min_facing: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex colours of a mesh posed in an image, where the image shows the vertex.

    Args:
        image: (3, H, W) RGB in [0, 1].
        vertices: (V, 3) image-space vertices: x, y in pixels of ``image`` (pixel centres
            at integers), z = depth, smaller is nearer (``facegeo.reenact.posed_vertices``).
        faces: (F, 3) triangles (counter-clockwise seen from outside).
        fill: colour of hidden vertices: ``"harmonic"`` (smooth continuation of the visible
            colours over the mesh), ``"mean"`` (mean visible colour) or an RGB triple.
        depth_tol: a vertex is visible when it lies at most this far behind the z-buffer at
            its pixel (default: the mesh's mean edge length).
        min_facing: a vertex must also face the viewer: the depth component of its unit
            normal, towards the viewer, at least this (0.3: within 72.5 degrees of the view
            direction; grazing vertices sample a smeared photo, or the background beside
            the silhouette).

    Returns:
        colors (V, 3) in [0, 1], visible (V,) bool.

    Raises:
        ValueError: bad shapes, or no vertex visible in the image.
    """
    import torch.nn.functional as F

    from facegeo.raster import rasterize, vertex_normals

    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(vertices.shape)}")
    rgb = None
    if isinstance(fill, str):
        if fill not in ("harmonic", "mean"):
            raise ValueError(f"fill must be 'harmonic', 'mean' or an RGB triple, got {fill!r}")
    else:
        rgb = torch.as_tensor(fill, dtype=torch.float32).reshape(-1)
        if rgb.shape != (3,) or not torch.isfinite(rgb).all():
            raise ValueError(f"fill colour must be 3 finite numbers, got {fill!r}")
    H, W = image.shape[-2:]
    v = vertices.to(image.device, torch.float32)
    faces = faces.to(image.device)
    frag = rasterize(v[None], faces, H, W, cull_backfaces=True)
    if depth_tol is None:
        tv = v[faces]
        depth_tol = float((tv - tv.roll(1, dims=1)).norm(dim=-1).mean())
    ix = v[:, 0].round().long()
    iy = v[:, 1].round().long()
    inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    ixc, iyc = ix.clamp(0, W - 1), iy.clamp(0, H - 1)
    covered = frag.mask[0, iyc, ixc]
    facing = -vertex_normals(v[None], faces)[0, :, 2]   # image space: -z is towards us
    # nothing in front of it: its pixel shows no surface, or a surface at most depth_tol
    # nearer (the vertex's own triangles)
    visible = (inside & (facing >= min_facing)
               & (~covered | (v[:, 2] <= frag.depth[0, iyc, ixc] + depth_tol)))
    if not bool(visible.any()):
        raise ValueError("no vertex of the mesh is visible in the image")
    # pixel centres -> grid_sample's normalized coordinates (facegeo.coords' convention,
    # x_n = (2 x + 1) / W - 1, written out: that function's size argument is changing)
    wh = torch.tensor([W, H], dtype=v.dtype, device=v.device)
    grid = ((2 * v[:, :2] + 1) / wh - 1)[None, None]
    col = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)[0, :, 0].T.clamp(0, 1)          # (V, 3)
    out = col.clone()
    hidden = ~visible
    if bool(hidden.any()):
        mean = col[visible].mean(0)
        if rgb is not None:
            out[hidden] = rgb.to(out).clamp(0, 1)
        elif fill == "harmonic":
            out[hidden] = _harmonic_fill(faces, col, visible, mean)
        else:
            out[hidden] = mean
    return out, visible


def _harmonic_fill(faces, col, visible, mean) -> torch.Tensor:
    """Colours of the hidden vertices solving the uniform-Laplacian (Dirichlet) problem with
    the visible colours fixed; a weak pull (1e-4) towards ``mean`` keeps parts with no
    visible vertex defined (they become ``mean``)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    from facegeo.mesh import to_scipy, uniform_laplacian

    n = col.shape[0]
    L = to_scipy(uniform_laplacian(faces.cpu(), n, dtype=torch.float64)).tocsr()
    hid = (~visible).cpu().numpy()
    vis = ~hid
    c = col.detach().cpu().double().numpy()
    eps = 1e-4
    A = L[hid][:, hid] + eps * sp.identity(int(hid.sum()), format="csr")
    b = -(L[hid][:, vis] @ c[vis]) + eps * mean.detach().cpu().double().numpy()[None]
    x = spsolve(A.tocsc(), b)
    return torch.as_tensor(np.clip(x.reshape(-1, 3), 0, 1), dtype=col.dtype, device=col.device)
