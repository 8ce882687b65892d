"""Training: a spec's models trained deterministically, one by one or stacked.

Layers, each importing only those above it (tests/test_imports.py refuses any circle):
    base        seeds, build_model, optimizer and schedule, Checkpoint/TrainedModel, hand-off
    spool       kept checkpoints on disk as training makes them
    state       a run's saved state (StateStore, save/load, Autosave)
    schedules   torch's OneCycle/cosine schedules as whole-run float64 tables, bit for bit
    optimizers  functional SGD/Adam/AdamW over per-step coefficient tables
    steps       one model's step: EagerStep, GraphedStep (CUDA graphs)
    stacked     a stacked Population, its forward pass and population_step
    loop        the loop every run shares (resume, epochs, checkpoints, autosave)
    single      train_model / train_graphed: one model through a step
    population  train_population: a stacked population
    cost        the cost model deciding where stacking pays (choose_stacking)
    dispatch    train_cell_models: a cell's models, stacked or one by one
"""

from zoo.train.base import (Checkpoint, HandOff, TrainedModel, build_model, derive_seed,
                            is_finite_checkpoint, make_optimizer, make_schedule)
from zoo.train.cost import COST, StepCost, choose_stacking, model_shape, predicted_speedup
from zoo.train.dispatch import train_cell_models
from zoo.train.population import train_population
from zoo.train.single import train_graphed, train_model
from zoo.train.spool import Spool
from zoo.train.state import STATE_JSON, StateStore, load_state, save_state, state_keys
from zoo.train.steps import EagerStep, GraphedStep, use_graphs

__all__ = [
    "COST", "STATE_JSON", "Checkpoint", "EagerStep", "GraphedStep", "HandOff", "Spool",
    "StateStore", "StepCost", "TrainedModel", "build_model", "choose_stacking", "derive_seed",
    "is_finite_checkpoint", "load_state", "make_optimizer", "make_schedule", "model_shape",
    "predicted_speedup", "save_state", "state_keys", "train_cell_models", "train_graphed",
    "train_model", "train_population", "use_graphs",
]
