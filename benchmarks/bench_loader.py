"""Random-access rows/s of ZooDataset against a torch.load file per checkpoint and h5py row reads.

All read the same rows (2,000 checkpoints of an MLP 40 -> 1000 -> 10: 51,010 float32,
204 kB each) from a warm page cache, in one random order, in the same run.

    python benchmarks/bench_loader.py [--rows 2000] [--width 1000]

Prints a table and writes benchmarks/results/loader.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from loaders import ZooDataset
from zoo.architectures import build
from zoo.datasets.base import DataInfo
from zoo.folder.cellresult import CellResult
from zoo.folder.record import ZooRecord
from zoo.folder.writer import ZooWriter
from zoo.layout import Layout, layout_of

ROWS_PER_CELL = 200
RESULTS = Path(__file__).parent / "results" / "loader.json"


def make_zoo(root: Path, rows: int, width: int) -> tuple[Layout, np.ndarray]:
    """A zoo folder of `rows` random checkpoints (Parquet only); returns the layout and weights."""
    with torch.device("meta"):
        model = build("mlp", width=width, info=DataInfo("classification", (40,), 10),
                      args={"depth": 1})
    layout = layout_of(model, "mlp", width, {"depth": 1})
    weights = np.random.default_rng(0).standard_normal((rows, layout.size), np.float32)
    writer = ZooWriter(root, "bench", formats=("parquet",))
    info = DataInfo("classification", (40,), 10)
    spec = {"data": {"name": "mnist1d"}, "seeds": list(range(10)),  # what readers check
            "load_axis": {"name": "width", "values": [width]},
            "temperature_axis": {"name": "batch_size", "values": [32]}}
    writer.start(ZooRecord(spec, "bench", "random", {}, info))
    for first in range(0, rows, ROWS_PER_CELL):
        cell = f"{first // ROWS_PER_CELL:04d}"
        models = [{"model_id": f"{cell}-{i // 10}", "cell_id": cell, "epoch": i % 10,
                   "seed": i // 10, "layout": layout.key, "num_params": layout.size,
                   "weights": weights[first + i]}
                  for i in range(min(ROWS_PER_CELL, rows - first))]
        writer.commit(CellResult(cell, models=models, layouts={layout.key: layout}))
    return layout, weights


def make_baselines(folder: Path, layout: Layout, weights: np.ndarray) -> None:
    """One torch.save file per checkpoint, and one HDF5 file holding a (rows, size) dataset."""
    import h5py

    (folder / "torch").mkdir()
    for row, flat in enumerate(weights):
        state = {k: v.clone() for k, v in layout.unflatten(flat).items()}
        torch.save(state, folder / "torch" / f"{row}.pt")
    with h5py.File(folder / "rows.h5", "w") as handle:
        handle.create_dataset("weights", data=weights)


def rate(read: Callable[[int], object], order: np.ndarray, seconds: float = 1.0) -> float:
    """Rows per second of `read` over `order`, repeated until `seconds` have passed."""
    for index in order[:200]:  # warm: page cache, allocator, lazy imports
        read(int(index))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for index in order:
            read(int(index))
        count += len(order)
    return count / (time.perf_counter() - start)


def measure(folder: Path, rows: int, order: np.ndarray) -> tuple[dict[str, float], float]:
    """Rows/s of each reader, and ZooDataset's load time (read, checksum, copy) in seconds."""
    import h5py

    start = time.perf_counter()
    flat = ZooDataset(folder / "zoo", split="all", epochs="all")
    load_seconds = time.perf_counter() - start
    others = {name: ZooDataset(folder / "zoo", split="all", epochs="all", representation=name)
              for name in ("state_dict", "layers", "tokens", "stats")}
    windows = ZooDataset(folder / "zoo", split="all", epochs="all", representation="tokens",
                         window=64)
    assert len(flat) == rows
    results = {}
    with h5py.File(folder / "rows.h5", "r") as handle:
        dataset = handle["weights"]
        results["h5py one-row read"] = rate(lambda i: dataset[i], order)
    results["torch.load file per row"] = rate(
        lambda i: torch.load(folder / "torch" / f"{i}.pt", weights_only=True), order)
    results["ZooDataset flat"] = rate(flat.__getitem__, order)
    results["ZooDataset flat + clone"] = rate(lambda i: flat[i]["weights"].clone(), order)
    for name, dataset in others.items():
        results[f"ZooDataset {name}"] = rate(dataset.__getitem__, order)
    results["ZooDataset tokens, window 64"] = rate(windows.__getitem__, order)
    return results, load_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="checkpoints to store and read")
    parser.add_argument("--width", type=int, default=1000,
                        help="hidden units of the MLP (1000: 51,010 values, 204 kB a row)")
    options = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as temporary:
        folder = Path(temporary)
        layout, weights = make_zoo(folder / "zoo", options.rows, options.width)
        make_baselines(folder, layout, weights)
        order = np.random.default_rng(1).permutation(options.rows)
        results, load_seconds = measure(folder, options.rows, order)
    baseline = results["torch.load file per row"]
    print(f"{options.rows} rows of {layout.size} float32 ({layout.size * 4 / 1e3:.0f} kB), "
          f"random order, warm cache; ZooDataset load {load_seconds:.2f} s")
    print(f"{'reader':<28}{'rows/s':>12}{'× per-file':>12}")
    for name, value in results.items():
        print(f"{name:<28}{value:>12,.0f}{value / baseline:>12.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "rows": options.rows, "values_per_row": layout.size, "bytes_per_row": layout.size * 4,
        "zoo_dataset_load_seconds": load_seconds, "rows_per_second": results,
        "speedup_over_per_file": {k: v / baseline for k, v in results.items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": 1},
    }, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
