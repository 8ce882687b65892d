"""Image data sets the user has downloaded into a folder: CIFAR-10/100 (binary) and SVHN (.mat).

Nothing here downloads: a missing file raises DataError saying what to fetch and where to put
it. The CIFAR python versions are pickles and are never read; the binary versions are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.datasets.base import DataBundle, DataInfo
from zoo.errors import DataError

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarFormat:
    """One CIFAR binary version: where its files live and how a record is laid out."""

    name: str
    subfolder: str  # the folder the official archive extracts to
    train_files: tuple[str, ...]
    test_file: str
    label_bytes: int  # the class id is the last label byte (CIFAR-100: coarse, then fine)
    num_classes: int
    download: str  # what to tell a user who lacks the files


CIFAR10 = CifarFormat(
    "cifar10",
    "cifar-10-batches-bin",
    tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test_batch.bin",
    1,
    10,
    "download the CIFAR-10 binary version (cifar-10-binary.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and extract it into",
)
CIFAR100 = CifarFormat(
    "cifar100",
    "cifar-100-binary",
    ("train.bin",),
    "test.bin",
    2,
    100,
    "download the CIFAR-100 binary version (cifar-100-binary.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and extract it into",
)
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
SVHN_DOWNLOAD = (
    "download train_32x32.mat and test_32x32.mat (the cropped digits, format 2) from "
    "http://ufldl.stanford.edu/housenumbers/ and put them in"
)


def info(fmt: CifarFormat) -> DataInfo:
    return DataInfo("classification", (3, 32, 32), fmt.num_classes)


SVHN_INFO = DataInfo("classification", (3, 32, 32), 10)


def require_files(dataset: str, folder: Path, names: tuple[str, ...], advice: str) -> None:
    """DataError naming every missing file and saying what to fetch and where to put it."""
    missing = [str(folder / n) for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{dataset}: {', '.join(missing)} not found; {advice}")


def require_root(dataset: str, root: Path, advice: str) -> None:
    if not root.is_dir():
        raise DataError(f"{dataset}: data.root {root} is not an existing folder; {advice} {root}")


def cifar_folder(fmt: CifarFormat, root: Path) -> Path:
    """The folder holding the .bin files: root/<subfolder>, or root itself if they are there.

    Raises:
        DataError naming the missing files and what to download.
    """
    require_root(fmt.name, root, fmt.download)
    names = fmt.train_files + (fmt.test_file,)
    folder = root / fmt.subfolder
    if not folder.is_dir() and any((root / n).is_file() for n in names):
        folder = root
    require_files(fmt.name, folder, names, f"{fmt.download} {root}")
    return folder


def read_cifar(fmt: CifarFormat, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Records of label byte(s) + 3072 pixel bytes (1024 red, green, blue, row-major).

    Returns:
        x (N, 3, 32, 32) float32 in [0, 1], y (N,) int64.
    """
    record = fmt.label_bytes + PIXELS
    parts = []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(
                f"{fmt.name}: {path} has {raw.size} bytes, not a whole number of {record}-byte "
                "records; is it the binary version, completely extracted?"
            )
        rows = raw.reshape(-1, record)
        if int(rows[:, fmt.label_bytes - 1].max()) >= fmt.num_classes:
            raise DataError(f"{fmt.name}: {path} has a label >= {fmt.num_classes}")
        parts.append(rows)
    rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
    labels = torch.from_numpy(rows[:, fmt.label_bytes - 1].astype(np.int64))
    pixels = torch.from_numpy(np.ascontiguousarray(rows[:, fmt.label_bytes :]))
    images = pixels.reshape(-1, 3, 32, 32).to(torch.float32).div_(255.0)
    return images, labels


def load_cifar(fmt: CifarFormat, root: Path) -> DataBundle:
    folder = cifar_folder(fmt, root)
    train = read_cifar(fmt, [folder / n for n in fmt.train_files])
    test = read_cifar(fmt, [folder / fmt.test_file])
    return DataBundle(fmt.name, info(fmt), train, test)


def svhn_folder(root: Path) -> Path:
    require_root("svhn", root, SVHN_DOWNLOAD)
    require_files("svhn", root, SVHN_FILES, f"{SVHN_DOWNLOAD} {root}")
    return root


def read_svhn(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """X (32, 32, 3, N) uint8 and y (N, 1) in 1..10, where 10 stands for the digit 0.

    Returns:
        x (N, 3, 32, 32) float32 in [0, 1], y (N,) int64 in 0..9.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except (ValueError, OSError, NotImplementedError, TypeError) as exc:
        raise DataError(f"svhn: cannot read {path} as a MATLAB file: {exc}") from exc
    if "X" not in mat or "y" not in mat:
        raise DataError(f"svhn: {path} lacks the variables X and y of the format-2 files")
    x, y = mat["X"], mat["y"].reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.size:
        raise DataError(
            f"svhn: {path} has X of shape {x.shape} and {y.size} labels; expected "
            "(32, 32, 3, N) and N labels"
        )
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f"svhn: {path} has labels outside 1..10")
    images = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))))
    labels = torch.from_numpy(y.astype(np.int64) % 10)
    return images.to(torch.float32).div_(255.0), labels


def load_svhn(root: Path) -> DataBundle:
    folder = svhn_folder(root)
    train = read_svhn(folder / SVHN_FILES[0])
    test = read_svhn(folder / SVHN_FILES[1])
    return DataBundle("svhn", SVHN_INFO, train, test)
