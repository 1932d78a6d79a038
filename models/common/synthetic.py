"""Synthetic training batches for any registered model: smoke tests and the GPU check.

:func:`synthetic_batch` builds, for a model, a batch with every key the datasets of
:mod:`~facegeo_models.common.data` would give it (see that module's item layout), with
values that are *consistent* with each other: the landmarks are the 68 landmarks of a random
ICT-FaceKit face (random identity, sparse expression, yaw +-30 / pitch +-15 / roll +-10 deg)
projected with the weak-perspective fit arrays that are in the batch too, so a model that
reads fits and one that reads landmarks see the same faces. The images are smooth random
colour fields with the face's landmarks drawn as dark blobs (not photographs: enough for a
training step to have a signal, a loss to fall when the same batch is repeated, and the
speed of a forward pass to be the real one). Nothing is read from the media or corpus, so
``benchmarks/gpu_check.py`` runs on a machine that has only the package.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import FIT_FRAME_ARRAYS

__all__ = ["synthetic_faces", "synthetic_batch"]


def synthetic_faces(n: int, image_size: int, *, generator: torch.Generator | None = None,
                    id_coeffs: torch.Tensor | None = None, morphable=None
                    ) -> dict[str, torch.Tensor]:
    """Random faces and their weak-perspective fits in an S x S crop.

    Args:
        n: number of faces.
        image_size: crop side S in pixels.
        generator: torch RNG (default: a fresh one seeded 0).
        id_coeffs: (n, K_id) identities to use (default: random, 0.7 std).
        morphable: a :class:`facegeo.morphable.MorphableModel` (default: the shipped
            ICT-FaceKit).
    Returns:
        ``angles`` (n, 3) deg (yaw, pitch, roll), ``rotation`` (n, 3, 3), ``translation``
        (n, 2) px, ``scale`` (n,) px per model unit, ``exp_coeffs`` (n, K_exp),
        ``id_coeffs`` (n, K_id), ``landmarks`` (n, 68, 2) crop pixels (the fit's
        projection of the face's 68 landmark vertices).
    """
    from facegeo import transforms as T
    from facegeo.morphable import MorphableModel

    g = generator or torch.Generator().manual_seed(0)
    m = morphable or MorphableModel.load()
    ids = torch.randn(n, m.n_id, generator=g) * 0.7 if id_coeffs is None else id_coeffs
    exp = torch.rand(n, m.n_exp, generator=g) * (torch.rand(n, m.n_exp, generator=g) < 0.15)
    lim = torch.tensor([30.0, 15.0, 10.0])
    ang = (torch.rand(n, 3, generator=g) * 2 - 1) * lim
    rot = T.euler_to_matrix(ang)
    verts = m.vertices(ids, exp)  # (n, V, 3)
    lm3 = m.landmarks(verts)  # (n, 68, 3)
    # scale: the face's 68-point width (model units) -> 55 % of the crop
    width = (lm3[..., 0].amax(1) - lm3[..., 0].amin(1)).clamp_min(1e-6)
    scale = 0.55 * image_size / width * (0.9 + 0.2 * torch.rand(n, generator=g))
    centre = lm3.mean(1)  # (n, 3)
    trans = image_size / 2 + 0.03 * image_size * torch.randn(n, 2, generator=g)
    # the model origin goes where it keeps the landmark centroid at `trans`
    c2 = T.weak_perspective_project(centre[:, None], rot, torch.zeros(n, 2), scale)[:, 0]
    trans = trans - c2
    lm2 = T.weak_perspective_project(lm3, rot, trans, scale)
    return {"angles": ang, "rotation": rot, "translation": trans, "scale": scale,
            "exp_coeffs": exp, "id_coeffs": ids, "landmarks": lm2}


def _images(landmarks: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """(n, 68, 2) px -> (n, 3, S, S) smooth colour fields with dark landmark blobs."""
    n = landmarks.shape[0]
    low = torch.rand(n, 3, 4, 4, generator=g)
    img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    ys = torch.arange(size, dtype=torch.float32)
    d2 = ((ys[None, None, None, :] - landmarks[..., 0, None, None]) ** 2
          + (ys[None, None, :, None] - landmarks[..., 1, None, None]) ** 2)  # (n, 68, S, S)
    sigma = max(size / 96, 0.75)
    blobs = torch.exp(-d2 / (2 * sigma ** 2)).amax(1)  # (n, S, S)
    return (img * (1 - 0.8 * blobs[:, None])).clamp(0, 1)


def synthetic_batch(model, batch_size: int = 2, *, image_size: int | None = None,
                    num_sources: int = 1, seed: int = 0, device=None
                    ) -> dict[str, torch.Tensor]:
    """A random, internally consistent training batch for ``model``.

    Args:
        model: a reenactment model (its ``requires`` and ``image_size`` pick the keys and
            the resolution; anything with those attributes works).
        batch_size: B.
        image_size: S (default ``model.image_size``).
        num_sources: sources per item (n > 1 gives (B, n, ...) source arrays, as a
            dataset with ``num_sources: n``).
        seed: RNG seed (same seed -> same batch).
        device: where the tensors go.
    Returns:
        ``source`` (B, 3, S, S) or (B, n, 3, S, S), ``driving`` (B, 3, S, S) in [0, 1];
        ``source_landmarks`` / ``driving_landmarks`` (B[, n], 68, 2) px; the fit arrays
        ``source_<a>`` / ``driving_<a>`` for ``a`` in ``FIT_FRAME_ARRAYS`` and
        ``id_coeffs`` (B, K_id) (one identity per item, as a clip has); ``source_box`` /
        ``driving_box`` (B[, n], 3) (cx, cy, side) of the crop; ``identity`` (B,) int64;
        ``video_index`` (B,), ``frame_index`` (B, n + 1).
    """
    s = int(image_size or model.image_size)
    b, k = int(batch_size), int(num_sources)
    if b < 1 or k < 1 or s < 8:
        raise ValueError(f"need batch_size >= 1, num_sources >= 1, image_size >= 8; got "
                         f"{b}, {k}, {s}")
    g = torch.Generator().manual_seed(int(seed))
    from facegeo.morphable import MorphableModel

    m = MorphableModel.load()
    # one identity per item: every frame of item i has row i's identity, as a clip has
    item_ids = torch.randn(b, m.n_id, generator=g) * 0.7  # (B, K_id)
    faces = synthetic_faces(b * (k + 1), s, generator=g, morphable=m,
                            id_coeffs=item_ids.repeat_interleave(k + 1, 0))
    images = _images(faces["landmarks"], s, g)

    def split(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = a.reshape(b, k + 1, *a.shape[1:])
        src = a[:, 0] if k == 1 else a[:, :k]
        return src.contiguous(), a[:, k].contiguous()

    out: dict[str, torch.Tensor] = {}
    out["source"], out["driving"] = split(images)
    out["source_landmarks"], out["driving_landmarks"] = split(faces["landmarks"])
    for name in FIT_FRAME_ARRAYS:
        out[f"source_{name}"], out[f"driving_{name}"] = split(faces[name])
    out["id_coeffs"] = item_ids
    box = torch.tensor([s / 2 - 0.5, s / 2 - 0.5, float(s)]).expand(b * (k + 1), 3)
    out["source_box"], out["driving_box"] = split(box)
    out["identity"] = torch.arange(b, dtype=torch.int64) % max(2, math.ceil(b / 2))
    out["video_index"] = torch.arange(b, dtype=torch.int64)
    out["frame_index"] = torch.arange(k + 1, dtype=torch.int64).expand(b, k + 1).contiguous()
    return {key: v.to(device) for key, v in out.items()} if device is not None else out
