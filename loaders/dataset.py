"""ZooDataset: stored checkpoints as a torch Dataset for weight-space learning."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from loaders.augmentation import Augment, Augmenter, item_generator
from loaders.models import module_from
from loaders.representations import REPRESENTATIONS, make_encoder
from loaders.store import (SPLITS, Columns, Where, assign_splits, epoch_mask, layer_statistics,
                           read_metadata, read_weights, where_mask)
from zoo.folder.reader import ZooReader
from zoo.folder.schema import python_value
from zoo.layout import Layout

Item = dict[str, Any]


class ZooDataset(Dataset):
    """Checkpoints of a zoo folder, read once into one float32 array per layout.

    Items are dicts: the representation's tensors under "weights" (plus "extras" for layers;
    "mask" and "positions" for tokens), "layout" (key), "targets" (float32, one per name in
    `targets`, NaN where missing), "model_id", "cell_id", "epoch". Without normalisation or
    augmentation, flat and state_dict tensors are views of the shared array: clone before
    changing them in place. Batching rows of different layouts needs a custom collate_fn.

    Args:
        root: the zoo folder; every shard is checked against the manifest's sha256.
        split: "train", "val", "test" (hash of model_id or cell_id) or "all".
        epochs: "last" (each model's last stored epoch), "all", or a list of epochs.
        where: column -> value (or a list of allowed values), or a callable over a row's
            metadata dict (weights excluded; includes phase, generalization_gap, split).
        representation: "flat", "layers", "tokens" or "state_dict" (see loaders.representations).
        targets: numeric column names, "generalization_gap" (test − train loss), or "phase"
            (index into zoo.phases.PHASES).
        normalize: None, or "layer": standardise each layout entry by its mean and std over
            the train split's rows (also for val and test).
        transform: callable on the finished item dict.
        split_by: "model" or "cell" (a cell's seeds never span two splits).
        fractions: train, val, test fractions (sum 1).
        augment: an Augment (train split only).
        token_size: values per token for representation="tokens".
    """

    def __init__(self, root: str | Path, *, split: str = "train", epochs: str | Sequence[int]
                 = "last", where: Where = None, representation: str = "flat",
                 targets: Sequence[str] = (), normalize: str | None = None,
                 transform: Callable[[Item], Item] | None = None, split_by: str = "model",
                 fractions: Sequence[float] = (0.7, 0.15, 0.15), augment: Augment | None = None,
                 token_size: int = 64) -> None:
        _check(split, representation, normalize, split_by, fractions, augment, token_size)
        self.split, self.representation, self.transform = split, representation, transform
        self.augment, self.epoch = augment, 0
        self.reader = ZooReader(root)
        columns = read_metadata(self.reader)
        columns["split"] = assign_splits(columns[f"{split_by}_id"], fractions)
        kept = where_mask(columns, where, epoch_mask(columns, epochs))
        chosen = np.flatnonzero(kept if split == "all" else kept & (columns["split"] == split))
        self.columns: Columns = {n: c[chosen] for n, c in columns.items()
                                 if n not in ("shard", "row")}
        self._store = read_weights(self.reader, columns, chosen)
        self.statistics = self._statistics(columns, kept) if normalize == "layer" else None
        self._targets = torch.from_numpy(_target_matrix(self.columns, targets))
        self._ids = list(zip(self.columns["model_id"].tolist(), self.columns["cell_id"].tolist(),
                             self.columns["epoch"].tolist()))
        layouts = self._store.layouts.items()
        self._encoders = {k: make_encoder(representation, lay, token_size) for k, lay in layouts}
        self._augmenters = {k: Augmenter(lay, augment) for k, lay in layouts} if augment else {}

    def _statistics(self, columns: Columns, kept: np.ndarray) -> dict[str, tuple[torch.Tensor,
                                                                                 torch.Tensor]]:
        """Per-layout mean/std vectors from the train split's rows that pass the filters."""
        train = self._store
        if self.split != "train":
            train = read_weights(self.reader, columns,
                                 np.flatnonzero(kept & (columns["split"] == "train")))
        statistics = layer_statistics(train)
        missing = sorted(set(self._store.layouts) - set(statistics))
        if missing:
            raise ValueError(f"normalize: layouts {missing} have no train rows to take "
                             f"statistics from")
        return {k: (torch.from_numpy(m), torch.from_numpy(s)) for k, (m, s) in statistics.items()}

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> Item:
        key = self._store.keys[index]
        flat = torch.from_numpy(self._store.arrays[key][self._store.slots[index]])
        if self._augmenters:
            generator = item_generator(self.augment.seed, self.epoch, index)
            flat = self._augmenters[key].permute(flat, generator)
        if self.statistics is not None:
            mean, std = self.statistics[key]
            flat = (flat - mean) / std
        if self._augmenters:
            flat = self._augmenters[key].noise(flat, generator)
        model_id, cell_id, epoch = self._ids[index]
        item = {**self._encoders[key].encode(flat), "layout": key,
                "targets": self._targets[index], "model_id": model_id, "cell_id": cell_id,
                "epoch": epoch}
        return self.transform(item) if self.transform is not None else item

    @property
    def layouts(self) -> dict[str, Layout]:
        """The layouts of the dataset's rows, by key."""
        return dict(self._store.layouts)

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations: an item's draws depend on (seed, epoch, index)."""
        self.epoch = int(epoch)

    def decode(self, item: Item) -> dict[str, torch.Tensor]:
        """The state_dict of one (unbatched) item: the representation and normalisation undone."""
        layout = self._store.layouts[item["layout"]]
        flat = self._encoders[layout.key].decode(item)
        if self.statistics is not None:
            mean, std = self.statistics[layout.key]
            flat = flat * std + mean
        return layout.unflatten(flat)

    def metadata(self, index: int) -> dict[str, Any]:
        """Row `index`'s columns (weights excluded) as Python values."""
        return {n: python_value(c[index]) for n, c in self.columns.items()}

    def load_model(self, index: int) -> torch.nn.Module:
        """Row `index`'s stored checkpoint (not normalised, not augmented) in eval mode."""
        key = self._store.keys[index]
        flat = self._store.arrays[key][self._store.slots[index]]
        return module_from(self._store.layouts[key], flat, self.reader.record.data_info)


def _target_matrix(columns: Columns, names: Sequence[str]) -> np.ndarray:
    """(rows, len(names)) float32 of the named numeric columns ("phase": its index)."""
    if isinstance(names, str):
        raise ValueError(f"targets: {names!r} is not allowed; expected a list of column names")
    numeric = sorted(n for n, c in columns.items() if c.dtype.kind in "fiub") + ["phase"]
    out = []
    for name in names:
        if name not in numeric:
            raise ValueError(f"targets: {name!r} is not a numeric column; expected one of "
                             f"{', '.join(numeric)}")
        out.append(columns["phase_index" if name == "phase" else name].astype(np.float32))
    rows = len(columns["model_id"])
    return np.stack(out, axis=1) if out else np.zeros((rows, 0), np.float32)


def _check(split: str, representation: str, normalize: str | None, split_by: str,
           fractions: Sequence[float], augment: Augment | None, token_size: int) -> None:
    """Validate ZooDataset's options; the ValueError names the option, value and choices."""
    choices = {"split": (split, (*SPLITS, "all")), "split_by": (split_by, ("model", "cell")),
               "representation": (representation, REPRESENTATIONS),
               "normalize": (normalize, (None, "layer"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{name}: {value!r} is not allowed; expected one of "
                             f"{', '.join(map(repr, allowed))}")
    if (len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions)
            or abs(sum(fractions) - 1) > 1e-9):
        raise ValueError(f"fractions: {tuple(fractions)!r} is not allowed; expected three "
                         f"numbers in [0, 1] (train, val, test) that sum to 1")
    if augment is not None and (not isinstance(augment, Augment) or split != "train"):
        raise ValueError(f"augment: {augment!r} is not allowed for split {split!r}; expected "
                         f"an Augment, and only for split 'train'")
    if not isinstance(token_size, int) or isinstance(token_size, bool) or token_size < 1:
        raise ValueError(f"token_size: {token_size!r} is not allowed; expected an integer >= 1")
