"""Resumable training state: save a run between epochs and restore it, without pickle.

A store keeps one run in `<folder>/<key>/`: `state-<epoch>.safetensors` holds every tensor
(weights, buffers, optimizer moments, RNG states), `checkpoint-<epoch>.safetensors` each kept
checkpoint so far (none when the run hands its checkpoints to a `zoo.spool.Spool`), and `state.json` the scalars (schedule, optimizer numbers, epoch, the
evaluations of the kept checkpoints). Every file is written under a temporary name and renamed;
`state.json` goes last, so a kill at any moment leaves the previous complete state.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from zoo.errors import TrainStateError
from zoo.folder.names import write_atomically
from zoo.spec import ModelJob, short_hash

STATE_JSON = "state.json"
FORMAT_VERSION = 1
Tensors = dict[str, torch.Tensor]
Entry = tuple[int, Tensors, dict[str, Any]]  # a kept checkpoint: epoch, tensors, JSON facts


@dataclass(frozen=True)
class StateStore:
    """Where a run keeps its state (`folder/key/`), and how often it saves.

    Args:
        folder: the stores' parent folder (e.g. `<zoo>/state`).
        key: this run's name in it (a model id, or a population's key).
        every_seconds: a state is saved at every kept epoch, and at the end of any epoch this
            long after the last save (an epoch is the finest grain).
        on_epoch: called with each finished epoch before the save decision (progress hooks;
            tests raise from it to kill a run).
    """

    folder: Path
    key: str
    every_seconds: float = 600.0
    on_epoch: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if not self.key or "/" in self.key or self.key.startswith("."):
            raise ValueError(f"key must be a plain file name, got {self.key!r}")
        if not (isinstance(self.every_seconds, (int, float)) and self.every_seconds >= 0):
            raise ValueError(f"every_seconds must be a number >= 0, got {self.every_seconds!r}")

    @property
    def path(self) -> Path:
        return Path(self.folder) / self.key

    def clear(self) -> None:
        """Delete this run's state (once its results are committed)."""
        if self.path.exists():
            shutil.rmtree(self.path)


def state_keys(jobs: Sequence[ModelJob]) -> list[str]:
    """The store keys that training `jobs` may use: each model id (one by one), and the key
    of their population (stacked)."""
    return [job.model_id for job in jobs] + [population_key(jobs)]


def population_key(jobs: Sequence[ModelJob]) -> str:
    """The store key of a population: a hash of its members' model ids."""
    return "population-" + short_hash(sorted(job.model_id for job in jobs))


@dataclass(frozen=True)
class SavedState:
    """A state read back: the epoch it ends, its tensors and scalars, the kept checkpoints."""

    epoch: int
    tensors: Tensors
    scalars: dict[str, Any]
    checkpoints: tuple[Entry, ...]


def save_state(store: StateStore, epoch: int, tensors: Tensors, scalars: dict[str, Any],
               checkpoints: Sequence[Entry]) -> None:
    """Save the state at the end of `epoch` with every kept checkpoint so far.

    Checkpoint files that the current `state.json` lists are not written again (others may
    be leftovers of a run killed while saving); older state files are removed after
    `state.json` names the new one.
    """
    store.path.mkdir(parents=True, exist_ok=True)
    current = store.path / STATE_JSON
    done = ({c["file"] for c in json.loads(current.read_text())["checkpoints"]}
            if current.exists() else set())
    listed = []
    for kept_epoch, kept_tensors, facts in checkpoints:
        name = f"checkpoint-{kept_epoch}.safetensors" if kept_tensors else None  # None: spooled
        if name is not None and name not in done:
            _write_tensors(store.path / name, kept_tensors)
        listed.append({"epoch": kept_epoch, "file": name, "facts": facts})
    name = f"state-{epoch}.safetensors"
    _write_tensors(store.path / name, tensors)
    body = {"format_version": FORMAT_VERSION, "epoch": epoch, "file": name,
            "scalars": scalars, "checkpoints": listed}
    write_atomically(store.path / STATE_JSON, json.dumps(body, sort_keys=True).encode())
    for old in store.path.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink()


