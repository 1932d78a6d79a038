"""Evaluation of landmark disentanglement on synthetic 3DMM data with exact ground truth.

* :func:`make_lmtest`: an LMTest-like set (paper sec. 4): ``n_ids`` unseen identities each
  performing the SAME sequence of ``n_frames`` poses/expressions, so both "same identity" and
  "same pose/expression" pairs exist. Shape (n_ids, n_frames, 68, 2), normalised.
* :func:`latent_distances`: the paper's Table 1 (codes reduced to 8 dimensions by PCA, mean
  Euclidean distance of random pairs with the same identity / the same pose-expression / both
  different).
* :func:`identity_usage`: does ``G`` use its identity input at all? Reconstruction error of
  ``G(E_P(l_S2), E_I(x))`` with ``x`` = another face of the same identity vs. a face of another
  identity (equal errors = ``E_I`` is ignored; this is how the first shipped model failed).
* :func:`recombination_nme`: NME of recombined landmarks against the exact ground truth
  (identity of A + pose/expression/camera of B), for LD-Net, the naive "driver's landmarks"
  baseline and the 3DMM recombination (fit both, swap identity).

NME here = mean point-to-point distance / sqrt(w * h) of the ground-truth landmarks' bounding
box (the AFLW2000-3D convention), in percent. All landmarks are in the normalised frame
(square box -> [-1, 1]), where every method's output is also placed.
"""

from __future__ import annotations

import torch

from facegeo.disentangle.data import LandmarkSynth, normalize_landmarks

__all__ = ["make_lmtest", "pca_reduce", "latent_distances", "nme", "recombination_nme",
           "identity_usage"]


def make_lmtest(synth: LandmarkSynth, n_frames: int, *, noise: float = 0.0, seed: int = 1):
    """(n_ids, n_frames, 68, 2) normalised landmarks: every identity of ``synth`` with one shared
    random sequence of expressions, poses and camera distances (drawn with ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    exp = synth.sample_expressions(n_frames, g)
    ang = synth.sample_poses(n_frames, g)
    dist = synth.sample_distances(n_frames, g)
    n_ids = synth.n_identities
    out = []
    for i in range(n_ids):
        lab = torch.full((n_frames,), i, dtype=torch.long, device=synth.device)
        out.append(synth.render(lab, exp, ang, dist, noise=noise, generator=g)[0])
    return torch.stack(out)


def pca_reduce(x: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Project (N, D) rows on their top-``k`` principal components -> (N, k)."""
    if x.ndim != 2 or k > min(x.shape):
        raise ValueError(f"need (N, D) with k <= min(N, D); got {tuple(x.shape)}, k={k}")
    xc = x - x.mean(0, keepdim=True)
    # eigen-decomposition of the (D, D) covariance (float64 for stability)
    cov = (xc.double().T @ xc.double()) / max(x.shape[0] - 1, 1)
    _, vec = torch.linalg.eigh(cov)
    return (xc.double() @ vec[:, -k:].flip(1)).to(x.dtype)


@torch.no_grad()
def latent_distances(net, lmtest: torch.Tensor, *, n_pairs: int = 100_000, k: int = 8,
                     seed: int = 0, batch: int = 4096) -> dict:
    """Paper Table 1 on an LMTest-like tensor (n_ids, n_frames, 68, 2).

    Returns ``{"same_identity": {"E_I": d, "E_P": d}, "same_pose_exp": {...},
    "both_different": {...}}`` (mean Euclidean distances in the PCA-``k`` spaces)."""
    n_ids, n_fr = lmtest.shape[:2]
    flat = lmtest.reshape(-1, 68, 2)
    dev = next(net.parameters()).device
    ci, cp = [], []
    for s in range(0, flat.shape[0], batch):
        b = flat[s:s + batch].to(dev, next(net.parameters()).dtype)
        ci.append(net.id_code(b).float().cpu())
        cp.append(net.pose_code(b).float().cpu())
    zi = pca_reduce(torch.cat(ci), k).reshape(n_ids, n_fr, k)
    zp = pca_reduce(torch.cat(cp), k).reshape(n_ids, n_fr, k)
    g = torch.Generator().manual_seed(seed)

    def rand(n, m):
        return torch.randint(0, m, (n,), generator=g)

    def other(a, m):
        return (a + 1 + torch.randint(0, m - 1, a.shape, generator=g)) % m

    i1, f1 = rand(n_pairs, n_ids), rand(n_pairs, n_fr)
    cases = {
        "same_identity": (i1, other(f1, n_fr)),
        "same_pose_exp": (other(i1, n_ids), f1),
        "both_different": (other(i1, n_ids), other(f1, n_fr)),
    }
    res = {}
    for name, (i2, f2) in cases.items():
        res[name] = {
            "E_I": float((zi[i1, f1] - zi[i2, f2]).norm(dim=-1).mean()),
            "E_P": float((zp[i1, f1] - zp[i2, f2]).norm(dim=-1).mean()),
        }
    return res


