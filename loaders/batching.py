"""Batches of rows of several layouts: a padding collate, a sampler by layout, token windows.

A zoo has several widths by design, so items of one batch can differ in shape. Three ways:
- `pad_collate`: pad flat vectors, tokens and NFN layers to the batch's largest shape, with
  masks of real values (zero hidden units added to an MLP leave its function unchanged);
- `LayoutBatchSampler`: every batch holds rows of one layout (default collate works);
- `window` (ZooDataset(window=...)): SANE's random window of a fixed number of tokens.
Without them, the default collate raises an error that names the layouts and these ways out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler
from torch.utils.data._utils.collate import collate, default_collate, default_collate_fn_map
from torch.utils.weak import WeakTensorKeyDictionary

from zoo.errors import ZooError


class ZooItem(dict):
    """One ZooDataset item; the default collate checks that a batch's layouts agree."""

    def __copy__(self) -> ZooItem:  # DataLoader's default_convert copies each item
        return ZooItem(self)


_BATCHES = WeakTensorKeyDictionary()  # the tensors row_batch made (by identity)


def row_batch(rows: int, size: int) -> list[torch.Tensor]:
    """`rows` float32 vectors of `size` that rows are read into, each a row of one new
    (rows, size) tensor (in shared memory inside a DataLoader worker, as default_collate
    allocates a batch there): the default collate hands that tensor on without a copy."""
    if torch.utils.data.get_worker_info() is not None:
        storage = torch.UntypedStorage._new_shared(rows * size * 4)
        batch = torch.empty(0).set_(storage, 0, (rows, size))
    else:  # numpy asks for huge pages from 4 MB up: a fresh batch costs fewer page faults
        batch = torch.from_numpy(np.empty((rows, size), np.float32))
    _BATCHES[batch] = True
    return list(batch)


def _whole_batch(values: list[Any]) -> torch.Tensor | None:
    """The tensor `row_batch` made when `values` are its rows, all and in order."""
    batch = getattr(values[0], "_base", None)
    if batch is None or batch not in _BATCHES or batch.shape[0] != len(values):
        return None
    step = batch.stride(0) * batch.element_size()
    for k, value in enumerate(values):
        if not isinstance(value, torch.Tensor) or value._base is not batch or \
                value.shape != batch.shape[1:] or \
                value.data_ptr() != batch.data_ptr() + k * step:
            return None
    return batch


def _collate_items(batch: Sequence[ZooItem], *, collate_fn_map: dict | None = None) -> dict:
    """default_collate of ZooItems (weights read into one batch tensor by
    `ZooDataset.__getitems__` are that tensor), or an error naming the layouts when their
    shapes differ."""
    try:
        collated = {}
        for key in batch[0]:
            values = [item[key] for item in batch]
            whole = _whole_batch(values) if key == "weights" else None
            collated[key] = whole if whole is not None else \
                collate(values, collate_fn_map=collate_fn_map)
        return collated
    except RuntimeError as error:
        layouts = sorted({str(item.get("layout")) for item in batch})
        if len(layouts) < 2:
            raise
        raise ZooError(
            f"a batch mixes layouts {', '.join(layouts)} whose weights differ in shape; pass "
            f"collate_fn=loaders.pad_collate (pads and masks), batch_sampler="
            f"loaders.LayoutBatchSampler(dataset, batch_size) (one layout per batch), "
            f"window=... for tokens, or choose one layout with where={{'layout': ...}}"
        ) from error


default_collate_fn_map[ZooItem] = _collate_items


def pad_stack(tensors: Sequence[torch.Tensor], fill: float = 0) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """Stack tensors of one ndim, each padded at the end of every axis to the largest size.

    Returns:
        (batch, *max shape) values with `fill` in the padding, and a bool mask of real values.
    """
    ndims = {t.ndim for t in tensors}
    if len(ndims) != 1:
        raise ZooError(f"cannot pad tensors of {sorted(ndims)} dimensions into one batch")
    shape = [max(t.shape[axis] for t in tensors) for axis in range(tensors[0].ndim)]
    values = tensors[0].new_full((len(tensors), *shape), fill)
    mask = torch.zeros((len(tensors), *shape), dtype=torch.bool)
    for row, tensor in enumerate(tensors):
        region = (row, *(slice(0, n) for n in tensor.shape))
        values[region] = tensor
        mask[region] = True
    return values, mask


