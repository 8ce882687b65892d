"""Run cells on Ray workers (a local runtime by default, a cluster via an address).

Tasks go to long-lived workers (Ray actors, one per slot: a CPU, or a GPU share of
`--gpus-per-task`), which keep the imports, the data set and, on a GPU, the CUDA context
across the cells they run (on the CPU too: a folder data set is loaded and checked once per
worker, not once per cell). A worker that dies is restarted and its cell is run again, resuming
from its saved training state.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from generators.stopping import keep_exit_on_sigterm
from zoo import dataroot
from zoo.cell import CellOutput, CellResult, run_cell_group
from zoo.datasets.base import DataBundle
from zoo.errors import DataError
from zoo.folder.location import is_uri
from zoo.folder.storestates import StoreStates
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
    shares, or a URI each node fetches into its own cache) and checks against the driver's
    `fingerprint`."""

    bundle: DataBundle | None
    fingerprint: str
    cwd: str = field(default_factory=os.getcwd)  # the driver's: a relative data.root is under it

    def load(self, spec: ZooSpec) -> DataBundle:
        """The bundle, loading it from data.root when not shipped.

        Raises:
            DataError: the worker's files differ from the driver's (another fingerprint).
        """
        if self.bundle is not None:
            return self.bundle
        root = spec.data.root
        if root is not None and not is_uri(root):
            root = os.path.join(self.cwd, root)
        bundle = dataroot.load(spec.data.name, root=root, args=spec.data.args)
        found = bundle.fingerprint()
        if found != self.fingerprint:
            raise DataError(f"{spec.data.root}: data set {spec.data.name!r} on this worker has "
                            f"fingerprint {found[:12]}, the driver's is {self.fingerprint[:12]}; "
                            f"every node must see the same files at data.root")
        return bundle


def warm_imports() -> None:
    """Import now what the first torch optimizer imports on first use: torch._dynamo, about
    as long to import as torch itself. Each worker does it while the driver loads and plans,
    so that its first cell does not wait for it."""
    import torch._dynamo  # noqa: F401


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
    with _import_safe_directory():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:  # "local": a new runtime even where `ray start` left one running on this machine
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=False)
    keep_exit_on_sigterm()  # ray.init put its own SIGTERM handler in place of the CLI's


@contextmanager
def _import_safe_directory() -> Iterator[None]:
    """Ray puts the driver's working directory first on every worker's import path (and makes
    it the workers' working directory): a `zoo/` there (an output folder, anybody's code) would
    be imported instead of the installed package. Unless the working directory is this
    package's own checkout, Ray starts from a new empty folder instead."""
    import zoo

    here = os.getcwd()
    if Path(zoo.__file__).resolve().parent.parent == Path(here).resolve():
        yield
        return
    empty = tempfile.mkdtemp(prefix="phase-zoo-ray-")
    atexit.register(shutil.rmtree, empty, True)
    os.chdir(empty)
    try:
        yield
    finally:
        os.chdir(here)


def _task(spec: ZooSpec, task: Task, data: WorkerData | DataBundle,
          state_folder: Path | StoreStates | None,
          output: CellOutput | None = None) -> list[TaskOutcome]:
    import ray
    import torch

    torch.set_num_threads(WORKER_THREADS)
    node = ray.get_runtime_context().get_node_id()
    device = "cuda" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES per task
    try:
        if isinstance(state_folder, StoreStates):  # resume where any node left these models
            state_folder.pull(state_keys([job for jobs in task.cells for job in jobs]))
        bundle = data.load(spec) if isinstance(data, WorkerData) else data
        results = run_cell_group(spec, task.cells, bundle, device, task.stacked, state_folder,
                                 output)
        return [TaskOutcome(node, result=result) for result in results]
    except Exception as error:  # recorded as failed cells; the run goes on
        text, trace = f"{type(error).__name__}: {error}", traceback.format_exc()
        return [TaskOutcome(node, failure=CellFailure(jobs[0].cell_id,
                                                      tuple(j.model_id for j in jobs), text, trace))
                for jobs in task.cells]


class CellWorker:
    """A long-lived worker (a Ray actor) running tasks with `function` (`_task`). Created
    before the data exist, it imports torch and the training code (and warm_imports) while
    the driver plans; the data come with each task as a reference, fetched once and kept (a
    folder data set is loaded on its first task and kept too)."""

    def __init__(self, function: Callable[..., list[TaskOutcome]]) -> None:
        warm_imports()
        self.function = function
        self.ref: Any = None
        self.data: WorkerData | DataBundle | None = None

    def run(self, spec: ZooSpec, task: Task, data: list[Any],
            state_folder: Path | StoreStates | None,
            output: CellOutput | None) -> list[TaskOutcome]:
        """Run `task` on the data `data[0]` refers to (a list, so Ray leaves it unfetched)."""
        import ray

        if data[0] != self.ref:
            self.ref, self.data = data[0], ray.get(data[0])
        if isinstance(self.data, WorkerData) and self.data.bundle is None:
            try:
                self.data = self.data.load(spec)
            except Exception:  # noqa: BLE001 - the task loads again and fails its cells by name
                pass
        return self.function(spec, task, self.data, state_folder, output)


