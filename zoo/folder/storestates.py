"""The training states of a zoo on an object store, under its `state/` prefix, so that a task
retried on any node resumes inside its models.

Trainers keep a run's state in a local folder (`zoo.train.state`: files made and renamed on
disk); `StoreStates` is that folder (a path-like object over a scratch folder of this process)
and copies each saved state to `<zoo>/state/<key>/`: the state's files first, `state.json`
last (one PUT), then the files the new state no longer uses are removed. Only the task that
trains a key writes under it, so no two writers share a name. A task pulls its keys' states
before it trains; the driver clears them once the task's cells are committed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Iterable

from zoo.errors import ZooFolderError
from zoo.folder.cache import cache_home
from zoo.folder.location import StorePrefix, open_location
from zoo.folder.names import TEMPORARY_SUFFIX

STATE_JSON = "state.json"  # a state's last file (zoo.train.state.STATE_JSON)


class StoreStates(os.PathLike):
    """The state folder of the zoo at `url` (its `state/` prefix), held in a local scratch.

    Args:
        url: the states' prefix, e.g. s3://bucket/zoo/state.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        home = cache_home() / "scratch"
        home.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="states-", dir=home))
        weakref.finalize(self, shutil.rmtree, self.scratch, True)
        self._stored: set[tuple[str, str]] = set()  # (key, file) the store holds as here

    def __reduce__(self) -> tuple:  # a Ray worker gets a scratch of its own
        return (StoreStates, (self.url,))

    def __fspath__(self) -> str:
        return str(self.scratch)

    def __str__(self) -> str:
        return self.url

    def _prefix(self, key: str) -> StorePrefix:
        if not key or "/" in key or key.startswith("."):
            raise ZooFolderError(f"{self.url}: state key {key!r} is not a plain name")
        store = open_location(f"{self.url}/{key}")
        assert isinstance(store, StorePrefix)
        return store

    def pull(self, keys: Iterable[str]) -> None:
        """Fetch the stored state of each of `keys` that has one (its `state.json`) into the
        scratch, replacing what the scratch holds for it."""
        for key in keys:
            store = self._prefix(key)
            names = store.listing()
            if STATE_JSON not in names:
                continue
            local = self.scratch / key
            shutil.rmtree(local, ignore_errors=True)
            local.mkdir(parents=True)
            for name in sorted(names, key=lambda n: n == STATE_JSON):  # state.json last
                if "/" not in name:
                    store.get(name, local / name)
                    self._stored.add((key, name))

    def push(self, key: str) -> None:
        """Copy the state just saved in the scratch's `key/` to the store: its files, then
        `state.json`, then remove the stored files it no longer has."""
        store, local = self._prefix(key), self.scratch / key
        files = sorted(p.name for p in local.iterdir()
                       if p.is_file() and not p.name.endswith(TEMPORARY_SUFFIX))
        stored = store.listing()
        for name in files:
            if name != STATE_JSON and (key, name) not in self._stored:
                store.put(local / name, name)  # a file of a saved state never changes
                self._stored.add((key, name))
        store.put(local / STATE_JSON, STATE_JSON)
        for name in set(stored) - set(files):
            store.delete(name)
            self._stored.discard((key, name))

    def clear(self, key: str) -> None:
        """Delete the stored and local state of `key` (once its results are committed)."""
        store = self._prefix(key)
        for name in sorted(store.listing(), key=lambda n: n == STATE_JSON, reverse=True):
            store.delete(name)  # state.json first: a reader never sees a state half gone
        shutil.rmtree(self.scratch / key, ignore_errors=True)
