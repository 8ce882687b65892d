"""How many bytes a Parquet shard may decode to, judged from its footer before any decoding.

A footer declares each column chunk's decoded size, but two things let a small file decode to
far more: a dictionary (each of N rows may expand the dictionary's longest value) and
compression (zstd turns gigabytes of zeros into kilobytes). The writers never
dictionary-encode weights and real shards compress a few times at most, so a shard is
refused when its columns could decode past the bounds below.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from zoo.errors import ZooFolderError
from zoo.folder.rowgroups import WEIGHTS_LEAVES

MAX_ROW_BYTES = 1 << 20  # decoded bytes of one row's columns but weights (a pairs row: ~10 kB)
MAX_SHARD_BYTES = 256 << 20  # decoded bytes of one shard's columns but weights, any rows
MAX_EXPANSION = 64  # decoded / stored bytes of a large chunk (real shards: weights ~1.1x)
LARGE_CHUNK = 1 << 20  # decoded bytes above which a chunk's expansion is held to the bound


def check_decoded_sizes(path: Path, metadata: pq.FileMetaData, rows: int,
                        columns: Sequence[str] | None = None) -> None:
    """Refuse a shard whose `columns` (all when None; weights bounded by `check_weights`)
    could decode past MAX_ROW_BYTES a row or MAX_SHARD_BYTES in all, whose weights are
    dictionary-encoded, or whose large chunks expand more than MAX_EXPANSION times."""
    leaves = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    chunks = [(leaf, metadata.row_group(group).column(index))
              for group in range(metadata.num_row_groups) for index, leaf in enumerate(leaves)]
    declared = 0
    for leaf, chunk in chunks:
        if leaf in WEIGHTS_LEAVES or (columns is not None and leaf.split(".")[0] not in columns):
            continue
        decoded = chunk.total_uncompressed_size
        # a dictionary value may be repeated in every row: each one as long as it all
        declared += decoded * chunk.num_values if chunk.has_dictionary_page else decoded
    limit = min(max(rows, 1) * MAX_ROW_BYTES, MAX_SHARD_BYTES)
    if declared > limit:
        raise ZooFolderError(f"{path}: its columns declare {declared} bytes for {rows} rows; "
                             f"at most {min(MAX_ROW_BYTES, limit)} a row and {MAX_SHARD_BYTES} "
                             f"a shard are read")
    for leaf, chunk in chunks:
        if columns is not None and leaf.split(".")[0] not in columns:
            continue  # (the weights' count is checked against the layouts first)
        decoded, stored = chunk.total_uncompressed_size, chunk.total_compressed_size
        if decoded > LARGE_CHUNK and decoded > MAX_EXPANSION * max(stored, 1):
            raise ZooFolderError(f"{path}: column {leaf} declares {decoded} bytes stored in "
                                 f"{stored}; at most {MAX_EXPANSION} times its stored size is "
                                 f"decoded")
        if leaf in WEIGHTS_LEAVES and chunk.has_dictionary_page:
            raise ZooFolderError(f"{path}: its weights are dictionary-encoded; this version's "
                                 f"writer stores them plain")
