"""ZooStream: a zoo's rows as a torch IterableDataset that DataLoader workers and distributed
ranks share, each row read once per epoch in all, in a seeded order that resumes mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from loaders.dataset import Item, ZooDataset

BUFFER_ROWS = 64  # default shuffle buffer: rows held back to mix neighbouring row groups


class ZooStream(IterableDataset):
    """The rows of a zoo folder as a stream (Parquet row groups and per-model files read in
    turn, through ZooDataset's lazy reader): items are exactly ZooDataset's items.

    Each epoch the read units (row groups, per-model files) are put in an order drawn from
    (seed, epoch), cut into equal contiguous blocks of rows, one per (rank, DataLoader
    worker), and each block is mixed through a shuffle buffer of `buffer_size` rows: every
    row is seen once per epoch over all ranks and workers, the same seed gives the same
    order, another epoch (`set_epoch`) another. `state_dict()` / `load_state_dict()`
    resume an iteration in the main process after the items it yielded; `StreamLoader`
    resumes a DataLoader after k batches.

    Args:
        root: the zoo folder.
        seed: seed of the order (also set it on every rank alike).
        shuffle: False reads units and rows in folder order (buffer unused).
        buffer_size: rows of the shuffle buffer (the decode cache should hold as many).
        rank, world_size: this process's place among distributed ranks; by default from
            torch.distributed when it is initialised, else 0 of 1.
        in_memory: as ZooDataset's, but False by default (rows read when streamed).
        **options: ZooDataset's filters, representation, targets, normalisation,
            augmentation, splits and cache_bytes.
    """

    def __init__(self, root: str | Path, *, seed: int = 0, shuffle: bool = True,
                 buffer_size: int = BUFFER_ROWS, rank: int | None = None,
                 world_size: int | None = None, in_memory: bool | None = False,
                 **options: Any) -> None:
        for name, value, low in (("seed", seed, 0), ("buffer_size", buffer_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: {value!r} is not allowed; expected an integer >= "
                                 f"{low}")
        self.rank, self.world_size = _place(rank, world_size)
        self.seed, self.shuffle, self.buffer_size = seed, shuffle, buffer_size
        self.dataset = ZooDataset(root, in_memory=in_memory, **options)
        self.units = self.dataset.units()
        # shared with workers (persistent ones too): items to skip, set by load_state_dict
        self._resume = torch.zeros(3, dtype=torch.int64).share_memory_()  # batches, size, drop
        self._skip_items = 0
        self._yielded = 0

    def __len__(self) -> int:
        """Rows this rank reads in an epoch (over all its DataLoader workers)."""
        rows = len(self.dataset)
        return (self.rank + 1) * rows // self.world_size - self.rank * rows // self.world_size

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch`'s order (and augmentation draws) at the next iteration."""
        self.dataset.set_epoch(epoch)

    def order(self, worker: int = 0, workers: int = 1) -> np.ndarray:
        """The row indices one (rank, worker) yields this epoch, in order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        units = [self.units[u] for u in (rng.permutation(len(self.units)) if self.shuffle
                                         else range(len(self.units)))]
        rows = np.concatenate(units) if units else np.zeros(0, np.int64)
        consumers, consumer = self.world_size * workers, self.rank * workers + worker
        block = rows[consumer * len(rows) // consumers:(consumer + 1) * len(rows) // consumers]
        if not self.shuffle:
            return block
        return _buffered(block, self.buffer_size,
                         np.random.default_rng([self.seed, self.epoch, consumer, consumers]))

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        skip, role = (self._skip_items if info is None else 0), worker
        batches, batch_size, drop_last = (int(v) for v in self._resume)
        if batches:  # worker w continues the block of the worker w places after the next one
            done, turn = _batches_done(batches, batch_size, bool(drop_last),
                                       [len(self.order(w, workers)) for w in range(workers)])
            role = (turn + worker) % workers
            skip = min(done[role] * batch_size, len(self.order(role, workers)))
        self._skip_items, self._yielded = 0, skip
        indices = self.order(role, workers)[skip:].tolist()
        step = batch_size or 1  # a StreamLoader's batches: read at once, into one tensor
        for start in range(0, len(indices), step):
            items = self.dataset.__getitems__(indices[start:start + step]) if step > 1 else \
                [self.dataset[indices[start]]]
            for item in items:
                self._yielded += 1
                yield item

    def state_dict(self) -> dict[str, int]:
        """Where an iteration in this process stands (epoch, items yielded), to resume."""
        return {"seed": self.seed, "epoch": self.epoch, "items": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from `state` (of state_dict) at the next iteration: the same epoch and
        order, less the items already yielded."""
        if state["seed"] != self.seed:
            raise ValueError(f"load_state_dict: seed {state['seed']} differs from this "
                             f"stream's {self.seed}; the order would not be the same")
        self.set_epoch(int(state["epoch"]))
        self._skip_items = int(state["items"])

    def resume_after(self, batches: int, batch_size: int, drop_last: bool) -> None:
        """The next iteration (each DataLoader worker) skips what a DataLoader of this
        batch size already handed out in `batches` batches this epoch (0: nothing)."""
        self._resume[:] = torch.tensor([batches, batch_size, int(drop_last)])


class StreamLoader(DataLoader):
    """A DataLoader over a ZooStream that counts the batches it hands out, so `state_dict()`
    / `load_state_dict()` resume mid-epoch with the same remaining batches (batches go
    round-robin over workers, in order; a resumed iteration skips, unread, what was seen)."""

    def __init__(self, stream: ZooStream, **options: Any) -> None:
        if options.get("in_order") is False:
            raise ValueError("in_order: False is not allowed; resuming needs the workers' "
                             "batches in turn")
        super().__init__(stream, **options)
        self.stream, self.batches = stream, 0

    def __iter__(self) -> Iterator[Any]:
        self.stream.resume_after(self.batches, self.batch_size or 1, self.drop_last)
        for batch in super().__iter__():
            self.batches += 1
            yield batch
        self.batches = 0
        self.stream.resume_after(0, 0, False)

    def state_dict(self) -> dict[str, int]:
        """The epoch and the batches handed out in it."""
        return {"seed": self.stream.seed, "epoch": self.stream.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at `state`'s epoch after its batches, at the next iteration."""
        if state["seed"] != self.stream.seed:
            raise ValueError(f"load_state_dict: seed {state['seed']} differs from this "
                             f"stream's {self.stream.seed}; the order would not be the same")
        self.stream.set_epoch(int(state["epoch"]))
        self.batches = int(state["batches"])


def _place(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): as given, else torch.distributed's, else (0, 1)."""
    import torch.distributed as dist

    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, world_size)) \
            or not 0 <= rank < world_size:
        raise ValueError(f"rank, world_size: {rank!r}, {world_size!r} is not allowed; "
                         f"expected integers with 0 <= rank < world_size")
    return rank, world_size


def _buffered(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` through a shuffle buffer of `size`: each arriving row replaces (and releases) a
    random held one once the buffer is full; the rest leave in random order at the end."""
    held, out = [], []
    for row in rows:
        if len(held) < size:
            held.append(row)
            continue
        slot = int(rng.integers(size))
        out.append(held[slot])
        held[slot] = row
    out.extend(held[i] for i in rng.permutation(len(held)))
    return np.array(out, dtype=np.int64)


def _batches_done(batches: int, batch_size: int, drop_last: bool, lengths: list[int]
                  ) -> tuple[list[int], int]:
    """Batches each worker (of `lengths` items) had handed out when a DataLoader had handed
    out `batches`, and the worker whose turn came next: batches come from the workers in
    turn, a worker leaving the turn once it is exhausted."""
    counts = [n // batch_size if drop_last else -(-n // batch_size) for n in lengths]
    done, turn = [0] * len(lengths), 0
    for _ in range(min(batches, sum(counts))):
        while done[turn] >= counts[turn]:
            turn = (turn + 1) % len(lengths)
        done[turn] += 1
        turn = (turn + 1) % len(lengths)
    return done, turn
