"""Zoos larger than memory: peak memory and speed of lazy random access and of streaming.

    python -m benchmarks.bench_scale [--sizes 1 4] [--widths 128 256 1024] [--workers 0 2]
                                     [--folder /tmp/bench-scale] [--rows 2000] [--batch 8]

For each size (GB of weights) and width the project's writer (zoo.folder.writer.ZooWriter, as
`zoo generate` commits) stores a zoo of MLPs 40-w-w-10 with every epoch kept (30 epochs a
model; random weights, as incompressible as trained ones), and one torch.save file per
checkpoint beside it. Each reader then runs in its own process, and the peak of the whole
process tree's proportional set size (Pss: pages shared by DataLoader workers counted once)
is sampled every 20 ms, against an interpreter that only imported torch and loaders:
- random: `--rows` rows in a random order from a lazy ZooDataset (cache_bytes 64 MiB) through
  a DataLoader, one row at a time (batch_size=None) and in batches of `--batch`, against one
  `torch.load(weights_only=True)` file per row, same order, same DataLoader, and against the
  same DataLoader over rows that are made, not read (`moved`: what PyTorch hands over at all);
- streaming: one epoch of ZooStream through StreamLoader (batches of `--batch`), against reading the
  zoo's models shards with plain `open().read()` (1 MiB blocks, the faster of two passes)
  right before it, and against the same reads hashed with BLAKE3 (the bound of any reader
  that checks every byte).
Prints a table and writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import blake3
import numpy as np
import torch

from benchmarks.bench_memory import _descendants
from benchmarks.common import machine, print_table, write_results

EPOCHS = 30  # checkpoints kept per model
CACHE_BYTES = 64 << 20
BLOCK = 1 << 20


def make_zoo(root: Path, gigabytes: float, width: int) -> int:
    """A zoo of about `gigabytes` of weights and a torch.save file per row; returns rows."""
    from zoo.architectures import build
    from zoo.datasets.base import DataInfo
    from zoo.folder.cellresult import CellResult
    from zoo.folder.record import ZooRecord
    from zoo.folder.writer import ZooWriter
    from zoo.layout import layout_of

    info = DataInfo("classification", (40,), 10)
    with torch.device("meta"):
        model = build("mlp", width=width, info=info, args={"depth": 2})
    layout = layout_of(model, "mlp", width, {"depth": 2})
    models = max(1, round(gigabytes * 1e9 / (layout.size * 4 * EPOCHS)))
    writer = ZooWriter(root / "zoo", "bench", formats=("parquet",))
    spec = {"data": {"name": "mnist1d"}, "seeds": list(range(models)),  # what readers check
            "load_axis": {"name": "width", "values": [width]},
            "temperature_axis": {"name": "batch_size", "values": [32]}}
    writer.start(ZooRecord(spec, "bench", "random", {}, info))
    (root / "torch").mkdir()
    rng = np.random.default_rng(0)
    for model in range(models):  # a cell per model: one model's checkpoints in memory
        cell = f"{model:04d}"
        weights = rng.standard_normal((EPOCHS, layout.size), np.float32)
        rows = [{"model_id": cell, "cell_id": cell, "epoch": e, "seed": model,
                 "layout": layout.key, "num_params": layout.size, "weights": weights[e]}
                for e in range(EPOCHS)]
        writer.commit(CellResult(cell, models=rows, layouts={layout.key: layout}))
        for e, flat in enumerate(weights):
            state = {k: v.clone() for k, v in layout.unflatten(flat).items()}
            torch.save(state, root / "torch" / f"{model * EPOCHS + e}.pt")
    return models * EPOCHS


def _pss_kb(pid: int) -> int:
    """A process's proportional set size in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(mode: str, root: Path, workers: int, rows: int, batch: int = 0) -> dict:
    """One measurement in a fresh process; its result and the tree's peak Pss in MB."""
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--measure", mode, "--folder",
               str(root), "--workers", str(workers), "--rows", str(rows), "--batch", str(batch)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, sum(_pss_kb(p) for p in [process.pid, *_descendants(process.pid)]))
        time.sleep(0.02)
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{err.decode()[-3000:]}")
    return {**json.loads(out.decode().strip().splitlines()[-1]), "peak_mb": peak / 1024}


def sequential(root: Path, hashed: bool) -> dict:
    """Bytes/s of reading the models shards in turn with plain `open().read()` (1 MiB blocks),
    each block hashed with BLAKE3 when `hashed`: the faster of two passes (a fresh process's
    first pass over many small files ran up to 6x slower here than its second)."""
    files = sorted((root / "zoo" / "data" / "models").glob("*.parquet"))
    rates, total = [], 0
    for _ in range(2):
        start, total = time.perf_counter(), 0
        for path in files:
            digest = blake3.blake3()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(BLOCK), b""):
                    if hashed:
                        digest.update(block)
                    total += len(block)
        rates.append(total / (time.perf_counter() - start))
    return {"bytes_per_second": max(rates), "bytes": total}


