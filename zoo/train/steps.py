"""One model's training step as a CUDA graph: forward, backward, optimizer and schedule replayed
with no host work per step but copying the batch in (launch overhead off the hot path).

The optimizer is functional over a per-step table of its coefficients (learning rate, momentum,
bias corrections) read off train_model's own torch optimizer and schedule, indexed on the
device by a step counter that the graph advances; divergence is a device flag read every
CHECK_EVERY steps. The result is train_model's up to rounding (the stacked population's
arithmetic); the same spec gives the same bits on the same GPU. Batches of another shape (an
epoch's last, smaller batch) run the very same step eagerly. On the CPU nothing is captured:
that path exists to test the arithmetic against train_model. With a store, the state (the
step's optimizer tensors, counter and flag included) is saved and resumed through
zoo.trainstate, restored in place so that a captured graph keeps its tensors.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from zoo import trainstate
from zoo.augment import augment
from zoo.datasets.base import DataBundle
from zoo.objective import Objective
from zoo.population import adam_update, hyperparameters, sgd_update
from zoo.precision import autocast
from zoo.spec import Cell, ModelJob, TrainingSpec, ZooSpec
from zoo.training import (Keep, TrainedModel, build_model, derive_seed, handed_over, snapshot,
                          starting_point)

GRAPH_TASKS = ("classification", "language_model")  # PINN losses differentiate their inputs
WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graphs asks
CHECK_EVERY = 64  # steps between host reads of the divergence flag (the only sync)


def use_graphs(recipe: TrainingSpec, task: str, device: torch.device | str) -> bool:
    """Whether a model trains through GraphedStep: training.graphs "auto", on CUDA, a task
    whose loss has static shapes."""
    return (recipe.graphs == "auto" and torch.device(device).type == "cuda"
            and task in GRAPH_TASKS)


def has_convolutions(model: nn.Module) -> bool:
    """True when `model` holds a 2-d convolution (channels-last pays for those on CUDA)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


class GraphedStep:
    """Call with a batch to take one training step; capture happens on CUDA after warm-up."""

    def __init__(self, model: nn.Module, objective: Objective, recipe: TrainingSpec, cell: Cell,
                 total_steps: int) -> None:
        self.model, self.objective, self.recipe = model, objective, recipe
        self.params = [p for p in model.parameters() if p.requires_grad]
        device = self.params[0].device
        rows = hyperparameters(recipe, cell, total_steps)
        self.table = torch.tensor(rows, dtype=self.params[0].dtype, device=device)
        self.state = [[torch.zeros_like(p) for _ in range(1 if recipe.optimizer == "sgd" else 2)]
                      for p in self.params]
        self.counter = torch.zeros(1, dtype=torch.long, device=device)
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.capture = device.type == "cuda"
        self.warm = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, ...] = ()

    def _step(self, batch: tuple[torch.Tensor, ...]) -> None:
        with autocast(self.recipe.precision, self.params[0].device):
            loss = self.objective.loss(self.model, batch)
        grads = torch.autograd.grad(loss, self.params)
        coefficients = self.table.index_select(0, self.counter).squeeze(0).unbind(0)
        update = sgd_update if self.recipe.optimizer == "sgd" else adam_update
        with torch.no_grad():
            for param, grad, state in zip(self.params, grads, self.state):
                update(param, grad, state, coefficients, self.recipe.optimizer == "adamw")
            self.finite.logical_and_(torch.isfinite(loss.detach()))
            self.counter.add_(1)

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> None:
        """One step on `batch`: replayed when it has the captured shapes, else eager."""
        if not self.capture:
            return self._step(batch)
        if self.graph is not None:
            if all(s.shape == b.shape for s, b in zip(self.static, batch)):
                for static, value in zip(self.static, batch):
                    static.copy_(value)
                return self.graph.replay()
            return self._step(batch)
        if self.warm < WARMUP_STEPS:
            self.warm += 1
            return self._side_stream(batch)
        self.static = tuple(t.clone() for t in batch)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step(self.static)
        self.graph.replay()

    def _side_stream(self, batch: tuple[torch.Tensor, ...]) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._step(batch)
        torch.cuda.current_stream().wait_stream(stream)

    def diverged(self) -> bool:
        """Whether any step so far had a non-finite loss (reads the device flag: a sync)."""
        return not bool(self.finite)


def prepare(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Channels-last memory for convolutional models on CUDA (values and results unchanged)."""
    if torch.device(device).type == "cuda" and has_convolutions(model):
        return model.to(memory_format=torch.channels_last)
    return model


def train_graphed(spec: ZooSpec, job: ModelJob, bundle: DataBundle,
                  device: torch.device | str = "cuda",
                  store: trainstate.StateStore | None = None,
                  keep: Keep | None = None) -> TrainedModel:
    """train_model through GraphedStep: the same init, data order, augmentation draws (padded
    with the normalised raw zero) and kept checkpoints. A diverged run is found within
    CHECK_EVERY steps; checkpoints after it are flagged non-finite as in train_model. With a
    `store`, the state is saved and resumed as train_model's: the result equals an
    uninterrupted graphed run's bit for bit. With `keep`, each kept checkpoint's weights are
    handed to it as train_model does.
    """
    start = time.perf_counter()
    recipe, cell = spec.training, job.cell
    data = bundle.subsample(cell.data_fraction).to(device)
    objective = Objective(data, beta=cell.beta)
    model = prepare(build_model(spec, cell, data, job.seed).to(device), device)
    steps_per_epoch = math.ceil(data.num_train / cell.batch_size)
    step = GraphedStep(model, objective, recipe, cell, steps_per_epoch * recipe.epochs)
    generator = torch.Generator().manual_seed(derive_seed(job.seed, "data"))
    kept = spec.kept_epochs
    identity = {"model_id": job.model_id, "epochs": recipe.epochs, "kept": sorted(kept),
                "trained_by": "graphed"}  # its optimizer state is not train_model's
    resumed = trainstate.resume_graphed(store, identity, model, step, generator)
    checkpoints, first, diverged = starting_point(resumed, model, objective, kept, keep)
    fill = data.normalization.raw_zero() if data.normalization else None  # pad like raw 0
    autosave = trainstate.Autosave(store)
    for epoch in range(first, recipe.epochs + 1):
        diverged = _epoch(step, data, cell.batch_size, generator, fill, diverged)
        if epoch in kept:
            checkpoints.append(handed_over(snapshot(model, objective, epoch, diverged), keep))
        autosave(epoch, epoch in kept, lambda: trainstate.pack_graphed(
            identity, model, step, generator, diverged, checkpoints))
    return TrainedModel(job, tuple(checkpoints), time.perf_counter() - start)


def _epoch(step: GraphedStep, data: DataBundle, batch_size: int, generator: torch.Generator,
           fill: torch.Tensor | None, diverged: bool) -> bool:
    """One epoch of steps in train_model's order; returns whether the run has diverged."""
    step.model.train()
    augmentation = step.recipe.augmentation
    order = torch.randperm(data.num_train, generator=generator).to(data.train[0].device)
    for count, index in enumerate(order.split(batch_size), start=1):
        if diverged:
            break
        batch = tuple(t[index] for t in data.train)
        if augmentation != "none":
            batch = (augment(batch[0], augmentation, generator, fill), *batch[1:])
        step(batch)
        if count % CHECK_EVERY == 0:
            diverged = step.diverged()
    return diverged or step.diverged()
