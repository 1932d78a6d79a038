"""A head proxy beyond the face mesh: an ellipsoid that turns with the head.

The face mesh (:mod:`facegeo.geometric.facemesh`) gives the motion of the face; the hair,
ears, outline and the far cheek lie outside it and must turn with the head too, or the head
reads as less turned than requested (the interior slides while the outline stays). The
proxy is an axis-aligned ellipsoid in the model frame spanning the fitted model head above
the chin, inflated for the hair (:meth:`HeadEllipsoid.from_vertices`).

:func:`ellipsoid_flow` is its backward map, analytic per pixel (weak perspective): a target
pixel ``p`` is the ray ``X(lambda) = R_t^T [(p - t_t) / s_t (y flipped), lambda]`` in the
model frame; its front-most intersection with the ellipsoid is projected with the source
pose. Points the turn brings into view from behind the source's silhouette project just
inside that silhouette, so the newly shown band is a mirror image of the band next to the
source's outline (plausible hair / background, not a streak).

Outside the target silhouette (normalised silhouette radius ``rho > 1``) the displacement
of the silhouette point on the same ray from the silhouette centre is carried outwards and
faded to zero at ``rho = fade`` (smoothstep), so the hair beyond the ellipsoid and the
background next to the head follow, and the image farther away stays where it is: no
border pinning and no global stretch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["HeadEllipsoid", "ellipsoid_flow"]


@dataclass
class HeadEllipsoid:
    """Axis-aligned ellipsoid ``sum(((X - center) / radii)^2) = 1`` in the model frame.

    Attributes:
        center: (B, 3); radii: (B, 3) (model units).
    """

    center: torch.Tensor
    radii: torch.Tensor

    @classmethod
    def from_vertices(cls, verts: torch.Tensor, chin_y: torch.Tensor | None = None,
                      outline: torch.Tensor | None = None, *,
                      inflate: float = 1.08) -> HeadEllipsoid:
        """The ellipsoid spanning a head, inflated for the hair, through the face outline.

        Of the vertices above ``chin_y`` (the neck is not the head): x is centred on the
        mid-sagittal plane with half-width the 99.5 % quantile of ``|x - x_mid|``; y spans
        the chin to the top of the head; both radii are scaled by ``inflate`` (default 1.08:
        hair adds about a centimetre on a head of ~9-11 cm radius; the fade beyond the
        outline covers longer hair). The back of the ellipsoid is the back of the head
        (0.5 % z quantile, pushed back by the same inflation). Its depth radius is chosen
        so that it passes through the ``outline`` points (median over them), e.g. the jaw
        contour landmarks: the ellipsoid then meets the face mesh at the face's outline
        with the mesh's depth, so both move alike under a turn there. Without ``outline``
        the front is the 98 % z quantile.

        Args:
            verts: (B, V, 3) model-frame vertices (e.g. the whole fitted ICT head).
            chin_y: (B,) vertices below this height are left out (default: none).
            outline: optional (B, N, 3) points the front surface should pass through.

        Returns:
            :class:`HeadEllipsoid` with B rows.
        """
        out_c, out_r = [], []
        for b in range(verts.shape[0]):
            v = verts[b].float()
            if chin_y is not None:
                v = v[v[:, 1] >= float(chin_y[b])]
            if v.shape[0] < 4:
                raise ValueError("need at least 4 head vertices above the chin")
            xm = 0.5 * (v[:, 0].amin() + v[:, 0].amax())
            rx = torch.quantile((v[:, 0] - xm).abs(), 0.995) * inflate
            y0, y1 = v[:, 1].amin(), v[:, 1].amax()
            yc, ry = (y0 + y1) / 2, (y1 - y0) / 2 * inflate
            z0 = torch.quantile(v[:, 2], 0.005)
            z1 = torch.quantile(v[:, 2], 0.98)
            z0 = z1 - (z1 - z0) * inflate
            rz = (z1 - z0) / 2
            if outline is not None:
                o = outline[b].float()
                a2 = ((o[:, 0] - xm) / rx) ** 2 + ((o[:, 1] - yc) / ry) ** 2
                u = o[:, 2] - z0
                ok = (a2 > 0.05) & (a2 < 1) & (u > 0)
                if bool(ok.any()):
                    # (u - rz)^2 = rz^2 (1 - a2) -> rz = u (1 - sqrt(1 - a2)) / a2, front root
                    r = u[ok] * (1 - (1 - a2[ok]).sqrt()) / a2[ok]
                    rz = r.median()
            out_c.append(torch.stack([xm, yc, z0 + rz]))
            out_r.append(torch.stack([rx, ry, rz]))
        return cls(torch.stack(out_c).to(verts.dtype), torch.stack(out_r).to(verts.dtype))


def _camera_xy(p: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor):
    """(B, ..., 2) pixels -> camera-frame (x, y) (y up) in model units."""
    shp = (-1,) + (1,) * (p.dim() - 2)
    x = (p[..., 0] - translation[:, 0].view(shp)) / scale.view(shp)
    y = -(p[..., 1] - translation[:, 1].view(shp)) / scale.view(shp)
    return x, y


def ellipsoid_flow(pix: torch.Tensor, head: HeadEllipsoid, target: tuple, source: tuple, *,
                   fade: float = 1.4) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward map of the head ellipsoid from target pixels to source pixels.

    Args:
        pix: (B, H, W, 2) target pixel positions (x, y).
        head: the proxy (1 or B rows).
        target, source: ``(rotation (B, 3, 3), scale (B,), translation (B, 2))`` weak-
            perspective poses (rows broadcast from 1).
        fade: silhouette radius at which the carried-out displacement reaches zero.

    Returns:
        src (B, H, W, 2) source pixel positions; rho (B, H, W) the normalised silhouette
        radius of each target pixel (< 1 on the ellipsoid).
    """
    Rt, st, tt = target
    Rs, ss, ts = source
    B = pix.shape[0]
    c = head.center.to(pix).expand(B, 3)
    r = head.radii.to(pix).expand(B, 3)
    Rt, Rs = Rt.to(pix).expand(B, 3, 3), Rs.to(pix).expand(B, 3, 3)
    st, ss = st.to(pix).expand(B), ss.to(pix).expand(B)
    tt, ts = tt.to(pix).expand(B, 2), ts.to(pix).expand(B, 2)
    v = (-1, 1, 1)
    x, y = _camera_xy(pix, st, tt)
    # ray X = a + lambda d in the model frame, in unit-sphere coordinates u = (X - c) / r
    d = Rt[:, 2] / r                                   # (B, 3): R^T e_z / r
    # a = R^T (x, y, 0) -> columns of R^T are the rows of R
    e0, e1 = Rt[:, 0] / r, Rt[:, 1] / r
    c0 = -c / r
    au = [x * e0[:, k].view(v) + y * e1[:, k].view(v) + c0[:, k].view(v) for k in range(3)]
    dd = (d * d).sum(-1).view(v)
    ad = sum(au[k] * d[:, k].view(v) for k in range(3))
    aa = sum(au[k] * au[k] for k in range(3))
    rho2 = (aa - ad * ad / dd).clamp_min(0)
    rho = rho2.sqrt()
    # pixels outside the silhouette: evaluate at the silhouette point on the ray from the
    # silhouette centre (where a_perp = 0), i.e. shrink a_perp by 1 / rho
    shrink = torch.where(rho > 0.999, 0.999 / rho.clamp_min(1e-6), torch.ones_like(rho))
    lam0 = -ad / dd                                    # foot of the centre line
    au = [lam0 * d[:, k].view(v) + shrink * (au[k] + (-lam0) * d[:, k].view(v))
          for k in range(3)]
    ad = sum(au[k] * d[:, k].view(v) for k in range(3))
    aa = sum(au[k] * au[k] for k in range(3))
    disc = (ad * ad - dd * (aa - 1)).clamp_min(0)
    lam = (-ad + disc.sqrt()) / dd                     # front-most (largest camera z)
    X = [(au[k] + lam * d[:, k].view(v)) * r[:, k].view(v) + c[:, k].view(v)
         for k in range(3)]
    sx = sum(Rs[:, 0, k].view(v) * X[k] for k in range(3))
    sy = sum(Rs[:, 1, k].view(v) * X[k] for k in range(3))
    qx = ss.view(v) * sx + ts[:, 0].view(v)
    qy = -ss.view(v) * sy + ts[:, 1].view(v)
    q = torch.stack([qx, qy], -1)
    # where the ray was shrunk, q belongs to the silhouette point p_sil = centre + (p -
    # centre) * shrink; carry its displacement out and fade it
    ctr = pix - (pix - _centre_pixel(c, Rt, st, tt).view(B, 1, 1, 2)) * (1 - shrink[..., None])
    disp = q - ctr
    t = ((rho - 1) / (fade - 1)).clamp(0, 1)
    w = 1 - t * t * (3 - 2 * t)
    src = pix + disp * w[..., None]
    return src, rho


def _centre_pixel(c: torch.Tensor, R: torch.Tensor, s: torch.Tensor,
                  t: torch.Tensor) -> torch.Tensor:
    """(B, 2) image position of the ellipsoid centre."""
    rc = (R @ c[..., None])[..., 0]
    return torch.stack([s * rc[:, 0] + t[:, 0], -s * rc[:, 1] + t[:, 1]], -1)
