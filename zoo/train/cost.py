"""The cost model that decides where stacking pays: counted (never timed) step costs of one
model and of a population, so a spec always trains the same way on a machine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from zoo.datasets.base import DataBundle
from zoo.spec import ModelJob, ZooSpec
from zoo.train.base import build_model
from zoo.train.stacked import batched_matmul_ready, check_jobs


@dataclass(frozen=True)
class StepCost:
    """Seconds of one optimizer step: fixed overhead, dispatch per leaf module, memory traffic
    per parameter value (optimizer) and activation value (elementwise, loss), FLOPs at a rate."""

    overhead: float
    per_module: float
    per_value: float
    per_activation: float
    rate: float  # FLOP/s

    def seconds(self, modules: int, values: float, activations: float, flops: float) -> float:
        return (self.overhead + self.per_module * modules + self.per_value * values
                + self.per_activation * activations + flops / self.rate)


# Fitted by benchmarks/calibrate_stacking.py on this project's 2-core Zen 5 CPU at one torch
# thread (the Ray worker setting); benchmarks/bench_generation.py prints prediction beside
# measurement. (path, way) -> cost; a population pays overhead and dispatch once per step.
COST = {
    ("linear", "single"): StepCost(8.92e-05, 1.84e-05, 7.11e-10, 4.68e-10, 1.14e+11),
    ("linear", "stacked"): StepCost(8.92e-05, 2.46e-05, 1.58e-09, 9.34e-10, 7.15e+10),
    ("vmap", "single"): StepCost(0, 7.02e-05, 7.45e-09, 2.75e-09, 2.03e+11),
    ("vmap", "stacked"): StepCost(0, 0.000105, 0, 3.89e-09, 3.33e+11),
}
EVAL_RATE = 25e9  # FLOP/s of evaluation, taken as the same for both ways
AUTO_FAMILIES = {"linear": None, "vmap": ("cnn",)}  # None: any family with the MLP shape
MIN_SPEEDUP = 1.3  # stack only with a clear predicted margin: near-ties train one by one
REFERENCE_MEMBERS = 3  # the population the cost model prices: the paper's three seeds


@dataclass(frozen=True)
class ModelShape:
    """What the cost model reads from a model, per sample: counted, never timed."""

    path: str  # "linear" (batched matmuls) or "vmap"
    modules: int  # leaf modules
    values: int  # trainable parameter values
    activations: int  # output values of all leaf modules for one sample
    flops: int  # matmul and convolution FLOPs of one sample's forward pass


def model_shape(model: nn.Module, bundle: DataBundle) -> ModelShape:
    """Count `model`'s leaf modules, parameters, activations and FLOPs on one training sample.

    An MLP-shaped model's FLOPs are its Linear layers' 2 * inputs * outputs, exactly what
    FlopCounterMode counts for their matmuls, counted without it (FlopCounterMode imports
    torch._dynamo on first use: seconds of a zoo's start-up)."""
    leaves = [m for m in model.modules() if not list(m.children())]
    linear = batched_matmul_ready(model)
    outputs: list[int] = []
    matmuls: list[int] = []

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        outputs.append(out.numel())
        if isinstance(module, nn.Linear):
            matmuls.append(2 * inputs[0].numel() * module.out_features)

    hooks = [m.register_forward_hook(count) for m in leaves]
    with torch.no_grad():
        if linear:
            model.eval()(bundle.train[0][:1].cpu())
            flops = sum(matmuls)
        else:
            with FlopCounterMode(display=False) as counter:
                model.eval()(bundle.train[0][:1].cpu())
            flops = int(counter.get_total_flops())
    for hook in hooks:
        hook.remove()
    return ModelShape("linear" if linear else "vmap", len(leaves),
                      sum(p.numel() for p in model.parameters() if p.requires_grad),
                      sum(outputs), flops)


def step_seconds(shape: ModelShape, batch_size: int, members: int) -> float:
    """Predicted seconds of one step of `members` models (1: one by one, else stacked)."""
    way = "single" if members == 1 else "stacked"
    samples = members * batch_size
    return COST[shape.path, way].seconds(shape.modules, members * shape.values,
                                         samples * shape.activations, 3 * samples * shape.flops)


def predicted_speedup(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle) -> float:
    """Predicted one-by-one time over stacked time for `jobs`, training and evaluation."""
    cell, members = jobs[0].cell, len(jobs)
    data = bundle.subsample(cell.data_fraction)
    shape = model_shape(build_model(spec, cell, data, jobs[0].seed), data)
    steps = math.ceil(data.num_train / cell.batch_size) * spec.training.epochs
    kept = len(spec.kept_epochs)
    evaluation = kept * shape.flops * (data.num_train + len(data.test[0])) / EVAL_RATE
    single = steps * step_seconds(shape, cell.batch_size, 1) + evaluation
    stacked = steps * step_seconds(shape, cell.batch_size, members) / members + evaluation
    return single / stacked


def choose_stacking(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle,
                    device: torch.device | str = "cpu") -> bool:
    """Whether `jobs` train as one population: spec.training.stacking, else the cost model,
    which counts (never times), so a spec always trains the same way on a machine. "always"
    raises ValueError where stacking cannot work. Off the CPU (uncalibrated; small steps are
    launch-bound) every stackable population of an AUTO_FAMILIES family is stacked.

    The cost model prices REFERENCE_MEMBERS copies of the first job, never len(jobs): the
    choice is a function of the model's own facts (architecture, width, batch size, data,
    device), so a model id gets the same weights whatever the seed count or the grouping."""
    mode = spec.training.stacking
    if mode == "always":
        check_jobs(jobs, bundle.info.task)
    if mode != "auto":
        return mode == "always"
    try:
        check_jobs(jobs, bundle.info.task)
    except ValueError:
        return False
    model = build_model(spec, jobs[0].cell, bundle, jobs[0].seed)
    families = AUTO_FAMILIES["linear" if batched_matmul_ready(model) else "vmap"]
    if families is not None and spec.architecture.family not in families:
        return False
    if torch.device(device).type != "cpu":
        return True
    return predicted_speedup(spec, [jobs[0]] * REFERENCE_MEMBERS, bundle) >= MIN_SPEEDUP
