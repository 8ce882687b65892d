"""`zoo price`: a zoo's device-hours predicted from timed steps, ours against the published way.

Every distinct (architecture, width, batch size) of a spec is timed on synthetic tensors of the
data set's shape (no data files needed): training steps one model at a time, eager, as
published zoos were trained; the same steps our way (a CUDA graph where train_model uses one);
each stacked population the planner makes; an evaluation; a checkpoint write both ways. The
whole zoo is then priced by arithmetic: step time x steps, evaluation time per sample x
samples x kept epochs, checkpoint time x checkpoints, and landscape metrics timed once per width
(one model's and one seed pair's, at initialisation; the curve extrapolated from two short runs)
x models and pairs.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

from generators.steptimes import ShapeTiming, time_metrics, time_population, time_shape
from zoo import dataroot, datasets
from zoo.datasets.base import DataBundle, DataInfo
from zoo.errors import ZooError
from zoo.spec import ModelJob, ZooSpec

FOLDER_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),  # train, test
                "svhn": (73_257, 26_032), "tiny-imagenet": (100_000, 10_000)}
DEFAULT_STEPS = {"cpu": 20, "cuda": 300}  # timed steps per shape, after untimed warm-up
EVAL_SAMPLES = 1024  # synthetic test rows timed for evaluation
HOUR = 3600.0
PARTS = ("training", "evaluation", "checkpoints", "metrics")


@dataclass(frozen=True)
class DataShape:
    """A data set's shape facts and sizes, and small tensors to time steps on."""

    info: DataInfo
    num_train: int
    num_test: int
    sample: DataBundle  # real rows of a built-in set, random rows of a folder set


@dataclass(frozen=True)
class PricedTask:
    """A task as the planner makes it: its models, whether they train as one population."""

    width: int
    batch_size: int
    stacked: bool
    jobs: tuple[ModelJob, ...]


def data_shape(spec: ZooSpec, rows: int) -> DataShape:
    """Sizes and `rows` timing rows: a folder set's from FOLDER_SIZES and random tensors."""
    if spec.data.name not in FOLDER_SIZES:
        bundle = dataroot.load(spec.data.name, root=spec.data.root, args=spec.data.args)
        return DataShape(bundle.info, bundle.num_train, len(bundle.test[0]), bundle)
    info = datasets.describe(spec.data.name, spec.data.args)
    generator = torch.Generator().manual_seed(0)

    def part(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(count, *info.input_shape, generator=generator),
                torch.randint(info.num_outputs, (count,), generator=generator))

    train, test = FOLDER_SIZES[spec.data.name]
    sample = DataBundle(spec.data.name, info, part(rows), part(EVAL_SAMPLES))
    return DataShape(info, train, test, sample)


def planner_bundle(shape: DataShape) -> DataBundle:
    """The sample stretched to the real number of rows without memory (for the planner)."""
    if shape.sample.num_train == shape.num_train:
        return shape.sample

    def stretch(tensors: tuple[torch.Tensor, ...], count: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[:1].expand(count, *t.shape[1:]) for t in tensors)

    return DataBundle(shape.sample.name, shape.info, stretch(shape.sample.train, shape.num_train),
                      stretch(shape.sample.test, shape.num_test), shape.sample.extras)


def plan_priced_tasks(spec: ZooSpec, bundle: DataBundle, device: str,
                      workers: int) -> list[PricedTask]:
    """The tasks `zoo generate` would run, and whether each trains stacked on `device`."""
    from generators.plan import make_plan, plan_tasks
    from zoo.train import choose_stacking

    with tempfile.TemporaryDirectory() as empty:  # a plan with nothing done yet
        plan = make_plan(spec, "pricing", Path(empty))
    out = []
    for task in plan_tasks(plan, bundle, workers, device):
        jobs = tuple(job for cell in task.cells for job in cell)
        stacked = task.stacked
        if stacked is None:
            stacked = choose_stacking(spec, jobs, bundle, device)
        out.append(PricedTask(jobs[0].cell.width, jobs[0].cell.batch_size, bool(stacked), jobs))
    return out


def steps_per_model(spec: ZooSpec, job: ModelJob, num_train: int) -> int:
    """Optimizer steps of one model: batches per epoch (of its data fraction) x epochs."""
    return math.ceil(_train_rows(job, num_train) / job.cell.batch_size) * spec.training.epochs


