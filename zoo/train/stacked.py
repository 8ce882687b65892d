"""A stacked population: many models of one architecture as one set of (members, ...) leaves,
its forward pass (batched matmuls for MLPs, vmap otherwise) and its optimizer step.

Members share architecture, width, batch size and data; each keeps what makes it itself:
init, data order, augmentation draws, optimizer state, schedule, divergence.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from zoo.spec import ModelJob
from zoo.train.optimizers import PopulationOptimizer

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


def check_jobs(jobs: Sequence[ModelJob], task: str) -> None:
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


def population_step(population: Population, optimizer: PopulationOptimizer,
                    batch: list[torch.Tensor], active: torch.Tensor, index: int,
                    sync: bool = True) -> torch.Tensor:
    """One optimizer step of every active member; returns who is still active.

    A member whose loss is not finite stops here, as in train_model: no update, but the forward
    pass that found it (BatchNorm statistics included) counts. Members stopped before keep
    everything, buffers included. With `sync` (the CPU, where reading `active` is free) the
    masks are applied only once a member stopped; without, always (the same values), so no
    step waits for the host.
    """
    stopped = bool(population.buffers) and (not sync or not bool(active.all()))
    before = {k: v.clone() for k, v in population.buffers.items()} if stopped else {}
    losses = member_losses(population.forward(batch[0]), batch[1])
    alive = active & torch.isfinite(losses.detach())
    grads = torch.autograd.grad(losses.sum(), list(population.params.values()))
    for key, old in before.items():  # after backward: BatchNorm saved its buffers for it
        was_active = active.view(-1, *[1] * (old.dim() - 1))
        population.buffers[key].copy_(torch.where(was_active, population.buffers[key], old))
    optimizer.step(population.params, grads, index,
                   None if sync and bool(alive.all()) else alive)
    return alive
