"""Averaging study: a model's last k checkpoints, and a cell's seeds after weight matching.

Epoch average: the uniform average of the last `last` finite stored checkpoints of one model.
Seed average: the cell's finite models at its last stored epoch, each aligned to the first
seed's by Git Re-Basin weight matching (MLP, CNN, ResNet; other families are averaged as they
are, `aligned` false), then averaged. BatchNorm statistics of every average of two or more
checkpoints are re-estimated on fixed train batches. Each average is compared with the mean
recorded test accuracy of the checkpoints that went into it (PINNs: the relative L2 error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from analysis.studies.common import (MODEL_KEYS, StudyZoo, check_integer, evaluate,
                                       has_batchnorm, progress, score_name)
from analysis.studies.figures import by_phase, phase_boxes
from loaders.averaging import align, average, recondition_batchnorm
from zoo.architectures.permutations import RESIDUAL, SEQUENTIAL
from zoo.objective import Objective
from zoo.train import derive_seed

ALIGN_SEED = 0  # weight matching visits permutation groups in an order drawn from this seed


def averaged_metrics(models: Sequence[nn.Module], objective: Objective,
                     batches: Sequence[Any]) -> dict[str, Any]:
    """Test metrics of the uniform average of `models` (BatchNorm re-estimated when 2 or more).

    Returns:
        test_loss, test_accuracy, test_error of the average, and batchnorm_reconditioned.
    """
    model = average(models)
    reconditioned = len(models) > 1 and has_batchnorm(model)
    if reconditioned:
        recondition_batchnorm(model, batches)
    return {**evaluate(model, objective), "batchnorm_reconditioned": reconditioned}


def _comparison(row: dict[str, Any], members: Sequence[dict[str, Any]], score: str) -> None:
    """Add the members' mean recorded score and the average's change against it (in place)."""
    single = [m[f"test_{score}"] for m in members]
    row[f"single_test_{score}_mean"] = float(np.mean(single))
    averaged = row[f"test_{score}"]
    row[f"{score}_change"] = None if averaged is None else averaged - row[
        f"single_test_{score}_mean"]


def epoch_rows(zoo: StudyZoo, indices: Sequence[int], last: int,
               batches: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per model of a cell: the average of its last `last` finite checkpoints."""
    by_model: dict[str, list[int]] = {}
    for index in indices:
        if zoo.columns["finite"][index]:
            by_model.setdefault(str(zoo.columns["model_id"][index]), []).append(index)
    rows = []
    for chosen in by_model.values():
        chosen = chosen[-last:]  # indices come sorted by epoch
        members = [zoo.row(i) for i in chosen]
        row = {"kind": "epoch", **zoo.identity(chosen[-1]),
               **zoo.identity(chosen[-1], MODEL_KEYS), "epochs": [m["epoch"] for m in members],
               "members": len(chosen), "aligned": None,
               **averaged_metrics(zoo.models(chosen), zoo.objective(chosen[-1]), batches)}
        _comparison(row, members, score_name(zoo.task))
        rows.append(row)
    return rows


def seed_row(zoo: StudyZoo, indices: Sequence[int],
             batches: Sequence[Any]) -> dict[str, Any] | None:
    """The cell's seeds at its last stored epoch, aligned to the first and averaged."""
    epoch = max(int(zoo.columns["epoch"][i]) for i in indices)
    chosen = [i for i in indices if zoo.columns["epoch"][i] == epoch and zoo.columns["finite"][i]]
    if not chosen:
        return None
    models = zoo.models(chosen)
    objective = zoo.objective(chosen[0])
    aligned = zoo.spec.architecture.family in SEQUENTIAL + RESIDUAL
    matched = list(models)
    if aligned:
        generator = torch.Generator().manual_seed(derive_seed(ALIGN_SEED, "align"))
        matched = [models[0]] + [align(models[0], m, generator=generator) for m in models[1:]]
    row = {"kind": "seed", **zoo.identity(chosen[0]), "model_id": None, "seed": None,
           "epoch": epoch, "epochs": [epoch], "members": len(chosen), "aligned": aligned,
           **averaged_metrics(matched, objective, batches)}
    score = score_name(zoo.task)
    row[f"unaligned_test_{score}"] = averaged_metrics(models, objective, batches)[f"test_{score}"]
    _comparison(row, [zoo.row(i) for i in chosen], score)
    return row


def measure(zoo: StudyZoo, last: int = 5, show_progress: bool = True) -> list[dict[str, Any]]:
    """Epoch-average rows (one per model) and seed-average rows (one per cell)."""
    check_integer("averaging", "last", last)
    batches = zoo.batchnorm_batches()
    rows: list[dict[str, Any]] = []
    cells = zoo.cells()
    for indices in progress(cells, "averaging", len(cells), show_progress):
        rows += epoch_rows(zoo, indices, last, batches)
        seed = seed_row(zoo, indices, batches)
        if seed is not None:
            rows.append(seed)
    return rows


def figure(rows: Sequence[dict[str, Any]], score: str, path: Path) -> Path:
    """Box plots of the change against the mean single model, per phase and kind."""
    scale = 100.0 if score == "accuracy" else 1.0

    def change(kind: str) -> dict[str, list[float]]:
        return by_phase([r for r in rows if r["kind"] == kind],
                        lambda r: None if r[f"{score}_change"] is None
                        else scale * r[f"{score}_change"])

    unit = "points" if score == "accuracy" else "relative L2 error"
    return phase_boxes({"epoch average": change("epoch"), "seed average (aligned)":
                        change("seed")}, f"test {score} change ({unit})",
                       f"Averaged model − mean single model ({score})", path, zero_line=True)
