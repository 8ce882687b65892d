"""What every study shares: a zoo opened with its spec, data and checkpoints; tables; figures."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from loaders.models import module_from
from loaders.store import read_metadata, read_weights
from zoo import dataroot
from zoo.errors import ZooError
from zoo.folder.reader import ZooReader
from zoo.folder.schema import python_value
from zoo.measure import BN_SAMPLES, probe_batches
from zoo.objective import Objective
from zoo.specfile import spec_from_dict

T = TypeVar("T")
CELL_KEYS = ("cell_id", "load_axis", "load_value", "temperature_axis", "temperature_value",
             "phase")
MODEL_KEYS = ("model_id", "seed", "epoch")
BN_BATCH_SIZE = 128  # BatchNorm statistics are re-estimated on BN_SAMPLES fixed train samples


class StudyZoo:
    """A zoo folder opened for a study: its resolved spec, its data in memory, row metadata
    (weights excluded) and checkpoints rebuilt as modules on demand."""

    def __init__(self, root: str | Path) -> None:
        self.reader = ZooReader(root)  # a URI: read through the local cache
        self.spec = spec_from_dict(self.reader.record.spec)
        data = self.spec.data
        self.bundle = dataroot.load(data.name, root=data.root, args=data.args)
        self.columns = read_metadata(self.reader)

    @property
    def task(self) -> str:
        return self.bundle.info.task

    def row(self, index: int) -> dict[str, Any]:
        """The metadata of model row `index` as plain Python values."""
        return {name: python_value(values[index]) for name, values in self.columns.items()
                if name not in ("shard", "row")}

    def cells(self) -> list[list[int]]:
        """Row indices per cell (cells by load then temperature; rows by seed then epoch)."""
        c = self.columns
        order = np.lexsort((c["epoch"], c["seed"], c["temperature_value"], c["load_value"]))
        groups: dict[str, list[int]] = {}
        for index in order.tolist():
            groups.setdefault(str(c["cell_id"][index]), []).append(index)
        return list(groups.values())

    def models(self, indices: Sequence[int]) -> list[nn.Module]:
        """The checkpoints of rows `indices` as modules in eval mode (one read per shard)."""
        store = read_weights(self.reader, self.columns, np.asarray(indices, dtype=np.int64))
        return [module_from(store.layouts[key], store.arrays[key][slot], self.bundle.info)
                for key, slot in zip(store.keys, store.slots)]

    def objective(self, index: int) -> Objective:
        """The objective row `index` was trained and evaluated with (its data fraction, beta)."""
        row = self.row(index)
        return Objective(self.bundle.subsample(row["data_fraction"]), beta=row["beta"])

    def batchnorm_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed train batches for re-estimating BatchNorm statistics (the curve metrics' size)."""
        return probe_batches(self.bundle.train, -(-BN_SAMPLES // BN_BATCH_SIZE), BN_BATCH_SIZE)

    def identity(self, index: int, keys: Sequence[str] = CELL_KEYS) -> dict[str, Any]:
        """The identifying columns of row `index` that a study row repeats."""
        row = self.row(index)
        return {key: row[key] for key in keys}


def evaluate(model: nn.Module, objective: Objective) -> dict[str, float | None]:
    """test_loss, test_accuracy (None for PINNs) and test_error on the full test set."""
    return {f"test_{k}": v for k, v in objective.evaluate(model, "test").items()}


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_integer(study: str, name: str, value: Any, low: int = 1) -> int:
    """`value` if it is an integer >= low, else a ZooError naming study, option and value."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ZooError(f"study {study}: {name} = {value!r} is not allowed; expected an "
                       f"integer >= {low}")
    return value


def progress(items: Iterable[T], description: str, total: int, enabled: bool) -> Iterable[T]:
    """A tqdm bar on stderr over `items` (or the items themselves when disabled)."""
    from tqdm import tqdm

    return tqdm(items, desc=description, total=total, unit="cell", file=sys.stderr,
                disable=not enabled)


def write_table(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """The study's rows as a zstd Parquet file (a column per key of any row; null elsewhere)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise ZooError(f"{path}: the study produced no rows (no finite checkpoints?)")
    names = list(dict.fromkeys(key for row in rows for key in row))
    table = pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in names})
    pq.write_table(table, path, compression="zstd")
    return path


def score_name(task: str) -> str:
    """The score studies compare: accuracy, or the relative L2 error for PINNs."""
    return "error" if task == "pinn" else "accuracy"