def load_state(store: StateStore) -> SavedState | None:
    """The saved state, or None when the store holds none; TrainStateError names a bad file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = store.path / STATE_JSON
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text())
        if body["format_version"] != FORMAT_VERSION:
            raise TrainStateError(f"{path}: format version {body['format_version']}, this code "
                                  f"reads {FORMAT_VERSION}")
        tensors = load_file(store.path / body["file"])
        kept = tuple((int(c["epoch"]), load_file(store.path / c["file"]) if c["file"] else {},
                      c["facts"])
                     for c in body["checkpoints"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise TrainStateError(f"{path}: unreadable training state ({error})") from None
    return SavedState(int(body["epoch"]), tensors, body["scalars"], kept)


def _check_identity(state: SavedState, store: StateStore, identity: dict[str, Any]) -> None:
    """Refuse a state saved by another run (other model ids, recipe length, ...)."""
    saved = state.scalars.get("identity")
    if saved != json.loads(json.dumps(identity)):
        raise TrainStateError(f"{store.path / STATE_JSON}: saved by another run ({saved}), "
                              f"expected {identity}; delete the folder to start over")


class Autosave:
    """Decides when a run saves: every kept epoch, and when `every_seconds` have passed."""

    def __init__(self, store: StateStore | None) -> None:
        self.store, self.last = store, time.monotonic()

    def __call__(self, epoch: int, kept: bool,
                 pack: Callable[[], tuple[Tensors, dict[str, Any], Sequence[Entry]]]) -> None:
        """End of `epoch`: call the store's hook, then save `pack()` if one is due."""
        if self.store is None:
            return
        if self.store.on_epoch is not None:
            self.store.on_epoch(epoch)
        if kept or time.monotonic() - self.last >= self.store.every_seconds:
            save_state(self.store, epoch, *pack())
            self.last = time.monotonic()


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run stands: the last finished epoch, run-specific scalars, and the kept
    checkpoints so far as (epoch, state_dict in the model's key order, train, test, finite)."""

    epoch: int
    scalars: dict[str, Any]
    checkpoints: tuple[list[tuple], ...]


def pack_model(identity: dict[str, Any], model: torch.nn.Module,
               optimizer: torch.optim.Optimizer, schedule: Any, generator: torch.Generator,
               diverged: bool, checkpoints: Sequence[Any]) -> tuple[Tensors, dict, list[Entry]]:
    """One model's state (train_model's loop variables) and its `Checkpoint`s as entries."""
    tensors, groups = _optimizer_state(optimizer)
    tensors.update({f"model/{k}": v for k, v in model.state_dict().items()})
    tensors["rng/data"] = generator.get_state()
    scalars = {"identity": identity, "param_groups": groups, "schedule": schedule.state_dict(),
               "diverged": diverged}
    return tensors, scalars, _entries(checkpoints)


def resume_model(store: StateStore | None, identity: dict[str, Any], model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, schedule: Any,
                 generator: torch.Generator) -> Resumed | None:
    """Load a saved state into train_model's objects; None (nothing changed) if none is saved."""
    state = _load_checked(store, identity)
    if state is None:
        return None
    model.load_state_dict(_under("model/", state.tensors))
    _restore_optimizer(optimizer, state.tensors, state.scalars["param_groups"])
    schedule.load_state_dict(state.scalars["schedule"])
    generator.set_state(state.tensors["rng/data"])
    return Resumed(state.epoch, state.scalars, (_kept(state, model),))


def pack_graphed(identity: dict[str, Any], model: torch.nn.Module, step: Any,
                 generator: torch.Generator, diverged: bool,
                 checkpoints: Sequence[Any]) -> tuple[Tensors, dict, list[Entry]]:
    """A GraphedStep run's state (train_graphed's loop variables: the step's optimizer
    tensors, step counter and finite flag) and its `Checkpoint`s as entries."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"optimizer/{i}/{j}": v for i, values in enumerate(step.state)
                    for j, v in enumerate(values)})
    tensors.update({"step/counter": step.counter, "step/finite": step.finite,
                    "rng/data": generator.get_state()})
    scalars = {"identity": identity, "diverged": diverged}
    return tensors, scalars, _entries(checkpoints)


def resume_graphed(store: StateStore | None, identity: dict[str, Any], model: torch.nn.Module,
                   step: Any, generator: torch.Generator) -> Resumed | None:
    """Load a saved state into train_graphed's objects in place (a captured graph keeps
    its tensors' addresses); None (nothing changed) if none is saved."""
    state = _load_checked(store, identity)
    if state is None:
        return None
    saved = state.tensors
    model.load_state_dict(_under("model/", saved))
    with torch.no_grad():
        for i, values in enumerate(step.state):
            for j, value in enumerate(values):
                value.copy_(saved[f"optimizer/{i}/{j}"])
        step.counter.copy_(saved["step/counter"])
        step.finite.copy_(saved["step/finite"])
    generator.set_state(saved["rng/data"])
    return Resumed(state.epoch, state.scalars, (_kept(state, model),))


def pack_population(identity: dict[str, Any], population: Any, optimizer: Any,
                    generators: Sequence[torch.Generator], active: torch.Tensor, step: int,
                    checkpoints: Sequence[Sequence[Any]]) -> tuple[Tensors, dict, list[Entry]]:
    """A stacked population's state (train_population's loop variables) and its members'
    `Checkpoint`s, one entry per kept epoch (`<member>/<key>` tensors)."""
    tensors = {f"params/{k}": v for k, v in population.params.items()}
    tensors.update({f"buffers/{k}": v for k, v in population.buffers.items()})
    tensors.update({f"optimizer/{k}/{i}": v for k, values in optimizer.state.items()
                    for i, v in enumerate(values)})
    tensors.update({f"rng/{i}": g.get_state() for i, g in enumerate(generators)})
    scalars = {"identity": identity, "step": step, "active": [bool(a) for a in active.tolist()]}
    entries = []
    for same_epoch in zip(*checkpoints):
        kept = {f"{m}/{k}": v for m, c in enumerate(same_epoch) for k, v in c.state_dict.items()}
        facts = [{"train": c.train, "test": c.test, "finite": c.finite} for c in same_epoch]
        entries.append((same_epoch[0].epoch, kept, {"members": facts}))
    return tensors, scalars, entries


def resume_population(store: StateStore | None, identity: dict[str, Any], population: Any,
                      optimizer: Any, generators: Sequence[torch.Generator]) -> Resumed | None:
    """Load a saved state into train_population's objects; None if none is saved."""
    state = _load_checked(store, identity)
    if state is None:
        return None
    saved = state.tensors
    with torch.no_grad():
        for name, param in population.params.items():
            param.copy_(saved[f"params/{name}"])
        for name, buffer in population.buffers.items():
            buffer.copy_(saved[f"buffers/{name}"])
        for name, values in optimizer.state.items():
            for i, value in enumerate(values):
                value.copy_(saved[f"optimizer/{name}/{i}"])
    for i, generator in enumerate(generators):
        generator.set_state(saved[f"rng/{i}"])
    members: list[list[tuple]] = [[] for _ in generators]
    for epoch, tensors, facts in state.checkpoints:
        for m, fact in enumerate(facts["members"]):
            values = _ordered(_under(f"{m}/", tensors), population.keys)
            members[m].append((epoch, values, fact["train"], fact["test"], fact["finite"]))
    return Resumed(state.epoch, state.scalars, tuple(members))


def _load_checked(store: StateStore | None, identity: dict[str, Any]) -> SavedState | None:
    if store is None:
        return None
    state = load_state(store)
    if state is not None:
        _check_identity(state, store, identity)
    return state


def _entries(checkpoints: Sequence[Any]) -> list[Entry]:
    """One model's `Checkpoint`s as entries (epoch, state_dict, evaluations and finiteness)."""
    return [(c.epoch, c.state_dict, {"train": c.train, "test": c.test, "finite": c.finite})
            for c in checkpoints]


def _kept(state: SavedState, model: torch.nn.Module) -> list[tuple]:
    """One model's kept checkpoints as `Checkpoint` fields, state_dicts in `model`'s order."""
    keys = list(model.state_dict())
    return [(e, _ordered(t, keys), f["train"], f["test"], f["finite"])
            for e, t, f in state.checkpoints]


def _under(prefix: str, tensors: Tensors) -> Tensors:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _ordered(tensors: Tensors, keys: Sequence[str]) -> Tensors:
    """A state_dict in the model's key order (safetensors files sort their keys); empty for a
    checkpoint whose weights went to a spool."""
    return {k: tensors[k] for k in keys} if tensors else {}


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[Tensors, list[dict[str, Any]]]:
    """An optimizer's per-parameter tensors (`optimizer/<index>/<name>`) and param groups."""
    body = optimizer.state_dict()
    tensors = {f"optimizer/{index}/{name}": _cpu(value)
               for index, values in body["state"].items() for name, value in values.items()}
    return tensors, body["param_groups"]


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Tensors,
                       groups: list[dict[str, Any]]) -> None:
    """Load what `_optimizer_state` saved; JSON lists go back to tuples where torch had them."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    fresh = optimizer.state_dict()["param_groups"]
    groups = [{k: tuple(v) if isinstance(f.get(k), tuple) else v for k, v in g.items()}
              for g, f in zip(groups, fresh)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


def _write_tensors(path: Path, tensors: Tensors) -> None:
    from safetensors.torch import save

    write_atomically(path, save({k: _cpu(v) for k, v in tensors.items()}))

