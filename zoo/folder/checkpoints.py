"""Per-model HDF5 checkpoint files: checkpoints too large for a Parquet row.

`hdf5/models/<model_id>_<token>.h5` holds one chunked dataset per layout entry,
`/weights/<name>` of shape (kept epochs, *shape) float32 with one chunk per epoch, and
`/epoch` (kept epochs,). The models row holds the file, the index along the first axis and
the sha256 of the checkpoint's flat float32 bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import IntegrityError, ZooFolderError
from zoo.folder.hdf5 import Expected, open_checked
from zoo.folder.names import confined
from zoo.layout import Layout
from zoo.printable import printable

CHECKPOINTS_FORMAT = "checkpoints"  # the manifest's format of a per-model file


def flat_sha256(flat: np.ndarray) -> str:
    """sha256 of a flat checkpoint's float32 little-endian bytes."""
    return hashlib.sha256(np.ascontiguousarray(flat, dtype="<f4").tobytes()).hexdigest()


class CheckpointFile:
    """Append one model's checkpoints, epoch after epoch, to a new HDF5 file."""

    def __init__(self, path: Path, layout: Layout, model_id: str) -> None:
        import h5py

        self.path, self.layout, self.count = path, layout, 0
        self.handle = h5py.File(path, "w")
        self.handle.attrs["layout"] = layout.key
        self.handle.attrs["model_id"] = model_id
        for name, (shape, dtype) in checkpoint_datasets(layout).items():  # one chunk an epoch
            chunks = (1, *shape[1:]) if name.startswith("weights/") else True
            self.handle.create_dataset(name, shape=(0, *shape[1:]), maxshape=shape,
                                       chunks=chunks, dtype=dtype)

    def append(self, epoch: int, flat: np.ndarray) -> int:
        """Store `flat` (layout.size,) as the next checkpoint; returns its index."""
        index, self.count = self.count, self.count + 1
        self.handle["epoch"].resize((self.count,))
        self.handle["epoch"][index] = epoch
        for entry in self.layout.entries:
            dataset = self.handle["weights"][entry.name]
            dataset.resize((self.count, *entry.shape))
            dataset[index] = flat[entry.offset:entry.offset + entry.size].reshape(entry.shape)
        return index

    def close(self) -> None:
        self.handle.close()


def checkpoint_datasets(layout: Layout) -> Expected:
    """What `CheckpointFile` makes for `layout`: every dataset's shape (n: kept epochs)."""
    return {"epoch": ((None,), "<i8"),
            **{f"weights/{e.name}": ((None, *e.shape), "<f4") for e in layout.entries}}


def read_checkpoint(root: Path, relative: str, index: int, sha256: str | None,
                    layout: Layout, *, model_id: str | None = None,
                    epoch: int | None = None) -> np.ndarray:
    """Checkpoint `index` of the per-model file `relative` as a flat float32 vector, checked
    against the row's sha256 and, when given, the row's model id and epoch (IntegrityError
    names the file); the file's structure is checked first (`open_checked`)."""
    path = confined(Path(root), relative)
    if not path.exists():
        raise IntegrityError(f"{path}: checkpoint file named by a models row is missing")
    flat = np.empty(layout.size, np.float32)
    with open_checked(path, checkpoint_datasets(layout), ("layout", "model_id")) as handle:
        count = handle["epoch"].shape[0]
        if isinstance(index, bool) or not 0 <= index < count:
            raise ZooFolderError(f"{path}: weights_index {index} is out of range; the file "
                                 f"holds checkpoints 0 to {count - 1}")
        _check_owner(path, handle, layout, model_id, epoch, index)
        for entry in layout.entries:
            values = handle["weights"][entry.name][index]
            flat[entry.offset:entry.offset + entry.size] = np.asarray(values).reshape(-1)
    if sha256 is not None and flat_sha256(flat) != sha256:
        raise IntegrityError(f"{path}: checkpoint {index} does not match its sha256; the file "
                             f"is corrupted or was modified")
    return flat


def _check_owner(path: Path, handle: Any, layout: Layout, model_id: str | None,
                 epoch: int | None, index: int) -> None:
    """The file's layout, model and the epoch at `index` against the row that names them."""
    if handle.attrs.get("layout") != layout.key:
        raise IntegrityError(f"{path}: holds layout {printable(handle.attrs.get('layout'))}; "
                             f"the row's is {layout.key}")
    if model_id is not None and handle.attrs.get("model_id") != model_id:
        raise IntegrityError(f"{path}: holds model {printable(handle.attrs.get('model_id'))}; "
                             f"the row's is {model_id}")
    stored = int(handle["epoch"][index])
    if epoch is not None and stored != epoch:
        raise IntegrityError(f"{path}: checkpoint {index} is epoch {stored}; the row's epoch "
                             f"is {epoch}")
