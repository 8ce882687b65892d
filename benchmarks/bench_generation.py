"""Generation speed: stacked populations against one-by-one training and a Ray Tune trial per model.

Everything is measured in the same run on the same machine:
  1. width sweep: populations of MLPs on mnist1d, stacked (zoo.train.train_population)
     against one by one (zoo.train.train_model), one torch thread (the Ray worker setting);
     models/hour, measured and predicted speedup, and what the automatic choice picks;
  2. achieved training GFLOP/s against the machine's fp32 2048^2 matmul rate (1 and 2 threads);
  3. a grid of 32 mnist1d MLPs (width 16-128 x batch 16-128 x 2 seeds, a checkpoint and a full
     evaluation every epoch) made four ways: one Ray Tune trial per model (tune.grid_search, a
     checkpoint per epoch), `zoo generate` (landscape metrics off), Ray tasks running
     zoo.train.train_cell_models per cell, and a plain one-process loop.

    python -m benchmarks.bench_generation [--quick] [--skip-tune]

Prints tables and writes benchmarks/results/generation.json (generation-quick.json with --quick).
Wall time is what a user waits; CPU time (this process) is steadier when other jobs share the
cores, so both are reported.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (Timing, machine, matmul_rate, print_table, threads, timed,
                               write_results)
from zoo import datasets
from zoo.datasets.base import DataBundle
from zoo.spec import ZooSpec
from zoo.specfile import parse_spec
from zoo.train import (build_model, choose_stacking, derive_seed, make_optimizer, make_schedule,
                       model_shape, predicted_speedup, train_cell_models, train_model,
                       train_population)

METRICS_OFF = {"epochs": ["last"], "hessian": {"enabled": False},
               "similarity": {"enabled": False}, "curve": {"enabled": False}, "spectra": False}


def make_spec(widths: list[int], batches: list[int], seeds: int, epochs: int) -> ZooSpec:
    """MLPs (depth 2) on mnist1d, SGD + OneCycle, a checkpoint every epoch, metrics off."""
    return parse_spec({
        "name": "bench", "data": {"name": "mnist1d"},
        "architecture": {"family": "mlp", "args": {"depth": 2}},
        "training": {"epochs": epochs}, "seeds": seeds, "checkpoints": {"every": 1},
        "grid": {"load": {"axis": "width", "values": widths},
                 "temperature": {"axis": "batch_size", "values": batches}},
        "metrics": METRICS_OFF,
    })


def work_flops(spec: ZooSpec, bundle: DataBundle, models: int) -> float:
    """Matmul FLOPs of training and of every checkpoint's evaluation, for `models` models."""
    cell = spec.cells()[0]
    forward = model_shape(build_model(spec, cell, bundle, 0), bundle).flops
    kept = len(spec.kept_epochs)
    samples = 3 * bundle.num_train * spec.training.epochs + kept * (
        bundle.num_train + len(bundle.test[0]))
    return models * forward * samples


def warm_up(bundle: DataBundle) -> None:
    """Pay one-time costs (lazy imports in torch.optim, kernel set-up) before any clock runs."""
    spec = make_spec([4], [512], 2, 1)
    jobs = spec.jobs(bundle.fingerprint())
    train_population(spec, jobs, bundle)
    train_model(spec, jobs[0], bundle)


def sweep_row(bundle: DataBundle, width: int, batch: int, members: int, epochs: int,
              timed_singles: int) -> dict[str, Any]:
    """One population shape: stacked and one by one (a sample of members, scaled) timed."""
    spec = make_spec([width], [batch], members, epochs)
    jobs = spec.jobs(bundle.fingerprint())
    _, stacked = timed(lambda: train_population(spec, jobs, bundle))
    _, single = timed(lambda: [train_model(spec, job, bundle) for job in jobs[:timed_singles]])
    scale = members / timed_singles
    single = Timing(single.wall * scale, single.cpu * scale)
    chosen = choose_stacking(spec, jobs, bundle)
    flops = work_flops(spec, bundle, members)
    return {"width": width, "batch": batch, "members": members, "epochs": epochs,
            "single_models_timed": timed_singles,
            "stacked_models_per_hour": 3600 * members / stacked.wall,
            "single_models_per_hour": 3600 * members / single.wall,
            "speedup_wall": single.wall / stacked.wall, "speedup_cpu": single.cpu / stacked.cpu,
            "predicted_speedup": predicted_speedup(spec, jobs, bundle),
            "auto": "stacked" if chosen else "single",
            "auto_speedup_cpu": single.cpu / stacked.cpu if chosen else 1.0,
            "stacked_gflops": flops / stacked.cpu / 1e9, "single_gflops": flops / single.cpu / 1e9}


