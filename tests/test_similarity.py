"""Linear CKA against direct numpy formulas, and its invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.metrics.similarity import linear_cka


def _numpy_cka(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _song_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012, eq. 5) from Gram matrices."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def _song_cka(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T
    return _song_hsic(k, l) / math.sqrt(_song_hsic(k, k) * _song_hsic(l, l))


def _features(seed: int, n: int, p: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, p))


@pytest.mark.parametrize(("n", "p", "q"), [(50, 8, 5), (20, 60, 40)])  # both HSIC code paths
def test_matches_direct_numpy_formulas(n: int, p: int, q: int) -> None:
    x = _features(0, n, p) + 3.0  # an offset the centring must remove
    y = np.tanh(x[:, :1] @ np.ones((1, q))) + 0.5 * _features(1, n, q)
    assert linear_cka(x, y) == pytest.approx(_numpy_cka(x, y), rel=1e-12)
    assert linear_cka(x, y, debiased=True) == pytest.approx(_song_cka(x, y), rel=1e-10)
    assert linear_cka(torch.from_numpy(x).float(), y) == pytest.approx(_numpy_cka(x, y), rel=1e-5)


def test_identical_inputs_give_one() -> None:
    x = _features(2, 30, 7)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-14)
    assert linear_cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-14)


def test_orthogonal_maps_and_isotropic_scaling_leave_it_at_one() -> None:
    x = _features(3, 40, 10)
    q, _ = np.linalg.qr(_features(4, 10, 10))
    assert linear_cka(x, 7.5 * x @ q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, -0.01 * x @ q, debiased=True) == pytest.approx(1.0, abs=1e-12)


def test_debiased_is_near_zero_for_independent_wide_features_where_biased_is_large() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1000, generator=g)
    y = torch.randn(200, 1000, generator=g)
    assert linear_cka(x, y) > 0.7
    assert abs(linear_cka(x, y, debiased=True)) < 0.05


def test_trailing_dimensions_are_flattened_and_vectors_are_one_feature() -> None:
    x = _features(5, 12, 6)
    assert linear_cka(x.reshape(12, 2, 3), x) == pytest.approx(1.0, abs=1e-14)
    v = _features(6, 12, 1)
    assert linear_cka(v[:, 0], 3 * v + 1) == pytest.approx(1.0, abs=1e-14)


def test_constant_or_non_finite_inputs_give_nan() -> None:
    x = _features(7, 10, 3)
    assert math.isnan(linear_cka(np.ones((10, 3)), x))
    bad = x.copy()
    bad[0, 0] = np.nan
    assert math.isnan(linear_cka(bad, x))


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "match"),
    [
        (np.ones((5, 2)), np.ones((6, 2)), {}, "same samples, got 5 and 6 rows"),
        (np.ones((1, 2)), np.ones((1, 2)), {}, "needs n >= 2 samples, got 1"),
        (np.ones((3, 2)), np.ones((3, 2)), {"debiased": True}, "needs n >= 4 samples, got 3"),
        (np.float64(1.0), np.ones(3), {}, "x must have a sample dimension"),
    ],
)
def test_bad_shapes_are_rejected(x, y, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        linear_cka(x, y, **kwargs)
