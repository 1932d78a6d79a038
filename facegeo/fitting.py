"""Landmark-based 3DMM fitting: pose + identity + expression from 2D landmarks.

Batched Levenberg-Marquardt in torch with an analytic Jacobian, working on the 68 landmark rows
of the model only (the model is linear in its coefficients, so every step is one small dense
solve per face). See ``docs/fitting.md`` for the objective, the priors and measured numbers.

Conventions (see :mod:`facegeo.transforms`): model frame +x subject's left, +y up, +z out of the
face; image pixels x right, y down. A fitted pose maps a model point ``X`` to pixels by

* weak perspective: ``u = s (R X)_x + t_u``, ``v = -s (R X)_y + t_v``
  (:func:`facegeo.transforms.weak_perspective_project`);
* pinhole: ``X_c = F R X + t`` (OpenCV camera, ``F = diag(1, -1, -1)``),
  ``(u, v) = f X_c[:2] / X_c[2] + c`` (:func:`facegeo.transforms.pinhole_project`).

Objective (per face; ``x_i`` observed, ``p_i`` projected, ``S`` = RMS radius of the observed
landmarks in pixels, so the weights do not depend on image resolution)::

    E = sum_i w_i |p_i - x_i|^2 / S^2
        + lambda_id  * |a / sigma_id|^2
        + lambda_exp * |e / sigma_exp|^2       (PCA expression model)
        + lambda_exp * |e|^2, 0 <= e <= 1      (blendshape expression model: box constraint)

Main entry points: :func:`fit_landmarks` (independent faces), :func:`fit_video` (frames of one
person: shared identity, per-frame pose/expression, optional temporal smoothness), and
:class:`LandmarkFitter` (keeps the model's landmark bases on a device for repeated calls).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch

from facegeo import transforms as T
from facegeo._deprecation import warn_deprecated

__all__ = ["FitResult", "LandmarkFitter", "fit_landmarks", "fit_video", "validate_landmarks"]

#: iBUG-68 jawline points that slide along the silhouette (8 = chin stays fixed).
CONTOUR_RIGHT = tuple(range(0, 8))  # subject's right = image left
CONTOUR_LEFT = tuple(range(9, 17))

_E = torch.tensor(
    [
        [[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
        [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
        [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    ]
)  # [e_k]_x


@dataclass
class FitResult:
    """Result of a landmark fit for B faces (all tensors on the fitter's device).

    Attributes:
        rotation: (B, 3, 3) head rotation (model frame).
        angles: (B, 3) (yaw, pitch, roll) in degrees (:func:`facegeo.transforms.matrix_to_euler`).
        translation: weak perspective: (B, 2) pixel position of the model origin;
            pinhole: (B, 3) OpenCV camera coordinates of the model origin (model units).
        scale: (B,) pixels per model unit (weak perspective); for pinhole ``focal / t_z``.
        focal: (B,) focal length in pixels (pinhole) or ``None``.
        principal_point: (B, 2) (pinhole) or ``None``.
        id_coeffs: (B, K_id) identity coefficients (all rows equal in video mode).
        exp_coeffs: (B, K_exp) expression coefficients / blendshape weights.
        landmarks2d: (B, 68, 2) projected fitted landmarks (with the chosen contour vertices).
        rmse: (B,) landmark RMSE in pixels over the visible landmarks.
        contour_vertices: (B, 68) model vertex id used for each landmark.
        camera: ``"weak_perspective"`` or ``"pinhole"``.
        iterations: number of Levenberg-Marquardt iterations run.
    """

    rotation: torch.Tensor
    angles: torch.Tensor
    translation: torch.Tensor
    scale: torch.Tensor
    id_coeffs: torch.Tensor
    exp_coeffs: torch.Tensor
    landmarks2d: torch.Tensor
    rmse: torch.Tensor
    contour_vertices: torch.Tensor
    camera: str
    iterations: int
    focal: torch.Tensor | None = None
    principal_point: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.rotation.shape[0]

    def vertices(self, model) -> torch.Tensor:
        """(B, V, 3) fitted meshes in model coordinates (unposed)."""
        return model.vertices(self.id_coeffs.to(model.dtype), self.exp_coeffs.to(model.dtype))

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Project (B, N, 3) model-frame points with the fitted cameras -> (B, N, 2) pixels."""
        p = points.to(self.rotation.dtype)
        if self.camera == "weak_perspective":
            return T.weak_perspective_project(p, self.rotation, self.translation, self.scale)
        return T.pinhole_project(p, self.rotation, self.translation, self.focal,
                                 self.principal_point)


def validate_landmarks(
    landmarks: torch.Tensor,
    visibility: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    *,
    n_landmarks: int = 68,
    min_visible: int = 6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check fitting input and return (landmarks (B, N, 2) with invisible rows zeroed, w (B, N)).

    Raises ValueError on: wrong shape/count, NaN/inf in visible landmarks (invisible or
    zero-weight ones may be NaN), NaN/inf visibility, negative or
    non-finite weights, fewer than ``min_visible`` visible landmarks in a face, or collinear /
    coincident visible landmarks."""
    if not isinstance(landmarks, torch.Tensor):
        raise TypeError(f"landmarks must be a torch.Tensor, got {type(landmarks).__name__}")
    if landmarks.dim() == 2:
        landmarks = landmarks[None]
    if landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape (B, {n_landmarks}, 2), got "
                         f"{tuple(landmarks.shape)}")
    B, N, _ = landmarks.shape
    if N != n_landmarks:
        raise ValueError(f"expected {n_landmarks} landmarks (iBUG-68 order), got {N}")
    if B == 0:
        raise ValueError("landmarks has an empty batch")
    if not landmarks.is_floating_point():
        landmarks = landmarks.float()
    w = torch.ones(B, N, dtype=landmarks.dtype, device=landmarks.device)
    if visibility is not None:
        vis = torch.as_tensor(visibility, device=landmarks.device)
        if vis.dim() == 1:
            vis = vis[None]
        if vis.shape != (B, N):
            raise ValueError(f"visibility must have shape ({B}, {N}), got {tuple(vis.shape)}")
        if vis.is_floating_point() and not bool(torch.isfinite(vis).all()):
            b, i = (int(x) for x in (~torch.isfinite(vis)).nonzero()[0])
            raise ValueError(f"visibility contains NaN/inf (face {b}, landmark {i}); use 0 "
                             "for missing points")
        w = w * (vis.to(landmarks.dtype) > 0).to(landmarks.dtype)
    if weights is not None:
        wt = torch.as_tensor(weights, device=landmarks.device).to(landmarks.dtype)
        if wt.dim() == 1:
            wt = wt[None].expand(B, N) if wt.shape[0] == N else wt
        if wt.shape != (B, N):
            raise ValueError(f"weights must have shape ({B}, {N}) or ({N},), got "
                             f"{tuple(wt.shape)}")
        if not torch.isfinite(wt).all() or (wt < 0).any():
            raise ValueError("weights must be finite and non-negative")
        w = w * wt
    visible = w > 0
    bad = ~torch.isfinite(landmarks).all(-1) & visible
    if bad.any():
        b, i = bad.nonzero()[0].tolist()
        raise ValueError(f"landmarks contain NaN/inf (face {b}, landmark {i}); mark missing "
                         f"points with visibility=0 instead")
    n_vis = visible.sum(1)
    if (n_vis < min_visible).any():
        b = int((n_vis < min_visible).nonzero()[0])
        raise ValueError(f"face {b} has only {int(n_vis[b])} visible landmarks; at least "
                         f"{min_visible} are needed")
    x = torch.where(visible[..., None], landmarks, torch.zeros_like(landmarks))
    # collinearity: smallest principal spread of the visible points
    wv = visible.to(x.dtype)
    c = (x * wv[..., None]).sum(1) / n_vis[:, None]
    d = (x - c[:, None]) * wv[..., None]
    cov = d.transpose(1, 2) @ d / n_vis[:, None, None]
    ev = torch.linalg.eigvalsh(cov.double())
    degenerate = (ev[:, 1] <= 1e-12) | (ev[:, 0] < 1e-6 * ev[:, 1])
    if degenerate.any():
        b = int(degenerate.nonzero()[0])
        raise ValueError(f"face {b}: visible landmarks are degenerate (coincident or collinear)")
    return x, w


def _contour_candidates(model, lm_idx: torch.Tensor, band: float, back_margin: float):
    """Per jawline landmark, candidate vertices on a horizontal model-space line.

    Returns (cand_vertices (C,), table (16, M) indices into cand_vertices or -1 (column 0 is
    the landmark's own fixed vertex), landmark ids (16,))."""
    mean = model.mean.detach().to("cpu", torch.float64)
    lmk = mean[lm_idx.cpu()]
    eye = (lmk[36] - lmk[45]).norm().item()
    n_v = mean.shape[0]
    allowed = torch.ones(n_v, dtype=torch.bool)
    region = getattr(model, "vertex_region", None)
    if region is not None:
        allowed &= region.cpu() <= 1  # face regions (ICT: 0 narrow, 1 outer)
    contour = getattr(model, "contour", None) or {}
    ids, rows = [], []
    for side, sign, lms in (("right", -1.0, CONTOUR_RIGHT), ("left", 1.0, CONTOUR_LEFT)):
        back = contour.get(side)
        back_pts = mean[back.cpu()] if back is not None and len(back) else None
        for i in lms:
            p = lmk[i]
            z_back = p[2].item()
            if back_pts is not None:
                j = (back_pts[:, 1] - p[1]).abs().argmin()
                z_back = min(z_back, back_pts[j, 2].item())
            sel = (
                allowed
                & ((mean[:, 1] - p[1]).abs() <= band * eye)
                & (mean[:, 0] * sign >= 0.55 * abs(p[0].item()))
                & (mean[:, 2] >= z_back - back_margin * eye)
            )
            cand = sel.nonzero().flatten()
            cand = torch.cat([lm_idx[i : i + 1].cpu(), cand[cand != lm_idx[i].cpu()]])
            ids.append(i)
            rows.append(cand)
    allc = torch.unique(torch.cat(rows))
    pos = {int(v): k for k, v in enumerate(allc.tolist())}
    m = max(len(r) for r in rows)
    table = torch.full((len(rows), m), -1, dtype=torch.long)
    for r, cand in enumerate(rows):
        table[r, : len(cand)] = torch.tensor([pos[int(v)] for v in cand.tolist()])
    return allc, table, torch.tensor(ids)


class LandmarkFitter:
    """Fits a :class:`~facegeo.morphable.MorphableModel` to 68 2D landmarks.

    Args:
        model: a MorphableModel with ``landmarks68`` (iBUG order).
        n_id, n_exp: number of leading identity / expression components to fit (default all).
        device, dtype: where to fit (default: the model's device, float32).
        contour_band: half-height (fraction of the outer-eye-corner distance) of the model-space
            horizontal line of candidate vertices for each sliding jawline landmark.
    """

    def __init__(self, model, *, n_id: int | None = None, n_exp: int | None = None,
                 device=None, dtype: torch.dtype = torch.float32, contour_band: float = 0.035):
        if getattr(model, "landmarks68", None) is None:
            raise ValueError("the model has no 68-point landmark definition")
        self.device = torch.device(device) if device is not None else model.mean.device
        self.dtype = dtype
        self.n_id = model.n_id if n_id is None else int(n_id)
        self.n_exp = model.n_exp if n_exp is None else int(n_exp)
        if not (0 <= self.n_id <= model.n_id and 0 <= self.n_exp <= model.n_exp):
            raise ValueError(f"n_id/n_exp must be within (0..{model.n_id}, 0..{model.n_exp})")
        self.exp_kind = model.exp_kind
        kw = dict(device=self.device, dtype=dtype)
        lm_idx = model.landmarks68.to(torch.long)
        self.lm_idx = lm_idx.to(self.device)

        def std(s, k):
            if s is None:
                return torch.ones(k, **kw)
            return s[:k].to(**kw).clamp_min(1e-12)

        self.id_std = std(model.id_std, self.n_id)
        self.exp_std = std(model.exp_std, self.n_exp) if self.exp_kind == "pca" else torch.ones(
            self.n_exp, **kw)
        mean_lm, id_lm, exp_lm = model.landmark_bases()
        self.mean_lm = mean_lm.to(**kw)
        # (68, 3, K) with K = n_id + n_exp
        self.basis_lm = torch.cat([id_lm[: self.n_id], exp_lm[: self.n_exp]], 0).permute(
            1, 2, 0).to(**kw).contiguous()
        cand, table, ids = _contour_candidates(model, lm_idx, contour_band, 0.02)
        cv = cand.to(model.mean.device)
        self.cand_vertices = cand.to(self.device)
        self.cand_mean = model.mean[cv].to(**kw)
        self.cand_basis = torch.cat(
            [model.id_basis[: self.n_id, cv], model.exp_basis[: self.n_exp, cv]], 0
        ).permute(1, 2, 0).to(**kw).contiguous()
        self.cand_table = table.to(self.device)
        self.contour_ids = ids.to(self.device)
        self._E = _E.to(**kw)
        self._structured = True

    # ------------------------------------------------------------------ model evaluation
    @property
    def n_coeffs(self) -> int:
        return self.n_id + self.n_exp

    def _shape(self, mean, basis, coef):
        """mean (B|1, N, 3), basis (B|1, N, 3, K), coef (B, K) -> (B, N, 3)."""
        if basis.shape[0] == 1 and coef.shape[0] > 1:
            n = basis.shape[1]
            flat = basis[0].reshape(n * 3, -1)
            return mean + (coef @ flat.T).reshape(coef.shape[0], n, 3)
        return mean + torch.einsum("bnck,bk->bnc", basis, coef)

    def _select_contour(self, pose, coef, mode, camera=None, obs=None):
        """Per face landmark mean (B, 68, 3), basis (B|1, 68, 3, K) and vertex ids (B, 68).

        ``mode="slide"``: each jawline landmark takes the candidate vertex (on its model-space
        horizontal line) whose projection is nearest to the observed point ``obs`` (B, 68, 2)."""
        B = coef.shape[0]
        base_ids = self.lm_idx[None].expand(B, 68)
        if mode == "fixed":
            return self.mean_lm[None], self.basis_lm[None], base_ids
        pos = self._shape(self.cand_mean[None], self.cand_basis[None], coef)  # (B, C, 3)
        proj, _ = self._project(camera, pose, pos)  # (B, C, 2)
        tab = self.cand_table.clamp_min(0)
        d = ((proj[:, tab] - obs[:, self.contour_ids, None]) ** 2).sum(-1)  # (B, 16, M)
        d = d.masked_fill(self.cand_table[None] < 0, math.inf)
        best = tab[torch.arange(tab.shape[0], device=tab.device)[None], d.argmin(-1)]  # (B,16)
        mean = self.mean_lm[None].expand(B, 68, 3).clone()
        basis = self.basis_lm[None].expand(B, *self.basis_lm.shape).clone()
        mean[:, self.contour_ids] = self.cand_mean[best]
        basis[:, self.contour_ids] = self.cand_basis[best]
        ids = base_ids.clone()
        ids[:, self.contour_ids] = self.cand_vertices[best]
        return mean, basis, ids

    # ------------------------------------------------------------------ camera
    def _project(self, cam, pose, X, jac_basis=None):
        """Project (B, N, 3) shapes. pose: dict. Returns p (B, N, 2) and optionally
        (J_pose (B, N, 2, P_pose), J_shape (B, N, 2, K)) for jac_basis (B|1, N, 3, K)."""
        R = pose["R"]
        y = X @ R.transpose(1, 2)  # (B, N, 3)
        if cam == "weak_perspective":
            s = pose["s"]
            p = torch.stack([y[..., 0], -y[..., 1]], -1) * s[:, None, None] + pose["t"][:, None]
            if jac_basis is None:
                return p, None
            sv = s[:, None]
            z = torch.zeros_like(y[..., 0])
            ju = torch.stack([z, y[..., 2], -y[..., 1]], -1) * sv[..., None]
            jv = torch.stack([y[..., 2], z, -y[..., 0]], -1) * sv[..., None]
            j_rot = torch.stack([ju, jv], -2)  # (B, N, 2, 3)
            eye2 = torch.eye(2, dtype=X.dtype, device=X.device).expand(*p.shape[:2], 2, 2)
            j_s = (p - pose["t"][:, None])[..., None]
            j_pose = torch.cat([j_rot, eye2, j_s], -1).transpose(1, 2)  # (B, 2, N, 6)
            M = torch.stack([R[:, 0], -R[:, 1]], 1) * s[:, None, None]  # (B, 2, 3)
            j_shape = self._apply_rows(M, jac_basis)
            return p, (j_pose, j_shape)
        # pinhole
        f, c, t = pose["f"], pose["c"], pose["t"]
        xc = torch.stack([y[..., 0], -y[..., 1], -y[..., 2]], -1) + t[:, None]
        zc = xc[..., 2].clamp_min(1e-6)
        fz = f[:, None] / zc
        p = xc[..., :2] * fz[..., None] + c[:, None]
        if jac_basis is None:
            return p, None
        zero = torch.zeros_like(fz)
        D = torch.stack([torch.stack([fz, zero, -fz * xc[..., 0] / zc], -1),
                         torch.stack([zero, fz, -fz * xc[..., 1] / zc], -1)], -2)  # (B,N,2,3)
        # d xc / d omega = F (-[y]x) ; F = diag(1,-1,-1)
        sk = -T._skew(y)
        fsk = sk * torch.tensor([1.0, -1.0, -1.0], dtype=X.dtype, device=X.device)[:, None]
        j_rot = D @ fsk
        cols = [j_rot, D]
        if pose.get("fit_focal", False):
            cols.append((p - c[:, None])[..., None])
        j_pose = torch.cat(cols, -1).transpose(1, 2)
        FR = R * torch.tensor([1.0, -1.0, -1.0], dtype=X.dtype, device=X.device)[:, None]
        # D (B,N,2,3) @ FR (B,3,3) -> per-point (2,3) rows
        DFR = torch.einsum("bnij,bjk->bnik", D, FR)
        if jac_basis.shape[0] == 1:
            j_shape = torch.einsum("bnij,njk->bink", DFR, jac_basis[0])
        else:
            j_shape = torch.einsum("bnij,bnjk->bink", DFR, jac_basis)
        return p, (j_pose, j_shape)

    @staticmethod
    def _apply_rows(M, basis):
        """M (B, 2, 3), basis (B|1, N, 3, K) -> (B, 2, N, K) (coordinate-major rows)."""
        if basis.shape[0] == 1:
            b = basis[0]  # (N, 3, K)
            n, _, k = b.shape
            out = M.reshape(-1, 3) @ b.transpose(0, 1).reshape(3, n * k)  # (B*2, N*K)
            return out.reshape(M.shape[0], 2, n, k)
        return torch.einsum("bij,bnjk->bink", M, basis)

    # ------------------------------------------------------------------ initialisation
    def _init_pose_affine(self, X, x, w):
        """Closed-form weak-perspective pose: weighted affine camera fit + orthonormalisation.

        X (B|1, 68, 3) model landmarks, x (B, 68, 2), w (B, 68) -> R (B,3,3), s (B,), t (B,2)."""
        B = x.shape[0]
        X = X.expand(B, -1, -1)
        cx = (x * w[..., None]).sum(1) / w.sum(1, keepdim=True)
        cX = (X * w[..., None]).sum(1) / w.sum(1, keepdim=True)
        Xc, xc = X - cX[:, None], x - cx[:, None]
        A = (Xc * w[..., None]).transpose(1, 2) @ Xc  # (B,3,3)
        A = A + 1e-9 * A.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None] * torch.eye(
            3, dtype=x.dtype, device=x.device)
        rhs = (Xc * w[..., None]).transpose(1, 2) @ xc  # (B,3,2)
        P = torch.linalg.solve(A, rhs).transpose(1, 2)  # (B,2,3): x ~ P X
        r0, r1 = P[:, 0], -P[:, 1]
        s = 0.5 * (r0.norm(dim=-1) + r1.norm(dim=-1))
        # symmetric orthonormalisation of the two rows (differentiable, unlike an SVD of a
        # nearly orthonormal matrix whose singular values coincide)
        a = r0 / r0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        b = r1 / r1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        c = a + b
        c = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        d = a - b
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        e0, e1 = (c + d) / math.sqrt(2.0), (c - d) / math.sqrt(2.0)
        R = torch.stack([e0, e1, torch.linalg.cross(e0, e1)], 1)
        ok = ((torch.det(R) - 1).abs() < 1e-3) & torch.isfinite(R).flatten(1).all(1)
        R = torch.where(ok[:, None, None], R, torch.eye(3, dtype=R.dtype, device=R.device))
        s = torch.where(ok & (s > 0), s, s.clamp_min(1e-6))
        y = cX[:, None] @ R.transpose(1, 2)
        t = cx - s[:, None] * torch.stack([y[:, 0, 0], -y[:, 0, 1]], -1)
        return R, s, t

    # ------------------------------------------------------------------ main loop
    def fit(self, landmarks: torch.Tensor, *, visibility=None, weights=None, focal=None,
            principal_point=None, shared_identity: bool = False, chunk_size: int = 64,
            **kwargs) -> FitResult:
        """Fit B faces (or, with ``shared_identity``, B frames of one person).

        Args:
            landmarks: (B, 68, 2) pixel coordinates (x right, y down), iBUG-68 order.
            visibility: (B, 68) bool/0-1, invisible points are ignored (may be NaN).
            weights: (B, 68) or (68,) non-negative per-landmark weights.
            camera: ``"weak_perspective"`` or ``"pinhole"``.
            focal: pinhole focal length in pixels (float or (B,)); default ``max(H, W)`` from
                ``image_hw``; ``estimate_focal=True`` refines it (weakly observable!).
            principal_point: (c_u, c_v) or (B, 2); default the image centre
                ``((W - 1) / 2, (H - 1) / 2)``.
            image_hw: the image size ``(H, W)``, needed for the pinhole defaults. (The old
                keyword ``image_size=(W, H)``, width first, is deprecated: it still works, with
                a warning, and is removed in 0.3.)
            lambda_id, lambda_exp: prior weights (see the module docstring).
            fit_identity, fit_expression: keep the coefficients at zero when False.
            contour: ``"slide"`` (jawline points 0-7, 9-16 move to the silhouette along model
                horizontal lines, re-chosen every few iterations) or ``"fixed"`` (the model's
                fixed landmark vertices).
            iterations: Levenberg-Marquardt iterations.
            shared_identity: one identity for all B inputs (video mode).
            id_coeffs: (K_id,) known identity coefficients, held fixed for all B inputs
                (only pose and expression are fitted; e.g. a long video fitted in chunks
                with the identity estimated once).
            smooth_pose, smooth_exp: temporal smoothness weights between consecutive inputs
                (only with ``shared_identity``); ``smooth_exp`` is one weight or one per
                fitted expression coefficient (n_exp,).
            coarse_iterations, coarse_n_id: the first ``coarse_iterations`` iterations (at most
                ``iterations - 2``) update only the first ``coarse_n_id`` identity components
                (smaller, faster solves); the rest refine everything. 0 disables it.
            chunk_size: independent faces are fitted in chunks of this many (cache-friendly;
                results do not depend on it).

        Returns:
            :class:`FitResult`.
        """
        _image_size_to_hw(kwargs, "LandmarkFitter.fit")
        B = landmarks.shape[0] if isinstance(landmarks, torch.Tensor) and landmarks.dim() == 3 \
            else 1
        if shared_identity or chunk_size <= 0 or B <= chunk_size:
            return self._fit_one(landmarks, visibility=visibility, weights=weights, focal=focal,
                                 principal_point=principal_point,
                                 shared_identity=shared_identity, **kwargs)

        validate_landmarks(landmarks, visibility, weights)  # errors name the global face index

        def part(v, lo, hi, ndim):
            if isinstance(v, torch.Tensor) and v.dim() == ndim and v.shape[0] == B:
                return v[lo:hi]
            return v

        results = []
        for lo in range(0, B, chunk_size):
            hi = min(lo + chunk_size, B)
            results.append(self._fit_one(
                landmarks[lo:hi], visibility=part(visibility, lo, hi, 2),
                weights=part(weights, lo, hi, 2), focal=part(focal, lo, hi, 1),
                principal_point=part(principal_point, lo, hi, 2), **kwargs))
        return _concat_results(results)

    def _weight(self, value, name: str, per_coefficient: bool = False):
        """A finite non-negative prior / smoothness weight; with ``per_coefficient`` one
        number or one per fitted expression coefficient -> (n_exp,) tensor on the
        fitter's device.

        Raises:
            ValueError naming ``name``: NaN, inf, negative, not a number, or (per
            coefficient) a vector of the wrong length.
        """
        try:
            w = torch.as_tensor(value, dtype=torch.float64).detach().cpu().flatten()
        except (TypeError, ValueError, RuntimeError):
            w = None
        ok = w is not None and w.numel() >= 1 and (per_coefficient or w.numel() == 1)
        if not ok or not bool((torch.isfinite(w) & (w >= 0)).all()):
            what = " (or one per expression coefficient)" if per_coefficient else ""
            raise ValueError(f"{name} must be a finite non-negative number{what} (prior / "
                             f"smoothness weight), got {value!r}")
        if not per_coefficient:
            return float(w[0])
        if w.numel() not in (1, self.n_exp):
            raise ValueError(f"{name} has {w.numel()} weights; the fitter fits {self.n_exp} "
                             "expression coefficients (give one number or one per "
                             "coefficient)")
        return w.to(self.device, self.dtype).expand(self.n_exp)

    def _fit_one(
        self,
        landmarks: torch.Tensor,
        *,
        visibility: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        camera: str = "weak_perspective",
        focal: float | torch.Tensor | None = None,
        principal_point=None,
        image_hw: tuple[int, int] | None = None,
        estimate_focal: bool = False,
        lambda_id: float = 2e-4,
        lambda_exp: float = 1e-4,
        fit_identity: bool = True,
        fit_expression: bool = True,
        contour: str = "slide",
        iterations: int = 6,
        shared_identity: bool = False,
        smooth_pose: float = 0.0,
        smooth_exp: float | torch.Tensor = 0.0,
        coarse_iterations: int = 3,
        coarse_n_id: int = 40,
        id_coeffs: torch.Tensor | None = None,
    ) -> FitResult:
        """Unchunked :meth:`fit`."""
        if camera not in ("weak_perspective", "pinhole"):
            raise ValueError(f"camera must be 'weak_perspective' or 'pinhole', got {camera!r}")
        if contour not in ("slide", "fixed"):
            raise ValueError(f"contour must be 'slide' or 'fixed', got {contour!r}")
        for name, val in (("lambda_id", lambda_id), ("lambda_exp", lambda_exp),
                          ("smooth_pose", smooth_pose)):
            self._weight(val, name)
        smooth_exp = self._weight(smooth_exp, "smooth_exp", per_coefficient=True)
        smooth_exp_on = bool((smooth_exp > 0).any())
        if (smooth_pose or smooth_exp_on) and not shared_identity:
            raise ValueError("temporal smoothness needs shared_identity=True (use fit_video)")
        if iterations < 0:
            raise ValueError("iterations must be >= 0")
        x, w = validate_landmarks(landmarks, visibility, weights)
        x = x.to(self.device, self.dtype)
        w = w.to(self.device, self.dtype)
        B = x.shape[0]
        dt, dev = self.dtype, self.device
        n_vis = (w > 0).sum(1).to(dt)
        wn = w / w.sum(1, keepdim=True) * n_vis[:, None]
        cx = (x * wn[..., None]).sum(1) / n_vis[:, None]
        size = (((x - cx[:, None]) ** 2).sum(-1) * (wn > 0)).sum(1).div(n_vis).sqrt()
        wd = wn / size[:, None] ** 2  # data weights (B, 68)

        K, Ki = self.n_coeffs, self.n_id
        coef = torch.zeros(B, K, dtype=dt, device=dev)
        if id_coeffs is not None:  # a known identity: held fixed, pose/expression fitted
            a = torch.as_tensor(id_coeffs, dtype=dt, device=dev).reshape(-1)
            if a.numel() < Ki:
                raise ValueError(f"id_coeffs has {a.numel()} entries, the fitter uses {Ki}")
            if not torch.isfinite(a).all():
                raise ValueError("id_coeffs must be finite")
            coef[:, :Ki] = a[:Ki]
            fit_identity = False
        free = torch.ones(K, dtype=torch.bool, device=dev)
        if not fit_identity:
            free[:Ki] = False
        if not fit_expression:
            free[Ki:] = False
        prior = torch.cat([lambda_id / self.id_std**2, lambda_exp / self.exp_std**2])
        boxed = torch.zeros(K, dtype=torch.bool, device=dev)
        if self.exp_kind == "blendshape":
            boxed[Ki:] = True

        # ---- initial pose
        init_shape = self.mean_lm[None] if id_coeffs is None else self._shape(
            self.mean_lm[None], self.basis_lm[None], coef[:1])
        R, s, t2 = self._init_pose_affine(init_shape, x, wn)
        pose = {"R": R}
        if camera == "weak_perspective":
            pose.update(s=s, t=t2)
            n_pose = 6
        else:
            if principal_point is None or focal is None:
                if image_hw is None:
                    raise ValueError("pinhole fitting needs image_hw=(H, W) or both focal and "
                                     "principal_point")
                H, W = image_hw
            if focal is None:
                focal = float(max(H, W))
            if principal_point is None:
                principal_point = ((W - 1) / 2.0, (H - 1) / 2.0)
            f = torch.as_tensor(focal, dtype=dt, device=dev).expand(B).clone()
            c = torch.as_tensor(principal_point, dtype=dt, device=dev).expand(B, 2).clone()
            if not (torch.isfinite(f).all() and (f > 0).all() and torch.isfinite(c).all()):
                raise ValueError("focal must be positive and finite, principal point finite")
            tz = f / s
            txy = (t2 - c) / s[:, None]
            pose.update(f=f, c=c, t=torch.cat([txy, tz[:, None]], 1),
                        fit_focal=bool(estimate_focal), f0=f.clone())
            n_pose = 7 if estimate_focal else 6

        mode = contour
        lm_mean, lm_basis, ids = self._select_contour(pose, coef, "fixed")
        P = n_pose + K
        mu = torch.full((B,), 1e-3, dtype=dt, device=dev)
        free_full = torch.cat([torch.ones(n_pose, dtype=torch.bool, device=dev), free])
        focal_prior = 1e-2  # weak pull of log f towards its initial value
        box_weight = 100.0  # stiff penalty keeping blendshape weights in [0, 1]
        shared_w = bool((wn == wn[:1]).all())
        structured = camera == "weak_perspective" and shared_w and self._structured
        if structured:
            if mode == "fixed":
                static = torch.arange(68, device=dev)
            else:
                keep_rows = torch.ones(68, dtype=torch.bool, device=dev)
                keep_rows[self.contour_ids] = False
                static = keep_rows.nonzero().flatten()
            Bs = self.basis_lm[static]
            G = torch.einsum("nak,nbl->abkl", Bs * wn[0, static, None, None], Bs)

        def energy(pose_, coef_, lm_mean_, lm_basis_, pen_mask=None):
            X = self._shape(lm_mean_, lm_basis_, coef_)
            p, _ = self._project(camera, pose_, X)
            r = p - x
            e = (wd * (r * r).sum(-1)).sum(1) + (prior * coef_ * coef_).sum(1)
            if boxed.any():
                v = _box_violation(coef_, boxed if pen_mask is None else pen_mask)
                e = e + box_weight * (v * v).sum(1)
            if camera == "pinhole" and pose_.get("fit_focal"):
                e = e + focal_prior * torch.log(pose_["f"] / pose_["f0"]) ** 2
            return e

        def smooth_terms(pose_, coef_):
            """Jacobi-linearised temporal smoothness: (energy, half-grad (B,P), diag H (B,P))."""
            g = torch.zeros(B, P, dtype=dt, device=dev)
            h = torch.zeros(B, P, dtype=dt, device=dev)
            e = torch.zeros((), dtype=dt, device=dev)
            if B < 2:
                return e, g, h
            deg = torch.full((B,), 2.0, dtype=dt, device=dev)
            deg[0] = deg[-1] = 1.0
            if smooth_exp_on:
                ex = coef_[:, Ki:]
                d = ex[1:] - ex[:-1]
                e = e + (smooth_exp * d * d).sum()
                lap = torch.zeros_like(ex)
                lap[1:] += d
                lap[:-1] -= d
                g[:, n_pose + Ki:] = smooth_exp * lap
                h[:, n_pose + Ki:] = smooth_exp * deg[:, None]
            if smooth_pose > 0:
                Rr = pose_["R"]
                dR = Rr[1:] - Rr[:-1]
                e = e + smooth_pose * (dR * dR).sum()
                ER = torch.einsum("kij,bjl->bkil", self._E, Rr)  # (B, 3, 3, 3)
                diff = torch.zeros_like(Rr)
                diff[1:] += dR
                diff[:-1] -= dR
                g[:, :3] = smooth_pose * torch.einsum("bkil,bil->bk", ER, diff)
                h[:, :3] = smooth_pose * 2.0 * deg[:, None]
                if camera == "weak_perspective":
                    tv = torch.cat([pose_["t"] / size[:, None], torch.log(pose_["s"])[:, None]], 1)
                    jt = torch.cat([1.0 / size[:, None].expand(B, 2),
                                    torch.ones(B, 1, dtype=dt, device=dev)], 1)
                    sl = slice(3, 6)
                else:
                    tv = pose_["t"] / pose_["t"][:, 2:3].mean()
                    jt = (1.0 / pose_["t"][:, 2:3].mean()).expand(B, 3)
                    sl = slice(3, 6)
                dt_ = tv[1:] - tv[:-1]
                e = e + smooth_pose * (dt_ * dt_).sum()
                lap = torch.zeros_like(tv)
                lap[1:] += dt_
                lap[:-1] -= dt_
                g[:, sl] = smooth_pose * lap * jt
                h[:, sl] = smooth_pose * deg[:, None] * jt * jt
            return e, g, h

        def apply_step(pose_, coef_, delta):
            new = dict(pose_)
            new["R"] = T.axis_angle_to_matrix(delta[:, :3]) @ pose_["R"]
            if camera == "weak_perspective":
                new["t"] = pose_["t"] + delta[:, 3:5]
                new["s"] = pose_["s"] * torch.exp(delta[:, 5].clamp(-1.0, 1.0))
            else:
                new["t"] = pose_["t"] + delta[:, 3:6]
                # keep the face in front of the camera
                tz = new["t"][:, 2:].clamp_min(1e-3 * pose_["t"][:, 2:].abs().clamp_min(1e-6))
                new["t"] = torch.cat([new["t"][:, :2], tz], 1)
                if pose_.get("fit_focal"):
                    new["f"] = pose_["f"] * torch.exp(delta[:, 6].clamp(-1.0, 1.0))
            c_new = coef_ + delta[:, n_pose:]
            return new, c_new

        slide_every = 2
        use_shared = shared_identity and Ki > 0 and fit_identity
        # coarse-to-fine: the first iterations solve for the leading identity components only
        n_coarse = 0
        sub_idx = None
        if not use_shared and coarse_iterations > 0 and Ki > coarse_n_id and fit_identity:
            n_coarse = min(coarse_iterations, max(iterations - 2, 0))
            sub_idx = torch.cat([torch.arange(coarse_n_id, device=dev),
                                 torch.arange(Ki, K, device=dev)])
            if structured:
                G_sub = G[:, :, sub_idx][:, :, :, sub_idx]
        it_done = 0
        for it in range(iterations):
            if mode == "slide" and it > 0 and it % slide_every == 0:
                lm_mean, lm_basis, ids = self._select_contour(pose, coef, mode, camera, x)
            X = self._shape(lm_mean, lm_basis, coef)
            p, (j_pose, j_shape) = self._project(camera, pose, X, lm_basis)
            r = (p - x).transpose(1, 2)  # (B, 2, 68)
            sw = wd.sqrt()[:, None, :]  # (B, 1, 68)
            jp = (j_pose * sw[..., None]).reshape(B, 136, n_pose)
            js = (j_shape * sw[..., None]).reshape(B, 136, K)
            rw = (r * sw).reshape(B, 136, 1)
            sub = sub_idx if it < n_coarse else None
            js_u = js if sub is None else js[:, :, sub]
            h_pp = jp.transpose(1, 2) @ jp
            h_ps = jp.transpose(1, 2) @ js_u
            if structured:
                r2 = pose["R"][:, 2]
                mtm = torch.eye(3, dtype=dt, device=dev) - r2[:, :, None] * r2[:, None, :]
                fac = (pose["s"] / size) ** 2
                h_ss = torch.einsum("bij,ijkl->bkl", mtm * fac[:, None, None],
                                    G if sub is None else G_sub)
                if mode == "slide":
                    ci = self.contour_ids
                    jd = (j_shape[:, :, ci] * sw[:, :, ci, None]).reshape(B, -1, K)
                    if sub is not None:
                        jd = jd[:, :, sub]
                    h_ss = h_ss + jd.transpose(1, 2) @ jd
            else:
                h_ss = js_u.transpose(1, 2) @ js_u
            rwt = rw.transpose(1, 2)  # (B, 1, 136)
            g = torch.cat([rwt @ jp, rwt @ js], 2)[:, 0]
            g[:, n_pose:] += prior * coef
            hdiag = torch.zeros(B, P, dtype=dt, device=dev)
            hdiag[:, n_pose:] += prior
            pen_mask = None
            if boxed.any():
                v = _box_violation(coef, boxed)
                pen_mask = v != 0  # the local model has the penalty only where violated
                g[:, n_pose:] += box_weight * v
                hdiag[:, n_pose:] += box_weight * pen_mask.to(dt)
            if camera == "pinhole" and pose.get("fit_focal"):
                hdiag[:, 6] += focal_prior
                g[:, 6] += focal_prior * torch.log(pose["f"] / pose["f0"])
            e_s, g_s, h_s = smooth_terms(pose, coef) if shared_identity else (0.0, None, None)
            if g_s is not None:
                g = g + g_s
                hdiag += h_s
            e0 = energy(pose, coef, lm_mean, lm_basis, pen_mask) + (e_s if g_s is not None else 0.0)
            if use_shared:
                H = torch.empty(B, P, P, dtype=dt, device=dev)
                H[:, :n_pose, :n_pose] = h_pp
                H[:, :n_pose, n_pose:] = h_ps
                H[:, n_pose:, :n_pose] = h_ps.transpose(1, 2)
                H[:, n_pose:, n_pose:] = h_ss
                H.diagonal(dim1=1, dim2=2).add_(hdiag)
                H, g = _fix_vars(H, g, free_full)
                diag = H.diagonal(dim1=1, dim2=2).clone()
                delta = self._solve_shared(H, g, diag, mu, n_pose, Ki)
            elif sub is None:
                delta = _solve_blocks(h_pp, h_ps, h_ss, hdiag, g, mu, free_full)
            else:
                vidx = torch.cat([torch.arange(n_pose, device=dev), n_pose + sub])
                delta = torch.zeros(B, P, dtype=dt, device=dev)
                delta[:, vidx] = _solve_blocks(h_pp, h_ps, h_ss, hdiag[:, vidx], g[:, vidx], mu,
                                               free_full[vidx])
            delta = torch.nan_to_num(delta, nan=0.0, posinf=0.0, neginf=0.0) * free_full
            new_pose, new_coef = apply_step(pose, coef, delta)
            e1 = energy(new_pose, new_coef, lm_mean, lm_basis, pen_mask)
            if g_s is not None:
                e1 = e1 + smooth_terms(new_pose, new_coef)[0]
            if use_shared or g_s is not None:
                acc = (e1.sum() <= e0.sum()).expand(B) if use_shared else (e1 <= e0)
            else:
                acc = e1 <= e0
            acc = acc & torch.isfinite(e1)
            pose = _select_pose(acc, new_pose, pose)
            coef = torch.where(acc[:, None], new_coef, coef)
            mu = torch.where(acc, mu / 3.0, mu * 4.0).clamp(1e-7, 1e7)
            it_done = it + 1
        if boxed.any():
            coef = torch.where(boxed, coef.clamp(0.0, 1.0), coef)
        if mode == "slide" and iterations > 0:
            lm_mean, lm_basis, ids = self._select_contour(pose, coef, mode, camera, x)
        X = self._shape(lm_mean, lm_basis, coef)
        p, _ = self._project(camera, pose, X)
        vis = (w > 0).to(dt)
        rmse = ((((p - x) ** 2).sum(-1) * vis).sum(1) / vis.sum(1)).sqrt()
        if not (torch.isfinite(p).all() and torch.isfinite(coef).all()):
            raise RuntimeError("landmark fitting produced non-finite values")
        R = pose["R"]
        if camera == "weak_perspective":
            scale, trans, fo, cc = pose["s"], pose["t"], None, None
        else:
            trans, fo, cc = pose["t"], pose["f"], pose["c"]
            scale = fo / trans[:, 2]
        return FitResult(
            rotation=R, angles=T.matrix_to_euler(R), translation=trans, scale=scale,
            id_coeffs=coef[:, :Ki], exp_coeffs=coef[:, Ki:], landmarks2d=p, rmse=rmse,
            contour_vertices=ids, camera=camera, iterations=it_done, focal=fo,
            principal_point=cc,
        )

    @staticmethod
    def _solve_shared(H, g, diag, mu, n_pose, Ki):
        """Solve the damped system with the identity block shared by all B inputs (Schur)."""
        B, P, _ = H.shape
        idx_a = torch.arange(n_pose, n_pose + Ki, device=H.device)
        idx_f = torch.cat([torch.arange(0, n_pose, device=H.device),
                           torch.arange(n_pose + Ki, P, device=H.device)])
        damp = mu[:, None] * diag + 1e-9 * diag.mean(1, keepdim=True)
        Hd = H + torch.diag_embed(damp)
        Aff = Hd[:, idx_f][:, :, idx_f]
        Afa = Hd[:, idx_f][:, :, idx_a]
        Aaa = H[:, idx_a][:, :, idx_a].sum(0) + torch.diag(damp[:, idx_a].mean(0))
        gf, ga = g[:, idx_f], g[:, idx_a].sum(0)
        L, _ = torch.linalg.cholesky_ex(Aff)
        X = torch.cholesky_inverse(L) @ torch.cat([Afa, gf[..., None]], -1)  # Aff^-1 [Afa, gf]
        S = Aaa - (Afa.transpose(1, 2) @ X[..., :Ki]).sum(0)
        rhs = ga - (Afa.transpose(1, 2) @ X[..., Ki:]).sum(0)[..., 0]
        da = -torch.linalg.solve(S + 1e-9 * S.diagonal().mean() * torch.eye(
            Ki, dtype=H.dtype, device=H.device), rhs)
        df = -(X[..., Ki:][..., 0] + (X[..., :Ki] @ da))  # (B, Pf)
        delta = torch.zeros(B, P, dtype=H.dtype, device=H.device)
        delta[:, idx_f] = df
        delta[:, idx_a] = da[None]
        return delta


def _concat_results(results: list[FitResult]) -> FitResult:
    """Concatenate per-chunk results along the batch."""
    first = results[0]
    out = {}
    for name in ("rotation", "angles", "translation", "scale", "id_coeffs", "exp_coeffs",
                 "landmarks2d", "rmse", "contour_vertices", "focal", "principal_point"):
        v = getattr(first, name)
        out[name] = None if v is None else torch.cat([getattr(r, name) for r in results], 0)
    return FitResult(camera=first.camera, iterations=max(r.iterations for r in results), **out)


def _fix_vars(H: torch.Tensor, g: torch.Tensor, free: torch.Tensor):
    """Remove the non-free variables (P,) bool from the system (identity rows, zero gradient)."""
    if bool(free.all()):
        return H, g
    keep = free.to(H.dtype)
    H = H * keep[:, None] * keep[None, :] + torch.diag(1.0 - keep)
    return H, g * keep


def _solve_blocks(h_pp, h_ps, h_ss, hdiag, g, mu, free):
    """Damped (Levenberg-Marquardt) solve of [[Hpp, Hps], [Hsp, Hss]] + diag(hdiag) by
    eliminating the small pose block (Schur complement on the shape block).

    h_pp (B, p, p), h_ps (B, p, K), h_ss (B, K, K) (modified in place), hdiag, g (B, p+K),
    mu (B,), free (p+K,) bool. Returns delta (B, p+K) (0 where Cholesky failed)."""
    n = h_pp.shape[-1]
    keep = free.to(g.dtype)
    g = g * keep
    d_ss = h_ss.diagonal(dim1=1, dim2=2)
    d_ss += hdiag[:, n:]
    if not bool(free.all()):
        ks = keep[n:]
        h_ss.mul_(ks[:, None] * ks[None, :])
        d_ss += 1.0 - ks
        h_ps = h_ps * ks
    dss = d_ss.clone()
    d_ss += mu[:, None] * dss + 1e-9 * dss.mean(1, keepdim=True)
    h_pp = h_pp + torch.diag_embed(hdiag[:, :n])
    dpp = h_pp.diagonal(dim1=1, dim2=2).clone()
    h_pp = h_pp + torch.diag_embed(mu[:, None] * dpp + 1e-9 * dpp.mean(1, keepdim=True))
    L, info = torch.linalg.cholesky_ex(h_ss)
    rhs = torch.cat([h_ps.transpose(1, 2), g[:, n:, None]], 2)  # (B, K, p+1)
    Y = torch.cholesky_solve(rhs, L)
    S = h_pp - h_ps @ Y[..., :n]
    gp = g[:, :n, None] - h_ps @ Y[..., n:]
    dp = -torch.linalg.solve_ex(S, gp)[0]
    ds = -(Y[..., n:] + Y[..., :n] @ dp)
    delta = torch.cat([dp, ds], 1)[..., 0]
    return torch.where((info == 0)[:, None], delta, torch.zeros_like(delta))


def _box_violation(coef: torch.Tensor, boxed: torch.Tensor) -> torch.Tensor:
    """(B, K) signed distance outside [0, 1] for the boxed coefficients (0 inside)."""
    v = torch.where(coef < 0, coef, torch.where(coef > 1, coef - 1.0, torch.zeros_like(coef)))
    return v * boxed


def _select_pose(acc: torch.Tensor, new: dict, old: dict) -> dict:
    """Per face: the new pose entries where ``acc`` (B,) else the old ones."""
    out = {}
    for k, v in new.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == acc.shape[0]:
            m = acc.reshape((-1,) + (1,) * (v.dim() - 1))
            out[k] = torch.where(m, v, old[k])
        else:
            out[k] = v
    return out


_FITTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _image_size_to_hw(kwargs: dict, fn: str) -> None:
    """Replace the deprecated ``image_size=(W, H)`` in ``kwargs`` by ``image_hw=(H, W)``
    (warning attributed to the caller of ``fn``)."""
    if "image_size" not in kwargs:
        return
    if kwargs.get("image_hw") is not None:
        raise TypeError(f"{fn}: pass image_hw=(H, W) only (image_size=(W, H) is its deprecated, "
                        "width-first predecessor)")
    old = kwargs.pop("image_size")
    warn_deprecated(f"{fn}(image_size=(W, H))", f"{fn}(image_hw=(H, W)), height first",
                    stacklevel=4)
    if old is not None:
        w, h = old
        kwargs["image_hw"] = (h, w)


def _fitter_for(model, n_id, n_exp, device, dtype) -> LandmarkFitter:
    key = (n_id, n_exp, str(device), dtype)
    try:
        cache = _FITTERS.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        return LandmarkFitter(model, n_id=n_id, n_exp=n_exp, device=device, dtype=dtype)
    if key not in cache:
        cache[key] = LandmarkFitter(model, n_id=n_id, n_exp=n_exp, device=device, dtype=dtype)
    return cache[key]


def fit_landmarks(model, landmarks: torch.Tensor, *, n_id: int | None = None,
                  n_exp: int | None = None, device=None, dtype: torch.dtype = torch.float32,
                  **kwargs) -> FitResult:
    """Fit ``model`` to B independent faces' 68 landmarks (B, 68, 2) -> :class:`FitResult`.

    ``kwargs`` are those of :meth:`LandmarkFitter.fit` (visibility, weights, camera, focal,
    principal_point, image_hw, lambda_id, lambda_exp, contour, iterations...). The fitter
    (landmark bases on ``device``) is cached per model."""
    _image_size_to_hw(kwargs, "fit_landmarks")
    dev = device if device is not None else landmarks.device
    fitter = _fitter_for(model, n_id, n_exp, dev, dtype)
    return fitter.fit(landmarks, **kwargs)


def fit_video(model, landmarks: torch.Tensor, *, n_id: int | None = None,
              n_exp: int | None = None, device=None, dtype: torch.dtype = torch.float32,
              smooth_pose: float = 0.0, smooth_exp: float | torch.Tensor = 0.0,
              **kwargs) -> FitResult:
    """Fit T frames (T, 68, 2) of ONE person: one shared identity, per-frame pose/expression.

    ``smooth_pose`` / ``smooth_exp`` add ``lambda * sum_t |x_t - x_(t-1)|^2`` between consecutive
    frames (rotation matrices (Frobenius), translation / log-scale normalised by the face size,
    expression coefficients; ``smooth_exp`` may be a (n_exp,) tensor, one weight per
    coefficient, e.g. 0 for the fast eyelid blendshapes). Other ``kwargs`` as in
    :meth:`LandmarkFitter.fit`. The returned ``id_coeffs`` has T identical rows."""
    _image_size_to_hw(kwargs, "fit_video")
    dev = device if device is not None else landmarks.device
    fitter = _fitter_for(model, n_id, n_exp, dev, dtype)
    kwargs.setdefault("iterations", 15)
    return fitter.fit(landmarks, shared_identity=True, smooth_pose=smooth_pose,
                      smooth_exp=smooth_exp, **kwargs)
