import numpy as np
import pytest

from cambatch.evaluation.maps import normalize, resize, resize_matrix, score_maps


def test_resize_matches_opencv_bilinear():
    cv2 = pytest.importorskip("cv2")
    maps = np.random.default_rng(1).random((3, 7, 5)).astype(np.float32)
    ours = resize(maps, 224)
    for m, r in zip(maps, ours, strict=True):
        assert np.abs(r - cv2.resize(m, (224, 224), interpolation=cv2.INTER_LINEAR)).max() < 1e-5


def test_resize_to_the_same_size_is_the_identity():
    assert np.array_equal(resize_matrix(6, 6), np.eye(6))


def test_normalize_min_max_and_constant_or_nan_maps_become_zero():
    maps = np.stack([np.array([[1.0, 3.0], [2.0, 5.0]]), np.full((2, 2), 4.0), np.array([[np.nan, 1], [0, 2]])])
    out = normalize(maps)
    assert out[0].tolist() == [[0.0, 0.5], [0.25, 1.0]]
    assert (out[1] == 0).all() and (out[2] == 0).all()


def test_score_maps_span_zero_to_one():
    out = score_maps(np.random.default_rng(2).normal(size=(2, 7, 7)), 56)
    assert out.shape == (2, 56, 56)
    assert out.min() == 0 and out.max() == pytest.approx(1.0)