def pad_collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate items of any layouts by padding, for flat, tokens, layers and stats rows.

    flat/stats: "weights" (B, N max) and "mask" (B, N max). tokens: "weights" (B, T max,
    token_size), "mask" (values), "positions" (B, T max, 3), "token_mask" (B, T max) of real
    tokens, "extras" padded (SANE layout). layers: "weights" a list of (W (B, 1, out, in,
    ...), b (B, 1, out)) and "masks" the matching bool masks; the layouts must have as many
    layers. Other keys as default_collate ("layout" a list of keys).

    Caveat for weight-space networks: padding keeps an MLP's function but not an NFN's
    output. An equivariant layer that pools (means, sums) over units sees the zero units
    unless it pools with the masks; on a small MLP zoo the shift was 0.014 against a 0.005
    spread between models. For NFNs, batch by layout (`LayoutBatchSampler`) instead, as
    examples/nfn_layers.py does.
    """
    first = batch[0]["weights"]
    if isinstance(first, dict):
        raise ZooError("representation 'state_dict' cannot be padded; use 'layers', 'flat' "
                       "or loaders.LayoutBatchSampler")
    out = default_collate([{k: v for k, v in item.items()
                            if k not in ("weights", "mask", "positions", "extras")}
                           for item in batch])
    if isinstance(first, list):
        out.update(_pad_layers(batch))
    elif "positions" in batch[0]:
        out["weights"], present = pad_stack([item["weights"] for item in batch])
        out["mask"] = pad_stack([item["mask"] for item in batch], False)[0]
        out["positions"] = pad_stack([item["positions"] for item in batch])[0]
        out["token_mask"] = present[..., 0]
        if "extras" in batch[0]:  # token_layout="sane": what no token holds
            out["extras"] = _pad_extras(batch)
    else:
        out["weights"], out["mask"] = pad_stack([item["weights"] for item in batch])
    return out


def _pad_layers(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    counts = {len(item["weights"]) for item in batch}
    if len(counts) != 1:
        layouts = sorted({item["layout"] for item in batch})
        raise ZooError(f"layouts {', '.join(layouts)} have {sorted(counts)} layers; "
                       f"'layers' pads widths, not depth: use loaders.LayoutBatchSampler")
    weights, masks = [], []
    for number in range(counts.pop()):
        layer = [pad_stack([item["weights"][number][part] for item in batch]) for part in (0, 1)]
        weights.append((layer[0][0], layer[1][0]))
        masks.append((layer[0][1], layer[1][1]))
    return {"weights": weights, "masks": masks, "extras": _pad_extras(batch)}


def _pad_extras(batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {name: pad_stack([item["extras"][name] for item in batch])[0]
            for name in batch[0]["extras"]}


class LayoutBatchSampler(Sampler[list[int]]):
    """Batches of indices that share one layout: use as DataLoader(batch_sampler=...).

    Args:
        dataset: a ZooDataset (its `row_layouts` gives each row's layout key).
        batch_size: rows per batch (the last batch of a layout may be smaller).
        shuffle: shuffle rows within each layout and the order of batches, per epoch.
        drop_last: drop each layout's last incomplete batch.
        seed: base seed of the shuffle; epoch e draws from seed + e (see `set_epoch`).
    """

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: {batch_size!r} is not allowed; expected an integer "
                             f">= 1")
        self.keys = list(dataset.row_layouts)
        self.batch_size, self.shuffle, self.drop_last, self.seed = (batch_size, shuffle,
                                                                     drop_last, seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle differently in epoch `epoch` (the same for the same seed and epoch)."""
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = []
        for key in sorted(set(self.keys)):
            rows = torch.tensor([i for i, k in enumerate(self.keys) if k == key])
            if self.shuffle:
                rows = rows[torch.randperm(len(rows), generator=generator)]
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size].tolist()
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def window(item: dict[str, Any], size: int, generator: torch.Generator) -> dict[str, Any]:
    """SANE's WindowCutter: `size` consecutive tokens from a random start (weights, mask,
    positions); a sequence shorter than `size` is padded with masked zero tokens. The window
    leaves out "extras" (token_layout="sane": what no token holds, e.g. BatchNorm with
    ignore_bn), whose shapes differ between widths, so windows of every width stack."""
    item = {k: v for k, v in item.items() if k != "extras"}
    tokens = item["weights"]
    count = tokens.shape[0]
    if count > size:
        start = int(torch.randint(0, count - size + 1, (1,), generator=generator))
        return {**item, **{k: item[k][start:start + size] for k in ("weights", "mask",
                                                                      "positions")}}
    extra = size - count
    return {**item, "weights": torch.cat([tokens, tokens.new_zeros(extra, tokens.shape[1])]),
            "mask": torch.cat([item["mask"], item["mask"].new_zeros(extra, tokens.shape[1])]),
            "positions": torch.cat([item["positions"],
                                    item["positions"].new_zeros(extra, 3)])}
