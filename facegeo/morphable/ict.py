"""ICT-FaceKit converter: the original ``FaceXModel/`` folder -> :class:`MorphableModel`.

The original ICT Face Model Light (github.com/ICT-VGL/ICT-FaceKit, MIT) is a folder of OBJ
files with one shared 26,719-vertex quad topology: ``generic_neutral_mesh.obj``, 100
identity morph targets ``identity000.obj ... identity099.obj``, 53 expression morph
targets named in ``vertex_indices.json["expressions"]`` (``jawOpen.obj`` ...), and
``vertex_indices.json`` (landmarks, fitting / rigid vertex lists). The repository README
documents the geometry ranges (face, head and neck, sockets, teeth, eyes...) and the
jawline contour lists.

Conversion rules (identical to the project's shared ``ict_facekit.npz``):

* basis vectors are ``morph_target.v - neutral.v`` (what ICT's ``face_model_io.py`` does);
  identity coefficients are standard normal (the targets are already scaled), expression
  weights are blendshape weights in [0, 1];
* only the geometries "Face" (#0) and "Head and Neck" (#1) are kept by default: vertices
  ``[0, 11248)``, polygons ``[0, 11144)``; kept vertices keep their order, so every ICT index
  below 11248 stays valid;
* each polygon ``(a, b, c, d, ...)`` is split into a fan ``(a, b, c), (a, c, d), ...``, which
  keeps the (counter-clockwise, outward) winding;
* units are centimetres (inferred: outer-eye-corner distance 8.9), axes +x = subject's left,
  +y = up, +z = out of the face.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from facegeo.morphable.model import MorphableModel

__all__ = [
    "read_obj",
    "read_obj_vertices",
    "parse_ict_readme",
    "ict_to_arkit_name",
    "load_ict_facekit_dir",
    "convert_ict_facekit",
]

# The two geometries kept by default, as documented in the ICT README table (used when no
# README is found next to the FaceXModel folder): name -> (v_first, v_last, p_first, p_last).
_DEFAULT_GEOMETRIES = {
    "Face": (0, 9408, 0, 9229),
    "Head and Neck": (9409, 11247, 9230, 11143),
}
_NARROW_FACE_LAST_VERTEX = 6705  # README "Face Area Details": narrow face area [0:6705]


def read_obj_vertices(path: str | os.PathLike) -> np.ndarray:
    """The ``v x y z`` lines of an OBJ file as a (N, 3) float64 array (fast path for morph
    targets; extra ``v`` columns such as vertex colours are ignored)."""
    rows = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                rows.append(line[2:])
    if not rows:
        raise ValueError(f"{path}: no vertices")
    parts = [r.split() for r in rows]
    if any(len(p) < 3 for p in parts):
        raise ValueError(f"{path}: malformed 'v' line")
    return np.array([p[:3] for p in parts], dtype=np.float64)


def read_obj(path: str | os.PathLike):
    """Minimal OBJ reader that keeps polygons and per-corner UV indices.

    Returns:
        v: (N, 3) float64 vertices; vt: (M, 2) float64 UVs (may be empty);
        polys: list of (n,) int64 0-based vertex ids per polygon;
        polys_uv: list of (n,) int64 0-based UV ids per polygon (-1 where absent).
    """
    v, vt, polys, polys_uv = [], [], [], []
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                v.append(line.split()[1:4])
            elif line.startswith("vt "):
                vt.append(line.split()[1:3])
            elif line.startswith("f "):
                corners = line.split()[1:]
                vi, ti = [], []
                for c in corners:
                    f = c.split("/")
                    vi.append(int(f[0]))
                    ti.append(int(f[1]) if len(f) > 1 and f[1] else 0)
                polys.append(vi)
                polys_uv.append(ti)
    nv, nt = len(v), len(vt)

    def fix(idx, n):  # OBJ: 1-based, negative = relative to the end; 0 here = absent
        a = np.asarray(idx, dtype=np.int64)
        return np.where(a > 0, a - 1, np.where(a < 0, n + a, -1))

    return (np.asarray(v, dtype=np.float64).reshape(-1, 3),
            np.asarray(vt, dtype=np.float64).reshape(-1, 2),
            [fix(p, nv) for p in polys], [fix(p, nt) for p in polys_uv])


def parse_ict_readme(path: str | os.PathLike) -> dict:
    """Read the tables and index lists of the ICT-FaceKit ``README.md``.

    Returns a dict with ``"geometries"``: {name: (v_first, v_last, p_first, p_last)}
    (inclusive, from the "Face Model Topology" table), ``"face_areas"`` (same for the
    "Face Area Details" table), and the 0-based index lists ``"landmarks68"``,
    ``"jawline_right"``, ``"jawline_left"``, ``"jawline_right_extended"``,
    ``"jawline_left_extended"`` (the ones present).
    """
    text = Path(path).read_text(encoding="utf-8")
    row = re.compile(r"^\|\s*#(\d+)\s*\|\s*([^|]+?)\s*\|\s*\[(\d+):(\d+)\]\s*\|\s*\[(\d+):(\d+)\]")
    tables: list[dict] = []
    current: dict | None = None
    for line in text.splitlines():
        m = row.match(line)
        if m:
            if current is None:
                current = {}
                tables.append(current)
            current[m.group(2)] = tuple(int(m.group(i)) for i in range(3, 7))
        elif not line.startswith("|"):
            current = None
    out: dict = {"geometries": {}, "face_areas": {}}
    for t in tables:
        if "Face" in t and "Head and Neck" in t:
            out["geometries"] = t
        elif "Narrow face area" in t:
            out["face_areas"] = t
    headers = {
        "landmarks68": "Multi-PIE 68 point facial landmarks indices",
        "jawline_right": "Right jawline (",
        "jawline_left": "Left jawline (",
        "jawline_right_extended": "Right extended jawline",
        "jawline_left_extended": "Left extended jawline",
    }
    lines = text.splitlines()
    for key, head in headers.items():
        for i, line in enumerate(lines):
            if line.strip().startswith(head):
                for nxt in lines[i + 1:i + 6]:
                    if re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", nxt):
                        out[key] = [int(x) for x in nxt.split(",")]
                        break
                break
    return out


def ict_to_arkit_name(name: str) -> str:
    """ICT expression name -> Apple ARKit blendshape name (``browDown_L`` ->
    ``browDownLeft``; ICT's split ``browInnerUp_L/_R`` and ``cheekPuff_L/_R`` both map to
    ARKit's single ``browInnerUp`` / ``cheekPuff``)."""
    for side, word in (("_L", "Left"), ("_R", "Right")):
        if name.endswith(side):
            base = name[: -len(side)]
            return base if base in ("browInnerUp", "cheekPuff") else base + word
    return name


def _find_readme(facex_dir: Path) -> Path | None:
    for cand in (facex_dir / "README.md", facex_dir.parent / "README.md",
                 facex_dir.parent / "ICT-FaceKit-README.md"):
        if cand.is_file():
            return cand
    return None


def load_ict_facekit_dir(
    facex_dir: str | os.PathLike,
    *,
    identities: Sequence[str] | None = None,
    expressions: Sequence[str] | None = None,
    keep_geometries: Sequence[str] = ("Face", "Head and Neck"),
    readme: str | os.PathLike | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> MorphableModel:
    """Build a :class:`MorphableModel` from the original ICT ``FaceXModel/`` folder.

    Args:
        facex_dir: the folder with ``generic_neutral_mesh.obj`` and ``vertex_indices.json``.
        identities: OBJ stems of the identity targets (default: every ``identity*.obj``,
            sorted).
        expressions: expression names (default: ``vertex_indices.json["expressions"]``;
            every one must have its ``<name>.obj``).
        keep_geometries: README geometry names to keep (default face + head/neck).
        readme: the ICT README (geometry table, jawline lists); default: ``README.md`` /
            ``ICT-FaceKit-README.md`` in the folder or its parent. Without it the built-in
            face + head/neck ranges are used and the model has no jawline contour.

    Returns:
        MorphableModel with units cm, ``exp_kind="blendshape"``, ``id_std`` ones, landmarks
        from ``idx_to_landmark_verts``, contour ``{"right", "left"}`` = README extended
        jawlines (``"right_short"``/``"left_short"`` = the 8-point ones), vertex sets
        ``"fitting"``/``"rigid"`` (limited to kept vertices), per-vertex and per-corner UVs,
        vertex regions ``face_narrow`` / ``face_outer`` / ``head_and_neck``.

    Raises:
        FileNotFoundError: a required file is missing (names it).
        ValueError: a morph target with a different vertex count, a kept polygon using a
            dropped vertex, or a landmark / contour vertex outside the kept geometry.
    """
    facex_dir = Path(facex_dir)
    neutral_path = facex_dir / "generic_neutral_mesh.obj"
    json_path = facex_dir / "vertex_indices.json"
    for p in (neutral_path, json_path):
        if not p.is_file():
            raise FileNotFoundError(f"ICT-FaceKit file missing: {p}")
    info = json.loads(json_path.read_text())
    readme_path = Path(readme) if readme is not None else _find_readme(facex_dir)
    rd = parse_ict_readme(readme_path) if readme_path is not None else {}
    geometries = rd.get("geometries") or _DEFAULT_GEOMETRIES
    unknown = [g for g in keep_geometries if g not in geometries]
    if unknown:
        raise ValueError(f"unknown ICT geometries {unknown}; known: {list(geometries)}")

    v0, vt, polys, polys_uv = read_obj(neutral_path)
    n_orig = v0.shape[0]
    keep_v = np.zeros(n_orig, dtype=bool)
    keep_p = np.zeros(len(polys), dtype=bool)
    region_of_vertex = np.full(n_orig, -1, dtype=np.int64)
    region_names: list[str] = []
    for g in keep_geometries:
        a, b, pa, pb = geometries[g]
        if b >= n_orig or pb >= len(polys):
            raise ValueError(f"geometry {g!r} range exceeds the neutral mesh")
        keep_v[a:b + 1] = True
        keep_p[pa:pb + 1] = True
        key = re.sub(r"\W+", "_", g.strip().lower())
        if g == "Face":
            narrow = rd.get("face_areas", {}).get("Narrow face area",
                                                  (0, _NARROW_FACE_LAST_VERTEX, 0, 0))
            region_names += ["face_narrow", "face_outer"]
            region_of_vertex[a:b + 1] = len(region_names) - 1
            region_of_vertex[narrow[0]:narrow[1] + 1] = len(region_names) - 2
        else:
            region_names.append(key)
            region_of_vertex[a:b + 1] = len(region_names) - 1
    kept = np.nonzero(keep_v)[0]
    remap = np.full(n_orig, -1, dtype=np.int64)
    remap[kept] = np.arange(kept.size)

    tris, tris_uv = [], []
    for poly, puv in zip((polys[i] for i in np.nonzero(keep_p)[0]),
                         (polys_uv[i] for i in np.nonzero(keep_p)[0])):
        if len(poly) < 3:
            raise ValueError("degenerate polygon with fewer than 3 corners")
        for j in range(1, len(poly) - 1):  # fan split: (a,b,c), (a,c,d), ...
            tris.append((poly[0], poly[j], poly[j + 1]))
            tris_uv.append((puv[0], puv[j], puv[j + 1]))
    tris = np.asarray(tris, dtype=np.int64)
    tris_uv = np.asarray(tris_uv, dtype=np.int64)
    faces = remap[tris]
    if (faces < 0).any():
        raise ValueError("a kept polygon uses a vertex outside the kept geometries")

    uv_kwargs = {}
    if vt.shape[0] and (tris_uv >= 0).all():
        used, inv = np.unique(tris_uv.reshape(-1), return_inverse=True)
        faces_uv = inv.reshape(-1, 3)
        uv_coords = vt[used]
        vertex_uv = np.zeros((kept.size, 2))
        # one UV per vertex: the one of its first corner in face order
        verts_used, first_corner = np.unique(faces.reshape(-1), return_index=True)
        vertex_uv[verts_used] = uv_coords[faces_uv.reshape(-1)[first_corner]]
        uv_kwargs = dict(uv=vertex_uv, uv_coords=uv_coords, faces_uv=faces_uv)

    def load_targets(stems: Sequence[str]) -> np.ndarray:
        out = np.empty((len(stems), kept.size, 3), dtype=np.float32)
        for i, stem in enumerate(stems):
            p = facex_dir / f"{stem}.obj"
            if not p.is_file():
                raise FileNotFoundError(f"ICT-FaceKit morph target missing: {p}")
            v = read_obj_vertices(p)
            if v.shape[0] != n_orig:
                raise ValueError(f"{p} has {v.shape[0]} vertices, the neutral mesh {n_orig}")
            out[i] = (v - v0)[kept]
        return out

    if identities is None:
        identities = sorted(p.stem for p in facex_dir.glob("identity*.obj"))
    if expressions is None:
        expressions = list(info["expressions"])
    id_basis = load_targets(identities)
    exp_basis = load_targets(expressions)

    def kept_index(lst, label, strict=True):
        a = np.asarray(lst, dtype=np.int64)
        r = remap[a]
        if strict and (r < 0).any():
            raise ValueError(f"{label}: vertices {a[r < 0].tolist()} are not kept")
        return r[r >= 0]

    landmarks = kept_index(info["idx_to_landmark_verts"], "landmarks")
    contour = {}
    for side in ("right", "left"):
        if f"jawline_{side}_extended" in rd:
            contour[side] = kept_index(rd[f"jawline_{side}_extended"], f"{side} jawline")
        if f"jawline_{side}" in rd:
            contour[f"{side}_short"] = kept_index(rd[f"jawline_{side}"], f"{side} jawline")
    sets = {
        "fitting": kept_index(info.get("idx_to_fitting_verts", []), "fitting", strict=False),
        "rigid": kept_index(info.get("idx_to_rigid_verts", []), "rigid", strict=False),
    }
    return MorphableModel(
        v0[kept], faces, id_basis, exp_basis,
        id_std=np.ones(len(identities), np.float32), exp_kind="blendshape",
        id_names=list(identities), exp_names=list(expressions),
        exp_names_arkit=[ict_to_arkit_name(n) for n in expressions],
        landmarks68=landmarks, contour=contour, vertex_sets=sets,
        vertex_region=region_of_vertex[kept], region_names=region_names,
        units="cm", name="ict_facekit", device=device, dtype=dtype, **uv_kwargs,
    )


def convert_ict_facekit(facex_dir: str | os.PathLike, out_path: str | os.PathLike, *,
                        basis_dtype: str = "float16", **kwargs) -> Path:
    """Convert an ICT ``FaceXModel/`` folder to the native ``.npz`` format (bases in
    ``basis_dtype``, float16 by default: max rounding error < 1e-3 cm). ``kwargs`` go to
    :func:`load_ict_facekit_dir`. Returns the written path; load it with
    ``MorphableModel.load(path)``."""
    model = load_ict_facekit_dir(facex_dir, **kwargs)
    return model.save(out_path, basis_dtype=basis_dtype)
