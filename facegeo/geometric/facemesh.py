"""The face mesh the geometric renderer rasterizes: a 3DMM region, holes capped.

:class:`FaceMesh` restricts a :class:`~facegeo.morphable.MorphableModel` to its face region
(:meth:`MorphableModel.submesh`), finds the boundary loops of that mesh
(:func:`facegeo.mesh.boundary_edges`): the outer loop (the face outline) and the inner
loops (ICT ``face_narrow``: the two eye openings and the mouth opening), and optionally
*caps* every inner loop with a triangle fan around one extra vertex, the loop's centroid
(an average of model rows, so it is itself linear in the coefficients and moves with the
blendshapes). With caps, the mesh flow covers the eyes and the mouth too: the pixels of a
target eye opening sample the source's eye opening (piecewise linearly, continuous with
the eyelids around it), and when the target eyelid closes, the lid triangles cover the
collapsed cap and carry the source's eyelid skin down over the eye (the eyeball is no
longer sampled). The mouth cap does the same for the lips' opening.

Everything is in the model frame; :func:`posed_vertices` takes it to image space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facegeo import transforms as T

__all__ = ["FaceMesh", "posed_vertices", "boundary_loops"]


def posed_vertices(verts: torch.Tensor, rotation: torch.Tensor, scale: torch.Tensor,
                   translation: torch.Tensor) -> torch.Tensor:
    """Model-frame vertices -> image-space vertices for :func:`facegeo.raster.rasterize`.

    ``(u, v)`` is :func:`facegeo.transforms.weak_perspective_project`
    (``u = s (RX)_x + t_u``, ``v = -s (RX)_y + t_v``) and the depth is ``z = -s (RX)_z``
    (grows away from the viewer, the rasterizer's convention).

    Args:
        verts: (B, V, 3); rotation (B, 3, 3); scale (B,); translation (B, 2).

    Returns:
        (B, V, 3).
    """
    uv = T.weak_perspective_project(verts, rotation, translation, scale)
    z = -scale[:, None] * (verts @ rotation[:, 2:3].transpose(-1, -2))[..., 0]
    return torch.cat([uv, z[..., None]], -1)


def boundary_loops(faces: torch.Tensor, num_vertices: int) -> list[torch.Tensor]:
    """Closed boundary loops of a triangle mesh, each an ordered (L,) vertex index tensor
    (following the mesh's boundary edges, :func:`facegeo.mesh.boundary_edges`), longest
    first. Boundary vertices shared by two loops (pinches) end the walk of a loop there."""
    from facegeo.mesh import boundary_edges

    be = boundary_edges(faces, num_vertices).tolist()
    nbr: dict[int, list[int]] = {}
    for a, b in be:
        nbr.setdefault(a, []).append(b)
        nbr.setdefault(b, []).append(a)
    seen: set[int] = set()
    loops = []
    for start in sorted(nbr):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in nbr[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(torch.tensor(loop, dtype=torch.long))
    return sorted(loops, key=len, reverse=True)


@dataclass
class FaceMesh:
    """A face-region mesh of a morphable model with shape bases (model frame).

    Attributes:
        vertex_ids: (V_m,) model vertex of each mesh row (``-1`` for the cap centroids).
        faces: (F, 3) triangles (rows of the mesh; caps included when built with caps).
        mean, id_basis, exp_basis: (N, 3), (K_id, N, 3), (K_exp, N, 3) shape bases of the
            N = V_m mesh rows (cap centroids are loop averages).
        landmark_rows: (68,) mesh row of each of the model's 68 landmarks.
        outline: (L,) rows of the outer boundary loop, ordered around the face.
        holes: list of (L_i,) rows of the inner loops (eyes, mouth), ordered.
        cap_rows: (n_holes,) row of each hole's centroid vertex (empty without caps).
        n_cap_faces: number of cap triangles (the last rows of ``faces``).
    """

    vertex_ids: torch.Tensor
    faces: torch.Tensor
    mean: torch.Tensor
    id_basis: torch.Tensor
    exp_basis: torch.Tensor
    landmark_rows: torch.Tensor
    outline: torch.Tensor
    holes: list
    cap_rows: torch.Tensor
    n_cap_faces: int

    @classmethod
    def from_model(cls, model, regions: tuple[str, ...] | None = ("face_narrow",), *,
                   caps: bool = True, device=None) -> FaceMesh:
        """Build from a model.

        Args:
            model: :class:`~facegeo.morphable.MorphableModel` with ``landmarks68``.
            regions: ``vertex_region`` names to keep (None or a model without regions:
                the whole mesh). Landmark vertices are always kept.
            caps: close the inner boundary loops with triangle fans.
            device: where the bases live.

        Raises:
            ValueError: unknown region, or a mesh without a boundary.
        """
        V = model.n_vertices
        if regions and getattr(model, "vertex_region", None) is not None:
            names = list(model.region_names)
            missing = [r for r in regions if r not in names]
            if missing:
                raise ValueError(f"unknown regions {missing}; the model has {names}")
            ids = torch.tensor([names.index(r) for r in regions])
            keep = torch.isin(model.vertex_region.cpu(), ids)
        else:
            keep = torch.ones(V, dtype=torch.bool)
        tri = model.triangles.cpu()
        used = torch.zeros(V, dtype=torch.bool)
        used[tri[keep[tri].all(1)].reshape(-1)] = True
        used[model.landmarks68.cpu().long()] = True  # landmark rows always evaluated
        sub = model.submesh(used.to(model.mean.device))
        vids = used.nonzero().squeeze(1)
        faces = sub.triangles.cpu().long()
        n = vids.numel()
        loops = boundary_loops(faces, n)
        if not loops:
            raise ValueError("the face mesh has no boundary")
        mean = sub.mean.cpu().float()
        idb, exb = sub.id_basis.cpu().float(), sub.exp_basis.cpu().float()
        outline, holes = cls._split_outline(loops, mean)
        cap_rows, cap_faces = [], []
        if caps and holes:
            # orientation: cap normals point the way the mesh's own normals point on average
            # (outwards = towards the viewer for the front of the face)
            ref = cls._normal_z(mean, faces).sum()
            rows = [mean]
            bid, bex = [idb], [exb]
            for k, loop in enumerate(holes):
                r = n + k
                cap_rows.append(r)
                rows.append(mean[loop].mean(0, keepdim=True))
                bid.append(idb[:, loop].mean(1, keepdim=True))
                bex.append(exb[:, loop].mean(1, keepdim=True))
                fan = torch.stack([torch.full_like(loop, r), loop, loop.roll(-1)], 1)
                allv = torch.cat(rows)
                if (cls._normal_z(allv, fan).sum() * ref) < 0:
                    fan = fan[:, [0, 2, 1]]
                cap_faces.append(fan)
            mean, idb, exb = torch.cat(rows), torch.cat(bid, 1), torch.cat(bex, 1)
            vids = torch.cat([vids, torch.full((len(holes),), -1, dtype=torch.long)])
        n_cap = sum(f.shape[0] for f in cap_faces)
        faces = torch.cat([faces, *cap_faces]) if cap_faces else faces
        remap = torch.full((V,), -1, dtype=torch.long)
        remap[used.nonzero().squeeze(1)] = torch.arange(n)
        lm_rows = remap[model.landmarks68.cpu().long()]
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return cls(vids, faces.contiguous().to(dev), mean.to(dev), idb.to(dev), exb.to(dev),
                   lm_rows.to(dev), outline, holes,
                   torch.tensor(cap_rows, dtype=torch.long), n_cap)

    @staticmethod
    def _normal_z(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        return torch.linalg.cross(b - a, c - a)[:, 2]

    @staticmethod
    def _split_outline(loops, mean):
        """The outer loop is the one enclosing the largest frontal (x, y) area."""
        def area(loop):
            p = mean[loop, :2]
            return 0.5 * float((p[:, 0] * p.roll(-1, 0)[:, 1]
                                - p.roll(-1, 0)[:, 0] * p[:, 1]).sum().abs())
        k = max(range(len(loops)), key=lambda i: area(loops[i]))
        return loops[k], [lp for i, lp in enumerate(loops) if i != k]

    @property
    def n_rows(self) -> int:
        return self.mean.shape[0]

    def vertices(self, id_coeffs: torch.Tensor, exp_coeffs: torch.Tensor) -> torch.Tensor:
        """(B, K_id), (B, K_exp) -> (B, N, 3) model-frame mesh rows
        (:func:`facegeo.morphable.linear_shape`)."""
        from facegeo.morphable import linear_shape

        return linear_shape(self.mean, self.id_basis, self.exp_basis,
                            id_coeffs.to(self.mean), exp_coeffs.to(self.mean))

    def to(self, device) -> FaceMesh:
        return FaceMesh(self.vertex_ids, self.faces.to(device), self.mean.to(device),
                        self.id_basis.to(device), self.exp_basis.to(device),
                        self.landmark_rows.to(device), self.outline, self.holes,
                        self.cap_rows, self.n_cap_faces)
