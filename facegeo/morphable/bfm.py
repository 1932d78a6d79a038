"""Basel Face Model loaders: BFM2009 ``01_MorphableModel.mat``, Deep3DFaceRecon
``BFM_model_front.mat``, 3DDFA ``bfm_noneck_v3`` (``.pkl`` / ``.npz``) and BFM2017/2019
``.h5`` (statismo layout).

All loaders return a :class:`~facegeo.morphable.MorphableModel` in the project conventions:

* **units**: converted from the file's unit (``src_units``; BFM2009 and 3DDFA micrometres,
  Deep3D decimetres, BFM2017 millimetres) to ``units`` (default ``"cm"``, like ICT). A
  wrong ``src_units`` is caught: the mean shape must measure 3-100 cm across.
* **indices**: 0-based int64. MATLAB files (BFM2009 ``tl``, Deep3D ``tri`` / ``keypoints`` /
  ``point_buf`` / masks) are 1-based; statismo ``cells`` and 3DDFA ``tri.pkl`` are 0-based;
  3DDFA ``keypoints`` index the interleaved xyz vector (``3 * vertex + axis``).
* **winding**: ``winding="auto"`` (default) orients the triangles counter-clockwise seen
  from outside, i.e. right-hand normals point away from the mean shape's centroid (the
  Deep3D ``tri`` already is; 3DDFA's ``tri.pkl`` is the opposite and gets columns 1 and 2
  swapped). ``"keep"`` / ``"flip"`` force it.
* **PCA bases** are stored multiplied by their standard deviation (BFM2009 ``shapeEV`` /
  ``texEV``, statismo ``sqrt(pcaVariance)``; Deep3D's bases already are), so coefficients are
  standard normal and ``id_std`` / ``exp_std`` / ``tex_std`` are ones. 3DDFA's ``w_shp`` /
  ``w_exp`` are used as they are (``id_std`` / ``exp_std`` None unless given).
* **texture**: RGB scaled to [0, 1] (BFM2009 / Deep3D store 0-255).
* **axes**: BFM's own (+x subject's left, +y up, +z towards the viewer), the same as ICT.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from facegeo._optional import require
from facegeo.morphable.model import (
    MorphableModel,
    corrupt_file_error,
    read_npz,
    register_loader,
    unit_scale,
)

__all__ = [
    "load_bfm_mat",
    "load_bfm2009",
    "load_bfm_front",
    "load_3ddfa",
    "from_3ddfa_dict",
    "load_bfm2017",
    "orient_outward",
    "restricted_pickle_load",
]



# --------------------------------------------------------------------------- helpers
def orient_outward(vertices: np.ndarray, triangles: np.ndarray, winding: str = "auto"
                   ) -> tuple[np.ndarray, bool]:
    """Orient (F, 3) triangles counter-clockwise seen from outside.

    ``"auto"``: flip all triangles when the area-weighted right-hand normals point, on
    balance, towards the centroid of the (V, 3) ``vertices`` (sum over triangles of
    ``n_t . (c_t - centroid)`` < 0). ``"keep"`` / ``"flip"`` force the choice.

    Returns:
        (triangles (F, 3) int64, flipped bool)
    """
    tri = np.asarray(triangles, dtype=np.int64)
    if winding == "keep":
        return tri, False
    if winding == "flip":
        return tri[:, [0, 2, 1]].copy(), True
    if winding != "auto":
        raise ValueError(f"winding must be 'auto', 'keep' or 'flip', got {winding!r}")
    v = np.asarray(vertices, dtype=np.float64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    n = np.cross(b - a, c - a)
    used = np.unique(tri)
    centroid = v[used].mean(0)
    score = float((n * ((a + b + c) / 3 - centroid)).sum())
    if score < 0:
        return tri[:, [0, 2, 1]].copy(), True
    return tri, False


def _index_base(idx: np.ndarray, n: int, label: str, base) -> np.ndarray:
    """Convert indices to 0-based. ``base`` 0 or 1, or ``"auto"``: 1-based when the minimum
    is >= 1 and the maximum equals ``n``."""
    a = np.asarray(idx)
    if a.dtype.kind == "f":
        if not np.all(a == np.round(a)):
            raise ValueError(f"{label}: non-integer indices")
    a = a.astype(np.int64)
    if base == "auto":
        base = 1 if (a.size and a.min() >= 1 and a.max() == n) else 0
    a = a - int(base)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{label}: indices out of range [0, {n}) after removing base {base}")
    return a


def _check_size(mean_cm: np.ndarray, src_units: str, label: str) -> None:
    extent = float((mean_cm.max(0) - mean_cm.min(0)).max())
    if not 3.0 <= extent <= 100.0:
        raise ValueError(
            f"{label}: with src_units={src_units!r} the mean shape measures {extent:.3g} cm "
            "across, not a face; pass the file's length unit as src_units "
            "('um', 'mm', 'cm', 'dm', 'm')")


def _vec3(a: np.ndarray, n_vertices: int | None = None) -> np.ndarray:
    """(3N,) / (3N, 1) / (1, 3N) interleaved xyz -> (N, 3)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size % 3 or (n_vertices is not None and a.size != 3 * n_vertices):
        raise ValueError(f"expected 3N interleaved coordinates, got {a.size} values")
    return a.reshape(-1, 3)


