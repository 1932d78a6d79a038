"""Figure of docs/reenact.md, section "Mesh interpolation": the exported meshes of an identity
morph (the astronaut -> a random ICT-FaceKit identity), vertex-coloured from the source
photo, rendered from three sides.

Run: ``python docs/make_figures_meshes.py`` (writes docs/img/reenact_meshes.png).

The source is ``figure_inputs.astronaut`` (scikit-image's public-domain portrait); the
target identity is a random ICT identity vector (1.5 sigma, seed 3) rather than a second
photo, so nothing but redistributable inputs appear. The meshes go through the same
exporter as ``apps/interpolate.py --meshes`` (``facegeo_apps.interpolate._write_meshes``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_inputs import astronaut  # noqa: E402


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
    from facegeo.controls import interpolate_regions
    from facegeo.image_io import save_image
    from facegeo.reenact import GeometricReenactor
    from facegeo_apps.interpolate import _write_meshes

    torch.set_num_threads(1)
    rr = GeometricReenactor(size=256)
    src = rr.fit_source(astronaut(), crop=True)
    tgt = src.fit.index(0)
    g = torch.Generator().manual_seed(3)
    tgt.id_coeffs = torch.randn(1, rr.model.n_id, generator=g).to(tgt.id_coeffs) * 1.5
    fits = interpolate_regions(src.fit, tgt, torch.linspace(0, 1, 3), only=["identity"],
                               model=rr.model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m"
        _write_meshes(argparse.Namespace(meshes=str(out), glb=None, mesh_format="ply"),
                      rr, src, fits)
        files = sorted(out.iterdir())
        rows = [torch.cat([render(p, yaw) for yaw in (0.0, 50.0, 180.0)], -1)
                for p in (files[0], files[-1])]
    dst = ROOT / "docs" / "img" / "reenact_meshes.png"
    save_image(dst, torch.cat(rows, -2))
    print(f"wrote {dst} ({dst.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
