"""Exact 3DMM recombination: fit target and driver, keep the target's identity.

For target landmarks ``x_T`` and driving landmarks ``x_D`` (pixels), both are fitted with
:func:`facegeo.fitting.fit_landmarks` (weak perspective by default). The recombined face is::

    X  = mean + a_T @ id_basis + e_D @ exp_basis      (landmark rows chosen by the driver's fit,
                                                       i.e. its silhouette jaw vertices)
    x  = s_D (R_D X)_xy-flipped + t_D                 (the driver's fitted camera)

i.e. the target's identity coefficients with the driver's expression, head pose and camera.
"""

from __future__ import annotations

import torch

__all__ = ["recombine_3dmm"]


def recombine_3dmm(target_lm: torch.Tensor, driving_lm: torch.Tensor, model=None,
                   **fit_kwargs) -> torch.Tensor:
    """Identity of ``target_lm`` with pose/expression of ``driving_lm`` via the 3DMM.

    Args:
        target_lm: (B, 68, 2) pixel landmarks of the target faces.
        driving_lm: (B, 68, 2) pixel landmarks of the driving faces.
        model: a :class:`facegeo.morphable.MorphableModel` (``None``: default ICT model).
        **fit_kwargs: passed to :func:`facegeo.fitting.fit_landmarks` for both fits
            (e.g. ``contour="fixed"``, ``camera="pinhole"``, ``iterations``).
    Returns:
        (B, 68, 2) landmarks in the DRIVER's pixel frame (the driver's fitted camera).
    """
    from facegeo.fitting import fit_landmarks

    if model is None:
        from facegeo.morphable import MorphableModel

        model = MorphableModel.load()
    if target_lm.shape != driving_lm.shape:
        raise ValueError(f"target_lm {tuple(target_lm.shape)} and driving_lm "
                         f"{tuple(driving_lm.shape)} must have the same shape")
    both = torch.cat([target_lm, driving_lm], 0)
    fit = fit_landmarks(model, both, **fit_kwargs)
    B = target_lm.shape[0]
    a_t = fit.id_coeffs[:B]
    e_d = fit.exp_coeffs[B:]
    idx = fit.contour_vertices[B:].to(model.mean.device)  # (B, 68) vertex ids
    dt = fit.rotation.dtype
    mean = model.mean.to(dt)[idx]  # (B, 68, 3)
    idb = model.id_basis.to(dt)[:, idx]  # (K_id, B, 68, 3)
    exb = model.exp_basis.to(dt)[:, idx]
    a_t = a_t.to(mean.device, dt)
    e_d = e_d.to(mean.device, dt)
    ka, ke = a_t.shape[1], e_d.shape[1]  # the fitter may use leading modes only
    X = (mean + torch.einsum("bk,kbnc->bnc", a_t, idb[:ka])
         + torch.einsum("bk,kbnc->bnc", e_d, exb[:ke]))
    drv = _subset(fit, slice(B, 2 * B))
    return drv.project(X.to(fit.rotation.device)).to(target_lm.dtype)


def _subset(fit, sl):
    import dataclasses

    kw = {}
    for f in dataclasses.fields(fit):
        v = getattr(fit, f.name)
        kw[f.name] = v[sl] if isinstance(v, torch.Tensor) and v.ndim >= 1 else v
    return type(fit)(**kw)
