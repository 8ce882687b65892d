"""The benchmark of one zoo: its tasks, stored splits, folds, scoring, and the baselines run."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from analysis.benchmark import report
from analysis.benchmark.baselines import BASELINES, Fold
from analysis.benchmark.data import BenchmarkData
from analysis.benchmark.evaluator import evaluate
from analysis.benchmark.splits import make_schemes, splits_document, write_splits
from analysis.benchmark.tasks import Task, zoo_tasks
from zoo.errors import ZooError
from zoo.folder.names import confined, write_atomically

OUTPUT = "benchmark"


class Benchmark:
    """A zoo's benchmark protocol: tasks, split schemes (seeded) and the evaluator.

    Use it OGB-style: for each fold of `folds(task, scheme)`, fit on `fold.train` rows and
    predict `fold.test` rows (indices into `data`'s rows: every stored checkpoint, in table
    order); `evaluate(task, scheme, predictions)` scores them.
    """

    def __init__(self, root: str | Path, seed: int = 0) -> None:
        self.root, self.seed = Path(root), seed
        self.data = BenchmarkData(self.root)
        self.schemes, self.skipped = make_schemes(self.data.columns, seed)
        self.tasks = {t.name: t for t in zoo_tasks(self.data.columns)}
        if not self.schemes:
            raise ZooError(f"{self.root}: no split scheme fits this zoo: "
                           f"{'; '.join(f'{k}: {v}' for k, v in self.skipped.items())}")

    def write_splits(self) -> Path:
        """Store the splits as benchmark/splits.json in the zoo folder."""
        return write_splits(self.root, splits_document(self.schemes, self.skipped, self.seed))

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise ValueError(f"task: {name!r} is not a task of this zoo; expected one of "
                             f"{', '.join(self.tasks)}")
        return self.tasks[name]

    def folds(self, task: str, scheme: str) -> list[Fold]:
        """The folds of `scheme` for `task`: rows without a target are left out; a fold
        with no train or no test rows is dropped."""
        if scheme not in self.schemes:
            raise ValueError(f"scheme: {scheme!r} is not a scheme of this zoo; expected one "
                             f"of {', '.join(self.schemes)}")
        y = self.task(task).target(self.data.columns)
        valid = np.isfinite(y)
        folds = []
        for number in range(len(self.schemes[scheme].folds)):
            test = self.schemes[scheme].test_mask(self.data.columns, number)
            train, test = np.flatnonzero(~test & valid), np.flatnonzero(test & valid)
            if len(train) and len(test):
                folds.append(Fold(train, test, y))
        return folds

    def evaluate(self, task: str, scheme: str, predictions: Sequence[np.ndarray]
                 ) -> dict[str, tuple[float, float, int, list[float]]]:
        """Per metric (mean, 95 % half-width, folds, per-fold values) of one prediction
        array per fold (test rows, in fold order)."""
        folds = self.folds(task, scheme)
        if len(predictions) != len(folds):
            raise ValueError(f"predictions: {len(predictions)} arrays for {len(folds)} folds")
        return evaluate(self.task(task).kind, [(f.y[f.test], np.asarray(p))
                                               for f, p in zip(folds, predictions)])


@dataclass(frozen=True)
class BenchmarkResult:
    rows: list[dict[str, Any]]
    margins: list[dict[str, Any]]
    paths: list[Path]


def run_benchmark(root: str | Path, *, seed: int = 0, baselines: Sequence[str] | None = None,
                  log: TextIO | None = sys.stderr) -> BenchmarkResult:
    """Run the baselines on every task and scheme of the zoo in `root`; write
    root/benchmark/{splits.json, results.parquet, results.md, results.png}."""
    names = list(BASELINES) if baselines is None else list(baselines)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ZooError(f"baselines: {unknown} are not baselines; expected some of "
                       f"{', '.join(BASELINES)}")
    bench = Benchmark(root, seed)
    paths = [bench.write_splits()]
    rows, skipped = [], dict(bench.skipped)
    for scheme in bench.schemes:
        for task in bench.tasks.values():
            if task.axis == "load" and scheme == "extrapolation":
                continue  # the held-out values are never seen in training
            folds = bench.folds(task.name, scheme)
            for name in names:
                try:
                    predictions = [BASELINES[name](bench.data, task, f, seed) for f in folds]
                except ValueError as error:  # a baseline this zoo's layouts cannot feed
                    skipped[name] = str(error)
                    continue
                scores = bench.evaluate(task.name, scheme, predictions)
                for metric, (mean, half, counted, values) in scores.items():
                    rows.append({"task": task.name, "kind": task.kind, "scheme": scheme,
                                 "baseline": name, "metric": metric, "mean": mean,
                                 "ci95": half, "folds": counted, "fold_values": values,
                                 "seed": seed})
            if log is not None:
                print(f"benchmark: {scheme} / {task.name} done", file=log)
    folder = confined(bench.root, OUTPUT)
    used = [n for n in names if any(r["baseline"] == n for r in rows)]
    text = report.markdown(rows, skipped, used)
    paths.append(report.write_table(rows, folder / "results.parquet"))
    markdown = folder / "results.md"
    write_atomically(markdown, text.encode())
    paths += [markdown, report.figure(rows, used, folder / "results.png")]
    return BenchmarkResult(rows, report.margins(rows), paths)
