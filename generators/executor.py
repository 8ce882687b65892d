"""Run cells on Ray workers (a local runtime by default, a cluster via an address)."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Sequence

from zoo.cell import CellResult, run_cell_group
from zoo.datasets.base import DataBundle
from zoo.spec import ModelJob, ZooSpec

WORKER_THREADS = 1  # one torch thread per task: results do not depend on which worker ran it
TASK_RETRIES = 3  # a worker process that dies is restarted this many times per task
FAULT_VARIABLE = "PHASE_ZOO_INJECT_FAULT"  # test hook: "kill-once:<marker file>" or "raise:<cell>"


@dataclass(frozen=True)
class CellFailure:
    """A cell whose training raised: which models, the error and its traceback."""

    cell_id: str
    model_ids: tuple[str, ...]
    error: str
    traceback: str


@dataclass(frozen=True)
class Task:
    """Cells that train together (one population when `stacked`; None: the cost model decides
    per cell, so such a task holds one cell)."""

    cells: tuple[tuple[ModelJob, ...], ...]
    stacked: bool | None = None


@dataclass(frozen=True)
class TaskOutcome:
    """What a task sends back: a result or a failure, and the Ray node that ran it."""

    node_id: str
    result: CellResult | None = None
    failure: CellFailure | None = None


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start a local Ray runtime (or join `address`, else RAY_ADDRESS) unless this process
    already has one."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:  # "local": a new runtime even where `ray start` left one running on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False)


def _inject_fault(fault: str | None, cell_id: str) -> None:
    """Fail on purpose, for process-level tests: kill this worker once, or raise in a cell."""
    if not fault:
        return
    kind, _, argument = fault.partition(":")
    if kind == "kill-once" and not os.path.exists(argument):
        open(argument, "w").close()
        os._exit(1)  # a real worker death: Ray restarts the task
    if kind == "raise" and argument == cell_id:
        raise RuntimeError(f"injected fault in cell {cell_id}")


def _task(spec: ZooSpec, task: Task, bundle: DataBundle,
          fault: str | None) -> list[TaskOutcome]:
    import ray
    import torch

    torch.set_num_threads(WORKER_THREADS)
    node = ray.get_runtime_context().get_node_id()
    device = "cuda" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES per task
    try:
        for jobs in task.cells:
            _inject_fault(fault, jobs[0].cell_id)
        results = run_cell_group(spec, task.cells, bundle, device, task.stacked)
        return [TaskOutcome(node, result=result) for result in results]
    except Exception as error:  # recorded as failed cells; the run goes on
        text, trace = f"{type(error).__name__}: {error}", traceback.format_exc()
        return [TaskOutcome(node, failure=CellFailure(jobs[0].cell_id,
                                                      tuple(j.model_id for j in jobs), text, trace))
                for jobs in task.cells]


def run_tasks(spec: ZooSpec, tasks: Sequence[Task], bundle: DataBundle, *,
              workers: int | None = None, gpus_per_task: float = 0.0,
              on_outcome: Callable[[TaskOutcome], None]) -> None:
    """Run `tasks` on Ray, at most `workers` at a time, handing each cell's outcome to
    `on_outcome`. The caller commits each result as it arrives, so a crash loses only
    unfinished cells."""
    import ray

    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=TASK_RETRIES)(_task)
    limit = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    bundle_ref = ray.put(bundle)
    fault = os.environ.get(FAULT_VARIABLE)
    pending = iter(tasks)

    def submit(count: int) -> list:
        return [remote.remote(spec, task, bundle_ref, fault) for task in islice(pending, count)]

    in_flight = submit(limit)
    while in_flight:
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        for outcome in ray.get(ready[0]):
            on_outcome(outcome)
        in_flight += submit(1)