def _train_rows(job: ModelJob, num_train: int) -> int:
    """Training rows of a model's data fraction, as DataBundle.subsample keeps them."""
    if job.cell.data_fraction >= 1.0:
        return num_train
    return max(1, round(num_train * job.cell.data_fraction))


def kept_epochs(spec: ZooSpec) -> int:
    """Checkpoints each model stores (kept and metric epochs)."""
    return len(set(spec.checkpoint_epochs) | set(spec.metrics.epochs))


def predict(spec: ZooSpec, tasks: Sequence[PricedTask],
            timings: dict[tuple[int, int], ShapeTiming],
            populations: dict[tuple[int, int, int], float],
            metrics: dict[int, tuple[float, float]], num_train: int,
            num_test: int) -> dict[str, dict[str, float]]:
    """Hours of each part, ours and one eager model per task (the published way)."""
    ours = dict.fromkeys(PARTS, 0.0)
    published = dict.fromkeys(PARTS, 0.0)
    kept = kept_epochs(spec)
    for task in tasks:
        timing = timings[task.width, task.batch_size]
        steps = [steps_per_model(spec, job, num_train) for job in task.jobs]
        if task.stacked:  # members share batch size and data fraction: the same step count
            ours["training"] += populations[task.width, task.batch_size, len(task.jobs)] * steps[0]
        else:
            ours["training"] += timing.step * sum(steps)
        published["training"] += timing.eager_step * sum(steps)
        for job in task.jobs:
            evaluation = timing.evaluation_per_sample * (_train_rows(job, num_train)
                                                         + num_test) * kept
            ours["evaluation"] += evaluation
            published["evaluation"] += evaluation
        ours["checkpoints"] += timing.checkpoint * kept * len(task.jobs)
        published["checkpoints"] += timing.checkpoint_published * kept * len(task.jobs)
    ours["metrics"] = published["metrics"] = metrics_seconds(spec, metrics)
    return {"ours": _hours(ours), "published": _hours(published)}


def metrics_seconds(spec: ZooSpec, metrics: dict[int, tuple[float, float]]) -> float:
    """Seconds of landscape metrics for the whole zoo from each width's measured seconds of
    one model's and one seed pair's metrics at a metric epoch."""
    epochs, pairs = len(spec.metrics.epochs), len(list(combinations(spec.seeds, 2)))
    return sum(epochs * (len(spec.seeds) * metrics[cell.width][0]
                         + pairs * metrics[cell.width][1]) for cell in spec.cells())


def _hours(seconds: dict[str, float]) -> dict[str, float]:
    hours = {f"{part}_hours": seconds[part] / HOUR for part in PARTS}
    hours["total_hours"] = sum(seconds.values()) / HOUR
    return hours


def timing_rows(spec: ZooSpec) -> int:
    """Rows a folder set's synthetic sample needs: the largest batch, probe set or BatchNorm
    re-estimation set of the spec."""
    from zoo.measure import BN_SAMPLES

    metrics = spec.metrics
    return max(max(cell.batch_size for cell in spec.cells()), BN_SAMPLES,
               metrics.hessian.batches * metrics.hessian.batch_size,
               metrics.similarity.batches * metrics.similarity.batch_size,
               metrics.curve.batch_size)


def timing_data(shape: DataShape, device: torch.device) -> DataBundle:
    """The timing rows on `device`, the test set cut to EVAL_SAMPLES rows."""
    sample = shape.sample
    test = tuple(t[:EVAL_SAMPLES] for t in sample.test)
    return DataBundle(sample.name, sample.info, sample.train, test, sample.extras).to(device)


