"""The :class:`MorphableModel`: a linear 3D face model (mean + identity + expression bases).

Reconstruction (all tensors float32 unless the model was moved to another dtype)::

    vertices = mean + sum_k id_coeffs[:, k] * id_basis[k] + sum_j exp_coeffs[:, j] * exp_basis[j]

``mean`` is (V, 3), ``id_basis`` (K_id, V, 3), ``exp_basis`` (K_exp, V, 3). The coefficient
priors are described by ``id_std`` / ``exp_std`` (standard deviation of each coefficient, or
``None`` when unknown) and ``exp_kind``: ``"blendshape"`` (weights in [0, 1], e.g. ICT-FaceKit)
or ``"pca"`` (zero-mean Gaussian coefficients, e.g. the Basel Face Model). Every loader in
:mod:`facegeo.morphable` stores PCA bases already multiplied by their standard deviation, so
PCA coefficients are standard normal and ``id_std`` / ``exp_std`` are ones.

Coordinate conventions (all shipped loaders convert to them): right-handed, +x = subject's
left, +y = up, +z = out of the face (towards a frontal viewer); triangles wound
counter-clockwise seen from outside, so ``(v1 - v0) x (v2 - v0)`` points outward. Units are
stored in ``units`` (ICT: ``"cm"``; the BFM loaders convert to ``"cm"`` by default).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["MorphableModel", "FORMAT_VERSION", "UNIT_TO_METRES", "unit_scale", "linear_shape"]

#: version of the native ``.npz`` format written by :meth:`MorphableModel.save`.
FORMAT_VERSION = 1
_FORMAT_TAG = "facegeo.morphable"

#: length units understood by the loaders, in metres.
UNIT_TO_METRES = {"um": 1e-6, "mm": 1e-3, "cm": 1e-2, "dm": 1e-1, "m": 1.0}


def corrupt_file_error(path: str | os.PathLike, kind: str, err: BaseException) -> ValueError:
    """The ``ValueError`` for a model / weight file that cannot be parsed: it names the
    file, says it is corrupt or truncated and gives the reader's reason, except numpy's
    advice to unpickle a file that is not an ``.npz`` / ``.npy`` (never do that here).
    Raise it ``from err`` unless :func:`_mentions_pickle` (then ``from None``)."""
    reason = f"{type(err).__name__}: {err}"
    if _mentions_pickle(err):
        reason = "not a valid .npz / .npy archive, or it holds object arrays (refused)"
    return ValueError(f"{path}: corrupt or truncated {kind} ({reason}); replace it with an "
                      "intact copy")


def _mentions_pickle(err: BaseException) -> bool:
    text = str(err).lower()
    return "pickle" in text or "unsafe" in text


def read_npz(path: str | os.PathLike, kind: str = "model file (.npz)") -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (``allow_pickle=False``) as a dict; a truncated or damaged
    archive raises :func:`corrupt_file_error` (``ValueError``) naming the file."""
    import zipfile
    import zlib

    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.ndarray):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        err = corrupt_file_error(path, kind, e)
        if _mentions_pickle(e):
            raise err from None
        raise err from e


def unit_scale(src: str, dst: str) -> float:
    """Factor that converts a length in unit ``src`` to unit ``dst`` (keys of
    :data:`UNIT_TO_METRES`: um, mm, cm, dm, m)."""
    for u in (src, dst):
        if u not in UNIT_TO_METRES:
            raise ValueError(f"unknown length unit {u!r}; expected one of {list(UNIT_TO_METRES)}")
    return UNIT_TO_METRES[src] / UNIT_TO_METRES[dst]


def _as_float(x, name: str, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16)):
        raise TypeError(f"{name} must be a real float array, got dtype {t.dtype}")
    return t.to(device=device, dtype=dtype)


def _as_index(x, name: str, device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.is_floating_point():
        if not torch.all(t == torch.round(t)):
            raise TypeError(f"{name} must hold integer indices, got non-integer floats")
    elif t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold integer indices, got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.int64)


def _check_range(idx: torch.Tensor, n: int, name: str) -> None:
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(
            f"{name} has indices in [{int(idx.min())}, {int(idx.max())}], expected [0, {n})"
        )


def linear_shape(mean: torch.Tensor, id_basis: torch.Tensor, exp_basis: torch.Tensor,
                 id_coeffs: torch.Tensor | None = None,
                 exp_coeffs: torch.Tensor | None = None) -> torch.Tensor:
    """The linear 3DMM ``mean + id_coeffs @ id_basis + exp_coeffs @ exp_basis``: the one
    evaluation of the model's shape (whole mesh, a vertex subset or the 68 landmarks).

    Args:
        mean: (N, 3); id_basis: (K_id, N, 3); exp_basis: (K_exp, N, 3).
        id_coeffs: (B, k_id) with k_id <= K_id (the leading components), or None (zeros).
        exp_coeffs: (B, k_exp) with k_exp <= K_exp, or None.

    Returns:
        (B, N, 3) (B = 1 when both coefficient sets are None); differentiable.
    """
    a, e = id_coeffs, exp_coeffs
    B = a.shape[0] if a is not None else (e.shape[0] if e is not None else 1)
    n = mean.numel()
    out = mean.reshape(1, n).expand(B, n)
    used = False
    for c, basis in ((a, id_basis), (e, exp_basis)):
        if c is not None and c.shape[1]:
            if c.shape[1] > basis.shape[0]:
                raise ValueError(f"{c.shape[1]} coefficients for a basis of {basis.shape[0]}")
            out, used = torch.addmm(out, c, basis[:c.shape[1]].reshape(c.shape[1], n)), True
    if not used:
        out = out.clone()
    return out.reshape(B, *mean.shape)


