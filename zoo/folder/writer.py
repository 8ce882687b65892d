"""Commit finished cells into a zoo folder: Parquet and HDF5 shards, layouts, the manifest."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import ZooFolderError
from zoo.folder.documents import record_documents
from zoo.folder.layouts import write_layout
from zoo.folder.manifest import Manifest, Shard, read_manifest, write_manifest
from zoo.folder.names import (HDF5_FOLDER, LAYOUTS, TABLE_FOLDERS, TEMPORARY_SUFFIX, ZOO_JSON,
                              sha256_of, write_atomically)
from zoo.folder.record import ZooRecord, write_record
from zoo.folder.schema import CELL_JOINED, to_arrow
from zoo.layout import Layout
from zoo.rows import CellResult

FORMATS = ("parquet", "hdf5")


def write_parquet(table: pa.Table, path: Path) -> None:
    """zstd Parquet; float columns byte-stream-split, no dictionary for them (smaller: FACTS)."""
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    floats += [f"{f.name}.list.element" for f in table.schema
               if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)]
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    pq.write_table(table, path, compression="zstd", use_dictionary=strings,
                   use_byte_stream_split=floats)


def write_hdf5(rows: list[dict[str, Any]], layout: Layout, path: Path) -> None:
    """Model rows as arrays: /weights/<parameter> (rows, *shape), /columns/<name>, /model_id."""
    import h5py

    with h5py.File(path, "w") as handle:
        handle.attrs["layout"] = layout.key
        handle.create_dataset("model_id", data=np.array([r["model_id"] for r in rows], dtype="S"))
        handle.create_dataset("epoch", data=np.array([r["epoch"] for r in rows], dtype=np.int64))
        flat = np.stack([np.asarray(r["weights"], dtype=np.float32) for r in rows])
        weights = handle.create_group("weights")
        for entry in layout.entries:
            values = flat[:, entry.offset:entry.offset + entry.size]
            weights.create_dataset(entry.name, data=values.reshape(len(rows), *entry.shape))
        columns = handle.create_group("columns")
        for name in ("seed", "train_loss", "train_accuracy", "train_error", "test_loss",
                     "test_accuracy", "test_error", "finite"):
            values = [np.nan if r.get(name) is None else r[name] for r in rows]
            columns.create_dataset(name, data=np.asarray(values))


class ZooWriter:
    """Writes one zoo folder; `commit(result)` makes a finished cell durable and listed."""

    def __init__(self, root: Path, spec_hash: str, formats: Iterable[str] = FORMATS) -> None:
        self.root = Path(root)
        self.formats = tuple(formats)
        for name in self.formats:
            if name not in FORMATS:
                raise ValueError(f"--formats: {name!r} is not allowed; expected {FORMATS}")
        existing = read_manifest(self.root) if self.root.exists() else None
        self.manifest = dataclasses.replace(existing, spec_hash=spec_hash) if existing \
            else Manifest(spec_hash, (), {})

    @contextmanager
    def _disk_errors(self, doing: str):
        """Turn OSErrors (full disk, no permission) into one clear ZooFolderError."""
        try:
            yield
        except OSError as error:
            committed = len(self.manifest.cell_ids())
            reason = error.strerror or str(error)
            raise ZooFolderError(
                f"{error.filename or self.root}: cannot write while {doing} ({reason}); "
                f"the manifest still lists the {committed} cells committed before") from error

    def start(self, record: ZooRecord) -> None:
        """Create the folders, remove leftovers of a killed run, write zoo.json."""
        with self._disk_errors("creating the zoo folder"):
            for folder in (*TABLE_FOLDERS.values(), HDF5_FOLDER, LAYOUTS):
                (self.root / folder).mkdir(parents=True, exist_ok=True)
            for leftover in self.root.rglob(f"*{TEMPORARY_SUFFIX}"):
                leftover.unlink()
            write_record(self.root, record)
            self.manifest = dataclasses.replace(self.manifest, spec_hash=record.spec_hash)
            self.manifest = record_documents(self.root, (ZOO_JSON,), self.manifest)

    def _shard(self, table: str, fmt: str, relative: str, rows: int, cell_id: str) -> Shard:
        path = self.root / relative
        return Shard(table, fmt, relative, rows, path.stat().st_size, sha256_of(path), cell_id)

    def commit(self, result: CellResult) -> None:
        """Write a cell's shards under temporary names, rename them, then replace the manifest."""
        with self._disk_errors(f"committing cell {result.cell_id}"):
            self._commit(result)

    def _commit(self, result: CellResult) -> None:
        layouts = dict(self.manifest.layouts)
        for key, layout in result.layouts.items():
            if key not in layouts:
                layouts[key] = write_layout(self.root, layout)
        shards = [s for s in self.manifest.shards if s.cell_id != result.cell_id]
        stem = f"cell-{result.cell_id}"
        joined = {n: result.cells[0].get(n) for n in CELL_JOINED} if result.cells else {}
        for table in ("models", "pairs", "cells"):
            rows = getattr(result, table)
            if table == "models":
                rows = [{**row, **joined} for row in rows]
            if not rows:  # an empty Parquet file breaks datasets.load_dataset
                continue
            relative = f"{TABLE_FOLDERS[table]}/{stem}.parquet"
            write_atomically(self.root / relative, lambda p, t=table, r=rows: write_parquet(to_arrow(t, r), p))
            shards.append(self._shard(table, "parquet", relative, len(rows), result.cell_id))
            if table == "models" and "hdf5" in self.formats:
                layout = result.layouts[rows[0]["layout"]]
                relative = f"{HDF5_FOLDER}/{stem}.h5"
                write_atomically(self.root / relative, lambda p, r=rows, l=layout: write_hdf5(r, l, p))
                shards.append(self._shard("models", "hdf5", relative, len(rows), result.cell_id))
        shards.sort(key=lambda s: (s.table, s.format, s.path))
        stacked = {**self.manifest.stacked, result.cell_id: result.stacked}
        self.manifest = Manifest(self.manifest.spec_hash, tuple(shards), layouts, stacked,
                                 self.manifest.documents)
        write_manifest(self.root, self.manifest)

    def replace_rows(self, table: str, rows: Iterable[dict[str, Any]], tag: str) -> list[Path]:
        """Replace committed cells' Parquet shards of `table` by shards of `rows` (grouped by
        cell_id), never in place; see `replace_tables`."""
        by_cell: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_cell.setdefault(row["cell_id"], []).append(row)
        return self.replace_tables(table, {c: to_arrow(table, r) for c, r in by_cell.items()},
                                   tag)

    def replace_tables(self, table: str, tables: Mapping[str, pa.Table], tag: str) -> list[Path]:
        """Replace committed cells' Parquet shards of `table` by new ones, never in place.

        Each cell's new table goes to a shard whose name ends in `tag` (an existing file of
        that name is an error). The manifest then lists the new shards instead of those
        cells' old ones, whose files are deleted last (a glob such as the card's
        `data_files` must not see both). Returns the new shard paths.
        """
        unknown = sorted(set(tables) - self.manifest.cell_ids())
        if unknown:
            raise ZooFolderError(f"{self.root}: cells {unknown[:3]} are not committed; "
                                 f"only committed cells can be replaced")
        with self._disk_errors(f"replacing {table} shards"):
            new = []
            for cell_id, content in sorted(tables.items()):
                relative = f"{TABLE_FOLDERS[table]}/cell-{cell_id}-{tag}.parquet"
                if (self.root / relative).exists():
                    raise ZooFolderError(f"{self.root / relative}: exists; shards are never "
                                         f"replaced in place")
                write_atomically(self.root / relative, lambda p, c=content: write_parquet(c, p))
                new.append(self._shard(table, "parquet", relative, content.num_rows, cell_id))
            replaced = [s for s in self.manifest.shards if s.table == table
                        and s.format == "parquet" and s.cell_id in tables]
            shards = [s for s in self.manifest.shards if s not in replaced] + new
            shards.sort(key=lambda s: (s.table, s.format, s.path))
            self.manifest = dataclasses.replace(self.manifest, shards=tuple(shards))
            write_manifest(self.root, self.manifest)
            for shard in replaced:
                (self.root / shard.path).unlink(missing_ok=True)
        return [self.root / s.path for s in new]
