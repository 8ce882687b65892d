"""Pruning study: global magnitude pruning of every model's last checkpoint at several densities.

The weights of all Linear and convolution layers compete in one pool: the `density` fraction
of largest magnitudes is kept, the rest set to zero (biases, normalisation and embedding
parameters are untouched). No fine-tuning and no BatchNorm re-estimation afterwards, so
density 1 reproduces the recorded test accuracy exactly.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from analysis.studies.common import MODEL_KEYS, StudyZoo, evaluate, progress, score_name
from analysis.studies.figures import by_phase, phase_curves
from zoo.errors import ZooError

DENSITIES = (1.0, 0.5, 0.2, 0.1)
PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)


def prunable_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensors that compete for the kept fraction (Linear and conv layers)."""
    return [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]


def magnitude_prune(model: nn.Module, density: float) -> tuple[nn.Module, float]:
    """A copy of `model` keeping the round(density · n) largest-magnitude prunable weights.

    Returns:
        the pruned copy in eval mode and the fraction of prunable weights it keeps.
    """
    pruned = copy.deepcopy(model).eval()
    weights = prunable_weights(pruned)
    total = sum(w.numel() for w in weights)
    keep = round(density * total)
    if keep >= total:
        return pruned, 1.0
    magnitudes = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    mask = torch.zeros(total, dtype=torch.bool)
    mask[torch.topk(magnitudes, keep, sorted=False).indices] = True
    with torch.no_grad():
        offset = 0
        for w in weights:
            w.mul_(mask[offset:offset + w.numel()].view_as(w))
            offset += w.numel()
    return pruned, keep / total


def check_densities(densities: Sequence[float]) -> tuple[float, ...]:
    """Densities as floats in (0, 1], largest first; ZooError names a bad value."""
    if not densities:
        raise ZooError("study prune: densities is empty; expected numbers in (0, 1]")
    for value in densities:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not 0 < value <= 1:
            raise ZooError(f"study prune: density {value!r} is not allowed; expected a "
                           f"number in (0, 1]")
    return tuple(sorted({float(d) for d in densities}, reverse=True))


def model_rows(zoo: StudyZoo, index: int, densities: Sequence[float]) -> list[dict[str, Any]]:
    """One row per density for the checkpoint of row `index`."""
    model = zoo.models([index])[0]
    objective = zoo.objective(index)
    recorded = zoo.row(index)
    score = score_name(zoo.task)
    rows = []
    for density in densities:
        pruned, kept = magnitude_prune(model, density)
        row = {**zoo.identity(index), **zoo.identity(index, MODEL_KEYS), "density": density,
               "kept_fraction": kept, **evaluate(pruned, objective),
               f"dense_test_{score}": recorded[f"test_{score}"]}
        rows.append(row)
    return rows


def measure(zoo: StudyZoo, densities: Sequence[float] = DENSITIES,
            show_progress: bool = True) -> list[dict[str, Any]]:
    """Rows (model, density) for every model's last stored checkpoint, if finite."""
    densities = check_densities(densities)
    rows: list[dict[str, Any]] = []
    cells = zoo.cells()
    for indices in progress(cells, "prune", len(cells), show_progress):
        last: dict[str, int] = {}
        for index in indices:  # sorted by epoch: the last one wins
            last[str(zoo.columns["model_id"][index])] = index
        for index in last.values():
            if zoo.columns["finite"][index]:
                rows += model_rows(zoo, index, densities)
    return rows


def figure(rows: Sequence[dict[str, Any]], score: str, path: Path) -> Path:
    """Mean test score against density, one line per phase."""
    scale = 100.0 if score == "accuracy" else 1.0
    densities = sorted({r["density"] for r in rows}, reverse=True)
    curves: dict[str, list[list[float]]] = {}
    for number, density in enumerate(densities):
        groups = by_phase([r for r in rows if r["density"] == density],
                          lambda r: None if r[f"test_{score}"] is None
                          else scale * r[f"test_{score}"])
        for phase, values in groups.items():
            curves.setdefault(phase, [[] for _ in densities])[number] = values
    unit = "%" if score == "accuracy" else "relative L2"
    return phase_curves(densities, curves, "density (fraction of weights kept)",
                        f"test {score} ({unit})", "Global magnitude pruning", path)