def measure(mode: str, root: Path, workers: int, rows: int, batch: int) -> dict:
    """The measurement `mode` in this process: rows/s or bytes/s (printed as JSON); `batch`
    rows a batch (0: one row at a time)."""
    from torch.utils.data import BatchSampler, DataLoader

    from loaders import StreamLoader, ZooDataset, ZooStream

    if mode == "empty":
        return {}
    if mode in ("read", "checked"):
        return sequential(root, mode == "checked")
    if mode == "stream":
        start = time.perf_counter()
        stream = ZooStream(root / "zoo", split="all", epochs="all", cache_bytes=CACHE_BYTES)
        opened, start, total = time.perf_counter() - start, time.perf_counter(), 0
        for items in StreamLoader(stream, batch_size=batch, num_workers=workers):
            total += items["weights"].numel() * 4
        seconds = time.perf_counter() - start
        return {"bytes_per_second": total / seconds, "bytes": total, "open_seconds": opened}
    count = len(list((root / "torch").iterdir()))
    order = np.random.default_rng(1).permutation(count)[:rows].tolist()
    start = time.perf_counter()
    if mode == "random":
        dataset = ZooDataset(root / "zoo", split="all", epochs="all", in_memory=False,
                             cache_bytes=CACHE_BYTES)
    elif mode == "moved":
        dataset = MadeRows(sum(t.numel() for t in TorchFiles(root / "torch")[0].values()))
    else:
        dataset = TorchFiles(root / "torch")
    opened, start = time.perf_counter() - start, time.perf_counter()
    if batch:
        loader = DataLoader(dataset, batch_sampler=BatchSampler(order, batch, False),
                            num_workers=workers)
    else:
        loader = DataLoader(dataset, batch_size=None, sampler=order, num_workers=workers)
    read = len(order)
    for _ in loader:  # workers' start included
        pass
    return {"rows_per_second": read / (time.perf_counter() - start), "open_seconds": opened}


class MadeRows(torch.utils.data.Dataset):
    """Rows of `size` ones, made when asked (nothing read): the DataLoader's own cost."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"weights": torch.from_numpy(np.ones(self.size, np.float32))}


class TorchFiles(torch.utils.data.Dataset):
    """One torch.save file per checkpoint, read with weights_only=True."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return torch.load(self.folder / f"{index}.pt", weights_only=True)


def measure_zoo(root: Path, size: float, width: int, worker_counts: list[int], rows: int,
                batch: int, empty: float) -> list[dict]:
    """One zoo of `size` GB of MLPs of `width` written, then each reader measured per workers."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.perf_counter()
    count = make_zoo(root, size, width)
    written = time.perf_counter() - start
    table = []
    for workers in worker_counts:
        files = run("torch", root, workers, rows)
        lazy = run("random", root, workers, rows)
        files_batched = run("torch", root, workers, rows, batch)
        lazy_batched = run("random", root, workers, rows, batch)
        moved = run("moved", root, workers, rows, batch)
        plain = run("read", root, workers, 0)
        checked = run("checked", root, workers, 0)
        stream = run("stream", root, workers, 0, batch)
        table.append({
            "zoo_gb": round(plain["bytes"] / 1e9, 2), "row_kb": round(plain["bytes"] / count
                                                                        / 1e3),
            "rows": count, "workers": workers,
            "random_rows_s": lazy["rows_per_second"],
            "torch_load_rows_s": files["rows_per_second"],
            "random_x": lazy["rows_per_second"] / files["rows_per_second"],
            "batched_rows_s": lazy_batched["rows_per_second"],
            "batched_torch_load_rows_s": files_batched["rows_per_second"],
            "batched_x": lazy_batched["rows_per_second"] / files_batched["rows_per_second"],
            "moved_rows_s": moved["rows_per_second"],
            "random_peak_mb": max(lazy["peak_mb"], lazy_batched["peak_mb"]) - empty,
            "stream_mb_s": stream["bytes_per_second"] / 1e6,
            "read_mb_s": plain["bytes_per_second"] / 1e6,
            "checked_mb_s": checked["bytes_per_second"] / 1e6,
            "stream_fraction": stream["bytes_per_second"] / plain["bytes_per_second"],
            "stream_peak_mb": stream["peak_mb"] - empty,
            "open_s": lazy["open_seconds"], "write_s": written})
    shutil.rmtree(root)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1.0, 4.0],
                        help="GB of weights of each zoo")
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 1024],
                        help="hidden units (128: 93 kB a checkpoint; 256: 316 kB; 1024: 4.4 MB)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--rows", type=int, default=2000, help="random rows read per run")
    parser.add_argument("--batch", type=int, default=8, help="rows a batch (streaming, and "
                        "random access in batches)")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench-scale"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.measure:
        torch.set_num_threads(1)
        print(json.dumps(measure(options.measure, options.folder, options.workers[0],
                                 options.rows, options.batch)))
        return
    table = []
    empty = run("empty", options.folder, 0, 0)["peak_mb"]
    for size in options.sizes:
        for width in options.widths:
            table += measure_zoo(options.folder / f"zoo-{size:g}gb-w{width}", size, width,
                                 options.workers, options.rows, options.batch, empty)
    print(f"peaks: Pss of the process tree above an interpreter with torch and loaders "
          f"({empty:.0f} MB); decode cache {CACHE_BYTES >> 20} MiB a process")
    print_table(table, list(table[0]))
    path = write_results("scale", {"machine": machine(), "rows": table,
                                   "empty_interpreter_mb": empty, "widths": options.widths,
                                   "cache_bytes": CACHE_BYTES, "random_rows": options.rows,
                                   "batch": options.batch})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
