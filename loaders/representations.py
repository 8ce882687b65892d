"""Weight representations for weight-space learners, each with an exact inverse.

- flat: one float32 vector in layout order (Unterthiner et al.).
- state_dict: name -> tensor, views of the flat vector.
- layers: NFN-style (weight (1, out, in, *kernel), bias (1, out)) per layer; a layer without a
  bias gets zeros; every other entry (BatchNorm, scalars) is kept in `extras` by name.
- tokens: SANE-style: each output neuron's incoming weights, then its bias and per-channel
  norm values, as one row; rows are cut into tokens of `token_size` values (0: the widest
  row), zero-padded, with a mask of real values and positions (token index, layer, neuron).
  token_layout="sane" gives SANE's own layers instead (a BatchNorm as three layers of its own,
  `ignore_bn`; loaders.sanetokens); what no token holds rides under "extras".
- Integer buffers (BatchNorm's num_batches_tracked, a step counter) are left out of flat,
  layers and tokens by default (`make_encoder(counters=True)` keeps them); items then carry
  them under "buffers" so decode is exact. state_dict and load_model keep everything.
- stats: Unterthiner et al.'s per-layer statistics: mean, variance and the 0/25/50/75/100 %
  quantiles of every float entry (each layer's weight and bias, norm parameters), layout
  order; not invertible. For one family and depth the vector has the same length at every
  width, so rows of several widths stack.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from loaders.sanetokens import TOKEN_LAYOUTS, sane_rows
from zoo.layout import DTYPES, Entry, Layout

REPRESENTATIONS = ("flat", "layers", "tokens", "state_dict", "stats")
STATISTICS = ("mean", "var", "q0", "q25", "q50", "q75", "q100")
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Group:
    """A layer for tokens: a weight of ndim >= 2 (or a standalone entry) and its per-unit rows."""

    main: Entry
    attached: tuple[Entry, ...]  # 1-D entries of `rows` values: bias, BatchNorm, ...

    @property
    def rows(self) -> int:
        return self.main.shape[0] if len(self.main.shape) >= 2 else 1


def neuron_groups(layout: Layout) -> list[Group]:
    """Split a layout into layers: each ndim >= 2 weight takes the 1-D float entries that follow
    it with one value per output unit; any other entry stands alone as one row."""
    groups: list[Group] = []
    for entry in layout.entries:
        last = groups[-1] if groups else None
        attaches = (last is not None and len(last.main.shape) >= 2 and len(entry.shape) == 1
                    and entry.shape[0] == last.rows and entry.dtype != "int64")
        if attaches:
            groups[-1] = Group(last.main, (*last.attached, entry))
        else:
            groups.append(Group(entry, ()))
    return groups


class Flat:
    """The stored vector itself."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def encode(self, flat: torch.Tensor) -> dict[str, Any]:
        return {"weights": flat}

    def decode(self, item: dict[str, Any]) -> torch.Tensor:
        return item["weights"]


class StateDict:
    """name -> tensor, one slice and one reshape each."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def encode(self, flat: torch.Tensor) -> dict[str, Any]:
        return {"weights": {e.name: _cast(flat[e.offset:e.offset + e.size].view(e.shape), e)
                            for e in self.layout.entries}}

    def decode(self, item: dict[str, Any]) -> torch.Tensor:
        return torch.cat([item["weights"][e.name].reshape(-1) for e in self.layout.entries])


class Layers:
    """NFN-style per-layer (weight, bias) with a leading channel axis; the rest in `extras`."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        names = {e.name: e for e in layout.entries}
        self.layers: list[tuple[Entry, Entry | None]] = []
        taken: set[str] = set()
        for entry in layout.entries:
            if len(entry.shape) >= 2:
                bias = names.get(entry.name.removesuffix("weight") + "bias")
                bias = bias if bias is not None and bias.shape == entry.shape[:1] else None
                self.layers.append((entry, bias))
                taken |= {entry.name} | ({bias.name} if bias else set())
        self.extras = [e for e in layout.entries if e.name not in taken]

    def encode(self, flat: torch.Tensor) -> dict[str, Any]:
        def part(e: Entry) -> torch.Tensor:
            return flat[e.offset:e.offset + e.size].view(1, *e.shape)

        layers = [(part(w), part(b) if b else flat.new_zeros(1, w.shape[0]))
                  for w, b in self.layers]
        return {"weights": layers, "extras": {e.name: part(e)[0] for e in self.extras}}

    def decode(self, item: dict[str, Any]) -> torch.Tensor:
        values: dict[str, torch.Tensor] = dict(item["extras"])
        for (w, b), (weight, bias) in zip(self.layers, item["weights"]):
            values[w.name] = weight
            if b is not None:
                values[b.name] = bias
        return torch.cat([values[e.name].reshape(-1) for e in self.layout.entries])


