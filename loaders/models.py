"""Stored checkpoints back into nn.Modules; the seeds (model ids) of each cell."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from torch import nn

from loaders.store import read_metadata, read_weights
from zoo import architectures
from zoo.datasets.base import DataInfo
from zoo.folder.layouts import check_architecture
from zoo.folder.names import LAYOUTS
from zoo.folder.reader import ZooReader
from zoo.layout import Layout


def module_from(layout: Layout, flat: np.ndarray | torch.Tensor, info: DataInfo,
                root: Path | None = None) -> nn.Module:
    """A fresh model of the layout's architecture holding `flat`, in eval mode; the layout is
    first checked against the architecture on the meta device (nothing allocated). `root`,
    the zoo folder, names the layout file in errors."""
    check_architecture(layout, info, Path(root or ".") / LAYOUTS / f"{layout.key}.json")
    with torch.random.fork_rng(devices=[]):  # building draws an init we overwrite at once
        model = architectures.build(layout.family, width=layout.width, info=info,
                                    args=dict(layout.args))
    state = layout.unflatten(torch.as_tensor(flat).clone())
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_model(root: str | Path, model_id: str, epoch: int) -> nn.Module:
    """The stored checkpoint of `model_id` at `epoch` as an nn.Module in eval mode.

    Raises:
        KeyError: no such model or epoch in the zoo (the message lists the stored epochs).
        IntegrityError: the shard holding it does not match the manifest's sha256.
    """
    reader = ZooReader(root)
    columns = read_metadata(reader)
    ours = columns["model_id"] == model_id
    match = np.flatnonzero(ours & (columns["epoch"] == epoch))
    if len(match) == 0:
        stored = sorted(int(e) for e in columns["epoch"][ours])
        raise KeyError(f"{reader.root}: no checkpoint of model {model_id!r} at epoch {epoch}; "
                       f"stored epochs: {stored}")
    store = read_weights(reader, columns, match[:1])
    layout = store.layouts[store.keys[0]]
    return module_from(layout, store.arrays[store.keys[0]][0], reader.record.data_info,
                       reader.root)


def groups(root: str | Path) -> dict[str, list[str]]:
    """cell_id -> the cell's model ids (one per seed), in seed order."""
    table = ZooReader(root).table("models", columns=["cell_id", "model_id", "seed"])
    seeds: dict[str, dict[str, int]] = {}
    for cell, model, seed in zip(*(table.column(n).to_pylist()
                                   for n in ("cell_id", "model_id", "seed"))):
        seeds.setdefault(cell, {})[model] = seed
    return {cell: sorted(models, key=models.__getitem__) for cell, models in seeds.items()}


def pairs(root: str | Path) -> dict[str, list[tuple[str, str]]]:
    """cell_id -> every pair of its model ids (seed order), as the pairs table counts them."""
    return {cell: list(combinations(models, 2)) for cell, models in groups(root).items()}
