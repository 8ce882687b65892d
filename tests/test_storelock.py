"""The writer's lock on an object store (a real S3 server on loopback): a conditional create."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from zoo.folder.location import open_location
from zoo.folder.lock import FolderLocked
from zoo.folder.storelock import StoreLock


def test_a_second_writer_is_refused_in_one_line_naming_the_first(s3_store):
    store = open_location(s3_store.url("locked"))
    with StoreLock(store):
        holder = json.loads(store.read_bytes("zoo.lock", "lock"))
        assert holder["host"] == socket.gethostname() and holder["pid"] > 0
        with pytest.raises(FolderLocked, match=r"another `zoo generate` writes this zoo "
                                               rf"\(pid {holder['pid']} on ") as refused:
            StoreLock(store).acquire()
        assert "\n" not in str(refused.value)
    assert store.read_bytes("zoo.lock", "lock") is None  # released


def dead_pid() -> int:
    """The pid of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def test_a_stale_lock_of_a_dead_process_is_taken_over(s3_store):
    store = open_location(s3_store.url("stale"))
    dead = dead_pid()
    store.write_bytes("zoo.lock", json.dumps({"host": socket.gethostname(), "pid": dead,
                                              "started": "2026-01-01T00:00:00Z"}).encode())
    said = []
    with StoreLock(store, on_stale=said.append) as lock:
        assert lock.held and f"pid {dead}" in said[0] and "taking it over" in said[0]


def test_a_lock_of_another_host_is_refused(s3_store):
    store = open_location(s3_store.url("other-host"))
    store.write_bytes("zoo.lock", json.dumps({"host": "elsewhere", "pid": 1,
                                              "started": "2026-01-01T00:00:00Z"}).encode())
    with pytest.raises(FolderLocked, match="pid 1 on elsewhere"):
        StoreLock(store).acquire()


def test_two_writers_taking_over_one_stale_lock_at_once_one_wins(s3_store, monkeypatch):
    """Both read the stale lock before either replaces it: each replace is conditional on the
    ETag read, so the later one fails, and its writer then finds the winner's live lock."""
    url = s3_store.url("stale-race")
    open_location(url).write_bytes("zoo.lock", json.dumps(
        {"host": socket.gethostname(), "pid": dead_pid(),
         "started": "2026-01-01T00:00:00Z"}).encode())
    first, second = StoreLock(open_location(url)), StoreLock(open_location(url))
    real, tries = first.store.replace_if, []

    def after_the_other_took_it(relative: str, data: bytes, etag: str) -> bool:
        if not tries:  # first has read the stale lock; second takes it over now
            second.acquire()
        tries.append(real(relative, data, etag))
        return tries[-1]

    monkeypatch.setattr(first.store, "replace_if", after_the_other_took_it)
    with pytest.raises(FolderLocked, match=r"another `zoo generate` writes this zoo \(pid "):
        first.acquire()
    assert tries == [False] and second.held and not first.held
    holder = json.loads(open_location(url).read_bytes("zoo.lock", "lock"))
    assert holder["started"] != "2026-01-01T00:00:00Z"  # the winner's
    second.release()
    assert open_location(url).read_bytes("zoo.lock", "lock") is None
