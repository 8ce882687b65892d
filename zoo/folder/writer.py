"""Commit finished cells into a zoo folder: shards (new names each time), layouts, manifest."""

from __future__ import annotations

import dataclasses
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import ZooFolderError
from zoo.folder.cellresult import CellResult
from zoo.folder.documents import record_documents
from zoo.folder.layouts import write_layout
from zoo.folder.manifest import Manifest, Shard, read_manifest, write_manifest
from zoo.folder.modelshards import INLINE_BYTES, parquet_options, write_models
from zoo.folder.names import (HDF5_FOLDER, LAYOUTS, TABLE_FOLDERS, TEMPORARY_SUFFIX, ZOO_JSON,
                              sha256_of, write_atomically)
from zoo.folder.record import ZooRecord, write_record
from zoo.folder.schema import to_arrow

FORMATS = ("parquet", "hdf5")
SHARD_FOLDERS = (*TABLE_FOLDERS.values(), HDF5_FOLDER)  # every file under these is a shard


def write_parquet(table: pa.Table, path: Path) -> None:
    """`table` as one Parquet file with parquet_options."""
    pq.write_table(table, path, **parquet_options(table.schema))


def unlisted_files(root: Path, manifest: Manifest | None) -> list[Path]:
    """Files under the shard folders that the manifest does not list (a killed run's)."""
    listed = {s.path for s in manifest.shards} if manifest else set()
    found = []
    for folder in SHARD_FOLDERS:
        for path in sorted((Path(root) / folder).rglob("*")):
            if path.is_file() and path.relative_to(root).as_posix() not in listed:
                found.append(path)
    return found


class ZooWriter:
    """Writes one zoo folder; `commit(result)` makes a finished cell durable and listed.

    The manifest is the only thing replaced: shards get new names at every commit, and the
    files of a cell's previous shards are removed once the new manifest is in place.
    """

    def __init__(self, root: Path, spec_hash: str, formats: Iterable[str] = FORMATS,
                 inline_bytes: int = INLINE_BYTES) -> None:
        self.root = Path(root)
        self.formats = tuple(formats)
        self.inline_bytes = inline_bytes
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

    def start(self, record: ZooRecord) -> list[Path]:
        """Create the folders, remove leftovers of a killed run (temporary files and shards the
        manifest does not list), write zoo.json. Returns the removed files."""
        with self._disk_errors("creating the zoo folder"):
            for folder in (*SHARD_FOLDERS, LAYOUTS):
                (self.root / folder).mkdir(parents=True, exist_ok=True)
            leftovers = list(self.root.rglob(f"*{TEMPORARY_SUFFIX}"))
            leftovers += [p for p in unlisted_files(self.root, self.manifest)
                          if p not in leftovers]
            for leftover in leftovers:
                leftover.unlink()
            write_record(self.root, record)
            self.manifest = dataclasses.replace(self.manifest, spec_hash=record.spec_hash)
            self.manifest = record_documents(self.root, (ZOO_JSON,), self.manifest)
            return leftovers

    def commit(self, result: CellResult) -> None:
        """List a cell: its worker-written shards (`result.files`), else write its models rows
        here; write its pairs and cells shards; then replace the manifest."""
        with self._disk_errors(f"committing cell {result.cell_id}"):
            self._commit(result)

    def _commit(self, result: CellResult) -> None:
        layouts = dict(self.manifest.layouts)
        for key, layout in result.layouts.items():
            if key not in layouts:
                layouts[key] = write_layout(self.root, layout)
        old = [s for s in self.manifest.shards if s.cell_id == result.cell_id]
        shards = [s for s in self.manifest.shards if s.cell_id != result.cell_id]
        shards += result.files or self._write_models(result)
        stem = f"cell-{result.cell_id}_{secrets.token_hex(4)}"
        for table in ("pairs", "cells"):
            rows = getattr(result, table)
            if not rows:  # an empty Parquet file breaks datasets.load_dataset
                continue
            relative = f"{TABLE_FOLDERS[table]}/{stem}.parquet"
            write_atomically(self.root / relative,
                             lambda p, t=table, r=rows: write_parquet(to_arrow(t, r), p))
            path = self.root / relative
            shards.append(Shard(table, "parquet", relative, len(rows), path.stat().st_size,
                                sha256_of(path), result.cell_id))
        shards.sort(key=lambda s: (s.table, s.format, s.path))
        stacked = {**self.manifest.stacked, result.cell_id: result.stacked}
        self.manifest = Manifest(self.manifest.spec_hash, tuple(shards), layouts, stacked,
                                 self.manifest.documents)
        write_manifest(self.root, self.manifest)
        listed = {s.path for s in shards}
        for shard in old:
            if shard.path not in listed:
                (self.root / shard.path).unlink(missing_ok=True)

    def _write_models(self, result: CellResult) -> list[Shard]:
        """Models rows that carry their weights (imports): written here, one at a time."""
        if not result.models:
            return []
        layout = result.layouts[result.models[0]["layout"]]
        files, _ = write_models(self.root, result.cell_id, layout, result.models,
                                len(result.models), cell_hdf5="hdf5" in self.formats,
                                inline_bytes=self.inline_bytes,
                                joined=result.cells[0] if result.cells else None)
        return files

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
                path = self.root / relative
                new.append(Shard(table, "parquet", relative, content.num_rows,
                                 path.stat().st_size, sha256_of(path), cell_id))
            replaced = [s for s in self.manifest.shards if s.table == table
                        and s.format == "parquet" and s.cell_id in tables]
            shards = [s for s in self.manifest.shards if s not in replaced] + new
            shards.sort(key=lambda s: (s.table, s.format, s.path))
            self.manifest = dataclasses.replace(self.manifest, shards=tuple(shards))
            write_manifest(self.root, self.manifest)
            for shard in replaced:
                (self.root / shard.path).unlink(missing_ok=True)
        return [self.root / s.path for s in new]
