"""One model's training step, two ways: eager (torch's optimizer and schedule) and as a CUDA
graph (forward, backward, optimizer and schedule replayed with no host work per step but
copying the batch in: launch overhead off the hot path). Each packs and restores its own
optimizer state for zoo.train.state.

The graphed step's optimizer is functional (zoo.train.optimizers) over a per-step table of its
coefficients, built once and bit-equal to the eager step's own optimizer and schedule, indexed
on the device by a step counter that the graph advances; divergence is a device flag read every CHECK_EVERY
steps. Its result is the eager step's up to rounding (the stacked population's arithmetic);
the same spec gives the same bits on the same GPU. Batches of another shape (an epoch's last,
smaller batch) run the very same step eagerly. On the CPU nothing is captured: that path
exists to test the arithmetic against the eager step. Its state is restored in place, so that
a captured graph keeps its tensors.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from zoo.objective import Objective
from zoo.precision import autocast
from zoo.spec import Cell, TrainingSpec
from zoo.train.base import make_optimizer, make_schedule
from zoo.train.optimizers import hyperparameters, moments, update_of
from zoo.train.state import Tensors, cpu_copy

GRAPH_TASKS = ("classification", "language_model")  # PINN losses differentiate their inputs
WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graphs asks
CHECK_EVERY = 64  # steps between host reads of the divergence flag (the only sync)


class Step(Protocol):
    """One model's training step: call with a batch; what a single-model run drives."""

    model: nn.Module
    check_every: int  # steps between reads of `diverged()` (each read may sync)

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> None: ...

    def diverged(self) -> bool: ...

    def pack(self) -> tuple[Tensors, dict[str, Any]]: ...

    def restore(self, tensors: Tensors, scalars: dict[str, Any]) -> None: ...


def use_graphs(recipe: TrainingSpec, task: str, device: torch.device | str) -> bool:
    """Whether a model trains through GraphedStep: training.graphs "auto", on CUDA, a task
    whose loss has static shapes."""
    return (recipe.graphs == "auto" and torch.device(device).type == "cuda"
            and task in GRAPH_TASKS)


def has_convolutions(model: nn.Module) -> bool:
    """True when `model` holds a 2-d convolution (channels-last pays for those on CUDA)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Channels-last memory for convolutional models on CUDA (values and results unchanged)."""
    if torch.device(device).type == "cuda" and has_convolutions(model):
        return model.to(memory_format=torch.channels_last)
    return model


class EagerStep:
    """A step as torch trains: loss, backward, torch's optimizer, then the schedule. On the CPU
    a batch whose loss is not finite takes no step and marks the run diverged (the check is
    free there); elsewhere the loss's finiteness goes into a device flag read every
    CHECK_EVERY steps, so no step waits for the host (steps after a non-finite loss change
    only weights that are stored as not finite)."""

    def __init__(self, model: nn.Module, objective: Objective, recipe: TrainingSpec, cell: Cell,
                 total_steps: int) -> None:
        self.model, self.objective, self.recipe = model, objective, recipe
        params = [p for p in model.parameters() if p.requires_grad]
        self.device = params[0].device
        self.optimizer = make_optimizer(recipe, cell, params)
        self.schedule = make_schedule(recipe, self.optimizer, cell, total_steps)
        self.stopped = False
        self.sync = self.device.type == "cpu"
        self.check_every = 1 if self.sync else CHECK_EVERY
        self.finite = torch.ones((), dtype=torch.bool, device=self.device)

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> None:
        """One step on `batch` (on the CPU none when its loss is not finite)."""
        with autocast(self.recipe.precision, self.device):
            loss = self.objective.loss(self.model, batch)
        if self.sync and not torch.isfinite(loss):
            self.stopped = True
            return
        if not self.sync:
            self.finite.logical_and_(torch.isfinite(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()

    def diverged(self) -> bool:
        """Whether a step met a non-finite loss (off the CPU: reads the device flag, a sync)."""
        return self.stopped if self.sync else not bool(self.finite)

    def pack(self) -> tuple[Tensors, dict[str, Any]]:
        """The optimizer's per-parameter tensors (`optimizer/<index>/<name>`), its param groups
        and the schedule's state."""
        body = self.optimizer.state_dict()
        tensors = {f"optimizer/{index}/{name}": cpu_copy(value)
                   for index, values in body["state"].items() for name, value in values.items()}
        return tensors, {"param_groups": body["param_groups"],
                         "schedule": self.schedule.state_dict()}

    def restore(self, tensors: Tensors, scalars: dict[str, Any]) -> None:
        """Load what `pack` saved; JSON lists go back to tuples where torch had them."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        fresh = self.optimizer.state_dict()["param_groups"]
        groups = [{k: tuple(v) if isinstance(f.get(k), tuple) else v for k, v in g.items()}
                  for g, f in zip(scalars["param_groups"], fresh)]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.schedule.load_state_dict(scalars["schedule"])


class GraphedStep:
    """Call with a batch to take one training step; capture happens on CUDA after warm-up."""

    check_every = CHECK_EVERY

    def __init__(self, model: nn.Module, objective: Objective, recipe: TrainingSpec, cell: Cell,
                 total_steps: int) -> None:
        self.model, self.objective, self.recipe = model, objective, recipe
        self.params = [p for p in model.parameters() if p.requires_grad]
        device = self.params[0].device
        self.table = hyperparameters(recipe, cell, total_steps).to(device, self.params[0].dtype)
        self.state = [[torch.zeros_like(p) for _ in range(moments(recipe.optimizer))]
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
        update = update_of(self.recipe.optimizer)
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

    def pack(self) -> tuple[Tensors, dict[str, Any]]:
        """The optimizer tensors (`optimizer/<param>/<moment>`), step counter and finite flag."""
        tensors = {f"optimizer/{i}/{j}": v for i, values in enumerate(self.state)
                   for j, v in enumerate(values)}
        tensors.update({"step/counter": self.counter, "step/finite": self.finite})
        return tensors, {}

    def restore(self, tensors: Tensors, scalars: dict[str, Any]) -> None:
        """Load what `pack` saved in place (a captured graph keeps its tensors' addresses)."""
        with torch.no_grad():
            for i, values in enumerate(self.state):
                for j, value in enumerate(values):
                    value.copy_(tensors[f"optimizer/{i}/{j}"])
            self.counter.copy_(tensors["step/counter"])
            self.finite.copy_(tensors["step/finite"])