class MorphableModel:
    """Linear 3D morphable face model (torch, batched, device-agnostic).

    Attributes (tensors live on ``self.device``; float tensors have ``self.dtype``):
        mean: (V, 3) mean / neutral shape.
        id_basis: (K_id, V, 3) identity basis (offsets from ``mean``).
        exp_basis: (K_exp, V, 3) expression basis (offsets from ``mean``).
        id_std, exp_std: (K,) standard deviation of each coefficient, or ``None``.
        exp_kind: ``"blendshape"`` (weights in [0, 1]) or ``"pca"`` (Gaussian prior).
        id_names: list of K_id names or ``None``; exp_names: list of K_exp names.
        exp_names_arkit: list of Apple-ARKit names per expression, or ``None``.
        triangles: (F, 3) int64, counter-clockwise seen from outside.
        landmarks68: (68,) int64 vertex ids in iBUG-300W / Multi-PIE 68-point order, or
            ``None`` when the model has none (then :meth:`landmarks` raises).
        contour: dict name -> (K,) int64 vertex candidates for the jawline contour, e.g.
            ``{"right": ..., "left": ...}`` (subject's right = iBUG points 0-7, left = 9-16).
            May be empty.
        vertex_sets: dict name -> (K,) int64 other named vertex sets (ICT ``"fitting"``,
            ``"rigid"``; BFM-front ``"frontmask2"``, ``"skin"``).
        tex_mean: (V, 3) mean albedo, RGB in [0, 1], or ``None``; tex_basis: (K_tex, V, 3)
            or ``None``; tex_std: (K_tex,) or ``None``.
        uv: (V, 2) one UV per vertex, or ``None``. uv_coords: (M, 2) and faces_uv: (F, 3)
            int64 per-corner UVs (OBJ style, exact at seams), or ``None``.
        vertex_region: (V,) int64 region label per vertex, or ``None``; region_names: list.
        units: length unit of ``mean`` and the bases (``"cm"``, ``"mm"``, ``"dm"``...).
        name: a short model name (``"ict_facekit"``, ``"bfm_front"``...).

    Args:
        mean, triangles, id_basis, exp_basis, ...: the arrays above (numpy or torch, any
            float dtype; fp16 storage is up-cast). Missing bases become empty (0, V, 3).
        device, dtype: where / in which float dtype to keep the tensors.
    """

    def __init__(
        self,
        mean,
        triangles,
        id_basis=None,
        exp_basis=None,
        *,
        id_std=None,
        exp_std=None,
        exp_kind: str = "pca",
        id_names: Sequence[str] | None = None,
        exp_names: Sequence[str] | None = None,
        exp_names_arkit: Sequence[str] | None = None,
        landmarks68=None,
        contour: Mapping[str, object] | None = None,
        vertex_sets: Mapping[str, object] | None = None,
        tex_mean=None,
        tex_basis=None,
        tex_std=None,
        uv=None,
        uv_coords=None,
        faces_uv=None,
        vertex_region=None,
        region_names: Sequence[str] | None = None,
        units: str = "cm",
        name: str = "",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(f"dtype must be a float dtype, got {dtype}")
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.device = device
        self.dtype = dtype

        self.mean = _as_float(mean, "mean", device, dtype)
        if self.mean.ndim != 2 or self.mean.shape[1] != 3:
            raise ValueError(f"mean must have shape (V, 3), got {tuple(self.mean.shape)}")
        V = self.mean.shape[0]
        if V == 0:
            raise ValueError("mean has no vertices")

        def basis(x, label):
            if x is None:
                return torch.zeros(0, V, 3, device=device, dtype=dtype)
            b = _as_float(x, label, device, dtype)
            if b.ndim != 3 or b.shape[1:] != (V, 3):
                raise ValueError(f"{label} must have shape (K, {V}, 3), got {tuple(b.shape)}")
            return b

        def std(x, k, label):
            if x is None:
                return None
            s = _as_float(x, label, device, dtype).reshape(-1)
            if s.shape[0] != k:
                raise ValueError(f"{label} must have shape ({k},), got {tuple(s.shape)}")
            if not torch.all(s > 0):
                raise ValueError(f"{label} must be positive")
            return s

        self.id_basis = basis(id_basis, "id_basis")
        self.exp_basis = basis(exp_basis, "exp_basis")
        self.id_std = std(id_std, self.id_basis.shape[0], "id_std")
        self.exp_std = std(exp_std, self.exp_basis.shape[0], "exp_std")
        for label, t in (("mean", self.mean), ("id_basis", self.id_basis),
                         ("exp_basis", self.exp_basis)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{label} contains NaN or inf")
        if exp_kind not in ("blendshape", "pca"):
            raise ValueError(f"exp_kind must be 'blendshape' or 'pca', got {exp_kind!r}")
        self.exp_kind = exp_kind

        def names(x, k, label, default_prefix=None):
            if x is None:
                return [f"{default_prefix}{i}" for i in range(k)] if default_prefix else None
            x = [str(s) for s in x]
            if len(x) != k:
                raise ValueError(f"{label} has {len(x)} names for {k} basis vectors")
            return x

        self.id_names = names(id_names, self.n_id, "id_names")
        self.exp_names = names(exp_names, self.n_exp, "exp_names", "exp")
        self.exp_names_arkit = names(exp_names_arkit, self.n_exp, "exp_names_arkit")

        self.triangles = _as_index(triangles, "triangles", device)
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise ValueError(f"triangles must have shape (F, 3), got {tuple(self.triangles.shape)}")
        _check_range(self.triangles, V, "triangles")

        if landmarks68 is None:
            self.landmarks68 = None
        else:
            lm = _as_index(landmarks68, "landmarks68", device).reshape(-1)
            if lm.shape[0] != 68:
                raise ValueError(f"landmarks68 must have 68 entries, got {lm.shape[0]}")
            _check_range(lm, V, "landmarks68")
            self.landmarks68 = lm

        def index_dict(d, label):
            out: dict[str, torch.Tensor] = {}
            for k, v in (d or {}).items():
                t = _as_index(v, f"{label}[{k!r}]", device).reshape(-1)
                _check_range(t, V, f"{label}[{k!r}]")
                out[str(k)] = t
            return out

        self.contour = index_dict(contour, "contour")
        self.vertex_sets = index_dict(vertex_sets, "vertex_sets")

        self.tex_mean = None if tex_mean is None else _as_float(tex_mean, "tex_mean", device, dtype)
        if self.tex_mean is not None and self.tex_mean.shape != (V, 3):
            raise ValueError(f"tex_mean must have shape ({V}, 3), got {tuple(self.tex_mean.shape)}")
        self.tex_basis = None if tex_basis is None else basis(tex_basis, "tex_basis")
        if self.tex_basis is not None and self.tex_mean is None:
            raise ValueError("tex_basis given without tex_mean")
        self.tex_std = (None if tex_std is None or self.tex_basis is None
                        else std(tex_std, self.tex_basis.shape[0], "tex_std"))

        self.uv = None if uv is None else _as_float(uv, "uv", device, dtype)
        if self.uv is not None and self.uv.shape != (V, 2):
            raise ValueError(f"uv must have shape ({V}, 2), got {tuple(self.uv.shape)}")
        if (uv_coords is None) != (faces_uv is None):
            raise ValueError("uv_coords and faces_uv must be given together")
        self.uv_coords = None if uv_coords is None else _as_float(uv_coords, "uv_coords", device,
                                                                   dtype)
        self.faces_uv = None if faces_uv is None else _as_index(faces_uv, "faces_uv", device)
        if self.faces_uv is not None:
            if self.faces_uv.shape != self.triangles.shape:
                raise ValueError("faces_uv must have the same shape as triangles")
            _check_range(self.faces_uv, self.uv_coords.shape[0], "faces_uv")
        self.vertex_region = (None if vertex_region is None
                              else _as_index(vertex_region, "vertex_region", device).reshape(-1))
        if self.vertex_region is not None and self.vertex_region.shape[0] != V:
            raise ValueError(f"vertex_region must have {V} entries")
        self.region_names = None if region_names is None else [str(s) for s in region_names]
        if units not in UNIT_TO_METRES:
            raise ValueError(f"unknown units {units!r}; expected one of {list(UNIT_TO_METRES)}")
        self.units = units
        self.name = str(name)
        self._lm_cache: tuple | None = None

    # ------------------------------------------------------------------ sizes
    @property
    def n_id(self) -> int:
        """Number of identity basis vectors K_id."""
        return int(self.id_basis.shape[0])

    @property
    def n_exp(self) -> int:
        """Number of expression basis vectors K_exp."""
        return int(self.exp_basis.shape[0])

    @property
    def n_tex(self) -> int:
        """Number of texture basis vectors (0 without texture)."""
        return 0 if self.tex_basis is None else int(self.tex_basis.shape[0])

    @property
    def n_vertices(self) -> int:
        """Number of vertices V."""
        return int(self.mean.shape[0])

    @property
    def n_triangles(self) -> int:
        """Number of triangles F."""
        return int(self.triangles.shape[0])

    def __repr__(self) -> str:
        return (f"MorphableModel(name={self.name!r}, V={self.n_vertices}, F={self.n_triangles}, "
                f"n_id={self.n_id}, n_exp={self.n_exp} ({self.exp_kind}), n_tex={self.n_tex}, "
                f"units={self.units!r}, device={self.device}, dtype={self.dtype})")

    # ------------------------------------------------------------------ evaluation
    def _coeffs(self, c, k: int, label: str) -> torch.Tensor | None:
        if c is None:
            return None
        if not isinstance(c, torch.Tensor):
            c = torch.as_tensor(np.asarray(c))
        if not (c.is_floating_point() or c.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{label} must be a float tensor, got dtype {c.dtype}")
        if c.ndim == 1:
            c = c.unsqueeze(0)
        if c.ndim != 2 or c.shape[1] != k:
            raise ValueError(f"{label} must have shape (B, {k}) (or ({k},)), got {tuple(c.shape)}")
        if c.device != self.device:
            raise ValueError(f"{label} is on {c.device} but the model is on {self.device}; "
                             "use model.to(device)")
        if not torch.isfinite(c).all():
            raise ValueError(f"{label} contains NaN or inf")
        return c.to(self.dtype)

    def vertices(self, id_coeffs=None, exp_coeffs=None) -> torch.Tensor:
        """Evaluate the model.

        Args:
            id_coeffs: (B, K_id) identity coefficients, (K_id,) for B = 1, or ``None`` (zeros).
            exp_coeffs: (B, K_exp) expression coefficients/weights, (K_exp,), or ``None``.

        Returns:
            (B, V, 3) vertices; B is taken from whichever coefficients are given (1 when
            both are ``None``). Differentiable in the coefficients.

        Raises:
            ValueError: wrong shapes, different batch sizes, NaN/inf, wrong device.
        """
        a = self._coeffs(id_coeffs, self.n_id, "id_coeffs")
        e = self._coeffs(exp_coeffs, self.n_exp, "exp_coeffs")
        if a is not None and e is not None and a.shape[0] != e.shape[0]:
            raise ValueError(f"id_coeffs has batch {a.shape[0]} but exp_coeffs has batch "
                             f"{e.shape[0]}")
        return linear_shape(self.mean, self.id_basis, self.exp_basis, a, e)


    def texture(self, tex_coeffs=None) -> torch.Tensor:
        """Per-vertex albedo (B, V, 3) (RGB, [0, 1] for the shipped loaders) from (B, K_tex)
        texture coefficients (``None`` = mean texture, B = 1). Raises ValueError without a
        texture model."""
        if self.tex_mean is None:
            raise ValueError(f"model {self.name!r} has no texture")
        t = self._coeffs(tex_coeffs, self.n_tex, "tex_coeffs")
        tb = self.tex_basis if self.tex_basis is not None else self.tex_mean.new_zeros(0, 1, 3)
        return linear_shape(self.tex_mean, tb, tb[:0], t, None)

    def _vertices_arg(self, vertices, label="vertices") -> torch.Tensor:
        if vertices is None:
            return self.mean.unsqueeze(0)
        if not isinstance(vertices, torch.Tensor):
            vertices = torch.as_tensor(np.asarray(vertices), dtype=self.dtype)
        if vertices.ndim == 2:
            vertices = vertices.unsqueeze(0)
        if vertices.ndim != 3 or vertices.shape[1:] != (self.n_vertices, 3):
            raise ValueError(f"{label} must have shape (B, {self.n_vertices}, 3), got "
                             f"{tuple(vertices.shape)}")
        return vertices

    def landmarks(self, vertices=None) -> torch.Tensor:
        """The 68 landmark points (iBUG order).

        Args:
            vertices: (B, V, 3) (or (V, 3)) posed/deformed vertices; ``None`` = the mean.
        Returns:
            (B, 68, 3) gathered with ``landmarks68`` (differentiable).
        """
        if self.landmarks68 is None:
            raise ValueError(f"model {self.name!r} has no 68-point landmark definition")
        v = self._vertices_arg(vertices)
        return v.index_select(1, self.landmarks68.to(v.device))

    def landmark_bases(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model restricted to the 68 landmarks, for fast fitting.

        Returns:
            mean_lm (68, 3), id_lm (K_id, 68, 3), exp_lm (K_exp, 68, 3) such that
            ``landmarks(vertices(a, e)) == mean_lm + a @ id_lm + e @ exp_lm``.
        """
        if self.landmarks68 is None:
            raise ValueError(f"model {self.name!r} has no 68-point landmark definition")
        if self._lm_cache is None:
            lm = self.landmarks68
            self._lm_cache = (self.mean[lm], self.id_basis[:, lm], self.exp_basis[:, lm])
        return self._lm_cache

    def face_normals(self, vertices) -> torch.Tensor:
        """Unnormalised right-hand triangle normals ``(v1 - v0) x (v2 - v0)`` (length = twice
        the area) of (B, V, 3) vertices -> (B, F, 3). Outward for CCW winding."""
        from facegeo.raster import face_normals

        return face_normals(self._vertices_arg(vertices), self.triangles, normalize=False)

    def vertex_normals(self, vertices, eps: float = 1e-12) -> torch.Tensor:
        """Area-weighted unit vertex normals (outward for the CCW winding of the model).

        Args:
            vertices: (B, V, 3) (or (V, 3)) vertices in model topology.
        Returns:
            (B, V, 3) unit normals: the sum of the incident triangles' cross products
            (area-weighted), normalised (length clamped at ``eps``). Vertices used by no
            triangle get a zero vector. This is :func:`facegeo.raster.vertex_normals`.
        """
        from facegeo.raster import vertex_normals

        return vertex_normals(self._vertices_arg(vertices), self.triangles, eps=eps)

    # ------------------------------------------------------------------ conversions
    def _fields(self) -> dict:
        return dict(
            mean=self.mean, triangles=self.triangles, id_basis=self.id_basis,
            exp_basis=self.exp_basis, id_std=self.id_std, exp_std=self.exp_std,
            exp_kind=self.exp_kind, id_names=self.id_names, exp_names=self.exp_names,
            exp_names_arkit=self.exp_names_arkit, landmarks68=self.landmarks68,
            contour=dict(self.contour), vertex_sets=dict(self.vertex_sets),
            tex_mean=self.tex_mean, tex_basis=self.tex_basis, tex_std=self.tex_std, uv=self.uv,
            uv_coords=self.uv_coords, faces_uv=self.faces_uv, vertex_region=self.vertex_region,
            region_names=self.region_names, units=self.units, name=self.name,
        )

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> MorphableModel:
        """A new model with all tensors on ``device`` and float tensors in ``dtype`` (either
        ``None`` = unchanged). The original is not modified."""
        return MorphableModel(**self._fields(),
                              device=self.device if device is None else device,
                              dtype=self.dtype if dtype is None else dtype)

    def truncate(self, n_id: int | None = None, n_exp: int | None = None) -> MorphableModel:
        """A new model keeping only the first ``n_id`` identity and ``n_exp`` expression basis
        vectors (``None`` = all)."""
        f = self._fields()
        for key, n, total in (("id", n_id, self.n_id), ("exp", n_exp, self.n_exp)):
            if n is None:
                continue
            if not 0 <= n <= total:
                raise ValueError(f"n_{key} must be in [0, {total}], got {n}")
            f[f"{key}_basis"] = f[f"{key}_basis"][:n]
            for extra in (f"{key}_std", f"{key}_names") + (("exp_names_arkit",) if key == "exp"
                                                          else ()):
                if f[extra] is not None:
                    f[extra] = f[extra][:n]
        return MorphableModel(**f, device=self.device, dtype=self.dtype)

    def submesh(self, vertex_ids, *, missing_landmarks: str = "error") -> MorphableModel:
        """Restrict the model to a subset of its vertices.

        Args:
            vertex_ids: (M,) int vertex ids (new vertex i = old vertex ``vertex_ids[i]``, no
                duplicates) or a (V,) bool mask (keeps the original order).
            missing_landmarks: what to do when a landmark vertex is not kept: ``"error"``
                (ValueError naming the landmark positions) or ``"drop"`` (the new model has
                ``landmarks68 = None``).

        Returns:
            A new model: triangles with all three corners kept (re-indexed; per-corner UVs
            follow them), contour / vertex sets filtered to kept vertices (order kept),
            per-vertex arrays sliced.
        """
        if missing_landmarks not in ("error", "drop"):
            raise ValueError("missing_landmarks must be 'error' or 'drop'")
        V = self.n_vertices
        ids = torch.as_tensor(vertex_ids) if not isinstance(vertex_ids, torch.Tensor) \
            else vertex_ids
        if ids.dtype == torch.bool:
            if ids.shape != (V,):
                raise ValueError(f"a boolean vertex mask must have shape ({V},)")
            ids = torch.nonzero(ids.to(self.device)).reshape(-1)
        ids = _as_index(ids, "vertex_ids", self.device).reshape(-1)
        if ids.numel() == 0:
            raise ValueError("vertex_ids is empty")
        _check_range(ids, V, "vertex_ids")
        if torch.unique(ids).numel() != ids.numel():
            raise ValueError("vertex_ids contains duplicates")
        remap = torch.full((V,), -1, dtype=torch.int64, device=self.device)
        remap[ids] = torch.arange(ids.numel(), device=self.device)

        f = self._fields()
        f["mean"] = self.mean[ids]
        f["id_basis"] = self.id_basis[:, ids]
        f["exp_basis"] = self.exp_basis[:, ids]
        tri_new = remap[self.triangles]
        keep_tri = (tri_new >= 0).all(dim=1)
        f["triangles"] = tri_new[keep_tri]
        if self.faces_uv is not None:
            f["faces_uv"] = self.faces_uv[keep_tri]
        if self.landmarks68 is not None:
            lm = remap[self.landmarks68]
            if (lm < 0).any():
                if missing_landmarks == "error":
                    missing = torch.nonzero(lm < 0).reshape(-1).tolist()
                    raise ValueError(f"submesh drops the vertices of landmarks {missing}; "
                                     "pass missing_landmarks='drop' to discard landmarks68")
                lm = None
            f["landmarks68"] = lm
        for key in ("contour", "vertex_sets"):
            d = {}
            for k, v in f[key].items():
                r = remap[v]
                d[k] = r[r >= 0]
            f[key] = d
        for key in ("tex_mean", "uv", "vertex_region"):
            if f[key] is not None:
                f[key] = f[key][ids]
        if self.tex_basis is not None:
            f["tex_basis"] = self.tex_basis[:, ids]
        return MorphableModel(**f, device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ files
    def export(self, path: str | os.PathLike, vertices=None, *, vertex_colors=None) -> Path:
        """Write one mesh as .obj / .ply (any format trimesh exports), atomically.

        Args:
            path: output file; the extension picks the format.
            vertices: (V, 3) or (1, V, 3) vertices (``None`` = the mean shape).
            vertex_colors: optional (V, 3) RGB in [0, 1].
        Returns:
            the path written.
        """
        import trimesh

        from facegeo.assets import atomic_write

        v = self._vertices_arg(vertices)
        if v.shape[0] != 1:
            raise ValueError(f"export writes one mesh; got a batch of {v.shape[0]}")
        kwargs = {}
        if vertex_colors is not None:
            c = torch.as_tensor(vertex_colors).detach().cpu().double().numpy()
            if c.shape != (self.n_vertices, 3):
                raise ValueError(f"vertex_colors must have shape ({self.n_vertices}, 3)")
            kwargs["vertex_colors"] = np.clip(np.round(c * 255), 0, 255).astype(np.uint8)
        mesh = trimesh.Trimesh(vertices=v[0].detach().cpu().double().numpy(),
                               faces=self.triangles.cpu().numpy(), process=False, **kwargs)
        path = Path(path)
        ext = path.suffix.lower().lstrip(".")
        if not ext:
            raise ValueError(f"cannot tell the mesh format of {path} (no extension)")

        def write(tmp: Path) -> None:
            mesh.export(str(tmp), file_type=ext)

        return atomic_write(path, write)

    def to_eos(self):
        """The same model as an ``eos.morphablemodel.MorphableModel`` (eos-py, the reference
        C++ 3DMM fitting library), e.g. to compare fitting results.

        eos' PCA models take an orthonormal basis and eigenvalues and use
        ``basis * sqrt(eigenvalues)``; each basis vector b_k is passed as ``b_k / |b_k|`` with
        eigenvalue ``|b_k|^2``, so eos' coefficients equal this model's coefficients (eos'
        prior is standard normal; this matches ``id_std`` = ones). Blendshape expressions
        become eos blendshapes; a PCA expression basis an eos PCA model. Colour is left
        empty. ``draw_sample(a, e, [])`` then reproduces :meth:`vertices`.
        """
        import eos

        mm = eos.morphablemodel
        tri = self.triangles.cpu().tolist()

        def pca(mean, basis):
            b = basis.detach().cpu().double().reshape(basis.shape[0], -1).numpy()
            norms = np.linalg.norm(b, axis=1)
            if np.any(norms == 0):
                raise ValueError("a basis vector is zero; eos needs positive eigenvalues")
            m = mean.detach().cpu().double().reshape(-1, 1).numpy().astype(np.float32)
            return mm.PcaModel(m, (b / norms[:, None]).T.astype(np.float32),
                               (norms**2).reshape(-1, 1).astype(np.float32), tri)

        shape = pca(self.mean, self.id_basis)
        if self.exp_kind == "blendshape":
            names = self.exp_names
            exp = [mm.Blendshape(names[j], self.exp_basis[j].detach().cpu().reshape(-1, 1)
                                 .numpy().astype(np.float32)) for j in range(self.n_exp)]
        else:
            exp = pca(torch.zeros_like(self.mean), self.exp_basis)
        return mm.MorphableModel(shape, exp, mm.PcaModel())

    def to_numpy_dict(self, basis_dtype=np.float16) -> dict[str, np.ndarray]:
        """The native-format arrays (what :meth:`save` writes), see :meth:`save`."""
        def f(t, dt=np.float32):
            return t.detach().cpu().float().numpy().astype(dt)

        d: dict[str, np.ndarray] = {
            "format": np.array(_FORMAT_TAG),
            "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
            "name": np.array(self.name),
            "units": np.array(self.units),
            "exp_kind": np.array(self.exp_kind),
            "mean": f(self.mean),
            "id_basis": f(self.id_basis, basis_dtype),
            "exp_basis": f(self.exp_basis, basis_dtype),
            "triangles": self.triangles.cpu().numpy().astype(np.int32),
            "exp_names": np.array(self.exp_names, dtype=str).reshape(-1),
        }
        if self.id_names is not None:
            d["id_names"] = np.array(self.id_names, dtype=str).reshape(-1)
        if self.exp_names_arkit is not None:
            d["exp_names_arkit"] = np.array(self.exp_names_arkit, dtype=str).reshape(-1)
        for key in ("id_std", "exp_std", "tex_mean", "tex_std", "uv", "uv_coords"):
            t = getattr(self, key)
            if t is not None:
                d[key] = f(t)
        if self.tex_basis is not None:
            d["tex_basis"] = f(self.tex_basis, basis_dtype)
        for key in ("landmarks68", "faces_uv", "vertex_region"):
            t = getattr(self, key)
            if t is not None:
                d[key] = t.cpu().numpy().astype(np.int32)
        if self.region_names is not None:
            d["region_names"] = np.array(self.region_names, dtype=str).reshape(-1)
        for prefix, dd in (("contour/", self.contour), ("vertex_set/", self.vertex_sets)):
            for k, v in dd.items():
                d[prefix + k] = v.cpu().numpy().astype(np.int32)
        return d

    def save(self, path: str | os.PathLike, *, basis_dtype: str = "float16",
             compress: bool = True) -> Path:
        """Save in the native format: an ``.npz`` (no pickled objects) holding
        ``format = "facegeo.morphable"``, ``format_version`` (int), the arrays of the
        attributes of the same names (float32; bases in ``basis_dtype``, float16 by default),
        ``contour/<name>`` and ``vertex_set/<name>`` index arrays, strings as unicode arrays.
        Written atomically. Returns the path."""
        from facegeo.assets import atomic_write

        if basis_dtype not in ("float16", "float32"):
            raise ValueError("basis_dtype must be 'float16' or 'float32'")
        d = self.to_numpy_dict(np.dtype(basis_dtype))
        if basis_dtype == "float16":
            for key in ("id_basis", "exp_basis", "tex_basis"):
                src = getattr(self, key)
                if src is not None and src.numel() and src.abs().max() > 65504:
                    raise ValueError(f"{key} exceeds the float16 range; use basis_dtype='float32'")

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                (np.savez_compressed if compress else np.savez)(fh, **d)

        return atomic_write(Path(path), write)

    @classmethod
    def from_native_dict(cls, d: Mapping[str, np.ndarray], *, device=None,
                         dtype: torch.dtype = torch.float32) -> MorphableModel:
        """Build a model from the arrays of the native format (see :meth:`save`)."""
        version = int(np.asarray(d["format_version"]))
        if version > FORMAT_VERSION:
            raise ValueError(f"native model format_version {version} is newer than this "
                             f"facegeo (reads up to {FORMAT_VERSION})")

        def get(k):
            return d[k] if k in d else None

        def strs(k):
            return None if k not in d else [str(s) for s in np.asarray(d[k]).reshape(-1)]

        contour = {k[len("contour/"):]: d[k] for k in d if k.startswith("contour/")}
        sets = {k[len("vertex_set/"):]: d[k] for k in d if k.startswith("vertex_set/")}
        return cls(
            get("mean"), get("triangles"), get("id_basis"), get("exp_basis"),
            id_std=get("id_std"), exp_std=get("exp_std"), exp_kind=str(d["exp_kind"]),
            id_names=strs("id_names"), exp_names=strs("exp_names"),
            exp_names_arkit=strs("exp_names_arkit"), landmarks68=get("landmarks68"),
            contour=contour, vertex_sets=sets, tex_mean=get("tex_mean"),
            tex_basis=get("tex_basis"), tex_std=get("tex_std"), uv=get("uv"),
            uv_coords=get("uv_coords"), faces_uv=get("faces_uv"),
            vertex_region=get("vertex_region"), region_names=strs("region_names"),
            units=str(d["units"]), name=str(d["name"]), device=device, dtype=dtype,
        )

    @classmethod
    def from_ict_npz(cls, path: str | os.PathLike, *, device=None,
                     dtype: torch.dtype = torch.float32) -> MorphableModel:
        """Load the shared ``ict_facekit.npz`` layout (keys ``mean``, ``id_basis``,
        ``exp_basis``, ``faces``, ``landmarks68``, ``jawline_*``, ``vertex_uv``, ...; see the
        3dmm assets README). Units cm, blendshape expressions, identity coefficients standard
        normal (``id_std`` = ones). ``contour = {"right": jawline_right_extended, "left":
        jawline_left_extended, "right_short": jawline_right, "left_short": jawline_left}``."""
        d = read_npz(path, "ICT-FaceKit model file (.npz)")
        return cls.from_ict_arrays(d, device=device, dtype=dtype)

    @classmethod
    def from_ict_arrays(cls, d: Mapping[str, np.ndarray], *, device=None,
                        dtype: torch.dtype = torch.float32) -> MorphableModel:
        """:meth:`from_ict_npz` on an already-loaded dict of the same keys."""
        missing = [k for k in ("mean", "id_basis", "exp_basis", "faces", "landmarks68")
                   if k not in d]
        if missing:
            raise ValueError(f"not an ICT-FaceKit npz: missing keys {missing}")
        contour = {}
        for side in ("right", "left"):
            if f"jawline_{side}_extended" in d:
                contour[side] = d[f"jawline_{side}_extended"]
            if f"jawline_{side}" in d:
                contour[f"{side}_short"] = d[f"jawline_{side}"]
        sets = {k: d[f"{k}_vertices"] for k in ("fitting", "rigid") if f"{k}_vertices" in d}
        n_id = d["id_basis"].shape[0]

        def strs(k):
            return None if k not in d else [str(s) for s in d[k]]

        return cls(
            d["mean"], d["faces"], d["id_basis"], d["exp_basis"],
            id_std=np.ones(n_id, np.float32), exp_std=None, exp_kind="blendshape",
            id_names=strs("id_names"), exp_names=strs("exp_names"),
            exp_names_arkit=strs("exp_names_arkit"), landmarks68=d["landmarks68"],
            contour=contour, vertex_sets=sets, uv=d.get("vertex_uv"),
            uv_coords=d.get("uv"), faces_uv=d.get("faces_uv"),
            vertex_region=d.get("vertex_region"), region_names=strs("region_names"),
            units="cm", name="ict_facekit", device=device, dtype=dtype,
        )

    @classmethod
    def load(cls, path_or_name: str | os.PathLike = "ict_facekit", *, device=None,
             dtype: torch.dtype = torch.float32, **kwargs) -> MorphableModel:
        """Load a model by asset name or path; the default is ICT-FaceKit.

        ``path_or_name`` is resolved with :func:`facegeo.assets.resolve` (registered names:
        ``"ict_facekit"``, ``"bfm2009"``, ``"bfm_front"``, ``"bfm2017"``, ``"bfm_noneck_v3"``;
        a missing BFM file raises :class:`facegeo.assets.AssetNotFoundError` saying where to
        register for it). The file type is detected from its content: native ``.npz``, the
        shared ICT ``.npz``, BFM2009 / Deep3D-front ``.mat``, BFM2017/2019 ``.h5``, 3DDFA
        ``.pkl`` / ``.npz``: dispatched by suffix (and ``.npz`` layout) through the loader
        registry, so a new format is one :func:`register_loader` call. ``kwargs`` go to the
        specific loader (e.g. ``units="mm"``). Never unpickles arbitrary objects.
        """
        from facegeo.assets import resolve

        p = resolve(path_or_name)
        return cls._load_file(p, device=device, dtype=dtype, **kwargs)

    @classmethod
    def _load_file(cls, p: Path, *, device=None, dtype=torch.float32, **kwargs):
        suffix = p.suffix.lower()
        fn = _LOADERS.get(suffix)
        if fn is None:
            raise ValueError(f"{p}: unknown model file type {suffix!r}; registered: "
                             f"{registered_loaders()}")
        return fn(p, device=device, dtype=dtype, **kwargs)


# ----------------------------------------------------------------------------- loader registry
#: file suffix (lower case, with the dot) -> ``fn(path, *, device, dtype, **kwargs)``
_LOADERS: dict[str, Callable[..., MorphableModel]] = {}
#: ``.npz`` layouts, tried in registration order: kind -> (keys the archive must hold,
#: ``fn(path, data, *, device, dtype, **kwargs)`` with ``data`` the archive's arrays)
_NPZ_LAYOUTS: dict[str, tuple[tuple[str, ...], Callable[..., MorphableModel]]] = {}


def register_loader(suffix_or_kind: str, fn: Callable[..., MorphableModel], *,
                    npz_keys: Sequence[str] | None = None) -> None:
    """Register a model file format for :meth:`MorphableModel.load`.

    Args:
        suffix_or_kind: a file suffix such as ``".mat"`` (case-insensitive; a later
            registration replaces an earlier one), or, with ``npz_keys``, the name of an
            ``.npz`` layout (e.g. ``"3ddfa"``).
        fn: for a suffix ``fn(path, *, device, dtype, **kwargs) -> MorphableModel``; for an
            ``.npz`` layout ``fn(path, data, *, device, dtype, **kwargs)`` where ``data`` is
            the archive already read (:func:`read_npz`). ``kwargs`` are the caller's options.
        npz_keys: the arrays an ``.npz`` must hold to be of this layout; layouts are tried
            in registration order (native, ICT, 3DDFA are built in).
    """
    if not callable(fn):
        raise TypeError("loader must be callable")
    if npz_keys is not None:
        keys = tuple(npz_keys)
        if not keys:
            raise ValueError("npz_keys must name at least one array")
        _NPZ_LAYOUTS[suffix_or_kind] = (keys, fn)
        return
    if not suffix_or_kind.startswith(".") or len(suffix_or_kind) < 2:
        raise ValueError(f"a file suffix starts with '.', got {suffix_or_kind!r} (an .npz "
                         "layout needs npz_keys)")
    _LOADERS[suffix_or_kind.lower()] = fn


def registered_loaders() -> list[str]:
    """The registered formats: file suffixes, then ``"npz:<layout>"`` in trial order."""
    return sorted(_LOADERS) + [f"npz:{k}" for k in _NPZ_LAYOUTS]


def _load_npz(p: Path, *, device=None, dtype=torch.float32, **kwargs) -> MorphableModel:
    d = read_npz(p)
    for keys, fn in _NPZ_LAYOUTS.values():
        if all(k in d for k in keys):
            return fn(p, d, device=device, dtype=dtype, **kwargs)
    raise ValueError(f"{p}: unrecognised .npz model layout (keys {sorted(d)[:12]}); "
                     f"registered layouts: {list(_NPZ_LAYOUTS)}")


def _load_native_npz(p: Path, d, *, device=None, dtype=torch.float32, **kwargs):
    if kwargs:
        raise TypeError(f"unexpected options for a native model: {sorted(kwargs)}")
    return MorphableModel.from_native_dict(d, device=device, dtype=dtype)


register_loader(".npz", _load_npz)
register_loader("native", _load_native_npz, npz_keys=("format_version",))
register_loader("ict", lambda p, d, *, device=None, dtype=torch.float32, **_:
                MorphableModel.from_ict_arrays(d, device=device, dtype=dtype),
                npz_keys=("faces", "landmarks68"))  # options ignored, as they always were