def tune_trial(config: dict[str, Any], bundle: DataBundle, spec: ZooSpec) -> None:
    """One model as a Tune trial: the same recipe, evaluation and checkpoint every epoch."""
    from ray import tune

    from zoo.objective import Objective

    torch.set_num_threads(1)
    cell = replace(spec.cells()[0], width=config["width"], batch_size=config["batch_size"])
    model = build_model(spec, cell, bundle, config["seed"])
    objective = Objective(bundle)
    optimizer = make_optimizer(spec.training, cell, list(model.parameters()))
    steps = math.ceil(bundle.num_train / cell.batch_size) * spec.training.epochs
    schedule = make_schedule(spec.training, optimizer, cell, steps)
    generator = torch.Generator().manual_seed(derive_seed(config["seed"], "data"))
    for _ in range(spec.training.epochs):
        model.train()
        for index in torch.randperm(bundle.num_train, generator=generator).split(cell.batch_size):
            loss = objective.loss(model, tuple(t[index] for t in bundle.train))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        metrics = {f"{split}_{k}": v for split in ("train", "test")
                   for k, v in objective.evaluate(model, split).items()}
        with tempfile.TemporaryDirectory() as folder:
            torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def run_tune(spec: ZooSpec, bundle: DataBundle, folder: Path) -> int:
    """Train the grid with one Tune trial per model, two at a time; returns the trial count."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(tune_trial, bundle=bundle, spec=spec),
                                    {"cpu": 1})
    space = {"width": tune.grid_search(list(spec.load_axis.values)),
             "batch_size": tune.grid_search(list(spec.temperature_axis.values)),
             "seed": tune.grid_search(list(spec.seeds))}
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=str(folder), name="tune",
                                                 verbose=0))
    return len(tuner.fit())


def _cells_task(spec: ZooSpec, jobs: list, bundle: DataBundle) -> list[str]:
    torch.set_num_threads(1)
    return [m.trained_by for m in train_cell_models(spec, jobs, bundle)]


def run_ray_cells(spec: ZooSpec, bundle: DataBundle) -> list[str]:
    """train_cell_models per cell as Ray tasks (1 CPU each); how each model was trained."""
    import ray

    task = ray.remote(num_cpus=1)(_cells_task)
    by_cell: dict[str, list] = {}
    for job in spec.jobs(bundle.fingerprint()):
        by_cell.setdefault(job.cell_id, []).append(job)
    bundle_ref = ray.put(bundle)
    results = ray.get([task.remote(spec, jobs, bundle_ref) for jobs in by_cell.values()])
    return [how for cell in results for how in cell]


def run_generate(spec: ZooSpec, folder: Path) -> dict[str, int]:
    """`zoo generate` into `folder` on two workers; models per trained_by value."""
    import pyarrow.parquet as pq

    from generators.generate import generate

    generate(spec, folder / "zoo", workers=2, formats=("parquet",), progress=False)
    rows = pq.read_table(folder / "zoo" / "data" / "models",
                         columns=["model_id", "trained_by"]).to_pydict()
    return dict(Counter(dict(zip(rows["model_id"], rows["trained_by"])).values()))


def grid_rows(bundle: DataBundle, spec: ZooSpec, with_tune: bool) -> list[dict[str, Any]]:
    """Each way of making the grid: wall seconds and models/hour."""
    from generators.executor import ensure_ray

    models = len(spec.jobs(bundle.fingerprint()))
    rows = []

    def add(way: str, run: Any, note: Any = None) -> None:
        result, timing = timed(run)
        rows.append({"way": way, "models": models, "seconds": timing.wall,
                     "models_per_hour": 3600 * models / timing.wall,
                     "note": note(result) if note else result})

    with threads(1):
        add("plain loop, 1 process", lambda: [train_model(spec, j, bundle)
                                              for j in spec.jobs(bundle.fingerprint())],
            lambda models: dict(Counter(m.trained_by for m in models)))
    ensure_ray(num_cpus=2)
    run_ray_cells(make_spec([4], [512], 4, 1), bundle)  # start both workers before any clock
    with tempfile.TemporaryDirectory() as folder:
        add("zoo generate, 2 workers", lambda: run_generate(spec, Path(folder)))
        add("ray + train_cell_models, 2 workers", lambda: run_ray_cells(spec, bundle),
            lambda how: dict(Counter(how)))
        if with_tune:
            add("ray tune, trial per model", lambda: run_tune(spec, bundle, Path(folder)),
                lambda trials: f"{trials} trials")
    tune_rate = {r["way"]: r["models_per_hour"] for r in rows}.get("ray tune, trial per model")
    for row in rows:
        row["vs_tune"] = row["models_per_hour"] / tune_rate if tune_rate else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller sweep and grid (~1 min)")
    parser.add_argument("--skip-tune", action="store_true", help="leave out the Ray Tune way")
    options = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    bundle = datasets.load("mnist1d")
    widths = [16, 128] if options.quick else [16, 32, 64, 128, 256]
    batches = [32] if options.quick else [16, 64]
    one, two = matmul_rate(1), matmul_rate(2)
    rates = {"matmul_gflops_1_thread": one["wall"], "matmul_gflops_1_thread_cpu": one["cpu"],
             "matmul_gflops_2_threads": two["wall"]}
    with threads(1):
        warm_up(bundle)
        sweep = [sweep_row(bundle, w, b, 32, 1 if options.quick else 2, 4 if options.quick else 8)
                 for w in widths for b in batches]
    for row in sweep:
        row["stacked_fraction_of_matmul"] = row["stacked_gflops"] / one["cpu"]
    print(f"fp32 matmul 2048^2: {one['wall']:.0f} GFLOP/s on 1 thread ({one['cpu']:.0f} by CPU "
          f"time), {two['wall']:.0f} on 2; training GFLOP/s below are by CPU time")
    print_table(sweep, ["width", "batch", "members", "stacked_models_per_hour",
                        "single_models_per_hour", "speedup_wall", "speedup_cpu",
                        "predicted_speedup", "auto", "stacked_gflops", "single_gflops",
                        "stacked_fraction_of_matmul"])
    grid_spec = (make_spec([16, 64], [32, 128], 2, 2) if options.quick
                 else make_spec([16, 32, 64, 128], [16, 32, 64, 128], 2, 10))
    grid = grid_rows(bundle, grid_spec, not options.skip_tune)
    print_table(grid, ["way", "models", "seconds", "models_per_hour", "vs_tune", "note"])
    name = "generation-quick" if options.quick else "generation"
    path = write_results(name, {"machine": machine(), "quick": options.quick, **rates,
                                "sweep": sweep, "grid": grid, "grid_spec": grid_spec.to_dict()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
