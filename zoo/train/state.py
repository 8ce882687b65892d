"""Resumable training state: save a run between epochs and restore it, without pickle.

A store holds one run in `<folder>/<key>/`: `state-<epoch>.safetensors` holds every tensor
(weights, buffers, optimizer moments, RNG states), `checkpoint-<epoch>.safetensors` each kept
checkpoint so far (none when the run hands its checkpoints to a `zoo.train.spool.Spool`),
and `state.json` the scalars (schedule, optimizer numbers, epoch, the evaluations of the kept
checkpoints), its key and the sha256 of every file it names (spooled checkpoints too). Every
file is written under a temporary name and renamed through a `ZooFolder` rooted at `folder`;
`state.json` goes last, so a kill at any moment leaves the previous complete state.

A state is trusted only as far as it checks: plain file names inside the store, regular files
(opened O_NOFOLLOW | O_NONBLOCK: a link is refused, a FIFO never blocks), every digest, the
key and the run's identity (model ids, epochs, kept epochs). A state that fails is discarded
and the run starts from scratch (`zoo.train.loop.run_epochs`), never resumed. What each
trainer packs and restores lives beside it (zoo.train.single, zoo.train.population).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from zoo.errors import TrainStateError, ZooFolderError
from zoo.folder.names import MAX_JSON_BYTES, open_regular, read_bounded
from zoo.folder.zoofolder import ZooFolder
from zoo.spec import ModelJob, short_hash
from zoo.train.base import Checkpoint, HandOff
from zoo.train.spool import write_tensors

STATE_JSON = "state.json"
FORMAT_VERSION = 2  # 2: the key and every file's sha256 recorded, checked at resume
_FILE_NAME = re.compile(r"(state|checkpoint)-(0|[1-9][0-9]{0,8})\.safetensors")
_SHA256 = re.compile(r"[0-9a-f]{64}")
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

    @property
    def files(self) -> ZooFolder:
        """The stores' parent folder, whose file methods confine every path to it."""
        return ZooFolder(self.folder)

    def clear(self) -> None:
        """Delete this run's state (once its results are committed, or when it is discarded):
        a link or FIFO in it is removed as a name, never followed."""
        self.files.discard_tree(self.key)


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
    files = store.files
    files.makedirs(store.key)
    done = {c["file"]: c["sha256"] for c in _current(store).get("checkpoints", ()) if c["file"]}
    listed = []
    for kept_epoch, kept_tensors, facts in checkpoints:
        name = f"checkpoint-{kept_epoch}.safetensors" if kept_tensors else None  # None: spooled
        if name is not None and name not in done:
            done[name] = write_tensors(files, f"{store.key}/{name}", kept_tensors)
        listed.append({"epoch": kept_epoch, "file": name, "sha256": done.get(name),
                       "facts": facts})
    name = f"state-{epoch}.safetensors"
    body = {"format_version": FORMAT_VERSION, "key": store.key, "epoch": epoch, "file": name,
            "sha256": write_tensors(files, f"{store.key}/{name}", tensors),
            "scalars": scalars, "checkpoints": listed}
    files.write(f"{store.key}/{STATE_JSON}", json.dumps(body, sort_keys=True).encode())
    for old in files.files(store.key):
        if old.rpartition("/")[2].startswith("state-") and not old.endswith("/" + name):
            files.delete(old)


