"""Train a cell's models as one stacked population (zoo.train.stacked), with its state
pack and resume; each result is the single model's up to rounding."""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch

from zoo.augment import apply, epoch_draws, joined
from zoo.datasets.base import DataBundle
from zoo.objective import Objective
from zoo.precision import autocast, set_deterministic
from zoo.spec import ModelJob, ZooSpec
from zoo.train.base import (Checkpoint, HandOff, TrainedModel, build_model, derive_seed,
                            handed_over, is_finite_checkpoint)
from zoo.train.loop import run_epochs
from zoo.train.optimizers import PopulationOptimizer, schedule_table
from zoo.train.stacked import Population, check_jobs, population_step
from zoo.train.state import (Entry, SavedState, StateStore, Tensors, check_spooled,
                             checkpoint_of, facts_of, load_checked, ordered, restoring, under)
from zoo.train.steps import CHECK_EVERY


class PopulationRun:
    """Stacked members, their optimizer, generators, who is still active and the kept
    checkpoints (a loop.Run)."""

    def __init__(self, spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle,
                 device: torch.device | str, hand_offs: Sequence[HandOff | None]) -> None:
        recipe, cell = spec.training, jobs[0].cell
        self.data = bundle.subsample(cell.data_fraction).to(device)
        self.members = [build_model(spec, job.cell, self.data, job.seed).to(device)
                        for job in jobs]
        self.population = Population(self.members)
        self.objective = Objective(self.data, beta=cell.beta)
        total = math.ceil(self.data.num_train / cell.batch_size) * recipe.epochs
        table = schedule_table(recipe, jobs, total, next(iter(self.population.params.values())))
        self.optimizer = PopulationOptimizer(recipe.optimizer, self.population.params, table)
        self.generators = [torch.Generator().manual_seed(derive_seed(job.seed, "data"))
                           for job in jobs]
        self.identity = {"model_ids": [job.model_id for job in jobs], "epochs": recipe.epochs,
                         "kept": sorted(spec.kept_epochs)}
        self.device, self.recipe, self.batch_size = device, recipe, cell.batch_size
        self.active = torch.ones(len(jobs), dtype=torch.bool, device=device)
        self.step = 0
        self.checkpoints: list[list[Checkpoint]] = [[] for _ in jobs]
        self.hand_offs = hand_offs

    def resume(self, store: StateStore | None) -> int | None:
        state = load_checked(store, self.identity)
        if state is None:
            return None
        with restoring(store):
            self._restore(state)
        for held, hand_off in zip(self.checkpoints, self.hand_offs):
            check_spooled(store, held, hand_off)
        return state.epoch

    def _restore(self, state: SavedState) -> None:
        saved, population = state.tensors, self.population
        with torch.no_grad():
            for name, param in population.params.items():
                param.copy_(_same_shape(saved[f"params/{name}"], param))
            for name, buffer in population.buffers.items():
                buffer.copy_(_same_shape(saved[f"buffers/{name}"], buffer))
            for name, values in self.optimizer.state.items():
                for i, value in enumerate(values):
                    value.copy_(_same_shape(saved[f"optimizer/{name}/{i}"], value))
        for i, generator in enumerate(self.generators):
            generator.set_state(saved[f"rng/{i}"])
        for epoch, tensors, facts in state.checkpoints:
            if len(facts["members"]) != len(self.members):
                raise ValueError(f"{len(facts['members'])} members at epoch {epoch}")
            for m, fact in enumerate(facts["members"]):
                values = ordered(under(f"{m}/", tensors), population.keys)
                self.checkpoints[m].append(checkpoint_of(epoch, values, fact))
        self.step = int(state.scalars["step"])
        active = torch.tensor(state.scalars["active"], dtype=torch.bool, device=self.device)
        if active.shape != self.active.shape:
            raise ValueError(f"active has shape {tuple(active.shape)}")
        self.active = active

    def epoch(self) -> None:
        """Each member draws its permutation, then its epoch's augmentation draws, from its own
        generator as a single model does; each batch's draws are applied to all members' images
        at once."""
        data, generators, augmentation = self.data, self.generators, self.recipe.augmentation
        fill = data.normalization.raw_zero() if data.normalization else None
        with autocast(self.recipe.precision, self.device):
            orders = torch.stack([torch.randperm(data.num_train, generator=g)
                                  for g in generators])
            indices = orders.to(self.active.device).split(self.batch_size, dim=1)
            sizes = [i.shape[1] for i in indices]
            members = [epoch_draws(augmentation, sizes, g, self.active.device)
                       for g in generators]
            sync = self.active.device.type == "cpu"  # elsewhere read `active` every CHECK_EVERY
            for k, index in enumerate(indices):
                if (sync or k % CHECK_EVERY == 0) and not bool(self.active.any()):
                    break
                batch = [t[index] for t in data.train]
                if augmentation != "none":
                    images = batch[0].flatten(0, 1)  # (members * B, C, H, W)
                    drawn = joined([draws[k] for draws in members])
                    batch[0] = apply(images, augmentation, drawn, fill).reshape(batch[0].shape)
                self.active = population_step(self.population, self.optimizer, batch,
                                              self.active, self.step, sync)
                self.step += 1

    def checkpoint(self, epoch: int) -> None:
        """Every member's checkpoint; inactive (diverged) members are not finite. Each member
        is evaluated as a single module by `Objective.evaluate`, the very code a reader uses,
        so a stored checkpoint reproduces its recorded metrics bit for bit."""
        for member, (held, module, hand_off) in enumerate(zip(self.checkpoints, self.members,
                                                              self.hand_offs)):
            state = self.population.state_dict(member)
            module.load_state_dict(state)
            train = self.objective.evaluate(module, "train")
            test = self.objective.evaluate(module, "test")
            finite = is_finite_checkpoint(state, [train, test], bool(self.active[member]))
            held.append(handed_over(Checkpoint(epoch, state, train, test, finite), hand_off))

    def pack(self) -> tuple[Tensors, dict[str, Any], list[Entry]]:
        """The population's tensors and its members' checkpoints, one entry per kept epoch
        (`<member>/<key>` tensors)."""
        population = self.population
        tensors = {f"params/{k}": v for k, v in population.params.items()}
        tensors.update({f"buffers/{k}": v for k, v in population.buffers.items()})
        tensors.update({f"optimizer/{k}/{i}": v for k, values in self.optimizer.state.items()
                        for i, v in enumerate(values)})
        tensors.update({f"rng/{i}": g.get_state() for i, g in enumerate(self.generators)})
        scalars = {"identity": self.identity, "step": self.step,
                   "active": [bool(a) for a in self.active.tolist()]}
        saved = []
        for same_epoch in zip(*self.checkpoints):
            weights = {f"{m}/{k}": v for m, c in enumerate(same_epoch)
                       for k, v in c.state_dict.items()}
            facts = [facts_of(c) for c in same_epoch]
            saved.append((same_epoch[0].epoch, weights, {"members": facts}))
        return tensors, scalars, saved


