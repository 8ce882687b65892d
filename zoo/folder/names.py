"""The zoo folder's fixed names, its format version, and the file operations every side shares."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from zoo.errors import ZooFolderError

FORMAT_VERSION = 2  # 2: zoo.json holds the data's shape facts; the manifest, each cell's stacking

MANIFEST = "manifest.json"
ZOO_JSON = "zoo.json"
README = "README.md"
LAYOUTS = "layouts"
TABLE_FOLDERS = {"models": "data/models", "cells": "data/cells", "pairs": "data/pairs"}
HDF5_FOLDER = "hdf5"
TEMPORARY_SUFFIX = ".partial"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def confined(root: Path, relative: str) -> Path:
    """`root / relative`, refusing any path that leaves the zoo folder."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if root != path and root not in path.parents:
        raise ZooFolderError(f"{root / MANIFEST}: shard path {relative!r} leaves the zoo folder")
    return path


def write_atomically(path: Path, data: bytes | Callable[[Path], None]) -> None:
    """Write `data` (bytes, or a function that writes a file at the path it is given) to a
    temporary sibling, flush it to disk, and rename it over `path`."""
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    if callable(data):
        data(temporary)
    else:
        temporary.write_bytes(data)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
