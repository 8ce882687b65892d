"""`data.root` as a local folder or a URI (s3://bucket/prefix/cifar10): `load` and `validate`
are `zoo.datasets`' own, with a URI's files first fetched into a local cache, bounded in bytes,
that the folder loaders read.

Every object under the prefix is mirrored under the same relative name in the cache folder's
`files/` (the prefix holds what the local folder would); objects already there with the same
size and ETag are not fetched again. The bound ($PHASE_ZOO_CACHE_BYTES, shared with the zoo caches' setting) covers all the
data sets cached on this machine: the least recently used others are removed to make room, and
a data set larger than the bound is refused in one line before anything is fetched.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from zoo import datasets
from zoo.datasets import DataBundle
from zoo.errors import DataError, ZooFolderError
from zoo.folder.cache import BYTES_ENV, cache_bytes, cache_home, evict_least_recent
from zoo.folder.location import StorePrefix, is_uri, open_location, scratch_name
from zoo.folder.names import inside, write_atomically

__all__ = ["load", "local_root", "validate"]

FILES = "files"  # the mirrored objects
INDEX = "objects.json"  # beside it: relative name -> version token of every object fetched
STAGING = "staging"  # beside it: downloads in progress


def load(name: str, *, root: str | os.PathLike[str] | None = None,
         args: Mapping[str, Any] | None = None) -> DataBundle:
    """`zoo.datasets.load`, a URI root read through the local cache."""
    with _named_as(name, root) as local:
        return datasets.load(name, root=local, args=args)


def validate(name: str, root: str | os.PathLike[str] | None,
             args: Mapping[str, Any] | None) -> None:
    """`zoo.datasets.validate`, a URI root fetched into the local cache first (as a local
    root's files are looked for; the load that follows finds them there)."""
    with _named_as(name, root) as local:
        datasets.validate(name, local, args)


@contextmanager
def _named_as(name: str, root: str | os.PathLike[str] | None
              ) -> Iterator[str | os.PathLike[str] | None]:
    """The local folder of data set `name`'s `root` (itself unless a URI, or for a data set
    that reads no folder); a DataError about the cache folder names the URI instead."""
    if root is None or not is_uri(str(root)) or not datasets.needs_root(name):
        yield root
        return
    local = local_root(str(root))
    try:
        yield str(local)
    except DataError as error:
        raise DataError(str(error).replace(str(local), str(root).rstrip("/"))) from None


def local_root(url: str, max_bytes: int | None = None, home: Path | None = None) -> Path:
    """The local folder (`<cache>/data/<hash of url>/files`) mirroring the data set at `url`,
    each object fetched where it is missing or stale.

    Raises:
        DataError: no object under the prefix, the data set larger than the cache, or a
            store that cannot be reached (each naming `url`).
    """
    try:
        store = open_location(url)
        versions = store.versions() if isinstance(store, StorePrefix) else {}
    except (OSError, ZooFolderError) as error:
        raise DataError(f"data.root {url}: cannot be listed ({error})") from None
    if not versions:
        raise DataError(f"data.root {url}: no objects under this prefix; upload the data set's "
                        f"files there as they lie in its local folder")
    bound = cache_bytes() if max_bytes is None else max_bytes
    size = sum(int(token.split(":", 1)[0]) for token in versions.values())
    if size > bound:
        raise DataError(f"data.root {url}: {size} bytes, more than the cache holds ({bound}; "
                        f"set {BYTES_ENV})")
    home = (home or cache_home()) / "data"
    folder = home / hashlib.sha256(store.url.encode()).hexdigest()[:20]
    with _locked(home):
        _make_room(home, folder, size, bound)
        _fetch(store, folder, versions)
    return folder / FILES


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One fetcher at a time on this machine (Ray workers of one node share the cache)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _fetch(store: StorePrefix, folder: Path, versions: dict[str, str]) -> None:
    index_path = folder / INDEX
    try:
        held = json.loads(index_path.read_text())
    except (OSError, ValueError):
        held = {}
    staging = folder / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    for relative, token in sorted(versions.items()):
        path = inside(folder / FILES, relative)
        if held.get(relative) == token and path.is_file():
            continue
        staged = scratch_name(staging)
        try:
            store.get(relative, staged)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, path)
        finally:
            staged.unlink(missing_ok=True)
        held[relative] = token
    for relative in set(held) - set(versions):  # gone from the store: gone here too
        inside(folder / FILES, relative).unlink(missing_ok=True)
        del held[relative]
    write_atomically(index_path, json.dumps(held, sort_keys=True).encode())
    os.utime(folder)  # most recently used


def _make_room(home: Path, keep: Path, size: int, bound: int) -> None:
    """Remove the least recently used other data sets until `size` bytes fit the bound."""
    evict_least_recent([(entry.stat().st_mtime, _bytes(entry), entry)
                        for entry in home.iterdir() if entry.is_dir() and entry != keep],
                       size, bound, lambda entry: shutil.rmtree(entry, ignore_errors=True))


def _bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