class Tokens:
    """SANE-style neuron tokens: one gather from the flat vector (plus a zero for padding).

    `rows` gives each layer's (units, values per unit) positions in the flat vector (default:
    `neuron_rows`, every entry in some row). Given `rows` (token_layout="sane"), items carry
    "extras" (name -> tensor: the entries in no row) so that decode is exact. token_size 0:
    the widest row (SANE's tokensize=0), so that no row is cut."""

    def __init__(self, layout: Layout, token_size: int,
                 rows: list[np.ndarray] | None = None) -> None:
        self.layout = layout
        layers = neuron_rows(layout) if rows is None else rows
        self.token_size = token_size = token_size or widest_row(layers)
        index, positions = [], []
        for number, unit_rows in enumerate(layers):
            chunks = -(-unit_rows.shape[1] // token_size)
            padded = np.full((unit_rows.shape[0], chunks * token_size), layout.size, np.int64)
            padded[:, :unit_rows.shape[1]] = unit_rows
            index.append(padded.reshape(-1, token_size))
            neuron = np.repeat(np.arange(unit_rows.shape[0]), chunks)
            positions.append(np.stack([np.zeros_like(neuron), np.full_like(neuron, number),
                                       neuron], axis=1))
        self.index = torch.from_numpy(np.concatenate(index or [np.zeros((0, token_size), int)]))
        self.mask = self.index < layout.size
        self.positions = torch.from_numpy(np.concatenate(positions or [np.zeros((0, 3), int)]))
        self.positions[:, 0] = torch.arange(len(self.positions))
        covered = np.zeros(layout.size + 1, bool)
        covered[self.index.numpy()] = True
        self.extras = [e for e in layout.entries if e.size and not covered[e.offset]]
        self.with_extras = rows is not None

    def encode(self, flat: torch.Tensor) -> dict[str, Any]:
        padded = torch.cat([flat, flat.new_zeros(1)])
        tokens = padded.index_select(0, self.index.view(-1)).view(self.index.shape)  # 4x [index]
        item = {"weights": tokens, "mask": self.mask, "positions": self.positions}
        if self.with_extras:
            item["extras"] = {e.name: flat[e.offset:e.offset + e.size].view(e.shape)
                              for e in self.extras}
        return item

    def decode(self, item: dict[str, Any]) -> torch.Tensor:
        flat = item["weights"].new_empty(self.layout.size)
        flat[self.index[self.mask]] = item["weights"][self.mask]
        for e in self.extras:
            flat[e.offset:e.offset + e.size] = item["extras"][e.name].reshape(-1)
        return flat


def neuron_rows(layout: Layout) -> list[np.ndarray]:
    """Our token layout: per `neuron_groups` layer, each unit's weights, then its attached
    values (bias, BatchNorm's weight, bias and running statistics) as one row."""
    return [_row_index(group) for group in neuron_groups(layout)]


def widest_row(rows: list[np.ndarray]) -> int:
    """Values in the longest row (the automatic token size)."""
    return max((r.shape[1] for r in rows), default=1)


class Stats:
    """Per-entry statistics of the flat vector (see `statistics`)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.names = [f"{e.name}.{s}" for e in stats_entries(layout) for s in STATISTICS]

    def encode(self, flat: torch.Tensor) -> dict[str, Any]:
        return {"weights": torch.from_numpy(statistics(flat.numpy()[None], self.layout)[0])}

    def decode(self, item: dict[str, Any]) -> torch.Tensor:
        raise ValueError("representation 'stats' is not invertible; use 'flat' to decode")


def stats_entries(layout: Layout) -> list[Entry]:
    """The entries that `statistics` describes: every float entry, layout order."""
    return [e for e in layout.entries if e.dtype != "int64"]


def statistics(rows: np.ndarray, layout: Layout, chunk: int = 256) -> np.ndarray:
    """(rows, 7 × float entries) float32: mean, var (ddof 0), quantiles 0/25/50/75/100 %
    (linear) of each entry, vectorised over `chunk` rows at a time (bounded memory);
    non-finite values give NaN."""
    entries = stats_entries(layout)
    out = np.empty((len(rows), len(STATISTICS) * len(entries)), np.float32)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        for number, entry in enumerate(entries):
            block = part[:, entry.offset:entry.offset + entry.size].astype(np.float64)
            quantiles = np.quantile(block, QUANTILES, axis=1)  # (5, rows)
            columns = slice(number * len(STATISTICS), (number + 1) * len(STATISTICS))
            out[start:start + chunk, columns] = np.stack(
                [block.mean(axis=1), block.var(axis=1), *quantiles], axis=1)
    return out


def _cast(tensor: torch.Tensor, entry: Entry) -> torch.Tensor:
    """Integer buffers (num_batches_tracked) back to their stored dtype; floats untouched."""
    return tensor if entry.dtype == "float32" else tensor.to(DTYPES[entry.dtype])


def _row_index(group: Group) -> np.ndarray:
    """Positions in the flat vector of each unit's values: weights first, then attached ones."""
    main = group.main
    columns = [main.offset + np.arange(main.size).reshape(group.rows, -1)]
    columns += [e.offset + np.arange(e.size).reshape(-1, 1) for e in group.attached]
    return np.concatenate(columns, axis=1)


class WithoutCounters:
    """An encoder of the layout without its integer buffers (BatchNorm's num_batches_tracked:
    the step count, a shortcut to epoch and batch size, not a learned value); the counters
    ride along under "buffers" (name -> values) so that decode stays exact."""

    def __init__(self, layout: Layout, make: Any) -> None:
        self.layout = layout
        kept = [e for e in layout.entries if e.dtype != "int64"]
        self.counters = [e for e in layout.entries if e.dtype == "int64"]
        self.kept = torch.from_numpy(np.concatenate(
            [np.arange(e.offset, e.offset + e.size) for e in kept]))
        self.inner = make(without_counters(layout))

    def encode(self, flat: torch.Tensor) -> dict[str, Any]:
        item = self.inner.encode(flat.index_select(0, self.kept))
        item["buffers"] = {e.name: flat[e.offset:e.offset + e.size] for e in self.counters}
        return item

    def decode(self, item: dict[str, Any]) -> torch.Tensor:
        kept = self.inner.decode(item)
        flat = kept.new_empty(self.layout.size)
        flat[self.kept] = kept
        for e in self.counters:
            flat[e.offset:e.offset + e.size] = item["buffers"][e.name].reshape(-1)
        return flat


def without_counters(layout: Layout) -> Layout:
    """`layout` without its integer buffers, the other entries packed from offset 0."""
    kept = [e for e in layout.entries if e.dtype != "int64"]
    offsets = np.cumsum([0] + [e.size for e in kept])
    return replace(layout, entries=tuple(replace(e, offset=int(o))
                                         for e, o in zip(kept, offsets)))


Encoder = Flat | StateDict | Layers | Tokens | Stats | WithoutCounters


def make_encoder(representation: str, layout: Layout, token_size: int = 64,
                 counters: bool = False, token_layout: str = "neurons",
                 ignore_bn: bool = False) -> Encoder:
    """The encoder of `representation` for one layout. Integer buffers (counters such as
    num_batches_tracked) are left out of flat, layers and tokens unless `counters` (then
    under "buffers"); state_dict keeps every entry, stats describes float entries only.
    Tokens: `token_layout` "neurons" (ours: a BatchNorm's values join its conv's rows) or
    "sane" (SANE's layers, `ignore_bn` as in SANE; see loaders.sanetokens); token_size 0 is
    the widest row."""
    check_token_options(token_size, token_layout, ignore_bn)

    def tokens(lay: Layout) -> Tokens:
        rows = sane_rows(lay, ignore_bn) if token_layout == "sane" else None
        return Tokens(lay, token_size, rows)

    makers = {"flat": Flat, "state_dict": StateDict, "layers": Layers, "tokens": tokens,
              "stats": Stats}
    if representation not in makers:
        raise ValueError(f"representation: {representation!r} is not allowed; expected one "
                         f"of {', '.join(REPRESENTATIONS)}")
    make = makers[representation]
    has_counters = any(e.dtype == "int64" for e in layout.entries)
    if counters or not has_counters or representation in ("state_dict", "stats"):
        return make(layout)
    return WithoutCounters(layout, make)


def token_rows(layout: Layout, token_layout: str = "neurons", ignore_bn: bool = False,
               counters: bool = False) -> list[np.ndarray]:
    """The rows `make_encoder("tokens", ...)` cuts into tokens (positions in the vector it
    tokenizes: without counters unless `counters`)."""
    layout = layout if counters else without_counters(layout)
    return sane_rows(layout, ignore_bn) if token_layout == "sane" else neuron_rows(layout)


def check_token_options(token_size: int, token_layout: str, ignore_bn: bool) -> None:
    """ValueError naming the option unless token_size >= 0 (0: automatic), token_layout is
    one of TOKEN_LAYOUTS and ignore_bn a bool (True only with "sane")."""
    if not isinstance(token_size, int) or isinstance(token_size, bool) or token_size < 0:
        raise ValueError(f"token_size: {token_size!r} is not allowed; expected an integer >= 1, "
                         f"or 0 for the widest row")
    if token_layout not in TOKEN_LAYOUTS:
        raise ValueError(f"token_layout: {token_layout!r} is not allowed; expected one of "
                         f"{', '.join(map(repr, TOKEN_LAYOUTS))}")
    if not isinstance(ignore_bn, bool) or (ignore_bn and token_layout != "sane"):
        raise ValueError(f"ignore_bn: {ignore_bn!r} is not allowed with token_layout "
                         f"{token_layout!r}; expected a bool, True only with 'sane'")
