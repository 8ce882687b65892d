"""Resumable training state: save a run between epochs and restore it, without pickle.

A store holds one run in `<folder>/<key>/`: `state-<epoch>.safetensors` holds every tensor
(weights, buffers, optimizer moments, RNG states), `checkpoint-<epoch>.safetensors` each kept
checkpoint so far (none when the run hands its checkpoints to a `zoo.train.spool.Spool`),
and `state.json` the scalars (schedule, optimizer numbers, epoch, the evaluations of the kept
checkpoints). Every file is written under a temporary name and renamed;
`state.json` goes last, so a kill at any moment leaves the previous complete state. What each
trainer packs and restores lives beside it (zoo.train.single, zoo.train.population).
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
from zoo.train.base import Checkpoint

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
        on_save: called with `key` after each save (a zoo on a store copies the state there).
    """

    folder: Path
    key: str
    every_seconds: float = 600.0
    on_epoch: Callable[[int], None] | None = None
    on_save: Callable[[str], None] | None = None

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
            if self.store.on_save is not None:
                self.store.on_save(self.store.key)
            self.last = time.monotonic()


def load_checked(store: StateStore | None, identity: dict[str, Any]) -> SavedState | None:
    """The store's saved state (None without a store or a state); TrainStateError when it was
    saved by a run of another `identity`."""
    if store is None:
        return None
    state = load_state(store)
    if state is not None:
        _check_identity(state, store, identity)
    return state


def entries(checkpoints: Sequence[Checkpoint]) -> list[Entry]:
    """One model's `Checkpoint`s as entries (epoch, state_dict, evaluations and finiteness)."""
    return [(c.epoch, c.state_dict, {"train": c.train, "test": c.test, "finite": c.finite})
            for c in checkpoints]


def kept_checkpoints(state: SavedState, model: torch.nn.Module) -> list[Checkpoint]:
    """One model's kept checkpoints, state_dicts in `model`'s order."""
    keys = list(model.state_dict())
    return [Checkpoint(e, ordered(t, keys), f["train"], f["test"], f["finite"])
            for e, t, f in state.checkpoints]


def under(prefix: str, tensors: Tensors) -> Tensors:
    """The tensors whose key starts with `prefix`, under their key without it."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def ordered(tensors: Tensors, keys: Sequence[str]) -> Tensors:
    """A state_dict in the model's key order (safetensors files sort their keys); empty for a
    checkpoint whose weights went to a spool."""
    return {k: tensors[k] for k in keys} if tensors else {}


def cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy of `tensor`, detached (what a state file holds)."""
    return tensor.detach().to("cpu", copy=True).contiguous()


def _write_tensors(path: Path, tensors: Tensors) -> None:
    from safetensors.torch import save

    write_atomically(path, save({k: cpu_copy(v) for k, v in tensors.items()}))

