"""Controls on 3DMM fits: region selection, expression and motion multipliers, the best
reference frame, identity morphing, and meshes of fits.

Everything here works on :class:`facegeo.reenact.FaceFit` rows (rotation (B, 3, 3), scale
(B,), translation (B, 2), id_coeffs (B, K_id), exp_coeffs (B, K_exp)), so it serves every
reenactor that consumes fits (``morphable_fit``, ``disentangled_landmarks``) and the mesh
interpolation alike. One operation underlies all of them, :func:`blend_fits`: a
component-wise blend from a *base* fit ``a`` towards ``b``::

    rotation    slerp(R_a, R_b, w_pose)               (w > 1 extrapolates the turn)
    scale       s_a (s_b / s_a) ** w_pose             (geometric)
    translation t_a + w_pose (t_b - t_a)
    expression  e_a + w_exp[k] (e_b - e_a)[k]         (per coefficient; clamped to [0, 1]
                                                       for blendshape models)
    identity    a_a + w_id (a_b - a_a)

:class:`Controls` turns user controls into those weights:

* ``only``: the regions taken from the driver, any of :data:`REGIONS` (``pose``,
  ``expression`` = every blendshape, or the blendshape groups ``eyes``, ``brows``,
  ``mouth``, ``nose`` of :func:`expression_groups`); ``None`` = pose and expression;
* ``expression_scale``: multiplies the expression change (0: the source's expression is
  kept exactly; 1: the driver's; 1.5 exaggerates);
* ``motion_scale``: multiplies the head motion (relative mode: the driver's motion since the
  reference frame; absolute mode: the way from the source pose to the driver's).

:meth:`Controls.driving_fits` applies them *on the driving side*: it returns driving fits
D' such that the reenactor's usual recombination
(:meth:`facegeo.reenact.FaceConditioner.target_fits`) of the source with D' gives the
controlled target. In relative mode the pose base is the reference frame (the driver's
motion since it is scaled: ``R' = slerp(R_0, R_t, w)`` gives the target
``(R_t R_0^T)^w R_s``), in absolute mode the source pose; the expression base is the
reference frame with ``relative_expression`` (the driver's expression change is scaled)
and the source otherwise (the expression itself is blended). So any model that reads the
pipeline's fits honours the controls without knowing about them.

:func:`best_reference_frame` picks the driving frame closest to the source in expression
and head rotation (FOMM's ``--find_best_frame`` compares normalised landmarks, which also
compare the two people's face shapes; fitted coefficients compare only what relative mode
transfers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch

from facegeo import transforms as T

__all__ = ["REGIONS", "EXPRESSION_GROUP_PREFIXES", "expression_groups", "parse_regions",
           "Controls", "blend_fits", "interpolate_regions", "frame_distance",
           "best_reference_frame", "fit_meshes", "photo_vertex_colors"]

#: blendshape groups by name prefix (ICT-FaceKit and Apple ARKit names alike: ``eyeBlink_L``
#: / ``eyeBlinkLeft``). Cheeks and tongue move with the mouth (ARKit counts cheekSquint in
#: a smile, cheekPuff in a pout), so they belong to ``mouth``.
EXPRESSION_GROUP_PREFIXES: dict[str, tuple[str, ...]] = {
    "eyes": ("eye",),
    "brows": ("brow",),
    "mouth": ("mouth", "jaw", "cheek", "tongue"),
    "nose": ("nose",),
}

#: what ``only`` may name: the head pose, the whole expression, or a blendshape group
REGIONS = ("pose", "expression", *EXPRESSION_GROUP_PREFIXES)


def expression_groups(model) -> dict[str, torch.Tensor]:
    """Named blendshape groups of a morphable model.

    Args:
        model: a :class:`facegeo.morphable.MorphableModel` with named blendshapes
            (``exp_names``; ICT-FaceKit or ARKit naming).

    Returns:
        dict group name (keys of :data:`EXPRESSION_GROUP_PREFIXES`) -> (K_exp,) bool mask.

    Raises:
        ValueError: a PCA expression model (its components have no regions), no names, or a
            blendshape that no group claims (then the groups would not cover the expression).
    """
    names = list(getattr(model, "exp_names", None) or [])
    if getattr(model, "exp_kind", "pca") != "blendshape" or len(names) != model.n_exp:
        raise ValueError(f"region control needs named blendshapes; model "
                         f"{getattr(model, 'name', '?')!r} has a {model.exp_kind} expression "
                         "basis without eye/mouth groups (use only=pose or expression)")
    low = [n.lower() for n in names]
    out = {g: torch.tensor([n.startswith(p) for n in low]) for g, p in
           EXPRESSION_GROUP_PREFIXES.items()}
    claimed = torch.stack(list(out.values())).any(0)
    if not bool(claimed.all()):
        orphans = [names[i] for i in (~claimed).nonzero().flatten().tolist()]
        raise ValueError(f"blendshapes {orphans} belong to no group of "
                         f"{list(EXPRESSION_GROUP_PREFIXES)}")
    return out


def parse_regions(only: str | Iterable[str] | None) -> frozenset[str] | None:
    """``"pose,eyes"`` / ``["pose", "eyes"]`` -> ``frozenset({"pose", "eyes"})``; None stays
    None (everything).

    Raises:
        ValueError: an unknown region, an empty entry, or nothing selected.
    """
    if only is None:
        return None
    items = only.split(",") if isinstance(only, str) else list(only)
    out = set()
    for it in items:
        it = str(it).strip()
        if not it:
            raise ValueError(f"only={only!r}: empty entry; give a comma list of "
                             f"{', '.join(REGIONS)}")
        if it not in REGIONS:
            raise ValueError(f"unknown region {it!r}; choose from {', '.join(REGIONS)}")
        out.add(it)
    if not out:
        raise ValueError(f"only={only!r} selects nothing; choose from {', '.join(REGIONS)}")
    return frozenset(out)


def _weights(w, n: int, like: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """float / (N,) [/ (K,) / (N, K) with ``width``] -> (n,) or (n, width) tensor."""
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
    if not torch.isfinite(w).all():
        raise ValueError("blend weights must be finite")
    if width is None:
        w = w.reshape(-1)
        if w.shape[0] not in (1, n):
            raise ValueError(f"{w.shape[0]} pose/identity weights for {n} rows")
        return w.expand(n)
    if w.dim() == 0:
        return w.expand(n, width)
    if w.dim() == 1:
        if w.shape[0] == width:
            return w[None].expand(n, width)
        if w.shape[0] in (1, n):
            return w[:, None].expand(n, width)
    if w.dim() == 2 and w.shape[1] == width and w.shape[0] in (1, n):
        return w.expand(n, width)
    raise ValueError(f"expression weights of shape {tuple(w.shape)} fit neither ({n},), "
                     f"({width},) nor ({n}, {width})")


def blend_fits(a, b, pose_weight=1.0, exp_weight=1.0, id_weight=0.0, *,
               clamp_exp: bool = False):
    """Component-wise blend of fit ``a`` towards fit ``b`` (module docstring).

    Args:
        a, b: :class:`facegeo.reenact.FaceFit` with 1 or N rows (one-row fits broadcast).
        pose_weight: float or (N,): 0 keeps ``a``'s pose, 1 gives ``b``'s.
        exp_weight: float, (N,), (K_exp,) (per coefficient, e.g. a region mask) or
            (N, K_exp).
        id_weight: float or (N,) for the identity coefficients.
        clamp_exp: clamp the expression to [0, 1] (blendshape weights; only matters for
            weights outside [0, 1]).

    Returns:
        FaceFit with N rows (N = the largest row count of a, b and the weights).
    """
    n = max(len(a), len(b))
    for w in (pose_weight, id_weight):
        t = torch.as_tensor(w)
        n = max(n, t.numel() if t.dim() else 1)
    te = torch.as_tensor(exp_weight)
    if te.dim() == 2 or (te.dim() == 1 and te.shape[0] != a.exp_coeffs.shape[1]):
        n = max(n, te.shape[0])
    for f, name in ((a, "a"), (b, "b")):
        if len(f) not in (1, n):
            raise ValueError(f"fit {name} has {len(f)} rows; expected 1 or {n}")
    like = a.rotation
    b = b.to(like.device)

    def rows(x):
        return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x

    wp = _weights(pose_weight, n, like)
    wi = _weights(id_weight, n, like)
    k = a.exp_coeffs.shape[1]
    if b.exp_coeffs.shape[1] != k or b.id_coeffs.shape[1] != a.id_coeffs.shape[1]:
        raise ValueError("the two fits have different coefficient counts (different models)")
    we = _weights(exp_weight, n, like, k)
    rot, trans, scale = T.interpolate_pose(rows(a.rotation), rows(b.rotation), wp,
                                           rows(a.translation), rows(b.translation),
                                           rows(a.scale), rows(b.scale))
    ea, eb = rows(a.exp_coeffs), rows(b.exp_coeffs)
    exp = ea + we * (eb - ea)
    if clamp_exp:
        exp = exp.clamp(0.0, 1.0)
    ia, ib = rows(a.id_coeffs), rows(b.id_coeffs)
    ident = ia + wi[:, None] * (ib - ia)
    return replace(a, rotation=rot, scale=scale, translation=trans, id_coeffs=ident,
                   exp_coeffs=exp)


def _expression_mask(sel: frozenset[str] | None, k: int, model=None) -> torch.Tensor:
    """(k,) float 0/1: the blendshapes a region selection takes (None = all)."""
    if sel is None or "expression" in sel:
        return torch.ones(k)
    mask = torch.zeros(k, dtype=torch.bool)
    groups = [g for g in sorted(sel) if g in EXPRESSION_GROUP_PREFIXES]
    if groups:
        if model is None:
            raise ValueError(f"the blendshape groups {groups} need the morphable model "
                             "(model=)")
        gm = expression_groups(model)
        for g in groups:
            mask |= gm[g]
    return mask.float()


@dataclass(frozen=True)
class Controls:
    """What of the driver reaches the target, and how much (module docstring).

    Attributes:
        only: regions of :data:`REGIONS` taken from the driver (a comma string or an
            iterable is parsed by :func:`parse_regions`); None = pose and expression.
        expression_scale: multiplier of the expression change (>= 0; 0 keeps the source's).
        motion_scale: multiplier of the head motion (>= 0; 0 keeps the source pose).
    """

    only: frozenset[str] | None = None
    expression_scale: float = 1.0
    motion_scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "only", parse_regions(self.only))
        for name in ("expression_scale", "motion_scale"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v:g}")
            object.__setattr__(self, name, v)

    @property
    def is_default(self) -> bool:
        """True when the controls change nothing (everything from the driver, scales 1)."""
        sel = self.only
        return ((sel is None or {"pose", "expression"} <= sel)
                and self.expression_scale == 1.0 and self.motion_scale == 1.0)

    def weights(self, model) -> tuple[float, torch.Tensor]:
        """(pose weight, (K_exp,) expression weights) for ``model``'s blendshapes."""
        wp = self.motion_scale if self.only is None or "pose" in self.only else 0.0
        return wp, _expression_mask(self.only, model.n_exp, model) * self.expression_scale

    def apply(self, source, target, model):
        """The controlled target: ``source`` (1 or N rows) blended towards the uncontrolled
        ``target`` fits (N rows) -> N rows with the source's identity."""
        wp, we = self.weights(model)
        return blend_fits(source, target, wp, we.to(source.rotation), 0.0,
                          clamp_exp=model.exp_kind == "blendshape")

    def driving_fits(self, source, driving, reference, mode: str, model, *,
                     relative_expression: bool = False):
        """Driving fits D' whose usual recombination with ``source`` gives the controlled
        target (module docstring).

        Args:
            source: source fit, 1 row (or T rows: a source video).
            driving: T-row driving fits; reference: the one-row reference frame fit.
            mode: ``"relative"`` or ``"absolute"``.
            model: the morphable model (blendshape groups, clamping).
            relative_expression: as the reenactor recombines expressions.

        Returns:
            T-row fits (the driver's identity is kept).
        """
        if mode not in ("relative", "absolute"):
            raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
        if self.is_default:
            return driving
        wp, we = self.weights(model)
        src = source.to(driving.rotation.device)
        pose_base = reference if mode == "relative" else src
        exp_base = reference if relative_expression else src
        n = len(driving)
        rows = (lambda f: f.expand(n) if len(f) == 1 else f)  # noqa: E731
        pb, eb = rows(pose_base), rows(exp_base)
        base = replace(pb, exp_coeffs=eb.exp_coeffs, id_coeffs=driving.id_coeffs)
        out = blend_fits(base, driving, wp, we.to(driving.rotation), 0.0,
                         clamp_exp=model.exp_kind == "blendshape")
        return replace(out, id_coeffs=driving.id_coeffs)


def interpolate_regions(a, b, alpha, only=None, model=None):
    """Blend fit ``a`` towards fit ``b`` by ``alpha`` in the selected regions.

    Generalises :func:`facegeo.reenact.interpolate_fits` (which it equals for ``only`` None,
    ``"pose"`` or ``"expression"``) to blendshape groups and identity morphing.

    Args:
        a, b: one-row (or N-row) fits.
        alpha: float or (N,) weights (0 -> ``a``, 1 -> ``b``).
        only: None (pose and expression), or a comma string / iterable of
            :data:`REGIONS` plus ``"identity"`` (``a``'s identity morphs into ``b``'s).
        model: the morphable model (needed for blendshape groups).

    Returns:
        FaceFit with N rows.
    """
    items = [] if only is None else (only.split(",") if isinstance(only, str) else list(only))
    items = [str(x).strip() for x in items]
    ident = "identity" in items
    rest = [x for x in items if x != "identity"]
    sel = None if only is None else (parse_regions(rest) if rest else frozenset())
    if sel is not None and not sel and not ident:
        raise ValueError("only selects nothing")
    alpha = torch.as_tensor(alpha, dtype=a.rotation.dtype, device=a.rotation.device)
    alpha = alpha.reshape(-1)
    if not torch.isfinite(alpha).all():
        raise ValueError("alpha must be finite")
    wp = 1.0 if sel is None or "pose" in sel else 0.0
    we = _expression_mask(sel, a.exp_coeffs.shape[1], model).to(alpha)
    return blend_fits(a, b, alpha * wp, alpha[:, None] * we[None], alpha * float(ident))


def frame_distance(source, driving, *, pose_weight: float = 2.0) -> torch.Tensor:
    """How far each driving frame is from the source in what relative mode transfers.

    ``d_t = |e_t - e_s|_2 + pose_weight * angle(R_t, R_s)`` with the geodesic angle in
    radians. ``pose_weight = 2``: a 28.6-degree head turn weighs as much as one blendshape
    fully on (a frontal, neutral reference should beat a turned one and a smiling one).

    Args:
        source: one-row fit; driving: T-row fits.

    Returns:
        (T,) distances.
    """
    src = source.to(driving.rotation.device)
    de = (driving.exp_coeffs - src.exp_coeffs).norm(dim=1)
    ang = T.rotation_angle(src.rotation.expand_as(driving.rotation), driving.rotation)
    return de + pose_weight * ang * (math.pi / 180.0)


def best_reference_frame(source, driving, good: torch.Tensor | None = None, *,
                         pose_weight: float = 2.0) -> int:
    """Index of the driving frame closest to the source (:func:`frame_distance`), among
    the ``good`` ones (frames with a face); the reference of relative mode.

    Args:
        source: one-row fit; driving: T-row fits; good: optional (T,) bool.

    Returns:
        int frame index.

    Raises:
        ValueError: no good frame.
    """
    d = frame_distance(source, driving, pose_weight=pose_weight)
    if good is not None:
        good = good.to(d.device).bool()
        if good.shape != d.shape:
            raise ValueError(f"good has shape {tuple(good.shape)}, expected {tuple(d.shape)}")
        if not bool(good.any()):
            raise ValueError("no driving frame has a face")
        d = torch.where(good, d, torch.full_like(d, float("inf")))
    return int(torch.argmin(d))


def fit_meshes(model, fits, *, pose: bool = True) -> torch.Tensor:
    """Model-frame meshes of fits: ``R (mean + B_id a + B_exp e)`` in model units.

    The weak-perspective scale and pixel translation belong to the photo, not the head, so
    they are left out: the head turns in place about the model origin.

    Args:
        model: the :class:`~facegeo.morphable.MorphableModel` the fits were made with.
        fits: B-row fits.
        pose: apply the rotation (False: the unposed, frontal mesh).

    Returns:
        (B, V, 3) vertices (the model's triangles apply).
    """
    f = fits.to(model.device)
    v = model.vertices(f.id_coeffs.to(model.dtype), f.exp_coeffs.to(model.dtype))
    if pose:
        v = v @ f.rotation.to(v.dtype).transpose(-1, -2)
    return v


def photo_vertex_colors(model, fit, image: torch.Tensor, box: torch.Tensor | None = None,
                        size: int | None = None, *, fill="harmonic"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex colours of ``model`` from the photo it was fitted to, where the fitted mesh
    is visible (:func:`facegeo.mesh.export.vertex_colors`; hidden vertices get ``fill``).

    Args:
        model: the morphable model; fit: the one-row fit (crop pixels when ``box`` is given,
            else pixels of ``image``).
        image: (3, H, W) the full photo in [0, 1] (sampled at full resolution).
        box: optional (3,) crop box ``(cx, cy, side)`` of the fit's crop; size: its side S.
        fill: see :func:`facegeo.mesh.export.vertex_colors`.

    Returns:
        colors (V, 3) in [0, 1], visible (V,) bool.
    """
    from facegeo.landmarks.crops import points_from_crop
    from facegeo.mesh.export import vertex_colors
    from facegeo.reenact import posed_vertices

    if len(fit) != 1:
        raise ValueError(f"photo_vertex_colors takes a one-row fit, got {len(fit)} rows")
    f = fit.to(model.device)
    v = model.vertices(f.id_coeffs.to(model.dtype), f.exp_coeffs.to(model.dtype))
    v = posed_vertices(v, f.rotation.to(v.dtype), f.scale.to(v.dtype),
                       f.translation.to(v.dtype))
    if box is not None:
        if size is None:
            raise ValueError("a crop box needs the crop size (size=)")
        b = box.reshape(1, 3).to(v)
        xy = points_from_crop(v[..., :2], b, size)
        v = torch.cat([xy, v[..., 2:] * (b[:, 2] / size)], -1)
    return vertex_colors(image.to(v.device), v[0], model.triangles, fill=fill)
