"""Run cells on Ray workers (a local runtime by default, a cluster via an address)."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from zoo.cell import CellResult, run_cell
from zoo.datasets.base import DataBundle
from zoo.spec import ModelJob, ZooSpec

WORKER_THREADS = 1  # one torch thread per task: results do not depend on which worker ran it


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start a local Ray runtime (or join `address`) unless this process already has one."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def _cell_task(spec: ZooSpec, jobs: Sequence[ModelJob], bundle: DataBundle) -> CellResult:
    import torch

    torch.set_num_threads(WORKER_THREADS)
    return run_cell(spec, jobs, bundle)


def run_cells(spec: ZooSpec, cells: dict[str, Sequence[ModelJob]], bundle: DataBundle, *,
              workers: int | None = None, gpus_per_task: float = 0.0,
              on_result: Callable[[CellResult], None]) -> None:
    """Train `cells` on Ray, at most `workers` at a time, handing each result to `on_result`.

    The caller commits each result as it arrives, so a crash loses only unfinished cells.
    """
    import ray

    task = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=3)(_cell_task)
    limit = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    bundle_ref = ray.put(bundle)
    pending = iter(cells.values())
    in_flight: list = []
    for jobs in _take(pending, limit):
        in_flight.append(task.remote(spec, jobs, bundle_ref))
    while in_flight:
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        on_result(ray.get(ready[0]))
        for jobs in _take(pending, 1):
            in_flight.append(task.remote(spec, jobs, bundle_ref))


def _take(iterator: Iterator, count: int) -> list:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) == count:
            break
    return out
