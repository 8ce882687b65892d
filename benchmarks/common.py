"""Helpers every benchmark shares: clocks, the machine's matmul ceiling, tables, JSON results."""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Timing:
    """Wall seconds and this process's CPU seconds of one call (CPU time is steadier when other
    jobs share the cores; wall time is what a user waits)."""

    wall: float
    cpu: float


def timed(run: Callable[[], Any]) -> tuple[Any, Timing]:
    """Call `run` once; its result and how long it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


@contextmanager
def threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def matmul_rate(count: int, size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best fp32 GFLOP/s of a size x size matmul on `count` threads: by wall time, and by this
    process's CPU time per thread (the ceiling to hold CPU-timed work against when the cores
    are shared)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    wall = cpu = float("inf")
    with threads(count):
        a @ b  # warm up the kernels and the allocator
        for _ in range(repeats):
            _, timing = timed(lambda: a @ b)
            wall, cpu = min(wall, timing.wall), min(cpu, timing.cpu / count)
    flops = 2 * size ** 3 / 1e9
    return {"wall": flops / wall, "cpu": flops / cpu}


def machine() -> dict[str, Any]:
    """What ran the benchmark: processor, cores, load, library versions."""
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cores": os.cpu_count(), "load_average": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__}


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows as an aligned text table (floats with 3 significant digits)."""
    def cell(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write benchmarks/results/<name>.json (sorted keys) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, sort_keys=True))
    return path
