"""Synthetic 68-point landmark data from a 3D morphable model (LD-Net training and testing).

Everything works on the 68 landmark rows of the model only
(:meth:`facegeo.morphable.MorphableModel.landmark_bases`), so a batch of thousands of faces
costs one small matrix product.

Generative process for one face (model frame: +x subject's left, +y up, +z out of the face)::

    X      = mean_lm + a @ id_lm + e @ exp_lm                  (68, 3), model units (ICT: cm)
    X_cam  = F R(yaw, pitch, roll) X + (0, 0, d)               OpenCV camera, F = diag(1,-1,-1)
    x      = X_cam[:, :2] / X_cam[:, 2]                        pinhole, focal 1 (y down)
    x     += noise (optional, detector-like, see LandmarkSynth)
    l      = normalize_landmarks(x)                            square bounding box -> [-1, 1]

* identity ``a`` ~ N(0, id_scale^2) per coefficient (the ICT identity basis is scaled so that
  its coefficients are standard normal), drawn once per identity and kept with an integer label;
* expression ``e``: blendshape weights in [0, 1] (see :meth:`LandmarkSynth.sample_expressions`:
  neutral, sparse random combinations, dense mild mixtures and "extreme" faces with a few
  blendshapes near 1, often left/right symmetric);
* pose: yaw uniform in [-max_yaw, max_yaw] (default 60 deg), pitch and roll in +-30 deg;
* camera distance ``d`` uniform in ``distance`` (default 60-200 cm, i.e. mild perspective).

Because the data comes from the model, "identity of A with the pose and expression of B" has
exact ground truth: the same formula with ``a = a_A`` and ``(e, R, d) = (e_B, R_B, d_B)``.

Normalisation (LD-Net paper, appendix "Training strategy"): the square bounding box of the 68
points spans [-1, 1]. With ``lo, hi`` the per-axis min / max, ``c = (lo + hi) / 2`` and
``h = max(hi - lo) / 2`` (half the longer side): ``l = (x - c) / h``. The longer side spans
exactly [-1, 1], the shorter one is centred. :func:`denormalize_landmarks` inverts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facegeo import transforms as T
from facegeo.morphable.model import linear_shape

__all__ = [
    "LandmarkSynth",
    "SynthBatch",
    "normalize_landmarks",
    "denormalize_landmarks",
    "check_landmarks",
]


def check_landmarks(lm, name: str = "landmarks") -> torch.Tensor:
    """Validate a (B, 68, 2) float landmark tensor (a (68, 2) tensor becomes B = 1)."""
    if not isinstance(lm, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(lm).__name__}")
    if not lm.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {lm.dtype}")
    if lm.ndim == 2:
        lm = lm.unsqueeze(0)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"{name} must have shape (B, 68, 2), got {tuple(lm.shape)}")
    if not torch.isfinite(lm).all():
        raise ValueError(f"{name} contains NaN or inf")
    return lm


def normalize_landmarks(lm: torch.Tensor, eps: float = 1e-8):
    """Map landmarks so that their square bounding box spans [-1, 1] (LD-Net convention).

    Args:
        lm: (B, N, 2) points (any units, e.g. pixels).
    Returns:
        (normalized (B, N, 2), center (B, 2), half_size (B,)) with
        ``normalized = (lm - center) / half_size``; ``half_size`` is half the longer side of the
        axis-aligned bounding box, ``center`` its centre.
    Raises:
        ValueError: wrong shape or a degenerate (zero-size) set of points.
    """
    if lm.ndim != 3 or lm.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape (B, N, 2), got {tuple(lm.shape)}")
    lo = lm.amin(dim=1)
    hi = lm.amax(dim=1)
    center = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo).amax(dim=-1)
    if bool((half <= eps).any()):
        raise ValueError("landmarks have a zero-size bounding box; cannot normalise")
    return (lm - center[:, None, :]) / half[:, None, None], center, half


def denormalize_landmarks(lm_n: torch.Tensor, center: torch.Tensor, half: torch.Tensor):
    """Inverse of :func:`normalize_landmarks`: (B, N, 2), (B, 2), (B,) -> (B, N, 2)."""
    return lm_n * half[:, None, None] + center[:, None, :]


@dataclass
class SynthBatch:
    """A batch of synthetic faces.

    Attributes:
        landmarks: (B, 68, 2) normalised landmarks (square box -> [-1, 1]), noise included.
        clean: (B, 68, 2) the same without noise (normalised by the noisy box, so that
            ``landmarks - clean`` is exactly the noise in normalised units).
        id_label: (B,) int64 identity index into ``LandmarkSynth.id_coeffs``.
        exp: (B, K_exp) blendshape weights; angles: (B, 3) yaw/pitch/roll deg; distance: (B,).
    """

    landmarks: torch.Tensor
    clean: torch.Tensor
    id_label: torch.Tensor
    exp: torch.Tensor
    angles: torch.Tensor
    distance: torch.Tensor


class LandmarkSynth:
    """Generator of 68-point 2D landmarks with identity labels from a 3D morphable model.

    Args:
        model: a :class:`facegeo.morphable.MorphableModel` with 68 landmarks (``None`` loads the
            default ICT-FaceKit model).
        n_identities: number of identities (labels 0..n_identities-1).
        seed: seed of the identities (and the default generator of the sampling calls).
        id_scale: standard deviation of the identity coefficients (1 = the model's prior).
        max_yaw, max_pitch, max_roll: pose ranges in degrees (uniform in [-max, max]).
        distance: (min, max) camera distance in model units (ICT: cm), uniform.
        noise: detector-like noise, standard deviation in normalised units (fraction of half the
            face box; 0.01 ~ 1 px on a 200 px face): i.i.d. Gaussian per point, twice as large on
            the 17 jawline points, plus a per-face random similarity jitter of the same order.
        device: where to generate.
    """

    def __init__(self, model=None, *, n_identities: int = 1000, seed: int = 0,
                 id_scale: float = 1.0, max_yaw: float = 60.0, max_pitch: float = 30.0,
                 max_roll: float = 30.0, distance: tuple[float, float] = (60.0, 200.0),
                 noise: float = 0.0, device: str | torch.device = "cpu"):
        if model is None:
            from facegeo.morphable import MorphableModel

            model = MorphableModel.load()
        if n_identities < 1:
            raise ValueError(f"n_identities must be >= 1, got {n_identities}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if not (0 < distance[0] <= distance[1]):
            raise ValueError(f"distance must be (min, max) with 0 < min <= max, got {distance}")
        self.device = torch.device(device)
        mean, id_b, exp_b = model.landmark_bases()
        self.mean = mean.to(self.device, torch.float32)  # (68, 3)
        self.id_basis = id_b.to(self.device, torch.float32).reshape(id_b.shape[0], -1)
        self.exp_basis = exp_b.to(self.device, torch.float32).reshape(exp_b.shape[0], -1)
        self.exp_kind = model.exp_kind
        self.exp_names = list(model.exp_names or [f"e{i}" for i in range(exp_b.shape[0])])
        self.n_id_coeffs = int(id_b.shape[0])
        self.n_exp = int(exp_b.shape[0])
        self.max_angles = torch.tensor([max_yaw, max_pitch, max_roll], device=self.device)
        self.distance = (float(distance[0]), float(distance[1]))
        self.noise = float(noise)
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)
        g = torch.Generator(device="cpu").manual_seed(self.seed * 7919 + 17)
        self.id_coeffs = (torch.randn(n_identities, self.n_id_coeffs, generator=g)
                          * id_scale).to(self.device)
        # partner index of each blendshape (name _L <-> _R) for symmetric expressions
        partner = list(range(self.n_exp))
        for i, n in enumerate(self.exp_names):
            for a, b in (("_L", "_R"), ("_R", "_L"), ("Left", "Right"), ("Right", "Left")):
                if n.endswith(a) and n[: -len(a)] + b in self.exp_names:
                    partner[i] = self.exp_names.index(n[: -len(a)] + b)
        self._partner = torch.tensor(partner, device=self.device)

    @property
    def n_identities(self) -> int:
        return int(self.id_coeffs.shape[0])

    def _rand(self, *shape, generator=None):
        return torch.rand(*shape, generator=generator or self.generator).to(self.device)

    # ------------------------------------------------------------------ sampling
    def sample_expressions(self, n: int, generator: torch.Generator | None = None):
        """(n, K_exp) expression coefficients.

        Blendshape models (weights in [0, 1]), a mixture per face:
        10% neutral (all 0); 40% sparse (1-5 random blendshapes, weights U(0, 1)); 20% dense mild
        (each blendshape active with prob. 0.3, weight U(0, 0.4)); 30% extreme (1-3 blendshapes
        with weights U(0.8, 1), always including one mouth/jaw shape when the names allow).
        In the sparse and extreme modes a chosen ``*_L`` / ``*_R`` shape gets its partner at the
        same weight with prob. 0.5. PCA models: N(0, 1), 3x on 20% of faces (extreme).
        """
        g = generator or self.generator
        K = self.n_exp
        if self.exp_kind != "blendshape":
            z = torch.randn(n, K, generator=g).to(self.device)
            big = (self._rand(n, 1, generator=g) < 0.2).float()
            return z * (1 + 2 * big)
        mode = self._rand(n, generator=g)
        # sparse: k active shapes
        k_sparse = 1 + (self._rand(n, generator=g) * 5).long()
        k_extreme = 1 + (self._rand(n, generator=g) * 3).long()
        order = torch.argsort(self._rand(n, K, generator=g), dim=1)
        ranks = torch.argsort(order, dim=1)  # random rank of each shape
        is_sparse = (mode >= 0.1) & (mode < 0.5)
        is_dense = (mode >= 0.5) & (mode < 0.7)
        is_extreme = mode >= 0.7
        k = torch.where(is_extreme, k_extreme, k_sparse)
        active = (ranks < k[:, None]) & (is_sparse | is_extreme)[:, None]
        w_sparse = self._rand(n, K, generator=g)
        w_extreme = 0.8 + 0.2 * self._rand(n, K, generator=g)
        w = torch.where(is_extreme[:, None], w_extreme, w_sparse) * active
        # extreme: make sure a mouth / jaw shape is among them
        mouth = torch.tensor([nm.startswith(("jaw", "mouth")) for nm in self.exp_names],
                             device=self.device)
        if bool(mouth.any()):
            mids = mouth.nonzero().flatten()
            pick = mids[(self._rand(n, generator=g) * len(mids)).long()]
            wm = 0.8 + 0.2 * self._rand(n, generator=g)
            rows = torch.arange(n, device=self.device)
            w[rows[is_extreme], pick[is_extreme]] = wm[is_extreme]
        # symmetric partners
        sym = (self._rand(n, 1, generator=g) < 0.5) & (is_sparse | is_extreme)[:, None]
        w_partner = w[:, self._partner]
        w = torch.where(sym, torch.maximum(w, w_partner), w)
        dense = (self._rand(n, K, generator=g) < 0.3) * 0.4 * self._rand(n, K, generator=g)
        w = torch.where(is_dense[:, None], dense, w)
        return w.clamp(0.0, 1.0)

    def sample_poses(self, n: int, generator: torch.Generator | None = None):
        """(n, 3) yaw/pitch/roll in degrees, uniform within the configured ranges."""
        g = generator or self.generator
        return (2 * self._rand(n, 3, generator=g) - 1) * self.max_angles

    def sample_distances(self, n: int, generator: torch.Generator | None = None):
        """(n,) camera distances, uniform in ``self.distance``."""
        g = generator or self.generator
        lo, hi = self.distance
        return lo + (hi - lo) * self._rand(n, generator=g)

    # ------------------------------------------------------------------ rendering
    def project(self, id_coeffs: torch.Tensor, exp: torch.Tensor, angles: torch.Tensor,
                distance: torch.Tensor) -> torch.Tensor:
        """Project faces: id_coeffs (B, K_id), exp (B, K_exp), angles (B, 3) deg, distance (B,)
        -> (B, 68, 2) image coordinates of a focal-1 pinhole camera (x right, y down)."""
        X = linear_shape(self.mean, self.id_basis.view(-1, 68, 3),
                         self.exp_basis.view(-1, 68, 3), id_coeffs, exp)
        R = T.euler_to_matrix(angles)
        t = torch.zeros(X.shape[0], 3, device=X.device, dtype=X.dtype)
        t[:, 2] = distance
        cam = T.model_to_camera(X, R, t)
        return cam[..., :2] / cam[..., 2:3]

    def _noise(self, n: int, generator) -> torch.Tensor:
        g = generator or self.generator
        s = torch.full((68, 1), self.noise, device=self.device)
        s[:17] *= 2.0
        pts = torch.randn(n, 68, 2, generator=g).to(self.device) * s
        # per-face similarity jitter (detector box / scale bias)
        ang = torch.randn(n, generator=g).to(self.device) * self.noise
        sc = torch.randn(n, generator=g).to(self.device) * self.noise
        sh = torch.randn(n, 2, generator=g).to(self.device) * self.noise
        return pts, ang, sc, sh

    def render(self, id_label: torch.Tensor, exp: torch.Tensor, angles: torch.Tensor,
               distance: torch.Tensor, *, noise: float | None = None,
               generator: torch.Generator | None = None, id_coeffs: torch.Tensor | None = None):
        """Normalised landmarks of given faces.

        Args:
            id_label: (B,) identity labels (ignored when ``id_coeffs`` is given).
            exp, angles, distance: (B, K_exp), (B, 3) degrees, (B,).
            noise: override of ``self.noise`` (0 = clean).
            id_coeffs: optional explicit (B, K_id) identity coefficients.
        Returns:
            (noisy (B, 68, 2), clean (B, 68, 2)), both normalised by the noisy square box.
        """
        a = self.id_coeffs[id_label] if id_coeffs is None else id_coeffs
        x, _, _ = normalize_landmarks(self.project(a, exp, angles, distance))
        sigma = self.noise if noise is None else float(noise)
        if sigma == 0:
            return x, x
        clean = x
        if sigma > 0:
            old, self.noise = self.noise, sigma
            pts, ang, sc, sh = self._noise(x.shape[0], generator)
            self.noise = old
            c, s = torch.cos(ang), torch.sin(ang)
            rot = torch.stack([c, -s, s, c], -1).reshape(-1, 2, 2)
            x = (1 + sc)[:, None, None] * (x @ rot.transpose(1, 2)) + sh[:, None, :] + pts
        x, c, h = normalize_landmarks(x)
        return x, (clean - c[:, None, :]) / h[:, None, None]

    def sample(self, n: int, id_label: torch.Tensor | None = None, *,
               noise: float | None = None, generator: torch.Generator | None = None):
        """Random faces: ``n`` samples (identities uniform unless ``id_label`` (n,) is given).

        Returns a :class:`SynthBatch`."""
        g = generator or self.generator
        if id_label is None:
            id_label = (self._rand(n, generator=g) * self.n_identities).long()
        id_label = id_label.to(self.device)
        if id_label.shape != (n,):
            raise ValueError(f"id_label must have shape ({n},), got {tuple(id_label.shape)}")
        exp = self.sample_expressions(n, g)
        ang = self.sample_poses(n, g)
        dist = self.sample_distances(n, g)
        lm, clean = self.render(id_label, exp, ang, dist, noise=noise, generator=g)
        return SynthBatch(lm, clean, id_label, exp, ang, dist)

    def other_identity(self, id_label: torch.Tensor, generator: torch.Generator | None = None):
        """(B,) random identity labels different from ``id_label`` (needs >= 2 identities)."""
        if self.n_identities < 2:
            raise ValueError("need at least 2 identities to draw a different one")
        g = generator or self.generator
        off = 1 + (self._rand(id_label.shape[0], generator=g) * (self.n_identities - 1)).long()
        return (id_label + off) % self.n_identities

    def triplets(self, n: int, *, noise: float | None = None,
                 generator: torch.Generator | None = None):
        """Training triplets (S1, S2, T): S1 and S2 are two random faces of one identity, T a
        random face of another identity. Returns three :class:`SynthBatch`."""
        g = generator or self.generator
        k = (self._rand(n, generator=g) * self.n_identities).long().to(self.device)
        kt = self.other_identity(k, g)
        return (self.sample(n, k, noise=noise, generator=g),
                self.sample(n, k, noise=noise, generator=g),
                self.sample(n, kt, noise=noise, generator=g))

    def recombine(self, identity: SynthBatch, motion: SynthBatch):
        """Exact ground truth: identity of ``identity`` with the expression, pose and camera of
        ``motion``. Returns (B, 68, 2) clean normalised landmarks."""
        return self.render(identity.id_label, motion.exp, motion.angles, motion.distance,
                           noise=0.0)[0]
