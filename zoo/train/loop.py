"""The training loop every trainer shares: resume or keep epoch 0, then per epoch train, keep a
checkpoint at the kept epochs and save the state when due. What an epoch does (a single model's
eager or graphed step, a stacked population's) is the run's own."""

from __future__ import annotations

from typing import Any, Collection, Protocol

from zoo.train.state import Autosave, Entry, StateStore, Tensors


class Run(Protocol):
    """One training run as the loop drives it."""

    def resume(self, store: StateStore | None) -> int | None:
        """Restore the state saved in `store`: the last epoch it finished, None if none is."""

    def epoch(self) -> None:
        """Train one epoch."""

    def checkpoint(self, epoch: int) -> None:
        """Keep the model(s) as they are at the end of `epoch`."""

    def pack(self) -> tuple[Tensors, dict[str, Any], list[Entry]]:
        """Everything to save now: tensors, scalars, the kept checkpoints as entries."""


def run_epochs(run: Run, epochs: int, kept: Collection[int], store: StateStore | None) -> None:
    """Train `run` to `epochs`, from where `store` left it; checkpoints at `kept` epochs."""
    finished = run.resume(store)
    if finished is None and 0 in kept:
        run.checkpoint(0)
    autosave = Autosave(store)
    for epoch in range((finished or 0) + 1, epochs + 1):
        run.epoch()
        if epoch in kept:
            run.checkpoint(epoch)
        autosave(epoch, epoch in kept, run.pack)
