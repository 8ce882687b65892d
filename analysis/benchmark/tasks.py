"""The benchmark's tasks: what is predicted from a checkpoint, and from which rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loaders.store import Columns

REGRESSION, CLASSIFICATION = "regression", "classification"
AXES = ("load", "temperature")  # the grid's two axes: hyperparameter tasks and control features


@dataclass(frozen=True)
class Task:
    """One prediction target.

    name: the task's name in tables (an axis task is named after its axis, e.g. "width").
    column: the metadata column predicted ("phase_index" for phase).
    kind: "regression" (scored by R² and Kendall τ) or "classification" (balanced accuracy).
    log: the target is log(column) (grid axes with positive values).
    axis: "load" or "temperature" for a hyperparameter task (the control then leaves that
        axis out of its features), None otherwise.
    """

    name: str
    column: str
    kind: str
    log: bool = False
    axis: str | None = None

    def target(self, columns: Columns) -> np.ndarray:
        """(rows,) float64 target of every row; NaN where the row has none."""
        values = np.asarray(columns[self.column], dtype=np.float64)
        return np.log(values) if self.log else values


def zoo_tasks(columns: Columns) -> list[Task]:
    """The tasks a zoo supports: test accuracy and generalisation gap (where finite), phase
    (when two or more phases are labelled) and one task per grid axis with two or more values."""
    tasks = [Task(name, name, REGRESSION) for name in ("test_accuracy", "generalization_gap")
             if np.isfinite(np.asarray(columns[name], dtype=np.float64)).sum() >= 2]
    phases = np.asarray(columns["phase_index"], dtype=np.float64)
    if len(np.unique(phases[np.isfinite(phases)])) >= 2:
        tasks.append(Task("phase", "phase_index", CLASSIFICATION))
    for axis in AXES:
        values = np.asarray(columns[f"{axis}_value"], dtype=np.float64)
        if len(np.unique(values)) >= 2:
            tasks.append(Task(str(columns[f"{axis}_axis"][0]), f"{axis}_value", REGRESSION,
                              log=bool((values > 0).all()), axis=axis))
    return tasks
