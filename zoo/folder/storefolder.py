"""A zoo on an object store opened for writing: the methods of `ZooFolder` over a local
scratch folder, each finished file stored under the same relative name.

Files are made locally (Parquet and HDF5 writers need a seekable file), then stored with one
PUT (an object appears whole or not at all), so the store holds the objects a local zoo folder
would and the manifest, replaced last, lists only complete ones. Listings, reads of committed
files and deletions are the store's, so a killed run's unlisted objects are removed at the next
start. The driver's scratch is the same folder on every run; a process that gets the folder
through pickling (a Ray worker, on any node) makes a scratch of its own. Training states and
the spool go to the store as well (`storestates`, and a StoreFolder over `state/spool`).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import IO, Callable, Iterator

from zoo.errors import ZooFolderError
from zoo.folder.cache import cache_home
from zoo.folder.location import StorePrefix, is_uri, open_location
from zoo.folder.lock import FolderLock
from zoo.folder.manifest import Manifest
from zoo.folder.names import LOCK, MANIFEST, ZOO_JSON
from zoo.folder.record import ZooRecord
from zoo.folder.storelock import StoreLock
from zoo.folder.zoofolder import ZooFolder


def scratch_home(url: str) -> Path:
    """The driver's scratch for the zoo at `url`: the same local folder on every run."""
    return cache_home() / "scratch" / hashlib.sha256(url.encode()).hexdigest()[:20]


def open_folder(location: str | Path) -> ZooFolder:
    """The zoo at `location` opened for writing: a StoreFolder for a URI (the driver's, with
    its lasting scratch), else a ZooFolder."""
    if is_uri(location):
        return StoreFolder(str(location), scratch_home(str(location).rstrip("/")))
    return ZooFolder(location)


def writer_lock(folder: ZooFolder, on_stale: Callable[[str], None] | None = None
                ) -> FolderLock | StoreLock:
    """The one-writer lock of `folder`: a conditional create on a store, a file otherwise."""
    if isinstance(folder, StoreFolder):
        return StoreLock(folder.store, on_stale)
    return FolderLock(folder, on_stale)


class StoreFolder(ZooFolder):
    """The zoo at `url` (a URI) opened for writing through a local scratch folder.

    Args:
        url: the zoo's location, e.g. s3://bucket/prefix.
        scratch: the local folder under the methods (default: a new temporary folder,
            removed when this object goes).
    """

    def __init__(self, url: str, scratch: Path | None = None) -> None:
        store = open_location(url)
        if not isinstance(store, StorePrefix):
            raise ZooFolderError(f"{url}: not a URI; a local folder opens as a ZooFolder")
        self.store, self.url = store, store.url
        if scratch is None:
            home = cache_home() / "scratch"
            home.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix="worker-", dir=home))
            weakref.finalize(self, shutil.rmtree, scratch, True)
        Path(scratch).mkdir(parents=True, exist_ok=True)
        super().__init__(scratch)
        self._pulled: set[str] = set()

    def __reduce__(self) -> tuple:  # a Ray worker opens the store with a scratch of its own
        return (StoreFolder, (self.url,))

    def __str__(self) -> str:
        return self.url

    # --- what the store holds ----------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self.store.listing())

    def is_empty(self) -> bool:
        """Nothing under the prefix but the lock."""
        return not any(name != LOCK for name in self.store.listing())

    def _pull(self, name: str) -> None:
        """Copy the store's document `name` into the scratch, once (or drop the scratch's)."""
        if name in self._pulled:
            return
        data = self.store.read_bytes(name, name)
        if data is None:
            ZooFolder.delete(self, name)
        else:
            ZooFolder.write(self, name, data)
        self._pulled.add(name)

    def record(self) -> ZooRecord | None:
        self._pull(ZOO_JSON)
        return super().record()

    def manifest(self) -> Manifest | None:
        self._pull(MANIFEST)
        return super().manifest()

    def open_read(self, relative: str) -> IO[bytes]:
        """A committed object, opened for reading from the store."""
        try:
            return self.store.fs.open(self.store.key(relative), "rb")
        except FileNotFoundError:
            raise ZooFolderError(f"{self.store.name(relative)}: missing") from None

    # --- file operations: made in the scratch, then stored -----------------------------------

    def write_record(self, record: ZooRecord) -> None:
        super().write_record(record)
        self.store.put(self.root / ZOO_JSON, ZOO_JSON)

    def write_manifest(self, manifest: Manifest) -> None:
        super().write_manifest(manifest)
        self.store.put(self.root / MANIFEST, MANIFEST)

    def write(self, relative: str, data: bytes | Callable[[Path], None]) -> Path:
        path = super().write(relative, data)
        self.store.put(path, relative)
        return path

    def replace(self, source: str, destination: str) -> Path:
        path = super().replace(source, destination)
        self.store.put(path, destination)
        return path

    def delete(self, relative: str, missing_ok: bool = True) -> None:
        super().delete(relative, missing_ok=True)
        self.store.delete(relative)

    def delete_tree(self, relative: str) -> None:
        for name in self.files(relative):
            self.store.delete(name)
        local = self.check(relative, folder=True)
        if local.exists():
            for name in ZooFolder.files(self, relative):  # refuses a link before removing
                ZooFolder.delete(self, name)
            shutil.rmtree(local)

    def files(self, relative: str) -> Iterator[str]:
        """Every object under `relative` in the store (names relative to the zoo, sorted)."""
        prefix = relative.rstrip("/") + "/"
        return iter(sorted(n for n in self.store.listing() if n.startswith(prefix)))

    def check_tree(self, relative: str) -> None:
        """Refuse a link or a non-regular file under the scratch's `relative` (the states and
        the spool stay local)."""
        list(ZooFolder.files(self, relative))
