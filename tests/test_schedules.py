"""Whole-run coefficient tables equal, bit for bit, what torch's optimizer and schedulers give."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from zoo.spec import OPTIMIZERS, SCHEDULES, Cell, ModelJob, TrainingSpec
from zoo.train.base import make_optimizer, make_schedule
from zoo.train.optimizers import hyperparameters, schedule_table
from zoo.train.schedules import cosine, onecycle

CELLS = (Cell(4, 1.0, 1.0, 16, 0.05, 5e-4), Cell(4, 1.0, 1.0, 16, 0.1, 0.0),
         Cell(4, 1.0, 1.0, 16, 3e-3, 1e-2), Cell(4, 1.0, 1.0, 16, 0.0123, 0.3))
LENGTHS = (1, 2, 3, 4, 7, 33, 250, 317)  # OneCycle's turn falls before, on and between steps


def torch_rows(recipe: TrainingSpec, cell: Cell, total_steps: int) -> list[tuple[float, ...]]:
    """What torch's single-tensor optimizer reads off its param group at each step (1-based),
    the schedule stepped after each (no-op) optimizer step, as training steps it."""
    optimizer = make_optimizer(recipe, cell, [nn.Parameter(torch.zeros(1))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-op step: "optimizer.step() ... before"
        schedule = make_schedule(recipe, optimizer, cell, total_steps)
        rows = []
        for step in range(1, total_steps + 1):
            group = optimizer.param_groups[0]
            lr, decay = group["lr"], group["weight_decay"]
            if recipe.optimizer == "sgd":
                rows.append((lr, group["momentum"], decay))
            else:
                beta1, beta2 = group["betas"]
                rows.append((lr / (1 - beta1 ** step), 1 - beta1, beta2, 1 - beta2,
                             (1 - beta2 ** step) ** 0.5, group["eps"], decay, 1 - lr * decay))
            optimizer.step()
            schedule.step()
    return rows


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_models_table_is_torchs_bit_for_bit(optimizer: str, schedule: str) -> None:
    recipe = TrainingSpec(optimizer=optimizer, schedule=schedule)
    for cell in CELLS:
        for length in LENGTHS:
            ours = hyperparameters(recipe, cell, length)
            assert ours.dtype == torch.float64
            assert ours.tolist() == [list(row) for row in torch_rows(recipe, cell, length)], \
                (cell, length)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_populations_table_rounds_torchs_numbers_per_member(optimizer: str,
                                                              schedule: str) -> None:
    """(steps, members, coefficients) in the parameters' dtype: members of one cell share a
    column's numbers, members of other cells have their own."""
    recipe = TrainingSpec(optimizer=optimizer, schedule=schedule)
    jobs = [ModelJob(cell, seed, f"c{index}", f"m{seed}")
            for seed, (index, cell) in enumerate([(0, CELLS[0]), (1, CELLS[1]), (0, CELLS[0]),
                                                  (2, CELLS[2])])]
    like = torch.zeros(2, dtype=torch.float32)
    table = schedule_table(recipe, jobs, 250, like)
    expected = torch.tensor([torch_rows(recipe, job.cell, 250) for job in jobs],
                            dtype=torch.float32).transpose(0, 1)
    assert table.dtype == torch.float32 and table.shape == (250, 4, 3 if optimizer == "sgd" else 8)
    assert torch.equal(table, expected)


def test_onecycle_rises_to_the_top_then_falls_to_the_floor() -> None:
    lr, momentum = onecycle(100, 0.3, initial=0.004, top=0.1, final=4e-7, low=0.85, high=0.95)
    peak = int(lr.argmax())
    assert peak == 29 and lr[peak] == 0.1 and momentum[peak] == 0.85  # the turn: 0.3 * 100 - 1
    assert lr[0] == pytest.approx(0.004) and lr[-1] == 4e-7 and momentum[-1] == 0.95
    assert bool((lr[:peak].diff() > 0).all()) and bool((lr[peak:].diff() < 0).all())


def test_cosine_multiplies_its_ratios_in_order() -> None:
    """The recursive form, not the closed one: the first lr is the base, the rest fall."""
    lr = cosine(8, 0.5)
    assert lr.shape == (8,) and lr[0] == 0.5 and bool((lr.diff() < 0).all())
    assert cosine(1, 0.5).tolist() == [0.5]
    closed = [0.25 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert lr.tolist() == pytest.approx(closed, rel=1e-14, abs=0)