def price(spec: ZooSpec, device: str = "cpu", steps: int | None = None, workers: int = 1,
          stream: TextIO | None = None) -> dict[str, Any]:
    """Time every shape of `spec` on `device` and price the zoo ours and the published way.

    On the CPU one torch thread times each step, as a Ray worker trains: hours are core-hours.
    Returns the JSON-able result (see `report` for the printed form).
    """
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ZooError("--device cuda: torch sees no CUDA device on this machine")
    if steps is not None and steps < 1:
        raise ZooError(f"--steps: {steps} is not allowed; expected an integer >= 1")
    steps = steps or DEFAULT_STEPS[target.type]
    shape = data_shape(spec, timing_rows(spec))
    tasks = plan_priced_tasks(spec, planner_bundle(shape), target.type, workers)
    data = timing_data(shape, target)
    previous = torch.get_num_threads()
    if target.type == "cpu":
        torch.set_num_threads(1)
    try:
        timings, populations = _time_all(spec, tasks, data, steps, target, stream)
        scale = (shape.num_train + shape.num_test) / (data.num_train + len(data.test[0]))
        metrics = {width: time_metrics(spec, next(t.jobs[0] for t in tasks if t.width == width),
                                       data, target, scale, shape.num_train)
                   for width in sorted({t.width for t in tasks})}
    finally:
        torch.set_num_threads(previous)
    hours = predict(spec, tasks, timings, populations, metrics, shape.num_train, shape.num_test)
    return {"spec": spec.name, "spec_hash": spec.spec_hash(), "device": target.type,
            "device_name": _device_name(target), "steps_timed": steps, "workers": workers,
            "models": sum(len(t.jobs) for t in tasks), "num_train": shape.num_train,
            "num_test": shape.num_test, "kept_epochs": kept_epochs(spec),
            "shapes": [asdict(t) for t in timings.values()],
            "populations": [{"width": w, "batch_size": b, "members": m, "step": seconds}
                            for (w, b, m), seconds in populations.items()],
            "metrics": [{"width": w, "model": one, "pair": pair}
                        for w, (one, pair) in metrics.items()],
            "tasks": [{"width": t.width, "batch_size": t.batch_size, "stacked": t.stacked,
                       "models": len(t.jobs),
                       "steps_per_model": steps_per_model(spec, t.jobs[0], shape.num_train)}
                      for t in tasks],
            **hours, "ratio": hours["published"]["total_hours"] / hours["ours"]["total_hours"]}


def _time_all(spec: ZooSpec, tasks: Sequence[PricedTask], data: DataBundle, steps: int,
              device: torch.device, stream: TextIO | None
              ) -> tuple[dict[tuple[int, int], ShapeTiming], dict[tuple[int, int, int], float]]:
    timings: dict[tuple[int, int], ShapeTiming] = {}
    populations: dict[tuple[int, int, int], float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for task in tasks:
            key = (task.width, task.batch_size)
            if key not in timings:
                timings[key] = time_shape(spec, task.jobs[0], data, steps, device, Path(folder))
                _say(stream, f"timed width {key[0]} batch {key[1]}")
            members = (*key, len(task.jobs))
            if task.stacked and members not in populations:
                populations[members] = time_population(spec, task.jobs[0], len(task.jobs), data,
                                                       steps, device)
                _say(stream, f"timed width {key[0]} batch {key[1]}: {members[2]} stacked")
    return timings, populations


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(text, file=stream, flush=True)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"{platform.processor() or platform.machine()} CPU, 1 torch thread"


def report(result: dict[str, Any]) -> str:
    """The printed form: per shape step times, then hours ours and published, and the ratio."""
    lines = [f"zoo price {result['spec']} on {result['device_name']}: {result['models']} "
             f"models, {len(result['shapes'])} shapes, {result['steps_timed']} steps timed each",
             f"{'width':>6} {'batch':>6} {'params':>10} {'eager ms':>9} {'ours ms':>8} "
             f"{'eval us/sample':>14} {'ckpt ms ours/published':>22}"]
    for t in result["shapes"]:
        lines.append(f"{t['width']:>6} {t['batch_size']:>6} {t['parameters']:>10} "
                     f"{1e3 * t['eager_step']:>9.3f} {1e3 * t['step']:>8.3f} "
                     f"{1e6 * t['evaluation_per_sample']:>14.2f} "
                     f"{1e3 * t['checkpoint']:>11.2f}/{1e3 * t['checkpoint_published']:.2f}")
    for p in result["populations"]:
        lines.append(f"stacked: width {p['width']} batch {p['batch_size']} x {p['members']} "
                     f"models: {1e3 * p['step']:.3f} ms a step")
    for m in result["metrics"]:
        lines.append(f"metrics at a metric epoch, width {m['width']}: {m['model']:.3g} s a "
                     f"model, {m['pair']:.3g} s a seed pair")
    unit = "core-hours" if result["device"] == "cpu" else "device-hours"
    lines.append(f"{unit:<26}" + "".join(f"{part:>12}" for part in (*PARTS, "total")))
    for name, label in (("ours", "ours"), ("published", "one eager model per task")):
        row = result[name]
        lines.append(f"{label:<26}" + "".join(f"{row[f'{part}_hours']:>12.4g}"
                                            for part in (*PARTS, "total")))
    lines.append(f"ratio (published / ours): {result['ratio']:.2f}x")
    return "\n".join(lines)
