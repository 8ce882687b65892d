"""Representation similarity: linear centred kernel alignment (CKA), biased and debiased."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

Array = Tensor | np.ndarray


def linear_cka(x: Array, y: Array, *, debiased: bool = False) -> float:
    """Linear CKA of two representations of the same n samples, computed in float64.

    CKA(X, Y) = ||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F) after centring the columns. With
    `debiased=True` each HSIC term is the unbiased estimator of Song et al. (2012), written in
    feature space as in Kornblith et al. (2019); it is ≈ 0 for independent representations,
    whereas the biased value grows with features / samples.

    Args:
        x: (n, p) features (trailing dimensions beyond the first are flattened).
        y: (n, q) features of the same samples.
        debiased: use the unbiased HSIC estimator (needs n >= 4).
    Returns:
        CKA in [0, 1] (debiased: may dip slightly below 0); NaN when either representation
        is constant over the samples or holds NaN / infinite values.
    """
    a, b = _as_matrix(x, "x"), _as_matrix(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must hold the same samples, got {a.shape[0]} and "
                         f"{b.shape[0]} rows")
    n = a.shape[0]
    if n < (4 if debiased else 2):
        raise ValueError(f"linear_cka needs n >= {4 if debiased else 2} samples, got {n}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.nan  # e.g. the logits of a diverged model
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    xy = _hsic(a, b, debiased)
    xx = _hsic(a, a, debiased)
    yy = _hsic(b, b, debiased)
    if xx <= 0 or yy <= 0:
        return math.nan
    return xy / math.sqrt(xx * yy)


def _hsic(a: Tensor, b: Tensor, debiased: bool) -> float:
    """(Unnormalised) HSIC of centred features: ||bᵀa||²_F, or its unbiased counterpart."""
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    # ||bᵀa||²_F = tr(K L) with K = a aᵀ, L = b bᵀ: take the cheaper side
    if p * q <= n * n:
        dot = float((b.T @ a).square().sum())
    else:
        dot = float(((a @ a.T) * (b @ b.T)).sum())
    if not debiased:
        return dot
    rows_a = a.square().sum(dim=1)  # diag(K)
    rows_b = b.square().sum(dim=1)
    norm_a, norm_b = float(rows_a.sum()), float(rows_b.sum())
    return (
        dot
        - n / (n - 2) * float(rows_a @ rows_b)
        + norm_a * norm_b / ((n - 1) * (n - 2))
    )


def _as_matrix(v: Array, name: str) -> Tensor:
    """A float64 (n, features) tensor on the input's device; 1-D input is n samples x 1."""
    t = torch.as_tensor(v).detach()
    if t.ndim == 0:
        raise ValueError(f"{name} must have a sample dimension, got a scalar")
    t = t.reshape(t.shape[0], -1) if t.ndim != 1 else t.reshape(-1, 1)
    return t.to(torch.float64)
