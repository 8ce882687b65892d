"""Fit the stacking cost model (zoo.train.cost.COST) from measured optimizer steps.

Times one training step of single models (zoo.train.steps.EagerStep, the step train_model
takes) and of stacked populations (zoo.train.stacked.population_step) on mnist1d at one torch
thread, the Ray worker setting, over a spread of widths, depths and batch sizes; fits
seconds = overhead + per_tensor x parameter tensors + FLOPs / rate by non-negative least
squares; prints the constants to paste into COST and writes
benchmarks/results/calibration.json. The zoo never runs this: its choice must not depend on a
clock.

    python -m benchmarks.calibrate_stacking [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls

from benchmarks.common import machine, print_table, threads, write_results
from zoo import datasets
from zoo.datasets.base import DataBundle
from zoo.objective import Objective
from zoo.spec import ZooSpec
from zoo.specfile import parse_spec
from zoo.train import COST, EagerStep, StepCost, build_model, model_shape
from zoo.train.cost import step_seconds
from zoo.train.optimizers import PopulationOptimizer, schedule_table
from zoo.train.stacked import Population, population_step

SECONDS_PER_POINT = 0.3  # measured time per shape and way (the best of two halves is kept)


def make_spec(family: str, args: dict, width: int, batch: int, members: int) -> ZooSpec:
    return parse_spec({
        "name": "calibration", "data": {"name": "mnist1d"},
        "architecture": {"family": family, "width": width, "args": args},
        "training": {"epochs": 1, "batch_size": batch}, "seeds": members,
        "grid": {"load": {"axis": "width", "values": [width]},
                 "temperature": {"axis": "batch_size", "values": [batch]}},
    })


def best_step(step: Any, steps: int) -> float:
    """Best CPU seconds per call of `step` over two runs of `steps` calls (after a warm-up)."""
    step(0)
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        for index in range(steps):
            step(index)
        best = min(best, (time.process_time() - start) / steps)
    return best


def single_seconds(spec: ZooSpec, bundle: DataBundle, steps: int) -> float:
    """One model's step as train_model takes it (EagerStep): gather, loss, its finiteness
    check (a sync), backward, optimizer, schedule."""
    job = spec.jobs("calibration")[0]
    model = build_model(spec, job.cell, bundle, job.seed)
    step = EagerStep(model, Objective(bundle), spec.training, job.cell, 4 * steps + 8)
    order = torch.randperm(bundle.num_train).split(job.cell.batch_size)

    def call(index: int) -> None:
        step(tuple(t[order[index % len(order)]] for t in bundle.train))

    seconds = best_step(call, steps)
    assert not step.diverged()  # a step with a non-finite loss skips its update: not timed
    return seconds


def stacked_seconds(spec: ZooSpec, bundle: DataBundle, steps: int) -> float:
    """One population step as train_population takes it."""
    jobs = spec.jobs("calibration")
    population = Population([build_model(spec, job.cell, bundle, job.seed) for job in jobs])
    like = next(iter(population.params.values()))
    table = schedule_table(spec.training, jobs, 4 * steps + 8, like)
    optimizer = PopulationOptimizer(spec.training.optimizer, population.params, table)
    active = torch.ones(len(jobs), dtype=torch.bool)
    batch_size = jobs[0].cell.batch_size
    orders = torch.stack([torch.randperm(bundle.num_train) for _ in jobs]).split(batch_size, 1)

    def step(index: int) -> None:
        batch = [t[orders[index % len(orders)]] for t in bundle.train]
        population_step(population, optimizer, batch, active, index)

    return best_step(step, steps)


def measure(bundle: DataBundle, grid: list[tuple], stacked: bool) -> list[dict[str, Any]]:
    """One row per shape (family, args, width, batch, members) with seconds per step."""
    rows = []
    for family, args, width, batch, members in grid:
        members = members if stacked else 1
        spec = make_spec(family, args, width, batch, members)
        shape = model_shape(build_model(spec, spec.jobs("calibration")[0].cell, bundle, 0),
                            bundle)
        steps = max(3, int(SECONDS_PER_POINT / 2 / step_seconds(shape, batch, members)))
        run = stacked_seconds if stacked else single_seconds
        rows.append({"path": shape.path, "way": "stacked" if stacked else "single",
                     "family": family, "args": args, "width": width, "batch": batch,
                     "members": members, "modules": shape.modules,
                     "values": members * shape.values,
                     "activations": members * batch * shape.activations,
                     "flops": 3 * members * shape.flops * batch,
                     "seconds": run(spec, bundle, steps)})
    return rows


def fit(rows: list[dict[str, Any]]) -> StepCost:
    """The StepCost minimising relative error over `rows`, every coefficient >= 0."""
    design = np.array([[1.0, r["modules"], r["values"], r["activations"], r["flops"]]
                       for r in rows])
    seconds = np.array([r["seconds"] for r in rows])
    solution, _ = nnls(design / seconds[:, None], np.ones(len(rows)))
    *linear, inverse_rate = solution
    return StepCost(*linear, 1.0 / max(inverse_rate, 1e-15))


def shapes(quick: bool) -> dict[str, list[tuple]]:
    """Calibration shapes per path: MLPs for batched matmuls, CNNs for vmap."""
    widths = (8, 128, 512) if quick else (8, 32, 128, 256, 512)
    mlp = [("mlp", {"depth": d}, w, b, 32) for w in widths for b in (16, 128) for d in (1, 3)]
    channels = (4, 32) if quick else (4, 8, 16, 32, 64)
    cnn = [("cnn", {"depth": 2}, w, b, 16) for w in channels for b in (16, 128)]
    return {"linear": mlp, "vmap": cnn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes (about a minute)")
    options = parser.parse_args()
    bundle = datasets.load("mnist1d")
    rows, constants = [], {}
    with threads(1):
        for path, grid in shapes(options.quick).items():
            for stacked in (False, True):
                measured = measure(bundle, grid, stacked)
                cost = constants[path, measured[0]["way"]] = fit(measured)
                for row in measured:
                    features = [row[k] for k in ("modules", "values", "activations", "flops")]
                    row["fitted"] = cost.seconds(*features)
                    row["in_use"] = COST[path, row["way"]].seconds(*features)
                rows += measured
    print_table(rows, ["path", "way", "family", "width", "batch", "members", "modules",
                       "values", "activations", "flops", "seconds", "fitted", "in_use"])
    print("COST = {")
    for (path, way), cost in constants.items():
        numbers = ", ".join(f"{v:.3g}" for v in vars(cost).values())
        print(f'    ("{path}", "{way}"): StepCost({numbers}),')
    print("}")
    fitted = {f"{path}/{way}": vars(cost) for (path, way), cost in constants.items()}
    path = write_results("calibration", {"machine": machine(), "rows": rows, "fitted": fitted})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
