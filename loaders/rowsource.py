"""Rows' weights read when an item asks for them: a format-7 Parquet row alone (checked against
its own digest), older Parquet rows by row group through a decode cache bounded in bytes,
per-model HDF5 by slice. Nothing open survives a read and the cache is dropped when pickled,
so DataLoader workers (fork or spawn) each open their own files."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.errors import ZooFolderError
from zoo.folder.checkpoints import read_checkpoint
from zoo.folder.modelshards import read_inline_group, row_group_starts
from zoo.folder.reader import ZooReader
from zoo.folder.rowgroups import BLAKE3
from zoo.layout import Layout

CACHE_BYTES = 256 << 20  # default decode cache: a few row groups of the largest inline rows
Columns = dict[str, np.ndarray]


class ByteCache:
    """The most recently used values, `limit` bytes in all; a larger value is not kept."""

    def __init__(self, limit: int) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"cache_bytes: {limit!r} is not allowed; expected an integer >= 0")
        self.limit, self.used = limit, 0
        self.items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], tuple[Any, int]]) -> Any:
        """The value of `key`, loaded by `load` (value, bytes) when it is not held."""
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        value, size = load()
        if size <= self.limit:
            self.items[key] = (value, size)
            self.used += size
            while self.used > self.limit:
                self.used -= self.items.popitem(last=False)[1][1]
        return value


@dataclass(frozen=True)
class RowPlaces:
    """Where each chosen row's weights live: models Parquet shard number (manifest order) and
    row in it, or a per-model HDF5 file and the index in it; and the row's weights_sha256."""

    shard: np.ndarray
    row: np.ndarray
    file: np.ndarray
    index: np.ndarray
    sha256: np.ndarray

    @classmethod
    def of(cls, columns: Columns, chosen: np.ndarray) -> RowPlaces:
        """The places of rows `chosen` (indices into read_metadata's columns)."""
        none = np.full(len(chosen), None, dtype=object)
        files = columns.get("weights_file")  # absent: a zoo written before per-model files
        return cls(columns["shard"][chosen], columns["row"][chosen],
                   none if files is None else files[chosen],
                   columns["weights_index"][chosen] if files is not None else none,
                   columns["weights_sha256"][chosen] if files is not None else none)


