"""Figure for docs/mesh.md: the CoMA (4, 4, 4, 4) hierarchy of the ICT face model built by
``facegeo.mesh.mesh_hierarchy`` (top row) next to open3d's ``simplify_quadric_decimation`` at
the same vertex counts (bottom row). Orthographic front view, Lambert shading, wireframe.

Run: ``FACEGEO_ASSETS=../shared/assets python docs/make_figures_mesh.py``
(writes docs/img/mesh_hierarchy.png).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import open3d as o3d

import facegeo.assets
from facegeo import mesh as M

SIZE = 190


def render(v: np.ndarray, f: np.ndarray, lo, hi, label: str) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    vis = n[:, 2] > 0
    order = np.argsort(v[f].mean(1)[:, 2][vis])
    t = f[vis][order]
    shade = (60 + 190 * n[vis][order][:, 2]).astype(int)
    s = (SIZE - 30) / (hi - lo).max()
    px = np.stack([(v[:, 0] - lo[0]) * s + 15, (hi[1] - v[:, 1]) * s + 22], -1)
    px = np.round(px * 16).astype(np.int32)
    for tri, c in zip(t, shade):
        pts = px[tri][None]
        cv2.fillPoly(img, pts, (int(c), int(c), int(c)), cv2.LINE_AA, shift=4)
        cv2.polylines(img, pts, True, (150, 90, 40), 1, cv2.LINE_AA, shift=4)
    cv2.putText(img, label, (5, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def main() -> None:
    d = np.load(facegeo.assets.resolve("ict_facekit"))
    v, f = d["mean"].astype(np.float64), d["faces"].astype(np.int64)
    h = M.mesh_hierarchy(v, f, (4, 4, 4, 4))
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v),
                                     o3d.utility.Vector3iVector(f.astype(np.int32)))
    top, bottom = [], []
    for lvl in range(h.num_levels + 1):
        vv, ff = h.vertices[lvl].double().numpy(), h.faces[lvl].numpy()
        top.append(render(vv, ff, lo, hi, f"facegeo V={len(vv)}"))
        if lvl == 0:
            bottom.append(render(v, f, lo, hi, f"input V={len(v)}"))
            continue
        s = mesh.simplify_quadric_decimation(target_number_of_triangles=len(ff))
        s.remove_unreferenced_vertices()
        bottom.append(render(np.asarray(s.vertices), np.asarray(s.triangles), lo, hi,
                             f"open3d V={len(s.vertices)}"))
    img = np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)
    out = Path(__file__).resolve().parent / "img" / "mesh_hierarchy.png"
    out.parent.mkdir(exist_ok=True)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    facegeo.assets.atomic_write(out, lambda p: p.write_bytes(buf.tobytes()))
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
