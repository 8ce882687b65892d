"""The base of training: seeds, the model and its optimizer, checkpoints and their hand-off.

Every other module of zoo.train builds on this one; it imports none of them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Mapping, Protocol, Sequence

import torch

from zoo import architectures
from zoo.datasets.base import DataBundle
from zoo.objective import Objective
from zoo.spec import Cell, ModelJob, TrainingSpec, ZooSpec

ONECYCLE_WARMUP = 0.3  # OneCycle's pct_start (torch's default): the fraction of steps rising


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
    spooled: str | None = None  # the sha256 of its file in a spool (its state_dict is then empty)


class HandOff(Protocol):
    """Where a run hands its checkpoints (a spool, zoo.train.spool), one file per epoch."""

    def __call__(self, epoch: int, state_dict: dict[str, torch.Tensor]) -> str:
        """Store the checkpoint of `epoch`; the sha256 (hex) of what was stored."""

    def digest(self, epoch: int) -> str | None:
        """The sha256 of the checkpoint of `epoch` as stored now (None: missing, unreadable)."""


def is_finite_checkpoint(state: Mapping[str, torch.Tensor],
                         evaluations: Sequence[Mapping[str, float | None]],
                         alive: bool = True) -> bool:
    """A checkpoint is finite when its run had not diverged, every floating tensor of its
    state is finite and every reported evaluation number is finite (None: not measured)."""
    return bool(alive
                and all(v is None or math.isfinite(v) for e in evaluations for v in e.values())
                and all(bool(torch.isfinite(t).all()) for t in state.values()
                        if t.is_floating_point()))


def handed_over(checkpoint: Checkpoint, hand_off: HandOff | None) -> Checkpoint:
    """`checkpoint` as a run holds it: whole, or (with `hand_off`) given to `hand_off` and held
    without its state_dict, so a run holds one checkpoint's weights at a time."""
    if hand_off is None:
        return checkpoint
    return replace(checkpoint, state_dict={},
                   spooled=hand_off(checkpoint.epoch, checkpoint.state_dict))


@dataclass(frozen=True)
class TrainedModel:
    """All kept checkpoints of one model and how long it trained."""

    job: ModelJob
    checkpoints: tuple[Checkpoint, ...]
    seconds: float
    trained_by: str = "single"  # or "stacked": a member of a vmapped population
    notes: tuple[str, ...] = ()  # lines to show the user (a training state discarded)


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
                                                   total_steps=total_steps,
                                                   pct_start=ONECYCLE_WARMUP)
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
