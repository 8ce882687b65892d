"""A cell's models shards, written and read here: the Parquet models shards (`weights` inline
or naming a per-model checkpoint file, `zoo.folder.checkpoints`) and their cell HDF5 twins.

Writing holds one checkpoint at a time; every file is bounded in bytes (`shardbytes`), so a
cell of a large zoo is several shards, numbered in row order.

Used by the worker that trains the cell (rows straight from its training spool) and by the
driver for rows it holds (imports). Every file gets a name no other writer uses (a random
token), is written under a temporary name and renamed when complete; the caller lists the
returned shards in the manifest.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from zoo.folder.checkpoints import CHECKPOINTS_FORMAT, CheckpointFile, flat_sha256
from zoo.errors import ZooFolderError
from zoo.folder.hdf5 import Expected, open_checked
from zoo.folder.manifest import Shard
from zoo.folder.names import (CHECKPOINTS_FOLDER, HDF5_FOLDER, TABLE_FOLDERS, TEMPORARY_SUFFIX,
                              sha256_of)
from zoo.folder.rowgroups import PARQUET_ERRORS, row_digest, shard_parts
from zoo.folder.schema import CELL_JOINED, arrow_schema, to_arrow
from zoo.folder.shardbytes import (SHARD_BYTES, checkpoint_file_bytes, empty_parquet_bytes,
                                   group_bytes, row_bytes, twin_bytes)
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
TWIN_COLUMNS = ["model_id", "epoch", *HDF5_COLUMNS, "weights"]  # what a cell HDF5 shard holds
TWIN_ROW_BYTES = 8 * (len(HDF5_COLUMNS) + 1) + 64  # a twin row's bytes besides its weights


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
    """Writes a cell's models shards (Parquet), their cell HDF5 twins (inline cells, when
    asked) and per-model checkpoint files (large checkpoints). A context manager: on an error
    every file it began is removed.

    Every file holds at most `shard_bytes` (shardbytes' upper estimate of its size) or a
    single row or checkpoint when that alone is larger: the writer starts the cell's next
    shard (next per-model file) when the next row (checkpoint) would pass the bound. The
    shards of a cell are numbered in row order (`-00000`, `-00001`, ...); the boundaries
    depend on the rows alone, so the same rows give the same files (named with the writer's
    own random token, as before).

    Args:
        folder: the zoo folder (every file goes through its confined methods).
        cell_id: the cell the rows belong to.
        layout: the layout of every row.
        rows: how many rows `add` will get.
        cell_hdf5: also write hdf5/<shard stem>.h5 beside each Parquet shard, holding its
            rows (inline checkpoints only).
        inline_bytes: checkpoints larger than this go to per-model HDF5 files.
        shard_bytes: the bound of each file.
        joined: the cell's cells-table row; its CELL_JOINED columns are copied into every row.
    """

    def __init__(self, folder: ZooFolder | Path, cell_id: str, layout: Layout, rows: int, *,
                 cell_hdf5: bool, inline_bytes: int = INLINE_BYTES,
                 shard_bytes: int = SHARD_BYTES, joined: dict[str, Any] | None = None) -> None:
        if isinstance(shard_bytes, bool) or not isinstance(shard_bytes, int) or shard_bytes < 1:
            raise ValueError(f"shard_bytes: {shard_bytes!r} is not allowed; expected an "
                             f"integer >= 1")
        self.folder = ZooFolder.of(folder)
        self.root, self.cell_id, self.layout, self.rows = self.folder.root, cell_id, layout, rows
        self.inline = is_inline(layout, inline_bytes)
        self.shard_bytes = shard_bytes
        self.joined = {n: (joined or {}).get(n) for n in CELL_JOINED}
        self.token = secrets.token_hex(4)
        self.done: list[Shard] = []
        self.begun: list[str] = []
        self.buffer: list[dict[str, Any]] = []
        self.buffered = 0
        self.written = 0
        self.parquet = None
        self.part, self.part_rows = 0, 0  # the Parquet shard being written: number, rows,
        self.estimate, self.twin = 0, 0  # and estimates of its size and its HDF5 twin's
        self.file: CheckpointFile | None = None
        self.file_model: str | None = None
        self.file_name, self.file_part = "", 0  # the per-model file being written, its number
        self.cell_hdf5 = cell_hdf5 and self.inline and rows > 0
        schema = arrow_schema("models")
        self.empty_bytes = empty_parquet_bytes(schema, parquet_options(schema))
        self.group_bytes = group_bytes(schema)

    def _begin(self, relative: str) -> Path:
        path = self.folder.create(relative + TEMPORARY_SUFFIX)
        self.begun.append(relative + TEMPORARY_SUFFIX)
        return path

    def _finish(self, relative: str, table: str, fmt: str, rows: int) -> Path:
        path = self.folder.replace(relative + TEMPORARY_SUFFIX, relative)
        self.begun.remove(relative + TEMPORARY_SUFFIX)
        parts = shard_parts(path) if fmt == "parquet" else ()
        self.done.append(Shard(table, fmt, relative, rows, path.stat().st_size, sha256_of(path),
                               self.cell_id, parts))
        return path

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write one row (its `weights` a flat float32 vector); returns it without weights."""
        flat = np.asarray(row["weights"], dtype=np.float32)
        row = {**row, **self.joined, "weights": None}
        if not self.inline:
            index = self._checkpoint(row["model_id"], row["epoch"], flat)
            row.update(weights_file=self.file_name, weights_index=index,
                       weights_sha256=flat_sha256(flat))
        else:  # checked alone when a reader asks for this row (CheckedShard.read_row)
            row["weights_sha256"] = row_digest(flat)
        stored = {**row, "weights": flat} if self.inline else row
        weights = flat.nbytes if self.inline else 0
        new_group = not self.buffer or self.buffered + weights > ROW_GROUP_BYTES
        cost = row_bytes(stored) + self.group_bytes * new_group
        twin = weights + TWIN_ROW_BYTES if self.cell_hdf5 else 0
        if self.part_rows and max(self.estimate + cost, self.twin + twin) > self.shard_bytes:
            self._close_part()  # the row would pass the bound: it starts the next shard
            cost += self.group_bytes * (not new_group)
            new_group = True
        if new_group:
            self._flush()
        if not self.part_rows:
            self.estimate = self.empty_bytes
            self.twin = twin_bytes(len(cell_datasets(self.layout, 0)), 0)
        self.buffer.append(stored)
        self.buffered += weights
        self.estimate += cost
        self.twin += twin
        self.part_rows += 1
        self.written += 1
        return row

    def _checkpoint(self, model_id: str, epoch: int, flat: np.ndarray) -> int:
        """Append to the model's file, starting its next file when this checkpoint would
        take the file past the bound."""
        if self.file is not None and (self.file_model != model_id or checkpoint_file_bytes(
                len(self.layout.entries) + 1, self.file.count + 1,
                (self.file.count + 1) * (flat.nbytes + 8)) > self.shard_bytes):
            self._close_file()
        if self.file is None:
            self.file_part = self.file_part + 1 if self.file_model == model_id else 0
            self.file_model = model_id
            self.file_name = numbered(f"{CHECKPOINTS_FOLDER}/{model_id}_{self.token}",
                                      self.file_part) + ".h5"
            self.file = CheckpointFile(self._begin(self.file_name), self.layout, model_id)
        return self.file.append(epoch, flat)

    def _close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self._finish(self.file_name, "models", CHECKPOINTS_FORMAT, self.file.count)
            self.file = None

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

    def _close_part(self) -> None:
        """Finish the Parquet shard being written and its HDF5 twin; the next row starts the
        next shard."""
        self._flush()
        self.parquet.close()
        self.parquet = None
        path = self._finish(f"{TABLE_FOLDERS['models']}/{self._stem()}.parquet", "models",
                            "parquet", self.part_rows)
        if self.cell_hdf5:
            self._write_twin(path)
        self.part, self.part_rows = self.part + 1, 0

    def _stem(self) -> str:
        return numbered(f"cell-{self.cell_id}_{self.token}", self.part)

    def _write_twin(self, parquet: Path) -> None:
        """The cell HDF5 twin of the Parquet shard just finished: its rows, read back a row
        group at a time."""
        import h5py
        import pyarrow.parquet as pq

        relative, start = f"{HDF5_FOLDER}/{self._stem()}.h5", 0
        with pq.ParquetFile(parquet) as source, h5py.File(self._begin(relative), "w") as handle:
            handle.attrs["layout"] = self.layout.key
            for name, (shape, dtype) in cell_datasets(self.layout, self.part_rows).items():
                handle.create_dataset(name, shape=shape, dtype=dtype)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group, columns=TWIN_COLUMNS)
                for name, values in cell_hdf5_values(table, self.layout).items():
                    handle[name][start:start + table.num_rows] = values()
                start += table.num_rows
        self._finish(relative, "models", "hdf5", self.part_rows)

    def close(self) -> list[Shard]:
        """Finish every file; returns their shards (models parquet and their cell hdf5 twins,
        checkpoints)."""
        if self.written != self.rows:
            raise ValueError(f"cell {self.cell_id}: {self.written} models rows written, "
                             f"{self.rows} announced")
        self._close_file()
        if self.part_rows:
            self._close_part()
        return self.done

    def abort(self) -> None:
        """Remove every file this writer began or finished (an error stopped the cell)."""
        for handle in (self.parquet, self.file):
            if handle is not None:
                handle.close()
        for relative in self.begun + [s.path for s in self.done]:
            self.folder.delete(relative)

    def __enter__(self) -> ModelsWriter:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is not None:
            self.abort()