def train_population(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle,
                     device: torch.device | str = "cpu", store: StateStore | None = None,
                     hand_offs: Sequence[HandOff | None] | None = None) -> list[TrainedModel]:
    """Train `jobs` (one architecture, width, batch size; any seeds, learning rates, weight
    decays) as one population on `device`; each result is train_model's up to rounding, in job
    order, trained_by "stacked", with `seconds` the population's time shared equally. With a
    `store`, the state is saved and resumed as in train_model (bit for bit). `hand_offs`:
    per job, where its checkpoints go (train_model's `hand_off`)."""
    start = time.perf_counter()
    check_jobs(jobs, bundle.info.task)
    set_deterministic(spec.training.deterministic, device)
    held = list(hand_offs) if hand_offs is not None else [None] * len(jobs)
    run, note = run_epochs(lambda: PopulationRun(spec, jobs, bundle, device, held),
                           spec.training.epochs, spec.kept_epochs, store)
    seconds = (time.perf_counter() - start) / len(jobs)
    return [TrainedModel(job, tuple(c), seconds, trained_by="stacked",
                         notes=(note,) if note and i == 0 else ())  # said once per population
            for i, (job, c) in enumerate(zip(jobs, run.checkpoints))]


def _same_shape(saved: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`saved`, refused unless it has `target`'s shape (copy_ would broadcast it)."""
    if saved.shape != target.shape:
        raise ValueError(f"a saved tensor of shape {tuple(saved.shape)} where "
                         f"{tuple(target.shape)} is held")
    return saved
