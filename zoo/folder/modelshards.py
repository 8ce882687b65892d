"""A cell's models shards, written and read here: the Parquet models shard (`weights` inline
or naming a per-model checkpoint file, `zoo.folder.checkpoints`) and the cell HDF5 shard.

Writing holds one checkpoint at a time.

Used by the worker that trains the cell (rows straight from its training spool) and by the
driver for rows it holds (imports). Every file gets a name no other writer uses (a random
token), is written under a temporary name and renamed when complete; the caller lists the
returned shards in the manifest.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pyarrow as pa

from zoo.folder.checkpoints import CHECKPOINTS_FORMAT, CheckpointFile, flat_sha256
from zoo.errors import ZooFolderError
from zoo.folder.hdf5 import Expected, open_checked
from zoo.folder.manifest import Shard
from zoo.folder.names import (CHECKPOINTS_FOLDER, HDF5_FOLDER, TABLE_FOLDERS, TEMPORARY_SUFFIX,
                              sha256_of)
from zoo.folder.rowgroups import PARQUET_ERRORS, shard_parts
from zoo.folder.schema import CELL_JOINED, arrow_schema, to_arrow
from zoo.folder.zoofolder import ZooFolder
from zoo.layout import Layout
from zoo.printable import printable

if TYPE_CHECKING:  # the reader reads through these functions; the writer needs none of it
    from zoo.folder.reader import ZooReader

INLINE_BYTES = 16 << 20  # default: checkpoints up to 16 MiB stay in the Parquet row
ROW_GROUP_BYTES = 4 << 20  # a Parquet row group holds at most this many bytes of weights, or
#                            one checkpoint when it is larger: one random read decodes little
HDF5_COLUMNS = ("seed", "train_loss", "train_accuracy", "train_error", "test_loss",
                "test_accuracy", "test_error", "finite")


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """zstd; float columns byte-stream-split, no dictionary for them (smaller); the weights'
    bytes plain, uncompressed and without statistics, so a row group decodes at memory speed
    (zstd would save ~15 % of their bytes and cost ~8x the decode)."""
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    floats += [f"{f.name}.list.element" for f in schema
               if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)]
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    return {"compression": {f.name: "none" if f.name == "weights" else "zstd" for f in schema},
            "use_dictionary": strings, "use_byte_stream_split": floats,
            "write_statistics": [f.name for f in schema if f.name != "weights"]}


def is_inline(layout: Layout, inline_bytes: int) -> bool:
    """Whether checkpoints of `layout` stay in the Parquet `weights` column."""
    return layout.size * 4 <= inline_bytes


class ModelsWriter:
    """Writes a cell's models shard (Parquet), its cell HDF5 shard (inline cells, when asked)
    and per-model checkpoint files (large checkpoints). A context manager: on an error every
    file it began is removed.

    Args:
        folder: the zoo folder (every file goes through its confined methods).
        cell_id: the cell the rows belong to.
        layout: the layout of every row.
        rows: how many rows `add` will get (the cell HDF5 shard is allocated up front).
        cell_hdf5: also write hdf5/cell-<id>_<token>.h5 (inline checkpoints only).
        inline_bytes: checkpoints larger than this go to per-model HDF5 files.
        joined: the cell's cells-table row; its CELL_JOINED columns are copied into every row.
    """

    def __init__(self, folder: ZooFolder | Path, cell_id: str, layout: Layout, rows: int, *,
                 cell_hdf5: bool, inline_bytes: int = INLINE_BYTES,
                 joined: dict[str, Any] | None = None) -> None:
        self.folder = ZooFolder.of(folder)
        self.root, self.cell_id, self.layout, self.rows = self.folder.root, cell_id, layout, rows
        self.inline = is_inline(layout, inline_bytes)
        self.joined = {n: (joined or {}).get(n) for n in CELL_JOINED}
        self.token = secrets.token_hex(4)
        self.done: list[Shard] = []
        self.begun: list[str] = []
        self.buffer: list[dict[str, Any]] = []
        self.buffered = 0
        self.written = 0
        self.parquet = None
        self.hdf5 = None
        self.file: CheckpointFile | None = None
        self.file_model: str | None = None
        self.file_rows = 0
        self.cell_hdf5 = cell_hdf5 and self.inline and rows > 0

    def _begin(self, relative: str) -> Path:
        path = self.folder.create(relative + TEMPORARY_SUFFIX)
        self.begun.append(relative + TEMPORARY_SUFFIX)
        return path

    def _finish(self, relative: str, table: str, fmt: str, rows: int) -> None:
        path = self.folder.replace(relative + TEMPORARY_SUFFIX, relative)
        self.begun.remove(relative + TEMPORARY_SUFFIX)
        parts = shard_parts(path) if fmt == "parquet" else ()
        self.done.append(Shard(table, fmt, relative, rows, path.stat().st_size, sha256_of(path),
                               self.cell_id, parts))

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write one row (its `weights` a flat float32 vector); returns it without weights."""
        flat = np.asarray(row["weights"], dtype=np.float32)
        row = {**row, **self.joined, "weights": None}
        if self.inline and self.buffered + flat.nbytes > ROW_GROUP_BYTES:
            self._flush()
        if self.inline:
            self.buffer.append({**row, "weights": flat})
            self.buffered += flat.nbytes
            if self.cell_hdf5:
                self._hdf5_row(row, flat)
        else:
            index = self._checkpoint(row["model_id"], row["epoch"], flat)
            row.update(weights_file=self._file_name(row["model_id"]), weights_index=index,
                       weights_sha256=flat_sha256(flat))
            self.buffer.append(row)
        self.written += 1
        return row

    def _file_name(self, model_id: str) -> str:
        return f"{CHECKPOINTS_FOLDER}/{model_id}_{self.token}.h5"

    def _checkpoint(self, model_id: str, epoch: int, flat: np.ndarray) -> int:
        if self.file_model != model_id:
            self._close_file()
            self.file = CheckpointFile(self._begin(self._file_name(model_id)), self.layout,
                                       model_id)
            self.file_model = model_id
        return self.file.append(epoch, flat)

    def _close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self._finish(self._file_name(self.file_model), "models", CHECKPOINTS_FORMAT,
                         self.file.count)
            self.file, self.file_model = None, None

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        if not self.buffer:
            return
        table = to_arrow("models", self.buffer)
        if self.parquet is None:
            path = self._begin(f"{TABLE_FOLDERS['models']}/{self._stem()}.parquet")
            self.parquet = pq.ParquetWriter(path, arrow_schema("models"),
                                            **parquet_options(table.schema))
        self.parquet.write_table(table)
        self.buffer, self.buffered = [], 0

    def _stem(self) -> str:
        return f"cell-{self.cell_id}_{self.token}"

    def _hdf5_row(self, row: dict[str, Any], flat: np.ndarray) -> None:
        import h5py

        if self.hdf5 is None:
            self.hdf5 = h5py.File(self._begin(f"{HDF5_FOLDER}/{self._stem()}.h5"), "w")
            self.hdf5.attrs["layout"] = self.layout.key
            for name, (shape, dtype) in cell_datasets(self.layout, self.rows).items():
                self.hdf5.create_dataset(name, shape=shape, dtype=dtype)
        i = self.written
        self.hdf5["model_id"][i] = row["model_id"].encode()
        self.hdf5["epoch"][i] = row["epoch"]
        for entry in self.layout.entries:
            values = flat[entry.offset:entry.offset + entry.size].reshape(entry.shape)
            self.hdf5[f"weights/{entry.name}"][i] = values
        for name in HDF5_COLUMNS:
            self.hdf5[f"columns/{name}"][i] = np.nan if row.get(name) is None else row[name]

    def close(self) -> list[Shard]:
        """Finish every file; returns their shards (models parquet, cell hdf5, checkpoints)."""
        if self.written != self.rows:
            raise ValueError(f"cell {self.cell_id}: {self.written} models rows written, "
                             f"{self.rows} announced")
        self._close_file()
        self._flush()
        if self.parquet is not None:
            self.parquet.close()
            self._finish(f"{TABLE_FOLDERS['models']}/{self._stem()}.parquet", "models",
                         "parquet", self.written)
        if self.hdf5 is not None:
            self.hdf5.close()
            self._finish(f"{HDF5_FOLDER}/{self._stem()}.h5", "models", "hdf5", self.written)
        return self.done

    def abort(self) -> None:
        """Remove every file this writer began or finished (an error stopped the cell)."""
        for handle in (self.parquet, self.hdf5, self.file):
            if handle is not None:
                handle.close()
        for relative in self.begun + [s.path for s in self.done]:
            self.folder.delete(relative)

    def __enter__(self) -> ModelsWriter:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is not None:
            self.abort()


