"""Fine-tuning study: every model's last checkpoint trained a few epochs on a related data set.

Transfer targets (same input shape and classes, so the model is reused as it is):
- mnist1d -> "mnist1d-shifted": mnist1d made offline by the mnist1d package with new samples
  (seed 1) and twice the correlated noise (0.5) and shear (1.5) of the default arguments.
- digits -> "digits-transposed": scikit-learn's 8x8 digits transposed (x and y swapped), on a
  new stratified 75/25 split (random_state 1).
The recipe is fixed: SGD with momentum at a constant learning rate, every parameter trained,
data order drawn from a seed derived from the model's seed.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from analysis.studies.common import MODEL_KEYS, StudyZoo, check_integer, evaluate, progress
from analysis.studies.figures import by_phase, phase_boxes
from zoo import datasets
from zoo.datasets.base import DataBundle
from zoo.errors import ZooError
from zoo.objective import Objective
from zoo.train import derive_seed

@dataclass(frozen=True)
class Recipe:
    """How each checkpoint is fine-tuned."""

    epochs: int = 2
    learning_rate: float = 0.01
    momentum: float = 0.9
    batch_size: int = 64


TARGETS = {"mnist1d": "mnist1d-shifted", "digits": "digits-transposed"}  # in zoo.datasets


def transfer_data(source: str, task: str) -> DataBundle:
    """The transfer target of a zoo trained on `source`; ZooError when there is none."""
    if task != "classification" or source not in TARGETS:
        raise ZooError(f"study finetune: no transfer target for a {task} zoo on {source!r}; "
                       f"finetune supports classification zoos on {', '.join(TARGETS)}")
    return datasets.load(TARGETS[source])


def finetune(model: nn.Module, target: DataBundle, recipe: Recipe, seed: int) -> nn.Module:
    """A copy of `model` trained `recipe.epochs` epochs on target's train split, eval mode."""
    tuned = copy.deepcopy(model)
    optimizer = torch.optim.SGD(tuned.parameters(), lr=recipe.learning_rate,
                                momentum=recipe.momentum)
    objective = Objective(target)
    generator = torch.Generator().manual_seed(derive_seed(seed, "finetune"))
    inputs, targets = target.train
    for _ in range(recipe.epochs):
        tuned.train()
        for index in torch.randperm(target.num_train, generator=generator).split(
                recipe.batch_size):
            loss = objective.loss(tuned, (inputs[index], targets[index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return tuned.eval()


def model_row(zoo: StudyZoo, index: int, target: DataBundle, recipe: Recipe) -> dict[str, Any]:
    """Target test metrics of row `index`'s checkpoint before and after fine-tuning."""
    model = zoo.models([index])[0]
    objective = Objective(target)
    row = zoo.row(index)
    before = evaluate(model, objective)
    after = evaluate(finetune(model, target, recipe, row["seed"]), objective)
    return {**zoo.identity(index), **zoo.identity(index, MODEL_KEYS), "target": target.name,
            **{f"finetune_{k}": v for k, v in asdict(recipe).items()},
            "source_test_accuracy": row["test_accuracy"],
            **{f"before_{k}": v for k, v in before.items()},
            **{f"after_{k}": v for k, v in after.items()},
            "accuracy_gain": after["test_accuracy"] - before["test_accuracy"]}


def measure(zoo: StudyZoo, epochs: int = 2, show_progress: bool = True) -> list[dict[str, Any]]:
    """One row per model: its last stored checkpoint, if finite, fine-tuned `epochs` epochs."""
    recipe = Recipe(epochs=check_integer("finetune", "epochs", epochs))
    target = transfer_data(zoo.spec.data.name, zoo.task)
    rows = []
    cells = zoo.cells()
    for indices in progress(cells, "finetune", len(cells), show_progress):
        last: dict[str, int] = {}
        for index in indices:  # sorted by epoch: the last one wins
            last[str(zoo.columns["model_id"][index])] = index
        rows += [model_row(zoo, i, target, recipe) for i in last.values()
                 if zoo.columns["finite"][i]]
    return rows


def figure(rows: Sequence[dict[str, Any]], score: str, path: Path) -> Path:
    """Target test `score` (accuracy: finetune takes classification zoos) per phase, before and
    after fine-tuning."""
    target = rows[0]["target"] if rows else "target"
    epochs = rows[0]["finetune_epochs"] if rows else 0
    series = {name: by_phase(rows, lambda r, k=key: 100.0 * r[k]) for name, key in
              (("before (zero-shot)", f"before_test_{score}"),
               (f"after {epochs} epochs", f"after_test_{score}"))}
    return phase_boxes(series, f"{target} test {score} (%)",
                       f"Fine-tuning on {target}", path)