def nme(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-face NME in percent: mean point distance / sqrt(w h) of gt's bounding box.
    (B, N, 2), (B, N, 2) -> (B,)."""
    wh = gt.amax(1) - gt.amin(1)
    return 100 * (pred - gt).norm(dim=-1).mean(1) / (wh[:, 0] * wh[:, 1]).sqrt()


@torch.no_grad()
def recombination_nme(net, synth: LandmarkSynth, *, n_pairs: int = 2000, noise: float = 0.0,
                      seed: int = 2, methods=("ldnet", "driver", "3dmm"), model=None,
                      fit_kwargs: dict | None = None) -> dict:
    """NME (%) of "identity of A + pose/expression of B" against the exact ground truth.

    Pairs (A, B) of faces with different identities are drawn from ``synth`` (use identities
    not seen in training). Inputs get ``noise``; the ground truth is clean. Methods: ``"ldnet"``
    (``net(A, B)``), ``"driver"`` (B's landmarks as they are), ``"target"`` (A's landmarks, a
    lower bound on what identity alone explains), ``"3dmm"`` (fit both with
    :mod:`facegeo.fitting`, swap identity; ``fit_kwargs`` default ``contour="fixed"`` since the
    synthetic jawline uses the model's fixed landmark vertices). Every output is normalised
    (square box -> [-1, 1]) before comparison. Returns ``{method: {"mean", "median"}}``.
    """
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, synth.n_identities, (n_pairs,), generator=g).to(synth.device)
    a = synth.sample(n_pairs, k, noise=noise, generator=g)
    b = synth.sample(n_pairs, synth.other_identity(k, g), noise=noise, generator=g)
    gt = synth.recombine(a, b)
    out = {}
    for m in methods:
        if m == "ldnet":
            p = net(a.landmarks.to(next(net.parameters()).device),
                    b.landmarks.to(next(net.parameters()).device)).float().cpu()
        elif m == "driver":
            p = b.landmarks
        elif m == "target":
            p = a.landmarks
        elif m == "3dmm":
            from facegeo.disentangle.recombine import recombine_3dmm

            kw = {"contour": "fixed"}
            kw.update(fit_kwargs or {})
            # pixel-like scale for the fitter (its priors are resolution independent)
            p = recombine_3dmm(100 * a.landmarks + 200, 100 * b.landmarks + 200, model, **kw)
        else:
            raise ValueError(f"unknown method {m!r}")
        p = normalize_landmarks(p.to(gt.dtype).cpu())[0]
        e = nme(p, gt.cpu())
        out[m] = {"mean": float(e.mean()), "median": float(e.median())}
    return out


@torch.no_grad()
def identity_usage(net, synth: LandmarkSynth, *, n: int = 512, seed: int = 5) -> dict:
    """Does the generator use ``E_I``? Mean per-point squared error (normalised units) of
    ``G(E_P(l_S2), E_I(x))`` against ``l_S2`` for ``x`` = ``l_S1`` (same identity, other
    pose/expression), ``x`` = ``l_T`` (another identity) and ``x`` = ``l_S2`` itself, plus
    ``"identity_change"``: the error of the clean ``l_S2`` against the exact face with T's
    identity (what an ignored identity code costs at most).

    Returns ``{"same_identity", "other_identity", "self", "identity_change"}`` (floats)."""
    g = torch.Generator().manual_seed(seed)
    s1, s2, t = synth.triplets(n, generator=g)
    dev = next(net.parameters()).device
    dt = next(net.parameters()).dtype

    def err(src):
        out = net.generate(net.pose_code(s2.landmarks.to(dev, dt)),
                           net.id_code(src.landmarks.to(dev, dt))).float().cpu()
        return float(((out - s2.landmarks.cpu()) ** 2).sum(-1).mean())

    gt = synth.recombine(t, s2)
    return {"same_identity": err(s1), "other_identity": err(t), "self": err(s2),
            "identity_change": float(((gt - s2.clean) ** 2).sum(-1).mean())}
