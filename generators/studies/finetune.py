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
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from generators.studies.common import MODEL_KEYS, StudyZoo, check_integer, evaluate, progress
from generators.studies.figures import by_phase, phase_boxes
from zoo.datasets.base import DataBundle
from zoo.datasets.builtin import DIGITS_INFO, MNIST1D_INFO
from zoo.errors import ZooError
from zoo.tasks import Objective
from zoo.training import derive_seed

MNIST1D_SHIFT = {"seed": 1, "corr_noise_scale": 0.5, "shear_scale": 1.5}


@dataclass(frozen=True)
class Recipe:
    """How each checkpoint is fine-tuned."""

    epochs: int = 2
    learning_rate: float = 0.01
    momentum: float = 0.9
    batch_size: int = 64


def shifted_mnist1d() -> DataBundle:
    """mnist1d with new samples, more correlated noise and more shear (MNIST1D_SHIFT)."""
    import mnist1d.data

    arguments = mnist1d.data.get_dataset_args(as_dict=True)
    arguments.update(MNIST1D_SHIFT)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:  # make_dataset seeds the global generators; leave them as they were
        data = mnist1d.data.make_dataset(mnist1d.data.ObjectView(arguments))
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

    def pair(x: str, y: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(np.ascontiguousarray(data[x], dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(data[y], dtype=np.int64)))

    return DataBundle("mnist1d-shifted", MNIST1D_INFO, pair("x", "y"), pair("x_test", "y_test"))


def transposed_digits() -> DataBundle:
    """8x8 digits with rows and columns swapped, on a new stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.ascontiguousarray(digits.images.transpose(0, 2, 1), dtype=np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.25, random_state=1,
        stratify=digits.target)

    def pair(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(x).reshape(-1, 1, 8, 8), torch.from_numpy(y)

    from zoo import datasets
    from zoo.datasets.normalize import normalize_images

    bundle = DataBundle("digits-transposed", DIGITS_INFO, pair(x_train, y_train),
                        pair(x_test, y_test))
    # the zoo's models saw digits normalised with digits' train statistics: so does the target
    return normalize_images(bundle, datasets.load("digits").normalization)


TARGETS: dict[str, Callable[[], DataBundle]] = {"mnist1d": shifted_mnist1d,
                                                "digits": transposed_digits}


def transfer_data(source: str, task: str) -> DataBundle:
    """The transfer target of a zoo trained on `source`; ZooError when there is none."""
    if task != "classification" or source not in TARGETS:
        raise ZooError(f"study finetune: no transfer target for a {task} zoo on {source!r}; "
                       f"finetune supports classification zoos on {', '.join(TARGETS)}")
    return TARGETS[source]()


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