def numbered(stem: str, part: int) -> str:
    """`stem` with the shard's number: names sort in row order (manifest order is the order
    readers serve rows in)."""
    if part >= 100_000:
        raise ZooFolderError(f"{stem}: more than 100000 shards; raise the shard bound")
    return f"{stem}-{part:05d}"


def write_models(folder: ZooFolder | Path, cell_id: str, layout: Layout,
                 rows: Iterable[dict[str, Any]], count: int, *, cell_hdf5: bool,
                 inline_bytes: int = INLINE_BYTES, shard_bytes: int = SHARD_BYTES,
                 joined: dict[str, Any] | None = None) -> tuple[list[Shard], list[dict]]:
    """Write `count` models rows of one cell; returns the shards and the rows without weights."""
    with ModelsWriter(folder, cell_id, layout, count, cell_hdf5=cell_hdf5,
                      inline_bytes=inline_bytes, shard_bytes=shard_bytes,
                      joined=joined) as writer:
        small = [writer.add(row) for row in rows]
        return writer.close(), small


def weights_row_groups(table: pa.Table) -> list[int]:
    """Rows per row group of a models table written whole (relabelled): ModelsWriter's rule,
    a group holds at most ROW_GROUP_BYTES of weights or one row."""
    sizes = np.diff(inline_weights(table)[1]) * 4
    groups: list[int] = []
    held = 0
    for size in sizes.tolist():
        if not groups or held + size > ROW_GROUP_BYTES:
            groups.append(0)
            held = 0
        groups[-1] += 1
        held += size
    return groups


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


