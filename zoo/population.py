"""Train a cell's models as one stacked population, and choose where that pays (a cost model).

Each member keeps what makes it itself in `train_model`: init, data order, augmentation draws,
optimizer state, schedule, divergence. Members share architecture, width, batch size and data.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.utils.flop_counter import FlopCounterMode

from zoo import trainstate
from zoo.augment import augment
from zoo.datasets.base import DataBundle
from zoo.objective import Objective
from zoo.precision import autocast
from zoo.rows import is_finite_checkpoint
from zoo.spool import Spool
from zoo.spec import Cell, ModelJob, TrainingSpec, ZooSpec
from zoo.training import (Checkpoint, Keep, TrainedModel, build_model, derive_seed,
                          handed_over, make_optimizer, make_schedule, train_model)

STACKABLE_TASKS = ("classification", "language_model")  # PINN losses differentiate the inputs
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU)
SHARED_FIELDS = ("width", "batch_size", "data_fraction", "beta")


class Population:
    """Members stacked: each parameter one (members, *shape) leaf; buffers; one forward pass."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        first = members[0]
        self.keys = list(first.state_dict())
        states = [m.state_dict() for m in members]
        trainable = [n for n, p in first.named_parameters() if p.requires_grad]
        self.params = {n: torch.stack([s[n] for s in states]).requires_grad_(True)
                       for n in trainable}
        self.buffers = {k: torch.stack([s[k] for s in states])
                        for k in self.keys if k not in self.params}
        self.skeleton = copy.deepcopy(first).to("meta").train()
        self.linear = batched_matmul_ready(self.skeleton)
        self.size = len(members)

    def forward(self, inputs: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Outputs (members, B, ...) for per-member inputs (members, B, ...) or shared (B, ...)."""
        x = inputs.expand(self.size, *inputs.shape) if shared else inputs
        if self.linear:
            return linear_forward(self.skeleton, self.params, x)
        member = partial(functional_call, self.skeleton)
        return vmap(lambda p, b, x: member((p, b), (x,)))(self.params, self.buffers, x)

    def state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member `member`'s state_dict (same keys and order as a single model's)."""
        return {k: (self.params[k] if k in self.params else self.buffers[k])[member].detach()
                .to("cpu", copy=True) for k in self.keys}


def batched_matmul_ready(module: nn.Module) -> bool:
    """True for a Sequential of Flatten, Linear and elementwise activations (the MLP shape)."""
    def fits(layer: nn.Module) -> bool:
        flat = isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) == (1, -1)
        return flat or isinstance(layer, (nn.Linear, *ELEMENTWISE))

    return isinstance(module, nn.Sequential) and all(fits(layer) for layer in module)


def linear_forward(skeleton: nn.Sequential, params: dict[str, torch.Tensor],
                   x: torch.Tensor) -> torch.Tensor:
    """An MLP over all members with batched matmuls: (members, B, ...) -> (members, B, out)."""
    for name, layer in skeleton.named_children():
        if isinstance(layer, nn.Flatten):
            x = x.flatten(2)
        elif isinstance(layer, nn.Linear):
            weight, bias = params[f"{name}.weight"].transpose(1, 2), params.get(f"{name}.bias")
            x = x @ weight if bias is None else torch.baddbmm(bias.unsqueeze(1), x, weight)
        else:
            x = layer(x)
    return x


