"""Functional SGD (momentum), Adam and AdamW: in-place updates over per-step coefficient tables
read off the torch optimizer and schedule that train a single model eagerly.

The CUDA-graphed step and the stacked population update with these, so their arithmetic is
torch's single-tensor optimizers' up to rounding, with every per-step number on the device.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from zoo.spec import Cell, ModelJob, TrainingSpec
from zoo.train.base import make_optimizer, make_schedule

# update(param, grad, state, coefficients, decoupled): one in-place step, `grad` consumed
Update = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor], tuple[torch.Tensor, ...], bool],
                  None]


def coefficients(kind: str, group: dict, step: int) -> tuple[float, ...]:
    """The numbers torch's single-tensor SGD/Adam/AdamW use at `step` (1-based), as floats."""
    lr, decay = group["lr"], group["weight_decay"]
    if kind == "sgd":
        return lr, group["momentum"], decay
    beta1, beta2 = group["betas"]
    return (lr / (1 - beta1 ** step), 1 - beta1, beta2, 1 - beta2,
            (1 - beta2 ** step) ** 0.5, group["eps"], decay, 1 - lr * decay)


def hyperparameters(recipe: TrainingSpec, cell: Cell, total_steps: int) -> list[tuple[float, ...]]:
    """One model's per-step coefficients, read off the eager step's own optimizer and schedule."""
    dummy = nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer(recipe, cell, [dummy])
    schedule = make_schedule(recipe, optimizer, cell, total_steps)
    rows = []
    for step in range(1, total_steps + 1):
        rows.append(coefficients(recipe.optimizer, optimizer.param_groups[0], step))
        optimizer.step()  # a no-op (no gradient) that keeps the schedule's call order honest
        schedule.step()
    return rows


def schedule_table(recipe: TrainingSpec, jobs: Sequence[ModelJob], total_steps: int,
                   like: torch.Tensor) -> torch.Tensor:
    """(steps, members, coefficients): each member's optimizer numbers at every step."""
    per_cell = {cell: hyperparameters(recipe, cell, total_steps)
                for cell in dict.fromkeys(job.cell for job in jobs)}
    rows = [per_cell[job.cell] for job in jobs]
    return torch.tensor(rows, dtype=like.dtype, device=like.device).transpose(0, 1).contiguous()


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
    coefficients `coefficients` gives; `state` = [first, second moment]; `grad` is consumed."""
    step_size, one_minus_beta1, beta2, one_minus_beta2, bias2_sqrt, eps, decay, shrink = c
    p.mul_(shrink) if decoupled else grad.addcmul_(p, decay)
    mean, square = state
    mean.lerp_(grad, one_minus_beta1)
    square.mul_(beta2).addcmul_(grad, grad * one_minus_beta2)
    denominator = square.sqrt().div_(bias2_sqrt).add_(eps)
    p.addcdiv_(mean * step_size, denominator, value=-1)


def update_of(kind: str) -> Update:
    """The in-place update for optimizer `kind` (sgd, adam, adamw)."""
    return sgd_update if kind == "sgd" else adam_update


def moments(kind: str) -> int:
    """How many state tensors per parameter optimizer `kind` keeps (momentum; two moments)."""
    return 1 if kind == "sgd" else 2


class PopulationOptimizer:
    """SGD (momentum), Adam or AdamW over stacked parameters, each member on its own table."""

    def __init__(self, kind: str, params: dict[str, torch.Tensor], table: torch.Tensor) -> None:
        self.kind = kind
        self.table = table.permute(0, 2, 1).contiguous()  # (steps, coefficients, members)
        self.state = {n: [torch.zeros_like(p) for _ in range(moments(kind))]
                      for n, p in params.items()}

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: Sequence[torch.Tensor], index: int,
             mask: torch.Tensor | None) -> None:
        """Apply step `index` (0-based) in place, consuming `grads`; members where `mask` is
        False stay as they were."""
        update = update_of(self.kind)
        row, shaped = self.table[index], {}
        for (name, param), grad in zip(params.items(), grads):
            if param.dim() not in shaped:  # coefficients as (members, 1, ...) to broadcast
                shaped[param.dim()] = row.view(*row.shape, *[1] * (param.dim() - 1)).unbind(0)
            tensors = [param, *self.state[name]]
            saved = None if mask is None else [t.clone() for t in tensors]
            update(param, grad, self.state[name], shaped[param.dim()], self.kind == "adamw")
            if saved is not None:  # rare: only after a member diverged
                moving = mask.view(-1, *[1] * (param.dim() - 1))
                for tensor, old in zip(tensors, saved):
                    tensor.copy_(torch.where(moving, tensor, old))