def cell_datasets(layout: Layout, rows: int | None) -> Expected:
    """Every dataset of a cell HDF5 shard of `rows` rows of `layout` (None: any number):
    shape and dtype (what the writer makes, and all that `read_cell_hdf5` accepts)."""
    return {"model_id": ((rows,), "S64"), "epoch": ((rows,), "<i8"),
            **{f"columns/{name}": ((rows,), "<f8") for name in HDF5_COLUMNS},
            **{f"weights/{e.name}": ((rows, *e.shape), "<f4") for e in layout.entries}}


def cell_hdf5_values(table: pa.Table, layout: Layout) -> dict[str, Callable[[], np.ndarray]]:
    """Every dataset of a cell HDF5 shard (`cell_datasets` order) as the rows of `table`
    (TWIN_COLUMNS of Parquet models rows of `layout`, weights' lengths checked) give it, each
    made when called."""
    rows = table.num_rows
    flat = inline_weights(table)[0].reshape(rows, layout.size)
    values: dict[str, Callable[[], np.ndarray]] = {
        "model_id": lambda: np.array(table.column("model_id").to_pylist(), dtype="S64"),
        "epoch": lambda: table.column("epoch").to_numpy()}
    for name in HDF5_COLUMNS:
        values[f"columns/{name}"] = lambda name=name: np.asarray(
            [np.nan if v is None else v for v in table.column(name).to_pylist()], "<f8")
    for e in layout.entries:
        values[f"weights/{e.name}"] = lambda e=e: flat[
            :, e.offset:e.offset + e.size].reshape(rows, *e.shape)
    return values


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
