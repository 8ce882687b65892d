"""`zoo verify`'s row checks: weights against layouts and their digests, finite flags against
the values, and HDF5 shards against the Parquet rows of their twins. By default a seeded
sample of shards (each of bounded bytes) is decoded; `deep` decodes every row of every shard."""

from __future__ import annotations

import random
import numpy as np

from zoo.errors import ZooError
from zoo.folder.checkpoints import CHECKPOINTS_FORMAT, read_checkpoint
from zoo.folder.manifest import Shard
from zoo.folder.modelshards import (TWIN_COLUMNS, cell_hdf5_values, inline_weights,
                                    read_cell_hdf5)
from zoo.folder.reader import ZooReader
from zoo.folder.rowgroups import BLAKE3, row_digest
from zoo.folder.schema import arrow_schema

SAMPLE_SHARDS = 8  # models shards decoded without --deep
HDF5_ERRORS = (OSError, KeyError, ValueError, TypeError, AttributeError)


def _chosen(shards: list[Shard], deep: bool, seed: int = 0) -> list[Shard]:
    if deep or len(shards) <= SAMPLE_SHARDS:
        return shards
    return sorted(random.Random(seed).sample(shards, SAMPLE_SHARDS), key=lambda s: s.path)


def check_rows(reader: ZooReader, deep: bool) -> list[str]:
    """Every models shard's declared weight count (footer only); in the chosen shards, every
    row's weights length against its layout and its finite flag against its values."""
    problems: list[str] = []
    decodable = []
    for shard in reader.manifest.shards_of("models"):
        try:
            reader.check_weights(shard)
            decodable.append(shard)
        except ZooError as error:
            problems.append(str(error))
    for shard in _chosen(decodable, deep):
        problems += _shard_rows(reader, shard)
    return problems


def _shard_rows(reader: ZooReader, shard: Shard) -> list[str]:
    table = reader.parquet(shard, ["model_id", "epoch", "layout", "finite", "train_loss",
                                   "test_loss", "weights", "weights_file", "weights_index",
                                   "weights_sha256"], arrow_schema("models"))
    values, offsets = inline_weights(table)
    path, problems = reader.path(shard), []
    for i, row in enumerate(table.drop_columns(["weights"]).to_pylist()):
        name = f"{path}: row {i} (model {row['model_id']} epoch {row['epoch']})"
        layout = reader.layout(row["layout"])
        try:
            source = reader.weights_source(shard, row["weights_file"])
        except ZooError as error:
            problems.append(f"{name}: {error}")
            continue
        if source.format == CHECKPOINTS_FORMAT:  # a per-model HDF5 file: its sha256 and shapes
            try:
                reader.ensure_local(source)  # on a store: fetched into the cache
                flat = read_checkpoint(reader.root, source.path, row["weights_index"],
                                       row["weights_sha256"], layout,
                                       model_id=row["model_id"], epoch=row["epoch"])
            except ZooError as error:
                problems.append(f"{name}: {error}")
                continue
        else:
            length = int(offsets[i + 1] - offsets[i])
            if length != layout.size:
                problems.append(f"{name}: {length} weights; layout {row['layout']} has "
                                f"{layout.size}")
                continue
            flat = values[offsets[i]:offsets[i + 1]]
            digest = row["weights_sha256"]  # format 7: the digest a lazy reader checks
            if digest is not None and digest.startswith(BLAKE3) and row_digest(flat) != digest:
                problems.append(f"{name}: weights do not match weights_sha256")
        problems += _finite_flag(name, row, bool(np.isfinite(flat).all()))
    return problems


def _finite_flag(name: str, row: dict, finite_weights: bool) -> list[str]:
    """The row's finite flag against its weights and losses."""
    losses = (row["train_loss"], row["test_loss"])
    finite_losses = all(v is not None and np.isfinite(v) for v in losses)
    if row["finite"] and not finite_weights:
        return [f"{name}: finite = true but its weights hold NaN or inf"]
    if row["finite"] and not finite_losses:
        return [f"{name}: finite = true but its losses are {losses}"]
    if not row["finite"] and finite_weights and finite_losses:
        return [f"{name}: finite = false but its weights and losses are finite"]
    return []


def hdf5_twins(reader: ZooReader) -> dict[str, Shard | str]:
    """Each HDF5 shard's path -> the Parquet models shard holding the same rows: a cell's
    HDF5 shards and Parquet shards pair in manifest (row) order; or what is wrong."""
    parquet: dict[str, list[Shard]] = {}
    hdf5: dict[str, list[Shard]] = {}
    for shard in reader.manifest.shards_of("models"):
        parquet.setdefault(shard.cell_id, []).append(shard)
    for shard in reader.manifest.shards_of("models", "hdf5"):
        hdf5.setdefault(shard.cell_id, []).append(shard)
    twins: dict[str, Shard | str] = {}
    for cell_id, shards in hdf5.items():
        mates = parquet.get(cell_id, [])
        for number, shard in enumerate(shards):
            twins[shard.path] = mates[number] if len(mates) == len(shards) else (
                f"{reader.root / shard.path}: cell {cell_id} has {len(shards)} HDF5 shards and "
                f"{len(mates)} Parquet models shards to match")
    return twins


def check_hdf5(reader: ZooReader, deep: bool) -> list[str]:
    """In the chosen HDF5 shards, every array equal to the Parquet rows of its twin."""
    twins = hdf5_twins(reader)
    problems = []
    for shard in _chosen(reader.manifest.shards_of("models", "hdf5"), deep):
        twin = twins[shard.path]
        if isinstance(twin, str):
            problems.append(twin)
            continue
        try:
            problems += _compare_hdf5(reader, shard, twin)
        except ZooError as error:
            problems.append(str(error))
        except HDF5_ERRORS as error:
            problems.append(f"{reader.root / shard.path}: cannot be read as this version's "
                            f"HDF5 shard ({type(error).__name__}: {error})")
    return problems


def _compare_hdf5(reader: ZooReader, shard: Shard, twin: Shard) -> list[str]:
    path = reader.path(shard)
    table = reader.parquet(twin, ["layout", *TWIN_COLUMNS], arrow_schema("models"))
    rows = table.num_rows
    keys = set(table.column("layout").to_pylist())
    if len(keys) != 1:
        return [f"{reader.path(twin)}: rows of {len(keys)} layouts in one shard"]
    layout = reader.layout(keys.pop())
    expected = cell_hdf5_values(table, layout)  # lengths were checked against the layout
    for name, stored in read_cell_hdf5(path, layout, rows):
        values = expected[name]()
        if stored.dtype.kind == "f" or values.dtype.kind == "f":
            same = np.array_equal(stored.astype(np.float64), values.astype(np.float64),
                                  equal_nan=True)
        else:
            same = np.array_equal(stored, values)
        if not same:
            return [f"{path}: /{name} differs from the Parquet rows of {reader.path(twin)}"]
    return []
