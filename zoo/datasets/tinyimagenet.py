"""Tiny ImageNet (200 classes of 64x64 JPEGs) from the folder the official zip extracts to.

The labelled validation set serves as the test set (the official test images have no labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.datasets.base import DataBundle, DataInfo
from zoo.errors import DataError

NAME = "tiny-imagenet"
SUBFOLDER = "tiny-imagenet-200"
SIDE = 64
DOWNLOAD = (
    "download tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip and "
    "extract it into"
)
JPEG_SUFFIXES = (".jpeg", ".jpg")


def tiny_imagenet_folder(root: Path) -> Path:
    """root/tiny-imagenet-200, or root itself if it holds wnids.txt; checks the layout.

    Raises:
        DataError naming the missing path and what to download.
    """
    if not root.is_dir():
        raise DataError(f"{NAME}: data.root {root} is not an existing folder; {DOWNLOAD} {root}")
    folder = root / SUBFOLDER
    if not folder.is_dir() and (root / "wnids.txt").is_file():
        folder = root
    expected = [
        (folder / "wnids.txt", "file"),
        (folder / "train", "folder"),
        (folder / "val" / "images", "folder"),
        (folder / "val" / "val_annotations.txt", "file"),
    ]
    for path, kind in expected:
        exists = path.is_file() if kind == "file" else path.is_dir()
        if not exists:
            raise DataError(f"{NAME}: {kind} {path} not found; {DOWNLOAD} {root}")
    return folder


def read_wnids(folder: Path) -> list[str]:
    """The class ids, sorted: class k is the k-th wnid in sorted order."""
    path = folder / "wnids.txt"
    wnids = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    if not wnids:
        raise DataError(f"{NAME}: {path} lists no class ids")
    return wnids


def _jpegs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in JPEG_SUFFIXES)


def train_items(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """(image, class) for train/<wnid>/images/*.JPEG, by class then file name."""
    items = []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise DataError(f"{NAME}: folder {images} not found; is the extraction complete?")
        items += [(path, label) for path in _jpegs(images)]
    return items


def val_items(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """(image, class) from val/val_annotations.txt (file<TAB>wnid<TAB>box...), by file name."""
    path = folder / "val" / "val_annotations.txt"
    label_of = {wnid: k for k, wnid in enumerate(wnids)}
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise DataError(f"{NAME}: {path} line {number} does not name a known wnid: {line!r}")
        image = folder / "val" / "images" / fields[0]
        if not image.is_file():
            raise DataError(f"{NAME}: {image} (listed in {path}) not found")
        items.append((image, label_of[fields[1]]))
    return sorted(items)


def read_images(items: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode JPEGs as RGB (some are greyscale) into one preallocated tensor.

    Returns:
        x (N, 3, 64, 64) float32 in [0, 1], y (N,) int64.
    """
    from PIL import Image, UnidentifiedImageError

    images = torch.empty(len(items), 3, SIDE, SIDE, dtype=torch.float32)
    for index, (path, _) in enumerate(items):
        try:
            with Image.open(path) as image:
                rgb = np.array(image.convert("RGB"))  # a writable copy
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{NAME}: cannot read {path} as an image: {exc}") from exc
        if rgb.shape != (SIDE, SIDE, 3):
            raise DataError(f"{NAME}: {path} is {rgb.shape[1]}x{rgb.shape[0]}, not 64x64")
        images[index] = torch.from_numpy(rgb).permute(2, 0, 1)
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return images.div_(255.0), labels


def load_tiny_imagenet(root: Path) -> DataBundle:
    """All of train (100,000 images, ~4.9 GB as float32) and val (10,000) in memory."""
    folder = tiny_imagenet_folder(root)
    wnids = read_wnids(folder)
    train = read_images(train_items(folder, wnids))
    test = read_images(val_items(folder, wnids))
    if train[0].shape[0] == 0 or test[0].shape[0] == 0:
        raise DataError(f"{NAME}: no train or val images found under {folder}")
    info = DataInfo("classification", (3, SIDE, SIDE), len(wnids))
    return DataBundle(NAME, info, train, test)
