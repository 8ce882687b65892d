"""The training loop every trainer shares: resume (or discard a state that fails its checks
and start afresh) or keep epoch 0, then per epoch train, keep a checkpoint at the kept epochs and
save the state when due. What an epoch does (a single model's eager or graphed step, a stacked
population's) is the run's own."""

from __future__ import annotations

from typing import Any, Callable, Collection, Protocol, TypeVar

from zoo.errors import TrainStateError
from zoo.train.state import Autosave, Entry, StateStore, Tensors, discard


class Run(Protocol):
    """One training run as the loop drives it."""

    def resume(self, store: StateStore | None) -> int | None:
        """Restore the state saved in `store`: the last epoch it finished, None if none is;
        TrainStateError when the state fails a check or does not fit (the run is then
        half-restored and thrown away)."""

    def epoch(self) -> None:
        """Train one epoch."""

    def checkpoint(self, epoch: int) -> None:
        """Keep the model(s) as they are at the end of `epoch`."""

    def pack(self) -> tuple[Tensors, dict[str, Any], list[Entry]]:
        """Everything to save now: tensors, scalars, the kept checkpoints as entries."""


R = TypeVar("R", bound=Run)


def run_epochs(make: Callable[[], R], epochs: int, kept: Collection[int],
               store: StateStore | None) -> tuple[R, str | None]:
    """Train the run `make()` builds to `epochs`, from where `store` left it; checkpoints at
    `kept` epochs. A state that fails its checks is discarded and a new run starts from
    scratch. Returns the run and the line saying a state was discarded (None: none was)."""
    run, note = make(), None
    try:
        finished = run.resume(store)
    except TrainStateError as error:
        assert store is not None  # without a store nothing is resumed
        note = discard(store, error)
        run, finished = make(), None
    if finished is None and 0 in kept:
        run.checkpoint(0)
    autosave = Autosave(store)
    for epoch in range((finished or 0) + 1, epochs + 1):
        run.epoch()
        if epoch in kept:
            run.checkpoint(epoch)
        autosave(epoch, epoch in kept, run.pack)
    return run, note
