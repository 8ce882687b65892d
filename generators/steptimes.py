"""Timers for `zoo price`: one model's eager and graphed steps, a population's step, an
evaluation and a checkpoint write, each the mean over calls after untimed warm-up calls."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from zoo.datasets.base import DataBundle
from zoo.errors import ZooError
from zoo.spec import ModelJob, ZooSpec

WARMUP_STEPS = 5  # untimed steps first: allocator, cuDNN autotuning, graph capture
CHECKPOINT_REPEATS = 3


@dataclass(frozen=True)
class ShapeTiming:
    """Seconds measured for one (width, batch size): one model's step eager (the published
    way) and ours, evaluation per sample, one checkpoint written ours and published."""

    width: int
    batch_size: int
    parameters: int
    eager_step: float
    step: float
    evaluation_per_sample: float
    checkpoint: float
    checkpoint_published: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[int], Any], steps: int, device: torch.device,
               warmup: int = WARMUP_STEPS) -> float:
    """Mean seconds of `call(i)` over `steps` calls after `warmup` untimed ones."""
    for i in range(warmup):
        call(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        call(i)
    _sync(device)
    return (time.perf_counter() - start) / steps


def _indexes(rows: int, batch: int, count: int, device: torch.device,
             members: int = 0) -> list[torch.Tensor]:
    """`count` random batches of row indexes on `device`, (batch,) or (members, batch)."""
    generator = torch.Generator().manual_seed(1)

    def draw() -> torch.Tensor:
        return torch.randint(rows, (batch,), generator=generator)

    out = [torch.stack([draw() for _ in range(members)]) if members else draw()
           for _ in range(count)]
    return [index.to(device) for index in out]


def _batches(data: DataBundle, augmentation: str, batch_size: int, count: int,
             device: torch.device) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """`batches(i)`: the i-th of `count` random train batches, augmented as training does."""
    from zoo.augment import augment

    indexes = _indexes(data.num_train, batch_size, count, device)
    generator = torch.Generator().manual_seed(2)

    def batch(i: int) -> tuple[torch.Tensor, ...]:
        tensors = tuple(t[indexes[i]] for t in data.train)
        if augmentation == "none":
            return tensors
        return (augment(tensors[0], augmentation, generator), *tensors[1:])

    return batch


def time_step(spec: ZooSpec, job: ModelJob, data: DataBundle, steps: int,
              device: torch.device, graphed: bool) -> float:
    """Seconds of one of train_model's steps: EagerStep (its sync included), or one GraphedStep
    replay (CUDA; captured during the untimed warm-up)."""
    from zoo.objective import Objective
    from zoo.train import build_model
    from zoo.train.steps import EagerStep, GraphedStep, prepare

    recipe, cell = spec.training, job.cell
    model = build_model(spec, cell, data, job.seed).to(device)
    kind = GraphedStep if graphed else EagerStep
    step = kind((prepare(model, device) if graphed else model).train(),
                Objective(data, beta=cell.beta), recipe, cell, WARMUP_STEPS + steps)
    batches = _batches(data, recipe.augmentation, cell.batch_size, WARMUP_STEPS + steps,
                       device)
    seconds = time_calls(lambda i: step(batches(i)), steps, device)
    if step.diverged():
        raise ZooError(f"price: the loss of width {cell.width}, batch {cell.batch_size} "
                       f"is not finite on synthetic data; lower training.learning_rate")
    return seconds


def time_population(spec: ZooSpec, job: ModelJob, members: int, data: DataBundle, steps: int,
                    device: torch.device) -> float:
    """Seconds of one population_step of `members` models of `job`'s cell."""
    from dataclasses import replace

    from zoo.precision import autocast
    from zoo.train import build_model
    from zoo.train.optimizers import PopulationOptimizer, schedule_table
    from zoo.train.stacked import Population, population_step

    jobs = [replace(job, seed=seed) for seed in range(members)]
    models = [build_model(spec, j.cell, data, j.seed).to(device) for j in jobs]
    population = Population(models)
    table = schedule_table(spec.training, jobs, WARMUP_STEPS + steps,
                           next(iter(population.params.values())))
    optimizer = PopulationOptimizer(spec.training.optimizer, population.params, table)
    indexes = _indexes(data.num_train, job.cell.batch_size, WARMUP_STEPS + steps, device,
                       members)
    active = torch.ones(members, dtype=torch.bool, device=device)

    def call(i: int) -> None:
        with autocast(spec.training.precision, device):
            population_step(population, optimizer, [t[indexes[i]] for t in data.train],
                            active, i)

    return time_calls(call, steps, device)


