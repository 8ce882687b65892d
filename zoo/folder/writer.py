"""Commit finished cells into a zoo folder: shards (new names each time), layouts, manifest."""

from __future__ import annotations

import dataclasses
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import ZooFolderError
from zoo.folder.cellresult import CellResult
from zoo.folder.commits import delete_dropped, drop_shards, write_record_under
from zoo.folder.documents import document_hashes
from zoo.folder.layouts import write_layout
from zoo.folder.manifest import Manifest, Shard
from zoo.folder.modelshards import (INLINE_BYTES, numbered, parquet_options, weights_row_groups,
                                    write_models)
from zoo.folder.shardbytes import SHARD_BYTES
from zoo.folder.names import (FORMAT_VERSION, GROWABLE_VERSIONS, HDF5_FOLDER, LAYOUTS,
                              LAYOUTS_TABLE, MANIFEST, README, TABLE_FOLDERS, TEMPORARY_SUFFIX,
                              ZOO_JSON, sha256_of)
from zoo.folder.record import ZooRecord
from zoo.folder.rowgroups import shard_parts
from zoo.folder.schema import to_arrow
from zoo.folder.zoofolder import ZooFolder

FORMATS = ("parquet", "hdf5")
SHARD_FOLDERS = (*TABLE_FOLDERS.values(), HDF5_FOLDER)  # every file under these is a shard


def write_parquet(table: pa.Table, path: Path) -> None:
    """`table` as one Parquet file with parquet_options; models rows in row groups as
    ModelsWriter makes them (`weights_row_groups`)."""
    if "weights" not in table.column_names:
        pq.write_table(table, path, **parquet_options(table.schema))
        return
    with pq.ParquetWriter(path, table.schema, **parquet_options(table.schema)) as writer:
        start = 0
        for rows in weights_row_groups(table):
            writer.write_table(table.slice(start, rows))
            start += rows


def unlisted_files(folder: ZooFolder, manifest: Manifest | None) -> list[str]:
    """Files under the shard folders that the manifest does not list (a killed run's); a
    link or other non-regular file there is refused, never descended."""
    listed = {s.path for s in manifest.shards + manifest.retired} if manifest else set()
    return [name for shard_folder in SHARD_FOLDERS for name in folder.files(shard_folder)
            if name not in listed]