def _basis3(a: np.ndarray, n_vertices: int, scale=None, k: int | None = None) -> np.ndarray:
    """(3N, K) column basis (xyz interleaved rows) -> (K, N, 3), columns times ``scale``."""
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != 3 * n_vertices:
        raise ValueError(f"basis must have shape (3*{n_vertices}, K), got {a.shape}")
    if k is not None:
        a = a[:, :k]
    a = a.astype(np.float32)
    if scale is not None:
        a = a * np.asarray(scale, dtype=np.float32).reshape(-1)[: a.shape[1]][None, :]
    return np.ascontiguousarray(a.T).reshape(a.shape[1], n_vertices, 3)


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    """MATLAB file -> dict of arrays (v5 through scipy, v7.3 through h5py, transposed to
    MATLAB's shapes). A truncated or damaged file raises :func:`corrupt_file_error`
    (``ValueError``) naming it."""
    import scipy.io

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        d = scipy.io.loadmat(str(path))
        return {k: v for k, v in d.items() if not k.startswith("__")}
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        pass
    except Exception as e:  # any parse failure of scipy's reader: the bytes are bad
        raise corrupt_file_error(path, "MATLAB .mat model file", e) from e
    h5py = require("h5py", "reading BFM2017/2019 .h5 and MATLAB v7.3 files")

    out = {}
    try:
        with h5py.File(path, "r") as f:
            for k, v in f.items():
                if isinstance(v, h5py.Dataset):
                    out[k] = np.asarray(v).T
    except FileNotFoundError:
        raise
    except OSError as e:
        raise corrupt_file_error(path, "MATLAB v7.3 .mat model file", e) from e
    return out


def _texture(tex_mean, tex_basis, n, k, ev=None):
    if tex_mean is None:
        return {}
    tm = _vec3(tex_mean, n)
    scale = 1.0 / 255.0 if tm.max() > 1.5 else 1.0
    out = {"tex_mean": (tm * scale).astype(np.float32)}
    if tex_basis is not None:
        tb = _basis3(tex_basis, n, ev, k) * np.float32(scale)
        out["tex_basis"] = tb
        out["tex_std"] = np.ones(tb.shape[0], np.float32)
    return out


# --------------------------------------------------------------------------- BFM2009
def load_bfm_mat(path: str | os.PathLike, **kwargs) -> MorphableModel:
    """Load a BFM ``.mat``: Deep3D ``BFM_model_front.mat`` (has ``meanshape``) or BFM2009
    ``01_MorphableModel.mat`` (has ``shapeMU``), detected from the keys."""
    path = Path(path)
    d = _read_mat(path)
    if "meanshape" in d:
        return _bfm_front_from_dict(d, path, **kwargs)
    if "shapeMU" in d:
        return _bfm2009_from_dict(d, path, **kwargs)
    raise ValueError(f"{path}: not a BFM2009 / Deep3D BFM .mat (keys {sorted(d)[:10]})")


