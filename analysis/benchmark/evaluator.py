"""Scores of any predictions: R² and Kendall τ (regression), balanced accuracy
(classification), per fold, and their mean with a 95 % confidence interval over folds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analysis.benchmark.tasks import CLASSIFICATION, REGRESSION

METRICS = {REGRESSION: ("r2", "kendall_tau"), CLASSIFICATION: ("balanced_accuracy",)}
PRIMARY = {REGRESSION: "r2", CLASSIFICATION: "balanced_accuracy"}


def score(kind: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The metrics of `kind` for one fold's predictions; NaN where a metric is undefined
    (R² and τ of a constant target, balanced accuracy of a single-class one)."""
    from scipy.stats import kendalltau

    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"predictions: shape {y_pred.shape} does not match the targets' "
                         f"{y_true.shape} (one value per test row)")
    if kind == CLASSIFICATION:
        return {"balanced_accuracy": balanced_accuracy(y_true, y_pred)}
    if kind != REGRESSION:
        raise ValueError(f"kind: {kind!r} is not allowed; expected {REGRESSION!r} or "
                         f"{CLASSIFICATION!r}")
    spread = ((y_true - y_true.mean()) ** 2).sum()
    if spread == 0:
        return {"r2": np.nan, "kendall_tau": np.nan}
    r2 = 1 - ((y_true - y_pred) ** 2).sum() / spread
    tau = kendalltau(y_true, y_pred).statistic if np.ptp(y_pred) > 0 else np.nan
    return {"r2": float(r2), "kendall_tau": float(tau)}


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes of `y_true` (sklearn's balanced_accuracy_score, the same
    number): a prediction of a class the fold lacks is a miss of its true class. NaN when
    `y_true` holds one class: folds of whole cells may hold a single phase, where a constant
    guess scores 0 or 1 and nothing is balanced."""
    classes = np.unique(y_true)
    if len(classes) < 2:
        return np.nan
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def interval(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % Student-t interval, folds) over the finite fold values;
    the half-width is NaN with fewer than two."""
    from scipy.stats import t

    finite = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if len(finite) == 0:
        return np.nan, np.nan, 0
    if len(finite) == 1:
        return float(finite[0]), np.nan, 1
    half = t.ppf(0.975, len(finite) - 1) * finite.std(ddof=1) / np.sqrt(len(finite))
    return float(finite.mean()), float(half), len(finite)


def evaluate(kind: str, folds: Sequence[tuple[np.ndarray, np.ndarray]]
             ) -> dict[str, tuple[float, float, int, list[float]]]:
    """Per metric: (mean, 95 % half-width, folds counted, per-fold values) over folds given
    as (y_true, y_pred) pairs."""
    per_fold = [score(kind, y_true, y_pred) for y_true, y_pred in folds]
    return {metric: (*interval([s[metric] for s in per_fold]), [s[metric] for s in per_fold])
            for metric in METRICS[kind]}
