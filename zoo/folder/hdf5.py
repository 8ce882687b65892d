"""Opening a zoo's HDF5 files with only what this version's writers make allowed.

An HDF5 file can name other files: external links, virtual datasets (data gathered from other
files) and external storage (raw data kept in other files) are all read by the HDF5 library
itself, by path, wherever the path points. It can also declare any shape, chunking or filter.
`open_checked` walks the whole file before a value is read and refuses, naming the file and
the object, anything the writers never make: a link that is not a plain (hard) link, a name
they do not write, a virtual or externally stored dataset, a filter, a dtype, a shape or a
chunk other than the expected one, an attribute they do not set.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooFolderError
from zoo.folder.names import open_regular
from zoo.printable import printable

# name -> (shape, dtype); a None length is the file's one free length (kept epochs of a
# checkpoint file), the same in every dataset that has one
Expected = Mapping[str, tuple[tuple[int | None, ...], str]]

MAX_FREE_LENGTH = 1_000_000  # kept epochs of one per-model file (the spec allows 100,001)
MAX_ATTRIBUTE_BYTES = 1_024  # stored bytes of one attribute (a layout key, a model id)


@contextmanager
def open_checked(path: Path, expected: Expected, attributes: tuple[str, ...]) -> Iterator[Any]:
    """The HDF5 file at `path` (a regular file inside its folder), opened for reading once
    its structure holds exactly the datasets `expected` and at most the root `attributes`.

    Raises:
        ZooFolderError naming the file and the first object that differs.
    """
    import h5py

    try:
        with open_regular(path) as raw, h5py.File(raw, "r") as handle:
            _check_attributes(path, handle, attributes)
            found = _walk(path, handle, "", _groups(expected), expected)
            missing = sorted(set(expected) - set(found))
            if missing:
                raise ZooFolderError(f"{path}: /{missing[0]} is missing; this version's "
                                     f"writer makes it")
            _check_free_length(path, found, expected)
            yield handle
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ZooFolderError(f"{path}: cannot be read as this version's HDF5 shard "
                             f"({type(error).__name__}: {error})") from None


def _groups(expected: Expected) -> set[str]:
    """Every group the expected datasets lie in ('' is the root)."""
    groups = {""}
    for name in expected:
        parts = name.split("/")
        groups.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return groups


def _walk(path: Path, group: Any, prefix: str, groups: set[str], expected: Expected,
          ) -> dict[str, tuple[int, ...]]:
    """Shapes of the datasets below `group`, each link and object checked before the next."""
    import h5py

    count = group.id.get_num_objs()
    if count > len(expected) + len(groups):  # bounded before any name is listed
        raise ZooFolderError(f"{path}: /{prefix} holds {count} objects; this version's writer "
                             f"makes at most {len(expected) + len(groups)}")
    found: dict[str, tuple[int, ...]] = {}
    for index in range(count):
        raw_name = group.id.get_objname_by_idx(index)
        name = f"{prefix}/{raw_name.decode('utf-8', 'replace')}".lstrip("/")
        if name not in expected and name not in groups:
            raise ZooFolderError(f"{path}: holds /{name}, which this version's writer never "
                                 f"makes")
        link = group.id.links.get_info(raw_name).type
        if link != h5py.h5l.TYPE_HARD:
            kind = {h5py.h5l.TYPE_SOFT: "a soft link",
                    h5py.h5l.TYPE_EXTERNAL: "an external link"}.get(link, "a user-defined link")
            raise ZooFolderError(f"{path}: /{name} is {kind}; a zoo's HDF5 files hold plain "
                                 f"datasets only")
        item = group.get(raw_name.decode("utf-8", "replace"))
        if name in groups:
            if not isinstance(item, h5py.Group):
                raise ZooFolderError(f"{path}: /{name} is not a group")
            found.update(_walk(path, item, name, groups, expected))
            continue
        if not isinstance(item, h5py.Dataset):
            raise ZooFolderError(f"{path}: /{name} is not a dataset")
        found[name] = check_dataset(path, name, item, *expected[name])
    return found


def check_dataset(path: Path, name: str, dataset: Any, shape: tuple[int | None, ...],
                  dtype: str) -> tuple[int, ...]:
    """`dataset` stored as the writers store it: its bytes in this file (not virtual, no
    external storage), no filter, the expected dtype, shape and at most a row per chunk."""
    import h5py

    plist = dataset.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise ZooFolderError(f"{path}: /{name} is a virtual dataset; its values would be read "
                             f"from other files")
    if plist.get_external_count():
        raise ZooFolderError(f"{path}: /{name} keeps its values in external files; a zoo's "
                             f"HDF5 files hold their values themselves")
    if plist.get_nfilters():
        raise ZooFolderError(f"{path}: /{name} has filter {plist.get_filter(0)[0]}; this "
                             f"version's writer uses none")
    if dataset.dtype != np.dtype(dtype):
        raise ZooFolderError(f"{path}: /{name} holds {dataset.dtype}; expected {dtype}")
    found = tuple(dataset.shape or ())
    fits = len(found) == len(shape) and all(s is None or f == s for f, s in zip(found, shape))
    if not fits:
        wanted = ", ".join("n" if s is None else str(s) for s in shape)
        raise ZooFolderError(f"{path}: /{name} is {found}; expected shape "
                             f"({wanted}{',' if len(shape) == 1 else ''})")
    row = math.prod(found[1:]) if found else 1
    if dataset.chunks is not None and math.prod(dataset.chunks) > max(row, 1 << 16):
        raise ZooFolderError(f"{path}: /{name} has chunks of {dataset.chunks}; this version's "
                             f"writer stores at most one row ({row} values) per chunk")
    return found


def _check_attributes(path: Path, handle: Any, allowed: tuple[str, ...]) -> None:
    import h5py

    count = h5py.h5a.get_num_attrs(handle.id)
    names = list(handle.attrs.keys()) if count <= len(allowed) else []
    unknown = [printable(n) for n in names if n not in allowed]
    if count > len(allowed) or unknown:
        found = f"root attribute {unknown[0]!r}" if unknown else f"{count} root attributes"
        raise ZooFolderError(f"{path}: holds {found}; this version's writer sets only "
                             f"{', '.join(allowed)}")
    for name in names:
        attribute = h5py.h5a.open(handle.id, name.encode())
        if attribute.get_storage_size() > MAX_ATTRIBUTE_BYTES or attribute.shape not in ((), None):
            raise ZooFolderError(f"{path}: attribute {name} is not one short string")


def _check_free_length(path: Path, found: Mapping[str, tuple[int, ...]], expected: Expected,
                       ) -> None:
    lengths = {found[n][i] for n, (shape, _) in expected.items()
               for i, s in enumerate(shape) if s is None}
    if len(lengths) > 1:
        raise ZooFolderError(f"{path}: its datasets hold {len(lengths)} different numbers of "
                             f"rows ({', '.join(map(str, sorted(lengths)))}); expected one")
    if lengths and lengths.pop() > MAX_FREE_LENGTH:
        raise ZooFolderError(f"{path}: more than {MAX_FREE_LENGTH} rows")
