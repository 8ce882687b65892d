"""Power-law fits of spectra against known Pareto tails and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from zoo.metrics.spectra import (MIN_TAIL, fit_power_law, heavy_tail_alpha, layer_alphas,
                                  weight_eigenvalues)


def _pareto(alpha: float, n: int, seed: int, x_min: float = 1.0) -> np.ndarray:
    """Samples with density ∝ x^(−alpha) for x >= x_min (inverse-CDF sampling)."""
    u = np.random.default_rng(seed).random(n)
    return x_min * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def _reference_fit(lam: np.ndarray, min_tail: int = MIN_TAIL) -> tuple[float, float]:
    """Clauset's recipe written out plainly: every distinct x_min, MLE α, smallest KS."""
    lam = np.sort(lam)
    best = (math.inf, math.nan, math.nan)
    for x_min in np.unique(lam):
        tail = lam[lam >= x_min]
        if tail.size < min_tail or np.all(tail == x_min):
            continue
        alpha = 1 + tail.size / np.sum(np.log(tail / x_min))
        cdf = 1 - (tail / x_min) ** (1 - alpha)
        ks = max(max(abs((k + 1) / tail.size - c), abs(k / tail.size - c)) for k, c in enumerate(cdf))
        if ks < best[0]:
            best = (ks, alpha, x_min)
    return best[1], best[2]


@pytest.mark.parametrize("alpha", [2.0, 2.5, 4.0])
def test_recovers_the_exponent_of_pareto_samples(alpha: float) -> None:
    fitted, x_min = fit_power_law(_pareto(alpha, 5000, seed=int(alpha * 10)))
    assert fitted == pytest.approx(alpha, abs=0.2)
    assert x_min >= 1.0


def test_finds_the_tail_above_a_bulk() -> None:
    rng = np.random.default_rng(0)
    lam = np.concatenate([rng.uniform(0.1, 0.9, 3000), _pareto(3.0, 2000, seed=1)])
    alpha, x_min = fit_power_law(lam)
    assert alpha == pytest.approx(3.0, abs=0.2)
    assert x_min >= 0.9


def test_matches_a_brute_force_reference_and_the_closed_form() -> None:
    lam = np.abs(np.random.default_rng(2).standard_cauchy(300)) + 1e-3
    alpha, x_min = fit_power_law(torch.from_numpy(lam))
    ref_alpha, ref_x_min = _reference_fit(lam)
    assert x_min == ref_x_min
    assert alpha == pytest.approx(ref_alpha, rel=1e-12)
    tail = lam[lam >= x_min]
    assert alpha == pytest.approx(1 + tail.size / np.log(tail / x_min).sum(), rel=1e-12)


def test_is_invariant_to_scaling() -> None:
    lam = _pareto(2.5, 500, seed=3)
    a, x = fit_power_law(lam)
    b, y = fit_power_law(1e3 * lam)
    assert b == pytest.approx(a, rel=1e-9) and y == pytest.approx(1e3 * x, rel=1e-12)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.array([]), "non-empty set of positive finite numbers"),
        (np.array([1.0, 0.0, 2.0, 3.0, 4.0, 5.0]), "non-empty set of positive finite numbers"),
        (np.array([1.0, np.inf, 2.0, 3.0, 4.0, 5.0]), "non-empty set of positive finite numbers"),
        (np.array([1.0, 2.0, 3.0]), "needs at least 5 eigenvalues, got 3"),
        (np.ones(8), "all equal"),
    ],
)
def test_rejects_unusable_spectra(values: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_power_law(values)


def test_heavy_tail_alpha_uses_the_eigenvalues_of_wtw() -> None:
    w = torch.randn(60, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = w * torch.linspace(0.1, 3.0, 40, dtype=torch.float64) ** 2  # a spread-out spectrum
    lam = np.linalg.eigvalsh((w.T @ w).numpy())
    expected, _ = fit_power_law(lam)
    assert heavy_tail_alpha(w, min_eigenvalues=40) == pytest.approx(expected, rel=1e-9)
    assert heavy_tail_alpha(5.0 * w.float(), min_eigenvalues=40) == pytest.approx(expected,
                                                                                  rel=1e-4)
    assert heavy_tail_alpha(w) is None  # 40 eigenvalues < the default minimum of 50


def test_conv_kernels_pool_the_spectra_of_their_slices_as_weightwatcher() -> None:
    k = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # direct: the eigenvalues of W[:, :, i, j]ᵀ W[:, :, i, j] for all 9 kernel positions
    direct = np.concatenate([np.linalg.eigvalsh((k[:, :, i, j].T @ k[:, :, i, j]).numpy())
                             for i in range(3) for j in range(3)])
    assert np.sort(weight_eigenvalues(k)) == pytest.approx(np.sort(direct), rel=1e-10)
    expected, _ = fit_power_law(direct)
    assert heavy_tail_alpha(k, min_eigenvalues=72) == pytest.approx(expected, rel=1e-9)
    assert heavy_tail_alpha(k, min_eigenvalues=73) is None  # 9 x 8 = 72 pooled eigenvalues
    assert heavy_tail_alpha(k, min_eigenvalues=72) != heavy_tail_alpha(k.reshape(16, 72),
                                                                       min_eigenvalues=16)
    conv1d = torch.randn(20, 10, 5, generator=torch.Generator().manual_seed(2))
    assert weight_eigenvalues(conv1d).size == 50


def test_small_flat_and_one_dimensional_weights_give_none() -> None:
    assert heavy_tail_alpha(torch.randn(5, 3)) is None
    assert heavy_tail_alpha(torch.randn(50, 8), min_eigenvalues=10) is None  # 8 < 10
    assert heavy_tail_alpha(torch.randn(50, 8), min_eigenvalues=8) is not None
    assert heavy_tail_alpha(torch.randn(100)) is None
    assert heavy_tail_alpha(torch.eye(20)) is None  # flat spectrum
    rank_one = torch.ones(30, 1) @ torch.ones(1, 30)
    assert heavy_tail_alpha(rank_one) is None  # a single nonzero eigenvalue


def test_layer_alphas_covers_weight_matrices_only() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Flatten(),
        nn.Linear(16 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 4),
    )
    alphas = layer_alphas(model, min_eigenvalues=10)
    assert list(alphas) == ["0.weight", "3.weight"]  # 4 outputs < 10 eigenvalues; no biases
    assert alphas["3.weight"] == heavy_tail_alpha(model[3].weight, min_eigenvalues=10)
    assert list(layer_alphas(model)) == []  # 27 and 32 eigenvalues < the default 50
    assert all(isinstance(a, float) and a > 1 for a in alphas.values())