def member_losses(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy (members,), as zoo.objective.output_loss per member."""
    members = outputs.shape[0]
    logits = outputs.reshape(members, -1, outputs.shape[-1]).transpose(1, 2).contiguous()
    # classes on dim 1: torch vectorises the softmax over samples, ~5x faster than classes last
    return F.cross_entropy(logits, targets.reshape(members, -1), reduction="none").mean(1)


def _coefficients(kind: str, group: dict, step: int) -> tuple[float, ...]:
    """The numbers torch's single-tensor SGD/Adam/AdamW use at `step` (1-based), as floats."""
    lr, decay = group["lr"], group["weight_decay"]
    if kind == "sgd":
        return lr, group["momentum"], decay
    beta1, beta2 = group["betas"]
    return (lr / (1 - beta1 ** step), 1 - beta1, beta2, 1 - beta2,
            (1 - beta2 ** step) ** 0.5, group["eps"], decay, 1 - lr * decay)


def hyperparameters(recipe: TrainingSpec, cell: Cell, total_steps: int) -> list[tuple[float, ...]]:
    """One member's per-step coefficients, read off train_model's own optimizer and schedule."""
    dummy = nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer(recipe, cell, [dummy])
    schedule = make_schedule(recipe, optimizer, cell, total_steps)
    rows = []
    for step in range(1, total_steps + 1):
        rows.append(_coefficients(recipe.optimizer, optimizer.param_groups[0], step))
        optimizer.step()  # a no-op (no gradient) that keeps the schedule's call order honest
        schedule.step()
    return rows


class PopulationOptimizer:
    """SGD (momentum), Adam or AdamW over stacked parameters, each member on its own table."""

    def __init__(self, kind: str, params: dict[str, torch.Tensor], table: torch.Tensor) -> None:
        self.kind = kind
        self.table = table.permute(0, 2, 1).contiguous()  # (steps, coefficients, members)
        self.state = {n: [torch.zeros_like(p) for _ in range(1 if kind == "sgd" else 2)]
                      for n, p in params.items()}

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: Sequence[torch.Tensor], index: int,
             mask: torch.Tensor | None) -> None:
        """Apply step `index` (0-based) in place, consuming `grads`; members where `mask` is
        False keep every value."""
        update = sgd_update if self.kind == "sgd" else adam_update
        row, shaped = self.table[index], {}
        for (name, param), grad in zip(params.items(), grads):
            if param.dim() not in shaped:  # coefficients as (members, 1, ...) to broadcast
                shaped[param.dim()] = row.view(*row.shape, *[1] * (param.dim() - 1)).unbind(0)
            tensors = [param, *self.state[name]]
            saved = None if mask is None else [t.clone() for t in tensors]
            update(param, grad, self.state[name], shaped[param.dim()], self.kind == "adamw")
            if saved is not None:  # rare: only after a member diverged
                keep = mask.view(-1, *[1] * (param.dim() - 1))
                for tensor, old in zip(tensors, saved):
                    tensor.copy_(torch.where(keep, tensor, old))


def sgd_update(p: torch.Tensor, grad: torch.Tensor, state: list[torch.Tensor],
               c: tuple[torch.Tensor, ...], _: bool) -> None:
    """One SGD (momentum) step in place as torch's single-tensor SGD: `c` = (lr, momentum,
    weight decay); `state` = [momentum buffer]; `grad` is consumed."""
    lr, momentum, decay = c
    grad.addcmul_(p, decay)
    state[0].mul_(momentum).add_(grad)  # the first step gives grad exactly, as torch's clone
    p.addcmul_(state[0], lr, value=-1)


def adam_update(p: torch.Tensor, grad: torch.Tensor, state: list[torch.Tensor],
                c: tuple[torch.Tensor, ...], decoupled: bool) -> None:
    """One Adam step in place (AdamW's decoupled decay when `decoupled`) with the
    coefficients `_coefficients` gives; `state` = [first, second moment]; `grad` is consumed."""
    step_size, one_minus_beta1, beta2, one_minus_beta2, bias2_sqrt, eps, decay, shrink = c
    p.mul_(shrink) if decoupled else grad.addcmul_(p, decay)
    mean, square = state
    mean.lerp_(grad, one_minus_beta1)
    square.mul_(beta2).addcmul_(grad, grad * one_minus_beta2)
    denominator = square.sqrt().div_(bias2_sqrt).add_(eps)
    p.addcdiv_(mean * step_size, denominator, value=-1)


def _check_jobs(jobs: Sequence[ModelJob], task: str) -> None:
    """Raise ValueError unless `jobs` can form one population."""
    if not jobs:
        raise ValueError("train_population: expected at least one job, got none")
    for name in SHARED_FIELDS:
        values = sorted({getattr(job.cell, name) for job in jobs})
        if len(values) > 1:
            raise ValueError(f"train_population: members must share {name}; got {values}")
    if task not in STACKABLE_TASKS:
        raise ValueError(f"train_population: task {task!r} cannot be stacked; expected one of "
                         f"{', '.join(STACKABLE_TASKS)}")


