"""Figure for docs/morphable.md: the default ICT-FaceKit model with its 68 landmarks (red)
and jawline contour candidates (cyan = ``contour["right"]``, yellow = ``contour["left"]``),
next to a random identity with an expression. Orthographic front view, Lambert shading from
the model's outward (CCW) normals, back faces culled.

Run: ``FACEGEO_ASSETS=../shared/assets python docs/make_figures_morphable.py``
(writes docs/img/morphable_ict.png).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from facegeo.morphable import MorphableModel

SIZE = 420  # pixels per panel


def render(model: MorphableModel, v: torch.Tensor) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 BGR front view of (1, V, 3) vertices."""
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    fn = model.face_normals(v)[0]
    fn = fn / fn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    tri = model.triangles
    vis = fn[:, 2] > 0  # outward normals facing the viewer (+z)
    depth = v[0][tri].mean(1)[:, 2]
    order = torch.argsort(depth[vis])  # painter's algorithm: far first
    t = tri[vis][order].numpy()
    shade = (40 + 215 * fn[vis][order][:, 2].clamp(0, 1)).numpy().astype(int)
    xy = v[0, :, :2].numpy()
    lo, hi = xy.min(0), xy.max(0)
    s = (SIZE - 20) / (hi - lo).max()

    def px(p):  # x right, y up (model) -> pixel x right, y down; 4 bits of sub-pixel
        q = np.stack([(p[..., 0] - lo[0]) * s + 10, (hi[1] - p[..., 1]) * s + 10], -1)
        return np.round(q * 16).astype(np.int32)

    pts = px(xy)
    for k in range(t.shape[0]):
        c = int(shade[k])
        cv2.fillConvexPoly(img, pts[t[k]], (c, c, c), lineType=cv2.LINE_AA, shift=4)
    for idx, color in ((model.contour["right"], (200, 200, 0)),
                       (model.contour["left"], (0, 200, 230)),
                       (model.landmarks68, (0, 0, 230))):
        for p in pts[idx.numpy()]:
            cv2.circle(img, (int(p[0]), int(p[1])), 3 * 16, color, -1, cv2.LINE_AA, shift=4)
    return img


def main() -> None:
    m = MorphableModel.load()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, m.n_id, generator=g)
    e = torch.zeros(1, m.n_exp)
    for name, w in (("jawOpen", 0.6), ("mouthSmile_L", 0.8), ("eyeBlink_R", 1.0)):
        e[0, m.exp_names.index(name)] = w
    img = np.concatenate([render(m, m.vertices()), render(m, m.vertices(a, e))], 1)
    out = Path(__file__).resolve().parent / "img" / "morphable_ict.png"
    cv2.imwrite(str(out), img)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
