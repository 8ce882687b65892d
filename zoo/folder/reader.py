"""Read a zoo folder: manifest, checksummed shards, tables, layouts; nothing outside it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.bounds import check_decoded_sizes
from zoo.folder.cache import StoreCache
from zoo.folder.documents import check_document, check_readme, check_record_hash
from zoo.folder.layouts import read_layout
from zoo.folder.location import is_uri
from zoo.folder.manifest import Manifest, Shard, read_manifest
from zoo.folder.names import ZOO_JSON, confined, sha256_of
from zoo.folder.record import ZooRecord, read_record
from zoo.folder.rowgroups import PARQUET_ERRORS, WEIGHTS_LEAVES, CheckedShard
from zoo.folder.schema import arrow_schema, conformed, stored_weights
from zoo.layout import Layout



class ZooReader:
    """Read-only access to one zoo folder; each shard's sha256 is checked on its first read
    (a shard with row-group digests: its footer and the row groups' chunks it reads).

    Opening checks the manifest and, with `check_documents`, zoo.json (sha256 and spec hash)
    and README.md (sha256, and its `configs:` name only the manifest's shards).
    """

    def __init__(self, root: str | Path, *, check_documents: bool = True,
                 cache_bytes: int | None = None) -> None:
        # a URI (s3://bucket/prefix, ...) is read through a local cache of at most
        # `cache_bytes` of shards, which mirrors the zoo's layout (zoo.folder.cache)
        self.location = str(root)
        self.cache = StoreCache(str(root), cache_bytes, check_documents=check_documents) \
            if is_uri(root) else None
        self.root = self.cache.root if self.cache is not None else Path(root)
        try:
            self._open(check_documents)
        except ZooFolderError as error:
            if self.cache is None:
                raise
            raise type(error)(self.named(str(error))) from None

    def named(self, text: str) -> str:
        """`text` naming the zoo's own location (its URI) where it names the local cache."""
        if self.cache is None:
            return text
        return text.replace(str(self.root), self.location.rstrip("/"))

    def _open(self, check_documents: bool) -> None:
        manifest = read_manifest(self.root)
        if manifest is None:
            raise ZooFolderError(f"{self.root}: no manifest.json; not a zoo folder "
                                 f"(or generation has not committed anything yet)")
        self.manifest: Manifest = manifest
        self._verified: dict[str, Path] = {}  # shard path: its file, confined and checked
        self._checked: dict[str, CheckedShard] = {}
        self._layouts: dict[str, Layout] = {}
        self._sources: dict[str, Shard] | None = None
        if check_documents:
            check_document(self.root, manifest, ZOO_JSON)
        record = read_record(self.root)
        if record is None:
            raise ZooFolderError(f"{self.root / ZOO_JSON}: missing; not a zoo folder")
        self.record: ZooRecord = record
        if check_documents:
            check_record_hash(self.root, manifest, record.spec_hash)
            check_readme(self.root, manifest)

    @classmethod
    def opened(cls, root: str | Path, manifest: Manifest, record: ZooRecord) -> ZooReader:
        """A reader over a manifest and record already read (by a `ZooFolder`), documents
        not checked."""
        reader = cls.__new__(cls)
        reader.root, reader.manifest, reader.record = Path(root), manifest, record
        reader._verified, reader._layouts, reader._sources = {}, {}, None
        reader.location, reader.cache = str(root), None
        reader._checked = {}
        return reader

    def path(self, shard: Shard) -> Path:
        """The shard's file, verified against the manifest's sha256 the first time."""
        if self.cache is not None:  # fetched (or found) and checked whole by the cache
            path = self.cache.fetch(shard.path, shard.sha256)
            if shard.parts and shard.path not in self._checked:
                self._checked[shard.path] = CheckedShard(path, shard.parts)
            return path
        if shard.path in self._verified:
            return self._verified[shard.path]
        path = confined(self.root, shard.path)
        if not path.exists() and not path.is_symlink():
            raise IntegrityError(f"{path}: listed in the manifest but missing")
        if shard.parts:  # the footer and every row group's chunks but weights
            checked = self._checked[shard.path] = CheckedShard(path, shard.parts)
            checked.check(range(checked.metadata.num_row_groups), weights=False)
        elif sha256_of(path) != shard.sha256:
            raise _altered(path)
        self._verified[shard.path] = path
        return path

    def ensure_local(self, shard: Shard) -> None:
        """Make the shard's file local before a reader opens it by path: from a store it is
        fetched into the cache and checked; a folder's files are local already (a per-model
        checkpoint file is checked row by row, not hashed whole)."""
        if self.cache is not None:
            self.path(shard)
    def check_whole(self, shard: Shard) -> Path:
        """`path`, the whole file hashed against the manifest's sha256 first even where
        row-group digests would do, and every row group's weights checked (`zoo verify`)."""
        path = self.path(shard) if self.cache is not None else confined(self.root, shard.path)
        if shard.parts and path.exists() and sha256_of(path) != shard.sha256:
            raise _altered(path)
        self.path(shard)
        if shard.parts:
            checked = self._checked[shard.path]
            checked.check(range(checked.metadata.num_row_groups), weights=True)
        return path

    def weights_source(self, shard: Shard, weights_file: str | None) -> Shard:
        """The shard a models row's checkpoint is read from, whose manifest `format` picks
        the decoder: the row's own models shard (weights inline) or the checkpoints shard
        that its `weights_file` names (refused unless the manifest lists it for the cell)."""
        if weights_file is None:
            return shard
        if self._sources is None:
            self._sources = {s.path: s for s in self.manifest.shards
                             if s.table == "models" and s.format == "checkpoints"}
        source = self._sources.get(weights_file)
        if source is None or source.cell_id != shard.cell_id:
            raise ZooFolderError(f"{self.path(shard)}: weights_file {weights_file!r} is not a "
                                 f"checkpoints shard of cell {shard.cell_id} in the manifest")
        return source

    def parquet(self, shard: Shard, columns: Sequence[str] | None = None,
                schema: pa.Schema | None = None) -> pa.Table:
        """The shard's Parquet table (checked); a decode failure names the file. The footer's
        row count must be the manifest's and the columns' decoded sizes bounded, before anything
        is decoded (`check_footer`). Weights come as `schema` says (format 5's bytes) whatever
        the shard's format; with row-group digests they are decoded from the bytes checked."""
        weights = shard.table == "models" and (columns is None or "weights" in columns)
        if weights:
            self.check_weights(shard)
        path = self.check_footer(shard, columns)
        try:
            if weights and shard.parts and self.parquet_metadata(shard).num_row_groups:
                checked = self.checked(shard)
                names = list(columns) if columns is not None else \
                    checked.metadata.schema.to_arrow_schema().names
                table = pa.concat_tables([checked.read_group(g, names) for g in
                                          range(checked.metadata.num_row_groups)])
                return conformed(table, schema, columns)
            metadata = self.parquet_metadata(shard)
            stored = metadata.schema.to_arrow_schema()
            if shard.parts:  # its footer parsed once, when it was checked
                names = set(stored.names)
                present = None if columns is None else [c for c in columns if c in names]
                with pq.ParquetFile(path, metadata=metadata) as handle:
                    return conformed(handle.read(columns=present, use_threads=False), schema,
                                     columns)
            return conformed(pq.read_table(path, columns=columns,
                                           schema=stored_weights(schema, stored)),
                             schema, columns)
        except PARQUET_ERRORS as error:
            raise ZooFolderError(f"{path}: cannot be read as Parquet ({error})") from None

    def check_footer(self, shard: Shard, columns: Sequence[str] | None = None) -> Path:
        """The shard's path once its footer holds the manifest's row count and `columns` (all
        but weights when None) are bounded in decoded size (`check_decoded_sizes`)."""
        path = self.path(shard)
        metadata = self.parquet_metadata(shard)
        if metadata.num_rows != shard.rows:
            raise IntegrityError(f"{path}: {metadata.num_rows} rows, the manifest says "
                                 f"{shard.rows}")
        check_decoded_sizes(path, metadata, shard.rows, columns)
        return path

    def check_weights(self, shard: Shard) -> list[int]:
        """Refuse a models shard whose footer declares another number of weights than its
        rows' layouts add up to, before its weights are decoded (a small file cannot decode to
        gigabytes, a tampered layout cannot make a reader allocate them). Returns each row's
        number of inline weights (0: in a per-model file)."""
        table = self.parquet(shard, ["layout", "weights_file"])
        sizes = [self.layout(str(key)).size if file is None else 0 for key, file in
                 zip(table.column("layout").to_pylist(),
                     table.column("weights_file").to_pylist())]
        metadata = self.parquet_metadata(shard)
        leaves = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
        leaf = next((name for name in WEIGHTS_LEAVES if name in leaves), None)
        chunks = [metadata.row_group(g).column(leaves.index(leaf))
                  for g in range(metadata.num_row_groups)] if leaf else []
        if leaf == "weights":  # format 5: bytes, stored plain: decoded no larger than stored
            declared = sum(c.total_uncompressed_size for c in chunks)
            expected = 4 * sum(sizes)
            if any(c.compression != "UNCOMPRESSED" for c in chunks) or not \
                    expected <= declared <= expected + 64 * len(sizes) + 4096 * len(chunks):
                raise ZooFolderError(f"{self.path(shard)}: declares {declared} bytes of "
                                     f"weights ({chunks[0].compression}); its rows' layouts "
                                     f"hold {expected}, stored uncompressed")
            return sizes
        # lists: a row whose checkpoint lives in a per-model file holds one level, no value
        expected = sum(size or 1 for size in sizes)
        declared = sum(c.num_values for c in chunks) if leaf else -1
        if declared != expected:
            raise ZooFolderError(f"{self.path(shard)}: declares {declared} weights; its rows' "
                                 f"layouts hold {expected}")
        return sizes

    def checked(self, shard: Shard) -> CheckedShard:
        """The shard with row-group digests, its footer checked (row groups are checked as
        they are read)."""
        self.path(shard)
        return self._checked[shard.path]

    def parquet_metadata(self, shard: Shard) -> pq.FileMetaData:
        """The shard's Parquet footer (checked); a decode failure names the file."""
        path = self.path(shard)
        if shard.parts:
            return self._checked[shard.path].metadata
        try:
            return pq.read_metadata(path)
        except PARQUET_ERRORS as error:
            raise ZooFolderError(f"{path}: cannot be read as Parquet ({error})") from None

    def table(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows of table `name` ('models', 'cells', 'pairs') from the manifest's shards."""
        schema = arrow_schema(name)
        parts = [self.parquet(s, columns, schema) for s in self.manifest.shards_of(name)]
        if not parts:
            fields = [schema.field(c) for c in columns] if columns else list(schema)
            return pa.schema(fields).empty_table()
        return pa.concat_tables(parts)

    def layout(self, key: str) -> Layout:
        """The layout `key`, checked against the manifest's sha256 (read once)."""
        if key not in self.manifest.layouts:
            raise ZooFolderError(f"{self.root}: layout {key!r} is not in the manifest")
        if key not in self._layouts:
            self._layouts[key] = read_layout(self.root, key, self.manifest.layouts[key])
        return self._layouts[key]


def _altered(path: Path) -> IntegrityError:
    return IntegrityError(f"{path}: sha256 does not match the manifest; the shard is corrupted "
                          f"or was modified")
