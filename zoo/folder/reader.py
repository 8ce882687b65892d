"""Read a zoo folder: manifest, checksummed shards, tables, layouts."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.layouts import read_layout
from zoo.folder.manifest import Manifest, Shard, read_manifest
from zoo.folder.names import ZOO_JSON, confined, sha256_of
from zoo.folder.record import ZooRecord, read_record
from zoo.folder.schema import arrow_schema
from zoo.layout import Layout


class ZooReader:
    """Read-only access to one zoo folder; each shard's sha256 is checked on its first read."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest is None:
            raise ZooFolderError(f"{self.root}: no manifest.json; not a zoo folder "
                                 f"(or generation has not committed anything yet)")
        self.manifest: Manifest = manifest
        self._verified: set[str] = set()

    def path(self, shard: Shard) -> Path:
        """The shard's file, verified against the manifest's sha256 the first time."""
        path = confined(self.root, shard.path)
        if shard.path not in self._verified:
            if not path.exists():
                raise IntegrityError(f"{path}: listed in the manifest but missing")
            if sha256_of(path) != shard.sha256:
                raise IntegrityError(f"{path}: sha256 does not match the manifest; "
                                     f"the shard is corrupted or was modified")
            self._verified.add(shard.path)
        return path

    @cached_property
    def record(self) -> ZooRecord:
        """zoo.json: the resolved spec, hashes, versions and data shape facts of the zoo."""
        record = read_record(self.root)
        if record is None:
            raise ZooFolderError(f"{self.root / ZOO_JSON}: missing; not a zoo folder")
        return record

    def table(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows of table `name` ('models', 'cells', 'pairs') from the manifest's shards."""
        schema = arrow_schema(name)
        parts = [pq.read_table(self.path(s), columns=columns, schema=schema)
                 for s in self.manifest.shards_of(name)]
        if not parts:
            fields = [schema.field(c) for c in columns] if columns else list(schema)
            return pa.schema(fields).empty_table()
        return pa.concat_tables(parts)

    def layout(self, key: str) -> Layout:
        """The layout `key`, checked against the manifest's sha256."""
        if key not in self.manifest.layouts:
            raise ZooFolderError(f"{self.root}: layout {key!r} is not in the manifest")
        return read_layout(self.root, key, self.manifest.layouts[key])
