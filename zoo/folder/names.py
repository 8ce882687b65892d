"""The zoo folder's fixed names, its format version, and the file operations every side shares."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable

from zoo.errors import IntegrityError, ZooFolderError

FORMAT_VERSION = 7  # 2: zoo.json holds the data's shape facts; 3: the manifest covers zoo.json
#                     and README.md; 4: models row groups sized for random reads, each with
#                     its sha256 in the manifest (zoo.folder.rowgroups); 5: `weights` holds
#                     each checkpoint's little-endian float32 bytes, uncompressed (no list),
#                     and row-group digests are BLAKE3; 6: models files of bounded bytes, a
#                     cell's rows in several numbered shards (zoo.folder.shardbytes); 7: an
#                     inline row's weights_sha256 holds the BLAKE3 of its weights, so a row is
#                     read and checked alone (CheckedShard.read_row)
READABLE_VERSIONS = (3, 4, 5, 6, 7)  # format 3: whole-shard sha256 only; 3 and 4: list<float32>
GROWABLE_VERSIONS = (5, 6, 7)  # a zoo a writer may add cells to (it becomes format 7): a
#                               format-5 shard is format 6's one shard a cell, and rows
#                               without a BLAKE3 weights_sha256 are read by row group
MAX_JSON_BYTES = 64 << 20  # manifest, zoo.json, a layout: far above any real one

MANIFEST = "manifest.json"
ZOO_JSON = "zoo.json"
README = "README.md"
LAYOUTS_TABLE = "layouts.parquet"  # every layout's entries, the card's `layouts` config
LOCK = "zoo.lock"  # the writer's lock (zoo.folder.lock)
LAYOUTS = "layouts"
TABLE_FOLDERS = {"models": "data/models", "cells": "data/cells", "pairs": "data/pairs"}
HDF5_FOLDER = "hdf5"
CHECKPOINTS_FOLDER = "hdf5/models"  # per-model HDF5 checkpoint files
TEMPORARY_SUFFIX = ".partial"
FAILURES = "failures"  # <cell_id>.json records of cells whose training raised
STATE = "state"  # training states of models in progress (zoo.train.state)
SPOOL = "state/spool"  # checkpoints of models in progress (zoo.train.spool)
PLOTS = "plots"  # `zoo plot`'s figures
STUDIES = "studies"  # `zoo study`'s tables and figures, one folder per study


def sha256_of(path: Path) -> str:
    """Hex sha256 of a regular file's bytes (no symlink, no FIFO), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inside(root: Path, relative: str) -> Path:
    """`root / relative` for a path named by a zoo folder, refused unless it is a plain
    relative path (no '..', not absolute) and so stays inside the folder by its spelling."""
    parts = PurePosixPath(relative).parts if isinstance(relative, str) else ()
    if not parts or PurePosixPath(relative).is_absolute() or "\\" in relative or any(
            part in (".", "..") for part in parts):
        raise ZooFolderError(f"{Path(root) / MANIFEST}: shard path {relative!r} leaves the zoo "
                             f"folder (expected a plain relative path inside it)")
    return Path(root).joinpath(*parts)


def confined(root: Path, relative: str) -> Path:
    """`inside(root, relative)`, also refused when a symbolic link lies on the way, so the
    file it names is inside the folder; to open before reading anything."""
    path = inside(Path(root).resolve(), relative)
    if path.resolve() != path:
        raise ZooFolderError(f"{path}: is a symbolic link or lies under one; a zoo folder's "
                             f"files must be regular files inside it")
    return path


def open_regular(path: Path) -> IO[bytes]:
    """Open a file for reading, refusing a symlink, a folder, a FIFO or a device before
    reading a byte (O_NONBLOCK: opening a FIFO does not wait for a writer)."""
    fd = open_regular_fd(path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def open_regular_fd(path: Path) -> int:
    """`open_regular`'s descriptor alone, for `os.pread` (the caller closes it): cheaper
    than a file object where a read is a single call."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ZooFolderError(f"{path}: is a symbolic link; a zoo folder's files must be "
                                 f"regular files inside it") from None
        if error.errno == errno.EISDIR:
            raise ZooFolderError(f"{path}: is a folder, not a regular file") from None
        raise ZooFolderError(f"{path}: cannot be read ({error.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "not a regular file"
        raise ZooFolderError(f"{path}: is {kind}, not a regular file")
    return fd


def read_bounded(path: Path, what: str, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of the regular file `path`, refused above `limit` before any is read."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise ZooFolderError(f"{path}: {size} bytes, more than a {what} may hold ({limit})")
        data = handle.read(size + 1)  # read(n) allocates n bytes: the file's size, not the limit
    if len(data) > size:
        raise ZooFolderError(f"{path}: grew while it was read")
    return data


def read_json(path: Path, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON document in the regular file `path`, at most `limit` bytes; every failure is a
    ZooFolderError naming the file (`what` says which document it should be)."""
    data = read_bounded(path, what, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        reason = f"nested too deeply: {error}" if isinstance(error, RecursionError) else error
        raise ZooFolderError(f"{path}: not a {what} this version can read ({reason})") from None


def write_atomically(path: Path, data: bytes | Callable[[Path], None]) -> None:
    """Write `data` (bytes, or a function that writes a file at the path it is given) to a
    temporary sibling, flush it to disk, and rename it over `path`. The temporary file is
    made new (O_EXCL, O_NOFOLLOW): a leftover regular one is removed first, a symbolic link
    or anything else in its place is refused, so nothing is written through a link."""
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    fd = create_new(temporary)
    if callable(data):
        os.close(fd)
        data(temporary)
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    with open_regular(temporary) as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def create_new(path: Path) -> int:
    """A new regular file at `path` opened for writing (its descriptor); a leftover regular
    file there is removed first, a symbolic link or any other kind is refused in one line."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(mode):
            raise ZooFolderError(f"{path}: is {kind_of(mode)}, not a regular file; refused "
                                 f"before writing (remove it)")
        os.unlink(path)
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise ZooFolderError(f"{path}: appeared while it was written; refused") from None


def kind_of(mode: int) -> str:
    """'a symbolic link', 'a folder', 'a FIFO', ... for an lstat mode."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"