def write_models(folder: ZooFolder | Path, cell_id: str, layout: Layout, rows: Iterable[dict[str, Any]],
                 count: int, *, cell_hdf5: bool, inline_bytes: int = INLINE_BYTES,
                 joined: dict[str, Any] | None = None) -> tuple[list[Shard], list[dict]]:
    """Write `count` models rows of one cell; returns the shards and the rows without weights."""
    with ModelsWriter(folder, cell_id, layout, count, cell_hdf5=cell_hdf5,
                      inline_bytes=inline_bytes, joined=joined) as writer:
        small = [writer.add(row) for row in rows]
        return writer.close(), small


def inline_weights(table: pa.Table, source: object = "weights"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The `weights` column of a models shard's table as its flat float32 values (for
    format-5 bytes a read-only view of Arrow's buffer) and row offsets: row i holds
    values[offsets[i]:offsets[i + 1]]. Format 3 and 4 shards hold list<float32>; a row of
    bytes that are not whole float32 values is refused naming `source`."""
    column = table.column("weights")
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # no copy
    if len(array) == 0:
        return np.zeros(0, "<f4"), np.zeros(1, np.int64)
    if not pa.types.is_large_binary(array.type):
        return array.values.to_numpy(zero_copy_only=False), array.offsets.to_numpy()
    ends = np.frombuffer(array.buffers()[1], np.int64)[array.offset:
                                                        array.offset + len(array) + 1]
    if np.any((ends - ends[0]) % 4):
        raise ZooFolderError(f"{source}: a row's weights are not whole float32 values")
    values = np.frombuffer(array.buffers()[2] or b"", "<f4",
                           count=int(ends[-1] - ends[0]) // 4, offset=int(ends[0]))
    return values, (ends - ends[0]) // 4


def cell_datasets(layout: Layout, rows: int) -> Expected:
    """Every dataset of a cell HDF5 shard of `rows` rows of `layout`: shape and dtype (what
    the writer makes, and all that `read_cell_hdf5` accepts)."""
    return {"model_id": ((rows,), "S64"), "epoch": ((rows,), "<i8"),
            **{f"columns/{name}": ((rows,), "<f8") for name in HDF5_COLUMNS},
            **{f"weights/{e.name}": ((rows, *e.shape), "<f4") for e in layout.entries}}


def read_cell_hdf5(path: Path, layout: Layout, rows: int) -> Iterator[tuple[str, np.ndarray]]:
    """A cell HDF5 shard's datasets (`cell_datasets` order), one at a time, once the whole
    file holds only what the writer makes (`open_checked`); ZooFolderError names the file."""
    with open_checked(path, cell_datasets(layout, rows), ("layout",)) as handle:
        if handle.attrs.get("layout") != layout.key:
            raise ZooFolderError(f"{path}: layout {printable(handle.attrs.get('layout'))}, "
                                 f"Parquet rows {layout.key}")
        for name in cell_datasets(layout, rows):
            yield name, handle[name][()]


def row_group_starts(reader: ZooReader, shard: Shard) -> np.ndarray:
    """The first row of each row group of a models Parquet shard, and its row count last."""
    metadata = reader.parquet_metadata(shard)
    return np.cumsum([0] + [metadata.row_group(g).num_rows
                            for g in range(metadata.num_row_groups)])


def read_inline_group(reader: ZooReader, shard: Shard, group: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Row group `group` of a models Parquet shard as `inline_weights` does a table: checked
    before it is decoded against its row-group digest (formats 4 and 5; format-5 bytes are
    found in place, `CheckedShard.read_weights`), or the whole shard's sha256 once per reader
    (format 3). The caller checks each row's size (check_weights bounds the shard's)."""
    import pyarrow.parquet as pq

    if shard.parts:
        checked = reader.checked(shard)
        found = checked.read_weights(group)
        return found if found is not None else \
            inline_weights(checked.read_group(group, ["weights"]), checked.path)
    path = reader.path(shard)
    try:
        table = pq.ParquetFile(path).read_row_group(group, columns=["weights"],
                                                    use_threads=False)
    except PARQUET_ERRORS as error:
        raise ZooFolderError(f"{path}: cannot read row group {group} ({error})") from None
    return inline_weights(table, path)
