"""Random CIFAR-10 / CIFAR-100 binary files in the official layout, for timing and memory runs
of the paper's ResNet specs where the real data is not at hand (e.g. a rented GPU).

    python -m benchmarks.synthetic_cifar DIR [--name cifar10|cifar100] [--train N] [--test N]
    zoo generate resnet18-cifar10 --data-root DIR --out zoo-r18 --gpus-per-task auto

Records are `label bytes + 3072 pixel bytes` (CIFAR-100: coarse, then fine label), written into
DIR/<the folder the official archive extracts to>; labels cycle through the classes. The data
are noise: use them to measure speed and memory, never accuracy or phases.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from zoo.datasets.folders import CIFAR10, CIFAR100, PIXELS, CifarFormat

FORMATS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def records(fmt: CifarFormat, count: int, rng: np.random.Generator, first: int = 0) -> bytes:
    """`count` records of `fmt`: label byte(s) (record i of the set: class i mod classes,
    counting from record `first`), then 3 x 32 x 32 random pixels."""
    labels = np.arange(first, first + count) % fmt.num_classes
    rows = np.empty((count, fmt.label_bytes + PIXELS), np.uint8)
    rows[:, :fmt.label_bytes] = labels[:, None] % 256  # CIFAR-100's coarse byte: any value
    rows[:, fmt.label_bytes:] = rng.integers(0, 256, (count, PIXELS), dtype=np.uint8)
    return rows.tobytes()


def write_synthetic(root: Path, name: str = "cifar10", train: int = 50_000,
                    test: int = 10_000, seed: int = 0) -> Path:
    """Write the files of `name` under `root`; returns the folder that holds them."""
    fmt, rng = FORMATS[name], np.random.default_rng(seed)
    folder = Path(root) / fmt.subfolder
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-train // len(fmt.train_files))
    for index, file in enumerate(fmt.train_files):
        count = max(0, min(per_file, train - index * per_file))
        (folder / file).write_bytes(records(fmt, count, rng, index * per_file))
    (folder / fmt.test_file).write_bytes(records(fmt, test, rng))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to pass to zoo generate --data-root")
    parser.add_argument("--name", choices=sorted(FORMATS), default="cifar10")
    parser.add_argument("--train", type=int, default=50_000, help="train records")
    parser.add_argument("--test", type=int, default=10_000, help="test records")
    args = parser.parse_args()
    print(f"wrote {write_synthetic(args.root, args.name, args.train, args.test)}")


if __name__ == "__main__":
    main()
