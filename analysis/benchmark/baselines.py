"""The benchmark's baselines: fit on a fold's train rows, predict its test rows.

- hyperparameters: gradient boosting on the grid axes (log) and the epoch: the control;
- stats_gbm: gradient boosting on per-layer statistics (Unterthiner et al.);
- stats_linear: a linear probe (ridge / logistic regression) on standardised statistics;
- npnfn: the permutation-equivariant network of analysis.benchmark.npnfn on NFN layers.
Every baseline but the control reads weights only. All are seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from analysis.benchmark.data import BenchmarkData, LayerBatch
from analysis.benchmark.npnfn import NPNFN
from analysis.benchmark.tasks import CLASSIFICATION, Task

NFN_EPOCHS = 100  # full-batch Adam steps: about a second per fold on a demo zoo (CPU)
NFN_LEARNING_RATE = 1e-2


@dataclass(frozen=True)
class Fold:
    """One fold of one task: row indices (into BenchmarkData) and the targets."""

    train: np.ndarray
    test: np.ndarray
    y: np.ndarray  # (rows,) every row's target

    @property
    def y_train(self) -> np.ndarray:
        return self.y[self.train]


Baseline = Callable[[BenchmarkData, Task, Fold, int], np.ndarray]


def _finite(x: np.ndarray) -> np.ndarray:
    """Diverged checkpoints' non-finite statistics as large finite values the models take."""
    return np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=1e30, neginf=-1e30)


def _boosting(task: Task, x: np.ndarray, fold: Fold, seed: int) -> np.ndarray:
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

    if task.kind == CLASSIFICATION:
        if len(np.unique(fold.y_train)) < 2:
            return np.full(len(fold.test), fold.y_train[0])
        model = GradientBoostingClassifier(random_state=seed)
    else:
        model = GradientBoostingRegressor(random_state=seed)
    return model.fit(x[fold.train], fold.y_train).predict(x[fold.test])


def _linear(task: Task, x: np.ndarray, fold: Fold, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task.kind == CLASSIFICATION:
        if len(np.unique(fold.y_train)) < 2:
            return np.full(len(fold.test), fold.y_train[0])
        model = LogisticRegression(max_iter=2000, random_state=seed)
    else:
        model = Ridge(alpha=1.0)
    pipeline = make_pipeline(StandardScaler(), model)
    return pipeline.fit(x[fold.train], fold.y_train).predict(x[fold.test])


def hyperparameters(data: BenchmarkData, task: Task, fold: Fold, seed: int) -> np.ndarray:
    """The control: gradient boosting on the hyperparameters (without the task's own)."""
    return _boosting(task, data.hyperparameters(task)[0], fold, seed)


def stats_gbm(data: BenchmarkData, task: Task, fold: Fold, seed: int) -> np.ndarray:
    """Gradient boosting on per-layer statistics of the weights."""
    return _boosting(task, _finite(data.statistics), fold, seed)


def stats_linear(data: BenchmarkData, task: Task, fold: Fold, seed: int) -> np.ndarray:
    """A linear probe on standardised per-layer statistics."""
    return _linear(task, _finite(data.statistics), fold, seed)


def npnfn(data: BenchmarkData, task: Task, fold: Fold, seed: int) -> np.ndarray:
    """The NP-NFN trained full batch (one step per layout) on the train rows' NFN layers,
    each layer scaled by its train rows' standard deviation; regression targets
    standardised, classes by cross-entropy. One torch thread: the tensors are tiny, and
    sums then run in one order on any machine (the same numbers everywhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _npnfn(data, task, fold, seed)
    finally:
        torch.set_num_threads(threads)


def _npnfn(data: BenchmarkData, task: Task, fold: Fold, seed: int) -> np.ndarray:
    groups = data.layer_groups
    train = np.zeros(data.rows, bool)
    train[fold.train] = True
    scales = _scales(groups, train)
    inputs = [(rows, [(w / sw, b / sb) for (w, b), (sw, sb) in zip(layers, scales)])
              for rows, layers in groups]
    classes = np.unique(fold.y_train)
    if task.kind == CLASSIFICATION:
        targets = torch.from_numpy(np.searchsorted(classes, fold.y))
        loss_of = torch.nn.functional.cross_entropy
        outputs = len(classes)
    else:
        mean, std = fold.y_train.mean(), fold.y_train.std() or 1.0
        targets = torch.from_numpy((fold.y - mean) / std).float()[:, None]
        loss_of = torch.nn.functional.mse_loss
        outputs = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NPNFN([w.shape[1] for w, _ in groups[0][1]], outputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=NFN_LEARNING_RATE)
    for _ in range(NFN_EPOCHS):
        optimizer.zero_grad()
        for rows, layers in inputs:
            chosen = train[rows]
            if chosen.any():
                index = torch.from_numpy(np.flatnonzero(chosen))
                batch = [(w[index], b[index]) for w, b in layers]
                loss = loss_of(model(batch), targets[rows[chosen]]) * chosen.sum() / train.sum()
                loss.backward()
        optimizer.step()
    predictions = np.empty(data.rows)
    with torch.no_grad():
        for rows, layers in inputs:
            out = model(layers)
            predictions[rows] = (classes[out.argmax(1).numpy()] if task.kind == CLASSIFICATION
                                 else out[:, 0].double().numpy() * std + mean)
    return predictions[fold.test]


def _scales(groups: list[tuple[np.ndarray, LayerBatch]], train: np.ndarray
            ) -> list[tuple[float, float]]:
    """Per layer, the standard deviation of its weights and of its biases over train rows of
    every layout (1 where it is zero)."""
    scales = []
    for layer in range(len(groups[0][1])):
        parts = [[layers[layer][k][train[rows]].reshape(-1) for rows, layers in groups]
                 for k in (0, 1)]
        scales.append(tuple(float(torch.cat(p).std()) or 1.0 for p in parts))
    return scales


BASELINES: dict[str, Baseline] = {"hyperparameters": hyperparameters, "stats_gbm": stats_gbm,
                                  "stats_linear": stats_linear, "npnfn": npnfn}
CONTROL = "hyperparameters"