def time_checkpoints(spec: ZooSpec, model: torch.nn.Module, width: int,
                     folder: Path) -> tuple[float, float]:
    """Seconds to write one checkpoint: ours (a Parquet row of flat float32 weights, as the
    writer stores it) and published (torch.save of a state_dict file)."""
    import pyarrow as pa

    from zoo.folder.writer import write_parquet
    from zoo.layout import layout_of

    layout = layout_of(model, spec.architecture.family, width, spec.architecture.args)

    def ours(i: int) -> None:
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        weights = pa.array([layout.flatten(state)], type=pa.list_(pa.float32()))
        write_parquet(pa.table({"weights": weights}), folder / f"ours-{i}.parquet")

    def published(i: int) -> None:
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        torch.save(state, folder / f"published-{i}.pt")

    cpu = torch.device("cpu")
    return (time_calls(ours, CHECKPOINT_REPEATS, cpu, warmup=1),
            time_calls(published, CHECKPOINT_REPEATS, cpu, warmup=1))


def time_shape(spec: ZooSpec, job: ModelJob, data: DataBundle, steps: int,
               device: torch.device, folder: Path) -> ShapeTiming:
    """Every timing of one (width, batch size) on `data` (already on `device`)."""
    from zoo.objective import Objective
    from zoo.train import build_model, use_graphs

    eager = time_step(spec, job, data, steps, device, graphed=False)
    graphed = use_graphs(spec.training, data.info.task, device)
    step = time_step(spec, job, data, steps, device, graphed=True) if graphed else eager
    model = build_model(spec, job.cell, data, job.seed).to(device)
    objective = Objective(data, beta=job.cell.beta)
    evaluation = time_calls(lambda i: objective.evaluate(model, "test"), 2, device, warmup=1)
    checkpoint, published = time_checkpoints(spec, model, job.cell.width, folder)
    parameters = sum(p.numel() for p in model.parameters())
    return ShapeTiming(job.cell.width, job.cell.batch_size, parameters, eager, step,
                       evaluation / len(data.test[0]), checkpoint, published)


CURVE_STEPS_TIMED = (10, 40)  # a curve's cost is linear in its steps: two lengths give the line


def priced_curve_steps(spec: ZooSpec, num_train: int) -> int:
    """SGD steps a seed pair's curve fit is priced at: every round of `max_rounds` (a fit
    stops earlier when its mc converges, so the price is an upper bound)."""
    from zoo.measure import round_steps

    curve = spec.metrics.curve
    return round_steps(curve, num_train) * curve.max_rounds if curve.enabled else 0


def time_metrics(spec: ZooSpec, job: ModelJob, data: DataBundle, device: torch.device,
                 scale: float, num_train: int) -> tuple[float, float]:
    """Seconds of the landscape metrics at one metric epoch: of one model (Hessian, spectra)
    and of one seed pair (CKA, the curve extrapolated to `priced_curve_steps` on `num_train`
    rows, its evaluations scaled by `scale`, the full data's rows over the timing rows).
    Models are at their init."""
    from dataclasses import replace

    from zoo.measure import model_metrics, pair_metrics
    from zoo.objective import Objective
    from zoo.train import build_model

    beta = job.cell.beta
    a, b = (build_model(spec, job.cell, data, seed).to(device).eval() for seed in (0, 1))
    one = time_calls(lambda i: model_metrics(a, Objective(data, beta=beta), spec.metrics, 0),
                     1, device, warmup=0)
    if len(spec.seeds) < 2:
        return one, 0.0

    def pair(steps: int) -> float:
        metrics = replace(spec.metrics, curve=replace(spec.metrics.curve, steps=steps))
        return time_calls(lambda i: pair_metrics(a, b, data, beta, metrics, 0), 1, device,
                          warmup=0)

    short, long = (pair(steps) for steps in CURVE_STEPS_TIMED)
    per_step = max(long - short, 0.0) / (CURVE_STEPS_TIMED[1] - CURVE_STEPS_TIMED[0])
    fixed = max(short - per_step * CURVE_STEPS_TIMED[0], 0.0)
    return one, fixed * scale + per_step * priced_curve_steps(spec, num_train)
