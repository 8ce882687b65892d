"""Upper estimates of a models shard's file size, written before the bytes are: the writer
starts a new shard when the next row would take the estimate past its bound.

A Parquet row costs its values as Arrow holds them (Parquet's plain, dictionary and
byte-stream-split pages of them, zstd or not, are no larger, up to a page header; a string
also counts for its row group's statistics), each row group a fixed allowance per column chunk
(page headers, the chunk's footer entry), and the file the size of an empty file of the
schema. An HDF5 file costs its
values, an allowance per dataset (object header, chunk index) and per chunk (its entry).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

SHARD_BYTES = 256 << 20  # default bound of a models shard's file: mosaicml-streaming writes
#                          64 MiB shards, `datasets.push_to_hub` 500 MB ones; 256 MiB is 64 row
#                          groups of 4 MiB, one object a streaming worker or a Hub download takes
COLUMN_CHUNK_BYTES = 256  # a Parquet column chunk's page headers and footer entry (~110 seen)
HDF5_FILE_BYTES = 4096  # an HDF5 file's superblock and groups
HDF5_DATASET_BYTES = 1024  # a contiguous HDF5 dataset's object header and attributes
HDF5_CHUNKED_BYTES = 5120  # a chunked one's, with its chunk index (~3300 seen)
HDF5_FIRST_CHUNKS = 12288  # a per-model file's first `epoch` chunk (h5py sizes it: 8 KiB)
HDF5_CHUNK_BYTES = 96  # an HDF5 chunk's entry in its dataset's chunk index


def value_bytes(value: Any) -> int:
    """Bytes a Parquet file spends on one value of a models row, at most: numbers 8, bytes
    their length, lists their elements', each + 9 (offsets, validity, levels); strings three
    times their length + 9 (the value, and a row group's min and max statistics)."""
    if value is None or isinstance(value, (bool, int, float)):
        return 9
    if isinstance(value, str):
        return 3 * len(value.encode()) + 9
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) + 9
    if isinstance(value, (list, tuple)):
        return 9 + sum(value_bytes(v) for v in value)
    if hasattr(value, "nbytes"):  # a numpy array: the flat weights
        return int(value.nbytes) + 9
    return len(str(value).encode()) + 9  # anything else: its text, as an upper guess


def row_bytes(row: dict[str, Any]) -> int:
    """The estimate of one models row's values."""
    return sum(value_bytes(v) for v in row.values())


def empty_parquet_bytes(schema: pa.Schema, options: dict[str, Any]) -> int:
    """The exact size of a Parquet file of `schema` without rows, written with `options`
    (pyarrow.parquet.write_table's): magic, schema, key-value metadata, footer."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink, **options)
    return sink.getvalue().size


def group_bytes(schema: pa.Schema) -> int:
    """The allowance of one row group beyond its values."""
    return COLUMN_CHUNK_BYTES * len(schema)


def twin_bytes(datasets: int, values: int) -> int:
    """The estimate of a cell HDF5 shard of `datasets` contiguous datasets holding `values`
    bytes."""
    return HDF5_FILE_BYTES + datasets * HDF5_DATASET_BYTES + values


def checkpoint_file_bytes(datasets: int, count: int, values: int) -> int:
    """The estimate of a per-model HDF5 file of `datasets` chunked datasets of `count`
    chunks each (one an epoch), holding `values` bytes."""
    return HDF5_FILE_BYTES + HDF5_FIRST_CHUNKS + datasets * (
        HDF5_CHUNKED_BYTES + HDF5_CHUNK_BYTES * count) + values