def schedule_table(recipe: TrainingSpec, jobs: Sequence[ModelJob], total_steps: int,
                   like: torch.Tensor) -> torch.Tensor:
    """(steps, members, coefficients): each member's optimizer numbers at every step."""
    per_cell = {cell: hyperparameters(recipe, cell, total_steps)
                for cell in dict.fromkeys(job.cell for job in jobs)}
    rows = [per_cell[job.cell] for job in jobs]
    return torch.tensor(rows, dtype=like.dtype, device=like.device).transpose(0, 1).contiguous()


def _keep(population: Population, members: Sequence[nn.Module], objective: Objective,
          epoch: int, active: torch.Tensor, checkpoints: list[list[Checkpoint]],
          keeps: Sequence[Keep | None]) -> None:
    """Append every member's checkpoint at `epoch`; inactive (diverged) members are not finite.

    Each member is evaluated as a single module by `Objective.evaluate`, the very code a reader
    uses, so a stored checkpoint reproduces its recorded metrics bit for bit.
    """
    for member, (kept, module, keep) in enumerate(zip(checkpoints, members, keeps)):
        state = population.state_dict(member)
        module.load_state_dict(state)
        train, test = objective.evaluate(module, "train"), objective.evaluate(module, "test")
        kept.append(handed_over(Checkpoint(epoch, state, train, test, is_finite_checkpoint(
            state, [train, test], bool(active[member]))), keep))


def population_step(population: Population, optimizer: PopulationOptimizer,
                    batch: list[torch.Tensor], active: torch.Tensor, index: int) -> torch.Tensor:
    """One optimizer step of every active member; returns who is still active.

    A member whose loss is not finite stops here, as in train_model: no update, but the forward
    pass that found it (BatchNorm statistics included) counts. Members stopped before keep
    everything, buffers included.
    """
    stopped = bool(population.buffers) and not bool(active.all())
    before = {k: v.clone() for k, v in population.buffers.items()} if stopped else {}
    losses = member_losses(population.forward(batch[0]), batch[1])
    alive = active & torch.isfinite(losses.detach())
    grads = torch.autograd.grad(losses.sum(), list(population.params.values()))
    for key, old in before.items():  # after backward: BatchNorm saved its buffers for it
        keep = active.view(-1, *[1] * (old.dim() - 1))
        population.buffers[key].copy_(torch.where(keep, population.buffers[key], old))
    optimizer.step(population.params, grads, index, None if bool(alive.all()) else alive)
    return alive


def _epoch(population: Population, optimizer: PopulationOptimizer, data: DataBundle,
           augmentation: str, batch_size: int, generators: list[torch.Generator],
           active: torch.Tensor, step: int) -> tuple[torch.Tensor, int]:
    """One epoch: each member draws its permutation, then per batch its augmentation, from its
    own generator as train_model does. Returns who is still active and the next step index."""
    orders = torch.stack([torch.randperm(data.num_train, generator=g) for g in generators])
    for index in orders.to(active.device).split(batch_size, dim=1):
        if not bool(active.any()):
            break
        batch = [t[index] for t in data.train]
        if augmentation != "none":
            fill = data.normalization.raw_zero() if data.normalization else None
            batch[0] = torch.stack([augment(x, augmentation, g, fill)
                                    for x, g in zip(batch[0], generators)])
        active = population_step(population, optimizer, batch, active, step)
        step += 1
    return active, step


