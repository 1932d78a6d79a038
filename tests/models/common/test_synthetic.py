"""Synthetic batches (models/common/synthetic.py): consistent fits, landmarks and shapes."""

from __future__ import annotations

import pytest
import torch

from facegeo import transforms as T
from facegeo.morphable import MorphableModel
from facegeo_models.common.synthetic import synthetic_batch, synthetic_faces


class _Spec:
    image_size = 48
    requires = frozenset({"image", "landmarks68", "morphable_fit"})


def test_landmarks_are_the_projection_of_the_fit_arrays():
    """Recomputed independently from the batch's own fit arrays with the morphable model."""
    m = MorphableModel.load()
    b = synthetic_batch(_Spec(), 3, num_sources=2, seed=4)
    for who in ("source", "driving"):
        exp = b[f"{who}_exp_coeffs"].reshape(-1, m.n_exp)
        n = exp.shape[0]
        ids = b["id_coeffs"].repeat_interleave(n // 3, 0)
        lm3 = m.landmarks(m.vertices(ids, exp))
        rot = b[f"{who}_rotation"].reshape(n, 3, 3)
        x = T.weak_perspective_project(lm3, rot, b[f"{who}_translation"].reshape(n, 2),
                                       b[f"{who}_scale"].reshape(n))
        torch.testing.assert_close(x, b[f"{who}_landmarks"].reshape(n, 68, 2), atol=1e-3,
                                   rtol=1e-4)
        torch.testing.assert_close(T.euler_to_matrix(b[f"{who}_angles"].reshape(n, 3)), rot)
    lm = torch.cat([b["source_landmarks"].flatten(0, 1), b["driving_landmarks"]])
    assert lm.min() > 0 and lm.max() < _Spec.image_size - 1  # the faces are in the crop


def test_shapes_ranges_and_determinism():
    b = synthetic_batch(_Spec(), 2, seed=1)
    assert b["source"].shape == b["driving"].shape == (2, 3, 48, 48)
    assert b["source_landmarks"].shape == (2, 68, 2) and b["id_coeffs"].shape[0] == 2
    assert 0 <= float(b["source"].min()) and float(b["source"].max()) <= 1
    assert b["identity"].dtype == torch.int64 and b["frame_index"].shape == (2, 2)
    again = synthetic_batch(_Spec(), 2, seed=1)
    assert all(torch.equal(b[k], again[k]) for k in b)
    other = synthetic_batch(_Spec(), 2, seed=2)
    assert not torch.equal(b["driving"], other["driving"])
    # darker pixels at the landmarks than on average: the images carry the face
    lm = b["driving_landmarks"][0].round().long()
    assert b["driving"][0][:, lm[:, 1], lm[:, 0]].mean() < b["driving"][0].mean()
    with pytest.raises(ValueError, match="batch_size"):
        synthetic_batch(_Spec(), 0)


def test_synthetic_faces_pose_range():
    f = synthetic_faces(64, 128)
    assert (f["angles"].abs() <= torch.tensor([30.0, 15.0, 10.0]) + 1e-4).all()
    width = f["landmarks"][..., 0].amax(1) - f["landmarks"][..., 0].amin(1)
    assert (width > 0.3 * 128).all() and (width < 0.8 * 128).all()
