"""The models table in memory: row metadata as numpy columns, weights as one array per layout."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import pyarrow as pa

from zoo.errors import ZooFolderError
from zoo.folder.checkpoints import CHECKPOINTS_FORMAT, read_checkpoint
from zoo.folder.manifest import Shard
from zoo.folder.modelshards import inline_weights
from zoo.folder.reader import ZooReader
from zoo.folder.schema import MODEL_COLUMNS, arrow_schema, python_value
from zoo.layout import Layout
from zoo.limits import short_repr
from zoo.phases import PHASES

META_COLUMNS = tuple(c.name for c in MODEL_COLUMNS if c.name != "weights")
Where = Union[Mapping[str, Any], Callable[[dict[str, Any]], bool], None]
Columns = dict[str, np.ndarray]


def read_metadata(reader: ZooReader) -> Columns:
    """Every model row's columns but the weights, with its shard and row numbers, the cell's
    phase (None when unlabelled; from the cells table, which `zoo relabel` may have renewed),
    phase_index (NaN) and generalization_gap (test − train loss)."""
    schema, parts = arrow_schema("models"), []
    for number, shard in enumerate(reader.manifest.shards_of("models")):
        table = reader.parquet(shard, list(META_COLUMNS), schema)
        table = table.append_column("shard", pa.array(np.full(table.num_rows, number)))
        parts.append(table.append_column("row", pa.array(np.arange(table.num_rows))))
    if not parts:
        raise ZooFolderError(f"{reader.root}: the manifest lists no models shards")
    table = pa.concat_tables(parts)
    columns = {name: table.column(name).to_numpy() for name in table.column_names}
    cells = reader.table("cells", columns=["cell_id", "phase"]).to_pydict()
    phases = dict(zip(cells["cell_id"], cells["phase"]))
    columns["phase"] = np.array([phases.get(c) for c in columns["cell_id"]], dtype=object)
    columns["phase_index"] = np.array([PHASES.index(p) if p in PHASES else np.nan
                                       for p in columns["phase"]], dtype=np.float64)
    columns["generalization_gap"] = columns["test_loss"] - columns["train_loss"]
    return columns


def epoch_mask(columns: Columns, epochs: str | Sequence[int]) -> np.ndarray:
    """Rows kept by `epochs`: 'all', 'last' (each model's last stored epoch) or a list."""
    if epochs == "all":
        return np.ones(len(columns["epoch"]), bool)
    if epochs == "last":
        last: dict[str, int] = {}
        for model, epoch in zip(columns["model_id"], columns["epoch"]):
            last[model] = max(last.get(model, epoch), epoch)
        return np.array([last[m] == e for m, e in zip(columns["model_id"], columns["epoch"])])
    integers = isinstance(epochs, (list, tuple, range)) and all(
        isinstance(e, (int, np.integer)) and not isinstance(e, (bool, np.bool_)) for e in epochs)
    if not integers:  # True is an int in Python; epochs=[True] must not mean epoch 1
        raise ValueError(f"epochs: {short_repr(epochs)} is not allowed; expected 'last', 'all' "
                         f"or a list of integers")
    return np.isin(columns["epoch"], list(epochs))


def where_mask(columns: Columns, where: Where, candidates: np.ndarray) -> np.ndarray:
    """Rows kept by `where` among `candidates`: column -> value (or collection of values), or
    a callable over the row's metadata dict."""
    if where is None:
        return candidates
    if callable(where):
        public = [n for n in columns if n not in ("shard", "row")]
        keep = candidates.copy()
        for i in np.flatnonzero(candidates):
            keep[i] = bool(where({n: python_value(columns[n][i]) for n in public}))
        return keep
    keep = candidates.copy()
    for name, value in where.items():
        if name not in columns or name in ("shard", "row"):
            raise ValueError(f"where: unknown column {name!r}; expected one of "
                             f"{', '.join(sorted(set(columns) - {'shard', 'row'}))}")
        allowed = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        keep &= np.array([v in allowed for v in columns[name]], dtype=bool)
    return keep


@dataclass(frozen=True)
class WeightStore:
    """Weights of chosen rows: arrays[key] is (rows of that layout, layout.size) float32."""

    layouts: dict[str, Layout]
    arrays: dict[str, np.ndarray]
    keys: list[str]  # per row: its layout key
    slots: list[int]  # per row: its row in arrays[key]

    def row(self, index: int) -> np.ndarray:
        """Row `index`'s weights (a view of arrays[key])."""
        return self.arrays[self.keys[index]][self.slots[index]]


def read_weights(reader: ZooReader, columns: Columns, chosen: np.ndarray) -> WeightStore:
    """Copy the weights of rows `chosen` (indices into columns) into one array per layout;
    every size is checked against the shards' weight counts before anything is allocated."""
    keys = [str(k) for k in columns["layout"][chosen]]
    layouts = {k: reader.layout(k) for k in sorted(set(keys))}
    shards = reader.manifest.shards_of("models")
    shard_numbers = columns["shard"][chosen]
    for number in np.unique(shard_numbers):
        reader.check_weights(shards[number])
    counts = dict.fromkeys(layouts, 0)
    slots = []
    for key in keys:
        slots.append(counts[key])
        counts[key] += 1
    arrays = {k: np.empty((counts[k], layouts[k].size), np.float32) for k in layouts}
    external = _read_external(reader, columns, chosen, layouts, keys, slots, arrays)
    for number in np.unique(shard_numbers[~external]):
        values, offsets = _flat_weights(reader, shards[number])
        for j in np.flatnonzero((shard_numbers == number) & ~external):
            row, key = columns["row"][chosen[j]], keys[j]
            start, stop = offsets[row], offsets[row + 1]
            if stop - start != layouts[key].size:
                raise ZooFolderError(f"{reader.path(shards[number])}: row {row} has "
                                     f"{stop - start} weights; layout {key} has "
                                     f"{layouts[key].size}")
            arrays[key][slots[j]] = values[start:stop]
    return WeightStore(layouts, arrays, keys, slots)


def _read_external(reader: ZooReader, columns: Columns, chosen: np.ndarray,
                   layouts: dict[str, Layout], keys: list[str], slots: list[int],
                   arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Fill the rows whose checkpoint the manifest lists as a per-model file (format
    "checkpoints"); returns which they are (the others are inline in their models shard)."""
    files = columns.get("weights_file")
    if files is None:  # a zoo written before per-model files
        return np.zeros(len(chosen), bool)
    shards = reader.manifest.shards_of("models")
    sources = [reader.weights_source(shards[columns["shard"][i]], files[i]) for i in chosen]
    external = np.array([s.format == CHECKPOINTS_FORMAT for s in sources], bool)
    for j in np.flatnonzero(external):
        i = chosen[j]
        reader.ensure_local(sources[j])  # on a store: fetched into the cache, checked
        arrays[keys[j]][slots[j]] = read_checkpoint(
            reader.root, sources[j].path, int(columns["weights_index"][i]),
            columns["weights_sha256"][i], layouts[keys[j]], model_id=str(columns["model_id"][i]),
            epoch=int(columns["epoch"][i]))
    return external


def _flat_weights(reader: ZooReader, shard: Shard) -> tuple[np.ndarray, np.ndarray]:
    """The shard's weights column as its flat float32 values and row offsets."""
    return inline_weights(reader.parquet(shard, ["weights"]), reader.path(shard))


def layer_statistics(store: WeightStore) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per layout, mean and std vectors (layout.size,) holding each entry's statistics over the
    store's finite rows; integer entries and constant entries get mean 0 / std 1."""
    statistics = {}
    for key, layout in store.layouts.items():
        array = store.arrays[key]
        finite = np.isfinite(array).all(axis=1)
        if not finite.any():
            raise ValueError(f"normalize: layout {key} has no finite train rows to take "
                             f"statistics from")
        rows = array if finite.all() else array[finite]
        mean, std = np.zeros(layout.size, np.float32), np.ones(layout.size, np.float32)
        for e in layout.entries:
            block = rows[:, e.offset:e.offset + e.size]
            spread = float(block.std(dtype=np.float64))
            if e.dtype != "int64" and spread > 0:
                mean[e.offset:e.offset + e.size] = block.mean(dtype=np.float64)
                std[e.offset:e.offset + e.size] = spread
        statistics[key] = (mean, std)
    return statistics
