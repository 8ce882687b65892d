"""One writer per zoo on an object store: `zoo.lock` created only if absent (If-None-Match),
naming the host, pid and start time of the writer, as `zoo.folder.lock` does on a folder; a
stale lock is taken over by a conditional replace (If-Match on its ETag), which one writer wins."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Callable

from zoo.errors import ZooFolderError
from zoo.folder.location import StorePrefix
from zoo.folder.lock import FolderLocked, _alive
from zoo.folder.names import LOCK


class StoreLock:
    """Hold `<prefix>/zoo.lock` while writing; a context manager.

    A lock whose pid is dead on this host is stale: it is named through `on_stale` and taken
    over. A live lock, or one held by another host, raises FolderLocked in one line.
    """

    def __init__(self, store: StorePrefix, on_stale: Callable[[str], None] | None = None) -> None:
        self.store, self.on_stale, self.held = store, on_stale, False

    def acquire(self) -> None:
        """Take the lock or raise FolderLocked naming its holder."""
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        for _ in range(2):
            if self.store.create(LOCK, body.encode()) or self._take_over_if_stale(body.encode()):
                self.held = True
                return
        raise FolderLocked(f"{self.store.name(LOCK)}: another writer took the lock at the same "
                           f"moment")

    def _take_over_if_stale(self, body: bytes) -> bool:
        """Replace a stale lock by ours in one conditional PUT (If-Match on the ETag it was
        read with): of writers taking it over at once, exactly one wins; the others find the
        winner's live lock on their next try. False when the lock changed or went first."""
        etag = self.store.etag(LOCK)
        try:
            data = self.store.read_bytes(LOCK, "lock", 1 << 16)
            if etag is None or data is None:  # released between our create and this read
                return False
            holder = json.loads(data)
            host, pid, started = str(holder["host"]), int(holder["pid"]), holder["started"]
        except (ValueError, KeyError, TypeError, ZooFolderError):
            raise FolderLocked(f"{self.store.name(LOCK)}: unreadable lock; if no `zoo generate` "
                               f"writes this zoo, delete it") from None
        who = f"pid {pid} on {host}, since {started}"
        if host != socket.gethostname() or _alive(pid):
            raise FolderLocked(f"{self.store.url}: another `zoo generate` writes this zoo "
                               f"({who}); wait for it or stop it")
        if not self.store.replace_if(LOCK, body, etag):
            return False
        if self.on_stale is not None:
            self.on_stale(f"{self.store.name(LOCK)}: stale lock of a dead process ({who}); "
                          f"taking it over")
        return True

    def release(self) -> None:
        """Remove the lock if this object holds it."""
        if self.held:
            self.store.delete(LOCK)
            self.held = False

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
