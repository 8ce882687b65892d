"""`zoo verify`'s row checks: weights against layouts, finite flags against the values, and
HDF5 shards against the Parquet rows of the same cell. By default a seeded sample of shards
(cells) is decoded; `deep` decodes every row of every shard."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from zoo.errors import ZooError
from zoo.folder.checkpoints import CHECKPOINTS_FORMAT, read_checkpoint
from zoo.folder.manifest import Shard
from zoo.folder.modelshards import HDF5_COLUMNS, inline_weights, read_cell_hdf5
from zoo.folder.reader import ZooReader
from zoo.folder.schema import arrow_schema

SAMPLE_SHARDS = 8  # cells decoded without --deep
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


def check_hdf5(reader: ZooReader, deep: bool) -> list[str]:
    """In the chosen HDF5 shards, every array equal to the Parquet rows of the same cell."""
    parquet = {s.cell_id: s for s in reader.manifest.shards_of("models")}
    problems = []
    for shard in _chosen(reader.manifest.shards_of("models", "hdf5"), deep):
        if shard.cell_id not in parquet:
            problems.append(f"{reader.root / shard.path}: cell {shard.cell_id} has no Parquet "
                            f"models shard to match")
            continue
        try:
            problems += _compare_hdf5(reader, shard, parquet[shard.cell_id])
        except ZooError as error:
            problems.append(str(error))
        except HDF5_ERRORS as error:
            problems.append(f"{reader.root / shard.path}: cannot be read as this version's "
                            f"HDF5 shard ({type(error).__name__}: {error})")
    return problems


def _compare_hdf5(reader: ZooReader, shard: Shard, twin: Shard) -> list[str]:
    path = reader.path(shard)
    table = reader.parquet(twin, ["model_id", "epoch", "layout", *HDF5_COLUMNS, "weights"],
                           arrow_schema("models"))
    rows = table.num_rows
    keys = set(table.column("layout").to_pylist())
    if len(keys) != 1:
        return [f"{reader.path(twin)}: rows of {len(keys)} layouts in one cell"]
    layout = reader.layout(keys.pop())
    flat = inline_weights(table)[0]
    flat = flat.reshape(rows, layout.size)  # lengths were checked against the layout
    expected: dict[str, Any] = {
        "model_id": np.array(table.column("model_id").to_pylist(), dtype="S"),
        "epoch": table.column("epoch").to_numpy()}
    for name in HDF5_COLUMNS:
        values = [np.nan if v is None else v for v in table.column(name).to_pylist()]
        expected[f"columns/{name}"] = np.asarray(values)
    for e in layout.entries:
        expected[f"weights/{e.name}"] = lambda e=e: flat[
            :, e.offset:e.offset + e.size].reshape(rows, *e.shape)
    for name, stored in read_cell_hdf5(path, layout, rows):
        values = expected[name]() if callable(expected[name]) else expected[name]
        if stored.dtype.kind == "f" or values.dtype.kind == "f":
            same = np.array_equal(stored.astype(np.float64), values.astype(np.float64),
                                  equal_nan=True)
        else:
            same = np.array_equal(stored, values)
        if not same:
            return [f"{path}: /{name} differs from the Parquet rows of {reader.path(twin)}"]
    return []