def load_state(store: StateStore) -> SavedState | None:
    """The saved state, or None when the store holds none; TrainStateError names what failed
    (nothing is read through a link or from anything but a regular file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = store.path / STATE_JSON
    try:
        body = _current(store)
        if not body:
            return None
        tensors = load(_checked_bytes(store, body["file"], body["sha256"]))
        kept = tuple((c["epoch"], load(_checked_bytes(store, c["file"], c["sha256"]))
                      if c["file"] else {}, c["facts"]) for c in body["checkpoints"])
    except (OSError, ValueError, ZooFolderError, SafetensorError) as error:
        raise TrainStateError(f"{path}: unreadable training state ({error})") from None
    return SavedState(body["epoch"], tensors, body["scalars"], kept)


def _current(store: StateStore) -> dict[str, Any]:
    """The store's state.json checked for shape ({} when there is none); TrainStateError
    names the first thing that is not as save_state writes it."""
    relative = f"{store.key}/{STATE_JSON}"
    path = store.path / STATE_JSON
    try:
        located = store.files.check(relative)
        if not os.path.lexists(located):
            return {}
        body = json.loads(read_bounded(located, "training state", MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError, ZooFolderError) as error:
        raise TrainStateError(f"{path}: unreadable training state ({error})") from None
    if not isinstance(body, dict) or body.get("format_version") != FORMAT_VERSION:
        found = body.get("format_version") if isinstance(body, dict) else None
        raise TrainStateError(f"{path}: format version {found!r}, this code reads "
                              f"{FORMAT_VERSION}")
    problem = _shape_problem(body, store.key)
    if problem:
        raise TrainStateError(f"{path}: {problem}")
    return body


def _shape_problem(body: dict[str, Any], key: str) -> str | None:
    """What in a state.json is not as save_state writes it (None: nothing)."""
    if body.get("key") != key:
        return f"saved for {body.get('key')!r}, not for this store's {key!r}"
    epoch = body.get("epoch")
    if not (type(epoch) is int and epoch >= 0 and body.get("file") == f"state-{epoch}.safetensors"
            and _is_sha256(body.get("sha256")) and isinstance(body.get("scalars"), dict)
            and isinstance(body.get("checkpoints"), list)):
        return "epoch, file, sha256, scalars or checkpoints not as a saved state has them"
    for entry in body["checkpoints"]:
        if not (isinstance(entry, dict) and type(entry.get("epoch")) is int
                and 0 <= entry["epoch"] <= epoch and isinstance(entry.get("facts"), dict)):
            return f"a kept checkpoint entry is malformed: {str(entry)[:80]}"
        if entry.get("file") is None:
            continue
        if entry["file"] != f"checkpoint-{entry['epoch']}.safetensors" or not _is_sha256(
                entry.get("sha256")):
            return f"checkpoint file {str(entry.get('file'))[:80]!r} is not a plain name of " \
                   f"this store, or has no sha256"
    return None


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def _checked_bytes(store: StateStore, name: str, sha256: str) -> bytes:
    """The bytes of the store's file `name` (a regular file inside it), refused unless their
    sha256 is the one state.json recorded."""
    if _FILE_NAME.fullmatch(name) is None:  # _shape_problem allows no other; kept by itself
        raise ZooFolderError(f"{name!r} is not a state file name")
    with open_regular(store.files.check(f"{store.key}/{name}")) as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ZooFolderError(f"{name} is not the file this state saved (sha256 differs)")
    return data


def _check_identity(state: SavedState, store: StateStore, identity: dict[str, Any]) -> None:
    """Refuse a state saved by another run (other model ids, recipe length, ...)."""
    saved = state.scalars.get("identity")
    if saved != json.loads(json.dumps(identity)):
        raise TrainStateError(f"{store.path / STATE_JSON}: saved by another run ({saved}), "
                              f"expected {identity}")


def check_spooled(store: StateStore, checkpoints: Sequence[Checkpoint],
                  hand_off: HandOff | None) -> None:
    """Refuse a resumed run's kept checkpoints unless each spooled one is, in `hand_off`'s
    spool, the very file the state recorded (and a run with a spool resumes a state saved
    with one, a run without one a state without)."""
    for checkpoint in checkpoints:
        if (checkpoint.spooled is None) != (hand_off is None) or (
                hand_off is not None and hand_off.digest(checkpoint.epoch) != checkpoint.spooled):
            raise TrainStateError(f"{store.path / STATE_JSON}: the spooled checkpoint of epoch "
                                  f"{checkpoint.epoch} is not the one this state saved")


@contextmanager
def restoring(store: StateStore | None) -> Iterator[None]:
    """Restoring a checked state into a run: whatever does not fit (a missing tensor, a shape,
    a scalar of another type) is a TrainStateError naming the state."""
    try:
        yield
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as error:
        path = Path("?") if store is None else store.path / STATE_JSON
        raise TrainStateError(f"{path}: does not fit this run ({type(error).__name__}: "
                              f"{str(error)[:200]})") from None


def discard(store: StateStore, error: TrainStateError) -> str:
    """Delete a state that failed its checks; the one line that says so."""
    store.clear()
    return f"{error}; discarded, trained again from scratch"


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
    """The store's saved state (None without a store or a state); TrainStateError when it
    fails a check or was saved by a run of another `identity`."""
    if store is None:
        return None
    state = load_state(store)
    if state is not None:
        _check_identity(state, store, identity)
    return state


def entries(checkpoints: Sequence[Checkpoint]) -> list[Entry]:
    """One model's `Checkpoint`s as entries (epoch, state_dict, evaluations and finiteness)."""
    return [(c.epoch, c.state_dict, facts_of(c)) for c in checkpoints]


def facts_of(checkpoint: Checkpoint) -> dict[str, Any]:
    """What a state records of a kept checkpoint besides its weights."""
    return {"train": checkpoint.train, "test": checkpoint.test, "finite": checkpoint.finite,
            "spooled": checkpoint.spooled}


def checkpoint_of(epoch: int, state_dict: Tensors, facts: dict[str, Any]) -> Checkpoint:
    """A kept checkpoint from its weights and `facts_of` (a state saved by this version)."""
    return Checkpoint(epoch, state_dict, facts["train"], facts["test"], facts["finite"],
                      facts["spooled"])


def kept_checkpoints(state: SavedState, model: torch.nn.Module) -> list[Checkpoint]:
    """One model's kept checkpoints, state_dicts in `model`'s order."""
    keys = list(model.state_dict())
    return [checkpoint_of(e, ordered(t, keys), f) for e, t, f in state.checkpoints]


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