class RowSource:
    """Reads row i's flat float32 weights (`row`) on demand, each row group or checkpoint
    checked against the manifest's digests before it is decoded (format-3 shards: their
    whole sha256, once per process)."""

    def __init__(self, reader: ZooReader, places: RowPlaces, layouts: dict[str, Layout],
                 keys: list[str], cache_bytes: int = CACHE_BYTES) -> None:
        self.reader, self.places, self.layouts, self.keys = reader, places, layouts, keys
        self.cache_bytes = cache_bytes
        self.shards = reader.manifest.shards_of("models")
        self._reset()
        # each inline row's row group and place in it (-1: the row's weights are in a file)
        self.groups = np.full(len(places.shard), -1, np.int64)
        self.locals = np.full(len(places.shard), -1, np.int64)
        inline = np.array([file is None for file in places.file], bool)
        alone = np.array([isinstance(d, str) and d.startswith(BLAKE3) for d in places.sha256],
                         bool)  # format 7: rows read alone
        for number in np.unique(places.shard).tolist():  # refused at open, not at first read
            sizes = 4 * np.asarray(reader.check_weights(self.shards[number]), np.int64)
            self._counted.add(number)
            mine = np.flatnonzero(inline & (places.shard == number))
            starts = row_group_starts(reader, self.shards[number])
            rows = places.row[mine].astype(np.int64)
            self.groups[mine] = np.searchsorted(starts, rows, side="right") - 1
            self.locals[mine] = rows - starts[self.groups[mine]]
            located = {g: sizes[starts[g]:starts[g + 1]].tolist()
                       for g in np.unique(self.groups[mine[alone[mine]]]).tolist()}
            if located:  # found now, once for forked DataLoader workers too
                reader.checked(self.shards[number]).locate(located)

    def _reset(self) -> None:
        self.cache = ByteCache(self.cache_bytes)
        self._counted: set[int] = set()  # shards whose footer weight count was checked

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("cache", "_counted"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Row i's weights: a new float32 array of its layout's size, or `out` (one of that
        size) filled with them."""
        values = self._row(i, out)
        if out is not None and values is not out:
            out[:] = values
            return out
        return values

    def _row(self, i: int, out: np.ndarray | None) -> np.ndarray:
        layout = self.layouts[self.keys[i]]
        number, row = int(self.places.shard[i]), int(self.places.row[i])
        file = self.places.file[i]
        if file is not None:  # a per-model file the manifest lists for the row's cell
            source = self.reader.weights_source(self.shards[number], str(file))
            self.reader.ensure_local(source)  # on a store: fetched into the cache, checked
            return read_checkpoint(self.reader.root, source.path, int(self.places.index[i]),
                                   self.places.sha256[i], layout)
        group, local = int(self.groups[i]), int(self.locals[i])
        digest = self.places.sha256[i]
        if isinstance(digest, str) and digest.startswith(BLAKE3):  # format 7: the row alone
            self._check_count(number)
            alone = self.reader.checked(self.shards[number]).read_row(group, local, digest,
                                                                      layout.size, out)
            if alone is not None:
                return alone
        values, offsets = self.cache.get((number, group), lambda: self._read_group(number,
                                                                                 group))
        start, stop = int(offsets[local]), int(offsets[local + 1])
        if stop - start != layout.size:
            shard = self.shards[number]
            raise ZooFolderError(f"{self.reader.root / shard.path}: row {row} has "
                                 f"{stop - start} weights; layout {layout.key} has "
                                 f"{layout.size}")
        return values[start:stop] if out is not None else values[start:stop].copy()

    def _check_count(self, number: int) -> None:
        """Refuse shard `number` once (each process) if its footer's weight count is not
        its rows' layouts' (nothing is allocated from a count that lies)."""
        if number not in self._counted:
            self.reader.check_weights(self.shards[number])
            self._counted.add(number)

    def _read_group(self, number: int, group: int) -> tuple[tuple[np.ndarray, np.ndarray], int]:
        """Row group `group` of models shard `number`: flat values, row offsets; its bytes."""
        shard = self.shards[number]
        self._check_count(number)
        values, offsets = read_inline_group(self.reader, shard, group)
        return (values, offsets), values.nbytes + offsets.nbytes

    def units(self) -> list[np.ndarray]:
        """Rows grouped by what one read fetches (a row group, a per-model file), in the
        order of the shards and rows; each unit's rows in row order."""
        keys: dict[tuple, list[int]] = {}
        for i in range(len(self)):
            file = self.places.file[i]
            if file is not None:
                key: tuple = ("file", str(file))
            else:
                key = ("group", int(self.places.shard[i]), int(self.groups[i]))
            keys.setdefault(key, []).append(i)
        return [np.array(rows, dtype=np.int64) for rows in keys.values()]

    def rows(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """The weights of `indices`, one row after another (read through the cache)."""
        for i in indices:
            yield self.row(int(i))


@dataclass(frozen=True)
class LazyStore:
    """Weights of chosen rows read when asked (RowSource); `keys` per row its layout key."""

    layouts: dict[str, Layout]
    keys: list[str]
    source: RowSource

    def row(self, index: int) -> np.ndarray:
        return self.source.row(index)

    def layout_rows(self, key: str, among: np.ndarray | None = None) -> np.ndarray:
        """Indices of the rows of layout `key` (among `among` when given)."""
        rows = np.flatnonzero(np.array(self.keys) == key)
        return rows if among is None else np.intersect1d(rows, among)


def lazy_layer_statistics(store: LazyStore, rows: np.ndarray
                          ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """loaders.store.layer_statistics over `rows` of a LazyStore, two passes, one row held at
    a time (float64 sums: equal to the in-memory figures up to rounding)."""
    statistics = {}
    for key, layout in store.layouts.items():
        members = store.layout_rows(key, rows)
        if len(members) == 0:
            continue
        floats = [e for e in layout.entries if e.dtype != "int64"]
        sums, count = np.zeros(len(floats)), 0
        finite = []
        for index, flat in zip(members, store.source.rows(members)):
            if np.isfinite(flat).all():
                finite.append(index)
                count += 1
                sums += [flat[e.offset:e.offset + e.size].sum(dtype=np.float64) for e in floats]
        if not count:
            raise ValueError(f"normalize: layout {key} has no finite train rows to take "
                             f"statistics from")
        means = sums / np.array([count * e.size for e in floats])
        squares = np.zeros(len(floats))
        for flat in store.source.rows(np.array(finite)):
            squares += [np.square(flat[e.offset:e.offset + e.size] - m, dtype=np.float64).sum()
                        for e, m in zip(floats, means)]
        mean, std = np.zeros(layout.size, np.float32), np.ones(layout.size, np.float32)
        for e, m, s in zip(floats, means, np.sqrt(squares / [count * e.size for e in floats])):
            if s > 0:
                mean[e.offset:e.offset + e.size], std[e.offset:e.offset + e.size] = m, s
        statistics[key] = (mean, std)
    return statistics