class ZooWriter:
    """Writes one zoo folder; `commit(result)` makes a finished cell durable and listed.

    The manifest is the only thing replaced: shards get new names at every commit, and the
    files of a cell's previous shards are removed once the new manifest is in place (or kept
    as retired while the card may name them: zoo.folder.commits).
    """

    def __init__(self, folder: ZooFolder | str | Path, spec_hash: str,
                 formats: Iterable[str] = FORMATS, inline_bytes: int = INLINE_BYTES,
                 shard_bytes: int = SHARD_BYTES) -> None:
        self.folder = ZooFolder.of(folder)
        self.root = self.folder.root
        self.formats = tuple(formats)
        self.inline_bytes, self.shard_bytes = inline_bytes, shard_bytes
        for name in self.formats:
            if name not in FORMATS:
                raise ValueError(f"--formats: {name!r} is not allowed; expected {FORMATS}")
        existing = self.folder.manifest()
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
        manifest does not list), write zoo.json. Returns the removed files. A link or other
        non-regular file where the format writes is refused in one line, never followed, and
        so is a zoo of an older format with models shards (its weights would be mixed)."""
        old = self.manifest.format_version
        if old not in GROWABLE_VERSIONS and self.manifest.shards_of("models"):
            raise ZooFolderError(f"{self.root}: a format-{old} zoo; this version writes "
                                 f"format-{FORMAT_VERSION} models shards (weights as bytes) and "
                                 f"would mix the two: generate into a new folder (this version "
                                 f"still reads it)")
        with self._disk_errors("creating the zoo folder"):
            self._raise_format()
            for name in (*SHARD_FOLDERS, LAYOUTS):
                self.folder.makedirs(name)
            removed = self.remove_leftovers()
            replaced = write_record_under(self.folder, record)  # a grown spec: readers
            if replaced is not None:  # find the old zoo.json or the new at every rename
                self.manifest = replaced
            else:
                self.manifest = dataclasses.replace(self.manifest, spec_hash=record.spec_hash)
                self._replace_manifest(dataclasses.replace(self.manifest, documents={
                    **self.manifest.documents, **document_hashes(self.folder, (ZOO_JSON,))}))
            return removed

    def _raise_format(self) -> None:
        """Write the manifest held as this version's format before anything else: a format-5
        or 6 zoo grows as format 7 (its new cells may span several shards and carry rows'
        BLAKE3 digests, which older readers would misread, so older versions refuse it)."""
        held = self.folder.manifest()
        if held is not None and held.format_version != FORMAT_VERSION:
            self.folder.write_manifest(dataclasses.replace(held, format_version=FORMAT_VERSION))
        self.manifest = dataclasses.replace(self.manifest, format_version=FORMAT_VERSION)

    def remove_leftovers(self) -> list[Path]:
        """Remove what a killed run left (temporary files, shards the manifest does not list);
        the removed files. A link or other non-regular file there is refused, never followed."""
        leftovers = [name for name in self.folder.files(LAYOUTS)
                     if name.endswith(TEMPORARY_SUFFIX)]
        leftovers += [self.folder.check(name).relative_to(self.root).as_posix()
                      for name in (f"{MANIFEST}{TEMPORARY_SUFFIX}",
                                   f"{ZOO_JSON}{TEMPORARY_SUFFIX}",
                                   f"{README}{TEMPORARY_SUFFIX}",
                                   f"{LAYOUTS_TABLE}{TEMPORARY_SUFFIX}")
                      if (self.root / name).exists()]
        leftovers += unlisted_files(self.folder, self.manifest)
        for leftover in leftovers:
            self.folder.delete(leftover)
        return [self.root / name for name in leftovers]

    def _replace_manifest(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.folder.write_manifest(manifest)

    def commit(self, result: CellResult) -> None:
        """List a cell: its worker-written shards (`result.files`), else write its models rows
        here; write its pairs and cells shards; then replace the manifest."""
        with self._disk_errors(f"committing cell {result.cell_id}"):
            self._commit(result)

    def _commit(self, result: CellResult) -> None:
        layouts = dict(self.manifest.layouts)
        for key, layout in result.layouts.items():
            if key not in layouts:
                layouts[key] = write_layout(self.folder, layout)
        old = [s for s in self.manifest.shards if s.cell_id == result.cell_id]
        shards = [s for s in self.manifest.shards if s.cell_id != result.cell_id]
        shards += result.files or self._write_models(result)
        listed = {s.path for s in shards}
        dropped = [s for s in old if s.path not in listed]
        stem = f"cell-{result.cell_id}_{secrets.token_hex(4)}"
        for table in ("pairs", "cells"):
            rows = getattr(result, table)
            if not rows:  # an empty Parquet file breaks datasets.load_dataset
                continue
            relative = f"{TABLE_FOLDERS[table]}/{stem}.parquet"
            path = self.folder.write(relative,
                                     lambda p, t=table, r=rows: write_parquet(to_arrow(t, r), p))
            shards.append(Shard(table, "parquet", relative, len(rows), path.stat().st_size,
                                sha256_of(path), result.cell_id))
        shards.sort(key=lambda s: (s.table, s.format, s.path))
        stacked = {**self.manifest.stacked, result.cell_id: result.stacked}
        manifest = drop_shards(self.manifest, dropped)
        self._replace_manifest(dataclasses.replace(manifest, shards=tuple(shards),
                                                   layouts=layouts, stacked=stacked))
        delete_dropped(self.folder, self.manifest, dropped)

    @staticmethod
    def _named(table: str, tables: Mapping[str, Sequence[pa.Table]], tag: str
               ) -> Iterator[tuple[str, pa.Table, str]]:
        """(cell, table, the new shard's path) of replace_tables, cells in order."""
        for cell_id, contents in sorted(tables.items()):
            stem = f"{TABLE_FOLDERS[table]}/cell-{cell_id}-{tag}"
            for number, content in enumerate(contents):
                yield cell_id, content, (numbered(stem, number) if len(contents) > 1
                                         else stem) + ".parquet"

    def _write_models(self, result: CellResult) -> list[Shard]:
        """Models rows that carry their weights (imports): written here, one at a time."""
        if not result.models:
            return []
        layout = result.layouts[result.models[0]["layout"]]
        files, _ = write_models(self.folder, result.cell_id, layout, result.models,
                                len(result.models), cell_hdf5="hdf5" in self.formats,
                                inline_bytes=self.inline_bytes, shard_bytes=self.shard_bytes,
                                joined=result.cells[0] if result.cells else None)
        return files

    def replace_rows(self, table: str, rows: Iterable[dict[str, Any]], tag: str) -> list[Path]:
        """Replace committed cells' Parquet shards of `table` by shards of `rows` (grouped by
        cell_id), never in place; see `replace_tables`."""
        by_cell: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_cell.setdefault(row["cell_id"], []).append(row)
        return self.replace_tables(table, {c: [to_arrow(table, r)] for c, r in by_cell.items()},
                                   tag)

    def replace_tables(self, table: str, tables: Mapping[str, Sequence[pa.Table]],
                       tag: str) -> list[Path]:
        """Replace committed cells' Parquet shards of `table` by new ones, never in place.

        Each cell's new tables (one a shard, in row order) go to shards whose names end in
        `tag` (numbered when there are several; an existing file of that name is an error).
        The manifest then lists the new shards instead of those cells' old ones, whose files
        are deleted last (a glob such as the card's `data_files` must not see both). Returns
        the new shard paths.
        """
        unknown = sorted(set(tables) - self.manifest.cell_ids())
        if unknown:
            raise ZooFolderError(f"{self.root}: cells {unknown[:3]} are not committed; "
                                 f"only committed cells can be replaced")
        with self._disk_errors(f"replacing {table} shards"):
            new = []
            for cell_id, content, relative in self._named(table, tables, tag):
                if os.path.lexists(self.folder.check(relative)):
                    if relative in {s.path for s in self.manifest.shards + self.manifest.retired}:
                        raise ZooFolderError(f"{self.root / relative}: exists; shards are never "
                                             f"replaced in place")
                    self.folder.delete(relative)  # unlisted: a killed run's, never read
                path = self.folder.write(relative, lambda p, c=content: write_parquet(c, p))
                new.append(Shard(table, "parquet", relative, content.num_rows,
                                 path.stat().st_size, sha256_of(path), cell_id,
                                 shard_parts(path) if table == "models" else ()))
            replaced = [s for s in self.manifest.shards if s.table == table
                        and s.format == "parquet" and s.cell_id in tables]
            manifest = drop_shards(self.manifest, replaced)
            shards = sorted(manifest.shards + tuple(new),
                            key=lambda s: (s.table, s.format, s.path))
            self._replace_manifest(dataclasses.replace(manifest, shards=tuple(shards)))
            delete_dropped(self.folder, self.manifest, replaced)
        return [self.root / s.path for s in new]
