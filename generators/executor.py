"""Run cells on Ray workers (a local runtime by default, a cluster via an address)."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Sequence

from zoo import datasets
from zoo.cell import CellOutput, CellResult, run_cell_group
from zoo.datasets.base import DataBundle
from zoo.errors import DataError
from zoo.spec import ModelJob, ZooSpec
from zoo.train import Spool, StateStore, state_keys

WORKER_THREADS = 1  # one torch thread per task: results do not depend on which worker ran it
TASK_RETRIES = 3  # a worker process that dies is restarted this many times per task


@dataclass(frozen=True)
class CellFailure:
    """A cell whose training raised: which models, the error and its traceback."""

    cell_id: str
    model_ids: tuple[str, ...]
    error: str
    traceback: str


@dataclass(frozen=True)
class Task:
    """Cells that train together: one population when `stacked` (decided by the plan), else
    each model one by one."""

    cells: tuple[tuple[ModelJob, ...], ...]
    stacked: bool


@dataclass(frozen=True)
class TaskOutcome:
    """What a task sends back: a result or a failure, and the Ray node that ran it."""

    node_id: str
    result: CellResult | None = None
    failure: CellFailure | None = None


@dataclass(frozen=True)
class WorkerData:
    """What a task trains on: the driver's `bundle` (built-in data sets, small), or None for a
    folder data set, which each worker loads from `data.root` (a filesystem the cluster
    shares) and checks against the driver's `fingerprint`."""

    bundle: DataBundle | None
    fingerprint: str

    def load(self, spec: ZooSpec) -> DataBundle:
        """The bundle, loading it from data.root when not shipped.

        Raises:
            DataError: the worker's files differ from the driver's (another fingerprint).
        """
        if self.bundle is not None:
            return self.bundle
        bundle = datasets.load(spec.data.name, root=spec.data.root, args=spec.data.args)
        found = bundle.fingerprint()
        if found != self.fingerprint:
            raise DataError(f"{spec.data.root}: data set {spec.data.name!r} on this worker has "
                            f"fingerprint {found[:12]}, the driver's is {self.fingerprint[:12]}; "
                            f"every node must see the same files at data.root")
        return bundle


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start a local Ray runtime (or join `address`, else RAY_ADDRESS) unless this process
    already has one.

    A local runtime's GCS and raylet die with a killed driver; Ray's dashboard and runtime-env
    agents exit on their own ~60 s later (a timeout hard-coded in Ray; no option shortens it).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:  # "local": a new runtime even where `ray start` left one running on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False)


def _task(spec: ZooSpec, task: Task, data: WorkerData | DataBundle,
          state_folder: Path | None, output: CellOutput | None = None) -> list[TaskOutcome]:
    import ray
    import torch

    torch.set_num_threads(WORKER_THREADS)
    node = ray.get_runtime_context().get_node_id()
    device = "cuda" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES per task
    try:
        bundle = data.load(spec) if isinstance(data, WorkerData) else data
        results = run_cell_group(spec, task.cells, bundle, device, task.stacked, state_folder,
                                 output)
        return [TaskOutcome(node, result=result) for result in results]
    except Exception as error:  # recorded as failed cells; the run goes on
        text, trace = f"{type(error).__name__}: {error}", traceback.format_exc()
        return [TaskOutcome(node, failure=CellFailure(jobs[0].cell_id,
                                                      tuple(j.model_id for j in jobs), text, trace))
                for jobs in task.cells]


def run_tasks(spec: ZooSpec, tasks: Sequence[Task], data: WorkerData | DataBundle, *,
              workers: int | None = None, gpus_per_task: float = 0.0,
              on_outcome: Callable[[TaskOutcome], None],
              state_folder: Path | None = None, output: CellOutput | None = None) -> None:
    """Run `tasks` on Ray, at most `workers` at a time, handing each cell's outcome to
    `on_outcome`. The caller commits each result as it arrives, so a crash loses only
    unfinished cells. With `state_folder` (shared by the workers), tasks save training states
    there and a retried task resumes inside its models; a task's states are deleted once
    `on_outcome` has taken all its cells (a failed task keeps them for the next run). With
    `output`, workers write their models shards into the zoo folder and return small rows."""
    import ray

    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=TASK_RETRIES)(_task)
    limit = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    data_ref = ray.put(data)
    pending = iter(tasks)
    running: dict = {}  # object ref -> its task

    def submit(count: int) -> list:
        refs = []
        for task in islice(pending, count):
            refs.append(remote.remote(spec, task, data_ref, state_folder, output))
            running[refs[-1]] = task
        return refs

    in_flight = submit(limit)
    while in_flight:
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        outcomes = ray.get(ready[0])
        for outcome in outcomes:
            on_outcome(outcome)
        task = running.pop(ready[0])
        if state_folder is not None and all(o.failure is None for o in outcomes):
            _clear_states(state_folder, task, output)
        in_flight += submit(1)


def _clear_states(folder: Path, task: Task, output: CellOutput | None) -> None:
    """Delete the training states and spooled checkpoints of a task whose cells are committed."""
    jobs = [job for jobs in task.cells for job in jobs]
    for key in state_keys(jobs):
        StateStore(folder, key).clear()
    if output is not None:
        Spool(output.spool).clear(job.model_id for job in jobs)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
