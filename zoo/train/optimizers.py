"""Functional SGD (momentum), Adam and AdamW: in-place updates over per-step coefficient tables,
each built once per run (zoo.train.schedules) bit-equal to what the torch optimizer and
schedule that train a single model eagerly would use at every step.

The CUDA-graphed step and the stacked population update with these, so their arithmetic is
torch's single-tensor optimizers' up to rounding, with every per-step number on the device.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from zoo.spec import Cell, ModelJob, TrainingSpec
from zoo.train import schedules
from zoo.train.base import ONECYCLE_WARMUP, make_optimizer, make_schedule

# update(param, grad, state, coefficients, decoupled): one in-place step, `grad` consumed
Update = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor], tuple[torch.Tensor, ...], bool],
                  None]


def learning_rates(recipe: TrainingSpec, group: dict,
                   total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(learning rate, momentum or beta1) before each step, float64, as the schedule that
    make_schedule built over `group` (a param group right after it was built) sets them."""
    if recipe.schedule == "onecycle":
        return schedules.onecycle(total_steps, ONECYCLE_WARMUP, group["initial_lr"],
                                  group["max_lr"], group["min_lr"], group["base_momentum"],
                                  group["max_momentum"])
    momentum = group["momentum"] if recipe.optimizer == "sgd" else group["betas"][0]
    lr = (schedules.cosine(total_steps, group["initial_lr"]) if recipe.schedule == "cosine"
          else torch.full((total_steps,), group["lr"], dtype=torch.float64))
    return lr, torch.full((total_steps,), momentum, dtype=torch.float64)


def hyperparameters(recipe: TrainingSpec, cell: Cell, total_steps: int) -> torch.Tensor:
    """One model's coefficients before each step, (steps, coefficients) float64: the numbers
    torch's single-tensor SGD (lr, momentum, weight decay) or Adam/AdamW (step size,
    1 - beta1, beta2, 1 - beta2, sqrt of beta2's bias correction, eps, weight decay,
    1 - lr * weight decay) use under the eager step's own optimizer and schedule, bit for bit."""
    optimizer = make_optimizer(recipe, cell, [nn.Parameter(torch.zeros(1))])
    make_schedule(recipe, optimizer, cell, total_steps)
    group = optimizer.param_groups[0]
    lr, beta1 = learning_rates(recipe, group, total_steps)
    decay = torch.full((total_steps,), group["weight_decay"], dtype=torch.float64)
    if recipe.optimizer == "sgd":
        return torch.stack([lr, beta1, decay], 1)
    beta2, eps = group["betas"][1], group["eps"]
    bias2_sqrt = schedules.math_of(pow, 1 - schedules.bias_corrections(beta2, total_steps), 0.5)
    return torch.stack([lr / (1 - schedules.bias_corrections(beta1, total_steps)), 1 - beta1,
                        torch.full_like(lr, beta2), torch.full_like(lr, 1 - beta2), bias2_sqrt,
                        torch.full_like(lr, eps), decay, 1 - lr * decay], 1)


def schedule_table(recipe: TrainingSpec, jobs: Sequence[ModelJob], total_steps: int,
                   like: torch.Tensor) -> torch.Tensor:
    """(steps, members, coefficients): each member's optimizer numbers at every step."""
    per_cell = {cell: hyperparameters(recipe, cell, total_steps)
                for cell in dict.fromkeys(job.cell for job in jobs)}
    table = torch.stack([per_cell[job.cell] for job in jobs], 1)
    return table.to(dtype=like.dtype, device=like.device)


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
    coefficients `hyperparameters` gives; `state` = [first, second moment]; `grad` is consumed."""
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
