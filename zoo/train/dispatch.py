"""The cell-level dispatcher: train a cell's models stacked or one by one."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from zoo.datasets.base import DataBundle
from zoo.folder.storestates import StoreStates
from zoo.spec import ModelJob, ZooSpec
from zoo.train.base import TrainedModel
from zoo.train.cost import choose_stacking
from zoo.train.population import train_population
from zoo.train.single import train_model
from zoo.train.spool import Spool
from zoo.train.state import StateStore, population_key


def train_cell_models(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle,
                      device: torch.device | str = "cpu", stacked: bool | None = None,
                      state_folder: Path | StoreStates | None = None,
                      spool: Spool | None = None) -> list[TrainedModel]:
    """Train `jobs` stacked where choose_stacking says so, else one by one with train_model.

    `stacked` overrides the choice: a zoo that grows trains each cell the way it was trained
    before, so the models it already had come out bit for bit the same. With `state_folder`,
    training states are saved and resumed there (`<model_id>/`, or `population_key(jobs)/`
    stacked; a zoo on a store's `StoreStates` copies each save to the store).
    With `spool`, checkpoints go there as they are made (TrainedModel holds no weights).
    """
    hand_offs = [None if spool is None else spool.hand_off(job.model_id) for job in jobs]

    def store(key: str) -> StateStore | None:
        if state_folder is None:
            return None
        on_save = state_folder.push if isinstance(state_folder, StoreStates) else None
        return StateStore(state_folder, key, on_save=on_save)

    if stacked if stacked is not None else choose_stacking(spec, jobs, bundle, device):
        return train_population(spec, jobs, bundle, device,
                                store(population_key(jobs)), hand_offs)
    return [train_model(spec, job, bundle, device, store(job.model_id), hand_off)
            for job, hand_off in zip(jobs, hand_offs)]