class WorkerPool:
    """`slots` CellWorker actors with `gpus` of a GPU each, one task each at a time; start it
    as soon as Ray runs, so the workers start while the driver loads and plans."""

    def __init__(self, slots: int, gpus: float) -> None:
        import ray

        actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=-1,
                           max_task_retries=TASK_RETRIES)(CellWorker)
        self.gpus = gpus
        self.idle = [actor.remote(_task) for _ in range(slots)]
        self.busy: dict = {}  # object ref -> its actor

    @property
    def slots(self) -> int:
        return len(self.idle) + len(self.busy)

    def submit(self, spec: ZooSpec, task: Task, data_ref: Any,
               state_folder: Path | StoreStates | None, output: CellOutput | None) -> Any:
        actor = self.idle.pop()
        ref = actor.run.remote(spec, task, [data_ref], state_folder, output)
        self.busy[ref] = actor
        return ref

    def done(self, ref: Any) -> None:
        self.idle.append(self.busy.pop(ref))

    def close(self) -> None:
        import ray

        for actor in [*self.idle, *self.busy.values()]:
            ray.kill(actor)
        self.idle, self.busy = [], {}


def worker_slots(workers: int | None, gpus_per_task: float) -> int:
    """How many tasks run at once: `workers` (default: the cluster's free CPUs), no more than
    GPU shares of `gpus_per_task` in the cluster (an actor that cannot be placed would hold
    its task forever)."""
    import ray

    slots = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_task > 0 and gpus > 0:
        slots = min(slots, max(1, int(gpus / gpus_per_task + 1e-9)))
    return slots


def run_tasks(spec: ZooSpec, tasks: Sequence[Task], data: WorkerData | DataBundle, *,
              workers: int | None = None, gpus_per_task: float = 0.0,
              on_outcome: Callable[[TaskOutcome], None],
              state_folder: Path | StoreStates | None = None, output: CellOutput | None = None,
              pool: WorkerPool | None = None) -> None:
    """Run `tasks` on Ray, at most `workers` at a time, handing each cell's outcome to
    `on_outcome`. The caller commits each result as it arrives, so a crash loses only
    unfinished cells. With `state_folder` (shared by the workers), tasks save training states
    there and a retried task resumes inside its models; a task's states are deleted once
    `on_outcome` has taken all its cells (a failed task keeps them for the next run). With
    `output`, workers write their models shards into the zoo folder and return small rows.
    Tasks run on the CellWorker actors of `pool` (the caller's, started early and closed by
    it; else one started here); a task whose worker died more than TASK_RETRIES times fails
    its cells."""
    import ray

    own = pool is None
    if pool is None:
        pool = WorkerPool(min(worker_slots(workers, gpus_per_task), max(1, len(tasks))),
                          gpus_per_task)
    data_ref = ray.put(data)
    pending = list(reversed(tasks))
    running: dict = {}  # object ref -> its task

    def submit() -> None:
        task = pending.pop()
        running[pool.submit(spec, task, data_ref, state_folder, output)] = task

    try:
        while pending and len(running) < pool.slots:
            submit()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            task = running.pop(ready[0])
            outcomes = _outcomes(ready[0], task)
            pool.done(ready[0])
            for outcome in outcomes:
                on_outcome(outcome)
            if state_folder is not None and all(o.failure is None for o in outcomes):
                _clear_states(state_folder, task, output)
            if pending:
                submit()
    finally:
        if own:
            pool.close()


def _outcomes(ref: Any, task: Task) -> list[TaskOutcome]:
    """The task's outcomes; a worker that kept dying fails the task's cells."""
    import ray
    from ray.exceptions import RayActorError, WorkerCrashedError

    try:
        return ray.get(ref)
    except (RayActorError, WorkerCrashedError) as error:
        text = f"{type(error).__name__}: the worker died {TASK_RETRIES + 1} times running it"
        return [TaskOutcome("", failure=CellFailure(jobs[0].cell_id,
                                                    tuple(j.model_id for j in jobs), text,
                                                    str(error)))
                for jobs in task.cells]


def _clear_states(folder: Path | StoreStates, task: Task, output: CellOutput | None) -> None:
    """Delete the training states and spooled checkpoints of a task whose cells are committed
    (a zoo on a store's: on the store)."""
    jobs = [job for jobs in task.cells for job in jobs]
    for key in state_keys(jobs):
        if isinstance(folder, StoreStates):
            folder.clear(key)
        else:
            StateStore(folder, key).clear()
    if output is not None:
        Spool(output.spool).clear(job.model_id for job in jobs)
    local = Path(folder)
    if local.is_dir() and not any(local.iterdir()):
        local.rmdir()
