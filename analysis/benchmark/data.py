"""A zoo read once for the benchmark: every stored checkpoint's metadata and weights, and the
inputs each baseline reads (hyperparameters, per-layer statistics, NFN layers)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from analysis.benchmark.tasks import AXES, Task
from loaders.representations import Layers, statistics
from loaders.store import read_metadata, read_weights
from zoo.folder.reader import ZooReader

MAX_UNITS = 32  # NFN layers: units kept per axis (wider layers are subsampled)
LayerBatch = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: weight (B, C, out, in), bias (B, 1, out)


class BenchmarkData:
    """Every model row (model × stored epoch) of a zoo, in table order."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        reader = ZooReader(self.root)
        self.columns = read_metadata(reader)
        self.store = read_weights(reader, self.columns, np.arange(len(self.columns["epoch"])))
        self.rows = len(self.columns["epoch"])

    def hyperparameters(self, task: Task) -> tuple[np.ndarray, list[str]]:
        """The control's (rows, features) inputs and names: the grid axes (log where positive)
        but the task's own, and the epoch."""
        names, parts = [], []
        for axis in AXES:
            if axis == task.axis:
                continue
            values = self.columns[f"{axis}_value"].astype(np.float64)
            positive = bool((values > 0).all())
            names.append(f"{'log ' if positive else ''}{self.columns[f'{axis}_axis'][0]}")
            parts.append(np.log(values) if positive else values)
        names.append("epoch")
        parts.append(self.columns["epoch"].astype(np.float64))
        return np.stack(parts, axis=1), names

    @cached_property
    def statistics(self) -> np.ndarray:
        """(rows, features) per-layer statistics (loaders' `stats` representation), or an
        error when the layouts give vectors of different lengths."""
        blocks = {k: statistics(a, self.store.layouts[k]) for k, a in self.store.arrays.items()}
        lengths = {b.shape[1] for b in blocks.values()}
        if len(lengths) != 1:
            raise ValueError(f"stats: the layouts give {sorted(lengths)} features; rows of "
                             f"one family and depth are needed")
        return np.stack([blocks[k][s] for k, s in zip(self.store.keys, self.store.slots)])

    @cached_property
    def layer_groups(self) -> list[tuple[np.ndarray, LayerBatch]]:
        """Per layout: (its row indices, NFN layers of those rows): each weight of ndim >= 2
        as (rows, kernel values, out, in) and its bias (rows, 1, out), zeros where the layer has
        none; the kernel's values are the weight's channels; non-finite values (diverged
        models) as 0. Units beyond MAX_UNITS are subsampled (seeded; a hidden layer keeps the
        same units as rows of its weight and columns of the next), so wide zoos stay cheap.
        Layouts must agree in layers and kernel sizes (one family and depth)."""
        keys = np.asarray(self.store.keys)
        groups = []
        for key, layout in sorted(self.store.layouts.items()):
            array = torch.nan_to_num(torch.from_numpy(self.store.arrays[key]), 0, 0, 0)
            rng, shared, layers = np.random.default_rng(0), None, []
            for weight, bias in Layers(layout).layers:
                w = array[:, weight.offset:weight.offset + weight.size]
                w = w.view(len(array), weight.shape[0], weight.shape[1], -1).permute(0, 3, 1, 2)
                b = (array[:, bias.offset:bias.offset + bias.size] if bias is not None
                     else array.new_zeros(len(array), weight.shape[0]))
                columns = shared if shared is not None and len(shared[1]) == w.shape[3] \
                    else _units(w.shape[3], rng)
                rows = _units(w.shape[2], rng)
                layers.append((w[:, :, rows[0]][:, :, :, columns[0]], b[:, None, rows[0]]))
                shared = rows
            groups.append((np.flatnonzero(keys == key), layers))
        kinds = {tuple(w.shape[1] for w, _ in layers) for _, layers in groups}
        if len(kinds) != 1:
            raise ValueError(f"layers: the layouts differ in layers or kernel sizes "
                             f"({sorted(kinds)}); one family and depth are needed")
        return groups


def _units(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept unit indices, all unit indices) of an axis of `count` units: at most MAX_UNITS,
    a seeded sorted draw when there are more."""
    every = np.arange(count)
    if count <= MAX_UNITS:
        return every, every
    return np.sort(rng.choice(count, MAX_UNITS, replace=False)), every
