"""ZooDataset: stored checkpoints as a torch Dataset for weight-space learning."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from loaders.augmentation import Augment, Augmenter, item_generator
from loaders.batching import ZooItem, row_batch, window
from loaders.models import module_from
from loaders.representations import (REPRESENTATIONS, Encoder, Flat, Stats, WithoutCounters,
                                      check_token_options, make_encoder, statistics,
                                      token_rows, widest_row)
from loaders.rowsource import CACHE_BYTES, LazyStore, RowPlaces, RowSource, lazy_layer_statistics
from zoo.folder.splits import FRACTIONS, SPLITS, assign_splits, summary
from loaders.store import (Columns, WeightStore, Where, epoch_mask, layer_statistics,
                           read_metadata, read_weights, where_mask)
from zoo.folder.reader import ZooReader
from zoo.folder.schema import python_value
from zoo.layout import Layout

Item = dict[str, Any]
IN_MEMORY_BYTES = 512 << 20  # chosen rows' weights read at once up to this; lazily above it
HUB_NAMES = {"validation": "val"}  # the Hugging Face split names that differ from ours


class Arrays(tuple):
    """`ZooDataset.arrays`' result: unpacks as (x, y); also the rows' dataset indices, model
    ids and epochs, and `features`, the name of each column of x."""

    def __new__(cls, x: Any, y: Any, index: np.ndarray, model_ids: np.ndarray,
                epochs: np.ndarray, encoder: Encoder) -> Arrays:
        result = super().__new__(cls, (x, y))
        result.x, result.y, result.index = x, y, index
        result.model_ids, result.epochs, result._encoder = model_ids, epochs, encoder
        return result

    @property
    def features(self) -> list[str]:
        """Column names of x: "<entry>.<statistic>" (stats) or "<entry>[<i>]" (flat)."""
        encoder = self._encoder
        if isinstance(encoder, Stats):
            return list(encoder.names)
        layout = encoder.inner.layout if isinstance(encoder, WithoutCounters) else encoder.layout
        return [f"{e.name}[{i}]" for e in layout.entries for i in range(e.size)]


class ZooDataset(Dataset):
    """Checkpoints of a zoo folder: read at once into one float32 array per layout (small
    zoos), or each when its item is asked for (larger than memory; loaders.rowsource).

    Items are dicts: the representation's tensors under "weights" (plus "extras" for layers;
    "mask" and "positions" for tokens), "layout" (key), "targets" (float32, one per name in
    `targets`, NaN where missing), "model_id", "cell_id", "epoch". Without normalisation or
    augmentation, flat and state_dict tensors are views of the shared array: clone before
    changing them in place. The defaults return a subset: the train split of the models and
    each model's last epoch (`repr` and `splits()` say how many of how many). Rows of
    several layouts (widths) differ in shape: batch them with loaders.pad_collate,
    loaders.LayoutBatchSampler, `window` (tokens) or representation "stats".

    Args:
        root: the zoo folder, or a URI (s3://bucket/prefix) read through a local cache;
            every shard is checked against the manifest's sha256.
        split: "train", "val" (or "validation", the Hugging Face name), "test" (a hash of
            cell_id or model_id, see split_by) or "all".
        epochs: "last" (each model's last stored epoch), "all", or a list of epochs.
        where: column -> value (or a list of allowed values), or a callable over a row's
            metadata dict (weights excluded; includes phase, generalization_gap, split).
        representation: "flat", "layers", "tokens", "state_dict" or "stats" (see
            loaders.representations).
        targets: numeric column names, "generalization_gap" (test − train loss), or "phase"
            (index into zoo.phases.PHASES).
        normalize: None, or "layer": standardise each layout entry by its mean and std over
            the train split's rows (also for val and test).
        transform: callable on the finished item dict.
        split_by: "cell" (default: a cell's seeds never span two splits, the rows the dataset
            card and `datasets.load_dataset` give) or "model" (seeds of one cell may land in
            train and test: their shared hyperparameters then leak into the test score).
        fractions: train, val, test fractions (sum 1); a split with a nonzero fraction gets at
            least one model (cell) whenever there are enough (see zoo.folder.splits), and an
            empty split is an error.
        augment: an Augment (train split only).
        token_size: values per token for representation="tokens"; 0: the widest row of
            any layout chosen (SANE's tokensize=0), one size for every width.
        token_layout: "neurons" (a BatchNorm's values join its conv's rows) or "sane" (SANE's
            tokenize_checkpoint layout, value for value; loaders.sanetokens).
        ignore_bn: with "sane", leave BatchNorm out of the tokens as SANE's ignore_bn does
            (its entries then ride under "extras", so `decode` stays exact).
        window: for tokens, SANE's random window of this many tokens per item (padded with
            masked zeros when shorter), drawn from (augment seed, epoch, index).
        in_memory: True reads the chosen rows' weights at once, False reads each row's when
            its item is asked for (Parquet by row group, per-model HDF5 by slice, each checked
            against its digest; DataLoader workers open their own files); None (default):
            at once when they hold at most IN_MEMORY_BYTES (512 MiB).
        cache_bytes: bound on the decoded row groups a lazy dataset keeps (each process).
        counters: keep integer buffers (BatchNorm's num_batches_tracked, a step count that
            gives away epoch and batch size) in flat, layers and tokens; by default they are
            left out (carried under "buffers" so `decode` is exact). state_dict and
            load_model always have them.
    """

    def __init__(self, root: str | Path, *, split: str = "train", epochs: str | Sequence[int]
                 = "last", where: Where = None, representation: str = "flat",
                 targets: Sequence[str] = (), normalize: str | None = None,
                 transform: Callable[[Item], Item] | None = None, split_by: str = "cell",
                 fractions: Sequence[float] = FRACTIONS, augment: Augment | None = None,
                 token_size: int = 64, window: int | None = None,
                 in_memory: bool | None = None, cache_bytes: int = CACHE_BYTES,
                 counters: bool = False, token_layout: str = "neurons",
                 ignore_bn: bool = False) -> None:
        _check(split, representation, normalize, split_by, fractions, augment)
        check_token_options(token_size, token_layout, ignore_bn)
        split = HUB_NAMES.get(split, split)
        _check_window(window, representation)
        self.split, self.representation, self.transform = split, representation, transform
        self.augment, self.window, self.split_by, self.epochs = augment, window, split_by, epochs
        # shared memory: DataLoader workers (persistent ones too) see set_epoch at once
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.reader = ZooReader(root)
        columns = read_metadata(self.reader)
        columns["split"] = assign_splits(columns[f"{split_by}_id"], fractions)
        kept = where_mask(columns, where, epoch_mask(columns, epochs))
        self.summary = summary(columns["split"], columns["model_id"], columns["cell_id"], kept)
        self.total = {"rows": len(kept), "models": len(set(columns["model_id"]))}
        chosen = np.flatnonzero(kept if split == "all" else kept & (columns["split"] == split))
        if len(chosen) == 0:
            raise ValueError(f"split {split!r} is empty after epochs={epochs!r} and where; "
                             f"rows per split: {self._counts()} (split_by={split_by!r}, "
                             f"fractions={tuple(fractions)}); widen the filters, use "
                             f"split='all' or other fractions")
        self.columns: Columns = {n: c[chosen] for n, c in columns.items()
                                 if n not in ("shard", "row")}
        self._places = RowPlaces.of(columns, chosen)
        self._cache_bytes = cache_bytes
        self._store = self._weights(columns, chosen, in_memory)
        self.statistics = self._statistics(columns, kept) if normalize == "layer" else None
        self._targets = torch.from_numpy(_target_matrix(self.columns, targets))
        self._ids = list(zip(self.columns["model_id"].tolist(), self.columns["cell_id"].tolist(),
                             self.columns["epoch"].tolist()))
        layouts = self._store.layouts.items()
        self.counters = counters
        if representation == "tokens" and token_size == 0:
            token_size = max(widest_row(token_rows(lay, token_layout, ignore_bn, counters))
                             for _, lay in layouts)
        self._encoders = {k: make_encoder(representation, lay, token_size, counters,
                                          token_layout, ignore_bn) for k, lay in layouts}
        self._augmenters = {k: Augmenter(lay, augment) for k, lay in layouts} if augment else {}
        self._stats = self._precomputed_stats() if representation == "stats" else {}

    def _weights(self, columns: Columns, chosen: np.ndarray, in_memory: bool | None
                 ) -> WeightStore | LazyStore:
        """The chosen rows' weights: read now (in memory) or a LazyStore reading on demand."""
        if in_memory not in (None, True, False):
            raise ValueError(f"in_memory: {in_memory!r} is not allowed; expected None, True "
                             f"or False")
        keys = [str(k) for k in columns["layout"][chosen]]
        layouts = {k: self.reader.layout(k) for k in sorted(set(keys))}
        if in_memory is None:
            in_memory = sum(layouts[k].size * 4 for k in keys) <= IN_MEMORY_BYTES
        if in_memory:
            return read_weights(self.reader, columns, chosen)
        places = RowPlaces.of(columns, chosen)
        return LazyStore(layouts, keys, RowSource(self.reader, places, layouts, keys,
                                                  self._cache_bytes))

    def _statistics(self, columns: Columns, kept: np.ndarray) -> dict[str, tuple[torch.Tensor,
                                                                                 torch.Tensor]]:
        """Per-layout mean/std vectors from the train split's rows that pass the filters."""
        train = self._store
        if self.split != "train":
            train = self._weights(columns, np.flatnonzero(kept & (columns["split"] == "train")),
                                  isinstance(self._store, WeightStore))
        statistics = layer_statistics(train) if isinstance(train, WeightStore) else \
            lazy_layer_statistics(train, np.arange(len(train.keys)))
        missing = sorted(set(self._store.layouts) - set(statistics))
        if missing:
            raise ValueError(f"normalize: layouts {missing} have no train rows to take "
                             f"statistics from")
        return {k: (torch.from_numpy(m), torch.from_numpy(s)) for k, (m, s) in statistics.items()}

    def _precomputed_stats(self) -> dict[str, np.ndarray]:
        """Per layout, the stats rows of every row at once (none when augmenting or lazy)."""
        if self._augmenters or self.lazy:
            return {}
        return {key: statistics(self._normalised(key), layout)
                for key, layout in self._store.layouts.items()}

    def _normalised(self, key: str) -> np.ndarray:
        """The (rows, size) weights of layout `key`, normalised as items are (a lazy dataset
        reads them all)."""
        if self.lazy:
            rows = [self._store.row(i) for i, k in enumerate(self._store.keys) if k == key]
            array = np.stack(rows) if rows else np.empty((0, self.layouts[key].size), np.float32)
        else:
            array = self._store.arrays[key]
        if self.statistics is None:
            return array
        mean, std = self.statistics[key]
        return (array - mean.numpy()) / std.numpy()

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> Item:
        key = self._store.keys[index]
        generator = None
        if self._augmenters or self.window is not None:  # hashing costs: only when drawing
            generator = item_generator(self.augment.seed if self.augment else 0, self.epoch,
                                       index)
        if self._stats:
            encoded = {"weights": torch.from_numpy(self._stats[key][self._store.slots[index]])}
        else:
            encoded = self._encoders[key].encode(self._flat(key, index, generator))
        if self.window is not None:
            encoded = window(encoded, self.window, generator)
        return self._item(index, encoded)

    def __getitems__(self, indices: list[int]) -> list[Item]:
        """Items `indices` (a DataLoader's batch). Flat rows that nothing changes (no
        augmentation, normalisation or window) of one layout, read lazily, are read straight
        into one batch tensor, which the default collate hands on without copying them."""
        keys = {self._store.keys[i] for i in indices}
        key = next(iter(keys)) if len(keys) == 1 else None
        if key is None or not self.lazy or self._augmenters or self.statistics is not None \
                or self.window is not None or type(self._encoders[key]) is not Flat:
            return [self[i] for i in indices]
        slots = row_batch(len(indices), self._store.layouts[key].size)
        for index, slot in zip(indices, slots):
            self._store.source.row(index, slot.numpy())
        return [self._item(index, {"weights": slot}) for index, slot in zip(indices, slots)]

    def _item(self, index: int, encoded: dict[str, Any]) -> Item:
        """Row `index`'s item around its `encoded` weights, transformed as configured."""
        model_id, cell_id, epoch = self._ids[index]
        item = ZooItem(encoded, layout=self._store.keys[index], targets=self._targets[index],
                       model_id=model_id, cell_id=cell_id, epoch=epoch)
        return self.transform(item) if self.transform is not None else item

    def _flat(self, key: str, index: int, generator: torch.Generator | None) -> torch.Tensor:
        """Row `index`'s flat vector: permuted, normalised, noised as configured."""
        flat = torch.from_numpy(self._store.row(index))
        if self._augmenters:
            flat = self._augmenters[key].permute(flat, generator)
        if self.statistics is not None:
            mean, std = self.statistics[key]
            flat = (flat - mean) / std
        if self._augmenters:
            flat = self._augmenters[key].noise(flat, generator)
        return flat

    def _counts(self) -> str:
        return ", ".join(f"{s} {c['rows']}" for s, c in self.summary.items())

    def __repr__(self) -> str:
        models = len(set(self.columns["model_id"]))
        layouts = ", ".join(f"{k}: {n}" for k, n in sorted(Counter(self._store.keys).items()))
        return (f"ZooDataset({self.reader.location!r}, split={self.split!r} by "
                f"{self.split_by}, epochs={self.epochs!r}, representation="
                f"{self.representation!r}): {len(self)} rows of {models} models "
                f"(zoo: {self.total['rows']} rows, {self.total['models']} models; rows per "
                f"split after filters: {self._counts()}); layouts {{{layouts}}}")

    def splits(self) -> dict[str, dict[str, int]]:
        """Rows, models and cells of each split after the epochs and where filters."""
        return {name: dict(counts) for name, counts in self.summary.items()}

    def units(self) -> list[np.ndarray]:
        """Row indices grouped by what one read fetches (a Parquet row group, a per-model
        HDF5 file), in folder order: the units a stream puts in order (loaders.streaming)."""
        if isinstance(self._store, LazyStore):
            return self._store.source.units()
        return RowSource(self.reader, self._places, self._store.layouts,
                         self._store.keys).units()

    @property
    def lazy(self) -> bool:
        """Whether rows are read when their items are asked for (not held in memory)."""
        return isinstance(self._store, LazyStore)

    @property
    def epoch(self) -> int:
        """The augmentation epoch (shared with DataLoader workers)."""
        return int(self._epoch[0])

    @property
    def row_layouts(self) -> list[str]:
        """Each row's layout key, in row order (for loaders.LayoutBatchSampler)."""
        return list(self._store.keys)

    def arrays(self, layout: str | None = None, *, as_torch: bool = False) -> Arrays:
        """All rows of one layout at once, for predictors: (X, y), with row ids and names.

        X is (rows, features) float32 in this dataset's representation when it is "flat" or
        "stats" (normalised if asked; never augmented; flat without counters unless
        `counters`), y is (rows, len(targets)) float32, rows in dataset order. The result
        unpacks as `x, y` and also has `.index` (dataset indices), `.model_ids`, `.epochs`
        and `.features` (a name per column). `layout` may be left out when there is only
        one. Flat X without counters is a copy; otherwise it shares memory with the dataset:
        copy it before changing it in place.
        """
        if self.representation not in ("flat", "stats"):
            raise ValueError(f"arrays: representation {self.representation!r} has no matrix "
                             f"form; use 'flat' or 'stats'")
        keys = sorted(self._store.layouts)
        if layout is None and len(keys) == 1:
            layout = keys[0]
        if layout not in self._store.layouts:
            raise ValueError(f"arrays: layout {layout!r} is not in this dataset; expected one "
                             f"of {', '.join(keys)}")
        rows = np.array([i for i, k in enumerate(self._store.keys) if k == layout], np.int64)
        x = self._normalised(layout)
        encoder = self._encoders[layout]
        if self.representation == "stats":
            x = self._stats[layout] if self._stats else statistics(x, self._store.layouts[layout])
        elif isinstance(encoder, WithoutCounters):
            x = x[:, encoder.kept.numpy()]
        y = self._targets.numpy()[rows]
        if as_torch:
            x, y = torch.from_numpy(x), torch.from_numpy(y)
        return Arrays(x, y, rows, self.columns["model_id"][rows], self.columns["epoch"][rows],
                      encoder)

    @property
    def layouts(self) -> dict[str, Layout]:
        """The layouts of the dataset's rows, by key."""
        return dict(self._store.layouts)

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations and windows: an item's draws depend on (seed, epoch,
        index). Call it before iterating; persistent DataLoader workers see it too."""
        self._epoch[0] = int(epoch)

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
        flat = self._store.row(index)
        return module_from(self._store.layouts[key], flat, self.reader.record.data_info,
                           self.reader.root)


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


def _check_window(window: int | None, representation: str) -> None:
    if window is None:
        return
    if representation != "tokens" or not isinstance(window, int) or isinstance(window, bool) \
            or window < 1:
        raise ValueError(f"window: {window!r} is not allowed for representation "
                         f"{representation!r}; expected an integer >= 1, with 'tokens'")


def _check(split: str, representation: str, normalize: str | None, split_by: str,
           fractions: Sequence[float], augment: Augment | None) -> None:
    """Validate ZooDataset's options; the ValueError names the option, value and choices."""
    choices = {"split": (split, (*SPLITS, *HUB_NAMES, "all")),
               "split_by": (split_by, ("cell", "model")),
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