def load_bfm2009(path: str | os.PathLike = "bfm2009", **kwargs) -> MorphableModel:
    """Load the Basel Face Model 2009 ``01_MorphableModel.mat`` (resolver name
    ``"bfm2009"``).

    File layout: ``shapeMU`` (3N, 1) micrometres, ``shapePC`` (3N, 199) orthonormal columns,
    ``shapeEV`` (199, 1) standard deviations, ``texMU`` / ``texPC`` / ``texEV`` (RGB 0-255),
    ``tl`` (F, 3) 1-based triangles; N = 53,490. No expression basis (``n_exp = 0``).

    Keyword args: ``n_id`` / ``n_tex`` (keep the first components), ``landmarks68`` ((68,)
    0-based vertex ids), ``landmark_dir`` (folder with Deep3D's ``facemodel_info.mat`` and
    ``select_vertex_id.mat``, default: the model's folder; used to derive the 68 landmarks
    when ``landmarks68`` is not given), ``units`` (default "cm"), ``src_units`` ("um"),
    ``winding``, ``device``, ``dtype``.
    """
    from facegeo.assets import resolve

    p = resolve(path)
    d = _read_mat(p)
    if "shapeMU" not in d:
        raise ValueError(f"{p}: not a BFM2009 01_MorphableModel.mat (no shapeMU)")
    return _bfm2009_from_dict(d, p, **kwargs)


def _deep3d_landmarks_bfm09(folder: Path) -> np.ndarray | None:
    info, sel = folder / "facemodel_info.mat", folder / "select_vertex_id.mat"
    if not (info.is_file() and sel.is_file()):
        return None
    kp = _read_mat(info)["keypoints"].reshape(-1)
    select_id = _read_mat(sel)["select_id"].reshape(-1).astype(np.int64)  # 1-based, 53,490
    front = _index_base(kp, select_id.size, "keypoints", 1)
    return select_id[front] - 1


def _bfm2009_from_dict(d: Mapping[str, np.ndarray], path: Path, *, n_id=None, n_tex=None,
                       landmarks68=None, landmark_dir=None, units="cm", src_units="um",
                       winding="auto", device=None, dtype=torch.float32) -> MorphableModel:
    s = unit_scale(src_units, units)
    mean = _vec3(d["shapeMU"]) * s
    n = mean.shape[0]
    _check_size(mean * unit_scale(units, "cm"), src_units, str(path))
    id_basis = _basis3(d["shapePC"], n, d["shapeEV"], n_id) * np.float32(s)
    tri = _index_base(d["tl"], n, "tl", 1)
    tri, _ = orient_outward(mean, tri, winding)
    if landmarks68 is None:
        landmarks68 = _deep3d_landmarks_bfm09(Path(landmark_dir) if landmark_dir
                                              else path.parent)
    tex = _texture(d.get("texMU"), d.get("texPC"), n, n_tex, d.get("texEV"))
    return MorphableModel(
        mean.astype(np.float32), tri, id_basis, None,
        id_std=np.ones(id_basis.shape[0], np.float32), exp_kind="pca",
        landmarks68=landmarks68, units=units, name="bfm2009", device=device, dtype=dtype,
        **tex)


# --------------------------------------------------------------------------- Deep3D front
def load_bfm_front(path: str | os.PathLike = "bfm_front", **kwargs) -> MorphableModel:
    """Load Deep3DFaceRecon's ``BFM_model_front.mat`` (resolver name ``"bfm_front"``).

    File layout (N = 35,709): ``meanshape`` (1, 3N) decimetres, ``idBase`` (3N, 80) and
    ``exBase`` (3N, 64) already scaled by their std, ``meantex`` (1, 3N) / ``texBase``
    (3N, 80) RGB 0-255, and 1-based ``tri`` (F, 3), ``keypoints`` (1, 68), ``point_buf``
    (N, 8; padded with F + 1), ``frontmask2_idx``, ``skinmask``.

    Keyword args: ``n_id`` / ``n_exp`` / ``n_tex``, ``recenter`` (subtract the mean-shape
    centroid as Deep3DFaceRecon_pytorch does; default False), ``units`` ("cm"),
    ``src_units`` ("dm"), ``winding``, ``device``, ``dtype``.

    ``point_buf`` is checked (each listed triangle must contain its vertex, padding =
    F + 1) but not stored: :meth:`MorphableModel.vertex_normals` needs no table. Vertex sets:
    ``"frontmask2"`` (0-based ``frontmask2_idx``) and ``"skin"`` (``skinmask > 0``).
    """
    from facegeo.assets import resolve

    p = resolve(path)
    d = _read_mat(p)
    if "meanshape" not in d:
        raise ValueError(f"{p}: not a Deep3D BFM_model_front.mat (no meanshape)")
    return _bfm_front_from_dict(d, p, **kwargs)


