"""A worker's checkpoint spool: each kept checkpoint on disk as training produces it.

Training hands every kept checkpoint to `Spool.hand_off(model_id)` instead of holding it, so a
worker holds one checkpoint at a time; the cell's metrics and shards read them back. Files
are safetensors (no pickle) written atomically, `<folder>/<model_id>/checkpoint-<epoch>`,
through a `ZooFolder` rooted at the spool: a link inside it is refused, never followed.
A resumed run finds the checkpoints of the epochs it does not repeat, each checked against
the sha256 its training state recorded (zoo.train.state).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from zoo.errors import IntegrityError, TrainStateError, ZooFolderError
from zoo.folder.names import sha256_of
from zoo.folder.zoofolder import ZooFolder


class Spool:
    """The checkpoints of the models a worker trains, one file per (model, epoch)."""

    def __init__(self, folder: Path | ZooFolder) -> None:
        # a ZooFolder as it is: a zoo on a store spools to its state/spool prefix (StoreFolder)
        self.files = folder if isinstance(folder, ZooFolder) else ZooFolder(folder)
        self.folder = self.files.root

    def path(self, model_id: str, epoch: int) -> Path:
        return self.folder / self._name(model_id, epoch)

    @staticmethod
    def _name(model_id: str, epoch: int) -> str:
        return f"{model_id}/checkpoint-{epoch}.safetensors"

    def save(self, model_id: str, epoch: int, state: dict[str, torch.Tensor]) -> str:
        """Write one checkpoint (tensors copied to the CPU); the sha256 of the file written."""
        return write_tensors(self.files, self._name(model_id, epoch), state)

    def digest(self, model_id: str, epoch: int) -> str | None:
        """The sha256 of a spooled checkpoint's file now (None: missing, or not a regular file
        inside the spool)."""
        try:
            return sha256_of(self.files.check(self._name(model_id, epoch)))
        except (OSError, ZooFolderError, IntegrityError):
            return None

    def load(self, model_id: str, epoch: int, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """A spooled checkpoint as a state_dict in `keys` order; TrainStateError if absent."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = self.path(model_id, epoch)
        try:
            with self.files.open_read(self._name(model_id, epoch)) as handle:
                tensors = load(handle.read())
            return {k: tensors[k] for k in keys}
        except (OSError, KeyError, ValueError, SafetensorError, ZooFolderError,
                IntegrityError) as error:
            raise TrainStateError(f"{path}: spooled checkpoint unreadable ({error})") from None

    def hand_off(self, model_id: str) -> SpoolHandOff:
        """`model_id`'s checkpoints handed to this spool (a zoo.train.base.HandOff)."""
        return SpoolHandOff(self, model_id)

    def clear(self, model_ids: Iterable[str]) -> None:
        """Delete the spooled checkpoints of `model_ids`, and the folder once empty."""
        for model_id in model_ids:
            self.files.delete_tree(model_id)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def write_tensors(files: ZooFolder, relative: str, tensors: dict[str, torch.Tensor]) -> str:
    """Write `tensors` (on any device) as a safetensors file `relative` of `files`,
    atomically; the file's sha256."""
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    files.write(relative, data)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SpoolHandOff:
    """One model's checkpoints handed to a spool: hand_off(epoch, state_dict) saves one and
    gives its sha256; digest(epoch) reads a saved one's again."""

    spool: Spool
    model_id: str

    def __call__(self, epoch: int, state_dict: dict[str, torch.Tensor]) -> str:
        return self.spool.save(self.model_id, epoch, state_dict)

    def digest(self, epoch: int) -> str | None:
        return self.spool.digest(self.model_id, epoch)
