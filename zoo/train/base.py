"""Train one model of a zoo deterministically and keep its checkpoints and evaluations."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import torch

from zoo import architectures, trainstate
from zoo.augment import augment
from zoo.datasets.base import DataBundle
from zoo.objective import Objective
from zoo.precision import autocast
from zoo.rows import is_finite_checkpoint
from zoo.spec import Cell, ModelJob, TrainingSpec, ZooSpec


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose ('init', 'data', 'probe', ...) derived from a model seed."""
    return int(hashlib.sha256(f"{seed}:{purpose}".encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class Checkpoint:
    """A model's state at a kept epoch, with its full-set evaluation."""

    epoch: int
    state_dict: dict[str, torch.Tensor]
    train: dict[str, float | None]
    test: dict[str, float | None]
    finite: bool


Keep = Callable[[int, dict[str, torch.Tensor]], None]  # keep(epoch, state_dict): a spool


def handed_over(checkpoint: Checkpoint, keep: Keep | None) -> Checkpoint:
    """`checkpoint` as a run keeps it: whole, or (with `keep`) given to `keep` and held
    without its state_dict, so a run holds one checkpoint's weights at a time."""
    if keep is None:
        return checkpoint
    keep(checkpoint.epoch, checkpoint.state_dict)
    return replace(checkpoint, state_dict={})


def starting_point(resumed: trainstate.Resumed | None, model: torch.nn.Module,
                   objective: Objective, kept: Iterable[int],
                   keep: Keep | None) -> tuple[list[Checkpoint], int, bool]:
    """Checkpoints so far, the first epoch to train and whether the run has diverged: from a
    resumed state, or a fresh run's (its epoch-0 checkpoint when kept)."""
    if resumed is not None:
        return ([Checkpoint(*c) for c in resumed.checkpoints[0]], resumed.epoch + 1,
                resumed.scalars["diverged"])
    start = [handed_over(snapshot(model, objective, 0, False), keep)] if 0 in kept else []
    return start, 1, False


@dataclass(frozen=True)
class TrainedModel:
    """All kept checkpoints of one model and how long it trained."""

    job: ModelJob
    checkpoints: tuple[Checkpoint, ...]
    seconds: float
    trained_by: str = "single"  # or "stacked": a member of a vmapped population


def build_model(spec: ZooSpec, cell: Cell, bundle: DataBundle, seed: int) -> torch.nn.Module:
    """The cell's architecture initialised from `seed` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return architectures.build(spec.architecture.family, width=cell.width,
                                   info=bundle.info, args=spec.architecture.args)


def make_optimizer(recipe: TrainingSpec, cell: Cell,
                   parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum), Adam or AdamW at the cell's learning rate and weight decay."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=cell.learning_rate, momentum=recipe.momentum,
                               weight_decay=cell.weight_decay)
    optimizer = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return optimizer(parameters, lr=cell.learning_rate, weight_decay=cell.weight_decay)


def make_schedule(recipe: TrainingSpec, optimizer: torch.optim.Optimizer, cell: Cell,
                  total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycle (max lr = the cell's lr, stepped per batch, as the paper), cosine or constant."""
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cell.learning_rate,
                                                   total_steps=total_steps)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def snapshot(model: torch.nn.Module, objective: Objective, epoch: int,
             diverged: bool) -> Checkpoint:
    """`model` at `epoch`: its state_dict copied to the CPU and evaluated on the full sets."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    train, test = objective.evaluate(model, "train"), objective.evaluate(model, "test")
    return Checkpoint(epoch, state, train, test,
                      is_finite_checkpoint(state, [train, test], alive=not diverged))


def train_model(spec: ZooSpec, job: ModelJob, bundle: DataBundle,
                device: torch.device | str = "cpu",
                store: trainstate.StateStore | None = None,
                keep: Keep | None = None) -> TrainedModel:
    """Train one model; a run that diverges stops and its later checkpoints are non-finite.

    The same spec, job and data give bitwise the same checkpoints on the same machine and
    thread count: init, data order and augmentation each come from a seed derived from job.seed.
    Checkpoints are kept on the CPU whatever `device` trains. With a `store`, the training
    state is saved there (see zoo.trainstate) and a saved state is resumed: the result equals
    an uninterrupted run's bit for bit. With `keep`, each kept checkpoint's weights go to
    `keep(epoch, state_dict)` and the returned checkpoints hold empty state_dicts.
    """
    from zoo.graphed import train_graphed, use_graphs  # imports this module: import here

    if use_graphs(spec.training, bundle.info.task, device):  # CUDA only; the CPU trains below
        return train_graphed(spec, job, bundle, device, store, keep)
    start = time.perf_counter()
    recipe, cell = spec.training, job.cell
    data = bundle.subsample(cell.data_fraction).to(device)
    objective = Objective(data, beta=cell.beta)
    model = build_model(spec, cell, data, job.seed).to(device)
    optimizer = make_optimizer(recipe, cell, [p for p in model.parameters() if p.requires_grad])
    steps_per_epoch = math.ceil(data.num_train / cell.batch_size)
    schedule = make_schedule(recipe, optimizer, cell, steps_per_epoch * recipe.epochs)
    generator = torch.Generator().manual_seed(derive_seed(job.seed, "data"))
    kept = spec.kept_epochs
    identity = {"model_id": job.model_id, "epochs": recipe.epochs, "kept": sorted(kept)}
    resumed = trainstate.resume_model(store, identity, model, optimizer, schedule, generator)
    checkpoints, first, diverged = starting_point(resumed, model, objective, kept, keep)
    fill = data.normalization.raw_zero() if data.normalization else None  # pad like raw 0
    autosave = trainstate.Autosave(store)
    for epoch in range(first, recipe.epochs + 1):
        model.train()
        order = torch.randperm(data.num_train, generator=generator)
        for index in order.split(cell.batch_size):
            if diverged:
                break
            batch = tuple(t[index] for t in data.train)
            if recipe.augmentation != "none":
                batch = (augment(batch[0], recipe.augmentation, generator, fill), *batch[1:])
            with autocast(recipe.precision, device):
                loss = objective.loss(model, batch)
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if epoch in kept:
            checkpoints.append(handed_over(snapshot(model, objective, epoch, diverged), keep))
        autosave(epoch, epoch in kept, lambda: trainstate.pack_model(
            identity, model, optimizer, schedule, generator, diverged, checkpoints))
    return TrainedModel(job, tuple(checkpoints), time.perf_counter() - start)