def _bfm_front_from_dict(d: Mapping[str, np.ndarray], path: Path, *, n_id=None, n_exp=None,
                         n_tex=None, recenter=False, units="cm", src_units="dm",
                         winding="auto", device=None, dtype=torch.float32) -> MorphableModel:
    s = unit_scale(src_units, units)
    mean = _vec3(d["meanshape"])
    if recenter:
        mean = mean - mean.mean(0, keepdims=True)
    mean = mean * s
    n = mean.shape[0]
    _check_size(mean * unit_scale(units, "cm"), src_units, str(path))
    id_basis = _basis3(d["idBase"], n, None, n_id) * np.float32(s)
    exp_basis = _basis3(d["exBase"], n, None, n_exp) * np.float32(s)
    tri0 = _index_base(d["tri"], n, "tri", 1)
    tri, flipped = orient_outward(mean, tri0, winding)
    landmarks = None
    if "keypoints" in d:
        landmarks = _index_base(np.asarray(d["keypoints"]).reshape(-1), n, "keypoints", 1)
    if "point_buf" in d:
        pb = np.asarray(d["point_buf"]).astype(np.int64) - 1  # padding F+1 -> F
        if pb.shape[0] != n or pb.min() < 0 or pb.max() > tri.shape[0]:
            raise ValueError(f"{path}: point_buf does not match the triangles")
        rows = np.repeat(np.arange(n), pb.shape[1]).reshape(n, -1)
        real = pb < tri.shape[0]
        if not (tri[pb[real]] == rows[real][:, None]).any(axis=1).all():
            raise ValueError(f"{path}: point_buf lists triangles that do not contain the "
                             "vertex (wrong index base?)")
    sets = {}
    if "frontmask2_idx" in d:
        sets["frontmask2"] = _index_base(np.asarray(d["frontmask2_idx"]).reshape(-1), n,
                                         "frontmask2_idx", 1)
    if "skinmask" in d:
        sets["skin"] = np.nonzero(np.asarray(d["skinmask"]).reshape(-1) > 0)[0]
    tex = _texture(d.get("meantex"), d.get("texBase"), n, n_tex)
    return MorphableModel(
        mean.astype(np.float32), tri, id_basis, exp_basis,
        id_std=np.ones(id_basis.shape[0], np.float32),
        exp_std=np.ones(exp_basis.shape[0], np.float32), exp_kind="pca",
        landmarks68=landmarks, vertex_sets=sets, units=units, name="bfm_front",
        device=device, dtype=dtype, **tex)


# --------------------------------------------------------------------------- 3DDFA
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global outside :data:`_PICKLE_ALLOWED`."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _PICKLE_ALLOWED:
            if module.startswith("numpy.core") and not hasattr(np, "core"):
                module = module.replace("numpy.core", "numpy._core")
            return super().find_class(module, name)
        raise _RefusedGlobal(
            f"refusing to unpickle {module}.{name}: only numpy arrays, dicts, lists and "
            "scalars are allowed in model files")


def restricted_pickle_load(path: str | os.PathLike):
    """Unpickle a file that may only contain dicts / lists / tuples / numbers / strings and
    numpy arrays (any other global raises :class:`pickle.UnpicklingError`). Python-2
    pickles are read with ``encoding="latin1"``. A truncated or damaged file raises
    :func:`~facegeo.morphable.model.corrupt_file_error` (``ValueError``) naming it."""
    data = Path(path).read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal:
        raise
    except Exception as e:  # truncated / garbage bytes: any failure of the parser
        raise corrupt_file_error(path, "model file (.pkl)", e) from e


