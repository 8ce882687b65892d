"""Torch's learning-rate schedules (OneCycle, cosine, constant) as whole-run float64 tables.

Each table holds the numbers torch's scheduler leaves in the optimizer's param group before
each step, bit for bit, computed once per run: elementwise float64 tensor arithmetic (IEEE
operations, rounded as Python rounds them) and the transcendental functions through Python's
own `math.cos` and `pow` over a whole run's arguments at once (torch's vectorised cos/pow may
round differently from the C library that torch's schedulers call).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import accumulate, repeat
from operator import mul

import numpy as np
import torch

F64 = torch.float64


def math_of(function: Callable[..., float], *arguments: torch.Tensor | float) -> torch.Tensor:
    """`function` (math.cos, pow) elementwise as Python computes it, over float64 tensors."""
    lists = [a.tolist() if isinstance(a, torch.Tensor) else repeat(a) for a in arguments]
    return doubles(map(function, *lists))


def doubles(values: Iterable[float]) -> torch.Tensor:
    """Python floats as a float64 tensor (through numpy: torch.tensor of a list is slow)."""
    return torch.from_numpy(np.fromiter(values, dtype=np.float64))


def anneal_cos(start: torch.Tensor, end: torch.Tensor, pct: torch.Tensor) -> torch.Tensor:
    """OneCycleLR's cosine annealing from `start` to `end` at fraction `pct`, per step."""
    cos_out = math_of(math.cos, math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def onecycle(total_steps: int, warmup: float, initial: float, top: float, final: float,
             low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """OneCycleLR's (learning rate, momentum) before each of `total_steps` steps: the lr rises
    from `initial` to `top` over the `warmup` fraction of steps (pct_start), then falls to
    `final`; the momentum (or beta1) falls from `high` to `low`, then rises back."""
    step = torch.arange(total_steps, dtype=F64)
    turn = float(warmup * total_steps) - 1
    rising = step <= turn

    def phase(first: float, second: float) -> torch.Tensor:  # per step: first while rising
        return torch.where(rising, torch.tensor(first, dtype=F64), second)

    start_step, end_step = phase(0.0, turn), phase(turn, total_steps - 1)
    pct = (step - start_step) / (end_step - start_step)
    lr = anneal_cos(phase(initial, top), phase(top, final), pct)
    momentum = anneal_cos(phase(high, low), phase(low, high), pct)
    return lr, momentum


def cosine(total_steps: int, base: float) -> torch.Tensor:
    """CosineAnnealingLR's learning rate (eta_min 0) before each of `total_steps` steps: its
    recursive form, each lr the previous one times a ratio of cosines, multiplied in order."""
    step = torch.arange(1, total_steps, dtype=F64)
    now = math_of(math.cos, math.pi * step / total_steps)
    before = math_of(math.cos, math.pi * (step - 1) / total_steps)
    ratios = ((1 + now) / (1 + before)).tolist()
    return doubles(accumulate(ratios, mul, initial=base))


def bias_corrections(beta: torch.Tensor | float, total_steps: int) -> torch.Tensor:
    """`beta ** step` for steps 1..total_steps, as Python's float power gives it."""
    return math_of(pow, beta, torch.arange(1, total_steps + 1, dtype=F64))
