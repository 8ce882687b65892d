"""Heavy-tailed self-regularisation (WeightWatcher style): power-law α of weight spectra."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

MIN_TAIL = 5  # smallest tail a candidate x_min may leave: KS on fewer points is noise


def fit_power_law(eigenvalues: Tensor | np.ndarray, *,
                  min_tail: int = MIN_TAIL) -> tuple[float, float]:
    """Fit a power law p(λ) ∝ λ^(−α), λ ≥ x_min, to the tail of a spectrum (Clauset et al. 2009).

    For each candidate x_min among the eigenvalues, α = 1 + n / Σ ln(λ_i / x_min) over the n
    values λ_i ≥ x_min (maximum likelihood); the x_min whose fit has the smallest
    Kolmogorov–Smirnov distance to the empirical tail wins (ties: the smallest x_min).

    Args:
        eigenvalues: (N,) positive finite values, any order.
        min_tail: fewest values a candidate tail may hold.
    Returns:
        (alpha, x_min).
    """
    lam = np.sort(np.asarray(torch.as_tensor(eigenvalues).detach().cpu(), dtype=np.float64).ravel())
    if lam.size == 0 or not np.all(np.isfinite(lam)) or lam[0] <= 0:
        raise ValueError("eigenvalues must be a non-empty set of positive finite numbers")
    if lam.size < max(min_tail, 2):
        raise ValueError(f"fit_power_law needs at least {max(min_tail, 2)} eigenvalues, "
                         f"got {lam.size}")
    logs = np.log(lam)
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[i] = Σ_{j >= i} ln λ_j
    best = (math.inf, math.nan, math.nan)
    for i in _candidates(lam, min_tail):
        n = lam.size - i
        spread = suffix[i] - n * logs[i]
        if spread <= 0:
            continue  # all of the tail equals x_min: no power law to fit
        alpha = 1.0 + n / spread
        distance = _ks_distance(lam[i:], alpha)
        if distance < best[0]:
            best = (distance, alpha, float(lam[i]))
    if math.isinf(best[0]):
        raise ValueError("eigenvalues are all equal: no power-law tail to fit")
    return best[1], best[2]


MIN_EIGENVALUES = 50  # WeightWatcher's earlier default: fits on fewer points are noise


def weight_eigenvalues(weight: Tensor) -> np.ndarray:
    """Nonzero eigenvalues of WᵀW, as WeightWatcher forms them, in float64.

    A matrix (out, in) gives its own; a conv kernel (out, in, *k) gives the eigenvalues of
    each (out, in) slice at every kernel position, pooled into one spectrum (WeightWatcher's
    `conv2D_Wmats` with pooling). Eigenvalues that are zero up to rounding are dropped.

    Args:
        weight: (out, in) or (out, in, *kernel) tensor.
    Returns:
        (E,) eigenvalues, unsorted.
    """
    if weight.ndim < 2:
        raise ValueError(f"weight must have 2 or more dimensions, got shape {tuple(weight.shape)}")
    w = weight.detach().to(torch.float64)
    slices = w.reshape(w.shape[0], w.shape[1], -1).permute(2, 0, 1)  # (positions, out, in)
    out = []
    for matrix in slices:
        lam = torch.linalg.svdvals(matrix).square().cpu().numpy()
        if lam.size and lam.max() > 0:
            out.append(lam[lam > lam.max() * max(matrix.shape) * np.finfo(np.float64).eps])
    return np.concatenate(out) if out else np.zeros(0)


def heavy_tail_alpha(weight: Tensor, *, min_eigenvalues: int = MIN_EIGENVALUES) -> float | None:
    """Power-law α of the eigenvalues of WᵀW for one weight tensor (`weight_eigenvalues`).

    The α does not depend on any scaling of W.

    Args:
        weight: (out, in) or (out, in, *kernel) tensor.
        min_eigenvalues: fewer nonzero (pooled) eigenvalues than this gives None.
    Returns:
        α (WeightWatcher reads 2–6 as well trained, < 2 as over-fitted), or None for 1-D
        tensors, layers with too few eigenvalues and flat spectra (e.g. orthogonal W).
    """
    if weight.ndim < 2:
        return None
    lam = weight_eigenvalues(weight)
    if lam.size < max(min_eigenvalues, 2, MIN_TAIL) or np.all(lam == lam[0]):
        return None
    alpha, _ = fit_power_law(lam)
    return alpha


def layer_alphas(model: nn.Module, *,
                 min_eigenvalues: int = MIN_EIGENVALUES) -> dict[str, float]:
    """α for every weight matrix of a model that has enough eigenvalues.

    Every parameter with two or more dimensions counts (Linear, Conv, Embedding, attention
    projections); biases and normalisation scales are 1-D and skipped.

    Args:
        model: any module.
        min_eigenvalues: passed to `heavy_tail_alpha`.
    Returns:
        parameter name (e.g. "0.weight") -> α, in `named_parameters` order.
    """
    alphas: dict[str, float] = {}
    for name, p in model.named_parameters():
        alpha = heavy_tail_alpha(p, min_eigenvalues=min_eigenvalues)
        if alpha is not None:
            alphas[name] = alpha
    return alphas


def _candidates(lam: np.ndarray, min_tail: int) -> np.ndarray:
    """Indices of the first occurrence of each distinct value that leaves >= min_tail values."""
    first = np.flatnonzero(np.r_[True, lam[1:] != lam[:-1]])
    return first[lam.size - first >= min_tail]


def _ks_distance(tail: np.ndarray, alpha: float) -> float:
    """Two-sided KS distance between a sorted tail and the power law from tail[0]."""
    n = tail.size
    model_cdf = 1.0 - (tail / tail[0]) ** (1.0 - alpha)
    steps = np.arange(n + 1) / n
    return float(max(np.max(steps[1:] - model_cdf), np.max(model_cdf - steps[:-1])))