def _load_tri_file(p: Path) -> np.ndarray:
    if p.suffix == ".npz":
        d = read_npz(p, "triangle file (.npz)")
        if "tri" not in d:
            raise ValueError(f"{p}: no 'tri' array")
        return d["tri"]
    if p.suffix == ".npy":
        try:
            return np.load(p, allow_pickle=False)
        except (EOFError, OSError, ValueError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise corrupt_file_error(p, "triangle file (.npy)", e) from None
    obj = restricted_pickle_load(p)
    return obj["tri"] if isinstance(obj, dict) else obj


def load_3ddfa(path: str | os.PathLike = "bfm_noneck_v3", **kwargs) -> MorphableModel:
    """Load 3DDFA / 3DDFA_V2's ``bfm_noneck_v3.pkl`` (or an ``.npz`` with the same keys).

    The pickle is read with :func:`restricted_pickle_load` (numpy arrays and containers
    only). Layout: ``u`` (3N, 1) mean, ``w_shp`` (3N, K_id), ``w_exp`` (3N, K_exp), xyz
    interleaved per vertex, micrometres; ``keypoints`` (204,) 0-based indices into the 3N
    vector (``3 * vertex + axis``); N = 38,365. The triangles come from ``tri`` (keyword: an
    array or a file), else a ``tri.pkl`` next to the model (3DDFA_V2 ``configs/tri.pkl``,
    (3, F), 0-based: the one to use with ``bfm_noneck_v3``), else the file's own ``tri``.

    Keyword args: ``tri``, ``tri_base`` (0, 1 or "auto"), ``n_id`` / ``n_exp``, ``id_std`` /
    ``exp_std``, ``units`` ("cm"), ``src_units`` ("um"), ``winding`` ("auto": 3DDFA's
    triangles point inwards and get flipped), ``device``, ``dtype``.
    """
    from facegeo.assets import resolve

    p = resolve(path)
    if p.suffix == ".npz":
        d = read_npz(p, "3DDFA model file (.npz)")
    else:
        d = restricted_pickle_load(p)
        if not isinstance(d, dict):
            raise ValueError(f"{p}: expected a pickled dict of arrays")
    if kwargs.get("tri") is None and (p.parent / "tri.pkl").is_file():
        kwargs["tri"] = p.parent / "tri.pkl"
    return from_3ddfa_dict(d, source=str(p), **kwargs)


def from_3ddfa_dict(d: Mapping[str, np.ndarray], *, tri=None, tri_base="auto", n_id=None,
                    n_exp=None, id_std=None, exp_std=None, units="cm", src_units="um",
                    winding="auto", source: str = "3DDFA model", device=None,
                    dtype=torch.float32) -> MorphableModel:
    """:func:`load_3ddfa` on an already-loaded dict (keys ``u``, ``w_shp``, ``w_exp``,
    ``keypoints``, optional ``tri``)."""
    for k in ("u", "w_shp", "w_exp"):
        if k not in d:
            raise ValueError(f"{source}: missing key {k!r} of the 3DDFA BFM layout")
    s = unit_scale(src_units, units)
    mean = _vec3(d["u"]) * s
    n = mean.shape[0]
    _check_size(mean * unit_scale(units, "cm"), src_units, source)
    id_basis = _basis3(d["w_shp"], n, None, n_id) * np.float32(s)
    exp_basis = _basis3(d["w_exp"], n, None, n_exp) * np.float32(s)
    if tri is None:
        tri = d.get("tri")
        if tri is None:
            raise ValueError(f"{source}: no triangles; pass tri= (3DDFA_V2 configs/tri.pkl)")
    elif isinstance(tri, (str, os.PathLike)):
        tri = _load_tri_file(Path(tri))
    tri = np.asarray(tri)
    if tri.ndim != 2 or 3 not in tri.shape:
        raise ValueError(f"{source}: tri must have shape (F, 3) or (3, F), got {tri.shape}")
    if tri.shape[1] != 3:
        tri = tri.T
    tri = _index_base(tri, n, "tri", tri_base)
    tri, _ = orient_outward(mean, tri, winding)
    landmarks = None
    if "keypoints" in d:
        kp = np.asarray(d["keypoints"]).reshape(-1).astype(np.int64)
        if kp.size != 204:
            raise ValueError(f"{source}: keypoints must have 204 = 68 x 3 entries")
        landmarks = kp[0::3] // 3
        if not np.array_equal(kp.reshape(68, 3), 3 * landmarks[:, None] + np.arange(3)):
            raise ValueError(f"{source}: keypoints are not (3v, 3v+1, 3v+2) triples")
    return MorphableModel(
        mean.astype(np.float32), tri, id_basis, exp_basis, id_std=id_std, exp_std=exp_std,
        exp_kind="pca", landmarks68=landmarks, units=units, name="bfm_noneck_v3",
        device=device, dtype=dtype)


# --------------------------------------------------------------------------- BFM2017
def load_bfm2017(path: str | os.PathLike = "bfm2017", *, n_id=None, n_exp=None, n_tex=None,
                 landmarks68=None, units="cm", src_units="mm", winding="auto", device=None,
                 dtype=torch.float32) -> MorphableModel:
    """Load a Basel Face Model 2017 / 2019 ``.h5`` (statismo layout; resolver name
    ``"bfm2017"``). Needs ``h5py``.

    Layout: ``shape/model/{mean (3N,), pcaBasis (3N, K) orthonormal, pcaVariance (K,)}``,
    ``shape/representer/cells`` (3, F) 0-based, same for ``expression/`` (its mean is added
    to the shape mean) and ``color/`` (RGB [0, 1]); millimetres. Bases are stored as
    ``pcaBasis * sqrt(pcaVariance)`` (standard-normal coefficients). The file has no iBUG-68
    landmarks: pass ``landmarks68`` ((68,) vertex ids) to use :meth:`landmarks`.
    """
    h5py = require("h5py", "reading BFM2017/2019 .h5 and MATLAB v7.3 files")

    from facegeo.assets import resolve

    p = resolve(path)
    s = unit_scale(src_units, units)
    try:
        with h5py.File(p, "r") as f:
            if "shape" not in f:
                raise ValueError(f"{p}: not a statismo / BFM2017 .h5 (no 'shape' group)")

            def model(group, k):
                g = f[group]["model"]
                var = np.asarray(g["pcaVariance"], dtype=np.float64).reshape(-1)
                if np.any(var < 0):
                    raise ValueError(f"{p}: negative pcaVariance in {group}")
                return np.asarray(g["mean"]), np.asarray(g["pcaBasis"]), np.sqrt(var)

            mean_s, basis_s, std_s = model("shape", n_id)
            mean = _vec3(mean_s)
            n = mean.shape[0]
            exp_basis = None
            if "expression" in f:
                mean_e, basis_e, std_e = model("expression", n_exp)
                mean = mean + _vec3(mean_e, n)
                exp_basis = _basis3(basis_e, n, std_e, n_exp) * np.float32(s)
            id_basis = _basis3(basis_s, n, std_s, n_id) * np.float32(s)
            cells = np.asarray(f["shape/representer/cells"])
            tex = {}
            if "color" in f:
                mean_c, basis_c, std_c = model("color", n_tex)
                tex = _texture(mean_c, basis_c, n, n_tex, std_c)
    except FileNotFoundError:
        raise
    except OSError as e:  # h5py: truncated file, bad signature, unreadable dataset
        raise corrupt_file_error(p, "HDF5 (.h5) model file", e) from e
    mean = mean * s
    _check_size(mean * unit_scale(units, "cm"), src_units, str(p))
    if cells.shape[0] == 3 and cells.shape[1] != 3:
        cells = cells.T
    tri = _index_base(cells, n, "cells", 0)
    tri, _ = orient_outward(mean, tri, winding)
    return MorphableModel(
        mean.astype(np.float32), tri, id_basis, exp_basis,
        id_std=np.ones(id_basis.shape[0], np.float32),
        exp_std=None if exp_basis is None else np.ones(exp_basis.shape[0], np.float32),
        exp_kind="pca", landmarks68=landmarks68, units=units, name="bfm2017", device=device,
        dtype=dtype, **tex)


# file formats of MorphableModel.load (facegeo.morphable.model's loader registry)
register_loader(".mat", load_bfm_mat)
register_loader(".h5", load_bfm2017)
register_loader(".hdf5", load_bfm2017)
register_loader(".pkl", load_3ddfa)
register_loader("3ddfa", lambda p, d, **kwargs: load_3ddfa(p, **kwargs), npz_keys=("w_shp", "u"))
