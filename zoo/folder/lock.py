"""One writer per zoo folder: `zoo.lock` names the host, pid and start time of the writer."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Callable

from zoo.errors import ZooFolderError
from zoo.folder.names import LOCK, read_bounded
from zoo.folder.zoofolder import ZooFolder


class FolderLocked(ZooFolderError):
    """Another live process writes this zoo folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class FolderLock:
    """Hold `root/zoo.lock` while writing; a context manager.

    A lock whose pid is dead on this host is stale: it is named through `on_stale` and taken
    over. A live lock, or one held by another host, raises FolderLocked in one line.
    """

    def __init__(self, folder: ZooFolder | Path,
                 on_stale: Callable[[str], None] | None = None) -> None:
        self.folder = ZooFolder.of(folder)
        self.path = self.folder.root / LOCK
        self.on_stale = on_stale
        self.held = False
        self.created = False

    def acquire(self) -> None:
        """Take the lock or raise FolderLocked naming its holder."""
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY
                                     | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(body)
            self.held = True
            return
        raise FolderLocked(f"{self.path}: another writer took the lock at the same moment")

    def _take_over_if_stale(self) -> None:
        try:
            holder = json.loads(read_bounded(self.folder.check(LOCK), "lock", 1 << 16))
            host, pid, started = str(holder["host"]), int(holder["pid"]), holder["started"]
        except (OSError, ValueError, KeyError, TypeError, ZooFolderError):
            raise FolderLocked(f"{self.path}: unreadable lock file; if no `zoo generate` runs "
                               f"on this folder, delete it") from None
        who = f"pid {pid} on {host}, since {started}"
        if host != socket.gethostname() or _alive(pid):
            raise FolderLocked(f"{self.path.parent}: another `zoo generate` writes this folder "
                               f"({who}); wait for it or stop it")
        if self.on_stale is not None:
            self.on_stale(f"{self.path}: stale lock of a dead process ({who}); taking it over")
        self.folder.delete(LOCK)

    def release(self) -> None:
        """Remove the lock file if this object holds it (and the folder, if the lock made it
        and nothing else was written)."""
        if self.held:
            self.folder.delete(LOCK)
            self.held = False
            if self.created and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
