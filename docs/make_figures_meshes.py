"""Figure of docs/reenact.md, section "Mesh interpolation": the exported meshes of an identity
morph (Einstein -> lp_s1), vertex-coloured from the source photo, rendered from three sides.

Run: ``python docs/make_figures_meshes.py`` (writes docs/img/reenact_meshes.png).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FACEGEO_MEDIA", ROOT.parent / "shared" / "media"))


def render(path: Path, yaw: float, size: int = 200) -> torch.Tensor:
    """(3, size, size) view of a coloured PLY/OBJ, turned by ``yaw`` degrees."""
    import trimesh

    from facegeo import transforms as T
    from facegeo.raster import interpolate, rasterize

    m = trimesh.load(path, process=False)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    f = torch.tensor(m.faces)
    c = torch.tensor(m.visual.vertex_colors[:, :3] / 255.0, dtype=torch.float32)
    x = v @ T.euler_to_matrix(torch.tensor([[yaw, 0.0, 0.0]]))[0].T
    s = size / 36.0
    iv = torch.stack([x[:, 0] * s + size / 2, -(x[:, 1] - 2) * s + size / 2, -x[:, 2]], -1)
    fr = rasterize(iv[None], f, size, size, cull_backfaces=True)
    return interpolate(c[None], fr, f, background=1.0)[0].permute(2, 0, 1)


def main() -> None:
    from facegeo.image_io import save_image

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m"
        subprocess.run([sys.executable, str(ROOT / "apps" / "interpolate.py"), "--source",
                        str(MEDIA / "lp_s12.jpg"), "--target-identity", str(MEDIA / "lp_s1.jpg"),
                        "--frames", "3", "--meshes", str(out), "--mesh-format", "ply",
                        "--quiet"], check=True)
        files = sorted(out.iterdir())
        rows = [torch.cat([render(p, yaw) for yaw in (0.0, 50.0, 180.0)], -1)
                for p in (files[0], files[-1])]
    dst = ROOT / "docs" / "img" / "reenact_meshes.png"
    save_image(dst, torch.cat(rows, -2))
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