def train_population(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle,
                     device: torch.device | str = "cpu",
                     store: trainstate.StateStore | None = None,
                     keeps: Sequence[Keep | None] | None = None) -> list[TrainedModel]:
    """Train `jobs` (one architecture, width, batch size; any seeds, learning rates, weight
    decays) as one population on `device`; each result is train_model's up to rounding, in job
    order, trained_by "stacked", with `seconds` the population's time shared equally. With a
    `store`, the state is saved and resumed as in train_model (bit for bit). `keeps`: per job,
    where its checkpoints go (train_model's `keep`)."""
    start = time.perf_counter()
    _check_jobs(jobs, bundle.info.task)
    recipe, cell = spec.training, jobs[0].cell
    data = bundle.subsample(cell.data_fraction).to(device)
    members = [build_model(spec, job.cell, data, job.seed).to(device) for job in jobs]
    population = Population(members)
    objective = Objective(data, beta=cell.beta)
    total = math.ceil(data.num_train / cell.batch_size) * recipe.epochs
    table = schedule_table(recipe, jobs, total, next(iter(population.params.values())))
    optimizer = PopulationOptimizer(recipe.optimizer, population.params, table)
    generators = [torch.Generator().manual_seed(derive_seed(job.seed, "data")) for job in jobs]
    kept = spec.kept_epochs
    identity = {"model_ids": [job.model_id for job in jobs], "epochs": recipe.epochs,
                "kept": sorted(kept)}
    resumed = trainstate.resume_population(store, identity, population, optimizer, generators)
    active = torch.ones(len(jobs), dtype=torch.bool, device=device)
    checkpoints: list[list[Checkpoint]] = [[] for _ in jobs]
    keeps = list(keeps) if keeps is not None else [None] * len(jobs)
    if resumed is None:
        first, step = 1, 0
        if 0 in kept:
            _keep(population, members, objective, 0, active, checkpoints, keeps)
    else:
        first, step = resumed.epoch + 1, resumed.scalars["step"]
        active = torch.tensor(resumed.scalars["active"], device=device)
        checkpoints = [[Checkpoint(*c) for c in member] for member in resumed.checkpoints]
    autosave = trainstate.Autosave(store)
    for epoch in range(first, recipe.epochs + 1):
        with autocast(recipe.precision, device):
            active, step = _epoch(population, optimizer, data, recipe.augmentation,
                                  cell.batch_size, generators, active, step)
        if epoch in kept:
            _keep(population, members, objective, epoch, active, checkpoints, keeps)
        autosave(epoch, epoch in kept, lambda: trainstate.pack_population(
            identity, population, optimizer, generators, active, step, checkpoints))
    seconds = (time.perf_counter() - start) / len(jobs)
    return [TrainedModel(job, tuple(c), seconds, trained_by="stacked")
            for job, c in zip(jobs, checkpoints)]


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
    """Count `model`'s leaf modules, parameters, activations and FLOPs on one training sample."""
    leaves = [m for m in model.modules() if not list(m.children())]
    outputs: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
             for m in leaves]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(bundle.train[0][:1].cpu())
    for hook in hooks:
        hook.remove()
    return ModelShape("linear" if batched_matmul_ready(model) else "vmap", len(leaves),
                      sum(p.numel() for p in model.parameters() if p.requires_grad),
                      sum(outputs), int(counter.get_total_flops()))


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
        _check_jobs(jobs, bundle.info.task)
    if mode != "auto":
        return mode == "always"
    try:
        _check_jobs(jobs, bundle.info.task)
    except ValueError:
        return False
    model = build_model(spec, jobs[0].cell, bundle, jobs[0].seed)
    families = AUTO_FAMILIES["linear" if batched_matmul_ready(model) else "vmap"]
    if families is not None and spec.architecture.family not in families:
        return False
    if torch.device(device).type != "cpu":
        return True
    return predicted_speedup(spec, [jobs[0]] * REFERENCE_MEMBERS, bundle) >= MIN_SPEEDUP


def train_cell_models(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle,
                      device: torch.device | str = "cpu", stacked: bool | None = None,
                      state_folder: Path | None = None,
                      spool: Spool | None = None) -> list[TrainedModel]:
    """Train `jobs` stacked where choose_stacking says so, else one by one with train_model.

    `stacked` overrides the choice: a zoo that grows keeps the way each cell was trained, so
    the models it already had come out bit for bit the same. With `state_folder`, training
    states are saved and resumed there (`<model_id>/`, or `population_key(jobs)/` stacked).
    With `spool`, checkpoints go there as they are made (TrainedModel holds no weights).
    """
    keeps = [None if spool is None else spool.keeper(job.model_id) for job in jobs]

    def store(key: str) -> trainstate.StateStore | None:
        return None if state_folder is None else trainstate.StateStore(state_folder, key)

    if stacked if stacked is not None else choose_stacking(spec, jobs, bundle, device):
        return train_population(spec, jobs, bundle, device,
                                store(trainstate.population_key(jobs)), keeps)
    return [train_model(spec, job, bundle, device, store(job.model_id), keep)
            for job, keep in zip(jobs, keeps)]
