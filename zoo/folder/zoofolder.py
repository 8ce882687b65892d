"""A zoo folder opened for writing: every write, rename, delete and listing inside it goes
through the few file methods of `ZooFolder`, confined to the folder.

Confined means: no symbolic link on the way below the root (each component is checked with
lstat, files are created O_EXCL | O_NOFOLLOW), regular files only, and a listing that never
descends a link (it refuses one in one line naming it). The object also holds the folder's
zoo.json and manifest.json, read once per run and kept current by the writes that replace
them. A later filesystem (pyarrow.fs / fsspec) goes under these methods.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from zoo.errors import ZooFolderError
from zoo.folder.manifest import Manifest, read_manifest, write_manifest
from zoo.folder.names import (CHECKPOINTS_FOLDER, HDF5_FOLDER, LAYOUTS, LOCK, MANIFEST,
                              TABLE_FOLDERS, TEMPORARY_SUFFIX, ZOO_JSON, create_new, kind_of,
                              open_regular, write_atomically)
from zoo.folder.record import ZooRecord, read_record, write_record

_UNREAD = object()
MAKEDIRS_ATTEMPTS = 3  # a folder chain made again when a parent vanished meanwhile
_FORMAT_FOLDERS = {"data", *TABLE_FOLDERS.values(), HDF5_FOLDER, CHECKPOINTS_FOLDER, LAYOUTS}


class ZooFolder:
    """One zoo folder opened for writing (it need not exist yet).

    Opening refuses a path that names something other than a folder, once. File methods take
    paths relative to the root ("data/models/x.parquet"): `open_read`, `write` (atomic),
    `create` (a new file for a library that writes by path), `replace`, `delete`,
    `delete_tree`, `discard_tree`, `files` (recursive listing), `makedirs`, `target`. `record()` and
    `manifest()` read zoo.json and manifest.json once; `write_record` and `write_manifest`
    replace them and the held copies.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ZooFolderError(f"{self.root}: is a file, not a folder; expected a zoo folder "
                                 f"(new, or one to complete)")
        self._record: object = _UNREAD
        self._manifest: object = _UNREAD

    @classmethod
    def of(cls, folder: ZooFolder | str | Path) -> ZooFolder:
        """`folder` itself, or the folder at that path opened."""
        return folder if isinstance(folder, ZooFolder) else cls(folder)

    def __str__(self) -> str:  # where the zoo is, for messages
        return str(self.root)

    def __reduce__(self) -> tuple:  # Ray workers get the root, not the held documents
        return (ZooFolder, (self.root,))

    # --- what the folder holds ---------------------------------------------------------------

    def exists(self) -> bool:
        return self.root.is_dir()

    def is_empty(self) -> bool:
        """No folder yet, or nothing in it but the lock and what a writer killed before its
        first zoo.json leaves: the format's own folders, empty but for temporary files."""
        if not self.exists():
            return True
        for top, folders, files in os.walk(self.root):  # never descends a link
            where = Path(top).relative_to(self.root).as_posix()
            if where != "." and where not in _FORMAT_FOLDERS:
                return False
            if any(not name.endswith(TEMPORARY_SUFFIX) and not (where == "." and name == LOCK)
                   or os.path.islink(os.path.join(top, name)) for name in files):
                return False
            if any(os.path.islink(os.path.join(top, name)) for name in folders):
                return False
        return True

    def record(self) -> ZooRecord | None:
        """zoo.json's record (None: none yet), read on the first call only."""
        if self._record is _UNREAD:
            self._record = read_record(self.root) if self.exists() else None
        return self._record  # type: ignore[return-value]

    def manifest(self) -> Manifest | None:
        """manifest.json (None: none yet), read on the first call only."""
        if self._manifest is _UNREAD:
            self._manifest = read_manifest(self.root) if self.exists() else None
        return self._manifest  # type: ignore[return-value]

    def write_record(self, record: ZooRecord) -> None:
        """Replace zoo.json (confined, atomic) and the held record."""
        self.check(ZOO_JSON)
        write_record(self.root, record)
        self._record = record

    def write_manifest(self, manifest: Manifest) -> None:
        """Replace manifest.json (confined, atomic) and the held manifest."""
        self.check(MANIFEST)
        write_manifest(self.root, manifest)
        self._manifest = manifest

    # --- file operations: every path below the root goes through `check` --------------------

    def check(self, relative: str, *, folder: bool = False) -> Path:
        """`root/relative` once no component below the root is a symbolic link (or a file
        where a folder must be), and the last one, if it exists, is a regular file (a folder
        when `folder`). ZooFolderError names the first offending path."""
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or any(
                p in (".", "..") for p in parts):
            raise ZooFolderError(f"{self.root}: {relative!r} is not a plain path inside the "
                                 f"zoo folder")
        path = self.root
        for number, part in enumerate(parts, 1):
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                return self.root.joinpath(*parts)
            last = number == len(parts)
            wanted = stat.S_ISDIR(mode) if (folder or not last) else stat.S_ISREG(mode)
            if not wanted:
                expected = "a folder" if (folder or not last) else "a regular file"
                raise ZooFolderError(f"{path}: is {kind_of(mode)}, not {expected}; a zoo "
                                     f"folder's files must lie inside it (refused before "
                                     f"writing; remove it)")
        return path

    def makedirs(self, relative: str) -> Path:
        """Create `relative` and its missing parents, refusing a link on the way. A parent
        removed meanwhile (another task's cleanup removes a spool or state folder once it is
        empty) is made again."""
        self.check(relative, folder=True)
        for _ in range(MAKEDIRS_ATTEMPTS - 1):
            try:
                return self._makedirs(relative)
            except FileNotFoundError:
                continue
        return self._makedirs(relative)

    def _makedirs(self, relative: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root
        for part in PurePosixPath(relative).parts:
            path = path / part
            self.check(path.relative_to(self.root).as_posix(), folder=True)
            try:
                os.mkdir(path)
            except FileExistsError:
                self.check(path.relative_to(self.root).as_posix(), folder=True)
        return path

    def target(self, relative: str) -> Path:
        """The path of a file to be written by a library that takes paths (plots, study
        tables): its folder is made confined and a link or non-regular file there refused."""
        parent = PurePosixPath(relative).parent
        if str(parent) != ".":
            self.makedirs(str(parent))
        return self.check(relative)

    def open_read(self, relative: str) -> IO[bytes]:
        """A regular file inside the folder, opened for reading."""
        return open_regular(self.check(relative))

    def write(self, relative: str, data: bytes | Callable[[Path], None]) -> Path:
        """Write `data` (bytes, or a function writing a file at the path it is given) to a
        temporary sibling and rename it over `relative`; the folder is made if missing."""
        path = self.target(relative)
        write_atomically(path, data)
        return path

    def create(self, relative: str) -> Path:
        """A new, empty regular file at `relative` (a leftover regular file is replaced), for
        a library that then writes it by path (h5py, a Parquet writer)."""
        path = self.target(relative)
        os.close(create_new(path))
        return path

    def replace(self, source: str, destination: str) -> Path:
        """Rename `source` over `destination`, both inside the folder."""
        old, new = self.check(source), self.check(destination)
        os.replace(old, new)
        return new

    def delete(self, relative: str, missing_ok: bool = True) -> None:
        """Remove a regular file (never through a link: a link is refused)."""
        path = self.check(relative)
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def delete_tree(self, relative: str) -> None:
        """Remove the folder `relative` and everything in it; a link in it is refused before
        anything is removed (nothing outside is touched)."""
        path = self.check(relative, folder=True)
        if not path.exists():
            return
        files = list(self.files(relative))
        for name in files:
            os.unlink(self.root / name)
        for folder, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
            os.rmdir(folder)

    def discard_tree(self, relative: str) -> None:
        """Remove the folder `relative` and everything in it, a symbolic link, FIFO or other
        special file in it included: each is removed as a name (unlinked), never opened,
        followed or descended, so nothing outside is touched (a discarded training state)."""
        name = PurePosixPath(relative)
        if name.is_absolute() or name.name in ("", ".", ".."):
            raise ZooFolderError(f"{self.root}: {relative!r} is not a plain path inside the "
                                 f"zoo folder")
        parent = self.root if str(name.parent) == "." else self.check(str(name.parent),
                                                                      folder=True)
        path = parent / name.name
        if not os.path.lexists(path):
            return
        if stat.S_ISDIR(os.lstat(path).st_mode):
            _remove_names(path)
        else:  # a link or file where the folder should be: the name goes, nothing it points to
            os.unlink(path)

    def files(self, relative: str) -> Iterator[str]:
        """Every regular file under the folder `relative` (paths relative to the root,
        sorted), never descending a link: a link or any other kind of file is refused."""
        start = self.check(relative, folder=True)
        if not start.exists():
            return iter(())
        found: list[str] = []
        pending = [start]
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    if stat.S_ISDIR(mode):
                        pending.append(Path(entry.path))
                    elif stat.S_ISREG(mode):
                        found.append(Path(entry.path).relative_to(self.root).as_posix())
                    else:
                        raise ZooFolderError(f"{entry.path}: is {kind_of(mode)} in a folder "
                                             f"the zoo format owns; refused (remove it)")
        return iter(sorted(found))

    def check_tree(self, relative: str) -> None:
        """Refuse a link or a non-regular file anywhere under `relative` (the state folder
        before workers write into it)."""
        list(self.files(relative))


def _remove_names(folder: Path) -> None:
    """Remove `folder` bottom-up: subfolders (not links to folders) are entered, every other
    entry is unlinked."""
    with os.scandir(folder) as entries:
        found = list(entries)
    for entry in found:
        if entry.is_dir(follow_symlinks=False):
            _remove_names(Path(entry.path))
        else:
            os.unlink(entry.path)
    os.rmdir(folder)
