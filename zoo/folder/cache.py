"""A local, byte-bounded cache of a zoo that lives on an object store (or any URI).

The cache folder mirrors the zoo's layout: opening fetches the manifest, zoo.json, README.md
and the layouts (small; each checked against the manifest); a shard is fetched when it is
first read, checked against the manifest's sha256 before any reader sees it, and the least
recently used shards are evicted when the cache would grow past its bound. Readers then read
the cache folder as a local zoo folder, with every rule of one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.location import open_location, scratch_name
from zoo.folder.manifest import Manifest
from zoo.folder.sync import read_manifest_at
from zoo.folder.names import (HDF5_FOLDER, LAYOUTS, MANIFEST, TABLE_FOLDERS, ZOO_JSON,
                              inside, sha256_of, write_atomically)

CACHE_ENV = "PHASE_ZOO_CACHE"  # the cache's folder (default: ~/.cache/phase-zoo)
BYTES_ENV = "PHASE_ZOO_CACHE_BYTES"  # its bound in bytes
DEFAULT_BYTES = 8 << 30
STAGING = ".staging"  # downloads in progress, renamed into place once checked
SHARD_FOLDERS = sorted({folder.split("/")[0] for folder in TABLE_FOLDERS.values()}
                       | {HDF5_FOLDER})  # what eviction may remove: shards, never documents


def evict_least_recent(held: list[tuple[float, int, Path]], size: int, bound: int,
                       remove: Callable[[Path], object]) -> None:
    """Remove entries of `held` ((mtime, bytes, path)), least recently used first, until `size`
    more bytes fit under `bound`."""
    total = sum(held_size for _, held_size, _ in held)
    for _, held_size, path in sorted(held):
        if total + size <= bound:
            break
        remove(path)
        total -= held_size


def cache_home() -> Path:
    """$PHASE_ZOO_CACHE, else $XDG_CACHE_HOME/phase-zoo, else ~/.cache/phase-zoo."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "phase-zoo"


def cache_bytes() -> int:
    """$PHASE_ZOO_CACHE_BYTES (a positive integer), else DEFAULT_BYTES."""
    text = os.environ.get(BYTES_ENV)
    if not text:
        return DEFAULT_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise ZooFolderError(f"{BYTES_ENV}: {text!r} is not a positive number of bytes")
    return int(text)


class StoreCache:
    """The local copy of the zoo at `url` (a URI), at most `max_bytes` of shards.

    Args:
        url: the zoo's location, e.g. s3://bucket/prefix.
        max_bytes: the bound on the shards kept (default: $PHASE_ZOO_CACHE_BYTES or 8 GiB).
        home: the folder holding every location's cache (default: `cache_home()`).
        check_documents: check zoo.json and README.md against the manifest (without it,
            they are fetched unchecked: for `zoo verify`, which checks them itself, and a
            writer whose card is about to change).
    """

    def __init__(self, url: str, max_bytes: int | None = None, home: Path | None = None,
                 check_documents: bool = True) -> None:
        self.store = open_location(url)
        self.max_bytes = cache_bytes() if max_bytes is None else max_bytes
        name = hashlib.sha256(self.store.url.encode()).hexdigest()[:20]
        self.root = (home or cache_home()) / "stores" / name
        self.manifest: Manifest
        self.manifest, data = read_manifest_at(self.store)
        self.small = {**{f"{LAYOUTS}/{key}.json": digest
                          for key, digest in self.manifest.layouts.items()},
                       **self.manifest.documents}  # fetched now, never evicted
        (self.root / STAGING).mkdir(parents=True, exist_ok=True)
        for relative, digest in self.small.items():
            if check_documents or relative not in self.manifest.documents:
                self.fetch(relative, digest)
        if not check_documents:
            for relative in {ZOO_JSON, *self.manifest.documents}:
                self._fetch_unchecked(relative)
        write_atomically(self.root / MANIFEST, data)

    def _fetch_unchecked(self, relative: str) -> None:
        """The store's document as it is, for a caller that checks it (`zoo verify`) or
        replaces it; one missing from the store is missing here too."""
        path, staged = inside(self.root, relative), scratch_name(self.root / STAGING)
        try:
            self.store.get(relative, staged)
            os.replace(staged, path)
        except IntegrityError:  # missing: the reader names it
            path.unlink(missing_ok=True)
        finally:
            staged.unlink(missing_ok=True)

    def fetch(self, relative: str, digest: str) -> Path:
        """The local file of object `relative`, fetched unless the cache holds it with sha256
        `digest`; a fetched object whose bytes do not match is refused, naming its URI."""
        path = inside(self.root, relative)
        if path.is_file() and not path.is_symlink() and sha256_of(path) == digest:
            os.utime(path)  # most recently used
            return path
        staged = scratch_name(self.root / STAGING)
        try:
            self.store.get(relative, staged)
            if sha256_of(staged) != digest:
                raise IntegrityError(f"{self.store.name(relative)}: sha256 does not match the "
                                     f"manifest; the object is corrupted or was modified")
            if relative not in self.small:
                self._make_room(staged.stat().st_size, relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, path)
        finally:
            staged.unlink(missing_ok=True)
        return path

    def _make_room(self, size: int, relative: str) -> None:
        """Evict the least recently used shards until `size` more bytes fit the bound."""
        if size > self.max_bytes:
            raise ZooFolderError(f"{self.store.name(relative)}: {size} bytes, more than the "
                                 f"cache holds ({self.max_bytes}; set {BYTES_ENV})")
        evict_least_recent([(path.stat().st_mtime, nbytes, path)
                            for path, nbytes in self._shard_files().items()],
                           size, self.max_bytes, lambda path: path.unlink(missing_ok=True))

    def _shard_files(self) -> dict[Path, int]:
        return {path: path.stat().st_size for folder in SHARD_FOLDERS
                for path in (self.root / folder).rglob("*") if path.is_file()}

    def shards_held(self) -> dict[str, int]:
        """Relative name -> bytes of every shard the cache holds now."""
        return {path.relative_to(self.root).as_posix(): size
                for path, size in self._shard_files().items()}
