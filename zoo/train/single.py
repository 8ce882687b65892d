"""Train one model deterministically, eagerly or through a CUDA graph, and keep its checkpoints."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from zoo.augment import apply, epoch_draws
from zoo.datasets.base import DataBundle
from zoo.objective import Objective
from zoo.precision import set_deterministic
from zoo.spec import ModelJob, ZooSpec
from zoo.train.base import (Checkpoint, HandOff, TrainedModel, build_model, derive_seed,
                            handed_over, snapshot)
from zoo.train.loop import run_epochs
from zoo.train.state import (Entry, StateStore, Tensors, check_spooled, entries, kept_checkpoints,
                             load_checked, restoring, under)
from zoo.train.steps import EagerStep, GraphedStep, Step, prepare, use_graphs


class SingleRun:
    """One model, its step (eager or graphed), data order and kept checkpoints (a loop.Run)."""

    def __init__(self, spec: ZooSpec, job: ModelJob, bundle: DataBundle,
                 device: torch.device | str, hand_off: HandOff | None, graphed: bool) -> None:
        recipe, cell = spec.training, job.cell
        self.data = bundle.subsample(cell.data_fraction).to(device)
        self.objective = Objective(self.data, beta=cell.beta)
        model = build_model(spec, cell, self.data, job.seed).to(device)
        total = math.ceil(self.data.num_train / cell.batch_size) * recipe.epochs
        kind = GraphedStep if graphed else EagerStep
        self.step: Step = kind(prepare(model, device) if graphed else model, self.objective,
                               recipe, cell, total)
        self.generator = torch.Generator().manual_seed(derive_seed(job.seed, "data"))
        self.identity: dict[str, Any] = {"model_id": job.model_id, "epochs": recipe.epochs,
                                         "kept": sorted(spec.kept_epochs)}
        if graphed:
            self.identity["trained_by"] = "graphed"  # its optimizer state is not the eager one's
        self.fill = self.data.normalization.raw_zero() if self.data.normalization else None
        self.batch_size, self.augmentation = cell.batch_size, recipe.augmentation
        self.hand_off, self.diverged = hand_off, False
        self.checkpoints: list[Checkpoint] = []

    def resume(self, store: StateStore | None) -> int | None:
        state = load_checked(store, self.identity)
        if state is None:
            return None
        with restoring(store):
            self.step.model.load_state_dict(under("model/", state.tensors))
            self.step.restore(state.tensors, state.scalars)
            self.generator.set_state(state.tensors["rng/data"])
            self.checkpoints = kept_checkpoints(state, self.step.model)
            self.diverged = bool(state.scalars["diverged"])
        check_spooled(store, self.checkpoints, self.hand_off)
        return state.epoch

    def epoch(self) -> None:
        """One epoch of steps in data order; stops at the first diverged check."""
        step, data, diverged = self.step, self.data, self.diverged
        step.model.train()
        order = torch.randperm(data.num_train, generator=self.generator)
        indices = order.to(data.train[0].device).split(self.batch_size)
        draws = epoch_draws(self.augmentation, [len(i) for i in indices], self.generator,
                            data.train[0].device)  # the epoch's draws: one copy, no sync a step
        for count, (index, drawn) in enumerate(zip(indices, draws), 1):
            if diverged:
                break
            batch = tuple(t[index] for t in data.train)
            if self.augmentation != "none":  # padded like a raw 0
                batch = (apply(batch[0], self.augmentation, drawn, self.fill), *batch[1:])
            step(batch)
            if count % step.check_every == 0:
                diverged = step.diverged()
        self.diverged = diverged or step.diverged()

    def checkpoint(self, epoch: int) -> None:
        self.checkpoints.append(handed_over(
            snapshot(self.step.model, self.objective, epoch, self.diverged), self.hand_off))

    def pack(self) -> tuple[Tensors, dict[str, Any], list[Entry]]:
        tensors, scalars = self.step.pack()
        tensors.update({f"model/{k}": v for k, v in self.step.model.state_dict().items()})
        tensors["rng/data"] = self.generator.get_state()
        scalars.update({"identity": self.identity, "diverged": self.diverged})
        return tensors, scalars, entries(self.checkpoints)


def train_model(spec: ZooSpec, job: ModelJob, bundle: DataBundle,
                device: torch.device | str = "cpu", store: StateStore | None = None,
                hand_off: HandOff | None = None) -> TrainedModel:
    """Train one model; a run that diverges stops and its later checkpoints are non-finite.

    The same spec, job and data give bitwise the same checkpoints on the same machine and
    thread count: init, data order and augmentation each come from a seed derived from job.seed.
    Checkpoints are kept on the CPU whatever `device` trains. The step is eager, or graphed
    where `use_graphs` says so (CUDA only). With a `store`, the training state is saved there
    (see zoo.train.state) and a saved state is resumed: the result equals an uninterrupted
    run's bit for bit. With `keep`, each kept checkpoint's weights go to
    `hand_off(epoch, state_dict)` and the returned checkpoints hold empty state_dicts.
    """
    graphed = use_graphs(spec.training, bundle.info.task, device)
    return _train(spec, job, bundle, device, store, hand_off, graphed)


def train_graphed(spec: ZooSpec, job: ModelJob, bundle: DataBundle,
                  device: torch.device | str = "cuda", store: StateStore | None = None,
                  hand_off: HandOff | None = None) -> TrainedModel:
    """train_model through GraphedStep on any device (on the CPU nothing is captured): the
    same init, data order, augmentation draws and kept checkpoints; a diverged run is found
    within CHECK_EVERY steps."""
    return _train(spec, job, bundle, device, store, hand_off, graphed=True)


def _train(spec: ZooSpec, job: ModelJob, bundle: DataBundle, device: torch.device | str,
           store: StateStore | None, hand_off: HandOff | None, graphed: bool) -> TrainedModel:
    start = time.perf_counter()
    set_deterministic(spec.training.deterministic, device)
    run, note = run_epochs(lambda: SingleRun(spec, job, bundle, device, hand_off, graphed),
                           spec.training.epochs, spec.kept_epochs, store)
    return TrainedModel(job, tuple(run.checkpoints), time.perf_counter() - start,
                        notes=(note,) if note else ())
